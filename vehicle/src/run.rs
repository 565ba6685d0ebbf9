//! The vehicle process: wiring, the control loop, and staged shutdown.

use crate::actions::{self, AcceptedAction, ActionStats};
use crate::broadcast::{self, BroadcastSettings, BroadcastStats, Outbox};
use crate::config::{Overrides, SourceKind, SteerFrom, VehicleConfig};
use crate::control::{Controller, LaneEstimate, FAILSAFE_BRAKE};
use crate::detections::{DetectionInput, DetectorChange};
use ads_protocol::{
    Command, ControlSource, DriveMode, DropCounters, Event, Health, LaneTruthMsg, Message, NoticeLevel,
    PoseMsg, RejectReason, StageTimings, VehicleState,
};
use ads_shmem_ipc::{clock, FrameGeometry, FrameWriter, PixelFormat, Stamp};
use ads_sim::{Controls, SimConfig, Simulator};
use anyhow::Context as _;
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
    anyhow::ensure!(
        config.source == SourceKind::Sim,
        "source {:?} is not available in this build yet; use --source sim",
        config.source
    );
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;

    let geometry = FrameGeometry::packed(config.width, config.height, PixelFormat::Bgr8);
    let writer = FrameWriter::create(&config.frames_ring, geometry, config.ring_slots)
        .with_context(|| format!("creating the frames ring {:?}", config.frames_ring))?;

    let context = zmq::Context::new();
    let threads_stop = Arc::new(AtomicBool::new(false));
    let (outbox, outbox_rx) = Outbox::new();
    let broadcast_stats = Arc::new(BroadcastStats::default());
    let settings = BroadcastSettings {
        endpoint: config.broadcast.endpoint.clone(),
        vehicle_id: config.vehicle_id.clone(),
        frames_ring: config.frames_ring.clone(),
        jpeg_quality: config.broadcast.jpeg_quality,
        max_fps: config.broadcast.max_fps,
        send_hwm: config.broadcast.send_hwm,
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
    let listener = actions::spawn_listener(
        &context,
        &config.actions,
        &config.vehicle_id,
        action_tx,
        outbox.clone(),
        Arc::clone(&action_stats),
        Arc::clone(&threads_stop),
    )?;
    tracing::info!(
        broadcast = %config.broadcast.endpoint,
        actions = %config.actions.endpoint,
        ring = %config.frames_ring,
        control = ?config.control,
        "vehicle running ({}x{} at {} fps, track {:?})",
        config.width, config.height, config.fps, config.sim.track
    );
    if config.control == SteerFrom::Detections {
        tracing::info!(
            "steering from the {:?} ring; until ads-detection writes it, the car holds still",
            config.detections_ring
        );
    }

    let sim = Simulator::new(SimConfig {
        width: config.width,
        height: config.height,
        track: config.sim.track,
        seed: config.sim.seed,
        ..SimConfig::default()
    });
    let mut vehicle = Vehicle::new(config, sim, writer, outbox, broadcast_stats, action_stats);
    crate::service::ready("running: frames ring created, sockets bound");
    vehicle.run_until(&stop, &action_rx);

    // Staged shutdown: the loop has stopped producing; let the threads flush and exit, then
    // drop the writer, which closes and unlinks the ring.
    threads_stop.store(true, Ordering::Relaxed);
    for (name, handle) in [("broadcaster", broadcaster), ("action listener", listener)] {
        if handle.join().is_err() {
            tracing::error!("the {name} thread panicked");
        }
    }
    drop(vehicle);
    tracing::info!("vehicle stopped");
    Ok(())
}

struct Vehicle {
    config: VehicleConfig,
    sim: Simulator,
    writer: FrameWriter,
    outbox: Outbox,
    controller: Controller,
    detections: DetectionInput,
    broadcast_stats: Arc<BroadcastStats>,
    action_stats: Arc<ActionStats>,
    paused: bool,
    estop: bool,
    target_speed: f64,
    frame_id: u64,
    controls: Controls,
    mode: DriveMode,
    stop_reason: Option<String>,
    timings: StageTimings,
    fps: FpsMeter,
}

impl Vehicle {
    fn new(
        config: VehicleConfig,
        sim: Simulator,
        writer: FrameWriter,
        outbox: Outbox,
        broadcast_stats: Arc<BroadcastStats>,
        action_stats: Arc<ActionStats>,
    ) -> Self {
        Self {
            target_speed: config.drive.target_speed_mps,
            detections: DetectionInput::new(&config.detections_ring),
            config,
            sim,
            writer,
            outbox,
            controller: Controller::default(),
            broadcast_stats,
            action_stats,
            paused: false,
            estop: false,
            frame_id: 0,
            controls: Controls::default(),
            mode: DriveMode::Driving,
            stop_reason: None,
            timings: StageTimings::default(),
            fps: FpsMeter::default(),
        }
    }

    fn run_until(&mut self, stop: &AtomicBool, actions: &Receiver<AcceptedAction>) {
        let tick_ns = (1e9 / self.config.fps) as u64;
        let mut next_tick = clock::monotonic_ns();
        while !stop.load(Ordering::Relaxed) {
            crate::service::watchdog();
            while let Ok(accepted) = actions.try_recv() {
                self.apply(accepted);
            }
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

    fn tick(&mut self, dt: f64) {
        let started = clock::monotonic_ns();
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
        for (d, read_wall_ns) in news {
            let latency_us = read_wall_ns.saturating_sub(d.capture_ns) / 1000;
            self.timings.detection_latency_us = u32::try_from(latency_us).unwrap_or(u32::MAX);
            let capture = d.capture_ns;
            self.outbox.send(Message::Detection(d), capture);
        }
        let now_wall = clock::wall_ns();
        if self.paused {
            self.set_mode(DriveMode::Paused, None);
            self.writer.heartbeat();
        } else {
            self.controls = self.decide(now_wall, dt);
            self.sim.step(dt, self.controls);
            self.timings.control_us = elapsed_us(started);
            self.produce_frame();
        }
        self.publish_state();
    }

    /// Controls for this tick, and the mode they put the car in.
    fn decide(&mut self, now_wall: u64, dt: f64) -> Controls {
        if self.estop {
            self.set_mode(DriveMode::EmergencyStop, Some("emergency stop (send resume to release)".into()));
            return self.controller.stop(1.0);
        }
        let lookahead = self.config.drive.lookahead_m;
        let speed = self.sim.state().speed;
        let lane = match self.config.control {
            SteerFrom::Truth => {
                let r = self.sim.lane_reference(lookahead);
                Ok(LaneEstimate { target_y_m: r.lookahead_offset, lookahead_m: lookahead })
            }
            SteerFrom::Detections => self.lane_from_detections(now_wall, lookahead),
        };
        match lane {
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

    fn lane_from_detections(&self, now_wall: u64, lookahead: f64) -> Result<LaneEstimate, String> {
        let timeout_ns = self.config.drive.detection_timeout_ms * 1_000_000;
        let (Some(latest), Some(age)) = (&self.detections.latest, self.detections.age_ns(now_wall)) else {
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
        let stamp = Stamp { id: self.frame_id, capture_mono_ns: started, capture_wall_ns: clock::wall_ns() };
        let stride = self.writer.geometry().stride as usize;
        let mut loan = self.writer.loan();
        self.sim.render(self.frame_id, loan.pixels_mut(), stride);
        loan.publish(stamp);
        self.timings.source_us = elapsed_us(started);
        let truth = self.sim.truth();
        let to_u32 = |i: Option<usize>| i.and_then(|i| u32::try_from(i).ok());
        let message = LaneTruthMsg {
            frame_id: self.frame_id,
            h_samples: truth.h_samples,
            lanes: truth.lanes,
            ego_left: to_u32(truth.ego_left),
            ego_right: to_u32(truth.ego_right),
        };
        self.outbox.send(Message::Truth(message), stamp.capture_wall_ns);
        self.fps.tick(started);
        self.frame_id += 1;
    }

    fn apply(&mut self, accepted: AcceptedAction) {
        let AcceptedAction { action, seq } = accepted;
        let outcome: Result<String, String> = match action.command {
            Command::Pause => {
                self.paused = true;
                Ok("paused".into())
            }
            Command::Resume => {
                let was = (self.paused, self.estop);
                self.paused = false;
                self.estop = false;
                Ok(match was {
                    (false, false) => "already running".into(),
                    _ => "resumed".into(),
                })
            }
            Command::EmergencyStop => {
                self.estop = true;
                self.controls = self.controller.stop(1.0);
                Ok("emergency stop: throttle cut, full brake, latched until resume".into())
            }
            Command::Respawn { spawn_point } => {
                let index = spawn_point.unwrap_or(0) as usize;
                match self.sim.respawn(index) {
                    Ok(pose) => {
                        self.controller.reset();
                        self.controls = Controls::default();
                        Ok(format!("respawned at spawn point {index} ({:.1}, {:.1})", pose.x, pose.y))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Command::SetTargetSpeed { mps } => {
                if (0.0..=40.0).contains(&mps) {
                    self.target_speed = mps;
                    Ok(format!("target speed {mps:.1} m/s"))
                } else {
                    Err(format!("target speed {mps} m/s is outside 0..=40"))
                }
            }
        };
        let (accepted, reason, detail) = match outcome {
            Ok(detail) => (true, None, detail),
            Err(detail) => {
                self.action_stats.rejected.fetch_add(1, Ordering::Relaxed);
                (false, Some(RejectReason::NotAllowed), detail)
            }
        };
        tracing::info!(id = %action.id, accepted, %detail, "action done");
        let ack = Event::Ack { action_id: action.id, sender: action.sender, seq, accepted, reason, detail };
        self.outbox.send(Message::Event(ack), clock::wall_ns());
        // The state right after an action reflects it, even while paused.
        self.publish_state();
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

    fn publish_state(&mut self) {
        let s = self.sim.state();
        let now_wall = clock::wall_ns();
        let age = self.detections.age_ns(now_wall);
        let timeout_ns = self.config.drive.detection_timeout_ms * 1_000_000;
        self.timings.encode_us =
            u32::try_from(self.broadcast_stats.last_encode_us.load(Ordering::Relaxed)).unwrap_or(0);
        let state = VehicleState {
            frame_id: self.frame_id.saturating_sub(1),
            pose: PoseMsg { x_m: s.pose.x, y_m: s.pose.y, yaw_rad: s.pose.yaw },
            speed_mps: s.speed,
            target_speed_mps: self.target_speed,
            steering_rad: s.steering,
            throttle: self.controls.throttle,
            brake: self.controls.brake,
            mode: self.mode,
            paused: self.paused,
            control: match self.config.control {
                SteerFrom::Detections => ControlSource::Detections,
                SteerFrom::Truth => ControlSource::Truth,
            },
            source: "sim".into(),
            fps: self.fps.fps(),
            timings: self.timings,
            drops: DropCounters {
                frames_not_broadcast: self.broadcast_stats.frames_not_broadcast.load(Ordering::Relaxed),
                frames_overrun: self.broadcast_stats.frames_overrun.load(Ordering::Relaxed),
                messages_dropped: self.outbox.dropped()
                    + self.broadcast_stats.send_failures.load(Ordering::Relaxed),
                actions_rejected: self.action_stats.rejected.load(Ordering::Relaxed),
                actions_unauthenticated: self.action_stats.unauthenticated.load(Ordering::Relaxed),
                actions_replayed: self.action_stats.replayed.load(Ordering::Relaxed),
            },
            health: Health {
                detections_fresh: age.is_some_and(|a| a <= timeout_ns),
                detection_age_ms: age.map(|a| u32::try_from(a / 1_000_000).unwrap_or(u32::MAX)),
                stop_reason: self.stop_reason.clone(),
            },
            distance_m: s.odometer,
            truth_lateral_offset_m: Some(
                self.sim.lane_reference(self.config.drive.lookahead_m).lateral_offset,
            ),
        };
        self.outbox.send(Message::State(state), now_wall);
    }
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
