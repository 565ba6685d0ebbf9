//! ads-viewer: the laptop side. Subscribes to a vehicle's ZeroMQ stream, computes the
//! overlays here (not on the vehicle), and serves a web UI with live video, telemetry and the
//! operator's buttons, whose actions go back to the vehicle.
//!
//! Never touches shared memory: everything comes over the network, so it runs anywhere that
//! can reach the vehicle's ports.

pub mod access;
pub mod actions;
pub mod app_state;
pub mod burn;
pub mod calibrate;
pub mod command_check;
pub mod config;
pub mod fanout;
pub mod foxglove;
pub mod freshness;
pub mod guard;
pub mod h264;
pub mod hub;
pub mod link;
pub mod metrics;
pub mod overlay;
pub mod packet;
pub mod page;
pub mod raster;
pub mod recording;
pub mod serve;
pub mod teleop;
pub mod video;
pub mod web;
mod ws;

use anyhow::Context as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, clap::Parser)]
#[command(name = "ads-viewer", version, about = "Watch and command an ads vehicle from a browser")]
pub struct Args {
    #[command(flatten)]
    pub overrides: config::Overrides,
}

/// Runs until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = config::ViewerConfig::load(&args.overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("viewer-web")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(config));
    // Blocking tasks (an encode, say) must not keep the process alive after SIGTERM.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

async fn serve(config: config::ViewerConfig) -> anyhow::Result<()> {
    let address = std::net::SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address} (is another viewer using the port? try --port)"))?;
    let action_key = match &config.action_key {
        Some(path) => Some(
            ads_protocol::ActionKey::load(path)
                .with_context(|| format!("loading the action key {}", path.display()))?,
        ),
        None => {
            tracing::warn!(
                "no --action-key: actions are unsigned and only a vehicle on loopback accepts them"
            );
            None
        }
    };
    let (hub, actions_rx) = hub::Hub::new(config, action_key);
    let link_stop = Arc::new(AtomicBool::new(false));
    let link = link::spawn(Arc::clone(&hub), actions_rx, Arc::clone(&link_stop))?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let local = listener.local_addr()?;
    let access = match (&hub.config.access_token, local.ip().is_loopback()) {
        (Some(token), _) => Some(access::AccessToken::new(token)?),
        (None, true) => None,
        (None, false) => Some(access::AccessToken::generate()?),
    };
    let app = web::router(
        app_state::AppState::new(Arc::clone(&hub), shutdown_rx.clone()).with_access(access.clone()),
    );
    tracing::info!("web UI on http://{local}/ (watching {})", hub.config.vehicle);
    match (&access, local.ip().is_loopback()) {
        (Some(token), false) if hub.config.access_token.is_none() => {
            // Printed, not logged at a filterable level: the operator needs it to get in.
            eprintln!(
                "\n  web UI access token: {}\n  open http://HOST:{}/?token={}\n",
                token.as_str(),
                local.port(),
                token.as_str()
            );
        }
        (Some(_), _) => tracing::info!("the web UI asks for the configured access token"),
        (None, _) => tracing::info!("web UI on loopback: no access token needed"),
    }
    let foxglove_stop = Arc::new(AtomicBool::new(false));
    if let Some(port) = hub.config.foxglove_port {
        let address = std::net::SocketAddr::new(hub.config.bind, port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening for Foxglove on {address} (try another --foxglove-port)"))?;
        let router = foxglove::router(
            Arc::clone(&hub),
            access.clone(),
            guard::Guard::new(Arc::clone(&hub)),
            shutdown_rx.clone(),
            Arc::clone(&foxglove_stop),
            foxglove::Limits {
                origins: hub.config.foxglove_origins.clone(),
                max_clients: hub.config.foxglove_max_connections,
                max_subscriptions: hub.config.foxglove_max_subscriptions,
            },
        );
        tracing::info!("Foxglove WebSocket on ws://{address}/");
        let mut stopped = shutdown_rx.clone();
        // The web UI's own limits (header timeout, bounded shutdown) with a cap of its own.
        let max = hub.config.foxglove_max_connections;
        tokio::spawn(serve::serve(listener, router, Arc::clone(&hub), max, async move {
            let _ = stopped.changed().await;
        }));
    }
    let mut signal = shutdown_signal();
    let max_connections = hub.config.max_connections;
    serve::serve(listener, app, Arc::clone(&hub), max_connections, async move {
        (&mut signal).await;
        // Websockets and MJPEG streams end when this flips; then the server drains (bounded).
        let _ = shutdown_tx.send(true);
    })
    .await;
    link_stop.store(true, Ordering::Relaxed);
    foxglove_stop.store(true, Ordering::Relaxed);
    if link.join().is_err() {
        tracing::error!("the vehicle link thread panicked");
    }
    tracing::info!("viewer stopped");
    Ok(())
}

fn shutdown_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot watch SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
    })
}
