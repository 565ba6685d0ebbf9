//! What the ads processes say to each other: ports, topics, and every message on the wire.
//!
//! A ZeroMQ message is multipart `[topic, envelope, payload?]`: the topic as UTF-8, the
//! [`Envelope`] as a msgpack map (field names as keys, so any msgpack library reads it), and
//! for `frame` only, the JPEG bytes. `docs/protocol.md` is the same contract for people and
//! for clients in other languages.
//!
//! Actions may carry a third part, an HMAC-SHA256 of the envelope under a shared
//! [`ActionKey`] (see [`encode_action`]).
//!
//! Frames travel on their own socket, one credit-paced session per viewer (see
//! [`VideoRequest`]): a frame is only sent to a viewer that has room for it.
//!
//! Decoding never panics and never trusts sizes: every failure is a [`DecodeError`].

mod auth;
pub mod discover;
mod finite;
pub mod gate;
mod messages;
mod msgpack_check;
mod video;
mod wire;

pub use auth::{
    split_action_mac, verify_action, ActionKey, AuthError, KeyError, ACTION_KEY_BYTES, ACTION_MAC_BYTES,
};
pub use messages::*;
pub use video::{
    decode_video_refusal, decode_video_request, encode_video_refusal, encode_video_request,
    sign_video_request, Credit, KeyframeRequest, VideoHello, VideoRefusal, VideoRequest, CODEC_H264,
    CODEC_JPEG, CREDIT_TOPIC, HELLO_TOPIC, KEYFRAME_TOPIC, REFUSED_TOPIC,
};
pub use wire::{
    decode, decode_record, encode, encode_action, encode_record, peek_action_identity, ActionIdentity,
    DecodeError, Message, Topic, WireMessage,
};

/// Version of everything in this crate that goes on the wire or into a ring record.
/// 2: actions name the vehicle's run and expire on its run clock, `resume` no longer releases an
/// e-stop (`reset` does), heartbeats; frames moved from the PUB socket to the credit-paced
/// video socket (docs/protocol.md 8).
pub const PROTOCOL_VERSION: u16 = 2;

/// Default port of the vehicle's ZeroMQ PUB socket (detections, state, events, truth).
pub const DEFAULT_PUB_PORT: u16 = 5557;
/// Default port of the vehicle's ZeroMQ SUB socket (actions from viewers).
pub const DEFAULT_ACTION_PORT: u16 = 5558;
/// Default port of the vehicle's ZeroMQ ROUTER socket (video, one session per viewer).
pub const DEFAULT_VIDEO_PORT: u16 = 5559;
/// Default port of the viewer's web UI.
pub const DEFAULT_VIEWER_PORT: u16 = 8080;

/// Shared-memory ring the frame source writes and the detector reads.
pub const FRAMES_RING: &str = "frames";
/// Shared-memory ring the detector writes and the vehicle's control loop reads.
pub const DETECTIONS_RING: &str = "detections";
/// Largest detection record the `detections` ring carries.
pub const MAX_DETECTION_RECORD: u64 = 64 * 1024;

/// Largest action envelope the vehicle accepts: an action is a few hundred bytes, and
/// anything much larger is junk that must not be buffered, remembered or echoed.
pub const MAX_ACTION_BYTES: usize = 1024;
/// Longest action `id` and `sender`, in bytes; also the most of either echoed in an ack.
pub const MAX_ACTION_NAME_BYTES: usize = 64;

/// Largest envelope accepted (the second part of a message).
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
/// Largest binary payload accepted (a JPEG frame).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
