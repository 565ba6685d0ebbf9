//! The page protocol: everything the server sends a browser as text, one typed enum
//! serialised in one place (the websocket edge, [`Outbound::text`]), once per message however
//! many browsers get it. Frames go as binary messages ([`FrameHeader`] then the picture).

use crate::actions::Outcome;
use crate::hub::{Hops, LinkStatus, Sample};
use crate::teleop::ControlView;
use crate::video::VideoLinkView;
use ads_protocol::{NoticeLevel, VehicleState};
use serde::Serialize;
use std::sync::{Arc, OnceLock};

/// A text message to the page (`type` tells which).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PageMessage {
    /// First on every websocket: who we watch, the link, the plots' history.
    Hello {
        vehicle: Option<String>,
        link: LinkStatus,
        sender: String,
        history: Vec<Sample>,
        control: ControlView,
        drive_lease_ms: u32,
    },
    /// This browser's number and name (for control).
    You {
        client: u64,
        label: String,
    },
    /// The vehicle's newest state and what the viewer measured with it.
    State(Box<StateReport>),
    /// The link changed; `back`: it is live again after being lost.
    Link {
        status: LinkStatus,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        back: bool,
    },
    Notice {
        level: NoticeLevel,
        text: String,
        t_ms: u64,
    },
    /// An action's outcome (accepted, rejected, unanswered, not_sent).
    Ack {
        outcome: Outcome,
    },
    /// An action went out; its `ack` follows.
    Sent {
        request_id: String,
        action_id: String,
        command: &'static str,
    },
    /// Who drives now.
    Control {
        control: ControlView,
    },
    DriveRefused {
        detail: String,
    },
    /// The browser's message was refused.
    Error {
        detail: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct StateReport {
    pub state: VehicleState,
    /// When the vehicle sent it (its wall clock), ns.
    pub sent_ns: u64,
    pub sample: Sample,
    pub hops: Hops,
    pub video: VideoLinkView,
    pub viewer: ViewerCounts,
}

/// The viewer's own counters shown with each state.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ViewerCounts {
    pub frames_received: u64,
    pub frames_missed: u64,
    pub frames_dropped_clients: u64,
    pub clients: u64,
}

/// A message on its way to any number of pages: typed until a websocket sends it, then
/// serialised once for all of them.
#[derive(Debug)]
pub struct Outbound {
    pub message: PageMessage,
    text: OnceLock<Arc<str>>,
}

impl Outbound {
    pub fn new(message: PageMessage) -> Arc<Self> {
        Arc::new(Self { message, text: OnceLock::new() })
    }

    /// The message as JSON text.
    pub fn text(&self) -> Arc<str> {
        Arc::clone(self.text.get_or_init(|| to_text(&self.message).into()))
    }
}

/// One message as JSON text (for replies that go to a single page).
pub fn to_text(message: &PageMessage) -> String {
    // Every field is plain data; serialising cannot fail.
    serde_json::to_string(message).unwrap_or_else(|e| format!("{{\"type\":\"error\",\"detail\":\"{e}\"}}"))
}

/// The header of a binary frame message: `[u32 LE header length][header JSON][picture]`.
#[derive(Debug, Serialize)]
pub struct FrameHeader {
    pub frame_id: u64,
    pub capture_ns: u64,
    pub recv_ns: u64,
    pub sent_ns: u64,
    /// Frames this browser missed so far (newest wins).
    pub dropped: u64,
    pub codec: &'static str,
    pub keyframe: bool,
}

impl FrameHeader {
    /// The header as JSON with `overlay` (already JSON: serialised once per frame for all
    /// browsers) as its `overlay` field.
    pub fn to_json(&self, overlay_json: &str) -> String {
        let mut text = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        text.pop(); // the closing brace
        if !text.ends_with('{') {
            text.push(',');
        }
        text.push_str("\"overlay\":");
        text.push_str(overlay_json);
        text.push('}');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_type_and_are_serialised_once() {
        let out = Outbound::new(PageMessage::Link { status: LinkStatus::Live, back: true });
        let text = out.text();
        assert_eq!(&*text, r#"{"type":"link","status":"live","back":true}"#);
        assert!(Arc::ptr_eq(&text, &out.text()), "serialised again");
        let plain = to_text(&PageMessage::Link { status: LinkStatus::Lost, back: false });
        assert_eq!(plain, r#"{"type":"link","status":"lost"}"#);
        let error = to_text(&PageMessage::DriveRefused { detail: "no".into() });
        assert_eq!(error, r#"{"type":"drive_refused","detail":"no"}"#);
        let header = FrameHeader {
            frame_id: 1,
            capture_ns: 2,
            recv_ns: 3,
            sent_ns: 4,
            dropped: 0,
            codec: "jpeg",
            keyframe: true,
        };
        let parsed: serde_json::Value = serde_json::from_str(&header.to_json(r#"{"boxes":[]}"#)).unwrap();
        assert_eq!((parsed["frame_id"].as_u64(), parsed["overlay"]["boxes"].is_array()), (Some(1), true));
    }
}
