//! `ads-bench link`: the video link over shaped links. Runs the vehicle and measuring viewers
//! in the network namespace this process is in (scripts/bench-link.sh makes a private one),
//! shapes the vehicle's traffic with htb on `lo`, and reports per case: frame age (capture →
//! received), delivered fps, goodput as a share of the link, state age, emergency-stop
//! acknowledgement latency, PSNR/SSIM of delivered frames against the ring's originals,
//! vehicle CPU, and the recovery time after a step from 20 to 2 Mbit/s. Prints; never fails
//! on a number. Its JSON is also what the shaped-link test checks behaviour on.

pub mod client;
pub mod quality;
pub mod rogue;
pub mod shaping;
pub mod topology;

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
    /// Cases, in order: a rate in Mbit/s (one viewer), `step` (20 → 2 Mbit/s halfway), `two`
    /// (viewers on 20 and 2 Mbit/s at once; loopback only), `rogue` (at 4 Mbit/s: the
    /// operator alone, then with 12 squatting and 7 keyframe-flooding clients) or `outage`
    /// (at 2 Mbit/s: 3 s, the link down for 10 s, 6 s after; veth only). Default: 20,8,4,2,1,
    /// step,two on loopback, 8,4,2,1,step,rogue,outage with --car-netns.
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Run the vehicle in this network namespace (made by scripts/bench-link.sh, holding
    /// only `lo`) and join it to this one with a veth pair, each end shaped by one tbf: the
    /// topology of a car on WiFi. Without it, everything runs here on a shaped `lo`.
    #[arg(long)]
    pub car_netns: Option<String>,
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
    /// Measuring clients without ZMTP heartbeats or quick reconnects (a client written from
    /// docs/protocol.md before it asked for them): what the vehicle's own heartbeats do alone.
    #[arg(long)]
    pub no_client_heartbeats: bool,
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

/// What a case does besides streaming to its viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trial {
    Plain,
    /// The operator alone for the measured time, then as long with rogue clients.
    Rogue,
    /// The link goes down for [`OUTAGE`] after [`BEFORE_OUTAGE`].
    Outage,
}

const BEFORE_OUTAGE: Duration = Duration::from_secs(3);
const OUTAGE: Duration = Duration::from_secs(10);
const AFTER_OUTAGE: Duration = Duration::from_secs(6);
const SQUATTERS: usize = 12;
const FLOODERS: usize = 7;

/// One case: the link rate of each viewer address, and a step of the first one.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    rates_kbps: Vec<u32>,
    /// (after this share of the measured time, the first viewer's new rate)
    step: Option<(f64, u32)>,
    trial: Trial,
}

fn parse_case(text: &str) -> anyhow::Result<Case> {
    let case =
        |name: &str, rates_kbps: Vec<u32>, step, trial| Case { name: name.into(), rates_kbps, step, trial };
    Ok(match text {
        "step" => case("20 → 2 Mbit/s step", vec![20_000], Some((0.5, 2_000)), Trial::Plain),
        "two" => case("two viewers, 20 + 2 Mbit/s", vec![20_000, 2_000], None, Trial::Plain),
        "rogue" => case("4 Mbit/s, then 12 squatters + 7 keyframe flooders", vec![4_000], None, Trial::Rogue),
        "outage" => case("2 Mbit/s, 10 s outage", vec![2_000], None, Trial::Outage),
        rate => {
            let mbit: f64 =
                rate.parse().with_context(|| format!("case {rate:?}: a rate, step, two, rogue or outage"))?;
            anyhow::ensure!(mbit > 0.0 && mbit <= 1000.0, "case {rate}: rate out of range");
            case(&format!("{mbit} Mbit/s"), vec![(mbit * 1000.0) as u32], None, Trial::Plain)
        }
    })
}

pub fn run(args: LinkArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.in_private_netns && in_own_netns(),
        "ads-bench link shapes `lo`: run it with --in-private-netns in a network namespace with nothing but `lo` (scripts/bench-link.sh)"
    );
    let default_cases: &[&str] = if args.car_netns.is_some() {
        &["8", "4", "2", "1", "step", "rogue", "outage"]
    } else {
        &["20", "8", "4", "2", "1", "step", "two"]
    };
    let names: Vec<&str> = if args.cases.is_empty() {
        default_cases.to_vec()
    } else {
        args.cases.iter().map(String::as_str).collect()
    };
    let cases: Vec<Case> = names.iter().map(|c| parse_case(c)).collect::<anyhow::Result<_>>()?;
    for codec in &args.codecs {
        anyhow::ensure!(
            [ads_protocol::CODEC_JPEG, ads_protocol::CODEC_H264].contains(&codec.as_str()),
            "codec {codec:?}: jpeg or h264"
        );
    }
    for case in &cases {
        anyhow::ensure!(
            args.car_netns.is_some() || case.trial != Trial::Outage,
            "the outage case needs --car-netns (a link that can go down)"
        );
        anyhow::ensure!(
            args.car_netns.is_none() || case.rates_kbps.len() == 1,
            "case {}: one link between car and laptop carries one rate",
            case.name
        );
    }
    let runs: Vec<(String, Case)> =
        args.codecs.iter().flat_map(|codec| cases.iter().map(move |c| (codec.clone(), c.clone()))).collect();
    let ring = format!("linkbench{}", std::process::id());
    let scratch = std::env::temp_dir().join(&ring);
    std::fs::create_dir_all(&scratch)?;
    let topology = match &args.car_netns {
        Some(car) => topology::Topology::Veth(topology::Veth::new(car, 1_000_000)?),
        None => topology::Topology::Loopback(shaping::Shaper::new(
            &[PUB_PORT, VIDEO_PORT],
            &[1_000_000, 1_000_000],
        )?),
    };
    // Off this machine actions are taken only under a key, as on a real car.
    let key = match &topology {
        topology::Topology::Veth(_) => {
            let mut bytes = [0u8; 32];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
            let key = ads_protocol::ActionKey::from_bytes(&bytes)?;
            let path = scratch.join("action.key");
            write_private(&path, &key.to_hex())?;
            Some((key, path))
        }
        topology::Topology::Loopback(_) => None,
    };
    let bin = procs::bin_dir()?;
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
        format!("tcp://{}:{ACTION_PORT}", topology.actions_host()),
        s("--frames-ring"),
        format!("{ring}-frames"),
        s("--detections-ring"),
        format!("{ring}-det"),
        // The bench's own e-stop latch: its e-stops must not outlive it in the user's state.
        s("--latch-file"),
        scratch.join("latch").display().to_string(),
    ];
    if let Some((_, path)) = &key {
        vehicle_args.extend([s("--action-key"), path.display().to_string()]);
    }
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
    let (program, program_args) = topology.vehicle_command(&bin.join("ads-vehicle"), &vehicle_args);
    let mut vehicle = Proc::spawn("ads-vehicle", &program, &program_args)?;
    let originals = client::Originals::follow(&format!("{ring}-frames"))?;
    let key = key.map(|(key, _)| key);
    let mut results = Vec::new();
    for (codec, case) in &runs {
        vehicle.check_alive()?;
        for (i, &rate) in case.rates_kbps.iter().enumerate() {
            topology.set_rate(i, rate)?;
        }
        let result = match case.trial {
            Trial::Rogue => {
                let alone = measure(&args, &topology, &vehicle, &originals, key.as_ref(), codec, case, None)?;
                let with = measure(
                    &args,
                    &topology,
                    &vehicle,
                    &originals,
                    key.as_ref(),
                    codec,
                    case,
                    Some(case.trial),
                )?;
                json!({ "alone": alone, "with_rogues": with, "case": case.name, "codec": codec })
            }
            trial => measure(&args, &topology, &vehicle, &originals, key.as_ref(), codec, case, Some(trial))?,
        };
        print_result(&result);
        results.push(result);
        // Let the sessions of this case close before the next one opens its own.
        std::thread::sleep(Duration::from_millis(300));
    }
    vehicle.stop();
    drop(topology);
    let _ = std::fs::remove_dir_all(&scratch);
    let source = args.video.as_ref().map_or_else(|| "simulator".to_string(), |v| v.display().to_string());
    let report = json!({
        "seconds": args.seconds,
        "warmup": args.warmup,
        "source": source,
        "topology": if args.car_netns.is_some() { "veth" } else { "loopback" },
        "cases": results,
    });
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(true)
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// One measured run of a case: its viewers (and, per `trial`, rogue clients or an outage).
#[allow(clippy::too_many_arguments, reason = "one call site per trial, all the same parts")]
fn measure(
    args: &LinkArgs,
    topology: &topology::Topology,
    vehicle: &Proc,
    originals: &Arc<client::Originals>,
    key: Option<&ads_protocol::ActionKey>,
    codec: &str,
    case: &Case,
    trial: Option<Trial>,
) -> anyhow::Result<Value> {
    let seconds = match trial {
        Some(Trial::Outage) => (BEFORE_OUTAGE + OUTAGE + AFTER_OUTAGE).as_secs(),
        _ => args.seconds,
    };
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let records: Vec<Arc<Mutex<CaseRecord>>> =
        (0..case.rates_kbps.len()).map(|_| Arc::new(Mutex::new(CaseRecord::default()))).collect();
    let mut threads = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let plan = ClientPlan {
            vehicle_host: topology.vehicle_host(i),
            actions_host: topology.actions_host(),
            key: key.cloned(),
            send_actions: i == 0,
            measure_from,
            credits: true,
            codec: codec.to_string(),
            trace: args.trace,
            heartbeats: !args.no_client_heartbeats,
        };
        threads.push(client::spawn(plan, Arc::clone(record), Arc::clone(originals), Arc::clone(&stop)));
    }
    let stingy = Arc::new(Mutex::new(CaseRecord::default()));
    if args.stingy {
        let plan = ClientPlan {
            vehicle_host: topology.vehicle_host(0),
            actions_host: topology.actions_host(),
            key: None,
            send_actions: false,
            measure_from: started,
            credits: false,
            codec: codec.to_string(),
            trace: false,
            heartbeats: !args.no_client_heartbeats,
        };
        threads.push(client::spawn(plan, Arc::clone(&stingy), Arc::clone(originals), Arc::clone(&stop)));
    }
    let (squatted, flooded) =
        (Arc::new(rogue::RogueCounts::default()), Arc::new(rogue::RogueCounts::default()));
    if trial == Some(Trial::Rogue) {
        for i in 0..SQUATTERS + FLOODERS {
            let (kind, counts) = if i < SQUATTERS {
                (rogue::Rogue::Squatter, &squatted)
            } else {
                (rogue::Rogue::KeyframeFlooder, &flooded)
            };
            let plan = rogue::RoguePlan {
                kind,
                vehicle_host: topology.vehicle_host(0),
                source: topology.rogue_source(i),
                codec: ads_protocol::CODEC_H264.into(),
            };
            threads.push(rogue::spawn(plan, Arc::clone(counts), Arc::clone(&stop)));
        }
    }
    while Instant::now() < measure_from {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu0 = procs::usage(vehicle.pid(), false);
    let keyframes0 = flooded.keyframes.load(Ordering::Relaxed);
    let mut step_ns = None;
    let (mut down_ns, mut up_ns) = (None, None);
    while Instant::now() < end {
        let elapsed = measure_from.elapsed();
        if let (Some((at, kbps)), None) = (case.step, step_ns) {
            if elapsed >= Duration::from_secs_f64(seconds as f64 * at) {
                topology.set_rate(0, kbps)?;
                step_ns = Some(client::wall_ns());
            }
        }
        if trial == Some(Trial::Outage) {
            if down_ns.is_none() && elapsed >= BEFORE_OUTAGE {
                topology.set_up(false)?;
                down_ns = Some(client::wall_ns());
            }
            if up_ns.is_none() && elapsed >= BEFORE_OUTAGE + OUTAGE {
                topology.set_up(true)?;
                up_ns = Some(client::wall_ns());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu1 = procs::usage(vehicle.pid(), false);
    let keyframes = flooded.keyframes.load(Ordering::Relaxed) - keyframes0;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let outage = down_ns.zip(up_ns).map(|(down_ns, up_ns)| client::Outage { down_ns, up_ns });
    let cpu = cpu1.cpu_s - cpu0.cpu_s;
    let viewers: Vec<Value> = records
        .iter()
        .zip(&case.rates_kbps)
        .map(|(r, &rate)| {
            let r = r.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // The link's mean rate over the measured time (before and after a step).
            let link_kbps = case
                .step
                .map_or(f64::from(rate), |(at, after)| f64::from(rate) * at + f64::from(after) * (1.0 - at));
            r.summary(seconds as f64, link_kbps, step_ns, outage)
        })
        .collect();
    let stingy_frames = stingy.lock().unwrap_or_else(std::sync::PoisonError::into_inner).frames.len();
    let rogues = (trial == Some(Trial::Rogue)).then(|| {
        json!({
            "squatters": SQUATTERS,
            "squatter_frames": squatted.frames.load(Ordering::Relaxed),
            "squatter_refusals": squatted.refused.load(Ordering::Relaxed),
            "flooders": FLOODERS,
            "flooder_frames": flooded.frames.load(Ordering::Relaxed),
            "flooder_keyframe_requests": flooded.requests.load(Ordering::Relaxed),
            "flooder_keyframes_per_s": keyframes as f64 / seconds as f64,
        })
    });
    Ok(json!({
        "case": case.name,
        "codec": codec,
        "rates_kbps": case.rates_kbps,
        "step_to_kbps": case.step.map(|(_, k)| k),
        "vehicle_cpu_pct": 100.0 * cpu / seconds as f64,
        "viewers": viewers,
        "stingy_frames": args.stingy.then_some(stingy_frames),
        "rogues": rogues,
    }))
}

fn print_result(r: &Value) {
    if r.get("alone").is_some() {
        println!("\n— the operator alone, then with the rogue clients:");
        print_case(&r["alone"]);
        print_case(&r["with_rogues"]);
    } else {
        print_case(r);
    }
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
        println!("         largest gap between states {:.1} ms", f("state_gap_max_ms"));
        let outage = &v["outage"];
        if outage.is_object() {
            let ms = |k: &str| outage[k].as_f64().map_or("never".to_string(), |ms| format!("{ms:.0} ms"));
            println!(
                "         after the outage: fresh frame after {}, fresh state after {}, {} states over 1 s old arrived (oldest {}), e-stops sent into it acked {} after",
                ms("fresh_frame_ms"),
                ms("fresh_state_ms"),
                outage["stale_states"],
                ms("oldest_state_ms"),
                outage["estop_in_outage_acked_ms"]
            );
        }
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
    let rogues = &r["rogues"];
    if rogues.is_object() {
        println!(
            "  with rogues: {} squatters got {} frames ({} refusals); {} flooders got {} frames, asked {} keyframes, got {:.1} IDR/s",
            rogues["squatters"], rogues["squatter_frames"], rogues["squatter_refusals"], rogues["flooders"],
            rogues["flooder_frames"], rogues["flooder_keyframe_requests"],
            rogues["flooder_keyframes_per_s"].as_f64().unwrap_or(f64::NAN)
        );
    }
}
