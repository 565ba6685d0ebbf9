//! Which pixels belong to which line this frame, and their fits: the search strategy.
//!
//! In order of preference: around last frame's trusted lines; from scratch, by the
//! lane-shape histogram and sliding windows along the shape it finds; and for a line still
//! missing, a lane width beside its partner (lane lines are parallel, so a dashed line in a
//! gap is found through a solid one). Then the neighbouring lanes' outer lines are collected
//! too, because all lines share one shape and the solid outer lines often show it best, and
//! everything is fitted together.

use super::fit::{self, Fit, Poly};
use super::histogram::ShapeHistogram;
use super::search::{self, MaskView, Windows};
use super::track::LineTracker;
use super::warp::BirdsEye;
use super::{LaneConfig, LEFT, RIGHT};

/// Depth (m) of the near road that gets its own straight-line correction.
pub(crate) const NEAR_BAND_M: f64 = 6.0;
/// A missing line is looked for between these multiples of the lane width from its partner.
const PARTNER_BAND: (f64, f64) = (0.7, 1.35);
/// Indices of the neighbouring lanes' outer lines in the point buffers.
const OUTER_LEFT: usize = 2;
const OUTER_RIGHT: usize = 3;

/// Everything one frame's search needs.
pub(crate) struct Locator<'a> {
    pub(crate) cfg: &'a LaneConfig,
    pub(crate) eye: &'a BirdsEye,
    pub(crate) mask: MaskView<'a>,
    /// Expected lane width (m).
    pub(crate) lane: f64,
}

impl Locator<'_> {
    /// This frame's fit of the ego lane's left and right lines.
    pub(crate) fn locate(
        &self,
        histogram: &mut ShapeHistogram,
        points: &mut [Vec<(f32, f32)>; fit::MAX_LINES],
        lines: &[LineTracker; 2],
    ) -> [Option<Fit>; 2] {
        points.iter_mut().for_each(Vec::clear);
        if self.around_priors(points, lines) == [false, false] {
            self.search_afresh(histogram, points);
        }
        let mut fits = self.fit(points);
        if let [Some(f), None] | [None, Some(f)] = [fits[LEFT], fits[RIGHT]] {
            let want = if fits[LEFT].is_some() { RIGHT } else { LEFT };
            if self.partner(histogram, &f.poly, want, &mut points[want]) {
                fits = self.fit(points);
            }
        }
        if self.outer_lines(&fits, points) {
            fits = self.fit(points);
        }
        let mut ego = [fits[LEFT], fits[RIGHT]];
        let with_fit = ego.iter().zip(points.iter()).filter_map(|(f, p)| f.map(|f| (p.as_slice(), f.poly)));
        let fix = fit::near_fix(with_fit, self.near(), NEAR_BAND_M);
        ego.iter_mut().flatten().for_each(|f| f.fix = fix);
        // The car is inside its lane: a "left" line right of it (or the reverse) is some
        // other line.
        if ego[LEFT].is_some_and(|f| f.poly.x(0.0) >= 0.0) {
            ego[LEFT] = None;
        }
        if ego[RIGHT].is_some_and(|f| f.poly.x(0.0) <= 0.0) {
            ego[RIGHT] = None;
        }
        ego
    }

    fn near(&self) -> f64 {
        f64::from(self.cfg.near_m)
    }

    fn enough(&self, p: &[(f32, f32)]) -> bool {
        p.len() >= self.cfg.min_line_pixels as usize
    }

    /// How much a pixel `y` m ahead counts in the fits. Image rows, which TuSimple scores and
    /// which see ever more road each with distance, fall off about as 1/d² per metre of
    /// road; the pose is wanted at the car. So the near road weighs most.
    fn weight(&self) -> impl Fn(f64) -> f64 + Copy {
        let near = self.near();
        let scale = f64::from(self.cfg.fit_weight_distance_m).max(0.1);
        move |y: f64| 1.0 / (1.0 + ((y - near) / scale).powi(2))
    }

    fn margin_px(&self, metres: f32) -> f64 {
        f64::from(metres) / f64::from(self.cfg.m_per_px_x)
    }

    fn fit(&self, points: &mut [Vec<(f32, f32)>; fit::MAX_LINES]) -> [Option<Fit>; fit::MAX_LINES] {
        fit::fit_lines(points, self.cfg.min_line_pixels as usize, self.lane, self.near(), self.weight())
    }

    /// Pixels near last frame's lines, where they were trusted. An untrusted line may have
    /// locked onto the wrong paint, and searching around it would keep it there.
    fn around_priors(
        &self,
        points: &mut [Vec<(f32, f32)>; fit::MAX_LINES],
        lines: &[LineTracker; 2],
    ) -> [bool; 2] {
        let mut found = [false, false];
        for (i, tracker) in lines.iter().enumerate() {
            if let Some(prior) =
                tracker.poly.filter(|_| tracker.confidence >= f64::from(self.cfg.min_confidence))
            {
                search::around(
                    self.mask,
                    self.eye,
                    &prior,
                    self.margin_px(self.cfg.prior_margin_m),
                    &mut points[i],
                );
                found[i] = self.enough(&points[i]);
            }
        }
        found
    }

    /// The lane-shape histogram's nearest line on each side of the car, then sliding windows
    /// along it.
    fn search_afresh(
        &self,
        histogram: &mut ShapeHistogram,
        points: &mut [Vec<(f32, f32)>; fit::MAX_LINES],
    ) -> [bool; 2] {
        let windows = Windows {
            count: self.cfg.windows as usize,
            margin_px: self.margin_px(self.cfg.window_margin_m),
            min_pixels: self.cfg.min_window_pixels,
        };
        let depth = f64::from(self.cfg.histogram_band_m);
        let guides =
            histogram.guides(self.mask, self.eye, self.near(), depth, 1.3 * self.lane, self.weight());
        let mut found = [false, false];
        for (i, guide) in [(LEFT, guides.left), (RIGHT, guides.right)] {
            if let Some(guide) = guide {
                windows.run(self.mask, self.eye, &guide, &mut points[i]);
                found[i] = self.enough(&points[i]);
            }
        }
        found
    }

    /// Pixels of the missing line `want`, about a lane width from the found one, `line`:
    /// right of a left line, left of a right one. True if enough were found.
    fn partner(
        &self,
        histogram: &mut ShapeHistogram,
        line: &Poly,
        want: usize,
        out: &mut Vec<(f32, f32)>,
    ) -> bool {
        let side = if want == RIGHT { 1.0 } else { -1.0 };
        let range = (side * PARTNER_BAND.0 * self.lane, side * PARTNER_BAND.1 * self.lane);
        let depth = f64::from(self.cfg.histogram_band_m);
        let Some(guess) =
            histogram.partner(self.mask, self.eye, self.near(), depth, line, range, self.weight())
        else {
            return false;
        };
        search::around(self.mask, self.eye, &guess, self.margin_px(self.cfg.prior_margin_m), out);
        self.enough(out)
    }

    /// Pixels of the neighbouring lanes' outer lines, a lane width beyond the ego lines.
    /// True if either has enough to join the fit.
    fn outer_lines(
        &self,
        fits: &[Option<Fit>; fit::MAX_LINES],
        points: &mut [Vec<(f32, f32)>; fit::MAX_LINES],
    ) -> bool {
        let mut added = false;
        for (ego, outer, side) in [(LEFT, OUTER_LEFT, -1.0), (RIGHT, OUTER_RIGHT, 1.0)] {
            if let Some(f) = &fits[ego] {
                let guess = f.poly.shifted(side * self.lane);
                search::around(
                    self.mask,
                    self.eye,
                    &guess,
                    self.margin_px(self.cfg.prior_margin_m),
                    &mut points[outer],
                );
                added |= self.enough(&points[outer]);
            }
        }
        added
    }
}
