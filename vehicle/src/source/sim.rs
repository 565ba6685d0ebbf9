//! The built-in simulator: renders in place, steps the bicycle model, knows the truth.

use super::{FrameSource, Motion, Next, Pacing, SourceError, SpeedSource};
use crate::config::VehicleConfig;
use ads_sim::{Controls, LaneReference, LaneTruth, SimConfig, Simulator};

#[derive(Debug)]
pub struct SimSource {
    sim: Simulator,
    period_ns: u64,
}

impl SimSource {
    pub fn new(config: &VehicleConfig) -> Self {
        let sim = Simulator::new(SimConfig {
            width: config.width,
            height: config.height,
            track: config.sim.track,
            seed: config.sim.seed,
            ..SimConfig::default()
        });
        Self { sim, period_ns: (1e9 / config.fps) as u64 }
    }
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
        self.sim.render(frame_id, pixels, stride);
    }

    fn actuate(&mut self, dt: f64, controls: Controls) {
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
