//! Framing: `[topic, envelope, payload?]`, and the typed errors of decoding it.

use crate::messages::{Action, ControlsMsg, Detections, Event, FrameInfo, LaneTruthMsg, VehicleState};
use crate::{MAX_ENVELOPE_BYTES, MAX_PAYLOAD_BYTES, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};

/// The first part of every multipart message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Frame,
    Detection,
    State,
    Event,
    Action,
    Truth,
    Controls,
}

impl Topic {
    pub const ALL: [Topic; 7] = [
        Topic::Frame,
        Topic::Detection,
        Topic::State,
        Topic::Event,
        Topic::Action,
        Topic::Truth,
        Topic::Controls,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Topic::Frame => "frame",
            Topic::Detection => "detection",
            Topic::State => "state",
            Topic::Event => "event",
            Topic::Action => "action",
            Topic::Truth => "truth",
            Topic::Controls => "controls",
        }
    }

    pub fn parse(bytes: &[u8]) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str().as_bytes() == bytes)
    }

    /// Only frames carry a third part.
    pub const fn has_payload(self) -> bool {
        matches!(self, Topic::Frame)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded message body, by topic.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a few hundred bytes of state a few times a second; boxing it would cost every match"
)]
pub enum Message {
    Frame(FrameInfo),
    Detection(Detections),
    State(VehicleState),
    Event(Event),
    Action(Action),
    Truth(LaneTruthMsg),
    Controls(ControlsMsg),
}

impl Message {
    pub fn topic(&self) -> Topic {
        match self {
            Message::Frame(_) => Topic::Frame,
            Message::Detection(_) => Topic::Detection,
            Message::State(_) => Topic::State,
            Message::Event(_) => Topic::Event,
            Message::Action(_) => Topic::Action,
            Message::Truth(_) => Topic::Truth,
            Message::Controls(_) => Topic::Controls,
        }
    }
}

/// The envelope: the same five header fields on every topic, then the body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope<B> {
    /// [`PROTOCOL_VERSION`].
    pub(crate) v: u16,
    pub(crate) vehicle: String,
    pub(crate) seq: u64,
    pub(crate) capture_ns: u64,
    pub(crate) send_ns: u64,
    pub(crate) body: B,
}

/// A message as it came off the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct WireMessage<'a> {
    /// Id of the vehicle the message is from (or, for actions, meant for).
    pub vehicle: String,
    /// Sender's sequence number, per topic; for actions it must increase per sender.
    pub seq: u64,
    /// Wall clock ns when the data was captured (frames, detections, truth, state); for
    /// events and actions, when they were created.
    pub capture_ns: u64,
    /// Wall clock ns when the message was sent.
    pub send_ns: u64,
    pub message: Message,
    /// The JPEG of a `frame`; `None` on every other topic.
    pub payload: Option<&'a [u8]>,
}

/// Everything that can be wrong with a message. Decoding never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected 2 or 3 message parts, got {0}")]
    PartCount(usize),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("{part} of {len} bytes exceeds the limit of {max}")]
    TooLarge { part: &'static str, len: usize, max: usize },
    #[error("topic {0} needs a payload part")]
    MissingPayload(Topic),
    #[error("topic {0} carries no payload part")]
    UnexpectedPayload(Topic),
    #[error("protocol version {got}, this build speaks {PROTOCOL_VERSION}")]
    Version { got: u16 },
    #[error("malformed {topic} envelope: {reason}")]
    Malformed { topic: &'static str, reason: String },
    #[error("unknown command {kind:?}")]
    UnknownCommand { kind: String },
    #[error("{topic}: {field} is not a finite number")]
    NonFinite { topic: &'static str, field: &'static str },
}

/// Encodes the envelope of `message`; send `[topic.as_str(), envelope, payload?]`.
pub fn encode(vehicle: &str, seq: u64, capture_ns: u64, send_ns: u64, message: &Message) -> Vec<u8> {
    fn pack<B: Serialize>(vehicle: &str, seq: u64, capture_ns: u64, send_ns: u64, body: &B) -> Vec<u8> {
        let envelope =
            Envelope { v: PROTOCOL_VERSION, vehicle: vehicle.to_string(), seq, capture_ns, send_ns, body };
        // Serialising plain structs, strings and numbers into a Vec cannot fail.
        rmp_serde::to_vec_named(&envelope).unwrap_or_default()
    }
    match message {
        Message::Frame(b) => pack(vehicle, seq, capture_ns, send_ns, b),
        Message::Detection(b) => pack(vehicle, seq, capture_ns, send_ns, b),
        Message::State(b) => pack(vehicle, seq, capture_ns, send_ns, b),
        Message::Event(b) => pack(vehicle, seq, capture_ns, send_ns, b),
        Message::Action(b) => pack(vehicle, seq, capture_ns, send_ns, b),
        Message::Truth(b) => pack(vehicle, seq, capture_ns, send_ns, b),
        Message::Controls(b) => pack(vehicle, seq, capture_ns, send_ns, b),
    }
}

/// The multipart frames of an action for the vehicle's action socket: `[b"action", envelope]`,
/// or with a key `[b"action", envelope, mac]` where `mac` is the HMAC-SHA256 of the envelope
/// bytes (see [`crate::ActionKey`]). This is the one function every sender uses.
/// `seq` must increase with every action from `action.sender`.
pub fn encode_action(
    vehicle: &str,
    seq: u64,
    now_ns: u64,
    action: &Action,
    key: Option<&crate::ActionKey>,
) -> Vec<Vec<u8>> {
    let envelope = encode(vehicle, seq, now_ns, now_ns, &Message::Action(action.clone()));
    let mac = key.map(|key| key.mac(&envelope).to_vec());
    let mut parts = vec![Topic::Action.as_str().as_bytes().to_vec(), envelope];
    parts.extend(mac);
    parts
}

#[derive(Deserialize)]
pub(crate) struct VersionOnly {
    pub(crate) v: u16,
}

#[derive(Deserialize)]
struct CommandKind {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct ActionHead {
    command: CommandKind,
}

const KNOWN_COMMANDS: [&str; 12] = [
    "respawn",
    "pause",
    "resume",
    "emergency_stop",
    "set_target_speed",
    "reset",
    "heartbeat",
    "drive",
    "set_drive_mode",
    "calibrate_pulse",
    "calibrate_release",
    "calibrate_save",
];

/// Decodes one multipart message. `parts` are the ZeroMQ frames in order.
pub fn decode<'a>(parts: &[&'a [u8]]) -> Result<WireMessage<'a>, DecodeError> {
    if !(2..=3).contains(&parts.len()) {
        return Err(DecodeError::PartCount(parts.len()));
    }
    let topic = Topic::parse(parts[0]).ok_or_else(|| {
        let shown: String = String::from_utf8_lossy(parts[0]).chars().take(64).collect();
        DecodeError::UnknownTopic(shown)
    })?;
    let envelope = parts[1];
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(DecodeError::TooLarge { part: "envelope", len: envelope.len(), max: MAX_ENVELOPE_BYTES });
    }
    let payload = parts.get(2).copied();
    match (topic.has_payload(), payload) {
        (true, None) => return Err(DecodeError::MissingPayload(topic)),
        (false, Some(_)) => return Err(DecodeError::UnexpectedPayload(topic)),
        (_, Some(p)) if p.len() > MAX_PAYLOAD_BYTES => {
            return Err(DecodeError::TooLarge { part: "payload", len: p.len(), max: MAX_PAYLOAD_BYTES })
        }
        _ => {}
    }
    let malformed =
        |e: rmp_serde::decode::Error| DecodeError::Malformed { topic: topic.as_str(), reason: e.to_string() };
    crate::msgpack_check::check(envelope)
        .map_err(|reason| DecodeError::Malformed { topic: topic.as_str(), reason })?;
    let version: VersionOnly = rmp_serde::from_slice(envelope).map_err(malformed)?;
    if version.v != PROTOCOL_VERSION {
        return Err(DecodeError::Version { got: version.v });
    }
    fn body<B: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<Envelope<B>, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
    macro_rules! unpack {
        ($variant:ident) => {{
            let e = body(envelope).map_err(malformed)?;
            (e.vehicle, e.seq, e.capture_ns, e.send_ns, Message::$variant(e.body))
        }};
    }
    let (vehicle, seq, capture_ns, send_ns, message) = match topic {
        Topic::Frame => unpack!(Frame),
        Topic::Detection => unpack!(Detection),
        Topic::State => unpack!(State),
        Topic::Event => unpack!(Event),
        Topic::Truth => unpack!(Truth),
        Topic::Controls => unpack!(Controls),
        Topic::Action => match body::<Action>(envelope) {
            Ok(e) => (e.vehicle, e.seq, e.capture_ns, e.send_ns, Message::Action(e.body)),
            Err(full) => {
                // Tell "a command we do not know" apart from "garbage", so the sender learns which.
                if let Ok(head) = body::<ActionHead>(envelope) {
                    if !KNOWN_COMMANDS.contains(&head.body.command.kind.as_str()) {
                        return Err(DecodeError::UnknownCommand { kind: head.body.command.kind });
                    }
                }
                return Err(malformed(full));
            }
        },
    };
    if let Some(field) = crate::finite::first_non_finite(&message) {
        return Err(DecodeError::NonFinite { topic: topic.as_str(), field });
    }
    Ok(WireMessage { vehicle, seq, capture_ns, send_ns, message, payload })
}

/// Who sent an action, as far as a message that failed to decode still tells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ActionIdentity {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub sender: String,
}

/// Best-effort id/sender/seq of an action envelope that did not decode, for its rejection.
pub fn peek_action_identity(envelope: &[u8]) -> (ActionIdentity, u64) {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        seq: u64,
        body: ActionIdentity,
    }
    if crate::msgpack_check::check(envelope).is_err() {
        return (ActionIdentity::default(), 0);
    }
    match rmp_serde::from_slice::<Peek>(envelope) {
        Ok(p) => (p.body, p.seq),
        Err(_) => (ActionIdentity::default(), 0),
    }
}

#[derive(Serialize, Deserialize)]
struct Record<B> {
    v: u16,
    body: B,
}

/// Encodes a detection record for the `detections` ring.
pub fn encode_record(detections: &Detections) -> Vec<u8> {
    rmp_serde::to_vec_named(&Record { v: PROTOCOL_VERSION, body: detections }).unwrap_or_default()
}

/// Decodes a record of the `detections` ring.
pub fn decode_record(bytes: &[u8]) -> Result<Detections, DecodeError> {
    let malformed =
        |e: rmp_serde::decode::Error| DecodeError::Malformed { topic: "record", reason: e.to_string() };
    crate::msgpack_check::check(bytes)
        .map_err(|reason| DecodeError::Malformed { topic: "record", reason })?;
    let version: VersionOnly = rmp_serde::from_slice(bytes).map_err(malformed)?;
    if version.v != PROTOCOL_VERSION {
        return Err(DecodeError::Version { got: version.v });
    }
    let record: Record<Detections> = rmp_serde::from_slice(bytes).map_err(malformed)?;
    if let Some(field) = crate::finite::first_non_finite_detections(&record.body) {
        return Err(DecodeError::NonFinite { topic: "record", field });
    }
    Ok(record.body)
}

#[cfg(test)]
mod tests {
    use super::Topic;

    /// ZeroMQ SUB filters match by prefix: if one topic were a prefix of another, a
    /// subscriber to the shorter one would silently receive both.
    #[test]
    fn no_topic_is_a_prefix_of_another() {
        for a in Topic::ALL {
            for b in Topic::ALL {
                assert!(a == b || !b.as_str().starts_with(a.as_str()), "{a} is a prefix of {b}");
            }
        }
        assert!(Topic::ALL.iter().all(|t| Topic::parse(t.as_str().as_bytes()) == Some(*t)));
    }
}
