//! Message rings: small variable-size records (detections, commands) up to a fixed size.

use crate::error::{Error, Result};
use crate::layout::{RingKind, Shape};
use crate::protocol::{ReadMode, ReaderStats, SampleInfo, Stamp};
use crate::ring::{RingReader, RingWriter, Sample, Target, Wait, WriterStats};
use std::time::Duration;

/// The writing end of a message ring.
#[derive(Debug)]
pub struct MessageWriter {
    ring: RingWriter,
}

impl MessageWriter {
    /// Creates ring `name` with `slots` records of at most `max_message_bytes` each.
    pub fn create(name: &str, max_message_bytes: u64, slots: u32) -> Result<Self> {
        let shape = Shape { kind: RingKind::Message, slot_count: slots, slot_capacity: max_message_bytes };
        Ok(Self { ring: RingWriter::create(name, shape, [0; 4])? })
    }

    pub fn name(&self) -> &str {
        self.ring.segment().name()
    }

    pub fn max_message_bytes(&self) -> u64 {
        self.ring.segment().shape().slot_capacity
    }

    /// Copies `bytes` into the next slot and publishes it; returns its sequence number.
    /// `Err(NoFreeSlot)` (and counted in [`WriterStats::dropped`]) if every slot is pinned by
    /// a reader: the writer never waits. `Err(Corrupt)` (counted the same way) once a ring
    /// file was truncated under the writer ([`WriterStats::damaged`]).
    pub fn publish(&mut self, bytes: &[u8], stamp: Stamp) -> Result<u64> {
        let capacity = self.max_message_bytes();
        if bytes.len() as u64 > capacity {
            return Err(Error::TooLarge { name: self.name().to_string(), len: bytes.len(), capacity });
        }
        let target = self.ring.begin();
        if target == Target::Scratch {
            self.ring.commit(target, stamp, bytes.len());
            if self.ring.stats().damaged {
                return Err(Error::Corrupt {
                    name: self.name().to_string(),
                    reason: "a ring file was truncated under its writer: restart the writer".into(),
                });
            }
            return Err(Error::NoFreeSlot { name: self.name().to_string() });
        }
        self.ring.payload_mut(target)[..bytes.len()].copy_from_slice(bytes);
        self.ring
            .commit(target, stamp, bytes.len())
            .ok_or_else(|| Error::NoFreeSlot { name: self.name().to_string() })
    }

    pub fn heartbeat(&self) {
        self.ring.heartbeat();
    }

    pub fn stats(&self) -> WriterStats {
        self.ring.stats()
    }
}

/// A reading end of a message ring.
#[derive(Debug)]
pub struct MessageReader {
    ring: RingReader,
}

impl MessageReader {
    pub fn attach(name: &str, mode: ReadMode) -> Result<Self> {
        Ok(Self { ring: RingReader::attach(name, RingKind::Message, mode)? })
    }

    pub fn name(&self) -> &str {
        self.ring.segment().name()
    }

    /// The next message, borrowed zero-copy; see [`Sample`].
    pub fn read(&mut self, wait: Wait) -> Result<Option<Sample<'_>>> {
        let ring = &mut self.ring;
        Ok(ring.next(wait)?.map(|located| Sample::new(ring, located)))
    }

    /// The next intact message, copied into `out`.
    pub fn read_copy(&mut self, wait: Wait, out: &mut Vec<u8>) -> Result<Option<SampleInfo>> {
        self.ring.next_copy(wait, out)
    }

    pub fn stats(&self) -> ReaderStats {
        self.ring.stats()
    }

    pub fn published(&self) -> u64 {
        self.ring.published()
    }

    pub fn writer_pid(&self) -> u32 {
        self.ring.writer_pid()
    }

    pub fn heartbeat_age(&self) -> Duration {
        self.ring.heartbeat_age()
    }
}
