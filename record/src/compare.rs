//! Regression check of the detector on a recorded drive: the detections recorded live
//! (baseline) against those of the same frames played through the detector again
//! (candidate: a recording of `ads-vehicle --source recording --path BASELINE`).
//!
//! The replaying vehicle numbers frames from 0 in the baseline's order, so the candidate's
//! frame `k` is the baseline's `k`-th recorded frame. Replayed frames are decoded JPEGs, not
//! the raw pixels the live detector saw: small differences are expected, hence tolerances.

use crate::frames::Drive;
use ads_protocol::{Detections, LaneXs};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// Largest 95th-percentile difference of the lateral offset, m.
    pub offset_p95_m: f64,
    /// Largest share of compared frames whose lines found or object count differ.
    pub mismatch_share: f64,
    /// Fewest frames that must be compared for a verdict at all.
    pub min_frames: usize,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances { offset_p95_m: 0.10, mismatch_share: 0.05, min_frames: 20 }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Comparison {
    /// Frames with a detection in both.
    pub frames_compared: usize,
    pub baseline_detections: usize,
    pub candidate_detections: usize,
    /// Over frames where both found a lane.
    pub offset_diff_mean_m: f64,
    pub offset_diff_p95_m: f64,
    pub offset_diff_max_m: f64,
    /// Frames where the two disagree on which lines (left, right) were found.
    pub lines_found_mismatches: usize,
    /// Frames where the two found a different number of objects.
    pub object_count_mismatches: usize,
    pub pass: bool,
    /// Why it failed, in words.
    pub failures: Vec<String>,
}

fn found(xs: &LaneXs) -> bool {
    xs.iter().any(Option::is_some)
}

fn lines_found(d: &Detections) -> (bool, bool) {
    d.lanes.as_ref().map_or((false, false), |l| (found(&l.left), found(&l.right)))
}

fn offset(d: &Detections) -> Option<f64> {
    d.lanes.as_ref().map(|l| f64::from(l.lateral_offset_m)).filter(|o| o.is_finite())
}

pub fn compare(baseline: &Drive, candidate: &Drive, tolerances: &Tolerances) -> Comparison {
    let by_frame: HashMap<u64, &Detections> =
        baseline.detections.iter().map(|d| (d.body.frame_id, &d.body)).collect();
    let mut diffs = Vec::new();
    let (mut compared, mut lines_mismatch, mut objects_mismatch) = (0, 0, 0);
    for replayed in &candidate.detections {
        let Some(frame) = usize::try_from(replayed.body.frame_id).ok().and_then(|k| baseline.frames.get(k))
        else {
            continue;
        };
        let Some(live) = by_frame.get(&frame.info.body.frame_id) else { continue };
        compared += 1;
        lines_mismatch += usize::from(lines_found(live) != lines_found(&replayed.body));
        objects_mismatch += usize::from(live.objects.len() != replayed.body.objects.len());
        if let (Some(a), Some(b)) = (offset(live), offset(&replayed.body)) {
            diffs.push((a - b).abs());
        }
    }
    diffs.sort_by(f64::total_cmp);
    let p95 = diffs.get((diffs.len() * 95 / 100).min(diffs.len().saturating_sub(1))).copied().unwrap_or(0.0);
    let mean = if diffs.is_empty() { 0.0 } else { diffs.iter().sum::<f64>() / diffs.len() as f64 };
    let mut failures = Vec::new();
    if compared < tolerances.min_frames {
        failures.push(format!(
            "only {compared} frames have detections in both (at least {} needed)",
            tolerances.min_frames
        ));
    }
    if p95 > tolerances.offset_p95_m {
        failures.push(format!(
            "lane offset differs by {p95:.3} m at the 95th percentile (tolerance {:.3} m)",
            tolerances.offset_p95_m
        ));
    }
    let share = |n: usize| if compared == 0 { 0.0 } else { n as f64 / compared as f64 };
    for (what, n) in [("lines found", lines_mismatch), ("object count", objects_mismatch)] {
        if share(n) > tolerances.mismatch_share {
            failures.push(format!(
                "{what} differs in {n} of {compared} frames (tolerance {:.0}%)",
                tolerances.mismatch_share * 100.0
            ));
        }
    }
    Comparison {
        frames_compared: compared,
        baseline_detections: baseline.detections.len(),
        candidate_detections: candidate.detections.len(),
        offset_diff_mean_m: mean,
        offset_diff_p95_m: p95,
        offset_diff_max_m: diffs.last().copied().unwrap_or(0.0),
        lines_found_mismatches: lines_mismatch,
        object_count_mismatches: objects_mismatch,
        pass: failures.is_empty(),
        failures,
    }
}
