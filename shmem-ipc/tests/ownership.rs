//! Who owns a ring, and what a pin guarantees: racing writers, rings of other users, files
//! others may write, a ring caught mid-creation, a zero-copy frame held while the writer
//! laps the ring, and readers that die holding a pin or asleep.
//!
//! Children are this test binary run again (`--ignored --exact <child>`), as another user
//! where the test needs one (we run as root in CI; those tests say so and skip otherwise).
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_shmem_ipc::{
    shm_path, FrameGeometry, FrameReader, FrameReaderOptions, FrameWriter, MessageReader, MessageWriter,
    PixelFormat, ReadMode, Stamp, Wait,
};
use std::io::BufRead as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SMALL: FrameGeometry = FrameGeometry::packed(64, 48, PixelFormat::Bgr8);
const RACE: FrameGeometry = FrameGeometry::packed(800, 600, PixelFormat::Bgr8);
/// A uid no account on a CI machine has.
const FOREIGN_UID: u32 = 4242;

fn name(test: &str) -> String {
    format!("o{}-{test}", std::process::id())
}

fn stamp(id: u64) -> Stamp {
    Stamp { id, ..Stamp::default() }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs one of the `child_*` tests below in a new process and waits for its "ready" line.
fn child(test: &str, ring: &str, uid: Option<u32>) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--ignored", "--nocapture", "--test-threads", "1"])
        .env("ADS_RING_NAME", ring)
        .stdout(Stdio::piped());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // libtest may print "test <name> ... " before it on the same line.
            if line.ends_with(READY) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("child {test} never got ready"));
    child
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

const READY: &str = "child-ready";

fn say_ready() {
    println!("{READY}");
}

#[test]
fn racing_writers_for_one_name_exactly_one_wins_and_the_losers_delete_nothing() {
    for round in 0..40 {
        let n = name(&format!("race{round}"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let (n, barrier) = (n.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Big enough that reserving its pages takes a while: the window in which
                    // a writer has created the segment but not yet initialised it.
                    FrameWriter::create(&n, RACE, 16)
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let (mut winners, losers): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        assert_eq!(winners.len(), 1, "round {round}: {} writers own {n}", winners.len());
        for loser in losers {
            let err = loser.unwrap_err();
            assert!(matches!(err, ads_shmem_ipc::Error::WriterAlive { .. }), "round {round}: {err}");
        }
        // Every loser is gone now; the winner's ring must be whole and readable.
        let mut winner = winners.pop().unwrap().unwrap();
        assert!(shm_path(&n).exists(), "round {round}: a loser unlinked the winner's segment");
        let mut reader = FrameReader::attach(&n, FrameReaderOptions::default()).unwrap();
        let _ = winner.publish_copy(&vec![round as u8; RACE.frame_bytes() as usize], stamp(round)).unwrap();
        let frame = reader.read(Wait::Poll).unwrap().expect("the winner's frame");
        assert_eq!(frame.info().stamp.id, round);
        frame.finish().unwrap();
        drop(reader);
        drop(winner);
        assert!(!shm_path(&n).exists());
    }
}

#[test]
fn a_ring_created_by_another_user_is_refused_naming_its_owner() {
    if !is_root() {
        println!("skipped: creating a ring as uid {FOREIGN_UID} needs root");
        return;
    }
    let n = name("foreign");
    let owner = child("child_create_a_ring_and_hang", &n, Some(FOREIGN_UID));
    let read = FrameReader::attach(&n, FrameReaderOptions::default());
    let write = FrameWriter::create(&n, SMALL, 3);
    kill(owner);
    for path in std::fs::read_dir("/dev/shm").unwrap().filter_map(|e| e.ok()).map(|e| e.path()) {
        if path.file_name().unwrap().to_string_lossy().starts_with(&format!("ads.{n}")) {
            std::fs::remove_file(path).unwrap();
        }
    }
    let err = read.expect_err("a reader attached to another user's ring");
    println!("reader: {err}");
    assert!(err.to_string().contains(&format!("uid {FOREIGN_UID}")), "{err}");
    let err = write.expect_err("a writer took over (or shared) another user's ring");
    println!("writer: {err}");
    assert!(err.to_string().contains(&format!("uid {FOREIGN_UID}")), "{err}");
}

#[test]
fn a_ring_writable_by_others_is_refused_naming_the_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let n = name("mode");
    let _writer = MessageWriter::create(&n, 64, 3).unwrap();
    std::fs::set_permissions(shm_path(&n), std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = MessageReader::attach(&n, ReadMode::Latest).expect_err("a world-writable ring was accepted");
    println!("{err}");
    assert!(err.to_string().contains("0666"), "{err}");
}

#[test]
fn a_ring_caught_mid_creation_is_a_retryable_initialising_error() {
    let n = name("init");
    // What a reader finds between the writer's create and its sizing: an empty file.
    std::fs::write(shm_path(&n), b"").unwrap();
    let err =
        FrameReader::attach(&n, FrameReaderOptions::default()).expect_err("an empty segment was accepted");
    std::fs::remove_file(shm_path(&n)).unwrap();
    println!("{err}");
    assert!(err.to_string().contains("still being created"), "{err}");
}

#[test]
fn a_held_zero_copy_frame_never_changes_while_the_writer_laps_the_ring() {
    let n = name("pinned");
    let mut writer = FrameWriter::create(&n, SMALL, 4).unwrap();
    let mut holder = FrameReader::attach(&n, FrameReaderOptions::default()).unwrap();
    let mut watcher = FrameReader::attach(&n, FrameReaderOptions::default()).unwrap();
    let bytes = SMALL.frame_bytes() as usize;
    let _ = writer.publish_copy(&vec![1; bytes], stamp(0)).unwrap();
    let held = holder.read(Wait::Poll).unwrap().expect("frame 0");
    let pixels = held.pixels();
    let before = pixels.to_vec();
    for id in 1..=200u64 {
        let _ = writer.publish_copy(&vec![(id % 250 + 2) as u8; bytes], stamp(id)).unwrap();
        // The watcher sees the writer carry on...
        let newest = watcher.read(Wait::Poll).unwrap().expect("the writer went on publishing");
        assert_eq!(newest.info().stamp.id, id);
        assert!(newest.pixels().iter().all(|&p| p == (id % 250 + 2) as u8));
        newest.finish().unwrap();
        // ...while the held frame's bytes stay those of frame 0.
        assert!(pixels == before.as_slice(), "the held frame changed after frame {id}");
    }
    assert_eq!(writer.stats().published, 201);
    assert_eq!(held.finish().unwrap().stamp.id, 0, "still frame 0, intact");
}

#[test]
fn a_reader_killed_while_asleep_stops_costing_the_writer_wakeups() {
    let n = name("sleeper");
    let mut writer = MessageWriter::create(&n, 64, 4).unwrap();
    let sleeper = child("child_sleep_on_a_ring", &n, None);
    // The child announces itself before it sleeps; give it time to get there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while writer.stats().wakeups == 0 {
        assert!(Instant::now() < deadline, "the sleeping reader was never woken");
        writer.publish(b"ping", stamp(0)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(sleeper);
    // The writer notices a dead sleeper within its sweep interval (100 ms); give it 1 s.
    std::thread::sleep(Duration::from_millis(1000));
    writer.publish(b"after", stamp(1)).unwrap();
    let before = writer.stats().wakeups;
    for id in 2..50 {
        writer.publish(b"after", stamp(id)).unwrap();
    }
    assert_eq!(writer.stats().wakeups, before, "publishing still wakes a reader that is dead");
}

/// Whether `pid` is stopped (state `T` in /proc): `kill(SIGSTOP)` returns before it is.
fn is_stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

#[test]
fn a_reader_stopped_while_asleep_costs_the_writer_one_wakeup_not_one_per_publish() {
    use rustix::process::Signal;
    let n = name("stopped");
    let mut writer = MessageWriter::create(&n, 64, 4).unwrap();
    let sleeper = child("child_sleep_on_a_ring", &n, None);
    // Stop the reader until a publish finds it flagged asleep (it sleeps nearly all the time,
    // in 20 ms slices; a stop between two slices finds it awake: let it go and try again).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "never caught the reader asleep");
        std::thread::sleep(Duration::from_millis(100));
        signal(&sleeper, Signal::STOP);
        while !is_stopped(sleeper.id()) {
            assert!(Instant::now() < deadline, "the reader never stopped");
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = writer.stats().wakeups;
        writer.publish(b"ping", stamp(0)).unwrap();
        if writer.stats().wakeups > before {
            break;
        }
        signal(&sleeper, Signal::CONT);
    }
    // Woken once (it stays stopped): the next publishes have nobody left to wake.
    let before = writer.stats().wakeups;
    for id in 1..=50 {
        writer.publish(b"ping", stamp(id)).unwrap();
    }
    let extra = writer.stats().wakeups - before;
    kill(sleeper);
    assert_eq!(extra, 0, "a stopped reader cost a futex wake on {extra} of 50 publishes");
}

/// Child of `a_ring_created_by_another_user_is_refused_naming_its_owner`.
#[test]
#[ignore = "run by another test as a child process"]
fn child_create_a_ring_and_hang() {
    let name = std::env::var("ADS_RING_NAME").unwrap();
    let _writer = FrameWriter::create(&name, SMALL, 3).unwrap();
    // What a squatter would do to let anyone in.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(shm_path(&name), std::fs::Permissions::from_mode(0o666)).unwrap();
    say_ready();
    std::thread::sleep(Duration::from_secs(600));
}

/// Child of `a_reader_killed_while_asleep_stops_costing_the_writer_wakeups`.
#[test]
#[ignore = "run by another test as a child process"]
fn child_sleep_on_a_ring() {
    let name = std::env::var("ADS_RING_NAME").unwrap();
    let mut reader = MessageReader::attach(&name, ReadMode::Latest).unwrap();
    say_ready();
    let mut out = Vec::new();
    while reader.read_copy(Wait::Block(Duration::from_secs(10)), &mut out).is_ok() {}
}
