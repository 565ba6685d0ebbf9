//! The bottom of the viewer's video path, depended on by the link, the hub, the H.264 decode
//! and the websockets alike (and depending on none of them): the frame packet every client
//! reads, the H.264 unit forwarded to browsers, and the wish for a keyframe.

use crate::overlay::Overlay;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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
    pub jpeg: Vec<u8>,
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
    /// The decoded picture as JPEG, for every JPEG consumer.
    pub jpeg: Vec<u8>,
}
