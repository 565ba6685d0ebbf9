//! Faults in the whole pipeline, with real processes and real signals: ads-vehicle,
//! ads-detection and ads-viewer, each SIGKILLed (or SIGSTOPped) while the car drives on
//! detections, and what the others make of it. Every test ends with a clean stop (SIGTERM to
//! all) and checks that /dev/shm holds nothing of its own.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{decode, Detections, DriveMode, Message, VehicleState};
use ads_testkit::{bin, free_port, Kill, TestVehicle};
use rustix::process::Signal;
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Long enough for a loaded 2-core CI machine; it only keeps a broken test from hanging.
const DEADLINE: Duration = Duration::from_secs(90);
/// The vehicle's default `ring_slots`: how far behind the newest frame a reader taking the
/// latest one can be at most.
const RING_SLOTS: u64 = 6;
/// The simulator's default frame rate.
const FPS: u64 = 30;

fn wall_ns() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
        .unwrap()
}

/// ads-viewer watching the pipeline's vehicle, talked to with plain HTTP/1.0.
struct Viewer {
    port: u16,
    process: Kill,
}

impl Viewer {
    fn start(vehicle_port: u16, video_port: u16, action_port: u16, port: u16) -> Self {
        let process = Command::new(bin("ads-viewer"))
            .args(["--vehicle", &format!("tcp://127.0.0.1:{vehicle_port}")])
            .args(["--video", &format!("tcp://127.0.0.1:{video_port}")])
            .args(["--actions", &format!("tcp://127.0.0.1:{action_port}")])
            .args(["--port", &port.to_string(), "--sender", &format!("faults-viewer-{port}")])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut viewer = Viewer { port, process: Kill(process) };
        viewer.wait_for_link("live");
        viewer
    }

    /// `None` while nothing answers on the port yet (or any more).
    fn get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port).ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).ok()?;
        let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status = std::str::from_utf8(response.get(9..12)?).ok()?.parse().ok()?;
        Some((status, response[split + 4..].to_vec()))
    }

    /// `vehicle_link` from /healthz; `None` while the viewer does not answer.
    fn link(&self) -> Option<String> {
        let (status, body) = self.get("/healthz")?;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
        Some(health["vehicle_link"].as_str().unwrap().to_string())
    }

    fn wait_for_link(&mut self, status: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            // A viewer that could not start (its port taken, say) is reported as such, not as
            // another process answering on its port.
            if let Ok(Some(exit)) = self.process.0.try_wait() {
                panic!("ads-viewer on port {} exited: {exit}", self.port);
            }
            let link = self.link();
            if link.as_deref() == Some(status) {
                return;
            }
            assert!(Instant::now() < deadline, "the viewer's link never became {status:?}; last: {link:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One vehicle (steering from detections alone), its detector and possibly a viewer, on ring
/// names and ports of their own; states and detections heard over ZeroMQ like any client.
struct Pipeline {
    car: TestVehicle,
    viewer: Option<Viewer>,
    feed: zmq::Socket,
    context: zmq::Context,
}

impl Pipeline {
    fn start(test: &str) -> Self {
        let car = TestVehicle::build(test)
            .args(["--track", "oval", "--control", "detections"])
            .log("error")
            .detector()
            .spawn();
        let context = zmq::Context::new();
        let feed = Self::subscribe(&context, &car);
        Pipeline { car, viewer: None, feed, context }
    }

    /// A fresh subscription per vehicle process: nothing queued from a dead one can pass for
    /// news from the new one.
    fn subscribe(context: &zmq::Context, car: &TestVehicle) -> zmq::Socket {
        let feed = context.socket(zmq::SUB).unwrap();
        feed.set_subscribe(b"state").unwrap();
        feed.set_subscribe(b"detection").unwrap();
        feed.set_rcvtimeo(1000).unwrap();
        feed.connect(&car.endpoint()).unwrap();
        feed
    }

    /// The restart after a crash: same id, ports and rings, as systemd would do it.
    fn restart_vehicle(&mut self) {
        self.car.restart();
        self.feed = Self::subscribe(&self.context, &self.car);
    }

    fn start_viewer(&mut self, port: u16) {
        let car = &self.car;
        self.viewer = Some(Viewer::start(car.pub_port(), car.video_port(), car.action_port(), port));
    }

    fn viewer(&self) -> &Viewer {
        self.viewer.as_ref().unwrap()
    }

    fn viewer_mut(&mut self) -> &mut Viewer {
        self.viewer.as_mut().unwrap()
    }

    /// The next state or detection from the vehicle (`None`: a receive timed out).
    fn next(&mut self) -> Option<Message> {
        if let Some(status) = self.car.process.0.try_wait().unwrap() {
            panic!("the vehicle exited: {status}");
        }
        let parts = self.feed.recv_multipart(0).ok()?;
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Some(decode(&refs).unwrap().message)
    }

    /// The next state; `each` sees every detection on the way.
    fn state_with(&mut self, mut each: impl FnMut(&Detections)) -> VehicleState {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no state from the vehicle");
            match self.next() {
                Some(Message::State(s)) => return s,
                Some(Message::Detection(d)) => each(&d),
                _ => {}
            }
        }
    }

    fn state(&mut self) -> VehicleState {
        self.state_with(|_| {})
    }

    /// The first state that `accept` takes; `each` sees every state on the way.
    fn state_where(
        &mut self,
        what: &str,
        accept: impl Fn(&VehicleState) -> bool,
        mut each: impl FnMut(&VehicleState),
    ) -> VehicleState {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.state();
            each(&s);
            if accept(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "the vehicle never got {what}; last state: {s:?}");
        }
    }

    fn driving(&mut self) -> VehicleState {
        self.state_where(
            "to drive on detections",
            |s| s.mode == DriveMode::Driving && s.speed_mps > 2.0,
            |_| {},
        )
    }

    /// What has queued up is old news: the newest state after taking everything waiting
    /// (`each` sees the detections among it).
    fn drain(&mut self, mut each: impl FnMut(&Detections)) -> VehicleState {
        let mut newest = None;
        while let Ok(parts) = self.feed.recv_multipart(zmq::DONTWAIT) {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            match decode(&refs).unwrap().message {
                Message::State(s) => newest = Some(s),
                Message::Detection(d) => each(&d),
                _ => {}
            }
        }
        newest.unwrap_or_else(|| self.state_with(each))
    }

    /// Frames produced per second, from the frame ids in the states over `window`; and every
    /// state seen.
    fn pace(&mut self, window: Duration) -> (f64, Vec<VehicleState>) {
        let first = self.state();
        let started = Instant::now();
        let mut seen = vec![first.clone()];
        while started.elapsed() < window {
            seen.push(self.state());
        }
        let frames = seen.last().unwrap().frame_id - first.frame_id;
        (frames as f64 / started.elapsed().as_secs_f64(), seen)
    }

    /// SIGTERM to every process at once, each must exit cleanly, and none of our rings may be
    /// left in /dev/shm.
    fn stop_all(mut self) {
        let mut children: Vec<(&str, &mut Kill)> = [
            ("ads-viewer", self.viewer.as_mut().map(|v| &mut v.process)),
            ("ads-detection", self.car.detector.as_mut()),
            ("ads-vehicle", Some(&mut self.car.process)),
        ]
        .into_iter()
        .filter_map(|(name, child)| Some((name, child?)))
        .collect();
        for (_, child) in &children {
            child.signal(Signal::TERM);
        }
        for (name, child) in &mut children {
            let status = child.wait_exit(name);
            assert!(status.success(), "{name} after SIGTERM: {status}");
        }
        for ring in [self.car.frames_ring(), self.car.detections_ring()] {
            assert!(!ads_shmem_ipc::shm_path(&ring).exists(), "{ring} left behind in /dev/shm");
        }
        let prefix = format!("{}{}", ads_shmem_ipc::SHM_PREFIX, self.car.name());
        let ours: Vec<String> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert!(ours.is_empty(), "left in /dev/shm: {ours:?}");
    }
}

fn p50(samples: &mut [i64]) -> i64 {
    assert!(!samples.is_empty());
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// capture → detector's read, µs: the frames ring's hop as the detector saw it.
fn read_latency_us(d: &Detections) -> i64 {
    (i64::try_from(d.read_ns).unwrap() - i64::try_from(d.capture_ns).unwrap()) / 1000
}

#[test]
fn a_killed_detector_stops_the_car_safely_under_a_live_viewer_and_a_new_one_drives_it_again() {
    let mut p = Pipeline::start("kill-det");
    p.start_viewer(free_port());
    p.driving();

    let killed_at = p.state().frame_id;
    p.car.detector.take().unwrap().crash();
    // SIGKILL left the detections ring behind: the next detector has to take it over.
    assert!(ads_shmem_ipc::shm_path(&p.car.detections_ring()).exists());
    // The vehicle keeps publishing to the viewer all along, so its link never drops.
    let mut polled = Instant::now();
    let mut live_checks = 0u32;
    let mut check_live = |viewer: &Viewer| {
        if polled.elapsed() >= Duration::from_millis(200) {
            assert_eq!(viewer.link().as_deref(), Some("live"), "the viewer lost the vehicle");
            live_checks += 1;
            polled = Instant::now();
        }
    };
    let viewer = p.viewer.take().unwrap();
    let stopped = p.state_where(
        "to a standstill in fail-safe",
        |s| s.mode == DriveMode::Failsafe && s.speed_mps < 0.01,
        |_| check_live(&viewer),
    );
    let reason = stopped.health.stop_reason.clone().unwrap_or_default();
    eprintln!(
        "detector SIGKILLed at frame {killed_at}: standstill at frame {} ({:.1} s of frames later), \
         stop_reason: {reason}",
        stopped.frame_id,
        (stopped.frame_id - killed_at) as f64 / FPS as f64
    );
    assert!(stopped.frame_id > killed_at);
    assert!(!stopped.health.detections_fresh);
    assert!(reason.contains("detection"), "the stop reason does not say why: {reason:?}");
    // Stopped, but still publishing frames (one more second of them) and still stopped.
    let later = p.state_where(
        "one more second of frames",
        |s| s.frame_id >= stopped.frame_id + FPS,
        |s| {
            check_live(&viewer);
            assert_eq!(s.mode, DriveMode::Failsafe, "{s:?}");
        },
    );
    assert!(later.speed_mps < 0.01);

    // A new detector takes over the dead one's detections ring and the car drives on.
    p.car.start_detector();
    let again = p.state_where(
        "to drive again on the new detector's detections",
        |s| s.mode == DriveMode::Driving && s.speed_mps > 2.0,
        |_| check_live(&viewer),
    );
    eprintln!(
        "new detector: driving again at frame {} ({:.1} m/s); the viewer's /healthz said live {live_checks} \
         times in a row",
        again.frame_id, again.speed_mps
    );
    assert!(live_checks > 0);
    p.viewer = Some(viewer);
    p.stop_all();
}

#[test]
fn a_killed_viewer_costs_the_vehicle_nothing_and_a_new_one_on_its_port_picks_up() {
    let mut p = Pipeline::start("kill-viewer");
    let port = free_port();
    p.start_viewer(port);
    p.driving();
    let (before, _) = p.pace(Duration::from_secs(2));
    let fps_before = p.state().fps;

    p.viewer.take().unwrap().process.crash();
    let (after, seen) = p.pace(Duration::from_secs(3));
    let fps_after = seen.last().unwrap().fps;
    eprintln!(
        "frames produced per second with the viewer: {before:.1} (state.fps {fps_before:.1}); after its \
         SIGKILL: {after:.1} (state.fps {fps_after:.1})"
    );
    assert!(seen.last().unwrap().frame_id > seen[0].frame_id, "no frames after the viewer died");
    for s in &seen {
        assert_eq!(s.mode, DriveMode::Driving, "{s:?}");
    }

    // The same port again, as a supervisor would restart it.
    p.start_viewer(port);
    let viewer = p.viewer();
    let deadline = Instant::now() + DEADLINE;
    let snapshot = loop {
        match viewer.get("/snapshot.jpg") {
            Some((200, jpeg)) => break jpeg,
            other => assert!(Instant::now() < deadline, "no snapshot: {:?}", other.map(|(s, _)| s)),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(snapshot.starts_with(&[0xFF, 0xD8]) && snapshot.ends_with(&[0xFF, 0xD9]), "not a JPEG");
    eprintln!("new viewer on port {port}: link live, /snapshot.jpg {} bytes", snapshot.len());
    p.stop_all();
}

#[test]
fn a_killed_vehicle_restarted_on_its_rings_drives_again_and_the_viewer_shows_the_gap() {
    let mut p = Pipeline::start("kill-vehicle");
    p.start_viewer(free_port());
    let before = p.driving();

    let killed = Instant::now();
    p.car.process.crash();
    // SIGKILL left the frames ring behind; nobody removes it by hand.
    assert!(ads_shmem_ipc::shm_path(&p.car.frames_ring()).exists());
    p.viewer_mut().wait_for_link("lost");
    let lost_after = killed.elapsed();

    let restarted_ns = wall_ns();
    p.restart_vehicle();
    let restarted = Instant::now();
    // The new vehicle starts at rest, so driving means the surviving detector found its ring.
    let again = p.driving();
    let driving_after = restarted.elapsed();
    assert!(p.car.detector.as_mut().unwrap().0.try_wait().unwrap().is_none(), "the detector exited");
    p.viewer_mut().wait_for_link("live");
    eprintln!(
        "vehicle SIGKILLed at frame {}: viewer link lost after {:.1} s; restarted vehicle driving on \
         detections {:.1} s after its start (frame {}, {:.1} m/s), viewer live again",
        before.frame_id,
        lost_after.as_secs_f64(),
        driving_after.as_secs_f64(),
        again.frame_id,
        again.speed_mps
    );
    // Detections of frames the new vehicle captured, not leftovers in the detections ring.
    let deadline = Instant::now() + DEADLINE;
    while !matches!(p.next(), Some(Message::Detection(d)) if d.capture_ns > restarted_ns) {
        assert!(Instant::now() < deadline, "no detection of the new vehicle's frames");
    }
    p.stop_all();
}

#[test]
fn a_detector_stopped_for_five_seconds_resumes_on_the_newest_frame_not_a_backlog() {
    let mut p = Pipeline::start("stop-det");
    p.start_viewer(free_port());
    p.driving();

    let mut before = Vec::new();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(2) {
        p.state_with(|d| before.push(read_latency_us(d)));
    }
    let detector = p.car.detector.take().unwrap();
    let mut last_read = 0;
    let at_stop = p.drain(|d| last_read = d.frame_id);
    detector.signal(Signal::STOP);

    // The vehicle does not wait for its detector: frames go on for the whole 5 s.
    let (pace, seen) = p.pace(Duration::from_secs(5));
    let frames_while_stopped = seen.last().unwrap().frame_id - at_stop.frame_id;
    eprintln!(
        "detector SIGSTOPped at frame {} (its last result before: frame {last_read}); {frames_while_stopped} \
         frames in 5 s ({pace:.1}/s), mode now {:?}",
        at_stop.frame_id,
        seen.last().unwrap().mode
    );
    assert!(frames_while_stopped > 0);

    let now = p.drain(|_| {});
    // Stamped before the signal: on a loaded machine the detector may run (and stamp a read)
    // before this thread is scheduled again.
    let cont_ns = wall_ns();
    detector.signal(Signal::CONT);
    // A frame the detector had already read when it was stopped may still come out; what it
    // reads after SIGCONT must be the newest frame.
    let mut in_flight = Vec::new();
    let first = loop {
        match p.next() {
            Some(Message::Detection(d)) if d.read_ns >= cont_ns => break d,
            Some(Message::Detection(d)) => in_flight.push(d.frame_id),
            _ => {}
        }
        assert!(wall_ns() - cont_ns < DEADLINE.as_nanos() as u64, "no detection after SIGCONT");
    };
    eprintln!(
        "after SIGCONT: the vehicle was at frame {}, the detector's first read was frame {} ({} behind; \
         {} behind where it stopped); finished from before the stop: {in_flight:?}",
        now.frame_id,
        first.frame_id,
        now.frame_id as i64 - first.frame_id as i64,
        first.frame_id as i64 - last_read as i64
    );
    assert!(in_flight.len() <= 1, "results of old frames after SIGCONT: {in_flight:?}");
    assert!(
        first.frame_id + RING_SLOTS + 3 >= now.frame_id,
        "the detector resumed on frame {} while the vehicle was at {}: a backlog",
        first.frame_id,
        now.frame_id
    );

    p.state_where("to drive again", |s| s.mode == DriveMode::Driving && s.speed_mps > 2.0, |_| {});
    let mut after = vec![read_latency_us(&first)];
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(2) {
        p.state_with(|d| after.push(read_latency_us(d)));
    }
    eprintln!(
        "capture -> detector read, p50: {} µs before the stop ({} results), {} µs after SIGCONT ({} results)",
        p50(&mut before),
        before.len(),
        p50(&mut after),
        after.len()
    );
    p.car.detector = Some(detector);
    p.stop_all();
}
