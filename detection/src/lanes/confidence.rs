//! How much to trust one frame's fit of a line, 0..=1.
//!
//! Three independent signs, multiplied so any one can veto: enough paint over enough of the
//! road (support), paint that hugs the curve at the precision the camera has at each distance
//! (residual, [`Fit::spread`]), and a partner line about a lane width away (geometry). Each is
//! scaled so a clean marking in the simulator scores near 1.

use super::fit::Fit;
use super::LaneConfig;

/// Spread (m, distance-scaled RMS) at which the fit is worth nothing: wider than any line.
const MAX_RMS_M: f64 = 0.3;
/// Without a partner line the geometry cannot be checked: neither trusted nor doubted much.
const UNPAIRED: f64 = 0.75;

/// `side` is −1 for the left line and +1 for the right one; `lane` the expected width (m).
pub(crate) fn line_confidence(fit: &Fit, other: Option<&Fit>, side: f64, lane: f64, cfg: &LaneConfig) -> f64 {
    let view_m = f64::from(cfg.warped_height) * f64::from(cfg.m_per_px_y);
    let pixels = (fit.pixels as f64 / (4.0 * f64::from(cfg.min_line_pixels.max(1)))).min(1.0);
    let span = ((fit.y_max - fit.y_min) / (0.4 * view_m)).min(1.0);
    let residual = (1.0 - fit.spread / MAX_RMS_M).clamp(0.0, 1.0);
    let geometry = other.map_or(UNPAIRED, |o| {
        // Compare the width where both lines have paint, nearest the car.
        let y = fit.y_min.max(o.y_min);
        let width = side * (fit.poly.x(y) - o.poly.x(y));
        (1.0 - (width - lane).abs() / (f64::from(cfg.lane_width_tolerance) * lane)).clamp(0.0, 1.0)
    });
    (pixels * span).sqrt() * residual * geometry
}
