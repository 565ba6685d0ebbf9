//! The README's main-job command, `scripts/demo.sh`, run as a user would (with debug builds to
//! keep the test quick): it starts the three processes, serves the web UI, stops everything in
//! stages on Ctrl-C, reports a child that dies, and leaves nothing in /dev/shm.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_testkit::free_port_block;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Generous: the script may have to check the build first. Measures nothing.
const DEADLINE: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

struct Demo {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    port: u16,
}

impl Demo {
    fn start() -> Self {
        // The demo builds before it binds (seconds, waiting for cargo's lock): its ports
        // come from outside the range other tests' `free_port` draws from.
        let vehicle_port = free_port_block(4);
        let port = vehicle_port + 3;
        let mut child = Command::new(repo().join("scripts/demo.sh"))
            .args(["--port", &port.to_string(), "--vehicle-port", &vehicle_port.to_string()])
            .env("ADS_DEMO_PROFILE", "dev")
            .env("RUST_LOG", "warn")
            .current_dir(repo())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[demo] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo { child, lines, seen: Vec::new(), port }
    }

    /// The first line of the script's output containing `needle`.
    fn expect_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("no {needle:?} from the demo; saw {:#?}", self.seen),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the demo ended before {needle:?}; saw {:#?}", self.seen)
                }
            }
        }
    }

    fn pid_of(&mut self, name: &str) -> i32 {
        let line = self.expect_line(&format!("started {name} (pid "));
        line.rsplit("(pid ").next().unwrap().trim_end_matches(')').parse().unwrap()
    }

    fn get(&self, path: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = Vec::new();
        s.read_to_end(&mut response).ok()?;
        // Headers and any text body; a JPEG body comes out lossy, which is fine for a check.
        Some(String::from_utf8_lossy(&response).into_owned())
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the demo did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, pid: i32, signal: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), signal).unwrap();
    }

    fn ours_in_dev_shm(&self) -> Vec<String> {
        let prefix = format!("ads.demo{}-", self.child.id());
        std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(),
                rustix::process::Signal::INT,
            );
            let _ = self.wait_exit();
        }
    }
}

#[test]
fn the_demo_serves_the_pipeline_and_ctrl_c_stops_it_cleanly() {
    let mut demo = Demo::start();
    let vehicle = demo.pid_of("vehicle");
    demo.expect_line("ads demo running: open http://127.0.0.1:");
    // The viewer hears the vehicle, and the car drives on the detector's lanes.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let health = demo.get("/healthz").unwrap_or_default();
        if health.contains("\"live\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the viewer never heard the vehicle: {health}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // State may arrive before the first frame: wait for a picture.
    loop {
        let snapshot = demo.get("/snapshot.jpg").unwrap_or_default();
        if snapshot.starts_with("HTTP/1.1 200") || snapshot.starts_with("HTTP/1.0 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot from the viewer: {}",
            &snapshot[..snapshot.len().min(60)]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both rings' segments (each ring also has a lock file and a reader table).
    while demo.ours_in_dev_shm().iter().filter(|f| !f.contains('@')).count() < 2 {
        assert!(Instant::now() < deadline, "expected the two rings: {:?}", demo.ours_in_dev_shm());
        std::thread::sleep(Duration::from_millis(100));
    }
    demo.signal(demo.child.id() as i32, rustix::process::Signal::INT);
    demo.expect_line("nothing left in /dev/shm");
    assert_eq!(demo.wait_exit().code(), Some(130));
    assert!(demo.ours_in_dev_shm().is_empty());
    assert!(rustix::process::test_kill_process(rustix::process::Pid::from_raw(vehicle).unwrap()).is_err());
}

#[test]
fn a_child_that_dies_is_reported_and_everything_is_stopped_and_cleaned_up() {
    let mut demo = Demo::start();
    let detection = demo.pid_of("detection");
    demo.expect_line("ads demo running");
    let deadline = Instant::now() + DEADLINE;
    // The detections ring's segment (each ring also has a lock file and a reader table).
    while !demo.ours_in_dev_shm().iter().any(|f| f.ends_with("-detections")) {
        assert!(Instant::now() < deadline, "the detector never created its ring");
        std::thread::sleep(Duration::from_millis(100));
    }
    demo.signal(detection, rustix::process::Signal::KILL);
    let report = demo.expect_line("exited on its own");
    assert!(report.contains(&format!("detection (pid {detection})")), "{report}");
    // The killed detector could not remove its ring; the script does.
    demo.expect_line("removing what a killed process left in /dev/shm");
    assert_eq!(demo.wait_exit().code(), Some(1));
    assert!(demo.ours_in_dev_shm().is_empty(), "{:?}", demo.ours_in_dev_shm());
}
