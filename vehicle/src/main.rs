use clap::Parser as _;

fn main() -> std::process::ExitCode {
    ads_service::init_tracing();
    // `ads-vehicle neutral [flags]`: the actuator to neutral once, then exit (the unit's
    // ExecStopPost=). Told apart here, before the vehicle's own flags are parsed.
    // `ads-vehicle calibrate [flags]`: one channel to one pulse width for a moment, then neutral.
    let subcommand = std::env::args_os().nth(1);
    let rest = || std::env::args_os().enumerate().filter(|(i, _)| *i != 1).map(|(_, a)| a);
    let result = if subcommand.as_ref().is_some_and(|a| a == "neutral") {
        ads_vehicle::actuator::neutral::run(ads_vehicle::actuator::neutral::NeutralArgs::parse_from(rest()))
    } else if subcommand.as_ref().is_some_and(|a| a == "calibrate") {
        ads_vehicle::actuator::calibrate::run(ads_vehicle::actuator::calibrate::CalibrateArgs::parse_from(
            rest(),
        ))
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
