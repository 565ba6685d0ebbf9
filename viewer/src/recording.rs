//! The page's Record button: an ads-record recording written on the laptop, into
//! `recordings_dir`, from the viewer's own process (`ads_record::recorder` on a thread of its
//! own, fed by the viewer's link through [`crate::fanout`]: no session of its own on the
//! vehicle; a slow disk only loses messages of the recording, never slows the link).
//!
//! `GET /api/recording` says where it stands (file, size, duration); `POST /api/recording`
//! with `{"record": true}` starts one, `{"record": false}` stops it. Dropping the router (the
//! viewer stopping) stops and finishes a running recording.
//!
//! Bounded: a recording stops by itself at `record_max_bytes`, after `record_max_seconds`, or
//! when the disk's free space falls below `record_min_free_bytes` (checked with each
//! progress report, every second); `last.stopped` then says which, for the page.

use crate::hub::Hub;
use ads_record::recorder::{self, RecordOptions};
use ads_record::sink::{Progress, SinkOptions};
use ads_record::subscribe::Next;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

struct Active {
    stop: Arc<AtomicBool>,
    /// Why it stopped by itself (a limit), if it did.
    stopped: Arc<Mutex<Option<String>>>,
    progress: Arc<Mutex<Progress>>,
    thread: std::thread::JoinHandle<Result<recorder::Report, recorder::RecordError>>,
}

/// Messages queued for the recorder at most (a burst while the disk is slow).
const QUEUE: usize = 512;

pub struct Recordings {
    dir: PathBuf,
    limits: RecordLimits,
    hub: Arc<Hub>,
    active: Mutex<Option<Active>>,
    /// The last finished recording, or why it failed.
    last: Mutex<Value>,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn progress_json(p: &Progress) -> Value {
    json!({ "path": p.path, "bytes": p.total_bytes, "frames": p.frames, "duration_ms": p.duration_ms })
}

/// When a recording stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    pub max_bytes: u64,
    pub max_duration: Duration,
    pub min_free_bytes: u64,
}

impl RecordLimits {
    /// Why a recording at `progress`, on a disk with `free_bytes` left, must stop; `None`: it
    /// may go on.
    pub fn exceeded(&self, progress: &Progress, free_bytes: Option<u64>) -> Option<String> {
        let mb = |b: u64| b as f64 / 1e6;
        if progress.total_bytes >= self.max_bytes {
            return Some(format!("size limit of {:.1} MB reached (record_max_bytes)", mb(self.max_bytes)));
        }
        if progress.duration_ms >= self.max_duration.as_millis() as u64 {
            return Some(format!(
                "duration limit of {} s reached (record_max_seconds)",
                self.max_duration.as_secs()
            ));
        }
        match free_bytes {
            Some(free) if free < self.min_free_bytes => Some(format!(
                "the disk is nearly full: {:.1} MB free, at least {:.1} MB kept free (record_min_free_bytes)",
                mb(free),
                mb(self.min_free_bytes)
            )),
            _ => None,
        }
    }
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(dir).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

impl Recordings {
    pub fn new(hub: &Arc<Hub>) -> Self {
        let config = &hub.config;
        Self {
            dir: config.recordings_dir.clone(),
            limits: RecordLimits {
                max_bytes: config.record_max_bytes,
                max_duration: Duration::from_secs(config.record_max_seconds),
                min_free_bytes: config.record_min_free_bytes,
            },
            hub: Arc::clone(hub),
            active: Mutex::new(None),
            last: Mutex::new(Value::Null),
        }
    }

    fn start(&self) -> Result<(), String> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if active.as_ref().is_some_and(|a| !a.thread.is_finished()) {
            return Err("already recording".into());
        }
        if let Some(done) = active.take() {
            self.finished(done);
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        if let Some(why) = self.limits.exceeded(&Progress::default(), free_bytes(&self.dir)) {
            return Err(format!("not recording: {why}"));
        }
        let name = format!("ads-{}.mcap", ads_record::subscribe::wall_ns() / 1_000_000);
        let options = RecordOptions {
            vehicle: self.hub.config.vehicle.clone(),
            // Not used: the recording takes the viewer's own session (`record_from`).
            video: None,
            sink: SinkOptions {
                path: self.dir.join(name),
                rotate_bytes: None,
                rotate_every: None,
                flush_every: Duration::from_secs(1),
            },
            // The recorder's own bound too, in case progress reports are late.
            duration: Some(self.limits.max_duration),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(Mutex::new(None));
        let progress =
            Arc::new(Mutex::new(Progress { path: options.sink.path.clone(), ..Progress::default() }));
        let (thread_stop, thread_progress) = (Arc::clone(&stop), Arc::clone(&progress));
        let (thread_stopped, limits, dir) = (Arc::clone(&stopped), self.limits, self.dir.clone());
        let messages = self.hub.fanout.subscribe(QUEUE);
        let next = move |timeout| match messages.recv_timeout(timeout) {
            Ok(received) => Next::Message(Box::new((*received).clone())),
            Err(_) => Next::Idle,
        };
        let thread = std::thread::Builder::new()
            .name("recording".into())
            .spawn(move || {
                let stop = thread_stop;
                let result = recorder::record_from(&options, &stop, next, |p| {
                    *thread_progress.lock().unwrap_or_else(PoisonError::into_inner) = p.clone();
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some(why) = limits.exceeded(p, free_bytes(&dir)) {
                        tracing::warn!("recording {} stopped: {why}", p.path.display());
                        *thread_stopped.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                        stop.store(true, Ordering::Relaxed);
                    }
                });
                // Ended without anyone asking: the recorder's own duration bound. Say so too.
                let mut stopped = thread_stopped.lock().unwrap_or_else(PoisonError::into_inner);
                if result.is_ok() && stopped.is_none() && !stop.load(Ordering::Relaxed) {
                    *stopped = Some(format!(
                        "duration limit of {} s reached (record_max_seconds)",
                        limits.max_duration.as_secs()
                    ));
                }
                drop(stopped);
                result
            })
            .map_err(|e| format!("starting the recorder: {e}"))?;
        *active = Some(Active { stop, stopped, progress, thread });
        Ok(())
    }

    fn finished(&self, done: Active) {
        let result = done.thread.join();
        let stopped = done.stopped.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let outcome = match result {
            Ok(Ok(report)) => {
                json!({ "ok": true, "recording": progress_json(&report.progress), "stopped": stopped })
            }
            Ok(Err(e)) => json!({ "ok": false, "error": e.to_string() }),
            Err(_) => json!({ "ok": false, "error": "the recorder panicked" }),
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = outcome;
    }

    fn stop(&self) {
        let done = self.active.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(done) = done {
            done.stop.store(true, Ordering::Relaxed);
            self.finished(done);
        }
    }

    fn status(&self) -> Value {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        // A recording that stopped by itself (disk full) is reported as finished.
        if active.as_ref().is_some_and(|a| a.thread.is_finished()) {
            if let Some(done) = active.take() {
                self.finished(done);
            }
        }
        let current = active
            .as_ref()
            .map(|a| progress_json(&a.progress.lock().unwrap_or_else(PoisonError::into_inner)));
        json!({
            "recording": current.is_some(),
            "current": current,
            "last": *self.last.lock().unwrap_or_else(PoisonError::into_inner),
        })
    }
}

impl Drop for Recordings {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRequest {
    record: bool,
}

async fn status(State(recordings): State<Arc<Recordings>>) -> Response {
    Json(recordings.status()).into_response()
}

async fn control(State(recordings): State<Arc<Recordings>>, body: Bytes) -> Response {
    let refuse = |status, text: &str| (status, Json(json!({ "error": text }))).into_response();
    // Origin, Host and the JSON content type were checked by the guard (guard.rs).
    let request: RecordRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, &format!("expected {{\"record\": true|false}}: {e}"))
        }
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let result = if request.record {
            recordings.start()
        } else {
            recordings.stop();
            Ok(())
        };
        (result, recordings.status())
    })
    .await;
    match outcome {
        Ok((Ok(()), status)) => Json(status).into_response(),
        Ok((Err(e), _)) => refuse(StatusCode::CONFLICT, &e),
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "the recording request failed"),
    }
}

/// `/api/recording`, for merging into the viewer's router (inside its access layer).
pub fn routes<S>(hub: &Arc<Hub>) -> Router<S> {
    Router::new()
        .route("/api/recording", get(status).post(control))
        .with_state(Arc::new(Recordings::new(hub)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_stops_at_its_size_its_duration_or_a_nearly_full_disk() {
        let limits = RecordLimits {
            max_bytes: 1_000_000,
            max_duration: Duration::from_secs(60),
            min_free_bytes: 500_000_000,
        };
        let at = |total_bytes, duration_ms| Progress { total_bytes, duration_ms, ..Progress::default() };
        assert_eq!(limits.exceeded(&at(999_999, 59_999), Some(600_000_000)), None);
        assert_eq!(limits.exceeded(&at(999_999, 59_999), None), None, "free space unknown: go on");
        let size = limits.exceeded(&at(1_000_000, 0), None).unwrap();
        assert!(size.contains("size limit of 1.0 MB"), "{size}");
        let time = limits.exceeded(&at(0, 60_000), None).unwrap();
        assert!(time.contains("duration limit of 60 s"), "{time}");
        let disk = limits.exceeded(&at(0, 0), Some(499_999_999)).unwrap();
        assert!(disk.contains("nearly full: 500.0 MB free"), "{disk}");
    }
}
