//! CPU share of the whole vehicle process at 30 fps, 800x600 — simulator + ring + JPEG + PUB
//! and video socket — with one video client returning credits on loopback (so every frame is
//! really compressed and sent, at the best tier), and the
//! per-stage times it reports. Prints figures; never fails on them.
//!
//! `cargo bench -p ads-vehicle --bench vehicle_cpu` (ADS_BENCH_SECONDS, default 20).

use ads_protocol::{decode, encode_video_request, Credit, Message, VideoHello, VideoRequest, CODEC_JPEG};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<&str> = after.split_ascii_whitespace().collect();
    // utime and stime: fields 14 and 15; f[0] is field 3.
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn percentile(samples: &mut [u32], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    f64::from(samples[rank - 1])
}

fn main() {
    let seconds: u64 = std::env::var("ADS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let port = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address").port()
    };
    let (pub_port, action_port, video_port) = (port(), port(), port());
    let name = format!("bench{}", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ads-vehicle"))
        .args(["--control", "truth", "--fps", "30"])
        .args(["--broadcast", &format!("tcp://127.0.0.1:{pub_port}")])
        .args(["--video-endpoint", &format!("tcp://127.0.0.1:{video_port}")])
        .args(["--actions", &format!("tcp://127.0.0.1:{action_port}")])
        .args(["--frames-ring", &format!("{name}-frames"), "--detections-ring", &format!("{name}-det")])
        .stderr(Stdio::null())
        .spawn()
        .expect("start ads-vehicle");
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).expect("socket");
    sub.set_subscribe(b"").expect("subscribe");
    sub.set_rcvtimeo(100).expect("timeout");
    sub.connect(&format!("tcp://127.0.0.1:{pub_port}")).expect("connect");
    let video = context.socket(zmq::DEALER).expect("socket");
    video.connect(&format!("tcp://127.0.0.1:{video_port}")).expect("connect");
    let mut hello_at: Option<Instant> = None;

    let ticks_per_s = rustix::param::clock_ticks_per_second() as f64;
    let warmup = Duration::from_secs(3);
    let started = Instant::now();
    let (mut t0, mut cpu0) = (None, 0);
    let (mut frames, mut bytes) = (0u64, 0u64);
    let (mut encode, mut render, mut control) = (Vec::new(), Vec::new(), Vec::new());
    while started.elapsed() < warmup + Duration::from_secs(seconds) {
        if t0.is_none() && started.elapsed() >= warmup {
            t0 = Some(Instant::now());
            cpu0 = cpu_ticks(child.id());
        }
        if hello_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            hello_at = Some(Instant::now());
            let hello = VideoRequest::Hello(VideoHello {
                codec: CODEC_JPEG.into(),
                codecs: vec![],
                max_kbps: None,
                full_size: false,
            });
            video.send_multipart(encode_video_request("*", 1, 0, &hello), 0).expect("hello");
        }
        let mut items = [sub.as_poll_item(zmq::POLLIN), video.as_poll_item(zmq::POLLIN)];
        let _ = zmq::poll(&mut items, 100);
        let from_video = items[1].is_readable();
        let socket = if from_video { &video } else { &sub };
        let Ok(parts) = socket.recv_multipart(zmq::DONTWAIT) else { continue };
        if from_video {
            if let Ok(Message::Frame(f)) =
                decode(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>()).map(|w| w.message)
            {
                let credit =
                    VideoRequest::Credit(Credit { frame_id: f.frame_id, bytes: parts[2].len() as u32 });
                video.send_multipart(encode_video_request("*", 1, 0, &credit), 0).expect("credit");
            }
        }
        if t0.is_none() {
            continue;
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        match decode(&refs).map(|w| (w.message, w.payload.map_or(0, <[u8]>::len))) {
            Ok((Message::Frame(f), len)) => {
                frames += 1;
                bytes += len as u64;
                encode.push(f.encode_us);
            }
            Ok((Message::State(s), _)) => {
                render.push(s.timings.source_us);
                control.push(s.timings.control_us);
            }
            _ => {}
        }
    }
    let wall = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let cpu = (cpu_ticks(child.id()) - cpu0) as f64 / ticks_per_s;
    let _ = child.kill();
    let _ = child.wait();
    let _ = ads_shmem_ipc::reclaim_stale();
    println!(
        "ads-vehicle, simulator 800x600 BGR at 30 fps, JPEG q80 4:2:0, one video client, {seconds} s measured:"
    );
    println!("  CPU: {:.1}% of one core (target <= 25%)", 100.0 * cpu / wall);
    println!(
        "  frames received: {:.1}/s, mean JPEG {:.0} KB",
        frames as f64 / wall,
        bytes as f64 / frames.max(1) as f64 / 1e3
    );
    for (label, samples) in
        [("JPEG encode", &mut encode), ("sim render into ring", &mut render), ("control step", &mut control)]
    {
        println!(
            "  {label:<22} p50 {:>7.0} µs  p99 {:>7.0} µs  ({} samples)",
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            samples.len()
        );
    }
}
