//! The Python SDK (python/, module `ads`) against the real thing: the wheel built from the
//! tree and installed into the venv of scripts/python-env.sh, Python processes reading a real
//! frame ring, and a Python detector driving the simulator with `ads-vehicle` as a process.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod common;

use common::ads_ring;

use ads_protocol::{DriveMode, VehicleState};
use ads_testkit::{unique_name, Kill, StateSubscriber, TestVehicle, DEADLINE};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

const HALF_LANE_M: f64 = 1.75;
/// The simulator produces this many frames per second of simulated time.
const FPS: u64 = 30;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python with the SDK installed from this tree (python-env.sh is idempotent and
/// rebuilds the wheel only when its sources changed).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/python-env.sh"))
            .current_dir(root())
            .output()
            .unwrap();
        assert!(out.status.success(), "python-env.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
    })
}

fn sdk_file(path: &str) -> PathBuf {
    root().join("python").join(path)
}

/// JSON lines from a Python child's stdout.
fn next_json(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Value {
    for line in lines.by_ref() {
        let line = line.unwrap();
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => return v,
            Err(_) => eprintln!("[python] {line}"),
        }
    }
    panic!("the Python process ended without its report");
}

fn spawn_python(args: &[&str]) -> (Kill, std::io::Lines<BufReader<ChildStdout>>) {
    let mut child: Child =
        Command::new(python()).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (Kill(child), lines)
}

#[test]
fn a_python_reader_checks_10000_frames_and_accepts_no_torn_one() {
    let name = unique_name("py-pattern");
    // As fast as the writer can: the reader is lapped now and then, and must catch each time.
    let mut writer = ads_ring(
        "writer",
        &["write", "--name", &name, "--width", "320", "--height", "240"]
            .into_iter()
            .chain(["--fps", "0", "--slots", "4"])
            .collect::<Vec<_>>(),
    );
    writer.expect("created");
    let script = sdk_file("tests/read_pattern.py");
    let (mut reader, mut lines) = spawn_python(&[
        script.to_str().unwrap(),
        "--ring",
        &name,
        "--frames",
        "10000",
        "--width",
        "320",
        "--height",
        "240",
    ]);
    let done = next_json(&mut lines);
    println!("python reader: {done}");
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["accepted"], 10_000, "{done}");
    assert_eq!(done["torn_accepted"], 0, "torn frames were accepted as valid: {done}");
    assert!(done["copies"].as_u64().unwrap() >= 1000, "{done}");

    writer.signal(rustix::process::Signal::TERM);
    let gone = next_json(&mut lines);
    assert_eq!(gone["event"], "writer_gone", "{gone}");
    let message = gone["message"].as_str().unwrap();
    assert!(message.contains(&name) && message.contains("Closed"), "{message}");
    assert!(reader.wait_exit("the python reader").success());
}

/// A writer as fast as it can go, on a 320x240 pattern ring of `slots` slots.
fn fast_pattern_writer(name: &str, slots: &str) -> common::Proc {
    let mut writer = ads_ring(
        "writer",
        &["write", "--name", name, "--width", "320", "--height", "240", "--fps", "0", "--slots", slots],
    );
    writer.expect("created");
    writer
}

/// `px = reader.read().pixels`: the temporary Frame is gone at once, and the array must keep
/// its frame anyway, whole and unchanged, while the writer laps the ring (before: 320 of 1000
/// looks torn, 966 showing another frame than the first look).
#[test]
fn a_numpy_array_keeps_its_frame_pinned_for_as_long_as_it_lives() {
    let name = unique_name("py-pin");
    // Slots = the reader's 2 pins + 2: the writer never has to drop a frame.
    let mut writer = fast_pattern_writer(&name, "4");
    let script = sdk_file("tests/array_pin.py");
    let (mut reader, mut lines) =
        spawn_python(&[script.to_str().unwrap(), "--ring", &name, "--rounds", "200"]);
    let holding = next_json(&mut lines);
    assert_eq!(holding["event"], "holding", "{holding}");
    // The writer closes while a frame is held, not yet looked at.
    writer.signal(rustix::process::Signal::TERM);
    assert!(writer.wait_exit().success());
    let done = next_json(&mut lines);
    println!("python arrays: {done}");
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["looks"], 1000, "{done}");
    assert_eq!(done["torn"], 0, "an array showed a torn frame: {done}");
    assert_eq!(done["changed"], 0, "an array showed another frame than at first: {done}");
    assert_eq!(done["kept_after_with"], true, "an array taken in a with block changed after it: {done}");
    assert_eq!(done["view_per_access"], true, "reshaping one array reshaped the next: {done}");
    let too_many = done["too_many"].as_str().unwrap_or_else(|| panic!("no error past max_pins: {done}"));
    assert!(too_many.contains("already holds 2 frames pinned"), "{too_many}");
    assert_eq!(done["held_intact"], true, "{done}");
    assert_eq!(done["writer_gone_seen"], true, "{done}");
    assert_eq!(done["after_close"], true, "a held frame was not viewable after the writer closed: {done}");
    assert_eq!(done["pinned_at_end"], 0, "{done}");
    assert!(reader.wait_exit("the python reader").success());
}

/// A reader inherited by a fork (`os.fork`, a `multiprocessing` worker started with fork) is
/// closed in the child with a clear error, and the child's exit leaves the parent's pinned
/// frame alone; one pickled for another process (spawn) is refused with a clear error.
#[test]
fn a_forked_python_reader_is_closed_in_the_child_and_the_parent_keeps_its_frame() {
    let name = unique_name("py-fork");
    let mut writer = fast_pattern_writer(&name, "4");
    let script = sdk_file("tests/fork_reader.py");
    let (mut reader, mut lines) = spawn_python(&[script.to_str().unwrap(), "--ring", &name]);
    let done = next_json(&mut lines);
    println!("python fork: {done}");
    for child in ["os_fork", "multiprocessing"] {
        let c = &done[child];
        assert_eq!(c["closed"], true, "{child}: the inherited reader is not closed: {done}");
        assert_eq!(c["read"], "ForkedReader", "{child}: {done}");
        let message = c["message"].as_str().unwrap();
        assert!(
            message.contains("a fork of it") && message.contains("attach a new reader here"),
            "{message}"
        );
        assert_eq!(c["own_reader_ok"], true, "{child}: a reader of its own does not read: {done}");
    }
    assert_eq!(done["held_after_os_fork"], true, "{done}");
    assert_eq!(done["held_after_multiprocessing"], true, "{done}");
    assert_eq!(done["parent_closed"], false, "{done}");
    assert_eq!(done["parent_reads_on"], 50, "{done}");
    let pickled = done["pickled"].as_str().unwrap();
    assert!(pickled.contains("attach a reader there"), "a reader sent to another process: {pickled}");
    assert!(reader.wait_exit("the python reader").success());
    writer.signal(rustix::process::Signal::TERM);
    assert!(writer.wait_exit().success());
}

#[test]
fn bad_arguments_raise_clear_python_exceptions() {
    let name = unique_name("py-bad");
    let mut writer =
        ads_ring("writer", &["write", "--name", &name, "--width", "320", "--height", "240", "--fps", "100"]);
    writer.expect("created");
    let script = sdk_file("tests/bad_arguments.py");
    let out = Command::new(python())
        .args([script.to_str().unwrap(), "--frames-ring", &name, "--prefix", &unique_name("py-bad-w")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "ok");
    // A clean stop, so the writer removes its ring (dropping the Proc would SIGKILL it).
    writer.signal(rustix::process::Signal::TERM);
    assert!(writer.wait_exit().success());
}

/// `ads-vehicle` on the simulator, steering by the detections ring only.
struct Vehicle {
    car: TestVehicle,
    key_file: PathBuf,
    states: StateSubscriber,
}

impl Vehicle {
    fn start(test: &str, track: &str) -> Self {
        // Actions must be signed with this key: the Python client's signature is checked.
        let key_file = std::env::temp_dir().join(format!("{}.key", unique_name(test)));
        std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).unwrap();
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let car = TestVehicle::build(test)
            .args(["--track", track, "--control", "detections", "--action-key"])
            .arg(&key_file)
            .spawn();
        let states = StateSubscriber::connect(&car);
        Vehicle { car, key_file, states }
    }

    fn python_detector(&self) -> Kill {
        let script = sdk_file("examples/lane_detector.py");
        let child = Command::new(python())
            .arg(script)
            .args([
                "--frames-ring",
                &self.car.frames_ring(),
                "--detections-ring",
                &self.car.detections_ring(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Kill(child)
    }

    fn state_where(&mut self, accept: impl Fn(&VehicleState) -> bool) -> VehicleState {
        let deadline = Instant::now() + DEADLINE * 3;
        loop {
            assert!(Instant::now() < deadline, "the vehicle never reached the expected state");
            let s = self.states.next(&mut self.car);
            if accept(&s) {
                return s;
            }
        }
    }

    /// Drives `seconds` of simulated time; (worst |offset from the lane centre| by the
    /// simulator's truth, distance, fraction of states driving).
    fn drive(&mut self, seconds: u64) -> (f64, f64, f64) {
        let first = self.state_where(|s| s.mode == DriveMode::Driving && s.speed_mps > 2.0);
        let (mut worst, mut last, mut driving, mut states) = (0.0f64, first.clone(), 0u32, 0u32);
        while last.frame_id < first.frame_id + seconds * FPS {
            last = self.state_where(|_| true);
            if let Some(offset) = last.truth_lateral_offset_m {
                worst = worst.max(offset.abs());
            }
            states += 1;
            driving += u32::from(last.mode == DriveMode::Driving);
        }
        (worst, last.distance_m - first.distance_m, f64::from(driving) / f64::from(states.max(1)))
    }
}

#[test]
fn the_python_example_detector_drives_the_oval_and_a_restarted_one_takes_over() {
    let python = python();
    let mut vehicle = Vehicle::start("py-loop", "oval");
    let mut detector = vehicle.python_detector();
    let (worst, distance, driving) = vehicle.drive(60);
    println!(
        "python detector, oval: 60 s closed loop, {distance:.0} m, worst |offset| {worst:.2} m, driving {:.0} % of states",
        driving * 100.0
    );
    assert!(worst < HALF_LANE_M, "left the lane: {worst:.2} m off centre");
    assert!(distance > 300.0, "only {distance:.0} m in 60 s at a target of 8 m/s");

    // SIGKILL of the Python detector: the vehicle stops itself and says why.
    detector.crash();
    let stopped = vehicle.state_where(|s| s.mode == DriveMode::Failsafe && s.speed_mps == 0.0);
    println!("after SIGKILL of the python detector: {:?}", stopped.health.stop_reason);
    assert!(!stopped.health.detections_fresh);

    // A restarted one takes over the ring the killed one left, and the car drives on.
    detector = vehicle.python_detector();
    let (worst, _, _) = vehicle.drive(5);
    assert!(worst < HALF_LANE_M);

    // The protocol client: decoded topics, signed actions acknowledged.
    let script = sdk_file("tests/client_roundtrip.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--pub", &vehicle.car.endpoint(), "--actions", &vehicle.car.action_endpoint()])
        .args(["--key-file", vehicle.key_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("python client: {report}");
    assert_eq!(report["detector"], "py-numpy", "{report}");
    assert_eq!(report["pause"]["accepted"], true, "{report}");
    assert_eq!(report["paused"], true, "{report}");
    assert_eq!(report["resume"]["accepted"], true, "{report}");
    assert_eq!(report["manual"]["accepted"], true, "{report}");
    assert!(report["drives_taken"].as_u64().unwrap_or(0) >= 10, "{report}");
    assert_eq!(report["lapsed"]["pilot"], "manual", "the lease never ran out: {report}");
    assert_eq!(report["autopilot"]["accepted"], true, "{report}");
    std::fs::remove_file(&vehicle.key_file).unwrap();

    // SIGTERM: the detector exits cleanly and takes its ring with it.
    detector.signal(rustix::process::Signal::TERM);
    assert!(detector.wait_exit("the python detector").success());
    assert!(
        !ads_shmem_ipc::shm_path(&vehicle.car.detections_ring()).exists(),
        "the detections ring was left behind"
    );
}
