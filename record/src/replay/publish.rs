//! The replayer's one network module: it is a vehicle on the wire. A PUB socket sends
//! `[topic, envelope, payload?]` like the vehicle's broadcaster; a SUB socket takes actions.
//! When the vehicle's frame path moves to its own socket, only this module changes.

use ads_protocol::{Action, DecodeError, Message};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("ZeroMQ {what} {endpoint}: {source}")]
pub struct PublishError {
    what: &'static str,
    endpoint: String,
    source: zmq::Error,
}

/// What arrived on the action socket.
#[derive(Debug)]
pub enum Incoming {
    Action { seq: u64, action: Action },
    Malformed(DecodeError),
}

pub struct VehicleEndpoints {
    publisher: zmq::Socket,
    actions: zmq::Socket,
    vehicle_id: String,
    seq: [u64; 6],
    _context: zmq::Context,
}

impl std::fmt::Debug for VehicleEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VehicleEndpoints").field("vehicle_id", &self.vehicle_id).finish_non_exhaustive()
    }
}

impl VehicleEndpoints {
    pub fn bind(broadcast: &str, actions: &str, vehicle_id: &str) -> Result<Self, PublishError> {
        let err = |what, endpoint: &str| {
            let endpoint = endpoint.to_string();
            move |source| PublishError { what, endpoint, source }
        };
        let context = zmq::Context::new();
        let publisher = context.socket(zmq::PUB).map_err(err("socket for", broadcast))?;
        publisher.set_sndhwm(100).map_err(err("options of", broadcast))?;
        publisher.set_linger(0).map_err(err("options of", broadcast))?;
        publisher.bind(broadcast).map_err(err("binding", broadcast))?;
        let subscriber = context.socket(zmq::SUB).map_err(err("socket for", actions))?;
        subscriber.set_maxmsgsize(64 * 1024).map_err(err("options of", actions))?;
        subscriber.set_subscribe(b"action").map_err(err("subscribing on", actions))?;
        subscriber.bind(actions).map_err(err("binding", actions))?;
        Ok(Self {
            publisher,
            actions: subscriber,
            vehicle_id: vehicle_id.to_string(),
            seq: [0; 6],
            _context: context,
        })
    }

    /// Sends one message now; never blocks (a full queue drops it, as the vehicle does).
    pub fn publish(&mut self, capture_ns: u64, message: &Message, payload: Option<&[u8]>) {
        let topic = message.topic();
        let index = ads_protocol::Topic::ALL.iter().position(|t| *t == topic).unwrap_or(0);
        self.seq[index] += 1;
        let envelope = ads_protocol::encode(
            &self.vehicle_id,
            self.seq[index],
            capture_ns,
            crate::subscribe::wall_ns(),
            message,
        );
        let mut parts: Vec<&[u8]> = vec![topic.as_str().as_bytes(), &envelope];
        parts.extend(payload);
        if let Err(e) = self.publisher.send_multipart(parts, zmq::DONTWAIT) {
            tracing::trace!("dropped a {topic} message: {e}");
        }
    }

    /// The next action, waiting at most `timeout`.
    pub fn next_action(&mut self, timeout: Duration) -> Option<Incoming> {
        if self.actions.poll(zmq::POLLIN, timeout.as_millis() as i64).ok()? == 0 {
            return None;
        }
        let parts = self.actions.recv_multipart(zmq::DONTWAIT).ok()?;
        // A replay takes actions with or without a MAC: it moves nothing.
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let (message, _mac) = ads_protocol::split_action_mac(&refs);
        Some(match ads_protocol::decode(message) {
            Ok(wire) => match wire.message {
                Message::Action(action) => Incoming::Action { seq: wire.seq, action },
                other => Incoming::Malformed(DecodeError::Malformed {
                    topic: "action",
                    reason: format!("a {} message on the action socket", other.topic()),
                }),
            },
            Err(e) => Incoming::Malformed(e),
        })
    }
}
