//! The recorder's one network module: a stream of decoded vehicle messages with their receive
//! times. Everything else in the recorder sees only [`Received`], so when the frame path moves
//! to its own socket only this module changes.
//!
//! A SUB socket like the viewer's: it subscribes to everything, and ZeroMQ reconnects by
//! itself. The recorder is one more subscriber: the vehicle's PUB drops for it at its
//! high-water mark rather than wait, so a slow disk never slows the vehicle.

use ads_protocol::{DecodeError, Message};
use std::time::Duration;

const HEARTBEAT_IVL_MS: i32 = 500;
const HEARTBEAT_TIMEOUT_MS: i32 = 2000;
/// Generous: a recorder should rather hold a burst in memory than lose it.
const RECEIVE_HWM: i32 = 1000;

#[derive(Debug, thiserror::Error)]
#[error("ZeroMQ {what} {endpoint}: {source}")]
pub struct SubscribeError {
    what: &'static str,
    endpoint: String,
    source: zmq::Error,
}

/// One message off the wire, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Wall clock ns when the recorder took it off the socket.
    pub recv_ns: u64,
    pub vehicle: String,
    pub seq: u64,
    pub capture_ns: u64,
    pub send_ns: u64,
    pub message: Message,
    /// The JPEG of a frame.
    pub payload: Option<Vec<u8>>,
}

/// What [`VehicleStream::next`] found.
#[derive(Debug)]
pub enum Next {
    Message(Box<Received>),
    /// Something arrived that does not decode; it was dropped.
    Malformed(DecodeError),
    /// Nothing within the timeout.
    Idle,
}

pub struct VehicleStream {
    socket: zmq::Socket,
    _context: zmq::Context,
}

impl std::fmt::Debug for VehicleStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VehicleStream").finish_non_exhaustive()
    }
}

impl VehicleStream {
    pub fn connect(endpoint: &str) -> Result<Self, SubscribeError> {
        let err = |what| {
            let endpoint = endpoint.to_string();
            move |source| SubscribeError { what, endpoint, source }
        };
        let context = zmq::Context::new();
        let socket = context.socket(zmq::SUB).map_err(err("socket for"))?;
        socket.set_rcvhwm(RECEIVE_HWM).map_err(err("options of"))?;
        socket.set_heartbeat_ivl(HEARTBEAT_IVL_MS).map_err(err("options of"))?;
        socket.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS).map_err(err("options of"))?;
        socket.set_heartbeat_ttl(HEARTBEAT_TIMEOUT_MS).map_err(err("options of"))?;
        socket.set_reconnect_ivl(100).map_err(err("options of"))?;
        socket.set_reconnect_ivl_max(2000).map_err(err("options of"))?;
        socket.set_maxmsgsize((ads_protocol::MAX_PAYLOAD_BYTES + 1024) as i64).map_err(err("options of"))?;
        socket.set_subscribe(b"").map_err(err("subscribing to"))?;
        socket.connect(endpoint).map_err(err("connecting to"))?;
        Ok(Self { socket, _context: context })
    }

    /// The next message, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Next {
        let parts = match self.socket.recv_multipart(zmq::DONTWAIT) {
            Ok(parts) => parts,
            Err(_) => match self.socket.poll(zmq::POLLIN, timeout.as_millis() as i64) {
                Ok(n) if n > 0 => match self.socket.recv_multipart(zmq::DONTWAIT) {
                    Ok(parts) => parts,
                    Err(_) => return Next::Idle,
                },
                _ => return Next::Idle,
            },
        };
        let recv_ns = wall_ns();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        match ads_protocol::decode(&refs) {
            Ok(wire) => Next::Message(Box::new(Received {
                recv_ns,
                vehicle: wire.vehicle,
                seq: wire.seq,
                capture_ns: wire.capture_ns,
                send_ns: wire.send_ns,
                message: wire.message,
                payload: wire.payload.map(<[u8]>::to_vec),
            })),
            Err(e) => Next::Malformed(e),
        }
    }
}

pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
