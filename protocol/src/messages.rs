//! The bodies of the messages, one type per topic, and the detection record of the ring.
//!
//! Units are in the field names: `_m` metres, `_mps` metres per second, `_rad` radians,
//! `_ns`/`_us`/`_ms` nano/micro/milliseconds, `_px` pixels. Timestamps named `*_ns` without
//! qualification are wall-clock nanoseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

/// Topic `frame`: metadata of the JPEG in the message's third part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameInfo {
    /// Source frame number, increasing by one per captured frame (gaps are frames the
    /// broadcaster did not send).
    pub frame_id: u64,
    pub width: u32,
    pub height: u32,
    /// JPEG quality 1..=100 used for this frame.
    pub quality: u8,
    /// Time the broadcaster spent compressing this frame.
    pub encode_us: u32,
    /// Index of the quality tier in the vehicle's ladder (0 = the best it sends).
    #[serde(default)]
    pub tier: u8,
    /// The vehicle's estimate of this viewer's goodput, kbit/s (what the tier was chosen for).
    #[serde(default)]
    pub goodput_kbps: u32,
    /// True when the link holds this viewer below the best tier or the full frame rate.
    #[serde(default)]
    pub reduced: bool,
    /// Codec of the payload: `jpeg` (one JPEG) or `h264` (one Annex B access unit); a frame
    /// without the key is JPEG.
    #[serde(default = "default_codec")]
    pub codec: String,
    /// The payload decodes on its own: every JPEG; an H.264 IDR access unit (SPS and PPS
    /// first). An H.264 frame without it needs the frames before it since the last key.
    #[serde(default)]
    pub keyframe: bool,
    /// Size of the captured frame (the ring's), which detections and truth refer to; the
    /// JPEG is smaller on a reduced tier. 0 from older vehicles: the same as `width`/`height`.
    #[serde(default)]
    pub source_width: u32,
    #[serde(default)]
    pub source_height: u32,
}

fn default_codec() -> String {
    crate::video::CODEC_JPEG.to_string()
}

/// One lane line in image coordinates, TuSimple style: `xs[i]` is the column at row
/// `h_samples[i]`, `None` where the line is not visible.
pub type LaneXs = Vec<Option<f32>>;

/// Lanes found by the detector (`ads-detection --method cv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneDetection {
    /// Image rows the lines are sampled at.
    pub h_samples: Vec<u32>,
    pub left: LaneXs,
    pub right: LaneXs,
    /// Confidence 0..=1 of each line.
    pub left_confidence: f32,
    pub right_confidence: f32,
    /// Car position relative to the lane centre, metres, positive = car left of centre.
    pub lateral_offset_m: f32,
    /// Car heading relative to the lane, radians, positive = pointing left of the lane.
    pub heading_error_rad: f32,
    /// Radius of the lane's curvature, metres, positive = curving left; `None` when straight.
    pub curvature_radius_m: Option<f32>,
}

/// An object found by the detector (`--method dl`), box in pixels of the source frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedObject {
    /// COCO class name, e.g. `car`.
    pub class: String,
    pub class_id: u16,
    /// 0..=1.
    pub score: f32,
    pub x_px: f32,
    pub y_px: f32,
    pub w_px: f32,
    pub h_px: f32,
}

/// Topic `detection`, and the record in the `detections` ring: one per processed frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detections {
    /// The frame these results are for.
    pub frame_id: u64,
    /// That frame's capture time, wall clock ns.
    pub capture_ns: u64,
    /// `cv` or `dl`.
    pub detector: String,
    /// Time the detector spent on the frame.
    pub processing_us: u32,
    /// Wall clock ns when the detector took the frame from the ring (0 from detectors older
    /// than this field): `read_ns - capture_ns` is the shared-memory hop's latency.
    #[serde(default)]
    pub read_ns: u64,
    /// Wall clock ns when the vehicle's control loop read this result from the ring; set by
    /// the vehicle when it forwards the result on the `detection` topic (0 in the ring).
    /// `control_read_ns - (read_ns + processing_us * 1000)` is the result's shared-memory hop.
    #[serde(default)]
    pub control_read_ns: u64,
    pub lanes: Option<LaneDetection>,
    pub objects: Vec<DetectedObject>,
}

/// Topic `truth`: the simulator's true lane lines for a frame, TuSimple style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneTruthMsg {
    pub frame_id: u64,
    pub h_samples: Vec<u32>,
    /// Every visible marking line, left to right.
    pub lanes: Vec<LaneXs>,
    /// Indices into `lanes` of the lines bounding the car's lane.
    pub ego_left: Option<u32>,
    pub ego_right: Option<u32>,
}

/// Position and heading in the world frame of the source (simulator or CARLA).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PoseMsg {
    pub x_m: f64,
    pub y_m: f64,
    /// Counter-clockwise from the world x axis.
    pub yaw_rad: f64,
}

/// What the vehicle is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriveMode {
    /// Driving from detections (or ground truth with `--control truth`).
    Driving,
    /// Time and frames frozen by a `pause` action.
    Paused,
    /// Braking to a stop and holding it after `emergency_stop`: latched (and persisted) until
    /// a `reset`. Dominates every other mode.
    EmergencyStop,
    /// Stopped because detections are stale or missing; drives again when they return.
    Failsafe,
    /// Standing still, holding the brake, until an operator's `resume`: after an e-stop was
    /// `reset`, or after the operator's heartbeat stopped (see `state.commands`).
    Stopped,
}

/// Where the control loop takes its steering from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlSource {
    Detections,
    Truth,
}

/// Per-stage timings of the last frame, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    /// Producing the frame (simulator rendering, camera capture) into the ring.
    pub source_us: u32,
    /// Control loop: reading detections, computing and applying controls.
    pub control_us: u32,
    /// JPEG encoding in the broadcaster.
    pub encode_us: u32,
    /// From a frame's capture to the control loop reading its detections (0 if none).
    pub detection_latency_us: u32,
    /// Of `source_us`, the simulator's sensor noise (0 for other sources). Absent from older
    /// vehicles: read as 0.
    #[serde(default)]
    pub noise_us: u32,
    /// Of `source_us`, taking a ring slot and publishing the frame in it (waking its
    /// readers included). Absent from older vehicles: read as 0.
    #[serde(default)]
    pub ring_write_us: u32,
    /// The video link's work on the last frame sent besides encoding: queueing it to the
    /// viewers' sockets and its bookkeeping. Absent from older vehicles: read as 0.
    #[serde(default)]
    pub send_us: u32,
}

/// Things that were lost, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DropCounters {
    /// Frames published to the ring but not broadcast (rate limit or encoder busy).
    pub frames_not_broadcast: u64,
    /// Frames overwritten while the broadcaster was compressing them.
    pub frames_overrun: u64,
    /// Messages dropped on the way out: small ones (state, event, detection, truth) because
    /// the broadcaster's queue was full, and any that ZeroMQ refused to queue.
    pub messages_dropped: u64,
    /// Actions rejected (any reason).
    pub actions_rejected: u64,
    /// Of those, rejected for authentication: no MAC on a vehicle with a key, or a MAC that
    /// does not verify (forgeries, wrong keys). Absent from older vehicles: read as 0.
    #[serde(default)]
    pub actions_unauthenticated: u64,
    /// Of those, authenticated but replayed: an id or sequence number already used, or
    /// expired (or expiring implausibly far ahead). Absent from older vehicles: read as 0.
    #[serde(default)]
    pub actions_replayed: u64,
}

/// Health of the vehicle's inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// True if a detection newer than the fail-safe timeout was read.
    pub detections_fresh: bool,
    /// Age of the newest detection, `None` if none was ever read.
    pub detection_age_ms: Option<u32>,
    /// Why the vehicle is stopping or stopped, in words; `None` while all is well.
    pub stop_reason: Option<String>,
}

/// Topic `state`, several times a second and always while paused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VehicleState {
    /// Last frame produced.
    pub frame_id: u64,
    pub pose: PoseMsg,
    pub speed_mps: f64,
    pub target_speed_mps: f64,
    /// Front wheel angle, positive = left.
    pub steering_rad: f64,
    /// 0..=1.
    pub throttle: f64,
    /// 0..=1.
    pub brake: f64,
    pub mode: DriveMode,
    pub paused: bool,
    pub control: ControlSource,
    /// `sim`, `camera`, `video`, `carla` or `recording`.
    pub source: String,
    /// Frames produced per second over the last second.
    pub fps: f32,
    pub timings: StageTimings,
    pub drops: DropCounters,
    pub health: Health,
    /// Distance driven since start, m (odometer).
    #[serde(default)]
    pub distance_m: f64,
    /// Wall clock ns when this vehicle process started: a new value means the vehicle
    /// restarted (frame ids and sequence numbers start again). 0 from older vehicles.
    #[serde(default)]
    pub started_ns: u64,
    /// The simulator's true offset of the car from its lane centre, m, + = left; `None` for
    /// real sources. For judging the detector and controller, never used to steer.
    #[serde(default)]
    pub truth_lateral_offset_m: Option<f64>,
    /// The video link: where it listens and what each viewer gets. Absent from older vehicles.
    #[serde(default)]
    pub link: LinkState,
    /// The command side: run id and clock, e-stop latch, operator presence.
    #[serde(default)]
    pub commands: CommandStatus,
    /// The steering and throttle outputs of a real car, and where the speed comes from.
    /// Absent from older vehicles (read as the default: empty `backend`).
    #[serde(default)]
    pub actuator: ActuatorState,
    /// Pilot mode and the operator's drive commands (manual driving). Absent from older
    /// vehicles: autopilot, no commands.
    #[serde(default)]
    pub teleop: TeleopState,
}

/// `state.actuator`: what the vehicle puts out to a steering servo and an ESC
/// (docs/actuators.md), and where it knows its speed from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActuatorState {
    /// `none` (no outputs: the simulator or CARLA move by themselves, or nothing does),
    /// `pca9685` or `serial`.
    pub backend: String,
    /// `none` (no outputs), `waiting` (no command yet: neutral), `driving` (the loop's
    /// command), `stopped` (stopped by the loop: the brake pulse), `timed_out` (the newest
    /// command is older than `actuator.command_timeout_ms`: neutral), `ended` (the output
    /// thread has ended; its last write was neutral).
    pub state: String,
    /// Pulse widths of the last write that went through, µs; `None` before any.
    pub steering_us: Option<u16>,
    pub throttle_us: Option<u16>,
    /// Age of the loop's newest order at the last write, ms.
    pub command_age_ms: Option<u64>,
    /// What is wrong with the outputs now (a failed write, a silent or confused board), in
    /// words; `None` while all is well. A fault holds the car in fail-safe.
    pub fault: Option<String>,
    /// The serial board's own word for its state (`drive`, `neutral`, `timeout`, `error`);
    /// `None` for other backends and while the board has not answered.
    pub board: Option<String>,
    /// Writes that went through and that failed, since start.
    pub writes: u64,
    pub write_errors: u64,
    /// Where the control loop's speed comes from: `sim`, `carla`, or `none` (a camera car
    /// without a wheel encoder: the throttle is open-loop, capped by `actuator.max_throttle`).
    pub speed_source: String,
    /// The pulse widths the vehicle runs with (`[actuator.calibration]` as loaded; a
    /// calibration save changes the file, not these, until the next start); `None` without
    /// outputs and from older vehicles.
    pub calibration: Option<CalibrationValues>,
    /// The throttle pulses a calibration pulse may have, µs (low, high): the
    /// `actuator.max_throttle` range, or the whole pulse range with
    /// `actuator.calibrate_full_throttle`.
    pub calibration_throttle_us: Option<(u16, u16)>,
    /// While a calibration pulse holds (`state` = `calibrating`): its channel and ms left of
    /// its lease.
    pub calibrating: Option<CalibrationChannel>,
    pub lease_left_ms: Option<u32>,
}

/// What a client needs to command this run of the vehicle, and the state of its latches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandStatus {
    /// Random per start of the vehicle process: every action names it ([`ActionRun`]), so
    /// nothing captured from an earlier run is accepted.
    pub run_id: String,
    /// Nanoseconds since this run started, on the vehicle's monotonic clock: the clock
    /// [`ActionRun::expires_run_ns`] is judged against (no wall clock involved).
    pub run_ns: u64,
    /// The emergency stop is latched (it survives restarts); only `reset` releases it.
    pub estop_latched: bool,
    /// Stopped and holding until an operator's `resume` (mode `stopped`).
    pub held: bool,
    /// This vehicle drives only while an operator's heartbeat arrives.
    pub operator_required: bool,
    /// Milliseconds since the last operator heartbeat of this run; `None` if none yet.
    pub operator_heartbeat_age_ms: Option<u32>,
    /// Why the latch's last state could not be persisted; `None` while what the vehicle does
    /// is what its latch file says. An unpersisted e-stop keeps the car braked and held.
    #[serde(default)]
    pub latch_error: Option<String>,
    /// TCP port of the action socket (SUB) on the vehicle; 0 if unknown. With the host of the
    /// PUB endpoint a client reached, where its actions go ([`crate::discover`]).
    #[serde(default)]
    pub action_port: u16,
    /// Actions (and signed video hellos) must carry a MAC under the action key.
    #[serde(default)]
    pub signed_actions: bool,
}

/// `state.link`: the video socket and one entry per viewer session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkState {
    /// TCP port of the video socket (ROUTER) on the vehicle; 0 if unknown.
    pub video_port: u16,
    /// JPEG encodes per second over the last second, all tiers together.
    pub encodes_per_s: f32,
    pub viewers: Vec<ViewerLink>,
    /// Time the last H.264 encode took (all its tiers together), µs; 0 before any.
    #[serde(default)]
    pub h264_encode_us: u32,
    /// H.264 keyframes sent, and keyframe requests received, since the vehicle started.
    #[serde(default)]
    pub h264_keyframes: u64,
    #[serde(default)]
    pub h264_key_requests: u64,
    /// Pictures the H.264 encoders' rate control skipped (to hold its bit rate).
    #[serde(default)]
    pub h264_rate_skips: u64,
}

/// What one viewer's session gets, as the vehicle sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewerLink {
    /// The session, as the vehicle numbers them (1, 2, ...).
    pub session: u64,
    /// The codec this viewer gets (`jpeg`, `h264`).
    #[serde(default)]
    pub codec: String,
    /// Estimated goodput of the viewer's link, kbit/s (from credit timing).
    pub goodput_kbps: u32,
    /// Video actually sent over the last second, kbit/s.
    pub sent_kbps: u32,
    /// Frames sent over the last second.
    pub fps: f32,
    /// Tier of the last frame, its size and JPEG quality.
    pub tier: u8,
    pub width: u32,
    pub height: u32,
    pub quality: u8,
    /// Frames sent and not yet credited.
    pub in_flight: u8,
    /// Time from sending the last credited frame to its credit, ms.
    pub delivery_ms: f32,
    pub frames_sent: u64,
    /// Frames this viewer did not get: no credit, over its rate or its cap.
    pub frames_skipped: u64,
    /// Credits for frames not in flight (ignored).
    pub credits_ignored: u64,
    /// Held below the best tier or the full frame rate by its link.
    pub reduced: bool,
}

/// Why an action was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The message could not be decoded (bad msgpack, wrong types, wrong topic, too large).
    Malformed,
    /// Decoded, but names a command this vehicle does not know.
    Unknown,
    /// Its `expires_ns` was in the past on arrival.
    Expired,
    /// Same id as an earlier action, or a sequence number not above the sender's last one.
    Duplicate,
    /// Valid, but not possible now (e.g. respawn to a spawn point that does not exist).
    NotAllowed,
    /// A protocol version this vehicle does not speak.
    Version,
    /// The vehicle has an action key and the action carries no MAC.
    Unauthenticated,
    /// The action's MAC does not verify: another key, or the message was altered.
    BadMac,
    /// The vehicle's queue for actions is full (a burst): nothing of the action was recorded,
    /// so sending it again (same id, same seq) is judged afresh. Never given to an e-stop.
    Busy,
}

/// Topic `event`: acknowledgements and notable happenings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The answer to one action. `action_id` and `sender` are empty when the action was too
    /// malformed to read them.
    Ack {
        action_id: String,
        sender: String,
        seq: u64,
        accepted: bool,
        reason: Option<RejectReason>,
        detail: String,
        /// Only on the acks of `emergency_stop` and `reset`: whether the latch's new state is on
        /// disk (fsynced) as the ack is sent. An e-stop is carried out (`accepted`) even when it
        /// could not be persisted; the car then stays braked and `state.commands.latch_error`
        /// says why. Absent from older vehicles and on other acks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        persisted: Option<bool>,
    },
    /// Something an operator should know (fail-safe engaged, detector back, ...).
    Notice { level: NoticeLevel, text: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeLevel {
    Info,
    Warning,
    Error,
}

/// What an action asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Put the car back at spawn point `spawn_point` (default: the first) with zero speed
    /// and a fresh controller.
    Respawn { spawn_point: Option<u32> },
    /// Freeze simulation time and frame production; state keeps flowing.
    Pause,
    /// Undo `pause`, and drive again after a `reset` or a lost operator; never releases a
    /// latched emergency stop.
    Resume,
    /// Cut throttle and brake fully at once; latched (persistently) until `reset`. Carried
    /// out whatever its expiry or run.
    EmergencyStop,
    /// Cruise speed to hold, 0..=40 m/s.
    SetTargetSpeed { mps: f64 },
    /// Release a latched emergency stop. The car stays stopped (mode `stopped`) until a
    /// `resume`: a reset never starts motion by itself.
    Reset,
    /// The operator is present (dead-man). Not acknowledged; sent a few times a second.
    Heartbeat,
    /// Teleoperation: the operator's steering and throttle, good for `lease_ms` (1..=300) from
    /// its arrival and never past the action's expiry. Sent at 20–30 Hz while a control is
    /// held; when the lease runs out without a newer one the car brakes (dead-man). Taken only
    /// in `manual` and `assist` pilot modes and only from the sender that set that mode. Never
    /// acknowledged when taken and never retransmitted: the newest (by sequence) wins, older
    /// ones are dropped; `state.teleop` reports the last one applied and its age.
    Drive {
        /// -1..=1, + = left (a fraction of the car's largest steering angle).
        steering: f64,
        /// -1..=1: + the throttle's fraction, − the brake's.
        throttle: f64,
        lease_ms: u32,
        /// Wall clock ns of the operator's input that produced this command (a key, a stick),
        /// for the command path's latency in `state.teleop` (clocks in sync, e.g. NTP);
        /// 0: unknown.
        #[serde(default)]
        issued_ns: u64,
    },
    /// Who steers and who gives throttle: [`PilotMode`]. A mode change never starts motion
    /// by itself: into `autopilot` from another mode the car holds until `resume`; in `manual`
    /// and `assist` it moves only under a live `drive` lease from the sender of this action.
    SetDriveMode { mode: PilotMode },
    /// Calibration, the car on a stand (docs/actuators.md): one output channel to `us` µs,
    /// the other at its neutral, for `lease_ms` (at most 300) from its arrival and never past
    /// the action's expiry. A page re-sends it while its slider is held; without a renewal the
    /// channel returns to neutral. Taken only while the car is stopped (held or paused), no
    /// e-stop latched and the outputs without a fault; a throttle pulse only within the
    /// `actuator.max_throttle` range unless `actuator.calibrate_full_throttle`.
    CalibratePulse { channel: CalibrationChannel, us: u16, lease_ms: u32 },
    /// Ends a calibration pulse at once (the slider let go): both channels to neutral.
    CalibrateRelease,
    /// Writes these pulse widths into `[actuator.calibration]` of the vehicle's configuration
    /// file (the rest of the file as it was); they take effect at the vehicle's next start.
    CalibrateSave { values: CalibrationValues },
}

/// Who drives: the pilot modes of `set_drive_mode` (Donkey Car's user / local_angle / local).
/// The e-stop, holds and fail-safes dominate every mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PilotMode {
    /// The control loop steers and holds the target speed (from detections or truth).
    #[default]
    Autopilot,
    /// The operator's `drive` commands steer and give throttle.
    Manual,
    /// The control loop steers; the operator's `drive` throttle sets the pace.
    Assist,
}

impl PilotMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            PilotMode::Autopilot => "autopilot",
            PilotMode::Manual => "manual",
            PilotMode::Assist => "assist",
        }
    }

    /// Whether the operator's `drive` commands are taken in this mode.
    pub const fn takes_drive(self) -> bool {
        !matches!(self, PilotMode::Autopilot)
    }
}

/// The largest lease a `drive` command may ask for, ms: a dead link stops the car within it.
pub const MAX_DRIVE_LEASE_MS: u32 = 300;

/// `state.teleop`: the pilot mode and the operator's drive commands as the vehicle took them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TeleopState {
    pub pilot: PilotMode,
    /// The sender whose `drive` commands are taken (the one that set `manual`/`assist`).
    pub driver: Option<String>,
    /// The newest drive command taken: its sequence number and values, and its age, ms.
    pub seq: u64,
    pub steering: f64,
    pub throttle: f64,
    pub age_ms: Option<u32>,
    /// Its lease is still running: the car moves on it.
    pub live: bool,
    /// Drive commands taken, dropped (older than one taken, from a sender that is not the
    /// driver, or outside `manual`/`assist`), and leases that ran out, since start.
    pub taken: u64,
    pub dropped: u64,
    pub lapsed: u64,
    /// From the operator's input (`issued_ns`) to the control loop applying the command, ms,
    /// over the last commands taken: p50 and p99. `None` before any command with `issued_ns`.
    pub latency_p50_ms: Option<f32>,
    pub latency_p99_ms: Option<f32>,
}

/// Topic `controls`: what the control loop commanded in one tick and who decided it; one per
/// produced frame, so a recording pairs every image with its label (`ads-record export`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlsMsg {
    /// The frame produced in this tick: the label belongs to this image.
    pub frame_id: u64,
    pub pilot: PilotMode,
    pub mode: DriveMode,
    /// What went to the car: -1..=1, + = left (the fraction of the largest steering angle).
    pub steering: f64,
    /// -1..=1: + throttle, − brake.
    pub throttle: f64,
    /// The operator's drive command in force in this tick (a live lease), if any.
    pub operator: Option<OperatorCommand>,
}

/// One operator drive command as the control loop used it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatorCommand {
    pub seq: u64,
    pub steering: f64,
    pub throttle: f64,
    /// Time since it arrived, ms.
    pub age_ms: u32,
}

/// The output channel a calibration pulse moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationChannel {
    Steering,
    Throttle,
}

/// Pulse widths of `[actuator.calibration]`, µs; `None`: not set (left as it is, on a save).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrationValues {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steering_left_us: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steering_centre_us: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steering_right_us: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_reverse_us: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_neutral_us: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_forward_us: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brake_us: Option<u16>,
}

impl CalibrationValues {
    /// `(key, value)` of each value that is set, under its `[actuator.calibration]` key.
    pub fn entries(&self) -> Vec<(&'static str, u16)> {
        [
            ("steering_left_us", self.steering_left_us),
            ("steering_centre_us", self.steering_centre_us),
            ("steering_right_us", self.steering_right_us),
            ("throttle_reverse_us", self.throttle_reverse_us),
            ("throttle_neutral_us", self.throttle_neutral_us),
            ("throttle_forward_us", self.throttle_forward_us),
            ("brake_us", self.brake_us),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// Topic `action`, sent by viewers to the vehicle's SUB socket. The envelope's `seq` is the
/// sender's sequence number, unique per sender (see docs/protocol.md 5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Unique per action, at most 64 bytes; echoed in the acknowledgement. A retransmission
    /// carries the same id (and seq).
    pub id: String,
    /// Who sent it, at most 64 bytes, unique per sender process (e.g. `viewer@laptop#1f2e3d4c`);
    /// sequence numbers are tracked per sender.
    pub sender: String,
    pub command: Command,
    /// The vehicle run it is meant for, and its expiry on that run's clock.
    pub run: ActionRun,
}

/// Which run of the vehicle an action is for, and until when on that run's monotonic clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRun {
    /// `state.commands.run_id` of the vehicle the action is for. May be empty (or left out)
    /// only on an emergency stop sent before any state was heard.
    #[serde(default)]
    pub run_id: String,
    /// After this `state.commands.run_ns` the vehicle must not act on it (except an
    /// emergency stop, which is always carried out).
    pub expires_run_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actuator_state_round_trips_and_is_optional_from_older_vehicles() {
        let full = ActuatorState {
            backend: "serial".into(),
            state: "driving".into(),
            steering_us: Some(1620),
            throttle_us: Some(1580),
            command_age_ms: Some(12),
            fault: None,
            board: Some("drive".into()),
            writes: 9,
            write_errors: 1,
            speed_source: "none".into(),
            calibration: Some(CalibrationValues {
                steering_left_us: Some(1900),
                ..CalibrationValues::default()
            }),
            calibration_throttle_us: Some((1350, 1650)),
            calibrating: Some(CalibrationChannel::Throttle),
            lease_left_ms: Some(250),
        };
        let bytes = rmp_serde::to_vec_named(&full).unwrap();
        assert_eq!(rmp_serde::from_slice::<ActuatorState>(&bytes).unwrap(), full);
        // A vehicle from before `state.actuator`, or one that leaves fields out: defaults.
        #[derive(Serialize)]
        struct Partial {
            backend: &'static str,
        }
        let bytes = rmp_serde::to_vec_named(&Partial { backend: "pca9685" }).unwrap();
        let partial: ActuatorState = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(partial, ActuatorState { backend: "pca9685".into(), ..ActuatorState::default() });
    }

    #[test]
    fn calibration_commands_round_trip_and_name_their_keys() {
        let commands = [
            Command::CalibratePulse { channel: CalibrationChannel::Throttle, us: 1620, lease_ms: 300 },
            Command::CalibrateRelease,
            Command::CalibrateSave {
                values: CalibrationValues {
                    steering_centre_us: Some(1470),
                    brake_us: Some(1300),
                    ..CalibrationValues::default()
                },
            },
        ];
        for command in commands {
            let bytes = rmp_serde::to_vec_named(&command).unwrap();
            assert_eq!(rmp_serde::from_slice::<Command>(&bytes).unwrap(), command);
        }
        // The JSON a page sends.
        let json = r#"{"type":"calibrate_pulse","channel":"steering","us":1900,"lease_ms":300}"#;
        assert_eq!(
            serde_json::from_str::<Command>(json).unwrap(),
            Command::CalibratePulse { channel: CalibrationChannel::Steering, us: 1900, lease_ms: 300 }
        );
        let values: CalibrationValues =
            serde_json::from_str(r#"{"steering_left_us":1900,"brake_us":1300}"#).unwrap();
        assert_eq!(values.entries(), [("steering_left_us", 1900), ("brake_us", 1300)]);
        assert!(serde_json::from_str::<CalibrationValues>(r#"{"steering_lft_us":1}"#).is_err());
    }
}
