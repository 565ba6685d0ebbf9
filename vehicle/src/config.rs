//! The vehicle's configuration: defaults < TOML file < environment < command-line flags.
//!
//! The file (`--config`, e.g. `configs/vehicle.toml`) is validated once at load: unknown keys
//! are errors naming the key, and values are range-checked with the key's name.

use ads_sim::TrackKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where frames come from (see docs/sources.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Sim,
    Camera,
    Video,
    Carla,
    /// An ads-record MCAP file (`--path`), its frames at their recorded pace.
    Recording,
    /// A GStreamer pipeline (`--pipeline`) ending in video: CSI cameras through libcamerasrc
    /// or nvarguscamerasrc, USB, RTSP, files.
    Gstreamer,
}

/// What the control loop steers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SteerFrom {
    /// Lane detections from `ads-detection` (the real mode).
    Detections,
    /// The simulator's ground truth, for running the simulator alone.
    Truth,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VehicleConfig {
    /// Identifies this vehicle in every message; empty: `ads-HOSTNAME`, so that two
    /// vehicles on one network differ without configuration.
    pub vehicle_id: String,
    pub source: SourceKind,
    pub control: SteerFrom,
    /// Frames per second produced by the source.
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    /// Shared-memory ring the source writes frames into.
    pub frames_ring: String,
    /// Slots of the frames ring; absent: derived from the readers that pin its frames, as
    /// the ring's rule "slots ≥ pinning readers + 2" says (see [`VehicleConfig::frames_ring_slots`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_slots: Option<u32>,
    /// Frames that readers of the frames ring besides the vehicle's own may hold pinned at
    /// once: an `ads` Python reader holds up to its `max_pins` (2 by default).
    pub ring_extra_pins: u32,
    /// Shared-memory ring the detector writes results into.
    pub detections_ring: String,
    pub sim: SimSection,
    pub camera: CameraSection,
    pub video: VideoSection,
    pub carla: CarlaSection,
    pub gstreamer: GstreamerSection,
    pub broadcast: BroadcastSection,
    pub link: LinkSection,
    pub h264: H264Section,
    pub actions: ActionsSection,
    pub drive: DriveSection,
    pub actuator: ActuatorSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSection {
    pub track: TrackKind,
    pub seed: u64,
    /// What moves the simulated car: `direct` (the control loop's controls) or `outputs`
    /// (what the actuator outputs put out, as a board reports it on `outputs_socket`).
    pub actuation: SimActuation,
    /// With `actuation = "outputs"`: the Unix datagram socket the simulator binds, where a
    /// board sends the steering and throttle it puts out (docs/actuators.md, "The simulator
    /// through the outputs").
    pub outputs_socket: Option<PathBuf>,
}

/// What moves the simulated car (`[sim] actuation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SimActuation {
    /// The control loop's controls, applied in the same tick.
    Direct,
    /// The pulses the actuator outputs put out, turned back into steering and throttle by the
    /// board at the other end (a test's fake board, or a hardware-in-the-loop rig): the loop's
    /// controls reach the car only through the real output path.
    Outputs,
}

/// `source = "camera"`: a V4L2 device; size from `width`/`height`, rate from `fps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraSection {
    pub device: PathBuf,
}

/// `source = "video"`: a file OpenCV can read, played at its own frame rate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoSection {
    pub path: Option<PathBuf>,
    /// Start again at the end; without it the source ends and the car stops (fail-safe).
    #[serde(rename = "loop")]
    pub looping: bool,
}

/// `source = "gstreamer"`: a GStreamer pipeline description (gst-launch-1.0 syntax) without
/// its sink; the vehicle appends the conversion to BGR at the ring's size and an appsink.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GstreamerSection {
    pub pipeline: Option<String>,
}

/// `source = "carla"`: a CARLA server, through the Python sidecar of ads-carla-bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CarlaSection {
    pub host: String,
    pub port: u16,
    /// Python interpreter with `carla==0.9.16` installed.
    pub python: PathBuf,
    /// Blueprint filter of the car to spawn.
    pub vehicle: String,
    /// How long one call may wait for the server, s.
    pub timeout_s: f64,
}

/// The PUB socket: the small topics (state, detection, event, truth), never video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BroadcastSection {
    /// ZeroMQ endpoint the PUB socket binds.
    pub endpoint: String,
    /// ZeroMQ send high-water mark, messages per subscriber.
    pub send_hwm: i32,
    /// Kernel send buffer of each subscriber's TCP connection, bytes (small: what waits in
    /// the kernel waits in line).
    pub send_buffer_bytes: i32,
    /// DSCP of the PUB socket's packets (state, acks, events) and of the action socket's,
    /// 0..=63; 48 (CS6): Wi-Fi with WMM puts it in the voice access class (AC_VO) whether the
    /// access point maps by precedence or by RFC 8325 (docs/deployment.md). 0: unmarked.
    pub dscp: u8,
}

/// The link to viewers' video: the ROUTER socket, one credit-paced session per viewer (docs/protocol.md 2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkSection {
    /// ZeroMQ endpoint the ROUTER socket binds.
    pub endpoint: String,
    /// Frames sent to a viewer and not yet credited, at most (1..=4).
    pub frames_in_flight: u32,
    /// Frame age (capture → viewer) the tier is chosen to hold, ms.
    pub target_frame_age_ms: u32,
    /// JPEG quality of the best tier, and the lowest the ladder goes (1..=100).
    pub quality_max: u8,
    pub quality_min: u8,
    /// Largest and smallest scale of the frame (0.1..=1.0).
    pub scale_max: f64,
    pub scale_min: f64,
    /// Most frames per second sent to a viewer.
    pub max_fps: f64,
    /// The tier is lowered until the link carries at least this rate, if the ladder allows.
    pub min_fps: f64,
    /// Cap of each viewer's video, kbit/s (metered links); 0 = none. A viewer may ask for
    /// less in its hello, never for more.
    pub max_kbps_per_viewer: u32,
    /// Sessions served at once; hellos beyond are ignored.
    pub max_viewers: u32,
    /// A session silent for this long (no hello, no credit) is forgotten, ms.
    pub session_timeout_ms: u32,
    /// A session that has not credited a frame it was sent for this long is idle, ms: when
    /// every place is taken, a new hello closes the oldest idle session to get one.
    pub session_idle_ms: u32,
    /// Sessions one network address (libzmq's `Peer-Address`) may hold at once; 0: no cap.
    pub max_sessions_per_peer: u32,
    /// While a session whose hello is signed with the action key watches, the sessions whose
    /// hellos are not signed share at most this many kbit/s between them (each gets its
    /// share as a cap): on one WiFi queue, clients without the key cannot take the
    /// operator's airtime however fast they credit. 0: no such limit.
    pub unsigned_share_kbps: u32,
    /// DSCP of the video's packets, 0..=63; 34 (AF41): Wi-Fi with WMM puts it in the video
    /// access class (AC_VI), behind state and acks (docs/deployment.md). 0: unmarked.
    pub dscp: u8,
}

/// H.264 on the video link, for viewers whose hello accepts it (`docs/protocol.md` 2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct H264Section {
    /// Offer H.264 at all; off: every viewer gets JPEG.
    pub enabled: bool,
    /// Frames between periodic keyframes, 0..=600; 0 (the default): none, keyframes only when
    /// a viewer joins a rung, asks (at most 2/s per rung) or falls out of step. The link is
    /// reliable (TCP), so nothing is lost that a periodic keyframe would repair, and each one
    /// costs several frames of airtime in front of the state.
    pub keyframe_interval_frames: u32,
    /// Bit-rate bounds of the H.264 ladder, kbit/s (its rungs run 250..=6000).
    pub max_kbps: u32,
    pub min_kbps: u32,
    /// Access units sent to an H.264 viewer and not yet credited, at most, 1..=4. The
    /// encoder's rate control already holds the stream under the paced rate, so a second
    /// unit in flight costs no queue; it lets the next frame leave while the previous one is
    /// still on the air, where one at a time idles the link for an encode every frame.
    pub frames_in_flight: u32,
}

impl Default for H264Section {
    fn default() -> Self {
        Self {
            enabled: true,
            keyframe_interval_frames: 0,
            max_kbps: 6000,
            min_kbps: 250,
            frames_in_flight: 2,
        }
    }
}

impl H264Section {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key, value: u32, problem| Err(ConfigError::Invalid { key, value: value.to_string(), problem });
        let g = self.keyframe_interval_frames;
        if g > 600 {
            return invalid("h264.keyframe_interval_frames", g, "must be in 0..=600");
        }
        if !(100..=50_000).contains(&self.max_kbps) {
            return invalid("h264.max_kbps", self.max_kbps, "must be in 100..=50000");
        }
        if self.min_kbps == 0 || self.min_kbps > self.max_kbps {
            return invalid("h264.min_kbps", self.min_kbps, "must be in 1..=h264.max_kbps");
        }
        if !(1..=4).contains(&self.frames_in_flight) {
            return invalid("h264.frames_in_flight", self.frames_in_flight, "must be in 1..=4");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsSection {
    /// ZeroMQ endpoint the action SUB socket binds. Without `key_file` a wildcard host is
    /// narrowed to 127.0.0.1 and any other non-loopback host is refused.
    pub endpoint: String,
    /// Shared key authenticating every action (64 hex digits, mode 0600; see
    /// `scripts/action-key.sh`). `None`: actions are taken from this machine only.
    pub key_file: Option<PathBuf>,
    /// Actions expiring further ahead than this are refused: the gate forgets what it has
    /// seen when the vehicle restarts, so this bounds how long a captured action could be
    /// replayed.
    pub max_expiry_s: u64,
    /// DSCP of the action socket's packets (its TCP acks and handshake), 0..=63; 48 (CS6):
    /// Wi-Fi's voice class, as `broadcast.dscp`. 0: unmarked.
    pub dscp: u8,
    /// Where the emergency-stop latch is persisted; `None`: [`crate::latch::default_path`]
    /// (systemd's `StateDirectory=`, else `~/.local/state/ads/`).
    pub latch_file: Option<PathBuf>,
    /// Drive only while an operator's heartbeat arrives (a viewer whose page is visible and
    /// used). `None`: on for real cars (camera, CARLA), off for the simulator and files; see
    /// docs/security.md ("Operator heartbeat").
    pub require_operator: Option<bool>,
    /// Drive right after start when the latch holds nothing. `None`: yes for the simulator
    /// and file sources unless an operator is required; a real car (camera, CARLA) always
    /// starts held and drives only after an operator's `resume`, and `true` there is an error.
    pub drive_on_start: Option<bool>,
    /// With `require_operator`: no heartbeat for this long → controlled stop until `resume`.
    pub operator_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriveSection {
    /// Cruise speed, m/s.
    pub target_speed_mps: f64,
    /// No detection newer than this → controlled stop.
    pub detection_timeout_ms: u64,
    /// Pure-pursuit look-ahead distance, m.
    pub lookahead_m: f64,
}

/// Where steering and throttle go on a real car (docs/actuators.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ActuatorKind {
    /// Nowhere: the simulator and CARLA actuate through their source.
    None,
    /// A PCA9685 PWM board on Linux I2C (Donkey Car's standard).
    Pca9685,
    /// A microcontroller on a serial port speaking docs/actuators.md's line protocol.
    Serial,
}

/// The throttle pulse of a stop: the ESC's neutral, or its brake pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopThrottle {
    Neutral,
    Brake,
}

/// `[actuator]`: the steering servo and the ESC of a real car, and the limits on their way out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActuatorSection {
    pub kind: ActuatorKind,
    /// `/dev/i2c-N` (pca9685) or the serial port (serial); unset: `/dev/i2c-1` or
    /// `/dev/ttyACM0`.
    pub device: Option<PathBuf>,
    /// I2C address of the PCA9685 (0x40 unless its address pads are bridged).
    pub address: u8,
    /// PCA9685 channels (0..=15) of the steering servo and the ESC.
    pub steering_channel: u8,
    pub throttle_channel: u8,
    /// PWM frequency of the PCA9685, Hz (servos and ESCs: 50..=60).
    pub frequency_hz: f64,
    /// The PCA9685's internal oscillator, Hz (nominally 25 MHz; boards vary by a few %, which
    /// the calibration in µs absorbs).
    pub oscillator_hz: u32,
    /// Serial port speed, baud.
    pub baud: u32,
    /// The output thread writes neutral when the loop's newest command is older than this.
    pub command_timeout_ms: u64,
    /// What a timeout writes on the throttle channel.
    pub timeout_throttle: StopThrottle,
    /// Largest throttle, of full (0..=1): 0.3 for a first drive.
    pub max_throttle: f64,
    /// How fast the throttle may rise, full range per second (it falls at once).
    pub throttle_slew_per_s: f64,
    /// The car's full steering lock, rad: the loop's wheel angle / this = full left or right.
    pub max_steering_rad: f64,
    /// Drive backwards when asked (the loop never asks today); off: a negative throttle is
    /// neutral.
    pub allow_reverse: bool,
    /// The ESC's reverse sequence: the brake pulse for this long, then neutral for this long.
    pub reverse_brake_ms: u64,
    pub reverse_neutral_ms: u64,
    /// Calibration pulses (the viewer's calibration page) may take the throttle to any pulse
    /// width; off, only within the `max_throttle` range of the current calibration. For
    /// finding `throttle_forward_us` and `throttle_reverse_us`, the wheels off the ground.
    pub calibrate_full_throttle: bool,
    pub calibration: crate::actuator::Calibration,
}

impl Default for ActuatorSection {
    fn default() -> Self {
        Self {
            kind: ActuatorKind::None,
            device: None,
            address: 0x40,
            steering_channel: 0,
            throttle_channel: 1,
            frequency_hz: 50.0,
            oscillator_hz: 25_000_000,
            baud: 115_200,
            command_timeout_ms: 100,
            timeout_throttle: StopThrottle::Neutral,
            max_throttle: 0.3,
            throttle_slew_per_s: 1.0,
            max_steering_rad: 0.5,
            allow_reverse: false,
            reverse_brake_ms: 200,
            reverse_neutral_ms: 200,
            calibrate_full_throttle: false,
            calibration: crate::actuator::Calibration::default(),
        }
    }
}

impl ActuatorSection {
    /// The device to open: configured, else the usual one of the kind.
    pub fn device_path(&self) -> PathBuf {
        self.device.clone().unwrap_or_else(|| match self.kind {
            ActuatorKind::Serial => "/dev/ttyACM0".into(),
            ActuatorKind::None | ActuatorKind::Pca9685 => "/dev/i2c-1".into(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &'static str, value: String, problem: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid { key, value, problem })
            }
        };
        self.calibration.validate().map_err(|(key, us, problem)| ConfigError::Invalid {
            key,
            value: us.to_string(),
            problem,
        })?;
        let a = self.address;
        check(
            (0x08..=0x77).contains(&a) && a != 0x70,
            "actuator.address",
            format!("{a:#04x}"),
            "must be a 7-bit I2C address in 0x08..=0x77, not 0x70 (the PCA9685's all-call)",
        )?;
        let (s, t) = (self.steering_channel, self.throttle_channel);
        check(s <= 15, "actuator.steering_channel", s.to_string(), "must be in 0..=15")?;
        check(t <= 15, "actuator.throttle_channel", t.to_string(), "must be in 0..=15")?;
        check(
            s != t,
            "actuator.throttle_channel",
            t.to_string(),
            "must differ from actuator.steering_channel",
        )?;
        let f = self.frequency_hz;
        check((24.0..=400.0).contains(&f), "actuator.frequency_hz", f.to_string(), "must be in 24..=400")?;
        let period_us = 1e6 / f;
        check(
            f64::from(self.calibration.widest_us()) < 0.95 * period_us,
            "actuator.frequency_hz",
            f.to_string(),
            "the widest calibrated pulse must fit in one PWM period",
        )?;
        let o = self.oscillator_hz;
        check(
            (20_000_000..=30_000_000).contains(&o),
            "actuator.oscillator_hz",
            o.to_string(),
            "must be in 20000000..=30000000",
        )?;
        check(self.baud > 0, "actuator.baud", self.baud.to_string(), "must be positive")?;
        let ct = self.command_timeout_ms;
        check(
            (20..=1000).contains(&ct),
            "actuator.command_timeout_ms",
            ct.to_string(),
            "must be in 20..=1000",
        )?;
        let m = self.max_throttle;
        check(m > 0.0 && m <= 1.0, "actuator.max_throttle", m.to_string(), "must be in (0, 1]")?;
        let r = self.throttle_slew_per_s;
        check(r > 0.0 && r <= 100.0, "actuator.throttle_slew_per_s", r.to_string(), "must be in (0, 100]")?;
        let st = self.max_steering_rad;
        check(st > 0.0 && st <= 1.5, "actuator.max_steering_rad", st.to_string(), "must be in (0, 1.5]")?;
        let (b, n) = (self.reverse_brake_ms, self.reverse_neutral_ms);
        check(b <= 5000, "actuator.reverse_brake_ms", b.to_string(), "must be in 0..=5000")?;
        check(n <= 5000, "actuator.reverse_neutral_ms", n.to_string(), "must be in 0..=5000")
    }
}

impl Default for VehicleConfig {
    fn default() -> Self {
        Self {
            vehicle_id: String::new(),
            source: SourceKind::Sim,
            control: SteerFrom::Detections,
            fps: 30.0,
            width: 800,
            height: 600,
            frames_ring: ads_protocol::FRAMES_RING.into(),
            ring_slots: None,
            ring_extra_pins: 2,
            detections_ring: ads_protocol::DETECTIONS_RING.into(),
            sim: SimSection::default(),
            camera: CameraSection::default(),
            video: VideoSection::default(),
            carla: CarlaSection::default(),
            gstreamer: GstreamerSection::default(),
            broadcast: BroadcastSection::default(),
            link: LinkSection::default(),
            h264: H264Section::default(),
            actions: ActionsSection::default(),
            drive: DriveSection::default(),
            actuator: ActuatorSection::default(),
        }
    }
}

impl Default for SimSection {
    fn default() -> Self {
        Self { track: TrackKind::Oval, seed: 0, actuation: SimActuation::Direct, outputs_socket: None }
    }
}

impl Default for CameraSection {
    fn default() -> Self {
        Self { device: "/dev/video0".into() }
    }
}

impl Default for CarlaSection {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 2000,
            python: "python3".into(),
            vehicle: "vehicle.tesla.model3".into(),
            timeout_s: 5.0,
        }
    }
}

impl Default for BroadcastSection {
    fn default() -> Self {
        Self {
            endpoint: format!("tcp://*:{}", ads_protocol::DEFAULT_PUB_PORT),
            send_hwm: 100,
            send_buffer_bytes: 65_536,
            dscp: 48,
        }
    }
}

impl Default for LinkSection {
    fn default() -> Self {
        Self {
            endpoint: format!("tcp://*:{}", ads_protocol::DEFAULT_VIDEO_PORT),
            frames_in_flight: 1,
            target_frame_age_ms: 40,
            quality_max: 80,
            quality_min: 30,
            scale_max: 1.0,
            scale_min: 0.25,
            max_fps: 30.0,
            min_fps: 10.0,
            max_kbps_per_viewer: 0,
            max_viewers: 8,
            session_timeout_ms: 3000,
            session_idle_ms: 2000,
            max_sessions_per_peer: 4,
            unsigned_share_kbps: 400,
            dscp: 34,
        }
    }
}

impl Default for ActionsSection {
    fn default() -> Self {
        Self {
            endpoint: format!("tcp://*:{}", ads_protocol::DEFAULT_ACTION_PORT),
            key_file: None,
            max_expiry_s: 60,
            dscp: 48,
            latch_file: None,
            require_operator: None,
            drive_on_start: None,
            operator_timeout_ms: 1000,
        }
    }
}

impl Default for DriveSection {
    fn default() -> Self {
        Self { target_speed_mps: 8.0, detection_timeout_ms: 300, lookahead_m: 10.0 }
    }
}

/// A configuration problem, naming the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key} = {value}: {problem}")]
    Invalid { key: &'static str, value: String, problem: &'static str },
}

/// Command-line and environment overrides: every field is optional; set ones win over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// TOML configuration file (see configs/vehicle.toml).
    #[arg(long, env = "ADS_VEHICLE_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "ADS_VEHICLE_ID")]
    pub vehicle_id: Option<String>,
    /// Frame source: sim, camera, video, carla, recording or gstreamer (docs/sources.md).
    #[arg(long, value_enum, env = "ADS_VEHICLE_SOURCE")]
    pub source: Option<SourceKind>,
    /// Frame size of the ring, WIDTHxHEIGHT (same as --width and --height).
    #[arg(long, value_parser = parse_resolution, env = "ADS_VEHICLE_RESOLUTION")]
    pub resolution: Option<(u32, u32)>,
    /// V4L2 device of `--source camera`.
    #[arg(long, env = "ADS_VEHICLE_DEVICE")]
    pub device: Option<PathBuf>,
    /// Video file of `--source video`, MCAP file of `--source recording`.
    #[arg(long, env = "ADS_VEHICLE_VIDEO")]
    pub path: Option<PathBuf>,
    /// GStreamer pipeline of `--source gstreamer`, without a sink, e.g. "libcamerasrc".
    #[arg(long, env = "ADS_VEHICLE_PIPELINE")]
    pub pipeline: Option<String>,
    /// Play the video file (or recording) again from the start when it ends.
    #[arg(long = "loop", env = "ADS_VEHICLE_VIDEO_LOOP")]
    pub looping: bool,
    #[arg(long, env = "ADS_VEHICLE_CARLA_HOST")]
    pub carla_host: Option<String>,
    #[arg(long, env = "ADS_VEHICLE_CARLA_PORT")]
    pub carla_port: Option<u16>,
    /// Python with the carla package, for the CARLA sidecar.
    #[arg(long, env = "ADS_VEHICLE_CARLA_PYTHON")]
    pub carla_python: Option<PathBuf>,
    /// Steer from detections (default) or from the simulator's ground truth.
    #[arg(long, value_enum, env = "ADS_VEHICLE_CONTROL")]
    pub control: Option<SteerFrom>,
    #[arg(long, env = "ADS_VEHICLE_FPS")]
    pub fps: Option<f64>,
    #[arg(long, env = "ADS_VEHICLE_WIDTH")]
    pub width: Option<u32>,
    #[arg(long, env = "ADS_VEHICLE_HEIGHT")]
    pub height: Option<u32>,
    #[arg(long, value_enum, env = "ADS_VEHICLE_TRACK")]
    pub track: Option<TrackKind>,
    #[arg(long, env = "ADS_VEHICLE_SEED")]
    pub seed: Option<u64>,
    /// What moves the simulated car: direct (the loop's controls) or outputs (the actuator's
    /// pulses, fed back by the board on --sim-outputs-socket; docs/actuators.md).
    #[arg(long, value_enum, env = "ADS_VEHICLE_SIM_ACTUATION")]
    pub sim_actuation: Option<SimActuation>,
    /// Unix datagram socket the simulator binds for `--sim-actuation outputs`.
    #[arg(long, env = "ADS_VEHICLE_SIM_OUTPUTS_SOCKET")]
    pub sim_outputs_socket: Option<PathBuf>,
    /// ZeroMQ endpoint to publish on, e.g. tcp://*:5557.
    #[arg(long, env = "ADS_VEHICLE_BROADCAST")]
    pub broadcast: Option<String>,
    /// ZeroMQ endpoint of the video socket, e.g. tcp://*:5559.
    #[arg(long, env = "ADS_VEHICLE_VIDEO_ENDPOINT")]
    pub video_endpoint: Option<String>,
    /// Frames sent to a viewer and not yet credited, at most (link.frames_in_flight).
    #[arg(long, env = "ADS_VEHICLE_FRAMES_IN_FLIGHT")]
    pub frames_in_flight: Option<u32>,
    /// Cap of each viewer's video, kbit/s (0 = none).
    #[arg(long, env = "ADS_VEHICLE_MAX_KBPS_PER_VIEWER")]
    pub max_kbps_per_viewer: Option<u32>,
    /// ZeroMQ endpoint to take actions on, e.g. tcp://*:5558.
    #[arg(long, env = "ADS_VEHICLE_ACTIONS")]
    pub actions: Option<String>,
    /// Key file authenticating actions (mode 0600); without one, actions only from loopback.
    #[arg(long, env = "ADS_VEHICLE_ACTION_KEY")]
    pub action_key: Option<PathBuf>,
    /// JPEG quality of the best video tier (link.quality_max).
    #[arg(long, env = "ADS_VEHICLE_JPEG_QUALITY")]
    pub jpeg_quality: Option<u8>,
    #[arg(long, env = "ADS_VEHICLE_FRAMES_RING")]
    pub frames_ring: Option<String>,
    #[arg(long, env = "ADS_VEHICLE_DETECTIONS_RING")]
    pub detections_ring: Option<String>,
    #[arg(long, env = "ADS_VEHICLE_TARGET_SPEED")]
    pub target_speed: Option<f64>,
    /// File persisting the emergency-stop latch [default: $STATE_DIRECTORY or ~/.local/state/ads].
    #[arg(long, env = "ADS_VEHICLE_LATCH_FILE")]
    pub latch_file: Option<PathBuf>,
    /// Drive only while an operator's heartbeat arrives (dead-man) [default: true for camera
    /// and CARLA, false for the simulator and files].
    #[arg(long, env = "ADS_VEHICLE_REQUIRE_OPERATOR", num_args = 0..=1, default_missing_value = "true")]
    pub require_operator: Option<bool>,
    /// Drive right after start (simulator and files only) [default: unless an operator is required].
    #[arg(long, env = "ADS_VEHICLE_DRIVE_ON_START", num_args = 0..=1, default_missing_value = "true")]
    pub drive_on_start: Option<bool>,
    /// No operator heartbeat for this long → controlled stop [default: 1000].
    #[arg(long, env = "ADS_VEHICLE_OPERATOR_TIMEOUT_MS")]
    pub operator_timeout_ms: Option<u64>,
    /// Steering and throttle outputs: none, pca9685 or serial (docs/actuators.md).
    #[arg(long, value_enum, env = "ADS_VEHICLE_ACTUATOR")]
    pub actuator: Option<ActuatorKind>,
    /// I2C bus (/dev/i2c-1) or serial port (/dev/ttyACM0) of the actuator.
    #[arg(long, env = "ADS_VEHICLE_ACTUATOR_DEVICE")]
    pub actuator_device: Option<PathBuf>,
}

impl VehicleConfig {
    /// Parses a TOML document (unknown keys are errors naming the key).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Defaults, then the file named in `overrides` (if any), then the overrides themselves;
    /// validated once.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = match &overrides.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                Self::from_toml(&text, path)?
            }
            None => Self::default(),
        };
        let o = overrides.clone();
        macro_rules! set {
            ($field:expr, $value:expr) => {
                if let Some(v) = $value {
                    $field = v;
                }
            };
        }
        set!(config.vehicle_id, o.vehicle_id);
        set!(config.source, o.source);
        set!(config.control, o.control);
        set!(config.fps, o.fps);
        set!(config.width, o.width);
        set!(config.height, o.height);
        if let Some((w, h)) = o.resolution {
            (config.width, config.height) = (w, h);
        }
        set!(config.camera.device, o.device);
        config.video.path = o.path.or(config.video.path);
        config.video.looping |= o.looping;
        config.gstreamer.pipeline = o.pipeline.or(config.gstreamer.pipeline);
        set!(config.carla.host, o.carla_host);
        set!(config.carla.port, o.carla_port);
        set!(config.carla.python, o.carla_python);
        set!(config.sim.track, o.track);
        set!(config.sim.seed, o.seed);
        set!(config.sim.actuation, o.sim_actuation);
        config.sim.outputs_socket = o.sim_outputs_socket.or(config.sim.outputs_socket);
        set!(config.broadcast.endpoint, o.broadcast);
        set!(config.actions.endpoint, o.actions);
        if let Some(path) = o.action_key {
            config.actions.key_file = Some(path);
        }
        set!(config.link.quality_max, o.jpeg_quality);
        set!(config.link.endpoint, o.video_endpoint);
        set!(config.link.max_kbps_per_viewer, o.max_kbps_per_viewer);
        set!(config.link.frames_in_flight, o.frames_in_flight);
        set!(config.frames_ring, o.frames_ring);
        set!(config.detections_ring, o.detections_ring);
        set!(config.drive.target_speed_mps, o.target_speed);
        config.actions.latch_file = o.latch_file.or(config.actions.latch_file);
        config.actions.require_operator = o.require_operator.or(config.actions.require_operator);
        config.actions.drive_on_start = o.drive_on_start.or(config.actions.drive_on_start);
        set!(config.actions.operator_timeout_ms, o.operator_timeout_ms);
        set!(config.actuator.kind, o.actuator);
        config.actuator.device = o.actuator_device.or(config.actuator.device);
        if config.vehicle_id.is_empty() {
            config.vehicle_id = default_vehicle_id();
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(
            ok: bool,
            key: &'static str,
            value: impl ToString,
            problem: &'static str,
        ) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid { key, value: value.to_string(), problem })
            }
        }
        check(self.fps > 0.0 && self.fps <= 1000.0, "fps", self.fps, "must be in (0, 1000]")?;
        check((16..=8192).contains(&self.width), "width", self.width, "must be in 16..=8192")?;
        check((16..=8192).contains(&self.height), "height", self.height, "must be in 16..=8192")?;
        check(self.ring_extra_pins <= 32, "ring_extra_pins", self.ring_extra_pins, "must be at most 32")?;
        if let Some(slots) = self.ring_slots {
            check(
                slots >= self.pinning_readers() + 2,
                "ring_slots",
                slots,
                "must be at least the pinning readers + 2 (the vehicle's broadcast and detector, plus \
                 ring_extra_pins), or the writer drops frames while every reader holds one",
            )?;
        }
        check(!self.vehicle_id.is_empty(), "vehicle_id", &self.vehicle_id, "must not be empty")?;
        check(
            self.broadcast.send_hwm > 0,
            "broadcast.send_hwm",
            self.broadcast.send_hwm,
            "must be positive",
        )?;
        let b = self.broadcast.send_buffer_bytes;
        check(
            (4096..=16 << 20).contains(&b),
            "broadcast.send_buffer_bytes",
            b,
            "must be in 4096..=16777216",
        )?;
        let d = self.broadcast.dscp;
        check(d <= 63, "broadcast.dscp", d, "must be in 0..=63")?;
        self.link.validate()?;
        self.h264.validate()?;
        let s = self.drive.target_speed_mps;
        check((0.0..=40.0).contains(&s), "drive.target_speed_mps", s, "must be in 0..=40")?;
        let l = self.drive.lookahead_m;
        check(l > 0.5 && l < 100.0, "drive.lookahead_m", l, "must be in (0.5, 100)")?;
        let e = self.actions.max_expiry_s;
        check((1..=3600).contains(&e), "actions.max_expiry_s", e, "must be in 1..=3600")?;
        let d = self.actions.dscp;
        check(d <= 63, "actions.dscp", d, "must be in 0..=63")?;
        let ot = self.actions.operator_timeout_ms;
        check((100..=60_000).contains(&ot), "actions.operator_timeout_ms", ot, "must be in 100..=60000")?;
        check(
            !(self.is_real_car() && self.actions.drive_on_start == Some(true)),
            "actions.drive_on_start",
            true,
            "a real car (camera, CARLA) always starts held and drives only after an operator's resume",
        )?;
        let t = self.drive.detection_timeout_ms;
        check(t > 0, "drive.detection_timeout_ms", t, "must be positive")?;
        check(
            self.control != SteerFrom::Truth || self.source == SourceKind::Sim,
            "control",
            "truth",
            "only the simulator has ground truth; steer from detections with a real source",
        )?;
        let ct = self.carla.timeout_s;
        check(ct > 0.0 && ct <= 600.0, "carla.timeout_s", ct, "must be in (0, 600]")?;
        self.actuator.validate()?;
        if self.sim.actuation == SimActuation::Outputs {
            check(self.source == SourceKind::Sim, "sim.actuation", "outputs", "only with source = \"sim\"")?;
            check(
                self.actuator.kind != ActuatorKind::None,
                "sim.actuation",
                "outputs",
                "needs actuator outputs (actuator.kind = \"serial\" or \"pca9685\")",
            )?;
            check(
                self.sim.outputs_socket.is_some(),
                "sim.outputs_socket",
                "unset",
                "must name the socket the board reports its outputs on",
            )?;
        }
        Ok(())
    }
}

/// Whether a GStreamer pipeline films the real world: everything but a file or a test
/// pattern is taken for a camera (then the car is a real car: held at start).
pub fn is_live_pipeline(pipeline: &str) -> bool {
    let first = pipeline.trim_start().split(|c: char| c.is_whitespace() || c == '!').next().unwrap_or("");
    !matches!(first, "filesrc" | "videotestsrc" | "multifilesrc")
}

/// `ads-HOSTNAME` (`ads-vehicle` if the host has no name).
/// Readers of the frames ring that the vehicle itself runs, each holding one frame pinned at a
/// time: the broadcast (video link, recorder feed) and the detector (`ads-detection`).
pub const VEHICLE_PINNING_READERS: u32 = 2;

pub fn default_vehicle_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match host.trim() {
        "" | "localhost" => "ads-vehicle".into(),
        name => format!("ads-{name}"),
    }
}

impl VehicleConfig {
    /// A car that moves in the world: a camera or CARLA source, or any hardware outputs
    /// (a servo and an ESC driven from the simulator are still a real car on a stand).
    /// Frames the frames ring's readers may hold pinned at once: the vehicle's own two (its
    /// broadcast's reader and the detector) and `ring_extra_pins`.
    pub fn pinning_readers(&self) -> u32 {
        VEHICLE_PINNING_READERS + self.ring_extra_pins
    }

    /// Slots of the frames ring: `ring_slots`, or else the pinning readers + 2, the fewest with
    /// which the writer never has to drop a frame (4 + 2 = 6 by default).
    pub fn frames_ring_slots(&self) -> u32 {
        self.ring_slots.unwrap_or(self.pinning_readers() + 2)
    }

    pub fn is_real_car(&self) -> bool {
        let live_pipeline = self.source == SourceKind::Gstreamer
            && self.gstreamer.pipeline.as_deref().is_none_or(is_live_pipeline);
        matches!(self.source, SourceKind::Camera | SourceKind::Carla)
            || live_pipeline
            || self.actuator.kind != ActuatorKind::None
    }

    /// Whether the dead-man applies: as configured, else on for real cars only.
    pub fn require_operator(&self) -> bool {
        self.actions.require_operator.unwrap_or(self.is_real_car())
    }

    /// Whether the car may drive right after start when nothing holds it.
    pub fn drive_on_start(&self) -> bool {
        !self.is_real_car() && self.actions.drive_on_start.unwrap_or(!self.require_operator())
    }
}

impl ActionsSection {
    /// The latch file to use: configured, or the default for this vehicle id.
    pub fn latch_path(&self, vehicle_id: &str) -> PathBuf {
        self.latch_file.clone().unwrap_or_else(|| crate::latch::default_path(vehicle_id))
    }
}

impl LinkSection {
    fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &'static str, value: String, problem: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid { key, value, problem })
            }
        };
        let n = self.frames_in_flight;
        check((1..=4).contains(&n), "link.frames_in_flight", n.to_string(), "must be in 1..=4")?;
        let a = self.target_frame_age_ms;
        check((5..=5000).contains(&a), "link.target_frame_age_ms", a.to_string(), "must be in 5..=5000")?;
        let (hi, lo) = (self.quality_max, self.quality_min);
        check((1..=100).contains(&hi), "link.quality_max", hi.to_string(), "must be in 1..=100")?;
        check((1..=hi).contains(&lo), "link.quality_min", lo.to_string(), "must be in 1..=link.quality_max")?;
        let (hi, lo) = (self.scale_max, self.scale_min);
        check((0.1..=1.0).contains(&hi), "link.scale_max", hi.to_string(), "must be in 0.1..=1.0")?;
        check((0.1..=hi).contains(&lo), "link.scale_min", lo.to_string(), "must be in 0.1..=link.scale_max")?;
        let m = self.max_fps;
        check(m > 0.0 && m <= 1000.0, "link.max_fps", m.to_string(), "must be in (0, 1000]")?;
        let f = self.min_fps;
        check(f > 0.0 && f <= m, "link.min_fps", f.to_string(), "must be in (0, link.max_fps]")?;
        let v = self.max_viewers;
        check((1..=64).contains(&v), "link.max_viewers", v.to_string(), "must be in 1..=64")?;
        let t = self.session_timeout_ms;
        check(
            (100..=60_000).contains(&t),
            "link.session_timeout_ms",
            t.to_string(),
            "must be in 100..=60000",
        )?;
        let i = self.session_idle_ms;
        check((100..=60_000).contains(&i), "link.session_idle_ms", i.to_string(), "must be in 100..=60000")?;
        let p = self.max_sessions_per_peer;
        check(p <= 64, "link.max_sessions_per_peer", p.to_string(), "must be in 0..=64")?;
        let d = self.dscp;
        check(d <= 63, "link.dscp", d.to_string(), "must be in 0..=63")?;
        check(
            self.endpoint.contains("://"),
            "link.endpoint",
            self.endpoint.clone(),
            "must be a ZeroMQ endpoint like tcp://*:5559",
        )
    }
}

/// `800x600` → `(800, 600)`.
pub fn parse_resolution(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{text:?} is not a resolution like 800x600");
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = VehicleConfig::from_toml("fps = 30.0\nfsp = 20.0\n", Path::new("v.toml")).unwrap_err();
        assert!(err.to_string().contains("fsp"), "{err}");
        let err = VehicleConfig::from_toml("[drive]\nspeed = 3.0\n", Path::new("v.toml")).unwrap_err();
        assert!(err.to_string().contains("speed"), "{err}");
    }

    #[test]
    fn file_then_overrides_win_and_values_are_validated() {
        let dir = std::env::temp_dir().join(format!("ads-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vehicle.toml");
        std::fs::write(&path, "fps = 20.0\n[sim]\nseed = 7\n[link]\nquality_max = 60\n").unwrap();
        let mut o = Overrides { config: Some(path.clone()), ..Overrides::default() };
        let c = VehicleConfig::load(&o).unwrap();
        assert_eq!((c.fps, c.sim.seed, c.link.quality_max, c.width), (20.0, 7, 60, 800));
        o.fps = Some(15.0);
        assert_eq!(VehicleConfig::load(&o).unwrap().fps, 15.0);
        o.jpeg_quality = Some(0);
        let err = VehicleConfig::load(&o).unwrap_err();
        assert!(err.to_string().contains("link.quality_max"), "{err}");
        o.jpeg_quality = Some(20);
        let err = VehicleConfig::load(&o).unwrap_err();
        assert!(err.to_string().contains("link.quality_min = 30"), "{err}");
        o.jpeg_quality = None;
        for (toml, key) in [
            ("[link]\nframes_in_flight = 0\n", "link.frames_in_flight"),
            ("[link]\nscale_min = 0.05\n", "link.scale_min"),
            ("[link]\nmin_fps = 60.0\n", "link.min_fps"),
            ("[link]\ntarget_frame_age_ms = 1\n", "link.target_frame_age_ms"),
            ("[broadcast]\nsend_buffer_bytes = 10\n", "broadcast.send_buffer_bytes"),
        ] {
            std::fs::write(&path, toml).unwrap();
            let err = VehicleConfig::load(&o).unwrap_err().to_string();
            assert!(err.starts_with(key), "{toml}: {err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn source_flags_and_truth_needs_the_simulator() {
        let mut o = Overrides {
            source: Some(SourceKind::Video),
            path: Some("a.mp4".into()),
            looping: true,
            resolution: Some((640, 360)),
            ..Overrides::default()
        };
        let c = VehicleConfig::load(&o).unwrap();
        assert_eq!((c.width, c.height, c.video.looping), (640, 360, true));
        assert_eq!(c.video.path.as_deref(), Some(Path::new("a.mp4")));
        o.control = Some(SteerFrom::Truth);
        let err = VehicleConfig::load(&o).unwrap_err().to_string();
        assert!(err.contains("control = truth") && err.contains("ground truth"), "{err}");
        assert_eq!(parse_resolution("1280x720"), Ok((1280, 720)));
        assert!(parse_resolution("1280:720").unwrap_err().contains("like 800x600"));
    }

    #[test]
    fn actuator_section_file_then_flags_and_validation_names_the_key() {
        let dir = std::env::temp_dir().join(format!("ads-config-actuator-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vehicle.toml");
        std::fs::write(
            &path,
            "[actuator]\nkind = \"pca9685\"\naddress = 0x41\n[actuator.calibration]\nsteering_centre_us = 1480\n",
        )
        .unwrap();
        let mut o = Overrides { config: Some(path.clone()), ..Overrides::default() };
        let c = VehicleConfig::load(&o).unwrap();
        assert_eq!((c.actuator.kind, c.actuator.address), (ActuatorKind::Pca9685, 0x41));
        assert_eq!(c.actuator.calibration.steering_centre_us, 1480);
        assert_eq!(c.actuator.device_path(), Path::new("/dev/i2c-1"));
        assert_eq!((c.actuator.command_timeout_ms, c.actuator.max_throttle), (100, 0.3));
        o.actuator = Some(ActuatorKind::Serial);
        assert_eq!(VehicleConfig::load(&o).unwrap().actuator.device_path(), Path::new("/dev/ttyACM0"));
        o.actuator_device = Some("/dev/ttyUSB3".into());
        let c = VehicleConfig::load(&o).unwrap();
        assert_eq!(
            (c.actuator.kind, c.actuator.device_path()),
            (ActuatorKind::Serial, "/dev/ttyUSB3".into())
        );
        for (toml, key) in [
            ("[actuator]\nthrottle_channel = 0\n", "actuator.throttle_channel"),
            ("[actuator]\nsteering_channel = 16\n", "actuator.steering_channel"),
            ("[actuator]\naddress = 0x70\n", "actuator.address"),
            ("[actuator]\nmax_throttle = 0.0\n", "actuator.max_throttle"),
            ("[actuator]\ncommand_timeout_ms = 5000\n", "actuator.command_timeout_ms"),
            ("[actuator]\nfrequency_hz = 500.0\n", "actuator.frequency_hz"),
            (
                "[actuator]\nfrequency_hz = 400.0\n[actuator.calibration]\nsteering_left_us = 2450\n",
                "actuator.frequency_hz",
            ),
            ("[actuator.calibration]\nsteering_left_us = 3000\n", "actuator.calibration.steering_left_us"),
        ] {
            std::fs::write(&path, toml).unwrap();
            let err = VehicleConfig::load(&o).unwrap_err().to_string();
            assert!(err.starts_with(key), "{toml}: {err}");
        }
        // The simulator driven through the outputs: needs outputs and a socket, and a simulator.
        o.actuator = None;
        o.actuator_device = None;
        o.sim_actuation = Some(SimActuation::Outputs);
        std::fs::write(&path, "").unwrap();
        let err = VehicleConfig::load(&o).unwrap_err().to_string();
        assert!(err.starts_with("sim.actuation") && err.contains("actuator outputs"), "{err}");
        o.actuator = Some(ActuatorKind::Serial);
        let err = VehicleConfig::load(&o).unwrap_err().to_string();
        assert!(err.starts_with("sim.outputs_socket"), "{err}");
        o.sim_outputs_socket = Some("/tmp/sim.sock".into());
        let c = VehicleConfig::load(&o).unwrap();
        assert_eq!(c.sim.actuation, SimActuation::Outputs);
        o.source = Some(SourceKind::Video);
        let err = VehicleConfig::load(&o).unwrap_err().to_string();
        assert!(err.starts_with("sim.actuation") && err.contains("source"), "{err}");
        o = Overrides { config: Some(path.clone()), ..Overrides::default() };
        std::fs::write(&path, "[actuator]\nkind = \"i2c\"\n").unwrap();
        let err = VehicleConfig::load(&o).unwrap_err().to_string();
        assert!(err.contains("i2c") && err.contains("pca9685"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ring_slots_default_to_the_pinning_readers_plus_two() {
        let valid = |text: &str| {
            let c =
                VehicleConfig::from_toml(&format!("vehicle_id = \"t\"\n{text}"), Path::new("vehicle.toml"))?;
            c.validate().map(|()| c)
        };
        // The vehicle's broadcast and detector, and one Python reader holding 2: 4 + 2.
        assert_eq!(valid("").unwrap().frames_ring_slots(), 6);
        assert_eq!(valid("ring_extra_pins = 4").unwrap().frames_ring_slots(), 8);
        assert_eq!(valid("ring_extra_pins = 0").unwrap().frames_ring_slots(), 4);
        assert_eq!(valid("ring_slots = 7").unwrap().frames_ring_slots(), 7);
        // Fewer than the rule: refused, naming the key (4 was the default, with no room for a
        // pinning reader besides the vehicle's own).
        let err = valid("ring_slots = 4").unwrap_err().to_string();
        assert!(err.contains("ring_slots") && err.contains("pinning readers + 2"), "{err}");
        assert!(valid("ring_slots = 4\nring_extra_pins = 0").is_ok());
    }

    #[test]
    fn the_shipped_config_file_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/vehicle.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(VehicleConfig::from_toml(&text, &path).unwrap(), VehicleConfig::default());
    }
}
