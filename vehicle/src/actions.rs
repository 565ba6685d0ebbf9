//! The action listener: a SUB socket bound on the action endpoint, and the gate every action
//! passes: authentic (with a key), decodable, an action, for us, not expired, not seen before.
//! Rejections are acknowledged here; accepted actions go to the control loop, which
//! acknowledges them once carried out (or refuses them as not allowed).
//!
//! Without a key nothing is authenticated, so the socket is bound to loopback only: the kernel
//! then refuses connections from the network before libzmq sees a byte, which does not depend
//! on parsing peers' addresses correctly (docs/security.md).

use crate::broadcast::Outbox;
use crate::config::ActionsSection;
use ads_protocol::{
    decode, peek_action_identity, split_action_mac, Action, ActionKey, AuthError, DecodeError, Event,
    Message, RejectReason, Topic,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

/// Remembered action ids (for duplicate detection) and senders (for sequence numbers): both
/// bounded, so a flood of made-up senders cannot grow memory. Only actions that passed every
/// check are remembered, so with a key only key holders can push entries out.
const REMEMBERED_IDS: usize = 4096;
const REMEMBERED_SENDERS: usize = 1024;

/// Rejections acknowledged per second at most. A flood of junk would otherwise fill the
/// broadcaster's small-message queue with acks and crowd out `state`; beyond this rate
/// rejections are only counted (in state) and summed up in the log.
const REJECTION_ACKS_PER_SECOND: u32 = 100;
/// Rejections logged one by one per second at most; the rest are summed up.
const REJECTION_LOGS_PER_SECOND: u32 = 10;

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

impl Rejection {
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

/// Decides which actions are acted on. Pure logic, no sockets.
#[derive(Debug)]
pub struct ActionGate {
    vehicle_id: String,
    key: Option<ActionKey>,
    max_expiry_ns: u64,
    ids: HashSet<String>,
    id_order: VecDeque<String>,
    last_seq: HashMap<String, u64>,
    sender_order: VecDeque<String>,
}

impl ActionGate {
    /// `key`: every action must carry a valid MAC under it; `None`: no MAC is checked (the
    /// socket must then be reachable from this machine only). Actions expiring more than
    /// `max_expiry_ns` ahead are refused.
    pub fn new(vehicle_id: &str, key: Option<ActionKey>, max_expiry_ns: u64) -> Self {
        Self {
            vehicle_id: vehicle_id.to_string(),
            key,
            max_expiry_ns,
            ids: HashSet::new(),
            id_order: VecDeque::new(),
            last_seq: HashMap::new(),
            sender_order: VecDeque::new(),
        }
    }

    pub fn judge(&mut self, parts: &[&[u8]], now_ns: u64) -> Result<AcceptedAction, Rejection> {
        let reject = |action_id: String, sender: String, seq, reason, detail: String| {
            Err(Rejection { action_id, sender, seq, reason, detail })
        };
        let claimed = |parts: &[&[u8]]| match parts {
            [topic, envelope, ..] if *topic == Topic::Action.as_str().as_bytes() => {
                peek_action_identity(envelope)
            }
            _ => Default::default(),
        };
        let (message_parts, mac) = split_action_mac(parts);
        // Authentication comes first: nothing an unauthenticated sender wrote is acted on or
        // remembered, and the MAC is checked before the envelope is even parsed.
        match (&self.key, message_parts, mac) {
            (Some(key), [_, envelope], Some(mac)) => {
                if let Err(e) = key.verify(envelope, mac) {
                    let (identity, seq) = claimed(message_parts);
                    return reject(identity.id, identity.sender, seq, RejectReason::BadMac, e.to_string());
                }
            }
            (Some(_), [_, _], None) => {
                let (identity, seq) = claimed(message_parts);
                let detail = AuthError::Missing.to_string();
                return reject(identity.id, identity.sender, seq, RejectReason::Unauthenticated, detail);
            }
            // Without a key a MAC is ignored, but a third part that is not one is garbage.
            (None, _, Some(mac)) if mac.len() != ads_protocol::ACTION_MAC_BYTES => {
                let (identity, seq) = claimed(message_parts);
                let detail = AuthError::Length(mac.len()).to_string();
                return reject(identity.id, identity.sender, seq, RejectReason::Malformed, detail);
            }
            // Other part counts fail to decode below, with the count in the detail.
            _ => {}
        }
        let wire = match decode(message_parts) {
            Ok(wire) => wire,
            Err(e) => {
                let (identity, seq) = claimed(message_parts);
                let reason = match e {
                    DecodeError::UnknownCommand { .. } => RejectReason::Unknown,
                    DecodeError::Version { .. } => RejectReason::Version,
                    _ => RejectReason::Malformed,
                };
                return reject(identity.id, identity.sender, seq, reason, e.to_string());
            }
        };
        let Message::Action(action) = wire.message else {
            let topic = wire.message.topic();
            return reject(
                String::new(),
                String::new(),
                wire.seq,
                RejectReason::Malformed,
                format!("a {topic} message is not an action"),
            );
        };
        let (id, sender, seq) = (action.id.clone(), action.sender.clone(), wire.seq);
        if !(wire.vehicle.is_empty() || wire.vehicle == "*" || wire.vehicle == self.vehicle_id) {
            let detail = format!("addressed to vehicle {:?}, this is {:?}", wire.vehicle, self.vehicle_id);
            return reject(id, sender, seq, RejectReason::NotAllowed, detail);
        }
        if id.is_empty() || sender.is_empty() {
            return reject(
                id,
                sender,
                seq,
                RejectReason::Malformed,
                "id and sender must not be empty".into(),
            );
        }
        if action.expires_ns < now_ns {
            let late_ms = (now_ns - action.expires_ns) / 1_000_000;
            return reject(
                id,
                sender,
                seq,
                RejectReason::Expired,
                format!("expired {late_ms} ms before it arrived"),
            );
        }
        if action.expires_ns - now_ns > self.max_expiry_ns {
            let ahead_s = (action.expires_ns - now_ns) / 1_000_000_000;
            let max_s = self.max_expiry_ns / 1_000_000_000;
            let detail =
                format!("expires {ahead_s} s ahead; this vehicle takes actions valid for at most {max_s} s");
            return reject(id, sender, seq, RejectReason::Expired, detail);
        }
        if self.ids.contains(&id) {
            return reject(
                id,
                sender,
                seq,
                RejectReason::Duplicate,
                "an action with this id was already received".into(),
            );
        }
        if let Some(&last) = self.last_seq.get(&sender) {
            if seq <= last {
                let detail = format!("sequence {seq} is not above {last}, the last one from this sender");
                return reject(id, sender, seq, RejectReason::Duplicate, detail);
            }
        }
        self.remember(&id, &sender, seq);
        Ok(AcceptedAction { action, seq })
    }

    fn remember(&mut self, id: &str, sender: &str, seq: u64) {
        if self.ids.insert(id.to_string()) {
            self.id_order.push_back(id.to_string());
            if self.id_order.len() > REMEMBERED_IDS {
                if let Some(old) = self.id_order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
        if self.last_seq.insert(sender.to_string(), seq).is_none() {
            self.sender_order.push_back(sender.to_string());
            if self.sender_order.len() > REMEMBERED_SENDERS {
                if let Some(old) = self.sender_order.pop_front() {
                    self.last_seq.remove(&old);
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
    /// Rejections of authentic-looking repeats: duplicate id or sequence, expired.
    pub replayed: AtomicU64,
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

/// Logs rejections without letting a flood write a line per message.
#[derive(Debug, Default)]
struct RejectionLimiter {
    window_start_ns: u64,
    in_window: u32,
    unacked_in_window: u64,
}

impl RejectionLimiter {
    /// Counts one rejection at `now_ns`; returns (log it, acknowledge it).
    fn admit(&mut self, now_ns: u64) -> (bool, bool) {
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
        let ack = self.in_window <= REJECTION_ACKS_PER_SECOND;
        if !ack {
            self.unacked_in_window += 1;
        }
        (self.in_window <= REJECTION_LOGS_PER_SECOND, ack)
    }
}

/// Loads the key (if configured), binds the action socket and runs the listener thread until
/// `stop`. A key file that cannot be used, or a network endpoint without a key, is an error:
/// the vehicle does not start rather than take unauthenticated actions from the network.
pub fn spawn_listener(
    context: &zmq::Context,
    settings: &ActionsSection,
    vehicle_id: &str,
    to_control: SyncSender<AcceptedAction>,
    outbox: Outbox,
    stats: Arc<ActionStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use anyhow::Context as _;
    let key = match &settings.key_file {
        Some(path) => Some(ActionKey::load(path)?),
        None => None,
    };
    let endpoint = bind_endpoint(&settings.endpoint, key.is_some())?;
    let socket = context.socket(zmq::SUB).context("creating the action SUB socket")?;
    // Limits are set before bind so they apply to every peer: a message larger than any
    // action is refused by libzmq before it is even buffered.
    socket.set_maxmsgsize((ads_protocol::MAX_ENVELOPE_BYTES + 4096) as i64)?;
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
    let mut gate = ActionGate::new(vehicle_id, key, settings.max_expiry_s.saturating_mul(1_000_000_000));
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
            let now_ns = ads_shmem_ipc::clock::wall_ns();
            match gate.judge(&refs, now_ns) {
                Ok(accepted) => {
                    tracing::info!(id = %accepted.action.id, sender = %accepted.action.sender, command = ?accepted.action.command, "action");
                    if let Err(TrySendError::Full(a) | TrySendError::Disconnected(a)) = to_control.try_send(accepted) {
                        stats.count_rejection(RejectReason::NotAllowed);
                        let busy = Rejection {
                            action_id: a.action.id,
                            sender: a.action.sender,
                            seq: a.seq,
                            reason: RejectReason::NotAllowed,
                            detail: "the control loop is not taking actions right now".into(),
                        };
                        outbox.send(Message::Event(busy.into_event()), now_ns);
                    }
                }
                Err(rejection) => {
                    stats.count_rejection(rejection.reason);
                    let (log, ack) = limiter.admit(now_ns);
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
    use ads_protocol::{encode, encode_action, Command};

    fn action_parts(
        vehicle: &str,
        seq: u64,
        id: &str,
        sender: &str,
        expires_ns: u64,
        command: Command,
    ) -> Vec<Vec<u8>> {
        let action = Action { id: id.into(), sender: sender.into(), expires_ns, command };
        vec![b"action".to_vec(), encode(vehicle, seq, 0, 0, &Message::Action(action))]
    }

    fn judge(gate: &mut ActionGate, parts: &[Vec<u8>]) -> Result<AcceptedAction, Rejection> {
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        gate.judge(&refs, 1_000)
    }

    #[test]
    fn accepts_once_and_rejects_replays_expired_and_foreign() {
        let mut gate = ActionGate::new("car", None, 60_000_000_000);
        let ok = action_parts("car", 1, "a", "v1", 2_000, Command::Pause);
        assert_eq!(judge(&mut gate, &ok).unwrap().action.command, Command::Pause);
        assert_eq!(judge(&mut gate, &ok).unwrap_err().reason, RejectReason::Duplicate, "same id");
        let old_seq = action_parts("car", 1, "b", "v1", 2_000, Command::Resume);
        assert_eq!(
            judge(&mut gate, &old_seq).unwrap_err().reason,
            RejectReason::Duplicate,
            "seq not increasing"
        );
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
    fn garbage_and_other_topics_are_malformed() {
        let mut gate = ActionGate::new("car", None, 60_000_000_000);
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
        let mut gate = ActionGate::new("car", None, 60_000_000_000);
        for i in 0..(REMEMBERED_IDS + REMEMBERED_SENDERS) as u64 * 2 {
            let parts = action_parts("car", 1, &format!("id{i}"), &format!("s{i}"), 2_000, Command::Pause);
            assert!(judge(&mut gate, &parts).is_ok());
        }
        assert!(gate.ids.len() <= REMEMBERED_IDS && gate.id_order.len() <= REMEMBERED_IDS);
        assert!(gate.last_seq.len() <= REMEMBERED_SENDERS && gate.sender_order.len() <= REMEMBERED_SENDERS);
    }

    fn key(byte: &str) -> ActionKey {
        ActionKey::from_hex(&byte.repeat(32)).unwrap()
    }

    fn signed(key: &ActionKey, seq: u64, id: &str, expires_ns: u64, command: Command) -> Vec<Vec<u8>> {
        let action = Action { id: id.into(), sender: "viewer".into(), expires_ns, command };
        encode_action("car", seq, 0, &action, Some(key))
    }

    #[test]
    fn with_a_key_only_actions_with_its_mac_pass() {
        let mut gate = ActionGate::new("car", Some(key("aa")), 60_000_000_000);
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
        let original = encode(
            "car",
            4,
            0,
            0,
            &Message::Action(Action {
                id: "d".into(),
                sender: "viewer".into(),
                expires_ns: 9_000,
                command: Command::Resume,
            }),
        );
        tampered[1] = original;
        assert_eq!(judge(&mut gate, &tampered).unwrap_err().reason, RejectReason::BadMac);

        let mut short_mac = signed(&key("aa"), 5, "e", 2_000, Command::Resume);
        short_mac[2].pop();
        assert_eq!(judge(&mut gate, &short_mac).unwrap_err().reason, RejectReason::BadMac);

        // Replays of the authentic action: same bytes again, then the seq is already used.
        assert_eq!(judge(&mut gate, &good).unwrap_err().reason, RejectReason::Duplicate);
        // Nothing rejected above used up a seq: the real sender carries on with seq 2.
        assert!(judge(&mut gate, &signed(&key("aa"), 2, "f", 2_000, Command::Resume)).is_ok());
    }

    #[test]
    fn without_a_key_a_mac_is_ignored_but_a_bad_third_part_is_malformed() {
        let mut gate = ActionGate::new("car", None, 60_000_000_000);
        assert!(judge(&mut gate, &signed(&key("aa"), 1, "a", 2_000, Command::Pause)).is_ok());
        let mut odd = action_parts("car", 2, "b", "viewer", 2_000, Command::Pause);
        odd.push(b"xyz".to_vec());
        let r = judge(&mut gate, &odd).unwrap_err();
        assert_eq!((r.reason, r.action_id.as_str()), (RejectReason::Malformed, "b"));
    }

    #[test]
    fn actions_valid_implausibly_long_are_refused() {
        let mut gate = ActionGate::new("car", None, 10_000);
        let far = action_parts("car", 1, "a", "v", 1_000 + 10_001, Command::Pause);
        let r = judge(&mut gate, &far).unwrap_err();
        assert_eq!(r.reason, RejectReason::Expired);
        assert!(r.detail.contains("ahead"), "{}", r.detail);
        assert!(judge(&mut gate, &action_parts("car", 1, "a", "v", 1_000 + 10_000, Command::Pause)).is_ok());
    }

    #[test]
    fn forged_senders_cannot_push_real_ones_out_of_memory() {
        let mut gate = ActionGate::new("car", Some(key("aa")), 60_000_000_000);
        assert!(judge(&mut gate, &signed(&key("aa"), 10, "real", 2_000, Command::Pause)).is_ok());
        for i in 0..2 * REMEMBERED_SENDERS {
            let forged = action_parts("car", 1, &format!("f{i}"), &format!("s{i}"), 2_000, Command::Pause);
            assert_eq!(judge(&mut gate, &forged).unwrap_err().reason, RejectReason::Unauthenticated);
        }
        assert_eq!((gate.ids.len(), gate.last_seq.len()), (1, 1));
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
    fn a_flood_of_rejections_is_acked_and_logged_at_a_bounded_rate() {
        let mut limiter = RejectionLimiter::default();
        let second = 5_000_000_000;
        let admitted: Vec<(bool, bool)> = (0..1000).map(|i| limiter.admit(second + i)).collect();
        let logged = admitted.iter().filter(|(log, _)| *log).count();
        let acked = admitted.iter().filter(|(_, ack)| *ack).count();
        assert_eq!((logged, acked), (REJECTION_LOGS_PER_SECOND as usize, REJECTION_ACKS_PER_SECOND as usize));
        assert_eq!(limiter.admit(second + 1_000_000_000), (true, true), "a new second starts afresh");
    }
}
