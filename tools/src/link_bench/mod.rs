//! `ads-bench link`: the video link over shaped links. Runs the vehicle and measuring viewers
//! in the network namespace this process is in (scripts/bench-link.sh makes a private one),
//! shapes the vehicle's traffic with htb on `lo`, and reports per case: frame age (capture →
//! received), delivered fps, goodput as a share of the link, state age, emergency-stop
//! acknowledgement latency, PSNR/SSIM of delivered frames against the ring's originals,
//! vehicle CPU, and the recovery time after a step from 20 to 2 Mbit/s. Prints; never fails
//! on a number. Its JSON is also what the shaped-link test checks behaviour on.

pub mod client;
pub mod quality;
pub mod shaping;

use crate::pipeline_bench::procs::{self, Proc};
use anyhow::Context as _;
use client::{CaseRecord, ClientPlan};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PUB_PORT: u16 = ads_protocol::DEFAULT_PUB_PORT;
pub const VIDEO_PORT: u16 = ads_protocol::DEFAULT_VIDEO_PORT;
pub const ACTION_PORT: u16 = ads_protocol::DEFAULT_ACTION_PORT;

#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// Seconds measured per case (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of each case not measured (the session finds its tier).
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Cases, in order: a rate in Mbit/s (one viewer), `step` (20 → 2 Mbit/s halfway) or
    /// `two` (viewers on 20 and 2 Mbit/s at once).
    #[arg(long, value_delimiter = ',', default_value = "20,8,4,2,1,step,two")]
    pub cases: Vec<String>,
    /// Codecs the measuring viewers ask for; every case runs once per codec.
    #[arg(long, value_delimiter = ',', default_value = "jpeg")]
    pub codecs: Vec<String>,
    /// Also run a client that says hello and never returns a credit.
    #[arg(long)]
    pub stingy: bool,
    /// The vehicle's link.frames_in_flight (default: its config's).
    #[arg(long)]
    pub frames_in_flight: Option<u32>,
    /// Play this video file (looping) instead of the simulator, e.g. the dashcam footage of
    /// scripts/fetch-data.sh: the simulator's per-pixel sensor noise caps what any codec can
    /// score on SSIM against it, real footage does not.
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// The vehicle's configuration file (e.g. to compare `[h264]` settings).
    #[arg(long)]
    pub vehicle_config: Option<PathBuf>,
    /// Print the vehicle's view of the newest session (goodput, tier, delivery) with every
    /// state it sends, to stderr: how the rate control moves.
    #[arg(long)]
    pub trace: bool,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Confirms this process runs in a network namespace of its own, whose `lo` it may shape
    /// (scripts/bench-link.sh does `ip netns exec`); refused otherwise.
    #[arg(long)]
    pub in_private_netns: bool,
}

/// A namespace whose only interface is `lo` (what `ip netns add` makes; `ip netns exec`
/// mounts its /sys): shaping its loopback touches nobody else.
fn in_own_netns() -> bool {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else { return false };
    let names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names == ["lo"]
}

/// One case: the link rate of each viewer address, and a step of the first one.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    rates_kbps: Vec<u32>,
    /// (after this share of the measured time, the first viewer's new rate)
    step: Option<(f64, u32)>,
}

fn parse_case(text: &str) -> anyhow::Result<Case> {
    Ok(match text {
        "step" => {
            Case { name: "20 → 2 Mbit/s step".into(), rates_kbps: vec![20_000], step: Some((0.5, 2_000)) }
        }
        "two" => {
            Case { name: "two viewers, 20 + 2 Mbit/s".into(), rates_kbps: vec![20_000, 2_000], step: None }
        }
        rate => {
            let mbit: f64 = rate.parse().with_context(|| format!("case {rate:?}: a rate, step or two"))?;
            anyhow::ensure!(mbit > 0.0 && mbit <= 1000.0, "case {rate}: rate out of range");
            Case { name: format!("{mbit} Mbit/s"), rates_kbps: vec![(mbit * 1000.0) as u32], step: None }
        }
    })
}

pub fn run(args: LinkArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.in_private_netns && in_own_netns(),
        "ads-bench link shapes `lo`: run it with --in-private-netns in a network namespace with nothing but `lo` (scripts/bench-link.sh)"
    );
    let cases: Vec<Case> = args.cases.iter().map(|c| parse_case(c)).collect::<anyhow::Result<_>>()?;
    for codec in &args.codecs {
        anyhow::ensure!(
            [ads_protocol::CODEC_JPEG, ads_protocol::CODEC_H264].contains(&codec.as_str()),
            "codec {codec:?}: jpeg or h264"
        );
    }
    let runs: Vec<(String, Case)> =
        args.codecs.iter().flat_map(|codec| cases.iter().map(move |c| (codec.clone(), c.clone()))).collect();
    let shaper = shaping::Shaper::new(&[PUB_PORT, VIDEO_PORT], &[1_000_000, 1_000_000])?;
    let bin = procs::bin_dir()?;
    let ring = format!("linkbench{}", std::process::id());
    let s = |x: &str| x.to_string();
    // Only the simulator has ground truth; a video "drives" from detections, of which there
    // are none here, so it stands still, which changes nothing on the link.
    let control = if args.video.is_some() { "detections" } else { "truth" };
    let mut vehicle_args = vec![
        s("--control"),
        s(control),
        s("--vehicle-id"),
        s("bench-car"),
        s("--broadcast"),
        format!("tcp://*:{PUB_PORT}"),
        s("--video-endpoint"),
        format!("tcp://*:{VIDEO_PORT}"),
        s("--actions"),
        format!("tcp://127.0.0.1:{ACTION_PORT}"),
        s("--frames-ring"),
        format!("{ring}-frames"),
        s("--detections-ring"),
        format!("{ring}-det"),
        // The bench's own e-stop latch: its e-stops must not outlive it in the user's state.
        s("--latch-file"),
        std::env::temp_dir().join(format!("{ring}.latch")).display().to_string(),
    ];
    if let Some(n) = args.frames_in_flight {
        vehicle_args.extend([s("--frames-in-flight"), n.to_string()]);
    }
    if let Some(config) = &args.vehicle_config {
        vehicle_args.extend([s("--config"), config.display().to_string()]);
    }
    if let Some(video) = &args.video {
        anyhow::ensure!(video.is_file(), "--video {}: no such file", video.display());
        vehicle_args.extend([
            s("--source"),
            s("video"),
            s("--path"),
            video.display().to_string(),
            s("--loop"),
        ]);
    }
    let mut vehicle = Proc::spawn("ads-vehicle", &bin.join("ads-vehicle"), &vehicle_args)?;
    let originals = client::Originals::follow(&format!("{ring}-frames"))?;
    let mut results = Vec::new();
    for (codec, case) in &runs {
        vehicle.check_alive()?;
        for (i, &rate) in case.rates_kbps.iter().enumerate() {
            shaper.set_rate(i, rate)?;
        }
        let started = Instant::now();
        let measure_from = started + Duration::from_secs(args.warmup);
        let end = measure_from + Duration::from_secs(args.seconds);
        let stop = Arc::new(AtomicBool::new(false));
        let records: Vec<Arc<Mutex<CaseRecord>>> =
            (0..case.rates_kbps.len()).map(|_| Arc::new(Mutex::new(CaseRecord::default()))).collect();
        let mut threads = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let plan = ClientPlan {
                address: format!("127.0.0.{}", i + 1),
                send_actions: i == 0,
                measure_from,
                credits: true,
                codec: codec.clone(),
                trace: args.trace,
            };
            threads.push(client::spawn(plan, Arc::clone(record), Arc::clone(&originals), Arc::clone(&stop)));
        }
        let stingy = Arc::new(Mutex::new(CaseRecord::default()));
        if args.stingy {
            let plan = ClientPlan {
                address: "127.0.0.1".into(),
                send_actions: false,
                measure_from: started,
                credits: false,
                codec: codec.clone(),
                trace: false,
            };
            threads.push(client::spawn(plan, Arc::clone(&stingy), Arc::clone(&originals), Arc::clone(&stop)));
        }
        while Instant::now() < measure_from {
            std::thread::sleep(Duration::from_millis(50));
        }
        let cpu0 = procs::usage(vehicle.pid(), false);
        let mut step_ns = None;
        while Instant::now() < end {
            if let (Some((at, kbps)), None) = (case.step, step_ns) {
                if Instant::now() >= measure_from + Duration::from_secs_f64(args.seconds as f64 * at) {
                    shaper.set_rate(0, kbps)?;
                    step_ns = Some(client::wall_ns());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let cpu1 = procs::usage(vehicle.pid(), false);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        let cpu = cpu1.cpu_s - cpu0.cpu_s;
        let viewers: Vec<Value> = records
            .iter()
            .zip(&case.rates_kbps)
            .map(|(r, &rate)| {
                let r = r.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                // The link's mean rate over the measured time (before and after a step).
                let link_kbps = case.step.map_or(f64::from(rate), |(at, after)| {
                    f64::from(rate) * at + f64::from(after) * (1.0 - at)
                });
                r.summary(args.seconds as f64, link_kbps, step_ns)
            })
            .collect();
        let stingy_frames = stingy.lock().unwrap_or_else(std::sync::PoisonError::into_inner).frames.len();
        let result = json!({
            "case": case.name,
            "codec": codec,
            "rates_kbps": case.rates_kbps,
            "step_to_kbps": case.step.map(|(_, k)| k),
            "vehicle_cpu_pct": 100.0 * cpu / args.seconds as f64,
            "viewers": viewers,
            "stingy_frames": args.stingy.then_some(stingy_frames),
        });
        print_case(&result);
        results.push(result);
        // Let the sessions of this case close before the next one opens its own.
        std::thread::sleep(Duration::from_millis(300));
    }
    vehicle.stop();
    drop(shaper);
    let source = args.video.as_ref().map_or_else(|| "simulator".to_string(), |v| v.display().to_string());
    let report =
        json!({ "seconds": args.seconds, "warmup": args.warmup, "source": source, "cases": results });
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(true)
}

fn print_case(r: &Value) {
    println!(
        "\n{} {}  (vehicle CPU {:.1}% of a core)",
        r["codec"].as_str().unwrap_or(""),
        r["case"].as_str().unwrap_or(""),
        r["vehicle_cpu_pct"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  viewer   age p50/p99/max ms    fps   goodput  of link  state p99  e-stop ack p50/p99   PSNR   SSIM  tiers  size KB  recovery"
    );
    for (i, v) in r["viewers"].as_array().into_iter().flatten().enumerate() {
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  {:<6} {:>6.1}/{:>6.1}/{:>7.1} {:>6.1} {:>6.2} Mb {:>6.0}% {:>8.1} ms {:>8.1}/{:>6.1} ms {:>6.1} {:>6.3} {:>6} {:>7.1}  {}",
            i + 1,
            f("age_p50_ms"),
            f("age_p99_ms"),
            f("age_max_ms"),
            f("fps"),
            f("goodput_kbps") / 1000.0,
            f("goodput_share_pct"),
            f("state_age_p99_ms"),
            f("estop_ack_p50_ms"),
            f("estop_ack_p99_ms"),
            f("psnr_db"),
            f("ssim"),
            v["tiers"].as_str().unwrap_or(""),
            f("mean_frame_kb"),
            v["recovery_ms"].as_f64().map_or("–".to_string(), |ms| format!("{ms:.0} ms")),
        );
        println!(
            "         encode p50/p99 {:.2}/{:.2} ms, decode here p50 {:.2} ms, undecodable {}, skipped by pacing {}, by the H.264 rate control {}",
            f("encode_p50_ms"),
            f("encode_p99_ms"),
            f("decode_p50_ms"),
            f("decode_errors"),
            f("pacing_skips"),
            f("h264_rate_skips"),
        );
        if v["drives_sent"].as_u64().unwrap_or(0) > 0 {
            println!(
                "         teleop (assist, 25 Hz): input → vehicle p50/p99 {:.1}/{:.1} ms, {} sent, {} taken",
                f("drive_p50_ms"),
                f("drive_p99_ms"),
                f("drives_sent"),
                f("drives_taken"),
            );
        }
    }
    if let Some(n) = r["stingy_frames"].as_u64() {
        println!("  a client that never returns credits got {n} frame(s)");
    }
}
