//! H.264 on the video link: the H.264 tiers, one encoder ([`super::h264_encoder`]) per
//! (scale, bit rate) rung, shared by every viewer on it, as a [`StreamCodec`].
//!
//! A stateful codec cannot skip frames per viewer the way JPEG can: a viewer that misses one
//! access unit cannot decode the next ones. So a tier's encoder runs only on frames that all
//! its viewers take (a viewer that holds the tier back for longer than [`WAIT_FOR_PEERS_NS`]
//! is left behind instead, and catches up at the next keyframe); a viewer that joins a tier,
//! missed a frame or asks for one gets a keyframe (IDR with SPS and PPS in front), the next
//! one the tier is allowed ([`KEY_INTERVAL_NS`]). No periodic keyframes by default: the link
//! is reliable, and each one is several frames of airtime in front of the state.

use super::codec::{Batch, Encoded, StreamCodec, Unit};
use super::h264_encoder::{EncoderFactory, StreamSpec, VideoEncoder};
use super::picture::{downscale_bgr, SourceImage};
use super::session::{Session, SessionRules};
use crate::config::H264Section;
use std::collections::HashMap;
use std::sync::Arc;

/// How long viewers of a tier wait for a peer without a credit before the frame goes out
/// without it.
pub const WAIT_FOR_PEERS_NS: u64 = 100_000_000;
/// Every move between tiers costs a keyframe (another encoder), several frames' worth on a
/// slow link, so a session moves up only when its rate carries the better tier with this
/// margin, and no sooner than this after any move...
const UPGRADE_MARGIN: f64 = 1.15;
const UPGRADE_INTERVAL_NS: u64 = 4_000_000_000;
/// ...and down only when its rate is below this share of its tier's (a tier's rate control
/// undershoots it, and a late frame has cut the rate already).
const DOWNGRADE_SHARE: f64 = 0.85;
/// Keyframes on one tier, at most one per this interval (2/s), whoever wants them: a
/// request, a newcomer, a viewer out of step or moving tiers. A client must not turn a shared
/// stream into all-intra; a viewer out of step waits for the tier's next allowed keyframe.
/// Each session's own requests count at most once per interval too.
pub const KEY_INTERVAL_NS: u64 = 500_000_000;

/// One rung of the H.264 ladder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct H264Rung {
    pub scale: f64,
    pub kbps: u32,
}

/// Bit rates and sizes, best first. At each rate the picture size that looks best on road
/// frames at 30 fps: full size down to ~1 Mbit/s, then smaller.
const RUNGS: [(f64, u32); 8] =
    [(1.0, 6000), (1.0, 3500), (1.0, 2000), (1.0, 1300), (0.75, 800), (0.75, 600), (0.5, 400), (0.375, 250)];

/// A viewer on the H.264 codec.
#[derive(Debug, Default)]
struct Member {
    /// The tier chosen for it now.
    tier: usize,
    /// The tier whose stream it is in step with (got every frame since a keyframe).
    in_step: Option<usize>,
    /// Since when it wanted a frame its tier did not send.
    waiting_since: Option<u64>,
    /// When it last moved to another tier.
    last_move_ns: Option<u64>,
    /// When its last keyframe request counted.
    last_request_ns: Option<u64>,
}

/// One tier's running stream.
struct Stream {
    encoder: Box<dyn VideoEncoder>,
    /// A member asked for a keyframe.
    key_wanted: bool,
    /// When its last keyframe was made.
    last_key_ns: Option<u64>,
}

/// The H.264 side of the link: its members, one stream per tier in use.
pub struct H264Tiers {
    config: H264Section,
    rungs: Vec<H264Rung>,
    width: u32,
    height: u32,
    fps: f32,
    factory: EncoderFactory,
    streams: HashMap<usize, Stream>,
    members: HashMap<Vec<u8>, Member>,
    scaled: Vec<u8>,
    packed: Vec<u8>,
    /// Keyframes sent, and requests for one that were honoured or folded into another.
    pub keyframes: u64,
    pub key_requests: u64,
    /// Pictures the encoders' rate control skipped.
    pub rate_skips: u64,
    /// How long the last frame's encodes took, µs.
    last_encode_us: u32,
}

impl std::fmt::Debug for H264Tiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Tiers").field("members", &self.members.len()).finish_non_exhaustive()
    }
}

impl H264Tiers {
    pub fn new(config: &H264Section, (width, height): (u32, u32), fps: f64, factory: EncoderFactory) -> Self {
        let rungs = RUNGS
            .iter()
            .map(|&(scale, kbps)| H264Rung { scale, kbps })
            .filter(|r| r.kbps <= config.max_kbps.max(250) && r.kbps >= config.min_kbps.min(6000))
            .collect::<Vec<_>>();
        let rungs = if rungs.is_empty() {
            vec![H264Rung { scale: 1.0, kbps: config.max_kbps.max(100) }]
        } else {
            rungs
        };
        Self {
            config: config.clone(),
            rungs,
            width,
            height,
            fps: fps as f32,
            factory,
            streams: HashMap::new(),
            members: HashMap::new(),
            scaled: Vec::new(),
            packed: Vec::new(),
            keyframes: 0,
            key_requests: 0,
            rate_skips: 0,
            last_encode_us: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Bounds of a viewer's stream rate, bit/s: the ladder's lowest rung, and its highest
    /// with the margin a move up needs (else the best rung could never be reached).
    pub fn bps_range(&self) -> (f64, f64) {
        let kbps = |r: &H264Rung| f64::from(r.kbps) * 1000.0;
        let low = self.rungs.iter().map(kbps).fold(f64::MAX, f64::min);
        let high = self.rungs.iter().map(kbps).fold(0.0, f64::max);
        (low, high * UPGRADE_MARGIN * 1.05)
    }

    /// Access units a viewer may have in flight (`h264.frames_in_flight`).
    pub fn frames_in_flight(&self) -> usize {
        self.config.frames_in_flight as usize
    }

    pub fn rung(&self, tier: usize) -> H264Rung {
        self.rungs[tier.min(self.rungs.len() - 1)]
    }

    /// Pixel size of a tier's pictures (even: 4:2:0 needs it).
    pub fn size_of(&self, tier: usize) -> (u32, u32) {
        let s = self.rung(tier).scale;
        let side = |full: u32| (((f64::from(full) * s / 2.0).round() as u32) * 2).clamp(16, full.max(16));
        (side(self.width) & !1, side(self.height) & !1)
    }

    /// Bytes a typical frame of the tier takes at the configured rate.
    pub fn frame_bytes(&self, tier: usize) -> f64 {
        f64::from(self.rung(tier).kbps) * 1000.0 / 8.0 / f64::from(self.fps.max(1.0))
    }

    /// The best tier a paced rate of `bps` carries.
    pub fn choose(&self, bps: f64) -> usize {
        (0..self.rungs.len())
            .find(|&i| f64::from(self.rungs[i].kbps) * 1000.0 <= bps)
            .unwrap_or(self.rungs.len() - 1)
    }

    pub fn is_member(&self, identity: &[u8]) -> bool {
        self.members.contains_key(identity)
    }

    /// Sets the tier a member should be on now (from its stream rate): down as soon as the
    /// rate is clearly below the tier's, up only with a margin and at most every
    /// [`UPGRADE_INTERVAL_NS`].
    pub fn plan(&mut self, identity: &[u8], bps: f64, now_ns: u64) -> usize {
        let fits = self.choose(bps / DOWNGRADE_SHARE);
        let margin = self.choose(bps / UPGRADE_MARGIN);
        let Some(m) = self.members.get_mut(identity) else { return fits };
        if fits > m.tier {
            m.tier = fits;
            m.last_move_ns = Some(now_ns);
        } else if margin < m.tier
            && m.last_move_ns.is_none_or(|t| now_ns.saturating_sub(t) >= UPGRADE_INTERVAL_NS)
        {
            m.tier = margin;
            m.last_move_ns = Some(now_ns);
        }
        let tier = m.tier;
        let in_use: Vec<usize> = self.members.values().map(|m| m.tier).collect();
        self.streams.retain(|t, _| in_use.contains(t));
        tier
    }

    pub fn tier_of(&self, identity: &[u8]) -> Option<usize> {
        self.members.get(identity).map(|m| m.tier)
    }

    /// The viewer cannot decode: its tier's next allowed keyframe is made. It stays in
    /// step (a request changes nothing else), so requests cannot force keyframes beyond
    /// [`KEY_INTERVAL_NS`]; one session's requests count once per interval.
    fn keyframe_wanted(&mut self, identity: &[u8], now_ns: u64) {
        let Some(member) = self.members.get_mut(identity) else { return };
        self.key_requests += 1;
        if member.last_request_ns.is_some_and(|t| now_ns.saturating_sub(t) < KEY_INTERVAL_NS) {
            return;
        }
        member.last_request_ns = Some(now_ns);
        if let Some(stream) = self.streams.get_mut(&member.tier) {
            stream.key_wanted = true;
        }
    }

    /// Whether `tier` may make a keyframe now (a new stream starts with one anyway).
    fn key_allowed(&self, tier: usize, now_ns: u64) -> bool {
        self.streams
            .get(&tier)
            .is_none_or(|s| s.last_key_ns.is_none_or(|t| now_ns.saturating_sub(t) >= KEY_INTERVAL_NS))
    }

    /// Encodes `image` for the tiers of `takers` (members that have room now) and says which
    /// takers get which access unit. A tier is encoded only when all its members take the
    /// frame, or one has waited for the others longer than [`WAIT_FOR_PEERS_NS`].
    pub fn encode_takers(
        &mut self,
        image: SourceImage<'_>,
        takers: &[Vec<u8>],
        now_ns: u64,
    ) -> Vec<(Vec<u8>, usize, Encoded)> {
        let mut tiers: Vec<usize> =
            takers.iter().filter_map(|id| self.members.get(id).map(|m| m.tier)).collect();
        tiers.sort_unstable();
        tiers.dedup();
        let mut out = Vec::new();
        for tier in tiers {
            let on_tier: Vec<&Vec<u8>> =
                self.members.iter().filter(|(_, m)| m.tier == tier).map(|(id, _)| id).collect();
            let taking: Vec<Vec<u8>> =
                on_tier.iter().filter(|id| takers.contains(id)).map(|id| (*id).clone()).collect();
            let everyone = taking.len() == on_tier.len();
            let waited_long = taking.iter().any(|id| {
                self.members[id].waiting_since.is_some_and(|t| now_ns.saturating_sub(t) >= WAIT_FOR_PEERS_NS)
            });
            if !everyone && !waited_long {
                for id in &taking {
                    let m = self.members.get_mut(id).expect("a member");
                    m.waiting_since.get_or_insert(now_ns);
                }
                continue;
            }
            let stragglers: Vec<Vec<u8>> =
                on_tier.iter().filter(|id| !takers.contains(id)).map(|id| (*id).clone()).collect();
            let out_of_step = taking.iter().any(|id| self.members[id].in_step != Some(tier));
            let asked = self.streams.get(&tier).is_some_and(|s| s.key_wanted);
            let key = (out_of_step || asked) && self.key_allowed(tier, now_ns);
            // Nobody could use a delta frame: wait for the next allowed keyframe.
            if !key && !taking.iter().any(|id| self.members[id].in_step == Some(tier)) {
                continue;
            }
            match self.encode_tier(image, tier, key, now_ns) {
                Ok(encoded) if encoded.bytes.is_empty() => {
                    // Skipped by the rate control: nobody is out of step.
                    self.rate_skips += 1;
                    for id in taking {
                        self.members.get_mut(&id).expect("a member").waiting_since = None;
                    }
                }
                Ok(encoded) => {
                    if encoded.keyframe {
                        self.keyframes += 1;
                    }
                    for id in &stragglers {
                        self.missed(id);
                    }
                    for id in taking {
                        let m = self.members.get_mut(&id).expect("a member");
                        m.waiting_since = None;
                        if m.in_step == Some(tier) || encoded.keyframe {
                            m.in_step = Some(tier);
                            out.push((id, tier, encoded.clone()));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("H.264 tier {tier}: {e}");
                    // A failed encoder is made afresh, starting with a keyframe.
                    self.streams.remove(&tier);
                    for id in taking {
                        self.missed(&id);
                    }
                }
            }
        }
        out
    }

    fn encode_tier(
        &mut self,
        image: SourceImage<'_>,
        tier: usize,
        key: bool,
        now_ns: u64,
    ) -> anyhow::Result<Encoded> {
        let started = std::time::Instant::now();
        let (width, height) = self.size_of(tier);
        if !self.streams.contains_key(&tier) {
            let spec = StreamSpec {
                width,
                height,
                bitrate_bps: self.rung(tier).kbps * 1000,
                fps: self.fps,
                gop_frames: self.config.keyframe_interval_frames,
            };
            let encoder = (self.factory)(spec)?;
            tracing::info!(
                tier,
                width,
                height,
                kbps = spec.bitrate_bps / 1000,
                encoder = encoder.name(),
                "H.264 stream started"
            );
            self.streams.insert(tier, Stream { encoder, key_wanted: false, last_key_ns: None });
        }
        let packed: &[u8] = if (width, height) != (image.width, image.height) {
            downscale_bgr(image, width, height, &mut self.scaled);
            &self.scaled
        } else if image.stride == image.width * 3 {
            image.pixels
        } else {
            self.packed.clear();
            for row in image.pixels.chunks(image.stride as usize).take(height as usize) {
                self.packed.extend_from_slice(&row[..(width * 3) as usize]);
            }
            &self.packed
        };
        let stream = self.streams.get_mut(&tier).expect("just made");
        let unit = stream.encoder.encode(packed, key, now_ns)?;
        if unit.keyframe {
            stream.key_wanted = false;
            stream.last_key_ns = Some(now_ns);
        }
        let encode_us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        Ok(Encoded {
            bytes: unit.bytes,
            width,
            height,
            quality: 0,
            encode_us,
            codec: ads_protocol::CODEC_H264,
            keyframe: unit.keyframe,
        })
    }
}

impl StreamCodec for H264Tiers {
    fn name(&self) -> &'static str {
        ads_protocol::CODEC_H264
    }

    fn join(&mut self, identity: &[u8]) {
        self.members.entry(identity.to_vec()).or_default();
    }

    fn leave(&mut self, identity: &[u8]) {
        self.members.remove(identity);
        let in_use: Vec<usize> = self.members.values().map(|m| m.tier).collect();
        // A tier nobody is on stops; its encoder is made afresh when someone comes back.
        self.streams.retain(|tier, _| in_use.contains(tier));
    }

    fn want(
        &mut self,
        identity: &[u8],
        session: &mut Session,
        rules: &SessionRules,
        now_ns: u64,
    ) -> Option<usize> {
        let tier = self.plan(identity, session.stream_bps(), now_ns);
        session.want_stream(rules, tier, self.frame_bytes(tier), now_ns).then_some(tier)
    }

    fn encode(&mut self, image: SourceImage<'_>, takers: &[(Vec<u8>, usize)], now_ns: u64) -> Batch {
        let started = std::time::Instant::now();
        let ids: Vec<Vec<u8>> = takers.iter().map(|(id, _)| id.clone()).collect();
        let out = self.encode_takers(image, &ids, now_ns);
        let mut batch = Batch::default();
        if out.is_empty() {
            return batch;
        }
        self.last_encode_us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        batch.encode_us = u64::from(self.last_encode_us);
        let mut shared: HashMap<usize, Arc<Encoded>> = HashMap::new();
        for (identity, tier, encoded) in out {
            let encoded = shared.entry(tier).or_insert_with(|| Arc::new(encoded));
            batch.units.push(Unit { identity, tier, encoded: Arc::clone(encoded) });
        }
        batch.encodes = shared.len();
        batch
    }

    fn missed(&mut self, identity: &[u8]) {
        if let Some(m) = self.members.get_mut(identity) {
            m.in_step = None;
        }
    }

    fn request_keyframe(&mut self, identity: &[u8], now_ns: u64) -> bool {
        self.keyframe_wanted(identity, now_ns);
        true
    }

    fn encoder_bps(&self, tier: usize) -> f64 {
        f64::from(self.rung(tier).kbps) * 1000.0
    }

    fn goodput_bps(&self, session: &Session) -> f64 {
        session.stream_link_bps()
    }

    fn describe(
        &self,
        identity: &[u8],
        session: &Session,
        _rules: &SessionRules,
        _now_ns: u64,
        view: &mut ads_protocol::ViewerLink,
    ) {
        let Some(tier) = self.tier_of(identity) else { return };
        let (width, height) = self.size_of(tier);
        view.codec = ads_protocol::CODEC_H264.into();
        view.tier = u8::try_from(tier).unwrap_or(u8::MAX);
        (view.width, view.height, view.quality) = (width, height, 0);
        view.reduced = tier > 0;
        view.goodput_kbps = (session.stream_link_bps() / 1000.0) as u32;
    }

    fn report(&self, state: &mut ads_protocol::LinkState) {
        state.h264_keyframes = self.keyframes;
        state.h264_key_requests = self.key_requests;
        state.h264_rate_skips = self.rate_skips;
        state.h264_encode_us = self.last_encode_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::video::h264_encoder::tests::road;
    use crate::video::h264_encoder::OpenH264Encoder;

    fn config() -> H264Section {
        H264Section::default()
    }

    #[test]
    fn viewers_share_a_tier_and_a_newcomer_starts_with_a_keyframe() {
        let mut tiers = H264Tiers::new(&config(), (160, 120), 30.0, OpenH264Encoder::boxed);
        let (a, b) = (b"a".to_vec(), b"b".to_vec());
        tiers.join(&a);
        tiers.plan(&a, 10e6, 0);
        let pixels = road(160, 120, 0);
        let image = SourceImage { pixels: &pixels, width: 160, height: 120, stride: 480 };
        let first = tiers.encode_takers(image, std::slice::from_ref(&a), 0);
        assert_eq!(first.len(), 1);
        assert!(first[0].2.keyframe);
        let second = tiers.encode_takers(image, std::slice::from_ref(&a), 33);
        assert!(!second[0].2.keyframe, "in step: a P frame");
        // b joins the same tier mid-stream: within the tier's keyframe limit it waits (a gets
        // a delta frame alone), then the tier's next allowed keyframe goes to both.
        tiers.join(&b);
        tiers.plan(&b, 10e6, 0);
        let early = tiers.encode_takers(image, &[a.clone(), b.clone()], 66);
        assert_eq!(early.len(), 1, "b waits for the tier's next allowed keyframe");
        assert!(!early[0].2.keyframe);
        let third = tiers.encode_takers(image, &[a.clone(), b.clone()], KEY_INTERVAL_NS);
        assert_eq!(third.len(), 2);
        assert!(third.iter().all(|(_, _, e)| e.keyframe));
        // b has no room: a waits for it, then goes on without it; b is then out of step and
        // gets nothing until a keyframe.
        let t = KEY_INTERVAL_NS + 33_000_000;
        assert!(tiers.encode_takers(image, std::slice::from_ref(&a), t).is_empty());
        let on = tiers.encode_takers(image, std::slice::from_ref(&a), t + WAIT_FOR_PEERS_NS);
        assert_eq!(on.len(), 1);
        let back = tiers.encode_takers(image, &[a.clone(), b.clone()], 2 * KEY_INTERVAL_NS);
        assert_eq!(back.len(), 2, "b's return forces the tier's next keyframe");
        assert!(back[0].2.keyframe);
        // Requests, however many, make no keyframe before the tier's interval is over, and
        // one afterwards; the requester stays in step meanwhile.
        let mut t = 2 * KEY_INTERVAL_NS;
        let mut keys = 0;
        for _ in 0..32 {
            t += 33_333_333;
            tiers.request_keyframe(&a, t);
            tiers.request_keyframe(&b, t);
            let out = tiers.encode_takers(image, &[a.clone(), b.clone()], t);
            assert_eq!(out.len(), 2, "the requesters still get every frame");
            keys += usize::from(out[0].2.keyframe);
        }
        assert_eq!(keys, 2, "one keyframe per {KEY_INTERVAL_NS} ns over 1.07 s of requests");
        let t = t + KEY_INTERVAL_NS;
        // A slow viewer gets a lower tier of its own.
        tiers.plan(&b, 300_000.0, t);
        let split = tiers.encode_takers(image, &[a.clone(), b.clone()], t);
        let sizes: Vec<(u32, u32)> = split.iter().map(|(_, _, e)| (e.width, e.height)).collect();
        assert!(sizes.contains(&(160, 120)) && sizes.iter().any(|&(w, _)| w < 160), "{sizes:?}");
    }
}
