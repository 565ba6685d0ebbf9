//! The ring's contract in one process: error cases, message rings, read modes, clean-up.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_shmem_ipc::{
    shm_path, Error, FrameGeometry, FrameReader, FrameReaderOptions, FrameWriter, MessageReader,
    MessageWriter, PixelFormat, ReadMode, Stamp, Wait, WriterGoneCause, LAYOUT_VERSION,
};
use std::time::Duration;

fn name(test: &str) -> String {
    format!("c{}-{test}", std::process::id())
}

const SMALL: FrameGeometry = FrameGeometry::packed(64, 48, PixelFormat::Bgr8);
const NO_WAIT: Wait = Wait::Poll;

fn stamp(id: u64) -> Stamp {
    Stamp { id, capture_mono_ns: ads_shmem_ipc::clock::monotonic_ns(), capture_wall_ns: 0 }
}

#[test]
fn missing_ring_is_not_found() {
    let err = FrameReader::attach(&name("missing"), FrameReaderOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("no ring named"), "{err}");
}

#[test]
fn other_geometry_is_a_mismatch_naming_both_values() {
    let n = name("geometry");
    let _writer = FrameWriter::create(&n, SMALL, 3).unwrap();
    let expect = |g| FrameReaderOptions { expect: Some(g), ..Default::default() };

    let err = FrameReader::attach(&n, expect(FrameGeometry::packed(32, 48, PixelFormat::Bgr8))).unwrap_err();
    assert!(matches!(err, Error::LayoutMismatch { field: "width", ours: 32, theirs: 64, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("32") && text.contains("64") && text.contains("width"), "{text}");

    let err = FrameReader::attach(&n, expect(FrameGeometry::packed(64, 48, PixelFormat::Rgb8))).unwrap_err();
    assert!(matches!(err, Error::LayoutMismatch { field: "pixel format", .. }), "{err}");

    let err = MessageReader::attach(&n, ReadMode::Latest).unwrap_err();
    assert!(matches!(err, Error::LayoutMismatch { field: "kind", .. }), "{err}");

    let reader = FrameReader::attach(&n, expect(SMALL)).unwrap();
    assert_eq!(reader.geometry(), SMALL);
}

/// Writes a segment file by hand, as another build (or a stranger) would have left it.
fn forge_segment(name: &str, magic: &[u8; 8], version: u32) -> std::path::PathBuf {
    let path = shm_path(name);
    let mut bytes = vec![0u8; 8192];
    bytes[..8].copy_from_slice(magic);
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn other_layout_version_is_a_version_mismatch_naming_both() {
    let n = name("version");
    let path = forge_segment(&n, b"ADSRING1", 99);
    let err = FrameReader::attach(&n, FrameReaderOptions::default()).unwrap_err();
    std::fs::remove_file(path).unwrap();
    assert!(matches!(err, Error::VersionMismatch { ours: LAYOUT_VERSION, theirs: 99, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("99") && text.contains(&LAYOUT_VERSION.to_string()), "{text}");
}

#[test]
fn a_foreign_segment_is_corrupt_and_a_writer_replaces_it() {
    let n = name("foreign");
    let path = forge_segment(&n, b"NOTADSRG", 1);
    let err = FrameReader::attach(&n, FrameReaderOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let writer = FrameWriter::create(&n, SMALL, 3).expect("a writer replaces a segment nobody owns");
    FrameReader::attach(&n, FrameReaderOptions::default()).unwrap();
    drop(writer);
    assert!(!path.exists());
}

#[test]
fn full_dev_shm_is_a_clear_error_at_creation() {
    let n = name("full");
    // 4096 slots of 1 GiB: 4 TiB, more than any /dev/shm here.
    let geometry = FrameGeometry::packed(16384, 16384, PixelFormat::Bgra8);
    let err = FrameWriter::create(&n, geometry, 4096).unwrap_err();
    assert!(matches!(err, Error::ShmFull { .. }), "{err}");
    assert!(err.to_string().contains("/dev/shm"), "{err}");
    assert!(!shm_path(&n).exists(), "a failed creation leaves nothing behind");
}

#[test]
fn bad_names_and_shapes_are_refused() {
    for bad in ["", "../etc", ".hidden", "a/b", "sp ace"] {
        assert!(matches!(FrameWriter::create(bad, SMALL, 3), Err(Error::InvalidName { .. })), "{bad:?}");
    }
    assert!(matches!(FrameWriter::create(&name("slots"), SMALL, 2), Err(Error::InvalidConfig { .. })));
    let bad_stride = FrameGeometry { stride: 10, ..SMALL };
    assert!(matches!(FrameWriter::create(&name("stride"), bad_stride, 3), Err(Error::InvalidConfig { .. })));
}

#[test]
fn a_live_writer_keeps_its_ring() {
    let n = name("alive");
    let _writer = FrameWriter::create(&n, SMALL, 3).unwrap();
    let err = FrameWriter::create(&n, SMALL, 3).unwrap_err();
    assert!(matches!(err, Error::WriterAlive { pid, .. } if pid == std::process::id()), "{err}");
}

#[test]
fn clean_shutdown_leaves_nothing_and_readers_are_told() {
    let n = name("closed");
    let mut writer = MessageWriter::create(&n, 1024, 4).unwrap();
    assert!(shm_path(&n).exists());
    let mut reader = MessageReader::attach(&n, ReadMode::InOrder).unwrap();
    writer.publish(b"last words", stamp(1)).unwrap();
    drop(writer);
    assert!(!shm_path(&n).exists());
    // Still mapped by the reader: what was published is delivered before the close.
    let mut buf = Vec::new();
    let info = reader.read_copy(NO_WAIT, &mut buf).unwrap().unwrap();
    assert_eq!((buf.as_slice(), info.stamp.id), (&b"last words"[..], 1));
    let err = reader.read(Wait::Block(Duration::from_secs(5))).unwrap_err();
    assert!(matches!(err, Error::WriterGone { cause: WriterGoneCause::Closed, .. }), "{err}");
}

#[test]
fn message_ring_carries_variable_sizes_in_order() {
    let n = name("messages");
    let mut writer = MessageWriter::create(&n, 64 * 1024, 8).unwrap();
    let mut reader = MessageReader::attach(&n, ReadMode::InOrder).unwrap();
    assert!(reader.read(NO_WAIT).unwrap().is_none(), "nothing published yet");
    let records: Vec<Vec<u8>> =
        [0usize, 1, 1000, 64 * 1024].iter().map(|&len| vec![len as u8; len]).collect();
    for (i, r) in records.iter().enumerate() {
        writer.publish(r, stamp(i as u64)).unwrap();
    }
    for (i, r) in records.iter().enumerate() {
        let sample = reader.read(NO_WAIT).unwrap().expect("a message");
        assert_eq!(sample.bytes(), r.as_slice());
        let info = sample.finish().unwrap();
        assert_eq!((info.seq, info.stamp.id, info.len), (i as u64, i as u64, r.len()));
    }
    let err = writer.publish(&vec![0; 64 * 1024 + 1], stamp(9)).unwrap_err();
    assert!(matches!(err, Error::TooLarge { len: 65537, capacity: 65536, .. }), "{err}");
    assert_eq!(reader.stats().read, 4);
}

#[test]
fn latest_skips_and_in_order_drops_when_lapped() {
    let n = name("modes");
    let mut writer = FrameWriter::create(&n, SMALL, 4).unwrap();
    let mut latest =
        FrameReader::attach(&n, FrameReaderOptions { mode: ReadMode::Latest, expect: None }).unwrap();
    let mut in_order =
        FrameReader::attach(&n, FrameReaderOptions { mode: ReadMode::InOrder, expect: None }).unwrap();
    let frame = vec![7u8; SMALL.frame_bytes() as usize];
    writer.publish_copy(&frame, stamp(0)).unwrap();
    assert_eq!(latest.read(NO_WAIT).unwrap().unwrap().finish().unwrap().seq, 0);
    assert_eq!(in_order.read(NO_WAIT).unwrap().unwrap().finish().unwrap().seq, 0);
    assert!(latest.read(NO_WAIT).unwrap().is_none(), "latest does not return the same frame twice");
    for id in 1..=10 {
        writer.publish_copy(&frame, stamp(id)).unwrap();
    }
    assert_eq!(latest.read(NO_WAIT).unwrap().unwrap().finish().unwrap().seq, 10);
    assert_eq!(latest.stats().skipped, 9);
    // 4 slots: frames 7..=10 are still there, 1..=6 were overwritten.
    assert_eq!(in_order.read(NO_WAIT).unwrap().unwrap().finish().unwrap().seq, 7);
    assert_eq!(in_order.stats().dropped, 6);
    // An in-order reader attached now gets what comes next, not what was there before.
    let mut late =
        FrameReader::attach(&n, FrameReaderOptions { mode: ReadMode::InOrder, expect: None }).unwrap();
    assert!(late.read(NO_WAIT).unwrap().is_none());
    for seq in 8..=10 {
        assert_eq!(in_order.read(NO_WAIT).unwrap().unwrap().finish().unwrap().seq, seq);
    }
    assert!(in_order.read(NO_WAIT).unwrap().is_none());
}

#[test]
fn a_borrowed_frame_is_pinned_and_the_writer_publishes_around_it() {
    let n = name("pinned");
    let mut writer = FrameWriter::create(&n, SMALL, 3).unwrap();
    let mut reader = FrameReader::attach(&n, FrameReaderOptions::default()).unwrap();
    let frame = vec![1u8; SMALL.frame_bytes() as usize];
    writer.publish_copy(&frame, stamp(0)).unwrap();
    let borrowed = reader.read(NO_WAIT).unwrap().unwrap();
    // The writer never waits: three more frames go round the two slots left to it.
    for id in 1..=3 {
        assert_eq!(writer.publish_copy(&frame, stamp(id)).unwrap(), Some(id));
    }
    assert!(writer.stats().pinned_skips > 0, "the writer never had to pass the pinned slot");
    assert!(borrowed.is_intact());
    assert_eq!(borrowed.finish().unwrap().seq, 0);
    assert_eq!((reader.stats().read, reader.stats().overruns), (1, 0));
    // Once let go, the latest reader gets the newest frame.
    assert_eq!(reader.read(NO_WAIT).unwrap().unwrap().finish().unwrap().seq, 3);
}

#[test]
fn a_message_writer_whose_every_slot_is_pinned_drops_and_counts() {
    let n = name("allpinned");
    let mut writer = MessageWriter::create(&n, 16, 3).unwrap();
    let mut readers: Vec<_> = (0..3).map(|_| MessageReader::attach(&n, ReadMode::Latest).unwrap()).collect();
    let mut samples = Vec::new();
    for (i, reader) in readers.iter_mut().enumerate() {
        writer.publish(&[i as u8], stamp(i as u64)).unwrap();
        // Each reader takes (pins) the message just published, each in its own slot.
        let sample = reader.read(NO_WAIT).unwrap().unwrap();
        assert_eq!(sample.info().seq, i as u64);
        samples.push(sample);
    }
    let err = writer.publish(b"x", stamp(9)).unwrap_err();
    assert!(matches!(err, Error::NoFreeSlot { .. }), "{err}");
    assert_eq!(writer.stats().dropped, 1);
    for (i, sample) in samples.into_iter().enumerate() {
        assert_eq!(sample.bytes(), &[i as u8]);
        sample.finish().unwrap();
    }
    assert_eq!(writer.publish(b"y", stamp(10)).unwrap(), 3, "free again; the dropped one took no number");
}

#[test]
fn a_blocked_reader_wakes_for_a_frame_published_by_another_thread() {
    let n = name("wake");
    let mut writer = FrameWriter::create(&n, SMALL, 3).unwrap();
    let mut reader = FrameReader::attach(&n, FrameReaderOptions::default()).unwrap();
    let publisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut loan = writer.loan();
        loan.pixels_mut().fill(42);
        loan.publish(stamp(5));
        writer
    });
    let frame = reader.read(Wait::Block(Duration::from_secs(30))).unwrap().expect("woken with a frame");
    assert!(frame.pixels().iter().all(|&p| p == 42));
    assert_eq!(frame.finish().unwrap().stamp.id, 5);
    let writer = publisher.join().unwrap();
    assert_eq!(writer.stats().published, 1);
}
