//! Calibration through the running vehicle (the viewer's calibration page, as Donkey Car's
//! `donkey calibrate`): the car on a stand, one channel at a time moved to a pulse width and
//! **held only while a lease lasts**, and the values found written into the configuration file.
//!
//! - A `calibrate_pulse` action holds one channel at its pulse width (the other at its
//!   calibrated neutral) for its lease: at most [`MAX_LEASE_MS`] from its arrival, and never
//!   past the action's own expiry. The page re-sends it while the slider is held; a page let
//!   go, closed or cut off stops renewing it and the channel returns to neutral. The output
//!   thread ends the pulse at the lease's end by itself, however late the loop is.
//! - A pulse is taken only while the car is stopped (held or paused, never while it drives or
//!   is in fail-safe), no e-stop is latched, the outputs have no fault and a known speed is
//!   zero; the loop re-checks that every tick, so an e-stop or a fault ends a lease at once.
//! - A throttle pulse must lie within the `max_throttle` range of the current calibration,
//!   unless `actuator.calibrate_full_throttle` (to find the ends of the ESC's range).
//! - A `calibrate_save` writes `[actuator.calibration]` on a thread of its own (file I/O never
//!   holds the loop) and is acknowledged once written, or refused with the reason.

use super::calibration_file;
use super::{Calibration, Pulses, PULSE_RANGE_US};
use crate::config::ActuatorSection;
use ads_protocol::{Action, ActuatorState, CalibrationChannel, CalibrationValues, DriveMode};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};

/// The longest lease one `calibrate_pulse` buys, ms.
pub const MAX_LEASE_MS: u32 = 300;
/// A known speed above this, m/s, is not a car on a stand at rest.
const AT_REST_MPS: f64 = 0.05;

/// The pulse widths a calibration pulse may have, per channel, µs (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulseLimits {
    pub steering_us: (u16, u16),
    pub throttle_us: (u16, u16),
}

impl PulseLimits {
    /// Steering: any pulse a servo takes. Throttle: the `max_throttle` range of `a`'s
    /// calibration (and its brake pulse, which every stop puts out anyway), or any pulse with
    /// `calibrate_full_throttle`.
    pub fn from_config(a: &ActuatorSection) -> Self {
        let any = (*PULSE_RANGE_US.start(), *PULSE_RANGE_US.end());
        let throttle_us = if a.calibrate_full_throttle {
            any
        } else {
            let c = &a.calibration;
            let max = a.max_throttle.clamp(0.0, 1.0);
            let ends = [c.throttle_us(-max), c.throttle_us(max), c.brake_us, c.throttle_neutral_us];
            (ends.into_iter().min().unwrap_or(any.0), ends.into_iter().max().unwrap_or(any.1))
        };
        Self { steering_us: any, throttle_us }
    }

    pub fn check(&self, channel: CalibrationChannel, us: u16) -> Result<(), String> {
        let (lo, hi) = match channel {
            CalibrationChannel::Steering => self.steering_us,
            CalibrationChannel::Throttle => self.throttle_us,
        };
        if (lo..=hi).contains(&us) {
            return Ok(());
        }
        Err(match channel {
            CalibrationChannel::Throttle if self.throttle_us != (500, 2500) => format!(
                "throttle {us} µs is outside {lo}..={hi} µs, the actuator.max_throttle range; \
                 set actuator.calibrate_full_throttle = true to go beyond (wheels off the ground)"
            ),
            _ => format!("{us} µs is outside {lo}..={hi} µs"),
        })
    }
}

/// Whether the car may take a calibration pulse now: `overriding` is the mode the command state
/// machine imposes (`None`: the loop drives or is in fail-safe), `output_problem` what is wrong
/// with the outputs, `speed_mps` the speed if known.
pub fn may_calibrate(
    overriding: Option<DriveMode>,
    output_problem: Option<&str>,
    speed_mps: Option<f64>,
) -> Result<(), String> {
    match overriding {
        Some(DriveMode::EmergencyStop) => {
            return Err("not while the emergency stop is latched (reset it first; the car stays held)".into())
        }
        Some(DriveMode::Stopped | DriveMode::Paused) => {}
        _ => {
            return Err("only while the car is stopped (held or paused): it is driving or in fail-safe; \
                        send pause first"
                .into())
        }
    }
    if let Some(problem) = output_problem {
        return Err(format!("not while the outputs have a fault: {problem}"));
    }
    if let Some(speed) = speed_mps.filter(|s| s.abs() > AT_REST_MPS) {
        return Err(format!("the car still moves ({speed:.2} m/s)"));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    channel: CalibrationChannel,
    pulses: Pulses,
    /// Monotonic ns.
    until_ns: u64,
}

/// A save's acknowledgement, once the file is written (or not).
pub type SaveDone = (Action, u64, Result<String, String>);

/// The vehicle's side of calibration: the lease, its limits, and saves in progress.
#[derive(Debug)]
pub struct CalibrationSession {
    /// Outputs exist: without them there is nothing to calibrate.
    enabled: bool,
    calibration: Calibration,
    limits: PulseLimits,
    /// The file `--config` named: where a save goes.
    config_path: Option<PathBuf>,
    lease: Option<Lease>,
    saving: bool,
    done_tx: Sender<SaveDone>,
    done_rx: Receiver<SaveDone>,
}

impl Default for CalibrationSession {
    /// No outputs: every calibration action is refused.
    fn default() -> Self {
        Self::new(&ActuatorSection::default(), false, None)
    }
}

impl CalibrationSession {
    pub fn new(actuator: &ActuatorSection, enabled: bool, config_path: Option<PathBuf>) -> Self {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        Self {
            enabled,
            calibration: actuator.calibration,
            limits: PulseLimits::from_config(actuator),
            config_path,
            lease: None,
            saving: false,
            done_tx,
            done_rx,
        }
    }

    fn check_enabled(&self) -> Result<(), String> {
        if self.enabled {
            Ok(())
        } else {
            Err("this vehicle has no actuator ([actuator] kind = \"none\"): nothing to calibrate".into())
        }
    }

    /// A `calibrate_pulse` arrived at `now_ns`; the action expires at `expires_ns` (both
    /// monotonic). `allowed`: [`may_calibrate`] now. Starts or renews the lease.
    pub fn pulse(
        &mut self,
        channel: CalibrationChannel,
        us: u16,
        lease_ms: u32,
        expires_ns: u64,
        now_ns: u64,
        allowed: Result<(), String>,
    ) -> Result<String, String> {
        self.check_enabled()?;
        allowed?;
        if !(1..=MAX_LEASE_MS).contains(&lease_ms) {
            return Err(format!("lease_ms {lease_ms}: must be in 1..={MAX_LEASE_MS}"));
        }
        self.limits.check(channel, us)?;
        let until_ns = (now_ns + u64::from(lease_ms) * 1_000_000).min(expires_ns);
        if until_ns <= now_ns {
            return Err("expired before it could hold".into());
        }
        let neutral = self.calibration.neutral();
        let pulses = match channel {
            CalibrationChannel::Steering => Pulses { steering_us: us, ..neutral },
            CalibrationChannel::Throttle => Pulses { throttle_us: us, ..neutral },
        };
        self.lease = Some(Lease { channel, pulses, until_ns });
        let held_ms = (until_ns - now_ns) / 1_000_000;
        Ok(format!("{} at {us} µs for {held_ms} ms", word(channel)))
    }

    /// `calibrate_release`: the lease ends now.
    pub fn release(&mut self) -> Result<String, String> {
        self.check_enabled()?;
        Ok(match self.lease.take() {
            Some(l) => format!("{} released: neutral", word(l.channel)),
            None => "no calibration pulse was held".into(),
        })
    }

    /// Ends the lease at once (an e-stop).
    pub fn end(&mut self) {
        self.lease = None;
    }

    /// This tick's calibration pulse and the end of its lease, if one holds and is still
    /// `allowed`; otherwise the lease is over and the outputs get the loop's stop.
    pub fn hold(&mut self, now_ns: u64, allowed: Result<(), String>) -> Option<(Pulses, u64)> {
        let lease = self.lease?;
        if now_ns >= lease.until_ns || allowed.is_err() {
            self.lease = None;
            return None;
        }
        Some((lease.pulses, lease.until_ns))
    }

    /// A `calibrate_save`: refused at once (`Some`), or written on a thread of its own and
    /// returned by [`CalibrationSession::finished`] (`None`).
    pub fn save(
        &mut self,
        action: Action,
        seq: u64,
        values: CalibrationValues,
    ) -> Option<Result<String, String>> {
        if let Err(e) = self.check_enabled() {
            return Some(Err(e));
        }
        let Some(path) = self.config_path.clone() else {
            return Some(Err("the vehicle was started without --config: there is no file to write the \
                             calibration into"
                .into()));
        };
        let entries = values.entries();
        if entries.is_empty() {
            return Some(Err("no value to save".into()));
        }
        if let Some((key, us)) = entries.iter().find(|(_, us)| !PULSE_RANGE_US.contains(us)) {
            return Some(Err(format!("{key} = {us}: must be in 500..=2500 µs")));
        }
        if self.saving {
            return Some(Err("a save is still being written; send it again".into()));
        }
        let done = self.done_tx.clone();
        let thread = std::thread::Builder::new().name("calibration-save".into()).spawn(move || {
            let outcome = match calibration_file::save(&path, &values) {
                Ok(_) => {
                    let list: Vec<String> = entries.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    tracing::info!("calibration saved into {}: {}", path.display(), list.join(", "));
                    Ok(format!(
                        "saved into {}: {} (in effect from the next start)",
                        path.display(),
                        list.join(", ")
                    ))
                }
                Err(e) => {
                    tracing::warn!("calibration not saved: {e}");
                    Err(format!("not saved: {e}"))
                }
            };
            let _ = done.send((action, seq, outcome));
        });
        match thread {
            Ok(_) => {
                self.saving = true;
                None
            }
            Err(e) => Some(Err(format!("could not start writing: {e}"))),
        }
    }

    /// Saves written (or refused) since the last call.
    pub fn finished(&mut self) -> Vec<SaveDone> {
        let done: Vec<SaveDone> = self.done_rx.try_iter().collect();
        if !done.is_empty() {
            self.saving = false;
        }
        done
    }

    /// Fills the calibration fields of `state.actuator`.
    pub fn describe(&self, state: &mut ActuatorState, now_ns: u64) {
        if !self.enabled {
            return;
        }
        let c = &self.calibration;
        state.calibration = Some(CalibrationValues {
            steering_left_us: Some(c.steering_left_us),
            steering_centre_us: Some(c.steering_centre_us),
            steering_right_us: Some(c.steering_right_us),
            throttle_reverse_us: Some(c.throttle_reverse_us),
            throttle_neutral_us: Some(c.throttle_neutral_us),
            throttle_forward_us: Some(c.throttle_forward_us),
            brake_us: Some(c.brake_us),
        });
        state.calibration_throttle_us = Some(self.limits.throttle_us);
        if let Some(lease) = self.lease.filter(|l| l.until_ns > now_ns) {
            state.calibrating = Some(lease.channel);
            state.lease_left_ms = u32::try_from((lease.until_ns - now_ns) / 1_000_000).ok();
        }
    }
}

fn word(channel: CalibrationChannel) -> &'static str {
    match channel {
        CalibrationChannel::Steering => "steering",
        CalibrationChannel::Throttle => "throttle",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ads_protocol::ActionRun;

    const MS: u64 = 1_000_000;
    const STEERING: CalibrationChannel = CalibrationChannel::Steering;
    const THROTTLE: CalibrationChannel = CalibrationChannel::Throttle;

    fn actuator() -> ActuatorSection {
        ActuatorSection {
            calibration: Calibration { steering_centre_us: 1480, brake_us: 1300, ..Calibration::default() },
            ..ActuatorSection::default()
        }
    }

    fn session() -> CalibrationSession {
        CalibrationSession::new(&actuator(), true, None)
    }

    #[test]
    fn only_a_car_at_rest_held_or_paused_without_latch_or_fault_is_calibrated() {
        assert_eq!(may_calibrate(Some(DriveMode::Stopped), None, Some(0.0)), Ok(()));
        assert_eq!(may_calibrate(Some(DriveMode::Paused), None, None), Ok(()));
        let latched = may_calibrate(Some(DriveMode::EmergencyStop), None, Some(0.0)).unwrap_err();
        assert!(latched.contains("emergency stop"), "{latched}");
        assert!(may_calibrate(None, None, Some(0.0)).unwrap_err().contains("stopped"));
        assert!(may_calibrate(Some(DriveMode::Failsafe), None, None).is_err());
        assert!(may_calibrate(Some(DriveMode::Stopped), Some("board silent"), None)
            .unwrap_err()
            .contains("board silent"));
        assert!(may_calibrate(Some(DriveMode::Stopped), None, Some(0.4)).unwrap_err().contains("moves"));
    }

    #[test]
    fn a_pulse_holds_one_channel_until_its_lease_or_its_expiry_ends() {
        let mut s = session();
        let t0 = 1_000 * MS;
        let detail = s.pulse(STEERING, 1900, 300, u64::MAX, t0, Ok(())).unwrap();
        assert!(detail.contains("steering at 1900 µs for 300 ms"), "{detail}");
        // The other channel at neutral, not the brake.
        let held = Pulses { steering_us: 1900, throttle_us: 1500 };
        assert_eq!(s.hold(t0 + 10 * MS, Ok(())), Some((held, t0 + 300 * MS)));
        assert_eq!(s.hold(t0 + 299 * MS, Ok(())), Some((held, t0 + 300 * MS)));
        // Renewed, it goes on; not renewed, it ends for good.
        s.pulse(STEERING, 1900, 300, u64::MAX, t0 + 250 * MS, Ok(())).unwrap();
        assert!(s.hold(t0 + 500 * MS, Ok(())).is_some());
        assert_eq!(s.hold(t0 + 550 * MS, Ok(())), None);
        assert_eq!(s.hold(t0 + 551 * MS, Ok(())), None);
        // The action's expiry shortens the lease.
        s.pulse(THROTTLE, 1600, 300, t0 + 2_100 * MS, t0 + 2_000 * MS, Ok(())).unwrap();
        assert_eq!(
            s.hold(t0 + 2_050 * MS, Ok(())),
            Some((Pulses { steering_us: 1480, throttle_us: 1600 }, t0 + 2_100 * MS))
        );
        assert!(s.pulse(THROTTLE, 1600, 300, t0, t0 + 3_000 * MS, Ok(())).is_err(), "already expired");
        // A refusal since the last tick (e-stop, fault) ends it at once, and it stays ended.
        s.pulse(STEERING, 1100, 300, u64::MAX, t0 + 4_000 * MS, Ok(())).unwrap();
        assert_eq!(s.hold(t0 + 4_001 * MS, Err("latched".into())), None);
        assert_eq!(s.hold(t0 + 4_002 * MS, Ok(())), None);
        // Released: ends now.
        s.pulse(STEERING, 1100, 300, u64::MAX, t0 + 5_000 * MS, Ok(())).unwrap();
        assert!(s.release().unwrap().contains("released"));
        assert_eq!(s.hold(t0 + 5_001 * MS, Ok(())), None);
    }

    #[test]
    fn pulses_are_refused_when_not_allowed_out_of_range_or_with_a_long_lease() {
        let mut s = session();
        let refused = s.pulse(STEERING, 1900, 300, u64::MAX, 0, Err("latched".into()));
        assert_eq!(refused, Err("latched".into()));
        assert!(s.pulse(STEERING, 1900, 301, u64::MAX, 0, Ok(())).unwrap_err().contains("lease_ms"));
        assert!(s.pulse(STEERING, 1900, 0, u64::MAX, 0, Ok(())).is_err());
        assert!(s.pulse(STEERING, 2600, 300, u64::MAX, 0, Ok(())).is_err());
        assert_eq!(s.hold(1, Ok(())), None, "nothing refused was held");
        // max_throttle 0.3 of a 1000..2000 ESC: 1350..=1650 (the brake pulse 1300 too).
        assert_eq!(s.limits.throttle_us, (1300, 1650));
        assert!(s.pulse(THROTTLE, 1650, 300, u64::MAX, 0, Ok(())).is_ok());
        let beyond = s.pulse(THROTTLE, 1700, 300, u64::MAX, 0, Ok(())).unwrap_err();
        assert!(beyond.contains("calibrate_full_throttle"), "{beyond}");
        let full = ActuatorSection { calibrate_full_throttle: true, ..actuator() };
        let mut s = CalibrationSession::new(&full, true, None);
        assert!(s.pulse(THROTTLE, 2000, 300, u64::MAX, 0, Ok(())).is_ok());
        // No outputs: nothing to calibrate.
        let mut none = CalibrationSession::default();
        assert!(none.pulse(STEERING, 1500, 300, u64::MAX, 0, Ok(())).unwrap_err().contains("no actuator"));
    }

    #[test]
    fn a_save_is_written_off_the_loop_and_answered_once_done() {
        let action = |id: &str| Action {
            id: id.into(),
            sender: "v".into(),
            command: ads_protocol::Command::CalibrateRelease,
            run: ActionRun::default(),
        };
        let values = CalibrationValues { steering_centre_us: Some(1470), ..CalibrationValues::default() };
        // Without --config there is no file.
        assert!(session().save(action("a"), 1, values).unwrap().unwrap_err().contains("--config"));
        let dir = std::env::temp_dir().join(format!("ads-calibration-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vehicle.toml");
        std::fs::write(&path, "[actuator.calibration]\nsteering_centre_us = 1480\n").unwrap();
        let mut s = CalibrationSession::new(&actuator(), true, Some(path.clone()));
        assert!(s.save(action("b"), 2, CalibrationValues::default()).unwrap().is_err(), "nothing to save");
        assert_eq!(s.save(action("c"), 3, values), None);
        assert!(s.save(action("d"), 4, values).unwrap().unwrap_err().contains("still"), "one at a time");
        let done = loop {
            let done = s.finished();
            if !done.is_empty() {
                break done;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let (a, seq, outcome) = &done[0];
        assert_eq!((a.id.as_str(), *seq), ("c", 3));
        assert!(outcome.as_ref().unwrap().contains("steering_centre_us = 1470"), "{outcome:?}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[actuator.calibration]\nsteering_centre_us = 1470\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
