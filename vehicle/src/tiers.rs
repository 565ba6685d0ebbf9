//! Quality tiers of the video: a fixed ladder of (scale, JPEG quality), best first, what each
//! tier's frames cost in bytes, and the encoder that makes them. One encode per tier per frame,
//! shared by every viewer on that tier.

use crate::config::LinkSection;

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

/// The frame as it lies in the ring: BGR, `stride` bytes per row.
#[derive(Debug, Clone, Copy)]
pub struct SourceImage<'a> {
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

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

/// A codec behind the tiers. JPEG today; a stateful codec (H.264) keeps one stream per tier.
pub trait TierEncoder: Send {
    /// The codec's name in a viewer's hello (`jpeg`).
    fn codec(&self) -> &'static str;
    /// Encodes `image` as tier `index` of `ladder`.
    fn encode(&mut self, image: SourceImage<'_>, ladder: &Ladder, index: usize) -> anyhow::Result<Encoded>;
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

impl TierEncoder for JpegEncoder {
    fn codec(&self) -> &'static str {
        ads_protocol::CODEC_JPEG
    }

    fn encode(&mut self, image: SourceImage<'_>, ladder: &Ladder, index: usize) -> anyhow::Result<Encoded> {
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

/// Area-average (box filter) downscale of a BGR image into `out` (packed, `width * 3` a row).
///
/// The source rows of an output row are summed first (a straight add the compiler
/// vectorises), then each output pixel's columns, and the rounded mean is a multiply by a
/// reciprocal, not a division: three integer divisions per output pixel were most of the
/// ~2 ms this took per 800x600 frame, which made a reduced tier cost the vehicle more CPU
/// than the full one (docs/benchmarks.md, "What each change cost").
pub fn downscale_bgr(src: SourceImage<'_>, width: u32, height: u32, out: &mut Vec<u8>) {
    let (sw, sh, stride) = (src.width as usize, src.height as usize, src.stride as usize);
    let (w, h) = (width as usize, height as usize);
    let spans = |dst: usize, full: usize| -> Vec<(usize, usize)> {
        (0..dst).map(|i| (i * full / dst, ((i + 1) * full / dst).max(i * full / dst + 1).min(full))).collect()
    };
    let (cols, rows) = (spans(w, sw), spans(h, sh));
    let widest = cols.iter().map(|&(x0, x1)| x1 - x0).max().unwrap_or(1);
    let tallest = rows.iter().map(|&(y0, y1)| y1 - y0).max().unwrap_or(1);
    let mean = RoundedMean::up_to(widest * tallest);
    out.clear();
    out.resize(w * h * 3, 0);
    let mut acc = vec![0u32; sw * 3];
    for (y, &(y0, y1)) in rows.iter().enumerate() {
        acc.fill(0);
        for sy in y0..y1 {
            let row = &src.pixels[sy * stride..sy * stride + sw * 3];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += u32::from(p);
            }
        }
        let line = &mut out[y * w * 3..(y + 1) * w * 3];
        for (px, &(x0, x1)) in line.chunks_exact_mut(3).zip(&cols) {
            let span = &acc[x0 * 3..x1 * 3];
            // Spans of one and two columns (scales 0.75 and 0.5) without a loop.
            let (b, g, r) = match *span {
                [b, g, r] => (b, g, r),
                [b0, g0, r0, b1, g1, r1] => (b0 + b1, g0 + g1, r0 + r1),
                _ => span.chunks_exact(3).fold((0, 0, 0), |(b, g, r), s| (b + s[0], g + s[1], r + s[2])),
            };
            let n = (x1 - x0) * (y1 - y0);
            px[0] = mean.of(b, n);
            px[1] = mean.of(g, n);
            px[2] = mean.of(r, n);
        }
    }
}

/// `(sum + n / 2) / n` for sums of `n` bytes, as a multiply and a shift: with
/// `m = ⌊2³²/n⌋ + 1`, `⌊a·m / 2³²⌋ = ⌊a/n⌋` while `a·(m·n − 2³²) < 2³²`, which holds for
/// every `a < 256·n` when `256·n·(n − 1) < 2³²`, i.e. `n ≤ 4096` (larger areas divide).
struct RoundedMean {
    reciprocal: Vec<u64>,
}

impl RoundedMean {
    const EXACT_UP_TO: usize = 4096;

    fn up_to(n_max: usize) -> Self {
        let len = n_max.min(Self::EXACT_UP_TO) + 1;
        Self {
            reciprocal: (0..len as u64).map(|n| (1u64 << 32).checked_div(n).map_or(0, |q| q + 1)).collect(),
        }
    }

    #[inline]
    fn of(&self, sum: u32, n: usize) -> u8 {
        let a = u64::from(sum) + (n as u64) / 2;
        match self.reciprocal.get(n) {
            Some(&m) if n > 0 => ((a * m) >> 32) as u8,
            _ => (a / n as u64) as u8,
        }
    }
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
