//! The command state machine: the e-stop latch, the hold after a reset, a start or a lost
//! operator, the pause, and which commands each of those takes. Pure logic: the control loop
//! feeds it commands, the latch thread's results and the time, and carries out what it says
//! (brake, persist, acknowledge). docs/protocol.md 5.3 has the same rules as a table.
//!
//! The order of the stop chain is the point of this module: an e-stop latches here at once
//! (the loop brakes in the same tick), the new latch state is persisted afterwards by a thread
//! of its own, and only then acknowledged. A reset is the other way round: it releases nothing
//! until the hold it leaves behind is on disk, so a crash between reset and resume restarts
//! held, never driving.

use crate::latch::LatchState;
use ads_protocol::{Command, CommandStatus, DriveMode};

/// The rules a vehicle's commands follow, from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Drive only while an operator's heartbeat arrives (dead-man).
    pub require_operator: bool,
    pub operator_timeout_ns: u64,
    /// Whether the car may drive right after start when nothing holds it: only the simulator
    /// and file sources, and only without a required operator (see [`crate::config`]).
    pub drive_on_start: bool,
}

/// What the control loop must do for a command besides what [`Commands`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Acknowledge now with this outcome (`Err`: rejected as not allowed).
    Done(Result<String, String>),
    /// Hand this state to the latch thread; acknowledge once it reports back. Before that the
    /// command has taken effect only as far as stopping goes.
    Persist(LatchState),
}

/// The command side of a running vehicle.
#[derive(Debug, Clone)]
pub struct Commands {
    rules: Rules,
    estop: bool,
    /// A reset waits for its hold to reach the disk; the e-stop stays in force until then.
    reset_pending: bool,
    /// Why the car stands until an operator's `resume` (mode `stopped`).
    held: Option<String>,
    paused: bool,
    /// The state last handed to the latch thread (what the disk will say).
    on_disk: LatchState,
    latch_error: Option<String>,
}

impl Commands {
    /// After a start with `on_disk` in the latch file.
    pub fn new(rules: Rules, on_disk: LatchState) -> Self {
        let held = match on_disk {
            LatchState::Latched => None,
            LatchState::Held => Some("restarted after an e-stop was reset: send resume to drive".to_string()),
            LatchState::Released if rules.require_operator => {
                Some("waiting for an operator: open a viewer and send resume".into())
            }
            LatchState::Released if !rules.drive_on_start => Some("started: waiting for resume".into()),
            LatchState::Released => None,
        };
        Self {
            rules,
            estop: on_disk == LatchState::Latched,
            reset_pending: false,
            held,
            paused: false,
            on_disk,
            latch_error: None,
        }
    }

    pub fn estop(&self) -> bool {
        self.estop
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Why the car holds, if it does (and no e-stop is latched).
    pub fn held(&self) -> Option<&str> {
        self.held.as_deref()
    }

    /// The mode that overrides driving, and why: the e-stop over everything, then a pause,
    /// then a hold; `None`: the control loop decides (driving or fail-safe).
    pub fn overriding_mode(&self) -> Option<(DriveMode, String)> {
        if self.estop {
            let why = if self.reset_pending {
                "emergency stop latched; a reset is being persisted".to_string()
            } else {
                match &self.latch_error {
                    Some(e) => {
                        format!("emergency stop latched (NOT persisted: {e}); send reset, then resume")
                    }
                    None => "emergency stop latched (send reset, then resume)".to_string(),
                }
            };
            return Some((DriveMode::EmergencyStop, why));
        }
        if self.paused {
            return Some((DriveMode::Paused, "paused (send resume)".into()));
        }
        self.held.as_ref().map(|why| (DriveMode::Stopped, why.clone()))
    }

    /// Whether `command` is taken in the current state; `Err` says why not. The e-stop and
    /// the commands that stop (pause) or release a stop deliberately (reset, resume) are judged
    /// by their own transitions; this is the rule for commands that could move the car.
    pub fn allows(&self, command: &Command) -> Result<(), String> {
        let moves = match command {
            Command::Respawn { .. } => "respawn moves the car",
            Command::SetTargetSpeed { .. } if self.estop => "a new target speed",
            _ => return Ok(()),
        };
        if self.estop {
            return Err(format!(
                "{moves}: not while the emergency stop is latched (reset, then resume first)"
            ));
        }
        if let Some(why) = &self.held {
            return Err(format!("{moves}: not while the car is held ({why}); send resume first"));
        }
        Ok(())
    }

    /// Holds the car until `resume` for `why` (a switch into autopilot); an e-stop or a hold
    /// already in force stays as it is.
    pub fn hold(&mut self, why: String) {
        if !self.estop && self.held.is_none() {
            self.held = Some(why);
        }
    }

    /// Latches at once: the caller brakes in this tick, then persists.
    pub fn emergency_stop(&mut self) -> Step {
        self.estop = true;
        // An e-stop overtakes a reset still on its way to the disk.
        self.reset_pending = false;
        self.paused = false;
        self.on_disk = LatchState::Latched;
        Step::Persist(LatchState::Latched)
    }

    /// Releases a latched e-stop into a hold, once that hold is on disk
    /// ([`Commands::persisted`]); never moves the car.
    pub fn reset(&mut self) -> Step {
        if !self.estop {
            return Step::Done(Ok("no emergency stop was latched".into()));
        }
        self.reset_pending = true;
        self.on_disk = LatchState::Held;
        Step::Persist(LatchState::Held)
    }

    /// The latch thread wrote (or failed to write) `state`; returns the outcome for the
    /// acknowledgement of a reset that waited on it.
    pub fn persisted(&mut self, state: LatchState, result: Result<(), String>) -> Result<String, String> {
        let outcome = match (&result, state) {
            (Ok(()), LatchState::Held) if self.reset_pending => {
                self.estop = false;
                self.reset_pending = false;
                self.held = Some("emergency stop reset: send resume to drive".into());
                Ok("emergency stop released; the car stays stopped until resume".into())
            }
            (Ok(()), LatchState::Held) => {
                Err("an emergency stop arrived while the reset was being persisted: still latched".into())
            }
            (Err(e), LatchState::Held) if self.reset_pending => {
                self.reset_pending = false;
                Err(format!("the reset could not be persisted ({e}): the emergency stop stays latched"))
            }
            (Err(e), _) => Err(e.clone()),
            (Ok(()), _) => Ok(String::new()),
        };
        // The newest result tells whether the disk matches; an older job's success does not
        // clear a newer one's failure because jobs complete in order.
        self.latch_error = result.err();
        outcome
    }

    /// Pauses (frozen time and frames); under an e-stop the brake keeps acting.
    pub fn pause(&mut self) -> Step {
        self.paused = true;
        Step::Done(Ok("paused".into()))
    }

    /// Drives again after a pause or a hold. Never releases an e-stop. Returns the step, and
    /// the state to persist (asynchronously, nothing waits) when a hold on disk ends.
    pub fn resume(&mut self, heartbeat_age_ns: Option<u64>) -> (Step, Option<LatchState>) {
        if self.estop {
            let why = "the emergency stop is latched: send reset first, then resume";
            return (Step::Done(Err(why.into())), None);
        }
        if self.rules.require_operator && !self.operator_present(heartbeat_age_ns) {
            let why = "this vehicle requires an operator, and no operator heartbeat arrives";
            return (Step::Done(Err(why.into())), None);
        }
        let was_paused = std::mem::replace(&mut self.paused, false);
        let was_held = self.held.take().is_some();
        let detail = if was_paused || was_held { "resumed" } else { "already running" };
        // Resuming drives at once; the disk follows. A crash before it did restarts held:
        // the safe side.
        let persist = (self.on_disk != LatchState::Released).then_some(LatchState::Released);
        if persist.is_some() {
            self.on_disk = LatchState::Released;
        }
        (Step::Done(Ok(detail.into())), persist)
    }

    fn operator_present(&self, heartbeat_age_ns: Option<u64>) -> bool {
        heartbeat_age_ns.is_some_and(|age| age <= self.rules.operator_timeout_ns)
    }

    /// Dead-man: with an operator required, silence past the timeout holds the car; returns
    /// the notice to give when that happens.
    pub fn check_operator(&mut self, heartbeat_age_ns: Option<u64>) -> Option<String> {
        if !self.rules.require_operator || self.held.is_some() || self.operator_present(heartbeat_age_ns) {
            return None;
        }
        let timeout_ms = self.rules.operator_timeout_ns / 1_000_000;
        let reason = format!(
            "no operator heartbeat for more than {timeout_ms} ms (viewer gone or page hidden?): \
             stopped until an operator sends resume"
        );
        self.held = Some(reason.clone());
        Some(reason)
    }

    /// `state.commands`, less the run's identity and clock and the action socket (the wiring adds
    /// those).
    pub fn status(&self, heartbeat_age_ns: Option<u64>) -> CommandStatus {
        CommandStatus {
            run_id: String::new(),
            run_ns: 0,
            estop_latched: self.estop,
            held: self.held.is_some(),
            operator_required: self.rules.require_operator,
            operator_heartbeat_age_ms: heartbeat_age_ns
                .map(|a| u32::try_from(a / 1_000_000).unwrap_or(u32::MAX)),
            latch_error: self.latch_error.clone(),
            action_port: 0,
            signed_actions: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIM: Rules =
        Rules { require_operator: false, operator_timeout_ns: 1_000_000_000, drive_on_start: true };
    const CAMERA: Rules =
        Rules { require_operator: true, operator_timeout_ns: 1_000_000_000, drive_on_start: false };
    const BEAT: Option<u64> = Some(100_000_000);

    fn mode(c: &Commands) -> Option<DriveMode> {
        c.overriding_mode().map(|(m, _)| m)
    }

    fn done(step: Step) -> Result<String, String> {
        match step {
            Step::Done(outcome) => outcome,
            Step::Persist(state) => panic!("expected an answer, got persist {state:?}"),
        }
    }

    #[test]
    fn a_start_drives_only_a_simulator_with_nothing_on_disk() {
        assert_eq!(mode(&Commands::new(SIM, LatchState::Released)), None);
        let no_auto = Rules { drive_on_start: false, ..SIM };
        assert_eq!(mode(&Commands::new(no_auto, LatchState::Released)), Some(DriveMode::Stopped));
        let camera = Commands::new(CAMERA, LatchState::Released);
        assert_eq!(mode(&camera), Some(DriveMode::Stopped));
        assert!(camera.held().unwrap().contains("operator"), "{:?}", camera.held());
        let held = Commands::new(SIM, LatchState::Held);
        assert_eq!(mode(&held), Some(DriveMode::Stopped), "the hold after a reset survives a restart");
        assert!(held.held().unwrap().contains("reset"));
        let latched = Commands::new(SIM, LatchState::Latched);
        assert_eq!(mode(&latched), Some(DriveMode::EmergencyStop));
        assert!(latched.status(None).estop_latched);
    }

    #[test]
    fn an_emergency_stop_latches_at_once_and_dominates_pause_and_hold() {
        let mut c = Commands::new(SIM, LatchState::Released);
        assert_eq!(c.pause(), Step::Done(Ok("paused".into())));
        assert_eq!(c.emergency_stop(), Step::Persist(LatchState::Latched));
        assert!(c.estop(), "latched before anything was persisted");
        assert_eq!(mode(&c), Some(DriveMode::EmergencyStop));
        // Not persisted: it stays latched and says so.
        assert!(c.persisted(LatchState::Latched, Err("disk full".into())).is_err());
        let (m, why) = c.overriding_mode().unwrap();
        assert_eq!(m, DriveMode::EmergencyStop);
        assert!(why.contains("NOT persisted: disk full"), "{why}");
        assert_eq!(c.status(None).latch_error.as_deref(), Some("disk full"));
        assert!(c.persisted(LatchState::Latched, Ok(())).is_ok());
        assert_eq!(c.status(None).latch_error, None);
        c.pause();
        assert_eq!(mode(&c), Some(DriveMode::EmergencyStop), "a pause does not hide it");
        let (step, persist) = c.resume(BEAT);
        assert!(done(step).unwrap_err().contains("reset"));
        assert_eq!(persist, None);
    }

    #[test]
    fn a_reset_releases_only_once_its_hold_is_on_disk_and_never_drives() {
        let mut c = Commands::new(SIM, LatchState::Latched);
        assert_eq!(c.reset(), Step::Persist(LatchState::Held));
        assert!(c.estop(), "still latched while the hold is written");
        assert!(done(c.resume(BEAT).0).is_err(), "no resume before the reset is done");
        assert!(c.persisted(LatchState::Held, Ok(())).is_ok());
        assert!(!c.estop());
        assert_eq!(mode(&c), Some(DriveMode::Stopped), "reset alone never drives");
        let (step, persist) = c.resume(BEAT);
        assert_eq!(done(step).unwrap(), "resumed");
        assert_eq!(persist, Some(LatchState::Released), "the end of the hold follows to disk");
        assert_eq!(mode(&c), None);
        assert_eq!(done(c.reset()).unwrap(), "no emergency stop was latched");
    }

    #[test]
    fn a_reset_that_cannot_be_persisted_keeps_the_latch() {
        let mut c = Commands::new(SIM, LatchState::Latched);
        c.reset();
        let outcome = c.persisted(LatchState::Held, Err("read-only file system".into()));
        assert!(outcome.unwrap_err().contains("stays latched"));
        assert!(c.estop());
        assert_eq!(mode(&c), Some(DriveMode::EmergencyStop));
    }

    #[test]
    fn an_emergency_stop_overtakes_a_pending_reset() {
        let mut c = Commands::new(SIM, LatchState::Latched);
        c.reset();
        c.emergency_stop();
        // The reset's hold reaches the disk after the new e-stop was latched: stays latched.
        assert!(c.persisted(LatchState::Held, Ok(())).is_err());
        assert!(c.estop());
        assert!(c.persisted(LatchState::Latched, Ok(())).is_ok());
        assert!(c.estop());
    }

    #[test]
    fn commands_that_move_the_car_are_refused_while_latched_or_held() {
        let respawn = Command::Respawn { spawn_point: None };
        let speed = Command::SetTargetSpeed { mps: 5.0 };
        let mut c = Commands::new(SIM, LatchState::Released);
        assert_eq!((c.allows(&respawn), c.allows(&speed)), (Ok(()), Ok(())));
        c.emergency_stop();
        assert!(c.allows(&respawn).unwrap_err().contains("latched"));
        assert!(c.allows(&speed).is_err());
        assert_eq!(c.allows(&Command::Pause), Ok(()));
        c.reset();
        assert!(c.persisted(LatchState::Held, Ok(())).is_ok());
        assert!(c.allows(&respawn).unwrap_err().contains("held"));
        assert_eq!(c.allows(&speed), Ok(()), "a held car's cruise speed may be set: it does not move it");
        c.resume(BEAT);
        assert_eq!(c.allows(&respawn), Ok(()));
    }

    #[test]
    fn the_dead_man_holds_on_silence_and_resume_needs_an_operator() {
        let mut c = Commands::new(CAMERA, LatchState::Released);
        assert!(done(c.resume(None).0).unwrap_err().contains("operator"));
        assert_eq!(done(c.resume(BEAT).0).unwrap(), "resumed");
        assert_eq!(c.check_operator(BEAT), None);
        let silence = Some(1_000_000_001);
        let why = c.check_operator(silence).unwrap();
        assert!(why.contains("operator heartbeat"), "{why}");
        assert_eq!(mode(&c), Some(DriveMode::Stopped));
        assert_eq!(c.check_operator(silence), None, "said once");
        assert!(done(c.resume(silence).0).is_err());
        // Without a required operator silence means nothing.
        let mut sim = Commands::new(SIM, LatchState::Released);
        assert_eq!(sim.check_operator(None), None);
    }

    #[test]
    fn a_hold_waits_for_resume_and_never_hides_an_estop() {
        let mut c = Commands::new(SIM, LatchState::Released);
        c.hold("switched to autopilot".into());
        assert_eq!(c.overriding_mode().unwrap(), (DriveMode::Stopped, "switched to autopilot".into()));
        assert_eq!(done(c.resume(None).0).unwrap(), "resumed");
        c.emergency_stop();
        c.hold("switched to autopilot".into());
        assert_eq!(mode(&c), Some(DriveMode::EmergencyStop));
        assert_eq!(c.held(), None, "the latch's own rules hold it");
    }

    #[test]
    fn pause_and_resume() {
        let mut c = Commands::new(SIM, LatchState::Released);
        assert_eq!(done(c.resume(None).0).unwrap(), "already running");
        c.pause();
        assert_eq!(mode(&c), Some(DriveMode::Paused));
        let (step, persist) = c.resume(None);
        assert_eq!((done(step).unwrap().as_str(), persist), ("resumed", None));
        assert_eq!(mode(&c), None);
    }
}
