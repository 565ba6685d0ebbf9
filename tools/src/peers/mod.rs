//! The transports our shared-memory ring replaces (ZeroMQ over `ipc://` and `tcp://`) and the
//! one it competes with (iceoryx2), driven with one message contract so their latencies can be
//! compared with the ring's.
//!
//! # Message contract
//!
//! The publisher sends `warmup + frames` messages with index `i = 0..warmup + frames`. Each is
//! exactly `frame_bytes` long:
//!
//! | bytes    | content                                                                  |
//! |----------|--------------------------------------------------------------------------|
//! | `0..8`   | `i` as `u64` little endian                                               |
//! | `8..16`  | [`monotonic_ns`] taken after the payload is written, right before `send` |
//! | `16..`   | `i as u8`                                                                |
//!
//! Message `i` leaves no earlier than `start + i * interval_ns`, so a late frame does not shift
//! the later ones. The receiver stamps each message as soon as the transport hands it over and
//! ignores the warm-up indices. Every measured index ends up in exactly one of
//! [`Received::latencies_ns`] (intact), [`Received::corrupt`] (arrived damaged) or
//! [`Received::lost`] (never arrived); only a message too short to carry an index adds to
//! `corrupt` without having an index of its own.
//!
//! Each transport builds the payload in the transport's own send buffer before stamping it, so
//! the latency is the transport's alone and never includes a copy out of the producer's memory.

use std::time::{Duration, Instant};

use ads_shmem_ipc::clock::monotonic_ns;

pub mod iceoryx2_peer;
pub mod zmq_peer;

/// How one benchmark run is shaped. Both sides get the same value.
#[derive(Debug, Clone)]
pub struct PeerRun {
    /// Measured messages, sent after the warm-up ones.
    pub frames: u64,
    /// Messages sent first and not measured: they let connections, caches and page tables settle.
    pub warmup: u64,
    /// Length of every message; at least [`HEADER_BYTES`].
    pub frame_bytes: usize,
    /// Spacing between send times; 0 sends as fast as the transport takes them.
    pub interval_ns: u64,
    /// Upper bound on the whole call, startup handshake included, so a missing peer never hangs
    /// a benchmark.
    pub deadline: Duration,
}

/// How a receiver waits for the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Sleep in the kernel until woken: the CPU-friendly way a product would run.
    Blocking,
    /// Spin on a non-blocking receive: lowest latency, one core burnt.
    BusyPoll,
}

/// What a receiver measured.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// One entry per intact measured message, in arrival order.
    pub latencies_ns: Vec<u64>,
    /// Measured indices that never arrived (gaps, or still missing at the deadline).
    pub lost: u64,
    /// Messages that arrived with the wrong length, wrong fill bytes or an impossible index.
    pub corrupt: u64,
}

/// Bytes 0..8 carry the index, 8..16 the send stamp; the fill starts after them.
pub const HEADER_BYTES: usize = 16;

impl PeerRun {
    /// Messages the publisher sends, warm-up included.
    fn total(&self) -> u64 {
        self.warmup.saturating_add(self.frames)
    }

    /// Rejects shapes the contract cannot express, before any socket or shared memory exists.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.frame_bytes >= HEADER_BYTES,
            "frame_bytes {} is shorter than the {HEADER_BYTES}-byte header",
            self.frame_bytes
        );
        anyhow::ensure!(self.frames > 0, "a run needs at least one measured frame");
        Ok(())
    }
}

/// Writes everything but the send stamp, so only [`stamp_frame`] remains before `send`.
fn fill_frame(frame: &mut [u8], index: u64) {
    frame[HEADER_BYTES..].fill(fill_byte(index));
    write_index(frame, index);
}

/// The byte every position from [`HEADER_BYTES`] on carries in message `index`.
fn fill_byte(index: u64) -> u8 {
    index as u8
}

/// For transports that initialise the body themselves (iceoryx2 hands out uninitialised
/// memory): the header part of [`fill_frame`], with the stamp zeroed until [`stamp_frame`].
fn write_index(frame: &mut [u8], index: u64) {
    frame[..8].copy_from_slice(&index.to_le_bytes());
    frame[8..HEADER_BYTES].fill(0);
}

/// Must be the last write before `send`: the latency starts here.
fn stamp_frame(frame: &mut [u8]) {
    frame[8..HEADER_BYTES].copy_from_slice(&monotonic_ns().to_le_bytes());
}

/// True if every byte of `bytes` is `fill`: the whole-frame torn check of every transport
/// (a frame with bytes of two messages fails it wherever they meet). No early exit, so it
/// vectorises: ~0.1 ms for an 800x600 BGR frame, on the reader, after its latency stamp.
pub fn all_bytes_are(bytes: &[u8], fill: u8) -> bool {
    bytes.iter().fold(0u8, |seen, &b| seen | (b ^ fill)) == 0
}

/// Reads a little-endian `u64` at `at`; the caller has checked the length.
fn read_u64(frame: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&frame[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Below this much time left, [`Pacer`] spins instead of sleeping: a sleep can overshoot by the
/// timer slack plus a scheduling delay, which would show up as send jitter.
const SPIN_BELOW: Duration = Duration::from_micros(200);

/// Holds the publisher to an absolute schedule: message `i` is due at `start + i * interval`,
/// so one late frame never delays the ones after it.
#[derive(Debug)]
struct Pacer {
    start: Instant,
    interval_ns: u64,
}

impl Pacer {
    fn start(interval_ns: u64) -> Self {
        Self { start: Instant::now(), interval_ns }
    }

    /// Returns once message `index` is due (immediately if it is already late).
    fn wait_for(&self, index: u64) {
        let offset = Duration::from_nanos(index.saturating_mul(self.interval_ns));
        let Some(due) = self.start.checked_add(offset) else {
            return;
        };
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if left > SPIN_BELOW {
                std::thread::sleep(left - SPIN_BELOW);
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// The end of a call's time budget; `None` from [`Deadline::remaining`] means it has passed.
#[derive(Debug, Clone, Copy)]
struct Deadline(Instant);

impl Deadline {
    fn after(budget: Duration) -> Self {
        // A budget too large to represent is as good as no deadline at all.
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        Self(Instant::now().checked_add(budget).unwrap_or_else(|| Instant::now() + far))
    }

    fn remaining(&self) -> Option<Duration> {
        let left = self.0.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    fn passed(&self) -> bool {
        self.remaining().is_none()
    }
}

/// Receiver-side accounting shared by every transport, so "lost" and "corrupt" mean the same
/// thing for all of them.
#[derive(Debug)]
struct Tally {
    warmup: u64,
    last_index: u64,
    frame_bytes: usize,
    /// Lowest measured index not yet accounted for.
    next_expected: u64,
    done: bool,
    received: Received,
}

impl Tally {
    fn new(run: &PeerRun) -> Self {
        let total = run.total();
        Self {
            warmup: run.warmup,
            last_index: total.saturating_sub(1),
            frame_bytes: run.frame_bytes,
            next_expected: run.warmup,
            done: false,
            received: Received {
                latencies_ns: Vec::with_capacity(usize::try_from(run.frames).unwrap_or(0)),
                ..Received::default()
            },
        }
    }

    /// True once the publisher's last index has arrived: nothing more is coming.
    fn done(&self) -> bool {
        self.done
    }

    /// Accounts for one message; `now_ns` must be taken as soon as the transport handed it over.
    fn record(&mut self, frame: &[u8], now_ns: u64) {
        if frame.len() < HEADER_BYTES {
            self.received.corrupt += 1;
            return;
        }
        let index = read_u64(frame, 0);
        if index > self.last_index {
            self.received.corrupt += 1;
            return;
        }
        if index == self.last_index {
            self.done = true;
        }
        if index < self.warmup {
            return;
        }
        if index < self.next_expected {
            // Every transport here is FIFO with one publisher, so an index that goes backwards
            // (a duplicate or a reorder) can only be damage.
            self.received.corrupt += 1;
            return;
        }
        self.received.lost += index - self.next_expected;
        self.next_expected = index + 1;

        let intact =
            frame.len() == self.frame_bytes && all_bytes_are(&frame[HEADER_BYTES..], fill_byte(index));
        if intact {
            let sent_ns = read_u64(frame, 8);
            self.received.latencies_ns.push(now_ns.saturating_sub(sent_ns));
        } else {
            self.received.corrupt += 1;
        }
    }

    /// Counts every measured index that has not arrived as lost.
    fn finish(mut self) -> Received {
        if self.next_expected <= self.last_index {
            self.received.lost += self.last_index + 1 - self.next_expected;
        }
        self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(frames: u64, warmup: u64, frame_bytes: usize) -> PeerRun {
        PeerRun { frames, warmup, frame_bytes, interval_ns: 0, deadline: Duration::from_secs(1) }
    }

    fn frame(index: u64, len: usize) -> Vec<u8> {
        let mut f = vec![0; len];
        fill_frame(&mut f, index);
        stamp_frame(&mut f);
        f
    }

    #[test]
    fn tally_counts_gaps_damage_and_missing_tail() {
        let run = run(5, 2, 32);
        let mut t = Tally::new(&run);
        t.record(&frame(0, 32), monotonic_ns()); // warm-up: ignored
        t.record(&frame(2, 32), monotonic_ns());
        let mut bad = frame(4, 32);
        bad[31] ^= 1;
        t.record(&bad, monotonic_ns()); // index 3 lost, 4 corrupt
        let mut middle = frame(5, 32);
        middle[20] ^= 1;
        t.record(&middle, monotonic_ns()); // a byte in the middle: corrupt too
        t.record(&frame(4, 32), monotonic_ns()); // duplicate: corrupt
        t.record(&[1, 2, 3], monotonic_ns()); // too short: corrupt
        assert!(!t.done());
        let r = t.finish(); // 6 never came
        assert_eq!(r.latencies_ns.len(), 1);
        assert_eq!(r.lost, 2);
        assert_eq!(r.corrupt, 4);
    }

    #[test]
    fn tally_done_on_last_index() {
        let run = run(3, 0, HEADER_BYTES);
        let mut t = Tally::new(&run);
        for i in 0..3 {
            t.record(&frame(i, HEADER_BYTES), monotonic_ns());
        }
        assert!(t.done());
        let r = t.finish();
        assert_eq!((r.latencies_ns.len(), r.lost, r.corrupt), (3, 0, 0));
    }

    #[test]
    fn validate_rejects_short_frames() {
        assert!(run(1, 0, HEADER_BYTES - 1).validate().is_err());
        assert!(run(0, 1, 64).validate().is_err());
        assert!(run(1, 0, HEADER_BYTES).validate().is_ok());
    }
}
