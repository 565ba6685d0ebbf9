//! The board's binaries on this machine: `ads-vehicle` and `ads-detection` cross-built for
//! aarch64 (`scripts/cross.sh aarch64`) run under qemu-user, the simulator drives, and a
//! native client watches the vehicle's state over ZeroMQ as a laptop would.
//!
//! Emulation is many times slower than the board, so nothing here is about time: it checks
//! that the aarch64 processes start, share their rings (futexes, OFD locks and atomics across
//! two emulated processes), that detections made on aarch64 reach the control loop, that a
//! killed detector stops the car, and that both exit cleanly. `scripts/cross.sh aarch64
//! --test` runs it with `ADS_AARCH64_BIN_DIR` set; without it the test says so and passes
//! (the cross build takes longer than the rest of the suite).
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{DriveMode, VehicleState};
use ads_testkit::{Kill, StateSubscriber, TestVehicle};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Against hangs only: an emulated process may be 20 times slower than a native one.
const DEADLINE: Duration = Duration::from_secs(300);
/// How long the client watches the emulated pipeline drive.
const WATCH: Duration = Duration::from_secs(20);

/// ELF `e_machine` of AArch64.
const EM_AARCH64: u16 = 183;

fn machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not an ELF file", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

fn board_binaries() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("ADS_AARCH64_BIN_DIR") else {
        eprintln!("skipped: ADS_AARCH64_BIN_DIR is not set (scripts/cross.sh aarch64 --test sets it)");
        return None;
    };
    let dir = PathBuf::from(dir);
    for name in ["ads-vehicle", "ads-detection"] {
        assert_eq!(
            machine(&dir.join(name)),
            EM_AARCH64,
            "{name} in {} is not an aarch64 binary",
            dir.display()
        );
    }
    Some(dir)
}

fn state_where(
    states: &StateSubscriber,
    car: &mut TestVehicle,
    what: &str,
    accept: impl Fn(&VehicleState) -> bool,
) -> VehicleState {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = states.next(car);
        if accept(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}; last state: {s:?}");
    }
}

#[test]
fn aarch64_vehicle_and_detector_drive_the_simulator_under_qemu() {
    let Some(dir) = board_binaries() else { return };
    assert_ne!(std::env::consts::ARCH, "aarch64", "this test is about emulation: run it on x86_64");

    let mut car = TestVehicle::build("board-qemu")
        .binary(dir.join("ads-vehicle"))
        .args(["--control", "detections", "--track", "oval"])
        .spawn();
    let states = StateSubscriber::connect(&car);
    let first = state_where(&states, &mut car, "a state from the emulated vehicle", |_| true);
    assert_eq!(first.source, "sim");

    let detector = |car: &TestVehicle| {
        Kill(
            Command::new(dir.join("ads-detection"))
                .args(["--method", "cv", "--frames-ring", &car.frames_ring()])
                .args(["--detections-ring", &car.detections_ring()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("start the aarch64 ads-detection"),
        )
    };
    car.detector = Some(detector(&car));

    // Detections made on "the board" reach the control loop, and the car drives on them.
    let driving = state_where(&states, &mut car, "driving on fresh detections", |s| {
        s.health.detections_fresh && s.mode == DriveMode::Driving && s.speed_mps > 0.5
    });
    println!(
        "emulated: driving at frame {} ({:.1} m/s, detection age {:?} ms)",
        driving.frame_id, driving.speed_mps, driving.health.detection_age_ms
    );

    // Watch it for a while: frames keep coming, it moves forward, and it stays on the road.
    let (watch_end, mut last, mut fresh) = (Instant::now() + WATCH, driving.clone(), 0u32);
    let mut worst = 0.0f64;
    while Instant::now() < watch_end {
        let s = states.next(&mut car);
        assert!(s.frame_id >= last.frame_id, "frame ids went back: {} after {}", s.frame_id, last.frame_id);
        fresh += u32::from(s.health.detections_fresh);
        if let Some(offset) = s.truth_lateral_offset_m {
            worst = worst.max(offset.abs());
        }
        last = s;
    }
    println!(
        "emulated: {} frames and {:.1} m in {WATCH:?}, {fresh} states with fresh detections, worst |offset| {worst:.2} m",
        last.frame_id - driving.frame_id,
        last.distance_m - driving.distance_m
    );
    assert!(last.frame_id > driving.frame_id, "no frames while watching");
    assert!(last.distance_m > driving.distance_m, "the car did not move");
    assert!(fresh > 0, "no fresh detections while watching");
    assert!(worst < 1.75, "left the lane: {worst:.2} m off centre");

    // The emulated detector dies: the emulated vehicle stops the car and says why.
    car.detector.take().unwrap().crash();
    let stopped =
        state_where(&states, &mut car, "stopped after the detector died", |s| s.mode == DriveMode::Failsafe);
    println!("emulated: after SIGKILL of the detector: {:?}", stopped.health.stop_reason);
    assert!(!stopped.health.detections_fresh);

    // A new one takes over the stale detections ring; then both stop cleanly (SIGTERM, exit
    // 0, rings unlinked).
    car.detector = Some(detector(&car));
    state_where(&states, &mut car, "driving again with a new detector", |s| {
        s.health.detections_fresh && s.mode == DriveMode::Driving
    });
    car.stop();
}
