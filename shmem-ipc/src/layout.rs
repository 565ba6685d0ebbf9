//! The `#[repr(C)]` layout of a ring segment in `/dev/shm`, and its validation.
//!
//! ```text
//! offset 0            RingHeader (magic, config, writer line)
//! metas_offset        SlotMeta[slot_count], 64 bytes each
//! payloads_offset     payload[slot_count], page-aligned, `payload_stride` bytes apart
//! ```
//!
//! Readers map this read-only. What they write (pins, sleeping flags) is the reader table, a
//! separate file of `MAX_READERS` words (`protocol::ReaderEntry`).

use crate::protocol::{SlotMeta, WriterLine};
use crate::sync::AtomicU64;
use crate::Error;

/// "ADSRING1" little-endian: the first word of every segment.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"ADSRING1");
/// Bumped whenever the meaning or placement of any byte in the segment changes.
pub const LAYOUT_VERSION: u32 = 3;
/// Fewer slots than this cannot keep one slot for the writer, one stable for readers and one
/// pinned by a reader.
pub const MIN_SLOTS: u32 = 3;
/// At most this many slots: a slot index fits in the low `SLOT_BITS` of an index entry.
pub const MAX_SLOTS: u32 = 1 << crate::protocol::SLOT_BITS;
/// Readers attached at once (entries of the reader table). A writer never has to drop a frame
/// while slots ≥ pinning readers + 2.
pub const MAX_READERS: usize = 64;
/// One slot's payload is at most this large (1 GiB).
pub const MAX_SLOT_CAPACITY: u64 = 1 << 30;
const PAGE: u64 = 4096;
const PAYLOAD_ALIGN: u64 = 64;

/// What a ring carries; part of the layout check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RingKind {
    /// Fixed-geometry images.
    Frame = 1,
    /// Variable-size records up to the slot capacity.
    Message = 2,
}

impl RingKind {
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Frame),
            2 => Some(Self::Message),
            _ => None,
        }
    }
}

/// Fixed at creation; written once by the creating writer before `magic`, never after.
/// Readers copy it out once at attach and trust only their copy.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RawConfig {
    pub(crate) layout_version: u32,
    pub(crate) kind: u32,
    pub(crate) header_size: u32,
    pub(crate) slot_meta_size: u32,
    pub(crate) slot_count: u32,
    /// Frame rings: width, height, row stride in bytes, pixel format code. Zero otherwise.
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) stride: u32,
    pub(crate) pixel_format: u32,
    /// The writer's pid in its own pid namespace: for messages only, liveness is its lock.
    pub(crate) writer_pid: u32,
    /// Entries of the reader table (`MAX_READERS`).
    pub(crate) max_readers: u32,
    pub(crate) reserved: u32,
    pub(crate) slot_capacity: u64,
    pub(crate) payload_stride: u64,
    pub(crate) metas_offset: u64,
    pub(crate) payloads_offset: u64,
    pub(crate) total_size: u64,
    /// 1 for a fresh name, one more than the previous segment's when a writer took over.
    pub(crate) generation: u64,
    pub(crate) created_wall_ns: u64,
}

/// The first bytes of the segment.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RingHeader {
    /// Stored last (Release) when the writer has finished initialising everything else.
    pub(crate) magic: AtomicU64,
    pub(crate) config: RawConfig,
    pub(crate) writer: WriterLine,
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<SlotMeta>() == 64);
    assert!(std::mem::align_of::<SlotMeta>() == 64);
    assert!(std::mem::size_of::<RawConfig>() == 104);
    assert!(std::mem::align_of::<RingHeader>() == 64);
    assert!(std::mem::size_of::<RingHeader>() == 192);
};

fn round_up(x: u64, to: u64) -> Option<u64> {
    Some(x.checked_add(to - 1)? / to * to)
}

/// Geometry-free part of a ring's shape, from which all offsets follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) kind: RingKind,
    pub(crate) slot_count: u32,
    pub(crate) slot_capacity: u64,
}

impl Shape {
    /// Computes the full configuration for this shape (offsets and size), or explains why
    /// the shape is unusable.
    pub(crate) fn config(&self) -> Result<RawConfig, String> {
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&self.slot_count) {
            return Err(format!("slot count {} is outside {MIN_SLOTS}..={MAX_SLOTS}", self.slot_count));
        }
        if self.slot_capacity == 0 || self.slot_capacity > MAX_SLOT_CAPACITY {
            return Err(format!(
                "slot capacity {} is outside 1..={MAX_SLOT_CAPACITY} bytes",
                self.slot_capacity
            ));
        }
        let overflow = || "ring size overflows".to_string();
        let header_size = std::mem::size_of::<RingHeader>() as u64;
        let meta_size = std::mem::size_of::<SlotMeta>() as u64;
        let metas_offset = header_size;
        let metas_end =
            metas_offset.checked_add(meta_size * u64::from(self.slot_count)).ok_or_else(overflow)?;
        let payloads_offset = round_up(metas_end, PAGE).ok_or_else(overflow)?;
        let payload_stride = round_up(self.slot_capacity, PAYLOAD_ALIGN).ok_or_else(overflow)?;
        let total = payload_stride
            .checked_mul(u64::from(self.slot_count))
            .and_then(|p| p.checked_add(payloads_offset))
            .and_then(|t| round_up(t, PAGE))
            .ok_or_else(overflow)?;
        usize::try_from(total).map_err(|_| overflow())?;
        Ok(RawConfig {
            layout_version: LAYOUT_VERSION,
            kind: self.kind as u32,
            header_size: header_size as u32,
            slot_meta_size: meta_size as u32,
            slot_count: self.slot_count,
            slot_capacity: self.slot_capacity,
            payload_stride,
            metas_offset,
            payloads_offset,
            total_size: total,
            max_readers: MAX_READERS as u32,
            ..RawConfig::default()
        })
    }
}

/// Checks a configuration read from a segment against what this build computes for the
/// same shape, so that no offset or size taken from shared memory is trusted blindly.
pub(crate) fn validate(name: &str, found: &RawConfig, mapped_len: usize) -> Result<Shape, Error> {
    if found.layout_version != LAYOUT_VERSION {
        return Err(Error::VersionMismatch {
            name: name.to_string(),
            ours: LAYOUT_VERSION,
            theirs: found.layout_version,
        });
    }
    let kind = RingKind::from_raw(found.kind).ok_or_else(|| Error::Corrupt {
        name: name.to_string(),
        reason: format!("unknown ring kind {}", found.kind),
    })?;
    let shape = Shape { kind, slot_count: found.slot_count, slot_capacity: found.slot_capacity };
    let expected = shape.config().map_err(|reason| Error::Corrupt { name: name.to_string(), reason })?;
    let pairs: [(&'static str, u64, u64); 7] = [
        ("max_readers", expected.max_readers.into(), found.max_readers.into()),
        ("header_size", expected.header_size.into(), found.header_size.into()),
        ("slot_meta_size", expected.slot_meta_size.into(), found.slot_meta_size.into()),
        ("payload_stride", expected.payload_stride, found.payload_stride),
        ("metas_offset", expected.metas_offset, found.metas_offset),
        ("payloads_offset", expected.payloads_offset, found.payloads_offset),
        ("total_size", expected.total_size, found.total_size),
    ];
    for (field, ours, theirs) in pairs {
        if ours != theirs {
            return Err(Error::LayoutMismatch { name: name.to_string(), field, ours, theirs });
        }
    }
    if (mapped_len as u64) < found.total_size {
        return Err(Error::Corrupt {
            name: name.to_string(),
            reason: format!(
                "segment is {mapped_len} bytes but its header describes {} bytes",
                found.total_size
            ),
        });
    }
    Ok(shape)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_page_aligned_and_fit() {
        let c =
            Shape { kind: RingKind::Frame, slot_count: 4, slot_capacity: 800 * 600 * 3 }.config().unwrap();
        assert_eq!(c.payloads_offset % PAGE, 0);
        assert!(c.payloads_offset >= c.metas_offset + 4 * 64);
        assert!(c.total_size >= c.payloads_offset + 4 * c.payload_stride);
        assert_eq!(validate("t", &c, c.total_size as usize).unwrap().slot_count, 4);
    }

    #[test]
    fn bad_shapes_and_tampered_configs_are_rejected() {
        let shape = |slot_count, slot_capacity| Shape { kind: RingKind::Message, slot_count, slot_capacity };
        assert!(shape(2, 10).config().is_err());
        assert!(shape(3, 0).config().is_err());
        assert!(shape(3, MAX_SLOT_CAPACITY + 1).config().is_err());
        let good = shape(3, 100).config().unwrap();
        let mut bad = good;
        bad.payloads_offset += 64;
        assert!(matches!(
            validate("t", &bad, 1 << 20),
            Err(Error::LayoutMismatch { field: "payloads_offset", .. })
        ));
        let mut old = good;
        old.layout_version = 0;
        assert!(matches!(validate("t", &old, 1 << 20), Err(Error::VersionMismatch { theirs: 0, .. })));
        assert!(matches!(validate("t", &good, 10), Err(Error::Corrupt { .. })));
    }
}
