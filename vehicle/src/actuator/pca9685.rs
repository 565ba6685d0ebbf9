//! A PCA9685 16-channel PWM board on Linux I2C: Donkey Car's standard. One channel drives the
//! steering servo, one the ESC, at 50–60 Hz.
//!
//! Built on the embedded-Rust ecosystem's crates: `pwm-pca9685` speaks to the chip through
//! embedded-hal's [`I2c`] trait, `linux-embedded-hal`'s `I2cdev` is that trait on `/dev/i2c-N`.
//! [`Pca9685Actuator`] is generic over the trait, so the tests run it against a register-level
//! model of the chip and check the exact bus traffic; only [`open`] touches a real bus (and
//! ran on none here: docs/actuators.md).
//!
//! Start-up, per the datasheet: MODE1 with SLEEP set (the prescaler can only be written while
//! the oscillator sleeps, and the chip may be awake from an earlier run), PRE_SCALE =
//! round(osc / (4096 × f)) − 1, MODE1 awake, 500 µs for the oscillator; then each channel's
//! LEDn_ON = 0 and LEDn_OFF = the pulse in counts of 1/4096 of the period, with auto-increment.
//! A PCA9685 holds its last pulse when the host dies: [`super::output::Output`] and
//! `ads-vehicle neutral` are what put it at neutral then.

use super::{Actuator, ActuatorError, Pulses};
use crate::config::ActuatorSection;
use embedded_hal::i2c::{Error as _, ErrorKind, I2c};
use pwm_pca9685::{Address, Channel, Pca9685};
use std::path::Path;

/// The chip's settings, from `[actuator]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pca9685Settings {
    pub address: u8,
    pub steering_channel: u8,
    pub throttle_channel: u8,
    pub frequency_hz: f64,
    pub oscillator_hz: u32,
}

impl Pca9685Settings {
    pub fn from_config(a: &ActuatorSection) -> Self {
        Self {
            address: a.address,
            steering_channel: a.steering_channel,
            throttle_channel: a.throttle_channel,
            frequency_hz: a.frequency_hz,
            oscillator_hz: a.oscillator_hz,
        }
    }
}

/// PRE_SCALE for `frequency_hz`: round(osc / (4096 × f)) − 1, within the chip's 3..=255.
pub fn prescale(oscillator_hz: u32, frequency_hz: f64) -> u8 {
    let p = (f64::from(oscillator_hz) / (4096.0 * frequency_hz)).round() - 1.0;
    // Clamped into u8's range first.
    p.clamp(3.0, 255.0) as u8
}

/// Steering and throttle on two channels of one PCA9685.
pub struct Pca9685Actuator<I2C> {
    pwm: Pca9685<I2C>,
    device: String,
    address: u8,
    steering: Channel,
    throttle: Channel,
    /// Counts of the 12-bit PWM counter per µs at the prescale in use.
    counts_per_us: f64,
}

impl<I2C> std::fmt::Debug for Pca9685Actuator<I2C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pca9685Actuator")
            .field("device", &self.device)
            .field("address", &self.address)
            .field("steering", &self.steering)
            .field("throttle", &self.throttle)
            .finish()
    }
}

impl<I2C: I2c> Pca9685Actuator<I2C> {
    /// Sets the chip up on `i2c` (`device` names the bus in errors): sleep, prescale, wake.
    pub fn new(i2c: I2C, device: &str, settings: &Pca9685Settings) -> Result<Self, ActuatorError> {
        let channel = |c: u8, key: &str| {
            Channel::try_from(c).map_err(|()| ActuatorError::Open {
                device: device.into(),
                reason: format!("channel {c} does not exist"),
                hint: format!("actuator.{key} must be in 0..=15"),
            })
        };
        let steering = channel(settings.steering_channel, "steering_channel")?;
        let throttle = channel(settings.throttle_channel, "throttle_channel")?;
        let address = settings.address;
        let pwm = Pca9685::new(i2c, Address::from(address)).map_err(|_| ActuatorError::Open {
            device: device.into(),
            reason: format!("{address:#04x} is not a PCA9685 address"),
            hint: "actuator.address: 0x40 unless the board's address pads are bridged".into(),
        })?;
        let p = prescale(settings.oscillator_hz, settings.frequency_hz);
        let counts_per_us = f64::from(settings.oscillator_hz) / (f64::from(p) + 1.0) / 1e6;
        let mut this = Self { pwm, device: device.into(), address, steering, throttle, counts_per_us };
        // The driver believes the chip fresh from power-up (asleep); it may be awake from an
        // earlier run, where a PRE_SCALE write would be ignored. Sleep first, whatever it is.
        this.pwm.disable().map_err(|e| this.error(e))?;
        this.pwm.set_prescale(p).map_err(|e| this.error(e))?;
        this.pwm.enable().map_err(|e| this.error(e))?;
        // The oscillator needs 500 µs after waking before the outputs are exact.
        std::thread::sleep(std::time::Duration::from_micros(500));
        Ok(this)
    }

    /// LEDn_OFF count for a pulse of `us` (LEDn_ON is 0).
    pub fn counts(&self, us: u16) -> u16 {
        // At most 4095 by the min; never negative.
        (f64::from(us) * self.counts_per_us).round().min(4095.0) as u16
    }

    /// The bus, back (tests read the model's registers through it).
    pub fn into_inner(self) -> I2C {
        self.pwm.destroy()
    }

    fn error(&self, e: pwm_pca9685::Error<I2C::Error>) -> ActuatorError {
        let bus = bus_number(&self.device);
        let address = self.address;
        match e {
            pwm_pca9685::Error::I2C(e) if matches!(e.kind(), ErrorKind::NoAcknowledge(_)) => ActuatorError::Io {
                device: self.device.clone(),
                reason: format!("no PCA9685 answers at {address:#04x}"),
                hint: format!(
                    "check the wiring (SDA, SCL, GND, VCC 3.3 V), that `i2cdetect -y {bus}` shows {address:x}, and actuator.address"
                ),
            },
            pwm_pca9685::Error::I2C(e) => ActuatorError::Io {
                device: self.device.clone(),
                reason: format!("I2C error talking to the PCA9685 at {address:#04x}: {e:?}"),
                hint: format!("check the wiring and `i2cdetect -y {bus}`"),
            },
            pwm_pca9685::Error::InvalidInputData => ActuatorError::Io {
                device: self.device.clone(),
                reason: "a value out of the PCA9685's range".into(),
                hint: "check [actuator] frequency_hz and the calibration".into(),
            },
        }
    }
}

impl<I2C: I2c> Actuator for Pca9685Actuator<I2C> {
    fn kind(&self) -> &'static str {
        "pca9685"
    }

    fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
        for (channel, us) in [(self.steering, pulses.steering_us), (self.throttle, pulses.throttle_us)] {
            let off = self.counts(us);
            self.pwm.set_channel_on_off(channel, 0, off).map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}

/// `N` of `/dev/i2c-N`, for the i2cdetect hint.
fn bus_number(device: &str) -> &str {
    device.rsplit_once("i2c-").map_or("1", |(_, n)| n)
}

/// Opens the configured bus (`/dev/i2c-1` by default) and sets the chip up.
pub fn open(config: &ActuatorSection) -> Result<Pca9685Actuator<linux_embedded_hal::I2cdev>, ActuatorError> {
    let path = config.device_path();
    let device = path.display().to_string();
    let i2c = open_bus(&path).map_err(|(reason, hint)| ActuatorError::Open {
        device: device.clone(),
        reason,
        hint,
    })?;
    Pca9685Actuator::new(i2c, &device, &Pca9685Settings::from_config(config))
}

fn open_bus(path: &Path) -> Result<linux_embedded_hal::I2cdev, (String, String)> {
    use std::io::ErrorKind as Kind;
    // A plain open first: its error kinds tell a missing bus from a missing permission.
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(path) {
        let hint = match e.kind() {
            Kind::NotFound => {
                "is I2C enabled (raspi-config → Interface Options → I2C, or dtparam=i2c_arm=on) and is this the bus (`ls /dev/i2c-*`)?"
            }
            Kind::PermissionDenied => {
                "add the user to the i2c group; under systemd, a drop-in with DeviceAllow=char-i2c rw"
            }
            _ => "check the bus with `i2cdetect -l`",
        };
        return Err((e.to_string(), hint.into()));
    }
    linux_embedded_hal::I2cdev::new(path)
        .map_err(|e| (e.to_string(), "check the bus with `i2cdetect -l`".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::{ErrorType, NoAcknowledgeSource, Operation};

    const MODE1: u8 = 0x00;
    const PRE_SCALE: u8 = 0xFE;
    const SLEEP: u8 = 0x10;
    const AI: u8 = 0x20;
    const ALLCALL: u8 = 0x01;

    /// A PCA9685 at the register level (datasheet 7.3): a register pointer that auto-increments
    /// only with MODE1.AI, PRE_SCALE writes ignored while the oscillator runs (SLEEP = 0).
    /// Records every write transaction's bytes.
    #[derive(Debug)]
    struct Model {
        address: u8,
        regs: [u8; 256],
        traffic: Vec<Vec<u8>>,
    }

    #[derive(Debug)]
    struct Nack;

    impl embedded_hal::i2c::Error for Nack {
        fn kind(&self) -> ErrorKind {
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
        }
    }

    impl Model {
        /// As at power-up: asleep, all-call on, PRE_SCALE 0x1E (200 Hz).
        fn power_up() -> Self {
            let mut regs = [0u8; 256];
            regs[usize::from(MODE1)] = SLEEP | ALLCALL;
            regs[usize::from(PRE_SCALE)] = 0x1E;
            Self { address: 0x40, regs, traffic: Vec::new() }
        }

        /// As an earlier run left it: awake, auto-increment on, some other prescale.
        fn awake() -> Self {
            let mut m = Self::power_up();
            m.regs[usize::from(MODE1)] = AI | ALLCALL;
            m.regs[usize::from(PRE_SCALE)] = 0x1E;
            m
        }

        fn store(&mut self, reg: u8, value: u8) {
            if reg == PRE_SCALE && self.regs[usize::from(MODE1)] & SLEEP == 0 {
                return;
            }
            self.regs[usize::from(reg)] = value;
        }

        fn led(&self, channel: u8) -> (u16, u16) {
            let base = usize::from(0x06 + 4 * channel);
            let word = |i: usize| u16::from_le_bytes([self.regs[i], self.regs[i + 1]]);
            (word(base), word(base + 2))
        }

        /// The pulse the chip puts out on `channel`, µs at its real 25 MHz.
        fn pulse_us(&self, channel: u8) -> f64 {
            let (on, off) = self.led(channel);
            let period_us = 4096.0 * (f64::from(self.regs[usize::from(PRE_SCALE)]) + 1.0) / 25.0;
            f64::from(off - on) * period_us / 4096.0
        }
    }

    impl ErrorType for Model {
        type Error = Nack;
    }

    impl I2c for Model {
        fn transaction(&mut self, address: u8, operations: &mut [Operation<'_>]) -> Result<(), Nack> {
            if address != self.address {
                return Err(Nack);
            }
            let mut pointer = 0u8;
            for op in operations {
                match op {
                    Operation::Write(bytes) => {
                        self.traffic.push(bytes.to_vec());
                        let Some((&reg, data)) = bytes.split_first() else { continue };
                        pointer = reg;
                        for &b in data {
                            self.store(pointer, b);
                            if self.regs[usize::from(MODE1)] & AI != 0 {
                                pointer = pointer.wrapping_add(1);
                            }
                        }
                    }
                    Operation::Read(buf) => {
                        for b in buf.iter_mut() {
                            *b = self.regs[usize::from(pointer)];
                        }
                    }
                }
            }
            Ok(())
        }
    }

    fn settings(frequency_hz: f64) -> Pca9685Settings {
        Pca9685Settings {
            address: 0x40,
            steering_channel: 0,
            throttle_channel: 1,
            frequency_hz,
            oscillator_hz: 25_000_000,
        }
    }

    #[test]
    fn prescale_for_servo_frequencies() {
        assert_eq!(prescale(25_000_000, 50.0), 121);
        assert_eq!(prescale(25_000_000, 60.0), 101);
        assert_eq!(prescale(25_000_000, 1526.0), 3);
        assert_eq!(prescale(25_000_000, 24.0), 253);
        assert_eq!(prescale(25_000_000, 1.0), 255);
    }

    #[test]
    fn start_up_sleeps_before_the_prescale_then_wakes() {
        for (model, f, p) in [
            (Model::power_up(), 50.0, 121),
            (Model::power_up(), 60.0, 101),
            // Awake from an earlier run: without the sleep the prescale would be ignored.
            (Model::awake(), 50.0, 121),
            (Model::awake(), 60.0, 101),
        ] {
            let pca = Pca9685Actuator::new(model, "/dev/i2c-1", &settings(f)).unwrap();
            let model = pca.into_inner();
            assert_eq!(
                model.traffic,
                [vec![MODE1, SLEEP | ALLCALL], vec![PRE_SCALE, p], vec![MODE1, ALLCALL]]
            );
            assert_eq!(model.regs[usize::from(PRE_SCALE)], p, "{f} Hz");
            assert_eq!(model.regs[usize::from(MODE1)] & SLEEP, 0, "awake");
        }
    }

    #[test]
    fn pulses_become_led_on_off_counts_with_auto_increment() {
        let mut pca = Pca9685Actuator::new(Model::power_up(), "/dev/i2c-1", &settings(50.0)).unwrap();
        pca.write(Pulses { steering_us: 1000, throttle_us: 2000 }).unwrap();
        pca.write(Pulses { steering_us: 1500, throttle_us: 1500 }).unwrap();
        let model = pca.into_inner();
        // 50 Hz, prescale 121: 25 MHz / 122 = 204.9 counts per ms.
        // 1000 µs → 205, 2000 µs → 410, 1500 µs → 307.
        assert_eq!(
            model.traffic[3..],
            [
                vec![MODE1, AI | ALLCALL],
                vec![0x06, 0, 0, 205, 0],
                vec![0x0A, 0, 0, (410 & 0xFF) as u8, (410 >> 8) as u8],
                vec![0x06, 0, 0, (307 & 0xFF) as u8, (307 >> 8) as u8],
                vec![0x0A, 0, 0, (307 & 0xFF) as u8, (307 >> 8) as u8],
            ]
        );
        assert_eq!(model.led(0), (0, 307));
        assert_eq!(model.led(1), (0, 307));
    }

    #[test]
    fn the_chip_puts_out_the_asked_pulse_within_half_a_count() {
        for f in [50.0, 60.0] {
            let mut pca = Pca9685Actuator::new(Model::awake(), "/dev/i2c-1", &settings(f)).unwrap();
            for us in (1000..=2000).step_by(50) {
                pca.write(Pulses { steering_us: us, throttle_us: 3000 - us }).unwrap();
            }
            let model = pca.into_inner();
            // One count: the period / 4096 = (prescale + 1) / 25 MHz.
            let count_us = (f64::from(prescale(25_000_000, f)) + 1.0) / 25.0;
            let (s, t) = (model.pulse_us(0), model.pulse_us(1));
            assert!((s - 2000.0).abs() <= count_us / 2.0, "{f} Hz: steering {s} µs");
            assert!((t - 1000.0).abs() <= count_us / 2.0, "{f} Hz: throttle {t} µs");
        }
    }

    #[test]
    fn other_channels_address_their_own_registers() {
        let s = Pca9685Settings { steering_channel: 4, throttle_channel: 15, ..settings(50.0) };
        let mut pca = Pca9685Actuator::new(Model::power_up(), "/dev/i2c-1", &s).unwrap();
        pca.write(Pulses { steering_us: 1500, throttle_us: 1500 }).unwrap();
        let model = pca.into_inner();
        assert_eq!(model.traffic[4][0], 0x06 + 4 * 4);
        assert_eq!(model.traffic[5][0], 0x06 + 4 * 15);
        assert_eq!((model.led(4), model.led(15)), ((0, 307), (0, 307)));
        assert_eq!(model.led(0), (0, 0), "channel 0 untouched");
    }

    #[test]
    fn no_chip_at_the_address_is_an_error_naming_the_bus_and_i2cdetect() {
        let s = Pca9685Settings { address: 0x41, ..settings(50.0) };
        let err = Pca9685Actuator::new(Model::power_up(), "/dev/i2c-3", &s).unwrap_err().to_string();
        assert!(err.contains("/dev/i2c-3") && err.contains("0x41"), "{err}");
        assert!(err.contains("i2cdetect -y 3"), "{err}");
    }

    #[test]
    fn a_missing_bus_is_an_error_naming_it_and_what_to_check() {
        let config = ActuatorSection {
            kind: crate::config::ActuatorKind::Pca9685,
            device: Some("/dev/i2c-does-not-exist".into()),
            ..ActuatorSection::default()
        };
        let err = open(&config).unwrap_err().to_string();
        assert!(err.contains("/dev/i2c-does-not-exist") && err.contains("I2C enabled"), "{err}");
    }
}
