//! The vehicle process: a frame source writing into the `frames` ring, a control loop steering
//! from the `detections` ring, a broadcaster publishing over ZeroMQ and an action listener.
//!
//! Threads: the control loop (this crate's `run`, paced at the source's frame rate) owns the
//! simulator and the ring writer; the broadcaster owns the PUB socket and the video socket; the action listener owns
//! the SUB socket; the latch thread owns the e-stop latch file. They talk through bounded,
//! non-blocking queues only, so neither a viewer, the detector nor the disk can make the
//! control loop wait; an e-stop reaches the loop through a mailbox of its own.

pub mod actions;
pub mod actuator;
pub mod broadcast;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod detections;
pub mod latch;
pub mod latch_writer;
pub mod peer_heartbeat;
pub mod run;
pub mod source;
pub mod teleop;
pub mod video;

pub use run::{run, Args};
