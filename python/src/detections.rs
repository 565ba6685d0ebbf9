//! `ads._native.DetectionsWriter`: detection records into the `detections` ring, encoded by
//! `ads_protocol::encode_record` exactly as `ads-detection` writes them, so `ads-vehicle`
//! steers from a Python detector unchanged.
//!
//! Everything the caller passes is checked before anything is published: a bad value raises
//! `ValueError` naming the field (and index), and the ring is left as it was.

use crate::errors::ring_error;
use ads_protocol::{encode_record, DetectedObject, Detections, LaneDetection, MAX_DETECTION_RECORD};
use ads_shmem_ipc::{MessageWriter, Stamp};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::{Mutex, PoisonError};

/// Slots of the detections ring, as `ads-detection` creates it.
const SLOTS: u32 = 8;
/// Longest class name accepted.
const MAX_CLASS_CHARS: usize = 64;
/// Most rows a lane may be sampled at.
const MAX_ROWS: usize = 4096;

fn invalid(message: String) -> PyErr {
    PyValueError::new_err(message)
}

fn finite(field: &str, value: f64) -> PyResult<f32> {
    if value.is_finite() && value.abs() <= f64::from(f32::MAX) {
        Ok(value as f32)
    } else {
        Err(invalid(format!("{field} is {value}: must be a finite number")))
    }
}

fn unit(field: &str, value: f64) -> PyResult<f32> {
    let v = finite(field, value)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(format!("{field} is {value}: must be within 0..=1")))
    }
}

/// The columns of one lane line: None where it is not visible, never NaN.
fn lane_xs(field: &str, xs: Vec<Option<f64>>) -> PyResult<Vec<Option<f32>>> {
    xs.into_iter()
        .enumerate()
        .map(|(i, x)| match x {
            None => Ok(None),
            Some(x) if x.is_nan() => Err(invalid(format!(
                "{field}[{i}] is NaN: use None where the line is not visible in that row"
            ))),
            Some(x) => finite(&format!("{field}[{i}]"), x).map(Some),
        })
        .collect()
}

/// Lanes as Python passes them, checked into the protocol's `LaneDetection`.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct LanesArg {
    h_samples: Vec<i64>,
    left: Vec<Option<f64>>,
    right: Vec<Option<f64>>,
    left_confidence: f64,
    right_confidence: f64,
    lateral_offset_m: f64,
    heading_error_rad: f64,
    curvature_radius_m: Option<f64>,
}

impl LanesArg {
    fn check(self) -> PyResult<LaneDetection> {
        let rows = self.h_samples.len();
        if rows == 0 || rows > MAX_ROWS {
            return Err(invalid(format!("h_samples has {rows} rows: must have 1..={MAX_ROWS}")));
        }
        let mut h_samples = Vec::with_capacity(rows);
        for (i, &row) in self.h_samples.iter().enumerate() {
            let row = u32::try_from(row)
                .map_err(|_| invalid(format!("h_samples[{i}] is {row}: must be an image row >= 0")))?;
            if h_samples.last().is_some_and(|&prev| row <= prev) {
                return Err(invalid(format!("h_samples[{i}] is {row}: rows must increase")));
            }
            h_samples.push(row);
        }
        for (field, xs) in [("left", &self.left), ("right", &self.right)] {
            if xs.len() != rows {
                return Err(invalid(format!(
                    "{field} has {} columns for {rows} h_samples: give one per row (None where not visible)",
                    xs.len()
                )));
            }
        }
        let heading = finite("heading_error_rad", self.heading_error_rad)?;
        if heading.abs() > std::f32::consts::PI {
            return Err(invalid(format!("heading_error_rad is {heading}: must be within -pi..=pi")));
        }
        let curvature_radius_m = match self.curvature_radius_m {
            None => None,
            Some(0.0) => return Err(invalid("curvature_radius_m is 0: use None for a straight lane".into())),
            Some(r) => Some(finite("curvature_radius_m", r)?),
        };
        Ok(LaneDetection {
            h_samples,
            left: lane_xs("left", self.left)?,
            right: lane_xs("right", self.right)?,
            left_confidence: unit("left_confidence", self.left_confidence)?,
            right_confidence: unit("right_confidence", self.right_confidence)?,
            lateral_offset_m: finite("lateral_offset_m", self.lateral_offset_m)?,
            heading_error_rad: heading,
            curvature_radius_m,
        })
    }
}

/// An object as Python passes it.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct ObjectArg {
    class: String,
    class_id: i64,
    score: f64,
    x_px: f64,
    y_px: f64,
    w_px: f64,
    h_px: f64,
}

impl ObjectArg {
    fn check(self, i: usize) -> PyResult<DetectedObject> {
        let field = |name: &str| format!("objects[{i}].{name}");
        if self.class.is_empty() || self.class.chars().count() > MAX_CLASS_CHARS {
            return Err(invalid(format!("{} must be 1..={MAX_CLASS_CHARS} characters", field("class"))));
        }
        let class_id = u16::try_from(self.class_id).map_err(|_| {
            invalid(format!("{} is {}: must be within 0..=65535", field("class_id"), self.class_id))
        })?;
        let w_px = finite(&field("w_px"), self.w_px)?;
        let h_px = finite(&field("h_px"), self.h_px)?;
        if w_px < 0.0 || h_px < 0.0 {
            return Err(invalid(format!(
                "{}: a box cannot have a negative size ({w_px} x {h_px})",
                field("w_px/h_px")
            )));
        }
        Ok(DetectedObject {
            class: self.class,
            class_id,
            score: unit(&field("score"), self.score)?,
            x_px: finite(&field("x_px"), self.x_px)?,
            y_px: finite(&field("y_px"), self.y_px)?,
            w_px,
            h_px,
        })
    }
}

/// The writing end of a detections ring (one per ring name, like `ads-detection`).
#[pyclass(module = "ads._native", name = "DetectionsWriter", frozen)]
pub(crate) struct PyDetectionsWriter {
    writer: Mutex<Option<MessageWriter>>,
    #[pyo3(get)]
    name: String,
}

#[pymethods]
impl PyDetectionsWriter {
    /// Creates ring `name` (taking over one a dead writer left). Dropping or closing the
    /// writer removes it, which the vehicle notices at once.
    #[new]
    fn new(name: &str) -> PyResult<Self> {
        let writer = MessageWriter::create(name, MAX_DETECTION_RECORD, SLOTS).map_err(ring_error)?;
        Ok(Self { writer: Mutex::new(Some(writer)), name: name.to_string() })
    }

    /// Publishes the record of one frame; returns its sequence number in the ring.
    /// `lanes` is a dict of the `LaneDetection` fields or None; `objects` a list of dicts of
    /// the `DetectedObject` fields.
    #[pyo3(signature = (*, frame_id, capture_mono_ns, capture_wall_ns, read_ns, processing_us, detector, lanes, objects))]
    #[allow(clippy::too_many_arguments, reason = "keyword-only fields of one record, named at every call")]
    fn publish(
        &self,
        frame_id: u64,
        capture_mono_ns: u64,
        capture_wall_ns: u64,
        read_ns: u64,
        processing_us: u32,
        detector: String,
        lanes: Option<LanesArg>,
        objects: Vec<ObjectArg>,
    ) -> PyResult<u64> {
        if detector.is_empty() || detector.len() > MAX_CLASS_CHARS {
            return Err(invalid(format!("detector must be 1..={MAX_CLASS_CHARS} characters")));
        }
        let record = Detections {
            frame_id,
            capture_ns: capture_wall_ns,
            detector,
            processing_us,
            read_ns,
            control_read_ns: 0,
            lanes: lanes.map(LanesArg::check).transpose()?,
            objects: objects.into_iter().enumerate().map(|(i, o)| o.check(i)).collect::<PyResult<_>>()?,
        };
        let bytes = encode_record(&record);
        let stamp = Stamp { id: frame_id, capture_mono_ns, capture_wall_ns };
        let mut guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let writer = guard.as_mut().ok_or_else(|| invalid("the detections writer is closed".into()))?;
        writer.publish(&bytes, stamp).map_err(ring_error)
    }

    /// Tells the vehicle the detector is alive while it has no frame to answer.
    fn heartbeat(&self) -> PyResult<()> {
        let guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().ok_or_else(|| invalid("the detections writer is closed".into()))?.heartbeat();
        Ok(())
    }

    /// Closes the ring and removes it from /dev/shm.
    fn close(&self) {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}
