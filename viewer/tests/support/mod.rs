//! Real processes for the viewer's tests: an ads-vehicle on free ports, optionally an
//! ads-detection, and ads-viewer instances watching it.
#![allow(dead_code, reason = "each test file uses a different part")]

use ads_protocol::{decode, Message, VehicleState};
use ads_testkit::{bin, free_port, Kill, TestVehicle, VehicleBuilder, DEADLINE};
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An `ads-vehicle` (and its detector, if it has one) and a subscription to its states.
pub struct Vehicle {
    pub car: TestVehicle,
    states: zmq::Socket,
    _context: zmq::Context,
}

impl Vehicle {
    /// `detector`: also run ads-detection and steer from it; otherwise steer from truth.
    pub fn start(test: &str, detector: bool) -> Self {
        Self::start_with(test, detector, &[])
    }

    /// With more `ads-vehicle` flags.
    pub fn start_with(test: &str, detector: bool, extra: &[&str]) -> Self {
        let setup = TestVehicle::build(test)
            .args(["--control", if detector { "detections" } else { "truth" }])
            .args(extra)
            .log("error");
        Self::spawn(if detector { setup.detector() } else { setup })
    }

    /// Started from `setup` (another vehicle's, for a restart on its id, ports and rings).
    pub fn spawn(setup: VehicleBuilder) -> Self {
        let car = setup.spawn();
        let context = zmq::Context::new();
        let states = context.socket(zmq::SUB).unwrap();
        states.set_subscribe(b"state").unwrap();
        states.set_rcvtimeo(1000).unwrap();
        states.connect(&car.endpoint()).unwrap();
        Vehicle { car, states, _context: context }
    }

    pub fn state(&mut self) -> VehicleState {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no state from the vehicle");
            if let Ok(Some(status)) = self.car.process.0.try_wait() {
                panic!("the vehicle exited: {status}");
            }
            let Ok(parts) = self.states.recv_multipart(0) else { continue };
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            if let Ok(Message::State(s)) = decode(&refs).map(|m| m.message) {
                return s;
            }
        }
    }

    /// A state sent after this call: whatever queued in our subscription is dropped first.
    pub fn fresh_state(&mut self) -> VehicleState {
        while self.states.recv_multipart(zmq::DONTWAIT).is_ok() {}
        self.state()
    }

    /// The first state that satisfies `accept` (the vehicle's own account, over ZeroMQ).
    pub fn state_where(&mut self, what: &str, accept: impl Fn(&VehicleState) -> bool) -> VehicleState {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.state();
            if accept(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "the vehicle never got {what}; last state: {s:?}");
        }
    }
}

pub struct Viewer {
    pub port: u16,
    pub process: Kill,
}

impl Viewer {
    pub fn start(vehicle: &Vehicle) -> Self {
        Self::start_with(vehicle, &[])
    }

    pub fn start_with(vehicle: &Vehicle, extra: &[&str]) -> Self {
        let car = &vehicle.car;
        let viewer = Self::spawn(&car.endpoint(), &car.video_endpoint(), &car.action_endpoint(), extra);
        viewer.wait_until("the viewer hears the vehicle", |v| {
            v.get("/healthz").is_some_and(|(_, body)| String::from_utf8_lossy(&body).contains("\"live\""))
        });
        viewer
    }

    /// A viewer of any vehicle endpoints, returned as soon as it is started (not yet live).
    pub fn spawn(vehicle: &str, video: &str, actions: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let process = Command::new(bin("ads-viewer"))
            .args(["--vehicle", vehicle, "--video", video, "--actions", actions])
            .args(["--port", &port.to_string(), "--sender", &format!("viewer-{port}")])
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Viewer { port, process: Kill(process) }
    }

    /// Resident memory of the viewer process, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.0.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Open file descriptors of the viewer process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.0.id())).map_or(0, |d| d.count())
    }

    /// SIGTERM, and the exit status once it has exited (`None`: still running at the deadline).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.process.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.process.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A plain HTTP/1.0 GET; `None` while the viewer does not answer yet.
    pub fn get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port).ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).ok()?;
        let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status = std::str::from_utf8(&response[9..12]).ok()?.parse().ok()?;
        Some((status, response[split + 4..].to_vec()))
    }

    /// A JSON POST: (status, body).
    pub fn post(&self, path: &str, body: &str) -> (u16, Vec<u8>) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let status = std::str::from_utf8(&response[9..12]).unwrap().parse().unwrap();
        (status, response[split + 4..].to_vec())
    }

    pub fn wait_until(&self, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !ok(self) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The value of a Prometheus counter or gauge in `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
