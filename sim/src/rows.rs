//! Track coordinates (s along, n across) along one image row, as a piecewise-linear function of
//! the column.
//!
//! Projecting every pixel onto the track would cost a search per pixel; instead each row's
//! ground line is projected at a few columns and (s, n) interpolated between them, with extra
//! columns only where the track's curvature would bend the interpolation by more than a fifth of
//! a pixel. render() and truth() both read this one mapping, so the truth is exact with
//! respect to the pixels by construction.

use super::camera::Projector;
use super::track::Centreline;
use super::Scene;

/// Columns between the first samples of a row, at most.
const SPACING: u32 = 64;
/// Ground between the first samples of a row, at most (m): under 2 × MAX_OFFSET, so wherever
/// the road is, some first sample lands close enough to it to be mapped.
const SPACING_M: f64 = 40.0;
/// Points farther than this from the centreline are grass and are not mapped: past the smallest
/// radius (50 m) the normals of a curve cross and (s, n) stops being a coordinate system.
const MAX_OFFSET: f64 = 30.0;
/// Largest interpolation error allowed where the road is, in pixels.
const TOLERANCE_PX: f64 = 0.2;
/// Rows that see farther than this are drawn as fog.
pub(crate) const MAX_DIST: f64 = 800.0;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub(crate) u: f64,
    pub(crate) s: f64,
    pub(crate) n: f64,
    /// Within the mapped band around the track.
    pub(crate) valid: bool,
    /// The segment to the next sample is interpolable (both ends valid, no jump between them).
    pub(crate) link: bool,
}

/// One row's mapping.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowMap {
    pub(crate) v: u32,
    /// Forward distance of the row's ground line from the camera (m).
    pub(crate) dist: f64,
    /// Lateral metres per pixel.
    pub(crate) per_px: f64,
    /// World position of column 0 and step per column.
    pub(crate) origin: (f64, f64),
    pub(crate) step: (f64, f64),
    /// Ordered by column, from 0 to width − 1.
    pub(crate) samples: Vec<Sample>,
    coarse: Vec<Sample>,
}

impl RowMap {
    /// (s, n) at a fractional column, by the interpolation render() uses; None off the mapped
    /// band or outside the image.
    pub(crate) fn at(&self, u: f64) -> Option<(f64, f64)> {
        let k = self.samples.partition_point(|p| p.u <= u);
        let a = self.samples.get(k.checked_sub(1)?)?;
        if a.u == u {
            return a.valid.then_some((a.s, a.n));
        }
        let b = self.samples.get(k)?;
        if !a.link {
            return None;
        }
        let t = (u - a.u) / (b.u - a.u);
        Some((a.s + t * (b.s - a.s), a.n + t * (b.n - a.n)))
    }

    /// World position seen at column u.
    pub(crate) fn world(&self, u: f64) -> (f64, f64) {
        (self.origin.0 + u * self.step.0, self.origin.1 + u * self.step.1)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RowSampler<'a> {
    track: &'a Centreline,
    projector: &'a Projector,
    cam: (f64, f64),
    fwd: (f64, f64),
    width: u32,
    /// Offsets where the mapping must be accurate: pavement, shoulders and a margin.
    band: (f64, f64),
}

enum Decision {
    /// Keep the segment; whether it is interpolable.
    Keep(bool),
    /// Split into this many parts.
    Split(u32),
}

impl<'a> RowSampler<'a> {
    pub(crate) fn new(scene: &Scene<'a>) -> Self {
        let road = &scene.world.road;
        Self {
            track: &scene.world.track,
            projector: scene.projector,
            cam: scene.cam,
            fwd: (scene.yaw.cos(), scene.yaw.sin()),
            width: scene.width,
            band: (road.asphalt.0 - road.shoulder - 2.0, road.asphalt.1 + road.shoulder + 2.0),
        }
    }

    /// Fills `map` for image row `v`; false for rows at or above the horizon or in the fog.
    /// `hint` carries the arc length seen mid-row from one row to the next, so the local
    /// searches start next to their answer.
    pub(crate) fn row(&self, v: u32, hint: &mut f64, map: &mut RowMap) -> bool {
        let Some(g) = self.projector.row(f64::from(v)) else { return false };
        if g.dist > MAX_DIST || self.width == 0 {
            return false;
        }
        let (fx, fy) = self.fwd;
        let (lx, ly) = (-fy, fx);
        let lateral0 = self.projector.cx * g.per_px;
        map.v = v;
        map.dist = g.dist;
        map.per_px = g.per_px;
        map.origin = (self.cam.0 + g.dist * fx + lateral0 * lx, self.cam.1 + g.dist * fy + lateral0 * ly);
        map.step = (-g.per_px * lx, -g.per_px * ly);

        let last = self.width - 1;
        let mut coarse = std::mem::take(&mut map.coarse);
        coarse.clear();
        let spacing = (SPACING_M / g.per_px).clamp(4.0, f64::from(SPACING)) as usize;
        coarse.extend(
            (0..self.width).step_by(spacing).map(|u| Sample { u: f64::from(u), ..Sample::default() }),
        );
        if coarse.last().is_some_and(|p| p.u < f64::from(last)) {
            coarse.push(Sample { u: f64::from(last), ..Sample::default() });
        }
        // Project from the middle outwards, each column warm-started from its neighbour.
        let mid = coarse.len() / 2;
        let mut h = *hint;
        for p in coarse[mid..].iter_mut() {
            *p = self.sample(map, p.u, h);
            if p.valid {
                h = p.s;
            }
        }
        if coarse[mid].valid {
            *hint = coarse[mid].s;
        }
        let mut h = *hint;
        for p in coarse[..mid].iter_mut().rev() {
            *p = self.sample(map, p.u, h);
            if p.valid {
                h = p.s;
            }
        }

        map.samples.clear();
        for w in coarse.windows(2) {
            self.span(map, w[0], w[1]);
        }
        if let Some(&end) = coarse.last() {
            map.samples.push(Sample { link: false, ..end });
        }
        map.coarse = coarse;
        true
    }

    fn sample(&self, map: &RowMap, u: f64, hint: f64) -> Sample {
        let (x, y) = map.world(u);
        let f = self.track.project(x, y, hint);
        let valid = f.converged && f.n.abs() <= MAX_OFFSET;
        Sample { u, s: f.s, n: f.n, valid, link: false }
    }

    /// Pushes `a` and whatever samples the segment a→b needs, not `b`.
    fn span(&self, map: &mut RowMap, a: Sample, b: Sample) {
        match self.decide(map, &a, &b) {
            Decision::Keep(link) => map.samples.push(Sample { link, ..a }),
            Decision::Split(parts) => {
                let len = b.u - a.u;
                let mut prev = a;
                for j in 1..parts {
                    let u = a.u + (len * f64::from(j) / f64::from(parts)).round();
                    if u <= prev.u || u >= b.u {
                        continue;
                    }
                    let hint = if prev.valid || !b.valid { prev.s } else { b.s };
                    let m = self.sample(map, u, hint);
                    self.span(map, prev, m);
                    prev = m;
                }
                self.span(map, prev, b);
            }
        }
    }

    fn decide(&self, map: &RowMap, a: &Sample, b: &Sample) -> Decision {
        let len = b.u - a.u;
        let splittable = len >= 2.0;
        let near_road = |n: f64| n > self.band.0 && n < self.band.1;
        match (a.valid, b.valid) {
            (false, false) => Decision::Keep(false),
            (true, false) | (false, true) => {
                let n = if a.valid { a.n } else { b.n };
                if splittable && near_road(n) {
                    Decision::Split(2)
                } else {
                    Decision::Keep(false)
                }
            }
            (true, true) => {
                if a.n.max(b.n) < self.band.0 || a.n.min(b.n) > self.band.1 {
                    return Decision::Keep(true);
                }
                let lateral = len * map.per_px;
                // Adjacent samples from different parts of the track (or either side of a
                // fold) show as (s, n) moving much faster than the ground line does.
                let (ds, dn) = (b.s - a.s, b.n - a.n);
                if ds * ds + dn * dn > (2.0 * lateral + 0.5).powi(2) {
                    return if splittable { Decision::Split(2) } else { Decision::Keep(false) };
                }
                let kappa = [a.s, b.s, 0.5 * (a.s + b.s)]
                    .into_iter()
                    .map(|s| self.track.kappa_at(s).abs())
                    .fold(0.0, f64::max);
                if kappa < 1e-9 || !splittable {
                    return Decision::Keep(true);
                }
                // Along a straight line, n = R − |P − O| bends by at most 1/(R − |n|): the
                // linear interpolation is off by at most lateral²/(8(R − |n|)).
                let reach = 1.0 / kappa - a.n.abs().max(b.n.abs());
                if reach < 1.0 {
                    return Decision::Split(2);
                }
                let err = lateral * lateral / (8.0 * reach);
                let parts = (err / (TOLERANCE_PX * map.per_px)).sqrt().ceil();
                if parts <= 1.0 {
                    Decision::Keep(true)
                } else {
                    Decision::Split(parts.min(len) as u32)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SimConfig, Simulator, TrackKind};

    #[test]
    fn interpolation_stays_within_tolerance_on_the_road() {
        for kind in TrackKind::ALL {
            let mut sim = Simulator::new(SimConfig { track: kind, ..SimConfig::default() });
            for i in (0..sim.spawn_points().len()).step_by(2) {
                sim.respawn(i).unwrap();
                let scene = sim.scene();
                let sampler = scene.sampler();
                let (mut map, mut hint, mut checked) = (RowMap::default(), scene.cam_s, 0);
                for v in (0..sim.config().height).rev() {
                    if !sampler.row(v, &mut hint, &mut map) {
                        continue;
                    }
                    for u in (0..sim.config().width).step_by(7) {
                        let Some((s, n)) = map.at(f64::from(u)) else { continue };
                        if n < sampler.band.0 + 2.0 || n > sampler.band.1 - 2.0 {
                            continue;
                        }
                        let (x, y) = map.world(f64::from(u));
                        let exact = scene.world.track.project(x, y, s);
                        let err = (exact.n - n).abs() / map.per_px;
                        assert!(err < 1.5 * TOLERANCE_PX, "{kind:?} spawn {i} ({u}, {v}): {err} px");
                        checked += 1;
                    }
                }
                assert!(checked > 5000, "{kind:?}: {checked}");
            }
        }
    }
}
