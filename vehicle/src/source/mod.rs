//! Where frames come from: the built-in simulator, a V4L2 camera, a video file, CARLA, an
//! ads-record recording or a GStreamer pipeline (CSI cameras of the boards).
//!
//! The control loop sees one [`FrameSource`]: it asks for the next frame, writes it into a
//! loaned slot of the frames ring (BGR8 at the ring's size, whatever the source delivers),
//! hands the source the controls, and reads back the car's motion. Sources differ in who sets
//! the pace ([`Pacing`]) and in what they know: only the simulator has ground truth, only the
//! simulator and CARLA know the car's real speed and pose.

pub mod camera;
pub mod carla;
pub mod convert;
#[cfg(feature = "gstreamer")]
pub mod gstreamer;
pub mod negotiate;
pub mod recording;
pub mod sim;
pub mod video;

use crate::config::{SourceKind, VehicleConfig};
use ads_sim::{Controls, LaneReference, LaneTruth};

/// Who decides when the next frame is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// The control loop ticks every `period_ns` and takes a frame each tick: the simulator (at
    /// `--fps`) and video files (at the file's frame rate).
    Fixed { period_ns: u64 },
    /// Frames arrive on the source's own clock (a camera's, CARLA's tick): the loop waits for
    /// each one (see [`FrameSource::wait_frame`]).
    External,
}

/// What [`FrameSource::next_frame`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A frame is ready to be written with [`FrameSource::write_frame`]; captured at these
    /// times if the source knows them (else: now).
    Ready { capture_mono_ns: Option<u64>, capture_wall_ns: Option<u64> },
    /// Nothing new this tick.
    NotYet,
    /// The source has no more frames (a video without `--loop`), and why.
    Ended(String),
}

/// The car as the source knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Motion {
    pub x_m: f64,
    pub y_m: f64,
    pub yaw_rad: f64,
    pub speed_mps: f64,
    /// Front wheel angle; `None` when the source has no vehicle model (state then reports the
    /// commanded angle).
    pub steering_rad: Option<f64>,
    pub odometer_m: f64,
}

/// Where the control loop knows the car's speed from (`state.actuator.speed_source`).
///
/// The simulator and CARLA know it; a camera car does not (no wheel encoder yet): its speed
/// loop does not run, the throttle is open-loop and capped by `actuator.max_throttle`. An
/// encoder would be a new variant here and a source (or a sensor beside the source) that
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeedSource {
    Sim,
    Carla,
    /// Unknown: [`Motion::speed_mps`] is 0 and means nothing.
    None,
}

impl SpeedSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SpeedSource::Sim => "sim",
            SpeedSource::Carla => "carla",
            SpeedSource::None => "none",
        }
    }
}

/// A source that could not be opened or stopped working.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Camera(#[from] camera::CameraError),
    #[error(transparent)]
    Video(#[from] video::VideoError),
    #[error(transparent)]
    Carla(#[from] ads_carla_bridge::BridgeError),
    #[error(transparent)]
    Recording(#[from] recording::RecordingError),
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
    #[cfg(feature = "gstreamer")]
    #[error(transparent)]
    Gstreamer(#[from] gstreamer::GstreamerError),
    #[error("this ads-vehicle was built without the {0} source (cargo feature \"{0}\")")]
    NotBuilt(&'static str),
    #[error("binding the simulator's outputs socket {path}: {source}")]
    SimOutputs { path: std::path::PathBuf, source: std::io::Error },
}

/// One frame source, owned by the control loop.
pub trait FrameSource {
    /// `sim`, `camera`, `video`, `carla`, `recording` or `gstreamer`, as in `state.source`.
    fn kind(&self) -> &'static str;
    fn pacing(&self) -> Pacing;
    /// For [`Pacing::External`]: waits until a frame is ready or the monotonic clock reaches
    /// `deadline_ns`; true when a frame is ready.
    fn wait_frame(&mut self, _deadline_ns: u64) -> bool {
        false
    }
    /// Whether a frame is ready now, what it is otherwise.
    fn next_frame(&mut self) -> Result<Next, SourceError>;
    /// Writes the frame found by `next_frame` as BGR8 rows of `stride` bytes.
    fn write_frame(&mut self, frame_id: u64, pixels: &mut [u8], stride: usize);
    /// Of the last `write_frame`, the µs spent on simulated sensor noise (`state.timings.noise_us`).
    fn noise_us(&self) -> u32 {
        0
    }
    /// Applies this tick's controls for `dt` seconds (the simulator steps; CARLA gets them).
    fn actuate(&mut self, _dt: f64, _controls: Controls) {}
    fn motion(&self) -> Motion;
    /// Whether [`Motion::speed_mps`] is a measured (or simulated) speed.
    fn speed_source(&self) -> SpeedSource {
        SpeedSource::None
    }
    /// A reason the source cannot deliver frames right now (CARLA unreachable, camera lost).
    fn problem(&self) -> Option<String> {
        None
    }
    /// Things worth a notice (e.g. CARLA confirming a respawn).
    fn take_notices(&mut self) -> Vec<String> {
        Vec::new()
    }
    fn set_paused(&mut self, _paused: bool) {}
    /// Respawn at a spawn point; `Err` says why not (in words, for the rejection).
    fn respawn(&mut self, spawn_point: usize) -> Result<String, String>;
    /// Ground truth: only the simulator has it.
    fn lane_reference(&self, _lookahead_m: f64) -> Option<LaneReference> {
        None
    }
    fn truth(&self) -> Option<LaneTruth> {
        None
    }
}

/// Opens the source `config` names, at the frames ring's geometry.
pub fn open(config: &VehicleConfig) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(match config.source {
        SourceKind::Sim => Box::new(sim::SimSource::new(config)?),
        SourceKind::Camera => Box::new(camera::CameraSource::open(config)?),
        SourceKind::Video => Box::new(video::VideoSource::open(config)?),
        SourceKind::Carla => Box::new(carla::CarlaSource::start(config)?),
        SourceKind::Recording => Box::new(recording::RecordingSource::open(config)?),
        #[cfg(feature = "gstreamer")]
        SourceKind::Gstreamer => Box::new(gstreamer::GstreamerSource::open(config)?),
        #[cfg(not(feature = "gstreamer"))]
        SourceKind::Gstreamer => return Err(SourceError::NotBuilt("gstreamer")),
    })
}
