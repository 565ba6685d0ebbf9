//! `ads-vehicle calibrate`: one channel to one pulse width for a moment — the car on a stand,
//! wheels off the ground — then neutral; and, when asked, the value found written into the
//! configuration file's `[actuator.calibration]`.
//!
//! ```sh
//! ads-vehicle calibrate --config /etc/ads/vehicle.toml --channel steering --us 1470
//! ads-vehicle calibrate --config /etc/ads/vehicle.toml --channel steering --us 1470 --save-as steering_centre_us
//! ```
//!
//! The other channel stays at its calibrated neutral; the pulse is held for `--hold-ms` (a
//! short, bounded time: released, the wheels go back to neutral), refreshed every 20 ms so a
//! serial board's own timeout does not fire, and neutral is written at the end, on SIGINT and
//! SIGTERM, and after a failed write.

use super::calibration_file;
use super::calibration_session::PulseLimits;
use super::{Actuator, ActuatorError, Pulses, PULSE_RANGE_US};
use crate::config::{ActuatorKind, Overrides, VehicleConfig};
use ads_protocol::{CalibrationChannel, CalibrationValues};
use anyhow::{bail, Context as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which output moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Channel {
    Steering,
    Throttle,
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "ads-vehicle calibrate",
    bin_name = "ads-vehicle calibrate",
    version,
    about = "Moves one actuator channel to a pulse width for a moment (the car on a stand), then neutral; \
             optionally writes the value into the config file"
)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub overrides: Overrides,
    /// The channel to move; the other stays at its calibrated neutral.
    #[arg(long, value_enum)]
    pub channel: Channel,
    /// Its pulse width, µs (500..=2500).
    #[arg(long)]
    pub us: u16,
    /// How long to hold it, ms (1..=10000), then neutral.
    #[arg(long, default_value_t = 1500)]
    pub hold_ms: u64,
    /// Write the value into the file of --config as this key of [actuator.calibration]
    /// (steering_left_us, steering_centre_us, steering_right_us for steering;
    /// throttle_reverse_us, throttle_neutral_us, throttle_forward_us, brake_us for throttle).
    #[arg(long)]
    pub save_as: Option<String>,
}

/// The keys of `[actuator.calibration]` each channel may set.
const STEERING_KEYS: [&str; 3] = ["steering_left_us", "steering_centre_us", "steering_right_us"];
const THROTTLE_KEYS: [&str; 4] =
    ["throttle_reverse_us", "throttle_neutral_us", "throttle_forward_us", "brake_us"];

/// Writes interval while holding: the servo frame rate, 5 lines per serial-board timeout.
const REFRESH: Duration = Duration::from_millis(20);

pub fn run(args: CalibrateArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    run_until(args, &stop)
}

/// [`run`], ended early (at neutral) when `stop` is set.
pub fn run_until(args: CalibrateArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    let config = VehicleConfig::load(&args.overrides)?;
    if config.actuator.kind == ActuatorKind::None {
        bail!("no actuator configured: set [actuator] kind (or --actuator) and the device");
    }
    if !PULSE_RANGE_US.contains(&args.us) {
        bail!("--us {}: must be in 500..=2500 µs", args.us);
    }
    let channel = match args.channel {
        Channel::Steering => CalibrationChannel::Steering,
        Channel::Throttle => CalibrationChannel::Throttle,
    };
    // The same limits as the viewer's calibration page: a throttle beyond max_throttle only
    // with actuator.calibrate_full_throttle.
    if let Err(why) = PulseLimits::from_config(&config.actuator).check(channel, args.us) {
        bail!("--us {}: {why}", args.us);
    }
    if !(1..=10_000).contains(&args.hold_ms) {
        bail!("--hold-ms {}: must be in 1..=10000", args.hold_ms);
    }
    let save = match &args.save_as {
        Some(key) => {
            let keys: &[&str] = match args.channel {
                Channel::Steering => &STEERING_KEYS,
                Channel::Throttle => &THROTTLE_KEYS,
            };
            if !keys.contains(&key.as_str()) {
                bail!("--save-as {key}: the {:?} channel sets one of {keys:?}", args.channel);
            }
            let Some(path) = &args.overrides.config else {
                bail!("--save-as needs the file to write: --config FILE");
            };
            Some((path.clone(), key.clone()))
        }
        None => None,
    };
    let neutral = config.actuator.calibration.neutral();
    let pulses = match args.channel {
        Channel::Steering => Pulses { steering_us: args.us, ..neutral },
        Channel::Throttle => Pulses { throttle_us: args.us, ..neutral },
    };
    let device = config.actuator.device_path();
    let mut actuator = super::open(&config.actuator)?.context("opening the actuator")?;
    tracing::info!(
        "{:?} at {} µs for {} ms on {}, then neutral (steering {} µs, throttle {} µs)",
        args.channel,
        args.us,
        args.hold_ms,
        device.display(),
        neutral.steering_us,
        neutral.throttle_us
    );
    hold(actuator.as_mut(), pulses, neutral, Duration::from_millis(args.hold_ms), stop)?;
    if let Some((path, key)) = save {
        save_calibration(&path, &key, args.us)?;
        tracing::info!("{} = {} written to [actuator.calibration] of {}", key, args.us, path.display());
    }
    Ok(())
}

/// Writes `pulses` every [`REFRESH`] for `duration` (or until `stop`), then neutral — also
/// after a failed write, whose error is returned.
pub fn hold(
    actuator: &mut dyn Actuator,
    pulses: Pulses,
    neutral: Pulses,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<(), ActuatorError> {
    let until = Instant::now() + duration;
    let mut result = Ok(());
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        if let Err(e) = actuator.write(pulses) {
            result = Err(e);
            break;
        }
        std::thread::sleep(REFRESH.min(until.saturating_duration_since(Instant::now())));
    }
    let end = actuator.neutral(neutral);
    result.and(end)
}

/// Sets `key = us` in the file's `[actuator.calibration]` ([`calibration_file::save`]:
/// everything else as it was, checked, whole or not at all).
pub fn save_calibration(path: &Path, key: &str, us: u16) -> anyhow::Result<()> {
    let mut values = CalibrationValues::default();
    let field = match key {
        "steering_left_us" => &mut values.steering_left_us,
        "steering_centre_us" => &mut values.steering_centre_us,
        "steering_right_us" => &mut values.steering_right_us,
        "throttle_reverse_us" => &mut values.throttle_reverse_us,
        "throttle_neutral_us" => &mut values.throttle_neutral_us,
        "throttle_forward_us" => &mut values.throttle_forward_us,
        "brake_us" => &mut values.brake_us,
        _ => bail!("{key} is not a key of [actuator.calibration]"),
    };
    *field = Some(us);
    calibration_file::save(path, &values)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::DeviceStatus;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<(Pulses, bool)>>>,
        fail: bool,
    }

    impl Actuator for Recorder {
        fn kind(&self) -> &'static str {
            "recorder"
        }
        fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
            self.writes.lock().unwrap().push((pulses, false));
            if self.fail {
                return Err(ActuatorError::Protocol { device: "fake".into(), detail: "gone".into() });
            }
            Ok(())
        }
        fn neutral(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
            self.writes.lock().unwrap().push((pulses, true));
            Ok(())
        }
        fn status(&self) -> DeviceStatus {
            DeviceStatus::default()
        }
    }

    const NEUTRAL: Pulses = Pulses { steering_us: 1480, throttle_us: 1500 };
    const LEFT: Pulses = Pulses { steering_us: 1900, throttle_us: 1500 };

    #[test]
    fn holds_the_pulse_refreshed_then_writes_neutral() {
        let mut device = Recorder::default();
        let stop = AtomicBool::new(false);
        hold(&mut device, LEFT, NEUTRAL, Duration::from_millis(100), &stop).unwrap();
        let writes = device.writes.lock().unwrap().clone();
        let (last, held) = writes.split_last().unwrap();
        assert_eq!(*last, (NEUTRAL, true), "neutral last");
        // Refreshed while held (at least twice in 100 ms at 20 ms, however loaded the machine).
        assert!(held.len() >= 2 && held.iter().all(|w| *w == (LEFT, false)), "{writes:?}");
    }

    #[test]
    fn a_signal_or_a_failed_write_ends_the_hold_at_neutral() {
        let mut device = Recorder::default();
        let stop = AtomicBool::new(true);
        hold(&mut device, LEFT, NEUTRAL, Duration::from_secs(3600), &stop).unwrap();
        assert_eq!(*device.writes.lock().unwrap(), [(NEUTRAL, true)]);
        let mut failing = Recorder { fail: true, ..Recorder::default() };
        let stop = AtomicBool::new(false);
        assert!(hold(&mut failing, LEFT, NEUTRAL, Duration::from_secs(3600), &stop).is_err());
        assert_eq!(*failing.writes.lock().unwrap(), [(LEFT, false), (NEUTRAL, true)]);
    }

    #[test]
    fn a_throttle_beyond_max_throttle_is_refused_before_the_device_is_opened() {
        use clap::Parser as _;
        let argv = |us: &'static str| {
            [
                "ads-vehicle calibrate",
                "--actuator",
                "serial",
                "--actuator-device",
                "/nonexistent/ttyACM9",
                "--channel",
                "throttle",
                "--us",
                us,
            ]
        };
        let stop = AtomicBool::new(false);
        let err = run_until(CalibrateArgs::parse_from(argv("1800")), &stop).unwrap_err().to_string();
        assert!(err.contains("calibrate_full_throttle"), "{err}");
        // Within the range it goes on to the device (which is missing here).
        let err = run_until(CalibrateArgs::parse_from(argv("1600")), &stop).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/ttyACM9"), "{err:#}");
    }
}
