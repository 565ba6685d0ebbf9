//! The vehicle process: wiring, the control loop, and staged shutdown.

use crate::actions::{self, AcceptedAction, ActionStats, EstopMailbox, ListenerLinks};
use crate::actuator::calibration_session::{self, CalibrationSession};
use crate::actuator::output::{Output, OutputStatus};
use crate::actuator::{report, ActuatorCommand};
use crate::broadcast::{self, BroadcastSettings, BroadcastStats, Outbox};
use crate::commands::{Commands, Rules, Step};
use crate::config::{Overrides, SourceKind, SteerFrom, VehicleConfig};
use crate::control::{Controller, LaneEstimate, FAILSAFE_BRAKE, MAX_STEER_RAD};
use crate::detections::{DetectionInput, DetectorChange};
use crate::latch::{EstopLatch, LatchState};
use crate::latch_writer::{LatchJob, LatchWriter};
use crate::source::{self, FrameSource, Next, Pacing, SpeedSource};
use crate::teleop::{DriveMailbox, Teleop};
use ads_protocol::gate::SharedOutcomes;
use ads_protocol::{
    Action, ActuatorState, Command, ControlSource, ControlsMsg, DriveMode, DropCounters, Event, Health,
    LaneTruthMsg, Message, NoticeLevel, OperatorCommand, PilotMode, PoseMsg, RejectReason, StageTimings,
    VehicleState,
};
use ads_shmem_ipc::{clock, FrameGeometry, FrameWriter, PixelFormat, Stamp};
use ads_sim::Controls;
use anyhow::Context as _;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// Below this confidence for both lines a detection does not count as seeing the lane.
const MIN_LANE_CONFIDENCE: f32 = 0.2;

#[derive(Debug, clap::Parser)]
#[command(
    name = "ads-vehicle",
    version,
    about = "The ads vehicle: frame source, control loop, broadcaster, actions"
)]
pub struct Args {
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Runs until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = VehicleConfig::load(&args.overrides)?;
    raise_descriptor_limit();
    // Before anything is created: a missing camera or file is an error with nothing to undo,
    // and a latch that cannot be kept would make an e-stop forgettable, so the vehicle does not
    // start without one it has just written and fsynced.
    let (latch, on_disk) = EstopLatch::open(&config.actions.latch_path(&config.vehicle_id))
        .context("the vehicle does not start without an e-stop latch it can persist")?;
    let source = source::open(&config).with_context(|| format!("opening the {:?} source", config.source))?;
    // The outputs start at neutral and stay there until the loop drives them.
    let output = Output::start(&config.actuator).context("opening the actuator (docs/actuators.md)")?;
    let calibration =
        CalibrationSession::new(&config.actuator, output.is_some(), args.overrides.config.clone());
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;

    let geometry = FrameGeometry::packed(config.width, config.height, PixelFormat::Bgr8);
    let writer = FrameWriter::create(&config.frames_ring, geometry, config.frames_ring_slots())
        .with_context(|| format!("creating the frames ring {:?}", config.frames_ring))?;

    let context = zmq::Context::new();
    let threads_stop = Arc::new(AtomicBool::new(false));
    let (outbox, outbox_rx) = Outbox::new();
    let broadcast_stats = Arc::new(BroadcastStats::default());
    let settings = BroadcastSettings {
        vehicle_id: config.vehicle_id.clone(),
        frames_ring: config.frames_ring.clone(),
        frame_size: (config.width, config.height),
        broadcast: config.broadcast.clone(),
        link: config.link.clone(),
        h264: config.h264.clone(),
        fps: config.fps,
        // The action key also signs hellos (docs/protocol.md 2.1); a bad key file stops the
        // vehicle here as it would the action listener.
        hello_key: config.actions.key_file.as_deref().map(ads_protocol::ActionKey::load).transpose()?,
    };
    let broadcaster = broadcast::spawn(
        &context,
        settings,
        outbox_rx,
        Arc::clone(&broadcast_stats),
        Arc::clone(&threads_stop),
    )?;
    let (action_tx, action_rx) = std::sync::mpsc::sync_channel(64);
    let action_stats = Arc::new(ActionStats::default());
    let run = RunClock::start()?;
    let outcomes = SharedOutcomes::default();
    let estops = Arc::new(EstopMailbox::default());
    let drives = Arc::new(DriveMailbox::default());
    let latch_writer = LatchWriter::spawn(latch, outbox.clone(), Arc::clone(&outcomes))
        .context("starting the latch thread")?;
    let links = ListenerLinks {
        to_control: action_tx,
        estops: Arc::clone(&estops),
        drives: Arc::clone(&drives),
        outbox: outbox.clone(),
        stats: Arc::clone(&action_stats),
        outcomes: Arc::clone(&outcomes),
        run_id: run.id.clone(),
        run_start_mono_ns: run.start_mono_ns,
    };
    let listener = actions::spawn_listener(
        &context,
        &config.actions,
        &config.vehicle_id,
        links,
        Arc::clone(&threads_stop),
    )?;
    tracing::info!(
        broadcast = %config.broadcast.endpoint,
        video = %config.link.endpoint,
        actions = %config.actions.endpoint,
        ring = %config.frames_ring,
        control = ?config.control,
        "vehicle running ({}x{}, source {}{})",
        config.width,
        config.height,
        source.kind(),
        match (config.source, source.pacing()) {
            (SourceKind::Sim, _) => format!(" at {} fps, track {:?}", config.fps, config.sim.track),
            (_, Pacing::Fixed { period_ns }) => format!(" at {:.2} fps", 1e9 / period_ns as f64),
            (_, Pacing::External) => " at the source's pace".into(),
        }
    );
    if config.control == SteerFrom::Detections {
        tracing::info!(
            "steering from the {:?} ring; until ads-detection writes it, the car holds still",
            config.detections_ring
        );
    }

    let rules = Rules {
        require_operator: config.require_operator(),
        operator_timeout_ns: config.actions.operator_timeout_ms * 1_000_000,
        drive_on_start: config.drive_on_start(),
    };
    let commands = Commands::new(rules, on_disk);
    match (on_disk, commands.held()) {
        (LatchState::Latched, _) => tracing::warn!(
            "the emergency stop is latched (from {}): the car stays stopped until a reset, then a resume",
            config.actions.latch_path(&config.vehicle_id).display()
        ),
        (_, Some(why)) => tracing::info!("the car holds: {why}"),
        _ => {}
    }
    let links = CommandLinks {
        run,
        outcomes,
        stats: action_stats,
        estops,
        drives,
        latch: latch_writer,
        action_port: listener.port,
        signed_actions: config.actions.key_file.is_some(),
    };
    let mut vehicle = Vehicle::new(config, source, writer, outbox, broadcast_stats, commands, links);
    vehicle.output = output;
    vehicle.threads = vec![("broadcaster", broadcaster), ("action listener", listener.thread)];
    vehicle.calibration = calibration;
    ads_service::ready("running: frames ring created, sockets bound");
    vehicle.run_until(&stop, &action_rx);

    // Staged shutdown: the loop has stopped producing; let the threads flush and exit, then
    // drop the writer, which closes and unlinks the ring.
    threads_stop.store(true, Ordering::Relaxed);
    for (name, handle) in std::mem::take(&mut vehicle.threads) {
        if handle.join().is_err() {
            tracing::error!("the {name} thread panicked");
        }
    }
    let died = vehicle.thread_died.take();
    drop(vehicle);
    if let Some(name) = died {
        anyhow::bail!("the {name} thread ended while the vehicle ran: stopped (outputs to neutral)");
    }
    tracing::info!("vehicle stopped");
    Ok(())
}

struct Vehicle {
    config: VehicleConfig,
    source: Box<dyn FrameSource>,
    /// Steering servo and ESC of a real car (`None`: the source actuates, or nothing does).
    output: Option<Output>,
    /// Their status, read once per tick: what the tick decides on and publishes.
    outputs: Option<OutputStatus>,
    /// Calibration pulses and saves from the viewer's calibration page.
    calibration: CalibrationSession,
    /// Why the source delivers no more frames (a video at its end), until a respawn.
    source_ended: Option<String>,
    writer: FrameWriter,
    outbox: Outbox,
    controller: Controller,
    detections: DetectionInput,
    broadcast_stats: Arc<BroadcastStats>,
    commands: Commands,
    /// The pilot mode and the operator's drive commands.
    teleop: Teleop,
    /// Drive commands the mailbox dropped, as of its last take.
    drives_dropped: u64,
    links: CommandLinks,
    /// Resets waiting for their hold to reach the disk, in the order their jobs were queued.
    pending_resets: VecDeque<(Action, u64)>,
    target_speed: f64,
    frame_id: u64,
    controls: Controls,
    mode: DriveMode,
    stop_reason: Option<String>,
    timings: StageTimings,
    fps: FpsMeter,
    /// Wall clock at start: tells this run of the vehicle from the previous one.
    started_ns: u64,
    /// The threads the car cannot do without (no state out, or no e-stop in): one that ends
    /// while the loop runs stops the vehicle.
    threads: Vec<(&'static str, std::thread::JoinHandle<()>)>,
    thread_died: Option<&'static str>,
}

impl Vehicle {
    fn new(
        config: VehicleConfig,
        source: Box<dyn FrameSource>,
        writer: FrameWriter,
        outbox: Outbox,
        broadcast_stats: Arc<BroadcastStats>,
        commands: Commands,
        links: CommandLinks,
    ) -> Self {
        Self {
            target_speed: config.drive.target_speed_mps,
            detections: DetectionInput::new(&config.detections_ring),
            config,
            source,
            output: None,
            outputs: None,
            calibration: CalibrationSession::default(),
            source_ended: None,
            writer,
            outbox,
            controller: Controller::default(),
            broadcast_stats,
            commands,
            teleop: Teleop::default(),
            drives_dropped: 0,
            links,
            pending_resets: VecDeque::new(),
            frame_id: 0,
            controls: Controls::default(),
            mode: DriveMode::Driving,
            stop_reason: None,
            timings: StageTimings::default(),
            fps: FpsMeter::default(),
            started_ns: clock::wall_ns(),
            threads: Vec::new(),
            thread_died: None,
        }
    }

    /// Whether a thread the car depends on has ended (a panic, a socket error): then the
    /// vehicle brakes, puts its outputs to neutral and exits non-zero, so that nobody drives a
    /// car that no longer reports or takes an e-stop (systemd restarts it, held).
    fn check_threads(&mut self, stop: &AtomicBool) {
        let Some((name, _)) = self.threads.iter().find(|(_, h)| h.is_finished()) else { return };
        let name = *name;
        tracing::error!("the {name} thread ended: stopping the car and the vehicle");
        self.thread_died = Some(name);
        self.controls = self.controller.stop(1.0);
        self.source.actuate(0.0, self.controls);
        if let Some(output) = &self.output {
            output.stop("a vehicle thread ended", clock::monotonic_ns());
        }
        stop.store(true, Ordering::Relaxed);
    }

    fn run_until(&mut self, stop: &AtomicBool, actions: &Receiver<AcceptedAction>) {
        let Pacing::Fixed { period_ns: tick_ns } = self.source.pacing() else {
            return self.run_on_source_clock(stop, actions);
        };
        let mut next_tick = clock::monotonic_ns();
        while !stop.load(Ordering::Relaxed) {
            ads_service::watchdog();
            self.check_threads(stop);
            self.take_commands(actions);
            self.tick(tick_ns as f64 / 1e9);
            next_tick += tick_ns;
            let now = clock::monotonic_ns();
            if now < next_tick {
                // Idle until the next frame: take detections the moment they land.
                self.detections.wait_until(next_tick);
            } else if now - next_tick > tick_ns {
                // Fell behind by more than a frame (e.g. the machine was suspended): do not
                // try to catch up with a burst.
                next_tick = now;
            }
        }
    }

    /// The loop for sources with a clock of their own (camera, CARLA): each frame's arrival
    /// is a tick; without frames (paused, device lost) it still ticks every 100 ms so state
    /// keeps flowing and says why.
    fn run_on_source_clock(&mut self, stop: &AtomicBool, actions: &Receiver<AcceptedAction>) {
        const IDLE_TICK_NS: u64 = 100_000_000;
        let mut last = clock::monotonic_ns();
        while !stop.load(Ordering::Relaxed) {
            ads_service::watchdog();
            self.check_threads(stop);
            self.take_commands(actions);
            self.source.wait_frame(clock::monotonic_ns() + IDLE_TICK_NS);
            // An e-stop that arrived during the wait brakes in this tick.
            self.take_commands(actions);
            let now = clock::monotonic_ns();
            // The time the controls will have been applied for, bounded after a stall.
            let dt = (now.saturating_sub(last) as f64 / 1e9).clamp(0.001, 0.2);
            last = now;
            self.tick(dt);
        }
    }

    fn tick(&mut self, dt: f64) {
        let started = clock::monotonic_ns();
        self.outputs = self.output.as_ref().map(Output::status);
        for text in self.source.take_notices() {
            self.notice(NoticeLevel::Info, text);
        }
        self.detections.poll();
        let (news, changes) = self.detections.take_news();
        for change in changes {
            match change {
                DetectorChange::Connected { pid } => {
                    self.notice(NoticeLevel::Info, format!("detector connected (pid {pid})"))
                }
                DetectorChange::Lost(why) => {
                    self.notice(NoticeLevel::Warning, format!("detector lost: {why}"))
                }
            }
        }
        for (mut d, read_wall_ns) in news {
            d.control_read_ns = read_wall_ns;
            let latency_us = read_wall_ns.saturating_sub(d.capture_ns) / 1000;
            self.timings.detection_latency_us = u32::try_from(latency_us).unwrap_or(u32::MAX);
            let capture = d.capture_ns;
            self.outbox.send(Message::Detection(d), capture);
        }
        let now_mono = clock::monotonic_ns();
        if let Some(text) = self.commands.check_operator(self.links.heartbeat_age_ns(now_mono)) {
            self.notice(NoticeLevel::Warning, text);
        }
        // An emergency stop dominates a pause: the car brakes and the state says so.
        if self.commands.paused() && !self.commands.estop() {
            self.set_mode(DriveMode::Paused, None);
            self.stop_outputs("paused", now_mono);
            self.writer.heartbeat();
        } else {
            self.controls = self.decide(now_mono, dt);
            self.drive_outputs(now_mono);
            self.source.actuate(dt, self.controls);
            self.timings.control_us = elapsed_us(started);
            let produced_before = self.frame_id;
            self.produce_frame();
            if self.frame_id != produced_before {
                self.publish_controls(produced_before, now_mono);
            }
        }
        self.publish_state();
    }

    /// Controls for this tick, and the mode they put the car in.
    fn decide(&mut self, now_mono: u64, dt: f64) -> Controls {
        if let Some((mode, reason)) = self.commands.overriding_mode() {
            let brake = if mode == DriveMode::EmergencyStop { 1.0 } else { FAILSAFE_BRAKE };
            self.set_mode(mode, Some(reason));
            return self.controller.stop(brake);
        }
        if let Some(reason) = self.output_problem() {
            self.set_mode(DriveMode::Failsafe, Some(reason));
            return self.controller.stop(FAILSAFE_BRAKE);
        }
        let lookahead = self.config.drive.lookahead_m;
        // Unknown on a camera car (no encoder): the throttle goes open-loop and capped.
        let speed = (self.source.speed_source() != SpeedSource::None).then(|| self.source.motion().speed_mps);
        let pilot = self.teleop.pilot();
        let now_run = self.links.run_ns(now_mono);
        let operator = self.teleop.in_force(now_run);
        let source_problem = self.source_ended.clone().or_else(|| self.source.problem());
        if pilot.takes_drive() {
            // The operator drives from the video: no picture, no driving, in every mode.
            let why_not = source_problem.clone().or_else(|| self.teleop.why_not_driving(now_run));
            if let (None, Some(op)) = (why_not.clone(), operator) {
                if pilot == PilotMode::Manual {
                    self.set_mode(DriveMode::Driving, None);
                    self.controller.reset();
                    return operator_controls(op, op.steering * self.steering_scale());
                }
            } else {
                self.set_mode(DriveMode::Failsafe, why_not);
                return self.controller.stop(FAILSAFE_BRAKE);
            }
        }
        let lane = if let Some(reason) = source_problem {
            Err(reason)
        } else {
            match self.config.control {
                // Config validation allows truth only with the simulator, which has it.
                SteerFrom::Truth => match self.source.lane_reference(lookahead) {
                    Some(r) => Ok(LaneEstimate { target_y_m: r.lookahead_offset, lookahead_m: lookahead }),
                    None => Err(format!("the {} source has no ground truth", self.source.kind())),
                },
                SteerFrom::Detections => self.lane_from_detections(now_mono, lookahead),
            }
        };
        match lane {
            // Assist: the autopilot's steering at the operator's pace.
            Ok(lane) if pilot == PilotMode::Assist => {
                let Some(op) = operator else {
                    // Checked above; should the lease end in between, the brake.
                    self.set_mode(DriveMode::Failsafe, self.teleop.why_not_driving(now_run));
                    return self.controller.stop(FAILSAFE_BRAKE);
                };
                self.set_mode(DriveMode::Driving, None);
                let steering = self.controller.drive(lane, speed, self.target_speed, dt).steering;
                self.controller.reset();
                operator_controls(op, steering)
            }
            Ok(lane) => {
                self.set_mode(DriveMode::Driving, None);
                self.controller.drive(lane, speed, self.target_speed, dt)
            }
            Err(reason) => {
                self.set_mode(DriveMode::Failsafe, Some(reason));
                self.controller.stop(FAILSAFE_BRAKE)
            }
        }
    }

    /// Radians of a full operator steering command: the servo's full travel on a real car, the
    /// controller's largest angle in the simulator.
    fn steering_scale(&self) -> f64 {
        if self.output.is_some() {
            self.config.actuator.max_steering_rad
        } else {
            MAX_STEER_RAD
        }
    }

    /// The outputs' command for this tick: the loop's controls while driving, the brake in
    /// every other mode (the output thread goes to neutral by itself if the loop stops).
    fn drive_outputs(&mut self, now_mono: u64) {
        let Some(output) = &self.output else { return };
        if self.mode == DriveMode::Driving {
            // A lease left over from before a resume never comes back at the next stop.
            self.calibration.end();
            let max_steering = self.config.actuator.max_steering_rad;
            output.command(ActuatorCommand::from_controls(self.controls, max_steering), now_mono);
        } else {
            let reason = self.stop_reason.clone();
            self.stop_outputs(reason.as_deref().unwrap_or("stopped"), now_mono);
        }
    }

    /// The outputs of a stopped car: the brake, or a calibration pulse while its lease holds
    /// and the car may take it.
    fn stop_outputs(&mut self, reason: &str, now_mono: u64) {
        let allowed = self.may_calibrate();
        let Some(output) = &self.output else { return };
        match self.calibration.hold(now_mono, allowed) {
            Some((pulses, until)) => output.hold(pulses, until, now_mono),
            None => output.stop(reason, now_mono),
        }
    }

    /// Whether a calibration pulse may be put out now (calibration_session.rs).
    fn may_calibrate(&self) -> Result<(), String> {
        let speed = (self.source.speed_source() != SpeedSource::None).then(|| self.source.motion().speed_mps);
        let mode = self.commands.overriding_mode().map(|(mode, _)| mode);
        calibration_session::may_calibrate(mode, self.output_problem().as_deref(), speed)
    }

    /// Why the outputs cannot be trusted to drive, from this tick's snapshot.
    fn output_problem(&self) -> Option<String> {
        self.outputs.as_ref().and_then(report::problem)
    }

    fn lane_from_detections(&self, now_mono: u64, lookahead: f64) -> Result<LaneEstimate, String> {
        let timeout_ns = self.config.drive.detection_timeout_ms * 1_000_000;
        let (Some(latest), Some(age)) = (&self.detections.latest, self.detections.age_ns(now_mono)) else {
            return Err(format!(
                "no detections yet (is ads-detection running on ring {:?}?)",
                self.config.detections_ring
            ));
        };
        if age > timeout_ns {
            return Err(format!(
                "newest detection is {} ms old (limit {} ms)",
                age / 1_000_000,
                self.config.drive.detection_timeout_ms
            ));
        }
        let Some(lanes) = &latest.lanes else { return Err("the detector found no lane".into()) };
        if lanes.left_confidence.max(lanes.right_confidence) < MIN_LANE_CONFIDENCE {
            return Err(format!(
                "the detector is not sure of the lane (confidence {:.2}/{:.2})",
                lanes.left_confidence, lanes.right_confidence
            ));
        }
        let curvature = lanes.curvature_radius_m.map_or(0.0, |r| 1.0 / f64::from(r));
        Ok(LaneEstimate::from_lane_pose(
            f64::from(lanes.lateral_offset_m),
            f64::from(lanes.heading_error_rad),
            curvature,
            lookahead,
        ))
    }

    fn produce_frame(&mut self) {
        let started = clock::monotonic_ns();
        let (capture_mono, capture_wall) = match self.source.next_frame() {
            Ok(Next::Ready { capture_mono_ns, capture_wall_ns }) => (capture_mono_ns, capture_wall_ns),
            Ok(Next::NotYet) => return self.writer.heartbeat(),
            Ok(Next::Ended(reason)) => {
                if self.source_ended.is_none() {
                    self.notice(NoticeLevel::Warning, format!("source ended: {reason}"));
                    self.source_ended = Some(format!("source ended: {reason}"));
                }
                return self.writer.heartbeat();
            }
            Err(e) => {
                self.notice(
                    NoticeLevel::Warning,
                    format!("no frame from the {} source: {e}", self.source.kind()),
                );
                return self.writer.heartbeat();
            }
        };
        let stamp = Stamp {
            id: self.frame_id,
            capture_mono_ns: capture_mono.unwrap_or(started),
            capture_wall_ns: capture_wall.unwrap_or_else(clock::wall_ns),
        };
        let stride = self.writer.geometry().stride as usize;
        let loaned = clock::monotonic_ns();
        let mut loan = self.writer.loan();
        let written = clock::monotonic_ns();
        self.source.write_frame(self.frame_id, loan.pixels_mut(), stride);
        let publishing = clock::monotonic_ns();
        loan.publish(stamp);
        let done = clock::monotonic_ns();
        self.timings.source_us = elapsed_us(started);
        self.timings.noise_us = self.source.noise_us();
        self.timings.ring_write_us =
            u32::try_from((written - loaned + done - publishing) / 1000).unwrap_or(u32::MAX);
        self.fps.tick(started);
        self.frame_id += 1;
        let Some(truth) = self.source.truth() else { return };
        let to_u32 = |i: Option<usize>| i.and_then(|i| u32::try_from(i).ok());
        let message = LaneTruthMsg {
            frame_id: stamp.id,
            h_samples: truth.h_samples,
            lanes: truth.lanes,
            ego_left: to_u32(truth.ego_left),
            ego_right: to_u32(truth.ego_right),
        };
        self.outbox.send(Message::Truth(message), stamp.capture_wall_ns);
    }

    /// Everything the command side has for the loop, e-stops first: what the latch thread
    /// finished, raised e-stops, then queued actions.
    fn take_commands(&mut self, actions: &Receiver<AcceptedAction>) {
        for done in self.links.latch.finished() {
            let outcome = self.commands.persisted(done.state, done.result.clone());
            if let Err(e) = &done.result {
                self.notice(NoticeLevel::Error, format!("the e-stop latch could not be persisted: {e}"));
            }
            if done.state == LatchState::Held {
                if let Some((action, seq)) = self.pending_resets.pop_front() {
                    self.acknowledge(action, seq, outcome, Some(done.result.is_ok()));
                }
            }
        }
        for (action, seq, outcome) in self.calibration.finished() {
            self.acknowledge(action, seq, outcome, None);
        }
        if self.links.estops.raised() {
            self.emergency_stop(self.links.estops.take());
        }
        let (order, dropped) = self.links.drives.take();
        self.drives_dropped = dropped;
        if let Some(order) = order {
            let now_run = self.links.run_ns(clock::monotonic_ns());
            self.teleop.take(order, now_run, clock::wall_ns());
        }
        let mut applied = false;
        while let Ok(accepted) = actions.try_recv() {
            self.apply(accepted);
            applied = true;
        }
        // The state right after actions reflects them, even while paused; once for a burst.
        if applied {
            self.publish_state();
        }
    }

    /// Brakes now (this tick's controls are the full brake), then has the latch persisted; the
    /// latch thread acknowledges `estops` once it is on disk.
    fn emergency_stop(&mut self, estops: Vec<AcceptedAction>) {
        let Step::Persist(state) = self.commands.emergency_stop() else { return };
        self.controls = self.controller.stop(1.0);
        self.calibration.end();
        if let Some(output) = &self.output {
            output.stop("emergency stop", clock::monotonic_ns());
        }
        // A paused source would freeze the car mid-stop: it keeps running so the brake acts.
        self.source.set_paused(false);
        let senders: Vec<&str> = estops.iter().map(|a| a.action.sender.as_str()).collect();
        let why = format!("emergency stop from {senders:?}");
        self.notice(NoticeLevel::Warning, why.clone());
        self.links.latch.submit(LatchJob { state, why, estops });
        if let Some((mode, reason)) = self.commands.overriding_mode() {
            self.set_mode(mode, Some(reason));
        }
        self.publish_state();
    }

    fn apply(&mut self, accepted: AcceptedAction) {
        let AcceptedAction { action, seq } = accepted;
        if action.command == Command::EmergencyStop {
            // E-stops come through their mailbox; one here still stops.
            return self.emergency_stop(vec![AcceptedAction { action, seq }]);
        }
        if let Err(why) = self.commands.allows(&action.command) {
            return self.acknowledge(action, seq, Err(why), None);
        }
        let step = match action.command {
            Command::Pause => {
                let step = self.commands.pause();
                // Under an e-stop the source keeps running, so the brake acts.
                self.source.set_paused(!self.commands.estop());
                step
            }
            Command::Resume => {
                let age = self.links.heartbeat_age_ns(clock::monotonic_ns());
                let (step, persist) = self.commands.resume(age);
                if matches!(step, Step::Done(Ok(_))) {
                    self.source.set_paused(false);
                }
                if let Some(state) = persist {
                    let why = format!("resume from {:?}", action.sender);
                    self.links.latch.submit(LatchJob { state, why, estops: Vec::new() });
                }
                step
            }
            Command::Reset => self.commands.reset(),
            // E-stops are handled above; heartbeats are noted by the listener, drive commands
            // come through their mailbox.
            Command::EmergencyStop | Command::Heartbeat | Command::Drive { .. } => {
                Step::Done(Ok("heartbeat".into()))
            }
            Command::SetDriveMode { mode } => {
                let change = self.teleop.set_mode(mode, &action.sender);
                self.links.drives.set_driver(self.teleop.driver().map(str::to_owned));
                if let Some(why) = change.hold {
                    self.commands.hold(why);
                }
                self.notice(NoticeLevel::Info, format!("pilot: {} ({})", mode.as_str(), change.detail));
                Step::Done(Ok(change.detail))
            }
            Command::Respawn { spawn_point } => {
                let index = spawn_point.unwrap_or(0) as usize;
                let outcome = self.source.respawn(index);
                if outcome.is_ok() {
                    self.controller.reset();
                    self.controls = Controls::default();
                    self.source_ended = None;
                }
                Step::Done(outcome)
            }
            Command::SetTargetSpeed { mps } => Step::Done(if (0.0..=40.0).contains(&mps) {
                self.target_speed = mps;
                Ok(format!("target speed {mps:.1} m/s"))
            } else {
                Err(format!("target speed {mps} m/s is outside 0..=40"))
            }),
            Command::CalibratePulse { channel, us, lease_ms } => {
                let expires = self.links.run.start_mono_ns.saturating_add(action.run.expires_run_ns);
                let allowed = self.may_calibrate();
                let now = clock::monotonic_ns();
                Step::Done(self.calibration.pulse(channel, us, lease_ms, expires, now, allowed))
            }
            Command::CalibrateRelease => Step::Done(self.calibration.release()),
            Command::CalibrateSave { values } => match self.calibration.save(action.clone(), seq, values) {
                Some(refused) => Step::Done(refused),
                // Acknowledged once written (take_commands).
                None => return,
            },
        };
        match step {
            Step::Done(outcome) => self.acknowledge(action, seq, outcome, None),
            Step::Persist(state) => {
                // A reset: answered once its hold is on disk (take_commands).
                let why = format!("reset from {:?}", action.sender);
                self.links.latch.submit(LatchJob { state, why, estops: Vec::new() });
                self.pending_resets.push_back((action, seq));
            }
        }
    }

    /// Acknowledges an action the loop decided, and records the outcome for retransmissions.
    fn acknowledge(
        &mut self,
        action: Action,
        seq: u64,
        outcome: Result<String, String>,
        persisted: Option<bool>,
    ) {
        let (accepted, reason, detail) = match outcome {
            Ok(detail) => (true, None, detail),
            Err(detail) => {
                self.links.stats.rejected.fetch_add(1, Ordering::Relaxed);
                (false, Some(RejectReason::NotAllowed), detail)
            }
        };
        tracing::info!(id = %action.id, accepted, %detail, "action done");
        let ack = Event::Ack {
            action_id: action.id,
            sender: action.sender,
            seq,
            accepted,
            reason,
            detail,
            persisted,
        };
        self.links.record(&ack);
        self.outbox.send(Message::Event(ack), clock::wall_ns());
    }

    fn set_mode(&mut self, mode: DriveMode, reason: Option<String>) {
        if mode != self.mode {
            let text = match &reason {
                Some(r) => format!("mode {:?} → {mode:?}: {r}", self.mode),
                None => format!("mode {:?} → {mode:?}", self.mode),
            };
            let level = if mode == DriveMode::Failsafe { NoticeLevel::Warning } else { NoticeLevel::Info };
            self.mode = mode;
            self.notice(level, text);
        }
        self.stop_reason = reason;
    }

    fn notice(&self, level: NoticeLevel, text: String) {
        match level {
            NoticeLevel::Info => tracing::info!("{text}"),
            _ => tracing::warn!("{text}"),
        }
        self.outbox.send(Message::Event(Event::Notice { level, text }), clock::wall_ns());
    }

    /// The label of the frame `frame_id`: what the loop commanded in the tick that produced it,
    /// and the operator's command in force (recordings pair them for training).
    fn publish_controls(&mut self, frame_id: u64, now_mono: u64) {
        let now_run = self.links.run_ns(now_mono);
        let scale = self.steering_scale();
        let c = self.controls;
        let message = ControlsMsg {
            frame_id,
            pilot: self.teleop.pilot(),
            mode: self.mode,
            steering: (c.steering / scale).clamp(-1.0, 1.0),
            throttle: if c.brake > 0.0 { -c.brake } else { c.throttle },
            operator: self.teleop.in_force(now_run),
        };
        self.outbox.send(Message::Controls(message), clock::wall_ns());
    }

    fn publish_state(&mut self) {
        let m = self.source.motion();
        let now_wall = clock::wall_ns();
        let now_mono = clock::monotonic_ns();
        let age = self.detections.age_ns(now_mono);
        let timeout_ns = self.config.drive.detection_timeout_ms * 1_000_000;
        self.timings.encode_us =
            u32::try_from(self.broadcast_stats.last_encode_us.load(Ordering::Relaxed)).unwrap_or(0);
        self.timings.send_us =
            u32::try_from(self.broadcast_stats.last_send_us.load(Ordering::Relaxed)).unwrap_or(0);
        let state = VehicleState {
            frame_id: self.frame_id.saturating_sub(1),
            pose: PoseMsg { x_m: m.x_m, y_m: m.y_m, yaw_rad: m.yaw_rad },
            speed_mps: m.speed_mps,
            target_speed_mps: self.target_speed,
            // No vehicle model (camera, video): what was commanded.
            steering_rad: m.steering_rad.unwrap_or(self.controls.steering),
            throttle: self.controls.throttle,
            brake: self.controls.brake,
            mode: self.mode,
            paused: self.commands.paused(),
            control: match self.config.control {
                SteerFrom::Detections => ControlSource::Detections,
                SteerFrom::Truth => ControlSource::Truth,
            },
            source: self.source.kind().into(),
            fps: self.fps.fps(),
            timings: self.timings,
            drops: DropCounters {
                frames_not_broadcast: self.broadcast_stats.frames_not_broadcast.load(Ordering::Relaxed),
                frames_overrun: self.broadcast_stats.frames_overrun.load(Ordering::Relaxed),
                messages_dropped: self.outbox.dropped()
                    + self.broadcast_stats.send_failures.load(Ordering::Relaxed),
                actions_rejected: self.links.stats.rejected.load(Ordering::Relaxed),
                actions_unauthenticated: self.links.stats.unauthenticated.load(Ordering::Relaxed),
                actions_replayed: self.links.stats.replayed.load(Ordering::Relaxed),
            },
            health: Health {
                detections_fresh: age.is_some_and(|a| a <= timeout_ns),
                detection_age_ms: age.map(|a| u32::try_from(a / 1_000_000).unwrap_or(u32::MAX)),
                stop_reason: self.stop_reason.clone(),
            },
            distance_m: m.odometer_m,
            started_ns: self.started_ns,
            truth_lateral_offset_m: self
                .source
                .lane_reference(self.config.drive.lookahead_m)
                .map(|r| r.lateral_offset),
            commands: self.links.status(&self.commands, now_mono),
            link: self
                .broadcast_stats
                .video
                .link
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            actuator: self.actuator_state(),
            teleop: self.teleop.status(self.links.run_ns(now_mono), self.drives_dropped),
        };
        self.outbox.send(Message::State(state), now_wall);
    }
}

impl Vehicle {
    /// `state.actuator`: this tick's snapshot of the outputs, where the speed comes from, and
    /// the calibration.
    fn actuator_state(&self) -> ActuatorState {
        let mut state = report::state(self.outputs.as_ref(), self.source.speed_source().as_str());
        self.calibration.describe(&mut state, clock::monotonic_ns());
        state
    }
}

/// This run of the vehicle: a random id and the monotonic instant it started.
#[derive(Debug, Clone)]
struct RunClock {
    id: String,
    start_mono_ns: u64,
}

impl RunClock {
    fn start() -> anyhow::Result<Self> {
        use std::io::Read as _;
        let mut bytes = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("reading random bytes for the run id")?;
        let id = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { id, start_mono_ns: clock::monotonic_ns() })
    }
}

/// What the control loop's command side is wired to: the run's identity, the outcomes
/// retransmissions are answered from, the listener's counters and heartbeat, the e-stop
/// mailbox and the latch thread.
struct CommandLinks {
    run: RunClock,
    outcomes: SharedOutcomes,
    stats: Arc<ActionStats>,
    estops: Arc<EstopMailbox>,
    drives: Arc<DriveMailbox>,
    latch: LatchWriter,
    /// Where actions go, and whether they must be signed: advertised in every state.
    action_port: u16,
    signed_actions: bool,
}

impl CommandLinks {
    /// Monotonic ns since the last operator heartbeat, if any.
    fn heartbeat_age_ns(&self, now_mono: u64) -> Option<u64> {
        match self.stats.last_heartbeat_mono_ns.load(Ordering::Relaxed) {
            0 => None,
            t => Some(now_mono.saturating_sub(t)),
        }
    }

    /// The run's clock (what actions' expiries and drive leases are judged against).
    fn run_ns(&self, now_mono: u64) -> u64 {
        now_mono.saturating_sub(self.run.start_mono_ns)
    }

    fn record(&self, ack: &Event) {
        if let Event::Ack { action_id, .. } = ack {
            self.outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).decide(action_id, ack);
        }
    }

    fn status(&self, commands: &Commands, now_mono: u64) -> ads_protocol::CommandStatus {
        let mut status = commands.status(self.heartbeat_age_ns(now_mono));
        status.run_id = self.run.id.clone();
        status.run_ns = self.run_ns(now_mono);
        status.action_port = self.action_port;
        status.signed_actions = self.signed_actions;
        status
    }
}

/// Raises the soft limit on open descriptors to the hard one: every TCP connection to the
/// PUB or video port costs a descriptor, and 1,024 (the usual soft limit) is reached from the
/// network without any key. The latch needs none (it stays open), but new viewers and the
/// detector's ring do. The units set `LimitNOFILE=` for the same reason.
fn raise_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("could not raise the open-file limit: {e}");
        }
    }
}

/// Controls from an operator's command: `steering_rad` already scaled, the throttle's sign
/// choosing throttle or brake.
fn operator_controls(op: OperatorCommand, steering_rad: f64) -> Controls {
    let (throttle, brake) = if op.throttle >= 0.0 { (op.throttle, 0.0) } else { (0.0, -op.throttle) };
    Controls { steering: steering_rad, throttle, brake }
}

fn elapsed_us(since_mono_ns: u64) -> u32 {
    u32::try_from(clock::monotonic_ns().saturating_sub(since_mono_ns) / 1000).unwrap_or(u32::MAX)
}

/// Frames produced in the last full second.
#[derive(Debug, Default)]
struct FpsMeter {
    window_start_ns: u64,
    count: u32,
    last: f32,
}

impl FpsMeter {
    fn tick(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            let span = (now_ns - self.window_start_ns) as f32 / 1e9;
            self.last = if self.window_start_ns == 0 { 0.0 } else { self.count as f32 / span };
            self.window_start_ns = now_ns;
            self.count = 0;
        }
        self.count += 1;
    }

    fn fps(&self) -> f32 {
        self.last
    }
}
