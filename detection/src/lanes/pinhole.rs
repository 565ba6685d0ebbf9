//! A pinhole camera over flat ground, pitched but not rolled: the same model the simulator
//! renders with (`ads_sim` camera.rs), used to derive the bird's-eye calibration from a camera
//! description instead of from corners picked by eye.

/// Pixel centres are at integer coordinates, as in the simulator and in OpenCV.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pinhole {
    pub(crate) width: u32,
    pub(crate) height: u32,
    focal: f64,
    cx: f64,
    cy: f64,
    sin_p: f64,
    cos_p: f64,
    cam_height: f64,
}

impl Pinhole {
    /// From the horizontal field of view (rad) and the downward pitch (rad), with the
    /// principal point at the image centre.
    pub(crate) fn from_hfov(width: u32, height: u32, hfov: f64, pitch: f64, cam_height: f64) -> Self {
        let focal = f64::from(width) / 2.0 / (hfov / 2.0).tan();
        Self::new(width, height, focal, pitch, cam_height)
    }

    /// From the focal length (px) and the image row of the horizon, as read off a frame.
    pub(crate) fn from_horizon(
        width: u32,
        height: u32,
        focal: f64,
        horizon_row: f64,
        cam_height: f64,
    ) -> Self {
        let cy = (f64::from(height) - 1.0) / 2.0;
        Self::new(width, height, focal, ((cy - horizon_row) / focal).atan(), cam_height)
    }

    fn new(width: u32, height: u32, focal: f64, pitch: f64, cam_height: f64) -> Self {
        let (sin_p, cos_p) = pitch.sin_cos();
        Self {
            width,
            height,
            focal,
            cx: (f64::from(width) - 1.0) / 2.0,
            cy: (f64::from(height) - 1.0) / 2.0,
            sin_p,
            cos_p,
            cam_height,
        }
    }

    /// Pixel (u, v) of the ground point `right` metres to the right of the camera's axis and
    /// `forward` metres ahead of the camera. The point must be in front of the camera.
    pub(crate) fn project(&self, right: f64, forward: f64) -> (f64, f64) {
        let zc = forward * self.cos_p + self.cam_height * self.sin_p;
        let yc = -forward * self.sin_p + self.cam_height * self.cos_p;
        (self.cx + self.focal * right / zc, self.cy + self.focal * yc / zc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizon_and_centre_line() {
        let p = Pinhole::from_horizon(1280, 720, 1150.0, 423.0, 1.22);
        let (u, v) = p.project(0.0, 1e6);
        assert!((u - 639.5).abs() < 1e-6 && (v - 423.0).abs() < 0.01, "({u}, {v})");
        let (u, _) = p.project(1.0, 10.0);
        assert!(u > 639.5, "right of the axis is right in the image");
    }
}
