//! The gate every action passes before anything acts on it: small, authentic (with a key),
//! decodable, an action, for us, for this run, not expired on the run's clock, not seen before.
//! Pure logic, no sockets: the vehicle's listener and `ads-replay` both judge with it, and it is
//! fuzzed (fuzz/fuzz_targets/action_gate.rs).
//!
//! Judging records nothing: an accepted action is [`ActionGate::record`]ed by the caller only
//! once it was handed on. An action that could not be handed on (a full queue: `busy`) leaves
//! no trace, so its retransmission is judged afresh; no id can stay "in progress" forever.
//!
//! An emergency stop that is authentic and addressed to us is accepted whatever its expiry,
//! run or sequence number: stopping is always safe, and a late stop is still wanted.

use crate::{
    decode, peek_action_identity, split_action_mac, Action, ActionKey, AuthError, Command, DecodeError,
    Event, Message, RejectReason, Topic, MAX_ACTION_BYTES, MAX_ACTION_NAME_BYTES, MAX_DRIVE_LEASE_MS,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Remembered action outcomes (for answering retransmissions) and senders (for sequence
/// numbers): both bounded, so a flood of made-up senders cannot grow memory. Only actions
/// that passed every check are remembered, so with a key only key holders can push entries out.
const REMEMBERED_IDS: usize = 4096;
const REMEMBERED_SENDERS: usize = 1024;
/// Sequence numbers up to this far below a sender's highest are still accepted once each:
/// a retransmitted action may arrive after a later one that was sent while it was lost.
const SEQ_WINDOW: u64 = 64;
/// Longest `detail` in a rejection ack.
const MAX_DETAIL_BYTES: usize = 200;

/// An action that passed the gate, with what its acknowledgement needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedAction {
    pub action: Action,
    pub seq: u64,
}

/// Why the gate refused a message, with the identity to put in the acknowledgement (as
/// claimed by the message: for an unauthenticated one it proves nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub action_id: String,
    pub sender: String,
    pub seq: u64,
    pub reason: RejectReason,
    pub detail: String,
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn truncated(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl Rejection {
    pub fn new(action_id: &str, sender: &str, seq: u64, reason: RejectReason, detail: String) -> Self {
        // Echoed fields are cut: what an unauthenticated sender wrote must not be amplified.
        Self {
            action_id: truncated(action_id, MAX_ACTION_NAME_BYTES),
            sender: truncated(sender, MAX_ACTION_NAME_BYTES),
            seq,
            reason,
            detail: truncated(&detail, MAX_DETAIL_BYTES),
        }
    }

    /// Bytes this rejection's ack costs on the wire, roughly.
    pub fn ack_bytes(&self) -> usize {
        self.action_id.len() + self.sender.len() + self.detail.len() + 96
    }

    pub fn into_event(self) -> Event {
        Event::Ack {
            action_id: self.action_id,
            sender: self.sender,
            seq: self.seq,
            accepted: false,
            reason: Some(self.reason),
            detail: self.detail,
            persisted: None,
        }
    }
}

/// What the gate decided about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// For the control loop to carry out.
    Accept(AcceptedAction),
    /// An authentic operator heartbeat of this run.
    Heartbeat,
    /// An authentic teleop command of this run: for the control loop's drive mailbox, never
    /// acknowledged (the newest wins; `state.teleop` reports it).
    Drive(DriveOrder),
    /// A retransmission of an id already decided: the original acknowledgement, to send again.
    Repeat(Event),
    /// A retransmission of an id the control loop has not answered yet: its ack will come.
    InProgress,
    Reject(Rejection),
}

/// A `drive` command as the control loop takes it: its lease turned into an end on the run's
/// clock.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveOrder {
    pub sender: String,
    pub seq: u64,
    /// -1..=1, + = left.
    pub steering: f64,
    /// -1..=1, + throttle, − brake.
    pub throttle: f64,
    /// Run-clock ns of its arrival, and when its lease ends: `lease_ms` after the arrival, and
    /// never after the action's own expiry (a command that queued somewhere on its way does
    /// not get a fresh lease).
    pub arrived_run_ns: u64,
    pub lease_end_run_ns: u64,
    /// Wall clock of the operator's input, 0 if unknown.
    pub issued_ns: u64,
}

/// Outcomes of accepted actions by id, shared by the gate (which answers retransmissions
/// from it) and the control loop (which fills it in). Bounded.
#[derive(Debug, Default)]
pub struct OutcomeLog {
    /// id → (sender, the ack once decided).
    entries: HashMap<String, (String, Option<Event>)>,
    order: VecDeque<String>,
}

impl OutcomeLog {
    fn begin(&mut self, id: &str, sender: &str) {
        if self.entries.insert(id.to_string(), (sender.to_string(), None)).is_none() {
            self.order.push_back(id.to_string());
            if self.order.len() > REMEMBERED_IDS {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
        }
    }

    /// The control loop's acknowledgement of `id`.
    pub fn decide(&mut self, id: &str, ack: &Event) {
        if let Some((_, outcome)) = self.entries.get_mut(id) {
            *outcome = Some(ack.clone());
        }
    }

    /// Drops `id` (its hand-off failed); its place in the eviction order goes with the next
    /// eviction.
    fn forget(&mut self, id: &str) {
        self.entries.remove(id);
    }

    fn get(&self, id: &str) -> Option<&(String, Option<Event>)> {
        self.entries.get(id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

pub type SharedOutcomes = Arc<Mutex<OutcomeLog>>;

/// Which sequence numbers a sender used: its highest and a bitmap of the `SEQ_WINDOW` below.
#[derive(Debug, Clone, Copy)]
struct SeqWindow {
    top: u64,
    /// Bit i set: `top - i` was used.
    used: u64,
}

impl SeqWindow {
    fn check(&self, seq: u64) -> Result<(), String> {
        if seq > self.top {
            return Ok(());
        }
        let behind = self.top - seq;
        if behind >= SEQ_WINDOW {
            return Err(format!(
                "sequence {seq} is too far below {}, the highest from this sender",
                self.top
            ));
        }
        if self.used & (1 << behind) != 0 {
            return Err(format!("sequence {seq} was already used by this sender"));
        }
        Ok(())
    }

    fn mark(&mut self, seq: u64) {
        if seq > self.top {
            let shift = seq - self.top;
            self.used = if shift >= SEQ_WINDOW { 0 } else { self.used << shift };
            self.top = seq;
            self.used |= 1;
        } else if self.top - seq < SEQ_WINDOW {
            self.used |= 1 << (self.top - seq);
        }
    }
}

/// Decides which actions are acted on. Pure logic, no sockets.
#[derive(Debug)]
pub struct ActionGate {
    vehicle_id: String,
    run_id: String,
    key: Option<ActionKey>,
    max_expiry_ns: u64,
    outcomes: SharedOutcomes,
    senders: HashMap<String, SeqWindow>,
    sender_order: VecDeque<String>,
}

impl ActionGate {
    /// `key`: every action must carry a valid MAC under it; `None`: no MAC is checked (the
    /// socket must then be reachable from this machine only). Actions must name `run_id` and
    /// expire at most `max_expiry_ns` ahead on the run's clock.
    pub fn new(
        vehicle_id: &str,
        run_id: &str,
        key: Option<ActionKey>,
        max_expiry_ns: u64,
        outcomes: SharedOutcomes,
    ) -> Self {
        Self {
            vehicle_id: vehicle_id.to_string(),
            run_id: run_id.to_string(),
            key,
            max_expiry_ns,
            outcomes,
            senders: HashMap::new(),
            sender_order: VecDeque::new(),
        }
    }

    /// `now_run_ns`: the run's clock (monotonic ns since the vehicle started).
    pub fn judge(&mut self, parts: &[&[u8]], now_run_ns: u64) -> Verdict {
        match self.judge_inner(parts, now_run_ns) {
            Ok(verdict) => verdict,
            Err(rejection) => Verdict::Reject(rejection),
        }
    }

    fn judge_inner(&mut self, parts: &[&[u8]], now_run_ns: u64) -> Result<Verdict, Rejection> {
        let claimed = |parts: &[&[u8]]| match parts {
            [topic, envelope, ..] if *topic == Topic::Action.as_str().as_bytes() => {
                peek_action_identity(envelope)
            }
            _ => Default::default(),
        };
        let reject_claimed = |parts: &[&[u8]], reason, detail: String| {
            let (identity, seq) = claimed(parts);
            Rejection::new(&identity.id, &identity.sender, seq, reason, detail)
        };
        if let Some(envelope) = parts.get(1) {
            if envelope.len() > MAX_ACTION_BYTES {
                // Too large to be an action: nothing of it is read, let alone echoed.
                let detail = format!("an action of {} bytes; at most {MAX_ACTION_BYTES}", envelope.len());
                return Err(Rejection::new("", "", 0, RejectReason::Malformed, detail));
            }
        }
        let (message_parts, mac) = split_action_mac(parts);
        // Authentication comes first: nothing an unauthenticated sender wrote is acted on or
        // remembered, and the MAC is checked before the envelope is even parsed.
        match (&self.key, message_parts, mac) {
            (Some(key), [_, envelope], Some(mac)) => {
                if let Err(e) = key.verify(envelope, mac) {
                    return Err(reject_claimed(message_parts, RejectReason::BadMac, e.to_string()));
                }
            }
            (Some(_), [_, _], None) => {
                let detail = AuthError::Missing.to_string();
                return Err(reject_claimed(message_parts, RejectReason::Unauthenticated, detail));
            }
            // Without a key a MAC is ignored, but a third part that is not one is garbage.
            (None, _, Some(mac)) if mac.len() != crate::ACTION_MAC_BYTES => {
                let detail = AuthError::Length(mac.len()).to_string();
                return Err(reject_claimed(message_parts, RejectReason::Malformed, detail));
            }
            // Other part counts fail to decode below, with the count in the detail.
            _ => {}
        }
        let wire = decode(message_parts).map_err(|e| {
            let reason = match e {
                DecodeError::UnknownCommand { .. } => RejectReason::Unknown,
                DecodeError::Version { .. } => RejectReason::Version,
                _ => RejectReason::Malformed,
            };
            reject_claimed(message_parts, reason, e.to_string())
        })?;
        let Message::Action(action) = wire.message else {
            let topic = wire.message.topic();
            let detail = format!("a {topic} message is not an action");
            return Err(Rejection::new("", "", wire.seq, RejectReason::Malformed, detail));
        };
        let seq = wire.seq;
        let reject = |reason, detail: String| Rejection::new(&action.id, &action.sender, seq, reason, detail);
        if !(wire.vehicle.is_empty() || wire.vehicle == "*" || wire.vehicle == self.vehicle_id) {
            let detail = format!("addressed to vehicle {:?}, this is {:?}", wire.vehicle, self.vehicle_id);
            return Err(reject(RejectReason::NotAllowed, detail));
        }
        if let Some((sender, outcome)) = self.outcome_of(&action.id) {
            if sender != action.sender {
                return Err(reject(RejectReason::Duplicate, "another sender already used this id".into()));
            }
            return Ok(outcome.map_or(Verdict::InProgress, Verdict::Repeat));
        }
        let is_estop = action.command == Command::EmergencyStop;
        if is_estop {
            // Whatever its expiry, run or sequence number: see the module comment.
            return Ok(Verdict::Accept(AcceptedAction { action, seq }));
        }
        let names_ok = |name: &str| !name.is_empty() && name.len() <= MAX_ACTION_NAME_BYTES;
        if !names_ok(&action.id) || !names_ok(&action.sender) {
            let detail = format!("id and sender must be 1..={MAX_ACTION_NAME_BYTES} bytes");
            return Err(reject(RejectReason::Malformed, detail));
        }
        if action.run.run_id != self.run_id {
            let detail = format!(
                "for vehicle run {:?}, this is run {:?} (the vehicle restarted; see state.commands.run_id)",
                truncated(&action.run.run_id, 32),
                self.run_id
            );
            return Err(reject(RejectReason::Expired, detail));
        }
        let expires = action.run.expires_run_ns;
        if expires < now_run_ns {
            let late_ms = (now_run_ns - expires) / 1_000_000;
            return Err(reject(RejectReason::Expired, format!("expired {late_ms} ms before it arrived")));
        }
        if expires - now_run_ns > self.max_expiry_ns {
            let ahead_s = (expires - now_run_ns) / 1_000_000_000;
            let max_s = self.max_expiry_ns / 1_000_000_000;
            let detail =
                format!("expires {ahead_s} s ahead; this vehicle takes actions valid for at most {max_s} s");
            return Err(reject(RejectReason::Expired, detail));
        }
        if let Some(window) = self.senders.get(&action.sender) {
            window.check(seq).map_err(|detail| reject(RejectReason::Duplicate, detail))?;
        }
        if action.command == Command::Heartbeat {
            self.mark_seq(&action.sender, seq);
            return Ok(Verdict::Heartbeat);
        }
        if let Command::Drive { steering, throttle, lease_ms, issued_ns } = action.command {
            let unit = -1.0..=1.0;
            if !unit.contains(&steering) || !unit.contains(&throttle) {
                let detail =
                    format!("drive steering {steering} and throttle {throttle} must be within -1..=1");
                return Err(reject(RejectReason::Malformed, detail));
            }
            if !(1..=MAX_DRIVE_LEASE_MS).contains(&lease_ms) {
                let detail = format!("drive lease {lease_ms} ms is outside 1..={MAX_DRIVE_LEASE_MS} ms");
                return Err(reject(RejectReason::Malformed, detail));
            }
            self.mark_seq(&action.sender, seq);
            let lease_end_run_ns = (now_run_ns + u64::from(lease_ms) * 1_000_000).min(expires);
            return Ok(Verdict::Drive(DriveOrder {
                sender: action.sender,
                seq,
                steering,
                throttle,
                arrived_run_ns: now_run_ns,
                lease_end_run_ns,
                issued_ns,
            }));
        }
        Ok(Verdict::Accept(AcceptedAction { action, seq }))
    }

    /// Remembers an accepted action: from now on its id is answered from the outcome log and
    /// its sequence number is used. Not calling this leaves the gate as if the action never
    /// arrived.
    pub fn record(&mut self, accepted: &AcceptedAction) {
        self.remember(&accepted.action, accepted.seq);
    }

    /// Records `accepted` and hands it on with `hand_off`. Recording comes first, because
    /// whoever takes the action may decide it at once; if the hand-off fails (a full queue),
    /// the record is undone, so the action leaves no trace and a retransmission is judged
    /// afresh, and `hand_off`'s error is returned.
    pub fn hand_off<E>(
        &mut self,
        accepted: AcceptedAction,
        hand_off: impl FnOnce(AcceptedAction) -> Result<(), E>,
    ) -> Result<(), E> {
        let sender = accepted.action.sender.clone();
        let id = accepted.action.id.clone();
        let window_before = self.senders.get(&sender).copied();
        self.record(&accepted);
        let result = hand_off(accepted);
        if result.is_err() {
            self.outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).forget(&id);
            match window_before {
                Some(window) => {
                    self.senders.insert(sender, window);
                }
                None => {
                    self.senders.remove(&sender);
                    if self.sender_order.back() == Some(&sender) {
                        self.sender_order.pop_back();
                    }
                }
            }
        }
        result
    }

    fn outcome_of(&self, id: &str) -> Option<(String, Option<Event>)> {
        let log = self.outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        log.get(id).cloned()
    }

    fn remember(&mut self, action: &Action, seq: u64) {
        self.outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .begin(&action.id, &action.sender);
        self.mark_seq(&action.sender, seq);
    }

    fn mark_seq(&mut self, sender: &str, seq: u64) {
        match self.senders.get_mut(sender) {
            Some(window) => window.mark(seq),
            None => {
                self.senders.insert(sender.to_string(), SeqWindow { top: seq, used: 1 });
                self.sender_order.push_back(sender.to_string());
                if self.sender_order.len() > REMEMBERED_SENDERS {
                    if let Some(old) = self.sender_order.pop_front() {
                        self.senders.remove(&old);
                    }
                }
            }
        }
    }
}

/// Why the action endpoint cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "actions endpoint {endpoint:?} is reachable from other machines but no action key is configured; \
         set actions.key_file / --action-key (scripts/action-key.sh generate), or bind to 127.0.0.1"
    )]
    NetworkWithoutKey { endpoint: String },
    #[error("actions endpoint {endpoint:?}: {problem}")]
    Unparsable { endpoint: String, problem: &'static str },
}

/// The endpoint to bind: as configured with a key; without one, narrowed to loopback (a
/// wildcard host becomes 127.0.0.1) or refused if it names a network address.
pub fn bind_endpoint(endpoint: &str, keyed: bool) -> Result<String, EndpointError> {
    if keyed {
        return Ok(endpoint.to_string());
    }
    let unparsable = |problem| EndpointError::Unparsable { endpoint: endpoint.to_string(), problem };
    let (transport, address) =
        endpoint.split_once("://").ok_or_else(|| unparsable("expected transport://address"))?;
    match transport {
        // Local by nature: another machine cannot reach a Unix socket or another process's memory.
        "ipc" | "inproc" => return Ok(endpoint.to_string()),
        "tcp" => {}
        _ => return Err(EndpointError::NetworkWithoutKey { endpoint: endpoint.to_string() }),
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(|| unparsable("expected tcp://host:port"))?;
    let host_ip = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match host_ip {
        "*" | "0.0.0.0" | "::" => true,
        // A name could resolve anywhere (or be changed in /etc/hosts later): pin the address.
        "localhost" => true,
        other => match other.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_loopback() => return Ok(endpoint.to_string()),
            _ => false,
        },
    };
    if loopback {
        Ok(format!("tcp://127.0.0.1:{port}"))
    } else {
        Err(EndpointError::NetworkWithoutKey { endpoint: endpoint.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, encode_action, ActionRun};

    const RUN: &str = "run-1";
    const NOW: u64 = 1_000;

    fn action(id: &str, sender: &str, expires_run_ns: u64, command: Command) -> Action {
        Action {
            id: id.into(),
            sender: sender.into(),
            command,
            run: ActionRun { run_id: RUN.into(), expires_run_ns },
        }
    }

    fn action_parts(
        vehicle: &str,
        seq: u64,
        id: &str,
        sender: &str,
        expires_run_ns: u64,
        command: Command,
    ) -> Vec<Vec<u8>> {
        let action = action(id, sender, expires_run_ns, command);
        vec![b"action".to_vec(), encode(vehicle, seq, 0, 0, &Message::Action(action))]
    }

    fn gate(key: Option<ActionKey>, max_expiry_ns: u64) -> ActionGate {
        ActionGate::new("car", RUN, key, max_expiry_ns, SharedOutcomes::default())
    }

    /// Judges as the listener does: an accepted action is handed on, then recorded.
    fn verdict(gate: &mut ActionGate, parts: &[Vec<u8>]) -> Verdict {
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let verdict = gate.judge(&refs, NOW);
        if let Verdict::Accept(accepted) = &verdict {
            gate.record(accepted);
        }
        verdict
    }

    fn judge(gate: &mut ActionGate, parts: &[Vec<u8>]) -> Result<AcceptedAction, Rejection> {
        match verdict(gate, parts) {
            Verdict::Accept(a) => Ok(a),
            Verdict::Reject(r) => Err(r),
            other => panic!("neither accepted nor rejected: {other:?}"),
        }
    }

    #[test]
    fn accepts_once_and_rejects_replays_expired_and_foreign() {
        let mut gate = gate(None, 60_000_000_000);
        let ok = action_parts("car", 1, "a", "v1", 2_000, Command::Pause);
        assert_eq!(judge(&mut gate, &ok).unwrap().action.command, Command::Pause);
        assert_eq!(verdict(&mut gate, &ok), Verdict::InProgress, "same id before the loop answered");
        let old_seq = action_parts("car", 1, "b", "v1", 2_000, Command::Resume);
        assert_eq!(judge(&mut gate, &old_seq).unwrap_err().reason, RejectReason::Duplicate, "seq used");
        let other_sender = action_parts("*", 1, "c", "v2", 2_000, Command::Resume);
        assert!(judge(&mut gate, &other_sender).is_ok(), "sequences are per sender");
        let expired = action_parts("car", 5, "d", "v1", 999, Command::Resume);
        let r = judge(&mut gate, &expired).unwrap_err();
        assert_eq!((r.reason, r.action_id.as_str(), r.seq), (RejectReason::Expired, "d", 5));
        let foreign = action_parts("other-car", 6, "e", "v1", 2_000, Command::Resume);
        assert_eq!(judge(&mut gate, &foreign).unwrap_err().reason, RejectReason::NotAllowed);
        let anonymous = action_parts("car", 7, "", "v1", 2_000, Command::Resume);
        assert_eq!(judge(&mut gate, &anonymous).unwrap_err().reason, RejectReason::Malformed);
    }

    #[test]
    fn a_retransmission_gets_the_original_outcome_and_late_ones_still_count_once() {
        let outcomes = SharedOutcomes::default();
        let mut gate = ActionGate::new("car", RUN, None, 60_000_000_000, Arc::clone(&outcomes));
        let first = action_parts("car", 100, "a", "v", 2_000, Command::Pause);
        assert!(judge(&mut gate, &first).is_ok());
        let ack = Event::Ack {
            action_id: "a".into(),
            sender: "v".into(),
            seq: 100,
            accepted: true,
            reason: None,
            detail: "paused".into(),
            persisted: None,
        };
        outcomes.lock().unwrap().decide("a", &ack);
        assert_eq!(verdict(&mut gate, &first), Verdict::Repeat(ack));
        // A later action overtook a lost one: the lost one's retransmission still passes once.
        assert!(judge(&mut gate, &action_parts("car", 102, "c", "v", 2_000, Command::Pause)).is_ok());
        assert!(judge(&mut gate, &action_parts("car", 101, "b", "v", 2_000, Command::Pause)).is_ok());
        let reused = action_parts("car", 101, "b2", "v", 2_000, Command::Pause);
        assert_eq!(judge(&mut gate, &reused).unwrap_err().reason, RejectReason::Duplicate);
        let ancient = action_parts("car", 102 - SEQ_WINDOW, "z", "v", 2_000, Command::Pause);
        assert_eq!(judge(&mut gate, &ancient).unwrap_err().reason, RejectReason::Duplicate);
        // Another sender cannot hijack an id to learn or change its outcome.
        let hijack = action_parts("car", 99, "a", "intruder", 2_000, Command::Pause);
        assert_eq!(judge(&mut gate, &hijack).unwrap_err().reason, RejectReason::Duplicate);
    }

    #[test]
    fn an_emergency_stop_is_carried_out_whatever_its_expiry_run_or_sequence() {
        let mut gate = gate(Some(key("aa")), 10_000);
        assert!(judge(&mut gate, &signed(&key("aa"), 50, "p", 2_000, Command::Pause)).is_ok());
        let mut stale = action("late", "viewer", 1, Command::EmergencyStop);
        stale.run.run_id = "an-earlier-run".into();
        let parts = encode_action("car", 3, 0, &stale, Some(&key("aa")));
        assert_eq!(judge(&mut gate, &parts).unwrap().action.command, Command::EmergencyStop);
        // ... but never unauthenticated, and never for another vehicle.
        let forged = encode_action("car", 60, 0, &action("f", "x", 2_000, Command::EmergencyStop), None);
        assert_eq!(judge(&mut gate, &forged).unwrap_err().reason, RejectReason::Unauthenticated);
        let other = action("o", "viewer", 2_000, Command::EmergencyStop);
        let other = encode_action("other-car", 61, 0, &other, Some(&key("aa")));
        assert_eq!(judge(&mut gate, &other).unwrap_err().reason, RejectReason::NotAllowed);
        // Anything else from an earlier run is refused, however fresh.
        let mut resume = action("r", "viewer", 2_000, Command::Resume);
        resume.run.run_id = "an-earlier-run".into();
        let r = judge(&mut gate, &encode_action("car", 70, 0, &resume, Some(&key("aa")))).unwrap_err();
        assert_eq!(r.reason, RejectReason::Expired);
        assert!(r.detail.contains("restarted"), "{}", r.detail);
    }

    #[test]
    fn heartbeats_are_noted_not_acknowledged_and_not_replayable() {
        let mut gate = gate(None, 60_000_000_000);
        let beat = action_parts("car", 1, "h1", "v", 2_000, Command::Heartbeat);
        assert_eq!(verdict(&mut gate, &beat), Verdict::Heartbeat);
        assert_eq!(judge(&mut gate, &beat).unwrap_err().reason, RejectReason::Duplicate);
        let stale = action_parts("car", 2, "h2", "v", 999, Command::Heartbeat);
        assert_eq!(judge(&mut gate, &stale).unwrap_err().reason, RejectReason::Expired);
    }

    #[test]
    fn drive_commands_get_a_lease_bounded_by_their_expiry_and_are_not_replayable() {
        let mut gate = gate(None, 60_000_000_000);
        let drive =
            |steering, throttle, lease_ms| Command::Drive { steering, throttle, lease_ms, issued_ns: 7 };
        let d = action_parts("car", 1, "d1", "v", NOW + 1_000_000_000, drive(0.5, -0.25, 200));
        let Verdict::Drive(order) = verdict(&mut gate, &d) else { panic!("not a drive verdict") };
        assert_eq!((order.sender.as_str(), order.seq, order.steering, order.throttle), ("v", 1, 0.5, -0.25));
        assert_eq!(
            (order.arrived_run_ns, order.lease_end_run_ns, order.issued_ns),
            (NOW, NOW + 200_000_000, 7)
        );
        assert_eq!(judge(&mut gate, &d).unwrap_err().reason, RejectReason::Duplicate, "never replayed");
        // A command that expires before its lease would end: the expiry ends it.
        let short = action_parts("car", 2, "d2", "v", NOW + 50_000_000, drive(0.0, 0.1, 300));
        let Verdict::Drive(order) = verdict(&mut gate, &short) else { panic!("not a drive verdict") };
        assert_eq!(order.lease_end_run_ns, NOW + 50_000_000);
        for (i, bad) in
            [drive(1.5, 0.0, 100), drive(0.0, -1.01, 100), drive(0.0, 0.0, 0), drive(0.0, 0.0, 301)]
                .into_iter()
                .enumerate()
        {
            let parts = action_parts("car", 10 + i as u64, &format!("b{i}"), "v", NOW + 1_000_000_000, bad);
            assert_eq!(judge(&mut gate, &parts).unwrap_err().reason, RejectReason::Malformed);
        }
    }

    #[test]
    fn oversized_and_long_named_actions_are_refused_and_never_echoed_at_size() {
        let mut gate = gate(None, 60_000_000_000);
        let huge = "x".repeat(200_000);
        let big = action_parts("car", 1, &huge, &huge, 2_000, Command::Pause);
        let r = judge(&mut gate, &big).unwrap_err();
        assert_eq!(r.reason, RejectReason::Malformed);
        assert!(r.ack_bytes() < 400, "{}", r.ack_bytes());
        let long = "y".repeat(300);
        let named = action_parts("car", 1, &long, "v", 2_000, Command::Pause);
        let r = judge(&mut gate, &named).unwrap_err();
        assert_eq!(r.reason, RejectReason::Malformed);
        assert_eq!(r.action_id.len(), MAX_ACTION_NAME_BYTES);
        assert_eq!(truncated("é".repeat(40).as_str(), 5), "éé");
    }

    #[test]
    fn garbage_and_other_topics_are_malformed() {
        let mut gate = gate(None, 60_000_000_000);
        for parts in [
            vec![b"action".to_vec(), b"\x93junk".to_vec()],
            vec![b"action".to_vec()],
            vec![b"state".to_vec(), vec![]],
        ] {
            assert_eq!(judge(&mut gate, &parts).unwrap_err().reason, RejectReason::Malformed, "{parts:?}");
        }
        let state_env = encode(
            "car",
            1,
            0,
            0,
            &Message::Event(Event::Notice { level: crate::NoticeLevel::Info, text: "x".into() }),
        );
        let r = judge(&mut gate, &[b"event".to_vec(), state_env]).unwrap_err();
        assert_eq!(r.reason, RejectReason::Malformed);
        assert!(r.detail.contains("not an action"));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_senders() {
        let outcomes = SharedOutcomes::default();
        let mut gate = ActionGate::new("car", RUN, None, 60_000_000_000, Arc::clone(&outcomes));
        for i in 0..(REMEMBERED_IDS + REMEMBERED_SENDERS) as u64 * 2 {
            let parts = action_parts("car", 1, &format!("id{i}"), &format!("s{i}"), 2_000, Command::Pause);
            assert!(judge(&mut gate, &parts).is_ok());
        }
        let log = outcomes.lock().unwrap();
        assert!(log.len() <= REMEMBERED_IDS && log.order.len() <= REMEMBERED_IDS);
        assert!(gate.senders.len() <= REMEMBERED_SENDERS && gate.sender_order.len() <= REMEMBERED_SENDERS);
    }

    #[test]
    fn an_action_that_was_not_handed_on_leaves_no_trace() {
        // The listener could not queue it (busy): a retransmission must be judged afresh, not
        // answered "in progress" forever, and its sequence number is still free.
        let mut gate = gate(None, 60_000_000_000);
        for command in [Command::SetTargetSpeed { mps: 3.0 }, Command::EmergencyStop] {
            let parts = action_parts("car", 7, "a", "v", 2_000, command.clone());
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let Verdict::Accept(first) = gate.judge(&refs, NOW) else { panic!("refused {command:?}") };
            let busy = gate.hand_off(first.clone(), |_| Err("queue full"));
            assert_eq!(busy, Err("queue full"));
            // Nothing stayed: the same bytes again are a fresh action, its seq still free.
            assert_eq!(gate.judge(&refs, NOW), Verdict::Accept(first.clone()));
            assert_eq!(gate.hand_off(first, |_| Ok::<(), ()>(())), Ok(()));
            assert_eq!(gate.judge(&refs, NOW), Verdict::InProgress);
            let reused = action_parts("car", 7, "b", "v", 2_000, Command::Pause);
            assert_eq!(judge(&mut gate, &reused).unwrap_err().reason, RejectReason::Duplicate);
            gate = super::tests::gate(None, 60_000_000_000);
        }
    }

    fn key(byte: &str) -> ActionKey {
        ActionKey::from_hex(&byte.repeat(32)).unwrap()
    }

    fn signed(key: &ActionKey, seq: u64, id: &str, expires_run_ns: u64, command: Command) -> Vec<Vec<u8>> {
        encode_action("car", seq, 0, &action(id, "viewer", expires_run_ns, command), Some(key))
    }

    #[test]
    fn with_a_key_only_actions_with_its_mac_pass() {
        let mut gate = gate(Some(key("aa")), 60_000_000_000);
        let good = signed(&key("aa"), 1, "a", 2_000, Command::Pause);
        assert_eq!(judge(&mut gate, &good).unwrap().action.command, Command::Pause);

        let unsigned = action_parts("car", 2, "b", "viewer", 2_000, Command::Resume);
        let r = judge(&mut gate, &unsigned).unwrap_err();
        assert_eq!((r.reason, r.action_id.as_str(), r.seq), (RejectReason::Unauthenticated, "b", 2));

        let other_key = signed(&key("bb"), 3, "c", 2_000, Command::Resume);
        assert_eq!(judge(&mut gate, &other_key).unwrap_err().reason, RejectReason::BadMac);

        // Changing any byte of a signed envelope (here: its expiry, to extend a capture's
        // life) breaks the MAC.
        let mut tampered = signed(&key("aa"), 4, "d", 2_000, Command::Resume);
        tampered[1] = encode("car", 4, 0, 0, &Message::Action(action("d", "viewer", 9_000, Command::Resume)));
        assert_eq!(judge(&mut gate, &tampered).unwrap_err().reason, RejectReason::BadMac);

        let mut short_mac = signed(&key("aa"), 5, "e", 2_000, Command::Resume);
        short_mac[2].pop();
        assert_eq!(judge(&mut gate, &short_mac).unwrap_err().reason, RejectReason::BadMac);

        // A replay of the authentic action under another id with its seq is refused.
        let replay = signed(&key("aa"), 1, "a-again", 2_000, Command::Pause);
        assert_eq!(judge(&mut gate, &replay).unwrap_err().reason, RejectReason::Duplicate);
        // Nothing rejected above used up a seq: the real sender carries on with seq 2.
        assert!(judge(&mut gate, &signed(&key("aa"), 2, "f", 2_000, Command::Resume)).is_ok());
    }

    #[test]
    fn without_a_key_a_mac_is_ignored_but_a_bad_third_part_is_malformed() {
        let mut gate = gate(None, 60_000_000_000);
        assert!(judge(&mut gate, &signed(&key("aa"), 1, "a", 2_000, Command::Pause)).is_ok());
        let mut odd = action_parts("car", 2, "b", "viewer", 2_000, Command::Pause);
        odd.push(b"xyz".to_vec());
        let r = judge(&mut gate, &odd).unwrap_err();
        assert_eq!((r.reason, r.action_id.as_str()), (RejectReason::Malformed, "b"));
    }

    #[test]
    fn actions_valid_implausibly_long_are_refused() {
        let mut gate = gate(None, 10_000);
        let far = action_parts("car", 1, "a", "v", NOW + 10_001, Command::Pause);
        let r = judge(&mut gate, &far).unwrap_err();
        assert_eq!(r.reason, RejectReason::Expired);
        assert!(r.detail.contains("ahead"), "{}", r.detail);
        assert!(judge(&mut gate, &action_parts("car", 1, "a", "v", NOW + 10_000, Command::Pause)).is_ok());
    }

    #[test]
    fn forged_senders_cannot_push_real_ones_out_of_memory() {
        let outcomes = SharedOutcomes::default();
        let mut gate = ActionGate::new("car", RUN, Some(key("aa")), 60_000_000_000, Arc::clone(&outcomes));
        assert!(judge(&mut gate, &signed(&key("aa"), 10, "real", 2_000, Command::Pause)).is_ok());
        for i in 0..2 * REMEMBERED_SENDERS {
            let forged = action_parts("car", 1, &format!("f{i}"), &format!("s{i}"), 2_000, Command::Pause);
            assert_eq!(judge(&mut gate, &forged).unwrap_err().reason, RejectReason::Unauthenticated);
        }
        assert_eq!((outcomes.lock().unwrap().len(), gate.senders.len()), (1, 1));
        let replay = signed(&key("aa"), 10, "real-2", 2_000, Command::Pause);
        assert_eq!(judge(&mut gate, &replay).unwrap_err().reason, RejectReason::Duplicate);
    }

    #[test]
    fn without_a_key_the_endpoint_is_narrowed_to_loopback() {
        let bind = |e: &str| bind_endpoint(e, false).map_err(|e| e.to_string());
        assert_eq!(bind("tcp://*:5558").unwrap(), "tcp://127.0.0.1:5558");
        assert_eq!(bind("tcp://0.0.0.0:5558").unwrap(), "tcp://127.0.0.1:5558");
        assert_eq!(bind("tcp://[::]:5558").unwrap(), "tcp://127.0.0.1:5558");
        assert_eq!(bind("tcp://localhost:5558").unwrap(), "tcp://127.0.0.1:5558");
        assert_eq!(bind("tcp://127.0.0.2:5558").unwrap(), "tcp://127.0.0.2:5558");
        assert_eq!(bind("tcp://[::1]:5558").unwrap(), "tcp://[::1]:5558");
        assert_eq!(bind("ipc:///run/ads/actions").unwrap(), "ipc:///run/ads/actions");
        for network in ["tcp://192.168.1.5:5558", "tcp://eth0:5558", "tcp://vehicle.local:5558", "pgm://x"] {
            let err = bind(network).unwrap_err();
            assert!(err.contains("no action key"), "{network}: {err}");
        }
        assert!(bind("5558").unwrap_err().contains("transport"));
        assert_eq!(bind_endpoint("tcp://*:5558", true).unwrap(), "tcp://*:5558");
    }
}
