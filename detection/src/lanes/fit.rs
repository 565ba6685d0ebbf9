//! Least-squares fits of `x = a·y² + b·y + c` to marking pixels, in ground metres.
//!
//! Fitting in metres rather than warped pixels is the same fit up to scale (the two are
//! related by a per-axis affine map), but the coefficients then mean something: `b` is the
//! line's direction, `2a` about its curvature, `c` its lateral position at the reference point.

/// A lane line in ground coordinates: `x` (m, + = right) as a function of `y` (m ahead).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Poly {
    pub(crate) a: f64,
    pub(crate) b: f64,
    pub(crate) c: f64,
}

impl Poly {
    pub(crate) fn x(&self, y: f64) -> f64 {
        (self.a * y + self.b) * y + self.c
    }

    /// dx/dy at `y`.
    pub(crate) fn slope(&self, y: f64) -> f64 {
        2.0 * self.a * y + self.b
    }

    /// `w·self + (1 − w)·other`, coefficient by coefficient.
    pub(crate) fn blend(&self, other: &Poly, w: f64) -> Poly {
        let mix = |p: f64, q: f64| w * p + (1.0 - w) * q;
        Poly { a: mix(self.a, other.a), b: mix(self.b, other.b), c: mix(self.c, other.c) }
    }

    /// The parallel curve `dx` metres to the side (+ = right): on a bend the inner line is
    /// tighter, `a' = a / (1 − 2·a·dx)`, as for concentric circles.
    pub(crate) fn shifted(&self, dx: f64) -> Poly {
        Poly { a: concentric(self.a, dx), b: self.b, c: self.c + dx * (1.0 + self.b * self.b).sqrt() }
    }
}

/// A fitted line and how well the pixels support it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fit {
    pub(crate) poly: Poly,
    /// Root-mean-square distance of the pixels from the curve, across (m), weighted as in
    /// the fit.
    pub(crate) rms: f64,
    /// The same unweighted, each residual divided by 1 + (distance beyond the near edge) /
    /// `SPREAD_SCALE_M`: how well the line fits at the precision the camera has at each
    /// distance, so a line seen only far away is not blamed for far-away blur.
    pub(crate) spread: f64,
    /// Pixels used, after outliers were dropped.
    pub(crate) pixels: usize,
    /// Nearest and farthest pixel (m ahead).
    pub(crate) y_min: f64,
    pub(crate) y_max: f64,
    /// Straight-line correction (offset at the near edge, slope) of the near road, see
    /// [`near_fix`].
    pub(crate) fix: NearFix,
}

/// A straight-line correction `value + slope·(y − near)` added to a line over the first
/// `band` metres of the view, fading out over as many again: one parabola cannot follow both
/// the near road and the far one where the curvature changes (a bend ending just ahead), and
/// the near road is what the pose and most image rows are about.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct NearFix {
    pub(crate) value: f64,
    pub(crate) slope: f64,
}

impl NearFix {
    pub(crate) fn at(&self, y: f64, near: f64, band: f64) -> f64 {
        let d = (y - near).max(0.0);
        let fade = (2.0 - d / band).clamp(0.0, 1.0);
        fade * (self.value + self.slope * d.min(band))
    }

    pub(crate) fn blend(&self, other: &NearFix, w: f64) -> NearFix {
        NearFix {
            value: w * self.value + (1.0 - w) * other.value,
            slope: w * self.slope + (1.0 - w) * other.slope,
        }
    }
}

/// The near-road correction shared by the `lines` (each its points and its fitted curve): a
/// straight-line fit of their residuals within `band` m of the near edge, zero with too little
/// paint there. Shared, because the near road bends the same way under parallel lines: a
/// dashed line between dashes takes it from its solid partner.
pub(crate) fn near_fix<'a>(
    lines: impl Iterator<Item = (&'a [(f32, f32)], Poly)>,
    near: f64,
    band: f64,
) -> NearFix {
    let (mut sw, mut st, mut stt, mut sr, mut str_) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (&(x, y), poly) in lines.flat_map(|(pts, poly)| pts.iter().map(move |p| (p, poly))) {
        let (x, y) = (f64::from(x), f64::from(y));
        let t = y - near;
        if !(0.0..band).contains(&t) {
            continue;
        }
        let r = x - poly.x(y);
        sw += 1.0;
        st += t;
        stt += t * t;
        sr += r;
        str_ += t * r;
        lo = lo.min(t);
        hi = hi.max(t);
    }
    if sw < 20.0 || hi - lo < 0.25 * band {
        return NearFix::default();
    }
    let det = sw * stt - st * st;
    if det.abs() < 1e-9 {
        return NearFix::default();
    }
    let slope = (sw * str_ - st * sr) / det;
    NearFix { value: (sr - slope * st) / sw, slope }
}

/// `a` of the curve parallel to one with `a` at `dx` m to its right (concentric circles:
/// radius R − dx for the parabola's R = 1/(2a)); unchanged where that would flip the bend.
pub(crate) fn concentric(a: f64, dx: f64) -> f64 {
    let den = 1.0 - 2.0 * a * dx;
    if den > 0.2 {
        a / den
    } else {
        a
    }
}

/// See [`Fit::spread`].
const SPREAD_SCALE_M: f64 = 5.0;

/// The most lines fitted together: the ego pair and one neighbour on each side.
pub(crate) const MAX_LINES: usize = 4;
/// Unknowns: the shared a and b, and one c per line.
const UNKNOWNS: usize = 2 + MAX_LINES;

/// Points spanning less than this along the road (m) get a straight line: a parabola through
/// a short stretch of paint turns its noise into curvature.
const MIN_QUADRATIC_SPAN: f64 = 8.0;
/// Pixels further than this many RMS (and at least `MIN_OUTLIER` m) from a fit are dropped
/// before the next: stray paint from other lines, shadows, glare.
const OUTLIER_RMS: f64 = 2.5;
const MIN_OUTLIER: f64 = 0.1;
/// Fit, drop outliers, refit: this many rounds at most.
const ROUNDS: usize = 4;

/// Fits all lines of the road at once: `points[i]` (ground (x, y), m) of line i, each point
/// weighing `weight(y)`; lines 0 and 1 are the ego lane's left and right, 2 and 3 the
/// neighbours beyond them. The lines are parallel curves (one shared `b` and, up to the
/// concentric correction, one `a`), each with its own `c`: so a dashed ego line with a gap
/// near the car takes its shape from the solid lines instead of being extrapolated across the
/// gap. A line with fewer than `min_pixels` points gets no fit; neighbours are fitted only
/// to shape the ego lines and count only with an ego line present.
pub(crate) fn fit_lines(
    points: &mut [Vec<(f32, f32)>; MAX_LINES],
    min_pixels: usize,
    lane_width: f64,
    near: f64,
    weight: impl Fn(f64) -> f64,
) -> [Option<Fit>; MAX_LINES] {
    drop_near_specks(points, near);
    let mut fits = [None; MAX_LINES];
    // Each line's a minus the lane centre's, from the previous round.
    let mut bend = [0.0; MAX_LINES];
    for round in 0..=ROUNDS {
        let present = points.each_ref().map(|p| p.len() >= min_pixels.max(3));
        if !present[0] && !present[1] {
            return [None; MAX_LINES];
        }
        let Some(polys) = solve(points, present, &bend, &weight) else { return [None; MAX_LINES] };
        for (fit, (poly, pts)) in fits.iter_mut().zip(polys.iter().zip(points.iter())) {
            *fit = poly.and_then(|p| stats(pts, p, near, &weight));
        }
        let changed = update_bends(&fits, &mut bend, lane_width);
        if round == ROUNDS {
            break;
        }
        // The first round has no concentric correction yet: on a bend its far residuals
        // are the model's, not the pixels', so nothing is dropped until it is in.
        let mut dropped = false;
        if round > 0 {
            for (f, pts) in fits.iter().zip(points.iter_mut()) {
                if let Some(f) = f {
                    let limit = (OUTLIER_RMS * f.rms).max(MIN_OUTLIER);
                    let before = pts.len();
                    pts.retain(|&(x, y)| (f64::from(x) - f.poly.x(f64::from(y))).abs() <= limit);
                    dropped |= pts.len() != before;
                }
            }
        }
        if round > 0 && !dropped && !changed {
            break;
        }
    }
    fits
}

/// Within this distance (m) of the near edge a line needs at least `MIN_NEAR_PIXELS` pixels,
/// or those it has there are dropped. The near road weighs most in the fit, so a speck there
/// (road grain against a shadow, right at the frame's edge) would swing the whole line; a
/// real marking near the camera is many pixels.
const NEAR_SPECK_M: f64 = 2.0;
const MIN_NEAR_PIXELS: usize = 20;

fn drop_near_specks(points: &mut [Vec<(f32, f32)>; MAX_LINES], near: f64) {
    let limit = (near + NEAR_SPECK_M) as f32;
    for pts in points.iter_mut() {
        let n = pts.iter().filter(|p| p.1 < limit).count();
        if n > 0 && n < MIN_NEAR_PIXELS {
            pts.retain(|p| p.1 >= limit);
        }
    }
}

/// Sets each line's `a` offset from the lane centre's (the concentric correction) from the
/// current fits; true if any moved.
fn update_bends(fits: &[Option<Fit>; MAX_LINES], bend: &mut [f64; MAX_LINES], lane_width: f64) -> bool {
    let centre = match (&fits[0], &fits[1]) {
        (Some(l), Some(r)) => 0.5 * (l.poly.c + r.poly.c),
        (Some(l), None) => l.poly.c + lane_width / 2.0,
        (None, Some(r)) => r.poly.c - lane_width / 2.0,
        (None, None) => return false,
    };
    // The centre's a: any fitted line's a less its own offset.
    let Some(base) = fits.iter().zip(bend.iter()).find_map(|(f, d)| f.map(|f| f.poly.a - d)) else {
        return false;
    };
    let mut changed = false;
    for (f, d) in fits.iter().zip(bend.iter_mut()) {
        if let Some(f) = f {
            let want = concentric(base, f.poly.c - centre) - base;
            changed |= (want - *d).abs() > 1e-7;
            *d = want;
        }
    }
    changed
}

/// Residual, support and extent of `points` around `poly`.
fn stats(points: &[(f32, f32)], poly: Poly, near: f64, weight: &impl Fn(f64) -> f64) -> Option<Fit> {
    let (mut sq, mut sw, mut scaled) = (0.0, 0.0, 0.0);
    let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        let (x, y) = (f64::from(x), f64::from(y));
        let w = weight(y);
        let r = x - poly.x(y);
        sq += w * r * r;
        sw += w;
        let s = r / (1.0 + (y - near).max(0.0) / SPREAD_SCALE_M);
        scaled += s * s;
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    let n = points.len();
    (sw > 0.0).then(|| Fit {
        poly,
        rms: (sq / sw).sqrt(),
        spread: (scaled / n as f64).sqrt(),
        pixels: n,
        y_min,
        y_max,
        fix: NearFix::default(),
    })
}

/// One weighted least-squares solve of the parallel-lines model for the `present` lines,
/// line i's x taken as `(a + bend[i])·y² + b·y + c_i`.
fn solve(
    points: &[Vec<(f32, f32)>; MAX_LINES],
    present: [bool; MAX_LINES],
    bend: &[f64; MAX_LINES],
    weight: &impl Fn(f64) -> f64,
) -> Option<[Option<Poly>; MAX_LINES]> {
    let lines = || points.iter().zip(present).filter(|(_, p)| *p).map(|(pts, _)| pts);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, y) in lines().flatten() {
        lo = lo.min(f64::from(y));
        hi = hi.max(f64::from(y));
    }
    // Normalising y to t = (y − mid)/half in −1..1 keeps the normal equations well conditioned.
    let (mid, half) = (0.5 * (lo + hi), (0.5 * (hi - lo)).max(1e-3));
    let quadratic = hi - lo >= MIN_QUADRATIC_SPAN;
    // Unknown k of each present line's c.
    let mut slot = [usize::MAX; MAX_LINES];
    let mut n = 2;
    for (i, p) in present.iter().enumerate() {
        if *p {
            slot[i] = n;
            n += 1;
        }
    }
    let mut m = [[0.0; UNKNOWNS]; UNKNOWNS];
    let mut r = [0.0; UNKNOWNS];
    for i in (0..MAX_LINES).filter(|&i| present[i]) {
        for &(x, y) in &points[i] {
            let (x, y) = (f64::from(x), f64::from(y));
            let t = (y - mid) / half;
            let mut row = [0.0; UNKNOWNS];
            row[0] = t * t;
            row[1] = t;
            row[slot[i]] = 1.0;
            let w = weight(y);
            let target = x - bend[i] * y * y;
            for j in 0..n {
                r[j] += w * row[j] * target;
                for k in 0..n {
                    m[j][k] += w * row[j] * row[k];
                }
            }
        }
    }
    if !quadratic {
        // A straight line: pin A to 0 by replacing its equation with A = 0.
        m[0] = [0.0; UNKNOWNS];
        m[0][0] = 1.0;
        r[0] = 0.0;
        for row in m.iter_mut().skip(1) {
            row[0] = 0.0;
        }
    }
    let v = solve_n(m, r, n)?;
    // Back from x = A t² + B t + C to x(y).
    let (a, b) = (v[0] / (half * half), v[1] / half);
    let mut out = [None; MAX_LINES];
    for i in (0..MAX_LINES).filter(|&i| present[i]) {
        let c = v[slot[i]];
        out[i] = Some(Poly { a: a + bend[i], b: b - 2.0 * a * mid, c: a * mid * mid - b * mid + c });
    }
    Some(out)
}

/// Solves the leading n×n block of `m·v = r` by Gaussian elimination with partial pivoting.
fn solve_n(mut m: [[f64; UNKNOWNS]; UNKNOWNS], mut r: [f64; UNKNOWNS], n: usize) -> Option<[f64; UNKNOWNS]> {
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        r.swap(col, pivot);
        let pivot_row = m[col];
        for row in col + 1..n {
            let f = m[row][col] / pivot_row[col];
            for (x, p) in m[row][col..n].iter_mut().zip(&pivot_row[col..n]) {
                *x -= f * p;
            }
            r[row] -= f * r[col];
        }
    }
    let mut v = [0.0; UNKNOWNS];
    for i in (0..n).rev() {
        let tail: f64 = (i + 1..n).map(|k| m[i][k] * v[k]).sum();
        v[i] = (r[i] - tail) / m[i][i];
    }
    v.iter().all(|x| x.is_finite()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(p: Poly, from: f64) -> Vec<(f32, f32)> {
        (0..200).map(|i| from + i as f64 * 0.2).map(|y| (p.x(y) as f32, y as f32)).collect()
    }

    #[test]
    fn recovers_parallel_curves_and_drops_an_outlier() {
        let centre = Poly { a: 0.008, b: -0.05, c: 0.2 };
        let lines = [-1.75, 1.75, -5.25].map(|d| centre.shifted(d));
        let mut pts = [sample(lines[0], 3.0), sample(lines[1], 10.0), sample(lines[2], 5.0), Vec::new()];
        pts[0].push((9.0, 20.0));
        let fits = fit_lines(&mut pts, 10, 3.5, 0.0, |_| 1.0);
        assert_eq!(fits[0].expect("left").pixels, 200);
        assert!(fits[3].is_none());
        for (fit, want) in fits.iter().zip(&lines) {
            let fit = fit.expect("fitted");
            for y in [0.0, 10.0, 30.0, 40.0] {
                assert!((fit.poly.x(y) - want.x(y)).abs() < 5e-3, "{:?} vs {want:?} at {y}", fit.poly);
            }
            assert!(fit.rms < 5e-3, "{}", fit.rms);
        }
    }

    #[test]
    fn one_line_alone_and_short_support_gives_a_straight_line() {
        let one: Vec<(f32, f32)> = (0..50).map(|i| (1.0 + 0.01 * i as f32, 5.0 + 0.1 * i as f32)).collect();
        let mut pts = [Vec::new(), one.clone(), Vec::new(), Vec::new()];
        let [l, r, ..] = fit_lines(&mut pts, 10, 3.5, 0.0, |_| 1.0);
        let r = r.expect("fits");
        assert!(l.is_none());
        assert_eq!(r.poly.a, 0.0);
        assert!((r.poly.b - 0.1).abs() < 1e-4, "{:?}", r.poly);
        let mut few = [Vec::new(), one[..2].to_vec(), Vec::new(), Vec::new()];
        assert!(fit_lines(&mut few, 10, 3.5, 0.0, |_| 1.0)[1].is_none());
        // Neighbours alone are not a lane.
        let mut alone = [Vec::new(), Vec::new(), one, Vec::new()];
        assert!(fit_lines(&mut alone, 10, 3.5, 0.0, |_| 1.0).iter().all(Option::is_none));
    }
}
