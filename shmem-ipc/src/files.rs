//! The files of a ring in `/dev/shm`, who may own them, and the writer's lock on the name.
//!
//! A ring named `X` is three files, all owned by the writer's user, none writable by group or
//! others:
//! - `ads.X@lock`: its writer holds an exclusive OFD lock on it for its whole life, and
//!   writes into it the token of its segment (`RawConfig::created_wall_ns`). Creating, taking
//!   over and unlinking the other two happen only under that lock, and readers judge the
//!   writer of *their* segment alive by probing the lock and comparing the token.
//! - `ads.X`: header, slot metadata and payloads; the writer maps it read-write, readers
//!   read-only.
//! - `ads.X@readers`: the reader table (one word per reader: its pin and whether it sleeps),
//!   the only thing readers write; each reader holds an OFD lock on its own entry.
//!
//! `@` cannot occur in a ring name, so no ring's segment can be another ring's lock or table.

use crate::error::{Error, Result};
use crate::os;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Every ring's files start with this in `/dev/shm`: one prefix so a glance (or a test) finds ours.
pub const SHM_PREFIX: &str = "ads.";
pub(crate) const SHM_DIR: &str = "/dev/shm";
const LOCK_SUFFIX: &str = "@lock";
const READERS_SUFFIX: &str = "@readers";
/// Owner read and write only: the mode every ring file is created with and the most it may have.
const MODE: u32 = 0o600;

/// The path of a ring's segment, e.g. `/dev/shm/ads.frames`.
pub fn shm_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("{SHM_PREFIX}{name}"))
}

/// The path of the file whose lock says a ring's writer is alive, e.g. `/dev/shm/ads.frames@lock`.
pub fn lock_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("{SHM_PREFIX}{name}{LOCK_SUFFIX}"))
}

/// The path of a ring's reader table, e.g. `/dev/shm/ads.frames@readers`.
pub fn readers_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("{SHM_PREFIX}{name}{READERS_SUFFIX}"))
}

pub(crate) fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 200 {
        Some("longer than 200 bytes")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName { name: name.to_string(), reason }),
        None => Ok(()),
    }
}

/// Which inode a file is: compared before unlinking, so only the file we created goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(meta: &Metadata) -> Self {
        Self { dev: meta.dev(), ino: meta.ino() }
    }
}

fn io_error<'a>(name: &'a str, context: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io { name: name.to_string(), context, source }
}

/// Refuses a file that another user owns or that group or others may write: such a ring
/// could be fed, or its header rewritten, by someone other than our writer. Refuses anything
/// but a regular file too (a FIFO, socket or directory at a ring's path is someone's trap or
/// mistake, never a ring).
pub(crate) fn check_trusted(name: &str, path: &Path, meta: &Metadata) -> Result<()> {
    let ours = rustix::process::geteuid().as_raw();
    if meta.uid() != ours {
        return Err(Error::ForeignOwner {
            name: name.to_string(),
            path: path.to_path_buf(),
            owner_uid: meta.uid(),
            our_uid: ours,
        });
    }
    if !meta.file_type().is_file() {
        return Err(Error::NotAFile {
            name: name.to_string(),
            path: path.to_path_buf(),
            kind: kind_of(meta.file_type()),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::UnsafeMode { name: name.to_string(), path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// What a file that is not a regular file is, for messages.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// How every existing ring file is opened: never through a symlink (`O_NOFOLLOW`), and never
/// blocking (`O_NONBLOCK`): opening a FIFO for reading blocks until someone opens its other
/// end, and any local user can make one at a ring's path in `/dev/shm` while the name is
/// free. The file type is checked with `fstat` right after (`check_trusted`), before a byte
/// is read or mapped. On a regular file `O_NONBLOCK` changes nothing.
const OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// Opens an existing ring file (never following a symlink, never blocking) and checks that
/// it is a regular file and who owns it. `Ok(None)`: there is no such file.
pub(crate) fn open_trusted(name: &str, path: &Path, write: bool) -> Result<Option<(File, Metadata)>> {
    let opened = OpenOptions::new().read(true).write(write).custom_flags(OPEN_FLAGS).open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io { name: name.to_string(), context: "opening a ring file", source })
        }
    };
    let meta = file.metadata().map_err(io_error(name, "fstat of a ring file"))?;
    check_trusted(name, path, &meta)?;
    Ok(Some((file, meta)))
}

/// Creates a ring file that must not exist yet (the caller holds the name's lock and has
/// removed any stale one), owner read-write only whatever the umask.
pub(crate) fn create_new(name: &str, path: &Path) -> Result<(File, FileId)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_error(name, "creating a ring file"))?;
    let meta = file.metadata().map_err(io_error(name, "fstat of a new ring file"))?;
    Ok((file, FileId::of(&meta)))
}

/// Unlinks `path` if it still names the inode `id`. Called only under the name's lock, so no
/// other writer can be replacing the file meanwhile.
pub(crate) fn unlink_if_same(path: &Path, id: FileId) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if FileId::of(&meta) == id => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), "cannot remove ring file: {e}");
            }
        }
        Ok(_) => tracing::warn!(path = %path.display(), "not removing a ring file that is no longer ours"),
        Err(_) => {}
    }
}

/// Exclusive ownership of a ring name: the OFD lock on `ads.<name>@lock`, held from creation
/// to the end of the writer. Dropping it unlinks the lock file (while still holding the lock)
/// and then releases it.
#[derive(Debug)]
pub(crate) struct NameLock {
    file: File,
    id: FileId,
    path: PathBuf,
}

impl NameLock {
    /// Takes the name, or says who has it. `held_by` reads the live writer's pid for the
    /// error message (its pid in its own namespace: informational only).
    pub(crate) fn acquire(name: &str, held_by: impl Fn() -> u32) -> Result<Self> {
        let path = lock_path(name);
        // The loop only repeats when the previous holder unlinked the file between our open
        // and our lock: then we locked an orphaned inode and must lock the new one instead.
        for _attempt in 0..16 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(MODE)
                .custom_flags(OPEN_FLAGS)
                .open(&path)
                .map_err(io_error(name, "opening the ring's lock file"))?;
            let meta = file.metadata().map_err(io_error(name, "fstat of the lock file"))?;
            check_trusted(name, &path, &meta)?;
            if !os::try_lock(&file, 0, 0).map_err(io_error(name, "locking the ring's lock file"))? {
                return Err(Error::WriterAlive { name: name.to_string(), pid: held_by() });
            }
            let id = FileId::of(&meta);
            match std::fs::symlink_metadata(&path) {
                Ok(now) if FileId::of(&now) == id => return Ok(Self { file, id, path }),
                _ => continue,
            }
        }
        Err(Error::Corrupt {
            name: name.to_string(),
            reason: "its lock file keeps being replaced while we lock it".into(),
        })
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        unlink_if_same(&self.path, self.id);
        // Closing `file` (after this) releases the lock; unlocking first would let another
        // writer lock the inode we are about to unlink and then find it gone (it would retry).
        let _ = &self.file;
    }
}

impl NameLock {
    /// Records which segment the holder of the lock writes (see the module docs).
    pub(crate) fn write_token(&self, name: &str, token: u64) -> Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.file.write_all_at(&token.to_ne_bytes(), 0).map_err(io_error(name, "writing the lock's token"))
    }
}

/// Probes a writer's lock from a reader: true while a writer holds it and says it writes the
/// segment with `token`. A new writer that took the name over from a dead one holds the lock
/// too, but with another token: for readers of the dead one's segment, their writer is gone.
pub(crate) fn writer_holds(lock: &File, token: u64) -> io::Result<bool> {
    use std::os::unix::fs::FileExt as _;
    let mut bytes = [0u8; 8];
    let held = os::is_locked(lock, 0, 0)?;
    Ok(held && lock.read_exact_at(&mut bytes, 0).is_ok() && u64::from_ne_bytes(bytes) == token)
}

pub(crate) fn check_space(name: &str, needed: u64) -> Result<()> {
    let stat = rustix::fs::statvfs(SHM_DIR).map_err(|e| io_error(name, "statvfs /dev/shm")(e.into()))?;
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    if needed > available {
        return Err(Error::ShmFull { name: name.to_string(), needed, available });
    }
    Ok(())
}

/// Sizes a new file and makes tmpfs allocate every page now, so a full /dev/shm is an error
/// here rather than a SIGBUS in the middle of writing a frame later.
pub(crate) fn reserve(name: &str, file: &File, size: u64) -> Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOSPC) => {
            let available = rustix::fs::statvfs(SHM_DIR).map(|s| s.f_bavail * s.f_frsize).unwrap_or(0);
            Err(Error::ShmFull { name: name.to_string(), needed: size, available })
        }
        Err(e) => Err(io_error(name, "reserving /dev/shm space")(e.into())),
    }
}

/// Removes a stale ring file (its writer is gone: the caller holds the name's lock), after
/// checking it is ours to remove.
pub(crate) fn remove_stale(name: &str, path: &Path) -> Result<bool> {
    let Some((_file, meta)) = open_trusted(name, path, false)? else { return Ok(false) };
    let _ = meta;
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => {
            Err(Error::Io { name: name.to_string(), context: "removing a stale ring file", source })
        }
    }
}

/// Removes the files of every ring in `/dev/shm` whose writer is gone (crashed without
/// cleaning up) and returns their names. Rings of live writers are left alone: their lock is
/// held. A writer taking over its own name does this by itself; this is for names that will
/// not be reused, e.g. at boot or from an operator's shell (`ads-ring clean`).
pub fn reclaim_stale() -> io::Result<Vec<String>> {
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let file_name = entry?.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(SHM_PREFIX)) else { continue };
        let name =
            rest.strip_suffix(LOCK_SUFFIX).or_else(|| rest.strip_suffix(READERS_SUFFIX)).unwrap_or(rest);
        if validate_name(name).is_ok() {
            names.insert(name.to_string());
        }
    }
    let mut reclaimed = Vec::new();
    for name in names {
        match NameLock::acquire(&name, || 0) {
            Ok(lock) => {
                let mut removed = false;
                for path in [shm_path(&name), readers_path(&name)] {
                    match remove_stale(&name, &path) {
                        Ok(r) => removed |= r,
                        Err(e) => tracing::warn!(ring = name, "cannot reclaim {}: {e}", path.display()),
                    }
                }
                drop(lock);
                if removed {
                    reclaimed.push(name);
                }
            }
            Err(Error::WriterAlive { .. }) => {}
            Err(e) => tracing::warn!(ring = name, "cannot inspect ring: {e}"),
        }
    }
    Ok(reclaimed)
}
