//! `ads._native`, the Rust half of the Python package `ads` (see python/README.md): frame
//! rings read zero-copy, detection records written exactly as `ads-detection` writes them,
//! and the wire protocol's encode/decode/sign — all by calling `ads-shmem-ipc` and
//! `ads-protocol`, never by re-implementing their layouts.

mod detections;
mod errors;
mod frames;
mod protocol;

use pyo3::prelude::*;

/// CLOCK_MONOTONIC ns, the clock of the rings' timestamps.
#[pyfunction]
fn monotonic_ns() -> u64 {
    ads_shmem_ipc::clock::monotonic_ns()
}

/// Nanoseconds since the Unix epoch, the clock of capture_wall_ns and of the wire protocol.
#[pyfunction]
fn wall_ns() -> u64 {
    ads_shmem_ipc::clock::wall_ns()
}

#[pymodule]
#[pyo3(name = "_native")]
fn ads_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<frames::PyFrameReader>()?;
    m.add_class::<frames::PyFrame>()?;
    m.add_class::<frames::PyPin>()?;
    m.add_class::<detections::PyDetectionsWriter>()?;
    m.add_function(wrap_pyfunction!(monotonic_ns, m)?)?;
    m.add_function(wrap_pyfunction!(wall_ns, m)?)?;
    protocol::register(m)?;
    m.add("RingError", py.get_type::<errors::RingError>())?;
    m.add("RingNotFound", py.get_type::<errors::RingNotFound>())?;
    m.add("LayoutMismatch", py.get_type::<errors::LayoutMismatch>())?;
    m.add("WriterGone", py.get_type::<errors::WriterGone>())?;
    m.add("WriterAlive", py.get_type::<errors::WriterAlive>())?;
    m.add("Overwritten", py.get_type::<errors::Overwritten>())?;
    m.add("RingCorrupt", py.get_type::<errors::RingCorrupt>())?;
    m.add("RingInitialising", py.get_type::<errors::RingInitialising>())?;
    m.add("ForkedReader", py.get_type::<errors::ForkedReader>())?;
    m.add("PROTOCOL_VERSION", ads_protocol::PROTOCOL_VERSION)?;
    m.add("FRAMES_RING", ads_protocol::FRAMES_RING)?;
    m.add("DETECTIONS_RING", ads_protocol::DETECTIONS_RING)?;
    Ok(())
}
