//! Timestamps that mean the same thing in every process on the machine.

use rustix::time::{clock_gettime, ClockId};

/// Nanoseconds on `CLOCK_MONOTONIC`: shared by all processes on one machine, never jumps,
/// so a capture time written by one process can be subtracted from `now` in another.
pub fn monotonic_ns() -> u64 {
    to_ns(clock_gettime(ClockId::Monotonic))
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`), for humans and for other machines.
pub fn wall_ns() -> u64 {
    to_ns(clock_gettime(ClockId::Realtime))
}

fn to_ns(ts: rustix::time::Timespec) -> u64 {
    // Both clocks are non-negative on Linux; saturate rather than wrap if that ever changes.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}
