//! JPEG on the video link: a fixed ladder of (scale, JPEG quality) tiers, best first, what
//! each tier's frames cost in bytes, the encoder that makes them, and [`JpegCodec`], the
//! ladder as a [`StreamCodec`]. One encode per tier per frame, shared by every viewer on that
//! tier; every frame stands alone, so each session skips frames on its own.

use super::codec::{Batch, Encoded, StreamCodec, Unit};
use super::picture::{downscale_bgr, SourceImage};
use super::session::{Session, SessionRules};
use crate::config::LinkSection;
use std::sync::Arc;

/// One rung of the ladder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tier {
    /// Fraction of the ring's width and height.
    pub scale: f64,
    pub quality: u8,
}

/// The default rungs before the configured bounds clip them: first JPEG quality falls, then
/// the frame shrinks (at low rates a smaller, better-quantised picture looks better than a
/// full-size blocky one).
const RUNGS: [(f64, u8); 9] =
    [(1.0, 80), (1.0, 60), (0.75, 60), (0.75, 45), (0.5, 60), (0.5, 45), (0.5, 30), (0.375, 40), (0.25, 40)];

/// The ladder and what its tiers cost.
#[derive(Debug)]
pub struct Ladder {
    tiers: Vec<Tier>,
    width: u32,
    height: u32,
    /// Measured bytes / modelled bytes, per tier (None until measured), and over all tiers.
    ratio: Vec<Option<f64>>,
    global_ratio: f64,
}

impl Ladder {
    /// The rungs inside the configured quality and scale bounds (qualities clamped), best
    /// first; never empty.
    pub fn new(config: &LinkSection, width: u32, height: u32) -> Self {
        let mut tiers: Vec<Tier> = Vec::new();
        let top = Tier { scale: config.scale_max, quality: config.quality_max };
        for (scale, quality) in RUNGS {
            if scale > config.scale_max + 1e-9 || scale < config.scale_min - 1e-9 {
                continue;
            }
            let quality = quality.clamp(config.quality_min, config.quality_max);
            let tier = Tier { scale, quality };
            if !tiers.contains(&tier) {
                tiers.push(tier);
            }
        }
        // The configured best and smallest are always on the ladder.
        if tiers.first() != Some(&top) {
            tiers.insert(0, top);
        }
        let bottom = Tier { scale: config.scale_min, quality: config.quality_min };
        if tiers.last() != Some(&bottom) && !tiers.contains(&bottom) {
            tiers.push(bottom);
        }
        let n = tiers.len();
        Self { tiers, width, height, ratio: vec![None; n], global_ratio: 1.0 }
    }

    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    pub fn tier(&self, index: usize) -> Tier {
        self.tiers[index.min(self.tiers.len() - 1)]
    }

    /// Pixel size of a tier's frames (even, at least 16x16).
    pub fn size_of(&self, index: usize) -> (u32, u32) {
        let s = self.tier(index).scale;
        let side = |full: u32| ((f64::from(full) * s / 2.0).round() as u32 * 2).clamp(16, full.max(16));
        if s >= 1.0 {
            (self.width, self.height)
        } else {
            (side(self.width), side(self.height))
        }
    }

    /// A rough JPEG size model (bits per pixel grow with quality); measurements correct it.
    fn model_bytes(&self, index: usize) -> f64 {
        let (w, h) = self.size_of(index);
        let q = f64::from(self.tier(index).quality) / 100.0;
        f64::from(w) * f64::from(h) * (0.15 + 2.0 * q * q) / 8.0
    }

    /// Expected bytes of a frame of this tier.
    pub fn expected_bytes(&self, index: usize) -> f64 {
        self.model_bytes(index) * self.ratio[index.min(self.len() - 1)].unwrap_or(self.global_ratio)
    }

    /// Learns from one encoded frame.
    pub fn observe(&mut self, index: usize, bytes: usize) {
        let r = bytes as f64 / self.model_bytes(index);
        let slot = &mut self.ratio[index.min(self.tiers.len() - 1)];
        *slot = Some(slot.map_or(r, |old| old * 0.8 + r * 0.2));
        self.global_ratio = self.global_ratio * 0.9 + r * 0.1;
    }

    /// The best tier whose frames are expected to fit `budget_bytes`; the last if none does.
    pub fn choose(&self, budget_bytes: f64) -> usize {
        (0..self.len()).find(|&i| self.expected_bytes(i) <= budget_bytes).unwrap_or(self.len() - 1)
    }
}

/// turbojpeg, 4:2:0, with a box-filter downscale for tiers below full size.
pub struct JpegEncoder {
    compressor: turbojpeg::Compressor,
    scaled: Vec<u8>,
}

impl std::fmt::Debug for JpegEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JpegEncoder").finish_non_exhaustive()
    }
}

impl JpegEncoder {
    pub fn new() -> anyhow::Result<Self> {
        let mut compressor = turbojpeg::Compressor::new()?;
        compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2)?;
        Ok(Self { compressor, scaled: Vec::new() })
    }
}

impl JpegEncoder {
    /// Encodes `image` as tier `index` of `ladder`.
    pub fn encode(
        &mut self,
        image: SourceImage<'_>,
        ladder: &Ladder,
        index: usize,
    ) -> anyhow::Result<Encoded> {
        let started = std::time::Instant::now();
        let tier = ladder.tier(index);
        let (width, height) = ladder.size_of(index);
        let view = if (width, height) == (image.width, image.height) {
            image
        } else {
            downscale_bgr(image, width, height, &mut self.scaled);
            SourceImage { pixels: &self.scaled, width, height, stride: width * 3 }
        };
        self.compressor.set_quality(i32::from(tier.quality))?;
        let bytes = self.compressor.compress_to_vec(turbojpeg::Image {
            pixels: view.pixels,
            width: view.width as usize,
            pitch: view.stride as usize,
            height: view.height as usize,
            format: turbojpeg::PixelFormat::BGR,
        })?;
        let encode_us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        Ok(Encoded {
            bytes,
            width,
            height,
            quality: tier.quality,
            encode_us,
            codec: ads_protocol::CODEC_JPEG,
            keyframe: true,
        })
    }
}

/// The JPEG ladder as a codec of the link.
#[derive(Debug)]
pub struct JpegCodec {
    ladder: Ladder,
    encoder: JpegEncoder,
}

impl JpegCodec {
    pub fn new(config: &LinkSection, (width, height): (u32, u32)) -> anyhow::Result<Self> {
        Ok(Self { ladder: Ladder::new(config, width, height), encoder: JpegEncoder::new()? })
    }
}

impl StreamCodec for JpegCodec {
    fn name(&self) -> &'static str {
        ads_protocol::CODEC_JPEG
    }

    fn join(&mut self, _identity: &[u8]) {}

    fn leave(&mut self, _identity: &[u8]) {}

    fn want(
        &mut self,
        _identity: &[u8],
        session: &mut Session,
        rules: &SessionRules,
        now_ns: u64,
    ) -> Option<usize> {
        session.want(rules, &self.ladder, now_ns).map(|want| want.tier)
    }

    fn encode(&mut self, image: SourceImage<'_>, takers: &[(Vec<u8>, usize)], _now_ns: u64) -> Batch {
        let mut tiers: Vec<usize> = takers.iter().map(|&(_, t)| t).collect();
        tiers.sort_unstable();
        tiers.dedup();
        let mut batch = Batch::default();
        for tier in tiers {
            match self.encoder.encode(image, &self.ladder, tier) {
                Ok(encoded) => {
                    batch.encode_us += u64::from(encoded.encode_us);
                    batch.encodes += 1;
                    self.ladder.observe(tier, encoded.bytes.len());
                    let encoded = Arc::new(encoded);
                    let on_tier = takers.iter().filter(|&&(_, t)| t == tier);
                    batch.units.extend(on_tier.map(|(identity, _)| Unit {
                        identity: identity.clone(),
                        tier,
                        encoded: Arc::clone(&encoded),
                    }));
                }
                Err(e) => tracing::warn!("encoding tier {tier}: {e}"),
            }
        }
        batch
    }

    fn missed(&mut self, _identity: &[u8]) {}

    fn request_keyframe(&mut self, _identity: &[u8], _now_ns: u64) -> bool {
        false
    }

    fn encoder_bps(&self, _tier: usize) -> f64 {
        0.0
    }

    fn goodput_bps(&self, session: &Session) -> f64 {
        session.estimate_bps()
    }

    fn describe(
        &self,
        _identity: &[u8],
        session: &Session,
        rules: &SessionRules,
        now_ns: u64,
        view: &mut ads_protocol::ViewerLink,
    ) {
        let (width, height) = self.ladder.size_of(session.tier);
        view.codec = ads_protocol::CODEC_JPEG.into();
        view.tier = u8::try_from(session.tier).unwrap_or(u8::MAX);
        (view.width, view.height) = (width, height);
        view.quality = self.ladder.tier(session.tier).quality;
        view.goodput_kbps = (session.estimate_bps() / 1000.0) as u32;
        view.reduced = session.reduced(rules, now_ns);
    }

    fn report(&self, _state: &mut ads_protocol::LinkState) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_respects_the_bounds_and_goes_from_best_to_smallest() {
        let config = LinkSection::default();
        let ladder = Ladder::new(&config, 800, 600);
        assert_eq!(ladder.tier(0), Tier { scale: 1.0, quality: 80 });
        assert_eq!(ladder.size_of(0), (800, 600));
        assert_eq!(ladder.size_of(ladder.len() - 1), (200, 150));
        for i in 1..ladder.len() {
            assert!(ladder.expected_bytes(i) < ladder.expected_bytes(i - 1), "tier {i} is not smaller");
        }
        let narrow = LinkSection { quality_max: 50, quality_min: 40, scale_min: 0.5, ..config };
        let ladder = Ladder::new(&narrow, 800, 600);
        assert!((0..ladder.len()).all(|i| (40..=50).contains(&ladder.tier(i).quality)));
        assert!((0..ladder.len()).all(|i| ladder.tier(i).scale >= 0.5));
        assert_eq!(ladder.tier(0).quality, 50);
    }

    #[test]
    fn choosing_a_tier_follows_the_measured_sizes() {
        let mut ladder = Ladder::new(&LinkSection::default(), 800, 600);
        let best = ladder.expected_bytes(0);
        assert_eq!(ladder.choose(best * 2.0), 0);
        assert_eq!(ladder.choose(1.0), ladder.len() - 1, "nothing fits: the smallest");
        // Frames turn out four times larger than modelled: a budget of the model's best size
        // now buys a lower tier.
        for i in 0..ladder.len() {
            ladder.observe(i, (ladder.model_bytes(i) * 4.0) as usize);
            ladder.observe(i, (ladder.model_bytes(i) * 4.0) as usize);
        }
        assert!(ladder.choose(best) > 0);
    }

    /// The box filter as it was (one division per channel per pixel): the reference.
    fn downscale_by_division(src: SourceImage<'_>, width: u32, height: u32) -> Vec<u8> {
        let (sw, sh, stride) = (src.width as usize, src.height as usize, src.stride as usize);
        let (w, h) = (width as usize, height as usize);
        let spans = |dst: usize, full: usize| -> Vec<(usize, usize)> {
            (0..dst)
                .map(|i| (i * full / dst, ((i + 1) * full / dst).max(i * full / dst + 1).min(full)))
                .collect()
        };
        let mut out = vec![0u8; w * h * 3];
        for (y, &(y0, y1)) in spans(h, sh).iter().enumerate() {
            for (x, &(x0, x1)) in spans(w, sw).iter().enumerate() {
                for c in 0..3 {
                    let sum: u32 = (y0..y1)
                        .flat_map(|sy| (x0..x1).map(move |sx| (sy, sx)))
                        .map(|(sy, sx)| u32::from(src.pixels[sy * stride + sx * 3 + c]))
                        .sum();
                    let n = ((x1 - x0) * (y1 - y0)) as u32;
                    out[(y * w + x) * 3 + c] = ((sum + n / 2) / n) as u8;
                }
            }
        }
        out
    }

    #[test]
    fn the_fast_downscale_equals_the_division_one_byte_for_byte() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut byte = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        };
        let ladder = Ladder::new(&LinkSection::default(), 800, 600);
        let mut cases: Vec<(u32, u32, u32, u32)> =
            (0..ladder.len()).map(|i| ladder.size_of(i)).map(|(w, h)| (800, 600, w, h)).collect();
        // Odd sizes, a padded stride, and areas beyond the reciprocal table (150 x 150 px).
        cases.extend([(37, 23, 16, 16), (333, 201, 100, 67), (300, 300, 2, 2)]);
        for (sw, sh, w, h) in cases {
            let stride = sw * 3 + 5;
            for flat in [None, Some(255u8), Some(0)] {
                let pixels: Vec<u8> = (0..stride * sh).map(|_| flat.unwrap_or_else(&mut byte)).collect();
                let image = SourceImage { pixels: &pixels, width: sw, height: sh, stride };
                let mut out = Vec::new();
                downscale_bgr(image, w, h, &mut out);
                assert!(out == downscale_by_division(image, w, h), "{sw}x{sh} -> {w}x{h}, {flat:?}");
            }
        }
    }

    #[test]
    fn a_box_downscale_averages_and_keeps_flat_colours() {
        let (w, h) = (8u32, 4u32);
        let mut pixels = vec![0u8; (w * h * 3) as usize];
        for (i, px) in pixels.chunks_exact_mut(3).enumerate() {
            let x = i % w as usize;
            px.copy_from_slice(&if x % 2 == 0 { [0, 100, 200] } else { [100, 100, 100] });
        }
        let mut out = Vec::new();
        downscale_bgr(SourceImage { pixels: &pixels, width: w, height: h, stride: w * 3 }, 4, 2, &mut out);
        assert_eq!(out.len(), 4 * 2 * 3);
        assert!(out.chunks_exact(3).all(|px| px == [50, 100, 150]), "{out:?}");
        let mut encoder = JpegEncoder::new().unwrap();
        let ladder = Ladder::new(&LinkSection::default(), 64, 48);
        let src = vec![128u8; 64 * 48 * 3];
        let image = SourceImage { pixels: &src, width: 64, height: 48, stride: 64 * 3 };
        let last = ladder.len() - 1;
        let jpeg = encoder.encode(image, &ladder, last).unwrap();
        assert_eq!((jpeg.width, jpeg.height), ladder.size_of(last));
        assert_eq!(&jpeg.bytes[..2], &[0xff, 0xd8]);
    }
}
