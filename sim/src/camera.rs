//! The pinhole camera: which straight ground line each image row sees.
//!
//! With the camera pitched but not rolled, every row below the horizon sees a ground line
//! perpendicular to the car's heading at one forward distance, and the lateral position along
//! it is linear in the column. The renderer and the truth are both built on that fact.

use serde::{Deserialize, Serialize};

/// Where the camera sits on the car and how it looks; pixel centres are at integer coordinates
/// and the principal point is the image centre.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CameraConfig {
    /// Lens height above the ground (m).
    pub height: f64,
    /// Downward tilt (rad). The default puts the horizon at 38 % of the image height and the
    /// first 10-px sample row near 60 m on an 800x600 image.
    pub pitch: f64,
    /// Horizontal field of view, edge to edge (rad).
    pub hfov: f64,
    /// Mounting point ahead of the rear axle (m), roughly the windscreen.
    pub forward: f64,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self { height: 1.3, pitch: 0.146, hfov: 80f64.to_radians(), forward: 1.5 }
    }
}

/// The ground line seen by one row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowGeom {
    /// Forward distance from the camera (m).
    pub(crate) dist: f64,
    /// Lateral metres per pixel along the row; lateral offset at column u is (cx − u)·this.
    pub(crate) per_px: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct Projector {
    f: f64,
    pub(crate) cx: f64,
    cy: f64,
    sin_p: f64,
    cos_p: f64,
    h: f64,
    /// Image row of the horizon (fractional).
    pub(crate) horizon: f64,
    height: u32,
    /// Bearing of each column's ray from the optical axis (rad, + = left).
    pub(crate) bearings: Vec<f64>,
}

impl Projector {
    pub(crate) fn new(cam: &CameraConfig, width: u32, height: u32) -> Self {
        let hfov = cam.hfov.clamp(0.1, 3.0);
        let f = f64::from(width.max(1)) / 2.0 / (hfov / 2.0).tan();
        let cx = (f64::from(width) - 1.0) / 2.0;
        let cy = (f64::from(height) - 1.0) / 2.0;
        let (sin_p, cos_p) = cam.pitch.sin_cos();
        Self {
            f,
            cx,
            cy,
            sin_p,
            cos_p,
            h: cam.height.max(0.05),
            horizon: cy - f * cam.pitch.tan(),
            height,
            bearings: (0..width).map(|u| ((cx - f64::from(u)) / f).atan()).collect(),
        }
    }

    pub(crate) fn focal(&self) -> f64 {
        self.f
    }

    /// The ground line row `v` sees, or None at and above the horizon.
    pub(crate) fn row(&self, v: f64) -> Option<RowGeom> {
        let b = (v - self.cy) / self.f;
        let den = self.sin_p + b * self.cos_p;
        if den <= 1e-9 {
            return None;
        }
        let t = self.h / den;
        Some(RowGeom { dist: t * (self.cos_p - b * self.sin_p), per_px: t / self.f })
    }

    /// Pixel of a ground point given in the camera's ground frame (forward, left), if in front.
    #[cfg(test)]
    pub(crate) fn to_pixel(&self, forward: f64, left: f64) -> Option<(f64, f64)> {
        let zc = forward * self.cos_p + self.h * self.sin_p;
        if zc <= 1e-6 {
            return None;
        }
        let yc = -forward * self.sin_p + self.h * self.cos_p;
        Some((self.cx - self.f * left / zc, self.cy + self.f * yc / zc))
    }

    /// TuSimple's fixed rows: every tenth row from just below the horizon to the bottom.
    pub(crate) fn h_samples(&self) -> Vec<u32> {
        let first = ((self.horizon + 3.0) / 10.0).ceil().max(0.0) as u32 * 10;
        (first..self.height).step_by(10).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_pixels_agree() {
        let p = Projector::new(&CameraConfig::default(), 800, 600);
        assert!(p.horizon > 200.0 && p.horizon < 260.0, "horizon {}", p.horizon);
        for v in [240.0, 300.0, 450.0, 599.0] {
            let g = p.row(v).expect("below the horizon");
            for u in [0.0, 123.0, 799.0] {
                let (pu, pv) = p.to_pixel(g.dist, (p.cx - u) * g.per_px).expect("in front");
                assert!((pu - u).abs() < 1e-9 && (pv - v).abs() < 1e-9, "({u},{v}) -> ({pu},{pv})");
            }
        }
        assert!(p.row(p.horizon - 1.0).is_none());
        let top = p.h_samples()[0];
        let dist = p.row(f64::from(top)).map(|g| g.dist).unwrap_or_default();
        assert!((50.0..62.0).contains(&dist), "first sample row {top} sees {dist} m");
    }
}
