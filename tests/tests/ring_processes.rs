//! The ring's multi-process behaviour, with real processes and real signals.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod common;

use ads_shmem_ipc::{clock, lock_path, readers_path, shm_path, FrameReader, FrameReaderOptions};
use ads_testkit::unique_name;
use common::{ads_ring, ads_ring_under, u64_of};
use rustix::process::Signal;
use std::time::Duration;

const FRAMES: u64 = 120_000;

/// A writer publishing as fast as it can through 3 slots, a reader in another process
/// checking every byte of every frame it accepts.
fn no_torn_frames(mode: &str, wait: &str, copy: bool) {
    let name = unique_name(&format!("torn-{mode}-{wait}-{copy}"));
    let geometry = ["--width", "320", "--height", "240"];
    let mut read_args = vec!["read", "--name", &name, "--mode", mode, "--wait", wait, "--stats-ms", "600000"];
    read_args.extend(geometry);
    if copy {
        read_args.push("--copy");
    }
    let mut reader = ads_ring("reader", &read_args);
    let frames = FRAMES.to_string();
    let mut write_args = vec!["write", "--name", &name, "--fps", "0", "--slots", "3", "--frames", &frames];
    write_args.extend(geometry);
    let mut writer = ads_ring("writer", &write_args);

    assert_eq!(u64_of(&writer.expect("writer_done"), "published"), FRAMES);
    assert!(writer.wait_exit().success());
    let s = reader.expect("summary");
    let gone = reader.expect("writer_gone");
    assert_eq!(gone["cause"], "closed");
    println!("{mode}/{wait}/copy={copy}: {s}");

    let (read, skipped, dropped, overruns) =
        (u64_of(&s, "read"), u64_of(&s, "skipped"), u64_of(&s, "dropped"), u64_of(&s, "overruns"));
    let (first, last) = (u64_of(&s, "first_seq"), u64_of(&s, "last_seq"));
    assert_eq!(u64_of(&s, "torn"), 0, "a torn frame was accepted as valid");
    assert_eq!(u64_of(&s, "id_mismatch"), 0, "metadata did not belong to the pixels");
    assert_eq!(last, FRAMES - 1, "the reader saw the stream to its end");
    assert!(last - first + 1 >= 100_000, "the reader watched at least 100,000 frames go by");
    assert_eq!(read + skipped + dropped + overruns, last - first + 1, "every frame counted exactly once");
    assert!(read > 0);
    match mode {
        "latest" => assert_eq!(dropped, 0, "latest mode skips, it never drops"),
        _ => assert_eq!(skipped, 0, "in-order mode drops, it never skips"),
    }
    assert!(skipped + dropped + overruns > 0, "the writer never lapped the reader: the test proved nothing");
    assert!(!shm_path(&name).exists(), "a clean writer exit leaves nothing in /dev/shm");
}

#[test]
fn in_order_reader_never_accepts_a_torn_frame() {
    no_torn_frames("in-order", "block", false);
}

#[test]
fn latest_reader_never_accepts_a_torn_frame() {
    no_torn_frames("latest", "spin", false);
}

#[test]
fn copy_out_reader_never_accepts_a_torn_frame() {
    no_torn_frames("in-order", "spin", true);
}

#[test]
fn killed_writer_is_noticed_and_a_new_writer_takes_over() {
    let name = unique_name("sigkill");
    let geometry = ["--width", "160", "--height", "120"];
    let mut write_args = vec!["write", "--name", &name, "--fps", "500"];
    write_args.extend(geometry);
    let mut first = ads_ring("writer-1", &write_args);
    first.expect("created");
    let mut read_args = vec!["read", "--name", &name, "--follow", "--stats-ms", "100"];
    read_args.extend(geometry);
    let mut reader = ads_ring("reader", &read_args);
    assert_eq!(u64_of(&reader.expect("attached"), "generation"), 1);
    reader.expect_where("stats", |v| v["read"].as_u64() > Some(10));

    // Not reaped until later: the dead writer stays a zombie, which must count as dead.
    let killed_at = clock::monotonic_ns();
    first.signal(Signal::KILL);
    let gone = reader.expect("writer_gone");
    let noticed_ms = (u64_of(&gone, "mono_ns") - killed_at) as f64 / 1e6;
    println!("reader noticed the SIGKILLed writer after {noticed_ms:.1} ms");
    assert_eq!(gone["cause"], "died");
    assert_eq!(u64_of(&gone, "pid"), u64::from(first.child.id()));
    assert!(shm_path(&name).exists(), "nobody cleaned up by hand: the stale segment is still there");

    let mut second = ads_ring("writer-2", &write_args);
    second.expect("created");
    // In the instant between the new writer taking the lock and recording its token, the
    // lock says "alive" for the old segment too: a reader attaching right then notices its
    // mistake at its next liveness check (20 ms, the segment is unlinked) and attaches again.
    let attached = reader.expect_where("attached", |v| v["generation"].as_u64() != Some(1));
    assert_eq!(u64_of(&attached, "generation"), 2, "the new writer took over the stale segment");
    assert_eq!(u64_of(&attached, "writer_pid"), u64::from(second.child.id()));
    reader.expect_where("stats", |v| v["read"].as_u64() > Some(10));
    first.wait_exit();

    second.signal(Signal::TERM);
    assert!(second.wait_exit().success());
    assert_eq!(reader.expect("writer_gone")["cause"], "closed");
    assert!(!shm_path(&name).exists());
}

#[test]
fn stopped_or_killed_reader_never_slows_the_writer() {
    let name = unique_name("sigstop");
    let geometry = ["--width", "160", "--height", "120"];
    let mut write_args = vec!["write", "--name", &name, "--fps", "1000"];
    write_args.extend(geometry);
    let mut writer = ads_ring("writer", &write_args);
    writer.expect("created");
    let mut read_args = vec!["read", "--name", &name, "--stats-ms", "100", "--mode", "in-order"];
    read_args.extend(geometry);
    let mut reader = ads_ring("reader", &read_args);
    reader.expect_where("stats", |v| v["read"].as_u64() > Some(10));
    let observer = FrameReader::attach(&name, FrameReaderOptions::default()).unwrap();

    reader.signal(Signal::STOP);
    let before = observer.published();
    std::thread::sleep(Duration::from_secs(2));
    let during = observer.published() - before;
    println!("writer published {during} frames while the reader was stopped for 2 s");
    assert!(during > 0, "the writer stalled behind a stopped reader");

    reader.signal(Signal::CONT);
    let resumed = reader.expect_where("stats", |v| v["read"].as_u64() > Some(during));
    println!("reader after SIGCONT: {resumed}");

    reader.signal(Signal::KILL);
    reader.wait_exit();
    let before = observer.published();
    std::thread::sleep(Duration::from_millis(500));
    assert!(observer.published() > before, "the writer stalled behind a killed reader");

    writer.signal(Signal::TERM);
    assert!(writer.wait_exit().success());
    assert!(!shm_path(&name).exists());
}

/// The first child of `pid`, from /proc (the process `unshare --fork` started).
fn first_child(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

#[test]
fn a_writer_in_another_pid_namespace_is_alive_to_readers_and_keeps_its_name() {
    const UNSHARE: [&str; 5] = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];
    match std::process::Command::new(UNSHARE[0]).args(&UNSHARE[1..]).arg("true").output() {
        Ok(out) if out.status.success() => {}
        other => {
            println!("skipped: `{}` does not work here: {other:?}", UNSHARE.join(" "));
            return;
        }
    }
    let name = unique_name("pidns");
    let geometry = ["--width", "160", "--height", "120"];
    let mut write_args = vec!["write", "--name", &name, "--fps", "200"];
    write_args.extend(geometry);
    // Inside its namespace the writer is pid 1: a pid means nothing outside it.
    let mut inside = ads_ring_under("writer-in-namespace", &UNSHARE, &write_args);
    assert_eq!(u64_of(&inside.expect("created"), "pid"), 1);

    let mut read_args = vec!["read", "--name", &name, "--stats-ms", "100"];
    read_args.extend(geometry);
    let mut reader = ads_ring("reader", &read_args);
    reader.expect("attached");
    reader.expect_where("stats", |v| v["read"].as_u64() > Some(10));

    let mut second_args = write_args.clone();
    second_args.extend(["--frames", "5"]);
    let second =
        std::process::Command::new(ads_testkit::bin("ads-ring")).args(&second_args).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    println!("second writer: {stderr}");
    assert!(!second.status.success(), "a second writer took the name of a live writer in another namespace");
    assert!(stderr.contains("already written by a live writer"), "{stderr}");
    reader.expect_where("stats", |v| v["read"].as_u64() > Some(20));

    // A clean stop inside the namespace: SIGTERM to the writer itself (unshare's child).
    let writer_pid = first_child(inside.child.id()).expect("the writer inside the namespace");
    let pid = rustix::process::Pid::from_raw(writer_pid as i32).unwrap();
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    assert!(inside.wait_exit().success());
    assert_eq!(reader.expect("writer_gone")["cause"], "closed");
    for path in [shm_path(&name), lock_path(&name), readers_path(&name)] {
        assert!(!path.exists(), "{} left behind", path.display());
    }
}
