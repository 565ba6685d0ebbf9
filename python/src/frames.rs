//! `ads._native.FrameReader` and `ads._native.Frame`: a frame ring read from Python.
//!
//! A reader lends one frame at a time. Reading the next frame finishes the previous one (and
//! records whether it was intact); so do `Frame.finish()`, leaving its `with` block and the
//! frame being garbage-collected. Waits release the GIL and wake every 50 ms to let Python
//! handle signals (Ctrl-C interrupts a wait with `KeyboardInterrupt`).

use crate::errors::ring_error;
use crate::held::{HeldFrame, NoFrame};
use crate::mapping::FileMapping;
use ads_shmem_ipc::{
    clock, FrameGeometry, FrameReader, FrameReaderOptions, PixelFormat, ReadMode, ReaderStats, SampleInfo,
    Wait,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Longest a wait runs without looking at Python's signal flags.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Whether a lent frame was intact when it was finished; set once by whoever finishes it.
type Outcome = Arc<OnceLock<bool>>;

enum State {
    Idle(Box<FrameReader>),
    Held {
        frame: HeldFrame,
        serial: u64,
        outcome: Outcome,
    },
    Closed,
    /// An internal error (a panic) lost the reader.
    Lost,
}

struct Inner {
    state: State,
    next_serial: u64,
    /// The mapping the last frame was found in (one per reader; looked up again if a frame
    /// is ever outside it).
    mapping: Option<FileMapping>,
    /// The reader's counters as of the last time it was idle.
    stats: ReaderStats,
}

impl Inner {
    /// Ends the lent frame, if any, recording its outcome; the reader is idle afterwards.
    fn settle_held(&mut self) {
        if let State::Held { .. } = self.state {
            if let State::Held { frame, outcome, .. } = std::mem::replace(&mut self.state, State::Lost) {
                let (reader, intact) = frame.finish();
                let _ = outcome.set(intact);
                self.stats = reader.stats();
                self.state = State::Idle(reader);
            }
        }
    }
}

/// What `read` learnt, handed back to Python.
struct Taken {
    serial: u64,
    outcome: Outcome,
    info: SampleInfo,
    offset: u64,
    len: usize,
    read_mono_ns: u64,
}

enum ReadError {
    Ring(ads_shmem_ipc::Error),
    Closed,
    Lost,
    Mapping(String),
}

impl From<ReadError> for PyErr {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Ring(e) => ring_error(e),
            ReadError::Closed => PyValueError::new_err("the frame reader is closed"),
            ReadError::Lost => PyRuntimeError::new_err("the frame reader was lost after an internal error"),
            ReadError::Mapping(m) => PyRuntimeError::new_err(m),
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
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    mode: &'static str,
    #[pyo3(get)]
    writer_pid: u32,
    #[pyo3(get)]
    generation: u64,
}

impl PyFrameReader {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_once(&self, wait: Wait) -> Result<Option<Taken>, ReadError> {
        let mut inner = self.lock();
        inner.settle_held();
        let reader = match std::mem::replace(&mut inner.state, State::Lost) {
            State::Idle(reader) => reader,
            State::Closed => {
                inner.state = State::Closed;
                return Err(ReadError::Closed);
            }
            State::Lost | State::Held { .. } => return Err(ReadError::Lost),
        };
        let frame = match HeldFrame::read(reader, wait) {
            Ok(frame) => frame,
            Err(NoFrame::TimedOut(reader)) => {
                inner.stats = reader.stats();
                inner.state = State::Idle(reader);
                return Ok(None);
            }
            Err(NoFrame::Failed(reader, e)) => {
                inner.stats = reader.stats();
                inner.state = State::Idle(reader);
                return Err(ReadError::Ring(e));
            }
        };
        let read_mono_ns = clock::monotonic_ns();
        let (Some(info), Some((address, len))) = (frame.info(), frame.pixels_address()) else {
            return Err(ReadError::Lost);
        };
        let serial = inner.next_serial;
        inner.next_serial += 1;
        let outcome = Outcome::default();
        inner.state = State::Held { frame, serial, outcome: Arc::clone(&outcome) };
        if !inner.mapping.as_ref().is_some_and(|m| m.covers(address, len)) {
            inner.mapping = Some(FileMapping::containing(address, len).map_err(ReadError::Mapping)?);
        }
        let offset = inner.mapping.as_ref().map_or(0, |m| m.offset_of(address));
        Ok(Some(Taken { serial, outcome, info, offset, len, read_mono_ns }))
    }

    /// Finishes frame `serial` if it is still lent; its outcome either way.
    fn finish(&self, serial: u64, outcome: &Outcome) -> bool {
        if let Some(intact) = outcome.get() {
            return *intact;
        }
        let mut inner = self.lock();
        if matches!(inner.state, State::Held { serial: s, .. } if s == serial) {
            inner.settle_held();
        }
        outcome.get().copied().unwrap_or(false)
    }

    fn is_intact(&self, serial: u64, outcome: &Outcome) -> bool {
        if let Some(intact) = outcome.get() {
            return *intact;
        }
        match &self.lock().state {
            State::Held { frame, serial: s, .. } if *s == serial => frame.is_intact(),
            _ => outcome.get().copied().unwrap_or(false),
        }
    }
}

#[pymethods]
impl PyFrameReader {
    /// Attaches to frame ring `name`. `mode` is "latest" (skip to the newest frame) or
    /// "in_order" (every frame; lapped ones are counted as dropped). With `width` and `height`
    /// the ring must have exactly that packed geometry in `format`.
    #[new]
    #[pyo3(signature = (name, mode = "latest", width = None, height = None, format = "bgr8"))]
    fn new(name: &str, mode: &str, width: Option<u32>, height: Option<u32>, format: &str) -> PyResult<Self> {
        let read_mode = parse_mode(mode)?;
        let format = parse_format(format)?;
        let expect = match (width, height) {
            (Some(w), Some(h)) => Some(FrameGeometry::packed(w, h, format)),
            (None, None) => None,
            _ => return Err(PyValueError::new_err("give both width and height, or neither")),
        };
        let reader =
            FrameReader::attach(name, FrameReaderOptions { mode: read_mode, expect }).map_err(ring_error)?;
        Ok(Self {
            geometry: reader.geometry(),
            name: name.to_string(),
            mode: if read_mode == ReadMode::Latest { "latest" } else { "in_order" },
            writer_pid: reader.writer_pid(),
            generation: reader.generation(),
            inner: Mutex::new(Inner {
                stats: reader.stats(),
                state: State::Idle(Box::new(reader)),
                next_serial: 0,
                mapping: None,
            }),
        })
    }

    /// Waits up to `timeout` seconds (None: forever, 0: just look) for the next frame, with
    /// the GIL released; `spin` busy-polls instead of sleeping on the ring's futex. Finishes
    /// the previously read frame first. Returns None when the wait ran out.
    #[pyo3(signature = (timeout = 1.0, spin = false))]
    fn read(slf: &Bound<'_, Self>, timeout: Option<f64>, spin: bool) -> PyResult<Option<PyFrame>> {
        let py = slf.py();
        let this = slf.get();
        let deadline = deadline_after(timeout)?;
        loop {
            let chunk = deadline
                .map_or(SIGNAL_CHECK, |d| d.saturating_duration_since(Instant::now()).min(SIGNAL_CHECK));
            let wait = match (chunk.is_zero(), spin) {
                (true, _) => Wait::Poll,
                (false, true) => Wait::Spin(chunk),
                (false, false) => Wait::Block(chunk),
            };
            if let Some(t) = py.detach(|| this.read_once(wait))? {
                return Ok(Some(PyFrame {
                    reader: slf.clone().unbind(),
                    serial: t.serial,
                    outcome: t.outcome,
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

    /// The file the ring lives in, as this process mapped it: (path, device major, device
    /// minor, inode), or None before the first frame was read.
    fn segment_file(&self) -> Option<(String, u32, u32, u64)> {
        self.lock()
            .mapping
            .as_ref()
            .map(|m| (m.path.to_string_lossy().into_owned(), m.dev_major, m.dev_minor, m.inode))
    }

    /// Counters: read, skipped (latest mode), dropped (in-order mode), overruns (frames
    /// overwritten while read), as of the last frame finished.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.lock().stats;
        let d = PyDict::new(py);
        d.set_item("read", s.read)?;
        d.set_item("skipped", s.skipped)?;
        d.set_item("dropped", s.dropped)?;
        d.set_item("overruns", s.overruns)?;
        Ok(d)
    }

    /// Finishes a lent frame and detaches; reading afterwards raises ValueError.
    fn close(&self) {
        let mut inner = self.lock();
        inner.settle_held();
        inner.state = State::Closed;
    }

    #[getter]
    fn closed(&self) -> bool {
        matches!(self.lock().state, State::Closed)
    }
}

/// One frame lent by a `FrameReader`; the pixels are at `offset` in the ring's file.
#[pyclass(module = "ads._native", name = "Frame", frozen)]
pub(crate) struct PyFrame {
    reader: Py<PyFrameReader>,
    serial: u64,
    outcome: Outcome,
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

#[pymethods]
impl PyFrame {
    /// Ends the read; True if everything read from the pixels was one frame, False if the
    /// writer overwrote it meanwhile (discard what was computed). Idempotent.
    fn finish(&self) -> bool {
        self.reader.get().finish(self.serial, &self.outcome)
    }

    /// True if the writer has not touched the frame so far (or, once finished, the outcome).
    fn is_intact(&self) -> bool {
        self.reader.get().is_intact(self.serial, &self.outcome)
    }

    /// None while lent, else the outcome of `finish`.
    #[getter]
    fn finished(&self) -> Option<bool> {
        self.outcome.get().copied()
    }
}

impl Drop for PyFrame {
    fn drop(&mut self) {
        // A frame garbage-collected unfinished is finished, so its slot is not kept lent.
        self.reader.get().finish(self.serial, &self.outcome);
    }
}
