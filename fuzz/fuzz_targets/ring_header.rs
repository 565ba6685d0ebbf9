//! Attaching to a ring segment whose bytes come from the fuzzer: a file written into
//! /dev/shm under our prefix, then attached as a message ring and as a frame ring and read.
//! Every outcome must be a typed error or data inside the mapping (AddressSanitizer checks
//! the reads); never a panic or a hang.
//!
//! If the first input byte is odd, the writer pid and start time in the header are replaced by
//! this process's, so attach gets past the "writer is dead" check and the read paths are fuzzed
//! too.
#![no_main]

use ads_shmem_ipc::{shm_path, FrameReader, FrameReaderOptions, MessageReader, ReadMode, Wait};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Offsets of `writer_pid` (u32) and `writer_start_ticks` (u64) in the segment.
const WRITER_PID_AT: usize = 44;
const WRITER_START_AT: usize = 88;

fn me() -> (u32, u64) {
    static ME: OnceLock<(u32, u64)> = OnceLock::new();
    *ME.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
        let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
        // Field 22 (starttime) is the 20th after the name.
        let start = after_name.split(' ').nth(19).and_then(|f| f.parse().ok()).expect("starttime");
        (std::process::id(), start)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, segment)) = data.split_first() else { return };
    // A zero magic word means "writer still initialising": attach waits 200 ms for it, which
    // would cut the fuzzer to a few inputs a second. That path is covered by the ring's tests.
    if segment.len() >= 8 && segment[..8] == [0; 8] {
        return;
    }
    let mut bytes = segment.to_vec();
    if flags & 1 == 1 && bytes.len() >= WRITER_START_AT + 8 {
        let (pid, start) = me();
        bytes[WRITER_PID_AT..WRITER_PID_AT + 4].copy_from_slice(&pid.to_le_bytes());
        bytes[WRITER_START_AT..WRITER_START_AT + 8].copy_from_slice(&start.to_le_bytes());
    }
    let name = format!("fuzz-{}", std::process::id());
    let path = shm_path(&name);
    std::fs::write(&path, &bytes).expect("writing the segment file");
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
    let _ = std::fs::remove_file(&path);
});
