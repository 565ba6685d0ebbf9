//! A V4L2 camera through nokhwa: negotiates a format, captures on a thread of its own (the
//! device sets the pace) and hands the newest converted frame to the control loop.

use super::convert::{copy_rows, Converter};
use super::negotiate::{self, FourCc, NegotiationError, Offered, Request};
use super::{FrameSource, Motion, Next, Pacing, SourceError};
use crate::config::VehicleConfig;
use ads_shmem_ipc::clock;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("camera {device} does not exist; V4L2 devices found: {found}")]
    NoSuchDevice { device: PathBuf, found: String },
    #[error(
        "{device} is not a V4L2 capture device path (expected /dev/videoN); V4L2 devices found: {found}"
    )]
    BadPath { device: PathBuf, found: String },
    #[error("camera {device} is busy (another program is using it: `fuser {device}` names it): {detail}")]
    Busy { device: PathBuf, detail: String },
    #[error("cannot open camera {device}: {detail}; V4L2 devices found: {found}")]
    Open { device: PathBuf, detail: String, found: String },
    #[error("camera {device}: {source}")]
    Format { device: PathBuf, source: NegotiationError },
    #[error("camera {device} did not start streaming: {detail}")]
    Stream { device: PathBuf, detail: String },
}

/// The V4L2 devices present, with names, for error messages.
pub fn list_devices() -> String {
    let mut found: Vec<String> = match std::fs::read_dir("/dev") {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("video"))
            .map(|n| {
                let name = std::fs::read_to_string(format!("/sys/class/video4linux/{n}/name"))
                    .map(|s| format!(" ({})", s.trim()))
                    .unwrap_or_default();
                format!("/dev/{n}{name}")
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    if found.is_empty() {
        "none".into()
    } else {
        found.join(", ")
    }
}

/// `/dev/videoN` → `N`.
pub fn device_index(device: &Path) -> Option<u32> {
    device.to_str()?.strip_prefix("/dev/video")?.parse().ok()
}

fn to_fourcc(format: FrameFormat) -> FourCc {
    match format {
        FrameFormat::MJPEG => FourCc::MJPG,
        FrameFormat::YUYV => FourCc::YUYV,
        FrameFormat::NV12 => FourCc(*b"NV12"),
        FrameFormat::GRAY => FourCc(*b"GREY"),
        FrameFormat::RAWRGB => FourCc(*b"RGB3"),
        FrameFormat::RAWBGR => FourCc(*b"BGR3"),
    }
}

fn is_busy(detail: &str) -> bool {
    detail.contains("busy") || detail.contains("os error 16")
}

/// The newest converted frame, from the capture thread.
#[derive(Debug, Default)]
struct Mailbox {
    frame: Option<(Vec<u8>, u64, u64)>,
    problem: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    mailbox: Mutex<Mailbox>,
    ready: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug)]
pub struct CameraSource {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    width: u32,
    pending: Option<Vec<u8>>,
    pub chosen: Offered,
}

impl CameraSource {
    /// Opens `camera.device`, negotiates a format for the ring's size and `fps`, starts
    /// streaming. Every failure names the device and what was found instead.
    pub fn open(config: &VehicleConfig) -> Result<Self, CameraError> {
        let device = config.camera.device.clone();
        let index = device_index(&device)
            .ok_or_else(|| CameraError::BadPath { device: device.clone(), found: list_devices() })?;
        if !device.exists() {
            return Err(CameraError::NoSuchDevice { device, found: list_devices() });
        }
        let request = Request { width: config.width, height: config.height, fps: config.fps };
        let shared = Arc::new(Shared::default());
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread_device = device.clone();
        let thread = std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || capture(index, &thread_device, request, &thread_shared, &opened_tx))
            .map_err(|e| CameraError::Open {
                device: device.clone(),
                detail: e.to_string(),
                found: String::new(),
            })?;
        let chosen = match opened_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(chosen)) => chosen,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(CameraError::Stream {
                    device,
                    detail: "no answer from the device within 10 s".into(),
                });
            }
        };
        tracing::info!(device = %device.display(), format = %chosen, "camera streaming");
        Ok(Self { shared, thread: Some(thread), width: config.width, pending: None, chosen })
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The capture thread: opens the device here (nokhwa's camera is not `Send`), says how that
/// went through `opened`, then converts frames until told to stop or the device fails.
fn capture(
    index: u32,
    device: &Path,
    request: Request,
    shared: &Shared,
    opened: &std::sync::mpsc::Sender<Result<Offered, CameraError>>,
) {
    let open_err = |detail: String| {
        if is_busy(&detail) {
            CameraError::Busy { device: device.to_path_buf(), detail }
        } else {
            CameraError::Open { device: device.to_path_buf(), detail, found: list_devices() }
        }
    };
    let any = RequestedFormat::new::<nokhwa::pixel_format::RgbFormat>(RequestedFormatType::None);
    let mut camera =
        match nokhwa::Camera::with_backend(CameraIndex::Index(index), any, ApiBackend::Video4Linux) {
            Ok(c) => c,
            Err(e) => return drop(opened.send(Err(open_err(e.to_string())))),
        };
    let offered: Vec<Offered> = match camera.compatible_camera_formats() {
        Ok(formats) => formats
            .iter()
            .map(|f| Offered {
                fourcc: to_fourcc(f.format()),
                width: f.resolution().width(),
                height: f.resolution().height(),
                fps: f.frame_rate(),
            })
            .collect(),
        Err(e) => return drop(opened.send(Err(open_err(e.to_string())))),
    };
    let chosen = match negotiate::negotiate(&offered, &request) {
        Ok(c) => c,
        Err(source) => {
            return drop(opened.send(Err(CameraError::Format { device: device.to_path_buf(), source })))
        }
    };
    let format = if chosen.fourcc == FourCc::MJPG { FrameFormat::MJPEG } else { FrameFormat::YUYV };
    let exact = CameraFormat::new(Resolution::new(chosen.width, chosen.height), format, chosen.fps);
    let exact = RequestedFormat::new::<nokhwa::pixel_format::RgbFormat>(RequestedFormatType::Exact(exact));
    if let Err(e) = camera.set_camera_requset(exact).and_then(|_| camera.open_stream()) {
        let detail = e.to_string();
        let err = if is_busy(&detail) {
            CameraError::Busy { device: device.to_path_buf(), detail }
        } else {
            CameraError::Stream { device: device.to_path_buf(), detail }
        };
        return drop(opened.send(Err(err)));
    }
    let _ = opened.send(Ok(chosen));
    let mut converter = Converter::new(request.width, request.height);
    let mut spare = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let converted = match camera.frame_raw() {
            Ok(raw) => {
                let (mono, wall) = (clock::monotonic_ns(), clock::wall_ns());
                let result = if chosen.fourcc == FourCc::MJPG {
                    converter.mjpeg(&raw, &mut spare)
                } else {
                    converter.yuyv(&raw, chosen.width, chosen.height, &mut spare)
                };
                result.map(|()| (mono, wall)).map_err(|e| e.to_string())
            }
            Err(e) => {
                shared.lock().problem = Some(format!("camera {}: {e}", device.display()));
                break;
            }
        };
        match converted {
            Ok((mono, wall)) => {
                let mut mailbox = shared.lock();
                let old = mailbox.frame.replace((std::mem::take(&mut spare), mono, wall));
                mailbox.problem = None;
                drop(mailbox);
                spare = old.map(|(v, _, _)| v).unwrap_or_default();
                shared.ready.notify_all();
            }
            // A corrupt MJPEG frame happens on real USB links: skip it, say so.
            Err(e) => tracing::warn!("camera {}: frame skipped: {e}", device.display()),
        }
    }
    let _ = camera.stop_stream();
}

impl FrameSource for CameraSource {
    fn kind(&self) -> &'static str {
        "camera"
    }

    fn pacing(&self) -> Pacing {
        Pacing::External
    }

    fn wait_frame(&mut self, deadline_ns: u64) -> bool {
        let mut mailbox = self.shared.lock();
        while mailbox.frame.is_none() {
            let now = clock::monotonic_ns();
            if now >= deadline_ns || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return false;
            }
            mailbox = self
                .shared
                .ready
                .wait_timeout(mailbox, Duration::from_nanos(deadline_ns - now))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }

    fn next_frame(&mut self) -> Result<Next, SourceError> {
        match self.shared.lock().frame.take() {
            Some((pixels, mono, wall)) => {
                self.pending = Some(pixels);
                Ok(Next::Ready { capture_mono_ns: Some(mono), capture_wall_ns: Some(wall) })
            }
            None => Ok(Next::NotYet),
        }
    }

    fn write_frame(&mut self, _frame_id: u64, pixels: &mut [u8], stride: usize) {
        if let Some(frame) = self.pending.take() {
            copy_rows(&frame, self.width, pixels, stride);
        }
    }

    fn motion(&self) -> Motion {
        Motion { steering_rad: None, ..Motion::default() }
    }

    fn problem(&self) -> Option<String> {
        self.shared.lock().problem.clone()
    }

    fn respawn(&mut self, _spawn_point: usize) -> Result<String, String> {
        Err("respawn is not possible with a camera: it films the real world, which cannot be put back".into())
    }
}
