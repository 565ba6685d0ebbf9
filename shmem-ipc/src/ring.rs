//! The writer and reader ends shared by frame and message rings.

use crate::clock::monotonic_ns;
use crate::error::{Error, Result, WriterGoneCause};
use crate::futex;
use crate::layout::{RingKind, Shape};
use crate::liveness::ProcessId;
use crate::protocol::{self, Cursor, Probe, ReadMode, ReaderStats, SampleInfo, Stamp};
use crate::segment::Segment;
use crate::sync::Ordering;
use std::time::Duration;

/// How long a read may wait for the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return at once if nothing new is there.
    Poll,
    /// Sleep on the ring's futex until a message arrives or the timeout passes. Costs a
    /// wake-up (~10 µs) per message, no CPU while idle.
    Block(Duration),
    /// Spin on the ring until a message arrives or the timeout passes. Lowest latency,
    /// burns a core.
    Spin(Duration),
}

/// Longest a blocked reader sleeps before it checks that the writer is still alive; bounds
/// how late a writer's death is noticed.
const LIVENESS_INTERVAL_NS: u64 = 20_000_000;

/// More messages than a writer can ever publish (2^62: 146,000 years at a million a second).
/// A head beyond it was written by something other than the writer, and the slot arithmetic
/// (`2n + 2`) on it would overflow.
const MAX_PLAUSIBLE_HEAD: u64 = 1 << 62;

/// Lapped probes in one look before giving up on it. A real writer that laps a `Latest`
/// reader has moved the head on, so the next probe succeeds; a head that stays put while the
/// slot says it was overwritten comes from a tampered segment, and must not spin forever.
const MAX_LAPS_PER_LOOK: u32 = 1024;

/// Writer-side counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Messages published by this writer.
    pub published: u64,
    /// Loans dropped without being published.
    pub abandoned: u64,
    /// Publishes that had to wake sleeping readers (a futex syscall each).
    pub wakeups: u64,
}

#[derive(Debug)]
pub(crate) struct RingWriter {
    segment: Segment,
    /// Number of the next message; equals the published head.
    next: u64,
    stats: WriterStats,
}

impl RingWriter {
    pub(crate) fn create(name: &str, shape: Shape, geometry: [u32; 4]) -> Result<Self> {
        let segment = Segment::create(name, shape, geometry)?;
        segment.header().writer.heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
        tracing::debug!(ring = name, ?shape, "ring created");
        Ok(Self { segment, next: 0, stats: WriterStats::default() })
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }

    pub(crate) fn stats(&self) -> WriterStats {
        self.stats
    }

    /// Starts rewriting the slot of the next message and hands out its payload.
    pub(crate) fn begin(&mut self) -> (usize, &mut [u8]) {
        let index = (self.next % u64::from(self.segment.shape().slot_count)) as usize;
        protocol::begin_write(self.segment.meta(index), self.next);
        (index, self.segment.payload_mut(index))
    }

    pub(crate) fn commit(&mut self, index: usize, stamp: Stamp, len: usize) -> u64 {
        let n = self.next;
        let header = self.segment.header();
        protocol::commit(&header.writer, self.segment.meta(index), n, stamp, len as u64, monotonic_ns());
        if protocol::announce(&header.writer, &header.readers, n + 1) {
            futex::wake_all(&header.writer.notify);
            self.stats.wakeups += 1;
        }
        self.next = n + 1;
        self.stats.published += 1;
        tracing::trace!(ring = self.segment.name(), seq = n, id = stamp.id, "published");
        n
    }

    pub(crate) fn payload_mut(&mut self, index: usize) -> &mut [u8] {
        self.segment.payload_mut(index)
    }

    pub(crate) fn abandon(&mut self) {
        self.stats.abandoned += 1;
        self.segment.header().writer.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn heartbeat(&self) {
        self.segment.header().writer.heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        let writer = &self.segment.header().writer;
        writer.closed.store(1, Ordering::SeqCst);
        // Move the futex word so sleepers see a change, then wake them to notice `closed`.
        writer.notify.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&writer.notify);
        tracing::debug!(ring = self.segment.name(), published = self.stats.published, "ring closed");
        // Dropping the segment (owned) unlinks /dev/shm/ads.<name>.
    }
}

#[derive(Debug)]
pub(crate) struct RingReader {
    segment: Segment,
    cursor: Cursor,
    writer: ProcessId,
    last_liveness_ns: u64,
}

/// A message located in its slot, not yet settled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located {
    pub(crate) index: usize,
    pub(crate) seq_word: u64,
    pub(crate) info: SampleInfo,
}

impl RingReader {
    pub(crate) fn attach(name: &str, kind: RingKind, mode: ReadMode) -> Result<Self> {
        let segment = Segment::open(name)?;
        let shape = segment.shape();
        if shape.kind != kind {
            return Err(Error::LayoutMismatch {
                name: name.to_string(),
                field: "kind",
                ours: kind as u64,
                theirs: shape.kind as u64,
            });
        }
        let writer = segment.writer_id();
        let head = segment.header().writer.head.load(Ordering::Acquire);
        let mut reader = Self {
            cursor: Cursor::new(mode, u64::from(shape.slot_count), head),
            segment,
            writer,
            last_liveness_ns: 0,
        };
        // A ring whose writer died is not worth attaching to: say so now.
        reader.check_writer(monotonic_ns(), true)?;
        tracing::debug!(ring = name, writer_pid = writer.pid, ?mode, "attached");
        Ok(reader)
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }

    pub(crate) fn stats(&self) -> ReaderStats {
        self.cursor.stats
    }

    pub(crate) fn writer_pid(&self) -> u32 {
        self.writer.pid
    }

    pub(crate) fn published(&self) -> u64 {
        self.segment.header().writer.head.load(Ordering::Acquire)
    }

    pub(crate) fn heartbeat_age(&self) -> Duration {
        let beat = self.segment.header().writer.heartbeat_ns.load(Ordering::Relaxed);
        Duration::from_nanos(monotonic_ns().saturating_sub(beat))
    }

    /// Errors if the writer closed the ring or died. The liveness probe reads /proc, so it
    /// runs at most every `LIVENESS_INTERVAL_NS` unless `force`d.
    fn check_writer(&mut self, now: u64, force: bool) -> Result<()> {
        let gone =
            |cause| Error::WriterGone { name: self.segment.name().to_string(), pid: self.writer.pid, cause };
        match self.segment.header().writer.closed.load(Ordering::Acquire) {
            0 => {}
            1 => return Err(gone(WriterGoneCause::Closed)),
            other => {
                return Err(Error::Corrupt {
                    name: self.segment.name().to_string(),
                    reason: format!("closed flag is {other}, neither 0 nor 1"),
                })
            }
        }
        if force || now.saturating_sub(self.last_liveness_ns) >= LIVENESS_INTERVAL_NS {
            self.last_liveness_ns = now;
            if !self.writer.is_alive() {
                return Err(gone(WriterGoneCause::Died));
            }
        }
        Ok(())
    }

    /// One look at the ring: the next message per the read mode, or `Ok(Err(head))` with the
    /// head that was seen (to sleep on); `Err` if the header is corrupt.
    fn look(&mut self) -> Result<std::result::Result<Located, u64>> {
        let capacity = self.segment.shape().slot_capacity;
        let slots = u64::from(self.segment.shape().slot_count);
        self.segment.check_header()?;
        let mut laps = 0;
        loop {
            // Sync point: pairs with the Release store of `head` in `protocol::commit`.
            let head = self.segment.header().writer.head.load(Ordering::Acquire);
            if head > MAX_PLAUSIBLE_HEAD {
                return Err(Error::Corrupt {
                    name: self.segment.name().to_string(),
                    reason: format!("published head {head} is beyond anything a writer can reach"),
                });
            }
            let Some(n) = self.cursor.target(head) else { return Ok(Err(head)) };
            let index = (n % slots) as usize;
            match protocol::probe(self.segment.meta(index), n, capacity) {
                Probe::Ready { seq, info } => {
                    self.cursor.take(n);
                    return Ok(Ok(Located { index, seq_word: seq, info }));
                }
                Probe::Lapped => {
                    laps += 1;
                    if laps > MAX_LAPS_PER_LOOK {
                        return Ok(Err(head));
                    }
                    self.cursor.lapped(n, self.segment.header().writer.head.load(Ordering::Acquire))
                }
                // `head` is stored after the slot completes, so this only happens if the
                // segment is being tampered with; look again rather than spin forever.
                Probe::NotYet => return Ok(Err(head)),
            }
        }
    }

    /// Finds the next message, waiting as `wait` says. `Ok(None)` means the wait ran out.
    pub(crate) fn next(&mut self, wait: Wait) -> Result<Option<Located>> {
        let start = monotonic_ns();
        let limit = match wait {
            Wait::Poll => 0,
            Wait::Block(d) | Wait::Spin(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        };
        let deadline = start.saturating_add(limit);
        loop {
            let seen_head = match self.look()? {
                Ok(located) => return Ok(Some(located)),
                Err(head) => head,
            };
            let now = monotonic_ns();
            if let Err(gone) = self.check_writer(now, false) {
                // The writer may have published more between our look and its close (or
                // death): `closed` is stored after the last head, so one more look sees it.
                return match self.look()? {
                    Ok(located) => Ok(Some(located)),
                    Err(_) => Err(gone),
                };
            }
            if now >= deadline {
                return Ok(None);
            }
            match wait {
                Wait::Poll => return Ok(None),
                Wait::Spin(_) => std::hint::spin_loop(),
                Wait::Block(_) => {
                    let header = self.segment.header();
                    if let Some(word) = protocol::prepare_sleep(&header.writer, &header.readers, seen_head) {
                        let nap = (deadline - now).min(LIVENESS_INTERVAL_NS);
                        futex::wait(&header.writer.notify, word, Duration::from_nanos(nap));
                        protocol::finish_sleep(&header.readers);
                    }
                }
            }
        }
    }

    pub(crate) fn bytes(&self, located: &Located) -> &[u8] {
        self.segment.payload(located.index, located.info.len)
    }

    pub(crate) fn is_intact(&self, located: &Located) -> bool {
        protocol::still_intact(self.segment.meta(located.index), located.seq_word)
    }

    /// Counts the message as read or overrun; returns whether it was intact.
    pub(crate) fn settle(&mut self, located: &Located) -> bool {
        let intact = self.is_intact(located);
        self.cursor.settle(intact);
        if !intact {
            tracing::trace!(ring = self.segment.name(), seq = located.info.seq, "overwritten while read");
        }
        intact
    }

    /// Copies the next message into `out`, retrying (and counting) overruns until a copy is
    /// intact or the wait runs out.
    pub(crate) fn next_copy(&mut self, wait: Wait, out: &mut Vec<u8>) -> Result<Option<SampleInfo>> {
        let start = monotonic_ns();
        loop {
            let remaining = match wait {
                Wait::Poll => Wait::Poll,
                Wait::Block(d) => Wait::Block(d.saturating_sub(Duration::from_nanos(monotonic_ns() - start))),
                Wait::Spin(d) => Wait::Spin(d.saturating_sub(Duration::from_nanos(monotonic_ns() - start))),
            };
            let Some(located) = self.next(remaining)? else { return Ok(None) };
            out.clear();
            out.extend_from_slice(self.bytes(&located));
            if self.settle(&located) {
                return Ok(Some(located.info));
            }
        }
    }
}

/// A message borrowed from a ring, zero-copy.
///
/// The bytes live in shared memory and the writer may overwrite them at any time (it never
/// waits for readers). Use the bytes, then call [`Sample::finish`]: if it says the sample was
/// overwritten, discard whatever you computed from it. Dropping a sample without `finish`
/// counts it the same way.
#[derive(Debug)]
pub struct Sample<'a> {
    reader: &'a mut RingReader,
    located: Located,
    settled: bool,
}

impl<'a> Sample<'a> {
    pub(crate) fn new(reader: &'a mut RingReader, located: Located) -> Self {
        Self { reader, located, settled: false }
    }

    /// Sequence number, stamp, publish time and length.
    pub fn info(&self) -> SampleInfo {
        self.located.info
    }

    /// The payload, in place in shared memory. See the type's docs before trusting it.
    pub fn bytes(&self) -> &[u8] {
        self.reader.bytes(&self.located)
    }

    /// True if the writer has not touched the slot since this sample was taken.
    pub fn is_intact(&self) -> bool {
        self.reader.is_intact(&self.located)
    }

    /// Ends the read: `Ok` if everything read from [`Sample::bytes`] was a consistent copy of
    /// one message, `Err(Error::Overwritten)` if it must be discarded.
    pub fn finish(mut self) -> Result<SampleInfo> {
        self.settled = true;
        if self.reader.settle(&self.located) {
            Ok(self.located.info)
        } else {
            Err(Error::Overwritten {
                name: self.reader.segment().name().to_string(),
                seq: self.located.info.seq,
            })
        }
    }
}

impl Drop for Sample<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.reader.settle(&self.located);
        }
    }
}
