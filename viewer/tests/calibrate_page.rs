//! The calibration page (`/calibrate`) in a real headless Chromium, against a real ads-viewer
//! watching a real ads-vehicle whose serial actuator is a fake board on a pty
//! (tests/tests/board): holding the steering slider holds the pulse on the board, letting go or
//! closing the page puts it back to neutral, and "save" writes the value found into the
//! vehicle's configuration file.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

#[path = "../../tests/tests/board/mod.rs"]
mod board;
mod support;

use ads_testkit::{free_port, Kill, DEADLINE};
use board::FakeBoard;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Vehicle, Viewer};

const CENTRE_US: u16 = 1480;
const NEUTRAL: (u16, u16) = (CENTRE_US, 1500);

async fn chromium() -> (Client, Kill) {
    let port = free_port();
    let driver = Kill(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup.sh installs chromium-driver)"),
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
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-extensions"],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromium session");
    (client, driver)
}

async fn wait_js(client: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let v = client.execute(script, vec![]).await.unwrap();
        if !v.is_null() && v != Value::Bool(false) {
            return v;
        }
        assert!(Instant::now() < deadline, "the page never showed {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Presses the steering slider at `us` (the page's pointer handlers, as a finger on it).
const PRESS: &str = "const s = document.getElementById('steering'); s.value = arguments[0]; \
    s.dispatchEvent(new Event('input')); \
    s.dispatchEvent(new PointerEvent('pointerdown', { pointerId: 1, bubbles: true })); return true;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_holds_a_pulse_only_while_the_slider_is_held_and_saves_what_was_found() {
    let dir = std::env::temp_dir().join(format!("ads-calibrate-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vehicle.toml");
    let original =
        format!("# the car on the stand\n[actuator.calibration]\nsteering_centre_us = {CENTRE_US}\n");
    std::fs::write(&config, &original).unwrap();
    let board = FakeBoard::start(None, CENTRE_US);
    let flags = ["--config", config.to_str().unwrap(), "--resolution", "160x120", "--actuator", "serial"];
    let vehicle = Vehicle::start_with(
        "calibrate-page",
        false,
        &[&flags[..], &["--actuator-device", &board.path]].concat(),
    );
    let viewer = Viewer::start(&vehicle);
    let (client, _driver) = chromium().await;
    client.goto(&viewer.url("/calibrate")).await.unwrap();
    // The page shows the held car and starts the slider at the vehicle's calibrated centre.
    wait_js(
        &client,
        "the held car",
        "return document.getElementById('status').textContent.includes('mode stopped')",
    )
    .await;
    let value = wait_js(
        &client,
        "the slider at the centre",
        "const v = document.getElementById('steering').value; return v === '1480' ? v : null;",
    )
    .await;
    assert_eq!(value, "1480");

    // Held at 1900 µs: the board gets the pulse, again and again while held.
    client.execute(PRESS, vec![json!(1900)]).await.unwrap();
    let held = board
        .wait_for("the held pulse", |l| l.iter().filter(|(_, l)| l.pulses() == (1900, 1500)).count() >= 20);
    wait_js(
        &client,
        "the lease on the page",
        "return document.getElementById('outputs').textContent.includes('holding steering')",
    )
    .await;
    // Let go: neutral, and the pulse no more.
    let let_go = Instant::now();
    client
        .execute(
            "window.dispatchEvent(new PointerEvent('pointerup', { pointerId: 1 })); return true;",
            vec![],
        )
        .await
        .unwrap();
    board.wait_for("neutral after letting go", |l| {
        l.iter().any(|(t, l)| *t > let_go && l.pulses() == NEUTRAL)
    });
    let lines = board.lines_after(let_go);
    let first_neutral = lines.iter().position(|(_, l)| l.pulses() == NEUTRAL).unwrap();
    assert!(lines[first_neutral..].iter().all(|(_, l)| l.verb == 'N'), "{:?}", &lines[first_neutral..]);
    assert!(held.len() > 20);

    // "full left = this", then save: the file gets it, every other line as it was.
    client.find(Locator::Css("button[data-key=steering_left_us]")).await.unwrap().click().await.unwrap();
    client.find(Locator::Id("save")).await.unwrap().click().await.unwrap();
    let ack = wait_js(&client, "the save's answer", "const t = document.getElementById('last-ack').textContent; return t.startsWith('calibrate_save: accepted') ? t : null;").await;
    assert!(ack.as_str().unwrap().contains("steering_left_us = 1900"), "{ack}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), format!("{original}steering_left_us = 1900\n"));

    // Held again, then the page goes away without letting go: the lease runs out.
    client.execute(PRESS, vec![json!(1100)]).await.unwrap();
    board.wait_for("the second pulse", |l| l.iter().any(|(_, l)| l.pulses() == (1100, 1500)));
    let closed = Instant::now();
    client.goto("about:blank").await.unwrap();
    board.wait_for("neutral after the page closed", |l| {
        l.iter().any(|(t, l)| *t > closed && l.pulses() == NEUTRAL)
    });
    let lines = board.lines_after(closed);
    let first_neutral = lines.iter().position(|(_, l)| l.pulses() == NEUTRAL).unwrap();
    assert!(
        lines[first_neutral..].iter().all(|(_, l)| l.pulses() != (1100, 1500)),
        "{:?}",
        &lines[first_neutral..]
    );
    client.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
