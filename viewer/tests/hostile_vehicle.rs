//! A buggy or hostile vehicle (telemetry is unauthenticated): NaN in its state, lane lines at
//! x = 3e38, and 600-byte JPEGs claiming 20000x20000 pixels. The viewer must keep serving
//! snapshots with bounded memory, and still exit on SIGTERM.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod support;

use ads_protocol::*;
use ads_testkit::{free_port, DEADLINE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{metric, Viewer};

fn jpeg(width: usize, height: usize) -> Vec<u8> {
    let image = turbojpeg::Image {
        pixels: vec![90u8; width * height * 3],
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image.as_deref(), 80, turbojpeg::Subsamp::None).unwrap().to_vec()
}

/// A valid JPEG whose header claims `width`x`height` (a few hundred bytes in all).
fn bomb(width: u16, height: u16) -> Vec<u8> {
    let mut data = jpeg(16, 16);
    let sof = data.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    data[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    data[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    data
}

fn state(speed: f64) -> VehicleState {
    VehicleState {
        frame_id: 1,
        pose: PoseMsg::default(),
        speed_mps: speed,
        target_speed_mps: 5.0,
        steering_rad: 0.0,
        throttle: 0.0,
        brake: 0.0,
        mode: DriveMode::Driving,
        paused: false,
        control: ControlSource::Detections,
        source: "sim".into(),
        fps: 30.0,
        timings: StageTimings::default(),
        drops: DropCounters::default(),
        health: Health { detections_fresh: true, detection_age_ms: Some(1), stop_reason: None },
        distance_m: 0.0,
        started_ns: 1,
        truth_lateral_offset_m: None,
        commands: CommandStatus::default(),
        link: LinkState::default(),
        actuator: ActuatorState::default(),
        teleop: Default::default(),
    }
}

fn huge_lanes(frame_id: u64) -> Detections {
    Detections {
        frame_id,
        capture_ns: 0,
        detector: "cv".into(),
        processing_us: 1,
        read_ns: 0,
        control_read_ns: 0,
        lanes: Some(LaneDetection {
            h_samples: vec![10, 40],
            left: vec![Some(-3e38), Some(3e38)],
            right: vec![Some(3e38), Some(-3e38)],
            left_confidence: 1.0,
            right_confidence: 1.0,
            lateral_offset_m: 0.0,
            heading_error_rad: 0.0,
            curvature_radius_m: None,
        }),
        objects: vec![DetectedObject {
            class: "car".into(),
            class_id: 3,
            score: 1.0,
            x_px: -3e38,
            y_px: -3e38,
            w_px: 3e38,
            h_px: 3e38,
        }],
    }
}

#[test]
fn nan_huge_coordinates_and_jpeg_bombs_leave_the_viewer_serving_with_bounded_memory() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let video_endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let running = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&running);
    let (bind, bind_video) = (endpoint.clone(), video_endpoint.clone());
    let fake = std::thread::spawn(move || {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PUB).unwrap();
        socket.bind(&bind).unwrap();
        // Its video socket ignores credits: it sends every viewer that ever spoke to it
        // two frames per round, an honest one and a bomb.
        let video = context.socket(zmq::ROUTER).unwrap();
        video.bind(&bind_video).unwrap();
        let mut viewers: Vec<Vec<u8>> = Vec::new();
        let (good, evil) = (jpeg(64, 48), bomb(20_000, 20_000));
        let mut seq = 0u64;
        let send = |topic: &str, envelope: Vec<u8>, payload: Option<&[u8]>| {
            let mut parts = vec![topic.as_bytes().to_vec(), envelope];
            parts.extend(payload.map(<[u8]>::to_vec));
            let _ = socket.send_multipart(parts, 0);
        };
        while flag.load(Ordering::Relaxed) {
            seq += 1;
            while let Ok(parts) = video.recv_multipart(zmq::DONTWAIT) {
                if !viewers.contains(&parts[0]) {
                    viewers.push(parts[0].clone());
                }
            }
            let frame = |w, h| {
                Message::Frame(FrameInfo {
                    frame_id: seq,
                    width: w,
                    height: h,
                    quality: 80,
                    encode_us: 1,
                    tier: 0,
                    goodput_kbps: 0,
                    reduced: false,
                    source_width: w,
                    source_height: h,
                    codec: CODEC_JPEG.into(),
                    keyframe: false,
                })
            };
            send(
                "state",
                encode("evil", seq, 1, 1, &Message::State(state(if seq % 2 == 0 { f64::NAN } else { 3.0 }))),
                None,
            );
            send("detection", encode("evil", seq, 1, 1, &Message::Detection(huge_lanes(seq))), None);
            for viewer in &viewers {
                for (info, jpeg) in [(frame(64, 48), &good), (frame(20_000, 20_000), &evil)] {
                    let parts =
                        [viewer.clone(), b"frame".to_vec(), encode("evil", seq, 1, 1, &info), jpeg.clone()];
                    let _ = video.send_multipart(parts, zmq::DONTWAIT);
                }
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let actions = format!("tcp://127.0.0.1:{}", free_port());
    let mut viewer = Viewer::spawn(&endpoint, &video_endpoint, &actions, &[]);
    viewer.wait_until("a snapshot of the evil vehicle", |v| {
        v.get("/snapshot.jpg?layers=lanes,area,centre,objects,hud").is_some_and(|(s, _)| s == 200)
    });
    let rss_before = viewer.rss_kib();
    let started = Instant::now();
    let mut served = 0;
    // For a while, so that many of the fake vehicle's messages arrive meanwhile.
    while served < 30 || started.elapsed() < Duration::from_secs(3) {
        assert!(started.elapsed() < DEADLINE, "snapshots stopped");
        if let Some((200, body)) = viewer.get("/snapshot.jpg") {
            assert_eq!(&body[..2], &[0xFF, 0xD8]);
            let img = turbojpeg::decompress(&body, turbojpeg::PixelFormat::RGB).unwrap();
            assert_eq!((img.width, img.height), (64, 48), "only the honest frames are shown");
            served += 1;
        }
    }
    let rss_after = viewer.rss_kib();
    let (_, metrics) = viewer.get("/metrics").unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    let refused = metric(&metrics, "ads_viewer_messages_malformed_total").unwrap_or(0.0);
    eprintln!("{served} snapshots; RSS {rss_before} KiB -> {rss_after} KiB; {refused} messages refused");
    let frames = metric(&metrics, "ads_viewer_frames_received_total").unwrap_or(0.0);
    assert!(refused > 10.0 && frames > 10.0, "the bombs and NaN states were not refused: {metrics}");
    assert!(rss_after < rss_before + 100 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    let status = viewer.terminate().expect("the viewer did not exit on SIGTERM");
    assert!(status.success(), "{status}");
    running.store(false, Ordering::Relaxed);
    fake.join().unwrap();
}
