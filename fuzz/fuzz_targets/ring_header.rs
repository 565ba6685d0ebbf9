//! Attaching to a ring whose segment bytes come from the fuzzer: a live message writer
//! creates the ring (so its lock is held and the reader table exists), then the fuzzer's
//! bytes overwrite the start of its segment file in place, and the ring is attached as a
//! message ring and as a frame ring and read. Every outcome must be a typed error or data
//! inside the mapping (AddressSanitizer checks the reads); never a panic or a hang.
#![no_main]

use ads_shmem_ipc::{shm_path, FrameReader, FrameReaderOptions, MessageReader, MessageWriter, ReadMode, Wait};
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::FileExt as _;

fuzz_target!(|data: &[u8]| {
    let name = format!("fuzz-{}", std::process::id());
    let Ok(writer) = MessageWriter::create(&name, 4096, 4) else { return };
    let file = std::fs::OpenOptions::new().write(true).open(shm_path(&name)).expect("the segment file");
    let size = file.metadata().expect("fstat").len() as usize;
    // In place, never resizing: the writer's own mapping must stay backed.
    file.write_all_at(&data[..data.len().min(size)], 0).expect("writing the segment file");
    if let Ok(mut reader) = MessageReader::attach(&name, ReadMode::InOrder) {
        let mut out = Vec::new();
        for _ in 0..4 {
            if let Ok(Some(info)) = reader.read_copy(Wait::Poll, &mut out) {
                assert_eq!(out.len(), info.len);
            }
        }
        if let Ok(Some(sample)) = reader.read(Wait::Poll) {
            let _ = sample.bytes().iter().fold(0u8, |a, b| a ^ b);
            let _ = sample.finish();
        }
    }
    if let Ok(mut reader) = FrameReader::attach(&name, FrameReaderOptions::default()) {
        if let Ok(Some(frame)) = reader.read(Wait::Poll) {
            let _ = frame.pixels().iter().fold(0u8, |a, b| a ^ b);
            let _ = frame.finish();
        }
    }
    drop(writer);
});
