//! A Donkey Car tub, v2 (donkeycar ≥ 4: `donkeycar/parts/tub_v2.py` and
//! `donkeycar/parts/datastore_v2.py`), byte for byte as donkeycar's own `Tub` writes one:
//!
//! ```text
//! TUB/manifest.json                  5 JSON lines: inputs, types, user metadata, manifest
//!                                    metadata (created_at, sessions), catalog metadata
//!                                    (paths, current_index, max_len, deleted_indexes)
//! TUB/catalog_N.catalog              one record a line, keys sorted; 1000 records a catalog
//! TUB/catalog_N.catalog_manifest     one JSON line: created_at, line_lengths, path, start_index
//! TUB/images/I_cam_image_array_.jpg  the recorded JPEG of record I, as recorded
//! ```
//!
//! JSON as Python's `json.dumps` writes it (`", "` and `": "`, `repr` floats, ASCII only), so
//! the catalog manifest's line lengths, which donkeycar's reader trusts for seeking, are
//! those of the lines. Donkey's steering is −1 = full LEFT (`PWMSteering.LEFT_ANGLE`), ours
//! + = left: `user/angle` is our steering negated. Throttle has one sign in both (+ forward).

use super::{ExportError, LabelledFrame, Writer};
use ads_protocol::PilotMode;
use serde::Serialize;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Records per catalog: donkeycar's default `max_catalog_len`.
pub const MAX_CATALOG_LEN: u64 = 1000;

/// The tub's inputs and their types: Donkey's standard four (what `donkey train` reads), then
/// ours, which Donkey carries along untouched.
pub const INPUTS: [&str; 6] =
    ["cam/image_array", "user/angle", "user/throttle", "user/mode", "ads/frame_id", "ads/label"];
pub const TYPES: [&str; 6] = ["image_array", "float", "float", "str", "int", "str"];

/// Donkey's `user/mode` for a pilot mode: its web controller's names.
pub const fn donkey_mode(pilot: PilotMode) -> &'static str {
    match pilot {
        PilotMode::Manual => "user",
        PilotMode::Assist => "local_angle",
        PilotMode::Autopilot => "local",
    }
}

/// Donkey's `user/angle` (−1 = full left) from our steering (+1 = full left).
pub fn donkey_angle(steering: f64) -> f64 {
    // Negating 0.0 gives -0.0, which Python writes as "-0.0": keep a plain zero.
    if steering == 0.0 {
        0.0
    } else {
        -steering
    }
}

/// One catalog line, its keys in sorted order (donkeycar writes `sort_keys=True`).
#[derive(Serialize)]
struct Record<'a> {
    #[serde(rename = "_index")]
    index: u64,
    #[serde(rename = "_session_id")]
    session_id: &'a str,
    #[serde(rename = "_timestamp_ms")]
    timestamp_ms: u64,
    #[serde(rename = "ads/frame_id")]
    frame_id: u64,
    #[serde(rename = "ads/label")]
    label: &'a str,
    #[serde(rename = "cam/image_array")]
    image: &'a str,
    #[serde(rename = "user/angle")]
    angle: f64,
    #[serde(rename = "user/mode")]
    mode: &'a str,
    #[serde(rename = "user/throttle")]
    throttle: f64,
}

#[derive(Serialize)]
struct CatalogManifest<'a> {
    created_at: f64,
    line_lengths: &'a [u64],
    path: &'a str,
    start_index: u64,
}

/// Line 4 of manifest.json, keys in donkeycar's insertion order.
#[derive(Serialize)]
struct ManifestMetadata<'a> {
    created_at: f64,
    sessions: Sessions<'a>,
}

#[derive(Serialize)]
struct Sessions<'a> {
    all_full_ids: [&'a str; 1],
    last_id: u64,
    last_full_id: &'a str,
}

/// Line 5 of manifest.json.
#[derive(Serialize)]
struct CatalogMetadata<'a> {
    paths: &'a [String],
    current_index: u64,
    max_len: u64,
    deleted_indexes: [u64; 0],
}

/// Line 3: the user metadata, free-form strings (`donkey tubclean` shows it).
#[derive(Serialize)]
struct UserMetadata<'a> {
    source: &'a str,
    recording: &'a str,
    steering: &'a str,
}

struct OpenCatalog {
    name: String,
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    start_index: u64,
    line_lengths: Vec<u64>,
}

pub struct TubWriter {
    dir: PathBuf,
    recording: String,
    created_at: f64,
    /// `YY-MM-DD_0` of the first frame's capture (UTC): one export, one session.
    session_id: Option<String>,
    index: u64,
    catalogs: Vec<String>,
    current: Option<OpenCatalog>,
}

impl std::fmt::Debug for TubWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TubWriter").field("dir", &self.dir).field("index", &self.index).finish()
    }
}

impl TubWriter {
    pub fn create(dir: &Path, recording: &Path) -> Result<Self, ExportError> {
        let images = dir.join("images");
        std::fs::create_dir_all(&images).map_err(ExportError::write(&images))?;
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Ok(Self {
            dir: dir.to_path_buf(),
            recording: recording.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            created_at,
            session_id: None,
            index: 0,
            catalogs: Vec::new(),
            current: None,
        })
    }

    fn catalog(&mut self) -> Result<&mut OpenCatalog, ExportError> {
        let full = self.current.as_ref().is_some_and(|c| c.line_lengths.len() as u64 >= MAX_CATALOG_LEN);
        if full {
            self.close_catalog()?;
        }
        if self.current.is_none() {
            let name = format!("catalog_{}.catalog", self.catalogs.len());
            let path = self.dir.join(&name);
            let file = std::fs::File::create(&path).map_err(ExportError::write(&path))?;
            self.catalogs.push(name.clone());
            self.current = Some(OpenCatalog {
                name,
                path,
                file: std::io::BufWriter::new(file),
                start_index: self.index,
                line_lengths: Vec::new(),
            });
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    fn close_catalog(&mut self) -> Result<(), ExportError> {
        let Some(mut catalog) = self.current.take() else { return Ok(()) };
        catalog.file.flush().map_err(ExportError::write(&catalog.path))?;
        let stem = catalog.name.trim_end_matches(".catalog");
        // donkeycar names the manifest itself in its `path` field.
        let manifest_name = format!("{stem}.catalog_manifest");
        let manifest = CatalogManifest {
            created_at: self.created_at,
            line_lengths: &catalog.line_lengths,
            path: &manifest_name,
            start_index: catalog.start_index,
        };
        let path = self.dir.join(&manifest_name);
        std::fs::write(&path, format!("{}\n", python_json(&manifest))).map_err(ExportError::write(&path))
    }
}

impl Writer for TubWriter {
    fn write(&mut self, frame: &LabelledFrame<'_>) -> Result<(), ExportError> {
        let index = self.index;
        // `Tub._image_file_name`: index, key with '/' as '_', extension, joined by '_'.
        let image = format!("{index}_cam_image_array_.jpg");
        let path = self.dir.join("images").join(&image);
        std::fs::write(&path, frame.jpeg).map_err(ExportError::write(&path))?;
        let session_id = self
            .session_id
            .get_or_insert_with(|| {
                let (y, m, d) = civil_date(frame.capture_ns);
                format!("{:02}-{m:02}-{d:02}_0", y % 100)
            })
            .clone();
        let record = Record {
            index,
            session_id: &session_id,
            timestamp_ms: frame.capture_ns / 1_000_000,
            frame_id: frame.frame_id,
            label: frame.label.source.as_str(),
            image: &image,
            angle: donkey_angle(frame.label.steering),
            mode: donkey_mode(frame.controls.pilot),
            throttle: frame.label.throttle,
        };
        let line = format!("{}\n", python_json(&record));
        let catalog = self.catalog()?;
        catalog.file.write_all(line.as_bytes()).map_err(ExportError::write(&catalog.path))?;
        catalog.line_lengths.push(line.len() as u64);
        self.index += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        // A tub with no record still has its first (empty) catalog, as donkeycar makes it.
        self.catalog()?;
        self.close_catalog()?;
        let session_id = self.session_id.clone().unwrap_or_else(|| {
            let (y, m, d) = civil_date((self.created_at * 1e9) as u64);
            format!("{:02}-{m:02}-{d:02}_0", y % 100)
        });
        let lines = [
            python_json(&INPUTS),
            python_json(&TYPES),
            python_json(&UserMetadata {
                source: "ads-record export",
                recording: &self.recording,
                steering: "user/angle -1 = full left (ads steering negated)",
            }),
            python_json(&ManifestMetadata {
                created_at: self.created_at,
                sessions: Sessions { all_full_ids: [&session_id], last_id: 0, last_full_id: &session_id },
            }),
            python_json(&CatalogMetadata {
                paths: &self.catalogs,
                current_index: self.index,
                max_len: MAX_CATALOG_LEN,
                deleted_indexes: [],
            }),
        ];
        let path = self.dir.join("manifest.json");
        std::fs::write(&path, lines.map(|l| l + "\n").concat()).map_err(ExportError::write(&path))
    }
}

/// (year, month, day) in UTC of a wall clock time in ns (Hinnant's `civil_from_days`).
fn civil_date(ns: u64) -> (i64, u32, u32) {
    let days = (ns / 86_400_000_000_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// JSON as Python's `json.dumps` writes it by default.
struct Python;

impl serde_json::ser::Formatter for Python {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + std::io::Write>(&mut self, w: &mut W, value: f64) -> std::io::Result<()> {
        w.write_all(python_float(value).as_bytes())
    }

    /// `ensure_ascii`: anything else as `\uXXXX` (UTF-16 units).
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn python_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, Python);
    // Structs of numbers and strings into a Vec: nothing can fail; non-finite floats are null.
    let _ = value.serialize(&mut serializer);
    String::from_utf8(out).unwrap_or_default()
}

/// Python's `repr` of a float: the shortest digits that read back exactly (as Rust's), in
/// fixed notation for exponents −4..16, else `d.ddde±XX`.
pub(crate) fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return "null".into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let scientific = format!("{:e}", x.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits = mantissa.replace('.', "");
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        if exponent >= 0 {
            let whole = exponent as usize + 1;
            if digits.len() <= whole {
                format!("{sign}{digits}{}.0", "0".repeat(whole - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..whole], &digits[whole..])
            }
        } else {
            format!("{sign}0.{}{digits}", "0".repeat((-exponent - 1) as usize))
        }
    } else {
        let mantissa = if digits.len() == 1 { digits } else { format!("{}.{}", &digits[..1], &digits[1..]) };
        format!("{sign}{mantissa}e{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_as_python_writes_them() {
        let cases = [
            (0.5, "0.5"),
            (1.0, "1.0"),
            (-1.0, "-1.0"),
            (-0.25, "-0.25"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-5, "1e-05"),
            (-3.25e-7, "-3.25e-07"),
            (0.0001, "0.0001"),
            (123456.0, "123456.0"),
            (1_765_143_722.123_456, "1765143722.123456"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (0.0, "0.0"),
        ];
        for (x, python) in cases {
            assert_eq!(python_float(x), python, "{x:e}");
        }
    }

    #[test]
    fn json_has_python_separators_and_sorted_record_keys() {
        let record = Record {
            index: 3,
            session_id: "26-12-07_0",
            timestamp_ms: 17,
            frame_id: 99,
            label: "operator",
            image: "3_cam_image_array_.jpg",
            angle: donkey_angle(0.5),
            mode: "user",
            throttle: 0.25,
        };
        let line = python_json(&record);
        assert_eq!(
            line,
            r#"{"_index": 3, "_session_id": "26-12-07_0", "_timestamp_ms": 17, "ads/frame_id": 99, "ads/label": "operator", "cam/image_array": "3_cam_image_array_.jpg", "user/angle": -0.5, "user/mode": "user", "user/throttle": 0.25}"#
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(python_json("é"), r#""\u00e9""#);
        assert_eq!(python_json(&INPUTS[..2]), r#"["cam/image_array", "user/angle"]"#);
    }

    #[test]
    fn steering_turns_to_donkeys_sign_and_modes_to_its_names() {
        assert_eq!(donkey_angle(1.0), -1.0);
        assert_eq!(donkey_angle(-0.3), 0.3);
        assert!(donkey_angle(0.0).is_sign_positive());
        assert_eq!(donkey_mode(PilotMode::Manual), "user");
        assert_eq!(donkey_mode(PilotMode::Assist), "local_angle");
        assert_eq!(donkey_mode(PilotMode::Autopilot), "local");
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        // 2026-12-07T21:41:22Z
        assert_eq!(civil_date(1_796_679_682_000_000_000), (2026, 12, 7));
        assert_eq!(civil_date(951_782_400_000_000_000), (2000, 2, 29));
    }
}
