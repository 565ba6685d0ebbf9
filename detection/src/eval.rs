//! `ads-detection eval` and `eval-footage`: how good the lane detector is, in numbers.
//!
//! - [`run_eval`] drives the simulator on every track and seed, weaving inside the lane so the
//!   car is not always centred, and scores each frame with the TuSimple metric against the
//!   simulator's exact labels.
//! - [`run_footage`] runs the dashcam configuration over every frame of the real test videos,
//!   which have no labels: it reports how often both lines are found, how much the lateral
//!   offset jitters between frames, and that no frame fails; and it draws overlays on the
//!   test images for a person to judge.
//!
//! **Which lanes are scored.** The detector reports only the ego lane's two lines, so a frame's
//! truth is those two lines (`lanes[ego_left]`, `lanes[ego_right]`), not every visible line:
//! scoring against all lines would count each neighbouring line as a miss the detector never
//! tries to find.

mod footage;
mod overlay;
mod sim;

pub(crate) use footage::dashcam_rows;
pub use footage::{run_footage, FootageArgs, FootageReport, ImageResult, VideoResult};
pub use sim::{run_eval, EvalArgs, EvalReport, RunResult};

use std::path::Path;

/// Percentile (0..=100) of `values` by nearest rank; 0 for none. Sorts in place.
pub(crate) fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Writes `value` as pretty JSON, creating the parent directory.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
