//! What a client's command has to pass before the viewer sends it: [`validate_command`]
//! (what the vehicle would refuse anyway, so the person gets the reason at once) and the
//! per-client [`RateLimit`], which an emergency stop always passes. Used for the websocket
//! (`ws`) and `POST /api/action` (`web`) alike.

use ads_protocol::Command;

/// Messages a client may send per second, sustained, and in a burst.
pub const CLIENT_RATE: f64 = 20.0;
pub const CLIENT_BURST: f64 = 40.0;

/// A token bucket: a flood of messages is refused without affecting others. Emergency stops
/// are never counted against it (see [`RateLimit::allow_command`]).
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    last: std::time::Instant,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { tokens: CLIENT_BURST, last: std::time::Instant::now() }
    }
}

impl RateLimit {
    pub fn allow(&mut self) -> bool {
        let now = std::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * CLIENT_RATE).min(CLIENT_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// An emergency stop always passes: it only ever stops the car, and the vehicle answers a
    /// repeat with its first outcome; refusing one because of a flood would be the failure.
    pub fn allow_command(&mut self, command: &Command) -> bool {
        *command == Command::EmergencyStop || self.allow()
    }
}

/// Checks what the vehicle would refuse anyway, so the person gets the reason at once.
pub fn validate_command(command: &Command, request_id: &str) -> Result<(), String> {
    if request_id.len() > 64 {
        return Err("request_id is longer than 64 characters".into());
    }
    match command {
        Command::Heartbeat => Err("heartbeats come from the viewer itself, not from clients".into()),
        Command::Drive { .. } => {
            Err("drive commands are not actions: take control and send `drive` messages on the websocket"
                .into())
        }
        Command::SetTargetSpeed { mps } if !(0.0..=40.0).contains(mps) => {
            Err(format!("target speed {mps} m/s is outside 0..=40"))
        }
        Command::Respawn { spawn_point: Some(p) } if *p > 10_000 => {
            Err(format!("spawn point {p} is not plausible"))
        }
        Command::CalibratePulse { us, lease_ms, .. }
            if !(500..=2500).contains(us) || !(1..=300).contains(lease_ms) =>
        {
            Err(format!(
                "calibration pulse {us} µs for {lease_ms} ms: pulses are 500..=2500 µs, leases 1..=300 ms"
            ))
        }
        _ => Ok(()),
    }
}
