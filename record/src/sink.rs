//! MCAP files on disk: chunked, indexed, zstd, rotated by size and/or time.
//!
//! Crash safety: each chunk is compressed in memory and written with one `write` (the writer
//! never seeks back), and the recorder ends a chunk at least every `flush_every`. A recorder
//! killed with SIGKILL therefore leaves a file of whole chunks plus at most one partial write:
//! readers that scan the data section (the Python `mcap` package, `ads-record --recover`)
//! read every message up to the last whole chunk. A clean stop writes the summary and footer.

use crate::channels::{Channel, Entry};
use mcap::records::MessageHeader;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Chunks this large are ended early, before the flush timer.
const CHUNK_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("creating {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error(
        "the disk is full: writing {} stopped after {bytes} bytes; the recording is kept, \
         readable up to its last whole chunk (ads-record --recover rewrites its index)",
        path.display()
    )]
    DiskFull { path: PathBuf, bytes: u64 },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: mcap::McapError },
    #[error(
        "{} is an unfinished recording (its recorder was killed, or its disk filled): not \
         overwritten; recover it with `ads-record --recover {}` (or move it away)",
        path.display(),
        path.display()
    )]
    Unfinished { path: PathBuf },
}

/// Whether `path` is an MCAP file its writer never finished (MCAP magic at the start, no
/// footer and magic at the end): what a killed recorder leaves. A missing, finished or
/// foreign file is not.
pub fn is_unfinished(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let magic = mcap::MAGIC.len() as u64;
    let mut head = vec![0u8; mcap::MAGIC.len()];
    if len < magic || file.read_exact(&mut head).is_err() || head != mcap::MAGIC {
        return Ok(false);
    }
    if len < 2 * magic {
        return Ok(true);
    }
    let mut tail = vec![0u8; mcap::MAGIC.len()];
    file.seek(SeekFrom::End(-(magic as i64)))?;
    file.read_exact(&mut tail)?;
    Ok(tail != mcap::MAGIC)
}

#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// The file, or with rotation the pattern: `drive.mcap` → `drive-0000.mcap`, `drive-0001.mcap`, …
    pub path: PathBuf,
    /// Start a new file once this many bytes are written.
    pub rotate_bytes: Option<u64>,
    /// Start a new file after this long.
    pub rotate_every: Option<Duration>,
    /// End the current chunk at least this often: what a crash can lose.
    pub flush_every: Duration,
}

impl SinkOptions {
    fn rotates(&self) -> bool {
        self.rotate_bytes.is_some() || self.rotate_every.is_some()
    }

    /// The path of file number `index`.
    pub fn path_of(&self, index: u32) -> PathBuf {
        if !self.rotates() {
            return self.path.clone();
        }
        let stem = self.path.file_stem().map_or_else(|| "recording".into(), |s| s.to_string_lossy());
        let ext = self.path.extension().map_or_else(|| "mcap".into(), |s| s.to_string_lossy());
        self.path.with_file_name(format!("{stem}-{index:04}.{ext}"))
    }
}

/// The file being written.
struct Current {
    writer: mcap::Writer<BufWriter<File>>,
    /// A second handle for the size: the writer owns the first.
    file: File,
    path: PathBuf,
    channels: BTreeMap<Channel, u16>,
    opened: Instant,
    last_flush: Instant,
}

/// Where the recording stands, for progress displays.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub path: PathBuf,
    /// Bytes on disk of the current file.
    pub bytes: u64,
    /// Bytes of all files of this recording.
    pub total_bytes: u64,
    pub files: u32,
    pub messages: u64,
    pub frames: u64,
    /// From the first to the last message's receive time, ms.
    pub duration_ms: u64,
}

pub struct Sink {
    options: SinkOptions,
    current: Option<Current>,
    next_index: u32,
    closed_bytes: u64,
    messages: u64,
    frames: u64,
    first_log_ns: Option<u64>,
    last_log_ns: u64,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("progress", &self.progress()).finish_non_exhaustive()
    }
}

impl Sink {
    pub fn create(options: SinkOptions) -> Result<Self, SinkError> {
        let mut sink = Sink {
            options,
            current: None,
            next_index: 0,
            closed_bytes: 0,
            messages: 0,
            frames: 0,
            first_log_ns: None,
            last_log_ns: 0,
        };
        sink.open_next()?;
        Ok(sink)
    }

    fn open_next(&mut self) -> Result<(), SinkError> {
        let path = self.options.path_of(self.next_index);
        self.next_index += 1;
        let create = |source| SinkError::Create { path: path.clone(), source };
        // A killed recording's file holds what its recorder could save: never overwritten.
        if is_unfinished(&path).map_err(create)? {
            return Err(SinkError::Unfinished { path });
        }
        let file = File::create(&path).map_err(create)?;
        let size_handle = file.try_clone().map_err(create)?;
        let options = mcap::WriteOptions::new()
            .compression(Some(mcap::Compression::Zstd))
            // JPEG does not compress: the fastest level and no worker threads, to cost little.
            .compression_level(1)
            .compression_threads(0)
            .chunk_size(Some(CHUNK_BYTES))
            .disable_seeking(true)
            .profile("")
            .library(concat!("ads-record ", env!("CARGO_PKG_VERSION")));
        let writer = options
            .create(BufWriter::with_capacity(256 * 1024, file))
            .map_err(|e| Self::error(&path, 0, e))?;
        let now = Instant::now();
        let mut current = Current {
            writer,
            file: size_handle,
            path: path.clone(),
            channels: BTreeMap::new(),
            opened: now,
            last_flush: now,
        };
        for channel in Channel::ALL {
            let schema = current
                .writer
                .add_schema(channel.schema_name(), "jsonschema", channel.schema().as_bytes())
                .map_err(|e| Self::error(&path, 0, e))?;
            let id = current
                .writer
                .add_channel(schema, channel.topic(), "json", &BTreeMap::new())
                .map_err(|e| Self::error(&path, 0, e))?;
            current.channels.insert(channel, id);
        }
        // The schemas and channels reach the disk at once, so even an empty recording opens.
        current.writer.flush().map_err(|e| Self::error(&path, 0, e))?;
        tracing::info!(path = %path.display(), "recording to");
        self.current = Some(current);
        Ok(())
    }

    fn error(path: &Path, bytes: u64, error: mcap::McapError) -> SinkError {
        use std::io::ErrorKind;
        match &error {
            mcap::McapError::Io(io)
                if matches!(
                    io.kind(),
                    ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
                ) =>
            {
                SinkError::DiskFull { path: path.to_path_buf(), bytes }
            }
            _ => SinkError::Write { path: path.to_path_buf(), source: error },
        }
    }

    fn current_bytes(&self) -> u64 {
        self.current.as_ref().and_then(|c| c.file.metadata().ok()).map_or(0, |m| m.len())
    }

    /// Writes one message; ends the chunk when the flush interval is up and starts the next
    /// file when the rotation limit is reached. After an error the sink writes nothing more.
    pub fn write(&mut self, entry: &Entry) -> Result<(), SinkError> {
        let Some(current) = self.current.as_mut() else { return Ok(()) };
        let header = MessageHeader {
            channel_id: current.channels[&entry.channel],
            sequence: entry.sequence,
            log_time: entry.log_time,
            publish_time: entry.publish_time,
        };
        if let Err(e) = current.writer.write_to_known_channel(&header, &entry.data) {
            let path = current.path.clone();
            return Err(self.fail(&path, e));
        }
        self.messages += 1;
        self.frames += u64::from(entry.channel == Channel::Image);
        self.first_log_ns.get_or_insert(entry.log_time);
        self.last_log_ns = self.last_log_ns.max(entry.log_time);
        self.tick()
    }

    /// Flushes on the timer and rotates; call it also when no messages arrive.
    pub fn tick(&mut self) -> Result<(), SinkError> {
        let Some(current) = self.current.as_mut() else { return Ok(()) };
        if current.last_flush.elapsed() < self.options.flush_every {
            return Ok(());
        }
        current.last_flush = Instant::now();
        if let Err(e) = current.writer.flush() {
            let path = current.path.clone();
            return Err(self.fail(&path, e));
        }
        let too_big = self.options.rotate_bytes.is_some_and(|limit| self.current_bytes() >= limit);
        let too_old = self
            .options
            .rotate_every
            .is_some_and(|limit| self.current.as_ref().is_some_and(|c| c.opened.elapsed() >= limit));
        if too_big || too_old {
            self.close_current()?;
            self.open_next()?;
        }
        Ok(())
    }

    /// Maps the error and stops writing: a failed writer is dropped without its summary
    /// (whatever it could still write of one is ignored by readers scanning the chunks).
    fn fail(&mut self, path: &Path, error: mcap::McapError) -> SinkError {
        let mapped = Self::error(path, self.current_bytes(), error);
        self.current = None;
        mapped
    }

    /// Writes the summary and footer; returns the file's size.
    fn close_current(&mut self) -> Result<u64, SinkError> {
        let Some(mut current) = self.current.take() else { return Ok(0) };
        let finished = current.writer.finish().and_then(|_| {
            let mut buffered = current.writer.into_inner();
            std::io::Write::flush(&mut buffered).map_err(mcap::McapError::Io)
        });
        let bytes = current.file.metadata().map_or(0, |m| m.len());
        self.closed_bytes += bytes;
        finished.map(|()| bytes).map_err(|e| Self::error(&current.path, bytes, e))
    }

    /// Writes the summary and footer of the last file.
    pub fn finish(mut self) -> Result<Progress, SinkError> {
        let progress = self.progress();
        let bytes = self.close_current()?;
        Ok(Progress { bytes, total_bytes: self.closed_bytes, ..progress })
    }

    pub fn progress(&self) -> Progress {
        let bytes = self.current_bytes();
        Progress {
            path: self
                .current
                .as_ref()
                .map_or_else(|| self.options.path_of(self.next_index.saturating_sub(1)), |c| c.path.clone()),
            bytes,
            total_bytes: self.closed_bytes + bytes,
            files: self.next_index,
            messages: self.messages,
            frames: self.frames,
            duration_ms: self.first_log_ns.map_or(0, |first| (self.last_log_ns - first) / 1_000_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(channel: Channel, n: u64) -> Entry {
        // Incompressible, like JPEG: zstd must not shrink it below the rotation size.
        let mut state = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let data = (0..20_000)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        Entry { channel, log_time: n * 1_000_000, publish_time: n * 1_000_000, sequence: n as u32, data }
    }

    #[test]
    fn rotation_by_size_gives_complete_self_contained_files() {
        let dir = std::env::temp_dir().join(format!("ads-sink-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let options = SinkOptions {
            path: dir.join("drive.mcap"),
            rotate_bytes: Some(200_000),
            rotate_every: None,
            flush_every: Duration::ZERO,
        };
        let mut sink = Sink::create(options.clone()).unwrap();
        for n in 0..100 {
            sink.write(&entry(Channel::Image, n)).unwrap();
        }
        let progress = sink.finish().unwrap();
        assert!(progress.files >= 3, "{progress:?}");
        assert_eq!(progress.messages, 100);
        let mut total = 0;
        for index in 0..progress.files {
            let path = options.path_of(index);
            assert_eq!(path.file_name().unwrap().to_str().unwrap(), format!("drive-{index:04}.mcap"));
            let reading = crate::recover::read(&path).unwrap();
            assert_eq!(reading.truncated, None, "{} is complete", path.display());
            total += reading.messages.len();
        }
        assert_eq!(total, 100, "every message in exactly one file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
