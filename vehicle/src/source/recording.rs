//! An ads-record MCAP file as the frame source: its JPEGs decoded (turbojpeg, as a camera's
//! MJPEG) into the frames ring at their recorded pace, so `ads-detection` runs on a recorded
//! drive. Frames are numbered from 0 in recorded order, which `ads-record compare` relies on.
//!
//! The recording has no vehicle model: like a video, motion is unknown and steering is only
//! what the controller commands. A truncated recording plays up to its damage; `respawn`
//! (or `--loop` at the end) plays it again from the start; `pause` holds it.

use super::convert::{copy_rows, Converter};
use super::{FrameSource, Motion, Next, Pacing, SourceError};
use crate::config::VehicleConfig;
use ads_record::frames::{read_drive, RecordedFrame};
use ads_shmem_ipc::clock;
use std::path::PathBuf;
use std::time::Duration;

/// A pause in the recording longer than this (the recorder lost the vehicle a while) is
/// played as one frame interval, not waited out.
const MAX_GAP_NS: u64 = 2_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("no recording given (--source recording --path FILE.mcap)")]
    NoPath,
    #[error(transparent)]
    Read(#[from] ads_record::recover::ReadError),
    #[error("{} holds no frames{}", path.display(), why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default())]
    Empty { path: PathBuf, why: Option<String> },
}

pub struct RecordingSource {
    path: PathBuf,
    frames: Vec<RecordedFrame>,
    looping: bool,
    converter: Converter,
    frame: Vec<u8>,
    width: u32,
    /// Index of the next frame to play.
    next: usize,
    /// Monotonic time at which `next` is due (None: at once, then the schedule starts).
    due_mono: Option<u64>,
    paused_since: Option<u64>,
}

impl std::fmt::Debug for RecordingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSource")
            .field("path", &self.path)
            .field("frames", &self.frames.len())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl RecordingSource {
    pub fn open(config: &VehicleConfig) -> Result<Self, RecordingError> {
        let path = config.video.path.clone().ok_or(RecordingError::NoPath)?;
        let drive = read_drive(&path)?;
        if drive.frames.is_empty() {
            return Err(RecordingError::Empty { path, why: drive.truncated });
        }
        if let Some(why) = &drive.truncated {
            tracing::warn!(path = %path.display(), "the recording is truncated ({why}): playing its {} frames", drive.frames.len());
        }
        tracing::info!(path = %path.display(), frames = drive.frames.len(), looping = config.video.looping, "recording source");
        Ok(Self {
            path,
            frames: drive.frames,
            looping: config.video.looping,
            converter: Converter::new(config.width, config.height),
            frame: Vec::new(),
            width: config.width,
            next: 0,
            due_mono: None,
            paused_since: None,
        })
    }

    /// The recorded interval between frame `index` and the one before it.
    fn interval_ns(&self, index: usize) -> u64 {
        let Some(previous) = index.checked_sub(1).and_then(|i| self.frames.get(i)) else { return 0 };
        let gap =
            self.frames[index].info.envelope.capture_ns.saturating_sub(previous.info.envelope.capture_ns);
        if gap > MAX_GAP_NS {
            33_333_333
        } else {
            gap
        }
    }
}

impl FrameSource for RecordingSource {
    fn kind(&self) -> &'static str {
        "recording"
    }

    fn pacing(&self) -> Pacing {
        Pacing::External
    }

    fn wait_frame(&mut self, deadline_ns: u64) -> bool {
        let now = clock::monotonic_ns();
        let due = match (self.paused_since, self.due_mono) {
            (None, Some(due)) if self.next < self.frames.len() || self.looping => due,
            (None, None) => return true,
            _ => deadline_ns,
        };
        let until = due.min(deadline_ns);
        if until > now {
            std::thread::sleep(Duration::from_nanos(until - now));
        }
        self.paused_since.is_none() && clock::monotonic_ns() >= due
    }

    fn next_frame(&mut self) -> Result<Next, SourceError> {
        if self.paused_since.is_some() {
            return Ok(Next::NotYet);
        }
        if self.next >= self.frames.len() {
            if !self.looping {
                return Ok(Next::Ended(format!(
                    "end of {} after {} frames (send respawn to play it again, or run with --loop)",
                    self.path.display(),
                    self.frames.len()
                )));
            }
            self.next = 0;
        }
        let now = clock::monotonic_ns();
        if self.due_mono.is_some_and(|due| now < due) {
            return Ok(Next::NotYet);
        }
        let index = self.next;
        self.converter.mjpeg(&self.frames[index].jpeg, &mut self.frame)?;
        self.next += 1;
        // Anchored on the schedule, not on now: the pace holds even when a tick runs late.
        let played_at = self.due_mono.unwrap_or(now);
        self.due_mono = Some(match self.frames.get(self.next) {
            Some(_) => played_at + self.interval_ns(self.next),
            None => played_at + 33_333_333,
        });
        Ok(Next::Ready { capture_mono_ns: None, capture_wall_ns: None })
    }

    fn write_frame(&mut self, _frame_id: u64, pixels: &mut [u8], stride: usize) {
        copy_rows(&self.frame, self.width, pixels, stride);
    }

    fn motion(&self) -> Motion {
        Motion { steering_rad: None, ..Motion::default() }
    }

    fn set_paused(&mut self, paused: bool) {
        let now = clock::monotonic_ns();
        match (paused, self.paused_since) {
            (true, None) => self.paused_since = Some(now),
            (false, Some(since)) => {
                self.paused_since = None;
                self.due_mono = self.due_mono.map(|due| due + (now - since));
            }
            _ => {}
        }
    }

    fn respawn(&mut self, _spawn_point: usize) -> Result<String, String> {
        self.next = 0;
        self.due_mono = None;
        Ok(format!("restarted {} from its first frame", self.path.display()))
    }
}
