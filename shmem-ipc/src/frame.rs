//! Frame rings: fixed-geometry images written in place by one writer.

use crate::error::{Error, Result};
use crate::layout::{RingKind, Shape};
use crate::protocol::{ReadMode, ReaderStats, SampleInfo, Stamp};
use crate::ring::{Pinned, RingReader, RingWriter, Sample, Target, Wait, WriterStats};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// Pixel layouts a frame ring can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum PixelFormat {
    /// 8-bit blue, green, red (OpenCV's default).
    Bgr8 = 1,
    /// 8-bit red, green, blue.
    Rgb8 = 2,
    /// 8-bit luma.
    Gray8 = 3,
    /// 8-bit blue, green, red, alpha (CARLA's camera output).
    Bgra8 = 4,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub const fn bytes_per_pixel(self) -> u32 {
        match self {
            Self::Bgr8 | Self::Rgb8 => 3,
            Self::Gray8 => 1,
            Self::Bgra8 => 4,
        }
    }

    fn from_raw(raw: u32) -> Option<Self> {
        [Self::Bgr8, Self::Rgb8, Self::Gray8, Self::Bgra8].into_iter().find(|f| *f as u32 == raw)
    }
}

/// Size and layout of every frame in a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameGeometry {
    pub width: u32,
    pub height: u32,
    /// Bytes from the start of one row to the next (≥ width × bytes per pixel).
    pub stride: u32,
    pub format: PixelFormat,
}

impl FrameGeometry {
    /// Rows with no padding.
    pub const fn packed(width: u32, height: u32, format: PixelFormat) -> Self {
        Self { width, height, stride: width * format.bytes_per_pixel(), format }
    }

    /// Bytes of one frame.
    pub fn frame_bytes(&self) -> u64 {
        u64::from(self.stride) * u64::from(self.height)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.width == 0 || self.height == 0 {
            return Err(format!("empty frame {}x{}", self.width, self.height));
        }
        let row = u64::from(self.width) * u64::from(self.format.bytes_per_pixel());
        if u64::from(self.stride) < row {
            return Err(format!("stride {} is shorter than a row of {row} bytes", self.stride));
        }
        Ok(())
    }

    fn raw(&self) -> [u32; 4] {
        [self.width, self.height, self.stride, self.format as u32]
    }
}

impl std::fmt::Display for FrameGeometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} {:?} (stride {})", self.width, self.height, self.format, self.stride)
    }
}

/// The writing end of a frame ring. One per ring name; dropping it closes the ring and
/// removes it from `/dev/shm`.
#[derive(Debug)]
pub struct FrameWriter {
    ring: RingWriter,
    geometry: FrameGeometry,
}

impl FrameWriter {
    /// Creates ring `name` with `slots` frames of `geometry`. A segment left by a dead
    /// writer is taken over; one held by a live writer is an error.
    pub fn create(name: &str, geometry: FrameGeometry, slots: u32) -> Result<Self> {
        geometry.check().map_err(|reason| Error::InvalidConfig { name: name.to_string(), reason })?;
        let shape = Shape { kind: RingKind::Frame, slot_count: slots, slot_capacity: geometry.frame_bytes() };
        Ok(Self { ring: RingWriter::create(name, shape, geometry.raw())?, geometry })
    }

    pub fn geometry(&self) -> FrameGeometry {
        self.geometry
    }

    pub fn name(&self) -> &str {
        self.ring.segment().name()
    }

    /// Lends the slot the next frame goes into (the next one, round-robin, that no reader has
    /// pinned); render into [`FrameLoan::pixels_mut`], then [`FrameLoan::publish`]. The slot's previous frame
    /// is invalidated from this moment. Never waits: if every slot is pinned, the loan renders
    /// into private memory and the frame is dropped at publish (counted in
    /// [`WriterStats::dropped`]).
    pub fn loan(&mut self) -> FrameLoan<'_> {
        let geometry = self.geometry;
        let target = self.ring.begin();
        FrameLoan { writer: self, target, geometry, published: false }
    }

    /// Copies `pixels` (exactly one frame) in and publishes it; `Ok(None)`: dropped because
    /// every slot was pinned.
    pub fn publish_copy(&mut self, pixels: &[u8], stamp: Stamp) -> Result<Option<u64>> {
        let expected = self.geometry.frame_bytes();
        if pixels.len() as u64 != expected {
            return Err(Error::LayoutMismatch {
                name: self.name().to_string(),
                field: "frame bytes",
                ours: pixels.len() as u64,
                theirs: expected,
            });
        }
        let mut loan = self.loan();
        loan.pixels_mut().copy_from_slice(pixels);
        Ok(loan.publish(stamp))
    }

    /// Tells readers the writer is alive while it has nothing to publish (e.g. paused).
    pub fn heartbeat(&self) {
        self.ring.heartbeat();
    }

    pub fn stats(&self) -> WriterStats {
        self.ring.stats()
    }
}

/// A slot lent to the writer. Dropping it unpublished leaves the slot invalid and counts it
/// as abandoned.
#[derive(Debug)]
pub struct FrameLoan<'a> {
    writer: &'a mut FrameWriter,
    target: Target,
    geometry: FrameGeometry,
    published: bool,
}

impl FrameLoan<'_> {
    /// The frame's bytes: `stride × height`, row-major, in shared memory.
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        let len = self.geometry.frame_bytes() as usize;
        let target = self.target;
        &mut self.writer.ring.payload_mut(target)[..len]
    }

    pub fn geometry(&self) -> FrameGeometry {
        self.geometry
    }

    /// Publishes the frame and wakes waiting readers; returns its sequence number, or `None`
    /// if it was dropped because every slot was pinned (see [`FrameWriter::loan`]).
    pub fn publish(mut self, stamp: Stamp) -> Option<u64> {
        self.published = true;
        let len = self.geometry.frame_bytes() as usize;
        self.writer.ring.commit(self.target, stamp, len)
    }
}

impl Drop for FrameLoan<'_> {
    fn drop(&mut self) {
        if !self.published {
            self.writer.ring.abandon();
        }
    }
}

/// Options for attaching to a frame ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameReaderOptions {
    pub mode: ReadMode,
    /// If set, attaching fails unless the ring has exactly this geometry.
    pub expect: Option<FrameGeometry>,
}

/// A reading end of a frame ring; any number may attach.
#[derive(Debug)]
pub struct FrameReader {
    ring: RingReader,
    geometry: FrameGeometry,
}

impl FrameReader {
    /// Attaches to ring `name`. Fails if it does not exist, is not a frame ring, has another
    /// layout version or (with `expect`) another geometry, or its writer is gone.
    pub fn attach(name: &str, options: FrameReaderOptions) -> Result<Self> {
        let ring = RingReader::attach(name, RingKind::Frame, options.mode)?;
        let c = ring.segment().config();
        let corrupt = |reason: String| Error::Corrupt { name: name.to_string(), reason };
        let format = PixelFormat::from_raw(c.pixel_format)
            .ok_or_else(|| corrupt(format!("pixel format {}", c.pixel_format)))?;
        let geometry = FrameGeometry { width: c.width, height: c.height, stride: c.stride, format };
        geometry.check().map_err(corrupt)?;
        if geometry.frame_bytes() > c.slot_capacity {
            return Err(corrupt(format!("{geometry} does not fit slots of {} bytes", c.slot_capacity)));
        }
        if let Some(want) = options.expect {
            let fields: [(&'static str, u64, u64); 4] = [
                ("width", want.width.into(), geometry.width.into()),
                ("height", want.height.into(), geometry.height.into()),
                ("stride", want.stride.into(), geometry.stride.into()),
                ("pixel format", want.format as u64, geometry.format as u64),
            ];
            if let Some((field, ours, theirs)) = fields.into_iter().find(|(_, a, b)| a != b) {
                return Err(Error::LayoutMismatch { name: name.to_string(), field, ours, theirs });
            }
        }
        Ok(Self { ring, geometry })
    }

    pub fn geometry(&self) -> FrameGeometry {
        self.geometry
    }

    pub fn name(&self) -> &str {
        self.ring.segment().name()
    }

    /// The next frame (per the read mode), borrowed zero-copy. `Ok(None)`: the wait ran out.
    /// `Err(WriterGone)`: the writer closed the ring or died; attach again to follow a
    /// restarted writer.
    pub fn read(&mut self, wait: Wait) -> Result<Option<Frame<'_>>> {
        let geometry = self.geometry;
        let ring = &mut self.ring;
        Ok(ring.next(wait)?.map(|mut pinned| {
            // A frame is always exactly one frame long (checked to fit the slot at attach),
            // whatever the slot's length word says.
            pinned.located.info.len = geometry.frame_bytes() as usize;
            Frame { sample: Sample::new(ring, pinned), geometry }
        }))
    }

    /// The next frame (per the read mode), pinned but not borrowed: the reader stays free to
    /// read more while this one is held (up to [`FrameReader::set_max_held`] at once; then
    /// `Err(TooManyHeld)`). View it with [`FrameReader::held_pixels`] or through another
    /// mapping of [`FrameReader::segment_fd`] at [`HeldFrame::file_offset`]; end it with
    /// [`FrameReader::release`]. This is how a binding keeps a frame for as long as an object
    /// of its own lives (the Python SDK's arrays). A `HeldFrame` dropped without `release`
    /// keeps its slot pinned until the reader is dropped.
    pub fn read_held(&mut self, wait: Wait) -> Result<Option<HeldFrame>> {
        let frame_bytes = self.geometry.frame_bytes() as usize;
        let reader = self.ring.id();
        Ok(self.ring.next(wait)?.map(|mut pinned| {
            pinned.located.info.len = frame_bytes;
            let file_offset = self.ring.file_offset(&pinned);
            HeldFrame { pinned, reader, file_offset }
        }))
    }

    /// The pixels of a frame this reader holds; `None` if `held` is another reader's. Stable
    /// while the borrow lives: `release` needs `&mut self`.
    pub fn held_pixels(&self, held: &HeldFrame) -> Option<&[u8]> {
        (held.reader == self.ring.id()).then(|| self.ring.bytes(&held.pinned))
    }

    /// True while the writer has not touched a held frame (always, unless the segment is
    /// tampered with); `false` for another reader's.
    pub fn held_is_intact(&self, held: &HeldFrame) -> bool {
        held.reader == self.ring.id() && self.ring.is_intact(&held.pinned)
    }

    /// Ends a held frame and releases its pin: `Ok` if the slot still held it,
    /// `Err(Overwritten)` if what was read must be discarded. A frame of another reader is
    /// refused (`Err(InvalidConfig)`) and stays held.
    pub fn release(&mut self, held: HeldFrame) -> Result<SampleInfo> {
        if held.reader != self.ring.id() {
            return Err(Error::InvalidConfig {
                name: self.name().to_string(),
                reason: "release of a frame held by another reader".to_string(),
            });
        }
        let seq = held.pinned.located.info.seq;
        if self.ring.settle(&held.pinned) {
            Ok(held.pinned.located.info)
        } else {
            Err(Error::Overwritten { name: self.name().to_string(), seq })
        }
    }

    /// How many frames this reader may hold at once, by [`FrameReader::read_held`] (default
    /// 1, at most 8). Each held frame takes an entry of the ring's reader table and may cost
    /// the writer a slot: count it as a pinning reader in `slots ≥ pinning readers + 2`.
    pub fn set_max_held(&mut self, max: usize) {
        self.ring.set_max_held(max);
    }

    pub fn max_held(&self) -> usize {
        self.ring.max_held()
    }

    /// Frames read and not yet released (or finished).
    pub fn held(&self) -> usize {
        self.ring.held()
    }

    /// The ring's segment file, opened read-only: map it (read-only) to view held frames
    /// at [`HeldFrame::file_offset`]. The descriptor stays valid after the writer closed the
    /// ring and unlinked the file, so a held frame stays viewable.
    pub fn segment_fd(&self) -> BorrowedFd<'_> {
        self.ring.segment().file().as_fd()
    }

    /// The next intact frame, copied into `out` (resized to one frame).
    pub fn read_copy(&mut self, wait: Wait, out: &mut Vec<u8>) -> Result<Option<SampleInfo>> {
        let frame_bytes = self.geometry.frame_bytes() as usize;
        let got = self.ring.next_copy(wait, out)?;
        Ok(got.map(|mut info| {
            out.resize(frame_bytes, 0);
            info.len = frame_bytes;
            info
        }))
    }

    pub fn stats(&self) -> ReaderStats {
        self.ring.stats()
    }

    /// Frames the writer has published so far.
    pub fn published(&self) -> u64 {
        self.ring.published()
    }

    pub fn writer_pid(&self) -> u32 {
        self.ring.writer_pid()
    }

    /// Time since the writer last published or sent a heartbeat.
    pub fn heartbeat_age(&self) -> Duration {
        self.ring.heartbeat_age()
    }

    /// Incremented each time a writer takes over this name from a dead one.
    pub fn generation(&self) -> u64 {
        self.ring.segment().config().generation
    }
}

/// A frame pinned by its reader without borrowing it ([`FrameReader::read_held`]); ended by
/// [`FrameReader::release`].
#[derive(Debug)]
#[must_use = "a held frame keeps its slot pinned until it is released"]
pub struct HeldFrame {
    pinned: Pinned,
    /// The reader that holds it.
    reader: u64,
    file_offset: u64,
}

impl HeldFrame {
    pub fn info(&self) -> SampleInfo {
        self.pinned.located.info
    }

    /// Where the pixels start in the ring's segment file ([`FrameReader::segment_fd`]).
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }
}

/// A frame borrowed zero-copy from the ring and pinned there: its pixels do not change while
/// it lives (see [`Sample`] and the crate docs on how long a pin may be held).
#[derive(Debug)]
pub struct Frame<'a> {
    sample: Sample<'a>,
    geometry: FrameGeometry,
}

impl Frame<'_> {
    /// Exactly `geometry().frame_bytes()` bytes, in place in shared memory.
    pub fn pixels(&self) -> &[u8] {
        self.sample.bytes()
    }

    pub fn geometry(&self) -> FrameGeometry {
        self.geometry
    }

    pub fn info(&self) -> SampleInfo {
        self.sample.info()
    }

    pub fn is_intact(&self) -> bool {
        self.sample.is_intact()
    }

    /// `Ok` if the pixels read were one consistent frame; `Err(Overwritten)` to discard.
    pub fn finish(self) -> Result<SampleInfo> {
        self.sample.finish()
    }
}
