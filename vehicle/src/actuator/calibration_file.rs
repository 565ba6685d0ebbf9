//! Writes calibration values into the vehicle's configuration file: `[actuator.calibration]`
//! edited in place with `toml_edit`, every comment, blank line and other key as it was, and
//! the file replaced whole or not at all.
//!
//! A save is refused (the file untouched) unless the edited file parses to the configuration
//! it had with only those values changed, and to a valid calibration.

use crate::config::{ConfigError, VehicleConfig};
use ads_protocol::CalibrationValues;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use toml_edit::{DocumentMut, Item, Table, TableLike, Value};

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {detail}")]
    Edit { path: PathBuf, detail: String },
    #[error("{key} = {value}: {problem} (nothing written)")]
    Invalid { key: &'static str, value: u16, problem: &'static str },
    #[error("writing {path}: {source} (is the file's directory writable by this user? under systemd, ProtectSystem=strict keeps /etc read-only: docs/actuators.md)")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Sets `values` in `[actuator.calibration]` of the file at `path`; returns the calibration
/// the file now holds.
pub fn save(path: &Path, values: &CalibrationValues) -> Result<crate::actuator::Calibration, SaveError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| SaveError::Read { path: path.into(), source })?;
    let edit_error = |detail: String| SaveError::Edit { path: path.into(), detail };
    let new = edited(&text, values).map_err(edit_error)?;
    let before = VehicleConfig::from_toml(&text, path)?;
    let after = VehicleConfig::from_toml(&new, path)?;
    let mut expected = before;
    apply(&mut expected.actuator.calibration, values);
    if after != expected {
        return Err(edit_error("the edit would have changed more than [actuator.calibration]".into()));
    }
    if let Err((key, value, problem)) = after.actuator.calibration.validate() {
        return Err(SaveError::Invalid { key, value, problem });
    }
    write_atomically(path, &new).map_err(|source| SaveError::Write { path: path.into(), source })?;
    Ok(after.actuator.calibration)
}

/// `calibration` with `values` set.
pub fn apply(calibration: &mut crate::actuator::Calibration, values: &CalibrationValues) {
    let c = calibration;
    let fields = [
        (&mut c.steering_left_us, values.steering_left_us),
        (&mut c.steering_centre_us, values.steering_centre_us),
        (&mut c.steering_right_us, values.steering_right_us),
        (&mut c.throttle_reverse_us, values.throttle_reverse_us),
        (&mut c.throttle_neutral_us, values.throttle_neutral_us),
        (&mut c.throttle_forward_us, values.throttle_forward_us),
        (&mut c.brake_us, values.brake_us),
    ];
    for (field, value) in fields {
        if let Some(v) = value {
            *field = v;
        }
    }
}

/// The text with `values` in its `[actuator.calibration]`: a key's value replaced (its
/// comment kept), a missing key added to the table, a missing table added.
pub fn edited(text: &str, values: &CalibrationValues) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.to_string())?;
    let (actuator, inline) = child(doc.as_table_mut(), "actuator", false)?;
    let (calibration, _) = child(actuator, "calibration", inline)?;
    for (key, us) in values.entries() {
        match calibration.get_mut(key) {
            Some(Item::Value(v)) => {
                let decor = v.decor().clone();
                *v = Value::from(i64::from(us));
                *v.decor_mut() = decor;
            }
            Some(_) => return Err(format!("actuator.calibration.{key} is not a plain value")),
            None => {
                calibration.insert(key, toml_edit::value(i64::from(us)));
            }
        }
    }
    Ok(doc.to_string())
}

/// The table `key` of `parent` and whether it is an inline one, made if it is not there: an
/// implicit table (no empty `[actuator]` header appears) under a table, an inline table under
/// an inline one.
fn child<'a>(
    parent: &'a mut dyn TableLike,
    key: &str,
    inline_parent: bool,
) -> Result<(&'a mut dyn TableLike, bool), String> {
    if parent.get(key).is_none() {
        let item = if inline_parent {
            Item::Value(Value::InlineTable(toml_edit::InlineTable::new()))
        } else {
            let mut table = Table::new();
            table.set_implicit(true);
            Item::Table(table)
        };
        parent.insert(key, item);
    }
    let item = parent.get_mut(key).ok_or_else(|| format!("`{key}` could not be added"))?;
    let inline = matches!(item, Item::Value(Value::InlineTable(_)));
    item.as_table_like_mut().map(|t| (t, inline)).ok_or_else(|| format!("`{key}` is not a table"))
}

/// Replaces `path` with `text`: a temporary file beside it (same permissions), fsynced,
/// renamed over it, and the directory fsynced, so a crash leaves the old file or the new one.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.calibration", std::process::id()));
    let permissions = std::fs::metadata(path)?.permissions();
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temporary)?;
        file.set_permissions(permissions)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, u16)]) -> CalibrationValues {
        let mut v = CalibrationValues::default();
        for (k, us) in pairs {
            let field = match *k {
                "steering_left_us" => &mut v.steering_left_us,
                "steering_centre_us" => &mut v.steering_centre_us,
                "steering_right_us" => &mut v.steering_right_us,
                "throttle_forward_us" => &mut v.throttle_forward_us,
                "brake_us" => &mut v.brake_us,
                _ => panic!("{k}"),
            };
            *field = Some(*us);
        }
        v
    }

    #[test]
    fn values_replace_keys_in_place_and_everything_else_stays() {
        let text = "# my car\nfps = 30.0\n\n[actuator]\nkind = \"serial\"  # the Arduino\n\n\
                    [actuator.calibration]\n# found on the stand\nsteering_centre_us = 1500   # straight\n\
                    brake_us = 1500\n\n[drive]\ntarget_speed_mps = 3.0\n";
        let new = edited(text, &values(&[("steering_centre_us", 1470), ("brake_us", 1300)])).unwrap();
        assert_eq!(
            new,
            text.replace("steering_centre_us = 1500   #", "steering_centre_us = 1470   #")
                .replace("brake_us = 1500", "brake_us = 1300")
        );
        // A key not yet there joins its table, before the next one.
        let added = edited(text, &values(&[("steering_left_us", 1900)])).unwrap();
        assert!(added.contains("brake_us = 1500\nsteering_left_us = 1900\n\n[drive]"), "{added}");
        // No table yet: `[actuator.calibration]` appears, with no empty `[actuator]`.
        let fresh = edited("fps = 30.0\n", &values(&[("brake_us", 1300)])).unwrap();
        assert_eq!(fresh, "fps = 30.0\n\n[actuator.calibration]\nbrake_us = 1300\n");
        // An inline table is edited as one.
        let inline =
            edited("[actuator]\ncalibration = { brake_us = 1500 }\n", &values(&[("brake_us", 1300)]));
        assert_eq!(inline.unwrap(), "[actuator]\ncalibration = { brake_us = 1300 }\n");
        // A key of the same prefix elsewhere is not touched.
        let other =
            edited("[actuator.calibration]\nbrake_us_x = 1\n", &values(&[("brake_us", 1300)])).unwrap();
        assert_eq!(other, "[actuator.calibration]\nbrake_us_x = 1\nbrake_us = 1300\n");
        assert!(edited("[actuator]\ncalibration = 3\n", &values(&[("brake_us", 1)])).is_err());
    }

    #[test]
    fn a_save_is_checked_and_a_refused_one_leaves_the_file_as_it_was() {
        let dir = std::env::temp_dir().join(format!("ads-calibration-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vehicle.toml");
        let text = "# my car\n[actuator]\nkind = \"serial\"\n[actuator.calibration]\nsteering_centre_us = 1500 # x\n";
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let saved =
            save(&path, &values(&[("steering_centre_us", 1470), ("steering_left_us", 1900)])).unwrap();
        assert_eq!((saved.steering_centre_us, saved.steering_left_us), (1470, 1900));
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(new.starts_with("# my car\n") && new.contains("steering_centre_us = 1470 # x"), "{new}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        // A centre outside left..right: refused, the file as it was, no temporary left.
        let err = save(&path, &values(&[("steering_centre_us", 2400)])).unwrap_err().to_string();
        assert!(err.contains("steering_centre_us"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
        // A file that is not TOML: refused, untouched.
        std::fs::write(&path, "[actuator\n").unwrap();
        assert!(save(&path, &values(&[("brake_us", 1300)])).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[actuator\n");
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries, ["vehicle.toml"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
