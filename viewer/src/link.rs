//! The ZeroMQ side: a SUB socket on the vehicle's stream, a DEALER on its video socket
//! ([`crate::video`]) and a PUB socket to its action port, all owned by one thread (ZeroMQ
//! sockets are not thread-safe).
//!
//! ZeroMQ reconnects by itself; heartbeats (ZMTP PING/PONG) make it notice a link that died
//! without a FIN (WiFi gone) within seconds instead of after TCP's minutes, and drop and
//! re-establish the connection.

use crate::hub::Hub;
use crate::packet::{wall_ns, DecodedUnit};
use crate::video::{VideoClient, RECONNECT_MAX_MS};
use ads_protocol::discover::Endpoints;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEARTBEAT_IVL_MS: i32 = 500;
const HEARTBEAT_TIMEOUT_MS: i32 = 2000;
const POLL_MS: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("ZeroMQ {what} {endpoint}: {source}")]
    Zmq { what: &'static str, endpoint: String, source: zmq::Error },
    #[error("starting the link thread: {0}")]
    Thread(std::io::Error),
}

pub fn spawn(
    hub: Arc<Hub>,
    actions: Receiver<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, LinkError> {
    let context = zmq::Context::new();
    let vehicle = hub.config.vehicle.clone();
    let action_endpoint = "the action socket".to_string();
    let err = |what, endpoint: &str| {
        let endpoint = endpoint.to_string();
        move |source| LinkError::Zmq { what, endpoint, source }
    };
    let sub = context.socket(zmq::SUB).map_err(err("socket for", &vehicle))?;
    sub.set_rcvhwm(100).map_err(err("options of", &vehicle))?;
    sub.set_heartbeat_ivl(HEARTBEAT_IVL_MS).map_err(err("options of", &vehicle))?;
    sub.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS).map_err(err("options of", &vehicle))?;
    sub.set_heartbeat_ttl(HEARTBEAT_TIMEOUT_MS).map_err(err("options of", &vehicle))?;
    sub.set_reconnect_ivl(100).map_err(err("options of", &vehicle))?;
    sub.set_reconnect_ivl_max(RECONNECT_MAX_MS).map_err(err("options of", &vehicle))?;
    sub.set_connect_timeout(RECONNECT_MAX_MS).map_err(err("options of", &vehicle))?;
    sub.set_maxmsgsize((ads_protocol::MAX_PAYLOAD_BYTES + 1024) as i64)
        .map_err(err("options of", &vehicle))?;
    sub.set_subscribe(b"").map_err(err("subscribing to", &vehicle))?;
    sub.connect(&vehicle).map_err(err("connecting to", &vehicle))?;
    let publisher = context.socket(zmq::PUB).map_err(err("socket for", &action_endpoint))?;
    publisher.set_sndhwm(100).map_err(err("options of", &action_endpoint))?;
    publisher.set_heartbeat_ivl(HEARTBEAT_IVL_MS).map_err(err("options of", &action_endpoint))?;
    publisher.set_heartbeat_timeout(HEARTBEAT_TIMEOUT_MS).map_err(err("options of", &action_endpoint))?;
    publisher.set_reconnect_ivl(100).map_err(err("options of", &action_endpoint))?;
    publisher.set_reconnect_ivl_max(RECONNECT_MAX_MS).map_err(err("options of", &action_endpoint))?;
    publisher.set_connect_timeout(RECONNECT_MAX_MS).map_err(err("options of", &action_endpoint))?;
    // An action must not linger past its usefulness, but the last one sent before we exit
    // should still go out.
    publisher.set_linger(500).map_err(err("options of", &action_endpoint))?;
    let context_for_video = context.clone();
    std::thread::Builder::new()
        .name("vehicle-link".into())
        .spawn(move || {
            // Endpoints not given are the ones the vehicle's states advertise.
            let Some(found) = endpoints(&hub, &sub, &stop) else { return };
            if let Err(e) = publisher.connect(&found.actions) {
                tracing::error!("connecting the action socket to {}: {e}; no actions can be sent", found.actions);
                return;
            }
            let mut video = match VideoClient::connect(&context_for_video, &found.video) {
                Ok(video) => video.with_codec(hub.codec()).with_hello_key(hub.action_key()),
                Err(e) => {
                    tracing::error!("connecting the video socket to {}: {e}; no video", found.video);
                    return;
                }
            };
            tracing::info!(vehicle = %hub.config.vehicle, video = %found.video, actions = %found.actions, "linked to the vehicle");
            run(&hub, &sub, &mut video, &publisher, &actions, &stop);
        })
        .map_err(LinkError::Thread)
}

/// The video and action endpoints: as configured, or (where the configuration leaves one
/// empty) found in the first state of the vehicle this viewer follows; states and events
/// heard meanwhile go to the hub as usual. `None` once stopped.
fn endpoints(hub: &Hub, sub: &zmq::Socket, stop: &AtomicBool) -> Option<Endpoints> {
    let (actions, video) = (hub.config.actions.clone(), hub.config.video.clone());
    if !actions.is_empty() && !video.is_empty() {
        return Some(Endpoints { actions, video, signed_actions: false });
    }
    tracing::info!(vehicle = %hub.config.vehicle, "waiting for the vehicle's first state: it says where its video and action sockets are");
    while !stop.load(Ordering::Relaxed) {
        if sub.poll(zmq::POLLIN, 100).unwrap_or(0) == 0 {
            continue;
        }
        while let Ok(parts) = sub.recv_multipart(zmq::DONTWAIT) {
            let recv_ns = wall_ns();
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let Ok(message) = ads_protocol::decode(&refs) else { continue };
            let wanted = hub.config.vehicle_id.is_empty() || hub.config.vehicle_id == message.vehicle;
            let found = match (&message.message, wanted) {
                (ads_protocol::Message::State(state), true) => {
                    match ads_protocol::discover::endpoints(&hub.config.vehicle, state) {
                        Ok(found) => Some(found),
                        Err(e) => {
                            tracing::error!("{e}: pass --video and --actions");
                            return None;
                        }
                    }
                }
                _ => None,
            };
            hub.on_message(message, recv_ns);
            if let Some(found) = found {
                return Some(Endpoints {
                    actions: if actions.is_empty() { found.actions } else { actions },
                    video: if video.is_empty() { found.video } else { video },
                    signed_actions: found.signed_actions,
                });
            }
        }
    }
    None
}

fn run(
    hub: &Hub,
    sub: &zmq::Socket,
    video: &mut VideoClient,
    publisher: &zmq::Socket,
    actions: &Receiver<Vec<Vec<u8>>>,
    stop: &AtomicBool,
) {
    let mut last_tick = Instant::now();
    let mut malformed_logged = 0u64;
    while !stop.load(Ordering::Relaxed) {
        video.tick(Instant::now());
        video.request_keyframe_if_wanted(hub.keyframe_wish(), &hub.metrics, Instant::now());
        let mut items = [sub.as_poll_item(zmq::POLLIN), video.socket().as_poll_item(zmq::POLLIN)];
        let polled = zmq::poll(&mut items, POLL_MS);
        // Frames first: their credit goes back before anything else is done.
        // Full pictures while a recording or Foxglove shares the session: their annotations
        // are in the source's pixels.
        video.set_full_size(hub.fanout.active());
        video.set_codec(hub.codec());
        video.receive((&hub.metrics, hub.keyframe_wish(), hub.config.mjpeg_quality), |d| {
            if let Some(view) = d.view {
                hub.set_video_view(view);
            }
            share(hub, &d.message, d.recv_ns, d.decoded.as_ref());
            hub.on_message_with(d.message, d.recv_ns, d.decoded);
        });
        match polled {
            Ok(n) if n > 0 => {
                // Drain everything queued, so a burst does not wait for the next poll.
                while let Ok(parts) = sub.recv_multipart(zmq::DONTWAIT) {
                    let recv_ns = wall_ns();
                    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                    match ads_protocol::decode(&refs) {
                        Ok(message) => {
                            share(hub, &message, recv_ns, None);
                            hub.on_message(message, recv_ns);
                        }
                        Err(e) => {
                            let n = hub.metrics.messages_malformed.fetch_add(1, Ordering::Relaxed);
                            // The first few in full, then every thousandth: a broken peer
                            // must not flood the log.
                            if n < 5 || n % 1000 == 0 {
                                malformed_logged += 1;
                                tracing::warn!("malformed message from the vehicle ({} so far): {e}", n + 1);
                            }
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("polling the vehicle stream: {e}"),
        }
        while let Ok(parts) = actions.try_recv() {
            // DONTWAIT: with no vehicle connected PUB drops rather than blocks, and the
            // action then shows up as unanswered.
            if let Err(e) = publisher.send_multipart(parts, zmq::DONTWAIT) {
                tracing::warn!("sending an action: {e}");
            }
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= Duration::from_millis(100) {
            last_tick = now;
            hub.tick(now);
        }
    }
    tracing::debug!(malformed_logged, "vehicle link stopped");
}

/// Hands `message` to the recorder and the Foxglove feed, if they are running.
fn share(hub: &Hub, message: &ads_protocol::WireMessage<'_>, recv_ns: u64, decoded: Option<&DecodedUnit>) {
    if hub.fanout.active() {
        if let Some(received) = crate::fanout::received(message, recv_ns, decoded) {
            hub.fanout.publish(received);
        }
    }
}
