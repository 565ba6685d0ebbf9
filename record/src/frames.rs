//! The frames and detections of a recording, in recorded order: what a replay plays and what
//! a comparison compares.

use crate::channels::{Channel, Recorded};
use crate::recover::{self, ReadError};
use ads_protocol::{Detections, FrameInfo};
use base64::Engine as _;
use std::path::Path;

/// One recorded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedFrame {
    pub info: Recorded<FrameInfo>,
    pub jpeg: Vec<u8>,
    /// Receive time at the recorder, wall clock ns.
    pub log_ns: u64,
}

/// What a recording holds for playback and comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Drive {
    pub frames: Vec<RecordedFrame>,
    pub detections: Vec<Recorded<Detections>>,
    /// Why reading stopped early, for a truncated file.
    pub truncated: Option<String>,
    /// Messages that did not parse (left out).
    pub unreadable: u64,
}

#[derive(serde::Deserialize)]
struct Image {
    data: String,
}

/// The JPEG of a `foxglove.CompressedImage` JSON message.
pub fn image_jpeg(data: &[u8]) -> Option<Vec<u8>> {
    let image: Image = serde_json::from_slice(data).ok()?;
    base64::engine::general_purpose::STANDARD.decode(image.data).ok()
}

/// Reads `path`; a truncated file gives what it holds up to the damage.
pub fn read_drive(path: &Path) -> Result<Drive, ReadError> {
    let reading = recover::read(path)?;
    let mut drive = Drive { truncated: reading.truncated, ..Drive::default() };
    // The writer puts a frame's `/frame` record right before its image.
    let mut pending: Option<Recorded<FrameInfo>> = None;
    for message in reading.messages {
        match Channel::by_topic(&message.topic) {
            Some(Channel::Frame) => match serde_json::from_slice(&message.data) {
                Ok(info) => pending = Some(info),
                Err(_) => drive.unreadable += 1,
            },
            Some(Channel::Image) => match (pending.take(), image_jpeg(&message.data)) {
                (Some(info), Some(jpeg)) => {
                    drive.frames.push(RecordedFrame { info, jpeg, log_ns: message.log_time })
                }
                _ => drive.unreadable += 1,
            },
            Some(Channel::Detection) => match serde_json::from_slice(&message.data) {
                Ok(d) => drive.detections.push(d),
                Err(_) => drive.unreadable += 1,
            },
            _ => {}
        }
    }
    Ok(drive)
}
