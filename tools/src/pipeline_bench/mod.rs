//! `ads-bench pipeline`: the whole pipeline (vehicle, detection, viewer, headless Chromium)
//! for a while at the vehicle's frame rate, with the latency of every hop measured per frame
//! from the timestamps the processes put on the wire, the CPU share of each process, drops,
//! and the shared-memory-versus-ZeroMQ comparison. With `--soak`, also checks memory growth,
//! frame-id gaps against the drop counters, and latency drift.

pub mod check;
pub mod procs;
mod report;
mod webdriver;
pub mod zmq_compare;

use crate::latency::Summary;
use ads_protocol::{decode, Message};
use anyhow::Context as _;
use procs::{free_port, usage, Proc, Usage};
use report::Hop;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// Seconds measured (after the warm-up); with --soak the default is 600.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Seconds to run before measuring (process start-up, JIT of the page, first fits)
    /// [default: 10; 60 with --soak].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// The vehicle's frame rate.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Headless Chromium instances watching the web UI (0: none; the browser hops are then
    /// not measured).
    #[arg(long, default_value_t = 1)]
    pub browsers: usize,
    #[arg(long, default_value = "oval")]
    pub track: String,
    /// Where pipeline.json and pipeline.svg go [default: target/bench].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Codec the viewer asks the vehicle for (`jpeg` or `h264`; the page decodes H.264 with
    /// WebCodecs, so the browser's decode is inside the capture → painted figures).
    #[arg(long, default_value = "jpeg")]
    pub codec: String,
    /// Skip the ZeroMQ-over-TCP comparison (it adds a reader and a 40 MB/s TCP stream).
    #[arg(long)]
    pub no_zmq_compare: bool,
    /// Soak: run long (600 s by default) and check memory growth, frame-id gaps and latency
    /// drift; exit status 1 if a soak criterion fails.
    #[arg(long)]
    pub soak: bool,
    /// After the run, compare each hop's p50 and p99 with the figures recorded in
    /// docs/benchmarks.md (`--recorded`); exit status 1 if one is more than 1.5x its record.
    #[arg(long)]
    pub check: bool,
    /// The file with the recorded figures for --check.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub recorded: PathBuf,
}

/// Largest resident-memory growth per process after warm-up that a soak accepts.
const SOAK_RSS_GROWTH: u64 = 5 * 1024 * 1024;
/// Largest change of a latency percentile between the soak's first and last minute.
const SOAK_DRIFT: f64 = 0.20;

#[derive(Debug, Default)]
struct Detection {
    capture_ns: u64,
    read_ns: u64,
    processing_us: u32,
    control_read_ns: u64,
}

#[derive(Debug, Default)]
struct Observed {
    detections: HashMap<u64, Detection>,
    last_state: Option<ads_protocol::VehicleState>,
    /// The vehicle's stage timings, by the frame they are of.
    stages: HashMap<u64, ads_protocol::StageTimings>,
}

/// One frame painted in a browser.
#[derive(Debug, Clone, Copy)]
struct Paint {
    frame_id: u64,
    capture_ns: u64,
    recv_ns: u64,
    painted_ns: u64,
    dropped: u64,
    skipped: u64,
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

fn subscribe(endpoint: &str, observed: Arc<Mutex<Observed>>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::SUB)?;
    socket.set_subscribe(b"detection")?;
    socket.set_subscribe(b"state")?;
    socket.set_rcvtimeo(200)?;
    socket.connect(endpoint)?;
    std::thread::spawn(move || {
        let _context = context;
        while !stop.load(Ordering::Relaxed) {
            let Ok(parts) = socket.recv_multipart(0) else { continue };
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let Ok(message) = decode(&refs) else { continue };
            let Ok(mut o) = observed.lock() else { break };
            match message.message {
                Message::Detection(d) => {
                    o.detections.insert(
                        d.frame_id,
                        Detection {
                            capture_ns: d.capture_ns,
                            read_ns: d.read_ns,
                            processing_us: d.processing_us,
                            control_read_ns: d.control_read_ns,
                        },
                    );
                }
                Message::State(s) => {
                    o.stages.insert(s.frame_id, s.timings);
                    o.last_state = Some(s);
                }
                _ => {}
            }
        }
    });
    Ok(())
}

fn fetch_paints(browser: &webdriver::Browser) -> anyhow::Result<Vec<Paint>> {
    let v = browser.js("const p = window.adsStats.paints; window.adsStats.paints = []; return p;")?;
    let field = |p: &Value, k: &str| p[k].as_f64().unwrap_or(0.0) as u64;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| Paint {
                    frame_id: field(p, "frame_id"),
                    capture_ns: field(p, "capture_ns"),
                    recv_ns: field(p, "recv_ns"),
                    painted_ns: field(p, "painted_ns"),
                    dropped: field(p, "dropped"),
                    skipped: field(p, "skipped"),
                })
                .collect()
        })
        .unwrap_or_default())
}

#[derive(Debug, Serialize)]
struct ProcessReport {
    name: String,
    cpu_percent_of_one_core: f64,
    rss_mb_start: f64,
    rss_mb_end: f64,
    rss_mb_max: f64,
}

pub fn run(args: PipelineArgs) -> anyhow::Result<bool> {
    let seconds = args.seconds.unwrap_or(if args.soak { 600 } else { 60 });
    let warmup = args.warmup.unwrap_or(if args.soak { 60 } else { 10 });
    anyhow::ensure!(
        [ads_protocol::CODEC_JPEG, ads_protocol::CODEC_H264].contains(&args.codec.as_str()),
        "--codec {:?}: jpeg or h264",
        args.codec
    );
    let bin = procs::bin_dir()?;
    let tag = format!("bench{}", std::process::id());
    let (frames, detections) = (format!("{tag}-frames"), format!("{tag}-detections"));
    let (pub_port, action_port, web_port) = (free_port()?, free_port()?, free_port()?);
    let video_port = free_port()?;
    let s = |x: &str| x.to_string();
    let mut vehicle = Proc::spawn(
        "ads-vehicle",
        &bin.join("ads-vehicle"),
        &[
            s("--fps"),
            args.fps.to_string(),
            s("--track"),
            args.track.clone(),
            s("--control"),
            s("detections"),
            s("--broadcast"),
            format!("tcp://127.0.0.1:{pub_port}"),
            s("--video-endpoint"),
            format!("tcp://127.0.0.1:{video_port}"),
            s("--actions"),
            format!("tcp://127.0.0.1:{action_port}"),
            s("--frames-ring"),
            frames.clone(),
            s("--detections-ring"),
            detections.clone(),
        ],
    )?;
    let mut detection = Proc::spawn(
        "ads-detection",
        &bin.join("ads-detection"),
        &[
            s("--method"),
            s("cv"),
            s("--frames-ring"),
            frames.clone(),
            s("--detections-ring"),
            detections.clone(),
        ],
    )?;
    let mut viewer = Proc::spawn(
        "ads-viewer",
        &bin.join("ads-viewer"),
        &[
            s("--vehicle"),
            format!("tcp://127.0.0.1:{pub_port}"),
            s("--video"),
            format!("tcp://127.0.0.1:{video_port}"),
            s("--actions"),
            format!("tcp://127.0.0.1:{action_port}"),
            s("--port"),
            web_port.to_string(),
            s("--codec"),
            args.codec.clone(),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_get(web_port, "/healthz").is_some_and(|h| h.contains("\"live\"")) {
        anyhow::ensure!(Instant::now() < deadline, "the viewer never heard the vehicle");
        vehicle.check_alive()?;
        viewer.check_alive()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "bench: pipeline up (vehicle {}, detection {}, viewer {} on :{web_port}); warming up {} s",
        vehicle.pid(),
        detection.pid(),
        viewer.pid(),
        warmup
    );
    let observed = Arc::new(Mutex::new(Observed::default()));
    let stop = Arc::new(AtomicBool::new(false));
    subscribe(&format!("tcp://127.0.0.1:{pub_port}"), Arc::clone(&observed), Arc::clone(&stop))?;

    // The viewer's CPU with no browser, to tell the cost of each browser apart.
    let half = Duration::from_secs(warmup.max(2) / 2);
    let v0 = usage(viewer.pid(), false);
    std::thread::sleep(half);
    let viewer_idle_pct = (usage(viewer.pid(), false).cpu_s - v0.cpu_s) / half.as_secs_f64() * 100.0;

    let mut comparison =
        if args.no_zmq_compare { None } else { Some(zmq_compare::Comparison::start(&frames)?) };
    let mut browsers = Vec::new();
    for _ in 0..args.browsers {
        let b = webdriver::Browser::start()?;
        b.goto(&format!("http://127.0.0.1:{web_port}/"))?;
        browsers.push(b);
    }
    std::thread::sleep(half);
    for b in &browsers {
        anyhow::ensure!(
            b.js("return window.adsStats.framesDrawn")?.as_u64().unwrap_or(0) > 0,
            "a browser drew no frame during the warm-up"
        );
        fetch_paints(b)?;
    }

    // Measuring from here.
    let started_ns = ads_shmem_ipc::clock::wall_ns();
    let started = Instant::now();
    if let Ok(mut o) = observed.lock() {
        o.detections.clear();
    }
    if let Some(c) = &comparison {
        if let Ok(mut a) = c.arrivals.lock() {
            a.clear();
        }
    }
    let state0 =
        observed.lock().ok().and_then(|o| o.last_state.clone()).context("no state from the vehicle")?;
    let metrics0 = http_get(web_port, "/metrics").unwrap_or_default();
    let mut tracked: Vec<(String, u32, bool)> = vec![
        (s("ads-vehicle"), vehicle.pid(), false),
        (s("ads-detection"), detection.pid(), false),
        (s("ads-viewer"), viewer.pid(), false),
    ];
    for (i, b) in browsers.iter().enumerate() {
        tracked.push((format!("chromium #{}", i + 1), b.driver.pid(), true));
    }
    let usage0: Vec<Usage> = tracked.iter().map(|(_, pid, tree)| usage(*pid, *tree)).collect();
    let js_heap = |b: &webdriver::Browser| {
        b.js("if (window.gc) window.gc(); return performance.memory.usedJSHeapSize")
            .ok()
            .and_then(|v| v.as_u64())
    };
    let heap0: Vec<Option<u64>> = browsers.iter().map(js_heap).collect();
    let mut rss_series: Vec<Vec<u64>> = usage0.iter().map(|u| vec![u.rss_bytes]).collect();
    let mut paints: Vec<Vec<Paint>> = vec![Vec::new(); browsers.len()];
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(
            Duration::from_secs(5).min(Duration::from_secs(seconds).saturating_sub(started.elapsed())),
        );
        for p in [&mut vehicle, &mut detection, &mut viewer] {
            p.check_alive()?;
        }
        for (i, b) in browsers.iter().enumerate() {
            paints[i].extend(fetch_paints(b)?);
        }
        for (i, (_, pid, tree)) in tracked.iter().enumerate() {
            rss_series[i].push(usage(*pid, *tree).rss_bytes);
        }
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            eprintln!("bench: {} of {seconds} s", started.elapsed().as_secs());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let usage1: Vec<Usage> = tracked.iter().map(|(_, pid, tree)| usage(*pid, *tree)).collect();
    for (i, b) in browsers.iter().enumerate() {
        paints[i].extend(fetch_paints(b)?);
    }
    let metrics1 = http_get(web_port, "/metrics").unwrap_or_default();
    // Collect garbage first where the browser allows it, so the figure is what the page keeps.
    let heap1: Vec<Option<u64>> = browsers.iter().map(js_heap).collect();
    // What each page decoded with WebCodecs (H.264 only): count, failures, decode times.
    let h264_pages: Vec<(u64, u64, Vec<f64>)> = browsers
        .iter()
        .map(|b| {
            let v = b
                .js("const h = window.adsStats.h264 || {}; return [h.decoded || 0, h.errors || 0, (h.decodeMs || []).slice(-20000)]")
                .unwrap_or(Value::Null);
            let times = v[2].as_array().map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_f64).collect());
            (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0), times)
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    if let Some(c) = comparison.as_mut() {
        c.stop();
    }
    let (state1, detections_seen, stages) = {
        let mut o = observed.lock().map_err(|_| anyhow::anyhow!("observer poisoned"))?;
        (
            o.last_state.clone().context("no state")?,
            std::mem::take(&mut o.detections),
            std::mem::take(&mut o.stages),
        )
    };
    drop(browsers);
    for p in [&mut viewer, &mut detection, &mut vehicle] {
        p.stop();
    }

    // Hops, per frame.
    let in_window = |capture: u64| capture >= started_ns;
    let mut shm_read = Vec::new();
    let mut result_to_control = Vec::new();
    let mut capture_to_control = Vec::new();
    let mut published_to_read = Vec::new();
    for (id, d) in detections_seen.iter().filter(|(_, d)| in_window(d.capture_ns) && d.read_ns > 0) {
        shm_read.push(d.read_ns.saturating_sub(d.capture_ns));
        // The simulator stamps capture before it renders: what the ring and the detector's
        // wake-up add is the rest.
        if let Some(t) = stages.get(id) {
            published_to_read.push(d.read_ns.saturating_sub(d.capture_ns + u64::from(t.source_us) * 1000));
        }
        if d.control_read_ns > 0 {
            let done = d.read_ns + u64::from(d.processing_us) * 1000;
            result_to_control.push(d.control_read_ns.saturating_sub(done));
            capture_to_control.push(d.control_read_ns.saturating_sub(d.capture_ns));
        }
    }
    let all_paints: Vec<Paint> =
        paints.iter().flatten().copied().filter(|p| in_window(p.capture_ns)).collect();
    let mut hops = vec![
        Hop::new("capture → detection reads (shm)", "detection read_ns - capture_ns", shm_read),
        Hop::new(
            "published → detection reads (shm)",
            "detection read_ns - capture_ns - the vehicle's source_us of that frame",
            published_to_read,
        ),
        Hop::new(
            "detection result → control loop (shm)",
            "vehicle control_read_ns - (read_ns + processing)",
            result_to_control,
        ),
        Hop::new(
            "capture → control loop acts (sense→act)",
            "control_read_ns - capture_ns",
            capture_to_control,
        ),
    ];
    if !all_paints.is_empty() {
        hops.push(Hop::new(
            "vehicle capture → viewer receives (TCP)",
            "viewer recv_ns - capture_ns, frames painted",
            all_paints.iter().map(|p| p.recv_ns.saturating_sub(p.capture_ns)).collect(),
        ));
        hops.push(Hop::new(
            "viewer → painted in Chromium",
            "requestAnimationFrame after drawImage - viewer recv_ns",
            all_paints.iter().map(|p| p.painted_ns.saturating_sub(p.recv_ns)).collect(),
        ));
        hops.push(Hop::new(
            "capture → browser (end to end)",
            "painted_ns - capture_ns",
            all_paints.iter().map(|p| p.painted_ns.saturating_sub(p.capture_ns)).collect(),
        ));
    }

    // Shared memory versus ZeroMQ TCP, on the frames both paths carried.
    let zmq_table = comparison.as_ref().map(|c| {
        let arrivals = c.arrivals.lock().map(|a| a.clone()).unwrap_or_default();
        let mut shm = Vec::new();
        let mut tcp = Vec::new();
        let mut extra: Vec<i64> = Vec::new();
        for (id, d) in &detections_seen {
            if let (true, Some(&t)) = (in_window(d.capture_ns) && d.read_ns > 0, arrivals.get(id)) {
                let s = d.read_ns.saturating_sub(d.capture_ns);
                shm.push(s);
                tcp.push(t);
                extra.push(t as i64 - s as i64);
            }
        }
        // Both paths start at the same capture stamp (before the simulator renders the
        // frame), so the per-frame difference is what the transport alone adds.
        extra.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * extra.len() as f64).ceil() as usize).clamp(1, extra.len().max(1));
            extra.get(rank - 1).copied().unwrap_or(0) as f64 / 1e6
        };
        (Summary::of_ns(&mut shm), Summary::of_ns(&mut tcp), (at(0.5), at(0.99)))
    });

    // CPU and memory.
    let processes: Vec<ProcessReport> = tracked
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| ProcessReport {
            name: name.clone(),
            cpu_percent_of_one_core: (usage1[i].cpu_s - usage0[i].cpu_s) / elapsed * 100.0,
            rss_mb_start: usage0[i].rss_bytes as f64 / 1048576.0,
            rss_mb_end: usage1[i].rss_bytes as f64 / 1048576.0,
            rss_mb_max: rss_series[i].iter().copied().max().unwrap_or(0) as f64 / 1048576.0,
        })
        .collect();
    let viewer_pct = processes[2].cpu_percent_of_one_core;
    let per_browser =
        if args.browsers > 0 { (viewer_pct - viewer_idle_pct) / args.browsers as f64 } else { 0.0 };

    // Drops.
    let frames_produced = state1.frame_id.saturating_sub(state0.frame_id);
    let d0 = state0.drops;
    let d1 = state1.drops;
    let not_broadcast = d1.frames_not_broadcast - d0.frames_not_broadcast;
    let overrun = d1.frames_overrun - d0.frames_overrun;
    let viewer_missed = metric(&metrics1, "ads_viewer_frames_missed_total")
        - metric(&metrics0, "ads_viewer_frames_missed_total");
    let viewer_to_clients = metric(&metrics1, "ads_viewer_frames_dropped_total")
        - metric(&metrics0, "ads_viewer_frames_dropped_total");
    let mut browser_rows = Vec::new();
    let mut unexplained_total = 0i64;
    for (i, list) in paints.iter().enumerate() {
        let mut ids: Vec<&Paint> = list.iter().filter(|p| in_window(p.capture_ns)).collect();
        ids.sort_by_key(|p| p.frame_id);
        ids.dedup_by_key(|p| p.frame_id);
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else { continue };
        let span = last.frame_id - first.frame_id + 1;
        let gaps = span - ids.len() as u64;
        // Every frame id the browser did not paint must be in a counter: the vehicle did not
        // send it, the viewer did not get it, the viewer skipped it for this (slow) browser, or
        // the page replaced it before it was decoded.
        let explained_viewer = viewer_missed.max(0.0) as u64;
        let skipped_here = (last.dropped - first.dropped) + (last.skipped - first.skipped);
        let unexplained = gaps as i64 - explained_viewer as i64 - skipped_here as i64;
        unexplained_total += unexplained.max(0);
        browser_rows.push(json!({
            "browser": i + 1, "frames_painted": ids.len(), "frame_id_span": span, "gaps": gaps,
            "viewer_missed": explained_viewer, "dropped_for_this_browser": last.dropped - first.dropped,
            "replaced_before_decode": last.skipped - first.skipped, "unexplained": unexplained,
        }));
    }

    // Output.
    let mut out = String::new();
    out.push_str(&format!(
        "\nads pipeline benchmark: {seconds} s at {} fps, {} browser(s), track {}, codec {}, measured after {} s warm-up\n\n",
        args.fps, args.browsers, args.track, args.codec, warmup
    ));
    out.push_str(&report::hop_table(&hops));
    let stage_rows = stage_summary(&stages, state0.frame_id);
    out.push_str("\nvehicle stages (state.timings of each frame)  p50 µs   p99 µs\n");
    for (name, summary) in &stage_rows {
        out.push_str(&format!("  {name:<43} {:>7.0} {:>8.0}\n", summary.p50_us, summary.p99_us));
    }
    if let Some((shm, tcp, (extra50, extra99))) = zmq_table {
        out.push_str(&format!(
            "\ncamera → detection process, same {} frames   p50 ms   p99 ms   max ms\n  shared-memory ring                    {:>8.3} {:>8.3} {:>8.3}\n  ZeroMQ over TCP (loopback)            {:>8.3} {:>8.3} {:>8.3}\n  ratio TCP / ring                      {:>7.1}x {:>7.1}x\n  TCP minus ring, per frame             {:>8.3} {:>8.3}   (what the transport adds)\n",
            shm.count,
            shm.p50_us / 1e3, shm.p99_us / 1e3, shm.max_us / 1e3,
            tcp.p50_us / 1e3, tcp.p99_us / 1e3, tcp.max_us / 1e3,
            tcp.p50_us / shm.p50_us.max(0.001), tcp.p99_us / shm.p99_us.max(0.001),
            extra50, extra99,
        ));
    }
    for (i, (decoded, errors, times)) in h264_pages.iter().enumerate() {
        let mut ms = times.clone();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms.get(((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len().max(1)) - 1);
        out.push_str(&format!(
            "\nchromium #{} WebCodecs H.264: {decoded} frames decoded, {errors} decoder errors, decode p50/p99 {} ms{}\n",
            i + 1,
            match (at(0.5), at(0.99)) {
                (Some(a), Some(b)) => format!("{a:.2}/{b:.2}"),
                _ => "–".into(),
            },
            if args.codec == ads_protocol::CODEC_H264 && *decoded == 0 {
                " (asked for H.264 but the page painted JPEG: no WebCodecs here?)"
            } else {
                ""
            },
        ));
    }
    out.push_str("\nprocess            CPU % of one core   RSS MB start → end (max)\n");
    for p in &processes {
        out.push_str(&format!(
            "  {:<18} {:>8.1}            {:>7.1} → {:.1} ({:.1})\n",
            p.name, p.cpu_percent_of_one_core, p.rss_mb_start, p.rss_mb_end, p.rss_mb_max
        ));
    }
    out.push_str(&format!(
        "  viewer with no browser: {viewer_idle_pct:.1} %; per connected browser: {per_browser:+.1} %\n"
    ));
    out.push_str(&format!(
        "\ndrops: vehicle produced {frames_produced} frames; not broadcast (rate limit/encoder busy) {not_broadcast}, overrun {overrun}; viewer missed {viewer_missed:.0}, skipped for slow browsers {viewer_to_clients:.0}\n"
    ));
    for row in &browser_rows {
        out.push_str(&format!("  browser {}: {}\n", row["browser"], row));
    }
    let e2e = hops.iter().find(|h| h.name.starts_with("capture → browser")).map(|h| h.summary);
    if let Some(e2e) = e2e {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        out.push_str(&format!(
            "\ntargets (2-core x86 VM): capture → browser p50 {:.1} ms ≤ 20 ms: {}; p99 {:.1} ms ≤ 40 ms: {}\n",
            e2e.p50_us / 1e3,
            verdict(e2e.p50_us <= 20_000.0),
            e2e.p99_us / 1e3,
            verdict(e2e.p99_us <= 40_000.0)
        ));
    }

    let mut soak = Value::Null;
    let mut soak_ok = true;
    let mut out_info: Vec<String> = Vec::new();
    if args.soak {
        let mut checks = Vec::new();
        for (i, p) in processes.iter().enumerate() {
            // The first sample after warm-up is the baseline.
            let base = rss_series[i].first().copied().unwrap_or(0);
            let peak = rss_series[i].iter().copied().max().unwrap_or(0);
            let growth = peak.saturating_sub(base);
            let text = format!("{} RSS growth {:.2} MB ≤ 5 MB", p.name, growth as f64 / 1048576.0);
            if tracked[i].2 {
                // Chromium's own caches are not ours to bound; what our page keeps is (below).
                out_info.push(format!("{text} (browser process tree: reported, not judged)"));
            } else {
                checks.push((text, growth <= SOAK_RSS_GROWTH));
            }
        }
        for (i, (h0, h1)) in heap0.iter().zip(&heap1).enumerate() {
            if let (Some(h0), Some(h1)) = (h0, h1) {
                let growth = h1.saturating_sub(*h0);
                let text = format!(
                    "page JS heap in chromium #{} {:.1} → {:.1} MB, growth ≤ 5 MB",
                    i + 1,
                    *h0 as f64 / 1048576.0,
                    *h1 as f64 / 1048576.0
                );
                checks.push((text, growth <= SOAK_RSS_GROWTH));
            }
        }
        checks.push((format!("unexplained frame-id gaps: {unexplained_total}"), unexplained_total == 0));
        let minute = 60_000_000_000u64;
        let window = |from: u64, to: u64| {
            let mut v: Vec<u64> = all_paints
                .iter()
                .filter(|p| p.capture_ns >= from && p.capture_ns < to)
                .map(|p| p.painted_ns.saturating_sub(p.capture_ns))
                .collect();
            Summary::of_ns(&mut v)
        };
        let end_ns = started_ns + (elapsed * 1e9) as u64;
        let (first, last) =
            (window(started_ns, started_ns + minute), window(end_ns.saturating_sub(minute), end_ns));
        for (name, a, b) in [("p50", first.p50_us, last.p50_us), ("p99", first.p99_us, last.p99_us)] {
            let drift = (b - a).abs() / a.max(1.0);
            checks.push((
                format!("capture → browser {name}: first minute {:.2} ms, last minute {:.2} ms (drift {:.0}% ≤ 20%)", a / 1e3, b / 1e3, drift * 100.0),
                drift <= SOAK_DRIFT && first.count > 0 && last.count > 0,
            ));
        }
        out.push_str("\nsoak:\n");
        for line in &out_info {
            out.push_str(&format!("  [info] {line}\n"));
        }
        for (text, ok) in &checks {
            out.push_str(&format!("  [{}] {text}\n", if *ok { "ok" } else { "FAIL" }));
            soak_ok &= ok;
        }
        soak = json!(checks.iter().map(|(t, ok)| json!({"check": t, "ok": ok})).collect::<Vec<_>>());
    }
    let mut check_ok = true;
    if args.check {
        let text = std::fs::read_to_string(&args.recorded)
            .with_context(|| format!("reading the recorded figures {}", args.recorded.display()))?;
        let recorded =
            check::recorded(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.recorded.display()))?;
        let measured: Vec<(String, f64, f64)> = hops
            .iter()
            .map(|h| (h.name.to_string(), h.summary.p50_us / 1e3, h.summary.p99_us / 1e3))
            .collect();
        let verdicts = check::compare(&recorded, &measured, check::FACTOR);
        out.push_str(&check::table(&verdicts, check::FACTOR));
        check_ok = verdicts.iter().all(|v| v.ok);
    }
    println!("{out}");

    let dir = args.out.clone().unwrap_or_else(|| {
        bin.parent().map_or_else(|| PathBuf::from("target"), |p| p.to_path_buf()).join("bench")
    });
    std::fs::create_dir_all(&dir)?;
    let name = if args.soak { "soak" } else { "pipeline" };
    let browser_h264: Vec<Value> = h264_pages
        .iter()
        .map(|(decoded, errors, times)| {
            let mut ms = times.clone();
            ms.sort_by(f64::total_cmp);
            json!({"decoded": decoded, "errors": errors, "decode_ms_samples": ms.len(), "decode_ms_p50": ms.get(ms.len() / 2)})
        })
        .collect();
    let json_report = json!({
        "seconds": seconds, "warmup_s": warmup, "fps": args.fps, "browsers": args.browsers, "track": args.track,
        "codec": args.codec,
        "browser_h264": browser_h264,
        "hops": hops,
        "vehicle_stages_us": stage_rows.iter().map(|(name, s)| json!({"stage": name, "p50": s.p50_us, "p99": s.p99_us})).collect::<Vec<_>>(),
        "shm_vs_zmq_tcp": zmq_table.map(|(shm, tcp, (extra50, extra99))| json!({
            "ring": shm, "zmq_tcp": tcp, "ratio_p50": tcp.p50_us / shm.p50_us.max(0.001),
            "tcp_minus_ring_ms": {"p50": extra50, "p99": extra99},
        })),
        "processes": processes,
        "viewer_cpu_percent_idle": viewer_idle_pct, "viewer_cpu_percent_per_browser": per_browser,
        "drops": {"frames_produced": frames_produced, "not_broadcast": not_broadcast, "overrun": overrun,
                  "viewer_missed": viewer_missed, "viewer_skipped_for_slow_browsers": viewer_to_clients,
                  "browsers": browser_rows},
        "soak": soak,
    });
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(&json_report)?)?;
    std::fs::write(
        dir.join(format!("{name}.svg")),
        report::svg(&hops, &format!("ads pipeline: latency per hop, {seconds} s at {} fps", args.fps)),
    )?;
    eprintln!("bench: wrote {0}/{name}.json and {0}/{name}.svg", dir.display());
    Ok(soak_ok && check_ok)
}

/// p50 / p99 of each of the vehicle's stage timings over the frames after `from_frame`.
fn stage_summary(
    stages: &HashMap<u64, ads_protocol::StageTimings>,
    from_frame: u64,
) -> Vec<(&'static str, Summary)> {
    let column = |f: fn(&ads_protocol::StageTimings) -> u32| {
        let mut ns: Vec<u64> =
            stages.iter().filter(|(id, _)| **id >= from_frame).map(|(_, t)| u64::from(f(t)) * 1000).collect();
        Summary::of_ns(&mut ns)
    };
    vec![
        ("capture (render, noise, ring write: source_us)", column(|t| t.source_us)),
        ("  of it sensor noise", column(|t| t.noise_us)),
        ("  of it ring write", column(|t| t.ring_write_us)),
        ("encode (encode_us)", column(|t| t.encode_us)),
        ("send (send_us)", column(|t| t.send_us)),
        ("control (control_us)", column(|t| t.control_us)),
    ]
}
