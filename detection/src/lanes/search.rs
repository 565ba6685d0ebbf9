//! Collecting each line's pixels from the bird's-eye mask: sliding windows along a guide
//! curve, or a band around last frame's line.

use super::fit::Poly;
use super::warp::BirdsEye;

/// The binary bird's-eye mask as bytes (non-zero = paint), row-major and packed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskView<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) width: usize,
    pub(crate) height: usize,
}

impl MaskView<'_> {
    /// Appends the paint pixels of row `row` in columns `lo..=hi` (clamped) to `out` as ground
    /// points, and returns how many there were and the sum of their columns.
    pub(crate) fn collect(
        &self,
        row: usize,
        lo: f64,
        hi: f64,
        eye: &BirdsEye,
        out: &mut Vec<(f32, f32)>,
    ) -> (u32, f64) {
        let lo = lo.ceil().max(0.0) as usize;
        let hi = (hi.floor() + 1.0).clamp(0.0, self.width as f64) as usize;
        if lo >= hi {
            return (0, 0.0);
        }
        let y = eye.row_to_y(row as f64) as f32;
        let line = &self.data[row * self.width..(row + 1) * self.width];
        let (mut n, mut sum) = (0, 0.0);
        for (col, _) in line[lo..hi].iter().enumerate().filter(|(_, &b)| b != 0) {
            let col = (lo + col) as f64;
            out.push((eye.col_to_x(col) as f32, y));
            n += 1;
            sum += col;
        }
        (n, sum)
    }
}

/// Sliding windows from the near edge outwards along `guide` (a line's expected shape, from
/// the lane-shape histogram). A window with enough paint re-centres on it and carries the
/// correction to the next window; an empty one (a gap between dashes) keeps to the guide, so
/// dashed lines on curves are followed rather than lost.
#[derive(Debug)]
pub(crate) struct Windows {
    pub(crate) count: usize,
    pub(crate) margin_px: f64,
    pub(crate) min_pixels: u32,
}

impl Windows {
    pub(crate) fn run(&self, mask: MaskView<'_>, eye: &BirdsEye, guide: &Poly, out: &mut Vec<(f32, f32)>) {
        out.clear();
        let count = self.count.max(1);
        let height = mask.height / count;
        if height == 0 {
            return;
        }
        // Columns the found paint lies off the guide, carried from window to window.
        let mut correction = 0.0;
        for k in 0..count {
            let bottom = mask.height - k * height;
            let mid_row = (bottom - height / 2) as f64;
            let x = eye.x_to_col(guide.x(eye.row_to_y(mid_row))) + correction;
            if x + self.margin_px < 0.0 || x - self.margin_px > mask.width as f64 {
                continue;
            }
            let (mut n, mut sum) = (0, 0.0);
            let mark = out.len();
            for row in bottom - height..bottom {
                let (rn, rs) = mask.collect(row, x - self.margin_px, x + self.margin_px, eye, out);
                n += rn;
                sum += rs;
            }
            if n >= self.min_pixels {
                correction += sum / f64::from(n) - x;
            } else {
                // A few stray pixels in a gap are noise, not line.
                out.truncate(mark);
            }
        }
    }
}

/// Collects the pixels within `margin_px` of `prior` (a line from the previous frame).
pub(crate) fn around(
    mask: MaskView<'_>,
    eye: &BirdsEye,
    prior: &Poly,
    margin_px: f64,
    out: &mut Vec<(f32, f32)>,
) {
    out.clear();
    for row in 0..mask.height {
        let x = eye.x_to_col(prior.x(eye.row_to_y(row as f64)));
        mask.collect(row, x - margin_px, x + margin_px, eye, out);
    }
}
