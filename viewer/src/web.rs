//! The HTTP side: the page and its assets (embedded), the websocket, the MJPEG stream and
//! snapshot, health and metrics, and a JSON endpoint for actions.

use crate::access;
use crate::actions::{ActionStatus, Outcome};
use crate::app_state::{AppState, BurnedFrame, ClientGuard};
use crate::burn;
use crate::command_check::validate_command;
use crate::guard::{self, Guard};
use crate::hub::{FramePacket, LinkStatus};
use crate::overlay::Layers;
use crate::page::PageMessage;
use crate::ws;
use ads_protocol::Command;
use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const DRIVE_JS: &str = include_str!("../assets/drive.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Largest request body or websocket message a client may send.
pub const MAX_CLIENT_MESSAGE: usize = 4096;

pub fn router(state: AppState) -> Router {
    let guard = Guard::new(Arc::clone(&state.hub));
    Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML) }))
        .route(
            "/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }),
        )
        .route(
            "/drive.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], DRIVE_JS) }),
        )
        .route("/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }))
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/snapshot.jpg", get(snapshot))
        .route("/stream.mjpg", get(stream))
        .route("/api/action", post(action))
        .route("/api/action/{id}", get(action_status))
        .route("/api/session", get(|| async { Json(json!({"ok": true})) }))
        .merge(crate::recording::routes(&state.hub))
        .merge(crate::calibrate::routes())
        .layer(DefaultBodyLimit::max(MAX_CLIENT_MESSAGE))
        .layer(axum::middleware::from_fn_with_state(state.access.clone(), access::require_token))
        // Outermost: a refused Host or origin learns nothing else, not even whether a token is needed.
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
        .with_state(state)
}

fn error(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, Json(json!({"error": detail.into()}))).into_response()
}

/// The upgrade's Origin was checked by the guard (never against Host).
async fn websocket(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    // The place is taken before the answer, not once the upgraded connection runs.
    let Some(guard) = ClientGuard::try_new(&state.hub, false) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many browsers connected to this viewer");
    };
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| ws::serve(socket, state, guard, browser_name(&headers)))
}

/// A short name for the browser, to tell people who drives: its engine from `User-Agent`.
fn browser_name(headers: &axum::http::HeaderMap) -> String {
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let known = ["Edg/", "Firefox/", "Chrome/", "Safari/"];
    let name = known.iter().find(|k| agent.contains(*k)).map_or("unknown", |k| k.trim_end_matches('/'));
    let mobile = if agent.contains("Mobile") { ", mobile" } else { "" };
    format!("{name}{mobile}")
}

async fn healthz(State(state): State<AppState>) -> Response {
    let link = state.hub.link();
    let m = &state.hub.metrics;
    Json(json!({
        "status": "ok",
        "vehicle_link": link,
        "frames_received": m.frames_received.load(Ordering::Relaxed),
        "clients": m.clients.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.hub.metrics.render(state.hub.link() == LinkStatus::Live);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerQuery {
    layers: Option<String>,
}

impl LayerQuery {
    fn layers(&self) -> Result<Layers, String> {
        self.layers.as_deref().map_or(Ok(Layers::default()), Layers::parse)
    }
}

/// The frame with `layers` burned in, from the cache or encoded now. `wait`: queue for an
/// encoder (MJPEG) rather than answer "busy" (snapshots).
async fn burned(
    state: &AppState,
    packet: Arc<FramePacket>,
    layers: Layers,
    wait: bool,
) -> Result<Bytes, String> {
    if let Some(hit) = state.burned.lock().ok().and_then(|cache| {
        cache
            .as_ref()
            .filter(|b| b.packet_seq == packet.packet_seq && b.layers == layers)
            .map(|b| b.jpeg.clone())
    }) {
        return Ok(hit);
    }
    let permit = if wait {
        Arc::clone(&state.encodes).acquire_owned().await.map_err(|e| e.to_string())?
    } else {
        Arc::clone(&state.encodes).try_acquire_owned().map_err(|_| BUSY.to_string())?
    };
    let (quality, max_pixels) = (state.hub.config.mjpeg_quality, state.hub.config.max_frame_pixels);
    let seq = packet.packet_seq;
    let jpeg = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        burn::burn(packet.jpeg.bytes(), &packet.overlay, layers, quality, max_pixels)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let jpeg = Bytes::from(jpeg);
    if let Ok(mut cache) = state.burned.lock() {
        *cache = Some(BurnedFrame { packet_seq: seq, layers, jpeg: jpeg.clone() });
    }
    Ok(jpeg)
}

async fn snapshot(State(state): State<AppState>, Query(query): Query<LayerQuery>) -> Response {
    let layers = match query.layers() {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(packet) = state.hub.frames().borrow().clone() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no frame from the vehicle yet");
    };
    match burned(&state, packet, layers, false).await {
        Ok(jpeg) => ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], jpeg)
            .into_response(),
        Err(e) if e == BUSY => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

const BUSY: &str = "every encoder is busy; try again";

const BOUNDARY: &str = "adsframe";

async fn stream(State(state): State<AppState>, Query(query): Query<LayerQuery>) -> Response {
    let layers = match query.layers() {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(guard) = ClientGuard::try_new(&state.hub, true) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many MJPEG clients connected to this viewer");
    };
    let frames = state.hub.frames();
    let parts =
        futures_util::stream::unfold((state, frames, guard), move |(state, mut frames, guard)| async move {
            let mut shutdown = state.shutdown.clone();
            loop {
                tokio::select! {
                    changed = frames.changed() => changed.ok()?,
                    _ = shutdown.changed() => return None,
                }
                let Some(packet) = frames.borrow_and_update().clone() else { continue };
                match burned(&state, packet, layers, true).await {
                    Ok(jpeg) => {
                        let mut part = format!(
                            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                            jpeg.len()
                        )
                        .into_bytes();
                        part.extend_from_slice(&jpeg);
                        part.extend_from_slice(b"\r\n");
                        return Some((
                            Ok::<_, std::convert::Infallible>(Bytes::from(part)),
                            (state, frames, guard),
                        ));
                    }
                    Err(e) => tracing::warn!("burning overlays into a frame: {e}"),
                }
            }
        });
    (
        [
            (header::CONTENT_TYPE, format!("multipart/x-mixed-replace; boundary={BOUNDARY}")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(parts),
    )
        .into_response()
}

/// An action from a browser or any HTTP client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub command: Command,
    #[serde(default)]
    pub request_id: String,
}

async fn action(State(state): State<AppState>, body: Bytes) -> Response {
    let request: ActionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not an action: {e}")),
    };
    if let Err(e) = validate_command(&request.command, &request.request_id) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, e);
    }
    let allowed = state
        .http_actions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .allow_command(&request.command);
    if !allowed {
        return error(StatusCode::TOO_MANY_REQUESTS, "too many actions; slow down");
    }
    let estop = request.command == Command::EmergencyStop;
    // Listen before sending, so a fast acknowledgement cannot slip past.
    let mut events = state.hub.events();
    let action_id = match state.hub.send_action(request.command, request.request_id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    // The hub reports an action's outcome (accepted, rejected or unanswered) within the
    // acknowledgement timeout; an e-stop is never given up, and is answered as pending.
    let deadline = std::time::Duration::from_millis(state.hub.config.ack_timeout_ms);
    let outcome = tokio::time::timeout(deadline, async {
        loop {
            match events.recv().await {
                Ok(event) => match &event.message {
                    PageMessage::Ack { outcome } if outcome.action_id == action_id => {
                        return Some(outcome.clone());
                    }
                    _ => {}
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await;
    match outcome {
        Ok(Some(outcome)) => outcome_response(outcome),
        Ok(None) => error(StatusCode::SERVICE_UNAVAILABLE, "the viewer is shutting down"),
        // Still sent again and again (an e-stop always is, until confirmed); or decided
        // just now.
        Err(_) => match state.hub.action_status(&action_id) {
            Some(status) => status_response(&action_id, status, estop),
            None => error(StatusCode::GATEWAY_TIMEOUT, format!("no outcome for action {action_id}")),
        },
    }
}

/// An outcome: 200 accepted, 409 rejected, 504 unanswered.
fn outcome_response(outcome: Outcome) -> Response {
    let status = match outcome.status {
        "accepted" => StatusCode::OK,
        "rejected" => StatusCode::CONFLICT,
        _ => StatusCode::GATEWAY_TIMEOUT,
    };
    (status, Json(outcome)).into_response()
}

/// Where an action stands: `202 {"status":"pending","id":…}` while it is still retransmitted,
/// then its outcome.
fn status_response(action_id: &str, status: ActionStatus, estop: bool) -> Response {
    match status {
        ActionStatus::Decided(outcome) => outcome_response(outcome),
        ActionStatus::Pending { request_id, command, transmissions } => {
            let detail = if estop {
                "not confirmed yet; the viewer keeps sending it until the vehicle does"
            } else {
                "no answer yet; the viewer keeps sending it until the vehicle answers or it expires"
            };
            let body = json!({
                "status": "pending",
                "id": action_id,
                "request_id": request_id,
                "command": command,
                "transmissions": transmissions,
                "detail": format!("{command} {action_id} {detail}; GET /api/action/{action_id} tells its outcome"),
            });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
    }
}

/// `GET /api/action/{id}`: an action's outcome, or `202 pending`; 404 when the viewer does
/// not know it (not its own, or older than its last 256 outcomes).
async fn action_status(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.hub.action_status(&id) {
        Some(status) => {
            let estop = matches!(&status, ActionStatus::Pending { command: "emergency_stop", .. });
            status_response(&id, status, estop)
        }
        None => error(StatusCode::NOT_FOUND, format!("no action {id} among this viewer's recent ones")),
    }
}
