//! ZMTP heartbeats on the vehicle's PUB and action SUB sockets: a peer that
//! stops answering PINGs (its WiFi gone; no FIN, no RST) has its connection closed within
//! [`TIMEOUT_MS`], and whatever was queued for it (seconds of states, behind a dead link) goes
//! with it. When the link returns the client reconnects and gets fresh data, not a backlog.
//! Clients do the same on their side (docs/protocol.md 1). Not on the video ROUTER: its
//! credits already bound what is queued per session, and with heartbeats there the idle
//! sessions of hello-only squatters were no longer displaced (vehicle/tests/sessions.rs; not
//! understood yet).

/// A PING when nothing else was sent for this long.
pub const INTERVAL_MS: i32 = 500;
/// A connection that heard nothing (no PONG, no message) for this long is closed.
pub const TIMEOUT_MS: i32 = 2000;

/// Sets the heartbeats; before `bind`, so every connection gets them.
pub fn watch_peers(socket: &zmq::Socket) -> zmq::Result<()> {
    socket.set_heartbeat_ivl(INTERVAL_MS)?;
    socket.set_heartbeat_timeout(TIMEOUT_MS)?;
    // What a peer should wait for us before it closes (it is told in our PINGs).
    socket.set_heartbeat_ttl(TIMEOUT_MS)
}
