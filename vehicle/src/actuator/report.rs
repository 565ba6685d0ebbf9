//! What the control loop makes of one snapshot of the outputs ([`OutputStatus`]): whether they
//! can be trusted to drive, and `state.actuator`. Pure: the loop reads the snapshot once per
//! tick and derives both from it, so the decision and the state it publishes cannot disagree
//! (two reads could straddle a fault).

use super::output::{OutputState, OutputStatus};
use ads_protocol::ActuatorState;

/// Why the outputs cannot be trusted to drive: a fault, an ended thread, or a serial board
/// that has not answered yet.
pub fn problem(status: &OutputStatus) -> Option<String> {
    if let Some(fault) = status.fault.as_ref().or(status.device.fault.as_ref()) {
        return Some(format!("actuator ({}): {fault}", status.backend));
    }
    if status.state == OutputState::Ended {
        return Some(format!("actuator ({}): its output thread has ended", status.backend));
    }
    if status.backend == "serial" && status.device.board.is_none() {
        return Some("actuator (serial): the board has not answered yet".into());
    }
    None
}

/// `state.actuator` from the snapshot (`None`: no outputs) and where the speed comes from.
pub fn state(status: Option<&OutputStatus>, speed_source: &str) -> ActuatorState {
    let Some(status) = status else {
        return ActuatorState {
            backend: "none".into(),
            state: "none".into(),
            speed_source: speed_source.into(),
            ..ActuatorState::default()
        };
    };
    ActuatorState {
        backend: status.backend.into(),
        state: state_word(status.state).into(),
        steering_us: status.pulses.map(|p| p.steering_us),
        throttle_us: status.pulses.map(|p| p.throttle_us),
        command_age_ms: status.command_age_ms,
        fault: status.fault.clone().or_else(|| status.device.fault.clone()),
        board: status.device.board.clone(),
        writes: status.writes,
        write_errors: status.write_errors,
        speed_source: speed_source.into(),
        ..ActuatorState::default()
    }
}

/// The word of `state.actuator.state` (docs/protocol.md).
pub fn state_word(state: OutputState) -> &'static str {
    match state {
        OutputState::Waiting => "waiting",
        OutputState::Driving => "driving",
        OutputState::Stopped => "stopped",
        OutputState::TimedOut => "timed_out",
        OutputState::Ended => "ended",
        OutputState::Calibrating => "calibrating",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::{DeviceStatus, Pulses};

    fn status() -> OutputStatus {
        OutputStatus {
            backend: "serial",
            state: OutputState::Driving,
            pulses: Some(Pulses { steering_us: 1600, throttle_us: 1550 }),
            command_age_ms: Some(3),
            stop_reason: None,
            writes: 10,
            write_errors: 0,
            fault: None,
            device: DeviceStatus { board: Some("drive".into()), acked_seq: Some(10), fault: None },
        }
    }

    #[test]
    fn the_decision_and_the_state_come_from_the_same_snapshot() {
        let ok = status();
        assert_eq!(problem(&ok), None);
        let s = state(Some(&ok), "sim");
        assert_eq!((s.state.as_str(), s.fault, s.steering_us), ("driving", None, Some(1600)));
        // A board fault: the loop holds the car, and the state it publishes names the fault.
        let faulty = OutputStatus {
            device: DeviceStatus { fault: Some("no answer for 200 ms".into()), ..ok.device.clone() },
            ..ok.clone()
        };
        let why = problem(&faulty).unwrap();
        assert!(why.contains("no answer for 200 ms"), "{why}");
        assert_eq!(state(Some(&faulty), "sim").fault.as_deref(), Some("no answer for 200 ms"));
        // A write fault wins over the board's in both.
        let both = OutputStatus { fault: Some("EIO".into()), ..faulty };
        assert!(problem(&both).unwrap().contains("EIO"));
        assert_eq!(state(Some(&both), "sim").fault.as_deref(), Some("EIO"));
        let silent = OutputStatus { device: DeviceStatus::default(), ..ok.clone() };
        assert!(problem(&silent).unwrap().contains("not answered"));
        let ended = OutputStatus { state: OutputState::Ended, ..ok };
        assert!(problem(&ended).unwrap().contains("ended"));
        assert_eq!(state(Some(&ended), "none").state, "ended");
        assert_eq!(state(None, "carla").backend, "none");
    }
}
