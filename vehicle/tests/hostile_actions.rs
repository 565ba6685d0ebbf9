//! Hostile senders against the real `ads-vehicle` binary: a flood of junk, truncated,
//! oversize, forged and replayed actions on its action socket while it drives, a vehicle
//! without a key that must not be reachable from the network, and key files it must refuse.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{
    decode, encode, encode_action, Action, ActionKey, ActionRun, Command, DriveMode, Event, Message,
};
use ads_shmem_ipc::{clock, shm_path};
use ads_testkit::{TestVehicle, VehicleBuilder, DEADLINE};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ads-hostile-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_key(dir: &Path, key: &ActionKey, mode: u32) -> PathBuf {
    let path = dir.join("action.key");
    std::fs::write(&path, format!("{}\n", key.to_hex())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// One `state` as the test saw it, timed by the vehicle's own clock (envelope `capture_ns`).
#[derive(Debug, Clone)]
struct Seen {
    vehicle_ns: u64,
    frame_id: u64,
    mode: DriveMode,
    paused: bool,
    speed_mps: f64,
    target_speed_mps: f64,
    rejected: u64,
    unauthenticated: u64,
    replayed: u64,
    run_id: String,
    run_ns: u64,
}

#[derive(Debug, Default)]
struct Log {
    states: Vec<Seen>,
    accepted_acks: Vec<String>,
    rejected_acks: u64,
}

struct Vehicle {
    car: TestVehicle,
    log: Arc<Mutex<Log>>,
    _context: zmq::Context,
}

fn setup(test: &str, endpoint_host: &str) -> VehicleBuilder {
    TestVehicle::build(test)
        .binary(env!("CARGO_BIN_EXE_ads-vehicle"))
        .vehicle_id("car")
        .action_host(endpoint_host)
}

impl Vehicle {
    fn start(test: &str, endpoint_host: &str, extra: &[&str]) -> Vehicle {
        let car = setup(test, endpoint_host).args(["--control", "truth"]).args(extra).spawn();
        let context = zmq::Context::new();
        let sub = context.socket(zmq::SUB).unwrap();
        sub.set_subscribe(b"state").unwrap();
        sub.set_subscribe(b"event").unwrap();
        sub.set_rcvhwm(100_000).unwrap();
        sub.set_rcvtimeo(100).unwrap();
        sub.connect(&car.endpoint()).unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || loop {
            match sub.recv_multipart(0) {
                Ok(parts) => {
                    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                    let wire = decode(&refs).expect("the vehicle only sends valid messages");
                    let mut log = sink.lock().unwrap();
                    match wire.message {
                        Message::State(s) => log.states.push(Seen {
                            vehicle_ns: wire.capture_ns,
                            frame_id: s.frame_id,
                            mode: s.mode,
                            paused: s.paused,
                            speed_mps: s.speed_mps,
                            target_speed_mps: s.target_speed_mps,
                            rejected: s.drops.actions_rejected,
                            unauthenticated: s.drops.actions_unauthenticated,
                            replayed: s.drops.actions_replayed,
                            run_id: s.commands.run_id,
                            run_ns: s.commands.run_ns,
                        }),
                        Message::Event(Event::Ack { accepted: true, action_id, .. }) => {
                            log.accepted_acks.push(action_id)
                        }
                        Message::Event(Event::Ack { accepted: false, .. }) => log.rejected_acks += 1,
                        _ => {}
                    }
                }
                Err(zmq::Error::EAGAIN) => {
                    if Arc::strong_count(&sink) == 1 {
                        return;
                    }
                }
                Err(_) => return,
            }
        });
        Vehicle { car, log, _context: context }
    }

    fn last_state_where(&mut self, what: &str, accept: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.car.process.0.try_wait() {
                panic!("ads-vehicle exited: {status}");
            }
            if let Some(s) = self.log.lock().unwrap().states.last().filter(|s| accept(s)) {
                return s.clone();
            }
            assert!(Instant::now() < deadline, "no state where {what} within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.car.process.0.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// An XPUB connected to the action socket, returned once the vehicle's subscription has
    /// arrived (docs/protocol.md 5.4). No send high-water mark: a PUB drops what exceeds it,
    /// and the test means to deliver every message (libzmq's receiving side pushes back
    /// through TCP instead of dropping).
    fn action_socket(&self, host: &str) -> zmq::Socket {
        let socket = self._context.socket(zmq::XPUB).unwrap();
        socket.set_sndhwm(0).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_rcvtimeo(DEADLINE.as_millis() as i32).unwrap();
        socket.connect(&format!("tcp://{host}:{}", self.car.action_port())).unwrap();
        let subscription = socket.recv_bytes(0).expect("the vehicle never subscribed");
        assert_eq!(subscription, b"\x01action");
        socket
    }

    /// SIGTERM: a clean exit that takes the frames ring with it.
    fn stop(self) {
        self.car.stop();
    }
}

fn send(socket: &zmq::Socket, parts: &[Vec<u8>]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match socket.send_multipart(parts, zmq::DONTWAIT) {
            Ok(()) => return,
            Err(zmq::Error::EAGAIN) => {
                assert!(Instant::now() < deadline, "the vehicle stopped taking messages");
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// An action of the vehicle's current run (as of `seen`), valid for half a minute.
fn action(id: String, sender: &str, command: Command, seen: &Seen) -> Action {
    let run = ActionRun { run_id: seen.run_id.clone(), expires_run_ns: seen.run_ns + 30_000_000_000 };
    Action { id, sender: sender.into(), command, run }
}

/// Frames per second over `states`, by the vehicle's clock.
fn frame_rate(states: &[Seen]) -> f64 {
    let (first, last) = (states.first().unwrap(), states.last().unwrap());
    (last.frame_id - first.frame_id) as f64 / ((last.vehicle_ns - first.vehicle_ns) as f64 / 1e9)
}

const FLOOD: u64 = 100_000;
const OVERSIZE: u64 = 100;
const REPLAYS: u64 = 1_000;
const ROUNDS: u64 = 5;

#[test]
fn a_flood_of_hostile_actions_changes_nothing_and_costs_no_frames() {
    let dir = temp_dir("flood");
    let key = ActionKey::from_bytes(&[7; 32]).unwrap();
    let key_path = write_key(&dir, &key, 0o600);
    let mut v = Vehicle::start("flood", "*", &["--action-key", key_path.to_str().unwrap()]);
    let cruising = v.last_state_where("the car cruises", |s| s.speed_mps > 6.0);
    assert_eq!(cruising.mode, DriveMode::Driving);
    let target = cruising.target_speed_mps;

    // One genuine action, accepted (the key works through the real binary); captured for replay.
    let socket = v.action_socket("127.0.0.1");
    let genuine = encode_action(
        "car",
        1,
        clock::wall_ns(),
        &action("genuine".into(), "test", Command::SetTargetSpeed { mps: target }, &cruising),
        Some(&key),
    );
    send(&socket, &genuine);
    let deadline = Instant::now() + DEADLINE;
    while !v.log.lock().unwrap().accepted_acks.contains(&"genuine".to_string()) {
        assert!(Instant::now() < deadline, "the genuine action was not accepted");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Baseline: three seconds of undisturbed driving.
    let baseline_from = v.log.lock().unwrap().states.len();
    std::thread::sleep(Duration::from_secs(3));
    let before = v.last_state_where("any", |_| true);
    let rss_before = v.rss_kib();
    let baseline: Vec<Seen> = v.log.lock().unwrap().states[baseline_from..].to_vec();
    let accepted_before = v.log.lock().unwrap().accepted_acks.len();

    // The flood, in rounds of a second so that it lasts long enough to measure a frame rate.
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let envelope = |seq: u64, id: String, command: Command| {
        encode("car", seq, 0, 0, &Message::Action(action(id, "intruder", command, &before)))
    };
    let commands = [
        Command::Pause,
        Command::EmergencyStop,
        Command::Respawn { spawn_point: None },
        Command::SetTargetSpeed { mps: 0.0 },
    ];
    let flood_from = v.log.lock().unwrap().states.len();
    let oversize_socket = v.action_socket("127.0.0.1");
    let started = Instant::now();
    let mut in_limit = 0u64;
    for round in 0..ROUNDS {
        let round_start = Instant::now();
        for i in 0..(FLOOD - OVERSIZE - REPLAYS) / ROUNDS {
            let n = round * FLOOD + i;
            let command = commands[(n % 4) as usize].clone();
            let parts = match n % 5 {
                // Forged: a well-formed action with a made-up MAC.
                0 => vec![b"action".to_vec(), envelope(n + 2, format!("f{n}"), command), noise.bytes(32)],
                // Unsigned: what an old client or a keyless attacker sends.
                1 => vec![b"action".to_vec(), envelope(n + 2, format!("u{n}"), command)],
                // Junk of every size up to 4 KiB, with and without a third part.
                2 => {
                    let len = (noise.next() % 4096) as usize;
                    let mut p = vec![b"action".to_vec(), noise.bytes(len)];
                    if n % 2 == 0 {
                        let mac_len = (noise.next() % 64) as usize;
                        p.push(noise.bytes(mac_len));
                    }
                    p
                }
                // Truncated: a genuinely signed envelope cut short, and part counts cut short.
                3 => {
                    let signed = encode_action(
                        "car",
                        n + 2,
                        0,
                        &action(format!("t{n}"), "test", command, &before),
                        Some(&key),
                    );
                    let cut = (noise.next() as usize) % signed[1].len();
                    match n % 3 {
                        0 => vec![signed[0].clone(), signed[1][..cut].to_vec(), signed[2].clone()],
                        1 => vec![signed[0].clone(), signed[1].clone(), signed[2][..cut % 32].to_vec()],
                        _ => vec![signed[0].clone()],
                    }
                }
                // Signed with another key.
                _ => encode_action(
                    "car",
                    n + 2,
                    0,
                    &action(format!("k{n}"), "test", command, &before),
                    Some(&ActionKey::from_bytes(&[8; 32]).unwrap()),
                ),
            };
            send(&socket, &parts);
            in_limit += 1;
        }
        for _ in 0..REPLAYS / ROUNDS {
            send(&socket, &genuine);
            in_limit += 1;
        }
        // Larger than libzmq lets in (it drops the connection; the socket reconnects).
        for _ in 0..OVERSIZE / ROUNDS {
            let _ =
                oversize_socket.send_multipart([b"action".to_vec(), vec![0xc1; 300 * 1024]], zmq::DONTWAIT);
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(round_start.elapsed()));
    }
    let sent_for = started.elapsed();
    // Replays of the genuine action are answered with its original outcome (counted as
    // replayed, not rejected); everything else is rejected.
    let rejected_expected = in_limit - REPLAYS;
    let flooded = v.last_state_where("every flood message is counted", |s| {
        s.rejected >= before.rejected + rejected_expected && s.replayed >= before.replayed + REPLAYS
    });
    let flood: Vec<Seen> = v.log.lock().unwrap().states[flood_from..].to_vec();
    let rss_after = v.rss_kib();
    let (rate_before, rate_during) = (frame_rate(&baseline), frame_rate(&flood));
    println!(
        "flood: {in_limit} messages + {OVERSIZE} oversize sent in {sent_for:.1?}; frames/s {rate_before:.2} before, \
         {rate_during:.2} during; RSS {rss_before} KiB before, {rss_after} KiB after; rejected +{}, unauthenticated +{}, \
         replayed +{}; {} rejection acks seen (rate-limited)",
        flooded.rejected - before.rejected,
        flooded.unauthenticated - before.unauthenticated,
        flooded.replayed - before.replayed,
        v.log.lock().unwrap().rejected_acks,
    );

    assert!(
        (rate_during - rate_before).abs() <= 0.1 * rate_before,
        "{rate_before:.2} -> {rate_during:.2} frames/s"
    );
    let log = v.log.lock().unwrap();
    let accepted_during = &log.accepted_acks[accepted_before..];
    assert!(
        accepted_during.iter().all(|id| id == "genuine"),
        "accepted during the flood: {accepted_during:?}"
    );
    for s in &flood {
        assert_eq!((s.mode, s.paused), (DriveMode::Driving, false), "{s:?}");
        assert_eq!(s.target_speed_mps, target, "{s:?}");
        assert!(s.speed_mps > 4.0, "the car slowed or was respawned: {s:?}");
    }
    drop(log);
    assert_eq!(
        flooded.rejected - before.rejected,
        rejected_expected,
        "every in-limit message was judged and rejected"
    );
    assert_eq!(flooded.replayed - before.replayed, REPLAYS);
    assert!(flooded.unauthenticated - before.unauthenticated >= 3 * (FLOOD - OVERSIZE - REPLAYS) / 5);
    assert!(rss_after < rss_before + 64 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    v.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A non-loopback IPv4 address of this machine, if it has one.
fn own_network_address() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.1:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn without_a_key_the_action_port_is_closed_to_the_network_but_open_on_loopback() {
    let Some(ip) = own_network_address() else {
        panic!("this machine has no non-loopback address to test from");
    };
    let mut v = Vehicle::start("nokey", "*", &[]);
    let running = v.last_state_where("running", |_| true);
    let refused =
        std::net::TcpStream::connect_timeout(&(ip, v.car.action_port()).into(), Duration::from_secs(5));
    assert!(refused.is_err(), "port {} reachable on {ip} without a key", v.car.action_port());
    assert!(std::net::TcpStream::connect(("127.0.0.1", v.car.action_port())).is_ok());
    // And an unsigned action from loopback is still carried out.
    let socket = v.action_socket("127.0.0.1");
    send(
        &socket,
        &encode_action(
            "car",
            1,
            clock::wall_ns(),
            &action("local".into(), "t", Command::Pause, &running),
            None,
        ),
    );
    v.last_state_where("paused by the local action", |s| s.paused);
    v.stop();

    // With a key the same wildcard endpoint is open to the network, and only signed actions pass.
    let dir = temp_dir("keyed");
    let key = ActionKey::from_bytes(&[9; 32]).unwrap();
    let key_path = write_key(&dir, &key, 0o600);
    let mut v = Vehicle::start("keyed", "*", &["--action-key", key_path.to_str().unwrap()]);
    let running = v.last_state_where("running", |_| true);
    let socket = v.action_socket(&ip.to_string());
    send(
        &socket,
        &encode_action(
            "car",
            1,
            clock::wall_ns(),
            &action("unsigned".into(), "t", Command::Pause, &running),
            None,
        ),
    );
    send(
        &socket,
        &encode_action(
            "car",
            2,
            clock::wall_ns(),
            &action("signed".into(), "t", Command::Pause, &running),
            Some(&key),
        ),
    );
    v.last_state_where("paused by the signed action", |s| s.paused && s.unauthenticated == 1);
    assert_eq!(v.log.lock().unwrap().accepted_acks, ["signed"]);
    v.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

fn start_fails(extra: &[&str], actions_host: &str) -> String {
    let output = setup("refused", actions_host).args(extra).command().output().unwrap();
    assert!(!output.status.success(), "the vehicle started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unusable_keys_and_network_endpoints_without_a_key_stop_the_start() {
    let dir = temp_dir("refuse");
    let key_path = write_key(&dir, &ActionKey::from_bytes(&[1; 32]).unwrap(), 0o644);
    let err = start_fails(&["--action-key", key_path.to_str().unwrap()], "*");
    assert!(err.contains("chmod 600") && err.contains("action.key"), "{err}");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key_path, "short\n").unwrap();
    let err = start_fails(&["--action-key", key_path.to_str().unwrap()], "*");
    assert!(err.contains("hex digits"), "{err}");
    if let Some(ip) = own_network_address() {
        let err = start_fails(&[], &ip.to_string());
        assert!(err.contains("no action key"), "{err}");
    }
    assert!(!shm_path(&setup("refused", "*").frames_ring()).exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// The venv with pyzmq and msgpack that scripts/python-env.sh makes (idempotent).
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out =
        Process::new("bash").arg(root.join("scripts/python-env.sh")).current_dir(&root).output().unwrap();
    assert!(out.status.success(), "python-env.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
}

/// The MAC as docs/protocol.md 5.5 describes it, computed by Python's standard library:
/// accepted with the vehicle's key, rejected as `bad_mac` with another.
#[test]
fn a_python_client_signs_actions_as_the_protocol_doc_says() {
    let python = python();
    let dir = temp_dir("python");
    let key = ActionKey::from_bytes(&[3; 32]).unwrap();
    let key_path = write_key(&dir, &key, 0o600);
    let wrong = dir.join("wrong.key");
    std::fs::write(&wrong, format!("{}\n", "44".repeat(32))).unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut v = Vehicle::start("python", "*", &["--action-key", key_path.to_str().unwrap()]);
    v.last_state_where("running", |_| true);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/ads_client.py");
    let run = |key: &Path, seq: &str| {
        let out = Process::new(&python)
            .arg(&client)
            .args([
                "--pub",
                &v.car.endpoint(),
                "--actions",
                &v.car.action_endpoint(),
                "--video",
                &v.car.video_endpoint(),
            ])
            .args(["--seconds", "2", "--send", "pause", "--sender", "py", "--seq", seq])
            .args(["--action-key", key.to_str().unwrap()])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        });
        (out.status.success(), report)
    };
    let (ok, report) = run(&wrong, "1");
    assert!(!ok, "{report:#}");
    assert_eq!(report["ack"]["reason"], "bad_mac", "{report:#}");
    let (ok, report) = run(&key_path, "2");
    assert!(ok, "{report:#}");
    assert_eq!(report["ack"]["accepted"], true, "{report:#}");
    v.last_state_where("paused", |s| s.paused);
    v.stop();
    std::fs::remove_dir_all(dir).unwrap();
}
