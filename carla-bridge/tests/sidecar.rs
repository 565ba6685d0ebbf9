//! The real sidecar script as a real child process over a real Unix socket, against the
//! test-only stand-in for the CARLA server in tests/standin/ (no server can run here).
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_carla_bridge::bridge::BridgeEvent;
use ads_carla_bridge::{BridgeConfig, CarlaBridge, LinkStatus};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Deadlines keep a broken build from hanging; they measure nothing.
const DEADLINE: Duration = Duration::from_secs(30);
const W: u32 = 64;
const H: u32 = 48;

fn standin_config(log: &Path, extra: &[(&str, &str)]) -> BridgeConfig {
    let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin");
    let mut env = vec![
        ("PYTHONPATH".to_string(), standin.display().to_string()),
        ("ADS_STANDIN_CARLA_LOG".to_string(), log.display().to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    BridgeConfig {
        port: 2999,
        width: W,
        height: H,
        fps: 50.0,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        env,
        ..BridgeConfig::default()
    }
}

fn log_path(test: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ads-standin-{}-{test}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn calls(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn connected(bridge: &CarlaBridge) -> bool {
    matches!(bridge.status(), LinkStatus::Connected { .. })
}

#[test]
fn frames_controls_respawn_pause_and_a_clean_exit() {
    let log = log_path("drive");
    let bridge = CarlaBridge::start(standin_config(&log, &[])).unwrap();
    wait_for("connected", || connected(&bridge));
    assert_eq!(bridge.status(), LinkStatus::Connected { map: "StandIn/Town00".into(), spawn_points: 5 });
    assert!((bridge.max_steer_rad() - 70f64.to_radians()).abs() < 1e-9);

    // Frames arrive as BGR of the ring's size, converted from the stand-in's BGRA pattern.
    let frame = bridge.take_frame(DEADLINE).unwrap();
    assert_eq!(frame.pixels.len(), (W * H * 3) as usize);
    for (x, y) in [(0usize, 0usize), (5, 7), (63, 47)] {
        let p = &frame.pixels[(y * W as usize + x) * 3..][..3];
        assert_eq!(
            p,
            [(frame.frame % 251) as u8, x as u8, y as u8],
            "pixel ({x},{y}) of frame {}",
            frame.frame
        );
    }
    let later = bridge.take_frame(DEADLINE).unwrap();
    assert!(later.frame > frame.frame);

    // Controls reach the car.
    bridge.send_control(-0.25, 0.6, 0.0).unwrap();
    wait_for("control applied", || {
        calls(&log)
            .iter()
            .any(|c| c["call"] == "apply_control" && c["steer"] == -0.25 && c["throttle"] == 0.6)
    });
    wait_for("car moving", || bridge.take_frame(DEADLINE).unwrap().speed_mps > 0.5);

    // Respawn: set_transform and zero velocity, never destroy-and-spawn.
    assert!(bridge.respawn(9).unwrap_err().to_string().contains("the map has 5"));
    bridge.respawn(2).unwrap();
    let mut events = Vec::new();
    wait_for("respawned", || {
        events.extend(bridge.take_events());
        !events.is_empty()
    });
    assert_eq!(events[0], BridgeEvent::Respawned { spawn_point: 2, x_m: 20.0, y_m: -4.0 });
    let log_now = calls(&log);
    let set = log_now.iter().position(|c| c["call"] == "set_transform" && c["x"] == 20.0).unwrap();
    assert_eq!(log_now[set + 1]["call"], "set_target_velocity");
    assert_eq!((log_now[set + 1]["x"].as_f64(), log_now[set + 1]["y"].as_f64()), (Some(0.0), Some(0.0)));
    assert!(!log_now.iter().any(|c| c["call"] == "destroy"), "respawn destroyed an actor");

    // Pause stops ticking; resume starts it again.
    bridge.set_paused(true).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let ticks = |log: &Path| calls(log).iter().filter(|c| c["call"] == "tick").count();
    let (frames_paused, ticks_paused) = (bridge.frames_received(), ticks(&log));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!((bridge.frames_received(), ticks(&log)), (frames_paused, ticks_paused), "ticked while paused");
    bridge.set_paused(false).unwrap();
    wait_for("frames after resume", || bridge.frames_received() > frames_paused + 3);

    // Dropping the bridge: the sidecar quits, synchronous mode is switched off, actors go.
    drop(bridge);
    let log_end = calls(&log);
    let settings: Vec<_> = log_end.iter().filter(|c| c["call"] == "apply_settings").collect();
    assert_eq!(settings.first().unwrap()["synchronous_mode"], true);
    assert_eq!(settings.last().unwrap()["synchronous_mode"], false, "left the server in synchronous mode");
    assert_eq!(log_end.iter().filter(|c| c["call"] == "destroy").count(), 2, "car and camera destroyed");
    let pid = log_end[0]["pid"].as_i64().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "sidecar {pid} still running");
    let _ = std::fs::remove_file(log);
}

#[test]
fn a_killed_sidecar_is_started_again() {
    let log = log_path("kill");
    let bridge = CarlaBridge::start(standin_config(&log, &[])).unwrap();
    wait_for("connected", || connected(&bridge));
    bridge.take_frame(DEADLINE).unwrap();
    let pid = calls(&log)[0]["pid"].as_i64().unwrap();
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    wait_for("noticed", || matches!(bridge.status(), LinkStatus::Retrying { .. }));
    let LinkStatus::Retrying { reason, .. } = bridge.status() else { unreachable!() };
    assert!(reason.contains("closed the connection"), "{reason}");
    wait_for("restarted", || connected(&bridge) && bridge.sidecar_starts() == 2);
    let before = bridge.frames_received();
    wait_for("frames again", || bridge.frames_received() > before + 2);
    let pids: std::collections::BTreeSet<_> = calls(&log).iter().map(|c| c["pid"].as_i64()).collect();
    assert_eq!(pids.len(), 2, "a second sidecar process");
    drop(bridge);
    let _ = std::fs::remove_file(log);
}

#[test]
fn an_unreachable_server_is_a_clear_error_retried_with_backoff() {
    let log = log_path("unreachable");
    let bridge = CarlaBridge::start(standin_config(&log, &[("ADS_STANDIN_CARLA_UNREACHABLE", "1")])).unwrap();
    let mut seen = Vec::new();
    wait_for("three attempts", || {
        if let LinkStatus::Retrying { retry_in, attempts, reason } = bridge.status() {
            if seen.last().is_none_or(|(a, _, _)| *a != attempts) {
                seen.push((attempts, retry_in, reason));
            }
        }
        seen.len() >= 3
    });
    for (_, _, reason) in &seen {
        assert!(reason.contains("CARLA server at 127.0.0.1:2999 unreachable"), "{reason}");
    }
    let delays: Vec<_> = seen.iter().map(|(_, d, _)| d.as_millis()).collect();
    assert!(delays.windows(2).all(|w| w[1] >= w[0]) && delays.last() > delays.first(), "{delays:?}");
    assert!(bridge.take_frame(Duration::ZERO).is_none());
    assert!(bridge.respawn(0).unwrap_err().to_string().contains("unreachable"));
    drop(bridge);
    let _ = std::fs::remove_file(log);
}

#[test]
fn without_the_carla_package_the_error_says_how_to_install_it() {
    // Debian's python3 has no carla package (and no stand-in on its path here).
    let config = BridgeConfig {
        width: W,
        height: H,
        backoff_initial: Duration::from_secs(5),
        ..BridgeConfig::default()
    };
    let bridge = CarlaBridge::start(config).unwrap();
    wait_for("retrying", || matches!(bridge.status(), LinkStatus::Retrying { .. }));
    let LinkStatus::Retrying { reason, .. } = bridge.status() else { unreachable!() };
    assert!(reason.contains("pip install carla==0.9.16"), "{reason}");
}
