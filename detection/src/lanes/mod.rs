//! Classical lane detection with OpenCV: the ego lane's left and right lines.
//!
//! Per frame:
//! 1. `warp` — perspective warp of the camera image to a bird's-eye view of the ground, from a
//!    calibration derived from a pinhole model of the camera (`pinhole`, `config`);
//! 2. `mask` — paint: pixels brighter or yellower than the road a line-width to both sides;
//! 3. `locate` — each line's pixels: around last frame's lines; or from scratch with the
//!    lane-shape histogram (`histogram`) and sliding windows along its shape (`search`); a
//!    missing line a lane width beside its partner; plus the neighbouring lanes' lines;
//! 4. `fit` — all lines fitted at once as parallel curves `x = a·y² + b·y + c` in ground
//!    metres, with a straight-line correction of the near road;
//! 5. `confidence` — how far to trust each line; `track` — a running average per line that
//!    refuses jumps; `width` — the lane width, learned;
//! 6. `pose` — back to image columns at the requested rows, and the car's pose in its lane.
//!
//! Everything after the warp scales with the bird's-eye image, not the camera's: the warp is
//! the one step that reads the whole frame. Buffers are kept between frames, so a steady
//! stream of frames allocates only the small vectors of the result.

mod confidence;
mod config;
mod fit;
mod histogram;
mod locate;
mod mask;
mod pinhole;
mod pose;
mod search;
mod track;
mod warp;
mod width;

use ads_protocol::LaneDetection;
use opencv::core::{Mat, Scalar, Vec3b, CV_8UC3};
use opencv::prelude::*;

use crate::{BgrFrame, FrameError};

pub use config::LaneConfig;

use fit::Poly;
use histogram::ShapeHistogram;
use mask::Masker;
use search::MaskView;
use track::LineTracker;
use warp::{BirdsEye, RowLine};
use width::LaneWidth;

/// Lines are reported this far (m) nearer than the bird's-eye view's near edge: the
/// simulator's bottom image row sees a hair nearer than its view starts.
const NEAR_SLACK_M: f64 = 0.5;

/// Finds the lane the car is in. Keeps state between frames (smoothing, the previous lines
/// to search around), so one detector follows one camera.
#[derive(Debug)]
pub struct LaneDetector {
    cfg: LaneConfig,
    /// Calibration and buffers for the current frame size, built on the first frame.
    prepared: Option<Prepared>,
    /// Copy of the last frame when it came with padded rows.
    packed: Mat,
    warped: Mat,
    histogram: ShapeHistogram,
    /// Pixels of each line this frame: ego left, ego right, and the neighbours beyond them.
    points: [Vec<(f32, f32)>; fit::MAX_LINES],
    lines: [LineTracker; 2],
    width: LaneWidth,
}

#[derive(Debug)]
struct Prepared {
    eye: BirdsEye,
    masker: Masker,
    /// The ground line of each requested sample row, for the `h_samples` they were made for.
    rows_for: Vec<u32>,
    rows: Vec<Option<RowLine>>,
}

impl Prepared {
    fn new(cfg: &LaneConfig, width: u32, height: u32) -> Result<Self, FrameError> {
        Ok(Self {
            eye: BirdsEye::new(cfg, width, height)?,
            masker: Masker::new(cfg)?,
            rows_for: Vec::new(),
            rows: Vec::new(),
        })
    }
}

/// Index of each line in the detector's arrays.
pub(crate) const LEFT: usize = 0;
pub(crate) const RIGHT: usize = 1;

impl LaneDetector {
    pub fn new(config: LaneConfig) -> Self {
        Self {
            prepared: None,
            packed: Mat::default(),
            warped: Mat::default(),
            histogram: ShapeHistogram::default(),
            points: Default::default(),
            lines: [LineTracker::default(), LineTracker::default()],
            width: LaneWidth::new(f64::from(config.lane_width_m)),
            cfg: config,
        }
    }

    pub fn config(&self) -> &LaneConfig {
        &self.cfg
    }

    /// The last frame's bird's-eye view (BGR) and its paint mask, for debugging and pictures;
    /// None before the first frame.
    pub fn birdseye(&self) -> Option<(&Mat, &Mat)> {
        self.prepared.as_ref().map(|p| (&self.warped, &p.masker.mask))
    }

    /// Forgets the lines of earlier frames, e.g. after a respawn or a camera restart: the
    /// next frame is searched from scratch.
    pub fn reset(&mut self) {
        self.lines.iter_mut().for_each(LineTracker::reset);
        self.width.reset();
    }

    /// Detects the ego lane's left and right lines; output sampled at `h_samples` rows.
    pub fn detect(&mut self, frame: BgrFrame<'_>, h_samples: &[u32]) -> Result<LaneDetection, FrameError> {
        frame.check()?;
        let prep = match self.prepared.take() {
            Some(p) if p.eye.frame == (frame.width, frame.height) => p,
            // A new size means a new camera: the lines of the old one are forgotten too.
            _ => {
                self.reset();
                Prepared::new(&self.cfg, frame.width, frame.height)?
            }
        };
        let prep = self.prepared.insert(prep);
        let (w, h) = (frame.width as usize, frame.height as usize);
        if frame.stride as usize == w * 3 {
            // Zero-copy: OpenCV reads the caller's bytes (from the ring) in place.
            let src = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, &frame.data[..w * h * 3])?;
            prep.eye.warp(&src, &mut self.warped)?;
        } else {
            copy_rows(frame, &mut self.packed)?;
            prep.eye.warp(&self.packed, &mut self.warped)?;
        }
        prep.masker.run(&self.warped)?;
        let mask = MaskView {
            data: prep.masker.mask.data_bytes()?,
            width: prep.masker.mask.cols() as usize,
            height: prep.masker.mask.rows() as usize,
        };
        let lane = self.width.get();
        let locator = locate::Locator { cfg: &self.cfg, eye: &prep.eye, mask, lane };
        let fits = locator.locate(&mut self.histogram, &mut self.points, &self.lines);
        let judged = [(LEFT, -1.0), (RIGHT, 1.0)].map(|(i, side)| {
            let other = fits[1 - i].as_ref();
            fits[i].as_ref().map(|f| (f, confidence::line_confidence(f, other, side, lane, &self.cfg)))
        });
        for (tracker, judged) in self.lines.iter_mut().zip(judged) {
            tracker.update(judged, &self.cfg);
        }
        self.width.update(judged[LEFT], judged[RIGHT]);
        if prep.rows_for != h_samples {
            prep.rows_for = h_samples.to_vec();
            prep.rows = h_samples.iter().map(|&v| prep.eye.row_line(f64::from(v))).collect();
        }
        Ok(report(&self.cfg, &self.lines, self.width.get(), &prep.rows, frame.width, h_samples))
    }
}

/// The result for the caller: each usable line sampled at `h_samples`, and the lane pose.
fn report(
    cfg: &LaneConfig,
    lines: &[LineTracker; 2],
    lane_width: f64,
    rows: &[Option<RowLine>],
    width: u32,
    h_samples: &[u32],
) -> LaneDetection {
    let min_conf = f64::from(cfg.min_confidence);
    let usable = |t: &LineTracker| t.poly.filter(|_| t.confidence >= min_conf);
    let (left, right) = (usable(&lines[LEFT]), usable(&lines[RIGHT]));
    let near = f64::from(cfg.near_m);
    let sample = |line: Option<Poly>, tracker: &LineTracker| -> Vec<Option<f32>> {
        let Some(poly) = line else { return vec![None; rows.len()] };
        let nearest = f64::from(cfg.near_m) - NEAR_SLACK_M;
        let limit = (tracker.y_max + f64::from(cfg.max_extrapolation_m)).min(f64::from(cfg.max_range_m));
        rows.iter()
            .map(|row| {
                let row = row.as_ref()?;
                let (u, y) = pose::cross_row(&poly, row, width)?;
                // The near-road correction, in pixels along this row.
                let m_per_px = row.d.0 / (f64::from(width) - 1.0);
                let u = u + (tracker.fix.at(y, near, locate::NEAR_BAND_M) / m_per_px) as f32;
                if !(0.0..=f64::from(width) - 1.0).contains(&f64::from(u)) {
                    return None;
                }
                // Nothing nearer than the bird's-eye view: below it is the car's own bonnet
                // on a dashcam, and no paint was looked for there.
                (y <= limit && y >= nearest).then_some(u)
            })
            .collect()
    };
    let half = lane_width / 2.0;
    let centre = match (left, right) {
        (Some(l), Some(r)) => Some(l.blend(&r, 0.5)),
        (Some(l), None) => Some(l.shifted(half)),
        (None, Some(r)) => Some(r.shifted(-half)),
        (None, None) => None,
    };
    let fix = match (left, right) {
        (Some(_), Some(_)) => lines[LEFT].fix.blend(&lines[RIGHT].fix, 0.5),
        (Some(_), None) => lines[LEFT].fix,
        (None, Some(_)) => lines[RIGHT].fix,
        (None, None) => Default::default(),
    };
    // The correction's straight line, carried back from the near edge to the car.
    let centre = centre.map(|c| Poly { b: c.b + fix.slope, c: c.c + fix.value - fix.slope * near, ..c });
    let lane = centre.map(|c| pose::lane_pose(&c));
    let straight = 1.0 / f64::from(cfg.straight_radius_m.max(1.0));
    LaneDetection {
        h_samples: h_samples.to_vec(),
        left: sample(left, &lines[LEFT]),
        right: sample(right, &lines[RIGHT]),
        left_confidence: if left.is_some() { lines[LEFT].confidence as f32 } else { 0.0 },
        right_confidence: if right.is_some() { lines[RIGHT].confidence as f32 } else { 0.0 },
        lateral_offset_m: lane.map_or(0.0, |p| p.offset as f32),
        heading_error_rad: lane.map_or(0.0, |p| p.heading as f32),
        curvature_radius_m: lane.filter(|p| p.curvature.abs() > straight).map(|p| (1.0 / p.curvature) as f32),
    }
}

/// Copies a frame with padded rows into a packed BGR `Mat` (reallocated only on a size change).
fn copy_rows(frame: BgrFrame<'_>, out: &mut Mat) -> opencv::Result<()> {
    let row = frame.width as usize * 3;
    ensure_mat(out, frame.height as i32, frame.width as i32, CV_8UC3)?;
    let dst = out.data_bytes_mut()?;
    for (d, s) in dst.chunks_exact_mut(row).zip(frame.data.chunks(frame.stride as usize)) {
        d.copy_from_slice(&s[..row]);
    }
    Ok(())
}

/// Makes `m` a zeroed `rows`×`cols` matrix of type `typ`, unless it already is that shape.
pub(crate) fn ensure_mat(m: &mut Mat, rows: i32, cols: i32, typ: i32) -> opencv::Result<()> {
    if m.rows() != rows || m.cols() != cols || m.typ() != typ {
        *m = Mat::new_rows_cols_with_default(rows, cols, typ, Scalar::all(0.0))?;
    }
    Ok(())
}
