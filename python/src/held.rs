//! The adapter between the ring's borrowed `Frame<'_>` and Python, where a frame must outlive
//! the call that read it: the one module that knows how a frame is held.
//!
//! `FrameReader::read` lends a `Frame` that borrows its reader mutably. Python keeps the frame
//! across calls (the pixels are looked at after `read` returns), so the reader is moved into a
//! self-referential cell together with the frame it lent, and taken back out when the frame is
//! finished. No `unsafe` here: `self_cell` provides the cell.
//!
//! Holding a `HeldFrame` holds the ring's `Frame`, which pins its slot: the writer skips a
//! pinned slot (it drops a frame, counted, only if every slot is pinned), so the pixels stay
//! fixed until `finish`. `finish()` still reports the seqlock check, the ring's second line
//! of defence; it is True for every frame read under a pin.

use ads_shmem_ipc::{Error, Frame, FrameReader, SampleInfo, Wait};
use self_cell::{self_cell, MutBorrow};

/// The frame lent by the reader in the cell's owner; `None` only while it is being finished.
type LentFrame<'a> = Option<Frame<'a>>;

self_cell!(
    struct ReaderWithFrame {
        owner: MutBorrow<Box<FrameReader>>,

        #[covariant]
        dependent: LentFrame,
    }
);

/// A reader together with the frame it lent out.
pub(crate) struct HeldFrame {
    cell: ReaderWithFrame,
}

impl std::fmt::Debug for HeldFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldFrame").field("info", &self.info()).finish()
    }
}

/// Why a read returned no frame; either way the reader comes back.
#[derive(Debug)]
pub(crate) enum NoFrame {
    /// The wait ran out.
    TimedOut(Box<FrameReader>),
    Failed(Box<FrameReader>, Error),
}

impl HeldFrame {
    /// Reads the next frame as `wait` says, keeping the reader with it.
    pub(crate) fn read(reader: Box<FrameReader>, wait: Wait) -> Result<Self, NoFrame> {
        let built = ReaderWithFrame::try_new_or_recover(MutBorrow::new(reader), |owner| {
            match owner.borrow_mut().read(wait) {
                Ok(Some(frame)) => Ok(Some(frame)),
                Ok(None) => Err(None),
                Err(e) => Err(Some(e)),
            }
        });
        match built {
            Ok(cell) => Ok(Self { cell }),
            Err((owner, None)) => Err(NoFrame::TimedOut(owner.into_inner())),
            Err((owner, Some(e))) => Err(NoFrame::Failed(owner.into_inner(), e)),
        }
    }

    fn frame(&self) -> Option<&Frame<'_>> {
        self.cell.borrow_dependent().as_ref()
    }

    pub(crate) fn info(&self) -> Option<SampleInfo> {
        self.frame().map(Frame::info)
    }

    /// Address and length of the pixels in this process's mapping of the ring. An address,
    /// not a reference: the Python side views the same file through its own read-only
    /// mapping (see `mapping.rs`).
    pub(crate) fn pixels_address(&self) -> Option<(usize, usize)> {
        self.frame().map(|f| {
            let pixels = f.pixels();
            (pixels.as_ptr() as usize, pixels.len())
        })
    }

    /// True while the writer has not touched the slot since the frame was taken.
    pub(crate) fn is_intact(&self) -> bool {
        self.frame().is_some_and(Frame::is_intact)
    }

    /// Ends the read: the reader back, and whether everything read was one frame.
    pub(crate) fn finish(mut self) -> (Box<FrameReader>, bool) {
        let intact = self.cell.with_dependent_mut(|_, lent| lent.take().is_some_and(|f| f.finish().is_ok()));
        (self.cell.into_owner().into_inner(), intact)
    }
}
