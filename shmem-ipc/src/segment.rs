//! Typed access to a mapped ring: the segment (header, slot metadata, payloads) and the
//! reader table. With `os.rs`, nearly all the `unsafe` of the crate. Only atomics of shared
//! memory are handed out as references; plain bytes a foreign process may write are copied
//! out (volatile), or handed out by `unsafe fn`s whose callers know a pin or a claim holds.

#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::layout::{self, RawConfig, RingHeader, Shape, MAGIC, MAX_READERS};
use crate::os::Mapping;
use crate::protocol::{ReaderEntry, RingView, SlotMeta, WriterLine};
use crate::sync::{AtomicU64, Ordering};
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;

/// One mapped ring segment: read-write for its writer, read-only for readers.
pub(crate) struct Segment {
    map: Mapping,
    /// Kept open: `fstat` on it tells a reader that its segment was unlinked (replaced).
    file: File,
    name: String,
    writable: bool,
    /// Our own copy of the segment's configuration: validated once, never re-read.
    config: RawConfig,
    shape: Shape,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("name", &self.name).field("config", &self.config).finish()
    }
}

impl Segment {
    /// Maps a freshly created and sized segment file read-write and initialises it: the
    /// configuration first, the magic last.
    pub(crate) fn initialise(name: &str, file: File, config: RawConfig, shape: Shape) -> Result<Self> {
        let size = usize::try_from(config.total_size).map_err(|_| Error::InvalidConfig {
            name: name.to_string(),
            reason: "ring too large for this machine".into(),
        })?;
        let map = Mapping::new(&file, size, true).map_err(|source| Error::Io {
            name: name.to_string(),
            context: "mapping the new segment",
            source,
        })?;
        let header = map.as_ptr().cast::<RingHeader>();
        // SAFETY: the mapping is `total_size` bytes (≥ the header, `Shape::config` computed it),
        // page-aligned, and nobody can see these bytes as a valid ring before `magic` is
        // stored below (readers wait for it). Writing the plain config through the raw pointer
        // is the single initialisation of those bytes; the atomics in the header start as
        // zeros (fresh tmpfs pages), which is their valid initial state.
        unsafe {
            std::ptr::addr_of_mut!((*header).config).write(config);
        }
        let segment = Self { map, file, name: name.to_string(), writable: true, config, shape };
        // Sync point: publishes the config; pairs with the Acquire load of `magic` in `open`.
        segment.magic().store(MAGIC, Ordering::Release);
        Ok(segment)
    }

    /// Maps an existing segment read-only and validates everything before trusting it.
    /// `len` is the file's size from `fstat`.
    pub(crate) fn open(name: &str, file: File, len: u64) -> Result<Self> {
        let initialising = || Error::Initialising { name: name.to_string() };
        if len < std::mem::size_of::<RingHeader>() as u64 {
            // The writer creates the file empty and sizes it right after.
            return Err(initialising());
        }
        let size = usize::try_from(len).map_err(|_| Error::Corrupt {
            name: name.to_string(),
            reason: format!("segment of {len} bytes does not fit this machine's address space"),
        })?;
        let map = Mapping::new(&file, size, false).map_err(|source| Error::Io {
            name: name.to_string(),
            context: "mapping the segment",
            source,
        })?;
        let header = map.as_ptr().cast::<RingHeader>();
        // SAFETY: the mapping is page-aligned (so aligned for RingHeader) and at least
        // `size_of::<RingHeader>()` bytes long (checked above); `magic` is an atomic, so
        // reading it while the writer initialises is not a data race.
        let magic = unsafe { (*header).magic.load(Ordering::Acquire) };
        if magic == 0 {
            return Err(initialising());
        }
        if magic != MAGIC {
            return Err(Error::Corrupt {
                name: name.to_string(),
                reason: format!("bad magic {magic:#018x}, expected {MAGIC:#018x} (not an ads ring?)"),
            });
        }
        // SAFETY: in bounds and aligned as above; the config was fully written before the
        // magic we just acquired, and writers never write it again. A volatile copy keeps the
        // compiler from re-reading shared memory later: from here on only our copy is used.
        let config = unsafe { std::ptr::addr_of!((*header).config).read_volatile() };
        let shape = layout::validate(name, &config, map.len())?;
        Ok(Self { map, file, name: name.to_string(), writable: false, config, shape })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn config(&self) -> &RawConfig {
        &self.config
    }

    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    /// The segment file's current size (`fstat`), which another process of the ring's user
    /// may have changed.
    pub(crate) fn file_len(&self) -> std::io::Result<u64> {
        self.file.metadata().map(|m| m.len())
    }

    /// True once the segment's file has been unlinked: its writer closed it, or a new writer
    /// took the name over from a dead one. Either way no writer will touch it again.
    pub(crate) fn is_unlinked(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    /// Checks that the header still says what it said at attach: the magic, and the whole
    /// configuration against our copy. The writer never changes either after initialising, so
    /// any difference means something else wrote into the segment.
    pub(crate) fn check_header(&self) -> Result<()> {
        let corrupt = |reason| Err(Error::Corrupt { name: self.name.clone(), reason });
        let magic = self.magic().load(Ordering::Relaxed);
        if magic != MAGIC {
            return corrupt(format!("header magic overwritten with {magic:#018x} after attach"));
        }
        let header = self.map.as_ptr().cast::<RingHeader>();
        // SAFETY: in bounds and aligned (checked at create/open). A volatile read of plain
        // integers: bytes a foreign process writes concurrently may come out torn, but every
        // bit pattern is a valid `RawConfig`, and the copy is only compared, never used.
        let current = unsafe { std::ptr::addr_of!((*header).config).read_volatile() };
        if current != self.config {
            return corrupt("header configuration changed after attach".into());
        }
        Ok(())
    }

    /// The header's magic word. Only atomics of the header are handed out as references: the
    /// plain `config` bytes may be written by a foreign process at any time, and a `&` over
    /// bytes that change is undefined behaviour (so they are only ever copied out, volatile).
    fn magic(&self) -> &AtomicU64 {
        let header = self.map.as_ptr().cast::<RingHeader>();
        // SAFETY: checked at create/open that the mapping holds a header at offset 0 and is
        // aligned for it; the mapping lives as long as `self`. `addr_of!` makes no reference
        // to the whole header, only to this atomic, and any bit pattern is a valid AtomicU64.
        unsafe { &*std::ptr::addr_of!((*header).magic) }
    }

    /// The writer's line of the header: head, futex word, closed flag, heartbeat, counters.
    pub(crate) fn writer(&self) -> &WriterLine {
        let header = self.map.as_ptr().cast::<RingHeader>();
        // SAFETY: as in `magic`: in bounds and aligned, no reference to the plain `config`;
        // `WriterLine` is made only of atomics (any bit pattern valid; in a reader's
        // read-only mapping they are only ever loaded).
        unsafe { &*std::ptr::addr_of!((*header).writer) }
    }

    /// The segment's file (read-only for readers): another mapping of it, e.g. Python's, sees
    /// the same bytes, and stays valid after the writer unlinked the file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Where `slot`'s payload starts in the segment's file.
    pub(crate) fn payload_file_offset(&self, slot: usize) -> u64 {
        assert!(slot < self.config.slot_count as usize, "slot index out of range");
        self.config.payloads_offset + slot as u64 * self.config.payload_stride
    }

    fn payload_ptr(&self, slot: usize) -> *mut u8 {
        assert!(slot < self.config.slot_count as usize, "slot index out of range");
        let offset = self.config.payloads_offset as usize + slot * self.config.payload_stride as usize;
        // SAFETY: `validate` checked payloads_offset + slot_count * payload_stride <=
        // total_size <= mapped length, so the slot's `slot_capacity` bytes are in bounds.
        unsafe { self.map.as_ptr().add(offset) }
    }

    /// Payload bytes of `slot`, as a reader sees them. `len` is clamped to the slot capacity.
    ///
    /// # Safety
    /// This process's reader entry of this ring must pin `slot` (`protocol::pin` returned
    /// true) for as long as the returned borrow lives: `protocol::unpin` (or any other store
    /// to the entry) must not run before the borrow ends. The writer never writes a pinned
    /// slot, so the bytes do not change meanwhile; without the pin they may, and a `&[u8]`
    /// over bytes that change is undefined behaviour even if the result is discarded.
    pub(crate) unsafe fn pinned_payload(&self, slot: usize, len: usize) -> &[u8] {
        let len = len.min(self.config.slot_capacity as usize);
        // SAFETY: in bounds (see `payload_ptr`); u8 has no invalid bit patterns; and by the
        // caller's contract the writer does not write these bytes while the borrow lives.
        unsafe { std::slice::from_raw_parts(self.payload_ptr(slot), len) }
    }

    /// Payload bytes of `slot`, for the writer. `&mut self` makes this the only live view in
    /// this process. Panics on a reader's (read-only) segment.
    ///
    /// # Safety
    /// The writer must have claimed `slot` (`protocol::claim` returned true) and not yet
    /// published it: no reader pins it, and readers read no slot they have not pinned, so
    /// nobody else reads these bytes while the borrow lives.
    pub(crate) unsafe fn payload_mut(&mut self, slot: usize) -> &mut [u8] {
        assert!(self.writable, "payload_mut on a read-only mapping");
        let len = self.config.slot_capacity as usize;
        // SAFETY: in bounds (see `payload_ptr`) and mapped writable; `&mut self` means no
        // other view in this process; by the caller's contract no reader reads the slot.
        unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(slot), len) }
    }
}

impl RingView for Segment {
    fn writer_line(&self) -> &WriterLine {
        self.writer()
    }

    fn slot_count(&self) -> usize {
        self.config.slot_count as usize
    }

    /// Metadata of `slot`. Panics if `slot >= slot_count` (a bug in this crate).
    fn meta(&self, slot: usize) -> &SlotMeta {
        assert!(slot < self.config.slot_count as usize, "slot index out of range");
        let offset = self.config.metas_offset as usize + slot * std::mem::size_of::<SlotMeta>();
        // SAFETY: `validate` checked metas_offset + slot_count * 64 <= total_size <= mapped
        // length, metas_offset is a multiple of 64 and the mapping is page-aligned, so this is
        // an in-bounds, aligned SlotMeta made only of atomics.
        unsafe { &*self.map.as_ptr().add(offset).cast::<SlotMeta>() }
    }
}

/// Bytes of the reader table file.
pub(crate) const READER_TABLE_BYTES: u64 = (MAX_READERS * std::mem::size_of::<ReaderEntry>()) as u64;

/// The mapped reader table: `MAX_READERS` words, read-write for everyone who has the ring.
#[derive(Debug)]
pub(crate) struct ReaderTable {
    map: Mapping,
    file: File,
}

impl ReaderTable {
    /// Maps a reader table file of exactly `READER_TABLE_BYTES` (fresh zeros for a writer).
    pub(crate) fn map(name: &str, file: File, len: u64) -> Result<Self> {
        if len != READER_TABLE_BYTES {
            return Err(Error::Corrupt {
                name: name.to_string(),
                reason: format!("reader table of {len} bytes, {READER_TABLE_BYTES} expected"),
            });
        }
        let map = Mapping::new(&file, READER_TABLE_BYTES as usize, true).map_err(|source| Error::Io {
            name: name.to_string(),
            context: "mapping the reader table",
            source,
        })?;
        Ok(Self { map, file })
    }

    /// The descriptor the entry locks are taken and probed on.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn entries(&self) -> &[ReaderEntry] {
        // SAFETY: the mapping is READER_TABLE_BYTES = MAX_READERS words long, page-aligned
        // (so aligned for AtomicU64) and lives as long as `self`; any bit pattern is a valid
        // AtomicU64, and every access is atomic.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<ReaderEntry>(), MAX_READERS) }
    }
}

/// The generation recorded in a stale segment file of this layout, if it has one.
pub(crate) fn stale_generation(file: &File) -> Option<u64> {
    use std::os::unix::fs::FileExt as _;
    let mut bytes = [0u8; std::mem::size_of::<RingHeader>()];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let word = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
    let config_at = std::mem::offset_of!(RingHeader, config);
    let version_at = config_at + std::mem::offset_of!(RawConfig, layout_version);
    let version =
        bytes.get(version_at..version_at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
    (word(0) == Some(MAGIC) && version == Some(layout::LAYOUT_VERSION))
        .then(|| word(config_at + std::mem::offset_of!(RawConfig, generation)))
        .flatten()
}

/// The writer pid recorded in a segment file, for messages; 0 if unreadable.
pub(crate) fn recorded_writer_pid(file: &File) -> u32 {
    use std::os::unix::fs::FileExt as _;
    let at = std::mem::offset_of!(RingHeader, config) + std::mem::offset_of!(RawConfig, writer_pid);
    let mut bytes = [0u8; 4];
    match file.read_exact_at(&mut bytes, at as u64) {
        Ok(()) => u32::from_ne_bytes(bytes),
        Err(_) => 0,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::RingKind;

    #[test]
    fn a_stale_segment_tells_its_generation() {
        let path = std::path::PathBuf::from(format!("/dev/shm/ads.u{}-stale", std::process::id()));
        let shape = Shape { kind: RingKind::Message, slot_count: 3, slot_capacity: 64 };
        let mut config = shape.config().unwrap();
        config.generation = 7;
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
        file.set_len(config.total_size).unwrap();
        let segment = Segment::initialise("stale", file, config, shape).unwrap();
        let reopened = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(stale_generation(&reopened), Some(7));
        drop(segment);
    }
}
