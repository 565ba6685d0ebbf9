//! Road cross-sections: where each painted line lies and what it looks like.
//!
//! Offsets are measured from the ego-lane centre (the track's centreline), + = left, so the car
//! drives at offset 0 and the renderer classifies a pixel by its offset alone.

use serde::{Deserialize, Serialize};

use super::TrackKind;

/// Lane width (m), the common highway standard.
pub(crate) const LANE: f64 = 3.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineColor {
    White,
    Yellow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinePattern {
    Solid,
    Dashed,
    /// Two solid stripes with a gap; its truth is the middle of the pair.
    Double,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineStyle {
    pub color: LineColor,
    pub pattern: LinePattern,
}

/// One painted line along the whole track.
#[derive(Debug, Clone, PartialEq)]
pub struct RoadLine {
    /// Lateral position of the line's middle (m from the ego-lane centre, + = left).
    pub offset: f64,
    pub style: LineStyle,
    /// Width of one stripe (m).
    pub stripe_width: f64,
    /// Gap between the stripes of a double line (m).
    pub gap: f64,
    /// Painted length and period of the dashes (m), fitted so a whole number of periods makes
    /// a lap and the pattern has no seam at the start line.
    pub dash: Option<(f64, f64)>,
}

impl RoadLine {
    /// Whether paint is on the ground at arc length `s` (dashes are fixed to the road).
    pub fn painted_at(&self, s: f64) -> bool {
        match self.dash {
            Some((on, period)) => super::modulo(s, period) < on,
            None => true,
        }
    }

    /// (middle, half width) of each stripe.
    pub(crate) fn stripes(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        let half = self.stripe_width / 2.0;
        let apart = if self.style.pattern == LinePattern::Double {
            (self.gap + self.stripe_width) / 2.0
        } else {
            0.0
        };
        let count = if apart > 0.0 { 2 } else { 1 };
        [self.offset + apart, self.offset - apart].into_iter().take(count).map(move |c| (c, half))
    }

    /// Half the width of everything painted, both stripes of a double included.
    pub fn half_extent(&self) -> f64 {
        match self.style.pattern {
            LinePattern::Double => self.gap / 2.0 + self.stripe_width,
            _ => self.stripe_width / 2.0,
        }
    }
}

/// The cross-section of one track's road.
#[derive(Debug, Clone)]
pub(crate) struct RoadLayout {
    /// Left to right (offset descending), the order truth reports them in.
    pub(crate) lines: Vec<RoadLine>,
    /// Paved band (offsets, low to high).
    pub(crate) asphalt: (f64, f64),
    /// Gravel beside the pavement on each side (m).
    pub(crate) shoulder: f64,
}

impl RoadLayout {
    pub(crate) fn new(kind: TrackKind, lap: f64) -> Self {
        use LineColor::{White, Yellow};
        use LinePattern::{Dashed, Double, Solid};
        let h = LANE / 2.0;
        let line = |offset: f64, color, pattern, width: f64, dash: Option<(f64, f64)>| RoadLine {
            offset,
            style: LineStyle { color, pattern },
            stripe_width: width,
            gap: 0.12,
            dash: dash.map(|(on, off)| fit_dash(on, off, lap)),
        };
        let (lines, margin, shoulder) = match kind {
            // One-way, two lanes, driving in the right one: the highway look.
            TrackKind::Oval => (
                vec![
                    line(h + LANE, Yellow, Solid, 0.15, None),
                    line(h, White, Dashed, 0.15, Some((3.0, 9.0))),
                    line(-h, White, Solid, 0.20, None),
                ],
                0.5,
                1.2,
            ),
            // Two-way country road: double yellow between us and oncoming traffic.
            TrackKind::SBends => (
                vec![
                    line(h + LANE, White, Solid, 0.15, None),
                    line(h, Yellow, Double, 0.12, None),
                    line(-h, White, Solid, 0.15, None),
                ],
                0.3,
                1.0,
            ),
            // Three lanes, in the middle one, longer dashes.
            TrackKind::Long => (
                vec![
                    line(h + LANE, Yellow, Solid, 0.15, None),
                    line(h, White, Dashed, 0.15, Some((4.0, 8.0))),
                    line(-h, White, Dashed, 0.15, Some((4.0, 8.0))),
                    line(-h - LANE, White, Solid, 0.20, None),
                ],
                0.9,
                1.5,
            ),
        };
        let hi = lines.first().map_or(h, |l| l.offset + l.half_extent()) + margin;
        let lo = lines.last().map_or(-h, |l| l.offset - l.half_extent()) - margin;
        Self { lines, asphalt: (lo, hi), shoulder }
    }

    /// Middles of the lanes between adjacent lines: where the wheels wear the asphalt.
    pub(crate) fn lane_centres(&self) -> impl Iterator<Item = f64> + '_ {
        self.lines.windows(2).map(|w| (w[0].offset + w[1].offset) / 2.0)
    }
}

/// Stretches a nominal dash (on, off) so that a whole number of periods fills the lap.
fn fit_dash(on: f64, off: f64, lap: f64) -> (f64, f64) {
    let nominal = on + off;
    let period = lap / (lap / nominal).round().max(1.0);
    (on * period / nominal, period)
}
