//! How fast the simulator draws: each track for N frames (ADS_BENCH_FRAMES, default 600) while
//! a lane-following controller drives, so the view changes as it would in the vehicle.
//!
//! Rendering is single-threaded by design (the vehicle runs on a Raspberry Pi next to the
//! detector), so the numbers are one core's; pin with `taskset -c 1` for steadier figures.
//! The target is ≥ 200 fps at 800x600, i.e. ≤ 5 ms per frame.

use std::time::{Duration, Instant};

use ads_sim::{Controls, SimConfig, Simulator, TrackKind};

const DT: f64 = 1.0 / 30.0;

fn main() {
    let frames: usize =
        std::env::var("ADS_BENCH_FRAMES").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(600);
    let cfg = SimConfig::default();
    println!("sim_render: {}x{} BGR8, {frames} frames per track, one thread", cfg.width, cfg.height);
    println!(
        "{:<8} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "track", "fps", "p50 ms", "p99 ms", "max ms", "truth p50 ms"
    );
    for track in TrackKind::ALL {
        let mut sim = Simulator::new(SimConfig { track, ..cfg.clone() });
        let stride = 3 * cfg.width as usize;
        let mut buf = vec![0u8; stride * cfg.height as usize];
        sim.render(0, &mut buf, stride);
        let mut render = Vec::with_capacity(frames);
        let mut truth = Vec::with_capacity(frames);
        for i in 0..frames {
            let c = follow_lane(&sim, 12.0);
            sim.step(DT, c);
            let t = Instant::now();
            sim.render(i as u64, &mut buf, stride);
            render.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(sim.truth());
            truth.push(t.elapsed());
            std::hint::black_box(&buf);
        }
        let total: Duration = render.iter().sum();
        render.sort();
        truth.sort();
        println!(
            "{:<8} {:>8.1} {:>10.3} {:>10.3} {:>10.3} {:>12.3}",
            track.name(),
            frames as f64 / total.as_secs_f64(),
            ms(percentile(&render, 0.50)),
            ms(percentile(&render, 0.99)),
            ms(render[render.len() - 1]),
            ms(percentile(&truth, 0.50)),
        );
    }
}

/// Pure pursuit on the true lane plus a proportional speed loop.
fn follow_lane(sim: &Simulator, speed: f64) -> Controls {
    let st = sim.state();
    let ld = (0.8 * st.speed).max(6.0);
    let r = sim.lane_reference(ld);
    let steering = (2.0 * sim.config().vehicle.wheelbase * r.lookahead_offset / (ld * ld)).atan();
    let err = speed - st.speed;
    Controls { steering, throttle: (0.1 + 0.5 * err).clamp(0.0, 1.0), brake: (-0.5 * err).clamp(0.0, 1.0) }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
