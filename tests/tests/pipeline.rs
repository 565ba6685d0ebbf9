//! The vehicle and the detector as real processes: the car drives on detections alone, and
//! a killed detector stops it safely until a new one takes over. On the oval the car moves
//! only through the real output path (docs/actuators.md): `--actuator serial` on a
//! pseudo-terminal whose fake board turns the pulses it puts out back into the simulated car's
//! steering and throttle (`--sim-actuation outputs`); the s-bends drive the simulator directly.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod board;

use ads_protocol::{Action, ActionRun, Command, DriveMode, Message, VehicleState};
use ads_testkit::{StateSubscriber, TestVehicle};
use board::FakeBoard;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Long enough for a slow CI machine; it measures nothing.
const DEADLINE: Duration = Duration::from_secs(180);
/// The simulator produces this many frames per second of simulated time.
const FPS: u64 = 30;
const HALF_LANE_M: f64 = 1.75;

struct Pipeline {
    car: TestVehicle,
    states: StateSubscriber,
    /// The serial board the car's outputs go to, and the directory of its files.
    board: Option<(FakeBoard, PathBuf)>,
}

impl Pipeline {
    fn start(test: &str, track: &str) -> Self {
        let car =
            TestVehicle::build(test).args(["--track", track, "--control", "detections"]).detector().spawn();
        let states = StateSubscriber::connect(&car);
        Pipeline { car, states, board: None }
    }

    /// The car's steering and throttle go out as pulses to a fake board on a pty, and come back
    /// to the simulator only from what the board puts out. Hardware outputs make a real car: it
    /// starts held, and an operator's `resume` (here without the dead-man) lets it drive.
    fn start_through_board(test: &str, track: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ads-pipeline-board-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("sim-outputs.sock");
        let board = FakeBoard::start(Some(socket.clone()), 1500);
        let config = dir.join("vehicle.toml");
        // The whole throttle range (the simulated car must reach its cruise speed), and an ESC
        // that brakes below neutral, so a fail-safe stop stops it.
        let text = format!(
            "[sim]\nactuation = \"outputs\"\noutputs_socket = {:?}\n\
             [actuator]\nmax_throttle = 1.0\n[actuator.calibration]\nbrake_us = 1300\n",
            socket.display().to_string()
        );
        std::fs::write(&config, text).unwrap();
        let car = TestVehicle::build(test)
            .args(["--track", track, "--control", "detections", "--config", config.to_str().unwrap()])
            .args(["--actuator", "serial", "--actuator-device", board.path.as_str()])
            .args(["--require-operator", "false"])
            .detector()
            .spawn();
        let states = StateSubscriber::connect(&car);
        let mut p = Pipeline { car, states, board: Some((board, dir)) };
        p.resume();
        p
    }

    /// `resume` from a loopback client (no key needed there) until the car leaves its hold.
    fn resume(&mut self) {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PUB).unwrap();
        socket.set_linger(0).unwrap();
        socket.connect(&self.car.action_endpoint()).unwrap();
        let deadline = Instant::now() + DEADLINE;
        for seq in 1.. {
            let s = self.state();
            if s.mode != DriveMode::Stopped {
                return;
            }
            assert!(Instant::now() < deadline, "the car never left its hold: {:?}", s.health.stop_reason);
            if s.actuator.board.is_none() || seq % 10 != 1 {
                continue;
            }
            let run = ActionRun {
                run_id: s.commands.run_id.clone(),
                expires_run_ns: s.commands.run_ns + 5_000_000_000,
            };
            let action = Action {
                id: format!("resume-{seq}"),
                sender: "pipeline".into(),
                command: Command::Resume,
                run,
            };
            let wire = ads_protocol::encode(self.car.vehicle_id(), seq, 0, 0, &Message::Action(action));
            socket.send_multipart([&b"action"[..], &wire], 0).unwrap();
        }
    }

    fn state(&mut self) -> VehicleState {
        self.states.next(&mut self.car)
    }

    fn state_where(&mut self, accept: impl Fn(&VehicleState) -> bool) -> VehicleState {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.state();
            if accept(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "the vehicle never reached the expected state; last: {s:?}");
        }
    }
}

/// Drives `seconds` of simulated time on detections alone; returns (worst |offset|, distance,
/// capture→detection-read latencies in µs).
fn drive(p: &mut Pipeline, seconds: u64) -> (f64, f64, Vec<u32>) {
    let first = p.state_where(|s| s.mode == DriveMode::Driving && s.speed_mps > 2.0);
    let (mut worst, mut last, mut latencies) = (0.0f64, first.clone(), Vec::new());
    while last.frame_id < first.frame_id + seconds * FPS {
        last = p.state();
        if let Some(offset) = last.truth_lateral_offset_m {
            worst = worst.max(offset.abs());
        }
        latencies.push(last.timings.detection_latency_us);
    }
    (worst, last.distance_m - first.distance_m, latencies)
}

fn percentile(samples: &mut [u32], q: f64) -> u32 {
    samples.sort_unstable();
    samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1]
}

fn closed_loop(track: &str, through_board: bool) {
    let mut p = if through_board {
        Pipeline::start_through_board(&format!("loop-{track}"), track)
    } else {
        Pipeline::start(&format!("loop-{track}"), track)
    };
    let (worst, distance, mut latency) = drive(&mut p, 60);
    let path = if through_board { ", through the serial board's pulses" } else { "" };
    println!(
        "{track}: 60 s on detections alone{path}: {distance:.0} m, worst |offset from lane centre| {worst:.2} m"
    );
    if let Some((board, _)) = &p.board {
        // The car moved by the pulses: drive lines, steering both ways around the curves.
        let drives: Vec<(u16, u16)> = board
            .lines_after(Instant::now() - Duration::from_secs(3600))
            .iter()
            .filter(|(_, l)| l.verb == 'D')
            .map(|(_, l)| l.pulses())
            .collect();
        let (lo, hi) = drives.iter().fold((u16::MAX, 0), |(lo, hi), (s, _)| (lo.min(*s), hi.max(*s)));
        println!("{track}: {} drive lines to the board, steering {lo}..={hi} µs", drives.len());
        assert!(hi > lo + 30, "the curves need steering: {lo}..={hi} µs");
        assert!(drives.iter().any(|(_, t)| *t > 1500), "no forward throttle pulse");
    }
    println!(
        "{track}: capture -> detection read by the control loop, through both rings: p50 {} µs, p99 {} µs",
        percentile(&mut latency, 0.5),
        percentile(&mut latency, 0.99)
    );
    assert!(worst < HALF_LANE_M, "left the lane: {worst:.2} m off centre");
    assert!(distance > 300.0, "only {distance:.0} m in 60 s at a target of 8 m/s");

    // The detector dies (SIGKILL: no chance to clean up): a controlled stop, and the state
    // says why.
    p.car.detector.take().unwrap().crash();
    let stopped = p.state_where(|s| s.mode == DriveMode::Failsafe && s.speed_mps == 0.0);
    let reason = stopped.health.stop_reason.clone().unwrap();
    println!("{track}: after SIGKILL of the detector: {reason}");
    assert!(!stopped.health.detections_fresh);

    // A new detector takes over the (stale) detections ring and the car drives on.
    p.car.start_detector();
    p.state_where(|s| s.mode == DriveMode::Driving && s.speed_mps > 2.0);
    let (worst, _, _) = drive(&mut p, 5);
    assert!(worst < HALF_LANE_M);

    // SIGTERM: the detector exits cleanly and takes its ring with it.
    let mut detector = p.car.detector.take().unwrap();
    detector.signal(rustix::process::Signal::TERM);
    let status = detector.wait_exit("the detector after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        !ads_shmem_ipc::shm_path(&p.car.detections_ring()).exists(),
        "the detections ring was left behind"
    );
}

#[test]
fn drives_the_oval_on_detections_through_a_serial_board_and_survives_the_detector_dying() {
    closed_loop("oval", true);
}

#[test]
fn drives_the_s_bends_on_detections_and_survives_the_detector_dying() {
    closed_loop("s-bends", false);
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some((_, dir)) = &self.board {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
