//! `ads-ring`: a frame-ring writer, a reader and a demo that runs both as processes.
//!
//! The writer and reader speak JSON lines on stdout (one event per line), which is what the
//! multi-process tests read; `--human` prints the same figures for people.

use crate::latency::Summary;
use crate::{pattern, shutdown};
use ads_shmem_ipc::{
    clock, Error, FrameGeometry, FrameReader, FrameReaderOptions, FrameWriter, PixelFormat, ReadMode, Stamp,
    Wait, WriterGoneCause,
};
use anyhow::Context as _;
use serde_json::json;
use std::io::Write as _;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Parser)]
#[command(name = "ads-ring", about = "Write, read and demo the ads shared-memory frame ring")]
pub struct Args {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Create a frame ring and publish pattern frames into it.
    Write(WriteArgs),
    /// Attach to a frame ring, verify every frame read and report counters and latency.
    Read(ReadArgs),
    /// Run a writer and a reader as two processes and print live throughput and latency.
    Demo(DemoArgs),
    /// Remove the rings of writers that died without cleaning up (/dev/shm/ads.*).
    Clean,
    /// Measure writer→reader latency across processes: our ring next to ZeroMQ and iceoryx2.
    Bench(crate::ring_bench::BenchArgs),
    /// One side of one benchmark case (started by `bench`).
    #[command(hide = true)]
    BenchPeer(crate::ring_bench::PeerArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RingArgs {
    /// Ring name; the segment is /dev/shm/ads.<name>.
    #[arg(long, default_value = "demo")]
    pub name: String,
    #[arg(long, default_value_t = 800)]
    pub width: u32,
    #[arg(long, default_value_t = 600)]
    pub height: u32,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub ring: RingArgs,
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Frames per second; 0 publishes as fast as possible.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Stop after this many frames; 0 runs until SIGINT/SIGTERM.
    #[arg(long, default_value_t = 0)]
    pub frames: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Latest,
    InOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitArg {
    Block,
    Spin,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub ring: RingArgs,
    #[arg(long, value_enum, default_value = "latest")]
    pub mode: ModeArg,
    #[arg(long, value_enum, default_value = "block")]
    pub wait: WaitArg,
    /// Copy each frame out instead of reading it in place.
    #[arg(long)]
    pub copy: bool,
    /// After the writer goes away, wait for a new one and carry on.
    #[arg(long)]
    pub follow: bool,
    /// Stop after reading this many frames; 0 reads until the writer is gone (or a signal).
    #[arg(long, default_value_t = 0)]
    pub frames: u64,
    /// Milliseconds between `stats` events.
    #[arg(long, default_value_t = 1000)]
    pub stats_ms: u64,
    /// Seconds to wait for the ring to appear.
    #[arg(long, default_value_t = 10.0)]
    pub attach_timeout_s: f64,
    /// Print for people instead of JSON lines.
    #[arg(long)]
    pub human: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "demo")]
    pub name: String,
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Stop after this many seconds; 0 runs until Ctrl-C.
    #[arg(long, default_value_t = 0.0)]
    pub seconds: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Cmd::Write(a) => write(&a),
        Cmd::Read(a) => read(&a),
        Cmd::Demo(a) => demo(&a),
        Cmd::Clean => {
            let reclaimed = ads_shmem_ipc::reclaim_stale().context("scanning /dev/shm")?;
            println!(
                "removed {} stale ring(s){}",
                reclaimed.len(),
                if reclaimed.is_empty() { String::new() } else { format!(": {}", reclaimed.join(", ")) }
            );
            Ok(())
        }
        Cmd::Bench(a) => crate::ring_bench::bench(&a),
        Cmd::BenchPeer(a) => crate::ring_bench::peer(&a),
    }
}

fn emit(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the parent went away) is no reason to stop the ring.
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn geometry(ring: &RingArgs) -> FrameGeometry {
    FrameGeometry::packed(ring.width, ring.height, PixelFormat::Bgr8)
}

fn write(args: &WriteArgs) -> anyhow::Result<()> {
    let stop = shutdown::on_signal()?;
    let mut writer = FrameWriter::create(&args.ring.name, geometry(&args.ring), args.slots)
        .with_context(|| format!("creating frame ring {:?}", args.ring.name))?;
    emit(json!({"event": "created", "name": args.ring.name, "pid": std::process::id()}));
    let interval_ns = if args.fps > 0.0 { (1e9 / args.fps) as u64 } else { 0 };
    let start = clock::monotonic_ns();
    let mut id = 0u64;
    while !stop.load(Ordering::Relaxed) && (args.frames == 0 || id < args.frames) {
        if interval_ns > 0 {
            let due = start + id * interval_ns;
            pace_until(due, &stop);
        }
        let mut loan = writer.loan();
        pattern::fill(loan.pixels_mut(), id);
        loan.publish(Stamp { id, capture_mono_ns: clock::monotonic_ns(), capture_wall_ns: clock::wall_ns() });
        id += 1;
    }
    emit(json!({"event": "writer_done", "published": writer.stats().published}));
    Ok(())
}

/// Sleeps until `due_ns` (monotonic), spinning for the last stretch so pacing stays tight.
pub(crate) fn pace_until(due_ns: u64, stop: &AtomicBool) {
    loop {
        let now = clock::monotonic_ns();
        if now >= due_ns || stop.load(Ordering::Relaxed) {
            return;
        }
        let left = due_ns - now;
        if left > 200_000 {
            std::thread::sleep(Duration::from_nanos(left - 100_000));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Counters for one attachment (one writer incarnation).
#[derive(Debug, Default)]
struct Tally {
    torn: u64,
    id_mismatch: u64,
    first_seq: Option<u64>,
    last_seq: u64,
    latencies_ns: Vec<u64>,
    window_read: u64,
}

fn attach(args: &ReadArgs, stop: &AtomicBool) -> anyhow::Result<Option<FrameReader>> {
    let options = FrameReaderOptions {
        mode: match args.mode {
            ModeArg::Latest => ReadMode::Latest,
            ModeArg::InOrder => ReadMode::InOrder,
        },
        expect: Some(geometry(&args.ring)),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.attach_timeout_s);
    let mut said_waiting = false;
    loop {
        match FrameReader::attach(&args.ring.name, options) {
            Ok(reader) => return Ok(Some(reader)),
            Err(e @ (Error::NotFound { .. } | Error::Initialising { .. } | Error::WriterGone { .. })) => {
                if !said_waiting {
                    tracing::info!("waiting for ring {:?}: {e}", args.ring.name);
                    said_waiting = true;
                }
                if Instant::now() >= deadline {
                    return Err(e).context("ring did not appear in time");
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("attaching"),
        }
    }
}

fn read(args: &ReadArgs) -> anyhow::Result<()> {
    let stop = shutdown::on_signal()?;
    let wait_for = Duration::from_millis(50);
    let wait = match args.wait {
        WaitArg::Block => Wait::Block(wait_for),
        WaitArg::Spin => Wait::Spin(wait_for),
    };
    let mut total_read = 0u64;
    let mut copy_buf = Vec::new();
    'attachments: while let Some(mut reader) = attach(args, &stop)? {
        emit(json!({"event": "attached", "name": reader.name(), "writer_pid": reader.writer_pid(),
                    "generation": reader.generation(), "mono_ns": clock::monotonic_ns()}));
        let mut tally = Tally::default();
        let mut last_stats = Instant::now();
        let outcome = loop {
            if stop.load(Ordering::Relaxed) || (args.frames > 0 && total_read >= args.frames) {
                break None;
            }
            let result = if args.copy {
                reader.read_copy(wait, &mut copy_buf).map(|got| {
                    got.map(|info| {
                        let now = clock::monotonic_ns();
                        (info, pattern::verify(&copy_buf, info.stamp.id), true, now)
                    })
                })
            } else {
                reader.read(wait).map(|got| {
                    got.map(|frame| {
                        let info = frame.info();
                        let now = clock::monotonic_ns();
                        let pattern_ok = pattern::verify(frame.pixels(), info.stamp.id);
                        (info, pattern_ok, frame.finish().is_ok(), now)
                    })
                })
            };
            match result {
                Ok(Some((info, pattern_ok, intact, now))) => {
                    tally.first_seq.get_or_insert(info.seq);
                    tally.last_seq = info.seq;
                    if intact {
                        total_read += 1;
                        tally.window_read += 1;
                        tally.latencies_ns.push(now.saturating_sub(info.publish_mono_ns));
                        if !pattern_ok {
                            tally.torn += 1;
                        }
                        if info.stamp.id != info.seq {
                            tally.id_mismatch += 1;
                        }
                    }
                }
                Ok(None) => {}
                Err(Error::WriterGone { pid, cause, .. }) => break Some((pid, cause)),
                Err(e) => return Err(e).context("reading"),
            }
            if last_stats.elapsed() >= Duration::from_millis(args.stats_ms) {
                report_stats(args, &reader, &mut tally, last_stats.elapsed());
                last_stats = Instant::now();
            }
        };
        let s = reader.stats();
        emit(json!({"event": "summary", "generation": reader.generation(), "read": s.read,
                    "skipped": s.skipped, "dropped": s.dropped, "overruns": s.overruns,
                    "torn": tally.torn, "id_mismatch": tally.id_mismatch,
                    "first_seq": s.first_seq, "first_read_seq": tally.first_seq, "last_seq": tally.last_seq,
                    "published": reader.published()}));
        match outcome {
            Some((pid, cause)) => {
                emit(json!({"event": "writer_gone", "pid": pid,
                            "cause": if cause == WriterGoneCause::Died { "died" } else { "closed" },
                            "mono_ns": clock::monotonic_ns()}));
                if !args.follow {
                    break 'attachments;
                }
            }
            None => break 'attachments,
        }
    }
    Ok(())
}

fn report_stats(args: &ReadArgs, reader: &FrameReader, tally: &mut Tally, window: Duration) {
    let latency = Summary::of_ns(&mut tally.latencies_ns);
    tally.latencies_ns.clear();
    let fps = tally.window_read as f64 / window.as_secs_f64();
    tally.window_read = 0;
    let s = reader.stats();
    if args.human {
        println!(
            "{:>7.1} frames/s | publish->read p50 {:>6.1} µs p99 {:>7.1} µs max {:>7.1} µs | \
             read {} skipped {} dropped {} overruns {} torn {}",
            fps,
            latency.p50_us,
            latency.p99_us,
            latency.max_us,
            s.read,
            s.skipped,
            s.dropped,
            s.overruns,
            tally.torn
        );
    } else {
        emit(json!({"event": "stats", "fps": fps, "latency": latency, "read": s.read, "skipped": s.skipped,
                    "dropped": s.dropped, "overruns": s.overruns, "torn": tally.torn}));
    }
}

fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let stop = shutdown::on_signal()?;
    let exe = std::env::current_exe().context("locating ads-ring")?;
    let name = args.name.as_str();
    println!(
        "ads-ring demo: writer at {} fps into /dev/shm/ads.{name} (800x600 BGR), reader in a second process",
        args.fps
    );
    println!("(publish->read is the zero-copy hand-off latency between the two processes; Ctrl-C stops)");
    let mut writer = Command::new(&exe)
        .args(["write", "--name", name, "--fps", &args.fps.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the writer")?;
    let mut reader = Command::new(&exe)
        .args(["read", "--name", name, "--human", "--follow", "--mode", "in-order"])
        .spawn()
        .context("starting the reader")?;
    let started = Instant::now();
    let mut failure = None;
    while !stop.load(Ordering::Relaxed)
        && (args.seconds <= 0.0 || started.elapsed().as_secs_f64() < args.seconds)
    {
        for (role, child) in [("writer", &mut writer), ("reader", &mut reader)] {
            if let Some(status) = child.try_wait()? {
                failure = Some(format!("the {role} exited unexpectedly ({status})"));
            }
        }
        if failure.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_child("reader", &mut reader);
    stop_child("writer", &mut writer);
    for leftover in
        [ads_shmem_ipc::shm_path(name), ads_shmem_ipc::lock_path(name), ads_shmem_ipc::readers_path(name)]
    {
        if leftover.exists() {
            eprintln!("ads-ring demo: {} was left behind", leftover.display());
        }
    }
    match failure {
        Some(f) => anyhow::bail!(f),
        None => Ok(()),
    }
}

/// SIGTERM, a grace period, then SIGKILL: a child left running keeps its shared memory.
pub fn stop_child(role: &str, child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("ads-ring: the {role} ignored SIGTERM for 3 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}
