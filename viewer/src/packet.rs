//! The bottom of the viewer's video path, depended on by the link, the hub, the H.264 decode
//! and the websockets alike (and depending on none of them): the frame packet every client
//! reads, the H.264 unit forwarded to browsers, and the wish for a keyframe.

use crate::overlay::Overlay;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// JPEGs made here from decoded H.264 pictures (for `/metrics`): only when someone wants one.
pub static JPEG_ENCODES: AtomicU64 = AtomicU64::new(0);

/// A decoded picture, packed RGB.
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// A frame's picture as JPEG: as received, or made from a decoded H.264 picture the first
/// time a JPEG consumer (a browser without WebCodecs, `/snapshot.jpg`, `/stream.mjpg`, a
/// recording) asks, never for frames nobody wants as JPEG.
#[derive(Debug)]
pub struct Jpeg {
    bytes: OnceLock<Vec<u8>>,
    picture: Option<(Picture, u8)>,
}

impl Jpeg {
    pub fn ready(bytes: Vec<u8>) -> Arc<Self> {
        Arc::new(Self { bytes: OnceLock::from(bytes), picture: None })
    }

    /// Made from `picture` at `quality` when first asked for.
    pub fn from_picture(picture: Picture, quality: u8) -> Arc<Self> {
        Arc::new(Self { bytes: OnceLock::new(), picture: Some((picture, quality)) })
    }

    /// The JPEG (empty if the picture could not be compressed: logged).
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get_or_init(|| {
            let Some((picture, quality)) = &self.picture else { return Vec::new() };
            JPEG_ENCODES.fetch_add(1, Ordering::Relaxed);
            let image = turbojpeg::Image {
                pixels: picture.rgb.as_slice(),
                width: picture.width as usize,
                pitch: picture.width as usize * 3,
                height: picture.height as usize,
                format: turbojpeg::PixelFormat::RGB,
            };
            turbojpeg::compress(image, i32::from(*quality), turbojpeg::Subsamp::Sub2x2)
                .map(|jpeg| jpeg.to_vec())
                .unwrap_or_else(|e| {
                    tracing::warn!("JPEG of a decoded H.264 picture: {e}");
                    Vec::new()
                })
        })
    }
}

/// The wall clock, ns since the epoch (what the vehicle stamps its messages with).
pub fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// An access unit as the browsers get it (already decoded here once, so known to be sound).
#[derive(Debug, Clone)]
pub struct ForwardUnit {
    pub bytes: Vec<u8>,
    pub keyframe: bool,
}

/// A frame ready to send: JPEG as received, overlay computed here.
#[derive(Debug)]
pub struct FramePacket {
    /// Counts packets the hub published; a client that sees a gap skipped frames.
    pub packet_seq: u64,
    pub frame_id: u64,
    pub capture_ns: u64,
    pub recv_ns: u64,
    /// The picture as JPEG: as received, or made here from the decoded H.264 picture.
    pub jpeg: Arc<Jpeg>,
    /// The H.264 access unit it came as.
    pub h264: Option<ForwardUnit>,
    pub overlay: Overlay,
    /// `overlay` as JSON, serialised once for all clients.
    pub overlay_json: String,
}

/// Someone (this viewer's decoder, a browser's) needs an H.264 keyframe; the link thread
/// takes the wish and asks the vehicle, rate-limited.
#[derive(Debug, Default)]
pub struct KeyframeWish(AtomicBool);

impl KeyframeWish {
    pub fn want(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a keyframe was asked for since the last call.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// What the viewer made of a sound H.264 access unit.
#[derive(Debug)]
pub struct DecodedUnit {
    pub unit: ForwardUnit,
    /// The decoded picture as JPEG, for every JPEG consumer (made when first wanted).
    pub jpeg: Arc<Jpeg>,
}
