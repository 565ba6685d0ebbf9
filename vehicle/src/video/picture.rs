//! The picture a codec starts from, and the downscale every codec's smaller tiers share.

/// The frame as it lies in the ring: BGR, `stride` bytes per row.
#[derive(Debug, Clone, Copy)]
pub struct SourceImage<'a> {
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub stride: u32,
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
