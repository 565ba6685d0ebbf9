//! The replayer's one network module: it is a vehicle on the wire. A PUB socket sends the
//! small topics `[topic, envelope]` like the vehicle's broadcaster; a ROUTER video socket
//! sends each viewer session the recorded frames as its credits allow (docs/protocol.md 2.1:
//! a hello opens a session with one credit, each credit returns it; a session silent for 3 s
//! is closed); a SUB socket takes actions. The recorded JPEGs go out as they were recorded:
//! a replay does not adapt its tiers, it only never queues.

use ads_protocol::{decode_video_request, Message, VideoRequest};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A session silent this long is closed, as the vehicle does.
const SESSION_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many sessions, as the vehicle's default `link.max_viewers`.
const MAX_SESSIONS: usize = 8;

/// One viewer on the video socket.
#[derive(Debug)]
struct Session {
    /// Frame ids sent and not yet credited (at most one).
    in_flight: Option<u64>,
    heard: Instant,
}

#[derive(Debug, thiserror::Error)]
#[error("ZeroMQ {what} {endpoint}: {source}")]
pub struct PublishError {
    what: &'static str,
    endpoint: String,
    source: zmq::Error,
}

pub struct VehicleEndpoints {
    publisher: zmq::Socket,
    video: zmq::Socket,
    sessions: HashMap<Vec<u8>, Session>,
    actions: zmq::Socket,
    vehicle_id: String,
    seq: [u64; ads_protocol::Topic::ALL.len()],
    _context: zmq::Context,
}

impl std::fmt::Debug for VehicleEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VehicleEndpoints").field("vehicle_id", &self.vehicle_id).finish_non_exhaustive()
    }
}

impl VehicleEndpoints {
    pub fn bind(broadcast: &str, video: &str, actions: &str, vehicle_id: &str) -> Result<Self, PublishError> {
        let err = |what, endpoint: &str| {
            let endpoint = endpoint.to_string();
            move |source| PublishError { what, endpoint, source }
        };
        let context = zmq::Context::new();
        let publisher = context.socket(zmq::PUB).map_err(err("socket for", broadcast))?;
        publisher.set_sndhwm(100).map_err(err("options of", broadcast))?;
        publisher.set_linger(0).map_err(err("options of", broadcast))?;
        publisher.bind(broadcast).map_err(err("binding", broadcast))?;
        let router = context.socket(zmq::ROUTER).map_err(err("socket for", video))?;
        router.set_sndhwm(4).map_err(err("options of", video))?;
        router.set_linger(0).map_err(err("options of", video))?;
        router.set_maxmsgsize(64 * 1024).map_err(err("options of", video))?;
        router.bind(video).map_err(err("binding", video))?;
        let subscriber = context.socket(zmq::SUB).map_err(err("socket for", actions))?;
        subscriber.set_maxmsgsize(64 * 1024).map_err(err("options of", actions))?;
        subscriber.set_subscribe(b"action").map_err(err("subscribing on", actions))?;
        subscriber.bind(actions).map_err(err("binding", actions))?;
        Ok(Self {
            publisher,
            video: router,
            sessions: HashMap::new(),
            actions: subscriber,
            vehicle_id: vehicle_id.to_string(),
            seq: [0; ads_protocol::Topic::ALL.len()],
            _context: context,
        })
    }

    /// Sends one message now; never blocks (a full queue drops it, as the vehicle does). A
    /// frame goes to every video session holding a credit; the others skip it.
    pub fn publish(&mut self, capture_ns: u64, message: &Message, payload: Option<&[u8]>) {
        let topic = message.topic();
        let index = ads_protocol::Topic::ALL.iter().position(|t| *t == topic).unwrap_or(0);
        self.seq[index] += 1;
        let envelope = ads_protocol::encode(
            &self.vehicle_id,
            self.seq[index],
            capture_ns,
            crate::subscribe::wall_ns(),
            message,
        );
        if let Message::Frame(info) = message {
            self.serve_video_requests();
            let jpeg = payload.unwrap_or_default();
            for (peer, session) in &mut self.sessions {
                if session.in_flight.is_some() {
                    continue;
                }
                let parts: [&[u8]; 4] = [peer, topic.as_str().as_bytes(), &envelope, jpeg];
                if self.video.send_multipart(parts, zmq::DONTWAIT).is_ok() {
                    session.in_flight = Some(info.frame_id);
                }
            }
            return;
        }
        let mut parts: Vec<&[u8]> = vec![topic.as_str().as_bytes(), &envelope];
        parts.extend(payload);
        if let Err(e) = self.publisher.send_multipart(parts, zmq::DONTWAIT) {
            tracing::trace!("dropped a {topic} message: {e}");
        }
    }

    /// Hellos open sessions, credits return theirs; anything else is ignored.
    fn serve_video_requests(&mut self) {
        while let Ok(parts) = self.video.recv_multipart(zmq::DONTWAIT) {
            let Some((peer, request)) = parts.split_first() else { continue };
            let refs: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
            let Ok(request) = decode_video_request(&refs) else { continue };
            let now = Instant::now();
            let room = self.sessions.len() < MAX_SESSIONS;
            match (request, self.sessions.get_mut(peer)) {
                (VideoRequest::Credit(credit), Some(session)) => {
                    if session.in_flight == Some(credit.frame_id) {
                        session.in_flight = None;
                    }
                    session.heard = now;
                }
                (VideoRequest::Hello(_), Some(session)) => session.heard = now,
                (VideoRequest::Hello(_), None) if room => {
                    self.sessions.insert(peer.clone(), Session { in_flight: None, heard: now });
                }
                _ => {}
            }
        }
        self.sessions.retain(|_, s| s.heard.elapsed() < SESSION_TIMEOUT);
    }

    /// The next message on the action socket, as it came (for the gate), waiting at most
    /// `timeout`.
    pub fn next_action(&mut self, timeout: Duration) -> Option<Vec<Vec<u8>>> {
        if self.actions.poll(zmq::POLLIN, timeout.as_millis() as i64).ok()? == 0 {
            return None;
        }
        self.actions.recv_multipart(zmq::DONTWAIT).ok()
    }
}
