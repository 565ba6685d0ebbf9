//! `ads-vehicle neutral`: the outputs to neutral, once, from a fresh process.
//!
//! A PCA9685 holds its last pulse when the process that set it dies without a word (SIGKILL,
//! the OOM killer), which is how mini cars run away. systemd runs this as the unit's
//! `ExecStopPost=` after *any* end of the vehicle, so the outputs are put at neutral even then.

use super::ActuatorError;
use crate::config::{Overrides, VehicleConfig};
use std::time::{Duration, Instant};

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

/// How long a busy device is tried again. As `ExecStopPost=` this runs the moment the vehicle
/// is gone, and a serial port it held exclusively can answer EBUSY until the kernel has let go
/// of it (descriptors close as a process exits; a forked child may hold one a little longer).
const BUSY_RETRY: Duration = Duration::from_secs(2);
const BUSY_POLL: Duration = Duration::from_millis(20);

/// Loads the configuration as the vehicle does and writes neutral; `kind = "none"`: nothing.
pub fn run(args: NeutralArgs) -> anyhow::Result<()> {
    let config = VehicleConfig::load(&args.overrides)?;
    let device = config.actuator.device_path();
    let give_up = Instant::now() + BUSY_RETRY;
    let written = loop {
        match super::write_neutral_once(&config.actuator) {
            Err(ActuatorError::Busy { .. }) if Instant::now() < give_up => std::thread::sleep(BUSY_POLL),
            result => break result?,
        }
    };
    match written {
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
