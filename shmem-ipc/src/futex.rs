//! Process-shared futex wait/wake on a word in the segment.
//!
//! Not `FUTEX_PRIVATE`: the word is in a `MAP_SHARED` mapping and the waiter and the waker
//! are different processes. A futex holds no lock, so a process dying mid-wait or mid-wake
//! leaves nobody blocked (unlike a process-shared pthread mutex).

use crate::sync::AtomicU32;
use rustix::thread::futex;
use std::time::Duration;

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are fine: callers
/// re-check their condition in a loop.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // EAGAIN (word changed), EINTR and ETIMEDOUT all mean "look again".
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
}

/// Wakes every process sleeping on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}
