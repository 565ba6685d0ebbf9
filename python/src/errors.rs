//! The ring's errors as Python exceptions, each carrying the ring's own message.
//!
//! `RingError` is the base of everything a ring can say; bad arguments are `ValueError` or
//! `TypeError`, as Python code expects.

use ads_shmem_ipc::Error;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::{create_exception, PyErr};

create_exception!(ads, RingError, PyException, "A shared-memory ring refused or failed an operation.");
create_exception!(ads, RingNotFound, RingError, "No ring of that name exists (is its writer running?).");
create_exception!(
    ads,
    LayoutMismatch,
    RingError,
    "The ring has another layout version, kind or geometry than expected; the message names both."
);
create_exception!(
    ads,
    WriterGone,
    RingError,
    "The ring's writer closed it or died; attach again to follow a restarted writer."
);
create_exception!(ads, WriterAlive, RingError, "Another live process already writes a ring of that name.");
create_exception!(
    ads,
    Overwritten,
    RingError,
    "The writer overwrote the frame while it was read (an overrun): discard what was computed."
);
create_exception!(ads, RingCorrupt, RingError, "The ring's segment is not a valid ads ring.");
create_exception!(
    ads,
    RingInitialising,
    RingError,
    "The ring's writer is still creating it: try again in a moment (like RingNotFound)."
);
create_exception!(
    ads,
    ForkedReader,
    RingError,
    "The reader was attached in another process, of which this one is a fork: attach a new reader here."
);

/// The Python exception for a ring error.
pub(crate) fn ring_error(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::NotFound { .. } => RingNotFound::new_err(message),
        Error::VersionMismatch { .. } | Error::LayoutMismatch { .. } => LayoutMismatch::new_err(message),
        Error::WriterGone { .. } => WriterGone::new_err(message),
        Error::WriterAlive { .. } => WriterAlive::new_err(message),
        Error::Overwritten { .. } => Overwritten::new_err(message),
        Error::Corrupt { .. } => RingCorrupt::new_err(message),
        Error::Initialising { .. } => RingInitialising::new_err(message),
        Error::ForkedReader { .. } => ForkedReader::new_err(message),
        Error::InvalidName { .. } | Error::InvalidConfig { .. } | Error::TooLarge { .. } => {
            PyValueError::new_err(message)
        }
        _ => RingError::new_err(message),
    }
}
