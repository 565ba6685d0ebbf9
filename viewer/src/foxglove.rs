//! The Foxglove WebSocket protocol (`foxglove.websocket.v1`, the subset a live viewer needs:
//! serverInfo, advertise, subscribe, unsubscribe, binary messageData), so the Foxglove app or
//! Lichtblick connects to the viewer live and shows the same channels and schemas as an
//! ads-record recording (the messages are made by the same `ads_record::channels`).
//!
//! It has its own subscription to the vehicle (`ads_record::subscribe`, the recorder's): the
//! viewer's hub and link are untouched, and the vehicle serves one more subscriber.
//! Access follows the viewer's rules: same-origin (or listed) pages only, and off loopback
//! the access token (`?token=`). Read-only: actions never come this way.

use crate::access::AccessToken;
use crate::guard::Guard;
use ads_record::channels::{self, Channel, Entry};
use ads_record::subscribe::{Next, VehicleStream};
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

pub const SUBPROTOCOL: &str = "foxglove.websocket.v1";
/// Messages a client may fall behind by before it skips (newest wins).
const BACKLOG: usize = 64;
const OP_MESSAGE_DATA: u8 = 0x01;

#[derive(Clone)]
struct FoxState {
    feed: broadcast::Sender<Arc<Entry>>,
    access: Option<AccessToken>,
    origins: Arc<Vec<String>>,
    /// The web UI's Host allowlist (DNS rebinding), applied here too.
    guard: Arc<Guard>,
    shutdown: watch::Receiver<bool>,
}

/// The channel ids this server advertises: 1.. in `Channel::ALL` order.
fn channel_id(channel: Channel) -> u32 {
    Channel::ALL.iter().position(|c| *c == channel).map_or(0, |i| i as u32 + 1)
}

fn advertise() -> String {
    let channels: Vec<_> = Channel::ALL
        .iter()
        .map(|&c| {
            json!({
                "id": channel_id(c),
                "topic": c.topic(),
                "encoding": "json",
                "schemaName": c.schema_name(),
                "schema": c.schema(),
                "schemaEncoding": "jsonschema",
            })
        })
        .collect();
    json!({ "op": "advertise", "channels": channels }).to_string()
}

/// Starts the vehicle subscription (a thread: ZeroMQ is blocking) and returns the router.
/// The thread ends when `stop` is set.
pub fn router(
    vehicle: &str,
    video: &str,
    access: Option<AccessToken>,
    origins: Vec<String>,
    guard: Arc<Guard>,
    shutdown: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
) -> Result<Router, ads_record::subscribe::SubscribeError> {
    let (feed, _) = broadcast::channel(BACKLOG);
    let mut stream = VehicleStream::connect(vehicle, video)?;
    let sender = feed.clone();
    std::thread::Builder::new()
        .name("foxglove-feed".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Next::Message(received) = stream.next(Duration::from_millis(100)) {
                    // Nothing to convert while nobody listens.
                    if sender.receiver_count() == 0 {
                        continue;
                    }
                    for entry in channels::entries(&received) {
                        let _ = sender.send(Arc::new(entry));
                    }
                }
            }
        })
        .map_err(|e| tracing::error!("starting the Foxglove feed: {e}"))
        .ok();
    let state = FoxState { feed, access, origins: Arc::new(origins), guard, shutdown };
    Ok(Router::new().fallback(upgrade).with_state(state))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn upgrade(
    State(state): State<FoxState>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !state.guard.host_allowed(host) {
        return (StatusCode::FORBIDDEN, "this Host is not allowed (see --allowed-host)").into_response();
    }
    // No Origin: not a browser (the Foxglove desktop app, a script). A browser page may
    // connect only from an origin listed in `foxglove_origins`: this port serves no page of
    // its own, so no origin is ours.
    let origin = headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or("null"));
    let listed = origin.is_none_or(|o| state.origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(o)));
    if !listed {
        return (StatusCode::FORBIDDEN, "websocket from another origin refused (see foxglove_origins)")
            .into_response();
    }
    if let Some(token) = &state.access {
        if !query.token.as_deref().is_some_and(|t| token.matches(t)) {
            return (StatusCode::UNAUTHORIZED, "this viewer needs its access token: ws://HOST:PORT/?token=…")
                .into_response();
        }
    }
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| client(socket, state))
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum ClientOp {
    Subscribe {
        subscriptions: Vec<Subscription>,
    },
    Unsubscribe {
        #[serde(rename = "subscriptionIds")]
        subscription_ids: Vec<u32>,
    },
    #[serde(other)]
    Unsupported,
}

#[derive(Debug, Deserialize)]
struct Subscription {
    id: u32,
    #[serde(rename = "channelId")]
    channel_id: u32,
}

fn message_data(subscription: u32, entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + entry.data.len());
    out.push(OP_MESSAGE_DATA);
    out.extend_from_slice(&subscription.to_le_bytes());
    out.extend_from_slice(&entry.log_time.to_le_bytes());
    out.extend_from_slice(&entry.data);
    out
}

async fn client(mut socket: WebSocket, state: FoxState) {
    let hello = json!({
        "op": "serverInfo",
        "name": "ads-viewer",
        "capabilities": [],
        "supportedEncodings": [],
        "metadata": {},
        "sessionId": ads_record::subscribe::wall_ns().to_string(),
    });
    if socket.send(Message::Text(hello.to_string().into())).await.is_err()
        || socket.send(Message::Text(advertise().into())).await.is_err()
    {
        return;
    }
    let mut feed = state.feed.subscribe();
    let mut shutdown = state.shutdown.clone();
    // channel id → subscription id
    let mut subscribed: HashMap<u32, u32> = HashMap::new();
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientOp>(&text) {
                    Ok(ClientOp::Subscribe { subscriptions }) => {
                        for s in subscriptions {
                            subscribed.insert(s.channel_id, s.id);
                        }
                    }
                    Ok(ClientOp::Unsubscribe { subscription_ids }) => {
                        subscribed.retain(|_, id| !subscription_ids.contains(id));
                    }
                    Ok(ClientOp::Unsupported) => {}
                    Err(e) => {
                        let status = json!({ "op": "status", "level": 2, "message": format!("bad request: {e}") });
                        if socket.send(Message::Text(status.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            entry = feed.recv() => match entry {
                Ok(entry) => {
                    let Some(&subscription) = subscribed.get(&channel_id(entry.channel)) else { continue };
                    if socket.send(Message::Binary(message_data(subscription, &entry).into())).await.is_err() {
                        return;
                    }
                }
                // A slow client skips what it missed: the newest message wins.
                Err(broadcast::error::RecvError::Lagged(skipped)) => tracing::trace!(skipped, "Foxglove client behind"),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}
