//! The slot protocol: per-slot sequence locks, the message index, reader pins, the published
//! head and the reader cursor.
//!
//! Nothing here knows about shared memory: it works on any [`RingView`] and any slice of
//! reader entries, which is how the loom model test (bottom of this file) runs the very same
//! functions on the heap. The mapping layer (`segment`) only places these structs in `/dev/shm`.
//!
//! The writer puts message `n` (0-based, counted by the writer) into a slot no reader has
//! pinned, the next one round-robin, and records the slot in entry `n % slots`
//! of the message index. The slot's `seq` word is `2n + 2` once message `n` is complete and
//! `2n + 1` while it is being written, so a reader can tell from one load whether the slot
//! holds the message it wants, an older one (not yet written) or a newer one (it was lapped).
//! In between, while the writer decides whether it may take the slot at all, `seq` is the
//! previous value with [`CLAIMING`] set: the payload is untouched, and the claim either backs
//! off (the previous value comes back) or goes on (`2n + 1`). A reader that sees a deciding
//! claim looks at the same slot again instead of taking its message for lost.
//!
//! Before a reader touches a slot's payload it **pins** the slot in its reader entry and then
//! re-checks the slot's `seq`; the writer, after marking a slot as being rewritten, checks
//! that no entry pins it (and backs off to another slot if one does). So either the reader
//! sees the rewrite and lets go, or the writer sees the pin and leaves the slot alone: a
//! pinned slot's bytes never change, and a reader may hold `&[u8]` to them. The sequence
//! check at the end of a read stays as a second line of defence; it cannot fail for a pinned
//! slot unless something other than the writer writes the segment.
//!
//! # The memory-model argument
//!
//! In the C++20 model Rust uses, and nothing stronger. (loom's `fence(SeqCst)` is stronger
//! than the language's: it joins the views of all earlier `SeqCst` fences, so loom passing
//! is weak evidence for the two handshakes below; this argument is what they rest on. The
//! loom models check the rest: orderings of the plain loads and stores, lost wake-ups.)
//!
//! *Publication.* `commit` stores the slot's `seq = 2n + 2`, then the index entry, then
//! `head`, each `Release`; readers load `head`, the index entry and `seq` with `Acquire`. A
//! reader that sees message `n` complete sees its payload and metadata.
//!
//! *Pins* (`pin` against `claim`) are a store-buffering pattern: the reader stores its pin,
//! fences `SeqCst` (call it R), loads `seq`; the writer stores an odd `seq`, fences `SeqCst`
//! (W), loads every entry. The fence rule ([atomics.order]: if store A is sequenced before
//! `SeqCst` fence X, fence Y is sequenced before load B of the same object, and X precedes Y
//! in the single total order S, then B sees A or a later store) decides every pair of a
//! confirmed pin and a claim C of the same slot that goes on to write it:
//! - R before W in S: C's load sees the pin, and C backs off (so C does not write); or a
//!   later store of that entry. Every later store is the reader's own (until it dies: see
//!   the sweep), sequenced after its reads of the slot, and `Release`; C's `fence(Acquire)`
//!   synchronises with it, so the reads happen before C's writes. This is why *every* store
//!   to an entry is `Release`, not only `unpin`'s: a later `Relaxed` store (a re-pin, a
//!   sleeping flag) is not in the release sequence of the unpin (C++20 dropped same-thread
//!   stores from release sequences), and C may load exactly that store.
//! - W before R in S: the reader's re-check sees C's first store (the probed value with
//!   `CLAIMING` set) or a later one. None of those equals the value it probed (message
//!   numbers only grow, and a later claim that backs off restores a value at least C's), so
//!   the pin is not confirmed and nothing is read.
//!   (A claim C' older than the probed message happened before that message's `Release`
//!   commit, which the reader acquired.)
//!
//! *Wake-ups* (`prepare_sleep` against `announce`) are the same pattern on the futex word and
//! the sleeping flag: the reader stores the flag with the word it saw, fences, loads the word;
//! the writer stores the next word, fences, loads the flags. Reader's fence first: the writer
//! sees the flag and wakes (or a later store of the entry: the reader is already past that
//! sleep, and a later `prepare_sleep` of its own is ordered after the writer's fence, so it
//! sees the new word). Writer's fence first: the reader sees the new word and does not sleep.
//! The kernel compares the word and queues the sleeper atomically (`FUTEX_WAIT`), so no
//! wake-up is lost between the check and the sleep. The writer wakes only for flags carrying
//! the word it just replaced: a flag with an older word belongs to a reader that the announce
//! moving past that word already woke, or that saw the moved word and did not sleep.
//!
//! *Outside the model*: a reader's death (the writer clears its entry after probing its lock:
//! a dead process reads nothing more); another process writing the segment (caught, not
//! prevented, by `still_intact` and the header checks).

use crate::sync::{fence, spin_hint, AtomicU32, AtomicU64, Ordering};

/// Sequence value while message `n` is being written.
pub(crate) const fn writing(n: u64) -> u64 {
    2 * n + 1
}

/// Sequence value once message `n` is complete.
pub(crate) const fn complete(n: u64) -> u64 {
    2 * n + 2
}

/// Set in a slot's `seq` while the writer decides whether it may rewrite the slot; the other
/// bits are the slot's `seq` before the claim, whose payload is still untouched. Sequences
/// never reach it (`MAX_PLAUSIBLE_HEAD`).
pub(crate) const CLAIMING: u64 = 1 << 63;

/// Bits of an index entry that name the slot; the message number is above them.
pub(crate) const SLOT_BITS: u32 = 12;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// More messages than a writer can ever publish (2^50: 35 years at a million a second).
/// A head beyond it was written by something other than the writer, and the index and slot
/// arithmetic (`n << SLOT_BITS`, `2n + 2`) on it would overflow.
pub(crate) const MAX_PLAUSIBLE_HEAD: u64 = 1 << 50;

/// Probes in one look before giving up on it for now (`Look::Nothing`: a blocked reader then
/// sleeps until the next publish or its liveness slice, a polling one returns). A real writer
/// that laps a `Latest` reader has moved the head on, and a deciding claim takes a few dozen
/// loads, so a few probes succeed; a writer preempted mid-claim, or a head that stays put
/// while the slot says it was overwritten (a tampered segment), must not make a reader spin.
const MAX_PROBES_PER_LOOK: u32 = 1024;

/// Metadata of one slot; every field but `seq` and `index` is guarded by `seq`.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct SlotMeta {
    pub(crate) seq: AtomicU64,
    pub(crate) id: AtomicU64,
    pub(crate) capture_mono_ns: AtomicU64,
    pub(crate) capture_wall_ns: AtomicU64,
    pub(crate) publish_mono_ns: AtomicU64,
    pub(crate) len: AtomicU64,
    /// Not about this slot: entry `i` of the message index, where `i` is this slot's
    /// position. `(n << SLOT_BITS) | slot` for the newest message `n` with `n % slots == i`.
    pub(crate) index: AtomicU64,
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
    /// Messages dropped because every slot was pinned.
    pub(crate) dropped: AtomicU64,
}

/// One reader's word in the reader table: `epoch << 32 | word << 17 | WAITING? | pin`, where
/// `pin` is the pinned slot + 1 (0: none) and `word` the low 15 bits of the futex word the
/// reader sleeps on (with `WAITING`). Only its reader writes it, except that the writer
/// clears the pin and flag of a reader that died (its entry lock is free), by
/// compare-and-swap so that a new reader of the entry (which bumps `epoch` first) is never
/// touched.
pub(crate) type ReaderEntry = AtomicU64;
const PIN_MASK: u64 = 0xffff;
const WAITING: u64 = 1 << 16;
const WORD_SHIFT: u32 = 17;
const WORD_BITS: u64 = 0x7fff << WORD_SHIFT;
const EPOCH_SHIFT: u32 = 32;

/// The `word` bits of an entry for a reader sleeping on futex word `head as u32`.
fn sleep_word(head: u64) -> u64 {
    (head << WORD_SHIFT) & WORD_BITS
}

/// The slot `entry` pins, if any and if it is a slot of this ring.
pub(crate) fn pinned_slot(word: u64, slot_count: usize) -> Option<usize> {
    let pin = (word & PIN_MASK) as usize;
    (pin != 0 && pin <= slot_count).then(|| pin - 1)
}

/// The entry value of a reader that pins nothing and does not sleep, for a new epoch.
pub(crate) fn fresh_entry(previous: u64) -> u64 {
    ((previous >> EPOCH_SHIFT).wrapping_add(1)) << EPOCH_SHIFT
}

#[cfg_attr(loom, allow(dead_code, reason = "the writer's sweep is not modelled"))]
/// Whether a dead reader's entry still claims something the writer should stop honouring.
pub(crate) fn claims_anything(word: u64) -> bool {
    word & (PIN_MASK | WAITING) != 0
}

#[cfg_attr(loom, allow(dead_code, reason = "the writer's sweep is not modelled"))]
/// Clears a dead reader's pin and flag, unless the entry changed meanwhile (a new reader).
/// `Relaxed`: the reader is dead (its entry lock is free), so it reads nothing more that the
/// writer's next claim would have to be ordered after.
pub(crate) fn reclaim_entry(entry: &ReaderEntry, seen: u64) -> bool {
    let cleared = seen & !(PIN_MASK | WAITING | WORD_BITS);
    entry.compare_exchange(seen, cleared, Ordering::Relaxed, Ordering::Relaxed).is_ok()
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
            index: AtomicU64::new(0),
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
            dropped: AtomicU64::new(0),
        }
    }
}

/// What the protocol needs of a ring: its writer line and slot metadata. Implemented by the
/// mapped segment and, for the loom model, by a ring on the heap.
pub(crate) trait RingView {
    fn writer_line(&self) -> &WriterLine;
    fn slot_count(&self) -> usize;
    /// Metadata of `slot`; `slot < slot_count()`.
    fn meta(&self, slot: usize) -> &SlotMeta;
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

/// Writer: bit `s` set for every slot `s` some entry pins, in `pinned` (one bit per slot).
pub(crate) fn scan_pins(entries: &[ReaderEntry], slot_count: usize, pinned: &mut [u64]) {
    pinned.fill(0);
    for entry in entries {
        if let Some(slot) = pinned_slot(entry.load(Ordering::Relaxed), slot_count) {
            if let Some(word) = pinned.get_mut(slot / 64) {
                *word |= 1 << (slot % 64);
            }
        }
    }
}

pub(crate) fn is_pinned(pinned: &[u64], slot: usize) -> bool {
    pinned.get(slot / 64).is_some_and(|w| w & (1 << (slot % 64)) != 0)
}

/// Writer: claims `slot` for message `n` in two phases. First it marks the slot `previous |
/// CLAIMING` (deciding: the payload is untouched) and makes sure no reader pinned it. If one
/// did, `false`: the sequence goes back to `previous` and the writer must pick another slot.
/// Otherwise the claim is committed (`writing(n)`) and the writer may write the payload.
/// Readers tell the phases apart: a deciding claim is worth looking at again (`look`), and a
/// pinned message is still intact under one (`still_intact`), but not under a committed one.
/// `previous` is the slot's sequence as the writer left it. Call before touching the payload.
pub(crate) fn claim(
    slot_meta: &SlotMeta,
    slot: usize,
    n: u64,
    previous: u64,
    entries: &[ReaderEntry],
) -> bool {
    slot_meta.seq.store(previous | CLAIMING, Ordering::Relaxed);
    // Sync point: the writer's half of the pin handshake (pairs with the fence in `pin`): a
    // reader that pinned before this fence is seen below; one that pins after it sees the
    // changed sequence on its re-check.
    fence(Ordering::SeqCst);
    let pin = slot as u64 + 1;
    let taken = entries.iter().any(|e| e.load(Ordering::Relaxed) & PIN_MASK == pin);
    // Sync point: pairs with the Release stores to reader entries (`unpin` and every later
    // one): a reader's reads of the payload happen before the writes that follow a claim.
    fence(Ordering::Acquire);
    if taken {
        // Sync point: readers that acquire the restored value see the old message complete.
        slot_meta.seq.store(previous, Ordering::Release);
        return false;
    }
    slot_meta.seq.store(writing(n), Ordering::Relaxed);
    // Sync point: keeps the committed (odd) store ahead of every payload store, for readers'
    // `still_intact` (pairs with its fence(Acquire)).
    fence(Ordering::Release);
    true
}

/// Writer: which slot the next message goes into. Keeps, per slot, the sequence of the
/// message it holds (to put back if a claim loses to a pin).
#[derive(Debug)]
pub(crate) struct SlotChooser {
    last_slot: usize,
    held: Vec<u64>,
    pinned: Vec<u64>,
    /// Times a slot was passed over because a reader had it pinned.
    pub(crate) pinned_skips: u64,
}

impl SlotChooser {
    pub(crate) fn new(slot_count: usize) -> Self {
        Self {
            last_slot: slot_count - 1,
            held: vec![0; slot_count],
            pinned: vec![0; slot_count.div_ceil(64)],
            pinned_skips: 0,
        }
    }

    /// Claims the next slot after the last one written, in round-robin order, that no reader
    /// pins, for message `n`; `None` if every slot is pinned. Never waits.
    ///
    /// The pin scan is only a pre-check; `claim` decides. A claim can lose to a pin that was
    /// not there at the scan (a reader moving on from a slot the scan saw pinned to the one
    /// tried next, and so on round the ring): then one more pass with a fresh scan, because a
    /// slot the first scan saw pinned may be free by now. Two passes at most: the writer
    /// never waits on readers.
    pub(crate) fn claim_next<R: RingView + ?Sized>(
        &mut self,
        ring: &R,
        entries: &[ReaderEntry],
        n: u64,
    ) -> Option<usize> {
        let slots = self.held.len();
        for _pass in 0..2 {
            scan_pins(entries, slots, &mut self.pinned);
            let mut lost_a_race = false;
            for step in 1..=slots {
                let slot = (self.last_slot + step) % slots;
                if is_pinned(&self.pinned, slot) {
                    self.pinned_skips += 1;
                    continue;
                }
                if claim(ring.meta(slot), slot, n, self.held[slot], entries) {
                    self.held[slot] = writing(n);
                    self.last_slot = slot;
                    return Some(slot);
                }
                self.pinned_skips += 1;
                lost_a_race = true;
            }
            if !lost_a_race {
                break;
            }
        }
        None
    }

    /// Message `n` is now complete in `slot`.
    pub(crate) fn completed(&mut self, slot: usize, n: u64) {
        self.held[slot] = complete(n);
    }
}

/// Writer: publishes message `n`, whose payload is already in `slot`.
pub(crate) fn commit<R: RingView + ?Sized>(
    ring: &R,
    slot: usize,
    n: u64,
    stamp: Stamp,
    len: u64,
    now_ns: u64,
) {
    let meta = ring.meta(slot);
    meta.id.store(stamp.id, Ordering::Relaxed);
    meta.capture_mono_ns.store(stamp.capture_mono_ns, Ordering::Relaxed);
    meta.capture_wall_ns.store(stamp.capture_wall_ns, Ordering::Relaxed);
    meta.publish_mono_ns.store(now_ns, Ordering::Relaxed);
    meta.len.store(len, Ordering::Relaxed);
    // Sync point: releases payload + meta; pairs with the Acquire load of `seq` in `probe`.
    meta.seq.store(complete(n), Ordering::Release);
    let index_at = (n % ring.slot_count() as u64) as usize;
    // Sync point: pairs with the Acquire load of the entry in `locate`.
    ring.meta(index_at).index.store((n << SLOT_BITS) | slot as u64, Ordering::Release);
    let writer = ring.writer_line();
    // Sync point: pairs with the Acquire load of `head` in readers; a reader that sees
    // head = n + 1 finds message `n` in the index and its slot complete (or already lapped).
    writer.head.store(n + 1, Ordering::Release);
    writer.heartbeat_ns.store(now_ns, Ordering::Relaxed);
}

/// Writer: moves the futex word forward to `head` (one more than at the previous call) and
/// says whether anybody may be asleep on the old word and needs a wake.
///
/// Only sleepers on the previous word (`head - 1`) count. One flagged with an older word was
/// woken by the announce that moved the word past it (or saw the moved word and did not
/// sleep), and has not gone back to sleep since (it would have stored a newer word): it is
/// stopped, or about to run. Without this, a reader stopped (SIGSTOP, a debugger) while
/// asleep cost a futex wake per publish for as long as it stayed stopped; now it costs one.
/// (The word is 15 bits: such a reader is woken again once every 32,768 messages.)
pub(crate) fn announce(writer: &WriterLine, entries: &[ReaderEntry], head: u64) -> bool {
    writer.notify.store(head as u32, Ordering::Relaxed);
    // Sync point: Dekker handshake with `prepare_sleep`: either the writer sees the waiter's
    // flag (and its word) and wakes it, or the waiter sees the new word and does not sleep.
    fence(Ordering::SeqCst);
    let asleep = WAITING | sleep_word(head.wrapping_sub(1));
    entries.iter().any(|e| e.load(Ordering::Relaxed) & (WAITING | WORD_BITS) == asleep)
}

/// Reader: flags itself as about to sleep; returns the futex word to sleep on, or `None` if
/// the head moved past `seen_head` meanwhile (then look again, do not sleep).
pub(crate) fn prepare_sleep(
    writer: &WriterLine,
    entry: &ReaderEntry,
    idle: u64,
    seen_head: u64,
) -> Option<u32> {
    // Release, like every store to a reader entry: see `unpin`.
    entry.store(idle | WAITING | sleep_word(seen_head), Ordering::Release);
    // Sync point: the reader's half of the handshake in `announce`.
    fence(Ordering::SeqCst);
    let word = writer.notify.load(Ordering::Relaxed);
    if word == seen_head as u32 {
        Some(word)
    } else {
        entry.store(idle, Ordering::Release);
        None
    }
}

/// Reader: undoes `prepare_sleep` once awake again.
pub(crate) fn finish_sleep(entry: &ReaderEntry, idle: u64) {
    // Release, like every store to a reader entry: see `unpin`.
    entry.store(idle, Ordering::Release);
}

/// Reader: pins `slot`, then confirms it still holds the message seen with `seq`. `false`:
/// the writer has begun rewriting it; the pin is already released.
pub(crate) fn pin(entry: &ReaderEntry, idle: u64, slot_meta: &SlotMeta, slot: usize, seq: u64) -> bool {
    // Release, like every store to a reader entry: see `unpin`.
    entry.store(idle | (slot as u64 + 1), Ordering::Release);
    // Sync point: the reader's half of the pin handshake (pairs with the fence in `claim`).
    fence(Ordering::SeqCst);
    if slot_meta.seq.load(Ordering::Relaxed) == seq {
        true
    } else {
        unpin(entry, idle);
        false
    }
}

/// Reader: releases its pin; everything it read from the slot happens before the writer's
/// next write to it.
///
/// Every store a reader makes to its entry is `Release`, not just this one. The writer's
/// claim may load any later value of the entry (the reader has since re-pinned, or flagged
/// itself asleep), and its `fence(Acquire)` synchronises only with the store that wrote the
/// value it loaded: a later `Relaxed` store by the same thread is not part of this store's
/// release sequence (C++20 [intro.races]), so it would leave the reads of this slot unordered
/// against the writer's rewrite. Release costs nothing on x86 and one `stlr` on ARM.
pub(crate) fn unpin(entry: &ReaderEntry, idle: u64) {
    // Sync point: pairs with the fence(Acquire) in `claim`.
    entry.store(idle, Ordering::Release);
}

/// A slot as the reader found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The slot holds message `n`, seen with sequence `seq`; validate with `still_intact`.
    Ready { seq: u64, info: SampleInfo },
    /// The writer has already overwritten message `n` (or is writing over it).
    Lapped,
    /// Message `n` is not complete yet.
    NotYet,
    /// The writer is deciding whether to take the slot (see `claim`): probe it again; the
    /// message is still there if the claim backs off.
    Claiming,
}

/// Looks at `slot` for message `n`. `capacity` bounds the reported length, so a torn or
/// corrupted length can never make a reader look past the slot.
pub(crate) fn probe(slot: &SlotMeta, n: u64, capacity: u64) -> Probe {
    // Sync point: pairs with the Release store of `seq` in `commit` (and in `claim`, for a
    // restored value).
    let seq = slot.seq.load(Ordering::Acquire);
    if seq & CLAIMING != 0 {
        Probe::Claiming
    } else if seq == complete(n) {
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

/// Finds message `n` through the index: its slot and what the slot says.
pub(crate) fn locate<R: RingView + ?Sized>(ring: &R, n: u64, capacity: u64) -> (usize, Probe) {
    let slots = ring.slot_count();
    // Sync point: pairs with the Release store of the entry in `commit`.
    let entry = ring.meta((n % slots as u64) as usize).index.load(Ordering::Acquire);
    let (entry_n, slot) = (entry >> SLOT_BITS, (entry & SLOT_MASK) as usize);
    if entry_n > n {
        search(ring, n, capacity)
    } else if entry_n < n || slot >= slots {
        // `head` is stored after the entry, so only a tampered segment gets here.
        (0, Probe::NotYet)
    } else {
        (slot, probe(ring.meta(slot), n, capacity))
    }
}

/// Message `n`'s index entry has been taken by a newer message (`n + slots`, ...), but the
/// writer may have put that one elsewhere because `n`'s slot was pinned, or a claim on it
/// backed off: then `n` is still there, and counting it as lapped would lose a message no
/// one overwrote. Looks for it in every slot (a handful of loads; only after the index
/// moved on).
fn search<R: RingView + ?Sized>(ring: &R, n: u64, capacity: u64) -> (usize, Probe) {
    for slot in 0..ring.slot_count() {
        let meta = ring.meta(slot);
        if meta.seq.load(Ordering::Relaxed) & !CLAIMING == complete(n) {
            // `probe` loads it again, with Acquire, and says Ready or Claiming (or Lapped if
            // the writer got there meanwhile).
            return (slot, probe(meta, n, capacity));
        }
    }
    (0, Probe::Lapped)
}

/// True if the pinned slot still holds the message `probe` saw with `seq`: the second line
/// of defence behind the pin. Only two values say so: `seq` itself, and a claim still
/// deciding about that same message (`seq | CLAIMING`: it has not touched the payload, and
/// by the handshake it will see the pin and back off). A committed write (odd), a newer
/// message or a claim over one means the slot was rewritten under the reader: something
/// broke the protocol, e.g. a foreign process wrote the segment or a forked child shared
/// this reader's entry.
pub(crate) fn still_intact(slot: &SlotMeta, seq: u64) -> bool {
    // Sync point: pairs with the Release fence after the committed store in `claim`: if any
    // byte we read came from a newer write, this load sees that write's sequence (or a later
    // one), never `seq` or `seq | CLAIMING`, which come before it.
    fence(Ordering::Acquire);
    let now = slot.seq.load(Ordering::Relaxed);
    now == seq || now == seq | CLAIMING
}

/// A message located and pinned in its slot, not yet settled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located {
    pub(crate) slot: usize,
    pub(crate) seq_word: u64,
    pub(crate) info: SampleInfo,
}

/// What one look at the ring found.
#[derive(Debug)]
pub(crate) enum Look {
    /// The next message per the cursor, pinned in `entry`.
    Found(Located),
    /// Nothing new; the head that was seen (to sleep on).
    Nothing(u64),
    /// The head is beyond anything a writer can reach.
    ImpossibleHead(u64),
}

/// Reader: one look at the ring: the next message per the cursor, pinned. Shared by the
/// shipped reader and the loom model.
pub(crate) fn look<R: RingView + ?Sized>(
    ring: &R,
    cursor: &mut Cursor,
    entry: &ReaderEntry,
    idle: u64,
    capacity: u64,
) -> Look {
    let mut probes = 0;
    loop {
        // Sync point: pairs with the Release store of `head` in `commit`.
        let head = ring.writer_line().head.load(Ordering::Acquire);
        if head > MAX_PLAUSIBLE_HEAD {
            return Look::ImpossibleHead(head);
        }
        let Some(n) = cursor.target(head) else { return Look::Nothing(head) };
        match locate(ring, n, capacity) {
            (slot, Probe::Ready { seq, info }) => {
                if pin(entry, idle, ring.meta(slot), slot, seq) {
                    cursor.take(n);
                    return Look::Found(Located { slot, seq_word: seq, info });
                }
                // A claim got to the slot between the probe and the pin: the next probe
                // says whether it backed off (the message is still there) or went on.
                spin_hint();
            }
            // Never count a deciding claim as a lap: it may back off, from our pin or
            // another reader's, and leave the message in place.
            (_, Probe::Claiming) => spin_hint(),
            (_, Probe::Lapped) => cursor.lapped(n, ring.writer_line().head.load(Ordering::Acquire)),
            // `head` is stored after the slot completes, so this only happens if the
            // segment is being tampered with; look again later rather than spin forever.
            (_, Probe::NotYet) => return Look::Nothing(head),
        }
        probes += 1;
        if probes > MAX_PROBES_PER_LOOK {
            return Look::Nothing(head);
        }
    }
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

    /// A heap ring for the unit tests and the loom model.
    pub(super) struct HeapRing {
        pub(super) writer: WriterLine,
        pub(super) metas: Vec<SlotMeta>,
    }

    impl HeapRing {
        pub(super) fn new(slots: usize) -> Self {
            Self { writer: WriterLine::new(), metas: (0..slots).map(|_| SlotMeta::new()).collect() }
        }
    }

    impl RingView for HeapRing {
        fn writer_line(&self) -> &WriterLine {
            &self.writer
        }
        fn slot_count(&self) -> usize {
            self.metas.len()
        }
        fn meta(&self, slot: usize) -> &SlotMeta {
            &self.metas[slot]
        }
    }

    #[test]
    fn probe_tells_ready_lapped_and_not_yet() {
        let ring = HeapRing::new(3);
        let slot = &ring.metas[0];
        assert_eq!(probe(slot, 0, 16), Probe::NotYet);
        assert!(claim(slot, 0, 0, 0, &[]));
        assert_eq!(probe(slot, 0, 16), Probe::NotYet);
        let stamp = Stamp { id: 7, capture_mono_ns: 1, capture_wall_ns: 2 };
        commit(&ring, 0, 0, stamp, 99, 5);
        let (at, Probe::Ready { seq, info }) = locate(&ring, 0, 16) else { panic!("not ready") };
        assert_eq!(at, 0);
        assert_eq!(info.stamp, stamp);
        assert_eq!(info.len, 16, "length is clamped to the capacity");
        assert!(still_intact(slot, seq));
        // What a reader sees while a claim decides (between its two phases).
        slot.seq.store(seq | CLAIMING, Ordering::Relaxed);
        assert_eq!(probe(slot, 0, 16), Probe::Claiming, "a deciding claim is not a lap");
        assert!(still_intact(slot, seq), "a deciding claim has not touched the payload");
        slot.seq.store(seq, Ordering::Relaxed);
        assert!(claim(slot, 0, 3, seq, &[]));
        assert!(!still_intact(slot, seq), "a committed claim is about to write the payload");
        assert_eq!(probe(slot, 0, 16), Probe::Lapped);
        commit(&ring, 0, 3, stamp, 99, 5);
        assert!(!still_intact(slot, seq), "a completed rewrite is caught");
        slot.seq.store(complete(3) | CLAIMING, Ordering::Relaxed);
        assert!(!still_intact(slot, seq), "nor is a claim over a newer message");
    }

    #[test]
    fn a_pinned_slot_is_not_claimed_and_keeps_its_message() {
        let ring = HeapRing::new(3);
        let entries = [AtomicU64::new(fresh_entry(0))];
        let idle = entries[0].load(Ordering::Relaxed);
        assert!(claim(&ring.metas[1], 1, 0, 0, &entries));
        commit(&ring, 1, 0, Stamp::default(), 4, 0);
        let mut cursor = Cursor::new(ReadMode::Latest, 3, 0);
        let Look::Found(found) = look(&ring, &mut cursor, &entries[0], idle, 8) else { panic!("nothing") };
        assert_eq!((found.slot, found.info.seq), (1, 0), "the index sends the reader to slot 1");
        assert_eq!(pinned_slot(entries[0].load(Ordering::Relaxed), 3), Some(1));
        let mut pinned = [0u64];
        scan_pins(&entries, 3, &mut pinned);
        assert!(is_pinned(&pinned, 1) && !is_pinned(&pinned, 0));
        // The writer races past its pre-check: the claim sees the pin and backs off.
        assert!(!claim(&ring.metas[1], 1, 1, complete(0), &entries));
        assert!(still_intact(&ring.metas[1], found.seq_word), "the sequence was put back");
        unpin(&entries[0], idle);
        assert!(claim(&ring.metas[1], 1, 1, complete(0), &entries));
    }

    #[test]
    fn an_in_order_reader_finds_a_message_whose_index_entry_moved_on() {
        let ring = HeapRing::new(3);
        let entries = [AtomicU64::new(fresh_entry(0)), AtomicU64::new(fresh_entry(0))];
        let mut chooser = SlotChooser::new(3);
        let mut publish = |n| {
            let slot = chooser.claim_next(&ring, &entries, n).expect("a free slot");
            commit(&ring, slot, n, Stamp { id: n, ..Stamp::default() }, 1, 0);
            chooser.completed(slot, n);
            slot
        };
        for n in 0..3 {
            assert_eq!(publish(n), n as usize);
        }
        // Another reader holds message 0, so message 3 goes to slot 1 (message 1 is lost)
        // and takes index entry 0 from message 0, which is still intact in slot 0.
        let holder = entries[1].load(Ordering::Relaxed);
        assert!(pin(&entries[1], holder, &ring.metas[0], 0, complete(0)));
        assert_eq!(publish(3), 1);
        let idle = entries[0].load(Ordering::Relaxed);
        let mut cursor = Cursor::new(ReadMode::InOrder, 3, 0);
        let mut got = Vec::new();
        while let Look::Found(found) = look(&ring, &mut cursor, &entries[0], idle, 1) {
            got.push((found.info.seq, found.slot));
            unpin(&entries[0], idle);
            cursor.settle(still_intact(&ring.metas[found.slot], found.seq_word));
        }
        assert_eq!(got, [(0, 0), (2, 2), (3, 1)], "message 0 was not overwritten: it is read");
        assert_eq!((cursor.stats.read, cursor.stats.dropped), (3, 1), "only message 1 is lost");
    }

    #[test]
    fn a_dead_readers_entry_is_reclaimed_but_not_a_new_readers() {
        let entry = AtomicU64::new(fresh_entry(0));
        let idle = entry.load(Ordering::Relaxed);
        entry.store(idle | 3, Ordering::Relaxed);
        let seen = entry.load(Ordering::Relaxed);
        assert!(claims_anything(seen));
        // A new reader took the entry (bumped the epoch) and pinned the same slot.
        let newer = fresh_entry(seen);
        entry.store(newer | 3, Ordering::Relaxed);
        assert!(!reclaim_entry(&entry, seen), "the new reader's pin stays");
        let seen = entry.load(Ordering::Relaxed);
        assert!(reclaim_entry(&entry, seen));
        assert!(!claims_anything(entry.load(Ordering::Relaxed)));
    }

    #[test]
    fn a_sleeper_is_seen_by_announce() {
        let writer = WriterLine::new();
        let entries = [AtomicU64::new(0), AtomicU64::new(0)];
        assert!(!announce(&writer, &entries, 1));
        assert_eq!(prepare_sleep(&writer, &entries[1], 0, 1), Some(1));
        assert!(announce(&writer, &entries, 2));
        finish_sleep(&entries[1], 0);
        assert_eq!(prepare_sleep(&writer, &entries[1], 0, 1), None, "the head moved: do not sleep");
        assert!(!announce(&writer, &entries, 3));
        // A sleeper that does not come back (stopped) is woken once, not on every publish.
        assert_eq!(prepare_sleep(&writer, &entries[0], 0, 3), Some(3));
        assert!(announce(&writer, &entries, 4));
        assert!(!announce(&writer, &entries, 5), "it was woken for 4 already");
        finish_sleep(&entries[0], 0);
        assert_eq!(prepare_sleep(&writer, &entries[0], 0, 5), Some(5));
        assert!(announce(&writer, &entries, 6), "back asleep on the new word: woken again");
    }
}

/// Model check of the shipped protocol functions: every interleaving of one writer that laps
/// a 3-slot ring and one in-order reader that pins, reads and sleeps. The payload is plain
/// memory (a loom `UnsafeCell`, as the shipped code uses plain memcpy), so loom itself reports
/// any write to a slot while a reader reads it; the futex is emulated with a mutex and a
/// condvar (the kernel checks the word and queues the sleeper under one lock), so a lost
/// wake-up is a deadlock loom reports. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p ads-shmem-ipc --release --lib loom`.
#[cfg(all(test, loom))]
#[allow(unsafe_code, reason = "the model's payload is plain memory, accessed as the shipped code does")]
mod loom_model {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::{Arc, Condvar, Mutex};

    const SLOTS: usize = 3;
    const MESSAGES: u64 = 4;
    const BYTES: usize = 2;

    struct Ring {
        writer: WriterLine,
        metas: Vec<SlotMeta>,
        payload: Vec<UnsafeCell<[u8; BYTES]>>,
        entries: [ReaderEntry; 1],
        futex: Futex,
    }

    impl RingView for Ring {
        fn writer_line(&self) -> &WriterLine {
            &self.writer
        }
        fn slot_count(&self) -> usize {
            self.metas.len()
        }
        fn meta(&self, slot: usize) -> &SlotMeta {
            &self.metas[slot]
        }
    }

    /// A futex on `WriterLine::notify`: wait re-checks the word under the lock wake takes.
    struct Futex {
        wakes: Mutex<u64>,
        woken: Condvar,
    }

    impl Futex {
        fn wait(&self, word: &AtomicU32, expected: u32) {
            let mut wakes = self.wakes.lock().unwrap();
            if word.load(Ordering::Relaxed) != expected {
                return;
            }
            let seen = *wakes;
            while *wakes == seen {
                wakes = self.woken.wait(wakes).unwrap();
            }
        }

        fn wake_all(&self) {
            *self.wakes.lock().unwrap() += 1;
            self.woken.notify_all();
        }
    }

    /// A ring of `slots` slots with `published` messages already in it (written before any
    /// thread starts), and the writer's chooser that wrote them. The small models use the
    /// fewest slots and messages that reach the interleaving they are about: loom needs four
    /// preemptions to get there, and the cost grows steeply with every step either side takes.
    fn ring_with(slots: usize, published: u64) -> (Arc<Ring>, SlotChooser) {
        let ring = Arc::new(Ring {
            writer: WriterLine::new(),
            metas: (0..slots).map(|_| SlotMeta::new()).collect(),
            payload: (0..slots).map(|_| UnsafeCell::new([0; BYTES])).collect(),
            entries: [AtomicU64::new(fresh_entry(0))],
            futex: Futex { wakes: Mutex::new(0), woken: Condvar::new() },
        });
        let mut chooser = SlotChooser::new(slots);
        for n in 0..published {
            assert!(publish(&ring, &mut chooser, n), "message {n} dropped");
        }
        (ring, chooser)
    }

    /// The shipped writer's steps for message `n`; `false` if it was dropped (no free slot).
    fn publish(ring: &Ring, chooser: &mut SlotChooser, n: u64) -> bool {
        let Some(slot) = chooser.claim_next(ring, &ring.entries, n) else { return false };
        // SAFETY: the slot was claimed: no reader pins it, so nobody reads it now.
        ring.payload[slot].with_mut(|p| unsafe { *p = [n as u8 + 100; BYTES] });
        commit(ring, slot, n, Stamp { id: n, ..Stamp::default() }, BYTES as u64, 0);
        chooser.completed(slot, n);
        if announce(&ring.writer, &ring.entries, n + 1) {
            ring.futex.wake_all();
        }
        true
    }

    fn small_model(preemptions: usize) -> loom::model::Builder {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(preemptions);
        builder
    }

    /// The shipped reader's steps for message 0 in slot 0 of a [`ring_with`] ring: pin,
    /// read, re-check, unpin (or nothing if the writer got there first).
    fn read_message_0(ring: &Ring, idle: u64) {
        let entry = &ring.entries[0];
        if pin(entry, idle, &ring.metas[0], 0, complete(0)) {
            // SAFETY: the slot is pinned: the writer does not write it now.
            let bytes = ring.payload[0].with(|p| unsafe { *p });
            assert!(still_intact(&ring.metas[0], complete(0)), "a pinned slot changed");
            unpin(entry, idle);
            assert_eq!(bytes, [100; BYTES], "torn bytes");
        }
    }

    /// A reader reads message 0 from slot 0, unpins, and pins message 1 in slot 1, while the
    /// writer rewrites slot 0 with message 2. The writer's claim of slot 0 may load the re-pin
    /// (not the unpin) from the reader's entry: that store must release the reads of slot 0
    /// too, or they race the writer's writes.
    #[test]
    fn loom_a_re_pin_releases_the_previous_slot() {
        small_model(4).check(|| {
            let (ring, mut chooser) = ring_with(2, 2);
            let w = Arc::clone(&ring);
            let writer = loom::thread::spawn(move || {
                // A collision may drop the message: not this model's concern.
                let _ = publish(&w, &mut chooser, 2);
            });
            let idle = ring.entries[0].load(Ordering::Relaxed);
            read_message_0(&ring, idle);
            let _ = pin(&ring.entries[0], idle, &ring.metas[1], 1, complete(1));
            writer.join().unwrap();
        });
    }

    /// A reader reads message 0 from slot 0, unpins, and gets ready to sleep on the head it
    /// saw, while the writer rewrites slot 0 with message 2. The writer's claim may load the
    /// sleeping flag (or its removal) from the entry: those stores must release the reads of
    /// slot 0 too.
    #[test]
    fn loom_sleeping_after_an_unpin_releases_the_slot() {
        small_model(4).check(|| {
            let (ring, mut chooser) = ring_with(2, 2);
            let w = Arc::clone(&ring);
            let writer = loom::thread::spawn(move || {
                let _ = publish(&w, &mut chooser, 2);
            });
            let idle = ring.entries[0].load(Ordering::Relaxed);
            read_message_0(&ring, idle);
            // The shipped `RingReader::next` after a look that found nothing new; the wait
            // itself is left out (the writer may already be done, nobody would wake us).
            if prepare_sleep(&ring.writer, &ring.entries[0], idle, 2).is_some() {
                finish_sleep(&ring.entries[0], idle);
            }
            writer.join().unwrap();
        });
    }

    /// The shipped reader's steps for a found message: read the pinned payload, re-check,
    /// unpin. Asserts the bytes are the message's own.
    fn read_found(ring: &Ring, cursor: &mut Cursor, found: Located, idle: u64) {
        // SAFETY: the slot is pinned: the writer does not write it now.
        let bytes = ring.payload[found.slot].with(|p| unsafe { *p });
        let intact = still_intact(&ring.metas[found.slot], found.seq_word);
        unpin(&ring.entries[0], idle);
        cursor.settle(intact);
        assert!(intact, "a pinned slot changed");
        assert_eq!(found.info.stamp.id, found.info.seq);
        assert_eq!(bytes, [found.info.seq as u8 + 100; BYTES], "torn or foreign bytes");
    }

    /// A full ring of three slots, one writer publishing one more message and one in-order
    /// reader reading all four. The message overwrites one slot, so at most one is lost, and
    /// with one reader pinning one slot the writer always has a free one. Pins and claims
    /// collide here (the reader pins the slot the writer is deciding about, or moves its pin
    /// onto the slot the writer tries next): then the claim backs off and the reader must
    /// look at the same slot again, not count its message as lapped; and a claim that lost to
    /// a pin the writer's scan did not see must not end in a dropped message.
    #[test]
    fn loom_a_pin_claim_collision_loses_no_message() {
        small_model(3).check(|| {
            let (ring, mut chooser) = ring_with(3, 3);
            let w = Arc::clone(&ring);
            let writer = loom::thread::spawn(move || {
                assert!(publish(&w, &mut chooser, 3), "message 3 dropped with a slot free");
            });
            let entry = &ring.entries[0];
            let idle = entry.load(Ordering::Relaxed);
            let mut cursor = Cursor::new(ReadMode::InOrder, 3, 0);
            loop {
                let s = cursor.stats;
                if s.read + s.dropped + s.overruns == 4 {
                    break;
                }
                match look(&*ring, &mut cursor, entry, idle, BYTES as u64) {
                    Look::Found(found) => read_found(&ring, &mut cursor, found, idle),
                    Look::Nothing(_) => loom::thread::yield_now(),
                    Look::ImpossibleHead(head) => panic!("head {head}"),
                }
            }
            let s = cursor.stats;
            assert!(s.dropped <= 1, "one message overwritten, {} counted as dropped: {s:?}", s.dropped);
            writer.join().unwrap();
        });
    }

    #[test]
    fn loom_pinned_reads_never_race_the_writer_and_no_wakeup_is_lost() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.max_branches = 100_000;
        builder.check(|| {
            let ring = Arc::new(Ring {
                writer: WriterLine::new(),
                metas: (0..SLOTS).map(|_| SlotMeta::new()).collect(),
                payload: (0..SLOTS).map(|_| UnsafeCell::new([0; BYTES])).collect(),
                entries: [AtomicU64::new(fresh_entry(0))],
                futex: Futex { wakes: Mutex::new(0), woken: Condvar::new() },
            });
            let w = Arc::clone(&ring);
            let writer = loom::thread::spawn(move || {
                let mut chooser = SlotChooser::new(SLOTS);
                for n in 0..MESSAGES {
                    // One reader pins at most one slot of three: there is always a free one.
                    let slot = chooser.claim_next(&*w, &w.entries, n).expect("a free slot");
                    // SAFETY: the slot was claimed: no reader pins it, so nobody reads it now.
                    w.payload[slot].with_mut(|p| unsafe { *p = [n as u8 + 100; BYTES] });
                    commit(&*w, slot, n, Stamp { id: n, ..Stamp::default() }, BYTES as u64, 0);
                    chooser.completed(slot, n);
                    if announce(&w.writer, &w.entries, n + 1) {
                        w.futex.wake_all();
                    }
                }
            });
            let r = Arc::clone(&ring);
            let reader = loom::thread::spawn(move || {
                let entry = &r.entries[0];
                let idle = entry.load(Ordering::Relaxed);
                let mut cursor = Cursor::new(ReadMode::InOrder, SLOTS as u64, 0);
                loop {
                    let s = cursor.stats;
                    if s.read + s.dropped + s.overruns == MESSAGES {
                        break;
                    }
                    match look(&*r, &mut cursor, entry, idle, BYTES as u64) {
                        Look::Found(found) => {
                            // SAFETY: the slot is pinned: the writer does not write it now.
                            let bytes = r.payload[found.slot].with(|p| unsafe { *p });
                            let intact = still_intact(&r.metas[found.slot], found.seq_word);
                            unpin(entry, idle);
                            cursor.settle(intact);
                            assert!(intact, "a pinned slot changed");
                            assert_eq!(found.info.stamp.id, found.info.seq);
                            assert_eq!(bytes, [found.info.seq as u8 + 100; BYTES], "torn or foreign bytes");
                        }
                        Look::Nothing(head) => {
                            if let Some(word) = prepare_sleep(&r.writer, entry, idle, head) {
                                r.futex.wait(&r.writer.notify, word);
                                finish_sleep(entry, idle);
                            } else {
                                // The head moved: the shipped reader looks again at once; tell
                                // loom this thread is spinning on the writer.
                                loom::thread::yield_now();
                            }
                        }
                        Look::ImpossibleHead(head) => panic!("head {head}"),
                    }
                }
            });
            writer.join().unwrap();
            reader.join().unwrap();
        });
    }
}
