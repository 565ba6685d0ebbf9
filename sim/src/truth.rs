//! TuSimple lane labels, read off the same row mapping the renderer paints with.
//!
//! A label is where the interpolated offset along a row equals the line's offset, exactly where
//! render() centres the line's paint; so label and pixels agree to rounding, whatever the
//! interpolation error against the ideal geometry.

use super::rows::RowMap;
use super::{LaneTruth, Scene, MIN_TRUTH_POINTS};

/// A line may step back this far along the track between rows (m) before a crossing is taken
/// for a different part of it: rows are not exactly perpendicular to the road.
const BACKTRACK: f64 = 1.0;

pub(crate) fn truth(scene: &Scene<'_>, h_samples: &[u32], car_n: f64, range: f64) -> LaneTruth {
    let lines = &scene.world.road.lines;
    let sampler = scene.sampler();
    let mut map = RowMap::default();
    let mut hint = scene.cam_s;
    let mut xs = vec![vec![None; h_samples.len()]; lines.len()];
    // Each line is followed outwards from the camera; where a row crosses it more than once
    // (a curve folding back), the nearest part along the road is the one that continues it.
    let mut reached = vec![scene.cam_s - BACKTRACK; lines.len()];
    for (ri, &v) in h_samples.iter().enumerate().rev() {
        if !sampler.row(v, &mut hint, &mut map) || map.dist > range {
            continue;
        }
        for (li, line) in lines.iter().enumerate() {
            let c = line.offset;
            let mut best: Option<(f64, f64)> = None;
            for w in map.samples.windows(2) {
                let (a, b) = (&w[0], &w[1]);
                if !a.link || a.n == b.n || (a.n - c) * (b.n - c) > 0.0 {
                    continue;
                }
                let t = (c - a.n) / (b.n - a.n);
                let s = a.s + t * (b.s - a.s);
                if s >= reached[li] - BACKTRACK && best.is_none_or(|(bs, _)| s < bs) {
                    best = Some((s, a.u + t * (b.u - a.u)));
                }
            }
            if let Some((s, x)) = best {
                xs[li][ri] = Some(x as f32);
                reached[li] = s;
            }
        }
    }

    let mut truth = LaneTruth {
        h_samples: h_samples.to_vec(),
        lanes: Vec::new(),
        ego_left: None,
        ego_right: None,
        styles: Vec::new(),
        line_ids: Vec::new(),
    };
    // Lines are ordered left to right (offset descending): the ego lane lies between the last
    // line left of the car and the first one right of it.
    let left = lines.iter().rposition(|l| l.offset > car_n);
    let right = lines.iter().position(|l| l.offset < car_n);
    for (li, (line, lane)) in lines.iter().zip(xs).enumerate() {
        if lane.iter().flatten().count() < MIN_TRUTH_POINTS {
            continue;
        }
        if Some(li) == left {
            truth.ego_left = Some(truth.lanes.len());
        }
        if Some(li) == right {
            truth.ego_right = Some(truth.lanes.len());
        }
        truth.lanes.push(lane);
        truth.styles.push(line.style);
        truth.line_ids.push(li);
    }
    truth
}
