use clap::Parser as _;

fn main() -> std::process::ExitCode {
    ads_service::init_tracing();
    match ads_tools::ring_tool::run(ads_tools::ring_tool::Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ads-ring: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
