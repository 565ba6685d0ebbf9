//! Where a frame's bytes are in the ring's file, so Python can view them through a read-only
//! `mmap` of its own: numpy arrays then keep their memory mapped for as long as they live,
//! whatever happens to the Rust reader, and nothing here hands Python a raw pointer.
//!
//! The ring's layout stays the ring's business: the file offset is found from the address the
//! ring handed out and the kernel's account of this process's mappings (`/proc/self/maps`),
//! not recomputed from the layout.

use std::path::PathBuf;

/// One line of `/proc/self/maps`: a mapping of (part of) a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileMapping {
    start: usize,
    end: usize,
    /// Offset in the file of `start`.
    file_offset: u64,
    pub(crate) dev_major: u32,
    pub(crate) dev_minor: u32,
    pub(crate) inode: u64,
    pub(crate) path: PathBuf,
}

impl FileMapping {
    /// The mapping of this process that holds `[address, address + len)`.
    pub(crate) fn containing(address: usize, len: usize) -> Result<Self, String> {
        let maps = std::fs::read_to_string("/proc/self/maps")
            .map_err(|e| format!("reading /proc/self/maps: {e}"))?;
        maps.lines()
            .filter_map(parse_line)
            .find(|m| m.covers(address, len))
            .ok_or_else(|| format!("no file mapping of this process holds {len} bytes at {address:#x}"))
    }

    pub(crate) fn covers(&self, address: usize, len: usize) -> bool {
        address >= self.start && address.checked_add(len).is_some_and(|end| end <= self.end)
    }

    /// The file offset of `address`, which must be covered.
    pub(crate) fn offset_of(&self, address: usize) -> u64 {
        self.file_offset + (address - self.start) as u64
    }
}

/// `start-end perms offset major:minor inode path`; `None` for anonymous mappings and lines
/// that do not parse.
fn parse_line(line: &str) -> Option<FileMapping> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let _perms = fields.next()?;
    let file_offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode = fields.next()?.parse().ok()?;
    let path: String = fields.collect::<Vec<_>>().join(" ");
    if inode == 0 || !path.starts_with('/') {
        return None;
    }
    Some(FileMapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        file_offset,
        dev_major: u32::from_str_radix(major, 16).ok()?,
        dev_minor: u32::from_str_radix(minor, 16).ok()?,
        inode,
        path: PathBuf::from(path),
    })
}
