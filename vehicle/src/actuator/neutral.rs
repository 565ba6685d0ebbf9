//! `ads-vehicle neutral`: the outputs to neutral, once, from a fresh process.
//!
//! A PCA9685 holds its last pulse when the process that set it dies without a word (SIGKILL,
//! the OOM killer), which is how mini cars run away. systemd runs this as the unit's
//! `ExecStopPost=` after *any* end of the vehicle, so the outputs are put at neutral even then.

use crate::config::{Overrides, VehicleConfig};

#[derive(Debug, clap::Parser)]
#[command(
    name = "ads-vehicle neutral",
    bin_name = "ads-vehicle neutral",
    version,
    about = "Writes neutral (steering centre, throttle neutral) to the configured actuator once, then exits"
)]
pub struct NeutralArgs {
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Loads the configuration as the vehicle does and writes neutral; `kind = "none"`: nothing.
pub fn run(args: NeutralArgs) -> anyhow::Result<()> {
    let config = VehicleConfig::load(&args.overrides)?;
    let device = config.actuator.device_path();
    match super::write_neutral_once(&config.actuator)? {
        Some(p) => tracing::info!(
            "actuator {:?} on {}: neutral written (steering {} µs, throttle {} µs)",
            config.actuator.kind,
            device.display(),
            p.steering_us,
            p.throttle_us
        ),
        None => tracing::info!("no actuator configured (kind none): nothing to put at neutral"),
    }
    Ok(())
}
