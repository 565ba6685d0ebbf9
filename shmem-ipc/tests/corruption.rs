//! Hostile bytes in a live ring: something other than the writer scribbles over
//! `/dev/shm/ads.<name>` (with plain file writes, as a buggy or malicious local process would)
//! while a reader is attached. The reader must answer with a typed error or with data inside
//! its slot, never panic, never hang, never read outside the segment.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_shmem_ipc::{
    shm_path, Error, FrameGeometry, FrameReader, FrameReaderOptions, FrameWriter, MessageReader,
    MessageWriter, PixelFormat, ReadMode, Stamp, Wait,
};
use std::os::unix::fs::FileExt as _;
use std::time::Duration;

/// Byte offsets in the segment, from the `#[repr(C)]` layout in docs/ARCHITECTURE.md.
const MAGIC_AT: u64 = 0;
const CONFIG_AT: u64 = 8;
const HEAD_AT: u64 = 128;
const CLOSED_AT: u64 = 140;
const METAS_AT: u64 = 192;
const META_SIZE: u64 = 64;
const META_LEN_FIELD: u64 = 40;

const CAPACITY: u64 = 256;

fn name(test: &str) -> String {
    format!("x{}-{test}", std::process::id())
}

fn scribble(ring: &str, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(shm_path(ring)).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

/// Deterministic garbage (xorshift), so a failure can be replayed.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn stamp(id: u64) -> Stamp {
    Stamp { id, ..Stamp::default() }
}

/// Runs `read` on another thread so that a reader spinning forever fails the test instead of
/// hanging it. The deadline only guards against a hang; it measures nothing.
fn within_deadline<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(read()).unwrap());
    rx.recv_timeout(Duration::from_secs(20)).expect("the reader hung on a corrupted segment")
}

fn attached(test: &str, mode: ReadMode) -> (String, MessageWriter, MessageReader) {
    let n = name(test);
    let mut writer = MessageWriter::create(&n, CAPACITY, 4).unwrap();
    let mut reader = MessageReader::attach(&n, mode).unwrap();
    writer.publish(b"before", stamp(1)).unwrap();
    let mut out = Vec::new();
    assert!(reader.read_copy(Wait::Poll, &mut out).unwrap().is_some());
    assert_eq!(out, b"before");
    (n, writer, reader)
}

fn assert_corrupt(result: Result<Option<ads_shmem_ipc::SampleInfo>, Error>, what: &str) {
    match result {
        Err(Error::Corrupt { reason, .. }) => println!("{what}: corrupt ({reason})"),
        other => panic!("{what}: expected Error::Corrupt, got {other:?}"),
    }
}

#[test]
fn garbage_over_the_whole_header_is_reported_as_corruption() {
    for seed in 1..=20u64 {
        let (n, mut writer, mut reader) = attached(&format!("hdr{seed}"), ReadMode::InOrder);
        scribble(&n, 0, &garbage(METAS_AT as usize, seed));
        // The writer never reads the header back: it carries on, unaware and unharmed.
        writer.publish(b"after", stamp(2)).unwrap();
        let result = within_deadline(move || {
            let mut out = Vec::new();
            reader.read_copy(Wait::Block(Duration::from_millis(50)), &mut out)
        });
        assert_corrupt(result, &format!("seed {seed}"));
        // Attaching afresh is refused with a typed error too.
        let err = MessageReader::attach(&n, ReadMode::Latest).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. } | Error::VersionMismatch { .. }), "{err}");
        drop(writer);
        assert!(!shm_path(&n).exists(), "the writer still removes its segment");
    }
}

#[test]
fn a_changed_configuration_behind_an_intact_magic_is_reported() {
    let (n, mut writer, mut reader) = attached("config", ReadMode::Latest);
    // slot_count: 4 -> 4000, which would send a reader that trusted it far past the mapping.
    scribble(&n, CONFIG_AT + 16, &4000u32.to_le_bytes());
    writer.publish(b"after", stamp(2)).unwrap();
    let mut out = Vec::new();
    assert_corrupt(reader.read_copy(Wait::Poll, &mut out), "slot_count");

    let (n, _writer, mut reader) = attached("magic", ReadMode::Latest);
    scribble(&n, MAGIC_AT, b"NOTARING");
    assert_corrupt(reader.read_copy(Wait::Poll, &mut out), "magic");
}

#[test]
fn an_impossible_head_or_closed_flag_is_an_error_not_an_overflow() {
    for head in [u64::MAX, u64::MAX / 2 + 7, 1 << 63] {
        let (n, _writer, mut reader) = attached(&format!("head{}", head % 1000), ReadMode::InOrder);
        scribble(&n, HEAD_AT, &head.to_le_bytes());
        let mut out = Vec::new();
        assert_corrupt(within_deadline(move || reader.read_copy(Wait::Poll, &mut out)), "head");
    }
    let (n, _writer, mut reader) = attached("closed", ReadMode::Latest);
    scribble(&n, CLOSED_AT, &0xdead_beef_u32.to_le_bytes());
    let mut out = Vec::new();
    assert_corrupt(reader.read_copy(Wait::Poll, &mut out), "closed flag");
}

#[test]
fn garbage_slot_metadata_never_takes_a_reader_outside_its_slot() {
    let (n, mut writer, mut reader) = attached("len", ReadMode::InOrder);
    writer.publish(b"second", stamp(2)).unwrap();
    // Message 1 lives in slot 1: keep its (valid) sequence word, lie about its length.
    scribble(&n, METAS_AT + META_SIZE + META_LEN_FIELD, &u64::MAX.to_le_bytes());
    let mut reader = within_deadline(move || {
        let sample = reader.read(Wait::Poll).unwrap().expect("message 1 is there");
        assert_eq!(sample.bytes().len() as u64, CAPACITY, "the length is clamped to the slot");
        assert!(sample.bytes().starts_with(b"second"));
        drop(sample);
        reader
    });

    // Every slot's sequence word claims a message far in the future: a `Latest` reader whose
    // head never moves must give up on the look, not spin on "lapped" forever.
    let (n2, mut w2, mut latest) = attached("seq", ReadMode::Latest);
    w2.publish(b"third", stamp(3)).unwrap();
    for slot in 0..4 {
        scribble(&n2, METAS_AT + slot * META_SIZE, &(u64::MAX - 1).to_le_bytes());
    }
    let mut out = Vec::new();
    let got = within_deadline(move || latest.read_copy(Wait::Poll, &mut out).unwrap());
    assert_eq!(got, None, "nothing usable, and no hang");

    // And random garbage over all metadata: whatever comes back stays inside a slot.
    for seed in 1..=50u64 {
        scribble(&n, METAS_AT, &garbage((4 * META_SIZE) as usize, seed));
        let result = within_deadline(move || {
            let r = reader.read(Wait::Poll).map(|s| s.map(|s| s.bytes().len()));
            (reader, r)
        });
        reader = result.0;
        if let Ok(Some(len)) = result.1 {
            assert!(len as u64 <= CAPACITY);
        }
    }
}

#[test]
fn a_frame_reader_reports_a_trampled_header_too() {
    let n = name("frame");
    let geometry = FrameGeometry::packed(64, 48, PixelFormat::Bgr8);
    let mut writer = FrameWriter::create(&n, geometry, 3).unwrap();
    let mut reader = FrameReader::attach(&n, FrameReaderOptions::default()).unwrap();
    writer.loan().publish(stamp(1));
    assert!(reader.read(Wait::Poll).unwrap().is_some());
    scribble(&n, 0, &garbage(METAS_AT as usize, 99));
    writer.loan().publish(stamp(2));
    match within_deadline(move || reader.read(Wait::Poll).map(|f| f.is_some())) {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}
