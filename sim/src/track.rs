//! Closed centrelines built by integrating curvature profiles.
//!
//! Designing by curvature rather than by points keeps the curvature a controller sees exact and
//! continuous where the profile is. Closure is by construction: each track is half a lap
//! turning through exactly π, repeated once rotated by π, which always ends where it started.

use std::f64::consts::PI;

use super::{floor_i64, wrap_angle, TrackKind};

/// Spacing of the stored points: the chord error Δ²/8R stays under 1 mm at R = 40 m.
const STEP: f64 = 0.5;
/// Integration sub-steps per stored point.
const SUBSTEPS: usize = 8;
/// A projection that walks this many points without settling is given up as off-track.
const MAX_WALK: usize = 2000;

#[derive(Debug, Clone, Copy)]
struct Node {
    x: f64,
    y: f64,
    /// Unit tangent.
    tx: f64,
    ty: f64,
    heading: f64,
    kappa: f64,
}

/// The ego-lane centre of one track, as a closed polyline with tangents and curvature.
#[derive(Debug, Clone)]
pub(crate) struct Centreline {
    nodes: Vec<Node>,
    step: f64,
    length: f64,
}

/// A point on the centreline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) heading: f64,
    pub(crate) kappa: f64,
}

/// Track coordinates of a world point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Foot {
    /// Arc length, unwrapped: it continues past the lap length from the hint it started at.
    pub(crate) s: f64,
    /// Signed distance, + = left of the centreline.
    pub(crate) n: f64,
    pub(crate) converged: bool,
}

/// Curvature along half a lap.
#[derive(Debug, Clone)]
enum Profile {
    /// Linear curvature ramps (length, κ start, κ end): straights, arcs and clothoids.
    Pieces(Vec<(f64, f64, f64)>),
    /// κ0 + Σ a·sin(2π·cycles·s/half + phase): curvature that never stops changing.
    Waves { half: f64, waves: Vec<(f64, f64, f64)> },
}

impl Profile {
    fn for_kind(kind: TrackKind) -> Self {
        match kind {
            TrackKind::Oval => {
                let r = 60.0;
                Pieces::default().hold(75.0).jump(1.0 / r).hold(PI * r).jump(0.0).hold(75.0).done()
            }
            TrackKind::SBends => {
                // A wiggle that swings out of the loop (right first) and comes back to the
                // same heading: the middle arc (70 m) equals the two outer arcs (25 m each)
                // plus the 20 m that the two end ramps turn, so the net turn is zero.
                let k = 1.0 / 50.0;
                let u = 1.0 / 55.0;
                Pieces::default()
                    .hold(40.0)
                    .ramp(20.0, -k)
                    .hold(25.0)
                    .ramp(40.0, k)
                    .hold(70.0)
                    .ramp(40.0, -k)
                    .hold(25.0)
                    .ramp(20.0, 0.0)
                    .hold(40.0)
                    .ramp(25.0, u)
                    .hold((PI - 25.0 * u) / u)
                    .ramp(25.0, 0.0)
                    .hold(30.0)
                    .done()
            }
            TrackKind::Long => Profile::Waves {
                half: 1600.0,
                waves: vec![(0.006, 3.0, 0.0), (0.005, 7.0, 1.3), (0.003, 11.0, 0.4)],
            },
        }
    }

    fn half_length(&self) -> f64 {
        match self {
            Profile::Pieces(p) => p.iter().map(|&(len, _, _)| len).sum(),
            Profile::Waves { half, .. } => *half,
        }
    }

    fn kappa(&self, s: f64) -> f64 {
        match self {
            Profile::Pieces(pieces) => {
                let mut start = 0.0;
                for &(len, k0, k1) in pieces {
                    if s < start + len {
                        return k0 + (k1 - k0) * (s - start) / len;
                    }
                    start += len;
                }
                pieces.last().map_or(0.0, |p| p.2)
            }
            Profile::Waves { half, waves } => {
                let base = PI / half;
                base + waves
                    .iter()
                    .map(|&(a, cycles, phase)| a * (2.0 * PI * cycles * s / half + phase).sin())
                    .sum::<f64>()
            }
        }
    }
}

/// Builder for piecewise-linear curvature, tracking the curvature reached so far.
#[derive(Debug, Default)]
struct Pieces {
    v: Vec<(f64, f64, f64)>,
    k: f64,
}

impl Pieces {
    fn hold(mut self, len: f64) -> Self {
        self.v.push((len, self.k, self.k));
        self
    }
    fn ramp(mut self, len: f64, to: f64) -> Self {
        self.v.push((len, self.k, to));
        self.k = to;
        self
    }
    fn jump(mut self, to: f64) -> Self {
        self.k = to;
        self
    }
    fn done(self) -> Profile {
        Profile::Pieces(self.v)
    }
}

impl Centreline {
    pub(crate) fn new(kind: TrackKind) -> Self {
        Self::from_profile(&Profile::for_kind(kind))
    }

    fn from_profile(profile: &Profile) -> Self {
        let half = profile.half_length();
        let n_half = ((half / STEP).round() as usize).max(8);
        let step = half / n_half as f64;
        let h = step / SUBSTEPS as f64;
        // Scale the curvature so the half lap turns through π to rounding, with the same
        // midpoint rule the integration below uses.
        let net: f64 = (0..n_half * SUBSTEPS).map(|j| profile.kappa((j as f64 + 0.5) * h)).sum::<f64>() * h;
        let scale = PI / net;
        let mut nodes = Vec::with_capacity(2 * n_half);
        let (mut x, mut y, mut psi) = (0.0f64, 0.0f64, 0.0f64);
        for i in 0..n_half {
            nodes.push(node(x, y, psi, scale * profile.kappa(i as f64 * step)));
            for j in 0..SUBSTEPS {
                let s = (i * SUBSTEPS + j) as f64 * h;
                let k = scale * profile.kappa(s + 0.5 * h);
                let mid = psi + 0.5 * h * k;
                x += h * mid.cos();
                y += h * mid.sin();
                psi += h * k;
            }
        }
        for i in 0..n_half {
            let a = nodes[i];
            nodes.push(node(x - a.x, y - a.y, a.heading + PI, a.kappa));
        }
        Self { nodes, step, length: 2.0 * half }
    }

    pub(crate) fn length(&self) -> f64 {
        self.length
    }

    fn node(&self, i: i64) -> &Node {
        &self.nodes[i.rem_euclid(self.nodes.len() as i64) as usize]
    }

    /// The centreline at arc length `s` (any real: wraps around the lap).
    pub(crate) fn frame_at(&self, s: f64) -> Frame {
        let u = s / self.step;
        let i = floor_i64(u);
        let t = u - i as f64;
        let (a, b) = (self.node(i), self.node(i + 1));
        Frame {
            x: a.x + t * (b.x - a.x),
            y: a.y + t * (b.y - a.y),
            heading: wrap_angle(a.heading + t * wrap_angle(b.heading - a.heading)),
            kappa: a.kappa + t * (b.kappa - a.kappa),
        }
    }

    /// Curvature at arc length `s`.
    pub(crate) fn kappa_at(&self, s: f64) -> f64 {
        let u = s / self.step;
        let i = floor_i64(u);
        let (a, b) = (self.node(i), self.node(i + 1));
        a.kappa + (u - i as f64) * (b.kappa - a.kappa)
    }

    /// Arc length of the stored point nearest to (x, y), by brute force: for teleports and for
    /// re-finding a car that drove far off the road, never per pixel.
    pub(crate) fn nearest_s(&self, x: f64, y: f64) -> f64 {
        let best = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, p)| (i, (p.x - x).powi(2) + (p.y - y).powi(2)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(i, _)| i);
        best as f64 * self.step
    }

    /// Track coordinates of (x, y), walking from the arc length `hint`.
    ///
    /// Within each segment the normal is interpolated between the two end normals, so the
    /// segments' normal lines tile the band around the track without gaps or overlaps and
    /// (s, n) is continuous there; a plain polyline projection would make s jump at every vertex
    /// on the inside of a curve, and the renderer interpolates s between samples.
    pub(crate) fn project(&self, x: f64, y: f64, hint: f64) -> Foot {
        let count = self.nodes.len() as i64;
        let start = floor_i64(hint / self.step);
        let lap = start.div_euclid(count);
        let mut i = start.rem_euclid(count);
        let mut laps = lap;
        let mut last_dir = 0i8;
        for _ in 0..MAX_WALK {
            let a = &self.nodes[i as usize];
            let b = &self.nodes[if i + 1 == count { 0 } else { i as usize + 1 }];
            let (dx, dy) = (x - a.x, y - a.y);
            let (ex, ey) = (b.x - a.x, b.y - a.y);
            let (nax, nay) = (-a.ty, a.tx);
            let (dnx, dny) = (-b.ty - nax, b.tx - nay);
            // cross(d − t·e, Na + t·dN) = 0, a quadratic in t with a tiny t² term.
            let c0 = cross(dx, dy, nax, nay);
            let c1 = cross(dx, dy, dnx, dny) - cross(ex, ey, nax, nay);
            let c2 = -cross(ex, ey, dnx, dny);
            let mut t = if c1.abs() > 1e-12 { -c0 / c1 } else { 0.0 };
            let g = c0 + t * (c1 + t * c2);
            let dg = c1 + 2.0 * c2 * t;
            if dg.abs() > 1e-12 {
                t -= g / dg;
            }
            if t < 0.0 && last_dir <= 0 {
                last_dir = -1;
                i -= 1;
                if i < 0 {
                    i += count;
                    laps -= 1;
                }
                continue;
            }
            if t > 1.0 && last_dir >= 0 {
                last_dir = 1;
                i += 1;
                if i == count {
                    i = 0;
                    laps += 1;
                }
                continue;
            }
            // A reversal means (x, y) lies on a vertex's normal line, up to rounding.
            let t = t.clamp(0.0, 1.0);
            let (nx, ny) = (nax + t * dnx, nay + t * dny);
            let n = ((dx - t * ex) * nx + (dy - t * ey) * ny) / (nx * nx + ny * ny).sqrt();
            let s = ((laps * count + i) as f64 + t) * self.step;
            return Foot { s, n, converged: n.is_finite() };
        }
        Foot { s: hint, n: f64::INFINITY, converged: false }
    }
}

fn node(x: f64, y: f64, heading: f64, kappa: f64) -> Node {
    let (ty, tx) = heading.sin_cos();
    Node { x, y, tx, ty, heading, kappa }
}

fn cross(ax: f64, ay: f64, bx: f64, by: f64) -> f64 {
    ax * by - ay * bx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_track_closes_smoothly() {
        for kind in TrackKind::ALL {
            let c = Centreline::new(kind);
            let last = c.nodes.last().map(|n| (n.x, n.y)).unwrap_or_default();
            // The closing segment is as long as every other one, heading continuous.
            let gap = (last.0 - c.nodes[0].x).hypot(last.1 - c.nodes[0].y);
            assert!((gap - c.step).abs() < 1e-3, "{kind:?}: closing segment {gap}");
            for w in c.nodes.windows(2) {
                let d = (w[1].x - w[0].x).hypot(w[1].y - w[0].y);
                assert!((d - c.step).abs() < 1e-3, "{kind:?}: segment {d}");
                assert!(wrap_angle(w[1].heading - w[0].heading).abs() < 0.02, "{kind:?}");
            }
        }
    }

    #[test]
    fn radii_are_drivable_and_tracks_keep_clear_of_themselves() {
        for kind in TrackKind::ALL {
            let c = Centreline::new(kind);
            let kmax = c.nodes.iter().map(|n| n.kappa.abs()).fold(0.0, f64::max);
            assert!(kmax <= 1.0 / 40.0, "{kind:?}: min radius {}", 1.0 / kmax);
            // Parts of the lap more than 150 m apart along it stay 70 m apart on the ground, so
            // the band the renderer maps around the road never folds onto another part.
            let pts: Vec<_> = c.nodes.iter().step_by(8).collect();
            let sep = 150.0 / (8.0 * c.step);
            let m = pts.len();
            for i in 0..m {
                for j in i + 1..m {
                    let along = (j - i).min(m - (j - i)) as f64;
                    if along > sep {
                        let d = (pts[i].x - pts[j].x).hypot(pts[i].y - pts[j].y);
                        assert!(d > 70.0, "{kind:?}: points {i} and {j} are {d} m apart");
                    }
                }
            }
        }
    }

    #[test]
    fn projection_inverts_offsets() {
        for kind in TrackKind::ALL {
            let c = Centreline::new(kind);
            for k in 0..200 {
                let s = c.length() * k as f64 / 200.0 + 0.123;
                let f = c.frame_at(s);
                for n in [-12.0, -1.75, 0.0, 3.0, 20.0] {
                    let (x, y) = (f.x - n * f.heading.sin(), f.y + n * f.heading.cos());
                    let foot = c.project(x, y, s - 7.0);
                    assert!(foot.converged);
                    assert!((foot.n - n).abs() < 0.02, "{kind:?} s={s} n={n}: got {}", foot.n);
                    assert!((foot.s - s).abs() < 0.05 * (1.0 + n.abs()), "{kind:?} s={s}: {}", foot.s);
                }
            }
        }
    }
}
