use clap::Parser as _;

fn main() -> std::process::ExitCode {
    ads_service::init_tracing();
    match ads_record::run(ads_record::Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ads-record: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
