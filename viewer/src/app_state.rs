//! What every HTTP and websocket handler shares: [`AppState`] (the hub, the shutdown signal,
//! the access token, the MJPEG burn cache, the encode limit, the HTTP clients' rate limit),
//! and [`ClientGuard`], which counts a connected browser or MJPEG client for as long as it
//! lives. `web` (the router) and `ws` (one browser's socket) both build on it.

use crate::access::AccessToken;
use crate::command_check::RateLimit;
use crate::hub::Hub;
use crate::overlay::Layers;
use axum::body::Bytes;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub shutdown: watch::Receiver<bool>,
    /// `None`: no token needed (loopback without one configured).
    pub access: Option<AccessToken>,
    pub(crate) burned: Arc<Mutex<Option<BurnedFrame>>>,
    /// Bounds the snapshot / MJPEG encodes running at once (each decodes and encodes a frame).
    pub(crate) encodes: Arc<tokio::sync::Semaphore>,
    /// `/api/action` has no per-client socket; its clients share one bucket.
    pub(crate) http_actions: Arc<Mutex<RateLimit>>,
}

/// The last frame burned, shared by all MJPEG clients asking for the same layers.
#[derive(Debug)]
pub(crate) struct BurnedFrame {
    pub(crate) packet_seq: u64,
    pub(crate) layers: Layers,
    pub(crate) jpeg: Bytes,
}

impl AppState {
    pub fn new(hub: Arc<Hub>, shutdown: watch::Receiver<bool>) -> Self {
        let encodes = Arc::new(tokio::sync::Semaphore::new(hub.config.max_encodes));
        Self {
            hub,
            shutdown,
            access: None,
            burned: Arc::new(Mutex::new(None)),
            encodes,
            http_actions: Arc::new(Mutex::new(RateLimit::default())),
        }
    }

    pub fn with_access(mut self, access: Option<AccessToken>) -> Self {
        self.access = access;
        self
    }
}

/// Counts a connected client for as long as it lives.
#[derive(Debug)]
pub struct ClientGuard {
    hub: Arc<Hub>,
    mjpeg: bool,
}

impl ClientGuard {
    /// Takes one of the `max_clients` places, or `None` when all are taken. Check and count
    /// are one atomic step: a burst of upgrades each seeing a free place before any counted
    /// itself got more browsers in than the limit.
    pub fn try_new(hub: &Arc<Hub>, mjpeg: bool) -> Option<Self> {
        let gauge = if mjpeg { &hub.metrics.mjpeg_clients } else { &hub.metrics.clients };
        let max = u64::try_from(hub.config.max_clients).unwrap_or(u64::MAX);
        gauge.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Self { hub: Arc::clone(hub), mjpeg })
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let m = &self.hub.metrics;
        let gauge = if self.mjpeg { &m.mjpeg_clients } else { &m.clients };
        gauge.fetch_sub(1, Ordering::Relaxed);
    }
}
