//! `ads-vehicle`'s command line: the vehicle itself (no subcommand, or `run`), and the two
//! tools that share its configuration and its device: `neutral` (the unit's `ExecStopPost=`)
//! and `calibrate` (one channel to one pulse width, the car on a stand).
//!
//! Flags without a subcommand are the vehicle's, as they always were (`ads-vehicle --config
//! FILE`); a subcommand takes its own flags after its name (`ads-vehicle neutral --config
//! FILE`).

use crate::actuator::{calibrate, neutral};

#[derive(Debug, clap::Parser)]
#[command(
    name = "ads-vehicle",
    version,
    about = "The ads vehicle: frame source, control loop, broadcaster, actions",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// The vehicle's flags when no subcommand is given.
    #[command(flatten)]
    pub run: crate::Args,
}

#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Runs the vehicle (the same as no subcommand).
    Run(crate::Args),
    /// Writes neutral (steering centre, throttle neutral) to the configured actuator once, then
    /// exits: the unit's ExecStopPost=.
    Neutral(neutral::NeutralArgs),
    /// Moves one actuator channel to a pulse width for a moment (the car on a stand), then
    /// neutral; optionally writes the value into the config file.
    Calibrate(calibrate::CalibrateArgs),
}

/// Runs what the command line asks for.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => crate::run(cli.run),
        Some(Subcommand::Run(args)) => crate::run(args),
        Some(Subcommand::Neutral(args)) => neutral::run(args),
        Some(Subcommand::Calibrate(args)) => calibrate::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(argv: &[&str]) -> Cli {
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
    }

    #[test]
    fn every_existing_invocation_parses_as_before() {
        // The unit's ExecStart= and the tests' vehicles: flags, no subcommand.
        let cli = parse(&["ads-vehicle", "--config", "/etc/ads/vehicle.toml", "--source", "sim"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.run.overrides.config.as_deref(), Some(std::path::Path::new("/etc/ads/vehicle.toml")));
        // The unit's ExecStopPost=.
        let cli = parse(&["ads-vehicle", "neutral", "--config", "/etc/ads/vehicle.toml"]);
        let Some(Subcommand::Neutral(n)) = cli.command else { panic!("not neutral: {cli:?}") };
        assert_eq!(n.overrides.config.as_deref(), Some(std::path::Path::new("/etc/ads/vehicle.toml")));
        // docs/actuators.md's calibration.
        let cli = parse(&[
            "ads-vehicle",
            "calibrate",
            "--actuator",
            "serial",
            "--channel",
            "steering",
            "--us",
            "1470",
            "--save-as",
            "steering_centre_us",
        ]);
        let Some(Subcommand::Calibrate(c)) = cli.command else { panic!("not calibrate: {cli:?}") };
        assert_eq!(
            (c.channel, c.us, c.save_as.as_deref()),
            (calibrate::Channel::Steering, 1470, Some("steering_centre_us"))
        );
        // `run` spelled out.
        let cli = parse(&["ads-vehicle", "run", "--source", "sim"]);
        assert!(matches!(cli.command, Some(Subcommand::Run(_))));
    }

    #[test]
    fn vehicle_flags_before_a_subcommand_are_refused_not_ignored() {
        // `ads-vehicle --config A neutral` would otherwise write neutral with the defaults.
        assert!(Cli::try_parse_from(["ads-vehicle", "--source", "sim", "neutral"]).is_err());
        assert!(Cli::try_parse_from(["ads-vehicle", "calibrate", "--us", "1500"]).is_err(), "no --channel");
        assert!(Cli::try_parse_from(["ads-vehicle", "bogus"]).is_err());
    }
}
