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
    /// The video session; `None` until the vehicle's first state said where its video
    /// socket is (when no endpoint was given).
    video: Option<zmq::Socket>,
    /// The PUB endpoint, whose host a discovered video port is on.
    endpoint: String,
    last_hello: Option<Instant>,
    context: zmq::Context,
}

impl std::fmt::Debug for VehicleStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VehicleStream").finish_non_exhaustive()
    }
}

impl VehicleStream {
    /// `endpoint`: the vehicle's PUB socket; `video`: its video socket, or `None` to take
    /// the one the vehicle's states advertise (`state.link.video_port` on the PUB host).
    pub fn connect(endpoint: &str, video: Option<&str>) -> Result<Self, SubscribeError> {
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
        let mut stream =
            Self { socket, video: None, endpoint: endpoint.to_string(), last_hello: None, context };
        if let Some(video) = video {
            stream.connect_video(video)?;
        }
        Ok(stream)
    }

    fn connect_video(&mut self, video: &str) -> Result<(), SubscribeError> {
        let verr = |what| {
            let endpoint = video.to_string();
            move |source| SubscribeError { what, endpoint, source }
        };
        let dealer = self.context.socket(zmq::DEALER).map_err(verr("socket for"))?;
        dealer.set_linger(0).map_err(verr("options of"))?;
        dealer.set_reconnect_ivl(100).map_err(verr("options of"))?;
        dealer.set_reconnect_ivl_max(2000).map_err(verr("options of"))?;
        dealer.set_heartbeat_ivl(HEARTBEAT_IVL_MS).map_err(verr("options of"))?;
        dealer.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS).map_err(verr("options of"))?;
        dealer.set_maxmsgsize((ads_protocol::MAX_PAYLOAD_BYTES + 1024) as i64).map_err(verr("options of"))?;
        dealer.connect(video).map_err(verr("connecting to"))?;
        tracing::info!(video, "video session");
        self.video = Some(dealer);
        Ok(())
    }

    /// Without a video endpoint given: the one this state advertises, once.
    fn discover_video(&mut self, message: &Message) {
        let (None, Message::State(state)) = (&self.video, message) else { return };
        match ads_protocol::discover::endpoints(&self.endpoint, state) {
            Ok(found) => {
                if let Err(e) = self.connect_video(&found.video) {
                    tracing::warn!("{e}");
                }
            }
            Err(e) => tracing::warn!("no video endpoint from the vehicle's state: {e}; pass --video"),
        }
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
        if let Some(video) = &self.video {
            let _ = video.send_multipart(encode_video_request("*", 0, wall_ns(), &hello), zmq::DONTWAIT);
        }
    }

    /// The next message, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Next {
        self.hello();
        let (parts, from_video) = match self.take() {
            Some(taken) => taken,
            None => {
                let wait = timeout.min(HELLO_EVERY).as_millis() as i64;
                let ready = match &self.video {
                    Some(video) => {
                        let mut items =
                            [self.socket.as_poll_item(zmq::POLLIN), video.as_poll_item(zmq::POLLIN)];
                        zmq::poll(&mut items, wait)
                    }
                    None => zmq::poll(&mut [self.socket.as_poll_item(zmq::POLLIN)], wait),
                };
                if ready.unwrap_or(0) == 0 {
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
                if let Some(video) = &self.video {
                    let _ = video.send_multipart(credit, zmq::DONTWAIT);
                }
            }
        }
        if let Ok(wire) = &decoded {
            self.discover_video(&wire.message);
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
        if let Some(Ok(parts)) = self.video.as_ref().map(|v| v.recv_multipart(zmq::DONTWAIT)) {
            return Some((parts, true));
        }
        self.socket.recv_multipart(zmq::DONTWAIT).ok().map(|parts| (parts, false))
    }
}

pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
