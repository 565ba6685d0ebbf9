//! The Foxglove WebSocket protocol (`foxglove.websocket.v1`, the subset a live viewer needs:
//! serverInfo, advertise, subscribe, unsubscribe, binary messageData), so the Foxglove app or
//! Lichtblick connects to the viewer live and shows the same channels and schemas as an
//! ads-record recording (the messages are made by the same `ads_record::channels`).
//!
//! It shares the viewer's own stream (`crate::fanout`: no session of its own on the vehicle),
//! subscribed only while a client is connected.
//! Access follows the viewer's rules: same-origin (or listed) pages only, and off loopback
//! the access token (`?token=`). Read-only: actions never come this way.
//!
//! Bounded like the web UI: served by [`crate::serve`] (header timeout, its own connection
//! cap `foxglove_max_connections`, which also caps its websocket clients),
//! `foxglove_max_subscriptions` per client, at most [`MAX_STATUSES`] statuses answered per
//! request, and a client that stops reading is dropped after [`SEND_TIMEOUT`].

use crate::access::AccessToken;
use crate::guard::Guard;
use crate::hub::Hub;
use ads_record::channels::{self, Channel, Entry};
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
/// Statuses answered to one request at most (then one saying how many more were refused).
pub const MAX_STATUSES: usize = 8;
/// A client that takes no message for this long is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message a client may send.
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
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
    /// One permit per connected client.
    clients: Arc<tokio::sync::Semaphore>,
    max_subscriptions: usize,
}

/// Who may connect, and how much one Foxglove server and each of its clients may take.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Page origins allowed besides none of its own (`foxglove_origins`).
    pub origins: Vec<String>,
    pub max_clients: usize,
    pub max_subscriptions: usize,
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
    hub: Arc<Hub>,
    access: Option<AccessToken>,
    guard: Arc<Guard>,
    shutdown: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) -> Router {
    let (feed, _) = broadcast::channel(BACKLOG);
    let sender = feed.clone();
    std::thread::Builder::new()
        .name("foxglove-feed".into())
        .spawn(move || {
            let mut source = None;
            while !stop.load(Ordering::Relaxed) {
                // Nothing taken from the link, nothing converted, while nobody listens.
                if sender.receiver_count() == 0 {
                    source = None;
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let messages = source.get_or_insert_with(|| hub.fanout.subscribe(BACKLOG));
                if let Ok(received) = messages.recv_timeout(Duration::from_millis(100)) {
                    for entry in channels::entries(&received) {
                        let _ = sender.send(Arc::new(entry));
                    }
                }
            }
        })
        .map_err(|e| tracing::error!("starting the Foxglove feed: {e}"))
        .ok();
    let state = FoxState {
        feed,
        access,
        origins: Arc::new(limits.origins),
        guard,
        shutdown,
        clients: Arc::new(tokio::sync::Semaphore::new(limits.max_clients)),
        max_subscriptions: limits.max_subscriptions,
    };
    Router::new().fallback(upgrade).with_state(state)
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
    // The spec's subprotocol or nothing: a 101 without it makes its clients abort.
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return (
            StatusCode::BAD_REQUEST,
            "this server speaks only the Foxglove WebSocket protocol: offer the subprotocol foxglove.websocket.v1",
        )
            .into_response();
    }
    let Ok(place) = Arc::clone(&state.clients).try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many Foxglove clients (foxglove_max_connections)")
            .into_response();
    };
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            client(socket, state).await;
            drop(place);
        })
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

/// A `status` message's level (the spec's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Warning = 1,
    Error = 2,
}

/// A `status` message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    level: Level,
    message: String,
}

impl Status {
    fn warning(message: String) -> Self {
        Status { level: Level::Warning, message }
    }

    fn error(message: String) -> Self {
        Status { level: Level::Error, message }
    }

    fn to_json(&self) -> String {
        json!({ "op": "status", "level": self.level as u8, "message": self.message }).to_string()
    }
}

/// One client's subscriptions, and the statuses the spec wants for requests that cannot be
/// honoured: a subscription to a channel that was never advertised, a second subscription to a
/// channel (or a subscription id in use), an unsubscription of an unknown id, an operation
/// this server does not offer. Such a request is ignored, never fatal. Pure logic.
#[derive(Debug)]
struct Subscriptions {
    /// channel id → subscription id
    by_channel: HashMap<u32, u32>,
    max: usize,
}

impl Subscriptions {
    fn new(max: usize) -> Self {
        Self { by_channel: HashMap::new(), max }
    }

    fn of(&self, channel: u32) -> Option<u32> {
        self.by_channel.get(&channel).copied()
    }

    /// A text message from the client; the statuses to send back, at most [`MAX_STATUSES`].
    fn handle(&mut self, text: &str) -> Vec<Status> {
        let mut statuses = self.handle_all(text);
        if statuses.len() > MAX_STATUSES {
            let more = statuses.len() - (MAX_STATUSES - 1);
            statuses.truncate(MAX_STATUSES - 1);
            statuses.push(Status::error(format!("{more} more requests of this message refused likewise")));
        }
        statuses
    }

    fn handle_all(&mut self, text: &str) -> Vec<Status> {
        match serde_json::from_str::<ClientOp>(text) {
            Ok(ClientOp::Subscribe { subscriptions }) => {
                subscriptions.into_iter().filter_map(|s| self.subscribe(s)).collect()
            }
            Ok(ClientOp::Unsubscribe { subscription_ids }) => {
                subscription_ids.into_iter().filter_map(|id| self.unsubscribe(id)).collect()
            }
            Ok(ClientOp::Unsupported) => {
                let op = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v["op"].as_str().map(str::to_string))
                    .unwrap_or_default();
                vec![Status::error(format!(
                    "operation {op:?} is not supported: this server offers subscribe and unsubscribe only \
                     (no capabilities)"
                ))]
            }
            Err(e) => vec![Status::error(format!("bad request: {e}"))],
        }
    }

    fn subscribe(&mut self, s: Subscription) -> Option<Status> {
        if !Channel::ALL.iter().any(|&c| channel_id(c) == s.channel_id) {
            return Some(Status::error(format!(
                "subscription {} ignored: there is no channel {} (see advertise)",
                s.id, s.channel_id
            )));
        }
        if let Some(existing) = self.of(s.channel_id) {
            return Some(Status::warning(format!(
                "subscription {} ignored: channel {} is already subscribed as subscription {existing}",
                s.id, s.channel_id
            )));
        }
        if let Some((channel, _)) = self.by_channel.iter().find(|(_, &id)| id == s.id) {
            return Some(Status::error(format!(
                "subscription {} to channel {} ignored: that subscription id is in use for channel {channel}",
                s.id, s.channel_id
            )));
        }
        if self.by_channel.len() >= self.max {
            return Some(Status::error(format!(
                "subscription {} ignored: a client holds at most {} subscriptions",
                s.id, self.max
            )));
        }
        self.by_channel.insert(s.channel_id, s.id);
        None
    }

    fn unsubscribe(&mut self, id: u32) -> Option<Status> {
        let before = self.by_channel.len();
        self.by_channel.retain(|_, s| *s != id);
        (self.by_channel.len() == before)
            .then(|| Status::warning(format!("unsubscribe ignored: no subscription {id}")))
    }
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
    let mut subscribed = Subscriptions::new(state.max_subscriptions);
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let statuses = match incoming {
                    Some(Ok(Message::Text(text))) => subscribed.handle(&text),
                    // Client publishing, services and the like are binary client messages.
                    Some(Ok(Message::Binary(_))) => vec![Status::error(
                        "binary client messages (publishing, service calls) are not supported".into(),
                    )],
                    Some(Ok(_)) => Vec::new(),
                    Some(Err(_)) | None => return,
                };
                for status in statuses {
                    if !send(&mut socket, Message::Text(status.to_json().into())).await {
                        return;
                    }
                }
            },
            entry = feed.recv() => match entry {
                Ok(entry) => {
                    let Some(subscription) = subscribed.of(channel_id(entry.channel)) else { continue };
                    if !send(&mut socket, Message::Binary(message_data(subscription, &entry).into())).await {
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

/// Sends one message; false when the client is gone or took nothing for [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await, Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribe(subscriptions: &mut Subscriptions, id: u32, channel: u32) -> Vec<Status> {
        subscriptions.handle(
            &json!({ "op": "subscribe", "subscriptions": [{ "id": id, "channelId": channel }] }).to_string(),
        )
    }

    #[test]
    fn a_subscription_is_taken_once_and_every_refusal_says_why() {
        let mut subs = Subscriptions::new(32);
        assert_eq!(subscribe(&mut subs, 7, 1), []);
        assert_eq!(subs.of(1), Some(7));

        let unknown = subscribe(&mut subs, 8, 99);
        assert_eq!(unknown[0].level, Level::Error);
        assert!(unknown[0].message.contains("no channel 99"), "{unknown:?}");

        let twice = subscribe(&mut subs, 9, 1);
        assert_eq!(twice[0].level, Level::Warning);
        assert!(twice[0].message.contains("already subscribed as subscription 7"), "{twice:?}");
        assert_eq!(subs.of(1), Some(7), "the first subscription keeps the channel");

        let id_in_use = subscribe(&mut subs, 7, 2);
        assert_eq!(id_in_use[0].level, Level::Error);
        assert_eq!(subs.of(2), None);

        let unsupported = subs.handle(r#"{"op":"getParameters","parameterNames":[]}"#);
        assert_eq!(unsupported[0].level, Level::Error);
        assert!(unsupported[0].message.contains("\"getParameters\" is not supported"), "{unsupported:?}");

        assert_eq!(subs.handle(r#"{"op":"unsubscribe","subscriptionIds":[7]}"#), []);
        assert_eq!(subs.of(1), None);
        assert_eq!(subs.handle(r#"{"op":"unsubscribe","subscriptionIds":[7]}"#)[0].level, Level::Warning);
        assert_eq!(subs.handle("not json")[0].level, Level::Error);
    }

    #[test]
    fn a_client_holds_a_bounded_number_of_subscriptions_and_gets_a_bounded_answer() {
        let mut subs = Subscriptions::new(2);
        assert_eq!(subscribe(&mut subs, 1, 1), []);
        assert_eq!(subscribe(&mut subs, 2, 2), []);
        let third = subscribe(&mut subs, 3, 3);
        assert!(third[0].message.contains("at most 2 subscriptions"), "{third:?}");
        assert_eq!(subs.by_channel.len(), 2);
        // A request with thousands of refused subscriptions gets a few statuses, not thousands.
        let many: Vec<_> = (0..5000).map(|i| json!({ "id": 100 + i, "channelId": 1000 + i })).collect();
        let answer = subs.handle(&json!({ "op": "subscribe", "subscriptions": many }).to_string());
        assert_eq!(answer.len(), MAX_STATUSES);
        assert!(answer[MAX_STATUSES - 1].message.contains("4993 more"), "{:?}", answer.last());
    }
}
