use clap::Parser as _;

fn main() -> std::process::ExitCode {
    ads_service::init_tracing();
    match ads_viewer::run(ads_viewer::Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ads-viewer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
