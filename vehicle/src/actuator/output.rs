//! The output thread: owns the [`Actuator`] and writes neutral on every fault.
//!
//! The control loop hands it an order each tick ([`Output::command`] or [`Output::stop`]) and
//! never waits for it: an order is copied into a mailbox under a mutex that the output thread
//! holds only to copy it out again, never across a device write, and a condition variable
//! wakes the thread at once. The thread then writes:
//! - the shaped pulses of a fresh command ([`Shaper`]: clamps, throttle cap and slew, reverse
//!   sequence);
//! - **neutral** (steering centre, throttle neutral or the brake pulse, `timeout_throttle`)
//!   when the newest command is older than `command_timeout_ms`: a hung or dead loop stops the
//!   car. The thread wakes at the instant the command expires, not at its next refresh;
//! - the brake pulse after [`Output::stop`] (e-stop, fail-safe, hold, pause), on its next
//!   write, until the next command;
//! - neutral before any command, and neutral when it ends: on drop of the [`Output`], and on a
//!   panic of the thread (a guard writes it while unwinding);
//! - a calibration pulse ([`Output::hold`]) as given, not shaped, until the end of its lease
//!   or the command timeout, whichever comes first, then neutral.
//!
//! It writes at least every `refresh` even without news, which keeps a serial board's own
//! 100 ms timeout from firing while the vehicle is alive. What no thread can cover (SIGKILL,
//! OOM) is covered by `ads-vehicle neutral` in the unit's `ExecStopPost=` and, for a serial
//! board, by the board's own timeout.

use super::{Actuator, ActuatorCommand, ActuatorError, DeviceStatus, Pulses, Shaper};
use crate::config::{ActuatorSection, StopThrottle};
use ads_shmem_ipc::clock;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the output thread behaves, from `[actuator]`.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub shaper: Shaper,
    /// A command older than this is replaced by neutral.
    pub command_timeout_ns: u64,
    /// What a timeout writes on the throttle channel.
    pub timeout_throttle: StopThrottle,
    /// Longest time between two writes.
    pub refresh_ns: u64,
}

/// Writes at least this often: 50 Hz, the servo frame rate, and 5 lines per serial-board timeout.
pub const REFRESH_NS: u64 = 20_000_000;

impl OutputSettings {
    pub fn from_config(a: &ActuatorSection) -> Self {
        Self {
            shaper: Shaper::new(a.calibration, super::Limits::from_config(a)),
            command_timeout_ns: a.command_timeout_ms * 1_000_000,
            timeout_throttle: a.timeout_throttle,
            refresh_ns: REFRESH_NS,
        }
    }
}

/// What the outputs are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputState {
    /// No command yet: neutral.
    Waiting,
    /// A fresh command's pulses.
    Driving,
    /// Stopped by the loop ([`Output::stop`]): the brake pulse.
    Stopped,
    /// The newest command is older than the timeout: neutral.
    TimedOut,
    /// The thread has ended (dropped or panicked); its last write was neutral.
    Ended,
    /// A calibration pulse ([`Output::hold`]) within its lease.
    Calibrating,
}

/// A snapshot of the outputs, for `state.actuator`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputStatus {
    /// `pca9685` or `serial`.
    pub backend: &'static str,
    pub state: OutputState,
    /// The pulses of the last write that went through.
    pub pulses: Option<Pulses>,
    /// Age of the newest order at the last write, ms.
    pub command_age_ms: Option<u64>,
    /// Why the loop stopped the car, while [`OutputState::Stopped`].
    pub stop_reason: Option<String>,
    pub writes: u64,
    pub write_errors: u64,
    /// The newest write error, until a write goes through; or why the thread ended.
    pub fault: Option<String>,
    /// What the device says (the serial board's status).
    pub device: DeviceStatus,
}

#[derive(Debug, Clone, PartialEq)]
enum Order {
    Drive(ActuatorCommand),
    Stop(String),
    /// These pulses, unshaped, until the monotonic instant given.
    Hold(Pulses, u64),
}

#[derive(Debug)]
struct Mailbox {
    /// The newest order and the monotonic instant the loop gave it.
    order: Option<(Order, u64)>,
    /// Bumped by each order: the thread wakes for a new one.
    version: u64,
    shutdown: bool,
}

#[derive(Debug)]
struct Shared {
    mailbox: Mutex<Mailbox>,
    wake: Condvar,
    status: Mutex<OutputStatus>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic of the output thread while holding a lock leaves plain data behind, still valid.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The output thread and the loop's side of its mailbox. Dropping it writes neutral and joins
/// the thread.
#[derive(Debug)]
pub struct Output {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Output {
    /// Opens the configured device and starts its thread; `kind = "none"`: `Ok(None)`.
    pub fn start(config: &ActuatorSection) -> Result<Option<Self>, ActuatorError> {
        let Some(actuator) = super::open(config)? else { return Ok(None) };
        let device = config.device_path().display().to_string();
        Self::spawn(actuator, OutputSettings::from_config(config)).map(Some).map_err(|e| ActuatorError::Io {
            device,
            reason: e.to_string(),
            hint: "starting the output thread".into(),
        })
    }

    /// Starts the thread that owns `actuator`; it writes neutral at once.
    pub fn spawn(actuator: Box<dyn Actuator + Send>, settings: OutputSettings) -> std::io::Result<Self> {
        let status = OutputStatus {
            backend: actuator.kind(),
            state: OutputState::Waiting,
            pulses: None,
            command_age_ms: None,
            stop_reason: None,
            writes: 0,
            write_errors: 0,
            fault: None,
            device: actuator.status(),
        };
        let shared = Arc::new(Shared {
            mailbox: Mutex::new(Mailbox { order: None, version: 0, shutdown: false }),
            wake: Condvar::new(),
            status: Mutex::new(status),
        });
        let neutral = settings.shaper.calibration().neutral();
        let guard = NeutralGuard { actuator, neutral, shared: Arc::clone(&shared) };
        let thread = std::thread::Builder::new()
            .name("actuator-output".into())
            .spawn(move || OutputThread { guard, settings, last_write_ns: None }.run())?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// This tick's command, given at `now_mono_ns` ([`clock::monotonic_ns`]). Never blocks on
    /// the device.
    pub fn command(&self, command: ActuatorCommand, now_mono_ns: u64) {
        self.post(Order::Drive(command), now_mono_ns);
    }

    /// Stop now: the brake pulse on the next write (at once), until the next command. For
    /// every stop path of the loop: e-stop, fail-safe, hold, pause, no operator, source ended.
    pub fn stop(&self, reason: &str, now_mono_ns: u64) {
        let mut mailbox = lock(&self.shared.mailbox);
        match &mut mailbox.order {
            // Still stopped for the same reason (every tick): a fresh stamp, no allocation.
            Some((Order::Stop(current), stamp)) if current == reason => *stamp = now_mono_ns,
            order => *order = Some((Order::Stop(reason.to_owned()), now_mono_ns)),
        }
        mailbox.version += 1;
        drop(mailbox);
        self.shared.wake.notify_one();
    }

    /// A calibration pulse: `pulses` as they are (the loop checked them), written until
    /// `until_mono_ns` or until this order is older than the command timeout, then neutral.
    /// The loop renews it every tick while the lease holds.
    pub fn hold(&self, pulses: Pulses, until_mono_ns: u64, now_mono_ns: u64) {
        self.post(Order::Hold(pulses, until_mono_ns), now_mono_ns);
    }

    fn post(&self, order: Order, now_mono_ns: u64) {
        let mut mailbox = lock(&self.shared.mailbox);
        mailbox.order = Some((order, now_mono_ns));
        mailbox.version += 1;
        drop(mailbox);
        self.shared.wake.notify_one();
    }

    pub fn status(&self) -> OutputStatus {
        lock(&self.shared.status).clone()
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        lock(&self.shared.mailbox).shutdown = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the actuator output thread had panicked (its guard wrote neutral)");
            }
        }
    }
}

/// Owns the device; writes neutral when dropped: at the thread's end and while unwinding
/// from a panic.
struct NeutralGuard {
    actuator: Box<dyn Actuator + Send>,
    neutral: Pulses,
    shared: Arc<Shared>,
}

impl Drop for NeutralGuard {
    fn drop(&mut self) {
        let result = self.actuator.neutral(self.neutral);
        let mut status = lock(&self.shared.status);
        status.state = OutputState::Ended;
        match result {
            Ok(()) => {
                status.pulses = Some(self.neutral);
                status.writes += 1;
            }
            Err(e) => {
                tracing::error!("writing neutral at the end of the output thread: {e}");
                status.write_errors += 1;
                status.fault = Some(e.to_string());
            }
        }
        if std::thread::panicking() {
            status.fault = Some("the actuator output thread panicked; it wrote neutral".into());
        }
    }
}

struct OutputThread {
    guard: NeutralGuard,
    settings: OutputSettings,
    last_write_ns: Option<u64>,
}

impl OutputThread {
    fn run(mut self) {
        let mut seen = 0;
        loop {
            let Some(order) = self.next_order(&mut seen) else { return };
            self.write(order, clock::monotonic_ns());
        }
    }

    /// Waits for a new order, the expiry of the current command or the refresh, whichever
    /// comes first; `None` at shutdown.
    fn next_order(&self, seen: &mut u64) -> Option<Option<(Order, u64)>> {
        let mut mailbox = lock(&self.guard.shared.mailbox);
        loop {
            if mailbox.shutdown {
                return None;
            }
            if mailbox.version != *seen {
                break;
            }
            let now = clock::monotonic_ns();
            let mut due = self.last_write_ns.map_or(now, |last| last + self.settings.refresh_ns);
            let expiry = match &mailbox.order {
                Some((Order::Drive(_), stamp)) => Some(stamp + self.settings.command_timeout_ns + 1),
                Some((Order::Hold(_, until), stamp)) => {
                    Some((stamp + self.settings.command_timeout_ns).min(*until) + 1)
                }
                _ => None,
            };
            if let Some(expiry) = expiry {
                if self.last_write_ns.is_some_and(|last| last < expiry) {
                    due = due.min(expiry);
                }
            }
            if now >= due {
                break;
            }
            mailbox = self
                .guard
                .shared
                .wake
                .wait_timeout(mailbox, Duration::from_nanos(due - now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *seen = mailbox.version;
        Some(mailbox.order.clone())
    }

    fn write(&mut self, order: Option<(Order, u64)>, now: u64) {
        let s = &mut self.settings;
        let age_ns = order.as_ref().map(|(_, stamp)| now.saturating_sub(*stamp));
        let (state, pulses, stop_reason) = match order {
            None => (OutputState::Waiting, s.shaper.stop(StopThrottle::Neutral, now), None),
            Some((Order::Drive(command), stamp)) if now.saturating_sub(stamp) <= s.command_timeout_ns => {
                (OutputState::Driving, s.shaper.shape(command, now), None)
            }
            Some((Order::Drive(_), _)) => {
                (OutputState::TimedOut, s.shaper.stop(s.timeout_throttle, now), None)
            }
            Some((Order::Hold(pulses, until), stamp))
                if now <= until && now.saturating_sub(stamp) <= s.command_timeout_ns =>
            {
                s.shaper.stop(StopThrottle::Neutral, now);
                (OutputState::Calibrating, pulses, None)
            }
            // The lease ran out (or the loop stopped renewing it): neutral, not the brake.
            Some((Order::Hold(..), _)) => {
                (OutputState::TimedOut, s.shaper.stop(StopThrottle::Neutral, now), None)
            }
            Some((Order::Stop(reason), _)) => {
                (OutputState::Stopped, s.shaper.stop(StopThrottle::Brake, now), Some(reason))
            }
        };
        let actuator = &mut self.guard.actuator;
        let result = match state {
            OutputState::Driving | OutputState::Calibrating => actuator.write(pulses),
            _ => actuator.neutral(pulses),
        };
        self.last_write_ns = Some(now);
        let device = actuator.status();
        let mut status = lock(&self.guard.shared.status);
        if status.state != state {
            tracing::debug!(from = ?status.state, to = ?state, "actuator output");
        }
        status.state = state;
        status.command_age_ms = age_ns.map(|a| a / 1_000_000);
        status.stop_reason = stop_reason;
        status.device = device;
        match result {
            Ok(()) => {
                status.writes += 1;
                status.pulses = Some(pulses);
                if status.fault.take().is_some() {
                    tracing::info!("actuator writes go through again");
                }
            }
            Err(e) => {
                status.write_errors += 1;
                let text = e.to_string();
                // Each distinct fault is logged once, not 50 times a second.
                if status.fault.as_deref() != Some(text.as_str()) {
                    tracing::error!("actuator write failed: {text}");
                }
                status.fault = Some(text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::{Calibration, Limits};

    const MS: u64 = 1_000_000;
    const NEUTRAL: Pulses = Pulses { steering_us: 1500, throttle_us: 1500 };
    const BRAKE: Pulses = Pulses { steering_us: 1500, throttle_us: 1300 };
    const FULL_LEFT: Pulses = Pulses { steering_us: 2000, throttle_us: 1500 };

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Written {
        at_ns: u64,
        pulses: Pulses,
        /// Through `neutral` rather than `write`.
        neutral: bool,
    }

    #[derive(Debug, Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Written>>>);

    impl Recorder {
        fn writes(&self) -> Vec<Written> {
            self.0.lock().unwrap().clone()
        }

        /// Polls until `done` holds for the writes; a bound only against hanging forever.
        fn wait_for(&self, what: &str, done: impl Fn(&[Written]) -> bool) -> Vec<Written> {
            for _ in 0..6000 {
                let writes = self.writes();
                if done(&writes) {
                    return writes;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("never saw {what}: {:?}", self.writes());
        }
    }

    /// Records every write; panics on a write of `panic_on` or fails with an error while
    /// `fail` is set.
    struct Fake {
        record: Recorder,
        panic_on: Option<Pulses>,
        fail: bool,
    }

    impl Actuator for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
            assert!(self.panic_on != Some(pulses), "the fake device panics on {pulses:?}");
            if self.fail {
                return Err(ActuatorError::Io {
                    device: "/dev/fake".into(),
                    reason: "remote I/O error".into(),
                    hint: "check the wiring".into(),
                });
            }
            let at_ns = clock::monotonic_ns();
            self.record.0.lock().unwrap().push(Written { at_ns, pulses, neutral: false });
            Ok(())
        }
        fn neutral(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
            let at_ns = clock::monotonic_ns();
            self.record.0.lock().unwrap().push(Written { at_ns, pulses, neutral: true });
            Ok(())
        }
    }

    fn start(timeout_ms: u64, refresh_ms: u64, panic_on: Option<Pulses>, fail: bool) -> (Output, Recorder) {
        let record = Recorder::default();
        let calibration = Calibration { brake_us: 1300, ..Calibration::default() };
        let limits = Limits {
            max_throttle: 0.3,
            throttle_slew_per_s: 1.0,
            allow_reverse: false,
            reverse_brake_ns: 0,
            reverse_neutral_ns: 0,
        };
        let settings = OutputSettings {
            shaper: Shaper::new(calibration, limits),
            command_timeout_ns: timeout_ms * MS,
            timeout_throttle: StopThrottle::Neutral,
            refresh_ns: refresh_ms * MS,
        };
        let fake = Fake { record: record.clone(), panic_on, fail };
        (Output::spawn(Box::new(fake), settings).unwrap(), record)
    }

    fn left() -> ActuatorCommand {
        ActuatorCommand { steering: 1.0, throttle: 0.0, brake: 0.0 }
    }

    #[test]
    fn neutral_first_then_fresh_commands_drive() {
        let (output, record) = start(60_000, 20, None, false);
        let first = record.wait_for("a first write", |w| !w.is_empty())[0];
        assert_eq!((first.pulses, first.neutral), (NEUTRAL, true), "before any command");
        output.command(left(), clock::monotonic_ns());
        let writes = record.wait_for("the command's pulses", |w| w.iter().any(|w| w.pulses == FULL_LEFT));
        let drive = writes.iter().find(|w| w.pulses == FULL_LEFT).unwrap();
        assert!(!drive.neutral);
        let status = output.status();
        assert_eq!((status.backend, status.state), ("fake", OutputState::Driving));
        assert!(status.writes >= 2, "{status:?}");
    }

    #[test]
    fn a_hung_loop_gets_neutral_once_its_command_is_older_than_the_timeout() {
        let (output, record) = start(100, 20, None, false);
        record.wait_for("the first neutral", |w| !w.is_empty());
        let stamp = clock::monotonic_ns();
        output.command(left(), stamp);
        // The loop hangs: no more commands. The thread refreshes every 20 ms, so writes keep
        // coming whether or not the timeout works; look at those after the deadline.
        let deadline = stamp + 100 * MS;
        let writes = record.wait_for("5 writes after the deadline", |w| {
            w.iter().filter(|w| w.at_ns > deadline).count() >= 5
        });
        let after: Vec<_> = writes.iter().filter(|w| w.at_ns > deadline).collect();
        // At most one drive write decided just before the deadline lands after it; every
        // other write after the deadline is neutral.
        let driving_after = after.iter().filter(|w| w.pulses == FULL_LEFT).count();
        assert!(driving_after <= 1, "still driving after the timeout: {after:?}");
        assert!(after.iter().skip(1).all(|w| w.neutral && w.pulses == NEUTRAL), "{after:?}");
        // And no neutral before the deadline: once the command drove, every neutral was
        // decided (and so recorded) after the deadline.
        if let Some(first_drive) = writes.iter().position(|w| w.pulses == FULL_LEFT) {
            let later = &writes[first_drive..];
            assert!(later.iter().filter(|w| w.neutral).all(|w| w.at_ns > deadline), "{writes:?}");
        }
        assert_eq!(output.status().state, OutputState::TimedOut);
        // And a fresh command drives again.
        output.command(left(), clock::monotonic_ns());
        let n = writes.len();
        record.wait_for("driving again", |w| w[n..].iter().any(|w| w.pulses == FULL_LEFT));
    }

    #[test]
    fn stop_writes_the_brake_pulse_in_the_very_next_write() {
        // No refresh and no timeout within the test: every write is an answer to an order.
        let (output, record) = start(3_600_000, 3_600_000, None, false);
        record.wait_for("the first neutral", |w| w.len() == 1);
        output.command(left(), clock::monotonic_ns());
        record.wait_for("the command", |w| w.len() == 2);
        output.stop("emergency stop", clock::monotonic_ns());
        let writes = record.wait_for("the stop", |w| w.len() == 3);
        let seen: Vec<_> = writes.iter().map(|w| (w.pulses, w.neutral)).collect();
        assert_eq!(seen, [(NEUTRAL, true), (FULL_LEFT, false), (BRAKE, true)]);
        let status = output.status();
        assert_eq!(status.state, OutputState::Stopped);
        assert_eq!(status.stop_reason.as_deref(), Some("emergency stop"));
        // The same stop again (every tick while stopped) is one more brake write, not a drive.
        output.stop("emergency stop", clock::monotonic_ns());
        let writes = record.wait_for("the repeated stop", |w| w.len() == 4);
        assert_eq!((writes[3].pulses, writes[3].neutral), (BRAKE, true));
    }

    #[test]
    fn drop_writes_neutral_last() {
        let (output, record) = start(60_000, 20, None, false);
        output.command(left(), clock::monotonic_ns());
        record.wait_for("the command", |w| w.iter().any(|w| w.pulses == FULL_LEFT));
        drop(output);
        let writes = record.writes();
        let last = writes.last().unwrap();
        assert_eq!((last.pulses, last.neutral), (NEUTRAL, true), "{writes:?}");
        // Joined: nothing is written after the drop returned.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(record.writes().len(), writes.len());
    }

    #[test]
    fn a_panic_in_the_output_thread_ends_in_neutral() {
        let (output, record) = start(60_000, 20, Some(FULL_LEFT), false);
        // Half left goes through (and is refreshed); full left makes the device panic.
        let half_left = Pulses { steering_us: 1750, throttle_us: 1500 };
        output.command(ActuatorCommand { steering: 0.5, ..left() }, clock::monotonic_ns());
        record.wait_for("half left", |w| w.iter().any(|w| w.pulses == half_left));
        output.command(left(), clock::monotonic_ns());
        for _ in 0..6000 {
            if output.status().state == OutputState::Ended {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = output.status();
        assert_eq!(status.state, OutputState::Ended);
        assert!(status.fault.as_deref().unwrap_or("").contains("panicked"), "{status:?}");
        let writes = record.writes();
        let last = writes.last().unwrap();
        // Only the guard writes after the half-left ones: neutral, last.
        assert_eq!((last.pulses, last.neutral), (NEUTRAL, true), "{writes:?}");
        assert!(writes.iter().all(|w| w.pulses != FULL_LEFT));
        // The loop's side keeps working (and changes nothing).
        output.command(left(), clock::monotonic_ns());
        output.stop("e-stop", clock::monotonic_ns());
        drop(output);
        assert_eq!(record.writes().len(), writes.len());
    }

    #[test]
    fn a_calibration_pulse_holds_until_its_lease_ends_then_neutral() {
        // No refresh within the test: besides the answers to orders, only the lease's end
        // wakes the thread.
        let (output, record) = start(60_000, 3_600_000, None, false);
        record.wait_for("the first neutral", |w| w.len() == 1);
        let pulse = Pulses { steering_us: 1900, throttle_us: 1500 };
        let now = clock::monotonic_ns();
        let until = now + 150 * MS;
        output.hold(pulse, until, now);
        let writes = record.wait_for("neutral after the lease", |w| w.len() >= 3);
        let seen: Vec<_> = writes.iter().map(|w| (w.pulses, w.neutral)).collect();
        // Unshaped (the shaper would have centred it at 2000 for full left), then neutral
        // (not the brake pulse of a stop), decided after the lease's end.
        assert_eq!(seen[..3], [(NEUTRAL, true), (pulse, false), (NEUTRAL, true)], "{writes:?}");
        assert!(writes[2].at_ns > until, "{writes:?}");
        assert_eq!(output.status().state, OutputState::TimedOut);
        // Renewed before its end it keeps holding.
        let now = clock::monotonic_ns();
        output.hold(pulse, now + 3_600_000 * MS, now);
        record.wait_for("the pulse again", |w| w.last().is_some_and(|w| w.pulses == pulse));
        assert_eq!(output.status().state, OutputState::Calibrating);
    }

    #[test]
    fn write_errors_are_a_fault_in_the_status() {
        let (output, _record) = start(60_000, 20, None, true);
        output.command(left(), clock::monotonic_ns());
        for _ in 0..6000 {
            if output.status().write_errors > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = output.status();
        assert!(status.write_errors > 0);
        let fault = status.fault.unwrap_or_default();
        assert!(fault.contains("/dev/fake") && fault.contains("check the wiring"), "{fault}");
    }
}
