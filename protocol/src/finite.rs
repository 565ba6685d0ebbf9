//! Numbers from the wire must be finite: a NaN becomes JSON `null` in the viewer (and breaks
//! the page), an infinity or 3e38 turns into a loop of 2^64 steps in anything that draws or
//! integrates it. Messages carrying one are refused at decode, naming the field.

use crate::messages::{Command, Detections, LaneXs, VehicleState};
use crate::wire::Message;

/// The first field of `message` that is NaN or infinite, if any.
pub fn first_non_finite(message: &Message) -> Option<&'static str> {
    match message {
        Message::Detection(d) => first_non_finite_detections(d),
        Message::State(s) => state(s),
        Message::Truth(t) => t.lanes.iter().find_map(|xs| lane("truth.lanes", xs)),
        Message::Action(a) => match a.command {
            Command::SetTargetSpeed { mps } if !mps.is_finite() => Some("command.mps"),
            Command::Drive { steering, .. } if !steering.is_finite() => Some("command.steering"),
            Command::Drive { throttle, .. } if !throttle.is_finite() => Some("command.throttle"),
            _ => None,
        },
        Message::Controls(c) => {
            let operator = c.operator.map_or(0.0, |o| o.steering + o.throttle);
            [("steering", c.steering), ("throttle", c.throttle), ("operator", operator)]
                .iter()
                .find(|(_, v)| !v.is_finite())
                .map(|(field, _)| *field)
        }
        Message::Frame(_) | Message::Event(_) => None,
    }
}

/// The same for a detection record (of the ring, or of a `detection` message).
pub fn first_non_finite_detections(d: &Detections) -> Option<&'static str> {
    if let Some(l) = &d.lanes {
        let scalars = [
            ("lanes.left_confidence", l.left_confidence),
            ("lanes.right_confidence", l.right_confidence),
            ("lanes.lateral_offset_m", l.lateral_offset_m),
            ("lanes.heading_error_rad", l.heading_error_rad),
            ("lanes.curvature_radius_m", l.curvature_radius_m.unwrap_or(0.0)),
        ];
        if let Some((field, _)) = scalars.iter().find(|(_, v)| !v.is_finite()) {
            return Some(field);
        }
        if let Some(field) = lane("lanes.left", &l.left).or_else(|| lane("lanes.right", &l.right)) {
            return Some(field);
        }
    }
    d.objects.iter().find_map(|o| {
        [o.score, o.x_px, o.y_px, o.w_px, o.h_px].iter().any(|v| !v.is_finite()).then_some("objects")
    })
}

fn lane(field: &'static str, xs: &LaneXs) -> Option<&'static str> {
    xs.iter().flatten().any(|x| !x.is_finite()).then_some(field)
}

fn state(s: &VehicleState) -> Option<&'static str> {
    let fields = [
        ("pose.x_m", s.pose.x_m),
        ("pose.y_m", s.pose.y_m),
        ("pose.yaw_rad", s.pose.yaw_rad),
        ("speed_mps", s.speed_mps),
        ("target_speed_mps", s.target_speed_mps),
        ("steering_rad", s.steering_rad),
        ("throttle", s.throttle),
        ("brake", s.brake),
        ("fps", f64::from(s.fps)),
        ("distance_m", s.distance_m),
        ("truth_lateral_offset_m", s.truth_lateral_offset_m.unwrap_or(0.0)),
        ("teleop.steering", s.teleop.steering),
        ("teleop.throttle", s.teleop.throttle),
        ("teleop.latency_p50_ms", f64::from(s.teleop.latency_p50_ms.unwrap_or(0.0))),
        ("teleop.latency_p99_ms", f64::from(s.teleop.latency_p99_ms.unwrap_or(0.0))),
    ];
    fields.iter().find(|(_, v)| !v.is_finite()).map(|(field, _)| *field)
}
