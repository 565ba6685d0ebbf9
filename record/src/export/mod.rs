//! `ads-record export`: a recorded drive as training data. Each frame (the JPEG on
//! `/camera/image`, its metadata on `/frame`) is paired with the `/controls` record of the same
//! frame id, its label; frames without one are skipped and counted. The pairs go to a
//! [`donkey`] tub or to a [`csv`] file with the images beside it.
//!
//! Which label (docs/recording.md, "Drives as training data"): by default the operator's
//! command where the car drove on it (`manual`: their steering and throttle; `assist`: the
//! loop's steering at their throttle), else what the control loop commanded. The operator's
//! intent is what a behaviour-cloning model should learn; a frame where a hold or the e-stop
//! overrode it is labelled with the brake the car really got.

pub mod csv;
pub mod donkey;

use crate::channels::{Channel, Recorded};
use crate::recover::{self, ReadError};
use ads_protocol::{ControlsMsg, DriveMode, FrameInfo, PilotMode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A Donkey Car tub (v2: manifest.json, catalogs, images/).
    Donkey,
    /// labels.csv, one row per labelled frame, and images/.
    Csv,
}

/// Which value labels a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelChoice {
    /// The operator's command where the car drove on it, else what the loop commanded.
    #[default]
    Operator,
    /// What the control loop commanded, always (what went to the car).
    Commanded,
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    pub out: PathBuf,
    pub label: LabelChoice,
    /// Leave out frames whose label is not the operator's (autopilot, holds, lapsed leases).
    pub operator_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} exists and is not empty: export into a new or empty directory", path.display())]
    NotEmpty { path: PathBuf },
    #[error(
        "no frame of {} has a label ({frames} frames, {controls} /controls records): \
         was it recorded from a vehicle that publishes `controls`?",
        path.display()
    )]
    NoLabels { path: PathBuf, frames: u64, controls: u64 },
}

impl ExportError {
    pub(crate) fn write(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
        move |source| ExportError::Write { path: path.to_path_buf(), source }
    }
}

/// Where a frame's label came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    /// The operator's steering and throttle (`manual`).
    Operator,
    /// The loop's steering at the operator's throttle (`assist`).
    Assist,
    /// What the control loop commanded.
    Commanded,
}

impl LabelSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            LabelSource::Operator => "operator",
            LabelSource::Assist => "assist",
            LabelSource::Commanded => "commanded",
        }
    }
}

/// A frame's label in ads conventions: steering -1..=1, + = LEFT; throttle -1..=1, − = brake.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Label {
    pub steering: f64,
    pub throttle: f64,
    pub source: LabelSource,
}

/// The label of a frame whose tick produced `controls`.
pub fn label(controls: &ControlsMsg, choice: LabelChoice) -> Label {
    let commanded =
        Label { steering: controls.steering, throttle: controls.throttle, source: LabelSource::Commanded };
    if choice == LabelChoice::Commanded || controls.mode != DriveMode::Driving {
        return commanded;
    }
    match (controls.pilot, controls.operator) {
        (PilotMode::Manual, Some(op)) => {
            Label { steering: op.steering, throttle: op.throttle, source: LabelSource::Operator }
        }
        (PilotMode::Assist, Some(op)) => {
            Label { steering: controls.steering, throttle: op.throttle, source: LabelSource::Assist }
        }
        _ => commanded,
    }
}

/// One labelled frame, as the writers get it.
#[derive(Debug)]
pub struct LabelledFrame<'a> {
    pub frame_id: u64,
    pub capture_ns: u64,
    pub jpeg: &'a [u8],
    pub controls: &'a ControlsMsg,
    pub label: Label,
}

/// A format's writer.
pub trait Writer {
    fn write(&mut self, frame: &LabelledFrame<'_>) -> Result<(), ExportError>;
    /// Writes what only the end knows (counts, manifests).
    fn finish(self: Box<Self>) -> Result<(), ExportError>;
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportReport {
    /// Frames in the recording (a JPEG with its metadata).
    pub frames: u64,
    pub exported: u64,
    /// Frames without a `/controls` record of their frame id.
    pub unlabelled: u64,
    /// Frames whose frame id has more than one `/controls` record (a vehicle restarted within
    /// the recording): which label is theirs is unknown.
    pub ambiguous: u64,
    /// Frames left out by `--operator-only`.
    pub not_operator: u64,
    /// Frames that are not JPEG (an H.264 recording).
    pub not_jpeg: u64,
    /// Exported frames by label source.
    pub operator_labels: u64,
    pub assist_labels: u64,
    pub commanded_labels: u64,
    /// Why reading stopped early, for a truncated recording (what came before is exported).
    pub truncated: Option<String>,
}

/// Exports `input` as `options` say.
pub fn export(input: &Path, options: &ExportOptions) -> Result<ExportReport, ExportError> {
    // Pass 1: the labels, small; pass 2 writes each frame as it is read, so a long drive's
    // images are never all in memory at once.
    let mut labels: HashMap<u64, Option<ControlsMsg>> = HashMap::new();
    let mut controls = 0u64;
    recover::visit(input, |topic, _, data| {
        if Channel::by_topic(topic) == Some(Channel::Controls) {
            if let Ok(record) = serde_json::from_slice::<Recorded<ControlsMsg>>(data) {
                controls += 1;
                labels
                    .entry(record.body.frame_id)
                    .and_modify(|seen| *seen = None)
                    .or_insert(Some(record.body));
            }
        }
    })?;
    prepare_dir(&options.out)?;
    let mut writer: Box<dyn Writer> = match options.format {
        Format::Donkey => Box::new(donkey::TubWriter::create(&options.out, input)?),
        Format::Csv => Box::new(csv::CsvWriter::create(&options.out)?),
    };
    let mut report = ExportReport::default();
    let mut failed = None;
    // The writer puts a frame's `/frame` record right before its image.
    let mut pending: Option<Recorded<FrameInfo>> = None;
    report.truncated = recover::visit(input, |topic, _, data| {
        if failed.is_some() {
            return;
        }
        match Channel::by_topic(topic) {
            Some(Channel::Frame) => pending = serde_json::from_slice(data).ok(),
            Some(Channel::Image) => {
                let (Some(info), Some(jpeg)) = (pending.take(), crate::frames::image_jpeg(data)) else {
                    return;
                };
                report.frames += 1;
                if info.body.codec != ads_protocol::CODEC_JPEG {
                    report.not_jpeg += 1;
                    return;
                }
                let controls = match labels.get(&info.body.frame_id) {
                    None => {
                        report.unlabelled += 1;
                        return;
                    }
                    Some(None) => {
                        report.ambiguous += 1;
                        return;
                    }
                    Some(Some(controls)) => controls,
                };
                let label = label(controls, options.label);
                if options.operator_only && label.source == LabelSource::Commanded {
                    report.not_operator += 1;
                    return;
                }
                let frame = LabelledFrame {
                    frame_id: info.body.frame_id,
                    capture_ns: info.envelope.capture_ns,
                    jpeg: &jpeg,
                    controls,
                    label,
                };
                match writer.write(&frame) {
                    Ok(()) => {
                        report.exported += 1;
                        *match label.source {
                            LabelSource::Operator => &mut report.operator_labels,
                            LabelSource::Assist => &mut report.assist_labels,
                            LabelSource::Commanded => &mut report.commanded_labels,
                        } += 1;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            _ => {}
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if report.exported == 0 && report.not_operator == 0 {
        return Err(ExportError::NoLabels { path: input.to_path_buf(), frames: report.frames, controls });
    }
    writer.finish()?;
    Ok(report)
}

/// Creates `dir`, or accepts it empty: an export never mixes into an existing tub.
fn prepare_dir(dir: &Path) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir).map_err(ExportError::write(dir))?;
    let mut entries = std::fs::read_dir(dir).map_err(ExportError::write(dir))?;
    if entries.next().is_some() {
        return Err(ExportError::NotEmpty { path: dir.to_path_buf() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ads_protocol::OperatorCommand;

    fn controls(pilot: PilotMode, mode: DriveMode, operator: Option<(f64, f64)>) -> ControlsMsg {
        ControlsMsg {
            frame_id: 1,
            pilot,
            mode,
            steering: 0.1,
            throttle: -0.3,
            operator: operator.map(|(steering, throttle)| OperatorCommand {
                seq: 4,
                steering,
                throttle,
                age_ms: 20,
            }),
        }
    }

    #[test]
    fn the_operator_labels_what_they_drove_and_the_loop_the_rest() {
        let manual = controls(PilotMode::Manual, DriveMode::Driving, Some((0.5, 0.4)));
        assert_eq!(
            label(&manual, LabelChoice::Operator),
            Label { steering: 0.5, throttle: 0.4, source: LabelSource::Operator }
        );
        let assist = controls(PilotMode::Assist, DriveMode::Driving, Some((0.5, 0.4)));
        assert_eq!(
            label(&assist, LabelChoice::Operator),
            Label { steering: 0.1, throttle: 0.4, source: LabelSource::Assist }
        );
        let commanded = Label { steering: 0.1, throttle: -0.3, source: LabelSource::Commanded };
        // The e-stop overrode the operator: the label is the brake the car got.
        let stopped = controls(PilotMode::Manual, DriveMode::EmergencyStop, Some((0.5, 0.4)));
        assert_eq!(label(&stopped, LabelChoice::Operator), commanded);
        let lapsed = controls(PilotMode::Manual, DriveMode::Driving, None);
        assert_eq!(label(&lapsed, LabelChoice::Operator), commanded);
        let autopilot = controls(PilotMode::Autopilot, DriveMode::Driving, None);
        assert_eq!(label(&autopilot, LabelChoice::Operator), commanded);
        assert_eq!(label(&manual, LabelChoice::Commanded), commanded);
    }
}
