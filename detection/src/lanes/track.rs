//! Temporal smoothing of one line: a running average of the fit's coefficients that refuses
//! sudden jumps, and the line's confidence over time.
//!
//! A car cannot move a lane line by a metre between two frames, but a shadow edge or the
//! neighbouring lane's line can pull one fit that far; such fits are ignored until they
//! persist for `max_rejections` frames, at which point the road itself must have changed.

use super::fit::{Fit, Poly};
use super::LaneConfig;

/// Confidence left after each frame a line was not seen or its fit rejected.
const DECAY: f64 = 0.6;
/// Jumps are measured at the near end of the view and this far (m) beyond it, where the
/// allowance doubles: far ends of fits swing more.
const FAR_CHECK_M: f64 = 15.0;

#[derive(Debug, Clone, Default)]
pub(crate) struct LineTracker {
    /// The smoothed line, None before the first fit and after a loss.
    pub(crate) poly: Option<Poly>,
    /// Farthest paint (m ahead) supporting it, smoothed the same way.
    pub(crate) y_max: f64,
    pub(crate) fix: super::fit::NearFix,
    pub(crate) confidence: f64,
    /// Frames in a row without an accepted fit.
    misses: u32,
}

impl LineTracker {
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Takes this frame's fit and its confidence (or none) and updates the smoothed line.
    pub(crate) fn update(&mut self, fit: Option<(&Fit, f64)>, cfg: &LaneConfig) {
        let alpha = f64::from(cfg.smoothing).clamp(0.01, 1.0);
        match (fit, self.poly) {
            (Some((fit, conf)), Some(old)) if !self.jumps(&fit.poly, &old, cfg) => {
                self.poly = Some(fit.poly.blend(&old, alpha));
                self.fix = fit.fix.blend(&self.fix, alpha);
                self.y_max = alpha * fit.y_max + (1.0 - alpha) * self.y_max;
                self.confidence = alpha * conf + (1.0 - alpha) * self.confidence;
                self.misses = 0;
            }
            (Some((fit, conf)), old) if old.is_none() || self.misses >= cfg.max_rejections => {
                self.poly = Some(fit.poly);
                self.fix = fit.fix;
                self.y_max = fit.y_max;
                self.confidence = conf;
                self.misses = 0;
            }
            _ => {
                self.misses += 1;
                self.confidence *= DECAY;
                if self.misses > cfg.max_rejections.max(1) * 2 {
                    self.reset();
                }
            }
        }
    }

    fn jumps(&self, new: &Poly, old: &Poly, cfg: &LaneConfig) -> bool {
        let near = f64::from(cfg.near_m);
        let limit = f64::from(cfg.max_jump_m);
        (new.x(near) - old.x(near)).abs() > limit
            || (new.x(near + FAR_CHECK_M) - old.x(near + FAR_CHECK_M)).abs() > 2.0 * limit
    }
}
