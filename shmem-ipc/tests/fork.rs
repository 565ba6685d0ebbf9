//! A reader used in a `fork()` of the process that attached it (PyTorch `DataLoader`
//! workers, `multiprocessing` with fork): the child shares its parent's reader entry, so
//! pinning or unpinning there takes the parent's pin away and the writer may rewrite the
//! frame the parent holds. The child must be refused and leave the entry alone.
//!
//! Alone in its test binary, so no other test thread is inside a lock when it forks.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]
#![allow(unsafe_code, reason = "fork(2) and _exit(2) have no safe wrapper: the test is about fork")]

use ads_shmem_ipc::{
    Error, FrameGeometry, FrameReader, FrameReaderOptions, FrameWriter, PixelFormat, Stamp, Wait,
};

const SMALL: FrameGeometry = FrameGeometry::packed(8, 4, PixelFormat::Gray8);

#[test]
fn a_forked_reader_is_refused_and_leaves_its_parents_pin_alone() {
    let name = format!("f{}-fork", std::process::id());
    let mut writer = FrameWriter::create(&name, SMALL, 3).unwrap();
    let mut reader = FrameReader::attach(&name, FrameReaderOptions::default()).unwrap();
    let bytes = SMALL.frame_bytes() as usize;
    let _ = writer.publish_copy(&vec![1; bytes], Stamp { id: 0, ..Stamp::default() }).unwrap();
    let held = reader.read(Wait::Poll).unwrap().expect("frame 0");
    let before = held.pixels().to_vec();

    // SAFETY: this test is the only one in its binary, so the only other thread is libtest's
    // main thread, blocked waiting for it; the child uses the ring (glibc makes malloc safe
    // across fork) and leaves by _exit, without running the parent's destructors (the writer
    // would remove the ring).
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        // What a child does with the reader it inherited: finish the frame, read on, drop.
        drop(held);
        let code = match reader.read(Wait::Poll) {
            Err(Error::ForkedReader { .. }) => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        drop(reader);
        // SAFETY: ends the child at once, as a forked child of a test must.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status), "the child did not exit: status {status:#x}");
    let code = libc::WEXITSTATUS(status);
    assert_eq!(code, 0, "the forked child was not refused (1: it read a frame, 2: another error)");

    // The parent's pin must still hold: the writer laps the ring many times around it.
    for id in 1..=30u64 {
        let _ = writer.publish_copy(&vec![(id + 1) as u8; bytes], Stamp { id, ..Stamp::default() }).unwrap();
        assert!(held.pixels() == before.as_slice(), "the parent's frame changed after frame {id}");
    }
    assert_eq!(writer.stats().dropped, 0, "with 3 slots and one pin the writer never drops");
    assert_eq!(held.finish().unwrap().stamp.id, 0, "the parent's frame is still frame 0, intact");
    // And the parent's reader reads on.
    assert_eq!(reader.read(Wait::Poll).unwrap().expect("frame 30").info().stamp.id, 30);
}
