//! ZMTP heartbeats on the vehicle's PUB and action SUB sockets: a PING after [`INTERVAL_MS`]
//! without traffic, and a connection that heard nothing for [`TIMEOUT_MS`] is closed. This
//! catches a peer the vehicle sends little or nothing to (an action publisher whose laptop
//! left WiFi range).
//!
//! It does **not** catch a PUB connection whose send path is stalled (states queued behind a
//! dead link): libzmq arms the PING's timeout only once the PING is written, which never
//! happens while the kernel's send buffer is full. Measured with `ads-bench link --cases
//! outage --no-client-heartbeats`: 115 states over 1 s old still arrived after a 10 s outage
//! (156 without these heartbeats). What drops that backlog is the client's own heartbeat
//! (docs/protocol.md 1): it closes its connection and reconnects, and the old one's queue never
//! reaches it. `ZMQ_TCP_MAXRT` (TCP_USER_TIMEOUT) would close the stalled connection here, but
//! the `zmq` crate does not expose it and the vehicle has no `unsafe`.
//!
//! Not on the video ROUTER: its credits already bound what is queued per session, and with
//! heartbeats there hello-only squatters were no longer displaced (vehicle/tests/sessions.rs;
//! not understood yet).

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
