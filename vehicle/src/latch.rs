//! The emergency-stop latch on disk: an e-stop survives SIGKILL, a restart and a reboot
//! (ISO 13850: the stop stays in force until it is deliberately reset).
//!
//! The file holds one line, `latched ...` or `released ...`. It is replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the directory), so a
//! crash at any point leaves either the old or the new state, never a torn one. Anything that
//! cannot be read as `released` counts as latched: when in doubt, the car stays stopped.

use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LatchError {
    #[error(
        "the e-stop latch file {path}: {source} (set actions.latch_file / --latch-file to a writable place)"
    )]
    Io { path: PathBuf, source: std::io::Error },
}

#[derive(Debug)]
pub struct EstopLatch {
    path: PathBuf,
}

impl EstopLatch {
    /// Opens (and creates the directory of) the latch at `path`; returns it and whether it is
    /// latched now.
    pub fn open(path: &Path) -> Result<(Self, bool), LatchError> {
        let io = |source| LatchError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let latched = match std::fs::read_to_string(path) {
            Ok(text) => !text.starts_with("released"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::error!(
                    "cannot read the e-stop latch {}: {e}; treating it as latched",
                    path.display()
                );
                true
            }
        };
        Ok((Self { path: path.to_path_buf() }, latched))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Persists `latched`, durably, before returning.
    pub fn store(&self, latched: bool, why: &str) -> Result<(), LatchError> {
        let io = |source| LatchError::Io { path: self.path.clone(), source };
        let word = if latched { "latched" } else { "released" };
        let line = format!("{word} at {} ns (wall clock): {}\n", ads_shmem_ipc::clock::wall_ns(), why);
        let mut tmp_name = self.path.clone().into_os_string();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            let mut file = std::fs::File::create(&tmp).map_err(io)?;
            file.write_all(line.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        // The rename itself is durable only once the directory is synced.
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

/// Where the latch lives unless configured: systemd's `StateDirectory=` (`$STATE_DIRECTORY`),
/// else `$XDG_STATE_HOME/ads`, else `~/.local/state/ads`, else `/var/tmp/ads`; one file per
/// vehicle id.
pub fn default_path(vehicle_id: &str) -> PathBuf {
    let env_dir = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = env_dir("STATE_DIRECTORY")
        // systemd may pass several, separated by ':'; the first is ours.
        .map(|d| PathBuf::from(d.to_string_lossy().split(':').next().unwrap_or_default()))
        .or_else(|| env_dir("XDG_STATE_HOME").map(|d| d.join("ads")))
        .or_else(|| env_dir("HOME").map(|d| d.join(".local/state/ads")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp/ads"));
    let name: String = vehicle_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' })
        .collect();
    dir.join(format!("estop-{name}.latch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latch_survives_reopening_and_garbage_counts_as_latched() {
        let dir = std::env::temp_dir().join(format!("ads-latch-{}", std::process::id()));
        let path = dir.join("sub/estop.latch");
        let (latch, latched) = EstopLatch::open(&path).unwrap();
        assert!(!latched, "no file: not latched");
        latch.store(true, "test").unwrap();
        assert!(EstopLatch::open(&path).unwrap().1);
        latch.store(false, "reset").unwrap();
        assert!(!EstopLatch::open(&path).unwrap().1);
        std::fs::write(&path, "\u{0}garbage").unwrap();
        assert!(EstopLatch::open(&path).unwrap().1, "unreadable state must keep the car stopped");
        assert!(!path.with_extension("latch.tmp").exists());
        std::fs::remove_dir_all(dir).unwrap();
        assert!(default_path("car/1").ends_with("estop-car_1.latch"));
    }
}
