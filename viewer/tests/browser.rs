//! The web UI in a real headless Chromium (Debian's chromium + chromedriver, driven over
//! WebDriver by fantoccini), against a real ads-viewer watching a real ads-vehicle driving on
//! a real ads-detection. Clicks on the page must move the car, as the vehicle itself reports
//! over ZeroMQ. A screenshot is left in target/test-artifacts/ to look at.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod support;

use ads_protocol::DriveMode;
use ads_testkit::{free_port, Kill, DEADLINE};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{metric, Vehicle, Viewer};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

struct Browser {
    client: Client,
    _driver: Kill,
}

impl Browser {
    async fn start() -> Self {
        for tool in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: scripts/setup.sh installs Debian's chromium and chromium-driver"
            );
        }
        let port = free_port();
        let driver = Kill(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + DEADLINE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                // --disable-dev-shm-usage keeps Chromium's own files out of /dev/shm.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-extensions", "--window-size=1400,1000"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session");
        Browser { client, _driver: driver }
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    async fn wait_js(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self.js(script).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(Instant::now() < deadline, "the page never showed {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, id: &str) {
        self.client.find(Locator::Id(id)).await.unwrap().click().await.unwrap();
    }

    /// Waits for the page's acknowledgement line to say `text`.
    async fn wait_ack(&self, text: &str) -> String {
        let script = format!(
            "const t = document.getElementById('last-ack').textContent; return t.startsWith({}) ? t : null;",
            json!(text)
        );
        self.wait_js(&format!("the acknowledgement {text:?}"), &script).await.as_str().unwrap().to_string()
    }
}

/// Pure lane-green pixels on the video canvas (the lane layer's stroke colour).
const LANE_PIXELS: &str = "const c = document.getElementById('video'); \
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
    for (let i = 0; i < d.length; i += 4) { if (d[i] < 60 && d[i + 1] > 200 && d[i + 2] < 60) n++; } return n;";

fn artifact(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir =
        exe.parent().and_then(|deps| deps.parent()).and_then(|p| p.parent()).unwrap().join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_decodes_h264_with_webcodecs_and_draws_the_overlays_on_it() {
    let vehicle = Vehicle::start("browser-h264", true);
    // No --codec: by default the viewer asks for H.264 because this page decodes it.
    let viewer = Viewer::start(&vehicle);
    let browser = Browser::start().await;
    browser.client.goto(&viewer.url("/")).await.unwrap();
    // 127.0.0.1 is a secure context: the page has WebCodecs and asks for H.264.
    let note = browser.wait_js("the codec probe", "return h264Probe.then(() => h264.note)").await;
    assert_eq!(note, "H.264 (WebCodecs)", "Chromium here decodes avc1.42E01E");
    browser
        .wait_js(
            "H.264 pictures painted",
            "return window.adsStats.paints.filter(p => p.codec === 'h264').length > 10",
        )
        .await;
    let first = browser
        .js("return [window.adsStats.lastFrameId, document.getElementById('video').toDataURL()]")
        .await;
    browser.wait_js("newer frames", &format!("return window.adsStats.lastFrameId > {}", first[0])).await;
    let later = browser.js("return document.getElementById('video').toDataURL()").await;
    assert_ne!(first[1], later, "the canvas did not change between H.264 frames");
    browser
        .wait_js(
            "lane lines drawn on H.264 frames",
            &format!("{{ {LANE_PIXELS} }}").replace("return n;", "return n > 500;"),
        )
        .await;
    let h264 = browser.js("return window.adsStats.h264").await;
    assert_eq!(h264["errors"], 0, "the browser's decoder failed: {h264}");
    let decode_ms: Vec<f64> = h264["decodeMs"].as_array().unwrap().iter().filter_map(Value::as_f64).collect();
    let mut sorted = decode_ms.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!("browser H.264 decode: {} frames, p50 {:.2} ms", sorted.len(), sorted[sorted.len() / 2]);
    // The laptop's own consumers get JPEG made from the decoded pictures.
    let (status, jpeg) = viewer.get("/snapshot.jpg").unwrap();
    assert_eq!((status, &jpeg[..2]), (200, &[0xff, 0xd8][..]));
    let (_, metrics) = viewer.get("/metrics").unwrap();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(support::metric(&metrics, "ads_viewer_h264_decoded_total").unwrap() > 10.0, "{metrics}");
    assert_eq!(support::metric(&metrics, "ads_viewer_h264_corrupt_total"), Some(0.0));
    std::fs::write(artifact("viewer-h264.png"), browser.client.screenshot().await.unwrap()).unwrap();
    browser.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_live_video_with_overlays_and_its_buttons_drive_the_car() {
    let mut vehicle = Vehicle::start("browser", true);
    let viewer = Viewer::start(&vehicle);
    let browser = Browser::start().await;
    browser.client.goto(&viewer.url("/")).await.unwrap();

    // Live video: frames are drawn, their ids advance, and the canvas changes.
    browser.wait_js("five frames drawn", "return window.adsStats.framesDrawn > 5").await;
    let first = browser
        .js("return [window.adsStats.lastFrameId, document.getElementById('video').toDataURL()]")
        .await;
    browser.wait_js("newer frames", &format!("return window.adsStats.lastFrameId > {}", first[0])).await;
    let later = browser.js("return document.getElementById('video').toDataURL()").await;
    assert_ne!(first[1], later, "the canvas did not change between frames");
    // The video-link panel shows what this viewer gets; on loopback the full picture, so the
    // "link slow" badge goes away once the session has climbed to the best tier.
    browser
        .wait_js(
            "the link panel at full size",
            "const v = window.adsStats.videoLink; return !!v && v.fps > 0 && v.width === 800 \
             && document.getElementById('video-link').rows.length > 3 \
             && document.getElementById('link-slow').classList.contains('hidden')",
        )
        .await;
    browser
        .wait_js(
            "the link shown live",
            "return document.getElementById('link').textContent === 'vehicle live'",
        )
        .await;
    // The outputs line: a simulated car has none and knows its speed from the simulator.
    browser
        .wait_js(
            "the outputs line",
            "return document.getElementById('outputs').textContent === 'Outputs: none · speed from sim'",
        )
        .await;
    // The car drives on detections, so the detector's lanes get drawn.
    browser
        .wait_js("lane lines drawn", &format!("{{ {LANE_PIXELS} }}").replace("return n;", "return n > 500;"))
        .await;

    // Pause: the vehicle itself says it is paused, and the page shows the acknowledgement.
    browser.click("btn-pause").await;
    let ack = browser.wait_ack("pause: accepted").await;
    assert!(ack.contains("paused"), "{ack}");
    vehicle.state_where("paused", |s| s.paused);
    // With the stream frozen, toggling a layer changes what is drawn on the same frame.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let frozen = browser.js("return window.adsStats.lastFrameId").await;
    let with_lanes = browser.js(LANE_PIXELS).await.as_u64().unwrap();
    browser.click("layer-lanes").await;
    let without_lanes = browser.js(LANE_PIXELS).await.as_u64().unwrap();
    assert_eq!(
        browser.js("return window.adsStats.lastFrameId").await,
        frozen,
        "frames kept coming while paused"
    );
    assert!(
        with_lanes > 500 && without_lanes * 10 < with_lanes,
        "lanes on {with_lanes} px, off {without_lanes} px"
    );
    browser.click("layer-lanes").await;
    assert!(browser.js(LANE_PIXELS).await.as_u64().unwrap() > 500, "lanes did not come back");
    std::fs::write(artifact("viewer-paused.png"), browser.client.screenshot().await.unwrap()).unwrap();

    browser.click("btn-resume").await;
    browser.wait_ack("resume: accepted").await;
    vehicle.state_where("resumed and driving", |s| !s.paused && s.speed_mps > 1.0);

    // Respawn at spawn point 0: the car stands at the start again.
    let before = vehicle.state();
    browser.click("btn-respawn").await;
    let ack = browser.wait_ack("respawn: accepted").await;
    assert!(ack.contains("spawn point 0"), "{ack}");
    // The acknowledgement names the spawn point's position; the vehicle reports standing there.
    let (x, y) = ack
        .rsplit_once('(')
        .and_then(|(_, xy)| xy.trim_end_matches(')').split_once(", "))
        .map(|(x, y)| (x.parse::<f64>().unwrap(), y.parse::<f64>().unwrap()))
        .unwrap_or_else(|| panic!("no position in {ack:?}"));
    let after = vehicle.state_where("respawned at the spawn point", |s| {
        s.speed_mps < 0.5 && (s.pose.x_m - x).abs() < 0.5 && (s.pose.y_m - y).abs() < 0.5
    });
    let moved_from = (before.pose.x_m - x).hypot(before.pose.y_m - y);
    eprintln!("respawned {moved_from:.1} m back to ({x:.1}, {y:.1}); odometer {:.1} m", after.distance_m);
    assert!(moved_from > 1.0, "the car had not left the spawn point, so respawn proved nothing");

    // A refusal shows the vehicle's reason.
    browser.client.find(Locator::Id("spawn-point")).await.unwrap().clear().await.unwrap();
    browser.client.find(Locator::Id("spawn-point")).await.unwrap().send_keys("99").await.unwrap();
    browser.click("btn-respawn").await;
    let refused = browser.wait_ack("respawn: rejected").await;
    assert!(refused.contains("not_allowed"), "{refused}");

    // Emergency stop by keyboard (Space), as an operator would in a hurry.
    browser.js("document.activeElement.blur(); return true").await;
    browser.client.find(Locator::Css("body")).await.unwrap().send_keys(" ").await.unwrap();
    browser.wait_ack("emergency_stop: accepted").await;
    vehicle.state_where("emergency stop", |s| s.mode == DriveMode::EmergencyStop);
    let events = browser.js("return document.getElementById('events').textContent").await;
    for needle in ["pause: accepted", "resume: accepted", "respawn: rejected", "emergency_stop: accepted"] {
        assert!(events.as_str().unwrap().contains(needle), "event log lacks {needle}: {events}");
    }
    // The per-hop breakdown is live.
    browser
        .wait_js(
            "the latency of every hop",
            "const t = document.getElementById('hops').textContent; return !t.includes('–') && t.includes('capture → browser');",
        )
        .await;
    let shot = browser.client.screenshot().await.unwrap();
    std::fs::write(artifact("viewer-estop.png"), &shot).unwrap();
    assert!(shot.starts_with(b"\x89PNG"));
    browser.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_vehicle_silent_the_estop_stays_usable_and_a_press_is_delivered_when_it_returns() {
    let mut vehicle = Vehicle::start("browser-gone", false);
    let viewer = Viewer::start(&vehicle);
    let browser = Browser::start().await;
    browser.client.goto(&viewer.url("/")).await.unwrap();
    browser.wait_js("enabled controls", "return !document.getElementById('btn-pause').disabled").await;
    // A frozen vehicle is silent like one behind a dead WiFi link.
    vehicle.car.process.signal(rustix::process::Signal::STOP);
    browser.wait_js("disabled controls", "return document.getElementById('btn-pause').disabled").await;
    let banner = browser.js("return document.getElementById('banner').textContent").await;
    assert!(banner.as_str().unwrap().contains("vehicle link lost"), "{banner}");
    // The e-stop is never disabled: pressed now, it is kept, retried, and the page says so.
    assert_eq!(browser.js("return document.getElementById('btn-estop').disabled").await, false);
    browser.click("btn-estop").await;
    let status = browser
        .wait_js(
            "the pending e-stop shown",
            "const t = document.getElementById('estop-status').textContent; return t.includes('retrying') ? t : null;",
        )
        .await;
    eprintln!("while the vehicle is silent the page says: {status}");
    vehicle.car.process.signal(rustix::process::Signal::CONT);
    vehicle.state_where("the e-stop pressed while the link was down", |s| s.commands.estop_latched);
    browser.wait_ack("emergency_stop: accepted").await;
    browser
        .wait_js(
            "the pending notice gone",
            "return document.getElementById('estop-status').classList.contains('hidden')",
        )
        .await;
    browser.wait_js("controls enabled again", "return !document.getElementById('btn-pause').disabled").await;
    browser.client.close().await.unwrap();
}

/// A page from another origin (another port on this machine) that the operator happens to
/// open tries what a hostile page can: a text/plain form POST whose body parses as JSON, a
/// no-cors fetch, a websocket, and framing the viewer. None of it reaches the vehicle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_cannot_act_read_or_frame_the_viewer() {
    let mut vehicle = Vehicle::start("browser-csrf", false);
    let viewer = Viewer::start(&vehicle);
    // Latch an e-stop first: the attack's `reset` and `resume` would release it.
    let (status, _) = post_json(viewer.port, r#"{"command":{"type":"emergency_stop"}}"#);
    assert_eq!(status, 200);
    vehicle.state_where("the e-stop latched", |s| s.commands.estop_latched);
    let (_, before) = viewer.get("/metrics").unwrap();
    let sent_before = metric(&String::from_utf8_lossy(&before), "ads_viewer_actions_sent_total").unwrap();

    let evil_port = free_port();
    let page = evil_page(viewer.port);
    let server = std::thread::spawn(move || serve_page(evil_port, &page));
    let browser = Browser::start().await;
    browser.client.goto(&format!("http://127.0.0.1:{evil_port}/")).await.unwrap();
    let report = browser
        .wait_js("the attack finished", "return window.attack && window.attack.done ? window.attack : null")
        .await;
    eprintln!("the hostile page's view: {report}");
    assert_eq!(report["socket"], "refused", "{report}");
    // Nothing reached the vehicle: still latched, and the viewer sent nothing.
    for _ in 0..20 {
        let s = vehicle.state();
        assert!(s.commands.estop_latched && s.mode == DriveMode::EmergencyStop, "{s:?}");
    }
    let (_, after) = viewer.get("/metrics").unwrap();
    let after = String::from_utf8_lossy(&after).into_owned();
    assert_eq!(metric(&after, "ads_viewer_actions_sent_total").unwrap(), sent_before, "{after}");
    // The framed viewer never ran (it would have opened a websocket), and refusals were counted.
    assert_eq!(metric(&after, "ads_viewer_clients"), Some(0.0), "the page was framed: {after}");
    assert!(metric(&after, "ads_viewer_requests_refused_total").unwrap() >= 2.0, "{after}");
    browser.client.close().await.unwrap();
    drop(server);
}

fn post_json(port: u16, body: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /api/action HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    (response[9..12].parse().unwrap(), response)
}

/// What a hostile page would do, in one document.
fn evil_page(viewer: u16) -> String {
    let target = format!("http://127.0.0.1:{viewer}");
    format!(
        r#"<!doctype html><html><body>
<iframe name="sink" style="display:none"></iframe>
<form id="f" method="POST" action="{target}/api/action" enctype="text/plain" target="sink">
  <input name='{{"command":{{"type":"reset"}},"request_id":"' value='"}}'>
</form>
<iframe id="framed" src="{target}/" width="400" height="300"></iframe>
<script>
window.attack = {{ done: false }};
document.getElementById("f").submit();
fetch("{target}/api/action", {{ method: "POST", mode: "no-cors", headers: {{ "Content-Type": "text/plain" }},
  body: JSON.stringify({{ command: {{ type: "resume" }}, request_id: "x" }}) }})
  .then(() => window.attack.fetch = "sent", (e) => window.attack.fetch = "failed: " + e);
const ws = new WebSocket("ws://127.0.0.1:{viewer}/ws");
ws.onopen = () => {{ window.attack.socket = "open";
  ws.send(JSON.stringify({{ type: "action", request_id: "w", command: {{ type: "reset" }} }})); }};
ws.onerror = () => {{ window.attack.socket = window.attack.socket || "refused"; }};
setTimeout(() => {{ window.attack.done = true; }}, 3000);
</script></body></html>"#
    )
}

/// Serves `page` to every request on `port` (the attacker's web server), until the test ends.
fn serve_page(port: u16, page: &str) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_access_token_the_page_asks_for_it_once_then_plays() {
    let token = "bench-token-0123456789";
    let vehicle = Vehicle::start("browser-token", false);
    let viewer = Viewer::start_with(&vehicle, &["--access-token", token]);
    let browser = Browser::start().await;
    browser.client.goto(&viewer.url("/")).await.unwrap();
    browser
        .wait_js("the token form", "return !document.getElementById('login').classList.contains('hidden')")
        .await;
    assert_eq!(browser.js("return window.adsStats.framesDrawn").await, 0, "video without the token");
    // A wrong token is refused and said so.
    browser
        .client
        .find(Locator::Id("token-input"))
        .await
        .unwrap()
        .send_keys("wrong-token-0123456789")
        .await
        .unwrap();
    browser.click("token-submit").await;
    browser
        .wait_js(
            "the refusal",
            "return document.getElementById('login-error').textContent.includes('refused')",
        )
        .await;
    browser.client.find(Locator::Id("token-input")).await.unwrap().clear().await.unwrap();
    browser.client.find(Locator::Id("token-input")).await.unwrap().send_keys(token).await.unwrap();
    browser.click("token-submit").await;
    browser.wait_js("frames with the token", "return window.adsStats.framesDrawn > 3").await;
    // Remembered: a reload goes straight to the video.
    browser.client.refresh().await.unwrap();
    browser.wait_js("frames after a reload", "return window.adsStats.framesDrawn > 3").await;
    assert_eq!(
        browser.js("return document.getElementById('login').classList.contains('hidden')").await,
        true
    );
    browser.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_button_records_on_the_laptop_and_shows_file_size_and_duration() {
    let vehicle = Vehicle::start("browser-rec", false);
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let viewer = Viewer::start_with(&vehicle, &["--recordings-dir", dir.to_str().unwrap()]);
    let browser = Browser::start().await;
    browser.client.goto(&viewer.url("/")).await.unwrap();
    browser.wait_js("frames", "return window.adsStats.framesDrawn > 3").await;
    browser.click("btn-record").await;
    // "● DIR/ads-….mcap — 1.2 MB, 3 s" once three seconds are in (the viewer's own session
    // moves from H.264 to full JPEG pictures when the recording starts: allow for the switch).
    let shown = browser
        .wait_js(
            "the recording's progress",
            "const t = document.getElementById('record-status').textContent; \
             return /^● .*ads-\\d+\\.mcap — \\d+\\.\\d MB, [3-9]\\d* s$/.test(t) ? t : null;",
        )
        .await;
    assert!(shown.as_str().unwrap().contains(dir.to_str().unwrap()), "{shown}");
    assert_eq!(
        browser.js("return document.getElementById('btn-record').textContent").await,
        "Stop recording"
    );
    browser.click("btn-record").await;
    browser
        .wait_js(
            "the saved file",
            "return document.getElementById('record-status').textContent.startsWith('saved ')",
        )
        .await;
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let reading = ads_record::recover::read(&files[0]).unwrap();
    assert_eq!(reading.truncated, None);
    let images = reading.messages.iter().filter(|m| m.topic == "/camera/image").count();
    let states = reading.messages.iter().filter(|m| m.topic == "/state").count();
    assert!(images >= 30, "{images} images, {states} states recorded");
    browser.client.close().await.unwrap();
}

/// Holds (`down`) or releases a key through WebDriver: a real key event in the page.
async fn key(browser: &Browser, key: fantoccini::key::Key, down: bool) {
    use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
    let value = char::from(key);
    let action = if down { KeyAction::Down { value } } else { KeyAction::Up { value } };
    browser.client.perform_actions(KeyActions::new("keyboard".into()).then(action)).await.unwrap();
}

/// Manual driving (issue 23): a person takes control in the page and drives the simulator with
/// the arrow keys; letting go, closing the tab and the e-stop each stop the car; a second
/// browser drives only after pressing Take control; a (synthetic) gamepad drives only with its
/// dead-man button held. What the car does is read from the vehicle's own state over ZeroMQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_drives_the_simulator_from_the_keyboard_and_every_way_of_letting_go_stops_it() {
    use ads_protocol::PilotMode;
    use fantoccini::key::Key;
    let mut vehicle = Vehicle::start("drive", false);
    let viewer = Viewer::start(&vehicle);
    let a = Browser::start().await;
    a.client.goto(&viewer.url("/")).await.unwrap();
    a.wait_js("the page live", "return window.adsDrive.me !== null && document.getElementById('link').textContent === 'vehicle live'").await;
    vehicle.state_where("the autopilot driving", |s| s.speed_mps > 1.0);

    // Manual: takes control; the car brakes, nobody has sent a drive command yet.
    a.click("btn-mode-manual").await;
    a.wait_ack("set_drive_mode: accepted").await;
    a.wait_js("control taken", "return document.getElementById('drive-who').textContent === 'you drive'")
        .await;
    let s = vehicle.state_where("manual, standing", |s| {
        s.teleop.pilot == PilotMode::Manual && s.teleop.driver.is_some() && s.speed_mps < 0.2
    });
    assert!(s.health.stop_reason.unwrap_or_default().contains("waiting for the operator"));

    // Up and left held: the car drives and turns left.
    a.js("document.activeElement.blur(); return true").await;
    key(&a, Key::Up, true).await;
    key(&a, Key::Left, true).await;
    let s = vehicle.state_where("driving by hand, turning left", |s| {
        s.teleop.live && s.mode == DriveMode::Driving && s.speed_mps > 1.0 && s.steering_rad > 0.1
    });
    assert!(s.teleop.steering > 0.0 && s.teleop.throttle > 0.0, "{:?}", s.teleop);
    a.wait_js(
        "the commanded values over the video",
        "return document.getElementById('drive-hud').textContent.includes('keyboard')",
    )
    .await;
    std::fs::write(artifact("viewer-manual.png"), a.client.screenshot().await.unwrap()).unwrap();

    // Let go: one neutral command, then the lease runs out and the car brakes to a stop.
    key(&a, Key::Left, false).await;
    key(&a, Key::Up, false).await;
    let lapsed_before = s.teleop.lapsed;
    let braking = vehicle.state_where("the lease run out, braking", |s| !s.teleop.live && s.brake > 0.0);
    assert!(braking.teleop.lapsed > lapsed_before, "{:?}", braking.teleop);
    assert!(braking.health.stop_reason.unwrap_or_default().contains("dead-man"));
    eprintln!(
        "key up → brake: the newest command was {} ms old when the brake came (lease {} ms)",
        braking.teleop.age_ms.unwrap_or(0),
        a.js("return window.adsDrive.leaseMs").await
    );
    vehicle.state_where("stopped after letting go", |s| s.speed_mps < 0.1);

    // A gamepad (synthetic: Chromium has no pad here) drives only while LB is held.
    let pad = |deadman: f64| {
        format!(
            "const b = Array.from({{length: 17}}, () => ({{value: 0, pressed: false}})); \
             b[4] = {{value: {deadman}, pressed: {deadman} > 0}}; b[7] = {{value: 1, pressed: true}}; \
             const pad = {{connected: true, id: 'synthetic', mapping: 'standard', axes: [0.6, 0, 0, 0], buttons: b}}; \
             navigator.getGamepads = () => [pad]; return true;"
        )
    };
    a.js(&pad(0.0)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(vehicle.state().speed_mps < 0.1, "a pad without its dead-man button must not drive");
    a.js(&pad(1.0)).await;
    vehicle.state_where("the gamepad driving, turning right", |s| {
        s.teleop.live && s.speed_mps > 0.5 && s.steering_rad < -0.1
    });
    a.js(&pad(0.0)).await;
    vehicle
        .state_where("stopped after the dead-man button was let go", |s| !s.teleop.live && s.speed_mps < 0.1);
    a.js("navigator.getGamepads = () => []; return true").await;

    // A second browser watches: it sees who drives, and its drive commands are refused until
    // it presses Take control.
    let b = Browser::start().await;
    b.client.goto(&viewer.url("/")).await.unwrap();
    b.wait_js("another browser drives", "return window.adsDrive.me !== null && /^browser \\d+ .* drives$/.test(document.getElementById('drive-who').textContent)").await;
    b.js("ws.send(JSON.stringify({type: 'drive', steering: 0, throttle: 1, t_ms: Date.now()})); return true")
        .await;
    b.wait_js(
        "its drive refused",
        "return window.adsDrive.refused > 0 && window.adsDrive.lastRefusal.includes('Take control')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(vehicle.state().speed_mps < 0.1, "a browser without control moved the car");
    b.click("btn-take-control").await;
    b.wait_js(
        "control taken by the second browser",
        "return document.getElementById('drive-who').textContent === 'you drive'",
    )
    .await;
    a.wait_js(
        "the first browser now watching",
        "return document.getElementById('drive-who').textContent !== 'you drive'",
    )
    .await;

    // Closing the tab while driving stops the car.
    b.js("document.activeElement.blur(); return true").await;
    key(&b, Key::Up, true).await;
    vehicle.state_where("the second browser driving", |s| s.teleop.live && s.speed_mps > 1.0);
    b.client.goto("about:blank").await.unwrap();
    vehicle.state_where("stopped after the driving tab closed", |s| !s.teleop.live && s.speed_mps < 0.1);
    key(&b, Key::Up, false).await;

    // The e-stop during manual driving stops and latches, however the keys are held.
    a.click("btn-take-control").await;
    a.wait_js("control back", "return document.getElementById('drive-who').textContent === 'you drive'")
        .await;
    a.js("document.activeElement.blur(); return true").await;
    key(&a, Key::Up, true).await;
    vehicle.state_where("driving again", |s| s.teleop.live && s.speed_mps > 1.0);
    a.client.find(Locator::Css("body")).await.unwrap().send_keys(" ").await.unwrap();
    a.wait_ack("emergency_stop: accepted").await;
    vehicle.state_where("latched and stopped with the key still held", |s| {
        s.mode == DriveMode::EmergencyStop && s.commands.estop_latched && s.speed_mps < 0.1
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = vehicle.state();
    assert!(s.mode == DriveMode::EmergencyStop && s.speed_mps < 0.1, "{:?} at {} m/s", s.mode, s.speed_mps);
    key(&a, Key::Up, false).await;
    let latency = a.js("return document.getElementById('drive-latency').textContent").await;
    eprintln!("{latency}");
    assert!(latency.as_str().unwrap().contains("p99"), "{latency}");
    b.client.close().await.unwrap();
    a.client.close().await.unwrap();
}
