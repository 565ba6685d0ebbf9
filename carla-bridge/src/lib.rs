//! CARLA as a frame source and actuator for `ads-vehicle`.
//!
//! The CARLA client is the official Python API (`carla` 0.9.16 on PyPI), so the bridge runs a
//! small Python sidecar (`sidecar/ads_carla_sidecar.py`, embedded in this crate) as a child
//! process and talks to it over a Unix socket: frames (BGRA) and the car's motion come in,
//! controls, pause/resume and respawn go out. The bridge supervises the sidecar: when it dies
//! or cannot reach the server, the bridge says why and starts it again with back-off.

pub mod bridge;
pub mod convert;
pub mod wire;

pub use bridge::{BridgeConfig, BridgeError, CarlaBridge, CarlaFrame, LinkStatus};
pub use convert::{bgra_to_bgr, carla_to_ads_pose, to_carla_control, CarlaControl, ConvertError};

/// The sidecar script, written next to the socket when the bridge starts.
pub const SIDECAR_SCRIPT: &str = include_str!("../sidecar/ads_carla_sidecar.py");
