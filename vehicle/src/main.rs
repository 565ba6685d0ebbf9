use clap::Parser as _;

fn main() -> std::process::ExitCode {
    ads_service::init_tracing();
    // `ads-vehicle neutral [flags]`: the actuator to neutral once, then exit (the unit's
    // ExecStopPost=). Told apart here, before the vehicle's own flags are parsed.
    let result = if std::env::args_os().nth(1).is_some_and(|a| a == "neutral") {
        let args = std::env::args_os().enumerate().filter(|(i, _)| *i != 1).map(|(_, a)| a);
        ads_vehicle::actuator::neutral::run(ads_vehicle::actuator::neutral::NeutralArgs::parse_from(args))
    } else {
        ads_vehicle::run(ads_vehicle::Args::parse())
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ads-vehicle: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
