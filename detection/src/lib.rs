//! The detection process: reads frames zero-copy from the `frames` ring, finds lanes (OpenCV)
//! and objects (OpenCV DNN), and writes results into the `detections` ring.

pub mod cli;
pub mod eval;
pub mod frame;
pub mod lanes;
pub mod objects;
pub mod run;
pub mod tusimple;

pub use cli::{main_with, Args};
pub use frame::{BgrFrame, FrameError};

/// The OpenCV version this build is linked against.
pub fn opencv_version() -> String {
    opencv::core::get_version_string().unwrap_or_default()
}
