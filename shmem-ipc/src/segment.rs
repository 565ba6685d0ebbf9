//! Mapping a ring into `/dev/shm`: creation (with space reservation and stale-segment
//! takeover), attaching, and typed access to the header, slot metadata and payloads.
//! All of the crate's `unsafe` is here.

#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::layout::{self, RawConfig, RingHeader, Shape, MAGIC};
use crate::liveness::ProcessId;
use crate::protocol::SlotMeta;
use crate::sync::Ordering;
use shared_memory::{Shmem, ShmemConf, ShmemError};
use std::time::{Duration, Instant};

/// Every ring's file is `/dev/shm/ads.<name>`: one prefix so a glance (or a test) finds ours.
pub const SHM_PREFIX: &str = "ads.";
const SHM_DIR: &str = "/dev/shm";

/// The path of a ring's segment, e.g. `/dev/shm/ads.frames`.
pub fn shm_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(SHM_DIR).join(format!("{SHM_PREFIX}{name}"))
}

fn os_id(name: &str) -> String {
    format!("/{SHM_PREFIX}{name}")
}

pub(crate) fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 200 {
        Some("longer than 200 bytes")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName { name: name.to_string(), reason }),
        None => Ok(()),
    }
}

/// One mapped ring segment.
pub(crate) struct Segment {
    shmem: Shmem,
    name: String,
    /// Our own copy of the segment's configuration: validated once, never re-read.
    config: RawConfig,
    shape: Shape,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("name", &self.name).field("config", &self.config).finish()
    }
}

// SAFETY: `Shmem` is only `!Send` because it holds a raw pointer. The mapping belongs to the
// process, not the thread; every access to shared words goes through atomics and the slot
// protocol, and payload access is gated by `&self`/`&mut self` exactly as for owned memory.
unsafe impl Send for Segment {}

impl Segment {
    /// Creates the segment for a writer, taking over a stale one left by a dead writer.
    /// `geometry` fills the frame fields of the config (zeros for message rings).
    pub(crate) fn create(name: &str, shape: Shape, geometry: [u32; 4]) -> Result<Self> {
        validate_name(name)?;
        let invalid = |reason| Error::InvalidConfig { name: name.to_string(), reason };
        let mut config = shape.config().map_err(invalid)?;
        let me = ProcessId::current().map_err(|source| Error::Io {
            name: name.to_string(),
            context: "reading /proc/self/stat",
            source,
        })?;
        [config.width, config.height, config.stride, config.pixel_format] = geometry;
        config.writer_pid = me.pid;
        config.writer_start_ticks = me.start_ticks;
        config.created_wall_ns = crate::clock::wall_ns();
        config.generation = 1;

        check_space(name, config.total_size)?;
        let size = usize::try_from(config.total_size).map_err(|_| invalid("too large".into()))?;
        for _attempt in 0..3 {
            match ShmemConf::new().os_id(os_id(name)).size(size).create() {
                Ok(shmem) => return Self::initialise(name, shmem, config, shape),
                Err(ShmemError::MappingIdExists) => {
                    if let Some(previous) = take_over_stale(name)? {
                        config.generation = previous.saturating_add(1);
                    }
                }
                Err(source) => return Err(Error::Shmem { name: name.to_string(), source }),
            }
        }
        Err(Error::Corrupt {
            name: name.to_string(),
            reason: "another process keeps recreating this ring while we create it".into(),
        })
    }

    fn initialise(name: &str, shmem: Shmem, config: RawConfig, shape: Shape) -> Result<Self> {
        // The segment is owned (unlinked on drop) from here on, so any error below cleans up.
        reserve(name, config.total_size)?;
        if shmem.len() < std::mem::size_of::<RingHeader>() {
            return Err(Error::Corrupt {
                name: name.to_string(),
                reason: "mapping smaller than its header".into(),
            });
        }
        let header = shmem.as_ptr().cast::<RingHeader>();
        // SAFETY: the mapping is at least `total_size` bytes (checked above for the header,
        // `create` sized it), page-aligned, and nobody else can see these bytes as a valid
        // ring before `magic` is stored below. Writing the plain config through the raw
        // pointer is the single initialisation of those bytes; the atomics in the header start
        // as zeros (fresh tmpfs pages), which is their valid initial state.
        unsafe {
            std::ptr::addr_of_mut!((*header).config).write(config);
        }
        let segment = Self { shmem, name: name.to_string(), config, shape };
        // Sync point: publishes the config; pairs with the Acquire load of `magic` in `open`.
        segment.header().magic.store(MAGIC, Ordering::Release);
        Ok(segment)
    }

    /// Attaches to an existing segment, validating everything before trusting it.
    pub(crate) fn open(name: &str) -> Result<Self> {
        validate_name(name)?;
        let shmem = open_shmem(name)?;
        if shmem.len() < std::mem::size_of::<RingHeader>() {
            return Err(Error::Corrupt {
                name: name.to_string(),
                reason: format!("segment of {} bytes is smaller than a ring header", shmem.len()),
            });
        }
        let header = shmem.as_ptr().cast::<RingHeader>();
        // SAFETY: the mapping is page-aligned (so aligned for RingHeader) and at least
        // `size_of::<RingHeader>()` bytes long (checked above); `magic` is an atomic, so
        // reading it while the writer initialises is not a data race.
        let magic_word = unsafe { &(*header).magic };
        // A writer initialises in microseconds; give it a moment before calling it corrupt.
        let deadline = Instant::now() + Duration::from_millis(200);
        let magic = loop {
            // Sync point: pairs with the Release store in `initialise`.
            let m = magic_word.load(Ordering::Acquire);
            if m != 0 || Instant::now() >= deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
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
        let shape = layout::validate(name, &config, shmem.len())?;
        Ok(Self { shmem, name: name.to_string(), config, shape })
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

    pub(crate) fn writer_id(&self) -> ProcessId {
        ProcessId { pid: self.config.writer_pid, start_ticks: self.config.writer_start_ticks }
    }

    /// Checks that the header still says what it said at attach: the magic, and the whole
    /// configuration against our copy. The writer never changes either after initialising, so
    /// any difference means something else wrote into the segment.
    pub(crate) fn check_header(&self) -> Result<()> {
        let corrupt = |reason| Err(Error::Corrupt { name: self.name.clone(), reason });
        let magic = self.header().magic.load(Ordering::Relaxed);
        if magic != MAGIC {
            return corrupt(format!("header magic overwritten with {magic:#018x} after attach"));
        }
        let header = self.shmem.as_ptr().cast::<RingHeader>();
        // SAFETY: in bounds and aligned (checked at create/open). A volatile read of plain
        // integers: bytes a foreign process writes concurrently may come out torn, but every
        // bit pattern is a valid `RawConfig`, and the copy is only compared, never used.
        let current = unsafe { std::ptr::addr_of!((*header).config).read_volatile() };
        if current != self.config {
            return corrupt("header configuration changed after attach".into());
        }
        Ok(())
    }

    pub(crate) fn header(&self) -> &RingHeader {
        // SAFETY: checked at create/open that the mapping holds a header at offset 0 and is
        // aligned for it; the mapping lives as long as `self`. Shared fields are atomics; the
        // plain `config` is never written after initialisation.
        unsafe { &*self.shmem.as_ptr().cast::<RingHeader>() }
    }

    /// Metadata of slot `index`. Panics if `index >= slot_count` (a bug in this crate).
    pub(crate) fn meta(&self, index: usize) -> &SlotMeta {
        assert!(index < self.config.slot_count as usize, "slot index out of range");
        let offset = self.config.metas_offset as usize + index * std::mem::size_of::<SlotMeta>();
        // SAFETY: `validate` checked metas_offset + slot_count * 64 <= total_size <= mapped
        // length, metas_offset is a multiple of 64 and the mapping is page-aligned, so this is
        // an in-bounds, aligned SlotMeta made only of atomics.
        unsafe { &*self.shmem.as_ptr().add(offset).cast::<SlotMeta>() }
    }

    fn payload_ptr(&self, index: usize) -> *mut u8 {
        assert!(index < self.config.slot_count as usize, "slot index out of range");
        let offset = self.config.payloads_offset as usize + index * self.config.payload_stride as usize;
        // SAFETY: `validate` checked payloads_offset + slot_count * payload_stride <=
        // total_size <= mapped length, so the slot's `slot_capacity` bytes are in bounds.
        unsafe { self.shmem.as_ptr().add(offset) }
    }

    /// Payload bytes of slot `index`, as a reader sees them.
    ///
    /// The writer may overwrite these bytes at any moment; the caller must treat what it read
    /// as garbage unless `protocol::still_intact` confirms it afterwards. `len` is clamped to
    /// the slot capacity.
    pub(crate) fn payload(&self, index: usize, len: usize) -> &[u8] {
        let len = len.min(self.config.slot_capacity as usize);
        // SAFETY: in bounds (see `payload_ptr`), and u8 has no invalid bit patterns, so
        // whatever a concurrent writer leaves there is a valid `[u8]`. Torn contents are
        // detected by the slot's sequence check, never returned as valid.
        unsafe { std::slice::from_raw_parts(self.payload_ptr(index), len) }
    }

    /// Payload bytes of slot `index`, for the writer. `&mut self` makes this the only live
    /// writable view; readers in other processes only read these bytes.
    pub(crate) fn payload_mut(&mut self, index: usize) -> &mut [u8] {
        let len = self.config.slot_capacity as usize;
        // SAFETY: in bounds (see `payload_ptr`); the single writer holds `&mut self`, so no
        // other mutable view exists in this process; readers elsewhere only read and
        // validate with the slot sequence.
        unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(index), len) }
    }
}

fn open_shmem(name: &str) -> Result<Shmem> {
    match ShmemConf::new().os_id(os_id(name)).open() {
        Ok(shmem) => Ok(shmem),
        Err(ShmemError::MapOpenFailed(errno)) if errno == rustix::io::Errno::NOENT.raw_os_error() as u32 => {
            Err(Error::NotFound { name: name.to_string() })
        }
        Err(source) => Err(Error::Shmem { name: name.to_string(), source }),
    }
}

/// An existing segment under our name: refuse if its writer lives, else unlink it so the
/// caller can create a fresh one. Returns the stale segment's generation when it had one.
fn take_over_stale(name: &str) -> Result<Option<u64>> {
    let mut shmem = match open_shmem(name) {
        Ok(shmem) => shmem,
        // Gone between our create and open: simply try creating again.
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut generation = None;
    if shmem.len() >= std::mem::size_of::<RingHeader>() {
        let header = shmem.as_ptr().cast::<RingHeader>();
        // SAFETY: aligned and in bounds (length checked above); `magic` is atomic.
        let magic = unsafe { (*header).magic.load(Ordering::Acquire) };
        if magic == MAGIC {
            // SAFETY: as in `Segment::open`: the config was written before the magic.
            let config = unsafe { std::ptr::addr_of!((*header).config).read_volatile() };
            let writer = ProcessId { pid: config.writer_pid, start_ticks: config.writer_start_ticks };
            if writer.is_alive() {
                return Err(Error::WriterAlive { name: name.to_string(), pid: writer.pid });
            }
            generation = Some(config.generation);
            tracing::warn!(ring = name, dead_pid = writer.pid, "taking over the ring of a dead writer");
        } else {
            tracing::warn!(ring = name, "replacing an unrecognised segment with the same name");
        }
    }
    // Owning it makes drop unlink it; readers still mapping it keep their (dead) copy.
    shmem.set_owner(true);
    drop(shmem);
    Ok(generation)
}

/// Removes every `/dev/shm/ads.*` segment whose writer is dead (crashed without cleaning up)
/// and returns their ring names. Segments of live writers are left alone. A writer taking over
/// its own name does this by itself; this is for names that will not be reused, e.g. at boot
/// or from an operator's shell (`ads-ring clean`).
pub fn reclaim_stale() -> std::io::Result<Vec<String>> {
    let mut reclaimed = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let file_name = entry?.file_name();
        let Some(name) = file_name.to_str().and_then(|f| f.strip_prefix(SHM_PREFIX)) else { continue };
        if validate_name(name).is_err() {
            continue;
        }
        if is_young_and_unrecognised(name) {
            continue;
        }
        match take_over_stale(name) {
            Ok(_) => reclaimed.push(name.to_string()),
            Err(Error::WriterAlive { .. }) => {}
            Err(e) => tracing::warn!(ring = name, "cannot inspect segment: {e}"),
        }
    }
    Ok(reclaimed)
}

/// A segment without our magic that changed in the last seconds may be a live writer's that
/// is still initialising: not ours to remove yet.
fn is_young_and_unrecognised(name: &str) -> bool {
    const GRACE: Duration = Duration::from_secs(10);
    let young = std::fs::metadata(shm_path(name))
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().map_or(true, |age| age < GRACE))
        .unwrap_or(false);
    if !young {
        return false;
    }
    let Ok(shmem) = open_shmem(name) else { return false };
    if shmem.len() < std::mem::size_of::<RingHeader>() {
        return true;
    }
    // SAFETY: aligned (page-aligned mapping) and in bounds (length checked above); atomic.
    let magic = unsafe { (*shmem.as_ptr().cast::<RingHeader>()).magic.load(Ordering::Acquire) };
    magic != MAGIC
}

fn check_space(name: &str, needed: u64) -> Result<()> {
    let io = |context| move |source| Error::Io { name: name.to_string(), context, source };
    let stat = rustix::fs::statvfs(SHM_DIR).map_err(|e| io("statvfs /dev/shm")(e.into()))?;
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    if needed > available {
        return Err(Error::ShmFull { name: name.to_string(), needed, available });
    }
    Ok(())
}

/// Makes tmpfs allocate every page now, so a full /dev/shm is an error here rather than a
/// SIGBUS in the middle of writing a frame later.
fn reserve(name: &str, size: u64) -> Result<()> {
    let file =
        std::fs::OpenOptions::new().read(true).write(true).open(shm_path(name)).map_err(|source| {
            Error::Io { name: name.to_string(), context: "opening the new segment", source }
        })?;
    match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOSPC) => {
            let available = rustix::fs::statvfs(SHM_DIR).map(|s| s.f_bavail * s.f_frsize).unwrap_or(0);
            Err(Error::ShmFull { name: name.to_string(), needed: size, available })
        }
        Err(e) => {
            Err(Error::Io { name: name.to_string(), context: "reserving /dev/shm space", source: e.into() })
        }
    }
}
