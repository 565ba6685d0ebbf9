//! Outputs to a real car: a steering servo and an ESC, through a PCA9685 PWM board on I2C or a
//! microcontroller on a serial port (docs/actuators.md).
//!
//! The control loop's controls become pulse widths in three steps, each in a room of its own:
//! - [`ActuatorCommand`]: normalized steering `[-1, 1]` (+ = left), throttle `[-1, 1]`
//!   (- = reverse) and brake `[0, 1]`;
//! - [`Shaper`] (pure): clamps to the calibrated range, caps the throttle
//!   (`actuator.max_throttle`), limits how fast it rises, and reaches reverse only through the
//!   ESC's brake → neutral → reverse sequence; maps to [`Pulses`] with the car's
//!   [`Calibration`];
//! - an [`Actuator`] writes the pulses to the device; [`output::Output`] owns it on a thread of
//!   its own and writes **neutral** whenever the loop's newest command is older than
//!   `actuator.command_timeout_ms`, on stop, on drop and on panic.
//!
//! The simulator and CARLA keep their own actuation (`FrameSource::actuate`); this seam is for
//! hardware. `kind = "none"` (the default) opens nothing and starts no thread.

pub mod calibrate;
pub mod calibration_file;
pub mod calibration_session;
pub mod neutral;
pub mod output;
pub mod pca9685;
pub mod report;
pub mod serial;

use crate::config::{ActuatorKind, ActuatorSection, StopThrottle};
use ads_sim::Controls;

/// Pulse widths of the two channels, µs (a hobby servo or ESC: 1000..2000, centre 1500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulses {
    pub steering_us: u16,
    pub throttle_us: u16,
}

/// What the control loop asks of the outputs, normalized.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ActuatorCommand {
    /// -1 (full right) ..= 1 (full left), like the wheel angle's sign in [`Controls`].
    pub steering: f64,
    /// -1 (full reverse) ..= 1 (full forward), before `max_throttle`.
    pub throttle: f64,
    /// 0 ..= 1; any brake wins over the throttle.
    pub brake: f64,
}

impl ActuatorCommand {
    /// The loop's controls (wheel angle in rad, throttle and brake 0..1) for a car whose full
    /// steering lock is `max_steering_rad`.
    pub fn from_controls(controls: Controls, max_steering_rad: f64) -> Self {
        Self {
            steering: controls.steering / max_steering_rad,
            throttle: controls.throttle,
            brake: controls.brake,
        }
    }
}

/// What a device says about itself, beyond "the write went through".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    /// The board's own word for its state (serial: `drive`, `neutral`, `timeout`, `error`).
    pub board: Option<String>,
    /// The newest sequence number the board acknowledged (serial).
    pub acked_seq: Option<u32>,
    /// Something wrong with the device now, in words (answers missing, bad lines).
    pub fault: Option<String>,
}

/// A device that could not be opened or stopped working; each names the device and what to
/// check.
#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    #[error("opening {device}: {reason} ({hint})")]
    Open { device: String, reason: String, hint: String },
    /// Another process holds the device (a serial port is opened exclusively).
    #[error("opening {device}: the device is busy ({hint})")]
    Busy { device: String, hint: String },
    #[error("{device}: {reason} ({hint})")]
    Io { device: String, reason: String, hint: String },
    #[error("{device}: the board answered wrongly: {detail}")]
    Protocol { device: String, detail: String },
}

/// One output device: a steering channel and a throttle channel.
///
/// Implementations are small: they write pulses and, if the device talks back, say what it
/// said. Everything about *which* pulses (limits, timeouts, neutral on every fault) lives in
/// [`Shaper`] and [`output::Output`], once for all devices.
pub trait Actuator {
    /// `pca9685` or `serial`, as in the configuration.
    fn kind(&self) -> &'static str;
    /// Writes these pulses to the outputs.
    fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError>;
    /// Writes the neutral (or brake) pulses of a stop. A device with a neutral command of its
    /// own (the serial board) overrides this.
    fn neutral(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
        self.write(pulses)
    }
    fn status(&self) -> DeviceStatus {
        DeviceStatus::default()
    }
}

/// One car's pulse widths, µs (`[actuator.calibration]`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Calibration {
    /// Steering at full left, centre (straight ahead) and full right. Left may be below or
    /// above right: a reversed servo is calibrated, not rewired.
    pub steering_left_us: u16,
    pub steering_centre_us: u16,
    pub steering_right_us: u16,
    /// ESC at full reverse, neutral (stopped, no brake) and full forward.
    pub throttle_reverse_us: u16,
    pub throttle_neutral_us: u16,
    pub throttle_forward_us: u16,
    /// The ESC's brake at full brake. The default is the neutral pulse (coast to a stop): on an
    /// ESC in forward/brake/reverse mode a pulse on the reverse side brakes only while the car
    /// rolls forward, and *reverses* after a neutral (docs/actuators.md).
    pub brake_us: u16,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            steering_left_us: 2000,
            steering_centre_us: 1500,
            steering_right_us: 1000,
            throttle_reverse_us: 1000,
            throttle_neutral_us: 1500,
            throttle_forward_us: 2000,
            brake_us: 1500,
        }
    }
}

/// Pulses no servo or ESC takes: the calibration is refused outside this range.
pub const PULSE_RANGE_US: std::ops::RangeInclusive<u16> = 500..=2500;

impl Calibration {
    /// The pulses of a stop: steering centre, throttle neutral or the brake.
    pub fn stop(&self, throttle: StopThrottle) -> Pulses {
        Pulses {
            steering_us: self.steering_centre_us,
            throttle_us: match throttle {
                StopThrottle::Neutral => self.throttle_neutral_us,
                StopThrottle::Brake => self.brake_us,
            },
        }
    }

    pub fn neutral(&self) -> Pulses {
        self.stop(StopThrottle::Neutral)
    }

    /// -1..=1 (+ = left) → µs, clamped; NaN is straight ahead.
    pub fn steering_us(&self, steering: f64) -> u16 {
        let s = if steering.is_nan() { 0.0 } else { steering.clamp(-1.0, 1.0) };
        let end = if s >= 0.0 { self.steering_left_us } else { self.steering_right_us };
        lerp(self.steering_centre_us, end, s.abs())
    }

    /// -1..=1 (- = reverse) → µs, clamped; NaN is neutral.
    pub fn throttle_us(&self, throttle: f64) -> u16 {
        let t = if throttle.is_nan() { 0.0 } else { throttle.clamp(-1.0, 1.0) };
        let end = if t >= 0.0 { self.throttle_forward_us } else { self.throttle_reverse_us };
        lerp(self.throttle_neutral_us, end, t.abs())
    }

    /// 0..=1 → µs between neutral and `brake_us`.
    pub fn brake_pulse_us(&self, brake: f64) -> u16 {
        lerp(self.throttle_neutral_us, self.brake_us, brake.clamp(0.0, 1.0))
    }

    /// Every pulse in [`PULSE_RANGE_US`], centre and neutral between their ends.
    pub fn validate(&self) -> Result<(), (&'static str, u16, &'static str)> {
        let all = [
            ("actuator.calibration.steering_left_us", self.steering_left_us),
            ("actuator.calibration.steering_centre_us", self.steering_centre_us),
            ("actuator.calibration.steering_right_us", self.steering_right_us),
            ("actuator.calibration.throttle_reverse_us", self.throttle_reverse_us),
            ("actuator.calibration.throttle_neutral_us", self.throttle_neutral_us),
            ("actuator.calibration.throttle_forward_us", self.throttle_forward_us),
            ("actuator.calibration.brake_us", self.brake_us),
        ];
        for (key, us) in all {
            if !PULSE_RANGE_US.contains(&us) {
                return Err((key, us, "must be in 500..=2500 µs"));
            }
        }
        let between = |a: u16, m: u16, b: u16| (a.min(b)..=a.max(b)).contains(&m);
        if !between(self.steering_left_us, self.steering_centre_us, self.steering_right_us) {
            return Err((
                "actuator.calibration.steering_centre_us",
                self.steering_centre_us,
                "must lie between steering_left_us and steering_right_us",
            ));
        }
        if !between(self.throttle_reverse_us, self.throttle_neutral_us, self.throttle_forward_us) {
            return Err((
                "actuator.calibration.throttle_neutral_us",
                self.throttle_neutral_us,
                "must lie between throttle_reverse_us and throttle_forward_us",
            ));
        }
        if self.throttle_forward_us == self.throttle_neutral_us {
            return Err((
                "actuator.calibration.throttle_forward_us",
                self.throttle_forward_us,
                "must differ from throttle_neutral_us",
            ));
        }
        Ok(())
    }

    /// The widest pulse of any channel, µs (must fit in one PWM period).
    pub fn widest_us(&self) -> u16 {
        [
            self.steering_left_us,
            self.steering_centre_us,
            self.steering_right_us,
            self.throttle_reverse_us,
            self.throttle_neutral_us,
            self.throttle_forward_us,
            self.brake_us,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

/// `from` + `f` × (`to` - `from`), rounded; `f` in 0..=1 keeps the result between the two.
fn lerp(from: u16, to: u16, f: f64) -> u16 {
    let us = f64::from(from) + f * (f64::from(to) - f64::from(from));
    // In range by construction: between two u16 values.
    us.round() as u16
}

/// The limits of [`Shaper`], from `[actuator]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest throttle magnitude, forward and reverse (0..=1).
    pub max_throttle: f64,
    /// How fast the throttle magnitude may rise, full range per second; it falls at once.
    pub throttle_slew_per_s: f64,
    /// Reverse at all; off, a negative throttle is neutral.
    pub allow_reverse: bool,
    /// The ESC's reverse sequence: the brake pulse for this long, then neutral for this long.
    pub reverse_brake_ns: u64,
    pub reverse_neutral_ns: u64,
}

impl Limits {
    pub fn from_config(a: &ActuatorSection) -> Self {
        Self {
            max_throttle: a.max_throttle,
            throttle_slew_per_s: a.throttle_slew_per_s,
            allow_reverse: a.allow_reverse,
            reverse_brake_ns: a.reverse_brake_ms * 1_000_000,
            reverse_neutral_ns: a.reverse_neutral_ms * 1_000_000,
        }
    }
}

/// Where the ESC is in its forward/brake/reverse sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gear {
    /// Forward or stopped: a reverse pulse now would brake.
    Forward,
    /// Reverse asked for: the first reverse pulse (the ESC brakes), until the instant given.
    Braking { until_ns: u64 },
    /// Then neutral until the instant given (the ESC arms reverse).
    Arming { until_ns: u64 },
    /// Reverse pulses drive backwards.
    Reverse,
}

/// Commands → pulses: clamping, throttle cap and slew, the reverse sequence. Pure: time comes
/// in as an argument.
#[derive(Debug, Clone)]
pub struct Shaper {
    calibration: Calibration,
    limits: Limits,
    /// The throttle last put out (after cap and slew), -1..=1.
    throttle: f64,
    gear: Gear,
    last_ns: Option<u64>,
}

impl Shaper {
    pub fn new(calibration: Calibration, limits: Limits) -> Self {
        Self { calibration, limits, throttle: 0.0, gear: Gear::Forward, last_ns: None }
    }

    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    pub fn gear(&self) -> Gear {
        self.gear
    }

    /// The pulses for `command` at `now_ns`.
    pub fn shape(&mut self, command: ActuatorCommand, now_ns: u64) -> Pulses {
        let dt = self.last_ns.map_or(0.0, |last| now_ns.saturating_sub(last) as f64 / 1e9);
        self.last_ns = Some(now_ns);
        let steering_us = self.calibration.steering_us(command.steering);
        // NaN brake: brake fully (the side to err on); NaN throttle: none.
        let brake = if command.brake.is_nan() { 1.0 } else { command.brake.clamp(0.0, 1.0) };
        if brake > 0.0 {
            self.throttle = 0.0;
            self.gear = Gear::Forward;
            return Pulses { steering_us, throttle_us: self.calibration.brake_pulse_us(brake) };
        }
        let max = self.limits.max_throttle.clamp(0.0, 1.0);
        let mut want = if command.throttle.is_nan() { 0.0 } else { command.throttle.clamp(-max, max) };
        if want < 0.0 && !self.limits.allow_reverse {
            want = 0.0;
        }
        self.gear = match self.gear {
            _ if want >= 0.0 => Gear::Forward,
            Gear::Forward => Gear::Braking { until_ns: now_ns + self.limits.reverse_brake_ns },
            Gear::Braking { until_ns } if now_ns >= until_ns => {
                Gear::Arming { until_ns: now_ns + self.limits.reverse_neutral_ns }
            }
            Gear::Arming { until_ns } if now_ns >= until_ns => Gear::Reverse,
            gear => gear,
        };
        let throttle_us = match self.gear {
            Gear::Braking { .. } => {
                self.throttle = 0.0;
                self.calibration.throttle_us(want)
            }
            Gear::Arming { .. } => {
                self.throttle = 0.0;
                self.calibration.throttle_neutral_us
            }
            Gear::Forward | Gear::Reverse => {
                self.throttle = slew(self.throttle, want, self.limits.throttle_slew_per_s * dt);
                self.calibration.throttle_us(self.throttle)
            }
        };
        Pulses { steering_us, throttle_us }
    }

    /// The pulses of a stop; the throttle starts again from zero, forward.
    pub fn stop(&mut self, throttle: StopThrottle, now_ns: u64) -> Pulses {
        self.throttle = 0.0;
        self.gear = Gear::Forward;
        self.last_ns = Some(now_ns);
        self.calibration.stop(throttle)
    }
}

/// Moves `from` towards `to`: a larger magnitude (or a change of sign, through zero) by at most
/// `step`; a smaller magnitude of the same sign at once.
fn slew(from: f64, to: f64, step: f64) -> f64 {
    let same_side = from == 0.0 || (from > 0.0) == (to > 0.0);
    if to == 0.0 || (same_side && to.abs() <= from.abs()) {
        return to;
    }
    if !same_side {
        // A change of direction: through zero at once (that is a fall), then up.
        return slew(0.0, to, step);
    }
    from + (to - from).clamp(-step, step)
}

/// Opens the device `config` names, if any (`none`: `Ok(None)`).
pub fn open(config: &ActuatorSection) -> Result<Option<Box<dyn Actuator + Send>>, ActuatorError> {
    Ok(match config.kind {
        ActuatorKind::None => None,
        ActuatorKind::Pca9685 => Some(Box::new(pca9685::open(config)?)),
        ActuatorKind::Serial => Some(Box::new(serial::open(config)?)),
    })
}

/// `ads-vehicle neutral`: opens the configured device, writes the neutral pulses once, closes
/// it. For systemd's `ExecStopPost=`, after any death of the vehicle (SIGKILL, OOM) that gave
/// it no chance to write neutral itself. With `kind = "none"` it does nothing.
pub fn write_neutral_once(config: &ActuatorSection) -> Result<Option<Pulses>, ActuatorError> {
    let Some(mut actuator) = open(config)? else { return Ok(None) };
    let pulses = config.calibration.neutral();
    actuator.neutral(pulses)?;
    Ok(Some(pulses))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limits() -> Limits {
        Limits {
            max_throttle: 0.3,
            throttle_slew_per_s: 1.0,
            allow_reverse: true,
            reverse_brake_ns: 200 * MS,
            reverse_neutral_ns: 150 * MS,
        }
    }

    fn drive(steering: f64, throttle: f64) -> ActuatorCommand {
        ActuatorCommand { steering, throttle, brake: 0.0 }
    }

    #[test]
    fn steering_maps_to_the_calibrated_range_and_clamps() {
        let c = Calibration {
            steering_left_us: 1100,
            steering_centre_us: 1450,
            steering_right_us: 1900,
            ..Calibration::default()
        };
        assert_eq!(c.steering_us(0.0), 1450);
        assert_eq!(c.steering_us(1.0), 1100);
        assert_eq!(c.steering_us(-1.0), 1900);
        assert_eq!(c.steering_us(0.5), 1275);
        assert_eq!(c.steering_us(-0.5), 1675);
        assert_eq!(c.steering_us(7.0), 1100);
        assert_eq!(c.steering_us(-7.0), 1900);
        assert_eq!(c.steering_us(f64::NAN), 1450);
        assert_eq!(c.steering_us(f64::INFINITY), 1100);
    }

    #[test]
    fn throttle_is_capped_and_rises_at_the_slew_rate_but_falls_at_once() {
        let c = Calibration::default();
        let mut s = Shaper::new(c, limits());
        // First command: dt = 0, nothing yet.
        assert_eq!(s.shape(drive(0.0, 1.0), 0).throttle_us, 1500);
        // 100 ms at 1.0/s: 0.1 of full → 1550 µs.
        assert_eq!(s.shape(drive(0.0, 1.0), 100 * MS).throttle_us, 1550);
        assert_eq!(s.shape(drive(0.0, 1.0), 200 * MS).throttle_us, 1600);
        // Capped at max_throttle 0.3 → 1650, however long.
        assert_eq!(s.shape(drive(0.0, 1.0), 5000 * MS).throttle_us, 1650);
        // Lower at once.
        assert_eq!(s.shape(drive(0.0, 0.1), 5010 * MS).throttle_us, 1550);
        assert_eq!(s.shape(drive(0.0, 0.0), 5020 * MS).throttle_us, 1500);
    }

    #[test]
    fn brake_wins_over_throttle_and_maps_towards_the_brake_pulse() {
        let c = Calibration { brake_us: 1300, ..Calibration::default() };
        let mut s = Shaper::new(c, limits());
        s.shape(drive(0.0, 0.3), 0);
        s.shape(drive(0.0, 0.3), 1000 * MS);
        let p = s.shape(ActuatorCommand { steering: 0.2, throttle: 0.3, brake: 1.0 }, 1010 * MS);
        assert_eq!(p, Pulses { steering_us: 1600, throttle_us: 1300 });
        assert_eq!(s.shape(ActuatorCommand { brake: 0.5, ..drive(0.0, 0.3) }, 1020 * MS).throttle_us, 1400);
        assert_eq!(
            s.shape(ActuatorCommand { brake: f64::NAN, ..drive(0.0, 0.3) }, 1030 * MS).throttle_us,
            1300
        );
        // Released: the throttle starts again from zero.
        assert_eq!(s.shape(drive(0.0, 0.3), 1040 * MS).throttle_us, 1500 + 5);
    }

    #[test]
    fn reverse_only_through_brake_then_neutral_then_reverse() {
        let mut s = Shaper::new(Calibration::default(), limits());
        assert_eq!(s.shape(drive(0.0, 0.3), 0).throttle_us, 1500);
        assert_eq!(s.shape(drive(0.0, 0.3), 500 * MS).throttle_us, 1650);
        // Reverse asked: the reverse-side pulse (the ESC brakes) for 200 ms…
        let t0 = 600 * MS;
        assert_eq!(s.shape(drive(0.0, -0.3), t0).throttle_us, 1350);
        assert_eq!(s.gear(), Gear::Braking { until_ns: t0 + 200 * MS });
        assert_eq!(s.shape(drive(0.0, -0.3), t0 + 199 * MS).throttle_us, 1350);
        // …then neutral for 150 ms…
        assert_eq!(s.shape(drive(0.0, -0.3), t0 + 200 * MS).throttle_us, 1500);
        assert_eq!(s.shape(drive(0.0, -0.3), t0 + 300 * MS).throttle_us, 1500);
        assert!(matches!(s.gear(), Gear::Arming { .. }));
        // …then reverse, from zero at the slew rate (50 ms → 0.05 → 1475).
        assert_eq!(s.shape(drive(0.0, -0.3), t0 + 350 * MS).throttle_us, 1475);
        assert_eq!(s.gear(), Gear::Reverse);
        assert_eq!(s.shape(drive(0.0, -0.3), t0 + 450 * MS).throttle_us, 1425);
        // Forward from reverse: no sequence; the reverse throttle is dropped at once and
        // forward rises from zero (10 ms → 0.01 → 1505).
        assert_eq!(s.shape(drive(0.0, 0.3), t0 + 460 * MS).throttle_us, 1505);
        assert_eq!(s.gear(), Gear::Forward);
        // A forward command during the sequence cancels it; reverse starts over.
        s.shape(drive(0.0, -0.3), t0 + 500 * MS);
        s.shape(drive(0.0, 0.0), t0 + 550 * MS);
        assert_eq!(s.shape(drive(0.0, -0.3), t0 + 800 * MS).throttle_us, 1350);
        // A stop, too.
        assert_eq!(s.stop(StopThrottle::Neutral, t0 + 900 * MS).throttle_us, 1500);
        assert_eq!(s.shape(drive(0.0, -0.3), t0 + 901 * MS).throttle_us, 1350);
    }

    #[test]
    fn without_reverse_a_negative_throttle_is_neutral() {
        let mut s = Shaper::new(Calibration::default(), Limits { allow_reverse: false, ..limits() });
        for t in 0..10 {
            assert_eq!(s.shape(drive(0.0, -1.0), t * 100 * MS).throttle_us, 1500);
        }
        assert_eq!(s.gear(), Gear::Forward);
    }

    #[test]
    fn a_reversed_esc_calibration_maps_the_right_way_round() {
        let c = Calibration {
            throttle_reverse_us: 2000,
            throttle_neutral_us: 1520,
            throttle_forward_us: 1000,
            brake_us: 1520,
            ..Calibration::default()
        };
        assert_eq!(c.throttle_us(0.5), 1260);
        assert_eq!(c.throttle_us(-0.5), 1760);
        assert_eq!(c.throttle_us(f64::NAN), 1520);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn calibration_is_validated_with_the_key() {
        let bad = Calibration { steering_centre_us: 2100, ..Calibration::default() };
        assert_eq!(bad.validate().unwrap_err().0, "actuator.calibration.steering_centre_us");
        let bad = Calibration { throttle_forward_us: 3000, ..Calibration::default() };
        assert_eq!(bad.validate().unwrap_err().0, "actuator.calibration.throttle_forward_us");
        let bad = Calibration { throttle_neutral_us: 900, ..Calibration::default() };
        assert_eq!(bad.validate().unwrap_err().0, "actuator.calibration.throttle_neutral_us");
        assert!(Calibration::default().validate().is_ok());
    }

    #[test]
    fn controls_normalize_by_the_steering_lock() {
        let c = ActuatorCommand::from_controls(Controls { steering: -0.25, throttle: 0.4, brake: 0.0 }, 0.5);
        assert_eq!(c, ActuatorCommand { steering: -0.5, throttle: 0.4, brake: 0.0 });
    }

    #[test]
    fn write_neutral_once_without_an_actuator_does_nothing() {
        assert_eq!(write_neutral_once(&ActuatorSection::default()).unwrap(), None);
    }
}
