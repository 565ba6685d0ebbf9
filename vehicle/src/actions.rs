//! The action listener: a SUB socket bound on the action endpoint, and the gate every action
//! passes: decodable, an action, for us, not expired, not seen before. Rejections are
//! acknowledged here; accepted actions go to the control loop, which acknowledges them once
//! carried out (or refuses them as not allowed).

use crate::broadcast::Outbox;
use ads_protocol::{decode, peek_action_identity, Action, DecodeError, Event, Message, RejectReason, Topic};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

/// Remembered action ids (for duplicate detection) and senders (for sequence numbers): both
/// bounded, so a flood of made-up senders cannot grow memory.
const REMEMBERED_IDS: usize = 4096;
const REMEMBERED_SENDERS: usize = 1024;

/// An action that passed the gate, with what its acknowledgement needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedAction {
    pub action: Action,
    pub seq: u64,
}

/// Why the gate refused a message, with the identity to put in the acknowledgement.
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
    ids: HashSet<String>,
    id_order: VecDeque<String>,
    last_seq: HashMap<String, u64>,
    sender_order: VecDeque<String>,
}

impl ActionGate {
    pub fn new(vehicle_id: &str) -> Self {
        Self {
            vehicle_id: vehicle_id.to_string(),
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
        let wire = match decode(parts) {
            Ok(wire) => wire,
            Err(e) => {
                let (identity, seq) = match parts {
                    [topic, envelope, ..] if *topic == Topic::Action.as_str().as_bytes() => {
                        peek_action_identity(envelope)
                    }
                    _ => Default::default(),
                };
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
    pub rejected: AtomicU64,
}

/// Binds the action socket and runs the listener thread until `stop`.
pub fn spawn_listener(
    context: &zmq::Context,
    endpoint: &str,
    vehicle_id: &str,
    to_control: SyncSender<AcceptedAction>,
    outbox: Outbox,
    stats: Arc<ActionStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use anyhow::Context as _;
    let socket = context.socket(zmq::SUB).context("creating the action SUB socket")?;
    // Limits are set before bind so they apply to every peer: a message larger than any
    // action is refused by libzmq before it is even buffered.
    socket.set_maxmsgsize((ads_protocol::MAX_ENVELOPE_BYTES + 4096) as i64)?;
    socket.set_rcvhwm(1000)?;
    socket.set_rcvtimeo(100)?;
    socket.set_linger(0)?;
    socket.set_subscribe(Topic::Action.as_str().as_bytes())?;
    socket.bind(endpoint).with_context(|| format!("binding the action socket to {endpoint}"))?;
    let mut gate = ActionGate::new(vehicle_id);
    let handle = std::thread::Builder::new().name("actions".into()).spawn(move || {
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
            match gate.judge(&refs, ads_shmem_ipc::clock::wall_ns()) {
                Ok(accepted) => {
                    tracing::info!(id = %accepted.action.id, sender = %accepted.action.sender, command = ?accepted.action.command, "action");
                    if let Err(TrySendError::Full(a) | TrySendError::Disconnected(a)) = to_control.try_send(accepted) {
                        stats.rejected.fetch_add(1, Ordering::Relaxed);
                        let busy = Rejection {
                            action_id: a.action.id,
                            sender: a.action.sender,
                            seq: a.seq,
                            reason: RejectReason::NotAllowed,
                            detail: "the control loop is not taking actions right now".into(),
                        };
                        outbox.send(Message::Event(busy.into_event()), ads_shmem_ipc::clock::wall_ns());
                    }
                }
                Err(rejection) => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(reason = ?rejection.reason, detail = %rejection.detail, "action rejected");
                    outbox.send(Message::Event(rejection.into_event()), ads_shmem_ipc::clock::wall_ns());
                }
            }
        }
    })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ads_protocol::{encode, Command};

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
        let mut gate = ActionGate::new("car");
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
        let mut gate = ActionGate::new("car");
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
        let mut gate = ActionGate::new("car");
        for i in 0..(REMEMBERED_IDS + REMEMBERED_SENDERS) as u64 * 2 {
            let parts = action_parts("car", 1, &format!("id{i}"), &format!("s{i}"), 2_000, Command::Pause);
            assert!(judge(&mut gate, &parts).is_ok());
        }
        assert!(gate.ids.len() <= REMEMBERED_IDS && gate.id_order.len() <= REMEMBERED_IDS);
        assert!(gate.last_seq.len() <= REMEMBERED_SENDERS && gate.sender_order.len() <= REMEMBERED_SENDERS);
    }
}
