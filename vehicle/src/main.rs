use clap::Parser as _;

fn main() -> std::process::ExitCode {
    ads_service::init_tracing();
    match ads_vehicle::cli::run(ads_vehicle::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ads-vehicle: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
