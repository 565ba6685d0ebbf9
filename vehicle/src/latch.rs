//! The stop latch on disk: an e-stop, and the hold after its reset, survive SIGKILL, a restart
//! and a reboot (ISO 13850: the stop stays in force until it is deliberately reset, and the
//! reset itself never starts motion).
//!
//! The file holds one fixed-size record, `latched ...`, `held ...` or `released ...`, ending in
//! a checksum. It is opened once at start-up and kept open, so persisting needs no new file
//! descriptor (a vehicle whose descriptors were exhausted from the network can still persist
//! an e-stop); each store rewrites the record in place and fsyncs it. A torn or foreign record
//! fails its checksum, and anything that cannot be read as `released` or `held` counts as
//! latched: when in doubt, the car stays stopped.
//!
//! Opening proves the latch can be kept: the record is written back and fsynced, and a vehicle
//! that cannot do that does not start (an e-stop it could not persist would be forgotten by
//! the next restart).

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Size of the record; rewritten whole at offset 0 each time.
const RECORD_BYTES: usize = 256;

/// What the latch file says the car must do after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchState {
    /// Nothing holds the car (it still starts held when its source is a real car).
    Released,
    /// An e-stop was reset: the car stands until an operator's `resume`.
    Held,
    /// An e-stop is in force until `reset`.
    Latched,
}

impl LatchState {
    fn word(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Held => "held",
            Self::Latched => "latched",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LatchError {
    #[error(
        "the e-stop latch file {path}: {source} (set actions.latch_file / --latch-file to a writable place)"
    )]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the e-stop latch file {path} is not a regular file")]
    NotAFile { path: PathBuf },
}

#[derive(Debug)]
pub struct EstopLatch {
    path: PathBuf,
    /// Open for the vehicle's life: see the module comment.
    file: File,
}

impl EstopLatch {
    /// Opens (creating it and its directory if needed) the latch at `path` and proves it can
    /// be written and fsynced; returns it and the state it holds.
    pub fn open(path: &Path) -> Result<(Self, LatchState), LatchError> {
        let io = |source| LatchError::Io { path: path.to_path_buf(), source };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let created = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            // Never through a link someone planted, and never blocking on a FIFO.
            .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
            .open(path)
            .map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            return Err(LatchError::NotAFile { path: path.to_path_buf() });
        }
        let mut text = Vec::new();
        (&mut file).take(4 * RECORD_BYTES as u64).read_to_end(&mut text).map_err(io)?;
        let state = if created { LatchState::Released } else { parse(&text) };
        if !created && state == LatchState::Latched && !text.starts_with(b"latched") {
            tracing::error!("cannot read the e-stop latch {}: treating it as latched", path.display());
        }
        let mut latch = Self { path: path.to_path_buf(), file };
        latch.store(state, "start-up: the latch can be written")?;
        latch.file.set_len(RECORD_BYTES as u64).map_err(io)?;
        if created {
            // The new file's directory entry is durable only once the directory is synced.
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok((latch, state))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Persists `state`, durably, before returning. Opens nothing.
    pub fn store(&mut self, state: LatchState, why: &str) -> Result<(), LatchError> {
        let io = |source| LatchError::Io { path: self.path.clone(), source };
        let record = record(state, ads_shmem_ipc::clock::wall_ns(), why);
        self.file.write_all_at(&record, 0).map_err(io)?;
        self.file.sync_all().map_err(io)
    }
}

/// FNV-1a, enough to tell a torn or foreign record from ours.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// `"<state> at <wall ns> ns (wall clock): <why> #<checksum>\n"`, padded with newlines.
fn record(state: LatchState, wall_ns: u64, why: &str) -> [u8; RECORD_BYTES] {
    let mut body = format!("{} at {wall_ns} ns (wall clock): ", state.word());
    for c in why.chars().filter(|c| !c.is_control() && *c != '#') {
        if body.len() + c.len_utf8() > RECORD_BYTES - 12 {
            break;
        }
        body.push(c);
    }
    let line = format!("{body} #{:08x}\n", checksum(body.as_bytes()));
    let mut out = [b'\n'; RECORD_BYTES];
    out[..line.len()].copy_from_slice(line.as_bytes());
    out
}

/// The state a file's bytes hold; anything not clearly `released` or `held` is latched.
fn parse(bytes: &[u8]) -> LatchState {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else { return LatchState::Latched };
    match line.rsplit_once(" #") {
        Some((body, sum)) if sum == format!("{:08x}", checksum(body.as_bytes())) => {
            match body.split(' ').next() {
                Some("released") => LatchState::Released,
                Some("held") => LatchState::Held,
                _ => LatchState::Latched,
            }
        }
        // Written by an ads-vehicle before the checksum (one line, replaced by rename).
        None if line.starts_with("released at ") => LatchState::Released,
        _ => LatchState::Latched,
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

    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ads-latch-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_latch_and_the_hold_survive_reopening_and_garbage_counts_as_latched() {
        let dir = temp_dir("reopen");
        let path = dir.join("sub/estop.latch");
        let (mut latch, state) = EstopLatch::open(&path).unwrap();
        assert_eq!(state, LatchState::Released, "no file: released");
        latch.store(LatchState::Latched, "test").unwrap();
        assert_eq!(EstopLatch::open(&path).unwrap().1, LatchState::Latched);
        latch.store(LatchState::Held, "reset").unwrap();
        drop(latch);
        assert_eq!(EstopLatch::open(&path).unwrap().1, LatchState::Held, "the hold after a reset persists");
        let (mut latch, _) = EstopLatch::open(&path).unwrap();
        latch.store(LatchState::Released, "resume").unwrap();
        assert_eq!(EstopLatch::open(&path).unwrap().1, LatchState::Released);
        std::fs::write(&path, "\u{0}garbage").unwrap();
        assert_eq!(EstopLatch::open(&path).unwrap().1, LatchState::Latched, "garbage keeps the car stopped");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), RECORD_BYTES as u64);
        std::fs::remove_dir_all(dir).unwrap();
        assert!(default_path("car/1").ends_with("estop-car_1.latch"));
    }

    #[test]
    fn a_torn_or_edited_record_is_latched_and_an_old_released_file_is_read() {
        let good = record(LatchState::Released, 42, "resume from \"viewer#1\"\nwith a newline");
        assert_eq!(parse(&good), LatchState::Released);
        // Half of a new record over an old one: the checksum no longer matches.
        let mut torn = record(LatchState::Held, 43, "reset");
        torn[..20].copy_from_slice(&good[..20]);
        assert_eq!(parse(&torn), LatchState::Latched);
        let mut edited = good;
        edited[0..8].copy_from_slice(b"held    ");
        assert_eq!(parse(&edited), LatchState::Latched);
        assert_eq!(parse(b"released at 5 ns (wall clock): reset from \"x\"\n"), LatchState::Released);
        assert_eq!(parse(b"latched at 5 ns (wall clock): x\n"), LatchState::Latched);
        assert_eq!(parse(b""), LatchState::Latched);
        let long = record(LatchState::Latched, u64::MAX, &"é".repeat(500));
        assert_eq!(parse(&long), LatchState::Latched);
        assert_eq!(parse(&record(LatchState::Held, 1, &"x#".repeat(300))), LatchState::Held);
    }

    #[test]
    fn a_latch_that_is_not_a_regular_file_or_cannot_be_written_is_an_error_at_open() {
        let dir = temp_dir("unusable");
        std::fs::create_dir_all(dir.join("a-directory")).unwrap();
        let err = EstopLatch::open(&dir.join("a-directory")).unwrap_err().to_string();
        assert!(err.contains("a-directory"), "{err}");
        // A directory that is a file: nothing can be created under it.
        std::fs::write(dir.join("file"), "x").unwrap();
        let err = EstopLatch::open(&dir.join("file/estop.latch")).unwrap_err().to_string();
        assert!(err.contains("file/estop.latch"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
