//! The TuSimple lane benchmark's metric, exactly as its `LaneEval.bench` (evaluate/lane.py in
//! TuSimple/tusimple-benchmark) computes it, so our numbers compare with published ones.
//!
//! Per frame: each ground-truth lane gets a threshold of 20 px / cos(angle), the angle from a
//! straight-line fit x(y) through its labelled points; a predicted lane's accuracy against it
//! is the share of *all* rows (absent points included, compared as −100 like the original)
//! within that threshold; the lane is matched when the best prediction reaches 0.85. Quirks
//! kept on purpose: with more than four truth lanes the worst one is forgiven (in accuracy and
//! in one false negative), more than two extra predictions zero the frame, and FN is divided by
//! min(truth lanes, 4). Frames aggregate by plain mean.

use serde::{Deserialize, Serialize};

/// Column tolerance (px) for a vertical lane; divided by cos(angle) for slanted ones.
pub const PIXEL_THRESH: f64 = 20.0;
/// Share of rows a prediction must get right for its truth lane to count as found.
pub const PT_THRESH: f64 = 0.85;
/// Frames slower than this (ms) score (0, 0, 1), as in the benchmark.
pub const MAX_RUNNING_TIME_MS: f64 = 200.0;

/// Where the original marks a missing point (TuSimple labels use −2).
const ABSENT: f64 = -2.0;
/// What `line_accuracy` compares absent points as.
const ABSENT_AS: f64 = -100.0;

/// One frame's (or the mean of many frames') result. All three are shares, 0..=1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub accuracy: f64,
    pub fp: f64,
    #[serde(rename = "fn")]
    pub fn_: f64,
}

/// Lanes that cannot be scored: the original raises "Format of lanes error".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("format of lanes error: a {which} lane has {got} points for {rows} h_samples")]
pub struct FormatError {
    pub which: &'static str,
    pub got: usize,
    pub rows: usize,
}

fn xs(lane: &[Option<f32>]) -> impl Iterator<Item = f64> + '_ {
    lane.iter().map(|x| x.map_or(ABSENT, f64::from))
}

/// Angle (rad) of the least-squares line x = k·y + b through the lane's points with x ≥ 0;
/// 0 with fewer than two such points.
pub fn angle(lane: &[Option<f32>], h_samples: &[u32]) -> f64 {
    let pts: Vec<(f64, f64)> =
        xs(lane).zip(h_samples).filter(|(x, _)| *x >= 0.0).map(|(x, &y)| (x, f64::from(y))).collect();
    if pts.len() < 2 {
        return 0.0;
    }
    let n = pts.len() as f64;
    let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
    let (mut sxy, mut syy) = (0.0, 0.0);
    for (x, y) in &pts {
        sxy += (y - my) * (x - mx);
        syy += (y - my) * (y - my);
    }
    // sklearn's least squares gives slope 0 for a degenerate (single-row) fit.
    let k = if syy > 0.0 { sxy / syy } else { 0.0 };
    k.atan()
}

/// Share of rows where prediction and truth are within `thresh` px, absent points (x < 0)
/// compared as −100: both absent is a hit, one absent a miss.
pub fn line_accuracy(pred: &[Option<f32>], gt: &[Option<f32>], thresh: f64) -> f64 {
    let fix = |x: f64| if x >= 0.0 { x } else { ABSENT_AS };
    let hits = xs(pred).zip(xs(gt)).filter(|&(p, g)| (fix(p) - fix(g)).abs() < thresh).count();
    hits as f64 / gt.len() as f64
}

/// `LaneEval.bench` for one frame: `pred` and `gt` are lanes sampled at `h_samples`.
pub fn bench(
    pred: &[Vec<Option<f32>>],
    gt: &[Vec<Option<f32>>],
    h_samples: &[u32],
    running_time_ms: f64,
) -> Result<Score, FormatError> {
    let rows = h_samples.len();
    for (which, lanes) in [("predicted", pred), ("truth", gt)] {
        if let Some(bad) = lanes.iter().find(|l| l.len() != rows) {
            return Err(FormatError { which, got: bad.len(), rows });
        }
    }
    if running_time_ms > MAX_RUNNING_TIME_MS || gt.len() + 2 < pred.len() {
        return Ok(Score { accuracy: 0.0, fp: 0.0, fn_: 1.0 });
    }
    let mut line_accs = Vec::with_capacity(gt.len());
    let (mut fn_, mut matched) = (0.0, 0.0);
    for g in gt {
        let thresh = PIXEL_THRESH / angle(g, h_samples).cos();
        let best = pred
            .iter()
            .map(|p| line_accuracy(p, g, thresh))
            .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
        let best = best.unwrap_or(0.0);
        if best < PT_THRESH {
            fn_ += 1.0;
        } else {
            matched += 1.0;
        }
        line_accs.push(best);
    }
    let fp = pred.len() as f64 - matched;
    if gt.len() > 4 && fn_ > 0.0 {
        fn_ -= 1.0;
    }
    let mut s: f64 = line_accs.iter().sum();
    if gt.len() > 4 {
        s -= line_accs.iter().copied().fold(f64::INFINITY, f64::min);
    }
    let capped = (gt.len() as f64).clamp(1.0, 4.0);
    Ok(Score {
        accuracy: s / capped,
        fp: if pred.is_empty() { 0.0 } else { fp / pred.len() as f64 },
        fn_: fn_ / capped,
    })
}

/// Running mean of frame scores, as `bench_one_submit` averages them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    pub sum: Score,
    pub frames: u64,
}

impl Mean {
    pub fn add(&mut self, s: Score) {
        self.sum.accuracy += s.accuracy;
        self.sum.fp += s.fp;
        self.sum.fn_ += s.fn_;
        self.frames += 1;
    }

    pub fn merge(&mut self, other: &Mean) {
        self.sum.accuracy += other.sum.accuracy;
        self.sum.fp += other.sum.fp;
        self.sum.fn_ += other.sum.fn_;
        self.frames += other.frames;
    }

    /// The mean score; zeros before any frame.
    pub fn mean(&self) -> Score {
        let n = self.frames.max(1) as f64;
        Score { accuracy: self.sum.accuracy / n, fp: self.sum.fp / n, fn_: self.sum.fn_ / n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten rows, 10 px apart.
    fn rows() -> Vec<u32> {
        (0..10).map(|i| 300 + 10 * i).collect()
    }

    /// A vertical lane at column `x` on every row.
    fn vertical(x: f32) -> Vec<Option<f32>> {
        vec![Some(x); 10]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn perfect_prediction_scores_one() {
        let gt = vec![vertical(100.0), vertical(300.0)];
        let s = bench(&gt, &gt, &rows(), 0.0).expect("well formed");
        assert_eq!(s, Score { accuracy: 1.0, fp: 0.0, fn_: 0.0 });
    }

    #[test]
    fn nineteen_pixels_off_is_a_hit_and_twenty_one_a_miss() {
        let gt = vec![vertical(100.0)];
        let s = bench(&[vertical(119.0)], &gt, &rows(), 0.0).expect("well formed");
        assert_eq!(s, Score { accuracy: 1.0, fp: 0.0, fn_: 0.0 });
        let s = bench(&[vertical(121.0)], &gt, &rows(), 0.0).expect("well formed");
        assert_eq!(s, Score { accuracy: 0.0, fp: 1.0, fn_: 1.0 });
        // Exactly 20 px is a miss: the comparison is strict.
        assert!(close(line_accuracy(&vertical(120.0), &gt[0], PIXEL_THRESH), 0.0));
    }

    #[test]
    fn a_steep_lane_gets_a_wider_threshold() {
        // x = 2y: 63.4° from vertical, threshold 20 / cos(63.4°) = 44.7 px.
        let steep: Vec<Option<f32>> = rows().iter().map(|&y| Some(2.0 * y as f32)).collect();
        let angle = super::angle(&steep, &rows());
        assert!(close(angle, 2f64.atan()), "{angle}");
        let shifted: Vec<Option<f32>> = steep.iter().map(|x| x.map(|x| x + 40.0)).collect();
        let s =
            bench(std::slice::from_ref(&shifted), std::slice::from_ref(&steep), &rows(), 0.0).expect("ok");
        assert_eq!(s.accuracy, 1.0);
        let further: Vec<Option<f32>> = steep.iter().map(|x| x.map(|x| x + 46.0)).collect();
        let s = bench(&[further], &[steep], &rows(), 0.0).expect("ok");
        assert_eq!(s.accuracy, 0.0);
    }

    #[test]
    fn a_missing_lane_is_a_false_negative_and_an_extra_one_a_false_positive() {
        let gt = vec![vertical(100.0), vertical(300.0)];
        let s = bench(&[vertical(100.0)], &gt, &rows(), 0.0).expect("ok");
        assert_eq!(s, Score { accuracy: 0.5, fp: 0.0, fn_: 0.5 });
        let s = bench(&[vertical(100.0), vertical(300.0), vertical(500.0)], &gt, &rows(), 0.0).expect("ok");
        assert!(close(s.accuracy, 1.0) && close(s.fp, 1.0 / 3.0) && close(s.fn_, 0.0), "{s:?}");
        // No prediction at all: no FP (0/0 is taken as 0), every lane missed.
        let s = bench(&[], &gt, &rows(), 0.0).expect("ok");
        assert_eq!(s, Score { accuracy: 0.0, fp: 0.0, fn_: 1.0 });
    }

    #[test]
    fn absent_points_count_on_every_row() {
        // Truth visible on the lower 8 rows; a prediction on all 10 misses the top 2 ...
        let mut gt = vertical(100.0);
        gt[0] = None;
        gt[1] = None;
        assert!(close(line_accuracy(&vertical(100.0), &gt, PIXEL_THRESH), 0.8));
        // ... and one absent where the truth is absent gets them.
        assert!(close(line_accuracy(&gt, &gt, PIXEL_THRESH), 1.0));
        // Negative columns are absent too, as in the original.
        let mut neg = gt.clone();
        neg[0] = Some(-5.0);
        assert!(close(line_accuracy(&neg, &gt, PIXEL_THRESH), 1.0));
        // The angle is fitted through the present points only.
        let mut slanted: Vec<Option<f32>> = rows().iter().map(|&y| Some(y as f32)).collect();
        slanted[9] = None;
        assert!(close(angle(&slanted, &rows()), std::f64::consts::FRAC_PI_4));
        assert_eq!(angle(&[None, Some(3.0), None], &[1, 2, 3]), 0.0);
    }

    #[test]
    fn more_than_four_truth_lanes_forgive_the_worst() {
        let gt: Vec<_> = (0..5).map(|i| vertical(100.0 + 200.0 * i as f32)).collect();
        // Four of five found exactly: the missed one is forgiven in accuracy and FN.
        let s = bench(&gt[..4], &gt, &rows(), 0.0).expect("ok");
        assert_eq!(s, Score { accuracy: 1.0, fp: 0.0, fn_: 0.0 });
        // Three of five: one miss forgiven, one counted (of 4).
        let s = bench(&gt[..3], &gt, &rows(), 0.0).expect("ok");
        assert!(close(s.accuracy, 0.75) && close(s.fn_, 0.25) && close(s.fp, 0.0), "{s:?}");
    }

    #[test]
    fn too_many_predictions_or_too_slow_zero_the_frame() {
        let gt = vec![vertical(100.0)];
        let pred: Vec<_> = (0..4).map(|i| vertical(100.0 + 100.0 * i as f32)).collect();
        let zero = Score { accuracy: 0.0, fp: 0.0, fn_: 1.0 };
        assert_eq!(bench(&pred, &gt, &rows(), 0.0).expect("ok"), zero);
        assert_eq!(bench(&pred[..3], &gt, &rows(), 0.0).expect("ok").accuracy, 1.0);
        assert_eq!(bench(&gt, &gt, &rows(), 201.0).expect("ok"), zero);
    }

    #[test]
    fn malformed_lanes_are_an_error() {
        let gt = vec![vertical(100.0)];
        let err = bench(&[vec![Some(1.0); 3]], &gt, &rows(), 0.0).expect_err("short prediction");
        assert_eq!(err, FormatError { which: "predicted", got: 3, rows: 10 });
        assert!(bench(&gt, &[vec![None; 11]], &rows(), 0.0).is_err());
    }

    #[test]
    fn frames_average() {
        let mut m = Mean::default();
        m.add(Score { accuracy: 1.0, fp: 0.0, fn_: 0.0 });
        m.add(Score { accuracy: 0.5, fp: 0.5, fn_: 1.0 });
        assert_eq!(m.mean(), Score { accuracy: 0.75, fp: 0.25, fn_: 0.5 });
        assert_eq!(Mean::default().mean(), Score::default());
    }
}
