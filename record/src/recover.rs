//! Reading recordings, including those a killed recorder or a full disk left without their
//! summary, and rewriting such a file with a full index.

use enumset::enum_set;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not an MCAP file (it does not start with the MCAP magic)", path.display())]
    Foreign { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Mcap { path: PathBuf, source: mcap::McapError },
}

/// One message of a recording, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub topic: String,
    pub log_time: u64,
    pub publish_time: u64,
    pub sequence: u32,
    pub data: Vec<u8>,
}

/// The messages of a file in the order they were written.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub messages: Vec<Stored>,
    /// Why reading stopped before the end of a complete file (a truncated or damaged tail):
    /// everything before it is in `messages`.
    pub truncated: Option<String>,
}

fn load(path: &Path) -> Result<Vec<u8>, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    if !bytes.starts_with(mcap::MAGIC) {
        return Err(ReadError::Foreign { path: path.to_path_buf() });
    }
    Ok(bytes)
}

/// Calls `each` for every message up to the end or the first damage; returns the damage.
fn scan<'a>(
    path: &Path,
    bytes: &'a [u8],
    mut each: impl FnMut(mcap::Message<'a>) -> Result<(), ReadError>,
) -> Result<Option<String>, ReadError> {
    let stream = mcap::MessageStream::new_with_options(bytes, enum_set!(mcap::read::Options::IgnoreEndMagic))
        .map_err(|source| ReadError::Mcap { path: path.to_path_buf(), source })?;
    for message in stream {
        match message {
            Ok(message) => each(message)?,
            Err(e) => return Ok(Some(e.to_string())),
        }
    }
    // A file that ends without its footer is truncated even if it ended at a chunk boundary.
    Ok((!bytes.ends_with(mcap::MAGIC) || bytes.len() < 2 * mcap::MAGIC.len())
        .then(|| "the file ends without its summary and footer (the recorder did not finish it)".to_string()))
}

pub fn read(path: &Path) -> Result<Reading, ReadError> {
    let bytes = load(path)?;
    let mut messages = Vec::new();
    let truncated = scan(path, &bytes, |m| {
        messages.push(Stored {
            topic: m.channel.topic.clone(),
            log_time: m.log_time,
            publish_time: m.publish_time,
            sequence: m.sequence,
            data: m.data.into_owned(),
        });
        Ok(())
    })?;
    Ok(Reading { messages, truncated })
}

/// Calls `each` with every message's topic, log time and data, in written order, up to the
/// end or the first damage; returns the damage. For readers that keep only part of each message
/// (an export keeps no image longer than it takes to write it).
pub fn visit(path: &Path, mut each: impl FnMut(&str, u64, &[u8])) -> Result<Option<String>, ReadError> {
    let bytes = load(path)?;
    scan(path, &bytes, |m| {
        each(&m.channel.topic, m.log_time, &m.data);
        Ok(())
    })
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecoverReport {
    pub messages: u64,
    /// What ended the input early, if anything did.
    pub truncated: Option<String>,
}

/// Recovers `path` into itself: the complete copy is written next to it (`FILE.recovering`),
/// synced, then renamed over it, so a crash meanwhile leaves the original untouched.
pub fn recover_in_place(path: &Path) -> Result<RecoverReport, ReadError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".recovering");
    let temporary = path.with_file_name(name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReadError::Io { path, source }
    };
    let report = recover(path, &temporary)?;
    std::fs::File::open(&temporary).and_then(|f| f.sync_all()).map_err(io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io(path))?;
    Ok(report)
}

/// Copies every readable message of `input` into a new, complete file `output`.
pub fn recover(input: &Path, output: &Path) -> Result<RecoverReport, ReadError> {
    let bytes = load(input)?;
    let mcap_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReadError::Mcap { path, source }
    };
    let file = std::fs::File::create(output)
        .map_err(|source| ReadError::Io { path: output.to_path_buf(), source })?;
    let mut writer = mcap::WriteOptions::new()
        .compression(Some(mcap::Compression::Zstd))
        .compression_level(1)
        .compression_threads(0)
        .library(concat!("ads-record --recover ", env!("CARGO_PKG_VERSION")))
        .create(std::io::BufWriter::new(file))
        .map_err(mcap_err(output))?;
    let mut messages = 0u64;
    let truncated = scan(input, &bytes, |m| {
        messages += 1;
        writer.write(&m).map_err(mcap_err(output))
    })?;
    writer.finish().map_err(mcap_err(output))?;
    let mut buffered = writer.into_inner();
    std::io::Write::flush(&mut buffered)
        .map_err(|source| ReadError::Io { path: output.to_path_buf(), source })?;
    Ok(RecoverReport { messages, truncated })
}
