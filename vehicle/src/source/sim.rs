//! The built-in simulator: renders in place, steps the bicycle model, knows the truth.
//!
//! With `[sim] actuation = "outputs"` the car is moved not by the loop's controls but by what
//! the actuator outputs put out: a board at the far end of the serial line (a test's fake
//! board, or a hardware-in-the-loop rig reading a real servo signal) reports the steering and
//! throttle it puts out as datagrams on a Unix socket the simulator binds, and each step
//! applies the newest report (docs/actuators.md, "The simulator through the outputs").

use super::{FrameSource, Motion, Next, Pacing, SourceError, SpeedSource};
use crate::config::{SimActuation, VehicleConfig};
use ads_sim::{Controls, LaneReference, LaneTruth, SimConfig, Simulator};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct SimSource {
    sim: Simulator,
    period_ns: u64,
    /// `actuation = "outputs"`: where the car's controls come from instead of the loop.
    outputs: Option<FromOutputs>,
    /// The last frame's sensor noise, µs.
    noise_us: u32,
}

impl SimSource {
    pub fn new(config: &VehicleConfig) -> Result<Self, SourceError> {
        let sim_config = SimConfig {
            width: config.width,
            height: config.height,
            track: config.sim.track,
            seed: config.sim.seed,
            ..SimConfig::default()
        };
        let outputs = match (config.sim.actuation, &config.sim.outputs_socket) {
            (SimActuation::Outputs, Some(path)) => {
                Some(FromOutputs::bind(path, sim_config.vehicle.max_steer)?)
            }
            // Validation requires the socket with `outputs`.
            _ => None,
        };
        Ok(Self {
            sim: Simulator::new(sim_config),
            period_ns: (1e9 / config.fps) as u64,
            outputs,
            noise_us: 0,
        })
    }
}

/// A board's reports of what it puts out, on a Unix datagram socket: one datagram per report,
/// ASCII `<steering> <throttle>`, each -1..=1 — steering of full lock (+ = left), throttle of
/// full (- = the ESC braking: the simulated car has no reverse).
#[derive(Debug)]
pub struct FromOutputs {
    socket: UnixDatagram,
    path: PathBuf,
    /// The car's full steering lock, rad.
    max_steer_rad: f64,
    /// The newest valid report; none yet: straight, no throttle.
    latest: Controls,
    reports: u64,
    bad_reports: u64,
}

/// Reports the simulator takes, in one datagram.
pub const MAX_REPORT: usize = 64;

impl FromOutputs {
    /// Binds `path` (a socket left there by an earlier run is replaced; any other file is an
    /// error).
    pub fn bind(path: &Path, max_steer_rad: f64) -> Result<Self, SourceError> {
        use std::os::unix::fs::FileTypeExt as _;
        let error = |source: std::io::Error| SourceError::SimOutputs { path: path.to_path_buf(), source };
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(path).map_err(error)?;
        }
        let socket = UnixDatagram::bind(path).map_err(error)?;
        socket.set_nonblocking(true).map_err(error)?;
        Ok(Self {
            socket,
            path: path.to_path_buf(),
            max_steer_rad,
            latest: Controls::default(),
            reports: 0,
            bad_reports: 0,
        })
    }

    /// Takes every report that has arrived; the newest valid one wins.
    pub fn controls(&mut self) -> Controls {
        let mut buf = [0u8; MAX_REPORT];
        while let Ok(n) = self.socket.recv(&mut buf) {
            match parse_report(&buf[..n]) {
                Some((steering, throttle)) => {
                    self.reports += 1;
                    self.latest = Controls {
                        steering: steering * self.max_steer_rad,
                        throttle: throttle.max(0.0),
                        brake: (-throttle).max(0.0),
                    };
                }
                None => {
                    if self.bad_reports == 0 {
                        tracing::warn!(
                            "a bad report on {}: {:?} (want `<steering> <throttle>`, each -1..=1)",
                            self.path.display(),
                            String::from_utf8_lossy(&buf[..n])
                        );
                    }
                    self.bad_reports += 1;
                }
            }
        }
        self.latest
    }
}

impl Drop for FromOutputs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `<steering> <throttle>`, both finite and in -1..=1.
fn parse_report(bytes: &[u8]) -> Option<(f64, f64)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut fields = text.split_ascii_whitespace().map(str::parse::<f64>);
    let (Some(Ok(steering)), Some(Ok(throttle)), None) = (fields.next(), fields.next(), fields.next()) else {
        return None;
    };
    let ok = |v: f64| v.is_finite() && (-1.0..=1.0).contains(&v);
    (ok(steering) && ok(throttle)).then_some((steering, throttle))
}

impl FrameSource for SimSource {
    fn kind(&self) -> &'static str {
        "sim"
    }

    fn pacing(&self) -> Pacing {
        Pacing::Fixed { period_ns: self.period_ns }
    }

    fn next_frame(&mut self) -> Result<Next, SourceError> {
        Ok(Next::Ready { capture_mono_ns: None, capture_wall_ns: None })
    }

    fn write_frame(&mut self, frame_id: u64, pixels: &mut [u8], stride: usize) {
        let noise = self.sim.render_timed(frame_id, pixels, stride);
        self.noise_us = u32::try_from(noise.as_micros()).unwrap_or(u32::MAX);
    }

    fn noise_us(&self) -> u32 {
        self.noise_us
    }

    fn actuate(&mut self, dt: f64, controls: Controls) {
        let controls = match &mut self.outputs {
            // The loop's controls reach this car only through the outputs and the board.
            Some(outputs) => outputs.controls(),
            None => controls,
        };
        self.sim.step(dt, controls);
    }

    fn motion(&self) -> Motion {
        let s = self.sim.state();
        Motion {
            x_m: s.pose.x,
            y_m: s.pose.y,
            yaw_rad: s.pose.yaw,
            speed_mps: s.speed,
            steering_rad: Some(s.steering),
            odometer_m: s.odometer,
        }
    }

    fn speed_source(&self) -> SpeedSource {
        SpeedSource::Sim
    }

    fn respawn(&mut self, spawn_point: usize) -> Result<String, String> {
        let pose = self.sim.respawn(spawn_point).map_err(|e| e.to_string())?;
        Ok(format!("respawned at spawn point {spawn_point} ({:.1}, {:.1})", pose.x, pose.y))
    }

    fn lane_reference(&self, lookahead_m: f64) -> Option<LaneReference> {
        Some(self.sim.lane_reference(lookahead_m))
    }

    fn truth(&self) -> Option<LaneTruth> {
        Some(self.sim.truth())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_two_numbers_in_range() {
        assert_eq!(parse_report(b"0.5 -0.25"), Some((0.5, -0.25)));
        assert_eq!(parse_report(b" -1 1\n"), Some((-1.0, 1.0)));
        for bad in [&b"0.5"[..], b"0.5 0.2 0.1", b"1.5 0", b"0 NaN", b"x 0", b"\xff 0", b""] {
            assert_eq!(parse_report(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_newest_report_moves_the_car_and_a_bad_one_changes_nothing() {
        let path = std::env::temp_dir().join(format!("ads-sim-outputs-{}.sock", std::process::id()));
        let mut from = FromOutputs::bind(&path, 0.5).unwrap();
        // Nothing yet: straight, no throttle.
        assert_eq!(from.controls(), Controls::default());
        let board = UnixDatagram::unbound().unwrap();
        for report in [&b"0.2 0.1"[..], b"-0.5 0.3", b"garbage"] {
            board.send_to(report, &path).unwrap();
        }
        assert_eq!(from.controls(), Controls { steering: -0.25, throttle: 0.3, brake: 0.0 });
        assert_eq!((from.reports, from.bad_reports), (2, 1));
        // The ESC braking.
        board.send_to(b"0 -0.4", &path).unwrap();
        assert_eq!(from.controls(), Controls { steering: 0.0, throttle: 0.0, brake: 0.4 });
        // Dropped, the socket goes; a file that is not a socket is never replaced.
        drop(from);
        assert!(!path.exists());
        std::fs::write(&path, "not a socket").unwrap();
        assert!(FromOutputs::bind(&path, 0.5).is_err(), "a file that is not a socket stays");
        std::fs::remove_file(&path).unwrap();
    }
}
