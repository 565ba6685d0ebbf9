//! A GStreamer pipeline (`--source gstreamer --pipeline "…"`): whatever the pipeline
//! produces, converted by GStreamer itself to BGR at the ring's size and taken from an
//! `appsink`. This is how the cameras of these cars are reached: a Pi Camera Module through
//! `libcamerasrc`, a Jetson CSI camera through `nvarguscamerasrc`, USB through `v4l2src`, an
//! IP camera through `rtspsrc` (docs/sources.md names the pipelines).
//!
//! The pipeline sets the pace ([`Pacing::External`]; the appsink syncs to the clock, so a
//! file plays at its own rate). A pipeline that ends is [`Next::Ended`]; one that fails or
//! stops delivering becomes the source's [`FrameSource::problem`]: either way the car stops
//! (fail-safe) and the vehicle keeps running. A live pipeline (a camera) cannot be respawned,
//! like `--source camera`; any other (a file, a test pattern) is started again from the top.

use super::{FrameSource, Motion, Next, Pacing, SourceError};
use crate::config::VehicleConfig;
use ads_shmem_ipc::clock;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;

/// The appsink the vehicle appends to the configured pipeline.
const SINK: &str = "ads_sink";
/// How long the pipeline may take to start (a camera's sensor, an RTSP handshake).
const START_TIMEOUT_S: u64 = 20;
/// No frame for this long while playing: the pipeline stalled (a camera at 30 fps sends 60
/// frames in this time; the slowest sensible source, 5 fps, 10).
const STALL_NS: u64 = 2_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum GstreamerError {
    #[error("no GStreamer pipeline given (--pipeline \"…\" or [gstreamer] pipeline)")]
    NoPipeline,
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("GStreamer pipeline \"{pipeline}\": {}", missing_text(missing))]
    MissingElements { pipeline: String, missing: Vec<String> },
    #[error("GStreamer pipeline \"{pipeline}\" does not parse: {detail}")]
    Parse { pipeline: String, detail: String },
    #[error("GStreamer pipeline \"{pipeline}\" did not start: {detail}")]
    Start { pipeline: String, detail: String },
}

/// The Debian package (or vendor package) that provides a GStreamer element, for the error
/// that names a missing one.
pub fn package_of(element: &str) -> Option<&'static str> {
    Some(match element {
        "videotestsrc" | "videoconvert" | "videoscale" | "videorate" | "appsink" | "appsrc" | "decodebin"
        | "uridecodebin" | "playbin" | "tcpclientsrc" | "udpsrc" => "gstreamer1.0-plugins-base",
        "v4l2src" | "rtspsrc" | "qtdemux" | "matroskademux" | "jpegdec" | "rtph264depay" | "rtpjpegdepay"
        | "v4l2h264dec" | "v4l2h264enc" | "souphttpsrc" => "gstreamer1.0-plugins-good",
        "h264parse" | "openh264dec" | "openh264enc" | "v4l2slh264dec" => "gstreamer1.0-plugins-bad",
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "avdec_h264" | "avdec_mjpeg" => "gstreamer1.0-libav",
        "libcamerasrc" => "gstreamer1.0-libcamera",
        // Jetson Linux: JetPack's own GStreamer plugins, not Debian's.
        "nvarguscamerasrc" | "nvvidconv" | "nvv4l2decoder" | "nvv4l2h264enc" => "nvidia-l4t-gstreamer",
        _ => return None,
    })
}

fn missing_text(missing: &[String]) -> String {
    let named: Vec<String> = missing
        .iter()
        .map(|e| match package_of(e) {
            Some(package) => format!("no element \"{e}\" (install {package})"),
            None => format!("no element \"{e}\" (gst-inspect-1.0 {e}; its plugin is not installed)"),
        })
        .collect();
    named.join(", ")
}

#[derive(Debug)]
pub struct GstreamerSource {
    description: String,
    pipeline: gst::Pipeline,
    sink: AppSink,
    live: bool,
    width: u32,
    height: u32,
    /// The newest sample, taken in `wait_frame`, converted in `next_frame`.
    sample: Option<gst::Sample>,
    frame: Vec<u8>,
    frames: u64,
    /// When the pipeline (last) started playing or last delivered a frame.
    last_frame_ns: u64,
    failed: Option<String>,
    ended: bool,
    paused: bool,
}

impl GstreamerSource {
    pub fn open(config: &VehicleConfig) -> Result<Self, GstreamerError> {
        let user = config.gstreamer.pipeline.clone().ok_or(GstreamerError::NoPipeline)?;
        gst::init().map_err(|e| GstreamerError::Init(e.to_string()))?;
        let (width, height) = (config.width, config.height);
        // GStreamer converts and scales (the whole frame, as the video source does: lane
        // calibrations are fractions of the frame); the sink keeps only the newest frame.
        let description = format!(
            "{user} ! videoconvert ! videoscale ! video/x-raw,format=BGR,width={width},height={height} \
             ! appsink name={SINK} max-buffers=1 drop=true sync=true"
        );
        let mut context = gst::ParseContext::new();
        let element =
            gst::parse::launch_full(&description, Some(&mut context), gst::ParseFlags::FATAL_ERRORS)
                .map_err(|e| {
                    let missing = context.missing_elements();
                    if missing.is_empty() {
                        GstreamerError::Parse { pipeline: user.clone(), detail: e.to_string() }
                    } else {
                        GstreamerError::MissingElements { pipeline: user.clone(), missing }
                    }
                })?;
        let parse = |detail: &str| GstreamerError::Parse { pipeline: user.clone(), detail: detail.into() };
        let pipeline = element.downcast::<gst::Pipeline>().map_err(|_| parse("not a pipeline"))?;
        let sink = pipeline
            .by_name(SINK)
            .and_then(|e| e.downcast::<AppSink>().ok())
            .ok_or_else(|| parse("the appsink went missing"))?;
        let mut source = Self {
            description: user,
            pipeline,
            sink,
            live: false,
            width,
            height,
            sample: None,
            frame: vec![0; width as usize * height as usize * 3],
            frames: 0,
            last_frame_ns: clock::monotonic_ns(),
            failed: None,
            ended: false,
            paused: false,
        };
        source.start()?;
        tracing::info!(pipeline = %source.description, live = source.live, "gstreamer source");
        Ok(source)
    }

    /// To PLAYING, waiting until it is there or has failed (the bus says why).
    fn start(&mut self) -> Result<(), GstreamerError> {
        let start_error =
            |detail: String| GstreamerError::Start { pipeline: self.description.clone(), detail };
        // PAUSED first: only that step says whether the source is live (no preroll).
        let paused = self.pipeline.set_state(gst::State::Paused);
        let live = matches!(paused, Ok(gst::StateChangeSuccess::NoPreroll));
        let changed = paused.and_then(|_| self.pipeline.set_state(gst::State::Playing));
        // A live source reaches PLAYING only with its first frame, which may take a while (an
        // RTSP camera that is down never sends one): failures of it come through the bus.
        let failed = changed.is_err()
            || (!live && self.pipeline.state(gst::ClockTime::from_seconds(START_TIMEOUT_S)).0.is_err());
        if failed {
            // Read the bus first: going to NULL flushes it.
            let detail = self.bus_error().unwrap_or_else(|| "state change failed".into());
            let _ = self.pipeline.set_state(gst::State::Null);
            return Err(start_error(detail));
        }
        self.live = live;
        self.last_frame_ns = clock::monotonic_ns();
        self.frames = 0;
        self.failed = None;
        self.ended = false;
        Ok(())
    }

    /// The first error on the bus, as text, if any.
    fn bus_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(message) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = message.view() {
                let from = message.src().map(|s| s.name().to_string()).unwrap_or_default();
                let debug = e.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                return Some(format!("{from}: {}{debug}", e.error()));
            }
        }
        None
    }

    /// Errors and the end of the stream, from the bus.
    fn poll_bus(&mut self) {
        let Some(bus) = self.pipeline.bus() else { return };
        while let Some(message) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            match message.view() {
                gst::MessageView::Error(e) if self.failed.is_none() => {
                    let from = message.src().map(|s| s.name().to_string()).unwrap_or_default();
                    self.failed = Some(format!("GStreamer pipeline failed: {from}: {}", e.error()));
                    tracing::warn!(pipeline = %self.description, error = %e.error(), "gstreamer source failed");
                }
                gst::MessageView::Eos(_) => self.ended = true,
                _ => {}
            }
        }
    }
}

impl Drop for GstreamerSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl FrameSource for GstreamerSource {
    fn kind(&self) -> &'static str {
        "gstreamer"
    }

    fn pacing(&self) -> Pacing {
        Pacing::External
    }

    fn wait_frame(&mut self, deadline_ns: u64) -> bool {
        if self.sample.is_none() && !self.ended && self.failed.is_none() {
            let wait = deadline_ns.saturating_sub(clock::monotonic_ns());
            self.sample = self.sink.try_pull_sample(gst::ClockTime::from_nseconds(wait));
        }
        self.sample.is_some()
    }

    fn next_frame(&mut self) -> Result<Next, SourceError> {
        self.poll_bus();
        let Some(sample) = self.sample.take() else {
            if self.ended {
                let again = if self.live { "" } else { " (send respawn to play it again)" };
                return Ok(Next::Ended(format!(
                    "end of the GStreamer pipeline after {} frames{again}",
                    self.frames
                )));
            }
            return Ok(Next::NotYet);
        };
        let expected = self.frame.len();
        let row = self.width as usize * 3;
        // GStreamer pads each row of packed RGB to a multiple of 4 bytes.
        let stride = row.next_multiple_of(4);
        let copied = sample.buffer().and_then(|b| b.map_readable().ok()).is_some_and(|map| {
            let data = map.as_slice();
            if data.len() < stride * (self.height as usize - 1) + row {
                return false;
            }
            for (y, out) in self.frame.chunks_exact_mut(row).enumerate() {
                out.copy_from_slice(&data[y * stride..y * stride + row]);
            }
            true
        });
        if !copied {
            tracing::warn!(expected, "gstreamer source: a sample of the wrong size, skipped");
            return Ok(Next::NotYet);
        }
        self.frames += 1;
        self.last_frame_ns = clock::monotonic_ns();
        Ok(Next::Ready { capture_mono_ns: None, capture_wall_ns: None })
    }

    fn write_frame(&mut self, _frame_id: u64, pixels: &mut [u8], stride: usize) {
        super::convert::copy_rows(&self.frame, self.width, pixels, stride);
    }

    fn motion(&self) -> Motion {
        Motion { steering_rad: None, ..Motion::default() }
    }

    fn set_paused(&mut self, paused: bool) {
        // Paused, the loop takes no frames: that is no stall. The stall clock starts again.
        self.paused = paused;
        self.last_frame_ns = clock::monotonic_ns();
    }

    fn problem(&self) -> Option<String> {
        if let Some(failed) = &self.failed {
            return Some(failed.clone());
        }
        if self.paused {
            return None;
        }
        let quiet = clock::monotonic_ns().saturating_sub(self.last_frame_ns);
        (!self.ended && quiet > STALL_NS).then(|| {
            format!("no frame from the GStreamer pipeline for {:.1} s (stalled)", quiet as f64 / 1e9)
        })
    }

    fn respawn(&mut self, _spawn_point: usize) -> Result<String, String> {
        if self.live {
            return Err("respawn is not possible with a live GStreamer source: it films the real world, \
                        which cannot be put back"
                .into());
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        self.sample = None;
        self.start().map_err(|e| e.to_string())?;
        Ok(format!("restarted the GStreamer pipeline \"{}\" from the top", self.description))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_is_everything_but_files_and_test_patterns() {
        use crate::config::is_live_pipeline;
        assert!(!is_live_pipeline("filesrc location=a.mp4 ! decodebin"));
        assert!(!is_live_pipeline("  videotestsrc pattern=ball"));
        assert!(is_live_pipeline("libcamerasrc ! video/x-raw,width=1280"));
        assert!(is_live_pipeline("v4l2src device=/dev/video0"));
        assert!(is_live_pipeline("rtspsrc location=rtsp://cam/ ! decodebin"));
    }

    fn open(pipeline: &str) -> GstreamerSource {
        let mut config = VehicleConfig::default();
        (config.width, config.height) = (64, 48);
        config.gstreamer.pipeline = Some(pipeline.into());
        GstreamerSource::open(&config).unwrap()
    }

    #[test]
    fn a_live_pipeline_refuses_respawn_and_a_test_pattern_restarts() {
        let mut live =
            open("udpsrc port=0 caps=\"video/x-raw,format=BGR,width=64,height=48,framerate=30/1\"");
        let refused = live.respawn(0).unwrap_err();
        assert!(refused.contains("live GStreamer source"), "{refused}");
        let mut pattern = open("videotestsrc ! video/x-raw,width=64,height=48,framerate=30/1");
        let restarted = pattern.respawn(0).unwrap();
        assert!(restarted.contains("restarted the GStreamer pipeline"), "{restarted}");
    }

    #[test]
    fn missing_elements_name_their_package() {
        let text = missing_text(&["libcamerasrc".into(), "frobnicator".into()]);
        assert!(text.contains("no element \"libcamerasrc\" (install gstreamer1.0-libcamera)"), "{text}");
        assert!(text.contains("no element \"frobnicator\" (gst-inspect-1.0 frobnicator"), "{text}");
    }
}
