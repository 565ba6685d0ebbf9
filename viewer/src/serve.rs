//! The HTTP accept loop: hyper's HTTP/1 server with the limits `axum::serve` lacks. At most
//! `max_connections` connections are served at once (more are closed on accept, so a flood of
//! half-open requests cannot exhaust the process's file descriptors), a request's headers must
//! arrive within the request timeout (slowloris), and shutdown drains for a bounded time.

use crate::guard::LocalAddr;
use crate::hub::Hub;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;

/// How long open connections get to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Serves `app` on `listener` until `shutdown` completes, then drains for [`SHUTDOWN_GRACE`];
/// at most `max_connections` at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    hub: Arc<Hub>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let header_timeout = Duration::from_millis(hub.config.request_timeout_ms);
    let permits = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            hub.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let service = app.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            if let Some(local) = local {
                request.extensions_mut().insert(LocalAddr(local));
            }
            request
        });
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let connection = http
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} })
            .await;
    if drained.is_err() {
        tracing::warn!("{} connections still open after {SHUTDOWN_GRACE:?}; closing them", connections.len());
        connections.abort_all();
    }
}
