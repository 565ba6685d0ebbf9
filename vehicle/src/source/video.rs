//! A video file through OpenCV's `VideoCapture`, played at the file's own frame rate and
//! resized to the ring's geometry.
//!
//! At the end of the file without `--loop` the source reports [`Next::Ended`]: the vehicle
//! keeps running (state keeps flowing, the mode says why no frames come) and a `respawn`
//! plays the file again from the start.

use super::convert::{copy_rows, Converter};
use super::{FrameSource, Motion, Next, Pacing, SourceError};
use crate::config::VehicleConfig;
use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio::{VideoCapture, CAP_ANY, CAP_PROP_FPS, CAP_PROP_FRAME_COUNT, CAP_PROP_POS_FRAMES};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("video file {0} does not exist")]
    NotFound(PathBuf),
    #[error("no video file given (--path FILE or [video] path)")]
    NoPath,
    #[error("OpenCV cannot open {path} as a video (is it a video file, and does OpenCV have FFmpeg?)")]
    CannotOpen { path: PathBuf },
    #[error("{path}: OpenCV: {source}")]
    OpenCv { path: PathBuf, source: opencv::Error },
}

#[derive(Debug)]
pub struct VideoSource {
    path: PathBuf,
    capture: VideoCapture,
    looping: bool,
    period_ns: u64,
    converter: Converter,
    decoded: Mat,
    frame: Vec<u8>,
    width: u32,
    /// Frames read since the file (last) started.
    position: u64,
    pub file_fps: f64,
}

fn open_capture(path: &Path) -> Result<VideoCapture, VideoError> {
    let name = path.to_str().ok_or_else(|| VideoError::CannotOpen { path: path.to_path_buf() })?;
    let cv = |source| VideoError::OpenCv { path: path.to_path_buf(), source };
    let capture = VideoCapture::from_file(name, CAP_ANY).map_err(cv)?;
    if !capture.is_opened().map_err(cv)? {
        return Err(VideoError::CannotOpen { path: path.to_path_buf() });
    }
    Ok(capture)
}

impl VideoSource {
    pub fn open(config: &VehicleConfig) -> Result<Self, VideoError> {
        let path = config.video.path.clone().ok_or(VideoError::NoPath)?;
        if !path.exists() {
            return Err(VideoError::NotFound(path));
        }
        let capture = open_capture(&path)?;
        let cv = |source| VideoError::OpenCv { path: path.clone(), source };
        let reported = capture.get(CAP_PROP_FPS).map_err(cv)?;
        // Some containers carry no rate; then the configured one stands in.
        let file_fps =
            if reported.is_finite() && reported > 0.0 && reported <= 1000.0 { reported } else { config.fps };
        let frames = capture.get(CAP_PROP_FRAME_COUNT).map_err(cv)?;
        tracing::info!(path = %path.display(), fps = file_fps, frames, looping = config.video.looping, "video source");
        Ok(Self {
            capture,
            looping: config.video.looping,
            period_ns: (1e9 / file_fps) as u64,
            converter: Converter::new(config.width, config.height),
            decoded: Mat::default(),
            frame: Vec::new(),
            width: config.width,
            position: 0,
            file_fps,
            path,
        })
    }

    fn rewind(&mut self) -> Result<(), VideoError> {
        let cv = |source| VideoError::OpenCv { path: self.path.clone(), source };
        // Seeking to 0 is not honoured by every backend: reopening always is.
        let rewound = self.capture.set(CAP_PROP_POS_FRAMES, 0.0).map_err(cv)?;
        if !rewound || self.capture.get(CAP_PROP_POS_FRAMES).map_err(cv)? != 0.0 {
            self.capture = open_capture(&self.path)?;
        }
        self.position = 0;
        Ok(())
    }

    fn read(&mut self) -> Result<bool, VideoError> {
        let cv = |source| VideoError::OpenCv { path: self.path.clone(), source };
        Ok(self.capture.read(&mut self.decoded).map_err(cv)? && !self.decoded.empty())
    }
}

impl FrameSource for VideoSource {
    fn kind(&self) -> &'static str {
        "video"
    }

    fn pacing(&self) -> Pacing {
        Pacing::Fixed { period_ns: self.period_ns }
    }

    fn next_frame(&mut self) -> Result<Next, SourceError> {
        if !self.read()? {
            if !self.looping {
                return Ok(Next::Ended(format!(
                    "end of {} after {} frames (send respawn to play it again, or run with --loop)",
                    self.path.display(),
                    self.position
                )));
            }
            self.rewind()?;
            if !self.read()? {
                return Ok(Next::Ended(format!("{} has no frames", self.path.display())));
            }
        }
        self.position += 1;
        self.converter.fit_mat(&self.decoded, &mut self.frame)?;
        Ok(Next::Ready { capture_mono_ns: None, capture_wall_ns: None })
    }

    fn write_frame(&mut self, _frame_id: u64, pixels: &mut [u8], stride: usize) {
        copy_rows(&self.frame, self.width, pixels, stride);
    }

    fn motion(&self) -> Motion {
        Motion { steering_rad: None, ..Motion::default() }
    }

    fn respawn(&mut self, _spawn_point: usize) -> Result<String, String> {
        self.rewind().map_err(|e| e.to_string())?;
        Ok(format!("restarted {} from its first frame", self.path.display()))
    }
}
