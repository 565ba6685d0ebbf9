//! The channels of a recording and how each vehicle message becomes MCAP messages.
//!
//! Every message is JSON (`message_encoding = "json"`, schemas as JSON Schema), so Foxglove
//! and Lichtblick show and plot it without plugins. Frames go twice, cheaply: the JPEG once as
//! a `foxglove.CompressedImage` (Foxglove's image panel), its metadata as `ads.Frame`.
//! Detections and truth also go as `foxglove.ImageAnnotations` drawn over the image.
//! Each raw record (`ads.*`) keeps the wire envelope, so a replay sends what the vehicle sent.

use crate::subscribe::Received;
use ads_protocol::{DetectedObject, Detections, LaneTruthMsg, LaneXs, Message};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A channel of a recording: its topic, schema and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Image,
    Frame,
    Detection,
    DetectionAnnotations,
    State,
    Event,
    Truth,
    TruthAnnotations,
    Controls,
}

impl Channel {
    pub const ALL: [Channel; 9] = [
        Channel::Image,
        Channel::Frame,
        Channel::Detection,
        Channel::DetectionAnnotations,
        Channel::State,
        Channel::Event,
        Channel::Truth,
        Channel::TruthAnnotations,
        Channel::Controls,
    ];

    pub const fn topic(self) -> &'static str {
        match self {
            Channel::Image => "/camera/image",
            Channel::Frame => "/frame",
            Channel::Detection => "/detection",
            Channel::DetectionAnnotations => "/detection/annotations",
            Channel::State => "/state",
            Channel::Event => "/event",
            Channel::Truth => "/truth",
            Channel::TruthAnnotations => "/truth/annotations",
            Channel::Controls => "/controls",
        }
    }

    pub const fn schema_name(self) -> &'static str {
        match self {
            Channel::Image => "foxglove.CompressedImage",
            Channel::DetectionAnnotations | Channel::TruthAnnotations => "foxglove.ImageAnnotations",
            Channel::Frame => "ads.Frame",
            Channel::Detection => "ads.Detections",
            Channel::State => "ads.VehicleState",
            Channel::Event => "ads.Event",
            Channel::Truth => "ads.LaneTruth",
            Channel::Controls => "ads.Controls",
        }
    }

    pub fn by_topic(topic: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.topic() == topic)
    }

    /// The JSON Schema text of this channel.
    pub fn schema(self) -> String {
        match self {
            Channel::Image => include_str!("../schemas/foxglove.CompressedImage.json").to_string(),
            Channel::DetectionAnnotations | Channel::TruthAnnotations => {
                include_str!("../schemas/foxglove.ImageAnnotations.json").to_string()
            }
            raw => raw_schema(raw.schema_name(), raw_description(raw)).to_string(),
        }
    }
}

fn raw_description(channel: Channel) -> &'static str {
    match channel {
        Channel::Frame => "Metadata of a frame on the ads `frame` topic (the JPEG is on /camera/image)",
        Channel::Detection => "An ads `detection` message: lanes, objects, timing (docs/protocol.md)",
        Channel::State => "An ads `state` message: pose, speed, controls, mode, health (docs/protocol.md)",
        Channel::Event => "An ads `event` message: acknowledgements and notices (docs/protocol.md)",
        Channel::Controls => {
            "An ads `controls` message: what the control loop commanded for a frame, the pilot mode and \
             the operator's drive command (docs/protocol.md)"
        }
        _ => "An ads `truth` message: the simulator's true lane lines (docs/protocol.md)",
    }
}

/// The raw records' schema: the wire envelope plus the body's fields as docs/protocol.md
/// defines them (kept open: a newer vehicle's extra fields are still valid).
fn raw_schema(name: &str, description: &str) -> Value {
    json!({
        "title": name,
        "description": description,
        "type": "object",
        "properties": {
            "envelope": {
                "type": "object",
                "properties": {
                    "vehicle": { "type": "string" },
                    "seq": { "type": "integer" },
                    "capture_ns": { "type": "integer" },
                    "send_ns": { "type": "integer" }
                }
            }
        }
    })
}

/// The wire envelope's header fields, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeMeta {
    pub vehicle: String,
    pub seq: u64,
    pub capture_ns: u64,
    pub send_ns: u64,
}

/// A raw record on an `ads.*` channel: the envelope and the body's own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded<B> {
    pub envelope: EnvelopeMeta,
    #[serde(flatten)]
    pub body: B,
}

/// One MCAP message to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub channel: Channel,
    /// Receive time.
    pub log_time: u64,
    /// Capture time.
    pub publish_time: u64,
    /// The wire sequence number.
    pub sequence: u32,
    pub data: Vec<u8>,
}

/// The MCAP messages for one received message (none for topics a vehicle never sends).
pub fn entries(received: &Received) -> Vec<Entry> {
    let envelope = EnvelopeMeta {
        vehicle: received.vehicle.clone(),
        seq: received.seq,
        capture_ns: received.capture_ns,
        send_ns: received.send_ns,
    };
    let entry = |channel, data| Entry {
        channel,
        log_time: received.recv_ns,
        publish_time: received.capture_ns,
        sequence: received.seq as u32,
        data,
    };
    let raw = |channel, body: &dyn erased::Body| entry(channel, body.record(&envelope));
    let capture = time(received.capture_ns);
    match &received.message {
        Message::Frame(info) => {
            let jpeg = received.payload.as_deref().unwrap_or_default();
            let image = json!({
                "timestamp": capture,
                "frame_id": "camera",
                "data": base64::engine::general_purpose::STANDARD.encode(jpeg),
                "format": "jpeg",
            });
            vec![raw(Channel::Frame, info), entry(Channel::Image, to_json(&image))]
        }
        Message::Detection(d) => vec![
            raw(Channel::Detection, d),
            entry(Channel::DetectionAnnotations, to_json(&detection_annotations(d, &capture))),
        ],
        Message::Truth(t) => vec![
            raw(Channel::Truth, t),
            entry(Channel::TruthAnnotations, to_json(&truth_annotations(t, &capture))),
        ],
        Message::State(s) => vec![raw(Channel::State, s)],
        Message::Event(e) => vec![raw(Channel::Event, e)],
        Message::Controls(c) => vec![raw(Channel::Controls, c)],
        Message::Action(_) => Vec::new(),
    }
}

/// Serialising bodies of different types through one closure.
mod erased {
    use super::{EnvelopeMeta, Recorded};

    pub trait Body {
        fn record(&self, envelope: &EnvelopeMeta) -> Vec<u8>;
    }

    impl<B: serde::Serialize> Body for B {
        fn record(&self, envelope: &EnvelopeMeta) -> Vec<u8> {
            super::to_json(&Recorded { envelope: envelope.clone(), body: self })
        }
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Plain structs of numbers and strings serialise infallibly; non-finite floats become null.
    serde_json::to_vec(value).unwrap_or_default()
}

fn time(ns: u64) -> Value {
    json!({ "sec": ns / 1_000_000_000, "nsec": ns % 1_000_000_000 })
}

fn color(r: f64, g: f64, b: f64) -> Value {
    json!({ "r": r, "g": g, "b": b, "a": 1.0 })
}

/// No fill: `fill_color` is required by the official schema, and a line has no inside.
fn transparent() -> Value {
    json!({ "r": 0.0, "g": 0.0, "b": 0.0, "a": 0.0 })
}

const LINE_LOOP: u8 = 2;
const LINE_STRIP: u8 = 3;

/// A lane line as a polyline through its visible samples; non-finite samples are left out.
fn lane_polyline(h_samples: &[u32], xs: &LaneXs, rgb: (f64, f64, f64), stamp: &Value) -> Option<Value> {
    let points: Vec<Value> = h_samples
        .iter()
        .zip(xs)
        .filter_map(|(&y, x)| x.filter(|x| x.is_finite()).map(|x| json!({ "x": x, "y": y })))
        .collect();
    (points.len() >= 2).then(|| {
        json!({
            "timestamp": stamp,
            "type": LINE_STRIP,
            "points": points,
            "outline_color": color(rgb.0, rgb.1, rgb.2),
            "outline_colors": [],
            "fill_color": transparent(),
            "thickness": 3.0,
        })
    })
}

fn object_box(object: &DetectedObject, stamp: &Value) -> Option<(Value, Value)> {
    let (x, y, w, h) = (object.x_px, object.y_px, object.w_px, object.h_px);
    if ![x, y, w, h].iter().all(|v| v.is_finite()) {
        return None;
    }
    let corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)];
    let outline = json!({
        "timestamp": stamp,
        "type": LINE_LOOP,
        "points": corners.iter().map(|(x, y)| json!({ "x": x, "y": y })).collect::<Vec<_>>(),
        "outline_color": color(1.0, 0.55, 0.0),
        "outline_colors": [],
        "fill_color": transparent(),
        "thickness": 2.0,
    });
    let label = json!({
        "timestamp": stamp,
        "position": { "x": x, "y": (y - 4.0).max(0.0) },
        "text": format!("{} {:.2}", object.class, object.score),
        "font_size": 14.0,
        "text_color": color(1.0, 1.0, 1.0),
        "background_color": { "r": 0.0, "g": 0.0, "b": 0.0, "a": 0.6 },
    });
    Some((outline, label))
}

pub fn detection_annotations(detections: &Detections, stamp: &Value) -> Value {
    let mut points = Vec::new();
    if let Some(lanes) = &detections.lanes {
        points.extend(lane_polyline(&lanes.h_samples, &lanes.left, (0.1, 0.9, 0.2), stamp));
        points.extend(lane_polyline(&lanes.h_samples, &lanes.right, (0.1, 0.6, 1.0), stamp));
    }
    let mut texts = Vec::new();
    for (outline, label) in detections.objects.iter().filter_map(|o| object_box(o, stamp)) {
        points.push(outline);
        texts.push(label);
    }
    json!({ "timestamp": stamp, "circles": [], "points": points, "texts": texts })
}

fn truth_annotations(truth: &LaneTruthMsg, stamp: &Value) -> Value {
    let points: Vec<Value> = truth
        .lanes
        .iter()
        .filter_map(|xs| lane_polyline(&truth.h_samples, xs, (1.0, 0.85, 0.0), stamp))
        .collect();
    json!({ "timestamp": stamp, "circles": [], "points": points, "texts": [] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ads_protocol::{Event, FrameInfo, NoticeLevel};

    fn received(message: Message, payload: Option<Vec<u8>>) -> Received {
        Received {
            recv_ns: 2_000_000_123,
            vehicle: "car".into(),
            seq: 7,
            capture_ns: 1_500_000_000,
            send_ns: 1_900_000_000,
            message,
            payload,
        }
    }

    #[test]
    fn a_frame_becomes_an_image_and_its_metadata() {
        let info = FrameInfo {
            frame_id: 42,
            width: 800,
            height: 600,
            quality: 80,
            encode_us: 900,
            tier: 0,
            goodput_kbps: 0,
            reduced: false,
            source_width: 800,
            source_height: 600,
            codec: ads_protocol::CODEC_JPEG.into(),
            keyframe: false,
        };
        let out = entries(&received(Message::Frame(info.clone()), Some(vec![0xff, 0xd8, 1, 2])));
        assert_eq!(out.iter().map(|e| e.channel).collect::<Vec<_>>(), [Channel::Frame, Channel::Image]);
        assert!(out.iter().all(|e| e.log_time == 2_000_000_123 && e.publish_time == 1_500_000_000));
        let image: Value = serde_json::from_slice(&out[1].data).unwrap();
        assert_eq!(image["format"], "jpeg");
        assert_eq!(image["timestamp"]["sec"], 1);
        assert_eq!(image["timestamp"]["nsec"], 500_000_000);
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(image["data"].as_str().unwrap()).unwrap(),
            [0xff, 0xd8, 1, 2]
        );
        let meta: Recorded<FrameInfo> = serde_json::from_slice(&out[0].data).unwrap();
        assert_eq!(meta.body, info);
        assert_eq!(meta.envelope.seq, 7);
    }

    #[test]
    fn events_round_trip_through_their_record() {
        let event = Event::Notice { level: NoticeLevel::Warning, text: "fail-safe".into() };
        let out = entries(&received(Message::Event(event.clone()), None));
        let back: Recorded<Event> = serde_json::from_slice(&out[0].data).unwrap();
        assert_eq!(back.body, event);
        assert_eq!(back.envelope.vehicle, "car");
    }

    #[test]
    fn annotations_skip_non_finite_geometry() {
        let detections = Detections {
            frame_id: 1,
            capture_ns: 0,
            detector: "dl".into(),
            processing_us: 0,
            read_ns: 0,
            control_read_ns: 0,
            lanes: None,
            objects: vec![
                DetectedObject {
                    class: "car".into(),
                    class_id: 2,
                    score: 0.9,
                    x_px: 10.0,
                    y_px: 20.0,
                    w_px: 30.0,
                    h_px: 40.0,
                },
                DetectedObject {
                    class: "bus".into(),
                    class_id: 5,
                    score: 0.9,
                    x_px: f32::NAN,
                    y_px: 0.0,
                    w_px: 1.0,
                    h_px: 1.0,
                },
            ],
        };
        let value = detection_annotations(&detections, &time(0));
        assert_eq!(value["points"].as_array().unwrap().len(), 1);
        assert_eq!(value["texts"][0]["text"], "car 0.90");
        assert_eq!(value["points"][0]["points"][2], json!({ "x": 40.0, "y": 60.0 }));
    }

    /// What the official schema (`@foxglove/schemas`, checked whole by viewer/tests/foxglove.rs)
    /// requires of every annotation: the message's and each annotation's timestamp, and a
    /// points annotation's per-point colours and fill.
    #[test]
    fn annotations_carry_every_field_the_official_schema_requires() {
        let official: Value = serde_json::from_str(&Channel::DetectionAnnotations.schema()).unwrap();
        let required = |kind: &str| -> Vec<String> {
            let items = &official["properties"][kind]["items"]["required"];
            items.as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
        };
        let detections = Detections {
            frame_id: 1,
            capture_ns: 0,
            detector: "dl".into(),
            processing_us: 0,
            read_ns: 0,
            control_read_ns: 0,
            lanes: Some(ads_protocol::LaneDetection {
                h_samples: vec![300, 400],
                left: vec![Some(100.0), Some(120.0)],
                right: vec![Some(600.0), Some(580.0)],
                left_confidence: 1.0,
                right_confidence: 1.0,
                lateral_offset_m: 0.0,
                heading_error_rad: 0.0,
                curvature_radius_m: None,
            }),
            objects: vec![DetectedObject {
                class: "car".into(),
                class_id: 2,
                score: 0.9,
                x_px: 10.0,
                y_px: 20.0,
                w_px: 30.0,
                h_px: 40.0,
            }],
        };
        let value = detection_annotations(&detections, &time(1_500_000_000));
        assert_eq!(value["timestamp"], json!({ "sec": 1, "nsec": 500_000_000 }));
        assert_eq!(value["points"].as_array().unwrap().len(), 3);
        for kind in ["points", "texts"] {
            for annotation in value[kind].as_array().unwrap() {
                for field in required(kind) {
                    assert!(
                        annotation.get(&field).is_some(),
                        "{kind} annotation without {field}: {annotation}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_schema_is_json_named_like_its_channel() {
        for channel in Channel::ALL {
            let schema: Value = serde_json::from_str(&channel.schema()).unwrap();
            assert_eq!(schema["title"], channel.schema_name());
            assert_eq!(Channel::by_topic(channel.topic()), Some(channel));
        }
    }
}
