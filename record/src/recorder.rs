//! The recording loop: vehicle stream in, MCAP files out, until told to stop.

use crate::channels;
use crate::sink::{Progress, Sink, SinkError, SinkOptions};
use crate::subscribe::{Next, SubscribeError, VehicleStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(50);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The vehicle's PUB endpoint and its video socket (`None`: the one its states advertise).
    pub vehicle: String,
    pub video: Option<String>,
    pub sink: SinkOptions,
    /// Stop after this long (from the start, not from the first message).
    pub duration: Option<Duration>,
}

/// What a recording did; on error the files written so far stay on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub progress: Progress,
    pub malformed: u64,
}

/// Records until `stop` is set, `duration` is up or writing fails. `on_progress` hears about
/// it about once a second (a viewer shows it; the CLI prints it).
pub fn record(
    options: &RecordOptions,
    stop: &AtomicBool,
    on_progress: impl FnMut(&Progress),
) -> Result<Report, RecordError> {
    let mut stream = VehicleStream::connect(&options.vehicle, options.video.as_deref())?;
    record_from(options, stop, |timeout| stream.next(timeout), on_progress)
}

/// [`record`] from messages someone else receives (`next` waits at most the time it is
/// given; `options.vehicle` and `video` are not used): a viewer shares its own session.
pub fn record_from(
    options: &RecordOptions,
    stop: &AtomicBool,
    mut next: impl FnMut(Duration) -> Next,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Report, RecordError> {
    let mut sink = Sink::create(options.sink.clone())?;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut malformed = 0u64;
    on_progress(&sink.progress());
    while !stop.load(Ordering::Relaxed) && options.duration.is_none_or(|d| started.elapsed() < d) {
        match next(POLL) {
            Next::Message(received) => {
                for entry in channels::entries(&received) {
                    sink.write(&entry)?;
                }
            }
            Next::Malformed(e) => {
                malformed += 1;
                if malformed <= 5 || malformed % 1000 == 0 {
                    tracing::warn!(
                        "malformed message from the vehicle ({malformed} so far), not recorded: {e}"
                    );
                }
            }
            Next::Idle => sink.tick()?,
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            on_progress(&sink.progress());
        }
    }
    let progress = sink.finish()?;
    on_progress(&progress);
    Ok(Report { progress, malformed })
}
