//! Real processes for the viewer's tests: an ads-vehicle on free ports, optionally an
//! ads-detection, and ads-viewer instances watching it.
#![allow(dead_code, reason = "each test file uses a different part")]

use ads_protocol::{decode, Message, VehicleState};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: only keeps a broken test from hanging, it measures nothing.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// A workspace binary next to this test's executable (scripts/test.sh builds them first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|deps| deps.parent()).unwrap().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins`", path.display());
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child stopped like a supervisor would: SIGTERM, a grace period, then SIGKILL.
pub struct Kill(pub Child);

impl Kill {
    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.0.id() as i32).unwrap()
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let _ = rustix::process::kill_process(self.pid(), signal);
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        // Already reaped: its pid may belong to another process by now.
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Vehicle {
    pub name: String,
    pub pub_port: u16,
    pub video_port: u16,
    pub action_port: u16,
    pub rings: (String, String),
    pub process: Kill,
    pub detector: Option<Kill>,
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
        let name = format!("v{}-{test}", std::process::id());
        Self::spawn(&name, free_port(), free_port(), free_port(), detector, extra)
    }

    /// Another vehicle process with the same name, ports and rings (as after a restart).
    pub fn restart_on(name: &str, pub_port: u16, video_port: u16, action_port: u16) -> Self {
        Self::spawn(name, pub_port, video_port, action_port, false, &[])
    }

    fn spawn(
        name: &str,
        pub_port: u16,
        video_port: u16,
        action_port: u16,
        detector: bool,
        extra: &[&str],
    ) -> Self {
        let name = name.to_string();
        // The test's own e-stop latch, never the user's ~/.local/state.
        let latch = std::env::temp_dir().join(format!("ads-viewer-test-{name}.latch"));
        let rings = (format!("{name}-frames"), format!("{name}-det"));
        let control = if detector { "detections" } else { "truth" };
        let process = Command::new(bin("ads-vehicle"))
            .args(["--control", control, "--vehicle-id", &name])
            .args(["--broadcast", &format!("tcp://127.0.0.1:{pub_port}")])
            .args(["--video-endpoint", &format!("tcp://127.0.0.1:{video_port}")])
            .args(["--actions", &format!("tcp://127.0.0.1:{action_port}")])
            .args(["--frames-ring", &rings.0, "--detections-ring", &rings.1])
            .args(extra)
            .env("ADS_VEHICLE_LATCH_FILE", &latch)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let context = zmq::Context::new();
        let states = context.socket(zmq::SUB).unwrap();
        states.set_subscribe(b"state").unwrap();
        states.set_rcvtimeo(1000).unwrap();
        states.connect(&format!("tcp://127.0.0.1:{pub_port}")).unwrap();
        let mut vehicle = Vehicle {
            name,
            pub_port,
            video_port,
            action_port,
            rings,
            process: Kill(process),
            detector: None,
            states,
            _context: context,
        };
        if detector {
            let child = Command::new(bin("ads-detection"))
                .args([
                    "--method",
                    "cv",
                    "--frames-ring",
                    &vehicle.rings.0,
                    "--detections-ring",
                    &vehicle.rings.1,
                ])
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            vehicle.detector = Some(Kill(child));
        }
        vehicle
    }

    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.pub_port)
    }

    pub fn video_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.video_port)
    }

    pub fn action_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.action_port)
    }

    pub fn state(&mut self) -> VehicleState {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no state from the vehicle");
            if let Ok(Some(status)) = self.process.0.try_wait() {
                panic!("the vehicle exited: {status}");
            }
            let Ok(parts) = self.states.recv_multipart(0) else { continue };
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            if let Ok(Message::State(s)) = decode(&refs).map(|m| m.message) {
                return s;
            }
        }
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
        let viewer =
            Self::spawn(&vehicle.endpoint(), &vehicle.video_endpoint(), &vehicle.action_endpoint(), extra);
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
