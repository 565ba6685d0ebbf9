//! Actions we send, their retransmission and the acknowledgements we wait for.
//!
//! Every action is sent again with the same id (and the same bytes) until the vehicle
//! acknowledges it or it expires; the vehicle answers a repeat of an id it already decided with
//! the original outcome, so a retransmission never acts twice. An emergency stop never expires
//! here: it is retried until the vehicle confirms it (the vehicle carries out an e-stop
//! whatever its age). Emergency stops go first.
//!
//! Sequence numbers count from 1 under a sender name unique to this process (the configured
//! name plus a random instance id), so a restarted viewer is never below its predecessor's
//! numbers, whatever the wall clock did.

use ads_protocol::{Action, ActionRun, Command, RejectReason};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an action stays valid after we first send it, on the vehicle's run clock.
pub const ACTION_TTL: Duration = Duration::from_secs(3);
/// The same for a calibration pulse: its lease (at most 300 ms from arrival) is what holds the
/// channel; this only bounds how late a delayed one may still start a pulse.
pub const PULSE_TTL: Duration = Duration::from_secs(1);
/// How often an unanswered action is sent again.
pub const RETRANSMIT_EVERY: Duration = Duration::from_millis(250);
/// Most actions awaiting an answer; beyond, the oldest non-e-stop one is given up.
const MAX_PENDING: usize = 256;
/// Outcomes kept for `GET /api/action/{id}`, newest last.
pub const RECENT_OUTCOMES: usize = 256;

#[derive(Debug)]
struct Pending {
    request_id: String,
    label: &'static str,
    first_sent: Instant,
    last_sent: Instant,
    /// Given up (and reported unanswered) after this; `None`: an e-stop, retried until answered.
    give_up_at: Option<Instant>,
    parts: Vec<Vec<u8>>,
    transmissions: u32,
    /// Sent again while unanswered. Not a calibration pulse: the page's next renewal replaces
    /// it, and a copy arriving after the slider was let go would move the car again.
    retransmit: bool,
}

/// The outcome of an action, as shown to the person who pressed the button.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outcome {
    pub request_id: String,
    /// Empty for an action that was never sent (refused here).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub action_id: String,
    pub command: &'static str,
    /// `accepted`, `rejected` or `unanswered` (and `not_sent`, for one never sent).
    pub status: &'static str,
    pub reason: Option<RejectReason>,
    pub detail: String,
}

/// Where an action stands, for `GET /api/action/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionStatus {
    /// Still sent again and again, no answer yet.
    Pending {
        request_id: String,
        command: &'static str,
        transmissions: u32,
    },
    Decided(Outcome),
}

/// The vehicle's run as last seen in its state: what new actions are addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunView {
    pub run_id: String,
    pub run_ns: u64,
    pub seen: Instant,
}

impl RunView {
    /// The vehicle's run clock now, estimated from its last state (late by that state's
    /// transit time at most, which only shortens an action's life).
    pub fn now_run_ns(&self, now: Instant) -> u64 {
        self.run_ns + now.saturating_duration_since(self.seen).as_nanos() as u64
    }
}

#[derive(Debug)]
pub struct ActionBook {
    sender: String,
    next_seq: u64,
    pending: HashMap<String, Pending>,
    /// The last [`RECENT_OUTCOMES`] outcomes, oldest first.
    decided: std::collections::VecDeque<Outcome>,
    timeout: Duration,
}

pub fn command_label(command: &Command) -> &'static str {
    match command {
        Command::Respawn { .. } => "respawn",
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::EmergencyStop => "emergency_stop",
        Command::SetTargetSpeed { .. } => "set_target_speed",
        Command::Reset => "reset",
        Command::Heartbeat => "heartbeat",
        Command::Drive { .. } => "drive",
        Command::SetDriveMode { .. } => "set_drive_mode",
        Command::CalibratePulse { .. } => "calibrate_pulse",
        Command::CalibrateRelease => "calibrate_release",
        Command::CalibrateSave { .. } => "calibrate_save",
    }
}

/// 32 random bits from the kernel, hex: tells this viewer process from earlier ones.
pub fn instance_id() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 4];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_err() {
        // Without /dev/urandom, the time still differs between two starts.
        bytes = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u32)
            .to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ActionBook {
    /// `name`: the configured sender name; the book's sender is `name#INSTANCE`. `timeout`:
    /// how long to wait for an acknowledgement before reporting an action unanswered.
    pub fn new(name: &str, timeout: Duration) -> Self {
        Self {
            sender: format!("{name}#{}", instance_id()),
            next_seq: 1,
            pending: HashMap::new(),
            decided: std::collections::VecDeque::new(),
            timeout,
        }
    }

    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// The next sequence number (also for heartbeats, which are not tracked).
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A new action for `run` (`None`: no state heard yet, only an e-stop may go) and its
    /// sequence number. Call [`ActionBook::track`] with its encoded parts to have it sent
    /// until answered.
    pub fn create(&mut self, command: Command, run: Option<&RunView>, now: Instant) -> (Action, u64) {
        let ttl = match command {
            Command::CalibratePulse { .. } => PULSE_TTL,
            _ => ACTION_TTL,
        };
        self.create_expiring(command, run, now, ttl)
    }

    /// [`ActionBook::create`] with a lifetime of `ttl` on the vehicle's run clock.
    pub fn create_expiring(
        &mut self,
        command: Command,
        run: Option<&RunView>,
        now: Instant,
        ttl: Duration,
    ) -> (Action, u64) {
        let seq = self.next_seq();
        let ttl = ttl.as_nanos() as u64;
        let run = run.map_or_else(ActionRun::default, |r| ActionRun {
            run_id: r.run_id.clone(),
            expires_run_ns: r.now_run_ns(now) + ttl,
        });
        let id = format!("{}-{seq}", &self.sender[self.sender.len() - 8..]);
        (Action { id, sender: self.sender.clone(), command, run }, seq)
    }

    /// Remembers `action` (sent now as `parts`) until it is answered or given up.
    pub fn track(&mut self, action: &Action, request_id: String, parts: Vec<Vec<u8>>, now: Instant) {
        let estop = action.command == Command::EmergencyStop;
        let give_up_at = (!estop).then(|| now + self.timeout.max(ACTION_TTL));
        let pending = Pending {
            request_id,
            label: command_label(&action.command),
            first_sent: now,
            last_sent: now,
            give_up_at,
            parts,
            transmissions: 1,
            retransmit: !matches!(action.command, Command::CalibratePulse { .. }),
        };
        self.pending.insert(action.id.clone(), pending);
        // Bounded: a flood of clicks while the vehicle is silent must not grow without limit;
        // e-stops are the last to go.
        if self.pending.len() > MAX_PENDING {
            let oldest = self
                .pending
                .iter()
                .filter(|(_, p)| p.give_up_at.is_some())
                .min_by_key(|(_, p)| p.first_sent)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.pending.remove(&oldest);
            }
        }
    }

    /// The messages to send again now, emergency stops first.
    pub fn due(&mut self, now: Instant) -> Vec<Vec<Vec<u8>>> {
        let mut due: Vec<(&String, &mut Pending)> = self
            .pending
            .iter_mut()
            .filter(|(_, p)| p.retransmit && now.saturating_duration_since(p.last_sent) >= RETRANSMIT_EVERY)
            .collect();
        due.sort_by_key(|(_, p)| (p.give_up_at.is_some(), p.first_sent));
        due.into_iter()
            .map(|(_, p)| {
                p.last_sent = now;
                p.transmissions += 1;
                p.parts.clone()
            })
            .collect()
    }

    /// Whether an e-stop is still waiting for the vehicle's confirmation.
    pub fn estop_pending(&self) -> bool {
        self.pending.values().any(|p| p.give_up_at.is_none())
    }

    /// Matches an acknowledgement to what we sent; `None` if it is not ours (or a repeat).
    pub fn acknowledge(
        &mut self,
        action_id: &str,
        sender: &str,
        accepted: bool,
        reason: Option<RejectReason>,
        detail: &str,
    ) -> Option<Outcome> {
        if sender != self.sender {
            return None;
        }
        // `busy`: the vehicle's queue was full and nothing of the action stayed there; the
        // same bytes, retransmitted as usual, are judged afresh. Not an answer.
        if reason == Some(RejectReason::Busy) {
            return None;
        }
        let pending = self.pending.remove(action_id)?;
        Some(self.decide(Outcome {
            request_id: pending.request_id,
            action_id: action_id.to_string(),
            command: pending.label,
            status: if accepted { "accepted" } else { "rejected" },
            reason,
            detail: detail.to_string(),
        }))
    }

    /// Keeps `outcome` among the recent ones (bounded) and returns it.
    fn decide(&mut self, outcome: Outcome) -> Outcome {
        if self.decided.len() == RECENT_OUTCOMES {
            self.decided.pop_front();
        }
        self.decided.push_back(outcome.clone());
        outcome
    }

    /// Where the action `action_id` stands: pending, or its outcome if it is among the
    /// recent ones; `None`: not ours, or long forgotten.
    pub fn status(&self, action_id: &str) -> Option<ActionStatus> {
        if let Some(p) = self.pending.get(action_id) {
            return Some(ActionStatus::Pending {
                request_id: p.request_id.clone(),
                command: p.label,
                transmissions: p.transmissions,
            });
        }
        self.decided.iter().rev().find(|o| o.action_id == action_id).cloned().map(ActionStatus::Decided)
    }

    /// Actions that got no answer in time (never an e-stop: it is retried until answered).
    pub fn expire(&mut self, now: Instant) -> Vec<Outcome> {
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.give_up_at.is_some_and(|t| now >= t))
            .map(|(k, _)| k.clone())
            .collect();
        late.into_iter()
            .filter_map(|id| {
                let p = self.pending.remove(&id)?;
                let waited = now.saturating_duration_since(p.first_sent).as_millis();
                Some(self.decide(Outcome {
                    request_id: p.request_id,
                    action_id: id,
                    command: p.label,
                    status: "unanswered",
                    reason: None,
                    detail: format!(
                        "no acknowledgement from the vehicle within {waited} ms ({} transmissions); is the \
                         action endpoint the one of the vehicle shown?",
                        p.transmissions
                    ),
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(now: Instant) -> RunView {
        RunView { run_id: "r".into(), run_ns: 5_000, seen: now }
    }

    #[test]
    fn senders_are_unique_per_process_and_numbers_count_up() {
        let mut a = ActionBook::new("v@x", Duration::from_secs(3));
        let b = ActionBook::new("v@x", Duration::from_secs(3));
        assert_ne!(a.sender(), b.sender(), "two starts share a sender");
        assert!(a.sender().starts_with("v@x#") && a.sender().len() == "v@x#".len() + 8);
        let now = Instant::now();
        let (first, s1) = a.create(Command::Pause, Some(&run(now)), now);
        let (second, s2) = a.create(Command::Pause, Some(&run(now)), now);
        assert!(s1 < s2 && first.id != second.id);
        assert!(first.id.len() <= ads_protocol::MAX_ACTION_NAME_BYTES);
        assert_eq!(first.run.run_id, "r");
        assert_eq!(first.run.expires_run_ns, 5_000 + ACTION_TTL.as_nanos() as u64);
        assert_eq!(a.create(Command::EmergencyStop, None, now).0.run, ActionRun::default());
    }

    #[test]
    fn unanswered_actions_are_resent_estop_first_until_acknowledged_or_given_up() {
        let mut book = ActionBook::new("me", Duration::from_millis(0));
        let t0 = Instant::now();
        let (pause, _) = book.create(Command::Pause, Some(&run(t0)), t0);
        book.track(&pause, "p".into(), vec![b"pause".to_vec()], t0);
        let (stop, _) = book.create(Command::EmergencyStop, Some(&run(t0)), t0);
        book.track(&stop, "s".into(), vec![b"stop".to_vec()], t0 + Duration::from_millis(1));
        assert!(book.due(t0 + Duration::from_millis(100)).is_empty(), "too soon");
        let later = t0 + RETRANSMIT_EVERY + Duration::from_millis(1);
        assert_eq!(book.due(later), vec![vec![b"stop".to_vec()], vec![b"pause".to_vec()]]);
        // Past its time the pause is given up; the e-stop never is.
        let much_later = t0 + ACTION_TTL + Duration::from_secs(60);
        let expired = book.expire(much_later);
        assert_eq!(expired.len(), 1);
        assert_eq!((expired[0].action_id.as_str(), expired[0].status), (pause.id.as_str(), "unanswered"));
        assert!(book.estop_pending());
        assert_eq!(book.due(much_later), vec![vec![b"stop".to_vec()]]);
        assert_eq!(book.acknowledge(&stop.id, "someone-else", true, None, ""), None);
        let sender = book.sender().to_string();
        let outcome = book.acknowledge(&stop.id, &sender, true, None, "stopped").unwrap();
        assert_eq!(
            (outcome.request_id.as_str(), outcome.status, outcome.command),
            ("s", "accepted", "emergency_stop")
        );
        assert_eq!(book.acknowledge(&stop.id, &sender, true, None, ""), None, "a repeat ack is not news");
        assert_eq!(book.status(&stop.id), Some(ActionStatus::Decided(outcome.clone())));
        assert!(!book.estop_pending() && book.due(much_later + RETRANSMIT_EVERY).is_empty());
    }

    #[test]
    fn a_busy_answer_is_not_an_answer_the_action_is_sent_again() {
        let mut book = ActionBook::new("me", Duration::from_millis(0));
        let t0 = Instant::now();
        let (pause, _) = book.create(Command::Pause, Some(&run(t0)), t0);
        book.track(&pause, "p".into(), vec![b"pause".to_vec()], t0);
        let sender = book.sender().to_string();
        assert_eq!(book.acknowledge(&pause.id, &sender, false, Some(RejectReason::Busy), "full"), None);
        let later = t0 + RETRANSMIT_EVERY + Duration::from_millis(1);
        assert_eq!(book.due(later), vec![vec![b"pause".to_vec()]], "still retransmitted");
        let outcome = book.acknowledge(&pause.id, &sender, true, None, "paused").unwrap();
        assert_eq!(outcome.status, "accepted");
    }

    #[test]
    fn a_calibration_pulse_lives_briefly_and_is_never_sent_twice() {
        let mut book = ActionBook::new("me", Duration::from_millis(0));
        let t0 = Instant::now();
        let pulse = Command::CalibratePulse {
            channel: ads_protocol::CalibrationChannel::Steering,
            us: 1900,
            lease_ms: 300,
        };
        let (action, _) = book.create(pulse, Some(&run(t0)), t0);
        assert_eq!(action.run.expires_run_ns, 5_000 + PULSE_TTL.as_nanos() as u64);
        book.track(&action, "p".into(), vec![b"pulse".to_vec()], t0);
        assert!(book.due(t0 + Duration::from_secs(2)).is_empty(), "a pulse is not retransmitted");
        // Still reported when nothing answered it.
        let expired = book.expire(t0 + ACTION_TTL + Duration::from_secs(1));
        assert_eq!((expired.len(), expired[0].command), (1, "calibrate_pulse"));
    }

    #[test]
    fn an_action_is_pending_until_answered_and_recent_outcomes_are_bounded() {
        let mut book = ActionBook::new("me", Duration::from_millis(0));
        let t0 = Instant::now();
        let (stop, _) = book.create(Command::EmergencyStop, Some(&run(t0)), t0);
        book.track(&stop, "s".into(), vec![b"stop".to_vec()], t0);
        assert!(matches!(
            book.status(&stop.id),
            Some(ActionStatus::Pending { command: "emergency_stop", transmissions: 1, .. })
        ));
        assert_eq!(book.status("nobody-1"), None);
        let sender = book.sender().to_string();
        book.acknowledge(&stop.id, &sender, true, None, "stopped");
        assert!(matches!(book.status(&stop.id), Some(ActionStatus::Decided(o)) if o.status == "accepted"));
        // Many more decided later: the oldest is forgotten, the table stays bounded.
        for _ in 0..RECENT_OUTCOMES {
            let (pause, _) = book.create(Command::Pause, Some(&run(t0)), t0);
            book.track(&pause, "p".into(), vec![], t0);
            book.acknowledge(&pause.id, &sender, false, None, "no");
        }
        assert_eq!(book.status(&stop.id), None);
        assert_eq!(book.decided.len(), RECENT_OUTCOMES);
    }
}
