//! `labels.csv` and `images/FRAME_ID.jpg`: one row per labelled frame, in ads conventions
//! (steering + = LEFT, throttle − = brake), with the commanded and the operator's values
//! beside the label so a user can choose another. Every field is a number or a plain word:
//! nothing needs quoting.

use super::{ExportError, LabelledFrame, Writer};
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub const HEADER: &str = "frame_id,capture_ns,image,steering,throttle,label,pilot,mode,\
commanded_steering,commanded_throttle,operator_seq,operator_steering,operator_throttle,operator_age_ms";

#[derive(Debug)]
pub struct CsvWriter {
    dir: PathBuf,
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl CsvWriter {
    pub fn create(dir: &Path) -> Result<Self, ExportError> {
        let images = dir.join("images");
        std::fs::create_dir_all(&images).map_err(ExportError::write(&images))?;
        let path = dir.join("labels.csv");
        let file = std::fs::File::create(&path).map_err(ExportError::write(&path))?;
        let mut file = std::io::BufWriter::new(file);
        writeln!(file, "{HEADER}").map_err(ExportError::write(&path))?;
        Ok(Self { dir: dir.to_path_buf(), path, file })
    }
}

/// A snake_case serde name (pilot and drive modes), as in the JSON of the recording.
fn word<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl Writer for CsvWriter {
    fn write(&mut self, frame: &LabelledFrame<'_>) -> Result<(), ExportError> {
        let image = format!("images/{}.jpg", frame.frame_id);
        let image_path = self.dir.join(&image);
        std::fs::write(&image_path, frame.jpeg).map_err(ExportError::write(&image_path))?;
        let c = frame.controls;
        // Rust's `{}` of an f64 is the shortest text that reads back exactly, never exponential.
        let operator = c.operator.map_or_else(
            || ",,,".to_string(),
            |op| format!("{},{},{},{}", op.seq, op.steering, op.throttle, op.age_ms),
        );
        writeln!(
            self.file,
            "{},{},{image},{},{},{},{},{},{},{},{operator}",
            frame.frame_id,
            frame.capture_ns,
            frame.label.steering,
            frame.label.throttle,
            frame.label.source.as_str(),
            word(&c.pilot),
            word(&c.mode),
            c.steering,
            c.throttle,
        )
        .map_err(ExportError::write(&self.path))
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.file.flush().map_err(ExportError::write(&self.path))
    }
}
