//! ads-viewer as a real process watching a real ads-vehicle: websocket clients (tokio-
//! tungstenite), the MJPEG stream, metrics, two viewers at once, and the link surviving a
//! vehicle restart.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod support;

use ads_protocol::DriveMode;
use ads_testkit::DEADLINE;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Instant;
use support::{metric, Vehicle, Viewer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(viewer: &Viewer) -> Socket {
    let (socket, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", viewer.port)).await.unwrap();
    socket
}

/// A frame from the socket: its header and JPEG.
fn parse_frame(bytes: &[u8]) -> (Value, Vec<u8>) {
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[4..4 + len]).unwrap();
    (header, bytes[4 + len..].to_vec())
}

/// The next message that `pick` accepts, skipping the others.
async fn next_where<T>(socket: &mut Socket, what: &str, mut pick: impl FnMut(Message) -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
            .unwrap_or_else(|| panic!("socket closed before {what}"))
            .unwrap();
        if let Some(found) = pick(message) {
            return found;
        }
    }
}

async fn next_frame(socket: &mut Socket) -> (Value, Vec<u8>) {
    next_where(socket, "a frame", |m| match m {
        Message::Binary(b) => Some(parse_frame(&b)),
        _ => None,
    })
    .await
}

async fn next_text(socket: &mut Socket, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
    next_where(socket, what, |m| match m {
        Message::Text(t) => serde_json::from_str::<Value>(&t).ok().filter(|v| accept(v)),
        _ => None,
    })
    .await
}

async fn act(socket: &mut Socket, request_id: &str, command: Value) -> Value {
    let message = json!({"type": "action", "request_id": request_id, "command": command});
    socket.send(Message::Text(message.to_string().into())).await.unwrap();
    next_text(socket, "the acknowledgement", |v| {
        v["type"] == "ack" && v["outcome"]["request_id"] == request_id
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_socket_gets_frames_with_overlays_and_its_actions_reach_the_vehicle() {
    let mut vehicle = Vehicle::start("ws", false);
    let viewer = Viewer::start(&vehicle);
    let mut socket = connect(&viewer).await;
    let hello = next_text(&mut socket, "hello", |v| v["type"] == "hello").await;
    assert_eq!(hello["vehicle"], vehicle.car.vehicle_id());

    let (first, jpeg) = next_frame(&mut socket).await;
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");
    // A new video session starts on a reduced tier; on loopback it soon gets full size, and
    // the overlay always matches the picture it goes with.
    let mut later = next_frame(&mut socket).await.0;
    while later["overlay"]["width"] != 800 {
        assert!(
            later["overlay"]["width"].as_u64().unwrap() * 3
                == later["overlay"]["height"].as_u64().unwrap() * 4
        );
        later = next_frame(&mut socket).await.0;
    }
    assert!(later["frame_id"].as_u64() > first["frame_id"].as_u64());
    assert!(later["capture_ns"].as_u64().unwrap() <= later["recv_ns"].as_u64().unwrap());
    // No detector in this test: the overlay says so, and the sim's truth lines are there.
    let (with_state, _) = {
        let mut frame = next_frame(&mut socket).await;
        while frame.0["overlay"]["hud"].is_null() {
            frame = next_frame(&mut socket).await;
        }
        frame
    };
    assert!(with_state["overlay"]["stale"].as_array().unwrap().iter().any(|s| s == "no detections"));
    assert_eq!(with_state["overlay"]["truth"].as_array().unwrap().len(), 2);

    let ack = act(&mut socket, "p1", json!({"type": "pause"})).await;
    assert_eq!(ack["outcome"]["status"], "accepted", "{ack}");
    vehicle.state_where("paused", |s| s.paused);
    let ack = act(&mut socket, "r1", json!({"type": "resume"})).await;
    assert_eq!(ack["outcome"]["status"], "accepted", "{ack}");
    vehicle.state_where("resumed", |s| !s.paused && s.mode == DriveMode::Driving);
    // The vehicle's own refusal comes back with its reason.
    let ack = act(&mut socket, "bad", json!({"type": "respawn", "spawn_point": 999})).await;
    assert_eq!(ack["outcome"]["status"], "rejected", "{ack}");
    assert_eq!(ack["outcome"]["reason"], "not_allowed", "{ack}");
    // The viewer refuses nonsense before it leaves the laptop, and says why.
    let ack = act(&mut socket, "fast", json!({"type": "set_target_speed", "mps": 400.0})).await;
    assert!(ack["outcome"]["detail"].as_str().unwrap().contains("outside 0..=40"), "{ack}");
    socket.send(Message::Text("{\"type\":\"fly\"}".into())).await.unwrap();
    let error = next_text(&mut socket, "an error", |v| v["type"] == "error").await;
    assert!(error["detail"].as_str().unwrap().contains("fly"), "{error}");
    // Telemetry state with the per-hop breakdown.
    let state = next_text(&mut socket, "state", |v| v["type"] == "state").await;
    assert!(state["hops"]["vehicle_to_viewer_ms"].as_f64().is_some(), "{state}");

    let (status, metrics) = viewer.get("/metrics").unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(status, 200);
    assert!(metric(&metrics, "ads_viewer_frames_received_total").unwrap() > 2.0, "{metrics}");
    assert_eq!(metric(&metrics, "ads_viewer_clients"), Some(1.0));
    assert_eq!(metric(&metrics, "ads_viewer_actions_accepted_total"), Some(2.0));
    assert_eq!(metric(&metrics, "ads_viewer_actions_rejected_total"), Some(1.0));
    assert!(metrics.contains("ads_viewer_vehicle_to_viewer_seconds_bucket{le=\"+Inf\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_from_another_origin_is_refused() {
    let vehicle = Vehicle::start("origin", false);
    let viewer = Viewer::start(&vehicle);
    let mut request = format!("ws://127.0.0.1:{}/ws", viewer.port).into_client_request().unwrap();
    request.headers_mut().insert("Origin", "http://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    // Another port on the same host is another origin (a page served by anything else).
    let mut request = format!("ws://127.0.0.1:{}/ws", viewer.port).into_client_request().unwrap();
    request.headers_mut().insert("Origin", "http://127.0.0.1:9".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    let mut request = format!("ws://127.0.0.1:{}/ws", viewer.port).into_client_request().unwrap();
    request.headers_mut().insert("Origin", format!("http://127.0.0.1:{}", viewer.port).parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_watch_one_vehicle_and_both_can_command_it() {
    let mut vehicle = Vehicle::start("two", false);
    let (a, b) = (Viewer::start(&vehicle), Viewer::start(&vehicle));
    let (mut sa, mut sb) = (connect(&a).await, connect(&b).await);
    let (fa, _) = next_frame(&mut sa).await;
    let (fb, _) = next_frame(&mut sb).await;
    assert!(fa["frame_id"].is_u64() && fb["frame_id"].is_u64());
    // Two browsers on one viewer, too.
    let mut sa2 = connect(&a).await;
    next_frame(&mut sa2).await;

    let ack = act(&mut sa, "a-pause", json!({"type": "pause"})).await;
    assert_eq!(ack["outcome"]["status"], "accepted", "{ack}");
    vehicle.state_where("paused by viewer A", |s| s.paused);
    let ack = act(&mut sb, "b-resume", json!({"type": "resume"})).await;
    assert_eq!(ack["outcome"]["status"], "accepted", "{ack}");
    vehicle.state_where("resumed by viewer B", |s| !s.paused);
    // Viewer A's other browser saw A's acknowledgement too.
    let seen = next_text(&mut sa2, "A's ack on A's second browser", |v| {
        v["type"] == "ack" && v["outcome"]["request_id"] == "a-pause"
    })
    .await;
    assert_eq!(seen["outcome"]["status"], "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_stream_and_snapshot_carry_jpegs_with_overlays_burned_in() {
    let vehicle = Vehicle::start("mjpeg", false);
    let viewer = Viewer::start(&vehicle);
    viewer.wait_until("a snapshot", |v| v.get("/snapshot.jpg").is_some_and(|(s, _)| s == 200));
    // Truth lines are drawn in cyan: the burned-in layer must change the picture there.
    let cyan = |jpeg: &[u8]| {
        let img = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).unwrap();
        img.pixels.chunks_exact(3).filter(|p| p[0] < 60 && p[1] > 150 && p[2] > 200).count()
    };
    // The very first frames may come before the first truth message; wait for one with it.
    viewer.wait_until("a snapshot with truth lines burned in", |v| {
        v.get("/snapshot.jpg?layers=truth").is_some_and(|(_, jpeg)| cyan(&jpeg) > 200)
    });
    let (_, plain) = viewer.get("/snapshot.jpg?layers=").unwrap();
    assert_eq!(&plain[..2], &[0xFF, 0xD8]);
    assert!(cyan(&plain) < 50, "cyan without the truth layer: {}", cyan(&plain));
    let (status, body) = viewer.get("/snapshot.jpg?layers=wings").unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("wings"));

    // The stream: read until two complete parts have arrived.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", viewer.port)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut received = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while received.windows(10).filter(|w| w == b"--adsframe").count() < 3 {
        let mut chunk = [0u8; 65536];
        let n =
            tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), stream.read(&mut chunk))
                .await
                .expect("MJPEG parts in time")
                .unwrap();
        assert!(n > 0, "stream ended");
        received.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("multipart/x-mixed-replace; boundary=adsframe"));
    assert!(text.contains("Content-Type: image/jpeg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_shows_the_vehicle_dying_and_recovers_when_it_returns() {
    let vehicle = Vehicle::start("restart", false);
    let viewer = Viewer::start(&vehicle);
    let mut socket = connect(&viewer).await;
    next_frame(&mut socket).await;
    let setup = vehicle.car.setup().clone();
    vehicle.car.process.signal(rustix::process::Signal::KILL);
    let lost = next_text(&mut socket, "link lost", |v| v["type"] == "link" && v["status"] == "lost").await;
    assert_eq!(lost["status"], "lost");
    // Actions while the vehicle is gone are refused on the spot, not queued.
    let ack = act(&mut socket, "while-down", json!({"type": "pause"})).await;
    assert_eq!(ack["outcome"]["status"], "not_sent", "{ack}");
    drop(vehicle);
    // The same ports and id again, as systemd would restart it; a killed writer's ring is
    // taken over.
    let again = Vehicle::spawn(setup);
    next_text(&mut socket, "link live again", |v| v["type"] == "link" && v["status"] == "live").await;
    next_text(&mut socket, "the restart notice", |v| {
        v["type"] == "notice" && v["text"].as_str().is_some_and(|t| t.contains("restarted"))
    })
    .await;
    let (frame, _) = next_frame(&mut socket).await;
    assert!(frame["frame_id"].is_u64());
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_browser_is_bounded_and_the_others_keep_their_stream() {
    let vehicle = Vehicle::start("flood", false);
    let viewer = Viewer::start_with(&vehicle, &["--max-clients", "4"]);
    let mut watcher = connect(&viewer).await;
    next_frame(&mut watcher).await;
    let mut flooder = connect(&viewer).await;
    // 5,000 messages as fast as the socket takes them: junk, oversize, and valid actions.
    let flood = tokio::spawn(async move {
        let big = "x".repeat(8192);
        for i in 0..5000u32 {
            let text = match i % 3 {
                0 => "{\"type\":\"painted\",\"samples\":[[1,2,3]]}".to_string(),
                // A valid action that does not stop the stream (a pause would).
                1 => format!(
                    "{{\"type\":\"action\",\"request_id\":\"f{i}\",\"command\":{{\"type\":\"set_target_speed\",\"mps\":5}}}}"
                ),
                _ => big.clone(),
            };
            if flooder.send(Message::Text(text.into())).await.is_err() {
                return i;
            }
        }
        5000
    });
    // Meanwhile the other browser keeps getting frames.
    let before = next_frame(&mut watcher).await.0["frame_id"].as_u64().unwrap();
    let mut frames = 0;
    while frames < 30 {
        next_frame(&mut watcher).await;
        frames += 1;
    }
    let after = next_frame(&mut watcher).await.0["frame_id"].as_u64().unwrap();
    let sent = flood.await.unwrap();
    eprintln!("flooder got {sent} messages out before it was cut off; watcher saw frames {before}..{after}");
    assert!(after > before + 30);
    // The flooder was cut off (oversize message or too many refusals), got no more actions
    // through than its rate allows, and the viewer still serves.
    assert!(sent < 5000, "the flooder was never disconnected");
    let (_, metrics) = viewer.get("/metrics").unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metric(&metrics, "ads_viewer_actions_sent_total").unwrap() <= 40.0 + 1.0, "{metrics}");
    // Connections are bounded too: past --max-clients, upgrades are refused, also when they
    // all come at once (each must take its place before it is answered).
    let url = format!("ws://127.0.0.1:{}/ws", viewer.port);
    let attempts = (0..6).map(|_| tokio_tungstenite::connect_async(url.clone()));
    let mut extra = Vec::new();
    let mut refused = 0;
    for attempt in futures_util::future::join_all(attempts).await {
        match attempt {
            Ok((s, _)) => extra.push(s),
            Err(e) => {
                assert!(e.to_string().contains("503"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 3, "only {refused} of 6 connections past the limit were refused");
    assert!(extra.len() < 4, "{} more browsers let in beside the watcher with --max-clients 4", extra.len());
    assert!(viewer.get("/healthz").unwrap().0 == 200);
}

/// The first action of a freshly started viewer used to be lost while its connection to the
/// action port was still being made (and showed as "unanswered"): now it is retransmitted
/// until acknowledged. Several fresh viewers, each acting at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freshly_started_viewers_first_action_is_delivered() {
    let mut vehicle = Vehicle::start("first", false);
    for round in 0..4 {
        let viewer = Viewer::start(&vehicle);
        let mut socket = connect(&viewer).await;
        let (command, id) =
            if round % 2 == 0 { ("pause", "first-pause") } else { ("resume", "first-resume") };
        let ack = act(&mut socket, id, json!({"type": command})).await;
        assert_eq!(ack["outcome"]["status"], "accepted", "round {round}: {ack}");
        let paused = round % 2 == 0;
        vehicle.state_where("the first action carried out", |s| s.paused == paused);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_operator_required_only_a_present_page_keeps_the_car_driving() {
    let mut vehicle =
        Vehicle::start_with("deadman", false, &["--require-operator", "--operator-timeout-ms", "800"]);
    let waiting = vehicle.state_where("waiting for an operator", |s| s.mode == DriveMode::Stopped);
    assert!(waiting.commands.operator_required, "{waiting:?}");
    let viewer = Viewer::start(&vehicle);
    // A websocket without a present page (a script, a forgotten tab): no heartbeat at all.
    let mut socket = connect(&viewer).await;
    let mut watched = 0;
    while watched < 45 {
        let s = vehicle.state();
        assert_eq!(s.commands.operator_heartbeat_age_ms, None, "an open websocket alone beat: {s:?}");
        watched += 1;
    }
    let ack = act(&mut socket, "too-soon", json!({"type": "resume"})).await;
    assert_eq!(ack["outcome"]["status"], "rejected", "{ack}");
    // A page reports its operator (visible, used): heartbeats, and a resume drives.
    let presence = present_page(&viewer).await;
    vehicle.state_where("heartbeats", |s| s.commands.operator_heartbeat_age_ms.is_some_and(|a| a < 800));
    let ack = act(&mut socket, "go", json!({"type": "resume"})).await;
    assert_eq!(ack["outcome"]["status"], "accepted", "{ack}");
    vehicle.state_where("driving", |s| s.mode == DriveMode::Driving && s.speed_mps > 1.0);
    // The page is hidden (another tab): a controlled stop, and state says why.
    presence.hide();
    let stopped =
        vehicle.state_where("a controlled stop", |s| s.mode == DriveMode::Stopped && s.speed_mps == 0.0);
    let reason = stopped.health.stop_reason.clone().unwrap_or_default();
    assert!(reason.contains("operator heartbeat"), "{reason}");
    // Present again and resumed; then the viewer dies: stopped again.
    presence.show();
    vehicle
        .state_where("heartbeats again", |s| s.commands.operator_heartbeat_age_ms.is_some_and(|a| a < 800));
    for _ in 0..20 {
        let s = vehicle.state();
        assert_eq!((s.mode, s.speed_mps), (DriveMode::Stopped, 0.0), "drove without a resume: {s:?}");
    }
    let ack = act(&mut socket, "go-again", json!({"type": "resume"})).await;
    assert_eq!(ack["outcome"]["status"], "accepted", "{ack}");
    vehicle.state_where("driving again", |s| s.mode == DriveMode::Driving);
    viewer.process.signal(rustix::process::Signal::KILL);
    vehicle.state_where("stopped with the viewer", |s| s.mode == DriveMode::Stopped && s.speed_mps == 0.0);
}

/// A page's presence reports (as app.js sends them every 250 ms), on a websocket of its own.
struct PresentPage {
    visible: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PresentPage {
    fn hide(&self) {
        self.visible.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn show(&self) {
        self.visible.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn present_page(viewer: &Viewer) -> PresentPage {
    let (mut sink, mut stream) = connect(viewer).await.split();
    let visible = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = std::sync::Arc::clone(&visible);
    // A page takes what it is sent (a socket nobody reads stalls the viewer's side of it).
    tokio::spawn(async move { while stream.next().await.is_some() {} });
    tokio::spawn(async move {
        loop {
            let visible = flag.load(std::sync::atomic::Ordering::Relaxed);
            let report = json!({"type": "presence", "visible": visible, "input_age_ms": 100}).to_string();
            if sink.send(Message::text(report)).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    });
    PresentPage { visible }
}

/// Slowloris: 1,100 connections that never finish their request must neither exhaust the
/// viewer's descriptors nor keep it from serving or from exiting on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_time_out_and_cannot_exhaust_descriptors() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum.map(|m| m.min(8192)).or(Some(8192));
    let _ = setrlimit(Resource::Nofile, limit);
    let vehicle = Vehicle::start("slowloris", false);
    let mut viewer =
        Viewer::start_with(&vehicle, &["--max-connections", "64", "--request-timeout-ms", "2000"]);
    let base_fds = viewer.open_fds();
    let mut held = Vec::new();
    for _ in 0..1100 {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", viewer.port)) else { continue };
        use std::io::Write as _;
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        held.push(stream);
    }
    let fds = viewer.open_fds();
    eprintln!("{} half-open connections; viewer fds {base_fds} before, {fds} during", held.len());
    assert!(held.len() >= 1000, "the test could not open its connections");
    assert!(fds <= base_fds + 64 + 16, "{fds} descriptors open (limit 64 connections)");
    // Their headers time out; the viewer serves again while the attackers still hold sockets.
    viewer.wait_until("health answered during the attack", |v| {
        v.get("/healthz").is_some_and(|(s, _)| s == 200)
    });
    // New half-open ones while shutting down do not keep it alive either.
    for _ in 0..50 {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", viewer.port)) {
            use std::io::Write as _;
            let _ = stream.write_all(b"GET / HTTP/1.1\r\n");
            held.push(stream);
        }
    }
    let status = viewer.terminate().expect("the viewer did not exit on SIGTERM");
    assert!(status.success(), "{status}");
    drop(held);
}

/// The rate limits cannot be talked around: an action whose text merely contains `"drive"`
/// is under the general limit, and a page holding control cannot flood the vehicle with
/// releases (zero drive commands) either: only the first release after moving skips the
/// drive limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_actions_named_drive_nor_a_flood_of_releases_get_past_the_rate_limits() {
    let vehicle = Vehicle::start("drive-flood", false);
    let viewer = Viewer::start(&vehicle);
    let mut flooder = connect(&viewer).await;
    next_frame(&mut flooder).await;
    for _ in 0..500 {
        let text = "{\"type\":\"action\",\"request_id\":\"drive\",\"command\":{\"type\":\"set_target_speed\",\"mps\":5}}";
        // Cut off after too many refusals, as it should be.
        if flooder.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
    let mut page = connect(&viewer).await;
    next_frame(&mut page).await;
    page.send(Message::Text("{\"type\":\"take_control\"}".into())).await.unwrap();
    next_text(&mut page, "control taken", |m| m["type"] == "control").await;
    let started = std::time::Instant::now();
    for _ in 0..500 {
        let text = "{\"type\":\"drive\",\"steering\":0,\"throttle\":0}";
        page.send(Message::Text(text.into())).await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the viewer work through what it received.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, metrics) = viewer.get("/metrics").unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    let actions = metric(&metrics, "ads_viewer_actions_sent_total").unwrap();
    let drives = metric(&metrics, "ads_viewer_drives_sent_total").unwrap();
    eprintln!("500 actions named drive: {actions} sent; 500 releases in {elapsed:.3} s: {drives} sent");
    assert!(actions <= 40.0 + 1.0, "{metrics}");
    // 50 per second at most, over the flood and the wait after it, plus the first.
    assert!(drives <= 1.0 + (elapsed + 0.6) * 50.0, "{drives} drives in {elapsed} s");
}

/// By default the viewer asks for H.264 once a browser says it decodes it, and makes JPEGs of
/// the decoded pictures only when someone wants one (here: a snapshot), not for every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_once_a_browser_decodes_it_and_jpegs_only_when_wanted() {
    let vehicle = Vehicle::start("auto-h264", false);
    let viewer = Viewer::start(&vehicle);
    let mut socket = connect(&viewer).await;
    let (first, _) = next_frame(&mut socket).await;
    assert_eq!(first["codec"], "jpeg", "JPEG until a browser decodes H.264: {first}");
    let codecs = json!({"type": "codecs", "accept": ["h264", "jpeg"]});
    socket.send(Message::Text(codecs.to_string().into())).await.unwrap();
    h264_frames(&mut socket, 5).await;
    let encodes = |viewer: &Viewer| {
        let text = String::from_utf8(viewer.get("/metrics").unwrap().1).unwrap();
        metric(&text, "ads_viewer_h264_jpeg_encodes_total").unwrap()
    };
    let before = encodes(&viewer);
    h264_frames(&mut socket, 30).await;
    assert_eq!(encodes(&viewer), before, "JPEGs made while only an H.264 browser watched");
    let (status, jpeg) = viewer.get("/snapshot.jpg").unwrap();
    assert_eq!((status, &jpeg[..2]), (200, &[0xff, 0xd8][..]));
    assert!(encodes(&viewer) > before, "the snapshot's JPEG came from somewhere else");
}

/// Waits for `n` H.264 frames on `socket`.
async fn h264_frames(socket: &mut Socket, n: usize) {
    let (mut seen, deadline) = (0, Instant::now() + DEADLINE);
    while seen < n {
        assert!(Instant::now() < deadline, "{seen} of {n} H.264 frames within {DEADLINE:?}");
        let (header, _) = next_frame(socket).await;
        if header["codec"] == "h264" {
            seen += 1;
        }
    }
}
