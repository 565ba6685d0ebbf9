//! The video link: frames go to each viewer on its own connection (the vehicle's ROUTER
//! socket), paced by credits the viewer returns, so no frame ever queues on the way.
//!
//! A client connects a DEALER, sends [`VideoRequest::Hello`] (and again every second: it keeps
//! the session alive), then one [`VideoRequest::Credit`] for every frame it receives. The
//! vehicle sends `[b"frame", envelope, jpeg]` (decoded with [`crate::decode`]) only while the
//! client holds a credit. `docs/protocol.md` section 2.1 is the same contract in words.

use crate::wire::{DecodeError, Envelope};
use crate::{MAX_ENVELOPE_BYTES, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};

/// Codec names in a hello and in [`crate::FrameInfo::codec`]: every vehicle speaks JPEG.
pub const CODEC_JPEG: &str = "jpeg";
/// H.264, constrained baseline, one Annex B access unit per frame (`docs/protocol.md` 2.2).
pub const CODEC_H264: &str = "h264";

/// Topic of a hello, client → vehicle.
pub const HELLO_TOPIC: &str = "hello";
/// Topic of a credit, client → vehicle.
pub const CREDIT_TOPIC: &str = "credit";
/// Topic of a keyframe request, client → vehicle (H.264 sessions).
pub const KEYFRAME_TOPIC: &str = "keyframe";

/// Topic of a refusal, vehicle → client: the session was not opened, or was closed.
pub const REFUSED_TOPIC: &str = "refused";

/// Vehicle → client: why a hello got no session, or why a session was closed to make room.
/// `[b"refused", envelope]`; after it, the vehicle sends that connection nothing more until
/// a hello that gets a place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoRefusal {
    /// Machine-readable: `full` (every place taken by sessions that may not be displaced),
    /// `peer_cap` (this address holds `link.max_sessions_per_peer` sessions), `bad_mac` (a
    /// signed hello whose MAC does not match), `codec` (no codec this vehicle speaks),
    /// `displaced` (this session was idle and a new hello took its place).
    pub reason: String,
    /// The same for people, with the limit that applied.
    pub detail: String,
}

/// The two parts of a refusal: `[b"refused", envelope]`.
pub fn encode_video_refusal(vehicle: &str, seq: u64, now_ns: u64, refusal: &VideoRefusal) -> Vec<Vec<u8>> {
    let envelope = Envelope {
        v: PROTOCOL_VERSION,
        vehicle: vehicle.to_string(),
        seq,
        capture_ns: now_ns,
        send_ns: now_ns,
        body: refusal,
    };
    vec![REFUSED_TOPIC.as_bytes().to_vec(), rmp_serde::to_vec_named(&envelope).unwrap_or_default()]
}

/// Decodes a refusal (the parts a DEALER receives). Never panics.
pub fn decode_video_refusal(parts: &[&[u8]]) -> Result<VideoRefusal, DecodeError> {
    let [topic, envelope] = parts else { return Err(DecodeError::PartCount(parts.len())) };
    if *topic != REFUSED_TOPIC.as_bytes() {
        return Err(DecodeError::UnknownTopic(String::from_utf8_lossy(topic).chars().take(64).collect()));
    }
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(DecodeError::TooLarge { part: "envelope", len: envelope.len(), max: MAX_ENVELOPE_BYTES });
    }
    let malformed = |reason: String| DecodeError::Malformed { topic: REFUSED_TOPIC, reason };
    crate::msgpack_check::check(envelope).map_err(malformed)?;
    let e: Envelope<VideoRefusal> = rmp_serde::from_slice(envelope).map_err(|e| malformed(e.to_string()))?;
    Ok(e.body)
}

/// Signs a request made by [`encode_video_request`] (a hello): appends the HMAC-SHA256 of its
/// envelope under the action key as a third part, as an action is signed (`docs/protocol.md`
/// 2.1).
pub fn sign_video_request(parts: &mut Vec<Vec<u8>>, key: &crate::ActionKey) {
    if let Some(envelope) = parts.get(1) {
        let mac = key.mac(envelope);
        parts.push(mac.to_vec());
    }
}

/// Client → vehicle: start or keep a video session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoHello {
    /// Codec wanted; [`CODEC_JPEG`] (a hello for a codec the vehicle lacks gets no frames).
    pub codec: String,
    /// Codecs the client accepts, best first (added within v2): the vehicle uses the first it
    /// speaks and allows, else `codec`. Empty: `codec` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codecs: Vec<String>,
    /// The client's own cap on its video, kbit/s (a metered link); `None`: the vehicle's cap.
    /// It can only lower the vehicle's configured cap, never raise it.
    #[serde(default)]
    pub max_kbps: Option<u32>,
    /// Every frame at the top of the vehicle's ladder (its full picture: `link.scale_max`,
    /// `link.quality_max`), the frame rate adapting to the link instead of the size (added
    /// within v2; JPEG sessions). For a recorder, which wants every image whole more than it
    /// wants many. `false` (absent): the tier adapts as well.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_size: bool,
}

/// Client → vehicle: one frame received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// The frame received (its `FrameInfo.frame_id`).
    pub frame_id: u64,
    /// Bytes of its JPEG as received (checked against what was sent; never trusted).
    pub bytes: u32,
}

/// Client → vehicle: the H.264 stream cannot be decoded (a frame lost, skipped or corrupt):
/// send a keyframe. Rate-limited by the vehicle; meaningless for JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyframeRequest {
    /// The last frame the client decoded (0: none); informational.
    #[serde(default)]
    pub after_frame_id: u64,
}

/// A message a client sends on the video socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoRequest {
    Hello(VideoHello),
    Credit(Credit),
    Keyframe(KeyframeRequest),
}

impl VideoRequest {
    pub const fn topic(&self) -> &'static str {
        match self {
            VideoRequest::Hello(_) => HELLO_TOPIC,
            VideoRequest::Credit(_) => CREDIT_TOPIC,
            VideoRequest::Keyframe(_) => KEYFRAME_TOPIC,
        }
    }
}

/// The two parts a client sends: `[topic, envelope]`.
pub fn encode_video_request(vehicle: &str, seq: u64, now_ns: u64, request: &VideoRequest) -> Vec<Vec<u8>> {
    fn pack<B: Serialize>(vehicle: &str, seq: u64, now_ns: u64, body: &B) -> Vec<u8> {
        let envelope = Envelope {
            v: PROTOCOL_VERSION,
            vehicle: vehicle.to_string(),
            seq,
            capture_ns: now_ns,
            send_ns: now_ns,
            body,
        };
        rmp_serde::to_vec_named(&envelope).unwrap_or_default()
    }
    let envelope = match request {
        VideoRequest::Hello(b) => pack(vehicle, seq, now_ns, b),
        VideoRequest::Credit(b) => pack(vehicle, seq, now_ns, b),
        VideoRequest::Keyframe(b) => pack(vehicle, seq, now_ns, b),
    };
    vec![request.topic().as_bytes().to_vec(), envelope]
}

/// Decodes what a client sent (the parts after the ROUTER's routing id). Never panics.
pub fn decode_video_request(parts: &[&[u8]]) -> Result<VideoRequest, DecodeError> {
    let [topic, envelope] = parts else { return Err(DecodeError::PartCount(parts.len())) };
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(DecodeError::TooLarge { part: "envelope", len: envelope.len(), max: MAX_ENVELOPE_BYTES });
    }
    let name: &'static str = match *topic {
        b"hello" => HELLO_TOPIC,
        b"credit" => CREDIT_TOPIC,
        b"keyframe" => KEYFRAME_TOPIC,
        other => {
            let shown: String = String::from_utf8_lossy(other).chars().take(64).collect();
            return Err(DecodeError::UnknownTopic(shown));
        }
    };
    let malformed =
        |e: rmp_serde::decode::Error| DecodeError::Malformed { topic: name, reason: e.to_string() };
    crate::msgpack_check::check(envelope).map_err(|reason| DecodeError::Malformed { topic: name, reason })?;
    let version: crate::wire::VersionOnly = rmp_serde::from_slice(envelope).map_err(malformed)?;
    if version.v != PROTOCOL_VERSION {
        return Err(DecodeError::Version { got: version.v });
    }
    Ok(if name == HELLO_TOPIC {
        let e: Envelope<VideoHello> = rmp_serde::from_slice(envelope).map_err(malformed)?;
        VideoRequest::Hello(e.body)
    } else if name == KEYFRAME_TOPIC {
        let e: Envelope<KeyframeRequest> = rmp_serde::from_slice(envelope).map_err(malformed)?;
        VideoRequest::Keyframe(e.body)
    } else {
        let e: Envelope<Credit> = rmp_serde::from_slice(envelope).map_err(malformed)?;
        VideoRequest::Credit(e.body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_an_error() {
        let hello = VideoRequest::Hello(VideoHello {
            codec: CODEC_JPEG.into(),
            codecs: vec![],
            max_kbps: Some(900),
            full_size: false,
        });
        let both = VideoHello {
            codec: CODEC_JPEG.into(),
            codecs: vec![CODEC_H264.into(), CODEC_JPEG.into()],
            max_kbps: None,
            full_size: true,
        };
        let credit = VideoRequest::Credit(Credit { frame_id: 42, bytes: 12_345 });
        let key = VideoRequest::Keyframe(KeyframeRequest { after_frame_id: 7 });
        for request in [hello, VideoRequest::Hello(both), credit, key] {
            let parts = encode_video_request("car", 3, 7, &request);
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            assert_eq!(decode_video_request(&refs), Ok(request));
        }
        assert_eq!(decode_video_request(&[b"credit"]), Err(DecodeError::PartCount(1)));
        assert!(matches!(decode_video_request(&[b"more", b"\x80"]), Err(DecodeError::UnknownTopic(_))));
        assert!(matches!(decode_video_request(&[b"credit", b"\xc1"]), Err(DecodeError::Malformed { .. })));
        // A credit without its fields, and a hello from another protocol version.
        let empty = rmp_serde::to_vec_named(&Envelope {
            v: PROTOCOL_VERSION,
            vehicle: String::new(),
            seq: 0,
            capture_ns: 0,
            send_ns: 0,
            body: std::collections::BTreeMap::<String, u8>::new(),
        })
        .unwrap();
        assert!(matches!(decode_video_request(&[b"credit", &empty]), Err(DecodeError::Malformed { .. })));
        let mut old =
            encode_video_request("car", 1, 1, &VideoRequest::Credit(Credit { frame_id: 1, bytes: 1 }));
        let at = old[1].windows(2).position(|w| w == [0xa1, b'v']).unwrap() + 2;
        old[1][at] = 1;
        let refs: Vec<&[u8]> = old.iter().map(Vec::as_slice).collect();
        assert_eq!(decode_video_request(&refs), Err(DecodeError::Version { got: 1 }));
    }

    #[test]
    fn refusals_round_trip_and_a_signed_hello_carries_the_mac_of_its_envelope() {
        let refusal = VideoRefusal { reason: "full".into(), detail: "8 of 8".into() };
        let parts = encode_video_refusal("car", 1, 2, &refusal);
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(decode_video_refusal(&refs), Ok(refusal));
        assert!(decode_video_refusal(&[b"frame", &parts[1]]).is_err());
        let key = crate::ActionKey::from_hex(&"ab".repeat(32)).unwrap();
        let hello = VideoHello { codec: CODEC_JPEG.into(), codecs: vec![], max_kbps: None, full_size: false };
        let mut parts = encode_video_request("car", 1, 2, &VideoRequest::Hello(hello));
        sign_video_request(&mut parts, &key);
        assert_eq!(parts.len(), 3);
        assert_eq!(key.verify(&parts[1], &parts[2]), Ok(()));
    }
}
