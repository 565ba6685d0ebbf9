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

    /// Another writer holds the ring's lock. `pid` is its pid as it sees it (in its own pid
    /// namespace), for the message only.
    #[error("ring {name:?} is already written by a live writer (pid {pid} in its namespace)")]
    WriterAlive { name: String, pid: u32 },

    /// The writer has created the ring's files but not finished initialising them: retry.
    #[error("ring {name:?} is still being created by its writer; try again")]
    Initialising { name: String },

    #[error(
        "ring {name:?} is refused: {path} is owned by uid {owner_uid}, not by uid {our_uid} (this process)"
    )]
    ForeignOwner { name: String, path: std::path::PathBuf, owner_uid: u32, our_uid: u32 },

    /// Something other than a regular file (a FIFO, a socket, a directory) sits at one of the
    /// ring's paths. Refused before it is read, so it cannot block or feed anyone.
    #[error("ring {name:?} is refused: {path} is {kind}, not a regular file")]
    NotAFile { name: String, path: std::path::PathBuf, kind: &'static str },

    #[error("ring {name:?} is refused: {path} is writable by group or others (mode {mode:04o})")]
    UnsafeMode { name: String, path: std::path::PathBuf, mode: u32 },

    #[error("ring {name:?} has {max} readers attached already, the most its reader table holds")]
    TooManyReaders { name: String, max: usize },

    /// The reader already holds as many messages pinned as it may (`FrameReader::set_max_held`):
    /// release one before reading the next.
    #[error(
        "the reader of ring {name:?} already holds {max} frames pinned, its limit: release one \
         (or let its arrays go) before reading the next"
    )]
    TooManyHeld { name: String, max: usize },

    /// Every slot is pinned by a reader, so the message was dropped (and counted) rather than
    /// overwrite a slot someone is reading.
    #[error("every slot of ring {name:?} is pinned by a reader: message dropped")]
    NoFreeSlot { name: String },

    /// The reader was attached in another process and this one is a `fork()` of it. Its
    /// reader entry is the parent's, so pinning here would unpin the parent's frame (and the
    /// writer could rewrite it under the parent): attach a new reader in this process.
    #[error(
        "the reader of ring {name:?} was attached in process {attached_pid}, and this is process \
         {pid}, a fork of it: attach a new reader here"
    )]
    ForkedReader { name: String, attached_pid: u32, pid: u32 },

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
