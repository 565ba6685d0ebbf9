//! How fast the cv lane detector runs on one core: per track, N simulator frames
//! (ADS_BENCH_FRAMES, default 300) are rendered first while a lane-following driver weaves
//! in its lane, then `LaneDetector::detect` is timed over them, in order, as a camera would
//! deliver them. OpenCV is limited to one thread, so the figures are one core's; pin with
//! `taskset -c 1` for steadier ones. The target is ≥ 150 fps at 800x600.
//!
//! Prints fps, p50 and p99 per track and overall, and writes target/bench/lanes.json.
#![allow(clippy::unwrap_used, reason = "a benchmark: any failure should stop it loudly")]

use std::time::{Duration, Instant};

use ads_detection::lanes::{LaneConfig, LaneDetector};
use ads_detection::BgrFrame;
use ads_sim::{Controls, SimConfig, Simulator, TrackKind};

const DT: f64 = 1.0 / 30.0;

fn main() {
    let frames: usize =
        std::env::var("ADS_BENCH_FRAMES").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(300);
    opencv::core::set_num_threads(1).unwrap();
    let cfg = SimConfig::default();
    let (w, h) = (cfg.width, cfg.height);
    println!(
        "lanes (cv): {w}x{h} BGR8, {frames} frames per track, one thread, OpenCV {}",
        ads_detection::opencv_version()
    );
    println!("{:<8} {:>8} {:>9} {:>9} {:>9}", "track", "fps", "p50 ms", "p99 ms", "max ms");
    let mut all = Vec::new();
    let mut rows = Vec::new();
    for track in TrackKind::ALL {
        let mut sim = Simulator::new(SimConfig { track, ..cfg.clone() });
        let h_samples = sim.h_samples().to_vec();
        let rendered: Vec<Vec<u8>> = (0..frames)
            .map(|i| {
                let mut buf = vec![0u8; 3 * w as usize * h as usize];
                sim.render(i as u64, &mut buf, 3 * w as usize);
                let c = weave(&sim, i as f64 * DT);
                sim.step(DT, c);
                buf
            })
            .collect();
        let mut detector = LaneDetector::new(LaneConfig::for_simulator());
        // One untimed frame: buffers are allocated and the calibration built on the first.
        std::hint::black_box(detector.detect(BgrFrame::packed(&rendered[0], w, h), &h_samples).unwrap());
        detector.reset();
        let mut times = Vec::with_capacity(frames);
        for buf in &rendered {
            let t = Instant::now();
            std::hint::black_box(detector.detect(BgrFrame::packed(buf, w, h), &h_samples).unwrap());
            times.push(t.elapsed());
        }
        let total: Duration = times.iter().sum();
        times.sort();
        let fps = frames as f64 / total.as_secs_f64();
        let (p50, p99) = (ms(percentile(&times, 0.50)), ms(percentile(&times, 0.99)));
        println!("{:<8} {fps:>8.1} {p50:>9.3} {p99:>9.3} {:>9.3}", track.name(), ms(times[times.len() - 1]));
        rows.push(serde_json::json!({ "track": track.name(), "fps": fps, "p50_ms": p50, "p99_ms": p99 }));
        all.extend(times);
    }
    let total: Duration = all.iter().sum();
    all.sort();
    let fps = all.len() as f64 / total.as_secs_f64();
    let (p50, p99) = (ms(percentile(&all, 0.50)), ms(percentile(&all, 0.99)));
    println!("{:<8} {fps:>8.1} {p50:>9.3} {p99:>9.3} {:>9.3}", "all", ms(all[all.len() - 1]));
    let report = serde_json::json!({
        "bench": "lanes", "width": w, "height": h, "threads": 1, "frames_per_track": frames,
        "fps": fps, "p50_ms": p50, "p99_ms": p99, "tracks": rows,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lanes.json"), serde_json::to_string_pretty(&report).unwrap() + "\n").unwrap();
}

/// Pure pursuit on the true lane, aiming ±0.6 m beside its centre on a 5 s cycle, so the
/// detector sees the car off-centre and at an angle as well as centred.
fn weave(sim: &Simulator, t: f64) -> Controls {
    let st = sim.state();
    let ld = 8.0;
    let r = sim.lane_reference(ld);
    let target = r.lookahead_offset + 0.6 * (std::f64::consts::TAU * t / 5.0).sin();
    let steering = (2.0 * sim.config().vehicle.wheelbase * target / (ld * ld)).atan();
    let err = 8.0 - st.speed;
    Controls { steering, throttle: (0.5 * err).clamp(0.0, 1.0), brake: (-0.5 * err).clamp(0.0, 1.0) }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
