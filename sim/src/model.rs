//! The car: a kinematic bicycle about the rear axle with first-order speed dynamics.
//!
//! Kinematic is enough below ~15 m/s on radii over 40 m (no tyre slip worth modelling), and it
//! makes the steering-to-radius relation exact, which the control tests rely on.

use serde::{Deserialize, Serialize};

use super::{Controls, Pose};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VehicleParams {
    /// Axle distance (m).
    pub wheelbase: f64,
    /// Front wheel angle limit (rad).
    pub max_steer: f64,
    /// How fast the wheels can turn (rad/s); infinity disables the limit.
    pub max_steer_rate: f64,
    /// Acceleration at full throttle, before drag (m/s²).
    pub max_accel: f64,
    /// Deceleration at full brake (m/s²).
    pub max_brake: f64,
    /// Aerodynamic drag: deceleration = drag · v² (1/m).
    pub drag: f64,
    /// Rolling resistance (m/s²), only while moving.
    pub rolling: f64,
}

impl Default for VehicleParams {
    fn default() -> Self {
        Self {
            wheelbase: 2.7,
            max_steer: 0.5,
            max_steer_rate: 1.5,
            max_accel: 3.0,
            max_brake: 8.0,
            drag: 0.0015,
            rolling: 0.15,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Kinematics {
    pub(crate) pose: Pose,
    pub(crate) speed: f64,
    pub(crate) steering: f64,
}

/// Longest integration step: long frames are split so the path does not depend on frame rate.
const MAX_SUBSTEP: f64 = 0.01;

pub(crate) fn advance(car: &mut Kinematics, p: &VehicleParams, dt: f64, c: Controls) {
    let sane = |v: f64, lo: f64, hi: f64| if v.is_finite() { v.clamp(lo, hi) } else { 0.0 };
    let max_steer = p.max_steer.abs();
    let target = sane(c.steering, -max_steer, max_steer);
    let throttle = sane(c.throttle, 0.0, 1.0);
    let brake = sane(c.brake, 0.0, 1.0);
    let substeps = (dt / MAX_SUBSTEP).ceil().max(1.0);
    let h = dt / substeps;
    for _ in 0..substeps as usize {
        let max_turn = p.max_steer_rate.abs() * h;
        car.steering += (target - car.steering).clamp(-max_turn, max_turn);

        // Resistances only ever slow the car down to a stop, never push it backwards.
        let drive = throttle * p.max_accel;
        let resist = brake * p.max_brake + p.drag * car.speed * car.speed + p.rolling;
        let v0 = car.speed;
        let v1 = if v0 > 0.0 || drive > resist { (v0 + (drive - resist) * h).max(0.0) } else { 0.0 };
        car.speed = v1;
        let v = 0.5 * (v0 + v1);

        // Exact arc for constant speed and steering over the sub-step.
        let omega = v * car.steering.tan() / p.wheelbase;
        let yaw0 = car.pose.yaw;
        if (omega * h).abs() < 1e-9 {
            car.pose.x += v * h * yaw0.cos();
            car.pose.y += v * h * yaw0.sin();
        } else {
            let yaw1 = yaw0 + omega * h;
            car.pose.x += v / omega * (yaw1.sin() - yaw0.sin());
            car.pose.y += v / omega * (yaw0.cos() - yaw1.cos());
        }
        car.pose.yaw = super::wrap_angle(yaw0 + omega * h);
    }
}
