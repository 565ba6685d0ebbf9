//! The recorder's one network module: a stream of decoded vehicle messages with their receive
//! times. Everything else in the recorder sees only [`Received`].
//!
//! Two sockets, like the viewer's: a SUB for the small topics (it subscribes to everything,
//! and ZeroMQ reconnects by itself) and a DEALER session on the vehicle's video socket, which
//! sends a hello every second and a credit for every frame it takes off the socket
//! (docs/protocol.md 2.1). The recorder is one more viewer: the vehicle's PUB drops for it at
//! its high-water mark, and its video session gets frames only as fast as it credits them, so
//! a slow disk never slows the vehicle.

use ads_protocol::{encode_video_request, Credit, DecodeError, Message, VideoHello, VideoRequest};
use std::time::{Duration, Instant};

/// How often the video session is renewed (the vehicle closes a silent one after 3 s).
const HELLO_EVERY: Duration = Duration::from_secs(1);

const HEARTBEAT_IVL_MS: i32 = 500;
const HEARTBEAT_TIMEOUT_MS: i32 = 2000;
/// Generous: a recorder should rather hold a burst in memory than lose it.
const RECEIVE_HWM: i32 = 1000;

#[derive(Debug, thiserror::Error)]
#[error("ZeroMQ {what} {endpoint}: {source}")]
pub struct SubscribeError {
    what: &'static str,
    endpoint: String,
    source: zmq::Error,
}

/// One message off the wire, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Wall clock ns when the recorder took it off the socket.
    pub recv_ns: u64,
    pub vehicle: String,
    pub seq: u64,
    pub capture_ns: u64,
    pub send_ns: u64,
    pub message: Message,
    /// The JPEG of a frame.
    pub payload: Option<Vec<u8>>,
}

/// What [`VehicleStream::next`] found.
#[derive(Debug)]
pub enum Next {
    Message(Box<Received>),
    /// Something arrived that does not decode; it was dropped.
    Malformed(DecodeError),
    /// Nothing within the timeout.
    Idle,
}

pub struct VehicleStream {
    socket: zmq::Socket,
    video: zmq::Socket,
    last_hello: Option<Instant>,
    _context: zmq::Context,
}

impl std::fmt::Debug for VehicleStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VehicleStream").finish_non_exhaustive()
    }
}

impl VehicleStream {
    /// `endpoint`: the vehicle's PUB socket; `video`: its video socket.
    pub fn connect(endpoint: &str, video: &str) -> Result<Self, SubscribeError> {
        let err = |what| {
            let endpoint = endpoint.to_string();
            move |source| SubscribeError { what, endpoint, source }
        };
        let context = zmq::Context::new();
        let socket = context.socket(zmq::SUB).map_err(err("socket for"))?;
        socket.set_rcvhwm(RECEIVE_HWM).map_err(err("options of"))?;
        socket.set_heartbeat_ivl(HEARTBEAT_IVL_MS).map_err(err("options of"))?;
        socket.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS).map_err(err("options of"))?;
        socket.set_heartbeat_ttl(HEARTBEAT_TIMEOUT_MS).map_err(err("options of"))?;
        socket.set_reconnect_ivl(100).map_err(err("options of"))?;
        socket.set_reconnect_ivl_max(2000).map_err(err("options of"))?;
        socket.set_maxmsgsize((ads_protocol::MAX_PAYLOAD_BYTES + 1024) as i64).map_err(err("options of"))?;
        socket.set_subscribe(b"").map_err(err("subscribing to"))?;
        socket.connect(endpoint).map_err(err("connecting to"))?;
        let verr = |what| {
            let endpoint = video.to_string();
            move |source| SubscribeError { what, endpoint, source }
        };
        let dealer = context.socket(zmq::DEALER).map_err(verr("socket for"))?;
        dealer.set_linger(0).map_err(verr("options of"))?;
        dealer.set_reconnect_ivl(100).map_err(verr("options of"))?;
        dealer.set_reconnect_ivl_max(2000).map_err(verr("options of"))?;
        dealer.set_maxmsgsize((ads_protocol::MAX_PAYLOAD_BYTES + 1024) as i64).map_err(verr("options of"))?;
        dealer.connect(video).map_err(verr("connecting to"))?;
        Ok(Self { socket, video: dealer, last_hello: None, _context: context })
    }

    /// Renews the video session when due; never blocks (a full queue skips this hello).
    fn hello(&mut self) {
        if self.last_hello.is_some_and(|t| t.elapsed() < HELLO_EVERY) {
            return;
        }
        self.last_hello = Some(Instant::now());
        // JPEG: what a recording stores as foxglove.CompressedImage. The full picture always
        // (never a rate-adapted small tier): a recording keeps every image whole, and the
        // annotations, in the source's pixels, fit it; the frame rate adapts instead.
        let hello = VideoRequest::Hello(VideoHello {
            codec: ads_protocol::CODEC_JPEG.into(),
            codecs: Vec::new(),
            max_kbps: None,
            full_size: true,
        });
        let _ = self.video.send_multipart(encode_video_request("*", 0, wall_ns(), &hello), zmq::DONTWAIT);
    }

    /// The next message, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Next {
        self.hello();
        let (parts, from_video) = match self.take() {
            Some(taken) => taken,
            None => {
                let mut items = [self.socket.as_poll_item(zmq::POLLIN), self.video.as_poll_item(zmq::POLLIN)];
                let wait = timeout.min(HELLO_EVERY).as_millis() as i64;
                if zmq::poll(&mut items, wait).unwrap_or(0) == 0 {
                    return Next::Idle;
                }
                match self.take() {
                    Some(taken) => taken,
                    None => return Next::Idle,
                }
            }
        };
        let recv_ns = wall_ns();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let decoded = ads_protocol::decode(&refs);
        // The credit first, before anything is done with the frame: it paces the session.
        if let (true, Ok(wire)) = (from_video, &decoded) {
            if let Message::Frame(info) = &wire.message {
                let bytes = wire.payload.map_or(0, <[u8]>::len) as u32;
                let credit = VideoRequest::Credit(Credit { frame_id: info.frame_id, bytes });
                let credit = encode_video_request("*", 0, wall_ns(), &credit);
                let _ = self.video.send_multipart(credit, zmq::DONTWAIT);
            }
        }
        match decoded {
            Ok(wire) => Next::Message(Box::new(Received {
                recv_ns,
                vehicle: wire.vehicle,
                seq: wire.seq,
                capture_ns: wire.capture_ns,
                send_ns: wire.send_ns,
                message: wire.message,
                payload: wire.payload.map(<[u8]>::to_vec),
            })),
            Err(e) => Next::Malformed(e),
        }
    }

    /// A message waiting on either socket, video first (frames are what paces the session).
    fn take(&self) -> Option<(Vec<Vec<u8>>, bool)> {
        if let Ok(parts) = self.video.recv_multipart(zmq::DONTWAIT) {
            return Some((parts, true));
        }
        self.socket.recv_multipart(zmq::DONTWAIT).ok().map(|parts| (parts, false))
    }
}

pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
