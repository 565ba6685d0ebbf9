//! The sidecar protocol: one message is `u32 header length, u32 payload length` (little
//! endian), a JSON header, then the payload bytes (only frames have one: BGRA pixels).
//!
//! JSON keeps the sidecar free of dependencies beyond the standard library and `carla`, and
//! the headers are a few hundred bytes per frame next to 1.9 MB of pixels.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Largest header accepted; a longer one means the stream is out of step.
pub const MAX_HEADER: u32 = 64 * 1024;
/// Largest payload accepted: a 4096x4096 BGRA frame.
pub const MAX_PAYLOAD: u32 = 4096 * 4096 * 4;

/// Bridge → sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ToSidecar {
    /// Applied before the next tick; the newest one wins.
    Control {
        steer: f64,
        throttle: f64,
        brake: f64,
    },
    /// Stop ticking the world (synchronous mode: the server's time stands still).
    Pause,
    Resume,
    /// Move the car to a spawn point with zero velocity (`set_transform`; never destroy and
    /// spawn, which is known to crash CARLA servers).
    Respawn {
        spawn_point: u32,
    },
    /// Restore asynchronous mode, destroy our actors, exit.
    Quit,
}

/// Sidecar → bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromSidecar {
    /// Connected, car and camera spawned, synchronous mode on.
    Ready {
        map: String,
        spawn_points: u32,
        max_steer_deg: f64,
        width: u32,
        height: u32,
        fps: f64,
    },
    /// One tick's camera image (payload: `width * height * 4` bytes BGRA) and the car's
    /// motion in CARLA's frame (x forward, y right, z up; yaw clockwise, degrees).
    Frame {
        frame: u64,
        sim_time_s: f64,
        width: u32,
        height: u32,
        x_m: f64,
        y_m: f64,
        yaw_deg: f64,
        speed_mps: f64,
    },
    /// The outcome of a respawn.
    Respawned {
        spawn_point: u32,
        x_m: f64,
        y_m: f64,
    },
    Rejected {
        detail: String,
    },
    /// `kind` is `unreachable` (no server at host:port: retry), `missing_carla` (the Python
    /// package is not installed) or `failed` (anything else).
    Error {
        kind: String,
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("header of {0} bytes (limit {MAX_HEADER}): the stream is out of step")]
    HeaderTooLong(u32),
    #[error("payload of {0} bytes (limit {MAX_PAYLOAD})")]
    PayloadTooLong(u32),
    #[error("bad header: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes one message.
pub fn write_message<T: Serialize>(
    out: &mut impl Write,
    header: &T,
    payload: &[u8],
) -> Result<(), WireError> {
    let header = serde_json::to_vec(header)?;
    let header_len = u32::try_from(header.len()).map_err(|_| WireError::HeaderTooLong(u32::MAX))?;
    let payload_len = u32::try_from(payload.len()).map_err(|_| WireError::PayloadTooLong(u32::MAX))?;
    let mut prefix = [0u8; 8];
    prefix[..4].copy_from_slice(&header_len.to_le_bytes());
    prefix[4..].copy_from_slice(&payload_len.to_le_bytes());
    out.write_all(&prefix)?;
    out.write_all(&header)?;
    out.write_all(payload)?;
    out.flush()?;
    Ok(())
}

/// Reads one message; the payload goes into `payload` (resized, so its allocation is reused).
pub fn read_message<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
    payload: &mut Vec<u8>,
) -> Result<T, WireError> {
    let mut prefix = [0u8; 8];
    input.read_exact(&mut prefix)?;
    let [a, b, c, d, e, f, g, h] = prefix;
    let header_len = u32::from_le_bytes([a, b, c, d]);
    let payload_len = u32::from_le_bytes([e, f, g, h]);
    if header_len > MAX_HEADER {
        return Err(WireError::HeaderTooLong(header_len));
    }
    if payload_len > MAX_PAYLOAD {
        return Err(WireError::PayloadTooLong(payload_len));
    }
    let mut header = vec![0u8; header_len as usize];
    input.read_exact(&mut header)?;
    payload.resize(payload_len as usize, 0);
    input.read_exact(payload)?;
    Ok(serde_json::from_slice(&header)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_oversized_headers_are_refused() {
        let mut buf = Vec::new();
        let frame = FromSidecar::Frame {
            frame: 7,
            sim_time_s: 0.25,
            width: 2,
            height: 1,
            x_m: 1.0,
            y_m: -2.0,
            yaw_deg: 90.0,
            speed_mps: 3.5,
        };
        write_message(&mut buf, &frame, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        write_message(&mut buf, &ToSidecar::Respawn { spawn_point: 3 }, &[]).unwrap();
        let mut input = buf.as_slice();
        let mut payload = Vec::new();
        assert_eq!(read_message::<FromSidecar>(&mut input, &mut payload).unwrap(), frame);
        assert_eq!(payload, [1, 2, 3, 4, 5, 6, 7, 8]);
        let cmd: ToSidecar = read_message(&mut input, &mut payload).unwrap();
        assert_eq!((cmd, payload.len()), (ToSidecar::Respawn { spawn_point: 3 }, 0));

        let mut bad = (MAX_HEADER + 1).to_le_bytes().to_vec();
        bad.extend_from_slice(&0u32.to_le_bytes());
        let err = read_message::<FromSidecar>(&mut bad.as_slice(), &mut payload).unwrap_err();
        assert!(matches!(err, WireError::HeaderTooLong(_)), "{err}");
    }

    #[test]
    fn the_wire_format_is_what_the_sidecar_writes() {
        // The sidecar builds headers by hand with json.dumps; pin the tags it relies on.
        let text =
            serde_json::to_string(&ToSidecar::Control { steer: -0.5, throttle: 0.3, brake: 0.0 }).unwrap();
        assert_eq!(text, r#"{"cmd":"control","steer":-0.5,"throttle":0.3,"brake":0.0}"#);
        let ready: FromSidecar = serde_json::from_str(
            r#"{"type":"ready","map":"Town10HD","spawn_points":155,"max_steer_deg":70.0,"width":800,"height":600,"fps":20.0}"#,
        )
        .unwrap();
        assert!(matches!(ready, FromSidecar::Ready { spawn_points: 155, .. }));
    }
}
