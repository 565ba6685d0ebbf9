use clap::Parser as _;

fn main() -> std::process::ExitCode {
    ads_service::init_tracing();
    let args = ads_detection::Args::parse();
    match ads_detection::main_with(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ads-detection: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
