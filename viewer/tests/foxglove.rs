//! The viewer's Foxglove WebSocket server against a client written from the public protocol
//! spec (foxglove/ws-protocol, `foxglove.websocket.v1`): serverInfo, advertise, subscribe, and
//! binary messageData carrying a `foxglove.CompressedImage` of a real vehicle's frame; and
//! against the ecosystem's own tools (tests/node/foxglove_check.js, installed by
//! scripts/node-env.sh): the official `@foxglove/ws-protocol` client, every message validated
//! with ajv against the official `@foxglove/schemas`.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod support;

use ads_testkit::{free_port, DEADLINE};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{Vehicle, Viewer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(socket: &mut Socket) -> Message {
    tokio::time::timeout(DEADLINE, socket.next())
        .await
        .expect("a message in time")
        .expect("socket open")
        .unwrap()
}

async fn next_op(socket: &mut Socket, op: &str) -> Value {
    loop {
        if let Message::Text(text) = next(socket).await {
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["op"] == op {
                return v;
            }
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// scripts/node-env.sh's node_modules: the pinned npm packages, installed on first use.
fn node_modules() -> PathBuf {
    let out = Command::new(root().join("scripts/node-env.sh")).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "scripts/node-env.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
}

/// tests/node/foxglove_check.js with these arguments: what the official client saw. It ends
/// itself (its own time limits are the deadline).
fn node_check(args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg(root().join("tests/node/foxglove_check.js"))
        .args(args)
        .env("NODE_PATH", node_modules())
        .stderr(Stdio::inherit())
        .output()
        .expect("node (scripts/setup.sh installs it)");
    assert!(out.status.success(), "foxglove_check.js failed: {}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn the_official_client_finds_every_message_of_every_channel_valid_against_the_official_schemas() {
    let vehicle = Vehicle::start("foxajv", true);
    let port = free_port();
    let _viewer = Viewer::start_with(&vehicle, &["--foxglove-port", &port.to_string()]);
    // 20 messages of every channel (events come only when something happens), 90 s at most.
    let seen = node_check(&["validate", &format!("ws://127.0.0.1:{port}/"), "90", "20", "/event"]);
    eprintln!("the official client saw: {seen}");
    assert_eq!(seen["errors"], json!([]), "{seen}");
    // The advertised schemas of foxglove.* channels are the official ones, not a variant.
    assert_eq!(seen["schema_mismatches"], json!([]), "{seen}");
    let channels = seen["channels"].as_object().unwrap();
    assert_eq!(channels.len(), 9, "{seen}");
    assert_eq!(channels["/detection/annotations"], "foxglove.ImageAnnotations");
    assert_eq!(channels["/controls"], "ads.Controls");
    for (topic, _) in channels {
        assert_eq!(seen["invalid"][topic], 0, "{topic}: {seen}");
        if topic != "/event" {
            assert!(seen["counts"][topic].as_u64().unwrap() >= 20, "{topic}: {seen}");
        }
    }
    // Annotations in the coordinates of the image they annotate (same timestamp): the feed's
    // images are the full picture from the first, never a small starting tier.
    let annotations = &seen["annotations"];
    assert!(annotations["checked"].as_u64().unwrap() >= 10, "{annotations}");
    assert_eq!(annotations["outside"], 0, "annotations outside their image: {annotations}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foxglove_client_subscribes_and_receives_a_compressed_image() {
    let vehicle = Vehicle::start("fox", false);
    let port = free_port();
    let _viewer = Viewer::start_with(&vehicle, &["--foxglove-port", &port.to_string()]);

    let mut request = format!("ws://127.0.0.1:{port}/").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("foxglove.websocket.v1"));
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "foxglove.websocket.v1");

    let info = next_op(&mut socket, "serverInfo").await;
    assert_eq!(info["name"], "ads-viewer");
    let advertised = next_op(&mut socket, "advertise").await;
    let channels = advertised["channels"].as_array().unwrap();
    let image = channels.iter().find(|c| c["topic"] == "/camera/image").expect("an image channel");
    assert_eq!(image["schemaName"], "foxglove.CompressedImage");
    assert_eq!(image["encoding"], "json");
    assert_eq!(image["schemaEncoding"], "jsonschema");
    let schema: Value = serde_json::from_str(image["schema"].as_str().unwrap()).unwrap();
    assert_eq!(schema["properties"]["data"]["contentEncoding"], "base64");
    let state = channels.iter().find(|c| c["topic"] == "/state").unwrap();

    let subscribe = json!({ "op": "subscribe", "subscriptions": [{ "id": 7, "channelId": image["id"] }] });
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    // The feed's video session asks for the full picture: every image is 800x600 from the
    // first (a rate-adapted session would start on a small tier).
    let mut images = 0;
    while images < 5 {
        let Message::Binary(bytes) = next(&mut socket).await else { continue };
        assert_eq!(bytes[0], 0x01, "messageData opcode");
        let subscription = u32::from_le_bytes(bytes[1..5].try_into().unwrap());
        let receive_ns = u64::from_le_bytes(bytes[5..13].try_into().unwrap());
        assert!(receive_ns > 1_600_000_000_000_000_000, "a wall-clock receive time");
        // Only what was subscribed: the image channel, under our subscription id.
        assert_eq!(subscription, 7);
        let message: Value = serde_json::from_slice(&bytes[13..]).unwrap();
        assert_eq!(message["format"], "jpeg");
        assert!(message["timestamp"]["sec"].as_u64().unwrap() > 1_600_000_000);
        let jpeg =
            base64::engine::general_purpose::STANDARD.decode(message["data"].as_str().unwrap()).unwrap();
        let decoded = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).unwrap();
        assert_eq!((decoded.width, decoded.height), (800, 600), "image {images}");
        images += 1;
    }

    // After unsubscribing, nothing more comes for it; another channel can be taken instead.
    socket
        .send(Message::Text(json!({ "op": "unsubscribe", "subscriptionIds": [7] }).to_string().into()))
        .await
        .unwrap();
    let take_state = json!({ "op": "subscribe", "subscriptions": [{ "id": 8, "channelId": state["id"] }] });
    socket.send(Message::Text(take_state.to_string().into())).await.unwrap();
    let mut states = 0;
    while states < 3 {
        if let Message::Binary(bytes) = next(&mut socket).await {
            match u32::from_le_bytes(bytes[1..5].try_into().unwrap()) {
                8 => {
                    let v: Value = serde_json::from_slice(&bytes[13..]).unwrap();
                    assert!(v["speed_mps"].is_number(), "a state record: {v}");
                    states += 1;
                }
                // Images already queued before the unsubscribe may still arrive, never after a state.
                7 => assert_eq!(states, 0, "an image after unsubscribing"),
                other => panic!("message for unknown subscription {other}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_is_refused() {
    let vehicle = Vehicle::start("foxorigin", false);
    let port = free_port();
    let _viewer = Viewer::start_with(&vehicle, &["--foxglove-port", &port.to_string()]);
    let mut request = format!("ws://127.0.0.1:{port}/").into_client_request().unwrap();
    request.headers_mut().insert("Origin", HeaderValue::from_static("https://evil.example"));
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[test]
fn what_the_server_cannot_do_is_answered_with_a_status_and_another_subprotocol_is_refused() {
    let vehicle = Vehicle::start("foxstatus", false);
    let port = free_port();
    let _viewer = Viewer::start_with(&vehicle, &["--foxglove-port", &port.to_string()]);
    let seen = node_check(&["status", &format!("ws://127.0.0.1:{port}/")]);
    assert_eq!(seen["errors"], json!([]), "{seen}");
    // The official client's own requests: a channel never advertised, the same channel
    // twice, and getParameters (no `parameters` capability).
    for (request, says) in [
        ("unknown_channel", "no channel"),
        ("second_subscription", "already subscribed"),
        ("unsupported_operation", "\"getParameters\" is not supported"),
    ] {
        let statuses = seen[request].as_array().unwrap();
        assert_eq!(statuses.len(), 1, "{request}: one status, got {seen}");
        let level = statuses[0]["level"].as_u64().unwrap();
        assert!(level == 1 || level == 2, "{request}: a warning or an error, got {seen}");
        assert!(statuses[0]["message"].as_str().unwrap().contains(says), "{request}: {seen}");
    }
    // Offering only another subprotocol: refused before any upgrade.
    assert_eq!(seen["other_subprotocol"], json!({ "refused": true, "status": 400 }), "{seen}");
}

/// 1,100 half-sent requests to the Foxglove port, against a viewer with the usual limit of
/// 1,024 descriptors: the Foxglove server has limits of its own (a connection cap, the
/// header timeout), so the web UI's health and its e-stop still answer during the attack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_sent_requests_on_the_foxglove_port_leaves_the_web_ui_serving() {
    use rustix::process::{getrlimit, prlimit, setrlimit, Pid, Resource, Rlimit};
    let mut ours = getrlimit(Resource::Nofile);
    ours.current = ours.maximum.map(|m| m.min(8192)).or(Some(8192));
    let _ = setrlimit(Resource::Nofile, ours);
    let vehicle = Vehicle::start("foxflood", false);
    let port = free_port();
    let viewer = Viewer::start_with(&vehicle, &["--foxglove-port", &port.to_string()]);
    let pid = Pid::from_raw(viewer.process.0.id() as i32).unwrap();
    prlimit(Some(pid), Resource::Nofile, Rlimit { current: Some(1024), maximum: ours.maximum }).unwrap();
    let base_fds = viewer.open_fds();
    let mut held = Vec::new();
    for _ in 0..1100 {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { continue };
        use std::io::Write as _;
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        held.push(stream);
    }
    assert!(held.len() >= 1000, "the test could not open its connections");
    let fds = viewer.open_fds();
    assert!(fds <= base_fds + 16 + 16, "{fds} descriptors open ({base_fds} before; the Foxglove cap is 16)");
    let health = tokio::task::block_in_place(|| viewer.get("/healthz"));
    assert_eq!(health.map(|(status, _)| status), Some(200), "no health during the flood");
    let (status, body) = tokio::task::block_in_place(|| {
        viewer.post("/api/action", r#"{"command":{"type":"emergency_stop"}}"#)
    });
    assert_eq!(status, 200, "e-stop during the flood: {}", String::from_utf8_lossy(&body));
    drop(held);
}

/// The Foxglove feed and the Record button take the viewer's own stream: with a Foxglove
/// client receiving images and a recording running, the vehicle serves one video session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foxglove_and_the_recorder_share_the_viewers_own_video_session() {
    let mut vehicle = Vehicle::start("foxshare", false);
    let port = free_port();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("viewer-rec-share-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let viewer = Viewer::start_with(
        &vehicle,
        &["--foxglove-port", &port.to_string(), "--recordings-dir", dir.to_str().unwrap()],
    );
    let mut request = format!("ws://127.0.0.1:{port}/").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("foxglove.websocket.v1"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let advertised = next_op(&mut socket, "advertise").await;
    let channels = advertised["channels"].as_array().unwrap();
    let image = channels.iter().find(|c| c["topic"] == "/camera/image").unwrap();
    let subscribe = json!({ "op": "subscribe", "subscriptions": [{ "id": 1, "channelId": image["id"] }] });
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    let mut images = 0;
    while images < 3 {
        if let Message::Binary(bytes) = next(&mut socket).await {
            let message: Value = serde_json::from_slice(&bytes[13..]).unwrap();
            let jpeg =
                base64::engine::general_purpose::STANDARD.decode(message["data"].as_str().unwrap()).unwrap();
            let decoded = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).unwrap();
            assert_eq!((decoded.width, decoded.height), (800, 600), "a full picture");
            images += 1;
        }
    }
    let (status, body) = tokio::task::block_in_place(|| viewer.post("/api/recording", r#"{"record":true}"#));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let status: Value = serde_json::from_slice(&viewer.get("/api/recording").unwrap().1).unwrap();
        if status["current"]["frames"].as_u64().unwrap_or(0) >= 10 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the recording gets no frames: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Sessions the vehicle serves now (a silent one would be gone within 3 s; these are live).
    let state = tokio::task::block_in_place(|| vehicle.fresh_state());
    assert_eq!(state.link.viewers.len(), 1, "video sessions: {:?}", state.link.viewers);
    let (status, body) = tokio::task::block_in_place(|| viewer.post("/api/recording", r#"{"record":false}"#));
    let stopped: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, &stopped["last"]["ok"]), (200, &json!(true)), "{stopped}");
    let path = stopped["last"]["recording"]["path"].as_str().unwrap();
    let reading = ads_record::recover::read(std::path::Path::new(path)).unwrap();
    assert!(reading.messages.iter().any(|m| m.topic == "/camera/image"), "no image recorded");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client subscribing with ever new channel and subscription ids, reading every answer:
/// the answers are bounded per request (old: one status per refused subscription, 39,991 for
/// these 200 requests) and the viewer's memory stays where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_with_ever_new_ids_do_not_grow_the_viewer() {
    let vehicle = Vehicle::start("foxsubs", false);
    let port = free_port();
    let viewer = Viewer::start_with(&vehicle, &["--foxglove-port", &port.to_string()]);
    let mut request = format!("ws://127.0.0.1:{port}/").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("foxglove.websocket.v1"));
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (mut tx, mut rx) = socket.split();
    let reader = tokio::spawn(async move {
        let mut statuses = 0u64;
        while let Some(Ok(message)) = rx.next().await {
            if matches!(&message, Message::Text(t) if t.contains("\"status\"")) {
                statuses += 1;
            }
        }
        statuses
    });
    let before = viewer.rss_kib();
    for batch in 0..200u32 {
        let subscriptions: Vec<_> =
            (0..200u32).map(|i| json!({ "id": batch * 200 + i, "channelId": batch * 200 + i + 1 })).collect();
        let message = json!({ "op": "subscribe", "subscriptions": subscriptions }).to_string();
        if tx.send(Message::Text(message.into())).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = viewer.rss_kib();
    tx.close().await.ok();
    let statuses = reader.await.unwrap();
    eprintln!("40,000 subscriptions asked: {statuses} statuses, RSS {before} → {after} KiB");
    assert!(after < before + 20 * 1024, "the viewer grew from {before} to {after} KiB");
    // At most 8 statuses answer one request, however many subscriptions it refuses.
    assert!(statuses <= 200 * 8, "{statuses} statuses for 200 requests");
}
