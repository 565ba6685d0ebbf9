//! Calibration through the viewer, end to end (docs/actuators.md, "Calibration"): a real
//! `ads-vehicle` with the serial actuator on a pseudo-terminal whose master is a fake board,
//! and a real `ads-viewer`; the test sends what the calibration page sends, through the
//! viewer's `POST /api/action`, signed and retransmitted by the viewer like every action.
//!
//! Asserted is what the board saw, in order, and what the vehicle answered; times only as
//! deadlines against a hang.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod board;

use ads_protocol::{CalibrationChannel, DriveMode, VehicleState};
use ads_testkit::{bin, free_port, Kill, StateSubscriber, TestVehicle, DEADLINE};
use board::FakeBoard;
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// This car's straight-ahead pulse (not the default 1500: the board learns it from the vehicle).
const CENTRE_US: u16 = 1480;
const NEUTRAL: (u16, u16) = (CENTRE_US, 1500);

struct Viewer {
    port: u16,
    _process: Kill,
}

impl Viewer {
    fn start(car: &TestVehicle) -> Self {
        let port = free_port();
        let process = Command::new(bin("ads-viewer"))
            .args(["--vehicle", &car.endpoint(), "--video", &car.video_endpoint()])
            .args(["--actions", &car.action_endpoint()])
            .args(["--port", &port.to_string(), "--sender", "calibration-page"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut viewer = Self { port, _process: Kill(process) };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(exit)) = viewer._process.0.try_wait() {
                panic!("ads-viewer exited: {exit}");
            }
            let live =
                viewer.request("GET", "/healthz", "").is_some_and(|(_, h)| h["vehicle_link"] == "live");
            if live {
                return viewer;
            }
            assert!(Instant::now() < deadline, "the viewer's link never became live");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn request(&mut self, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(DEADLINE)).ok()?;
        let port = self.port;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).ok()?;
        let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status = std::str::from_utf8(response.get(9..12)?).ok()?.parse().ok()?;
        Some((status, serde_json::from_slice(&response[split + 4..]).unwrap_or(Value::Null)))
    }

    /// Sends `command` as the page does; the HTTP status (200 accepted, 409 refused) and the
    /// outcome.
    fn act(&mut self, command: Value) -> (u16, Value) {
        let body = json!({ "command": command }).to_string();
        self.request("POST", "/api/action", &body).expect("the viewer answers")
    }
}

fn pulse(channel: &str, us: u16) -> Value {
    json!({ "type": "calibrate_pulse", "channel": channel, "us": us, "lease_ms": 300 })
}

fn state_where(
    states: &StateSubscriber,
    car: &mut TestVehicle,
    what: &str,
    f: impl Fn(&VehicleState) -> bool,
) -> VehicleState {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = states.next(car);
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}; last: {:?}", s.actuator);
    }
}

#[test]
fn calibration_pulses_hold_while_renewed_end_in_neutral_are_refused_when_latched_and_saves_edit_the_file() {
    let dir = std::env::temp_dir().join(format!("ads-calibration-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vehicle.toml");
    let original = format!(
        "# the test car\n[actuator]\nmax_throttle = 0.3   # first drive\n\n\
         [actuator.calibration]\nsteering_centre_us = {CENTRE_US}  # straight, found on the stand\n"
    );
    std::fs::write(&config, &original).unwrap();
    let board = FakeBoard::start(None, CENTRE_US);
    let mut car = TestVehicle::build("calibration")
        .args(["--config", config.to_str().unwrap(), "--source", "sim", "--resolution", "160x120"])
        .args(["--actuator", "serial", "--actuator-device", board.path.as_str()])
        .spawn();
    let states = StateSubscriber::connect(&car);
    // A real car starts held: the outputs stop, the board answers.
    let held = state_where(&states, &mut car, "held with the board answering", |s| {
        s.mode == DriveMode::Stopped && s.actuator.board.is_some() && s.actuator.calibration.is_some()
    });
    assert_eq!(held.actuator.calibration_throttle_us, Some((1350, 1650)), "{:?}", held.actuator);
    let mut viewer = Viewer::start(&car);

    // Steering at 1900 µs, renewed every 100 ms for 1.5 s as while the slider is held.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let (status, outcome) = viewer.act(pulse("steering", 1900));
        assert_eq!(status, 200, "{outcome}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let holding = state_where(&states, &mut car, "calibrating", |s| s.actuator.state == "calibrating");
    assert_eq!(holding.actuator.calibrating, Some(CalibrationChannel::Steering));
    // The pulse reached the board as drive lines, the throttle at neutral, and held for longer
    // than one lease: the renewals kept it.
    let lines = board.lines_after(started);
    let pulses: Vec<Instant> =
        lines.iter().filter(|(_, l)| l.verb == 'D' && l.pulses() == (1900, 1500)).map(|(t, _)| *t).collect();
    assert!(!pulses.is_empty(), "{lines:?}");
    let span = *pulses.last().unwrap() - pulses[0];
    assert!(span > Duration::from_millis(300), "held {span:?} only: the renewals did not extend the lease");
    // Not renewed any more (a closed tab): the lease runs out and the board is put at neutral,
    // with no pulse after it.
    let after_neutral = board.wait_for("neutral after the lease", |lines| {
        let last_pulse = lines.iter().rposition(|(_, l)| l.pulses() == (1900, 1500));
        last_pulse.is_some_and(|i| lines[i + 1..].iter().any(|(_, l)| l.verb == 'N' && l.pulses() == NEUTRAL))
    });
    let last_pulse = after_neutral.iter().rposition(|(_, l)| l.pulses() == (1900, 1500)).unwrap();
    assert!(
        after_neutral[last_pulse + 1..].iter().all(|(_, l)| l.verb == 'N' && l.pulses() == NEUTRAL),
        "{:?}",
        &after_neutral[last_pulse + 1..]
    );
    state_where(&states, &mut car, "the lease over", |s| s.actuator.state != "calibrating");

    // A throttle pulse beyond the max_throttle range is refused, and nothing moves.
    let before = Instant::now();
    let (status, outcome) = viewer.act(pulse("throttle", 1800));
    assert_eq!(status, 409, "{outcome}");
    assert!(outcome["detail"].as_str().unwrap().contains("calibrate_full_throttle"), "{outcome}");
    assert!(board.lines_after(before).iter().all(|(_, l)| l.verb == 'N'), "{:?}", board.lines_after(before));

    // Save: the values go into [actuator.calibration], every other line as it was.
    let values = json!({ "type": "calibrate_save", "values": { "steering_left_us": 1900, "steering_right_us": 1060 } });
    let (status, outcome) = viewer.act(values);
    assert_eq!(status, 200, "{outcome}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert_eq!(saved, format!("{original}steering_left_us = 1900\nsteering_right_us = 1060\n"));

    // An e-stop while a pulse is held ends it at once and latches: renewals are refused.
    let (status, outcome) = viewer.act(pulse("throttle", 1600));
    assert_eq!(status, 200, "{outcome}");
    board.wait_for("the throttle pulse", |lines| lines.iter().any(|(_, l)| l.pulses() == (CENTRE_US, 1600)));
    let estop_sent = Instant::now();
    let (status, outcome) = viewer.act(json!({ "type": "emergency_stop" }));
    assert_eq!(status, 200, "{outcome}");
    let (status, outcome) = viewer.act(pulse("throttle", 1600));
    assert_eq!(status, 409, "{outcome}");
    assert!(outcome["detail"].as_str().unwrap().contains("emergency stop"), "{outcome}");
    state_where(&states, &mut car, "latched", |s| s.mode == DriveMode::EmergencyStop);
    let lines = board.wait_for("a stop line after the e-stop", |lines| {
        lines.iter().any(|(t, l)| *t > estop_sent && l.verb == 'N')
    });
    let first_stop = lines.iter().position(|(t, l)| *t > estop_sent && l.verb == 'N').unwrap();
    assert!(lines[first_stop..].iter().all(|(_, l)| l.verb == 'N'), "{:?}", &lines[first_stop..]);
    drop(viewer);
    car.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
