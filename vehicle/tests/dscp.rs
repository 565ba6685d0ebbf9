//! DSCP marks on the wire: the real `ads-vehicle` in a private network namespace, real ZeroMQ
//! clients beside it (this test binary, run again inside the namespace), and `tcpdump`
//! capturing its loopback. The vehicle's state (PUB) and action-socket packets must carry
//! CS6 (TOS 0xc0, Wi-Fi's voice class), its video packets AF41 (TOS 0x88, the video class).
//! Needs root, `ip netns` and `tcpdump` (scripts/setup.sh installs it); skipped with a printed
//! reason elsewhere.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{decode, encode_video_request, Credit, Message, VideoHello, VideoRequest, CODEC_JPEG};
use ads_testkit::{unique_name, TestVehicle};
use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set for the client run inside the namespace: `PUB VIDEO ACTIONS` endpoints.
const CLIENT_ENV: &str = "ADS_DSCP_TEST_CLIENT";
/// How long the client watches.
const WATCH: Duration = Duration::from_secs(4);

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip`".into());
    }
    if Command::new("tcpdump").arg("--version").output().is_err() {
        return Some("no `tcpdump` (scripts/setup.sh installs it)".into());
    }
    None
}

/// A network namespace for one test, deleted afterwards.
struct Netns(String);

impl Netns {
    fn new() -> Option<Self> {
        let name = unique_name("dscp");
        let out = Command::new("ip").args(["netns", "add", &name]).output().ok()?;
        if !out.status.success() {
            eprintln!("skipped: ip netns add failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let ns = Self(name);
        let up = Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]).status().unwrap();
        assert!(up.success(), "lo up in {}", ns.0);
        Some(ns)
    }

    fn exec(&self) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// One captured IPv4 packet: its TOS byte, source port and IP length.
#[derive(Debug)]
struct Packet {
    tos: u8,
    source_port: u16,
    length: usize,
}

/// Parses `tcpdump -n -v` output: a header line `... IP (tos 0xc0, ttl 64, ..., length 120)`
/// and then `    127.0.0.1.5557 > 127.0.0.1.40000: Flags ...`.
fn parse(lines: &[String]) -> Vec<Packet> {
    let mut packets = Vec::new();
    for pair in lines.windows(2) {
        let [header, flow] = pair else { continue };
        let Some(tos) = header.split("(tos 0x").nth(1).and_then(|r| r.split(',').next()) else { continue };
        let Ok(tos) = u8::from_str_radix(tos, 16) else { continue };
        let Some(length) = header.rsplit("length ").next().and_then(|r| r.trim_end_matches(')').parse().ok())
        else {
            continue;
        };
        let Some(source) = flow.split_whitespace().next() else { continue };
        let Some(source_port) = source.rsplit('.').next().and_then(|p| p.parse().ok()) else { continue };
        packets.push(Packet { tos, source_port, length });
    }
    packets
}

#[test]
fn state_actions_and_video_leave_with_their_dscp_marks() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let Some(ns) = Netns::new() else { return };
    let car = TestVehicle::build("dscp")
        .binary(env!("CARGO_BIN_EXE_ads-vehicle"))
        .wrapper(["ip", "netns", "exec", &ns.0])
        .vehicle_id("car")
        .args(["--control", "truth"])
        .log("error")
        .spawn();
    let (pub_port, video_port, action_port) = (car.pub_port(), car.video_port(), car.action_port());
    let mut tcpdump = ns
        .exec()
        .args(["tcpdump", "-i", "lo", "-n", "-v", "-l", "tcp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tcpdump.stdout.take().unwrap();
    let reader =
        std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    // tcpdump needs a moment before it captures; the client's first packets could go by.
    std::thread::sleep(Duration::from_millis(500));
    let client = ns
        .exec()
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "client_inside_the_namespace", "--ignored", "--nocapture"])
        .env(CLIENT_ENV, format!("{} {} {}", car.endpoint(), car.video_endpoint(), car.action_endpoint()))
        .output()
        .unwrap();
    let client_out = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success(),
        "the client failed: {client_out}\n{}",
        String::from_utf8_lossy(&client.stderr)
    );
    rustix::process::kill_process(rustix::process::Pid::from_child(&tcpdump), rustix::process::Signal::INT)
        .unwrap();
    let _ = tcpdump.wait();
    let lines = reader.join().unwrap();
    let packets = parse(&lines);
    // Packets with a payload (more than the IP and TCP headers with timestamps, 52 bytes).
    let mut marks: HashMap<u16, Vec<u8>> = HashMap::new();
    for p in packets.iter().filter(|p| p.length > 52) {
        marks.entry(p.source_port).or_default().push(p.tos);
    }
    eprintln!("{client_out}");
    for (name, port, tos) in
        [("state", pub_port, 0xc0u8), ("action", action_port, 0xc0), ("video", video_port, 0x88)]
    {
        let seen = marks.get(&port).cloned().unwrap_or_default();
        eprintln!(
            "{name} (port {port}): {} packets, TOS {:?}",
            seen.len(),
            seen.iter().collect::<std::collections::BTreeSet<_>>()
        );
        assert!(
            !seen.is_empty(),
            "no {name} packets captured from port {port} ({} packets in all)",
            packets.len()
        );
        assert!(seen.iter().all(|&t| t == tos), "{name} packets not all TOS {tos:#04x}: {seen:?}");
    }
}

/// The client half of the test above, run by it inside its namespace (does nothing
/// elsewhere): subscribes to the state, watches the video crediting every frame, and
/// connects to the action socket, for [`WATCH`].
#[test]
#[ignore = "run by state_actions_and_video_leave_with_their_dscp_marks inside its namespace"]
fn client_inside_the_namespace() {
    let Ok(endpoints) = std::env::var(CLIENT_ENV) else { return };
    let endpoints: Vec<&str> = endpoints.split(' ').collect();
    let [pub_endpoint, video_endpoint, action_endpoint] = endpoints[..] else { panic!("{endpoints:?}") };
    let context = zmq::Context::new();
    let states = context.socket(zmq::SUB).unwrap();
    states.set_subscribe(b"state").unwrap();
    states.connect(pub_endpoint).unwrap();
    let actions = context.socket(zmq::PUB).unwrap();
    actions.connect(action_endpoint).unwrap();
    let video = context.socket(zmq::DEALER).unwrap();
    video.set_linger(0).unwrap();
    video.connect(video_endpoint).unwrap();
    let hello = VideoHello { codec: CODEC_JPEG.into(), codecs: vec![], max_kbps: None, full_size: false };
    let started = Instant::now();
    let mut hello_at: Option<Instant> = None;
    let (mut frames, mut state_count) = (0, 0);
    while started.elapsed() < WATCH || frames < 5 || state_count < 5 {
        assert!(started.elapsed() < WATCH * 10, "frames {frames}, states {state_count}");
        if hello_at.is_none_or(|t| t.elapsed() > Duration::from_millis(900)) {
            hello_at = Some(Instant::now());
            video
                .send_multipart(encode_video_request("car", 1, 0, &VideoRequest::Hello(hello.clone())), 0)
                .unwrap();
        }
        while let Ok(parts) = states.recv_multipart(zmq::DONTWAIT) {
            state_count += usize::from(parts.first().is_some_and(|t| t == b"state"));
        }
        if video.poll(zmq::POLLIN, 20).unwrap() > 0 {
            let parts = video.recv_multipart(0).unwrap();
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            if let Ok(ads_protocol::WireMessage { message: Message::Frame(f), .. }) = decode(&refs) {
                let credit = Credit { frame_id: f.frame_id, bytes: 1 };
                video
                    .send_multipart(encode_video_request("car", 1, 0, &VideoRequest::Credit(credit)), 0)
                    .unwrap();
                frames += 1;
            }
        }
    }
    println!("client: {frames} frames, {state_count} states");
}
