//! `ads-ring bench`: one-way latency writer→reader across two processes for full frames, over
//! our ring (blocking and busy-poll, zero-copy and copy-out) and, in the same run, over the
//! paths it replaces (ZeroMQ `ipc://`, `tcp://127.0.0.1`) and iceoryx2. One table, with each
//! row's ratio to our ring waiting the same way.
//!
//! Each case is two fresh processes (`ads-ring bench-peer`): the reader measures
//! `monotonic now − the writer's stamp taken right before publish`, on `CLOCK_MONOTONIC`,
//! which all processes share.

use crate::latency::Summary;
use crate::peers::{self, all_bytes_are, PeerRun, Received};
use ads_shmem_ipc::{
    clock, Error, FrameGeometry, FrameReader, FrameReaderOptions, FrameWriter, PixelFormat, ReadMode, Stamp,
    Wait,
};
use anyhow::Context as _;
use serde::Serialize;
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    RingBlock,
    RingSpin,
    RingCopyBlock,
    RingCopySpin,
    ZmqIpc,
    ZmqTcp,
    Iceoryx2Block,
    Iceoryx2Spin,
}

impl Case {
    const ALL: [Case; 8] = [
        Case::RingBlock,
        Case::RingSpin,
        Case::RingCopyBlock,
        Case::RingCopySpin,
        Case::ZmqIpc,
        Case::ZmqTcp,
        Case::Iceoryx2Block,
        Case::Iceoryx2Spin,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::RingBlock => "ads ring, zero-copy",
            Case::RingSpin => "ads ring, zero-copy",
            Case::RingCopyBlock => "ads ring, copy-out",
            Case::RingCopySpin => "ads ring, copy-out",
            Case::ZmqIpc => "ZeroMQ ipc://",
            Case::ZmqTcp => "ZeroMQ tcp://127.0.0.1",
            Case::Iceoryx2Block => "iceoryx2 0.10, zero-copy",
            Case::Iceoryx2Spin => "iceoryx2 0.10, zero-copy",
        }
    }

    /// The value clap parses back into this case.
    fn arg(self) -> String {
        clap::ValueEnum::to_possible_value(&self).map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    fn spins(self) -> bool {
        matches!(self, Case::RingSpin | Case::RingCopySpin | Case::Iceoryx2Spin)
    }

    fn is_zmq(self) -> bool {
        matches!(self, Case::ZmqIpc | Case::ZmqTcp)
    }

    /// The row this one is compared with: our zero-copy ring, waiting the same way.
    fn baseline(self) -> Case {
        if self.spins() {
            Case::RingSpin
        } else {
            Case::RingBlock
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Measured frames per case.
    #[arg(long, default_value_t = 100_000)]
    pub frames: u64,
    /// Frames sent first and not measured.
    #[arg(long, default_value_t = 1_000)]
    pub warmup: u64,
    #[arg(long, default_value_t = 800)]
    pub width: u32,
    #[arg(long, default_value_t = 600)]
    pub height: u32,
    /// Microseconds between frames for the shared-memory cases (ring, iceoryx2).
    #[arg(long, default_value_t = 200)]
    pub shm_interval_us: u64,
    /// Microseconds between frames for ZeroMQ, which needs ~0.5 ms to move one frame.
    #[arg(long, default_value_t = 1_000)]
    pub zmq_interval_us: u64,
    /// Slots of our ring: its only buffer, so a reader descheduled longer than
    /// `slots × interval` loses frames. 16 (23 MB) is in the range of the peers' queues
    /// (iceoryx2: 46 frames, ZeroMQ: 186 frames by high-water mark).
    #[arg(long, default_value_t = 16)]
    pub slots: u32,
    /// Only these cases (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Case>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/ring-latency.json")]
    pub json: std::path::PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    #[arg(long, value_enum)]
    pub case: Case,
    #[arg(long)]
    pub reader: bool,
    /// Ring name, ZeroMQ endpoint or iceoryx2 service.
    #[arg(long)]
    pub address: String,
    #[arg(long)]
    pub frames: u64,
    #[arg(long)]
    pub warmup: u64,
    #[arg(long)]
    pub width: u32,
    #[arg(long)]
    pub height: u32,
    #[arg(long)]
    pub interval_ns: u64,
    #[arg(long, default_value_t = 16)]
    pub slots: u32,
}

/// What a reader process reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct PeerReport {
    latencies_ns: Vec<u64>,
    lost: u64,
    corrupt: u64,
    cpu_s: f64,
    wall_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    case: Case,
    transport: &'static str,
    wait: &'static str,
    interval_us: u64,
    frames: u64,
    /// Measured frames that arrived whole (every byte checked): the latency samples.
    received: usize,
    /// Measured frames that never arrived (dropped by the writer, lapped, or missing).
    lost: u64,
    /// Frames that arrived but were not one whole frame (the whole-frame check failed, or
    /// the ring's `finish` said overwritten), or came with an impossible index.
    corrupt: u64,
    reader_cpu_percent: f64,
    latency: Summary,
    p50_ratio_to_ours: f64,
    p99_ratio_to_ours: f64,
}

fn geometry(width: u32, height: u32) -> FrameGeometry {
    FrameGeometry::packed(width, height, PixelFormat::Bgr8)
}

fn deadline(frames: u64, interval_ns: u64) -> Duration {
    Duration::from_nanos(frames.saturating_mul(interval_ns)) * 3 + Duration::from_secs(30)
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating ads-ring")?;
    let cases: Vec<Case> = if args.only.is_empty() { Case::ALL.to_vec() } else { args.only.clone() };
    let frame_bytes = geometry(args.width, args.height).frame_bytes();
    println!(
        "ads-ring bench: {} frames of {}x{} BGR ({frame_bytes} bytes) per case, {} warm-up, \
         writer and reader in two processes",
        args.frames, args.width, args.height, args.warmup
    );
    let mut rows = Vec::new();
    for case in cases {
        let interval_us = if case.is_zmq() { args.zmq_interval_us } else { args.shm_interval_us };
        let address = address_for(case)?;
        eprint!("  {:<28} {:<5} ... ", case.label(), wait_name(case));
        let peer = |reader: bool| {
            let mut c = Command::new(&exe);
            c.arg("bench-peer")
                .args(["--case", &case.arg()])
                .args(["--address", &address])
                .args(["--frames", &args.frames.to_string(), "--warmup", &args.warmup.to_string()])
                .args(["--width", &args.width.to_string(), "--height", &args.height.to_string()])
                .args(["--interval-ns", &(interval_us * 1000).to_string()])
                .args(["--slots", &args.slots.to_string()]);
            if reader {
                c.arg("--reader").stdout(Stdio::piped());
            }
            c
        };
        let mut reader = peer(true).spawn().context("starting the reader")?;
        let mut writer = peer(false).spawn().context("starting the writer")?;
        let stdout = reader.stdout.take().context("reader stdout")?;
        let report: Option<PeerReport> = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| serde_json::from_str(&line).ok());
        let reader_status = reader.wait()?;
        let writer_status = writer.wait()?;
        let Some(mut report) = report else {
            anyhow::bail!("{case:?}: the reader reported nothing ({reader_status}, writer {writer_status})");
        };
        anyhow::ensure!(writer_status.success(), "{case:?}: the writer failed ({writer_status})");
        let received = report.latencies_ns.len();
        let latency = Summary::of_ns(&mut report.latencies_ns);
        eprintln!("p50 {:.1} µs", latency.p50_us);
        rows.push(Row {
            case,
            transport: case.label(),
            wait: wait_name(case),
            interval_us,
            frames: args.frames,
            received,
            lost: report.lost,
            corrupt: report.corrupt,
            reader_cpu_percent: 100.0 * report.cpu_s / report.wall_s.max(1e-9),
            latency,
            p50_ratio_to_ours: 0.0,
            p99_ratio_to_ours: 0.0,
        });
    }
    for i in 0..rows.len() {
        if let Some(base) = rows.iter().find(|r| r.case == rows[i].case.baseline()).map(|r| r.latency) {
            rows[i].p50_ratio_to_ours = rows[i].latency.p50_us / base.p50_us;
            rows[i].p99_ratio_to_ours = rows[i].latency.p99_us / base.p99_us;
        }
    }
    print_table(&rows);
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "frames": args.frames, "warmup": args.warmup, "width": args.width, "height": args.height,
        "frame_bytes": frame_bytes, "machine": machine(), "rows": rows,
    });
    std::fs::write(&args.json, serde_json::to_string_pretty(&json)?)?;
    println!("\nresults written to {}", args.json.display());
    Ok(())
}

fn wait_name(case: Case) -> &'static str {
    if case.spins() {
        "spin"
    } else {
        "block"
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| transport | wait | received | lost | corrupt | p50 µs | p99 µs | p99.9 µs | max µs | reader CPU | p50 / ours | p99 / ours |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let l = r.latency;
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% | {:.2}x | {:.2}x |",
            r.transport,
            r.wait,
            r.received,
            r.lost,
            r.corrupt,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            r.reader_cpu_percent,
            r.p50_ratio_to_ours,
            r.p99_ratio_to_ours
        );
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

fn address_for(case: Case) -> anyhow::Result<String> {
    let pid = std::process::id();
    Ok(match case {
        Case::ZmqIpc => format!("ipc:///tmp/ads-bench-{pid}.ipc"),
        Case::ZmqTcp => format!("tcp://127.0.0.1:{}", free_port_pair()?),
        Case::Iceoryx2Block | Case::Iceoryx2Spin => format!("ads-bench-{pid}-{case:?}"),
        _ => format!("bench-{pid}"),
    })
}

/// A port `p` with `p + 1` free too: the ZeroMQ peer uses the next port for its handshake.
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no two adjacent free TCP ports on 127.0.0.1")
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = after.split_ascii_whitespace().collect();
            // Fields 14 and 15 (utime, stime); `f[0]` is field 3.
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0)
}

pub fn peer(args: &PeerArgs) -> anyhow::Result<()> {
    let run = PeerRun {
        frames: args.frames,
        warmup: args.warmup,
        frame_bytes: geometry(args.width, args.height).frame_bytes() as usize,
        interval_ns: args.interval_ns,
        deadline: deadline(args.frames + args.warmup, args.interval_ns),
    };
    let wait = if args.case.spins() { peers::Wait::BusyPoll } else { peers::Wait::Blocking };
    // This process exists only for the benchmark, so a process-wide setting is fine: iceoryx2
    // warns on every start that it found no config file, which would clutter the table.
    iceoryx2::prelude::set_log_level_from_env_or(iceoryx2::prelude::LogLevel::Error);
    if !args.reader {
        return match args.case {
            Case::ZmqIpc | Case::ZmqTcp => peers::zmq_peer::publish(&args.address, &run),
            Case::Iceoryx2Block | Case::Iceoryx2Spin => {
                peers::iceoryx2_peer::publish(&args.address, &run, wait)
            }
            _ => ring_writer(args, &run),
        };
    }
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let received = match args.case {
        Case::ZmqIpc | Case::ZmqTcp => peers::zmq_peer::receive(&args.address, &run, wait)?,
        Case::Iceoryx2Block | Case::Iceoryx2Spin => peers::iceoryx2_peer::receive(&args.address, &run, wait)?,
        _ => ring_reader(args, &run)?,
    };
    let report = PeerReport {
        latencies_ns: received.latencies_ns,
        lost: received.lost,
        corrupt: received.corrupt,
        cpu_s: cpu_seconds() - cpu0,
        wall_s: wall0.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Same contract as the peers: fill the frame, wait for its send time, stamp, publish.
fn ring_writer(args: &PeerArgs, run: &PeerRun) -> anyhow::Result<()> {
    let mut writer = FrameWriter::create(&args.address, geometry(args.width, args.height), args.slots)?;
    // Give the reader (already started, polling for the ring every few ms) time to attach
    // before anything counts; the warm-up frames cover the rest.
    std::thread::sleep(Duration::from_millis(100));
    let never = std::sync::atomic::AtomicBool::new(false);
    let start = clock::monotonic_ns();
    for i in 0..run.warmup + run.frames {
        let mut loan = writer.loan();
        loan.pixels_mut().fill(i as u8);
        crate::ring_tool::pace_until(start + i * run.interval_ns, &never);
        loan.publish(Stamp { id: i, capture_mono_ns: clock::monotonic_ns(), capture_wall_ns: 0 });
    }
    // Let the reader take the last frame before the ring closes.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

fn ring_reader(args: &PeerArgs, run: &PeerRun) -> anyhow::Result<Received> {
    let options =
        FrameReaderOptions { mode: ReadMode::InOrder, expect: Some(geometry(args.width, args.height)) };
    let give_up = Instant::now() + run.deadline;
    let mut reader = loop {
        match FrameReader::attach(&args.address, options) {
            Ok(r) => break r,
            Err(Error::NotFound { .. } | Error::Initialising { .. }) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e.into()),
        }
    };
    let spin = args.case.spins();
    let copy = matches!(args.case, Case::RingCopyBlock | Case::RingCopySpin);
    let slice = Duration::from_millis(100);
    let wait = if spin { Wait::Spin(slice) } else { Wait::Block(slice) };
    let last = run.warmup + run.frames - 1;
    let mut out = Received::default();
    let mut seen = 0u64;
    let mut buf = Vec::new();
    while Instant::now() < give_up {
        let got = if copy {
            match reader.read_copy(wait, &mut buf) {
                Ok(Some(info)) => {
                    let now = clock::monotonic_ns();
                    let ok = all_bytes_are(&buf, info.stamp.id as u8);
                    Some((info.stamp, now, ok))
                }
                Ok(None) => None,
                Err(Error::WriterGone { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        } else {
            match reader.read(wait) {
                Ok(Some(frame)) => {
                    let now = clock::monotonic_ns();
                    let stamp = frame.info().stamp;
                    let px = frame.pixels();
                    // Checked under the pin, before `finish`: the whole frame is one frame.
                    let ok = all_bytes_are(px, stamp.id as u8);
                    Some((stamp, now, ok && frame.finish().is_ok()))
                }
                Ok(None) => None,
                Err(Error::WriterGone { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        };
        let Some((stamp, now, ok)) = got else { continue };
        if stamp.id < run.warmup {
            continue;
        }
        seen += 1;
        if ok {
            out.latencies_ns.push(now.saturating_sub(stamp.capture_mono_ns));
        } else {
            out.corrupt += 1;
        }
        if stamp.id >= last {
            break;
        }
    }
    out.lost = run.frames.saturating_sub(seen);
    Ok(out)
}
