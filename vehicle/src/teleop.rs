//! Manual driving: the pilot mode (`autopilot`, `manual`, `assist`), who drives, and the
//! operator's `drive` commands with their leases. Pure logic: the listener posts drive commands
//! into a [`DriveMailbox`], the control loop takes the newest each tick into [`Teleop`], asks
//! it what is in force, and brakes when nothing is (the dead-man).
//!
//! The rules (docs/protocol.md 5.8): a drive command is taken only in `manual` or `assist`, only
//! from the sender that set that mode, and only if it is newer (by sequence) than the last one
//! taken; it moves the car until its lease ends, never longer; a mode change never starts
//! motion by itself (into `autopilot` the car holds until `resume`), and the e-stop, holds and
//! fail-safes, which the control loop checks first, dominate every mode.

use ads_protocol::gate::DriveOrder;
use ads_protocol::{OperatorCommand, PilotMode, TeleopState};
use std::sync::Mutex;

/// Latency samples kept for `state.teleop`'s p50/p99: about 10 s of commands at 25 Hz.
const LATENCY_WINDOW: usize = 256;

/// The drive command's way from the listener to the control loop: only the newest matters, so
/// it is one slot, not a queue; nothing waits behind it and nothing fills.
#[derive(Debug, Default)]
pub struct DriveMailbox {
    inner: Mutex<MailboxInner>,
}

#[derive(Debug, Default)]
struct MailboxInner {
    /// Whose commands are taken; `None`: nobody's (autopilot).
    driver: Option<String>,
    newest: Option<DriveOrder>,
    /// Sequence number of the newest command of the driver posted, to drop older ones.
    newest_seq: Option<u64>,
    dropped: u64,
}

impl DriveMailbox {
    /// Posts a command from the listener; dropped (and counted) unless it is the driver's and
    /// newer than every command of theirs before it.
    pub fn post(&self, order: DriveOrder) {
        let mut inner = self.lock();
        let is_driver = inner.driver.as_deref() == Some(order.sender.as_str());
        if !is_driver || inner.newest_seq.is_some_and(|seq| order.seq <= seq) {
            inner.dropped += 1;
            return;
        }
        inner.newest_seq = Some(order.seq);
        inner.newest = Some(order);
    }

    /// The newest command posted since the last call, and the count dropped so far.
    pub fn take(&self) -> (Option<DriveOrder>, u64) {
        let mut inner = self.lock();
        (inner.newest.take(), inner.dropped)
    }

    /// From now on only `driver`'s commands are taken (`None`: none); anything posted before
    /// is dropped, so a command sent before a mode change never acts after it.
    pub fn set_driver(&self, driver: Option<String>) {
        let mut inner = self.lock();
        if inner.newest.take().is_some() {
            inner.dropped += 1;
        }
        if inner.driver != driver {
            inner.newest_seq = None;
        }
        inner.driver = driver;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a mode change asks of the control loop besides the new mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    /// The acknowledgement's text.
    pub detail: String,
    /// Hold the car until `resume` (the change would otherwise start the autopilot driving).
    pub hold: Option<String>,
}

/// The operator's side of the control loop.
#[derive(Debug, Clone, Default)]
pub struct Teleop {
    pilot: PilotMode,
    driver: Option<String>,
    /// The newest command taken, whether or not its lease still runs.
    order: Option<DriveOrder>,
    /// Run ns when the newest command was taken.
    taken_run_ns: u64,
    /// Its lease's end has been counted as a lapse.
    lapse_counted: bool,
    taken: u64,
    lapsed: u64,
    latencies_ms: Vec<f32>,
    next_latency: usize,
}

impl Teleop {
    pub fn pilot(&self) -> PilotMode {
        self.pilot
    }

    pub fn driver(&self) -> Option<&str> {
        self.driver.as_deref()
    }

    /// `set_drive_mode` from `sender`. In `manual`/`assist` the sender becomes the driver;
    /// nothing moves until their first drive command. Into `autopilot` from another mode the
    /// car holds: the operator who let go of the car has not asked the autopilot to drive it.
    pub fn set_mode(&mut self, mode: PilotMode, sender: &str) -> ModeChange {
        let before = self.pilot;
        self.pilot = mode;
        self.order = None;
        self.driver = mode.takes_drive().then(|| sender.to_string());
        let hold = (mode == PilotMode::Autopilot && before != PilotMode::Autopilot)
            .then(|| format!("switched from {} to autopilot: send resume to drive", before.as_str()));
        let detail = match (mode, before == mode) {
            (PilotMode::Autopilot, true) => "already in autopilot".to_string(),
            (PilotMode::Autopilot, false) => "autopilot; the car holds until resume".to_string(),
            (_, _) => format!(
                "{} mode: {sender:?} drives; the car moves only under a live drive lease",
                mode.as_str()
            ),
        };
        ModeChange { detail, hold }
    }

    /// Takes `order` (the mailbox's newest) at `now_run_ns`; `now_wall_ns` for its latency.
    pub fn take(&mut self, order: DriveOrder, now_run_ns: u64, now_wall_ns: u64) {
        if !self.pilot.takes_drive() || self.driver.as_deref() != Some(order.sender.as_str()) {
            return;
        }
        if self.order.as_ref().is_some_and(|o| o.sender == order.sender && o.seq >= order.seq) {
            return;
        }
        if order.issued_ns > 0 && now_wall_ns >= order.issued_ns {
            let ms = (now_wall_ns - order.issued_ns) as f32 / 1e6;
            if self.latencies_ms.len() < LATENCY_WINDOW {
                self.latencies_ms.push(ms);
            } else {
                self.latencies_ms[self.next_latency] = ms;
            }
            self.next_latency = (self.next_latency + 1) % LATENCY_WINDOW;
        }
        self.order = Some(order);
        self.taken_run_ns = now_run_ns;
        self.lapse_counted = false;
        self.taken += 1;
    }

    /// The operator's command in force at `now_run_ns`: the newest, while its lease runs and
    /// the mode takes drive commands. Counts a lease that ran out (once).
    pub fn in_force(&mut self, now_run_ns: u64) -> Option<OperatorCommand> {
        if !self.pilot.takes_drive() {
            return None;
        }
        let order = self.order.as_ref()?;
        if now_run_ns >= order.lease_end_run_ns {
            if !self.lapse_counted {
                self.lapse_counted = true;
                self.lapsed += 1;
            }
            return None;
        }
        Some(OperatorCommand {
            seq: order.seq,
            steering: order.steering,
            throttle: order.throttle,
            age_ms: ms(now_run_ns.saturating_sub(order.arrived_run_ns)),
        })
    }

    /// Why the car may not move in this mode now, for the loop's fail-safe (`None` in
    /// autopilot, or with a live lease).
    pub fn why_not_driving(&self, now_run_ns: u64) -> Option<String> {
        if !self.pilot.takes_drive() {
            return None;
        }
        let mode = self.pilot.as_str();
        match &self.order {
            None => Some(format!("{mode} mode: waiting for the operator's drive commands")),
            Some(o) if now_run_ns >= o.lease_end_run_ns => Some(format!(
                "{mode} mode: the operator's drive lease ran out {} ms ago (dead-man)",
                (now_run_ns - o.lease_end_run_ns) / 1_000_000
            )),
            Some(_) => None,
        }
    }

    /// `state.teleop`; `dropped` comes from the mailbox.
    pub fn status(&self, now_run_ns: u64, dropped: u64) -> TeleopState {
        let (p50, p99) = percentiles(&self.latencies_ms);
        let order = self.order.as_ref();
        TeleopState {
            pilot: self.pilot,
            driver: self.driver.clone(),
            seq: order.map_or(0, |o| o.seq),
            steering: order.map_or(0.0, |o| o.steering),
            throttle: order.map_or(0.0, |o| o.throttle),
            age_ms: order.map(|o| ms(now_run_ns.saturating_sub(o.arrived_run_ns))),
            live: self.pilot.takes_drive() && order.is_some_and(|o| now_run_ns < o.lease_end_run_ns),
            taken: self.taken,
            dropped,
            lapsed: self.lapsed,
            latency_p50_ms: p50,
            latency_p99_ms: p99,
        }
    }
}

fn ms(ns: u64) -> u32 {
    u32::try_from(ns / 1_000_000).unwrap_or(u32::MAX)
}

fn percentiles(samples: &[f32]) -> (Option<f32>, Option<f32>) {
    if samples.is_empty() {
        return (None, None);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f32::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (Some(at(0.5)), Some(at(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn order(sender: &str, seq: u64, steering: f64, arrived_ms: u64, lease_ms: u64) -> DriveOrder {
        DriveOrder {
            sender: sender.into(),
            seq,
            steering,
            throttle: 0.3,
            arrived_run_ns: arrived_ms * MS,
            lease_end_run_ns: (arrived_ms + lease_ms) * MS,
            issued_ns: 0,
        }
    }

    #[test]
    fn the_mailbox_keeps_the_drivers_newest_and_drops_the_rest() {
        let mailbox = DriveMailbox::default();
        mailbox.post(order("v", 1, 0.1, 0, 200));
        assert_eq!(mailbox.take(), (None, 1), "nobody drives in autopilot");
        mailbox.set_driver(Some("v".into()));
        mailbox.post(order("v", 5, 0.5, 0, 200));
        mailbox.post(order("v", 4, 0.4, 0, 200));
        mailbox.post(order("intruder", 9, -1.0, 0, 200));
        let (newest, dropped) = mailbox.take();
        assert_eq!(newest.unwrap().seq, 5, "older and foreign commands lose");
        assert_eq!(dropped, 3);
        mailbox.post(order("v", 5, 0.5, 0, 200));
        assert_eq!(mailbox.take().0, None, "a command is taken once");
        mailbox.post(order("v", 6, 0.6, 0, 200));
        mailbox.set_driver(None);
        assert_eq!(mailbox.take(), (None, 5), "a mode change drops what was posted before it");
    }

    #[test]
    fn a_lease_moves_the_car_until_it_ends_and_not_a_moment_longer() {
        let mut t = Teleop::default();
        t.take(order("v", 1, 0.5, 0, 200), 0, 0);
        assert_eq!(t.in_force(10 * MS), None, "autopilot takes no drive commands");
        assert_eq!(t.set_mode(PilotMode::Manual, "v").hold, None);
        assert!(t.why_not_driving(0).unwrap().contains("waiting"));
        t.take(order("v", 2, 0.5, 100, 200), 100 * MS, 0);
        let now = t.in_force(150 * MS).unwrap();
        assert_eq!((now.seq, now.steering, now.age_ms), (2, 0.5, 50));
        assert!(t.status(150 * MS, 0).live);
        assert_eq!(t.why_not_driving(299 * MS), None);
        assert_eq!(t.in_force(300 * MS), None, "the lease ends at 300 ms");
        assert!(t.why_not_driving(310 * MS).unwrap().contains("ran out 10 ms ago"));
        assert_eq!(t.in_force(400 * MS), None);
        let status = t.status(400 * MS, 0);
        assert_eq!((status.lapsed, status.taken, status.live), (1, 1, false), "counted once");
        // A late renewal drives again; an older one does not undo a newer one.
        t.take(order("v", 4, -0.2, 410, 200), 410 * MS, 0);
        t.take(order("v", 3, 0.9, 405, 200), 411 * MS, 0);
        assert_eq!(t.in_force(420 * MS).unwrap().steering, -0.2);
    }

    #[test]
    fn only_the_driver_drives_and_a_mode_change_never_starts_motion() {
        let mut t = Teleop::default();
        t.set_mode(PilotMode::Assist, "a");
        assert_eq!(t.driver(), Some("a"));
        t.take(order("b", 1, 0.5, 0, 200), 0, 0);
        assert_eq!(t.in_force(MS), None, "b does not drive");
        t.take(order("a", 1, 0.5, 0, 200), 0, 0);
        assert!(t.in_force(MS).is_some());
        // b takes control: a's command in force ends with the change.
        t.set_mode(PilotMode::Manual, "b");
        assert_eq!(t.in_force(2 * MS), None);
        let change = t.set_mode(PilotMode::Autopilot, "b");
        assert!(change.hold.unwrap().contains("resume"), "back to autopilot holds");
        assert_eq!(t.driver(), None);
        assert_eq!(
            t.set_mode(PilotMode::Autopilot, "b").hold,
            None,
            "autopilot to autopilot changes nothing"
        );
    }

    #[test]
    fn latency_percentiles_come_from_issued_commands() {
        let mut t = Teleop::default();
        t.set_mode(PilotMode::Manual, "v");
        assert_eq!(t.status(0, 0).latency_p50_ms, None);
        for i in 1..=100u64 {
            let mut o = order("v", i, 0.0, i, 200);
            o.issued_ns = 1_000 * MS;
            t.take(o, i * MS, 1_000 * MS + i * MS);
        }
        let s = t.status(100 * MS, 0);
        assert_eq!((s.latency_p50_ms, s.latency_p99_ms), (Some(51.0), Some(99.0)));
    }
}
