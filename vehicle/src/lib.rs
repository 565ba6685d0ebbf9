//! The vehicle process: a frame source writing into the `frames` ring, a control loop steering
//! from the `detections` ring, a broadcaster publishing over ZeroMQ and an action listener.
//!
//! Threads: the control loop (this crate's `run`, paced at the source's frame rate) owns the
//! simulator and the ring writer; the broadcaster owns the PUB socket and the video socket; the action listener owns
//! the SUB socket. They talk through bounded, non-blocking queues only, so neither a viewer nor
//! the detector can make the control loop wait.

pub mod actions;
pub mod broadcast;
pub mod config;
pub mod control;
pub mod detections;
pub mod h264;
pub mod run;
pub mod source;
pub mod tiers;
pub mod video_link;
pub mod video_peer;

pub use run::{run, Args};

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
