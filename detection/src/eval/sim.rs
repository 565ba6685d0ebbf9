//! The simulator evaluation: TuSimple accuracy, FP and FN of the ego lane per track and seed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ads_protocol::LaneDetection;
use ads_sim::{Controls, LaneReference, LaneTruth, SimConfig, Simulator, TrackKind};
use serde::Serialize;

use crate::lanes::{LaneConfig, LaneDetector};
use crate::tusimple::{self, Mean, Score};
use crate::BgrFrame;

/// Options of `ads-detection eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Frames per track and seed (at `--fps`, from a standstill at a spawn point).
    #[arg(long, default_value_t = 300)]
    pub frames: u32,
    /// Simulator seeds (ground texture and sensor noise); each also starts at its own spawn
    /// point.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 1, 2])]
    pub seeds: Vec<u64>,
    /// Tracks to drive.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = TrackKind::ALL)]
    pub tracks: Vec<TrackKind>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/eval/lanes.json")]
    pub json: PathBuf,
    /// Also draw detection (left green, right blue) and truth (white) on frames of each run,
    /// as PNGs here: the middle frame, or those listed with `--overlay-frames`.
    #[arg(long)]
    pub overlays: Option<PathBuf>,
    /// Frame indices to draw with `--overlays`.
    #[arg(long, value_delimiter = ',')]
    pub overlay_frames: Vec<u32>,
    /// Write one CSV line per frame here (run, frame, per-line accuracy and confidence, offset
    /// detected and true), for finding where the detector goes wrong.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Frame rate of the drive (s of simulated time per frame = 1/fps).
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Cruising speed (m/s).
    #[arg(long, default_value_t = 8.0)]
    pub speed_mps: f64,
    /// Amplitude (m) of the deliberate side-to-side weave about the lane centre.
    #[arg(long, default_value_t = 0.6)]
    pub weave_m: f64,
}

/// One track and seed.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub track: String,
    pub seed: u64,
    pub frames: u64,
    pub score: Score,
    /// Frames where each truth line was matched (TuSimple accuracy ≥ 0.85), as a share.
    pub left_found: f64,
    pub right_found: f64,
    /// Mean absolute error of the reported lateral offset (m) and heading (rad) against
    /// `Simulator::lane_reference`, over frames with a lane estimate.
    pub offset_mae_m: f64,
    pub heading_mae_rad: f64,
    /// Detector throughput and latency on this machine, all threads OpenCV wants.
    pub fps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// What the truth of a frame is, for whoever reads the JSON later.
    pub scored_lanes: &'static str,
    pub runs: Vec<RunResult>,
    /// Per track, all seeds pooled.
    pub tracks: Vec<(String, Score)>,
    pub overall: Score,
    pub fps: f64,
}

const SCORED_LANES: &str =
    "ego lane only: truth = [lanes[ego_left], lanes[ego_right]], prediction = [left, right] (lines with points)";

/// Drives, detects and scores every track × seed; prints a table and writes the JSON report.
pub fn run_eval(args: &EvalArgs) -> anyhow::Result<EvalReport> {
    let mut trace = args.trace.as_deref().map(Trace::create).transpose()?;
    let (mut runs, mut tracks) = (Vec::new(), Vec::new());
    let (mut overall, mut busy_s) = (Mean::default(), 0.0);
    println!(
        "{:<8} {:>4} {:>6} {:>9} {:>7} {:>7} {:>8} {:>8} {:>7}",
        "track", "seed", "frames", "accuracy", "FP", "FN", "off.MAE", "fps", "p99 ms"
    );
    for &track in &args.tracks {
        let mut pooled = Mean::default();
        for &seed in &args.seeds {
            let run = drive(args, track, seed, trace.as_mut())?;
            let r = &run.result;
            let tail = format!("{:>7.3}m {:>8.0} {:>7.2}", r.offset_mae_m, r.fps, r.p99_ms);
            print_row(track.name(), &seed.to_string(), r.frames, &r.score, &tail);
            pooled.merge(&run.mean);
            busy_s += run.busy_s;
            runs.push(run.result);
        }
        overall.merge(&pooled);
        tracks.push((track.name().to_string(), pooled));
    }
    for (name, m) in &tracks {
        print_row(name, "all", m.frames, &m.mean(), "");
    }
    let fps = overall.frames as f64 / busy_s.max(1e-9);
    print_row("overall", "all", overall.frames, &overall.mean(), &format!("{:>8} {fps:>8.0}", ""));
    let report = EvalReport {
        scored_lanes: SCORED_LANES,
        runs,
        tracks: tracks.into_iter().map(|(name, m)| (name, m.mean())).collect(),
        overall: overall.mean(),
        fps,
    };
    if let Some(Trace(mut out)) = trace {
        std::io::Write::flush(&mut out)?;
    }
    super::write_json(&args.json, &report)?;
    println!("wrote {}", args.json.display());
    Ok(report)
}

fn print_row(track: &str, seed: &str, frames: u64, s: &Score, tail: &str) {
    let row = format!(
        "{track:<8} {seed:>4} {frames:>6} {:>8.2}% {:>6.2}% {:>6.2}% {tail}",
        100.0 * s.accuracy,
        100.0 * s.fp,
        100.0 * s.fn_
    );
    println!("{}", row.trim_end());
}

/// Spawn points used per seed: spread over the lap so three seeds see different road.
fn spawn_for(seed: u64) -> usize {
    (seed as usize * 3) % 8
}

/// One track and seed: the published result, the score sum to pool, and the seconds spent
/// inside `detect`.
struct Run {
    result: RunResult,
    mean: Mean,
    busy_s: f64,
}

fn drive(args: &EvalArgs, track: TrackKind, seed: u64, mut trace: Option<&mut Trace>) -> anyhow::Result<Run> {
    let mut sim = Simulator::new(SimConfig { track, seed, ..SimConfig::default() });
    sim.respawn(spawn_for(seed))?;
    let (w, h) = (sim.config().width, sim.config().height);
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    let mut detector = LaneDetector::new(LaneConfig::for_simulator());
    let dt = 1.0 / args.fps.max(1.0);
    let mut stats = Stats::default();
    for i in 0..args.frames {
        sim.render(u64::from(i), &mut pixels, w as usize * 3);
        let truth = sim.truth();
        let started = Instant::now();
        let det = detector.detect(BgrFrame::packed(&pixels, w, h), &truth.h_samples)?;
        stats.times.push(started.elapsed().as_secs_f64());
        let reference = sim.lane_reference(LOOKAHEAD_M);
        let accs = stats.score(&det, &truth, &reference)?;
        if let Some(t) = trace.as_deref_mut() {
            t.row(track, seed, i, accs, &det, &reference)?;
        }
        let wanted = if args.overlay_frames.is_empty() {
            i == args.frames / 2
        } else {
            args.overlay_frames.contains(&i)
        };
        if let (Some(dir), true) = (&args.overlays, wanted) {
            let path = dir.join(format!("{}-seed{seed}-{i:04}.png", track.name()));
            let mask = detector.birdseye().map(|b| b.1);
            super::overlay::save(&path, &pixels, w, h, &det, Some(&ego_truth(&truth)), mask)?;
        }
        sim.step(dt, pursue(&sim, reference.lookahead_offset, f64::from(i) * dt, args));
    }
    Ok(stats.finish(track, seed))
}

/// The truth the detector is held to: the ego lane's two lines, left to right.
fn ego_truth(truth: &LaneTruth) -> Vec<Vec<Option<f32>>> {
    [truth.ego_left, truth.ego_right].into_iter().flatten().map(|i| truth.lanes[i].clone()).collect()
}

/// Per-run tallies.
#[derive(Default)]
struct Stats {
    mean: Mean,
    times: Vec<f64>,
    /// Frames each truth line was matched in.
    found: [u64; 2],
    offset_err: f64,
    heading_err: f64,
    estimates: u64,
}

impl Stats {
    /// Scores one frame; returns each ego line's TuSimple line accuracy (NaN without truth).
    fn score(
        &mut self,
        det: &LaneDetection,
        truth: &LaneTruth,
        reference: &LaneReference,
    ) -> anyhow::Result<[f64; 2]> {
        let pred: Vec<Vec<Option<f32>>> =
            [&det.left, &det.right].into_iter().filter(|l| l.iter().any(Option::is_some)).cloned().collect();
        self.mean.add(tusimple::bench(&pred, &ego_truth(truth), &truth.h_samples, 0.0)?);
        let mut accs = [f64::NAN; 2];
        for (k, (mine, idx)) in
            [(&det.left, truth.ego_left), (&det.right, truth.ego_right)].into_iter().enumerate()
        {
            if let Some(g) = idx.map(|i| &truth.lanes[i]) {
                let thresh = tusimple::PIXEL_THRESH / tusimple::angle(g, &truth.h_samples).cos();
                accs[k] = tusimple::line_accuracy(mine, g, thresh);
                self.found[k] += u64::from(accs[k] >= tusimple::PT_THRESH);
            }
        }
        if det.left_confidence.max(det.right_confidence) > 0.0 {
            self.offset_err += (f64::from(det.lateral_offset_m) - reference.lateral_offset).abs();
            self.heading_err += (f64::from(det.heading_error_rad) - reference.heading_error).abs();
            self.estimates += 1;
        }
        Ok(accs)
    }

    fn finish(mut self, track: TrackKind, seed: u64) -> Run {
        let busy_s: f64 = self.times.iter().sum();
        let frames = self.mean.frames.max(1) as f64;
        let estimates = self.estimates.max(1) as f64;
        let result = RunResult {
            track: track.name().to_string(),
            seed,
            frames: self.mean.frames,
            score: self.mean.mean(),
            left_found: self.found[0] as f64 / frames,
            right_found: self.found[1] as f64 / frames,
            offset_mae_m: self.offset_err / estimates,
            heading_mae_rad: self.heading_err / estimates,
            fps: self.mean.frames as f64 / busy_s.max(1e-9),
            p50_ms: 1e3 * super::percentile(&mut self.times, 50.0),
            p99_ms: 1e3 * super::percentile(&mut self.times, 99.0),
        };
        Run { result, mean: self.mean, busy_s }
    }
}

/// `--trace`: one CSV line per frame.
struct Trace(std::io::BufWriter<std::fs::File>);

impl Trace {
    fn create(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use std::io::Write as _;
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(
            out,
            "track,seed,frame,acc_left,acc_right,conf_left,conf_right,offset,true_offset,heading,true_heading,true_curvature"
        )?;
        Ok(Self(out))
    }

    fn row(
        &mut self,
        track: TrackKind,
        seed: u64,
        frame: u32,
        accs: [f64; 2],
        det: &LaneDetection,
        r: &LaneReference,
    ) -> std::io::Result<()> {
        use std::io::Write as _;
        writeln!(
            self.0,
            "{},{seed},{frame},{:.3},{:.3},{:.2},{:.2},{:.3},{:.3},{:.4},{:.4},{:.5}",
            track.name(),
            accs[0],
            accs[1],
            det.left_confidence,
            det.right_confidence,
            det.lateral_offset_m,
            r.lateral_offset,
            det.heading_error_rad,
            r.heading_error,
            r.curvature
        )
    }
}

/// Look-ahead (m) of the driver, and where the true lane is read for it.
const LOOKAHEAD_M: f64 = 8.0;

/// Pure pursuit on the true lane, aiming `weave_m · sin(2πt / 5 s)` beside its centre, and a
/// proportional speed loop: a driver who stays in lane but not on its centre line.
fn pursue(sim: &Simulator, centre_ahead: f64, t: f64, args: &EvalArgs) -> Controls {
    const WEAVE_PERIOD_S: f64 = 5.0;
    let wheelbase = sim.config().vehicle.wheelbase;
    let target = centre_ahead + args.weave_m * (std::f64::consts::TAU * t / WEAVE_PERIOD_S).sin();
    let steering = (2.0 * wheelbase * target / (LOOKAHEAD_M * LOOKAHEAD_M)).atan();
    let error = args.speed_mps - sim.state().speed;
    Controls { steering, throttle: (0.5 * error).clamp(0.0, 1.0), brake: (-0.5 * error).clamp(0.0, 1.0) }
}
