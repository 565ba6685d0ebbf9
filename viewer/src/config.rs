//! The viewer's configuration: defaults < TOML file (`--config`) < environment < flags.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// `codec = "auto"`: H.264 while a browser that decodes it (WebCodecs) is connected, JPEG
/// otherwise.
pub const CODEC_AUTO: &str = "auto";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewerConfig {
    /// The vehicle's PUB endpoint.
    pub vehicle: String,
    /// The vehicle's action endpoint. Empty: the one its states advertise
    /// (`state.commands.action_port` on the host of `vehicle`; docs/protocol.md 1).
    pub actions: String,
    /// The vehicle's video endpoint (its `link.endpoint`). Empty: the one its states advertise
    /// (`state.link.video_port` on the host of `vehicle`).
    pub video: String,
    /// Address the web UI listens on. Loopback unless you mean to share it.
    pub bind: IpAddr,
    pub port: u16,
    /// Only act on (and send actions to) this vehicle id; empty = the first one heard.
    pub vehicle_id: String,
    /// Our name in actions; the vehicle tracks sequence numbers per sender.
    pub sender: String,
    /// No message from the vehicle for this long → the link is shown as lost.
    pub link_timeout_ms: u64,
    /// A detection older than this (relative to the frame shown) is marked stale.
    pub stale_detection_ms: u64,
    /// An action without acknowledgement after this long is reported as unanswered; an HTTP
    /// caller of `POST /api/action` is answered within it (`202 pending` while an e-stop is
    /// still being retransmitted).
    pub ack_timeout_ms: u64,
    /// A state that took this much longer on the way than the link's usual (over the last
    /// 10 s) is a backlog from an outage and is never shown, ms.
    pub stale_state_ms: u64,
    /// JPEG quality of `/stream.mjpg` and `/snapshot.jpg` (overlays burned in).
    pub mjpeg_quality: u8,
    /// Shared key that signs our actions (must match the vehicle's `actions.key_file`; mode
    /// 0600). Without it, only a vehicle on this machine (loopback) accepts our actions.
    pub action_key: Option<PathBuf>,
    /// Token the web UI asks for. Required (generated and printed if unset) when `bind` is
    /// not a loopback address; optional on loopback.
    pub access_token: Option<String>,
    /// Most browsers (websockets) and MJPEG clients served at once; more are refused.
    pub max_clients: usize,
    /// Host names (besides loopback names and IP addresses) the web UI answers to, e.g. the
    /// laptop's name on the LAN. Anything else in `Host` is refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Extra origins (`scheme://host:port`) allowed to POST and open websockets, e.g. a TLS
    /// reverse proxy's. The viewer's own origins on loopback are always allowed.
    pub allowed_origins: Vec<String>,
    /// Most TCP connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Limit for reading a request's headers, and for answering any request, ms.
    pub request_timeout_ms: u64,
    /// Most snapshot / MJPEG encodes running at once.
    pub max_encodes: usize,
    /// Frames larger than this many pixels (by their JPEG header) are refused, never decoded.
    pub max_frame_pixels: u64,
    /// How often the operator heartbeat goes to the vehicle while an operator is present (a
    /// page that is visible and was used lately reports so), ms.
    pub heartbeat_ms: u64,
    /// A page counts as a present operator while it is visible and had input (a key, the
    /// mouse, a touch) within this many ms.
    pub operator_input_ms: u64,
    /// Lease of each `drive` command sent while a browser drives, ms (1..=300): the car stops
    /// this long after the last one arrived (a released key, a closed tab, a dropped link).
    pub drive_lease_ms: u32,
    /// Port of the Foxglove WebSocket server (on `bind`; docs/recording.md); off when unset.
    pub foxglove_port: Option<u16>,
    /// Page origins besides the viewer's own allowed to open the Foxglove socket, e.g.
    /// `https://app.foxglove.dev`; the access token is still required off loopback.
    pub foxglove_origins: Vec<String>,
    /// Most connections the Foxglove port serves at once (its own limit, besides the web
    /// UI's `max_connections`: a flood there never takes the web UI's descriptors).
    pub foxglove_max_connections: usize,
    /// Most subscriptions one Foxglove client holds.
    pub foxglove_max_subscriptions: usize,
    /// Where the page's Record button writes recordings (created when needed).
    pub recordings_dir: PathBuf,
    /// A Record-button recording stops by itself at this size (checked every second), bytes.
    pub record_max_bytes: u64,
    /// ... after this long, seconds.
    pub record_max_seconds: u64,
    /// ... or when the disk of `recordings_dir` has less free space than this (checked
    /// before it starts and every second), bytes.
    pub record_min_free_bytes: u64,
    /// Codec asked of the vehicle: `auto` (the default: `h264` while a connected browser
    /// decodes it, `jpeg` otherwise), `jpeg` or `h264` (JPEG if the vehicle lacks it; browsers
    /// without WebCodecs get JPEG made here from the decoded pictures, when they want one).
    pub codec: String,
}

impl Default for ViewerConfig {
    fn default() -> Self {
        Self {
            vehicle: format!("tcp://127.0.0.1:{}", ads_protocol::DEFAULT_PUB_PORT),
            actions: String::new(),
            video: String::new(),
            bind: IpAddr::from([127, 0, 0, 1]),
            port: ads_protocol::DEFAULT_VIEWER_PORT,
            vehicle_id: String::new(),
            sender: default_sender(),
            link_timeout_ms: 1500,
            stale_detection_ms: 300,
            ack_timeout_ms: 3000,
            stale_state_ms: 1000,
            mjpeg_quality: 80,
            action_key: None,
            access_token: None,
            max_clients: 32,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_connections: 256,
            request_timeout_ms: 10_000,
            max_encodes: 2,
            max_frame_pixels: 3840 * 2160,
            heartbeat_ms: 250,
            operator_input_ms: 30_000,
            drive_lease_ms: 250,
            foxglove_port: None,
            foxglove_origins: Vec::new(),
            foxglove_max_connections: 16,
            foxglove_max_subscriptions: 32,
            recordings_dir: PathBuf::from("recordings"),
            record_max_bytes: 4_000_000_000,
            record_max_seconds: 3600,
            record_min_free_bytes: 1_000_000_000,
            codec: CODEC_AUTO.into(),
        }
    }
}

fn default_sender() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let name = format!("viewer@{}", if host.is_empty() { "localhost" } else { host });
    name.char_indices().take_while(|(i, c)| i + c.len_utf8() <= 48).map(|(_, c)| c).collect()
}

/// Flags; every one also reads an `ADS_VIEWER_*` environment variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// TOML file with any of the settings below (see configs/viewer.toml).
    #[arg(long, env = "ADS_VIEWER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The vehicle's PUB endpoint, e.g. tcp://car.local:5557.
    #[arg(long, env = "ADS_VIEWER_VEHICLE")]
    pub vehicle: Option<String>,
    /// The vehicle's action endpoint, e.g. tcp://car.local:5558 [default: the one its states advertise].
    #[arg(long, env = "ADS_VIEWER_ACTIONS")]
    pub actions: Option<String>,
    /// The vehicle's video endpoint [default: the one its states advertise].
    #[arg(long, env = "ADS_VIEWER_VIDEO")]
    pub video: Option<String>,
    /// Address to serve the web UI on [default: 127.0.0.1].
    #[arg(long, env = "ADS_VIEWER_BIND")]
    pub bind: Option<IpAddr>,
    /// Port of the web UI [default: 8080].
    #[arg(long, env = "ADS_VIEWER_PORT")]
    pub port: Option<u16>,
    /// Only show and command this vehicle id.
    #[arg(long, env = "ADS_VIEWER_VEHICLE_ID")]
    pub vehicle_id: Option<String>,
    /// Name used as the sender of actions [default: viewer@HOSTNAME].
    #[arg(long, env = "ADS_VIEWER_SENDER")]
    pub sender: Option<String>,
    /// Key file that signs actions (the vehicle's key; see docs/security.md).
    #[arg(long, env = "ADS_VIEWER_ACTION_KEY")]
    pub action_key: Option<PathBuf>,
    /// Access token for the web UI [default: none on loopback, generated otherwise].
    #[arg(long, env = "ADS_VIEWER_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,
    /// Most browsers (and, separately, MJPEG clients) served at once [default: 32].
    #[arg(long, env = "ADS_VIEWER_MAX_CLIENTS")]
    pub max_clients: Option<usize>,
    /// A host name the web UI answers to besides loopback and IP addresses (repeatable).
    #[arg(long = "allowed-host", env = "ADS_VIEWER_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// An extra origin allowed to act, e.g. https://viewer.example (repeatable).
    #[arg(long = "allowed-origin", env = "ADS_VIEWER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Time limit for a request's headers and its answer, ms [default: 10000].
    #[arg(long, env = "ADS_VIEWER_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Most TCP connections at once [default: 256].
    #[arg(long, env = "ADS_VIEWER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest frame accepted from the vehicle, pixels [default: 3840x2160].
    #[arg(long, env = "ADS_VIEWER_MAX_FRAME_PIXELS")]
    pub max_frame_pixels: Option<u64>,
    /// Serve the Foxglove WebSocket protocol on this port (Foxglove, Lichtblick).
    #[arg(long, env = "ADS_VIEWER_FOXGLOVE_PORT")]
    pub foxglove_port: Option<u16>,
    /// Directory the page's Record button writes into [default: recordings].
    #[arg(long, env = "ADS_VIEWER_RECORDINGS_DIR")]
    pub recordings_dir: Option<PathBuf>,
    /// Codec asked of the vehicle: auto (H.264 while a browser decodes it), jpeg or h264 [default: auto].
    #[arg(long, env = "ADS_VIEWER_CODEC")]
    pub codec: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{0}")]
    Invalid(String),
}

impl ViewerConfig {
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = match &overrides.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let o = overrides.clone();
        if let Some(v) = o.vehicle {
            config.vehicle = v;
        }
        if let Some(v) = o.actions {
            config.actions = v;
        }
        if let Some(v) = o.video {
            config.video = v;
        }
        if let Some(v) = o.bind {
            config.bind = v;
        }
        if let Some(v) = o.port {
            config.port = v;
        }
        if let Some(v) = o.vehicle_id {
            config.vehicle_id = v;
        }
        if let Some(v) = o.sender {
            config.sender = v;
        }
        if let Some(v) = o.action_key {
            config.action_key = Some(v);
        }
        if let Some(v) = o.access_token {
            config.access_token = Some(v);
        }
        if let Some(v) = o.max_clients {
            config.max_clients = v;
        }
        config.allowed_hosts.extend(o.allowed_hosts);
        config.allowed_origins.extend(o.allowed_origins);
        if let Some(v) = o.request_timeout_ms {
            config.request_timeout_ms = v;
        }
        if let Some(v) = o.max_connections {
            config.max_connections = v;
        }
        if let Some(v) = o.max_frame_pixels {
            config.max_frame_pixels = v;
        }
        if let Some(v) = o.foxglove_port {
            config.foxglove_port = Some(v);
        }
        if let Some(v) = o.recordings_dir {
            config.recordings_dir = v;
        }
        if let Some(v) = o.codec {
            config.codec = v;
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if (self.actions.is_empty() || self.video.is_empty())
            && ads_protocol::discover::tcp_host(&self.vehicle).is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "the video and action endpoints are found from a tcp://HOST:PORT vehicle endpoint, not {:?}: \
                 pass --video and --actions",
                self.vehicle
            )));
        }
        for (key, value) in [("vehicle", &self.vehicle), ("actions", &self.actions), ("video", &self.video)] {
            if !value.is_empty() && !value.contains("://") {
                return Err(ConfigError::Invalid(format!(
                    "{key} = {value:?} is not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:5557)"
                )));
            }
        }
        if !(1..=100).contains(&self.mjpeg_quality) {
            return Err(ConfigError::Invalid(format!(
                "mjpeg_quality = {} is outside 1..=100",
                self.mjpeg_quality
            )));
        }
        if ![CODEC_AUTO, ads_protocol::CODEC_JPEG, ads_protocol::CODEC_H264].contains(&self.codec.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "codec = {:?} is none of \"auto\", \"jpeg\" and \"h264\"",
                self.codec
            )));
        }
        if !(1..=ads_protocol::MAX_DRIVE_LEASE_MS).contains(&self.drive_lease_ms) {
            return Err(ConfigError::Invalid(format!(
                "drive_lease_ms = {} is outside 1..={}",
                self.drive_lease_ms,
                ads_protocol::MAX_DRIVE_LEASE_MS
            )));
        }
        if self.max_clients == 0 {
            return Err(ConfigError::Invalid("max_clients must be at least 1".into()));
        }
        // The instance suffix (`#` and 8 hex digits) must still fit the protocol's 64 bytes.
        if self.sender.is_empty() || self.sender.len() > 48 {
            return Err(ConfigError::Invalid("sender must be 1..=48 bytes".into()));
        }
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("foxglove_max_connections", self.foxglove_max_connections as u64),
            ("record_max_bytes", self.record_max_bytes),
            ("record_max_seconds", self.record_max_seconds),
            ("request_timeout_ms", self.request_timeout_ms),
            ("max_encodes", self.max_encodes as u64),
            ("max_frame_pixels", self.max_frame_pixels),
            ("heartbeat_ms", self.heartbeat_ms),
            ("operator_input_ms", self.operator_input_ms),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{key} must be positive")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/viewer.toml");
        let loaded = ViewerConfig::load(&Overrides { config: Some(path), ..Overrides::default() }).unwrap();
        let defaults = ViewerConfig::load(&Overrides::default()).unwrap();
        assert_eq!(loaded, defaults);
    }

    #[test]
    fn endpoints_left_empty_are_found_only_from_a_tcp_vehicle() {
        let c = ViewerConfig::load(&Overrides {
            vehicle: Some("tcp://car.local:7001".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!((c.actions.as_str(), c.video.as_str()), ("", ""), "found from the vehicle's states");
        let err =
            ViewerConfig::load(&Overrides { vehicle: Some("ipc:///tmp/x".into()), ..Overrides::default() })
                .unwrap_err()
                .to_string();
        assert!(err.contains("--video") && err.contains("--actions"), "{err}");
    }

    #[test]
    fn flags_override_the_file_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("ads-viewer-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("viewer.toml");
        std::fs::write(&file, "vehicle = \"tcp://10.0.0.2:5557\"\nport = 9000\n").unwrap();
        let mut overrides =
            Overrides { config: Some(file.clone()), port: Some(9100), ..Overrides::default() };
        overrides.actions = Some("tcp://10.0.0.2:7002".into());
        let c = ViewerConfig::load(&overrides).unwrap();
        assert_eq!(
            (c.vehicle.as_str(), c.actions.as_str(), c.video.as_str(), c.port),
            ("tcp://10.0.0.2:5557", "tcp://10.0.0.2:7002", "", 9100)
        );
        std::fs::write(&file, "vehcle = \"x\"\n").unwrap();
        let err = ViewerConfig::load(&overrides).unwrap_err().to_string();
        assert!(err.contains("vehcle"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
