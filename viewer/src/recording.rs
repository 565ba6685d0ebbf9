//! The page's Record button: an ads-record recording written on the laptop, into
//! `recordings_dir`, from the viewer's own process (`ads_record::recorder` on a thread of its
//! own, with its own subscription to the vehicle: the viewer's link is untouched).
//!
//! `GET /api/recording` says where it stands (file, size, duration); `POST /api/recording`
//! with `{"record": true}` starts one, `{"record": false}` stops it. Dropping the router (the
//! viewer stopping) stops and finishes a running recording.

use crate::config::ViewerConfig;
use ads_record::recorder::{self, RecordOptions};
use ads_record::sink::{Progress, SinkOptions};
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
    progress: Arc<Mutex<Progress>>,
    thread: std::thread::JoinHandle<Result<recorder::Report, recorder::RecordError>>,
}

pub struct Recordings {
    dir: PathBuf,
    vehicle: String,
    video: String,
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

impl Recordings {
    pub fn new(config: &ViewerConfig) -> Self {
        Self {
            dir: config.recordings_dir.clone(),
            vehicle: config.vehicle.clone(),
            video: config.video.clone(),
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
        let name = format!("ads-{}.mcap", ads_record::subscribe::wall_ns() / 1_000_000);
        let options = RecordOptions {
            vehicle: self.vehicle.clone(),
            video: Some(self.video.clone()),
            sink: SinkOptions {
                path: self.dir.join(name),
                rotate_bytes: None,
                rotate_every: None,
                flush_every: Duration::from_secs(1),
            },
            duration: None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let progress =
            Arc::new(Mutex::new(Progress { path: options.sink.path.clone(), ..Progress::default() }));
        let (thread_stop, thread_progress) = (Arc::clone(&stop), Arc::clone(&progress));
        let thread = std::thread::Builder::new()
            .name("recording".into())
            .spawn(move || {
                recorder::record(&options, &thread_stop, |p| {
                    *thread_progress.lock().unwrap_or_else(PoisonError::into_inner) = p.clone();
                })
            })
            .map_err(|e| format!("starting the recorder: {e}"))?;
        *active = Some(Active { stop, progress, thread });
        Ok(())
    }

    fn finished(&self, done: Active) {
        let outcome = match done.thread.join() {
            Ok(Ok(report)) => json!({ "ok": true, "recording": progress_json(&report.progress) }),
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
pub fn routes<S>(config: &ViewerConfig) -> Router<S> {
    Router::new()
        .route("/api/recording", get(status).post(control))
        .with_state(Arc::new(Recordings::new(config)))
}
