//! The action listener: a SUB socket bound on the action endpoint, the gate
//! ([`ads_protocol::gate`]) every action passes, and the hand-off to the control loop.
//! Rejections are acknowledged here (truncated and rate-limited in count and bytes); accepted
//! actions go to the control loop, which acknowledges them once carried out and records the
//! outcome, so that a retransmission of an id already decided is answered with the original
//! outcome. Operator heartbeats are noted here and never acknowledged; so are teleop `drive`
//! commands, which go into a one-slot [`DriveMailbox`] where the newest wins (they count as
//! the operator's presence too).
//!
//! An emergency stop never waits behind anything: it does not go through the action queue
//! but into an [`EstopMailbox`] that cannot fill, and raises a flag the control loop reads
//! every tick. Other actions go through a bounded queue; when it is full they are rejected as
//! `busy` and the gate records nothing, so a retransmission is judged afresh.
//!
//! Without a key nothing is authenticated, so the socket is bound to loopback only: the kernel
//! then refuses connections from the network before libzmq sees a byte, which does not depend
//! on parsing peers' addresses correctly (docs/security.md).

use crate::broadcast::Outbox;
use crate::config::ActionsSection;
use crate::teleop::DriveMailbox;
use ads_protocol::gate::{ActionGate, Rejection, SharedOutcomes, Verdict};
use ads_protocol::{ActionKey, Command, Event, Message, RejectReason, Topic, MAX_ACTION_BYTES};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

pub use ads_protocol::gate::{bind_endpoint, AcceptedAction, EndpointError};

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

/// Accepted e-stops waiting for the control loop at most; beyond this (a flood of distinct
/// authentic e-stops) the flag is still raised, so the car still brakes, and the extra ones are
/// not recorded, so their retransmissions are accepted again later.
const ESTOP_BACKLOG: usize = 1024;

/// The e-stop's own way to the control loop: a flag the loop reads every tick, and the
/// e-stops to acknowledge. Nothing else uses it, so nothing can fill it in front of an e-stop.
#[derive(Debug, Default)]
pub struct EstopMailbox {
    raised: AtomicBool,
    pending: Mutex<VecDeque<AcceptedAction>>,
}

impl EstopMailbox {
    /// Posts an accepted e-stop; false if the backlog is full (the flag is raised anyway).
    pub fn post(&self, accepted: AcceptedAction) -> bool {
        let posted = {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let room = pending.len() < ESTOP_BACKLOG;
            if room {
                pending.push_back(accepted);
            }
            room
        };
        self.raised.store(true, Ordering::Release);
        posted
    }

    /// Whether an e-stop arrived since the last call; cheap enough for every tick.
    pub fn raised(&self) -> bool {
        self.raised.swap(false, Ordering::Acquire)
    }

    /// The e-stops to acknowledge.
    pub fn take(&self) -> Vec<AcceptedAction> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..).collect()
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
    pub estops: Arc<EstopMailbox>,
    pub drives: Arc<DriveMailbox>,
    pub outbox: Outbox,
    pub stats: Arc<ActionStats>,
    pub outcomes: SharedOutcomes,
    /// This run's id and the monotonic ns it started at (the run's clock is measured from it).
    pub run_id: String,
    pub run_start_mono_ns: u64,
}

/// The running listener: its thread, and the TCP port its socket is bound to (0 if not TCP),
/// which every state advertises.
#[derive(Debug)]
pub struct Listener {
    pub thread: std::thread::JoinHandle<()>,
    pub port: u16,
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
) -> anyhow::Result<Listener> {
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
    // Its TCP acks (and the handshake) in the voice class too: an action's round trip is
    // only as fast as its slowest direction.
    socket.set_tos(i32::from(settings.dscp) << 2)?;
    crate::peer_heartbeat::watch_peers(&socket)?;
    socket.set_subscribe(Topic::Action.as_str().as_bytes())?;
    socket.bind(&endpoint).with_context(|| format!("binding the action socket to {endpoint}"))?;
    let port = bound_port(&socket);
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
    let ListenerLinks { to_control, estops, drives, outbox, stats, outcomes, run_id, run_start_mono_ns } =
        links;
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
                Verdict::Accept(accepted) if accepted.action.command == Command::EmergencyStop => {
                    tracing::warn!(id = %accepted.action.id, sender = %accepted.action.sender, "emergency stop");
                    // The flag goes up in any case; only a full backlog leaves it unrecorded,
                    // to be answered when it is sent again.
                    let _ = gate.hand_off(accepted, |a| if estops.post(a) { Ok(()) } else { Err(()) });
                }
                Verdict::Accept(accepted) => {
                    tracing::info!(id = %accepted.action.id, sender = %accepted.action.sender, command = ?accepted.action.command, "action");
                    let handed = gate.hand_off(accepted, |a| match to_control.try_send(a) {
                        Ok(()) => Ok(()),
                        Err(TrySendError::Full(a) | TrySendError::Disconnected(a)) => Err(a),
                    });
                    if let Err(a) = handed {
                        stats.count_rejection(RejectReason::Busy);
                        let detail = "the vehicle's action queue is full: send it again".to_string();
                        let busy = Rejection::new(&a.action.id, &a.action.sender, a.seq, RejectReason::Busy, detail);
                        if limiter.admit(now_ns, busy.ack_bytes()).1 {
                            outbox.send(Message::Event(busy.into_event()), now_ns);
                        }
                    }
                }
                Verdict::Heartbeat => stats.last_heartbeat_mono_ns.store(now_mono, Ordering::Relaxed),
                Verdict::Drive(order) => {
                    // Someone driving by hand is present.
                    stats.last_heartbeat_mono_ns.store(now_mono, Ordering::Relaxed);
                    drives.post(order);
                }
                Verdict::Repeat(ack) => {
                    // Retransmissions (or replays of captured bytes) change nothing; their
                    // answers are bounded like rejections so that replays cannot crowd out state.
                    // The answers of the stop chain (e-stop, reset: the acks that say whether the
                    // latch is persisted) are never held back: the sender retransmits until it
                    // hears one, and only an authentic id of the stop chain gets here.
                    stats.replayed.fetch_add(1, Ordering::Relaxed);
                    if matches!(ack, Event::Ack { persisted: Some(_), .. }) {
                        outbox.send_urgent(Message::Event(ack), now_ns);
                    } else if limiter.admit(now_ns, REPEAT_ACK_BYTES).1 {
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
    Ok(Listener { thread: handle, port })
}

/// The TCP port a bound socket listens on (0 for another transport).
fn bound_port(socket: &zmq::Socket) -> u16 {
    socket
        .get_last_endpoint()
        .ok()
        .and_then(Result::ok)
        .and_then(|e| e.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ads_protocol::{Action, ActionRun};

    fn estop(id: &str) -> AcceptedAction {
        let run = ActionRun { run_id: "r".into(), expires_run_ns: 1 };
        AcceptedAction {
            action: Action { id: id.into(), sender: "v".into(), command: Command::EmergencyStop, run },
            seq: 1,
        }
    }

    #[test]
    fn the_estop_mailbox_never_refuses_to_raise_its_flag() {
        let mailbox = EstopMailbox::default();
        assert!(!mailbox.raised());
        for i in 0..ESTOP_BACKLOG {
            assert!(mailbox.post(estop(&format!("e{i}"))));
        }
        assert!(!mailbox.post(estop("one-too-many")), "the backlog is bounded");
        assert!(mailbox.raised(), "but the flag is up");
        assert!(!mailbox.raised(), "once per raise");
        assert_eq!(mailbox.take().len(), ESTOP_BACKLOG);
        assert!(mailbox.post(estop("again")));
        assert!(mailbox.raised());
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
