//! The action listener: a SUB socket bound on the action endpoint, and the gate every action
//! passes: small, authentic (with a key), decodable, an action, for us, for this run, not
//! expired on the run's clock, not seen before. Rejections are acknowledged here (truncated
//! and rate-limited in count and bytes); accepted actions go to the control loop, which
//! acknowledges them once carried out and records the outcome, so that a retransmission of
//! an id already decided is answered with the original outcome. Operator heartbeats are
//! noted here and never acknowledged.
//!
//! An emergency stop that is authentic and addressed to us is carried out whatever its expiry,
//! run or sequence number: stopping is always safe, and a late stop is still wanted.
//!
//! Without a key nothing is authenticated, so the socket is bound to loopback only: the kernel
//! then refuses connections from the network before libzmq sees a byte, which does not depend
//! on parsing peers' addresses correctly (docs/security.md).

use crate::broadcast::Outbox;
use crate::config::ActionsSection;
use ads_protocol::{
    decode, peek_action_identity, split_action_mac, Action, ActionKey, AuthError, Command, DecodeError,
    Event, Message, RejectReason, Topic, MAX_ACTION_BYTES, MAX_ACTION_NAME_BYTES,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Remembered action outcomes (for answering retransmissions) and senders (for sequence
/// numbers): both bounded, so a flood of made-up senders cannot grow memory. Only actions
/// that passed every check are remembered, so with a key only key holders can push entries out.
const REMEMBERED_IDS: usize = 4096;
const REMEMBERED_SENDERS: usize = 1024;
/// Sequence numbers up to this far below a sender's highest are still accepted once each:
/// a retransmitted action may arrive after a later one that was sent while it was lost.
const SEQ_WINDOW: u64 = 64;

/// Rejections acknowledged per second at most. A flood of junk would otherwise fill the
/// broadcaster's small-message queue with acks and crowd out `state`; beyond this rate
/// rejections are only counted (in state) and summed up in the log.
const REJECTION_ACKS_PER_SECOND: u32 = 100;
/// Bytes of rejection acks per second at most, whatever their number: echoed fields are
/// truncated, but an attacker must not choose how much the vehicle sends to every subscriber.
const REJECTION_ACK_BYTES_PER_SECOND: usize = 16 * 1024;
/// Rejections logged one by one per second at most; the rest are summed up.
const REJECTION_LOGS_PER_SECOND: u32 = 10;
/// What answering a retransmission costs the limiter, roughly (its ack holds bounded fields).
const REPEAT_ACK_BYTES: usize = 256;
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
    fn new(action_id: &str, sender: &str, seq: u64, reason: RejectReason, detail: String) -> Self {
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
    fn ack_bytes(&self) -> usize {
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
    /// A retransmission of an id already decided: the original acknowledgement, to send again.
    Repeat(Event),
    /// A retransmission of an id the control loop has not answered yet: its ack will come.
    InProgress,
    Reject(Rejection),
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
            (None, _, Some(mac)) if mac.len() != ads_protocol::ACTION_MAC_BYTES => {
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
            self.remember(&action, seq);
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
        self.remember(&action, seq);
        Ok(Verdict::Accept(AcceptedAction { action, seq }))
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

/// Counters the control loop reports in state.
#[derive(Debug, Default)]
pub struct ActionStats {
    pub received: AtomicU64,
    /// Every rejection, whatever the reason.
    pub rejected: AtomicU64,
    /// Rejections for a missing or wrong MAC.
    pub unauthenticated: AtomicU64,
    /// Rejections of authentic-looking repeats (duplicate id or sequence, expired, another
    /// run), and repeats of decided ids answered with their original outcome.
    pub replayed: AtomicU64,
    /// Monotonic ns of the last authentic operator heartbeat; 0: none yet.
    pub last_heartbeat_mono_ns: AtomicU64,
}

impl ActionStats {
    fn count_rejection(&self, reason: RejectReason) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        match reason {
            RejectReason::Unauthenticated | RejectReason::BadMac => {
                self.unauthenticated.fetch_add(1, Ordering::Relaxed);
            }
            RejectReason::Duplicate | RejectReason::Expired => {
                self.replayed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
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

/// Logs and acknowledges rejections without letting a flood write a line, or an ack, per
/// message: bounded in count and in bytes per second.
#[derive(Debug, Default)]
struct RejectionLimiter {
    window_start_ns: u64,
    in_window: u32,
    bytes_in_window: usize,
    unacked_in_window: u64,
}

impl RejectionLimiter {
    /// Counts one rejection whose ack costs `ack_bytes` at `now_ns`; returns (log it, acknowledge it).
    fn admit(&mut self, now_ns: u64, ack_bytes: usize) -> (bool, bool) {
        if now_ns.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            if self.unacked_in_window > 0 {
                tracing::warn!(
                    "{} more actions rejected in one second without an ack or a log line (flood?); \
                     all are counted in state.drops.actions_rejected",
                    self.unacked_in_window
                );
            }
            *self = Self { window_start_ns: now_ns, ..Self::default() };
        }
        self.in_window = self.in_window.saturating_add(1);
        let ack = self.in_window <= REJECTION_ACKS_PER_SECOND
            && self.bytes_in_window + ack_bytes <= REJECTION_ACK_BYTES_PER_SECOND;
        if ack {
            self.bytes_in_window += ack_bytes;
        } else {
            self.unacked_in_window += 1;
        }
        (self.in_window <= REJECTION_LOGS_PER_SECOND, ack)
    }
}

/// What the listener thread shares with the control loop.
#[derive(Debug, Clone)]
pub struct ListenerLinks {
    pub to_control: SyncSender<AcceptedAction>,
    pub outbox: Outbox,
    pub stats: Arc<ActionStats>,
    pub outcomes: SharedOutcomes,
    /// This run's id and the monotonic ns it started at (the run's clock is measured from it).
    pub run_id: String,
    pub run_start_mono_ns: u64,
}

/// Loads the key (if configured), binds the action socket and runs the listener thread until
/// `stop`. A key file that cannot be used, or a network endpoint without a key, is an error:
/// the vehicle does not start rather than take unauthenticated actions from the network.
pub fn spawn_listener(
    context: &zmq::Context,
    settings: &ActionsSection,
    vehicle_id: &str,
    links: ListenerLinks,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use anyhow::Context as _;
    let key = match &settings.key_file {
        Some(path) => Some(ActionKey::load(path)?),
        None => None,
    };
    let endpoint = bind_endpoint(&settings.endpoint, key.is_some())?;
    let socket = context.socket(zmq::SUB).context("creating the action SUB socket")?;
    // Limits are set before bind so they apply to every peer: a message part much larger than
    // any action is refused by libzmq (and its connection dropped) before it is buffered.
    // 8 KiB: a 1000-message receive queue then holds at most 8 MiB, whatever a flood sends.
    socket.set_maxmsgsize((8 * MAX_ACTION_BYTES) as i64)?;
    socket.set_rcvhwm(1000)?;
    socket.set_rcvtimeo(100)?;
    socket.set_linger(0)?;
    socket.set_subscribe(Topic::Action.as_str().as_bytes())?;
    socket.bind(&endpoint).with_context(|| format!("binding the action socket to {endpoint}"))?;
    match &settings.key_file {
        Some(path) => {
            tracing::info!(%endpoint, key = %path.display(), "actions must carry a MAC under the action key")
        }
        None => {
            tracing::warn!("NO ACTION KEY: actions are NOT authenticated.");
            tracing::warn!(
                "The action socket is bound to {endpoint} only, so only processes on this machine can send \
                 actions (configured: {}). To take actions from a laptop, install a key on both \
                 (scripts/action-key.sh) and set actions.key_file / --action-key.",
                settings.endpoint
            );
        }
    }
    let ListenerLinks { to_control, outbox, stats, outcomes, run_id, run_start_mono_ns } = links;
    let max_expiry_ns = settings.max_expiry_s.saturating_mul(1_000_000_000);
    let mut gate = ActionGate::new(vehicle_id, &run_id, key, max_expiry_ns, outcomes);
    let handle = std::thread::Builder::new().name("actions".into()).spawn(move || {
        let mut limiter = RejectionLimiter::default();
        while !stop.load(Ordering::Relaxed) {
            let parts = match socket.recv_multipart(0) {
                Ok(parts) => parts,
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("action socket: {e}; listener stops");
                    break;
                }
            };
            stats.received.fetch_add(1, Ordering::Relaxed);
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let now_mono = ads_shmem_ipc::clock::monotonic_ns();
            let now_ns = ads_shmem_ipc::clock::wall_ns();
            match gate.judge(&refs, now_mono.saturating_sub(run_start_mono_ns)) {
                Verdict::Accept(accepted) => {
                    tracing::info!(id = %accepted.action.id, sender = %accepted.action.sender, command = ?accepted.action.command, "action");
                    if let Err(TrySendError::Full(a) | TrySendError::Disconnected(a)) = to_control.try_send(accepted) {
                        stats.count_rejection(RejectReason::NotAllowed);
                        let detail = "the control loop is not taking actions right now".to_string();
                        let busy = Rejection::new(&a.action.id, &a.action.sender, a.seq, RejectReason::NotAllowed, detail);
                        outbox.send(Message::Event(busy.into_event()), now_ns);
                    }
                }
                Verdict::Heartbeat => stats.last_heartbeat_mono_ns.store(now_mono, Ordering::Relaxed),
                Verdict::Repeat(ack) => {
                    // Retransmissions (or replays of captured bytes) change nothing; their
                    // answers are bounded like rejections so that replays cannot crowd out state.
                    stats.replayed.fetch_add(1, Ordering::Relaxed);
                    if limiter.admit(now_ns, REPEAT_ACK_BYTES).1 {
                        outbox.send(Message::Event(ack), now_ns);
                    }
                }
                Verdict::InProgress => {}
                Verdict::Reject(rejection) => {
                    stats.count_rejection(rejection.reason);
                    let (log, ack) = limiter.admit(now_ns, rejection.ack_bytes());
                    if log {
                        tracing::warn!(reason = ?rejection.reason, detail = %rejection.detail, "action rejected");
                    }
                    if ack {
                        outbox.send(Message::Event(rejection.into_event()), now_ns);
                    }
                }
            }
        }
    })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ads_protocol::{encode, encode_action, ActionRun};

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

    fn verdict(gate: &mut ActionGate, parts: &[Vec<u8>]) -> Verdict {
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        gate.judge(&refs, NOW)
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
            &Message::Event(Event::Notice { level: ads_protocol::NoticeLevel::Info, text: "x".into() }),
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

    #[test]
    fn a_flood_of_rejections_is_acked_and_logged_at_a_bounded_rate_and_size() {
        let mut limiter = RejectionLimiter::default();
        let second = 5_000_000_000;
        let admitted: Vec<(bool, bool)> = (0..1000).map(|i| limiter.admit(second + i, 100)).collect();
        let logged = admitted.iter().filter(|(log, _)| *log).count();
        let acked = admitted.iter().filter(|(_, ack)| *ack).count();
        assert_eq!((logged, acked), (REJECTION_LOGS_PER_SECOND as usize, REJECTION_ACKS_PER_SECOND as usize));
        assert_eq!(limiter.admit(second + 1_000_000_000, 100), (true, true), "a new second starts afresh");
        let mut limiter = RejectionLimiter::default();
        let big = (0..100).filter(|i| limiter.admit(second + i, 1000).1).count();
        assert_eq!(big, REJECTION_ACK_BYTES_PER_SECOND / 1000, "bounded in bytes too");
    }
}
