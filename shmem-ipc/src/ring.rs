//! The writer and reader ends shared by frame and message rings.

use crate::clock::monotonic_ns;
use crate::error::{Error, Result, WriterGoneCause};
use crate::files::{self, FileId, NameLock};
use crate::futex;
use crate::layout::{RingKind, Shape};
use crate::os;
use crate::protocol::{self, Cursor, Located, Look, ReadMode, ReaderStats, RingView as _, SampleInfo, Stamp};
use crate::segment::{self, ReaderTable, Segment, READER_TABLE_BYTES};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::fs::File;
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

/// How often the writer looks for readers that died holding a pin or a sleeping flag. Until
/// then a dead reader costs one slot (its pin); its flag costs one futex wake in all (see
/// `protocol::announce`).
const SWEEP_INTERVAL_NS: u64 = 100_000_000;

/// Where in the reader table file reader entry `k`'s lock byte is.
fn entry_lock_at(k: usize) -> u64 {
    (k * std::mem::size_of::<protocol::ReaderEntry>()) as u64
}

/// Writer-side counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Messages published by this writer.
    pub published: u64,
    /// Loans dropped without being published.
    pub abandoned: u64,
    /// Publishes that had to wake sleeping readers (a futex syscall each).
    pub wakeups: u64,
    /// Messages not published because every slot was pinned by a reader (see the crate docs).
    pub dropped: u64,
    /// Times a slot was passed over because a reader had it pinned.
    pub pinned_skips: u64,
    /// A ring file was found shorter than the writer made it (truncated by another process
    /// of the ring's user, see the crate docs): the writer no longer touches the ring, every
    /// message since is dropped, and readers see the writer stop. Restart the writer.
    pub damaged: bool,
}

/// Where a loan's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A claimed slot of the ring.
    Slot(usize),
    /// The writer's private scratch buffer: every slot was pinned, the message is dropped.
    Scratch,
}

/// The files a writer created, unlinked (if still the same inodes) when it goes.
#[derive(Debug)]
struct Owned {
    segment: Option<FileId>,
    readers: FileId,
    name: String,
    /// Dropped last: the lock is released after the other files are gone.
    lock: NameLock,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(segment) = self.segment {
            files::unlink_if_same(&files::shm_path(&self.name), segment);
        }
        files::unlink_if_same(&files::readers_path(&self.name), self.readers);
        let _ = &self.lock;
    }
}

#[derive(Debug)]
pub(crate) struct RingWriter {
    segment: Segment,
    readers: ReaderTable,
    /// Number of the next message; equals the published head.
    next: u64,
    chooser: protocol::SlotChooser,
    scratch: Vec<u8>,
    last_sweep_ns: u64,
    /// When the ring's file sizes were last checked (`check_files`), and whether one was
    /// found truncated: then nothing touches the mappings again (they would raise SIGBUS).
    /// Atomics (process-local) because `heartbeat` checks too and takes `&self`.
    last_file_check_ns: AtomicU64,
    damaged: AtomicU32,
    stats: WriterStats,
    #[expect(dead_code, reason = "held for its Drop: removes the ring's files, then releases the name")]
    owned: Owned,
}

impl RingWriter {
    /// Takes the name's lock, replaces what a dead writer left, then creates the reader table
    /// and the segment. Everything created is removed again if a later step fails.
    pub(crate) fn create(name: &str, shape: Shape, geometry: [u32; 4]) -> Result<Self> {
        files::validate_name(name)?;
        let invalid = |reason| Error::InvalidConfig { name: name.to_string(), reason };
        let mut config = shape.config().map_err(invalid)?;
        let segment_path = files::shm_path(name);
        let readers_path = files::readers_path(name);
        let lock = NameLock::acquire(name, || match files::open_trusted(name, &segment_path, false) {
            Ok(Some((file, _))) => segment::recorded_writer_pid(&file),
            _ => 0,
        })?;
        config.created_wall_ns = crate::clock::wall_ns();
        lock.write_token(name, config.created_wall_ns)?;
        // Under the lock: whatever is there was left by a writer that is gone.
        let mut generation = 1;
        if let Some((stale, _)) = files::open_trusted(name, &segment_path, false)? {
            if let Some(previous) = segment::stale_generation(&stale) {
                generation = previous.saturating_add(1);
            }
            tracing::warn!(ring = name, "taking over the ring of a writer that is gone");
        }
        files::remove_stale(name, &segment_path)?;
        files::remove_stale(name, &readers_path)?;

        [config.width, config.height, config.stride, config.pixel_format] = geometry;
        config.writer_pid = std::process::id();
        config.generation = generation;
        files::check_space(name, config.total_size + READER_TABLE_BYTES)?;

        let (readers_file, readers_id) = files::create_new(name, &readers_path)?;
        // From here on `owned` removes what exists of the ring if anything fails.
        let mut owned = Owned { segment: None, readers: readers_id, name: name.to_string(), lock };
        files::reserve(name, &readers_file, READER_TABLE_BYTES)?;
        let readers = ReaderTable::map(name, readers_file, READER_TABLE_BYTES)?;
        let (segment_file, segment_id) = files::create_new(name, &segment_path)?;
        owned.segment = Some(segment_id);
        files::reserve(name, &segment_file, config.total_size)?;
        let segment = Segment::initialise(name, segment_file, config, shape)?;
        segment.writer().heartbeat_ns.store(monotonic_ns(), Ordering::Relaxed);
        let slots = shape.slot_count as usize;
        tracing::debug!(ring = name, ?shape, generation, "ring created");
        Ok(Self {
            segment,
            readers,
            next: 0,
            chooser: protocol::SlotChooser::new(slots),
            scratch: Vec::new(),
            last_sweep_ns: monotonic_ns(),
            last_file_check_ns: AtomicU64::new(monotonic_ns()),
            damaged: AtomicU32::new(0),
            stats: WriterStats::default(),
            owned,
        })
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }

    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats { pinned_skips: self.chooser.pinned_skips, damaged: self.is_damaged(), ..self.stats }
    }

    fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed) != 0
    }

    /// At most every `SWEEP_INTERVAL_NS`: checks with `fstat` that the segment and the reader
    /// table are still as long as the writer made them, and if not, marks the ring damaged
    /// and returns false; after that nothing touches the mappings. Any process of the ring's
    /// user can shrink them (readers open the table read-write) and the next access past the
    /// end would kill the writer with SIGBUS. This narrows that to a truncation within the
    /// last interval; it is no defence against the ring's own user, which can kill the writer
    /// anyway (see the crate docs).
    fn check_files(&self, now: u64) -> bool {
        if self.is_damaged() {
            return false;
        }
        if now.saturating_sub(self.last_file_check_ns.load(Ordering::Relaxed)) < SWEEP_INTERVAL_NS {
            return true;
        }
        self.last_file_check_ns.store(now, Ordering::Relaxed);
        let segment = self.segment.file_len();
        let table = self.readers.file().metadata().map(|m| m.len());
        // An fstat that fails tells nothing: assume the file is intact.
        let (segment_ok, table_ok) = (
            segment.as_ref().map_or(true, |&len| len >= self.segment.config().total_size),
            table.as_ref().map_or(true, |&len| len >= READER_TABLE_BYTES),
        );
        if segment_ok && table_ok {
            return true;
        }
        self.damaged.store(1, Ordering::Relaxed);
        tracing::error!(
            ring = self.segment.name(),
            segment_bytes = ?segment.ok(),
            table_bytes = ?table.ok(),
            "a ring file was truncated under its writer (by a process of the ring's user): \
             the writer stops touching the ring and drops every message; restart it"
        );
        false
    }

    /// Claims a slot for the next message: the next one round-robin that no reader pins.
    /// If every slot is pinned, the message goes to scratch memory and will be dropped.
    pub(crate) fn begin(&mut self) -> Target {
        let now = monotonic_ns();
        if !self.check_files(now) {
            return Target::Scratch;
        }
        if now.saturating_sub(self.last_sweep_ns) >= SWEEP_INTERVAL_NS {
            self.sweep_dead_readers(now);
        }
        if let Some(slot) = self.chooser.claim_next(&self.segment, self.readers.entries(), self.next) {
            return Target::Slot(slot);
        }
        // Every slot pinned: perhaps by readers that died; look now rather than in 100 ms.
        self.sweep_dead_readers(now);
        Target::Scratch
    }

    /// Clears the pins and sleeping flags of readers whose entry lock is free (they died).
    fn sweep_dead_readers(&mut self, now: u64) {
        self.last_sweep_ns = now;
        let table = &self.readers;
        for (k, entry) in table.entries().iter().enumerate() {
            let seen = entry.load(Ordering::Relaxed);
            if !protocol::claims_anything(seen) {
                continue;
            }
            match os::is_locked(table.file(), entry_lock_at(k), 1) {
                Ok(false) => {
                    if protocol::reclaim_entry(entry, seen) {
                        tracing::debug!(
                            ring = self.segment.name(),
                            entry = k,
                            "reclaimed a dead reader's entry"
                        );
                    }
                }
                Ok(true) => {}
                Err(e) => tracing::warn!(ring = self.segment.name(), "cannot probe reader {k}: {e}"),
            }
        }
    }

    /// The bytes of a loan: the claimed slot's payload or the scratch buffer. `target` must
    /// be what `begin` returned for the loan not yet committed or abandoned (the loan types
    /// hold it privately and borrow the writer mutably, so no other loan exists meanwhile).
    #[allow(unsafe_code, reason = "the claimed slot is the writer's to write: see SAFETY")]
    pub(crate) fn payload_mut(&mut self, target: Target) -> &mut [u8] {
        match target {
            // SAFETY: `Target::Slot` comes only from `begin`, whose `claim` succeeded: no
            // reader pins the slot, and readers touch no slot they have not pinned, until
            // `commit` publishes it; the loan owns `target` and `&mut self` until then.
            Target::Slot(slot) => unsafe { self.segment.payload_mut(slot) },
            Target::Scratch => {
                let capacity = self.segment.shape().slot_capacity as usize;
                if self.scratch.len() != capacity {
                    self.scratch = vec![0; capacity];
                }
                &mut self.scratch
            }
        }
    }

    /// Publishes the loan's message; `None` if it went to scratch (dropped, counted).
    pub(crate) fn commit(&mut self, target: Target, stamp: Stamp, len: usize) -> Option<u64> {
        let Target::Slot(slot) = target else {
            self.stats.dropped += 1;
            if !self.is_damaged() {
                self.segment.writer().dropped.fetch_add(1, Ordering::Relaxed);
            }
            tracing::trace!(ring = self.segment.name(), id = stamp.id, "every slot pinned: dropped");
            return None;
        };
        let n = self.next;
        protocol::commit(&self.segment, slot, n, stamp, len as u64, monotonic_ns());
        self.chooser.completed(slot, n);
        if protocol::announce(self.segment.writer(), self.readers.entries(), n + 1) {
            futex::wake_all(&self.segment.writer().notify);
            self.stats.wakeups += 1;
        }
        self.next = n + 1;
        self.stats.published += 1;
        tracing::trace!(ring = self.segment.name(), seq = n, slot, id = stamp.id, "published");
        Some(n)
    }

    pub(crate) fn abandon(&mut self) {
        self.stats.abandoned += 1;
        if !self.is_damaged() {
            self.segment.writer().abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn heartbeat(&self) {
        let now = monotonic_ns();
        if self.check_files(now) {
            self.segment.writer().heartbeat_ns.store(now, Ordering::Relaxed);
        }
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        if self.is_damaged() {
            // The files are still removed (by `owned`); the mappings are not touched.
            return;
        }
        let writer = self.segment.writer();
        writer.closed.store(1, Ordering::SeqCst);
        // Move the futex word so sleepers see a change, then wake them to notice `closed`.
        writer.notify.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&writer.notify);
        tracing::debug!(ring = self.segment.name(), published = self.stats.published, "ring closed");
        // Then `owned` unlinks the files and releases the name's lock.
    }
}

/// One entry of the reader table that this reader holds (its lock byte is held through the
/// table's descriptor).
#[derive(Debug)]
struct OwnEntry {
    index: usize,
    /// The entry's value while it pins nothing and does not sleep (includes its epoch).
    idle: u64,
    /// Whether a message taken through this entry is still unsettled (its pin is held).
    busy: bool,
}

/// A message pinned by a reader: where it is, and which of the reader's entries pins it.
#[derive(Debug)]
pub(crate) struct Pinned {
    pub(crate) located: Located,
    own: usize,
}

/// Tells one reader from another within this process (for `HeldFrame`s).
fn next_reader_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
pub(crate) struct RingReader {
    segment: Segment,
    readers: ReaderTable,
    /// Our entries in the reader table: one per message held at once (`max_held`), locked
    /// when first needed. The first is taken at attach.
    own: Vec<OwnEntry>,
    max_held: usize,
    id: u64,
    /// The writer's lock file, probed for liveness.
    writer_lock: File,
    writer_pid: u32,
    cursor: Cursor,
    last_liveness_ns: u64,
    /// Our pid and `os::fork_generation` at attach: in a forked child both differ, and our
    /// entry is the parent's (see `Error::ForkedReader`).
    attached_pid: u32,
    forks_at_attach: u64,
}

impl RingReader {
    pub(crate) fn attach(name: &str, kind: RingKind, mode: ReadMode) -> Result<Self> {
        files::validate_name(name)?;
        let not_found = || Error::NotFound { name: name.to_string() };
        let forks_at_attach = os::fork_generation();
        let (file, meta) = files::open_trusted(name, &files::shm_path(name), false)?.ok_or_else(not_found)?;
        let segment = Segment::open(name, file, meta.len())?;
        let shape = segment.shape();
        if shape.kind != kind {
            return Err(Error::LayoutMismatch {
                name: name.to_string(),
                field: "kind",
                ours: kind as u64,
                theirs: shape.kind as u64,
            });
        }
        let writer_pid = segment.config().writer_pid;
        let gone = |cause| Error::WriterGone { name: name.to_string(), pid: writer_pid, cause };
        let closed_or_died = || {
            if segment.writer().closed.load(Ordering::Acquire) == 1 {
                gone(WriterGoneCause::Closed)
            } else {
                gone(WriterGoneCause::Died)
            }
        };
        // The writer creates the lock before the segment and removes it after: a segment
        // without one has no writer.
        let Some((writer_lock, _)) = files::open_trusted(name, &files::lock_path(name), false)? else {
            return Err(closed_or_died());
        };
        let Some((readers_file, readers_meta)) = files::open_trusted(name, &files::readers_path(name), true)?
        else {
            return Err(closed_or_died());
        };
        let readers = ReaderTable::map(name, readers_file, readers_meta.len())?;
        let first = take_entry(name, &readers, &[])?;
        let entry = first.index;

        let head = segment.writer().head.load(Ordering::Acquire);
        let mut reader = Self {
            cursor: Cursor::new(mode, u64::from(shape.slot_count), head),
            segment,
            readers,
            own: vec![first],
            max_held: 1,
            id: next_reader_id(),
            writer_lock,
            writer_pid,
            last_liveness_ns: 0,
            attached_pid: std::process::id(),
            forks_at_attach,
        };
        // A ring whose writer died is not worth attaching to: say so now.
        reader.check_writer(monotonic_ns(), true)?;
        tracing::debug!(ring = name, writer_pid, entry, ?mode, "attached");
        Ok(reader)
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }

    pub(crate) fn stats(&self) -> ReaderStats {
        self.cursor.stats
    }

    pub(crate) fn writer_pid(&self) -> u32 {
        self.writer_pid
    }

    pub(crate) fn published(&self) -> u64 {
        self.segment.writer().head.load(Ordering::Acquire)
    }

    pub(crate) fn heartbeat_age(&self) -> Duration {
        let beat = self.segment.writer().heartbeat_ns.load(Ordering::Relaxed);
        Duration::from_nanos(monotonic_ns().saturating_sub(beat))
    }

    fn entry(&self, own: usize) -> &protocol::ReaderEntry {
        &self.readers.entries()[self.own[own].index]
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// How many messages this reader may hold pinned at once (each in an entry of its own,
    /// taken when first needed): 1 unless raised. Each one held may cost the writer a slot.
    pub(crate) fn set_max_held(&mut self, max: usize) {
        self.max_held = max.clamp(1, MAX_HELD);
    }

    pub(crate) fn max_held(&self) -> usize {
        self.max_held
    }

    /// Messages taken and not yet settled.
    pub(crate) fn held(&self) -> usize {
        self.own.iter().filter(|e| e.busy).count()
    }

    /// An entry of ours that pins nothing, taking another from the table if all are busy and
    /// `max_held` allows.
    fn free_entry(&mut self) -> Result<usize> {
        if let Some(k) = self.own.iter().position(|e| !e.busy) {
            return Ok(k);
        }
        let name = self.segment.name();
        if self.own.len() >= self.max_held {
            return Err(Error::TooManyHeld { name: name.to_string(), max: self.max_held });
        }
        let taken: Vec<usize> = self.own.iter().map(|e| e.index).collect();
        let entry = take_entry(name, &self.readers, &taken)?;
        self.own.push(entry);
        Ok(self.own.len() - 1)
    }

    /// True in a process `fork()` made of the one that attached (a load: see
    /// `os::fork_generation`). Such a process must not store to our entry: it is the parent's.
    fn forked(&self) -> bool {
        os::fork_generation() != self.forks_at_attach
    }

    fn forked_error(&self) -> Error {
        Error::ForkedReader {
            name: self.segment.name().to_string(),
            attached_pid: self.attached_pid,
            pid: std::process::id(),
        }
    }

    /// Errors if the writer closed the ring or died. The liveness probe (the writer's lock,
    /// and whether our segment was unlinked under us) costs two syscalls, so it runs at most
    /// every `LIVENESS_INTERVAL_NS` unless `force`d.
    fn check_writer(&mut self, now: u64, force: bool) -> Result<()> {
        let gone =
            |cause| Error::WriterGone { name: self.segment.name().to_string(), pid: self.writer_pid, cause };
        match self.segment.writer().closed.load(Ordering::Acquire) {
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
            // A child of a raw clone(2) runs no fork handlers; the pid (a syscall) tells.
            if std::process::id() != self.attached_pid {
                return Err(self.forked_error());
            }
            // A lock we cannot probe tells us nothing: assume alive rather than give up a ring.
            let token = self.segment.config().created_wall_ns;
            let ours = files::writer_holds(&self.writer_lock, token).unwrap_or(true);
            // Also: unlinked means a new writer took over (or ours closed): nobody will write
            // it again. (Covers the moment before the new writer has written its token.)
            if !ours || self.segment.is_unlinked() {
                return Err(gone(WriterGoneCause::Died));
            }
        }
        Ok(())
    }

    /// One look at the ring: the next message per the read mode, pinned, or `Ok(Err(head))`
    /// with the head that was seen (to sleep on); `Err` if the header is corrupt.
    fn look(&mut self, own: usize) -> Result<std::result::Result<Pinned, u64>> {
        self.segment.check_header()?;
        let capacity = self.segment.shape().slot_capacity;
        let OwnEntry { index, idle, .. } = self.own[own];
        let entry = &self.readers.entries()[index];
        match protocol::look(&self.segment, &mut self.cursor, entry, idle, capacity) {
            Look::Found(located) => {
                self.own[own].busy = true;
                Ok(Ok(Pinned { located, own }))
            }
            Look::Nothing(head) => Ok(Err(head)),
            Look::ImpossibleHead(head) => Err(Error::Corrupt {
                name: self.segment.name().to_string(),
                reason: format!("published head {head} is beyond anything a writer can reach"),
            }),
        }
    }

    /// Finds the next message and pins it, waiting as `wait` says. `Ok(None)` means the wait
    /// ran out. The caller must `settle` what it got.
    pub(crate) fn next(&mut self, wait: Wait) -> Result<Option<Pinned>> {
        if self.forked() {
            return Err(self.forked_error());
        }
        // The entry this read pins in (and sleeps on: a sleeping flag replaces the entry's
        // pin, so only a free entry may sleep).
        let own = self.free_entry()?;
        let start = monotonic_ns();
        let limit = match wait {
            Wait::Poll => 0,
            Wait::Block(d) | Wait::Spin(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        };
        let deadline = start.saturating_add(limit);
        loop {
            let seen_head = match self.look(own)? {
                Ok(located) => return Ok(Some(located)),
                Err(head) => head,
            };
            let now = monotonic_ns();
            if let Err(gone) = self.check_writer(now, false) {
                if matches!(gone, Error::ForkedReader { .. }) {
                    return Err(gone);
                }
                // The writer may have published more between our look and its close (or
                // death): `closed` is stored after the last head, so one more look sees it.
                return match self.look(own)? {
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
                    let writer = self.segment.writer();
                    let OwnEntry { index, idle, .. } = self.own[own];
                    let entry = &self.readers.entries()[index];
                    if let Some(word) = protocol::prepare_sleep(writer, entry, idle, seen_head) {
                        let nap = (deadline - now).min(LIVENESS_INTERVAL_NS);
                        futex::wait(&writer.notify, word, Duration::from_nanos(nap));
                        protocol::finish_sleep(entry, idle);
                    }
                }
            }
        }
    }

    /// The bytes of a message this reader has pinned (a `Pinned` from `next`, not settled).
    /// Callers: `Sample` (which holds `&mut self` and settles once, on finish or drop, after
    /// every borrow of the bytes ended), `next_copy` (copies, then settles) and
    /// `FrameReader::held_pixels` (whose `&self` borrow ends before `release`, which takes
    /// `&mut self` and the `HeldFrame` by value, settles).
    #[allow(unsafe_code, reason = "reading a slot this reader has pinned: see SAFETY")]
    pub(crate) fn bytes(&self, pinned: &Pinned) -> &[u8] {
        let located = &pinned.located;
        // SAFETY: `pinned` came from `next` and has not been settled (a `Pinned` is neither
        // Clone nor Copy, and `settle` takes it by value or is called once by its owner), so
        // our entry `pinned.own` pins its slot (confirmed by `protocol::pin`) and nothing else
        // of ours stores to that entry until it is settled (`free_entry` skips busy entries);
        // the borrow of the returned slice ends before `settle` unpins it (the callers above).
        // In a forked child `next` refuses to run; a message that crossed a fork keeps the
        // parent's pin, which the child leaves alone (see `settle`), under `fork`'s own unsafe
        // contract.
        unsafe { self.segment.pinned_payload(located.slot, located.info.len) }
    }

    pub(crate) fn is_intact(&self, pinned: &Pinned) -> bool {
        protocol::still_intact(self.segment.meta(pinned.located.slot), pinned.located.seq_word)
    }

    /// Where a pinned message's payload starts in the segment's file.
    pub(crate) fn file_offset(&self, pinned: &Pinned) -> u64 {
        self.segment.payload_file_offset(pinned.located.slot)
    }

    /// Ends a read: checks the sequence once more, releases the pin, counts the message as
    /// read or overrun; returns whether it was intact.
    pub(crate) fn settle(&mut self, pinned: &Pinned) -> bool {
        let located = &pinned.located;
        let intact = self.is_intact(pinned);
        // A message that crossed a fork: in the child the pin is the parent's to release.
        if !self.forked() {
            protocol::unpin(self.entry(pinned.own), self.own[pinned.own].idle);
        }
        self.own[pinned.own].busy = false;
        self.cursor.settle(intact);
        if !intact {
            tracing::warn!(
                ring = self.segment.name(),
                seq = located.info.seq,
                "pinned slot changed under a reader"
            );
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
            let Some(pinned) = self.next(remaining)? else { return Ok(None) };
            out.clear();
            out.extend_from_slice(self.bytes(&pinned));
            if self.settle(&pinned) {
                return Ok(Some(pinned.located.info));
            }
        }
    }
}

/// Most messages one reader may hold at once (`RingReader::set_max_held`): each takes an
/// entry of the reader table, which all readers of the ring share.
pub(crate) const MAX_HELD: usize = 8;

/// Locks a free entry of the reader table (one not in `ours`) and starts a new epoch in it.
fn take_entry(name: &str, readers: &ReaderTable, ours: &[usize]) -> Result<OwnEntry> {
    let io = |source| Error::Io { name: name.to_string(), context: "locking a reader entry", source };
    for k in (0..readers.entries().len()).filter(|k| !ours.contains(k)) {
        // (An OFD lock we hold ourselves would be granted again: hence `ours`.)
        if os::try_lock(readers.file(), entry_lock_at(k), 1).map_err(io)? {
            // A new epoch: whatever a dead predecessor left in the entry is ours to clear, and
            // the writer's reclaim of that predecessor can no longer touch us.
            let word = &readers.entries()[k];
            // Acquire, then Release (like every entry store, see `protocol::unpin`): a claim
            // that loads our first store is then ordered after the previous holder's last
            // reads too.
            let idle = protocol::fresh_entry(word.load(Ordering::Acquire));
            word.store(idle, Ordering::Release);
            return Ok(OwnEntry { index: k, idle, busy: false });
        }
    }
    Err(Error::TooManyReaders { name: name.to_string(), max: readers.entries().len() })
}

impl Drop for RingReader {
    fn drop(&mut self) {
        // In a forked child the entry (and its lock, shared with the parent's descriptor) is
        // the parent's: leave both alone.
        if self.forked() {
            return;
        }
        // Closing the table's descriptor (after this) releases our entry locks.
        for own in &self.own {
            self.readers.entries()[own.index].store(own.idle, Ordering::Release);
        }
    }
}

/// A message borrowed from a ring, zero-copy and **pinned**: the writer does not write its
/// slot until the sample is finished or dropped, so the bytes cannot change while you hold
/// them (see the crate docs for what holding a pin costs the writer). Call
/// [`Sample::finish`] at the end: it re-checks the slot's sequence (a second line of defence
/// that only fails if something other than the writer wrote the segment) and releases the
/// pin. Dropping a sample without `finish` does the same.
#[derive(Debug)]
pub struct Sample<'a> {
    reader: &'a mut RingReader,
    pinned: Pinned,
    settled: bool,
}

impl<'a> Sample<'a> {
    pub(crate) fn new(reader: &'a mut RingReader, pinned: Pinned) -> Self {
        Self { reader, pinned, settled: false }
    }

    /// Sequence number, stamp, publish time and length.
    pub fn info(&self) -> SampleInfo {
        self.pinned.located.info
    }

    /// The payload, in place in shared memory; stable while the sample lives.
    pub fn bytes(&self) -> &[u8] {
        self.reader.bytes(&self.pinned)
    }

    /// True if the slot still holds this message (always, unless the segment is tampered with).
    pub fn is_intact(&self) -> bool {
        self.reader.is_intact(&self.pinned)
    }

    /// Ends the read and releases the pin: `Ok` if the slot still held this message,
    /// `Err(Error::Overwritten)` if it must be discarded.
    pub fn finish(mut self) -> Result<SampleInfo> {
        self.settled = true;
        if self.reader.settle(&self.pinned) {
            Ok(self.pinned.located.info)
        } else {
            Err(Error::Overwritten {
                name: self.reader.segment().name().to_string(),
                seq: self.pinned.located.info.seq,
            })
        }
    }
}

impl Drop for Sample<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.reader.settle(&self.pinned);
        }
    }
}
