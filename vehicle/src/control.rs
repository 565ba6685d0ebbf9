//! Steering and speed: pure pursuit on the lane centre, a PI loop on speed, and the modes that
//! override them (pause, emergency stop, fail-safe stop).

use ads_sim::Controls;

/// Distance between the axles of the car the controller drives, m.
pub const WHEELBASE_M: f64 = 2.7;
/// Largest front-wheel angle the controller asks for, rad.
pub const MAX_STEER_RAD: f64 = 0.5;
/// Brake used for the fail-safe's controlled stop (an emergency stop brakes fully).
pub const FAILSAFE_BRAKE: f64 = 0.4;
/// Throttle asked for while the speed is unknown and the target above zero: all of it, which
/// the outputs cap at `actuator.max_throttle` (docs/actuators.md).
pub const OPEN_LOOP_THROTTLE: f64 = 1.0;

/// Where the lane is relative to the car, from detections or ground truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaneEstimate {
    /// Lateral position of the lane centre `lookahead_m` ahead, car frame, m, + = left.
    pub target_y_m: f64,
    pub lookahead_m: f64,
}

impl LaneEstimate {
    /// From the lane pose relative to the car: offset (+ = car left of centre), heading error
    /// (+ = car pointing left of the lane) and curvature (+ = lane turns left), assuming the
    /// curvature is constant over the look-ahead.
    pub fn from_lane_pose(
        lateral_offset_m: f64,
        heading_error_rad: f64,
        curvature: f64,
        lookahead_m: f64,
    ) -> Self {
        let target_y_m = -lateral_offset_m - lookahead_m * heading_error_rad.sin()
            + 0.5 * curvature * lookahead_m * lookahead_m;
        Self { target_y_m, lookahead_m }
    }
}

/// Pure pursuit plus a speed PI loop. `reset` clears everything a respawn must forget.
#[derive(Debug, Clone, Default)]
pub struct Controller {
    speed_integral: f64,
}

impl Controller {
    pub fn reset(&mut self) {
        self.speed_integral = 0.0;
    }

    /// Follows the lane at `target_speed`. `speed` is `None` where it is unknown (a camera car
    /// without an encoder, [`crate::source::SpeedSource::None`]): the throttle is then
    /// open-loop, [`OPEN_LOOP_THROTTLE`] while the target is above zero, and the outputs cap
    /// it (`actuator.max_throttle` sets the pace); a PI loop on a speed that reads 0 would only
    /// wind up.
    pub fn drive(&mut self, lane: LaneEstimate, speed: Option<f64>, target_speed: f64, dt: f64) -> Controls {
        let ld = lane.lookahead_m.max(1.0);
        // Pure pursuit: the arc through the look-ahead point has curvature 2y/ld².
        let steering =
            (2.0 * WHEELBASE_M * lane.target_y_m / (ld * ld)).atan().clamp(-MAX_STEER_RAD, MAX_STEER_RAD);
        let Some(speed) = speed else {
            self.speed_integral = 0.0;
            return if target_speed > 0.0 {
                Controls { steering, throttle: OPEN_LOOP_THROTTLE, brake: 0.0 }
            } else {
                Controls { steering, throttle: 0.0, brake: FAILSAFE_BRAKE }
            };
        };
        let error = target_speed - speed;
        self.speed_integral = (self.speed_integral + error * dt).clamp(-5.0, 5.0);
        let command = 0.3 * error + 0.05 * self.speed_integral;
        let (throttle, brake) =
            if command >= 0.0 { (command.min(1.0), 0.0) } else { (0.0, (-command).min(1.0)) };
        Controls { steering, throttle, brake }
    }

    /// Brakes with `brake` while holding the wheel straight; clears the speed loop so driving
    /// resumes without a wound-up integral.
    pub fn stop(&mut self, brake: f64) -> Controls {
        self.speed_integral = 0.0;
        Controls { steering: 0.0, throttle: 0.0, brake }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steers_towards_the_lane_centre() {
        let mut c = Controller::default();
        // Car right of the centre (negative offset): centre is to the left, steer left.
        let left = c.drive(LaneEstimate::from_lane_pose(-1.0, 0.0, 0.0, 10.0), Some(8.0), 8.0, 0.033);
        assert!(left.steering > 0.0, "{left:?}");
        // Car pointing left of the lane: steer right.
        let right = c.drive(LaneEstimate::from_lane_pose(0.0, 0.2, 0.0, 10.0), Some(8.0), 8.0, 0.033);
        assert!(right.steering < 0.0, "{right:?}");
        // On a left curve, centred and aligned: steer left by about atan(L·κ).
        let curve = c.drive(LaneEstimate::from_lane_pose(0.0, 0.0, 1.0 / 50.0, 10.0), Some(8.0), 8.0, 0.033);
        assert!((curve.steering - (WHEELBASE_M / 50.0).atan()).abs() < 1e-9, "{curve:?}");
        let hard = c.drive(LaneEstimate { target_y_m: 100.0, lookahead_m: 5.0 }, Some(8.0), 8.0, 0.033);
        assert_eq!(hard.steering, MAX_STEER_RAD);
    }

    #[test]
    fn speed_loop_accelerates_brakes_and_resets() {
        let mut c = Controller::default();
        let lane = LaneEstimate { target_y_m: 0.0, lookahead_m: 10.0 };
        let slow = c.drive(lane, Some(2.0), 8.0, 0.033);
        assert!(slow.throttle > 0.0 && slow.brake == 0.0);
        let fast = c.drive(lane, Some(15.0), 8.0, 0.033);
        assert!(fast.brake > 0.0 && fast.throttle == 0.0);
        for _ in 0..1000 {
            c.drive(lane, Some(0.0), 8.0, 0.033);
        }
        assert!(c.speed_integral > 4.9, "integral saturates");
        c.reset();
        assert_eq!(c.speed_integral, 0.0);
        assert_eq!(c.stop(1.0), Controls { steering: 0.0, throttle: 0.0, brake: 1.0 });
    }

    #[test]
    fn without_a_speed_the_throttle_is_open_loop_and_the_integral_stays_empty() {
        let mut c = Controller::default();
        let lane = LaneEstimate::from_lane_pose(-1.0, 0.0, 0.0, 10.0);
        for _ in 0..100 {
            let open = c.drive(lane, None, 8.0, 0.033);
            assert_eq!((open.throttle, open.brake), (OPEN_LOOP_THROTTLE, 0.0));
            assert!(open.steering > 0.0, "still steers: {open:?}");
        }
        assert_eq!(c.speed_integral, 0.0);
        let halt = c.drive(lane, None, 0.0, 0.033);
        assert_eq!((halt.throttle, halt.brake), (0.0, FAILSAFE_BRAKE));
    }
}
