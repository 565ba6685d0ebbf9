//! What a codec on the video link does for the link: it says whether a session takes the
//! frame offered now (and on which tier), encodes the frame once per tier its takers are on,
//! and hears of sessions leaving and frames they missed. The JPEG ladder ([`super::jpeg`])
//! and the H.264 rungs ([`super::h264`]) both stand behind it, so the link offers a frame in
//! one loop whatever its sessions speak.

use super::picture::SourceImage;
use super::session::{Session, SessionRules};
use ads_protocol::ViewerLink;
use std::sync::Arc;

/// One encoded frame of a tier.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub quality: u8,
    pub encode_us: u32,
    /// `jpeg` or `h264` (the frame's codec field).
    pub codec: &'static str,
    /// Decodable on its own (every JPEG; an H.264 IDR).
    pub keyframe: bool,
}

/// One encoded frame for one session.
#[derive(Debug, Clone)]
pub struct Unit {
    pub identity: Vec<u8>,
    pub tier: usize,
    /// Shared by every session on the tier.
    pub encoded: Arc<Encoded>,
}

/// What one offer encoded.
#[derive(Debug, Default)]
pub struct Batch {
    pub units: Vec<Unit>,
    /// Encoder time spent on it, µs.
    pub encode_us: u64,
    /// Encodes made (one per tier).
    pub encodes: usize,
}

/// A codec behind the video link, with its tiers and its sessions' place on them.
pub trait StreamCodec: Send {
    /// The codec's name in a hello (`jpeg`, `h264`).
    fn name(&self) -> &'static str;
    /// A session chose this codec.
    fn join(&mut self, identity: &[u8]);
    /// A session is gone or chose another codec.
    fn leave(&mut self, identity: &[u8]);
    /// Whether `session` takes a frame offered now, and on which tier (counts a skip in the
    /// session when it does not).
    fn want(
        &mut self,
        identity: &[u8],
        session: &mut Session,
        rules: &SessionRules,
        now_ns: u64,
    ) -> Option<usize>;
    /// Encodes `image` for `takers` (identity, tier): one encode per tier, shared.
    fn encode(&mut self, image: SourceImage<'_>, takers: &[(Vec<u8>, usize)], now_ns: u64) -> Batch;
    /// A frame encoded for this session did not reach it (torn in the ring, pipe full).
    fn missed(&mut self, identity: &[u8]);
    /// The session asks for a keyframe; `false`: this codec has none to give (JPEG).
    fn request_keyframe(&mut self, identity: &[u8], now_ns: u64) -> bool;
    /// The bit rate a tier's encoder is set to, bit/s (0: sized per frame, JPEG).
    fn encoder_bps(&self, tier: usize) -> f64;
    /// The goodput a frame's `goodput_kbps` reports for `session`, bit/s.
    fn goodput_bps(&self, session: &Session) -> f64;
    /// Fills in the codec's part of a session's `state.link` entry.
    fn describe(
        &self,
        identity: &[u8],
        session: &Session,
        rules: &SessionRules,
        now_ns: u64,
        view: &mut ViewerLink,
    );
    /// Fills in the codec's totals of `state.link`.
    fn report(&self, state: &mut ads_protocol::LinkState);
}
