//! `reclaim_stale` scans all of /dev/shm, so it runs in its own test binary, away from the
//! tests that forge segments by hand.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_shmem_ipc::{lock_path, readers_path, shm_path, FrameGeometry, FrameWriter, PixelFormat};
use std::time::Duration;

const SMALL: FrameGeometry = FrameGeometry::packed(64, 48, PixelFormat::Bgr8);

fn name(test: &str) -> String {
    format!("c{}-{test}", std::process::id())
}

#[test]
fn reclaim_removes_dead_writers_segments_and_keeps_live_ones() {
    let live = name("reclaim-live");
    let _writer = FrameWriter::create(&live, SMALL, 3).unwrap();
    // A segment whose writer is dead: a child process creates it and is killed.
    let dead = name("reclaim-dead");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "create_a_ring_and_hang", "--ignored", "--nocapture"])
        .env("ADS_RING_NAME", &dead)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !shm_path(&dead).exists() {
        assert!(std::time::Instant::now() < deadline, "child never created its ring");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(shm_path(&dead).exists(), "SIGKILL leaves the segment behind");
    let reclaimed = ads_shmem_ipc::reclaim_stale().unwrap();
    assert!(reclaimed.contains(&dead), "{reclaimed:?}");
    assert!(!reclaimed.contains(&live), "{reclaimed:?}");
    for path in [shm_path(&dead), lock_path(&dead), readers_path(&dead)] {
        assert!(!path.exists(), "{} is left", path.display());
    }
    for path in [shm_path(&live), lock_path(&live), readers_path(&live)] {
        assert!(path.exists(), "{} of a live writer was removed", path.display());
    }
}

/// The child half of `reclaim_removes_dead_writers_segments_and_keeps_live_ones`.
#[test]
#[ignore = "run by another test as a child process"]
fn create_a_ring_and_hang() {
    let name = std::env::var("ADS_RING_NAME").unwrap();
    let _writer = FrameWriter::create(&name, SMALL, 3).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}
