//! Thin safe wrappers over the two kernel facilities `rustix` does not cover here:
//! open-file-description (OFD) byte-range locks and shared mappings of a file.
//! With `segment.rs`, nearly all the `unsafe` of the crate (`ring.rs` calls two of `segment`'s
//! `unsafe fn`s where it knows their contract holds).
//!
//! OFD locks (`F_OFD_SETLK`/`F_OFD_GETLK`) belong to an open file description, not to a
//! process: they are released by the kernel when the last descriptor of it is closed, which
//! includes the process being killed; two descriptors opened separately conflict even inside
//! one process (unlike classic POSIX locks); they work across pid namespaces, because nothing
//! about them names a pid; and probing one (`F_OFD_GETLK`) never takes it.

#![allow(unsafe_code)]

use crate::sync::{AtomicU64, Ordering};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::ptr::NonNull;

/// Forks of this process image so far, as seen by this process: each child `fork()` makes
/// starts with one more than its parent had (counted by a `pthread_atfork` child handler).
static FORKS: AtomicU64 = AtomicU64::new(0);
static COUNTING_FORKS: std::sync::Once = std::sync::Once::new();

extern "C" fn count_fork_in_child() {
    // Runs in the child right after fork(2): only async-signal-safe work, and an atomic add
    // is that.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// A number that differs in every process `fork()` makes of this one (after the first call),
/// for as cheap a check as a load: a reader compares it with what it saw at attach, because
/// its reader entry is its parent's in a child. `getpid()` would be a syscall on every read.
/// A child made by a raw `clone(2)` runs no fork handlers; readers compare pids too, on their
/// slower liveness path.
pub(crate) fn fork_generation() -> u64 {
    COUNTING_FORKS.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function that lives as long as the program
        // and does only an atomic add; no prepare or parent handler.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) };
        if rc != 0 {
            // Then forks go uncounted here; the pid check on the liveness path still holds.
            tracing::warn!("pthread_atfork failed ({rc}): forked readers are caught later");
        }
    });
    FORKS.load(Ordering::Relaxed)
}

fn flock_for(kind: libc::c_short, start: u64, len: u64) -> io::Result<libc::flock> {
    let out_of_range = || io::Error::new(io::ErrorKind::InvalidInput, "lock range out of range");
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value of it, and
    // OFD locks require `l_pid == 0`, which zeroing gives.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = libc::off_t::try_from(start).map_err(|_| out_of_range())?;
    lock.l_len = libc::off_t::try_from(len).map_err(|_| out_of_range())?;
    Ok(lock)
}

/// Tries to take an exclusive OFD lock on bytes `start..start+len` of `file` (`len == 0`:
/// to the end of the file and beyond). `Ok(false)`: someone else holds a conflicting lock.
/// The lock lasts until `file` (every descriptor of its open file description) is closed.
/// `file` must be open for writing.
pub(crate) fn try_lock(file: &File, start: u64, len: u64) -> io::Result<bool> {
    let lock = flock_for(libc::F_WRLCK as libc::c_short, start, len)?;
    // SAFETY: the descriptor is valid for the duration of the call (borrowed from `file`) and
    // `lock` is a properly initialised `flock` that outlives the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// True if another open file description holds a lock on any byte of `start..start+len` of
/// `file`. Takes nothing; works on a read-only descriptor.
pub(crate) fn is_locked(file: &File, start: u64, len: u64) -> io::Result<bool> {
    let mut lock = flock_for(libc::F_WRLCK as libc::c_short, start, len)?;
    // SAFETY: as in `try_lock`; `F_OFD_GETLK` writes the conflicting lock (if any) back into
    // `lock`, which is a valid, exclusively borrowed `flock`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// A `MAP_SHARED` mapping of a whole file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping belongs to the process, not to a thread; `Mapping` only hands out a raw
// pointer, and every access through it is governed by the callers' own protocol.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` gives nothing but the pointer and the length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file`, writable only if `writable` (the descriptor must
    /// then be open for writing). The mapping stays valid after `file` is closed.
    pub(crate) fn new(file: &File, len: usize, writable: bool) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot map an empty file"));
        }
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED), so nothing
        // existing is replaced; the descriptor is valid for the call.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    /// Start of the mapping: page-aligned, `len()` bytes long.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; every reference into the mapping
        // borrows from its owner, which is being dropped, so none outlives this.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
