//! Where the lines are when nothing is known yet: a column histogram of the mask, sheared
//! along candidate lane shapes.
//!
//! A plain column histogram of the near road finds straight lines but smears a line that
//! curves or runs at an angle, and a dashed line may have no paint in the band at all. Lane
//! lines are parallel, so every line of the road follows one shape `x = a·y² + b·y + c`, each
//! with its own `c`. Shearing the histogram by a candidate shape (histogramming `x − a·y² −
//! b·y`) collapses every line, dashes included, into a sharp peak exactly when the candidate is
//! right. The shape with the sharpest histogram wins (coarse grid, then finer around the best),
//! and its peaks are the lines: a Hough transform restricted to the lane model.

use super::fit::Poly;
use super::search::MaskView;
use super::warp::BirdsEye;

/// Histogram bin (m): about a line's width.
const BIN_M: f64 = 0.1;
/// Lateral extent of the histogram (m either side of the car).
const HALF_WIDTH_M: f64 = 8.0;
/// Candidate headings (dx/dy) and curvature terms `a` (1/m): ±0.35 rad and radii down to 33 m.
const MAX_B: f64 = 0.35;
const MAX_A: f64 = 0.015;
/// Grid steps of the first pass; each refinement pass divides them by `REFINE`.
const COARSE: (f64, f64) = (0.05, 0.0025);
const REFINE: f64 = 4.0;
/// At most this many paint pixels vote (evenly thinned beyond it): bounds the cost on a
/// cluttered frame.
const MAX_VOTERS: usize = 6000;

/// The best shape and the lines found along it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Guides {
    pub(crate) left: Option<Poly>,
    pub(crate) right: Option<Poly>,
}

/// Reused buffers.
#[derive(Debug, Default)]
pub(crate) struct ShapeHistogram {
    /// (x, y − near edge, weight) of each voting pixel.
    voters: Vec<(f32, f32, f32)>,
    bins: Vec<f32>,
    smooth: Vec<f32>,
}

impl ShapeHistogram {
    /// Finds the lane shape and the nearest line on each side of the car (at y = 0) with at
    /// least a fifth of the strongest line's votes, within `reach` m of the car.
    pub(crate) fn guides(
        &mut self,
        mask: MaskView<'_>,
        eye: &BirdsEye,
        near: f64,
        depth: f64,
        reach: f64,
        weight: impl Fn(f64) -> f64,
    ) -> Guides {
        self.collect(mask, eye, near, depth, &weight);
        let nbins = (2.0 * HALF_WIDTH_M / BIN_M) as usize;
        self.bins.resize(nbins, 0.0);
        let (mut best, mut step) = ((0.0, 0.0), COARSE);
        let mut span = (MAX_B, MAX_A);
        for _ in 0..3 {
            let mut top = (f32::MIN, best);
            let nb = (span.0 / step.0).round() as i32;
            let na = (span.1 / step.1).round() as i32;
            for ib in -nb..=nb {
                for ia in -na..=na {
                    let shape = (best.0 + f64::from(ib) * step.0, best.1 + f64::from(ia) * step.1);
                    let score = self.score(shape);
                    if score > top.0 {
                        top = (score, shape);
                    }
                }
            }
            best = top.1;
            span = (step.0, step.1);
            step = (step.0 / REFINE, step.1 / REFINE);
        }
        self.fill(best);
        self.lines(best, near, reach)
    }

    /// The partner of a found `line`: the strongest histogram peak, along the line's own
    /// shape, between `from` and `to` m from it (signed, + = right). Lane widths vary (2.7 to
    /// 4 m on real roads), so a search a fixed width away would miss narrow and wide lanes.
    #[allow(clippy::too_many_arguments, reason = "one call site, every argument a different quantity")]
    pub(crate) fn partner(
        &mut self,
        mask: MaskView<'_>,
        eye: &BirdsEye,
        near: f64,
        depth: f64,
        line: &super::fit::Poly,
        (from, to): (f64, f64),
        weight: impl Fn(f64) -> f64,
    ) -> Option<Poly> {
        self.collect(mask, eye, near, depth, &weight);
        // Votes as offsets from the line itself: the sheared histogram for its exact shape.
        for v in &mut self.voters {
            v.0 -= line.x(f64::from(v.1) + near) as f32;
            v.1 = 0.0;
        }
        let nbins = (2.0 * HALF_WIDTH_M / BIN_M) as usize;
        self.bins.resize(nbins, 0.0);
        self.fill((0.0, 0.0));
        let n = self.bins.len();
        let bin_of = |x: f64| ((x + HALF_WIDTH_M) / BIN_M).floor().clamp(0.0, (n - 1) as f64) as usize;
        let (lo, hi) = (bin_of(from.min(to)), bin_of(from.max(to)));
        // Three bins summed: a line's votes straddle bin edges.
        let sum3 = |i: usize| self.bins[i.saturating_sub(1)..(i + 2).min(n)].iter().sum::<f32>();
        let best = (lo..=hi).max_by(|&i, &j| sum3(i).total_cmp(&sum3(j)))?;
        (sum3(best) > 0.0).then(|| line.shifted((best as f64 + 0.5) * BIN_M - HALF_WIDTH_M))
    }

    /// Paint up to `depth` m beyond the near edge votes.
    fn collect(
        &mut self,
        mask: MaskView<'_>,
        eye: &BirdsEye,
        near: f64,
        depth: f64,
        weight: &impl Fn(f64) -> f64,
    ) {
        self.voters.clear();
        for row in (0..mask.height).rev() {
            let y = eye.row_to_y(row as f64);
            if y - near > depth {
                break;
            }
            let w = weight(y) as f32;
            let line = &mask.data[row * mask.width..(row + 1) * mask.width];
            for (col, _) in line.iter().enumerate().filter(|(_, &b)| b != 0) {
                self.voters.push((eye.col_to_x(col as f64) as f32, (y - near) as f32, w));
            }
        }
        if self.voters.len() > MAX_VOTERS {
            let keep = self.voters.len().div_ceil(MAX_VOTERS);
            let mut i = 0;
            self.voters.retain(|_| {
                i += 1;
                i % keep == 0
            });
        }
    }

    /// Fills `self.bins` with the histogram sheared by `(b, a)`.
    fn fill(&mut self, (b, a): (f64, f64)) {
        self.bins.iter_mut().for_each(|v| *v = 0.0);
        let (b, a) = (b as f32, a as f32);
        let n = self.bins.len();
        let inv = (1.0 / BIN_M) as f32;
        let off = HALF_WIDTH_M as f32;
        for &(x, y, w) in &self.voters {
            let u = ((x - (a * y + b) * y + off) * inv) as isize;
            if (0..n as isize).contains(&u) {
                self.bins[u as usize] += w;
            }
        }
    }

    /// How sharply the votes gather under shape `(b, a)`: the sum of squared bins.
    fn score(&mut self, shape: (f64, f64)) -> f32 {
        self.fill(shape);
        self.bins.iter().map(|v| v * v).sum()
    }

    /// The lines along the winning shape: smoothed peaks, nearest the car on each side.
    fn lines(&mut self, (b, a): (f64, f64), near: f64, reach: f64) -> Guides {
        let n = self.bins.len();
        self.smooth.clear();
        self.smooth
            .extend((0..n).map(|i| self.bins[i.saturating_sub(1)..(i + 2).min(n)].iter().sum::<f32>()));
        let floor = self.smooth.iter().copied().fold(0.0, f32::max) / 5.0;
        // Shape in ground y: x = a (y − near)² + b (y − near) + c.
        let poly = |c: f64| Poly { a, b: b - 2.0 * a * near, c: c - b * near + a * near * near };
        let centre_of = |i: usize| (i as f64 + 0.5) * BIN_M - HALF_WIDTH_M;
        let peaks = (1..n - 1).filter(|&i| {
            let v = self.smooth[i];
            v > 0.0 && v >= floor && v >= self.smooth[i - 1] && v > self.smooth[i + 1]
        });
        let (mut left, mut right): (Option<Poly>, Option<Poly>) = (None, None);
        for i in peaks {
            let line = poly(centre_of(i));
            let at_car = line.x(0.0);
            if at_car < 0.0 && at_car > -reach && left.is_none_or(|l| l.x(0.0) < at_car) {
                left = Some(line);
            }
            if at_car > 0.0 && at_car < reach && right.is_none_or(|r| r.x(0.0) > at_car) {
                right = Some(line);
            }
        }
        Guides { left, right }
    }
}
