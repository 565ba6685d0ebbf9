//! The page's Record button's API: a recording written by the viewer process, its progress
//! (file, size, duration) while it runs, a complete file after stop; and the CSRF rules.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod support;

use ads_testkit::DEADLINE;
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};
use support::{Vehicle, Viewer};

fn post(viewer: &Viewer, content_type: &str, origin: Option<&str>, body: &str) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", viewer.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    write!(
        stream,
        "POST /api/recording HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: {content_type}\r\n{origin}Content-Length: {}\r\n\r\n{body}",
        viewer.port,
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = std::str::from_utf8(&response[9..12]).unwrap().parse().unwrap();
    (status, serde_json::from_slice(&response[split + 4..]).unwrap_or(Value::Null))
}

fn status(viewer: &Viewer) -> Value {
    serde_json::from_slice(&viewer.get("/api/recording").unwrap().1).unwrap()
}

#[test]
fn the_record_button_writes_a_recording_on_the_laptop_and_shows_its_progress() {
    let vehicle = Vehicle::start("viewrec", false);
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("viewer-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let viewer = Viewer::start_with(&vehicle, &["--recordings-dir", dir.to_str().unwrap()]);
    assert_eq!(status(&viewer)["recording"], false);

    // Not from another page, not as a form.
    let (code, _) = post(&viewer, "application/json", Some("https://evil.example"), r#"{"record":true}"#);
    assert_eq!(code, 403);
    let (code, _) = post(&viewer, "text/plain", None, r#"{"record":true}"#);
    assert_eq!(code, 415);
    assert_eq!(status(&viewer)["recording"], false);

    let (code, started) = post(&viewer, "application/json", None, r#"{"record":true}"#);
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["recording"], true);
    let (code, _) = post(&viewer, "application/json", None, r#"{"record":true}"#);
    assert_eq!(code, 409, "a second start while recording is refused");

    let deadline = Instant::now() + DEADLINE;
    let current = loop {
        let s = status(&viewer);
        let c = s["current"].clone();
        if c["frames"].as_u64().unwrap_or(0) >= 30 && c["duration_ms"].as_u64().unwrap_or(0) >= 1000 {
            break c;
        }
        assert!(Instant::now() < deadline, "no progress: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(current["bytes"].as_u64().unwrap() > 100_000, "{current}");
    let path = std::path::PathBuf::from(current["path"].as_str().unwrap());
    assert!(path.starts_with(&dir), "written into --recordings-dir: {}", path.display());

    let (code, stopped) = post(&viewer, "application/json", None, r#"{"record":false}"#);
    assert_eq!(code, 200);
    assert_eq!(stopped["recording"], false);
    assert_eq!(stopped["last"]["ok"], true, "{stopped}");
    let reading = ads_record::recover::read(&path).unwrap();
    assert_eq!(reading.truncated, None, "a stopped recording is complete (summary and footer)");
    let frames = reading.messages.iter().filter(|m| m.topic == "/camera/image").count() as u64;
    assert!(frames >= current["frames"].as_u64().unwrap());
    let page = String::from_utf8(viewer.get("/").unwrap().1).unwrap();
    assert!(page.contains("id=\"btn-record\"") && page.contains("id=\"record-status\""));
}

/// A recording stops by itself at its size limit, complete, and the status says why.
#[test]
fn a_recording_stops_at_its_size_limit_and_says_so() {
    let vehicle = Vehicle::start("reclimit", false);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("viewer-rec-limit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("viewer.toml");
    std::fs::write(&config, "record_max_bytes = 500000\nrecord_min_free_bytes = 1\n").unwrap();
    let viewer = Viewer::start_with(
        &vehicle,
        &["--config", config.to_str().unwrap(), "--recordings-dir", dir.to_str().unwrap()],
    );
    let (code, started) = post(&viewer, "application/json", None, r#"{"record":true}"#);
    assert_eq!(code, 200, "{started}");
    let deadline = Instant::now() + DEADLINE;
    let last = loop {
        let s = status(&viewer);
        if s["recording"] == false {
            break s["last"].clone();
        }
        assert!(Instant::now() < deadline, "the recording never stopped by itself: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(last["ok"], true, "{last}");
    let stopped = last["stopped"].as_str().unwrap_or_default();
    assert!(stopped.contains("size limit of 0.5 MB"), "{last}");
    let bytes = last["recording"]["bytes"].as_u64().unwrap();
    // Checked every second: over by at most about a second of recording.
    assert!((500_000..5_000_000).contains(&bytes), "{bytes} bytes");
    let path = std::path::PathBuf::from(last["recording"]["path"].as_str().unwrap());
    assert_eq!(ads_record::recover::read(&path).unwrap().truncated, None, "stopped complete");
    let _ = std::fs::remove_dir_all(&dir);
}
