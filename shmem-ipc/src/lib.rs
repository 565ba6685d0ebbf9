//! Shared-memory rings for the ads pipeline: a **frame ring** that a camera or simulator
//! renders into in place and any number of processes read zero-copy, and a **message ring**
//! for small variable-size records such as detections.
//!
//! The contract (see `docs/ARCHITECTURE.md`):
//! - one writer per ring name, any number of readers; nobody ever blocks anybody: the writer
//!   overwrites the oldest slot, readers detect that with per-slot sequence locks and count
//!   it (`ReaderStats`);
//! - readers read the **latest** message or **every** message in order, waiting by futex
//!   (`Wait::Block`), by spinning (`Wait::Spin`) or not at all (`Wait::Poll`);
//! - a reader learns within ~40 ms that its writer closed the ring or died
//!   (`Error::WriterGone`); a restarted writer takes over a dead writer's segment itself;
//! - attaching to a ring of another layout version or geometry, a missing ring and a full
//!   `/dev/shm` are each their own error.
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
//!     let mean = frame.pixels().iter().map(|&p| u64::from(p)).sum::<u64>();
//!     if frame.finish().is_ok() {
//!         println!("frame mean {mean}"); // only now is `mean` known to come from one frame
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
pub use frame::{Frame, FrameGeometry, FrameLoan, FrameReader, FrameReaderOptions, FrameWriter, PixelFormat};
#[cfg(not(loom))]
pub use layout::{LAYOUT_VERSION, MAX_READERS, MAX_SLOTS, MAX_SLOT_CAPACITY, MIN_SLOTS};
#[cfg(not(loom))]
pub use message::{MessageReader, MessageWriter};
#[cfg(not(loom))]
pub use ring::{Sample, Wait, WriterStats};
