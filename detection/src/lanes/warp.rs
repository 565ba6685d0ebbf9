//! The bird's-eye view: one homography from camera pixels to warped pixels, and the affine
//! step from warped pixels to ground metres.
//!
//! Ground coordinates are `x` metres to the right of the car's centreline and `y` metres ahead
//! of the reference point; lane lines are near-vertical curves `x(y)` there.

use opencv::core::{Mat, Point2f, Scalar, Size, BORDER_CONSTANT, DECOMP_LU};
use opencv::imgproc;
use opencv::prelude::*;

use super::LaneConfig;

/// A 3x3 homography, row-major.
type Homography = [f64; 9];

fn apply(h: &Homography, x: f64, y: f64) -> Option<(f64, f64)> {
    let w = h[6] * x + h[7] * y + h[8];
    // Points at or behind the camera's horizon have no image (or no ground point).
    (w > 1e-12).then(|| ((h[0] * x + h[1] * y + h[2]) / w, (h[3] * x + h[4] * y + h[5]) / w))
}

/// The calibration of one frame size, built once and reused while the size stays.
#[derive(Debug)]
pub(crate) struct BirdsEye {
    pub(crate) frame: (u32, u32),
    pub(crate) size: (i32, i32),
    to_warped_mat: Mat,
    to_warped: Homography,
    m_per_px: (f64, f64),
    near: f64,
    centre_col: f64,
}

/// The ground line an image row sees: `x = p.0 + t·d.0`, `y = p.1 + t·d.1`, where t = 0 at
/// the row's first pixel and t = 1 at its last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowLine {
    pub(crate) p: (f64, f64),
    pub(crate) d: (f64, f64),
}

impl BirdsEye {
    pub(crate) fn new(cfg: &LaneConfig, width: u32, height: u32) -> opencv::Result<Self> {
        let (fw, fh) = (width as f32, height as f32);
        let src = cfg.src_quad.map(|[x, y]| Point2f::new(x * fw, y * fh));
        let (ww, wh) = (cfg.warped_width.max(8) as f32, cfg.warped_height.max(8) as f32);
        // Corners map to the outer pixel edges, so pixel centres sit half a pixel inside.
        let dst = [
            Point2f::new(-0.5, -0.5),
            Point2f::new(ww - 0.5, -0.5),
            Point2f::new(ww - 0.5, wh - 0.5),
            Point2f::new(-0.5, wh - 0.5),
        ];
        let to_warped_mat = imgproc::get_perspective_transform_slice(&src, &dst, DECOMP_LU)?;
        // A homography is defined up to scale, sign included; fix the sign so that points in
        // view (the quad's middle) have w > 0 and `apply` can tell them from the far side.
        let mid = |p: &[Point2f; 4]| (f64::from(p[0].x + p[2].x) / 2.0, f64::from(p[0].y + p[2].y) / 2.0);
        Ok(Self {
            frame: (width, height),
            size: (ww as i32, wh as i32),
            to_warped: positive(read_homography(&to_warped_mat)?, mid(&src)),
            to_warped_mat,
            m_per_px: (f64::from(cfg.m_per_px_x), f64::from(cfg.m_per_px_y)),
            near: f64::from(cfg.near_m),
            centre_col: f64::from(cfg.centre_col),
        })
    }

    /// Warps a BGR frame into `out` (reallocated only when its size or type changes).
    pub(crate) fn warp(&self, frame: &impl opencv::core::ToInputArray, out: &mut Mat) -> opencv::Result<()> {
        imgproc::warp_perspective(
            frame,
            out,
            &self.to_warped_mat,
            Size::new(self.size.0, self.size.1),
            imgproc::INTER_LINEAR,
            BORDER_CONSTANT,
            Scalar::all(0.0),
        )
    }

    /// Ground x (m) of a warped column.
    pub(crate) fn col_to_x(&self, col: f64) -> f64 {
        (col - self.centre_col) * self.m_per_px.0
    }

    pub(crate) fn x_to_col(&self, x: f64) -> f64 {
        x / self.m_per_px.0 + self.centre_col
    }

    /// Ground y (m) of a warped row.
    pub(crate) fn row_to_y(&self, row: f64) -> f64 {
        self.near + (f64::from(self.size.1) - 0.5 - row) * self.m_per_px.1
    }

    /// Ground point (x, y) of a camera pixel, None above the horizon.
    pub(crate) fn pixel_to_ground(&self, u: f64, v: f64) -> Option<(f64, f64)> {
        let (c, r) = apply(&self.to_warped, u, v)?;
        Some((self.col_to_x(c), self.row_to_y(r)))
    }

    /// The ground line camera row `v` sees, None at or above the horizon.
    pub(crate) fn row_line(&self, v: f64) -> Option<RowLine> {
        let last = f64::from(self.frame.0) - 1.0;
        let a = self.pixel_to_ground(0.0, v)?;
        let b = self.pixel_to_ground(last, v)?;
        Some(RowLine { p: a, d: (b.0 - a.0, b.1 - a.1) })
    }
}

fn positive(mut h: Homography, (x, y): (f64, f64)) -> Homography {
    if h[6] * x + h[7] * y + h[8] < 0.0 {
        h.iter_mut().for_each(|v| *v = -*v);
    }
    h
}

fn read_homography(m: &Mat) -> opencv::Result<Homography> {
    let mut h = [0.0; 9];
    for (i, v) in h.iter_mut().enumerate() {
        *v = *m.at_2d::<f64>(i as i32 / 3, i as i32 % 3)?;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator's calibration puts its truth where the geometry says: on a straight road
    /// with the car centred, the ego lines are 1.75 m either side at every row.
    #[test]
    fn simulator_truth_lands_on_the_lane_lines() {
        let mut sim = ads_sim::Simulator::new(ads_sim::SimConfig::default());
        sim.respawn(0).expect("spawn point 0");
        let truth = sim.truth();
        let eye = BirdsEye::new(&LaneConfig::for_simulator(), 800, 600).expect("calibration");
        for (side, want) in [(truth.ego_left, -1.75), (truth.ego_right, 1.75)] {
            let lane = &truth.lanes[side.expect("ego line")];
            for (&v, x) in truth.h_samples.iter().zip(lane) {
                let Some(x) = x else { continue };
                let (gx, gy) = eye.pixel_to_ground(f64::from(*x), f64::from(v)).expect("below the horizon");
                // A pixel spans more ground far away: allow half a pixel's width there.
                let row = eye.row_line(f64::from(v)).expect("below the horizon");
                let tol = 0.01 + 0.5 * row.d.0 / 799.0;
                assert!((gx - want).abs() < tol, "row {v}: x {gx:.3} m at {gy:.1} m, want {want}");
            }
        }
    }
}
