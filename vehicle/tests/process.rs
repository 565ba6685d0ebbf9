//! The real `ads-vehicle` binary on free ports, driven by a real ZeroMQ client.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{
    decode, encode, encode_video_request, Action, ActionRun, Command, Credit, Detections, DriveMode, Event,
    LaneDetection, Message, PilotMode, RejectReason, VehicleState, VideoHello, VideoRequest, CODEC_JPEG,
    PROTOCOL_VERSION,
};
use ads_shmem_ipc::{clock, MessageWriter, Stamp};
use ads_sim::{SimConfig, Simulator, TrackKind};
use ads_testkit::{TestVehicle, VehicleBuilder, DEADLINE};
use std::process::Command as Process;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

struct Received {
    message: Message,
    payload: Option<Vec<u8>>,
}

struct Vehicle {
    car: TestVehicle,
    actions: zmq::Socket,
    incoming: Receiver<Received>,
    seq: u64,
    /// The vehicle's run id and run clock as last seen in its state, and when.
    run: (String, u64, Instant),
    _context: zmq::Context,
}

/// A latch file of this test's own (never the user's ~/.local/state), kept across vehicles.
fn latch_for(test: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ads-process-{}-{test}.latch", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn setup(test: &str, extra: &[&str]) -> VehicleBuilder {
    TestVehicle::build(test).binary(env!("CARGO_BIN_EXE_ads-vehicle")).vehicle_id("test-car").args(extra)
}

impl Vehicle {
    fn start(test: &str, extra: &[&str]) -> Vehicle {
        Self::spawn(setup(test, extra))
    }

    fn start_with_latch(test: &str, extra: &[&str], latch: &std::path::Path) -> Vehicle {
        Self::spawn(setup(test, extra).latch_file(latch))
    }

    fn spawn(setup: VehicleBuilder) -> Vehicle {
        let car = setup.spawn();
        let context = zmq::Context::new();
        let sub = context.socket(zmq::SUB).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.connect(&car.endpoint()).unwrap();
        // Frames come on the video socket, one per credit (docs/protocol.md 2.1).
        let video = context.socket(zmq::DEALER).unwrap();
        video.connect(&car.video_endpoint()).unwrap();
        let actions = context.socket(zmq::PUB).unwrap();
        actions.connect(&car.action_endpoint()).unwrap();
        let (tx, incoming) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut hello_at: Option<Instant> = None;
            loop {
                if hello_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    hello_at = Some(Instant::now());
                    let hello = VideoHello {
                        codec: CODEC_JPEG.into(),
                        codecs: vec![],
                        max_kbps: None,
                        full_size: false,
                    };
                    video
                        .send_multipart(encode_video_request("*", 1, 0, &VideoRequest::Hello(hello)), 0)
                        .unwrap();
                }
                let mut items = [sub.as_poll_item(zmq::POLLIN), video.as_poll_item(zmq::POLLIN)];
                if zmq::poll(&mut items, 100).is_err() {
                    return;
                }
                for socket in [&video, &sub] {
                    while let Ok(parts) = socket.recv_multipart(zmq::DONTWAIT) {
                        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                        let wire = decode(&refs).expect("the vehicle only sends valid messages");
                        if let Message::Frame(f) = &wire.message {
                            let credit = Credit { frame_id: f.frame_id, bytes: refs[2].len() as u32 };
                            let parts = encode_video_request("*", 1, 0, &VideoRequest::Credit(credit));
                            video.send_multipart(parts, 0).unwrap();
                        }
                        let received =
                            Received { message: wire.message, payload: wire.payload.map(<[u8]>::to_vec) };
                        if tx.send(received).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut vehicle = Vehicle {
            car,
            actions,
            incoming,
            seq: 0,
            run: (String::new(), 0, Instant::now()),
            _context: context,
        };
        vehicle.state_where(|_| true);
        vehicle
    }

    /// The run stamp of an action valid for `ttl` from now on the vehicle's run clock.
    fn run_stamp(&self, ttl: Duration) -> ActionRun {
        let (id, run_ns, seen) = &self.run;
        let now_run = run_ns + seen.elapsed().as_nanos() as u64;
        ActionRun { run_id: id.clone(), expires_run_ns: now_run + ttl.as_nanos() as u64 }
    }

    /// A whole action message (unsigned), numbered by this client.
    fn action_parts(&mut self, id: &str, run: ActionRun, command: Command) -> Vec<Vec<u8>> {
        self.seq += 1;
        let action = Action { id: id.into(), sender: "rust-test".into(), command, run };
        let envelope =
            encode("test-car", self.seq, clock::wall_ns(), clock::wall_ns(), &Message::Action(action));
        vec![b"action".to_vec(), envelope]
    }

    fn next_where<T>(&mut self, mut pick: impl FnMut(&Received) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.car.process.0.try_wait() {
                panic!("ads-vehicle exited: {status}");
            }
            // In slices, so a vehicle that died is reported as such, not as silence.
            let slice = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(500));
            match self.incoming.recv_timeout(slice) {
                Ok(r) => {
                    if let Some(t) = pick(&r) {
                        return t;
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(RecvTimeoutError::Timeout) => panic!("nothing matching within {DEADLINE:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("subscriber thread ended"),
            }
        }
    }

    fn state_where(&mut self, accept: impl Fn(&VehicleState) -> bool) -> VehicleState {
        let mut run = None;
        let found = self.next_where(|r| match &r.message {
            Message::State(s) => {
                run = Some((s.commands.run_id.clone(), s.commands.run_ns, Instant::now()));
                accept(s).then(|| s.clone())
            }
            _ => None,
        });
        if let Some(run) = run {
            self.run = run;
        }
        found
    }

    fn send_raw(&self, parts: &[&[u8]]) {
        self.actions.send_multipart(parts, 0).unwrap();
    }

    /// Sends `command` until it is acknowledged (the first sends may precede the connection),
    /// each time as a new action; returns the acknowledgement.
    fn act(&mut self, command: Command) -> (bool, Option<RejectReason>, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let id = format!("{}-{}", self.car.name(), self.seq + 1);
            let parts = self.action_parts(&id, self.run_stamp(Duration::from_secs(5)), command.clone());
            self.send_raw(&[&parts[0], &parts[1]]);
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                if let Ok(r) = self.incoming.recv_timeout(Duration::from_millis(50)) {
                    if let Message::Event(Event::Ack { action_id, accepted, reason, detail, .. }) = r.message
                    {
                        if action_id == id {
                            return (accepted, reason, detail);
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no acknowledgement for {command:?}");
        }
    }

    /// SIGTERM: a clean exit that takes the frames ring with it.
    fn stop(self) {
        self.car.stop();
    }
}

#[test]
fn frames_state_and_truth_flow_with_increasing_ids() {
    let mut v = Vehicle::start("flow", &["--control", "truth"]);
    let mut ids = Vec::new();
    while ids.len() < 10 {
        let (id, size, jpeg) = v.next_where(|r| match &r.message {
            Message::Frame(f) => Some((f.frame_id, (f.width, f.height), r.payload.clone().unwrap())),
            _ => None,
        });
        let image = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::BGR).unwrap();
        // A new session starts on a reduced tier and climbs; the envelope says which size.
        assert_eq!((image.width as u32, image.height as u32), size);
        assert!(size.0 <= 800 && size.0 * 3 == size.1 * 4, "{size:?}");
        let mean = image.pixels.iter().map(|&p| u64::from(p)).sum::<u64>() / image.pixels.len() as u64;
        assert!((30..230).contains(&mean), "a real picture, not a blank one: mean {mean}");
        ids.push(id);
    }
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "{ids:?}");
    // On loopback the session soon gets the full picture.
    v.next_where(|r| {
        matches!(&r.message, Message::Frame(f) if f.width == 800 && f.height == 600).then_some(())
    });
    let truth = v.next_where(|r| match &r.message {
        Message::Truth(t) => Some(t.clone()),
        _ => None,
    });
    assert!(!truth.h_samples.is_empty() && truth.ego_left.is_some() && truth.ego_right.is_some());
    let state = v.state_where(|s| s.speed_mps > 1.0);
    assert_eq!(state.mode, DriveMode::Driving);
    // No outputs: the simulator moves the car itself and knows its speed.
    let a = &state.actuator;
    assert_eq!((a.backend.as_str(), a.state.as_str(), a.speed_source.as_str()), ("none", "none", "sim"));
    assert_eq!((a.steering_us, a.throttle_us, a.fault.as_deref()), (None, None, None));
    v.stop();
}

#[test]
fn frames_are_not_compressed_while_nobody_watches() {
    let mut v = Vehicle::start("nobody", &["--control", "truth"]);
    let context = zmq::Context::new();
    // A second client that only wants state; then the first (the only video client) leaves.
    let state_only = context.socket(zmq::SUB).unwrap();
    state_only.set_subscribe(b"state").unwrap();
    state_only.set_rcvtimeo(20_000).unwrap();
    state_only.connect(&v.car.endpoint()).unwrap();
    v.next_where(|r| matches!(r.message, Message::Frame(_)).then_some(()));
    state_only.recv_multipart(0).unwrap();
    drop(std::mem::replace(&mut v.incoming, std::sync::mpsc::channel().1));
    let state = |socket: &zmq::Socket| loop {
        let parts = socket.recv_multipart(0).unwrap();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        if let Message::State(s) = decode(&refs).unwrap().message {
            return s;
        }
    };
    // Once the video client is gone, frames are held back instead of compressed.
    let deadline = Instant::now() + DEADLINE;
    let first = loop {
        let s = state(&state_only);
        if s.drops.frames_not_broadcast > 0 {
            break s;
        }
        assert!(Instant::now() < deadline, "frames were still being compressed for nobody");
    };
    // Fifteen frames later (the source keeps producing), none of them was compressed.
    let later = loop {
        let s = state(&state_only);
        if s.frame_id > first.frame_id + 15 {
            break s;
        }
    };
    assert!(
        later.drops.frames_not_broadcast >= first.drops.frames_not_broadcast + 14,
        "{first:?}\n{later:?}"
    );
    // And the vehicle's own count of encodes over the last second falls to nothing.
    let deadline = Instant::now() + DEADLINE;
    while state(&state_only).link.encodes_per_s > 0.0 {
        assert!(Instant::now() < deadline, "still encoding for nobody");
    }
    v.stop();
}

#[test]
fn pause_freezes_frames_and_resume_restarts_them() {
    let mut v = Vehicle::start("pause", &["--control", "truth"]);
    v.state_where(|s| s.frame_id > 5);
    assert!(v.act(Command::Pause).0);
    let frozen = v.state_where(|s| s.paused && s.mode == DriveMode::Paused).frame_id;
    // Several states later (state keeps flowing while paused), the frame id has not moved.
    for _ in 0..10 {
        assert_eq!(v.state_where(|_| true).frame_id, frozen);
    }
    assert!(v.act(Command::Resume).0);
    v.state_where(|s| !s.paused && s.frame_id > frozen + 3);
    v.stop();
}

#[test]
fn respawn_puts_the_car_on_the_spawn_point() {
    let mut v = Vehicle::start("respawn", &["--control", "truth", "--track", "s-bends", "--seed", "3"]);
    let expected = Simulator::new(SimConfig { track: TrackKind::SBends, seed: 3, ..SimConfig::default() })
        .spawn_points()[1];
    v.state_where(|s| s.speed_mps > 1.0);
    assert!(v.act(Command::Pause).0);
    let (accepted, _, detail) = v.act(Command::Respawn { spawn_point: Some(1) });
    assert!(accepted, "{detail}");
    let s = v.state_where(|s| s.paused && s.speed_mps == 0.0);
    assert!(
        (s.pose.x_m - expected.x).abs() < 1e-9 && (s.pose.y_m - expected.y).abs() < 1e-9,
        "{s:?} vs {expected:?}"
    );
    assert!((s.pose.yaw_rad - expected.yaw).abs() < 1e-9);
    let (accepted, reason, detail) = v.act(Command::Respawn { spawn_point: Some(999) });
    assert_eq!((accepted, reason), (false, Some(RejectReason::NotAllowed)), "{detail}");
    v.stop();
}

#[test]
fn emergency_stop_latches_until_reset_and_only_a_later_resume_drives() {
    let mut v = Vehicle::start("estop", &["--control", "truth"]);
    v.state_where(|s| s.speed_mps > 3.0);
    assert!(v.act(Command::EmergencyStop).0);
    let stopped = v.state_where(|s| s.mode == DriveMode::EmergencyStop && s.speed_mps == 0.0);
    assert_eq!((stopped.throttle, stopped.brake), (0.0, 1.0));
    assert!(stopped.commands.estop_latched);
    // A pause does not hide it: e-stop dominates.
    assert!(v.act(Command::Pause).0);
    let s = v.state_where(|s| s.paused);
    assert_eq!(s.mode, DriveMode::EmergencyStop, "{s:?}");
    // `resume` alone does not release it.
    let (accepted, reason, detail) = v.act(Command::Resume);
    assert_eq!((accepted, reason), (false, Some(RejectReason::NotAllowed)), "{detail}");
    assert!(detail.contains("reset"), "{detail}");
    for _ in 0..30 {
        let s = v.state_where(|_| true);
        assert_eq!((s.speed_mps, s.mode), (0.0, DriveMode::EmergencyStop), "latched");
    }
    // `reset` releases the latch but never moves the car by itself.
    let (accepted, _, detail) = v.act(Command::Reset);
    assert!(accepted, "{detail}");
    let held = v.state_where(|s| !s.commands.estop_latched);
    assert!(held.commands.held, "{held:?}");
    for _ in 0..30 {
        let s = v.state_where(|_| true);
        assert_eq!(s.speed_mps, 0.0, "moved after a reset alone: {s:?}");
        assert!(matches!(s.mode, DriveMode::Stopped | DriveMode::Paused), "{s:?}");
    }
    assert!(v.act(Command::Resume).0);
    v.state_where(|s| s.mode == DriveMode::Driving && s.speed_mps > 0.5);
    let (accepted, reason, _) = v.act(Command::SetTargetSpeed { mps: 100.0 });
    assert_eq!((accepted, reason), (false, Some(RejectReason::NotAllowed)));
    assert!(v.act(Command::SetTargetSpeed { mps: 3.0 }).0);
    v.state_where(|s| s.target_speed_mps == 3.0);
    v.stop();
}

#[test]
fn an_emergency_stop_past_its_expiry_and_from_an_earlier_run_still_stops_the_car() {
    let mut v = Vehicle::start("estop-late", &["--control", "truth"]);
    assert!(v.act(Command::SetTargetSpeed { mps: 8.0 }).0, "connected");
    v.state_where(|s| s.speed_mps > 3.0);
    let long_expired = ActionRun { run_id: "an-earlier-run".into(), expires_run_ns: 1 };
    let parts = v.action_parts("late-stop", long_expired, Command::EmergencyStop);
    v.send_raw(&[&parts[0], &parts[1]]);
    let (accepted, _, detail) = ack_for(&mut v, "late-stop");
    assert!(accepted, "{detail}");
    v.state_where(|s| s.mode == DriveMode::EmergencyStop && s.speed_mps == 0.0);
    v.stop();
}

#[test]
fn the_latch_survives_sigkill_and_a_restart() {
    let latch = latch_for("restart");
    let mut v = Vehicle::start_with_latch("restart", &["--control", "truth"], &latch);
    v.state_where(|s| s.speed_mps > 3.0);
    assert!(v.act(Command::EmergencyStop).0);
    let first_run = v.state_where(|s| s.commands.estop_latched).commands.run_id;
    v.car.process.crash();
    drop(v);
    // The same vehicle again, as systemd would restart it.
    let mut again = Vehicle::start_with_latch("restart", &["--control", "truth"], &latch);
    let s = again.state_where(|s| s.commands.run_id != first_run);
    assert!(s.commands.estop_latched, "{s:?}");
    for _ in 0..60 {
        let s = again.state_where(|_| true);
        assert_eq!((s.mode, s.speed_mps), (DriveMode::EmergencyStop, 0.0), "drove after a restart: {s:?}");
    }
    assert!(!again.act(Command::Resume).0, "resume released a persisted latch");
    assert!(again.act(Command::Reset).0);
    assert!(again.act(Command::Resume).0);
    again.state_where(|s| s.mode == DriveMode::Driving && s.speed_mps > 0.5);
    again.stop();
    let _ = std::fs::remove_file(&latch);
}

#[test]
fn with_an_operator_required_silence_stops_the_car_until_an_operator_resumes() {
    let mut v = Vehicle::start(
        "operator",
        &["--control", "truth", "--require-operator", "--operator-timeout-ms", "500"],
    );
    let waiting = v.state_where(|s| s.mode == DriveMode::Stopped);
    assert!(waiting.commands.operator_required && waiting.speed_mps == 0.0, "{waiting:?}");
    let (accepted, _, detail) = v.act(Command::Resume);
    assert!(!accepted, "resume without an operator: {detail}");
    // Heartbeats, as a viewer sends them, then resume: it drives.
    let beats = v.action_parts("beat-0", v.run_stamp(Duration::from_secs(1)), Command::Heartbeat);
    v.send_raw(&[&beats[0], &beats[1]]);
    let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (endpoint, run, flag) = (v.car.action_endpoint(), v.run.clone(), std::sync::Arc::clone(&beating));
    let beater = std::thread::spawn(move || {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PUB).unwrap();
        socket.connect(&endpoint).unwrap();
        let mut seq = 1_000_000;
        while flag.load(std::sync::atomic::Ordering::Relaxed) {
            seq += 1;
            let now_run = run.1 + run.2.elapsed().as_nanos() as u64;
            let stamp = ActionRun { run_id: run.0.clone(), expires_run_ns: now_run + 1_000_000_000 };
            let beat = Action {
                id: format!("hb-{seq}"),
                sender: "beater".into(),
                command: Command::Heartbeat,
                run: stamp,
            };
            let envelope = encode("test-car", seq, 0, 0, &Message::Action(beat));
            socket.send_multipart([&b"action"[..], &envelope], 0).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    v.state_where(|s| s.commands.operator_heartbeat_age_ms.is_some_and(|a| a < 500));
    assert!(v.act(Command::Resume).0);
    v.state_where(|s| s.mode == DriveMode::Driving && s.speed_mps > 1.0);
    // The operator goes away: controlled stop, and state says why.
    beating.store(false, std::sync::atomic::Ordering::Relaxed);
    beater.join().unwrap();
    let stopped = v.state_where(|s| s.mode == DriveMode::Stopped && s.speed_mps == 0.0);
    let reason = stopped.health.stop_reason.unwrap_or_default();
    assert!(reason.contains("operator heartbeat"), "{reason}");
    v.stop();
}

#[test]
fn a_flood_of_oversized_junk_actions_is_not_echoed_at_size() {
    let mut v = Vehicle::start("junk-flood", &["--control", "truth"]);
    // Connected first (a PUB drops what it sends before the vehicle's subscription arrives).
    assert!(v.act(Command::SetTargetSpeed { mps: 5.0 }).0, "connected");
    let fresh = v.run_stamp(Duration::from_secs(30));
    let started = Instant::now();
    let long = "n".repeat(400);
    for i in 0..3000u64 {
        let id = format!("{i}{long}");
        let action = Action { id, sender: long.clone(), command: Command::Pause, run: fresh.clone() };
        let mut envelope = encode("test-car", i, 0, 0, &Message::Action(action));
        if i % 3 == 0 {
            envelope.extend(std::iter::repeat_n(0xc0, 600)); // over the action size cap
        }
        v.send_raw(&[b"action", &envelope]);
    }
    // Everything the vehicle published as acks while (and shortly after) the flood arrived.
    let (mut ack_bytes, mut acks, mut largest) = (0usize, 0usize, 0usize);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let Ok(r) = v.incoming.recv_timeout(Duration::from_millis(50)) else { continue };
        if let Message::Event(Event::Ack { action_id, sender, detail, accepted, .. }) = &r.message {
            assert!(!accepted, "junk was accepted");
            let size = action_id.len() + sender.len() + detail.len();
            (ack_bytes, acks, largest) = (ack_bytes + size, acks + 1, largest.max(size));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{acks} acks, {ack_bytes} bytes echoed over {seconds:.1} s, largest {largest} bytes");
    assert!(largest <= 64 + 64 + 200, "an ack echoed {largest} bytes");
    assert!((ack_bytes as f64) <= (seconds + 1.0) * 16.0 * 1024.0, "{ack_bytes} bytes in {seconds:.1} s");
    let s = v.state_where(|s| s.drops.actions_rejected >= 100.max(acks as u64));
    assert!(!s.paused, "junk paused the car");
    v.stop();
}

fn ack_for(v: &mut Vehicle, id: &str) -> (bool, Option<RejectReason>, String) {
    v.next_where(|r| match &r.message {
        Message::Event(Event::Ack { action_id, accepted, reason, detail, .. }) if action_id == id => {
            Some((*accepted, *reason, detail.clone()))
        }
        _ => None,
    })
}

/// An action envelope with an arbitrary command type, as a client in another language would
/// build it.
fn hand_made_envelope(id: &str, command_type: &str, run: &ActionRun) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Env<'a> {
        v: u16,
        vehicle: &'a str,
        seq: u64,
        capture_ns: u64,
        send_ns: u64,
        body: Body<'a>,
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        id: &'a str,
        sender: &'a str,
        command: std::collections::BTreeMap<&'a str, &'a str>,
        run: &'a ActionRun,
    }
    let env = Env {
        v: PROTOCOL_VERSION,
        vehicle: "test-car",
        seq: 99,
        capture_ns: 0,
        send_ns: 0,
        body: Body {
            id,
            sender: "other-client",
            command: [("type", command_type)].into_iter().collect(),
            run,
        },
    };
    rmp_serde::to_vec_named(&env).unwrap()
}

#[test]
fn bad_actions_are_rejected_and_the_vehicle_keeps_publishing() {
    let mut v = Vehicle::start("bad", &["--control", "truth"]);
    assert!(v.act(Command::SetTargetSpeed { mps: 5.0 }).0, "connected");
    let before = v.state_where(|_| true).frame_id;
    let now = clock::wall_ns();
    let fresh = v.run_stamp(Duration::from_secs(5));
    let stale = ActionRun { expires_run_ns: 1, ..fresh.clone() };
    let envelope = |seq: u64, id: &str, sender: &str, run: &ActionRun, command: Command| {
        let action = Action { id: id.into(), sender: sender.into(), command, run: run.clone() };
        encode("test-car", seq, now, now, &Message::Action(action))
    };
    v.send_raw(&[b"action", &envelope(1, "old", "bad-client", &stale, Command::Pause)]);
    assert_eq!(ack_for(&mut v, "old").1, Some(RejectReason::Expired));
    v.send_raw(&[b"action", &envelope(10, "once", "bad-client", &fresh, Command::Resume)]);
    assert!(ack_for(&mut v, "once").0);
    // The same id again is a retransmission: answered with the original outcome.
    v.send_raw(&[b"action", &envelope(10, "once", "bad-client", &fresh, Command::Resume)]);
    assert!(ack_for(&mut v, "once").0, "a retransmission gets the original outcome");
    v.send_raw(&[b"action", &envelope(11, "once", "intruder", &fresh, Command::Pause)]);
    assert_eq!(ack_for(&mut v, "once").1, Some(RejectReason::Duplicate), "same id, another sender");
    v.send_raw(&[b"action", &envelope(10, "replay", "bad-client", &fresh, Command::Pause)]);
    assert_eq!(ack_for(&mut v, "replay").1, Some(RejectReason::Duplicate), "used sequence number");
    let earlier_run = ActionRun { run_id: "0123456789abcdef".into(), ..fresh.clone() };
    v.send_raw(&[b"action", &envelope(12, "old-run", "bad-client", &earlier_run, Command::Pause)]);
    let (_, reason, detail) = ack_for(&mut v, "old-run");
    assert_eq!(reason, Some(RejectReason::Expired), "{detail}");
    v.send_raw(&[b"action", &hand_made_envelope("fly-1", "fly", &fresh)]);
    assert_eq!(ack_for(&mut v, "fly-1").1, Some(RejectReason::Unknown));
    // Garbage, a wrong part count and random bytes: rejected as malformed, never acted on.
    v.send_raw(&[b"action", b"\x93\x01\x02"]);
    v.send_raw(&[b"action"]);
    let mut x = 0x1234_5678_9abc_def0u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let junk: Vec<u8> = (0..(x % 200) as usize).map(|i| (x >> (i % 56)) as u8).collect();
        v.send_raw(&[b"action", &junk]);
    }
    v.next_where(|r| match &r.message {
        Message::Event(Event::Ack { reason: Some(RejectReason::Malformed), .. }) => Some(()),
        _ => None,
    });
    // Nothing above paused or stopped the car, and frames still advance.
    let after = v.state_where(|s| s.frame_id > before + 30);
    assert_eq!(after.mode, DriveMode::Driving);
    assert!(!after.paused);
    assert!(after.drops.actions_rejected >= 5, "{:?}", after.drops);
    v.stop();
}

fn centred_lane_record(frame_id: u64) -> Vec<u8> {
    ads_protocol::encode_record(&Detections {
        frame_id,
        capture_ns: clock::wall_ns(),
        detector: "test".into(),
        processing_us: 1,
        read_ns: clock::wall_ns(),
        control_read_ns: 0,
        lanes: Some(LaneDetection {
            h_samples: vec![],
            left: vec![],
            right: vec![],
            left_confidence: 1.0,
            right_confidence: 1.0,
            lateral_offset_m: 0.0,
            heading_error_rad: 0.0,
            curvature_radius_m: None,
        }),
        objects: vec![],
    })
}

#[test]
fn drives_on_fresh_detections_and_stops_safely_when_they_stop() {
    let mut v = Vehicle::start("failsafe", &[]);
    let s = v.state_where(|s| s.mode == DriveMode::Failsafe);
    assert!(s.health.stop_reason.unwrap().contains("no detections"));
    assert_eq!(s.speed_mps, 0.0);

    // Play the detector: write records into the detections ring through real shared memory.
    let mut detector =
        MessageWriter::create(&v.car.detections_ring(), ads_protocol::MAX_DETECTION_RECORD, 8).unwrap();
    let feeding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feed = std::sync::Arc::clone(&feeding);
    let feeder = std::thread::spawn(move || {
        let mut id = 0;
        while feed.load(std::sync::atomic::Ordering::Relaxed) {
            detector.publish(&centred_lane_record(id), Stamp { id, ..Stamp::default() }).unwrap();
            id += 1;
            std::thread::sleep(Duration::from_millis(30));
        }
        detector
    });
    let driving = v.state_where(|s| s.mode == DriveMode::Driving && s.speed_mps > 1.0);
    assert!(driving.health.detections_fresh);
    v.next_where(|r| matches!(r.message, Message::Detection(_)).then_some(()));

    // The detector stops publishing (hung, say): controlled stop, and state says why.
    feeding.store(false, std::sync::atomic::Ordering::Relaxed);
    let _detector = feeder.join().unwrap();
    let stopped = v.state_where(|s| s.mode == DriveMode::Failsafe && s.speed_mps == 0.0);
    let reason = stopped.health.stop_reason.unwrap();
    assert!(reason.contains("ms old"), "{reason}");
    assert!(!stopped.health.detections_fresh);
    v.stop();
}

/// The venv with pyzmq and msgpack that scripts/python-env.sh makes (idempotent).
fn python() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out =
        Process::new("bash").arg(root.join("scripts/python-env.sh")).current_dir(&root).output().unwrap();
    assert!(out.status.success(), "python-env.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    std::path::PathBuf::from(stdout.lines().last().unwrap().trim())
}

#[test]
fn a_python_client_following_the_protocol_doc_reads_every_topic_and_pauses_the_car() {
    let python = python();
    let mut v = Vehicle::start("python", &["--control", "truth"]);
    let client = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/ads_client.py");
    let sender = format!("python-{}", std::process::id());
    let out = Process::new(python)
        .arg(client)
        .args(["--pub", &v.car.endpoint(), "--actions", &v.car.action_endpoint(), "--seconds", "4"])
        .args(["--video", &v.car.video_endpoint()])
        .args(["--send", "pause", "--sender", &sender])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    assert!(out.status.success(), "{report:#}\n{}", String::from_utf8_lossy(&out.stderr));
    for topic in ["frame", "state", "truth", "event"] {
        assert!(report["counts"][topic].as_u64() > Some(0), "no {topic}: {report:#}");
    }
    assert_eq!(report["frames_bad"], 0, "{report:#}");
    // A new session starts on a modest tier (its goodput is not known yet): a scaled frame of
    // the ring's 800x600, matching its envelope (the client checks that).
    let (w, h) = (report["jpeg_sizes"][0].as_u64().unwrap(), report["jpeg_sizes"][1].as_u64().unwrap());
    assert!(w <= 800 && w * 3 == h * 4, "{report:#}");
    assert_eq!(report["ack"]["accepted"], true, "{report:#}");
    // What the Python client asked for really happened.
    v.state_where(|s| s.paused);
    v.stop();
}

// ---- The stop chain (docs/protocol.md 5.3) ----

/// Sends one action as is (no retransmission) from this client.
fn send_once(v: &mut Vehicle, id: &str, command: Command) {
    let parts = v.action_parts(id, v.run_stamp(Duration::from_secs(30)), command);
    v.send_raw(&[&parts[0], &parts[1]]);
}

/// The whole ack of `id`: (accepted, reason, detail, persisted).
fn full_ack_for(v: &mut Vehicle, id: &str) -> (bool, Option<RejectReason>, String, Option<bool>) {
    v.next_where(|r| match &r.message {
        Message::Event(Event::Ack { action_id, accepted, reason, detail, persisted, .. })
            if action_id == id =>
        {
            Some((*accepted, *reason, detail.clone(), *persisted))
        }
        _ => None,
    })
}

#[test]
fn a_burst_of_valid_actions_neither_delays_nor_loses_an_emergency_stop() {
    let mut v = Vehicle::start("burst", &["--control", "truth"]);
    assert!(v.act(Command::SetTargetSpeed { mps: 8.0 }).0, "connected");
    v.state_where(|s| s.speed_mps > 3.0);
    // Nothing dropped on the way out of this client: every action reaches the vehicle.
    v.actions.set_sndhwm(0).unwrap();
    let first_seq = v.seq + 1;
    for i in 0..2000 {
        send_once(&mut v, &format!("burst-{i}"), Command::SetTargetSpeed { mps: 8.0 });
    }
    send_once(&mut v, "the-stop", Command::EmergencyStop);
    // Sent once: the next state after it is latched and braking (the acks of the burst may
    // crowd the ack out of a subscriber's queue; the state says what the car does).
    let mut busy = Vec::new();
    let s = v.next_where(|r| match &r.message {
        Message::Event(Event::Ack { action_id, reason: Some(RejectReason::Busy), .. }) => {
            busy.push(action_id.clone());
            None
        }
        Message::State(s) if s.commands.estop_latched => Some(s.clone()),
        _ => None,
    });
    assert_eq!((s.mode, s.throttle, s.brake), (DriveMode::EmergencyStop, 0.0, 1.0), "{s:?}");
    v.state_where(|s| s.speed_mps == 0.0);
    // Sent again as a viewer would (same id, same seq): the original outcome, persisted.
    let stop_seq = first_seq + 2000;
    let stop = Action {
        id: "the-stop".into(),
        sender: "rust-test".into(),
        command: Command::EmergencyStop,
        run: v.run_stamp(Duration::from_secs(30)),
    };
    let envelope = encode("test-car", stop_seq, 0, 0, &Message::Action(stop));
    v.send_raw(&[b"action", &envelope]);
    let (accepted, _, detail, persisted) = full_ack_for(&mut v, "the-stop");
    assert!(accepted && persisted == Some(true), "{detail}");
    eprintln!("{} of the burst answered busy", busy.len());
    assert!(!busy.is_empty(), "the burst never filled the action queue: this test tests nothing");
    // That a busy action leaves no trace (its retransmission is judged afresh) is the
    // gate's unit test: here the e-stop's retransmission moved the sender's sequence on.
    v.stop();
}

#[test]
fn respawn_and_a_new_speed_are_refused_while_latched_and_respawn_while_held() {
    let mut v = Vehicle::start("respawn-latched", &["--control", "truth"]);
    v.state_where(|s| s.speed_mps > 1.0);
    assert!(v.act(Command::EmergencyStop).0);
    let before = v.state_where(|s| s.commands.estop_latched && s.speed_mps == 0.0);
    let (accepted, reason, detail) = v.act(Command::Respawn { spawn_point: Some(1) });
    assert_eq!((accepted, reason), (false, Some(RejectReason::NotAllowed)), "{detail}");
    let (accepted, _, _) = v.act(Command::SetTargetSpeed { mps: 5.0 });
    assert!(!accepted, "a new speed under the latch");
    let after = v.state_where(|_| true);
    assert_eq!((after.pose.x_m, after.pose.y_m), (before.pose.x_m, before.pose.y_m), "the car moved");
    assert!(v.act(Command::Reset).0);
    v.state_where(|s| s.commands.held);
    let (accepted, _, detail) = v.act(Command::Respawn { spawn_point: Some(1) });
    assert!(!accepted, "respawn while held: {detail}");
    assert!(v.act(Command::Resume).0);
    assert!(v.act(Command::Respawn { spawn_point: Some(1) }).0);
    v.stop();
}

#[test]
fn reset_then_a_crash_restarts_held_not_driving() {
    let latch = latch_for("reset-crash");
    let mut v = Vehicle::start_with_latch("reset-crash", &["--control", "truth"], &latch);
    v.state_where(|s| s.speed_mps > 1.0);
    assert!(v.act(Command::EmergencyStop).0);
    let (accepted, _, detail) = v.act(Command::Reset);
    assert!(accepted, "{detail}");
    let first_run = v.state_where(|s| s.commands.held && !s.commands.estop_latched).commands.run_id;
    // Killed between reset and resume, restarted as Restart=on-failure would.
    v.car.process.crash();
    drop(v);
    let mut again = Vehicle::start_with_latch("reset-crash", &["--control", "truth"], &latch);
    again.state_where(|s| s.commands.run_id != first_run);
    for _ in 0..60 {
        let s = again.state_where(|_| true);
        assert_eq!((s.mode, s.speed_mps), (DriveMode::Stopped, 0.0), "drove after a restart: {s:?}");
        assert!(s.commands.held && !s.commands.estop_latched, "{s:?}");
    }
    assert!(again.act(Command::Resume).0);
    again.state_where(|s| s.mode == DriveMode::Driving && s.speed_mps > 0.5);
    // Resumed and persisted as released: the next restart may drive again (a simulator).
    again.state_where(|_| true);
    again.stop();
    let _ = std::fs::remove_file(&latch);
}

#[test]
fn a_vehicle_that_cannot_persist_its_latch_does_not_start() {
    let dir = std::env::temp_dir().join(format!("ads-process-{}-readonly", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let latch = dir.join("estop.latch");
    let mut setup = setup("no-latch", &["--control", "truth"]).latch_file(&latch);
    if rustix::process::geteuid().is_root() {
        // Root writes anywhere: run the vehicle as nobody, as the unit runs it as `ads`.
        setup = setup.wrapper(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]);
    }
    let stderr_file = dir.with_extension("stderr");
    let mut command = setup.command();
    command.stderr(std::fs::File::create(&stderr_file).unwrap());
    let mut vehicle = ads_testkit::Kill(command.spawn().unwrap());
    // A vehicle that starts anyway runs until it is stopped: that is the failure.
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = vehicle.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(vehicle);
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_file);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| panic!("started without a latch it can write: {stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&latch.display().to_string()), "the message names the file: {stderr}");
}

#[test]
fn an_emergency_stop_brakes_before_the_disk_has_the_latch() {
    // Every fsync takes a second, as on a slow SD card (strace's fault injection).
    let latch = latch_for("slow-disk");
    let strace = [
        "strace",
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-o",
        "/dev/null",
        "-e",
        "trace=fsync,fdatasync",
        "-e",
        "inject=fsync,fdatasync:delay_enter=1000000",
    ];
    let mut v =
        Vehicle::spawn(setup("slow-disk", &["--control", "truth"]).latch_file(&latch).wrapper(strace));
    assert!(v.act(Command::SetTargetSpeed { mps: 8.0 }).0, "connected");
    v.state_where(|s| s.speed_mps > 3.0);
    send_once(&mut v, "slow-stop", Command::EmergencyStop);
    let sent = Instant::now();
    // Every state and the ack, in arrival order, until the ack.
    let mut states: Vec<(Instant, VehicleState)> = Vec::new();
    let (accepted, persisted) = v.next_where(|r| match &r.message {
        Message::State(s) => {
            states.push((Instant::now(), s.clone()));
            None
        }
        Message::Event(Event::Ack { action_id, accepted, persisted, .. }) if action_id == "slow-stop" => {
            Some((*accepted, *persisted))
        }
        _ => None,
    });
    let acked = sent.elapsed();
    assert!(accepted && persisted == Some(true), "{persisted:?}");
    let braking: Vec<&(Instant, VehicleState)> =
        states.iter().filter(|(_, s)| s.mode == DriveMode::EmergencyStop).collect();
    assert!(braking.len() >= 2, "no braking before the latch reached the disk ({acked:?} to the ack)");
    let (first, last) = (&braking[0].1, &braking[braking.len() - 1].1);
    assert_eq!((first.throttle, first.brake), (0.0, 1.0));
    assert!(
        last.speed_mps < first.speed_mps,
        "speed not falling: {} then {}",
        first.speed_mps,
        last.speed_mps
    );
    // The loop never stood still for the disk: no gap anywhere near the injected second.
    let gaps = states.windows(2).map(|w| w[1].0 - w[0].0);
    let largest = gaps.max().unwrap_or_default();
    eprintln!("ack after {acked:?}, {} states meanwhile, largest gap {largest:?}", states.len());
    assert!(largest < Duration::from_millis(700), "the state stopped for {largest:?}");
    // strace does not pass SIGTERM on to the vehicle: stop the vehicle itself.
    let tracer = v.car.process.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children")).unwrap_or_default();
    for pid in children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::TERM,
        );
    }
    v.stop();
    let _ = std::fs::remove_file(&latch);
}

#[test]
fn with_its_descriptors_exhausted_from_the_network_an_emergency_stop_is_still_persisted() {
    // A vehicle that cannot raise its limit, and more connections than it has descriptors.
    let latch = latch_for("fd-flood");
    let setup = setup("fd-flood", &["--control", "truth"])
        .latch_file(&latch)
        .wrapper(["prlimit", "--nofile=256:256"]);
    let mut v = Vehicle::spawn(setup);
    assert!(v.act(Command::SetTargetSpeed { mps: 8.0 }).0, "connected");
    v.state_where(|s| s.speed_mps > 1.0);
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current = limit.maximum;
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
    let address = format!("127.0.0.1:{}", v.car.pub_port());
    let flood: Vec<std::net::TcpStream> =
        (0..2000).filter_map(|_| std::net::TcpStream::connect(&address).ok()).collect();
    eprintln!("{} connections open to the PUB port", flood.len());
    assert!(flood.len() >= 300, "the flood did not reach the vehicle's limit");
    send_once(&mut v, "fd-stop", Command::EmergencyStop);
    let (accepted, _, detail, persisted) = full_ack_for(&mut v, "fd-stop");
    assert!(accepted && persisted == Some(true), "{detail}");
    v.state_where(|s| s.commands.estop_latched && s.speed_mps == 0.0);
    drop(flood);
    v.stop();
    let _ = std::fs::remove_file(&latch);
}

/// Manual driving at the protocol level (docs/protocol.md 5.8): drive commands move the car only
/// in manual/assist and only from the sender that set the mode; an older command never
/// overrides a newer one; assist steers by the autopilot at the operator's pace; back to
/// autopilot the car holds until resume; and every produced frame gets its `controls` label.
#[test]
fn drive_commands_follow_the_mode_the_driver_and_their_leases() {
    let mut v = Vehicle::start("teleop", &["--control", "truth"]);
    v.state_where(|s| s.speed_mps > 1.0 && s.teleop.pilot == PilotMode::Autopilot);
    let drive = |steering, throttle| Command::Drive {
        steering,
        throttle,
        lease_ms: 300,
        issued_ns: clock::wall_ns(),
    };
    // In autopilot a drive command is dropped, not applied.
    let parts = v.action_parts("d-auto", v.run_stamp(Duration::from_secs(1)), drive(1.0, 1.0));
    v.send_raw(&[&parts[0], &parts[1]]);
    v.state_where(|s| s.teleop.dropped >= 1 && s.teleop.taken == 0);

    let (accepted, _, detail) = v.act(Command::SetDriveMode { mode: PilotMode::Manual });
    assert!(accepted, "{detail}");
    let s = v.state_where(|s| s.teleop.pilot == PilotMode::Manual && s.speed_mps < 0.1);
    assert_eq!(s.teleop.driver.as_deref(), Some("rust-test"));
    // Left turn at full throttle, renewed every 50 ms; a stale command (lower seq) in between
    // must not take over.
    let stale = v.action_parts("d-stale", v.run_stamp(Duration::from_secs(1)), drive(-1.0, 0.0));
    let mut driven = None;
    for i in 0..120 {
        let parts =
            v.action_parts(&format!("d{i}"), v.run_stamp(Duration::from_millis(600)), drive(0.8, 0.6));
        v.send_raw(&[&parts[0], &parts[1]]);
        if i == 10 {
            v.send_raw(&[&stale[0], &stale[1]]);
        }
        std::thread::sleep(Duration::from_millis(50));
        while let Ok(r) = v.incoming.try_recv() {
            if let Message::State(s) = r.message {
                assert!(s.teleop.steering >= 0.0, "the stale command took over: {:?}", s.teleop);
                if s.speed_mps > 1.5 && s.steering_rad > 0.2 {
                    driven = Some(s);
                }
            }
        }
        if driven.is_some() {
            break;
        }
    }
    let s = driven.expect("manual driving never got the car going left");
    assert!(s.teleop.live && s.teleop.taken > 0, "{:?}", s.teleop);
    // A label per frame: the operator's command in force, and what went to the car.
    let label = v.next_where(|r| match &r.message {
        Message::Controls(c) if c.operator.is_some() => Some(c.clone()),
        _ => None,
    });
    assert_eq!((label.pilot, label.operator.unwrap().steering), (PilotMode::Manual, 0.8));
    assert!((label.steering - 0.8).abs() < 1e-9 && label.throttle > 0.0, "{label:?}");
    // Silence: the lease ends and the car brakes to a stop.
    let s = v.state_where(|s| !s.teleop.live && s.brake > 0.0);
    assert!(s.health.stop_reason.unwrap_or_default().contains("dead-man"));
    v.state_where(|s| s.speed_mps < 0.1);

    // Assist: the operator's throttle, the autopilot's steering (truth keeps the lane).
    assert!(v.act(Command::SetDriveMode { mode: PilotMode::Assist }).0);
    for i in 0..60 {
        let parts =
            v.action_parts(&format!("a{i}"), v.run_stamp(Duration::from_millis(600)), drive(-1.0, 0.5));
        v.send_raw(&[&parts[0], &parts[1]]);
        std::thread::sleep(Duration::from_millis(50));
        while v.incoming.try_recv().is_ok() {}
    }
    let s = v.state_where(|s| s.teleop.pilot == PilotMode::Assist && s.teleop.live);
    assert!(s.teleop.steering == -1.0 && s.speed_mps > 1.0, "{:?} at {}", s.teleop, s.speed_mps);
    assert!(
        s.truth_lateral_offset_m.unwrap().abs() < 1.0,
        "the operator's full right lock steered the car in assist: offset {:?}",
        s.truth_lateral_offset_m
    );

    // Back to autopilot: the car holds (a mode change never starts motion), resume drives.
    let (accepted, _, detail) = v.act(Command::SetDriveMode { mode: PilotMode::Autopilot });
    assert!(accepted && detail.contains("resume"), "{detail}");
    let s = v.state_where(|s| s.commands.held && s.speed_mps < 0.1);
    assert_eq!((s.mode, s.teleop.driver), (DriveMode::Stopped, None));
    assert!(v.act(Command::Resume).0);
    v.state_where(|s| s.mode == DriveMode::Driving && s.speed_mps > 1.0);
    v.stop();
}
