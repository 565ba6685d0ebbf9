//! `ads-bench`: the pipeline's latency benchmark and soak (see scripts/bench.sh).

use clap::Parser as _;

#[derive(Debug, clap::Parser)]
#[command(name = "ads-bench", version, about = "Latency of every hop of the ads pipeline, CPU, drops, soak")]
enum Cli {
    /// Run vehicle, detection, viewer and headless Chromium, and measure every hop.
    Pipeline(ads_tools::pipeline_bench::PipelineArgs),
    /// The video link over shaped links, in a private network namespace (scripts/bench-link.sh).
    Link(ads_tools::link_bench::LinkArgs),
    /// (internal) The receiving end of the ZeroMQ-over-TCP comparison.
    #[command(hide = true)]
    ZmqSink {
        #[arg(long)]
        endpoint: String,
    },
}

fn main() -> std::process::ExitCode {
    ads_service::init_tracing();
    let result = match Cli::parse() {
        Cli::Pipeline(args) => ads_tools::pipeline_bench::run(args),
        Cli::Link(args) => ads_tools::link_bench::run(args),
        Cli::ZmqSink { endpoint } => ads_tools::pipeline_bench::zmq_compare::sink(&endpoint).map(|()| true),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ads-bench: a soak criterion failed (see above)");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ads-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
