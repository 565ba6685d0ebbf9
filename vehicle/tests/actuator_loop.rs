//! The simulated car driven through the real output path (docs/actuators.md, "The simulator
//! through the outputs"): `ads-vehicle --source sim --actuator serial` writes the line protocol
//! to a pseudo-terminal; a fake board on its master side speaks the protocol (answers, its own
//! 100 ms timeout) and, as the car's servo and ESC would, turns the pulses it puts out back
//! into steering and throttle for the simulator (`--sim-actuation outputs`). The loop's
//! controls reach the simulated car only through those pulses.
//!
//! Hardware outputs make a real car: it starts held and needs an operator, so the tests send
//! heartbeats and `resume` as a viewer would. Times are never asserted as maxima: what is
//! asserted is what the board saw, in order; deadlines only keep a broken test from hanging.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{decode, encode, Action, ActionRun, Command, DriveMode, Event, Message, VehicleState};
use ads_shmem_ipc::clock;
use ads_testkit::{TestVehicle, DEADLINE};
use ads_vehicle::actuator::serial::{BoardState, CommandLine, StatusLine, Verb, BOARD_TIMEOUT_MS};
use ads_vehicle::actuator::Pulses;
use rustix::process::Signal;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MS: u64 = 1_000_000;
/// This car's servo is straight at 1480 µs, full left at 1980 and full right at 980
/// (`[actuator.calibration]`): not the firmware's default 1500, so a board at this neutral
/// was told it by the vehicle (the `C` line).
const CENTRE_US: u16 = 1480;
const NEUTRAL: Pulses = Pulses { steering_us: CENTRE_US, throttle_us: 1500 };
/// The brake pulse of this car (`[actuator.calibration] brake_us`): an ESC in forward/brake
/// mode, so the fake ESC below brakes on it.
const BRAKE_US: u16 = 1300;

/// A pseudo-terminal: the master for the fake board, the slave's path for the vehicle.
fn pty() -> (std::fs::File, String) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap().into_string().unwrap();
    let flags = rustix::fs::fcntl_getfl(&master).unwrap();
    rustix::fs::fcntl_setfl(&master, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    (std::fs::File::from(master), name)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Line(CommandLine),
    Bad,
    /// The board's own timeout fired: it went to its neutral by itself.
    Timeout,
}

/// What the board saw, on the test's monotonic clock.
type Log = Arc<Mutex<Vec<(u64, Seen)>>>;

/// The board at the far end of the serial line, as `firmware/ads_actuator` behaves, plus the
/// car it drives: the pulses it puts out go to the simulator as steering and throttle, the way
/// a servo and an ESC turn them into wheel angle and drive. Its mapping is this test's own
/// (steering [`CENTRE_US`] ± 500 µs, throttle 1500 ± 500 µs, left and forward above), not the
/// vehicle's code.
struct FakeBoard {
    log: Log,
    /// What it puts out now.
    output: Arc<Mutex<Pulses>>,
    /// The ESC's signal wire: cut, the car gets no throttle whatever the pulses say.
    esc_connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The car's servo and ESC: pulses → (steering of full lock, + = left; throttle of full, - =
/// braking), as the simulator takes them.
fn car_report(pulses: Pulses, esc_connected: bool) -> String {
    let norm = |us: u16, centre: u16| ((f64::from(us) - f64::from(centre)) / 500.0).clamp(-1.0, 1.0);
    let throttle = if esc_connected { norm(pulses.throttle_us, 1500) } else { 0.0 };
    format!("{:.4} {:.4}", norm(pulses.steering_us, CENTRE_US), throttle)
}

impl FakeBoard {
    fn start(mut master: std::fs::File, car: PathBuf) -> Self {
        let log: Log = Arc::default();
        let output = Arc::new(Mutex::new(Pulses { steering_us: 1500, throttle_us: 1500 }));
        let esc_connected = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, o, esc, st) =
            (Arc::clone(&log), Arc::clone(&output), Arc::clone(&esc_connected), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let wire = UnixDatagram::unbound().unwrap();
            // Until the vehicle has bound its socket, reports are lost, as to a car switched off.
            let report = |pulses: Pulses| {
                let _ = wire.send_to(car_report(pulses, esc.load(Ordering::Relaxed)).as_bytes(), &car);
            };
            // The firmware's neutral until the host sends its own (`C`).
            let mut neutral = Pulses { steering_us: 1500, throttle_us: 1500 };
            let mut last_valid: Option<u64> = None;
            let mut acked = 0;
            let mut state = BoardState::Neutral;
            let mut partial = Vec::new();
            let mut buf = [0u8; 256];
            while !st.load(Ordering::Relaxed) {
                let now = clock::monotonic_ns();
                if state != BoardState::Timeout && last_valid.is_some_and(|t| now - t > BOARD_TIMEOUT_MS * MS)
                {
                    state = BoardState::Timeout;
                    *o.lock().unwrap() = neutral;
                    l.lock().unwrap().push((now, Seen::Timeout));
                    report(neutral);
                    let _ = master.write_all(StatusLine { seq: acked, state }.encode().as_bytes());
                }
                match master.read(&mut buf) {
                    Ok(n) if n > 0 => partial.extend_from_slice(&buf[..n]),
                    _ => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                }
                while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=end).collect();
                    let now = clock::monotonic_ns();
                    match CommandLine::parse(&String::from_utf8_lossy(&line)) {
                        Ok(c) => {
                            acked = c.seq;
                            match c.verb {
                                Verb::Config => neutral = c.pulses,
                                Verb::Drive | Verb::Neutral => {
                                    last_valid = Some(now);
                                    *o.lock().unwrap() = c.pulses;
                                    state = if c.verb == Verb::Drive {
                                        BoardState::Drive
                                    } else {
                                        BoardState::Neutral
                                    };
                                }
                            }
                            l.lock().unwrap().push((now, Seen::Line(c)));
                            let _ = master.write_all(StatusLine { seq: acked, state }.encode().as_bytes());
                        }
                        Err(_) => {
                            l.lock().unwrap().push((now, Seen::Bad));
                            let answer = StatusLine { seq: acked, state: BoardState::Error };
                            let _ = master.write_all(answer.encode().as_bytes());
                        }
                    }
                    report(*o.lock().unwrap());
                }
            }
        });
        Self { log, output, esc_connected, stop, thread: Some(thread) }
    }

    fn seen(&self) -> Vec<(u64, Seen)> {
        self.log.lock().unwrap().clone()
    }

    /// The command lines seen after the monotonic instant `after`.
    fn lines_after(&self, after: u64) -> Vec<(u64, CommandLine)> {
        self.seen()
            .into_iter()
            .filter_map(|(t, s)| match s {
                Seen::Line(c) if t > after => Some((t, c)),
                _ => None,
            })
            .collect()
    }

    fn output(&self) -> Pulses {
        *self.output.lock().unwrap()
    }

    /// Polls until `done` holds for what the board saw; a bound only against hanging.
    fn wait_for(&self, what: &str, done: impl Fn(&[(u64, Seen)]) -> bool) -> Vec<(u64, Seen)> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(Instant::now() < deadline, "the board never saw {what}: {:?}", seen.last());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FakeBoard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The vehicle on the pty, its state and events, its actions, and an operator's heartbeats.
struct Rig {
    board: FakeBoard,
    car: TestVehicle,
    actions: zmq::Socket,
    incoming: Receiver<Message>,
    /// The vehicle's run id and run clock as last seen in its state, and when.
    run: (String, u64, Instant),
    seq: u64,
    beating: Arc<AtomicBool>,
    beater: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
    _context: zmq::Context,
}

impl Rig {
    fn start(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ads-actuator-loop-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("sim-outputs.sock");
        let (master, device) = pty();
        let board = FakeBoard::start(master, socket.clone());
        let config = dir.join("vehicle.toml");
        std::fs::write(
            &config,
            format!(
                "[sim]\nactuation = \"outputs\"\noutputs_socket = {:?}\n\
                 [actuator.calibration]\nbrake_us = {BRAKE_US}\nsteering_centre_us = {CENTRE_US}\n\
                 steering_left_us = {}\nsteering_right_us = {}\n",
                socket.display().to_string(),
                CENTRE_US + 500,
                CENTRE_US - 500,
            ),
        )
        .unwrap();
        let args = [
            "--config",
            config.to_str().unwrap(),
            "--source",
            "sim",
            "--control",
            "truth",
            "--actuator",
            "serial",
            "--actuator-device",
            device.as_str(),
            // Pixels nobody looks at: cheap on a loaded machine.
            "--resolution",
            "160x120",
        ];
        let car = TestVehicle::build(test)
            .binary(env!("CARGO_BIN_EXE_ads-vehicle"))
            .vehicle_id("test-car")
            .args(args)
            .spawn();
        let context = zmq::Context::new();
        let sub = context.socket(zmq::SUB).unwrap();
        sub.set_subscribe(b"state").unwrap();
        sub.set_subscribe(b"event").unwrap();
        sub.connect(&car.endpoint()).unwrap();
        let actions = context.socket(zmq::PUB).unwrap();
        actions.set_linger(0).unwrap();
        actions.connect(&car.action_endpoint()).unwrap();
        let (tx, incoming) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            let Ok(parts) = sub.recv_multipart(0) else { return };
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let wire = decode(&refs).expect("the vehicle only sends valid messages");
            if tx.send(wire.message).is_err() {
                return;
            }
        });
        let mut rig = Self {
            board,
            car,
            actions,
            incoming,
            run: (String::new(), 0, Instant::now()),
            seq: 0,
            beating: Arc::new(AtomicBool::new(true)),
            beater: None,
            dir,
            _context: context,
        };
        rig.state_where("a first state", |_| true);
        rig
    }

    fn next_where<T>(&mut self, what: &str, mut pick: impl FnMut(&Message) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.car.process.0.try_wait() {
                panic!("ads-vehicle exited: {status}");
            }
            let slice = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(500));
            match self.incoming.recv_timeout(slice) {
                Ok(m) => {
                    if let Message::State(s) = &m {
                        self.run = (s.commands.run_id.clone(), s.commands.run_ns, Instant::now());
                    }
                    if let Some(t) = pick(&m) {
                        return t;
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(RecvTimeoutError::Timeout) => panic!("no {what} within {DEADLINE:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("subscriber thread ended"),
            }
        }
    }

    fn state_where(&mut self, what: &str, accept: impl Fn(&VehicleState) -> bool) -> VehicleState {
        self.next_where(what, |m| match m {
            Message::State(s) if accept(s) => Some(s.clone()),
            _ => None,
        })
    }

    fn stamp(run: &(String, u64, Instant)) -> ActionRun {
        let now_run = run.1 + run.2.elapsed().as_nanos() as u64;
        ActionRun { run_id: run.0.clone(), expires_run_ns: now_run + 5_000_000_000 }
    }

    /// Sends `command` until it is acknowledged; whether it was accepted, and the detail.
    fn act(&mut self, command: Command) -> (bool, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.seq += 1;
            let id = format!("act-{}", self.seq);
            let action = Action {
                id: id.clone(),
                sender: "rust-test".into(),
                command: command.clone(),
                run: Self::stamp(&self.run),
            };
            let envelope =
                encode("test-car", self.seq, clock::wall_ns(), clock::wall_ns(), &Message::Action(action));
            self.actions.send_multipart([&b"action"[..], &envelope], 0).unwrap();
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                if let Ok(Message::Event(Event::Ack { action_id, accepted, detail, .. })) =
                    self.incoming.recv_timeout(Duration::from_millis(50))
                {
                    if action_id == id {
                        return (accepted, detail);
                    }
                }
            }
            assert!(Instant::now() < deadline, "no acknowledgement for {command:?}");
        }
    }

    /// An operator's heartbeats from now on, as a viewer sends them, then `resume`: the car
    /// drives through the outputs.
    fn operator_resumes(&mut self) {
        let (endpoint, flag) = (self.car.action_endpoint(), Arc::clone(&self.beating));
        let run = self.run.clone();
        self.beater = Some(std::thread::spawn(move || {
            let context = zmq::Context::new();
            let socket = context.socket(zmq::PUB).unwrap();
            // Nothing waits for a vehicle that was killed when the context ends.
            socket.set_linger(0).unwrap();
            socket.connect(&endpoint).unwrap();
            let mut seq = 1_000_000;
            while flag.load(Ordering::Relaxed) {
                seq += 1;
                let beat = Action {
                    id: format!("hb-{seq}"),
                    sender: "beater".into(),
                    command: Command::Heartbeat,
                    run: Self::stamp(&run),
                };
                let envelope = encode("test-car", seq, 0, 0, &Message::Action(beat));
                let _ = socket.send_multipart([&b"action"[..], &envelope], 0);
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
        self.state_where("an operator heard", |s| {
            s.commands.operator_heartbeat_age_ms.is_some_and(|a| a < 500)
        });
        self.resume();
    }

    /// `resume` until it is accepted (a hold after a stall may need a fresh heartbeat first).
    fn resume(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (accepted, detail) = self.act(Command::Resume);
            if accepted {
                return;
            }
            assert!(Instant::now() < deadline, "resume refused: {detail}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.beating.store(false, Ordering::Relaxed);
        if let Some(b) = self.beater.take() {
            let _ = b.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_drive(c: &CommandLine) -> bool {
    c.verb == Verb::Drive
}

#[test]
fn the_car_drives_the_oval_through_the_pulses_and_an_estop_is_the_brake_pulse() {
    let mut rig = Rig::start("oval");
    // Held at start (a real car): the outputs are stopped and the board answers.
    let held = rig.state_where("held, the board answering", |s| {
        s.actuator.board.is_some() && s.actuator.state == "stopped"
    });
    assert_eq!(held.mode, DriveMode::Stopped, "{held:?}");
    let a = &held.actuator;
    assert_eq!((a.backend.as_str(), a.speed_source.as_str(), a.fault.as_deref()), ("serial", "sim", None));
    assert_eq!((a.steering_us, a.throttle_us), (Some(CENTRE_US), Some(BRAKE_US)), "held: the brake pulse");
    assert_eq!(held.speed_mps, 0.0);

    rig.operator_resumes();
    // It drives the oval, through the pulses only, and keeps its lane.
    let mut worst: f64 = 0.0;
    let start = rig.state_where("driving", |s| s.mode == DriveMode::Driving);
    let last = loop {
        let s = rig.state_where("state", |_| true);
        assert_eq!(s.mode, DriveMode::Driving, "{:?}", s.health.stop_reason);
        worst = worst.max(s.truth_lateral_offset_m.unwrap().abs());
        if s.distance_m >= start.distance_m + 120.0 {
            break s;
        }
    };
    eprintln!("through the pulses: {:.0} m, worst |offset| {worst:.3} m", last.distance_m - start.distance_m);
    assert!(worst < 0.5, "left the lane centre by {worst:.2} m");
    let a = &last.actuator;
    assert_eq!((a.state.as_str(), a.board.as_deref(), a.fault.as_deref()), ("driving", Some("drive"), None));
    assert!(a.throttle_us.is_some_and(|t| t > 1500), "{a:?}");
    let drives: Vec<CommandLine> =
        rig.board.lines_after(0).into_iter().map(|(_, c)| c).filter(is_drive).collect();
    let (lo, hi) = drives
        .iter()
        .fold((u16::MAX, 0), |(lo, hi), c| (lo.min(c.pulses.steering_us), hi.max(c.pulses.steering_us)));
    assert!(hi - lo > 30, "the oval's curves need steering: {lo}..={hi} µs");
    assert!(!rig.board.seen().iter().any(|(_, s)| *s == Seen::Bad));

    // Cut the ESC's wire: the loop still commands throttle, but the car only gets what the
    // board puts out, so it slows down. (Were the loop's controls applied directly, it would
    // not.)
    let cruising = last.speed_mps;
    rig.board.esc_connected.store(false, Ordering::Relaxed);
    rig.state_where("the car slowing with the ESC cut", |s| {
        s.mode == DriveMode::Driving && s.throttle > 0.0 && s.speed_mps < 0.8 * cruising
    });
    rig.board.esc_connected.store(true, Ordering::Relaxed);
    let moving = rig.state_where("the car moving again", |s| s.speed_mps > 0.9 * cruising);

    // E-stop: the next line after the drive lines is the brake pulse, and no drive line after.
    let before = clock::monotonic_ns();
    let (accepted, detail) = rig.act(Command::EmergencyStop);
    assert!(accepted, "{detail}");
    let stopped = rig
        .state_where("stopped by the e-stop", |s| s.mode == DriveMode::EmergencyStop && s.speed_mps == 0.0);
    assert!(moving.speed_mps > 0.0);
    assert_eq!(stopped.actuator.state, "stopped");
    // (Neutral lines of the output thread's own timeout may come between, on a machine so
    // loaded that the loop missed 100 ms; they are not the e-stop's.)
    let lines = rig.board.lines_after(before);
    let brake = Pulses { steering_us: CENTRE_US, throttle_us: BRAKE_US };
    let first_stop =
        lines.iter().position(|(_, c)| !is_drive(c) && c.pulses != NEUTRAL).expect("a stop line");
    assert_eq!((lines[first_stop].1.verb, lines[first_stop].1.pulses), (Verb::Neutral, brake), "{lines:?}");
    assert!(
        lines[first_stop..].iter().all(|(_, c)| c.verb == Verb::Neutral && c.pulses == brake),
        "after the e-stop only the brake: {:?}",
        &lines[first_stop..]
    );

    // A clean exit writes neutral last.
    let exiting = clock::monotonic_ns();
    rig.car.process.terminate();
    let last = *rig.board.lines_after(exiting).last().expect("a line at exit");
    assert_eq!((last.1.verb, last.1.pulses), (Verb::Neutral, NEUTRAL));
}

#[test]
fn a_frozen_or_killed_vehicle_leaves_the_board_at_neutral_by_its_own_timeout() {
    let mut rig = Rig::start("frozen");
    rig.state_where("the board answering", |s| s.actuator.board.is_some());
    rig.operator_resumes();
    rig.state_where("moving", |s| s.mode == DriveMode::Driving && s.speed_mps > 1.0);
    let driving = |b: &FakeBoard| b.output().throttle_us > 1500;
    rig.board.wait_for("drive pulses", |_| driving(&rig.board));

    // SIGSTOP: every thread of the vehicle freezes at once, the output thread too. No valid
    // command reaches the board, which goes to its neutral by its own timeout.
    let frozen_at = clock::monotonic_ns();
    rig.car.process.signal(Signal::STOP);
    let seen =
        rig.board.wait_for("its timeout", |s| s.iter().any(|(t, s)| *t > frozen_at && *s == Seen::Timeout));
    let (timeout_at, _) = *seen.iter().rfind(|(_, s)| *s == Seen::Timeout).unwrap();
    assert_eq!(rig.board.output(), NEUTRAL);
    // The board's timeout is counted from the last valid line, which came from the frozen
    // vehicle at the latest as it froze.
    let last_line = seen.iter().filter(|(_, s)| matches!(s, Seen::Line(_))).map(|(t, _)| *t).max().unwrap();
    assert!(timeout_at >= last_line + BOARD_TIMEOUT_MS * MS);
    // Frozen, it sends nothing more: a while later still no line after the timeout.
    std::thread::sleep(Duration::from_millis(300));
    assert!(rig.board.lines_after(timeout_at).is_empty(), "{:?}", rig.board.lines_after(timeout_at));
    assert_eq!(rig.board.output(), NEUTRAL);

    // Thawed, it drives again (after a resume if the pause outlasted the operator timeout).
    let thawed = clock::monotonic_ns();
    rig.car.process.signal(Signal::CONT);
    let s = rig.state_where("a state after the thaw", |s| {
        matches!(s.mode, DriveMode::Driving | DriveMode::Stopped) && s.commands.run_ns > 0
    });
    if s.mode == DriveMode::Stopped {
        rig.resume();
    }
    rig.board.wait_for("drive lines after the thaw", |_| {
        rig.board.lines_after(thawed).iter().any(|(_, c)| is_drive(c)) && driving(&rig.board)
    });

    // SIGKILL: no code of the vehicle runs again; the board's timeout stops the car.
    let killed_at = clock::monotonic_ns();
    rig.car.process.crash();
    let seen = rig.board.wait_for("its timeout after the kill", |s| {
        s.iter().any(|(t, s)| *t > killed_at && *s == Seen::Timeout)
    });
    assert_eq!(rig.board.output(), NEUTRAL);
    let last =
        seen.iter().rev().find_map(|(_, s)| if let Seen::Line(c) = s { Some(*c) } else { None }).unwrap();
    assert_eq!(last.verb, Verb::Drive, "killed while driving: no neutral line could be sent");
    // SIGKILL left the frames ring behind (a restart would take it over): remove it.
    let ring = rig.car.frames_ring();
    for path in
        [ads_shmem_ipc::shm_path(&ring), ads_shmem_ipc::lock_path(&ring), ads_shmem_ipc::readers_path(&ring)]
    {
        let _ = std::fs::remove_file(path);
    }
}
