//! Everything that can go wrong with a ring, each case with the facts needed to act on it.

use std::io;

/// How a writer went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterGoneCause {
    /// It shut down cleanly and marked the ring closed.
    Closed,
    /// Its process is gone (killed, crashed) without closing the ring.
    Died,
}

/// Errors of the ring crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid ring name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("invalid ring configuration for {name:?}: {reason}")]
    InvalidConfig { name: String, reason: String },

    #[error("no ring named {name:?} (is its writer running?)")]
    NotFound { name: String },

    #[error("ring {name:?} has layout version {theirs}, this build speaks version {ours}")]
    VersionMismatch { name: String, ours: u32, theirs: u32 },

    #[error("ring {name:?} does not match: {field} is {theirs} in the ring, {ours} expected here")]
    LayoutMismatch { name: String, field: &'static str, ours: u64, theirs: u64 },

    #[error("ring {name:?} is corrupt: {reason}")]
    Corrupt { name: String, reason: String },

    #[error("ring {name:?} is already written by live process {pid}")]
    WriterAlive { name: String, pid: u32 },

    #[error("the writer of ring {name:?} (pid {pid}) is gone: {cause:?}")]
    WriterGone { name: String, pid: u32, cause: WriterGoneCause },

    #[error(
        "not enough space in /dev/shm for ring {name:?}: {needed} bytes needed, {available} available \
         (enlarge it, e.g. `mount -o remount,size=512M /dev/shm`, or use fewer/smaller slots)"
    )]
    ShmFull { name: String, needed: u64, available: u64 },

    #[error("message of {len} bytes does not fit ring {name:?} (slot capacity {capacity})")]
    TooLarge { name: String, len: usize, capacity: u64 },

    #[error("message {seq} of ring {name:?} was overwritten while it was being read")]
    Overwritten { name: String, seq: u64 },

    #[error("{context} for ring {name:?}: {source}")]
    Io { name: String, context: &'static str, source: io::Error },

    #[error("shared memory error for ring {name:?}: {source}")]
    Shmem { name: String, source: shared_memory::ShmemError },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
