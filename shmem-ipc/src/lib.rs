//! Shared-memory rings for the ads pipeline: a **frame ring** that a camera or simulator
//! renders into in place and any number of processes read zero-copy, and a **message ring**
//! for small variable-size records such as detections.
//!
//! The contract (see `docs/ARCHITECTURE.md`):
//! - one writer per ring name, enforced by an OFD lock on `/dev/shm/ads.<name>@lock` that it
//!   holds for its life; any number of readers (up to [`MAX_READERS`]); nobody ever blocks
//!   anybody;
//! - a reader **pins** the slot it reads, and the writer never writes a pinned slot: it puts
//!   the next message into the next unpinned one, round-robin. So the `&[u8]` of a [`Frame`] or
//!   [`Sample`] is stable while you hold it, and no safe API hands out a reference to memory
//!   anyone may write meanwhile. `finish()` re-checks the slot's sequence as a second line
//!   of defence;
//! - readers read the **latest** message or **every** message in order (lapped ones are
//!   counted as dropped), waiting by futex (`Wait::Block`), by spinning (`Wait::Spin`) or not
//!   at all (`Wait::Poll`);
//! - a reader learns within ~40 ms that its writer closed the ring or died
//!   (`Error::WriterGone`): liveness is the writer's lock, so it holds across pid namespaces
//!   and pid reuse; a restarted writer takes over a dead writer's ring itself;
//! - rings owned by another user, or whose files group or others may write, are refused
//!   (`Error::ForeignOwner`, `Error::UnsafeMode`), and so is anything at a ring's path that
//!   is not a regular file (`Error::NotAFile`), checked before it is read: a FIFO there
//!   blocks nobody; readers map the payload read-only;
//! - a reader belongs to the process that attached it: in a `fork()` of that process (a
//!   PyTorch `DataLoader` worker, `multiprocessing` with fork) it refuses to read
//!   (`Error::ForkedReader`) and leaves the reader entry, which is its parent's, alone;
//!   attach a new reader in the child;
//! - attaching to a ring of another layout version or geometry, a missing ring, one still
//!   being created (`Error::Initialising`, retry) and a full `/dev/shm` are each their own
//!   error.
//!
//! # Whom a ring trusts
//! Every process of the ring's user (uid). Any of them can kill the writer with a signal
//! anyway, so the ring does not try to survive them: one can truncate the ring's files (the
//! writer `fstat`s them at most every 100 ms and stops touching a shrunk ring, counting
//! [`WriterStats::damaged`]; a truncation between two checks is a SIGBUS in the writer), pin
//! slots in the reader table (the writer then drops frames) or write the segment (readers
//! report it as `Error::Corrupt` or discard the frame; readers themselves map it
//! read-only). Against every other user the files' owner and mode checks hold: another user
//! can at most squat a name or put a FIFO at a path, and is refused by name.
//! (Sealed memfds passed over a unix socket would make the files unshrinkable, but need a
//! socket server in every writer and lose attach-by-name; not worth it against processes
//! that can kill the writer.)
//!
//! # Why the zero-copy borrow is sound
//! Pins and wake-ups are two store-buffering handshakes (store, `SeqCst` fence, load on each
//! side) and every store a reader makes to its entry is `Release`. The argument, in the
//! language's memory model and not leaning on loom's stronger `SeqCst` fence, is in the
//! `protocol` module's docs; loom models of the shipped functions check the orderings around
//! it (`RUSTFLAGS="--cfg loom" cargo test -p ads-shmem-ipc --release --lib loom`).
//!
//! # How long a pin may be held, and what it costs
//! As long as you like: a held [`Frame`] (say, under a numpy view in Python) keeps its bytes
//! and costs the writer exactly one slot, which it passes over until the frame is finished
//! or dropped. A reader holds one pin at a time (a `Frame`/`Sample` borrows its reader),
//! unless it holds frames without a borrow: [`FrameReader::read_held`] pins a frame until
//! [`FrameReader::release`], up to [`FrameReader::set_max_held`] at once (each in a reader
//! table entry of its own; one more is `Error::TooManyHeld`), which is how a binding ties a
//! frame to an object of its own (the Python SDK's numpy arrays). Count each frame a reader
//! may hold as a pinning reader below.
//! With `slots ≥ pinning readers + 2` the writer always has a free slot other than the
//! newest frame; it drops a frame (counted in [`WriterStats::dropped`];
//! [`MessageWriter::publish`] returns `Error::NoFreeSlot`) rather than wait only when it
//! finds every slot pinned, at its scan or at its claim, in two passes: with fewer slots,
//! or when readers move their pins onto the very slots it tries, twice over. A claim that
//! backs off from a pin costs no reader a frame: an in-order reader counts as dropped what
//! it found overwritten, and, once lapped, what is more than a ring behind the head. A reader that dies holding a pin loses it within ~100 ms (the writer
//! probes the entry locks of the reader table).
//!
//! ```no_run
//! use ads_shmem_ipc::{FrameGeometry, FrameReader, FrameReaderOptions, FrameWriter, PixelFormat, Stamp, Wait};
//! use std::time::Duration;
//!
//! let geometry = FrameGeometry::packed(800, 600, PixelFormat::Bgr8);
//! let mut writer = FrameWriter::create("frames", geometry, 4)?;
//! let mut loan = writer.loan();
//! loan.pixels_mut().fill(0x80); // render in place
//! loan.publish(Stamp { id: 1, ..Stamp::default() });
//!
//! let mut reader = FrameReader::attach("frames", FrameReaderOptions::default())?;
//! if let Some(frame) = reader.read(Wait::Block(Duration::from_millis(100)))? {
//!     let mean = frame.pixels().iter().map(|&p| u64::from(p)).sum::<u64>(); // pinned: stable
//!     if frame.finish().is_ok() {
//!         println!("frame mean {mean}");
//!     }
//! }
//! # Ok::<(), ads_shmem_ipc::Error>(())
//! ```

pub mod clock;
mod error;
mod protocol;
mod sync;

#[cfg(not(loom))]
mod files;
#[cfg(not(loom))]
mod frame;
#[cfg(not(loom))]
mod futex;
#[cfg(not(loom))]
mod layout;
#[cfg(not(loom))]
mod message;
#[cfg(not(loom))]
mod os;
#[cfg(not(loom))]
mod ring;
#[cfg(not(loom))]
mod segment;

pub use error::{Error, Result, WriterGoneCause};
pub use protocol::{ReadMode, ReaderStats, SampleInfo, Stamp};

#[cfg(not(loom))]
pub use files::{lock_path, readers_path, reclaim_stale, shm_path, SHM_PREFIX};
#[cfg(not(loom))]
pub use frame::{
    Frame, FrameGeometry, FrameLoan, FrameReader, FrameReaderOptions, FrameWriter, HeldFrame, PixelFormat,
};
#[cfg(not(loom))]
pub use layout::{LAYOUT_VERSION, MAX_READERS, MAX_SLOTS, MAX_SLOT_CAPACITY, MIN_SLOTS};
#[cfg(not(loom))]
pub use message::{MessageReader, MessageWriter};
#[cfg(not(loom))]
pub use ring::{Sample, Wait, WriterStats};
