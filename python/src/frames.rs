//! `ads._native.FrameReader`, `ads._native.Frame` and `ads._native.Pin`: a frame ring read
//! from Python.
//!
//! A frame read is held by the ring (`FrameReader::read_held`): its slot stays pinned, and
//! its pixels fixed, for as long as its `Pin` lives. The `Frame` holds the pin until it is
//! finished; every numpy array made from it holds it too (the array's `base` does, see
//! `ads/__init__.py`), so `px = reader.read().pixels` keeps its frame for as long as `px`
//! lives. The pin's last reference going releases the frame, through the reader. A reader
//! may hold `max_pins` frames at once; reading one more is an error (`TooManyHeld`), never a
//! torn array. Waits release the GIL and wake every 50 ms to let Python handle signals
//! (Ctrl-C interrupts a wait with `KeyboardInterrupt`).
//!
//! Python maps the ring's file through the reader's own descriptor (`fileno`), so what it
//! views is the very file the reader attached, and stays viewable after the writer closed.
//!
//! Lock order: a `Pin` is never dropped while the reader's mutex is held (its `Drop` takes
//! that mutex).

use crate::errors::{ring_error, ForkedReader};
use ads_shmem_ipc::{
    clock, FrameGeometry, FrameReader, FrameReaderOptions, HeldFrame, PixelFormat, ReadMode, ReaderStats,
    SampleInfo, Wait,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Longest a wait runs without looking at Python's signal flags.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Whether a held frame was intact when it was released; set once, by the release.
type Outcome = Arc<OnceLock<bool>>;

/// The Pin a Frame holds until it is finished (shared with the reader, which finishes the
/// previous frame at the next read without keeping the Frame itself alive).
type PinSlot = Arc<Mutex<Option<Py<PyPin>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Inner {
    /// `None` once closed (and every held frame released) or forgotten in a forked child.
    reader: Option<Box<FrameReader>>,
    /// Frames read and not yet released, by serial.
    held: HashMap<u64, HeldFrame>,
    next_serial: u64,
    /// `close()` was called: no more reads; the reader detaches once nothing is held.
    closing: bool,
    /// Why reading is refused after a fork (set in the child, see `forget_in_child`).
    forked: Option<String>,
    /// The reader's counters as of the last read or release.
    stats: ReaderStats,
    /// The most recent frame's pin slot: taken (the Frame finished) at the next read.
    last: Option<PinSlot>,
}

impl Inner {
    /// Releases frame `serial` if still held; its outcome.
    fn release(&mut self, serial: u64) -> Option<bool> {
        let held = self.held.remove(&serial)?;
        let reader = self.reader.as_mut()?;
        let intact = reader.release(held).is_ok();
        self.stats = reader.stats();
        if self.closing && self.held.is_empty() {
            self.reader = None;
        }
        Some(intact)
    }
}

/// What `read` learnt, handed back to Python.
struct Taken {
    serial: u64,
    info: SampleInfo,
    offset: u64,
    len: usize,
    read_mono_ns: u64,
}

enum ReadError {
    Ring(ads_shmem_ipc::Error),
    Closed,
    Forked(String),
}

impl From<ReadError> for PyErr {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Ring(e) => ring_error(e),
            ReadError::Closed => PyValueError::new_err("the frame reader is closed"),
            ReadError::Forked(m) => ForkedReader::new_err(m),
        }
    }
}

fn format_name(format: PixelFormat) -> &'static str {
    match format {
        PixelFormat::Bgr8 => "bgr8",
        PixelFormat::Rgb8 => "rgb8",
        PixelFormat::Gray8 => "gray8",
        PixelFormat::Bgra8 => "bgra8",
    }
}

fn parse_format(name: &str) -> PyResult<PixelFormat> {
    match name {
        "bgr8" => Ok(PixelFormat::Bgr8),
        "rgb8" => Ok(PixelFormat::Rgb8),
        "gray8" => Ok(PixelFormat::Gray8),
        "bgra8" => Ok(PixelFormat::Bgra8),
        other => Err(PyValueError::new_err(format!(
            "format {other:?}: expected one of \"bgr8\", \"rgb8\", \"gray8\", \"bgra8\""
        ))),
    }
}

fn parse_mode(name: &str) -> PyResult<ReadMode> {
    match name {
        "latest" => Ok(ReadMode::Latest),
        "in_order" => Ok(ReadMode::InOrder),
        other => Err(PyValueError::new_err(format!("mode {other:?}: expected \"latest\" or \"in_order\""))),
    }
}

/// Seconds from Python into a deadline; `None` waits forever.
pub(crate) fn deadline_after(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(t.min(1e9))))
        }
        Some(t) => Err(PyValueError::new_err(format!(
            "timeout {t}: must be a finite number of seconds >= 0 or None"
        ))),
    }
}

/// A reading end of a frame ring.
#[pyclass(module = "ads._native", name = "FrameReader", frozen)]
pub(crate) struct PyFrameReader {
    inner: Mutex<Inner>,
    geometry: FrameGeometry,
    /// The segment's descriptor, owned by the reader (valid while it is attached).
    fd: i32,
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    mode: &'static str,
    #[pyo3(get)]
    writer_pid: u32,
    #[pyo3(get)]
    generation: u64,
    #[pyo3(get)]
    max_pins: usize,
}

impl PyFrameReader {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn read_once(&self, wait: Wait) -> Result<Option<Taken>, ReadError> {
        let mut inner = self.lock();
        if let Some(why) = &inner.forked {
            return Err(ReadError::Forked(why.clone()));
        }
        if inner.closing {
            return Err(ReadError::Closed);
        }
        let Some(reader) = inner.reader.as_mut() else { return Err(ReadError::Closed) };
        let got = reader.read_held(wait);
        let read_mono_ns = clock::monotonic_ns();
        let stats = reader.stats();
        inner.stats = stats;
        let Some(held) = got.map_err(ReadError::Ring)? else { return Ok(None) };
        let serial = inner.next_serial;
        inner.next_serial += 1;
        let taken = Taken {
            serial,
            info: held.info(),
            offset: held.file_offset(),
            len: held.info().len,
            read_mono_ns,
        };
        inner.held.insert(serial, held);
        Ok(Some(taken))
    }

    /// Releases frame `serial` if it is still held; its outcome either way.
    fn release(&self, serial: u64, outcome: &Outcome) -> bool {
        if let Some(intact) = outcome.get() {
            return *intact;
        }
        let released = self.lock().release(serial);
        if let Some(intact) = released {
            let _ = outcome.set(intact);
        }
        outcome.get().copied().unwrap_or(false)
    }

    fn is_intact(&self, serial: u64, outcome: &Outcome) -> bool {
        if let Some(intact) = outcome.get() {
            return *intact;
        }
        let inner = self.lock();
        match (inner.held.get(&serial), inner.reader.as_ref()) {
            (Some(held), Some(reader)) => reader.held_is_intact(held),
            _ => outcome.get().copied().unwrap_or(false),
        }
    }
}

#[pymethods]
impl PyFrameReader {
    /// Attaches to frame ring `name`. `mode` is "latest" (skip to the newest frame) or
    /// "in_order" (every frame; lapped ones are counted as dropped). With `width` and `height`
    /// the ring must have exactly that packed geometry in `format`. `max_pins`: how many
    /// frames may be held (by a Frame or its arrays) at once.
    #[new]
    #[pyo3(signature = (name, mode = "latest", width = None, height = None, format = "bgr8", max_pins = 2))]
    fn new(
        name: &str,
        mode: &str,
        width: Option<u32>,
        height: Option<u32>,
        format: &str,
        max_pins: usize,
    ) -> PyResult<Self> {
        let read_mode = parse_mode(mode)?;
        let format = parse_format(format)?;
        if !(1..=8).contains(&max_pins) {
            return Err(PyValueError::new_err(format!("max_pins {max_pins}: must be 1 to 8")));
        }
        let expect = match (width, height) {
            (Some(w), Some(h)) => Some(FrameGeometry::packed(w, h, format)),
            (None, None) => None,
            _ => return Err(PyValueError::new_err("give both width and height, or neither")),
        };
        let mut reader =
            FrameReader::attach(name, FrameReaderOptions { mode: read_mode, expect }).map_err(ring_error)?;
        reader.set_max_held(max_pins);
        Ok(Self {
            geometry: reader.geometry(),
            fd: reader.segment_fd().as_raw_fd(),
            name: name.to_string(),
            mode: if read_mode == ReadMode::Latest { "latest" } else { "in_order" },
            writer_pid: reader.writer_pid(),
            generation: reader.generation(),
            max_pins: reader.max_held(),
            inner: Mutex::new(Inner {
                stats: reader.stats(),
                reader: Some(Box::new(reader)),
                held: HashMap::new(),
                next_serial: 0,
                closing: false,
                forked: None,
                last: None,
            }),
        })
    }

    /// Waits up to `timeout` seconds (None: forever, 0: just look) for the next frame, with
    /// the GIL released; `spin` busy-polls instead of sleeping on the ring's futex. Finishes
    /// the previously read frame first (its arrays keep it). Returns None when the wait ran
    /// out.
    #[pyo3(signature = (timeout = 1.0, spin = false))]
    fn read(slf: &Bound<'_, Self>, timeout: Option<f64>, spin: bool) -> PyResult<Option<PyFrame>> {
        let py = slf.py();
        let this = slf.get();
        let deadline = deadline_after(timeout)?;
        // The previous frame is finished: its Frame lets go of its pin (outside our lock: a
        // pin's last reference going releases through it).
        let last = this.lock().last.take();
        if let Some(slot) = last {
            let pin = lock(&slot).take();
            drop(pin);
        }
        loop {
            let chunk = deadline
                .map_or(SIGNAL_CHECK, |d| d.saturating_duration_since(Instant::now()).min(SIGNAL_CHECK));
            let wait = match (chunk.is_zero(), spin) {
                (true, _) => Wait::Poll,
                (false, true) => Wait::Spin(chunk),
                (false, false) => Wait::Block(chunk),
            };
            if let Some(t) = py.detach(|| this.read_once(wait))? {
                let outcome = Outcome::default();
                let pin = Py::new(
                    py,
                    PyPin { reader: slf.clone().unbind(), serial: t.serial, outcome: Arc::clone(&outcome) },
                )?;
                let slot: PinSlot = Arc::new(Mutex::new(Some(pin)));
                this.lock().last = Some(Arc::clone(&slot));
                return Ok(Some(PyFrame {
                    reader: slf.clone().unbind(),
                    serial: t.serial,
                    outcome,
                    pin: slot,
                    verdict: OnceLock::new(),
                    id: t.info.stamp.id,
                    seq: t.info.seq,
                    capture_mono_ns: t.info.stamp.capture_mono_ns,
                    capture_wall_ns: t.info.stamp.capture_wall_ns,
                    publish_mono_ns: t.info.publish_mono_ns,
                    read_mono_ns: t.read_mono_ns,
                    offset: t.offset,
                    nbytes: t.len,
                }));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }

    #[getter]
    fn width(&self) -> u32 {
        self.geometry.width
    }

    #[getter]
    fn height(&self) -> u32 {
        self.geometry.height
    }

    /// Bytes from one row to the next.
    #[getter]
    fn stride(&self) -> u32 {
        self.geometry.stride
    }

    /// "bgr8", "rgb8", "gray8" or "bgra8".
    #[getter]
    fn format(&self) -> &'static str {
        format_name(self.geometry.format)
    }

    #[getter]
    fn channels(&self) -> u32 {
        self.geometry.format.bytes_per_pixel()
    }

    /// The descriptor of the ring's segment file as this reader opened it (read-only), for
    /// Python to map: `mmap` duplicates it, so the mapping outlives the reader. ValueError
    /// once the reader is closed.
    fn fileno(&self) -> PyResult<i32> {
        let inner = self.lock();
        match (&inner.forked, &inner.reader) {
            (Some(why), _) => Err(ForkedReader::new_err(why.clone())),
            (None, Some(_)) => Ok(self.fd),
            (None, None) => Err(PyValueError::new_err("the frame reader is closed")),
        }
    }

    /// Frames held now (by a Frame not finished, or by arrays).
    #[getter]
    fn pinned(&self) -> usize {
        self.lock().held.len()
    }

    /// Counters: read, skipped (latest mode), dropped (in-order mode), overruns (frames
    /// overwritten while read), as of the last read or release.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.lock().stats;
        let d = PyDict::new(py);
        d.set_item("read", s.read)?;
        d.set_item("skipped", s.skipped)?;
        d.set_item("dropped", s.dropped)?;
        d.set_item("overruns", s.overruns)?;
        Ok(d)
    }

    /// Stops reading (reading afterwards raises ValueError). Frames still held by arrays
    /// stay pinned until those go; then the reader detaches.
    fn close(&self) {
        let last = {
            let mut inner = self.lock();
            inner.closing = true;
            if inner.held.is_empty() {
                inner.reader = None;
            }
            inner.last.take()
        };
        if let Some(slot) = last {
            let pin = lock(&slot).take();
            drop(pin);
        }
    }

    /// In a child `fork()` made: the reader and everything it holds are the parent's. Forgets
    /// them without touching the ring (the ring's own reader leaves the parent's entries
    /// alone in a fork) and refuses every read from now on with `message`.
    fn forget_in_child(&self, message: String) {
        let mut inner = self.lock();
        inner.forked = Some(message);
        inner.held.clear();
        inner.reader = None;
        inner.last = None;
    }

    #[getter]
    fn closed(&self) -> bool {
        let inner = self.lock();
        inner.closing || inner.reader.is_none()
    }
}

/// The pin of one frame a `FrameReader` holds: the slot stays pinned while this object
/// lives. Held by the `Frame` until it is finished and by every array made from it.
#[pyclass(module = "ads._native", name = "Pin", frozen)]
pub(crate) struct PyPin {
    reader: Py<PyFrameReader>,
    serial: u64,
    outcome: Outcome,
}

impl Drop for PyPin {
    fn drop(&mut self) {
        self.reader.get().release(self.serial, &self.outcome);
    }
}

/// One frame read by a `FrameReader`; the pixels are at `offset` in the ring's file.
#[pyclass(module = "ads._native", name = "Frame", frozen)]
pub(crate) struct PyFrame {
    reader: Py<PyFrameReader>,
    serial: u64,
    outcome: Outcome,
    pin: PinSlot,
    /// What `finish` said, once called.
    verdict: OnceLock<bool>,
    /// The writer's frame id (the camera's or simulator's frame number).
    #[pyo3(get)]
    id: u64,
    /// Position in the writer's stream, 0 for its first frame.
    #[pyo3(get)]
    seq: u64,
    /// Capture time, CLOCK_MONOTONIC ns.
    #[pyo3(get)]
    capture_mono_ns: u64,
    /// Capture time, ns since the Unix epoch.
    #[pyo3(get)]
    capture_wall_ns: u64,
    /// When the writer published the frame, CLOCK_MONOTONIC ns.
    #[pyo3(get)]
    publish_mono_ns: u64,
    /// When this reader took it, CLOCK_MONOTONIC ns.
    #[pyo3(get)]
    read_mono_ns: u64,
    /// Where the pixels start in the ring's file.
    #[pyo3(get)]
    offset: u64,
    /// Bytes of the frame (stride × height).
    #[pyo3(get)]
    nbytes: usize,
}

impl Drop for PyFrame {
    fn drop(&mut self) {
        // A Frame garbage-collected unfinished lets go of its pin (arrays may keep it).
        let pin = lock(&self.pin).take();
        drop(pin);
    }
}

#[pymethods]
impl PyFrame {
    /// The frame's pin, for an array to hold; ValueError once the frame is finished.
    fn pin(&self, py: Python<'_>) -> PyResult<Py<PyPin>> {
        lock(&self.pin)
            .as_ref()
            .map(|p| p.clone_ref(py))
            .ok_or_else(|| PyValueError::new_err("the frame is finished: its pixels are no longer pinned"))
    }

    /// Ends the Frame's hold: True if the frame was intact (one frame, never overwritten).
    /// The pin is released now unless arrays of the frame still live; they keep it until
    /// they go. Idempotent.
    fn finish(&self) -> bool {
        if let Some(v) = self.verdict.get() {
            return *v;
        }
        let pin = lock(&self.pin).take();
        // The last reference (no arrays): released here, and the outcome is the release's.
        drop(pin);
        let reader = self.reader.get();
        let intact = match self.outcome.get() {
            Some(intact) => *intact,
            None => reader.is_intact(self.serial, &self.outcome),
        };
        *self.verdict.get_or_init(|| intact)
    }

    /// True if the writer has not touched the frame so far (or, once finished, the outcome).
    fn is_intact(&self) -> bool {
        self.reader.get().is_intact(self.serial, &self.outcome)
    }

    /// None while the Frame holds its pin, else the outcome of `finish`.
    #[getter]
    fn finished(&self) -> Option<bool> {
        self.verdict.get().copied()
    }
}
