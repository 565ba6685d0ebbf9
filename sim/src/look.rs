//! How each track looks: colours, light, fog, shadows and asphalt wear.
//!
//! The tracks differ in light on purpose (noon sun, overcast, low sun with tree shadows), so a
//! lane detector tuned on one is tested on the others. Tables that depend only on the track
//! are built here once, so the per-pixel code only looks things up.

use super::noise::{mix64, unit};
use super::road::RoadLayout;
use super::TrackKind;

/// BGR, 0..255.
pub(crate) type Bgr = [f32; 3];

#[derive(Debug, Clone)]
pub(crate) struct Look {
    pub(crate) sky_zenith: Bgr,
    pub(crate) sky_horizon: Bgr,
    pub(crate) hills: Bgr,
    /// Height of the distant hills above the horizon (rad).
    pub(crate) hill_height: f64,
    pub(crate) fog: Bgr,
    /// Fog starts at this distance (m) and closes in over `fog_scale` metres.
    pub(crate) fog_start: f64,
    pub(crate) fog_scale: f64,
    pub(crate) asphalt: Material,
    pub(crate) shoulder: Material,
    pub(crate) grass: Material,
    pub(crate) white: Bgr,
    pub(crate) yellow: Bgr,
    /// Light colour and strength multiplying everything on the ground.
    pub(crate) light: Bgr,
    /// Tree shadows across the road: (share of the lap shaded, darkening 0..1, skew n→s).
    pub(crate) shadows: Option<(f64, f64, f64)>,
    /// Sensor noise amplitude (≈ σ in grey levels).
    pub(crate) noise: f32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Material {
    pub(crate) color: Bgr,
    /// Per-channel response to brightness variation (1 = grey, more green for grass).
    pub(crate) tint: Bgr,
    /// Fine grain amplitude (grey levels, near the camera).
    pub(crate) grain: f32,
    /// Metre-scale blotches (grey levels).
    pub(crate) blotch: f32,
}

impl Look {
    pub(crate) fn new(kind: TrackKind) -> Self {
        let grey = [1.0, 1.0, 1.0];
        let greenish = [0.5, 1.2, 0.9];
        match kind {
            TrackKind::Oval => Self {
                sky_zenith: [215.0, 140.0, 70.0],
                sky_horizon: [238.0, 222.0, 205.0],
                hills: [105.0, 120.0, 95.0],
                hill_height: 0.035,
                fog: [228.0, 216.0, 204.0],
                fog_start: 30.0,
                fog_scale: 320.0,
                asphalt: Material { color: [98.0, 100.0, 104.0], tint: grey, grain: 16.0, blotch: 10.0 },
                shoulder: Material { color: [118.0, 136.0, 152.0], tint: grey, grain: 34.0, blotch: 12.0 },
                grass: Material { color: [48.0, 128.0, 84.0], tint: greenish, grain: 30.0, blotch: 26.0 },
                white: [232.0, 235.0, 236.0],
                yellow: [40.0, 182.0, 226.0],
                light: [1.0, 1.0, 1.0],
                shadows: None,
                noise: 3.0,
            },
            TrackKind::SBends => Self {
                sky_zenith: [196.0, 190.0, 184.0],
                sky_horizon: [216.0, 213.0, 210.0],
                hills: [112.0, 122.0, 110.0],
                hill_height: 0.05,
                fog: [206.0, 204.0, 201.0],
                fog_start: 20.0,
                fog_scale: 200.0,
                asphalt: Material { color: [110.0, 109.0, 107.0], tint: grey, grain: 11.0, blotch: 8.0 },
                shoulder: Material { color: [112.0, 120.0, 126.0], tint: grey, grain: 24.0, blotch: 10.0 },
                grass: Material { color: [68.0, 118.0, 86.0], tint: greenish, grain: 22.0, blotch: 18.0 },
                white: [214.0, 216.0, 216.0],
                yellow: [58.0, 166.0, 205.0],
                light: [1.0, 1.0, 1.0],
                shadows: None,
                noise: 3.5,
            },
            TrackKind::Long => Self {
                sky_zenith: [205.0, 145.0, 95.0],
                sky_horizon: [172.0, 198.0, 232.0],
                hills: [92.0, 98.0, 104.0],
                hill_height: 0.03,
                fog: [178.0, 192.0, 214.0],
                fog_start: 40.0,
                fog_scale: 380.0,
                asphalt: Material { color: [84.0, 88.0, 94.0], tint: grey, grain: 15.0, blotch: 12.0 },
                shoulder: Material { color: [100.0, 120.0, 140.0], tint: grey, grain: 30.0, blotch: 12.0 },
                grass: Material { color: [40.0, 112.0, 92.0], tint: greenish, grain: 28.0, blotch: 24.0 },
                white: [226.0, 230.0, 232.0],
                yellow: [38.0, 176.0, 222.0],
                light: [0.9, 1.0, 1.12],
                shadows: Some((0.35, 0.5, 0.6)),
                noise: 4.0,
            },
        }
    }
}

/// Road wear across the pavement, in cells of this many metres (a power of two, so the pixel
/// loop indexes with a shift).
pub(crate) const WEAR_CELL_SHIFT: u32 = 4; // 1/16 m
/// Shadow cells along the lap are about this long (m).
const SHADOW_CELL: f64 = 0.25;

#[derive(Debug, Clone)]
pub(crate) struct Tables {
    /// Grey-level offset per 1/16 m across the pavement, from `asphalt.0` up: wheel paths are
    /// polished darker, the lane middles oil-stained, the edges less worn.
    pub(crate) wear: Vec<i32>,
    /// Light left per shadow cell along the lap (256 = full sun); empty without shadows.
    pub(crate) shade: Vec<u16>,
    pub(crate) shade_cell: f64,
}

impl Tables {
    pub(crate) fn new(look: &Look, road: &RoadLayout, lap: f64, seed: u64) -> Self {
        let (lo, hi) = road.asphalt;
        let cells = ((hi - lo) * f64::from(1u32 << WEAR_CELL_SHIFT)).ceil() as usize + 1;
        let centres: Vec<f64> = road.lane_centres().collect();
        let bump = |d: f64, sigma: f64| (-(d * d) / (2.0 * sigma * sigma)).exp();
        let wear = (0..cells)
            .map(|i| {
                let n = lo + (i as f64 + 0.5) / f64::from(1u32 << WEAR_CELL_SHIFT);
                let mut v = 0.0;
                for &c in &centres {
                    v -= 9.0 * (bump(n - c - 0.8, 0.25) + bump(n - c + 0.8, 0.25));
                    v -= 4.0 * bump(n - c, 0.3);
                }
                v += 6.0 * (bump(n - lo, 0.4) + bump(n - hi, 0.4));
                v.round() as i32
            })
            .collect();

        let count = (lap / SHADOW_CELL).round().max(1.0) as usize;
        let shade_cell = lap / count as f64;
        let shade = match look.shadows {
            None => Vec::new(),
            Some((share, strength, _)) => shadow_table(count, shade_cell, share, strength, seed),
        };
        Self { wear, shade, shade_cell }
    }
}

/// Bands of shade from roadside trees: stretches of the lap are tree-lined, and within them
/// each tree throws a soft-edged band a few metres wide.
fn shadow_table(count: usize, cell: f64, share: f64, strength: f64, seed: u64) -> Vec<u16> {
    let lap = count as f64 * cell;
    let mut occlusion = vec![0.0f64; count];
    let stretch = 40.0;
    let mut s0 = 0.0;
    let mut k = 0u64;
    while s0 < lap {
        let r = mix64(seed ^ 0x5AD0_0000 ^ k);
        k += 1;
        if unit(r) < share {
            let mut s = s0 + 3.0 * unit(mix64(r));
            let mut j = 0u64;
            while s < s0 + stretch {
                let t = mix64(r ^ (j + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                j += 1;
                let width = 1.5 + 3.0 * unit(t);
                let density = 0.6 + 0.4 * unit(mix64(t));
                let soft = 0.4;
                let span = width + soft;
                for c in (s / cell).floor() as i64..=((s + span) / cell).ceil() as i64 {
                    let d = c as f64 * cell - s;
                    if (0.0..=span).contains(&d) {
                        let inside = (d.min(span - d) / soft).clamp(0.0, 1.0);
                        let o = &mut occlusion[c.rem_euclid(count as i64) as usize];
                        *o = f64::max(*o, inside * density);
                    }
                }
                s += width + 2.0 + 6.0 * unit(mix64(t ^ 1));
            }
        }
        s0 += stretch;
    }
    occlusion.into_iter().map(|o| (256.0 * (1.0 - strength * o)).round() as u16).collect()
}
