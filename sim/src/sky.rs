//! Above the horizon: a graded sky and a ridge of distant hills that turns with the car, so a
//! turn shows across the whole image and not only on the road.

use super::look::{Bgr, Look};
use super::Scene;

pub(super) struct Sky<'a> {
    look: &'a Look,
    horizon: f64,
    /// Image row of the hill top in each column.
    tops: Vec<f64>,
    /// Height of the highest possible hill (px).
    hill_px: f64,
}

impl<'a> Sky<'a> {
    pub(super) fn new(scene: &Scene<'a>) -> Self {
        let look = &scene.world.look;
        let f = scene.projector.focal();
        let horizon = scene.projector.horizon;
        // The ridge is a function of compass bearing, so it stays put in the world.
        let tops = scene
            .projector
            .bearings
            .iter()
            .map(|b| {
                let az = scene.yaw + b;
                let shape = 0.55
                    + 0.25 * (3.0 * az + 1.0).sin()
                    + 0.15 * (7.0 * az + 2.0).sin()
                    + 0.05 * (17.0 * az + 0.5).sin();
                horizon - f * (look.hill_height * shape).tan()
            })
            .collect();
        // The shape above peaks at 1.
        Self { look, horizon, tops, hill_px: f * look.hill_height.tan() }
    }

    pub(super) fn row(&self, v: usize, row: &mut [u8]) {
        let look = self.look;
        let v = v as f64;
        let up = ((self.horizon - v) / self.horizon.max(1.0)).clamp(0.0, 1.0);
        let g = up.powf(0.7) as f32;
        let mut sky: Bgr =
            std::array::from_fn(|i| look.sky_horizon[i] + (look.sky_zenith[i] - look.sky_horizon[i]) * g);
        // Haze: the last few pixels above the horizon fade into the fog the ground ends in.
        let haze = (1.0 - (self.horizon - v) / 12.0).clamp(0.0, 1.0) as f32;
        sky = std::array::from_fn(|i| sky[i] + (look.fog[i] - sky[i]) * haze);
        fill(row, sky.map(|c| c.round() as u8));
        if v < self.horizon - self.hill_px - 1.0 {
            return;
        }
        let depth = ((v - (self.horizon - self.hill_px)) / self.hill_px.max(1.0)).clamp(0.0, 1.0) as f32;
        let mix = 0.3 + 0.6 * depth;
        let hill: [u8; 3] = std::array::from_fn(|i| {
            let c = look.hills[i] * look.light[i];
            (c + (look.fog[i] - c) * mix).round() as u8
        });
        for (px, &top) in row.chunks_exact_mut(3).zip(&self.tops) {
            if v >= top {
                px.copy_from_slice(&hill);
            }
        }
    }
}

/// Fills a row with one colour by doubling copies (memcpy speed, not 3 bytes at a time).
pub(super) fn fill(row: &mut [u8], c: [u8; 3]) {
    if row.len() < 3 {
        return;
    }
    row[..3].copy_from_slice(&c);
    let mut done = 3;
    while done < row.len() {
        let n = done.min(row.len() - done);
        row.copy_within(..n, done);
        done += n;
    }
}
