//! Frames held without a borrow (`FrameReader::read_held`), as the Python SDK's arrays hold
//! them: several at once from one reader, each pinned until released, the reader reading on
//! in between, and a limit that is an error rather than a torn frame.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_shmem_ipc::{
    Error, FrameGeometry, FrameReader, FrameReaderOptions, FrameWriter, PixelFormat, Stamp, Wait,
};

const SMALL: FrameGeometry = FrameGeometry::packed(16, 8, PixelFormat::Gray8);

fn publish(writer: &mut FrameWriter, id: u64) -> Option<u64> {
    let bytes = SMALL.frame_bytes() as usize;
    writer.publish_copy(&vec![id as u8; bytes], Stamp { id, ..Stamp::default() }).unwrap()
}

#[test]
fn held_frames_stay_pinned_while_the_reader_reads_on() {
    let name = format!("h{}-held", std::process::id());
    // Two held frames and one reading: slots ≥ 3 pins + 2.
    let mut writer = FrameWriter::create(&name, SMALL, 5).unwrap();
    let mut reader = FrameReader::attach(&name, FrameReaderOptions::default()).unwrap();
    reader.set_max_held(3);
    let mut other = FrameReader::attach(&name, FrameReaderOptions::default()).unwrap();

    publish(&mut writer, 1);
    let first = reader.read_held(Wait::Poll).unwrap().expect("frame 1");
    publish(&mut writer, 2);
    let second = reader.read_held(Wait::Poll).unwrap().expect("frame 2");
    assert_eq!(reader.held(), 2);
    assert!(other.held_pixels(&first).is_none(), "another reader's frame is not viewable through this one");
    assert!(!other.held_is_intact(&first));

    // The writer laps the ring many times; the reader reads on through its third entry.
    for id in 3..=60 {
        assert!(publish(&mut writer, id).is_some(), "frame {id} dropped with 2 of 5 slots pinned");
        let frame = reader.read(Wait::Poll).unwrap().expect("the newest frame");
        assert_eq!(frame.info().stamp.id, id);
        assert!(frame.pixels().iter().all(|&b| b == id as u8));
        frame.finish().unwrap();
        assert!(reader.held_pixels(&first).unwrap().iter().all(|&b| b == 1), "frame 1 changed at {id}");
        assert!(reader.held_pixels(&second).unwrap().iter().all(|&b| b == 2), "frame 2 changed at {id}");
    }
    assert_eq!(writer.stats().dropped, 0);

    // At the limit: an error, and nothing held is touched.
    publish(&mut writer, 61);
    let third = reader.read_held(Wait::Poll).unwrap().expect("frame 61");
    publish(&mut writer, 62);
    match reader.read_held(Wait::Poll) {
        Err(Error::TooManyHeld { max: 3, .. }) => {}
        other => panic!("a fourth held frame: {other:?}"),
    }
    assert!(matches!(other.release(third), Err(Error::InvalidConfig { .. })), "released by another reader");
    // (`third` went to `other.release`, which refused it: its pin stays with `reader`.)
    assert_eq!(reader.held(), 3);

    // Released: the entry is free again, and the next read takes the newest frame.
    assert_eq!(reader.release(first).unwrap().stamp.id, 1);
    let next = reader.read_held(Wait::Poll).unwrap().expect("frame 62");
    assert_eq!(next.info().stamp.id, 62);

    // The writer closes the ring: held frames stay viewable, and intact.
    drop(writer);
    assert!(reader.held_pixels(&second).unwrap().iter().all(|&b| b == 2));
    assert_eq!(reader.release(second).unwrap().stamp.id, 2);
    assert_eq!(reader.release(next).unwrap().stamp.id, 62);
    assert!(matches!(reader.read_held(Wait::Poll), Err(Error::WriterGone { .. })));
    let stats = reader.stats();
    assert_eq!(stats.read, 61, "{stats:?}");
}
