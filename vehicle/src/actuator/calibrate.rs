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

use super::{Actuator, ActuatorError, Pulses, PULSE_RANGE_US};
use crate::config::{ActuatorKind, Overrides, VehicleConfig};
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

/// Sets `key = us` in the file's `[actuator.calibration]`, leaving every other line as it
/// was; refused (the file untouched) unless the result parses to the same configuration
/// with only that value changed and a valid calibration.
pub fn save_calibration(path: &Path, key: &str, us: u16) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let new = set_calibration(&text, key, us);
    let before = VehicleConfig::from_toml(&text, path)?;
    let after = VehicleConfig::from_toml(&new, path)
        .with_context(|| format!("{} could not be edited line by line", path.display()))?;
    let mut expected = before.clone();
    let c = &mut expected.actuator.calibration;
    let field = match key {
        "steering_left_us" => &mut c.steering_left_us,
        "steering_centre_us" => &mut c.steering_centre_us,
        "steering_right_us" => &mut c.steering_right_us,
        "throttle_reverse_us" => &mut c.throttle_reverse_us,
        "throttle_neutral_us" => &mut c.throttle_neutral_us,
        "throttle_forward_us" => &mut c.throttle_forward_us,
        "brake_us" => &mut c.brake_us,
        _ => bail!("{key} is not a key of [actuator.calibration]"),
    };
    *field = us;
    if after != expected {
        bail!("editing {} changed more than actuator.calibration.{key}: left as it was", path.display());
    }
    if let Err((key, value, problem)) = after.actuator.calibration.validate() {
        bail!("{key} = {value}: {problem} (not written)");
    }
    // Whole or not at all: a temporary file beside it, renamed over it.
    let temporary = path.with_extension("toml.calibrate");
    std::fs::write(&temporary, new).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// The text with `key = us` in its `[actuator.calibration]` table: the key's line replaced
/// (a trailing comment kept), else added under the table's header, else the table appended.
pub fn set_calibration(text: &str, key: &str, us: u16) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let is_key = |line: &str| {
        line.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let header = lines.iter().position(|l| l.trim_start().starts_with("[actuator.calibration]"));
    match header {
        Some(h) => {
            let end = lines[h + 1..]
                .iter()
                .position(|l| l.trim_start().starts_with('['))
                .map_or(lines.len(), |i| h + 1 + i);
            match (h + 1..end).find(|&i| is_key(&lines[i])) {
                Some(i) => {
                    let comment =
                        lines[i].find('#').map(|c| format!("  {}", &lines[i][c..])).unwrap_or_default();
                    lines[i] = format!("{key} = {us}{comment}");
                }
                None => lines.insert(h + 1, format!("{key} = {us}")),
            }
        }
        None => {
            lines.push(String::new());
            lines.push("[actuator.calibration]".into());
            lines.push(format!("{key} = {us}"));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
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
    fn the_value_goes_into_the_calibration_table_and_nothing_else_changes() {
        let text = "fps = 30.0\n[actuator]\nkind = \"serial\"\n\n[actuator.calibration]\n\
                    steering_centre_us = 1500   # straight\nbrake_us = 1500\n\n[drive]\ntarget_speed_mps = 3.0\n";
        let edited = set_calibration(text, "steering_centre_us", 1470);
        assert_eq!(
            edited,
            text.replace("steering_centre_us = 1500   # straight", "steering_centre_us = 1470  # straight")
        );
        let added = set_calibration(text, "steering_left_us", 1900);
        assert!(
            added.contains("[actuator.calibration]\nsteering_left_us = 1900\nsteering_centre_us"),
            "{added}"
        );
        let appended = set_calibration("fps = 30.0\n", "brake_us", 1300);
        assert_eq!(appended, "fps = 30.0\n\n[actuator.calibration]\nbrake_us = 1300\n");
        // A key of another table with the same prefix is not touched.
        let other = set_calibration("[actuator.calibration]\nbrake_us_x = 1\n", "brake_us", 1300);
        assert_eq!(other, "[actuator.calibration]\nbrake_us = 1300\nbrake_us_x = 1\n");
    }

    #[test]
    fn saving_checks_the_result_and_leaves_a_bad_edit_unwritten() {
        let dir = std::env::temp_dir().join(format!("ads-calibrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vehicle.toml");
        let text = "# my car\n[actuator]\nkind = \"serial\"\n[actuator.calibration]\nsteering_centre_us = 1500 # x\n";
        std::fs::write(&path, text).unwrap();
        save_calibration(&path, "steering_centre_us", 1470).unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(
            saved.starts_with("# my car\n") && saved.contains("steering_centre_us = 1470  # x"),
            "{saved}"
        );
        let c = VehicleConfig::from_toml(&saved, &path).unwrap();
        assert_eq!(c.actuator.calibration.steering_centre_us, 1470);
        // A centre outside left..right is refused, the file as it was.
        let err = save_calibration(&path, "steering_centre_us", 2400).unwrap_err().to_string();
        assert!(err.contains("steering_centre_us"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), saved);
        // An inline table cannot be edited line by line: refused, untouched.
        std::fs::write(&path, "[actuator]\ncalibration = { brake_us = 1500 }\n").unwrap();
        assert!(save_calibration(&path, "brake_us", 1300).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[actuator]\ncalibration = { brake_us = 1500 }\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
