//! The lane width, learned while driving.
//!
//! Real lanes are 2.7 to 4 m wide and a dashcam's calibration is only approximately metric,
//! so a fixed width would misplace the search for a missing line and distrust correct pairs.
//! The width starts at the configured value and follows the width measured between two
//! confident lines, slowly, and only within a plausible band around the configured value.

use super::fit::Fit;

/// Share of each confident measurement taken into the running width.
const RATE: f64 = 0.05;
/// Both lines need this much confidence in a frame for it to teach the width.
const MIN_CONFIDENCE: f64 = 0.5;
/// The learned width stays within these multiples of the configured one.
const BAND: (f64, f64) = (0.7, 1.45);

#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneWidth {
    nominal: f64,
    current: f64,
}

impl LaneWidth {
    pub(crate) fn new(nominal: f64) -> Self {
        Self { nominal, current: nominal }
    }

    pub(crate) fn get(&self) -> f64 {
        self.current
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.nominal;
    }

    /// Learns from this frame's two lines, measured where both have paint.
    pub(crate) fn update(&mut self, left: Option<(&Fit, f64)>, right: Option<(&Fit, f64)>) {
        let (Some((l, lc)), Some((r, rc))) = (left, right) else { return };
        if lc < MIN_CONFIDENCE || rc < MIN_CONFIDENCE {
            return;
        }
        let y = l.y_min.max(r.y_min);
        let heading = l.poly.slope(y).atan();
        let measured = (r.poly.x(y) - l.poly.x(y)) * heading.cos();
        if (BAND.0 * self.nominal..=BAND.1 * self.nominal).contains(&measured) {
            self.current += RATE * (measured - self.current);
        }
    }
}
