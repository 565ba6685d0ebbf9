//! Actions we send and the acknowledgements we wait for.
//!
//! Sequence numbers start from the wall clock so that a restarted viewer (same sender name)
//! is still above the vehicle's remembered last sequence number for it.

use ads_protocol::{Action, Command, RejectReason};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an action stays valid after we send it.
pub const ACTION_TTL_NS: u64 = 2_000_000_000;

#[derive(Debug)]
struct Pending {
    request_id: String,
    label: &'static str,
    sent_at: Instant,
}

/// The outcome of an action, as shown to the person who pressed the button.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outcome {
    pub request_id: String,
    pub action_id: String,
    pub command: &'static str,
    /// `accepted`, `rejected` or `unanswered`.
    pub status: &'static str,
    pub reason: Option<RejectReason>,
    pub detail: String,
}

#[derive(Debug)]
pub struct ActionBook {
    sender: String,
    next_seq: u64,
    pending: HashMap<String, Pending>,
    timeout: Duration,
}

pub fn command_label(command: &Command) -> &'static str {
    match command {
        Command::Respawn { .. } => "respawn",
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::EmergencyStop => "emergency_stop",
        Command::SetTargetSpeed { .. } => "set_target_speed",
    }
}

impl ActionBook {
    pub fn new(sender: String, now_wall_ns: u64, timeout: Duration) -> Self {
        Self { sender, next_seq: now_wall_ns / 1000, pending: HashMap::new(), timeout }
    }

    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// A new action and its sequence number, remembered until acknowledged or timed out.
    pub fn create(&mut self, command: Command, request_id: String, now_wall_ns: u64) -> (Action, u64) {
        // Never reuse or go below an earlier number, even if the wall clock steps back.
        let seq = self.next_seq.max(now_wall_ns / 1000);
        self.next_seq = seq + 1;
        let id = format!("{}-{seq}", self.sender);
        let label = command_label(&command);
        self.pending.insert(id.clone(), Pending { request_id, label, sent_at: Instant::now() });
        // Bounded: acknowledgements that never come are swept by `expire`, but a flood of
        // clicks while the vehicle is silent must not grow without limit either.
        if self.pending.len() > 256 {
            if let Some(oldest) = self.pending.iter().min_by_key(|(_, p)| p.sent_at).map(|(k, _)| k.clone()) {
                self.pending.remove(&oldest);
            }
        }
        let action =
            Action { id, sender: self.sender.clone(), expires_ns: now_wall_ns + ACTION_TTL_NS, command };
        (action, seq)
    }

    /// Matches an acknowledgement to what we sent; `None` if it is not ours.
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
        let pending = self.pending.remove(action_id)?;
        Some(Outcome {
            request_id: pending.request_id,
            action_id: action_id.to_string(),
            command: pending.label,
            status: if accepted { "accepted" } else { "rejected" },
            reason,
            detail: detail.to_string(),
        })
    }

    /// Actions that got no answer in time.
    pub fn expire(&mut self, now: Instant) -> Vec<Outcome> {
        let timeout = self.timeout;
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent_at) > timeout)
            .map(|(k, _)| k.clone())
            .collect();
        late.into_iter()
            .filter_map(|id| {
                let p = self.pending.remove(&id)?;
                Some(Outcome {
                    request_id: p.request_id,
                    action_id: id,
                    command: p.label,
                    status: "unanswered",
                    reason: None,
                    detail: format!("no acknowledgement from the vehicle within {} ms", timeout.as_millis()),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_increase_even_when_the_clock_steps_back() {
        let mut book = ActionBook::new("v@x".into(), 5_000_000, Duration::from_secs(3));
        let (_, a) = book.create(Command::Pause, "r1".into(), 5_000_000);
        let (_, b) = book.create(Command::Pause, "r2".into(), 1_000);
        let (_, c) = book.create(Command::Pause, "r3".into(), 9_000_000);
        assert!(a < b && b < c, "{a} {b} {c}");
        // A restarted viewer starts above the old one's numbers.
        let mut later = ActionBook::new("v@x".into(), 10_000_000, Duration::from_secs(3));
        assert!(later.create(Command::Resume, "r".into(), 10_000_000).1 > c);
    }

    #[test]
    fn acks_match_only_our_actions_once_and_silence_times_out() {
        let mut book = ActionBook::new("me".into(), 0, Duration::from_millis(0));
        let (action, _) = book.create(Command::EmergencyStop, "req".into(), 0);
        assert_eq!(book.acknowledge(&action.id, "someone-else", true, None, ""), None);
        let outcome = book.acknowledge(&action.id, "me", false, Some(RejectReason::Expired), "late").unwrap();
        assert_eq!(
            (outcome.request_id.as_str(), outcome.status, outcome.command),
            ("req", "rejected", "emergency_stop")
        );
        assert_eq!(book.acknowledge(&action.id, "me", true, None, ""), None);
        let (silent, _) = book.create(Command::Pause, "req2".into(), 0);
        std::thread::sleep(Duration::from_millis(2));
        let expired = book.expire(Instant::now());
        assert_eq!(expired.len(), 1);
        assert_eq!((expired[0].action_id.as_str(), expired[0].status), (silent.id.as_str(), "unanswered"));
    }
}
