//! The slot protocol: per-slot sequence locks, the published head, and the reader cursor.
//!
//! Nothing here knows about shared memory: it works on any `&SlotMeta`/`&WriterLine`, which
//! is how the loom model test (bottom of this file) checks it on the heap. The mapping layer
//! (`segment`) only places these structs in `/dev/shm`.
//!
//! Message `n` (0-based, counted by the writer) lives in slot `n % slot_count`. The slot's
//! `seq` word is `2n + 1` while message `n` is being written and `2n + 2` once it is complete,
//! so a reader can tell from one load whether the slot holds the message it wants, an older
//! one (not yet written) or a newer one (it was lapped). Nobody ever waits on a lock: the
//! writer overwrites, readers detect it.

use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

/// Sequence value while message `n` is being written.
pub(crate) const fn writing(n: u64) -> u64 {
    2 * n + 1
}

/// Sequence value once message `n` is complete.
pub(crate) const fn complete(n: u64) -> u64 {
    2 * n + 2
}

/// Metadata of one slot; every field but `seq` is guarded by `seq`.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct SlotMeta {
    pub(crate) seq: AtomicU64,
    pub(crate) id: AtomicU64,
    pub(crate) capture_mono_ns: AtomicU64,
    pub(crate) capture_wall_ns: AtomicU64,
    pub(crate) publish_mono_ns: AtomicU64,
    pub(crate) len: AtomicU64,
}

/// The writer's hot cache line.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct WriterLine {
    /// Number of messages published; message `head - 1` is the newest complete one.
    pub(crate) head: AtomicU64,
    /// Low 32 bits of `head`: the futex word readers sleep on.
    pub(crate) notify: AtomicU32,
    /// Set to 1 when the writer shuts down cleanly.
    pub(crate) closed: AtomicU32,
    /// Monotonic ns of the writer's last sign of life (publish or explicit heartbeat).
    pub(crate) heartbeat_ns: AtomicU64,
    /// Loans dropped without being published.
    pub(crate) abandoned: AtomicU64,
}

/// The readers' cache line, kept apart from the writer's so readers never false-share it.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct ReaderLine {
    /// Readers currently (about to be) asleep on `WriterLine::notify`. A reader killed while
    /// waiting leaves this raised; the only cost is one futex-wake syscall per publish.
    pub(crate) waiters: AtomicU32,
}

impl SlotMeta {
    #[cfg(any(loom, test))]
    pub(crate) fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            id: AtomicU64::new(0),
            capture_mono_ns: AtomicU64::new(0),
            capture_wall_ns: AtomicU64::new(0),
            publish_mono_ns: AtomicU64::new(0),
            len: AtomicU64::new(0),
        }
    }
}

impl WriterLine {
    #[cfg(any(loom, test))]
    pub(crate) fn new() -> Self {
        Self {
            head: AtomicU64::new(0),
            notify: AtomicU32::new(0),
            closed: AtomicU32::new(0),
            heartbeat_ns: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
        }
    }
}

/// What the writer attaches to a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Caller's identifier, e.g. the frame number of the camera or the source frame of a result.
    pub id: u64,
    /// When the data was captured, `CLOCK_MONOTONIC` ns (see [`crate::clock`]).
    pub capture_mono_ns: u64,
    /// When the data was captured, ns since the Unix epoch.
    pub capture_wall_ns: u64,
}

/// What a reader learns about a message besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleInfo {
    /// Position in the writer's stream: 0 for the first message the writer published.
    pub seq: u64,
    /// The writer's [`Stamp`].
    pub stamp: Stamp,
    /// When the writer published it, `CLOCK_MONOTONIC` ns: `now - publish_mono_ns` is the
    /// ring's hand-off latency.
    pub publish_mono_ns: u64,
    /// Payload length in bytes.
    pub len: usize,
}

/// Marks the slot as being rewritten for message `n`; call before touching its payload.
pub(crate) fn begin_write(slot: &SlotMeta, n: u64) {
    slot.seq.store(writing(n), Ordering::Relaxed);
    // Sync point: keeps the odd store above ahead of every payload and meta store below;
    // pairs with the fence(Acquire) in `still_intact`, so a reader that saw any new byte
    // sees an odd (changed) sequence on its second load.
    fence(Ordering::Release);
}

/// Publishes message `n` whose payload is already in place.
pub(crate) fn commit(writer: &WriterLine, slot: &SlotMeta, n: u64, stamp: Stamp, len: u64, now_ns: u64) {
    slot.id.store(stamp.id, Ordering::Relaxed);
    slot.capture_mono_ns.store(stamp.capture_mono_ns, Ordering::Relaxed);
    slot.capture_wall_ns.store(stamp.capture_wall_ns, Ordering::Relaxed);
    slot.publish_mono_ns.store(now_ns, Ordering::Relaxed);
    slot.len.store(len, Ordering::Relaxed);
    // Sync point: releases payload + meta; pairs with the Acquire load of `seq` in `probe`.
    slot.seq.store(complete(n), Ordering::Release);
    // Sync point: pairs with the Acquire load of `head` in readers; a reader that sees
    // head = n + 1 finds slot `n` complete (or already lapped).
    writer.head.store(n + 1, Ordering::Release);
    writer.heartbeat_ns.store(now_ns, Ordering::Relaxed);
}

/// Moves the futex word forward and says whether anybody may be asleep on it.
pub(crate) fn announce(writer: &WriterLine, readers: &ReaderLine, head: u64) -> bool {
    // SeqCst on both sides (here and in `prepare_sleep`) is a Dekker handshake: either the
    // writer sees the waiter and wakes it, or the waiter sees the new word and does not sleep.
    writer.notify.store(head as u32, Ordering::SeqCst);
    readers.waiters.load(Ordering::SeqCst) > 0
}

/// Registers a reader as about to sleep; returns the futex word to sleep on, or `None` if
/// the head moved past `seen_head` meanwhile (then the reader must look again, not sleep).
pub(crate) fn prepare_sleep(writer: &WriterLine, readers: &ReaderLine, seen_head: u64) -> Option<u32> {
    readers.waiters.fetch_add(1, Ordering::SeqCst);
    let word = writer.notify.load(Ordering::SeqCst);
    if word == seen_head as u32 {
        Some(word)
    } else {
        readers.waiters.fetch_sub(1, Ordering::SeqCst);
        None
    }
}

/// Undoes `prepare_sleep` once the reader is awake again.
pub(crate) fn finish_sleep(readers: &ReaderLine) {
    readers.waiters.fetch_sub(1, Ordering::SeqCst);
}

/// A slot as the reader found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The slot holds message `n`, seen with sequence `seq`; validate with `still_intact`.
    Ready { seq: u64, info: SampleInfo },
    /// The writer has already overwritten message `n`.
    Lapped,
    /// Message `n` is not complete yet.
    NotYet,
}

/// Looks at slot for message `n`. `capacity` bounds the reported length, so a torn or
/// corrupted length can never make a reader look past the slot.
pub(crate) fn probe(slot: &SlotMeta, n: u64, capacity: u64) -> Probe {
    // Sync point: pairs with the Release store of `seq` in `commit`.
    let seq = slot.seq.load(Ordering::Acquire);
    if seq == complete(n) {
        let len = slot.len.load(Ordering::Relaxed).min(capacity);
        let info = SampleInfo {
            seq: n,
            stamp: Stamp {
                id: slot.id.load(Ordering::Relaxed),
                capture_mono_ns: slot.capture_mono_ns.load(Ordering::Relaxed),
                capture_wall_ns: slot.capture_wall_ns.load(Ordering::Relaxed),
            },
            publish_mono_ns: slot.publish_mono_ns.load(Ordering::Relaxed),
            // `len <= capacity`, and capacities are checked to fit in usize at creation/attach.
            len: usize::try_from(len).unwrap_or(usize::MAX),
        };
        Probe::Ready { seq, info }
    } else if seq > complete(n) {
        Probe::Lapped
    } else {
        Probe::NotYet
    }
}

/// True if nothing the reader read since `probe` returned `seq` can have been overwritten.
pub(crate) fn still_intact(slot: &SlotMeta, seq: u64) -> bool {
    // Sync point: pairs with the fence(Release) in `begin_write`: if any byte we read came
    // from a newer write, this load sees that write's odd sequence (or a later one).
    fence(Ordering::Acquire);
    slot.seq.load(Ordering::Relaxed) == seq
}

/// How a reader walks the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Always the newest message; older unread ones are skipped (and counted).
    #[default]
    Latest,
    /// Every message in order; those the writer overwrote first are counted as dropped.
    InOrder,
}

/// Per-reader counters. Every message from `first_seq` to the last one the reader took is
/// counted exactly once in `read`, `skipped`, `dropped` or `overruns`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Where the counting starts: the writer's head when an in-order reader attached (what
    /// it missed after that is `dropped`), or the first message a latest reader took.
    pub first_seq: Option<u64>,
    /// Messages returned and still intact when the reader finished with them.
    pub read: u64,
    /// Messages passed over in `Latest` mode because a newer one was there.
    pub skipped: u64,
    /// Messages lost in `InOrder` mode because the writer lapped the reader.
    pub dropped: u64,
    /// Messages the writer overwrote while they were being read: discarded, never returned
    /// as valid.
    pub overruns: u64,
}

/// Which message a reader wants next, and the counting that goes with it.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    mode: ReadMode,
    slot_count: u64,
    /// Next message wanted (in order) or the one after the newest looked at (latest).
    next: Option<u64>,
    pub(crate) stats: ReaderStats,
}

impl Cursor {
    /// `head` is the writer's head when the reader attaches: an in-order reader gets every
    /// message published from then on; a latest reader's first read is the newest there is.
    pub(crate) fn new(mode: ReadMode, slot_count: u64, head: u64) -> Self {
        let next = (mode == ReadMode::InOrder).then_some(head);
        Self { mode, slot_count, next, stats: ReaderStats { first_seq: next, ..ReaderStats::default() } }
    }

    /// The message to try given the published `head`, or `None` if nothing new is there.
    pub(crate) fn target(&self, head: u64) -> Option<u64> {
        let newest = head.checked_sub(1)?;
        match (self.mode, self.next) {
            (_, None) => Some(newest),
            (ReadMode::Latest, Some(next)) => (newest >= next).then_some(newest),
            (ReadMode::InOrder, Some(next)) => (next <= newest).then_some(next),
        }
    }

    /// The target `n` was found in its slot: it is taken (counted later by `settle`).
    pub(crate) fn take(&mut self, n: u64) {
        self.stats.first_seq.get_or_insert(n);
        if let Some(next) = self.next {
            let passed = n.saturating_sub(next);
            match self.mode {
                ReadMode::Latest => self.stats.skipped += passed,
                ReadMode::InOrder => self.stats.dropped += passed,
            }
        }
        self.next = Some(n + 1);
    }

    /// The target `n` had already been overwritten: in order, jump to the oldest message
    /// that can still be intact and count the rest as dropped; latest simply retries.
    pub(crate) fn lapped(&mut self, n: u64, head: u64) {
        if self.mode == ReadMode::InOrder {
            self.stats.first_seq.get_or_insert(n);
            // Slots hold head-N ..= head-1 unless the writer is already rewriting head-N's
            // slot; then the next probe says lapped again and we move one further (always
            // past `n`, so this terminates).
            let oldest = head.saturating_sub(self.slot_count).max(n + 1);
            let from = self.next.unwrap_or(n);
            self.stats.dropped += oldest.saturating_sub(from);
            self.next = Some(oldest);
        }
    }

    /// Counts a taken message once the reader is done with it.
    pub(crate) fn settle(&mut self, intact: bool) {
        if intact {
            self.stats.read += 1;
        } else {
            self.stats.overruns += 1;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn in_order_counts_every_message_once() {
        let mut c = Cursor::new(ReadMode::InOrder, 4, 2);
        assert_eq!(c.target(2), None, "messages from before the attach are not delivered");
        assert_eq!(c.target(3), Some(2));
        c.take(2);
        c.settle(true);
        assert_eq!(c.target(3), None);
        assert_eq!(c.target(10), Some(3));
        c.lapped(3, 10);
        assert_eq!(c.target(10), Some(6), "jumps to head - slots");
        c.lapped(6, 11);
        assert_eq!(c.target(11), Some(7), "and one further if that slot is being rewritten");
        c.take(7);
        c.settle(false);
        assert_eq!(c.stats, ReaderStats { first_seq: Some(2), read: 1, skipped: 0, dropped: 4, overruns: 1 });
        // 2..=7 looked at: 6 messages, each counted once.
        let s = c.stats;
        assert_eq!(s.read + s.skipped + s.dropped + s.overruns, 6);
    }

    #[test]
    fn in_order_counts_drops_from_the_attach_head() {
        let mut c = Cursor::new(ReadMode::InOrder, 4, 5);
        c.lapped(5, 20);
        assert_eq!(c.target(20), Some(16));
        c.take(16);
        c.settle(true);
        let s = c.stats;
        assert_eq!((s.first_seq, s.dropped, s.read), (Some(5), 11, 1));
    }

    #[test]
    fn latest_skips_to_newest_and_counts_the_gap() {
        let mut c = Cursor::new(ReadMode::Latest, 4, 0);
        assert_eq!(c.target(1), Some(0));
        c.take(0);
        c.settle(true);
        assert_eq!(c.target(1), None, "nothing new");
        assert_eq!(c.target(6), Some(5));
        c.take(5);
        c.settle(true);
        assert_eq!(c.stats, ReaderStats { first_seq: Some(0), read: 2, skipped: 4, dropped: 0, overruns: 0 });
    }

    #[test]
    fn probe_tells_ready_lapped_and_not_yet() {
        let slot = SlotMeta::new();
        let writer = WriterLine::new();
        assert_eq!(probe(&slot, 0, 16), Probe::NotYet);
        begin_write(&slot, 0);
        assert_eq!(probe(&slot, 0, 16), Probe::NotYet);
        let stamp = Stamp { id: 7, capture_mono_ns: 1, capture_wall_ns: 2 };
        commit(&writer, &slot, 0, stamp, 99, 5);
        let Probe::Ready { seq, info } = probe(&slot, 0, 16) else { panic!("not ready") };
        assert_eq!(info.stamp, stamp);
        assert_eq!(info.len, 16, "length is clamped to the capacity");
        assert!(still_intact(&slot, seq));
        begin_write(&slot, 3);
        assert!(!still_intact(&slot, seq));
        assert_eq!(probe(&slot, 0, 16), Probe::Lapped);
    }
}

/// Model check of publish/read: every interleaving of one writer lapping a 3-slot ring and
/// one reader, with the payload made of atomics so loom can see torn data. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p ads-shmem-ipc --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;

    const SLOTS: usize = 3;
    const WORDS: usize = 2;

    struct Ring {
        writer: WriterLine,
        metas: Vec<SlotMeta>,
        payload: Vec<[AtomicU64; WORDS]>,
    }

    #[test]
    fn loom_reader_never_accepts_a_torn_message() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let ring = Arc::new(Ring {
                writer: WriterLine::new(),
                metas: (0..SLOTS).map(|_| SlotMeta::new()).collect(),
                payload: (0..SLOTS).map(|_| [AtomicU64::new(0), AtomicU64::new(0)]).collect(),
            });
            let w = Arc::clone(&ring);
            let writer = loom::thread::spawn(move || {
                for n in 0..4u64 {
                    let i = (n % SLOTS as u64) as usize;
                    begin_write(&w.metas[i], n);
                    for word in &w.payload[i] {
                        word.store(n + 100, Ordering::Relaxed);
                    }
                    commit(&w.writer, &w.metas[i], n, Stamp { id: n, ..Stamp::default() }, 8, 0);
                }
            });
            let mut cursor = Cursor::new(ReadMode::InOrder, SLOTS as u64, 0);
            for _ in 0..2 {
                let head = ring.writer.head.load(Ordering::Acquire);
                let Some(n) = cursor.target(head) else {
                    loom::thread::yield_now();
                    continue;
                };
                let i = (n % SLOTS as u64) as usize;
                match probe(&ring.metas[i], n, 8) {
                    Probe::Ready { seq, info } => {
                        cursor.take(n);
                        let words: Vec<u64> =
                            ring.payload[i].iter().map(|w| w.load(Ordering::Relaxed)).collect();
                        let intact = still_intact(&ring.metas[i], seq);
                        cursor.settle(intact);
                        if intact {
                            assert_eq!(info.stamp.id, n);
                            assert!(words.iter().all(|&w| w == n + 100), "torn: {words:?} for {n}");
                        }
                    }
                    Probe::Lapped => cursor.lapped(n, ring.writer.head.load(Ordering::Acquire)),
                    Probe::NotYet => panic!("head said {n} was complete"),
                }
            }
            writer.join().unwrap();
        });
    }
}
