//! A process of the ring's user shrinking the ring's files under the writer (readers open
//! the reader table read-write): the writer's next access past the new end would be a
//! SIGBUS. The writer checks the sizes (at most every 100 ms) and stops touching a damaged
//! ring instead. Alone in its binary: on a writer without the check, SIGBUS ends the process.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_shmem_ipc::{
    readers_path, shm_path, Error, FrameGeometry, FrameWriter, MessageWriter, PixelFormat, Stamp,
};
use std::time::Duration;

const SMALL: FrameGeometry = FrameGeometry::packed(8, 4, PixelFormat::Gray8);

/// More than the writer's check interval (100 ms); waiting longer only makes it surer.
const PAST_THE_CHECK: Duration = Duration::from_millis(300);

fn truncate_then_publish(test: &str, path: fn(&str) -> std::path::PathBuf) {
    let name = format!("t{}-{test}", std::process::id());
    let mut writer = FrameWriter::create(&name, SMALL, 3).unwrap();
    let bytes = vec![7; SMALL.frame_bytes() as usize];
    assert_eq!(writer.publish_copy(&bytes, Stamp::default()).unwrap(), Some(0));
    std::fs::OpenOptions::new().write(true).open(path(&name)).unwrap().set_len(0).unwrap();
    std::thread::sleep(PAST_THE_CHECK);
    writer.heartbeat();
    assert_eq!(writer.publish_copy(&bytes, Stamp::default()).unwrap(), None, "a damaged ring takes no frame");
    let stats = writer.stats();
    assert!(stats.damaged, "{stats:?}");
    assert_eq!((stats.published, stats.dropped), (1, 1));
    drop(writer);
    assert!(!shm_path(&name).exists() && !readers_path(&name).exists(), "the files are still removed");
}

#[test]
fn a_truncated_reader_table_does_not_kill_the_writer() {
    truncate_then_publish("table", readers_path);
}

#[test]
fn a_truncated_segment_does_not_kill_the_writer() {
    truncate_then_publish("segment", shm_path);
}

#[test]
fn a_message_writer_says_its_ring_is_damaged() {
    let name = format!("t{}-message", std::process::id());
    let mut writer = MessageWriter::create(&name, 64, 3).unwrap();
    writer.publish(b"before", Stamp::default()).unwrap();
    std::fs::OpenOptions::new().write(true).open(readers_path(&name)).unwrap().set_len(0).unwrap();
    std::thread::sleep(PAST_THE_CHECK);
    let err = writer.publish(b"after", Stamp::default()).expect_err("a damaged ring takes no message");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}
