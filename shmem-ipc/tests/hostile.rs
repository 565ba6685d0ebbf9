//! Files at a ring's paths that are not what a writer made: nobody may block on them.
//!
//! Any local user can make a FIFO at a ring's path in `/dev/shm` while the name is free.
//! Opening a FIFO for reading blocks until someone opens its other end, so a ring that opened
//! its files before checking them would hang its writer, its readers (the vehicle's control
//! loop attaches to the detections ring while it runs) and `ads-ring clean`. Each case runs
//! in a thread under a deadline (against a hang, not a speed limit); on a hang the FIFO is
//! opened at both ends, which releases the blocked `open`, so the test fails instead of
//! hanging and leaves nothing blocked behind in other processes.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_shmem_ipc::{
    lock_path, readers_path, reclaim_stale, shm_path, Error, FrameGeometry, FrameReader, FrameReaderOptions,
    FrameWriter, MessageReader, MessageWriter, PixelFormat, ReadMode,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SMALL: FrameGeometry = FrameGeometry::packed(8, 4, PixelFormat::Gray8);

/// Far beyond anything a non-blocking open takes, even on a loaded machine.
const HANG: Duration = Duration::from_secs(30);

fn name(test: &str) -> String {
    format!("h{}-{test}", std::process::id())
}

/// A FIFO at `path` (replacing whatever is there), removed on drop.
struct Fifo(PathBuf);

impl Fifo {
    fn at(path: PathBuf) -> Self {
        let _ = std::fs::remove_file(&path);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        Self(path)
    }

    /// Opens both ends, which completes any `open` blocked on the FIFO.
    fn release_blocked(path: &Path) {
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(path);
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        Self::release_blocked(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `op` in a thread; panics (after releasing the FIFO) if it has not returned by the
/// deadline.
fn without_hanging<T: Send + 'static>(fifo: &Fifo, what: &str, op: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(op());
    });
    match rx.recv_timeout(HANG) {
        Ok(result) => {
            worker.join().unwrap();
            result
        }
        Err(_) => {
            // Let the blocked thread go so the process can end, then fail.
            Fifo::release_blocked(&fifo.0);
            panic!("{what} blocked on a FIFO at {}", fifo.0.display());
        }
    }
}

fn assert_not_a_file(result: Result<(), Error>, what: &str) {
    match result {
        Err(e) if e.to_string().contains("FIFO") => {}
        other => panic!("{what}: expected NotAFile, got {other:?}"),
    }
}

#[test]
fn a_fifo_at_the_segment_path_blocks_neither_writer_nor_readers() {
    let n = name("segment");
    let fifo = Fifo::at(shm_path(&n));
    let m = n.clone();
    let attached = without_hanging(&fifo, "FrameReader::attach", move || {
        FrameReader::attach(&m, FrameReaderOptions::default()).map(drop)
    });
    assert_not_a_file(attached, "a frame reader");
    let m = n.clone();
    let attached = without_hanging(&fifo, "MessageReader::attach", move || {
        MessageReader::attach(&m, ReadMode::Latest).map(drop)
    });
    assert_not_a_file(attached, "a message reader");
    // The writer looks at what a dead predecessor left before replacing it.
    let m = n.clone();
    let created =
        without_hanging(&fifo, "FrameWriter::create", move || FrameWriter::create(&m, SMALL, 3).map(drop));
    assert_not_a_file(created, "a writer");
    assert!(!lock_path(&n).exists(), "the refused writer left its lock file behind");
}

#[test]
fn a_fifo_at_the_reader_table_path_blocks_no_writer() {
    let n = name("table");
    let fifo = Fifo::at(readers_path(&n));
    let m = n.clone();
    let created =
        without_hanging(&fifo, "MessageWriter::create", move || MessageWriter::create(&m, 64, 3).map(drop));
    assert_not_a_file(created, "a writer");
}

#[test]
fn a_fifo_in_place_of_a_live_rings_lock_or_table_blocks_no_reader() {
    let n = name("live");
    let _writer = MessageWriter::create(&n, 64, 3).unwrap();
    // The table first: a reader finding no lock file at all says the writer is gone.
    for path in [readers_path(&n), lock_path(&n)] {
        // What a process of the ring's user could do behind the writer's back.
        let fifo = Fifo::at(path.clone());
        let m = n.clone();
        let attached = without_hanging(&fifo, "MessageReader::attach", move || {
            MessageReader::attach(&m, ReadMode::Latest).map(drop)
        });
        assert_not_a_file(attached, &format!("a message reader, FIFO at {}", path.display()));
        let m = n.clone();
        let attached = without_hanging(&fifo, "FrameReader::attach", move || {
            FrameReader::attach(&m, FrameReaderOptions::default()).map(drop)
        });
        match attached {
            // The kind check comes first for the segment; a FIFO elsewhere is refused.
            Err(Error::NotAFile { .. } | Error::LayoutMismatch { field: "kind", .. }) => {}
            other => panic!("a frame reader, FIFO at {}: {other:?}", path.display()),
        }
    }
}

#[test]
fn reclaiming_stale_rings_does_not_block_on_a_fifo() {
    let n = name("clean");
    let fifo = Fifo::at(shm_path(&n));
    let reclaimed = without_hanging(&fifo, "reclaim_stale (ads-ring clean)", || reclaim_stale().unwrap());
    assert!(!reclaimed.contains(&n), "a FIFO is not a ring to reclaim");
    assert!(std::fs::symlink_metadata(shm_path(&n)).is_ok(), "and it is left for a person to look at");
}
