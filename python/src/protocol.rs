//! The wire protocol over bytes: decode the vehicle's multipart messages, encode and sign
//! actions. Sockets are the caller's (pyzmq in `ads.client`); this stays a thin layer over
//! `ads_protocol` so protocol changes land in one crate.
//!
//! Bodies cross into Python as JSON text (`ads.client` turns it into dicts): the protocol's
//! own serde types decide every field name, so nothing here lists them again.

use ads_protocol::{decode as decode_message, encode_action as encode_signed, Action, ActionKey, Message};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::Serialize;
use std::path::PathBuf;

create_exception!(
    ads,
    ProtocolError,
    PyException,
    "A message from the wire is malformed or of another protocol version."
);

fn body_json<B: Serialize>(body: &B) -> PyResult<String> {
    serde_json::to_string(body).map_err(|e| ProtocolError::new_err(format!("cannot represent the body: {e}")))
}

/// Decodes one multipart message (`[topic, envelope]` or `[topic, envelope, payload]`) into
/// (topic, vehicle, seq, capture_ns, send_ns, body as JSON text, payload bytes or None).
/// Raises ProtocolError with the protocol's reason for anything malformed.
#[pyfunction]
#[allow(
    clippy::type_complexity,
    reason = "the tuple is the Python-facing return value, unpacked in ads.client"
)]
fn decode<'py>(
    py: Python<'py>,
    parts: Vec<Vec<u8>>,
) -> PyResult<(&'static str, String, u64, u64, u64, String, Option<Bound<'py, PyBytes>>)> {
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let m = decode_message(&refs).map_err(|e| ProtocolError::new_err(e.to_string()))?;
    let body = match &m.message {
        Message::Frame(b) => body_json(b)?,
        Message::Detection(b) => body_json(b)?,
        Message::State(b) => body_json(b)?,
        Message::Event(b) => body_json(b)?,
        Message::Action(b) => body_json(b)?,
        Message::Truth(b) => body_json(b)?,
        Message::Controls(b) => body_json(b)?,
    };
    let payload = m.payload.map(|p| PyBytes::new(py, p));
    Ok((m.message.topic().as_str(), m.vehicle, m.seq, m.capture_ns, m.send_ns, body, payload))
}

/// A shared action key loaded from its key file (see docs/security.md).
#[pyclass(module = "ads._native", name = "ActionKey", frozen)]
pub(crate) struct PyActionKey {
    key: ActionKey,
}

#[pymethods]
impl PyActionKey {
    /// Loads the key from `path`, refusing a file others may read, as the vehicle does.
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        ActionKey::load(&path)
            .map(|key| Self { key })
            .map_err(|e| PyValueError::new_err(format!("{}: {e}", path.display())))
    }

    fn __repr__(&self) -> &'static str {
        "ActionKey(<secret>)"
    }
}

/// The multipart frames of an action: `action_json` is the action body as JSON
/// (`{"id", "sender", "run": {"run_id", "expires_run_ns"}, "command": {"type": ...}}`), signed when `key` is given.
/// Raises ValueError for an action the protocol does not know.
#[pyfunction]
#[pyo3(signature = (vehicle, seq, now_ns, action_json, key = None))]
fn encode_action<'py>(
    py: Python<'py>,
    vehicle: &str,
    seq: u64,
    now_ns: u64,
    action_json: &str,
    key: Option<&PyActionKey>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let action: Action = serde_json::from_str(action_json)
        .map_err(|e| PyValueError::new_err(format!("not an action: {e}")))?;
    let parts = encode_signed(vehicle, seq, now_ns, &action, key.map(|k| &k.key));
    Ok(parts.iter().map(|p| PyBytes::new(py, p)).collect())
}

/// The vehicle's (video, actions) endpoints on the host of `pub_endpoint`, from the ports a
/// state advertises (`state.link.video_port`, `state.commands.action_port`). ValueError names
/// what is missing.
#[pyfunction]
fn discover_endpoints(pub_endpoint: &str, video_port: u16, action_port: u16) -> PyResult<(String, String)> {
    let found = ads_protocol::discover::endpoints_on(pub_endpoint, video_port, action_port, false)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((found.video, found.actions))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(discover_endpoints, m)?)?;
    m.add_class::<PyActionKey>()?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(encode_action, m)?)?;
    m.add("ProtocolError", m.py().get_type::<ProtocolError>())?;
    Ok(())
}
