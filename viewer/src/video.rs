//! The viewer's end of the video link: a DEALER on the vehicle's video socket. It says hello
//! (and again every second, which keeps the session alive), and returns a credit for every
//! frame the moment it arrives, before anything else is done with it: the vehicle sends the
//! next frame only then, so no frame ever waits in a queue for us.

use crate::metrics::Metrics;
use crate::packet::{wall_ns, DecodedUnit, KeyframeWish};
use ads_protocol::{Credit, VideoHello, VideoRequest, WireMessage};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const HELLO_EVERY: Duration = Duration::from_secs(1);
/// Reconnection (of every socket of the link): at most this long between attempts, and for
/// one attempt's TCP connect, so the link is back within a fraction of a second of the
/// network's return (TCP's own SYN backoff would wait seconds after a long outage).
pub const RECONNECT_MAX_MS: i32 = 250;
/// While no frame came for [`STARVED_AFTER`] (an outage, a reconnection: a new session on
/// the vehicle), hellos go this often, so video is back soon after the link.
const HELLO_STARVED_EVERY: Duration = Duration::from_millis(200);
const STARVED_AFTER: Duration = Duration::from_millis(500);

/// What this viewer's video link delivers, for the page's link panel.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VideoLinkView {
    /// Video received over the last second, kbit/s.
    pub kbps: f64,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    pub quality: u8,
    pub tier: u8,
    /// The vehicle's estimate of our goodput, kbit/s.
    pub goodput_kbps: u32,
    /// Capture on the vehicle → received here, last frame, ms.
    pub frame_age_ms: Option<f64>,
    /// The vehicle holds us below its best tier or its full rate.
    pub reduced: bool,
}

/// One message from the video socket, for the hub.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub message: WireMessage<'a>,
    pub recv_ns: u64,
    /// An H.264 frame as the decoder made it (`None`: not H.264, or dropped).
    pub decoded: Option<DecodedUnit>,
    /// What the video link delivers now (with every frame).
    pub view: Option<VideoLinkView>,
}

pub struct VideoClient {
    socket: zmq::Socket,
    endpoint: String,
    seq: u64,
    last_hello: Option<Instant>,
    /// (arrival, bytes) over the last second.
    recent: VecDeque<(Instant, usize)>,
    /// Codec asked for (`jpeg`, `h264`), and the H.264 decoder.
    codec: String,
    h264: crate::h264::H264Receiver,
    last_key_request: Option<Instant>,
    /// Ask for the full picture (a recording or Foxglove shares the session).
    full_size: bool,
    /// Signs the hellos (the action key): the vehicle never displaces a signed session for
    /// an unsigned one.
    hello_key: Option<ads_protocol::ActionKey>,
}

impl std::fmt::Debug for VideoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoClient").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl VideoClient {
    /// Asks the vehicle for `codec` (`jpeg` or `h264`; JPEG if the vehicle lacks it).
    pub fn with_codec(mut self, codec: &str) -> Self {
        self.codec = codec.to_string();
        self
    }

    /// Signs every hello with `key` (the action key), if any.
    pub fn with_hello_key(mut self, key: Option<&ads_protocol::ActionKey>) -> Self {
        self.hello_key = key.cloned();
        self
    }

    pub fn connect(context: &zmq::Context, endpoint: &str) -> Result<Self, zmq::Error> {
        let socket = context.socket(zmq::DEALER)?;
        socket.set_rcvhwm(16)?;
        socket.set_sndhwm(64)?;
        socket.set_heartbeat_ivl(500)?;
        socket.set_heartbeat_timeout(2000)?;
        socket.set_heartbeat_ttl(2000)?;
        socket.set_reconnect_ivl(100)?;
        socket.set_reconnect_ivl_max(RECONNECT_MAX_MS)?;
        socket.set_connect_timeout(RECONNECT_MAX_MS)?;
        socket.set_linger(0)?;
        socket.set_maxmsgsize((ads_protocol::MAX_PAYLOAD_BYTES + 1024) as i64)?;
        socket.connect(endpoint)?;
        Ok(Self {
            socket,
            endpoint: endpoint.to_string(),
            seq: 0,
            last_hello: None,
            recent: VecDeque::new(),
            codec: ads_protocol::CODEC_JPEG.into(),
            h264: crate::h264::H264Receiver::default(),
            last_key_request: None,
            full_size: false,
            hello_key: None,
        })
    }

    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    fn send(&mut self, request: &VideoRequest) {
        self.seq += 1;
        let mut parts = ads_protocol::encode_video_request("*", self.seq, wall_ns(), request);
        if let (VideoRequest::Hello(_), Some(key)) = (request, &self.hello_key) {
            ads_protocol::sign_video_request(&mut parts, key);
        }
        // DONTWAIT: with no vehicle connected the request is dropped; the next hello retries.
        if let Err(e) = self.socket.send_multipart(parts, zmq::DONTWAIT) {
            tracing::trace!("video request not sent: {e}");
        }
    }

    /// Asks for `codec` from now on (said at once when it changes).
    pub fn set_codec(&mut self, codec: &str) {
        if codec != self.codec {
            self.codec = codec.to_string();
            self.last_hello = None;
        }
    }

    /// Asks for the full picture (frame rate adapts instead), or the link's tiers again.
    pub fn set_full_size(&mut self, full_size: bool) {
        if full_size != self.full_size {
            self.full_size = full_size;
            // Said at once, not with the next hello.
            self.last_hello = None;
        }
    }

    /// Hello when due; call often.
    pub fn tick(&mut self, now: Instant) {
        let starved = self.recent.back().is_none_or(|&(t, _)| now.duration_since(t) >= STARVED_AFTER);
        let every = if starved { HELLO_STARVED_EVERY } else { HELLO_EVERY };
        if self.last_hello.is_none_or(|t| now.duration_since(t) >= every) {
            self.last_hello = Some(now);
            let codecs = if self.codec == ads_protocol::CODEC_H264 {
                vec![ads_protocol::CODEC_H264.into(), ads_protocol::CODEC_JPEG.into()]
            } else {
                Vec::new()
            };
            let hello = VideoHello {
                codec: ads_protocol::CODEC_JPEG.into(),
                codecs,
                max_kbps: None,
                full_size: self.full_size,
            };
            self.send(&VideoRequest::Hello(hello));
        }
    }

    /// Sends a keyframe request when one is wished for, at most one per 200 ms.
    pub fn request_keyframe_if_wanted(&mut self, wish: &KeyframeWish, metrics: &Metrics, now: Instant) {
        if self.last_key_request.is_some_and(|t| now.duration_since(t) < Duration::from_millis(200)) {
            return;
        }
        if wish.take() {
            self.last_key_request = Some(now);
            metrics.h264_key_requests.fetch_add(1, Ordering::Relaxed);
            self.send(&VideoRequest::Keyframe(ads_protocol::KeyframeRequest { after_frame_id: 0 }));
        }
    }

    /// Takes every frame that arrived: credit first, then `deliver` (the link feeds the hub).
    pub fn receive(
        &mut self,
        (metrics, wish, jpeg_quality): (&Metrics, &KeyframeWish, u8),
        mut deliver: impl FnMut(Delivery<'_>),
    ) {
        while let Ok(parts) = self.socket.recv_multipart(zmq::DONTWAIT) {
            let recv_ns = wall_ns();
            let now = Instant::now();
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            match ads_protocol::decode(&refs) {
                Ok(message) => {
                    let mut view = None;
                    if let ads_protocol::Message::Frame(info) = &message.message {
                        let bytes = message.payload.map_or(0, <[u8]>::len);
                        let credit = Credit {
                            frame_id: info.frame_id,
                            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                        };
                        self.send(&VideoRequest::Credit(credit));
                        self.recent.push_back((now, bytes));
                        while self
                            .recent
                            .front()
                            .is_some_and(|&(t, _)| now.duration_since(t) > Duration::from_secs(1))
                        {
                            self.recent.pop_front();
                        }
                        let bits: usize = self.recent.iter().map(|&(_, b)| b).sum::<usize>() * 8;
                        view = Some(VideoLinkView {
                            kbps: bits as f64 / 1000.0,
                            fps: self.recent.len() as f64,
                            width: info.width,
                            height: info.height,
                            quality: info.quality,
                            tier: info.tier,
                            goodput_kbps: info.goodput_kbps,
                            frame_age_ms: Some((recv_ns as f64 - message.capture_ns as f64) / 1e6),
                            reduced: info.reduced,
                        });
                    }
                    let decoded = match &message.message {
                        ads_protocol::Message::Frame(info) if info.codec == ads_protocol::CODEC_H264 => self
                            .h264
                            .take((metrics, wish, jpeg_quality), info, message.payload.unwrap_or_default()),
                        _ => None,
                    };
                    deliver(Delivery { message, recv_ns, decoded, view });
                }
                Err(e) => {
                    let n = metrics.messages_malformed.fetch_add(1, Ordering::Relaxed);
                    if n < 5 || n % 1000 == 0 {
                        tracing::warn!("malformed message on the video link ({} so far): {e}", n + 1);
                    }
                }
            }
        }
    }
}
