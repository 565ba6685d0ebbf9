//! Object detection with OpenCV DNN: SSD-MobileNet-v2 trained on COCO, a TensorFlow frozen
//! graph loaded with OpenCV's TensorFlow importer.
//!
//! The graph (`frozen_inference_graph.pb` with its text description
//! `ssd_mobilenet_v2_coco_2018_03_29.pbtxt`) carries its own preprocessing: its input is the raw
//! 0..=255 RGB image and its first nodes (`Preprocessor/mul`, `Preprocessor/sub`) map it to
//! -1..=1. So the blob is the frame resized to 300x300 with *no* scaling and *no* mean
//! subtraction, only the BGR to RGB swap; scaling here as well would squash every pixel to about
//! -1 and the network would find nothing. Its last node is OpenCV's `DetectionOutput` (NMS
//! already applied, at most 100 boxes), which yields rows of
//! `[batch, class_id, score, left, top, right, bottom]` with the box in 0..=1 of the input;
//! the class ids are those of the 90-id TensorFlow COCO label map (0 is background).

use std::fmt;
use std::path::{Path, PathBuf};

use ads_protocol::DetectedObject;
use opencv::core::{Mat, Scalar, Size, CV_32F};
use opencv::dnn::{self, Net, NetTrait, NetTraitConst};
use opencv::prelude::*;

use crate::{BgrFrame, FrameError};

/// The side of the square input SSD-MobileNet-v2 was trained at.
const DEFAULT_INPUT_SIZE: u32 = 300;

/// Where the detector's model lives and what it reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectConfig {
    /// The frozen TensorFlow graph (`.pb`), weights included. Relative paths are taken as they
    /// are (against the working directory); resolving them against the repository is the
    /// caller's job, see [`ObjectConfig::resolved_against`].
    pub model: PathBuf,
    /// The text graph (`.pbtxt`) OpenCV needs to make sense of the TF object detection graph.
    pub config: PathBuf,
    /// Detections scoring at or below this are dropped.
    pub score_threshold: f32,
    /// The side of the square the frame is resized to before inference: the network's
    /// training size; larger finds smaller objects at a quadratic cost.
    pub input_size: u32,
    /// Keep only these COCO class names (e.g. `["car", "person"]`); `None` keeps all.
    pub classes: Option<Vec<String>>,
}

impl Default for ObjectConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("data/models/frozen_inference_graph.pb"),
            config: PathBuf::from("data/models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt"),
            score_threshold: 0.5,
            input_size: DEFAULT_INPUT_SIZE,
            classes: None,
        }
    }
}

impl ObjectConfig {
    /// This configuration with relative `model` and `config` paths joined onto `base`
    /// (typically the repository root), so it no longer depends on the working directory.
    pub fn resolved_against(&self, base: &Path) -> Self {
        Self { model: base.join(&self.model), config: base.join(&self.config), ..self.clone() }
    }
}

/// Why the detector cannot be built or cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Checked before OpenCV sees the path: OpenCV's own message for a missing file is vague.
    #[error("{what} file {} does not exist (run scripts/fetch-data.sh)", path.display())]
    MissingFile { what: &'static str, path: PathBuf },
    /// OpenCV takes paths as UTF-8 strings.
    #[error("{what} path {} is not valid UTF-8", path.display())]
    NonUtf8Path { what: &'static str, path: PathBuf },
    /// The files exist but OpenCV cannot parse them: truncated, corrupt, or not this kind of model.
    #[error("cannot load model {} (config {}): {source}", model.display(), config.display())]
    Load {
        model: PathBuf,
        config: PathBuf,
        #[source]
        source: opencv::Error,
    },
    /// OpenCV parsed the files yet built no layers.
    #[error("model {} (config {}) loaded as an empty network", model.display(), config.display())]
    EmptyNet { model: PathBuf, config: PathBuf },
    /// A name in `classes` that is not in the COCO label map: filtering on a typo would
    /// silently drop everything.
    #[error("unknown COCO class name {0:?} in `classes`")]
    UnknownClass(String),
    #[error("invalid object detector configuration: {0}")]
    InvalidConfig(String),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("OpenCV error during inference: {0}")]
    Inference(#[source] opencv::Error),
}

impl From<opencv::Error> for ModelError {
    fn from(e: opencv::Error) -> Self {
        Self::Inference(e)
    }
}

/// The 90-id TensorFlow COCO label map (`mscoco_label_map.pbtxt`) the model was trained with,
/// indexed by `id - 1`; ids the 2014 paper dropped are `None`.
const COCO_LABELS: [Option<&str>; 90] = [
    Some("person"),
    Some("bicycle"),
    Some("car"),
    Some("motorcycle"),
    Some("airplane"),
    Some("bus"),
    Some("train"),
    Some("truck"),
    Some("boat"),
    Some("traffic light"),
    Some("fire hydrant"),
    None, // 12
    Some("stop sign"),
    Some("parking meter"),
    Some("bench"),
    Some("bird"),
    Some("cat"),
    Some("dog"),
    Some("horse"),
    Some("sheep"),
    Some("cow"),
    Some("elephant"),
    Some("bear"),
    Some("zebra"),
    Some("giraffe"),
    None, // 26
    Some("backpack"),
    Some("umbrella"),
    None, // 29
    None, // 30
    Some("handbag"),
    Some("tie"),
    Some("suitcase"),
    Some("frisbee"),
    Some("skis"),
    Some("snowboard"),
    Some("sports ball"),
    Some("kite"),
    Some("baseball bat"),
    Some("baseball glove"),
    Some("skateboard"),
    Some("surfboard"),
    Some("tennis racket"),
    Some("bottle"),
    None, // 45
    Some("wine glass"),
    Some("cup"),
    Some("fork"),
    Some("knife"),
    Some("spoon"),
    Some("bowl"),
    Some("banana"),
    Some("apple"),
    Some("sandwich"),
    Some("orange"),
    Some("broccoli"),
    Some("carrot"),
    Some("hot dog"),
    Some("pizza"),
    Some("donut"),
    Some("cake"),
    Some("chair"),
    Some("couch"),
    Some("potted plant"),
    Some("bed"),
    None, // 66
    Some("dining table"),
    None, // 68
    None, // 69
    Some("toilet"),
    None, // 71
    Some("tv"),
    Some("laptop"),
    Some("mouse"),
    Some("remote"),
    Some("keyboard"),
    Some("cell phone"),
    Some("microwave"),
    Some("oven"),
    Some("toaster"),
    Some("sink"),
    Some("refrigerator"),
    None, // 83
    Some("book"),
    Some("clock"),
    Some("vase"),
    Some("scissors"),
    Some("teddy bear"),
    Some("hair drier"),
    Some("toothbrush"),
];

/// The COCO name of a class id as the model reports it (1 `person`, 3 `car`, ... 90
/// `toothbrush`); `None` for 0 (background), the unused ids and anything above 90.
pub fn coco_name(class_id: u16) -> Option<&'static str> {
    let index = usize::from(class_id).checked_sub(1)?;
    COCO_LABELS.get(index).copied().flatten()
}

/// The class id of a COCO name, the inverse of [`coco_name`].
fn coco_id(name: &str) -> Option<u16> {
    (1..=90u16).find(|&id| coco_name(id) == Some(name))
}

/// SSD-MobileNet-v2 on OpenCV's CPU backend. Holds the network and the buffers reused from
/// frame to frame; one detector serves one thread (OpenCV parallelises inside `forward`).
pub struct ObjectDetector {
    net: Net,
    score_threshold: f32,
    input_size: i32,
    /// Class ids to keep, sorted; `None` keeps all.
    keep: Option<Vec<u16>>,
    /// The 1x3xNxN float input, reallocated only if the size changes.
    blob: Mat,
    /// The 1x1xKx7 `DetectionOutput` result.
    output: Mat,
    /// Packed copy of a frame whose stride has padding: OpenCV's `Mat` over a borrowed slice
    /// must be continuous here.
    packed: Vec<u8>,
}

impl fmt::Debug for ObjectDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectDetector")
            .field("score_threshold", &self.score_threshold)
            .field("input_size", &self.input_size)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl ObjectDetector {
    /// Loads the network named by `config`. Both files are checked first so a missing one is
    /// named plainly; a corrupt one comes back as [`ModelError::Load`] with OpenCV's message.
    pub fn load(config: &ObjectConfig) -> Result<Self, ModelError> {
        if config.input_size == 0 || config.input_size > 4096 {
            return Err(ModelError::InvalidConfig(format!(
                "input_size {} is outside 1..=4096",
                config.input_size
            )));
        }
        if !config.score_threshold.is_finite() {
            return Err(ModelError::InvalidConfig(format!(
                "score_threshold {} is not finite",
                config.score_threshold
            )));
        }
        let keep = match &config.classes {
            None => None,
            Some(names) => {
                let mut ids = names
                    .iter()
                    .map(|n| coco_id(n).ok_or_else(|| ModelError::UnknownClass(n.clone())))
                    .collect::<Result<Vec<_>, _>>()?;
                ids.sort_unstable();
                ids.dedup();
                Some(ids)
            }
        };
        let model = utf8_existing("model", &config.model)?;
        let text = utf8_existing("model config", &config.config)?;
        let load_err =
            |source| ModelError::Load { model: config.model.clone(), config: config.config.clone(), source };
        let mut net = dnn::read_net_from_tensorflow(model, text).map_err(load_err)?;
        if net.empty().map_err(load_err)? {
            return Err(ModelError::EmptyNet { model: config.model.clone(), config: config.config.clone() });
        }
        // Explicit so a build of OpenCV with OpenCL or CUDA does not pick a target we have not
        // measured or validated the outputs on.
        net.set_preferable_backend(dnn::DNN_BACKEND_OPENCV).map_err(load_err)?;
        net.set_preferable_target(dnn::DNN_TARGET_CPU).map_err(load_err)?;
        tracing::debug!(model = %config.model.display(), "object detector loaded");
        Ok(Self {
            net,
            score_threshold: config.score_threshold,
            // In range: checked above.
            input_size: config.input_size as i32,
            keep,
            blob: Mat::default(),
            output: Mat::default(),
            packed: Vec::new(),
        })
    }

    /// Finds objects in a BGR frame: boxes in pixels of that frame (clamped to it), scores
    /// above the threshold, best first.
    pub fn detect(&mut self, frame: BgrFrame<'_>) -> Result<Vec<DetectedObject>, ModelError> {
        frame.check()?;
        // Only a frame of more than 2^31 rows or bytes per row can fail these.
        let too_big = |_| {
            ModelError::Inference(opencv::Error::new(
                opencv::core::StsOutOfRange,
                format!("frame {}x{} is too large for OpenCV", frame.width, frame.height),
            ))
        };
        let rows = i32::try_from(frame.height).map_err(too_big)?;
        let row_bytes = i32::try_from(frame.width as usize * 3).map_err(too_big)?;
        let bytes = packed_bytes(&frame, &mut self.packed);
        // Zero-copy view of the frame: `rows` x `row_bytes` bytes seen as `rows` x `width` BGR.
        let flat = Mat::new_rows_cols_with_data(rows, row_bytes, bytes)?;
        let bgr = flat.reshape(3, rows)?;
        let side = Size::new(self.input_size, self.input_size);
        // Scale 1, mean 0: the graph normalises itself (see the module docs); swap_rb because
        // the model was trained on RGB; no crop because the TF pipeline squashes the whole
        // frame to the square (`fixed_shape_resizer`), so boxes map back by plain scaling.
        dnn::blob_from_image_to(&bgr, &mut self.blob, 1.0, side, Scalar::default(), true, false, CV_32F)?;
        self.net.set_input(&self.blob, "", 1.0, Scalar::default())?;
        self.net.forward_layer(&mut self.output, "")?;

        let (w, h) = (frame.width as f32, frame.height as f32);
        let mut found = Vec::new();
        for det in self.output.data_typed::<f32>()?.chunks_exact(7) {
            let score = det[2];
            // A NaN anywhere (a broken model) drops the row rather than reporting garbage.
            if det.iter().any(|v| v.is_nan()) || score <= self.score_threshold {
                continue;
            }
            let class_f = det[1];
            if !(0.0..=f32::from(u16::MAX)).contains(&class_f) {
                continue;
            }
            let class_id = class_f as u16;
            let Some(class) = coco_name(class_id) else { continue };
            if let Some(keep) = &self.keep {
                if keep.binary_search(&class_id).is_err() {
                    continue;
                }
            }
            let x0 = det[3].clamp(0.0, 1.0) * w;
            let y0 = det[4].clamp(0.0, 1.0) * h;
            let x1 = det[5].clamp(0.0, 1.0) * w;
            let y1 = det[6].clamp(0.0, 1.0) * h;
            if x1 <= x0 || y1 <= y0 {
                continue;
            }
            found.push(DetectedObject {
                class: class.to_owned(),
                class_id,
                score,
                x_px: x0,
                y_px: y0,
                w_px: x1 - x0,
                h_px: y1 - y0,
            });
        }
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(found)
    }
}

/// The frame's pixels as one continuous slice: the frame itself when packed, else a copy of its
/// rows into `scratch` (reused, so padded frames allocate once).
fn packed_bytes<'a>(frame: &BgrFrame<'a>, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let row = frame.width as usize * 3;
    let height = frame.height as usize;
    if frame.stride as usize == row {
        return &frame.data[..row * height];
    }
    scratch.clear();
    for r in 0..height {
        let start = r * frame.stride as usize;
        scratch.extend_from_slice(&frame.data[start..start + row]);
    }
    scratch
}

/// `path` as the UTF-8 string OpenCV takes, once it is known to exist.
fn utf8_existing<'p>(what: &'static str, path: &'p Path) -> Result<&'p str, ModelError> {
    if !path.is_file() {
        return Err(ModelError::MissingFile { what, path: path.to_owned() });
    }
    path.to_str().ok_or_else(|| ModelError::NonUtf8Path { what, path: path.to_owned() })
}
