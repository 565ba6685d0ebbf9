//! CARLA through ads-carla-bridge: the server's tick sets the pace, the car's real speed and
//! pose come back with every frame, and the controls go out every tick.

use super::convert::copy_rows;
use super::{FrameSource, Motion, Next, Pacing, SourceError, SpeedSource};
use crate::config::VehicleConfig;
use ads_carla_bridge::bridge::BridgeEvent;
use ads_carla_bridge::{to_carla_control, BridgeConfig, BridgeError, CarlaBridge, CarlaFrame, LinkStatus};
use ads_shmem_ipc::clock;
use ads_sim::Controls;
use std::time::Duration;

#[derive(Debug)]
pub struct CarlaSource {
    bridge: CarlaBridge,
    endpoint: String,
    width: u32,
    pending: Option<CarlaFrame>,
    motion: Motion,
    last_sim_time_s: Option<f64>,
}

impl CarlaSource {
    pub fn start(config: &VehicleConfig) -> Result<Self, BridgeError> {
        let c = &config.carla;
        let bridge = CarlaBridge::start(BridgeConfig {
            host: c.host.clone(),
            port: c.port,
            python: c.python.clone(),
            width: config.width,
            height: config.height,
            fps: config.fps,
            vehicle_filter: c.vehicle.clone(),
            client_timeout_s: c.timeout_s,
            ..BridgeConfig::default()
        })?;
        Ok(Self {
            bridge,
            endpoint: format!("{}:{}", c.host, c.port),
            width: config.width,
            pending: None,
            motion: Motion { steering_rad: None, ..Motion::default() },
            last_sim_time_s: None,
        })
    }
}

impl FrameSource for CarlaSource {
    fn kind(&self) -> &'static str {
        "carla"
    }

    fn pacing(&self) -> Pacing {
        Pacing::External
    }

    fn wait_frame(&mut self, deadline_ns: u64) -> bool {
        if self.pending.is_none() {
            let left = deadline_ns.saturating_sub(clock::monotonic_ns());
            self.pending = self.bridge.take_frame(Duration::from_nanos(left));
        }
        self.pending.is_some()
    }

    fn next_frame(&mut self) -> Result<Next, SourceError> {
        if self.pending.is_none() {
            self.pending = self.bridge.take_frame(Duration::ZERO);
        }
        Ok(if self.pending.is_some() {
            Next::Ready { capture_mono_ns: None, capture_wall_ns: None }
        } else {
            Next::NotYet
        })
    }

    fn write_frame(&mut self, _frame_id: u64, pixels: &mut [u8], stride: usize) {
        let Some(frame) = self.pending.take() else { return };
        copy_rows(&frame.pixels, self.width, pixels, stride);
        // Distance from simulated time, so a slow tick does not count as a long one.
        let dt = self.last_sim_time_s.map_or(0.0, |t| (frame.sim_time_s - t).clamp(0.0, 1.0));
        self.last_sim_time_s = Some(frame.sim_time_s);
        self.motion = Motion {
            x_m: frame.x_m,
            y_m: frame.y_m,
            yaw_rad: frame.yaw_rad,
            speed_mps: frame.speed_mps,
            steering_rad: None,
            odometer_m: self.motion.odometer_m + frame.speed_mps * dt,
        };
    }

    fn actuate(&mut self, _dt: f64, c: Controls) {
        let carla = to_carla_control(c.steering, c.throttle, c.brake, self.bridge.max_steer_rad());
        if let Err(e) = self.bridge.send_control(carla.steer, carla.throttle, carla.brake) {
            tracing::debug!("controls not sent to CARLA: {e}");
        }
    }

    fn motion(&self) -> Motion {
        self.motion
    }

    fn speed_source(&self) -> SpeedSource {
        SpeedSource::Carla
    }

    fn problem(&self) -> Option<String> {
        match self.bridge.status() {
            LinkStatus::Connected { .. } => None,
            LinkStatus::Starting => Some(format!("connecting to CARLA at {}", self.endpoint)),
            LinkStatus::Retrying { reason, retry_in, .. } => {
                Some(format!("{reason}; retrying in {:.1} s", retry_in.as_secs_f64()))
            }
        }
    }

    fn take_notices(&mut self) -> Vec<String> {
        self.bridge
            .take_events()
            .into_iter()
            .map(|e| match e {
                BridgeEvent::Respawned { spawn_point, x_m, y_m } => {
                    format!("CARLA: respawned at spawn point {spawn_point} ({x_m:.1}, {y_m:.1})")
                }
                BridgeEvent::Rejected { detail } => format!("CARLA refused: {detail}"),
            })
            .collect()
    }

    fn set_paused(&mut self, paused: bool) {
        if let Err(e) = self.bridge.set_paused(paused) {
            tracing::warn!("CARLA pause/resume not sent: {e}");
        }
    }

    fn respawn(&mut self, spawn_point: usize) -> Result<String, String> {
        let index =
            u32::try_from(spawn_point).map_err(|_| format!("spawn point {spawn_point} is out of range"))?;
        self.bridge.respawn(index).map_err(|e| e.to_string())?;
        self.last_sim_time_s = None;
        Ok(format!("respawn at spawn point {index} sent to CARLA (set_transform, zero velocity)"))
    }
}
