//! One browser's websocket.
//!
//! Server → browser: binary frames `[u32 LE header length][header JSON][JPEG]` (header: ids,
//! times, this client's drop count and the overlay), and text JSON messages (`hello`, `state`,
//! `ack`, `notice`, `link`, `error`). Browser → server: text JSON `action`, `painted`,
//! `codecs`, `keyframe`, `presence` (the operator is there: the dead-man's source), and for
//! manual driving `take_control`, `release_control` and `drive` (see [`crate::teleop`]).
//!
//! Newest wins: frames and state come through `watch` channels, so while this browser is slow
//! to take a frame, newer ones replace it (and are counted as dropped for this client); other
//! clients and the vehicle link never wait for it.

use crate::actions::Outcome;
use crate::app_state::{AppState, ClientGuard};
use crate::command_check::{validate_command, RateLimit};
use crate::packet::wall_ns;
use crate::page::{to_text, FrameHeader, PageMessage};
use crate::teleop::DriveRate;
use ads_protocol::Command;
use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// A client that keeps exceeding the limit is disconnected after this many refusals.
const MAX_REFUSALS: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Action {
        #[serde(default)]
        request_id: String,
        command: Command,
    },
    /// Frames the browser painted since its last report: `[recv_ns, capture_ns, painted_ns]`
    /// each, `painted_ns` on its wall clock.
    Painted {
        samples: Vec<[u64; 3]>,
    },
    /// Codecs the page decodes (`jpeg` always; `h264` with WebCodecs in a secure context).
    Codecs {
        accept: Vec<String>,
    },
    /// The page's H.264 decoder failed: JPEG until the next keyframe.
    Keyframe {},
    /// The operator is there: the page is `visible` and had input `input_age_ms` ago. Sent
    /// every 250 ms; the operator heartbeat to the vehicle flows only while these arrive.
    Presence {
        visible: bool,
        input_age_ms: u64,
    },
    /// This browser drives from now on; whoever drove before watches.
    TakeControl {},
    ReleaseControl {},
    /// The operator's steering and throttle, -1..=1 each, sent at 25 Hz while a control is
    /// held; `t_ms`: the input's time on the page's wall clock (`Date.now()`), for latency.
    Drive {
        steering: f64,
        throttle: f64,
        #[serde(default)]
        t_ms: f64,
    },
}

/// Per-browser state of one websocket.
struct Client {
    id: u64,
    label: String,
    stream: crate::h264::BrowserStream,
    drive_rate: DriveRate,
    /// Counted among the browsers that decode H.264 (`Hub::note_h264_browser`).
    decodes_h264: bool,
}

/// Messages the general rate limit never refuses: an emergency stop (see
/// [`RateLimit::allow_command`]), and drive messages, which have a limit of their own
/// ([`DriveRate`], in [`handle`]) because they come at 25 Hz.
fn passes_general_limit(message: &ClientMessage) -> bool {
    matches!(
        message,
        ClientMessage::Action { command: Command::EmergencyStop, .. } | ClientMessage::Drive { .. }
    )
}

/// Serves one upgraded browser connection; `_place` is its counted place among
/// `max_clients`, held until it ends.
pub async fn serve(socket: WebSocket, state: AppState, _place: ClientGuard, peer: String) {
    let hub = state.hub.clone();
    let (mut tx, mut rx) = socket.split();
    let mut frames = hub.frames();
    let mut states = hub.states();
    let mut events = hub.events();
    let mut shutdown = state.shutdown.clone();
    let (hello, recent) = hub.hello();
    if tx.send(Message::Text(to_text(&hello).into())).await.is_err() {
        return;
    }
    let id = hub.register_client();
    let mut client = Client {
        id,
        label: format!("browser {id} ({peer})"),
        stream: Default::default(),
        drive_rate: DriveRate::default(),
        decodes_h264: false,
    };
    let you = to_text(&PageMessage::You { client: id, label: client.label.clone() });
    if tx.send(Message::Text(you.into())).await.is_err() {
        return;
    }
    for event in recent {
        if tx.send(Message::Text(event.text().as_ref().into())).await.is_err() {
            return;
        }
    }
    let mut last_packet: Option<u64> = None;
    let mut dropped = 0u64;
    let mut limit = RateLimit::default();
    let mut refusals = 0u32;
    loop {
        let outgoing = tokio::select! {
            changed = frames.changed() => {
                if changed.is_err() { break; }
                let Some(packet) = frames.borrow_and_update().clone() else { continue };
                let mut skipped = 0;
                if let Some(last) = last_packet {
                    skipped = packet.packet_seq.saturating_sub(last + 1);
                    dropped += skipped;
                    hub.metrics.frames_dropped_clients.fetch_add(skipped, Ordering::Relaxed);
                }
                last_packet = Some(packet.packet_seq);
                let (codec, payload, keyframe) = client.stream.choose(&packet, skipped, hub.keyframe_wish());
                let header = FrameHeader {
                    frame_id: packet.frame_id,
                    capture_ns: packet.capture_ns,
                    recv_ns: packet.recv_ns,
                    sent_ns: wall_ns(),
                    dropped,
                    codec,
                    keyframe,
                }
                .to_json(&packet.overlay_json);
                let mut bytes = Vec::with_capacity(4 + header.len() + payload.len());
                bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
                bytes.extend_from_slice(header.as_bytes());
                bytes.extend_from_slice(payload);
                Message::Binary(bytes.into())
            }
            changed = states.changed() => {
                if changed.is_err() { break; }
                let Some(state) = states.borrow_and_update().clone() else { continue };
                Message::Text(state.text().as_ref().into())
            }
            event = events.recv() => match event {
                Ok(event) => Message::Text(event.text().as_ref().into()),
                Err(RecvError::Lagged(n)) => {
                    hub.metrics.events_dropped_clients.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                Err(RecvError::Closed) => break,
            },
            incoming = rx.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => Some(text),
                    Some(Ok(Message::Binary(_))) => None,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                // Parsed once: what a message is decides which limit it is under.
                let parsed = text.map(|t| serde_json::from_str::<ClientMessage>(t.as_str()));
                let exempt = matches!(&parsed, Some(Ok(m)) if passes_general_limit(m));
                if !exempt && !limit.allow() {
                    refusals += 1;
                    if refusals > MAX_REFUSALS {
                        tracing::warn!("closing a websocket that keeps flooding");
                        break;
                    }
                    Message::Text(reply_error("too many messages; slow down"))
                } else {
                    match parsed {
                        Some(Ok(message)) => match handle(&state, &mut client, message) {
                            Some(reply) => Message::Text(to_text(&reply).into()),
                            None => continue,
                        },
                        Some(Err(e)) => Message::Text(reply_error(&format!("not understood: {e}"))),
                        None => Message::Text(reply_error("binary messages are not accepted; send JSON text")),
                    }
                }
            }
            _ = shutdown.changed() => break,
        };
        // A browser that stops reading must not hold its task forever.
        match tokio::time::timeout(Duration::from_secs(10), tx.send(outgoing)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    // A driver that leaves stops driving at once; the car stops when its lease runs out.
    hub.release_control(client.id);
    if client.decodes_h264 {
        hub.note_h264_browser(false);
    }
    let _ = tx.send(Message::Close(None)).await;
}

fn reply_error(detail: &str) -> axum::extract::ws::Utf8Bytes {
    to_text(&PageMessage::Error { detail: detail.to_string() }).into()
}

/// Handles one message from the browser; returns an immediate reply if there is one.
fn handle(state: &AppState, client: &mut Client, message: ClientMessage) -> Option<PageMessage> {
    match message {
        ClientMessage::Action { request_id, command } => {
            let command_label = crate::actions::command_label(&command);
            // Never sent, so no action id: the outcome names the request.
            let unsent = |request_id, status, detail| PageMessage::Ack {
                outcome: Outcome {
                    request_id,
                    action_id: String::new(),
                    command: command_label,
                    status,
                    reason: None,
                    detail,
                },
            };
            if let Err(e) = validate_command(&command, &request_id) {
                return Some(unsent(request_id, "rejected", e));
            }
            match state.hub.send_action(command, request_id.clone()) {
                Ok(action_id) => Some(PageMessage::Sent { request_id, action_id, command: command_label }),
                Err(e) => Some(unsent(request_id, "not_sent", e.to_string())),
            }
        }
        ClientMessage::Painted { samples } => {
            for [recv_ns, capture_ns, painted_ns] in samples {
                state.hub.on_painted(recv_ns, capture_ns, painted_ns);
            }
            None
        }
        ClientMessage::Codecs { accept } => {
            let decodes_h264 = accept.iter().any(|c| c == ads_protocol::CODEC_H264);
            if decodes_h264 != client.decodes_h264 {
                client.decodes_h264 = decodes_h264;
                state.hub.note_h264_browser(decodes_h264);
            }
            client.stream.set_accepts_h264(decodes_h264, state.hub.keyframe_wish());
            None
        }
        ClientMessage::Keyframe {} => {
            client.stream.resync(state.hub.keyframe_wish());
            None
        }
        ClientMessage::Presence { visible, input_age_ms } => {
            state.hub.note_presence(visible, input_age_ms, std::time::Instant::now());
            None
        }
        ClientMessage::TakeControl {} => {
            state.hub.take_control(client.id, &client.label);
            None
        }
        ClientMessage::ReleaseControl {} => {
            state.hub.release_control(client.id);
            None
        }
        ClientMessage::Drive { steering, throttle, t_ms } => {
            let releasing = steering == 0.0 && throttle == 0.0;
            if !client.drive_rate.allow(std::time::Instant::now(), releasing) {
                return None;
            }
            // The page's clock is this machine's when the browser runs here; a remote
            // browser's skew only shows in the latency figure.
            let issued_ns = if t_ms.is_finite() && t_ms > 0.0 { (t_ms * 1e6) as u64 } else { 0 };
            match state.hub.send_drive(client.id, steering, throttle, issued_ns) {
                Ok(()) => None,
                Err(e) => Some(PageMessage::DriveRefused { detail: e.to_string() }),
            }
        }
    }
}
