//! Starts the sidecar, keeps the newest frame, passes commands on, and starts the sidecar
//! again (with back-off) when it dies or cannot reach the server.
//!
//! Threads: a supervisor (spawns the sidecar, accepts its connection, writes commands) and,
//! per connection, a reader (frames and reports). The owner of [`CarlaBridge`] (the vehicle's
//! control loop) never blocks on either: commands go through a bounded queue (`try_send`), and
//! frames are taken from a one-slot mailbox.

use crate::convert::{bgra_to_bgr, carla_to_ads_pose};
use crate::wire::{read_message, write_message, FromSidecar, ToSidecar};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How to run the sidecar and what to ask CARLA for.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub host: String,
    pub port: u16,
    /// The Python interpreter with `carla` installed (e.g. `target/py-venv/bin/python`).
    pub python: PathBuf,
    /// Camera image size: the frames ring's geometry, so frames need no resizing.
    pub width: u32,
    pub height: u32,
    /// Synchronous-mode tick rate (`fixed_delta_seconds = 1 / fps`).
    pub fps: f64,
    /// Blueprint filter of the car to spawn.
    pub vehicle_filter: String,
    /// `carla.Client.set_timeout`, seconds: how long one call may wait for the server.
    pub client_timeout_s: f64,
    /// Waits between restarts of the sidecar: `backoff_initial`, doubling, at most `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Extra environment for the sidecar (tests point `PYTHONPATH` at the stand-in module).
    pub env: Vec<(String, String)>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 2000,
            python: "python3".into(),
            width: 800,
            height: 600,
            fps: 20.0,
            vehicle_filter: "vehicle.tesla.model3".into(),
            client_timeout_s: 5.0,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            env: Vec::new(),
        }
    }
}

/// Where the link to CARLA stands.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkStatus {
    /// The sidecar is starting or connecting to the server.
    Starting,
    Connected {
        map: String,
        spawn_points: u32,
    },
    /// The last attempt failed for `reason`; the next starts after `retry_in`.
    Retrying {
        reason: String,
        retry_in: Duration,
        attempts: u32,
    },
}

/// One tick's image as BGR (packed rows, the ring's size) and the car's motion in ads' frame.
#[derive(Debug, Clone)]
pub struct CarlaFrame {
    pub pixels: Vec<u8>,
    pub frame: u64,
    pub sim_time_s: f64,
    pub x_m: f64,
    pub y_m: f64,
    pub yaw_rad: f64,
    pub speed_mps: f64,
    pub received: Instant,
}

/// Things the sidecar reported that the owner should pass on (respawn outcomes, errors).
#[derive(Debug, Clone, PartialEq)]
pub enum BridgeEvent {
    Respawned { spawn_point: u32, x_m: f64, y_m: f64 },
    Rejected { detail: String },
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("creating the sidecar's directory {path}: {source}")]
    RunDir { path: PathBuf, source: std::io::Error },
    #[error("binding the sidecar socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("starting the supervisor thread: {0}")]
    Thread(std::io::Error),
    #[error("CARLA is not connected ({0})")]
    NotConnected(String),
    #[error("spawn point {index} does not exist (the map has {count})")]
    NoSuchSpawnPoint { index: u32, count: u32 },
    #[error("the command queue to the sidecar is full (the sidecar is not reading)")]
    QueueFull,
}

#[derive(Debug)]
struct Inner {
    frame: Option<CarlaFrame>,
    status: LinkStatus,
    events: Vec<BridgeEvent>,
    max_steer_rad: f64,
    spawn_points: u32,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    frame_ready: Condvar,
    stop: AtomicBool,
    paused: AtomicBool,
    frames: AtomicU64,
    sidecar_starts: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in a holder leaves plain data behind, still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running bridge. Dropping it asks the sidecar to quit (it restores asynchronous mode),
/// then stops it with SIGTERM and SIGKILL if it does not.
#[derive(Debug)]
pub struct CarlaBridge {
    shared: Arc<Shared>,
    commands: SyncSender<ToSidecar>,
    supervisor: Option<JoinHandle<()>>,
    run_dir: PathBuf,
}

impl CarlaBridge {
    /// Writes the sidecar script and starts supervising it. Returns at once: the link comes up
    /// (or fails and retries) in the background; see [`CarlaBridge::status`].
    pub fn start(config: BridgeConfig) -> Result<Self, BridgeError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let run_dir = std::env::temp_dir().join(format!(
            "ads-carla-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let dir_err = |source| BridgeError::RunDir { path: run_dir.clone(), source };
        std::fs::create_dir_all(&run_dir).map_err(dir_err)?;
        let script = run_dir.join("ads_carla_sidecar.py");
        std::fs::write(&script, crate::SIDECAR_SCRIPT).map_err(dir_err)?;
        let socket = run_dir.join("sidecar.sock");
        let listener = UnixListener::bind(&socket)
            .map_err(|source| BridgeError::Bind { path: socket.clone(), source })?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                frame: None,
                status: LinkStatus::Starting,
                events: Vec::new(),
                max_steer_rad: 70f64.to_radians(),
                spawn_points: 0,
            }),
            frame_ready: Condvar::new(),
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            sidecar_starts: AtomicU64::new(0),
        });
        let (commands, rx) = std::sync::mpsc::sync_channel(64);
        let supervisor =
            Supervisor { config, shared: Arc::clone(&shared), listener, script, socket, commands: rx };
        let supervisor = std::thread::Builder::new()
            .name("carla-bridge".into())
            .spawn(move || supervisor.run())
            .map_err(BridgeError::Thread)?;
        Ok(Self { shared, commands, supervisor: Some(supervisor), run_dir })
    }

    pub fn status(&self) -> LinkStatus {
        self.shared.lock().status.clone()
    }

    /// Frames received since start, over every sidecar.
    pub fn frames_received(&self) -> u64 {
        self.shared.frames.load(Ordering::Relaxed)
    }

    /// How many times a sidecar process was started.
    pub fn sidecar_starts(&self) -> u64 {
        self.shared.sidecar_starts.load(Ordering::Relaxed)
    }

    /// The car's largest front-wheel angle as the sidecar read it (70° until it says).
    pub fn max_steer_rad(&self) -> f64 {
        self.shared.lock().max_steer_rad
    }

    /// The newest frame not taken yet, waiting for one at most `timeout`.
    pub fn take_frame(&self, timeout: Duration) -> Option<CarlaFrame> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.shared.lock();
        loop {
            if let Some(frame) = inner.frame.take() {
                return Some(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            inner = self
                .shared
                .frame_ready
                .wait_timeout(inner, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    pub fn take_events(&self) -> Vec<BridgeEvent> {
        std::mem::take(&mut self.shared.lock().events)
    }

    /// Controls for the next tick. Never blocks: a full queue drops them (the next tick's
    /// controls replace them anyway).
    pub fn send_control(&self, steer: f64, throttle: f64, brake: f64) -> Result<(), BridgeError> {
        self.send(ToSidecar::Control { steer, throttle, brake })
    }

    /// Pause or resume ticking. Remembered across sidecar restarts.
    pub fn set_paused(&self, paused: bool) -> Result<(), BridgeError> {
        self.shared.paused.store(paused, Ordering::Relaxed);
        self.send(if paused { ToSidecar::Pause } else { ToSidecar::Resume })
    }

    /// Asks for a respawn at `spawn_point`; the outcome arrives as a [`BridgeEvent`].
    pub fn respawn(&self, spawn_point: u32) -> Result<(), BridgeError> {
        let count = match self.status() {
            LinkStatus::Connected { spawn_points, .. } => spawn_points,
            LinkStatus::Starting => return Err(BridgeError::NotConnected("the sidecar is starting".into())),
            LinkStatus::Retrying { reason, .. } => return Err(BridgeError::NotConnected(reason)),
        };
        if spawn_point >= count {
            return Err(BridgeError::NoSuchSpawnPoint { index: spawn_point, count });
        }
        self.send(ToSidecar::Respawn { spawn_point })
    }

    fn send(&self, command: ToSidecar) -> Result<(), BridgeError> {
        match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(BridgeError::QueueFull),
            // The supervisor is gone only when we are being dropped.
            Err(TrySendError::Disconnected(_)) => Err(BridgeError::NotConnected("the bridge stopped".into())),
        }
    }
}

impl Drop for CarlaBridge {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.supervisor.take() {
            if handle.join().is_err() {
                tracing::error!("the CARLA bridge's supervisor thread panicked");
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

struct Supervisor {
    config: BridgeConfig,
    shared: Arc<Shared>,
    listener: UnixListener,
    script: PathBuf,
    socket: PathBuf,
    commands: Receiver<ToSidecar>,
}

/// How long a started sidecar may take to connect back.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a sidecar asked to quit may take to restore the server's settings.
const QUIT_GRACE: Duration = Duration::from_secs(5);

impl Supervisor {
    fn run(self) {
        let mut backoff = self.config.backoff_initial;
        let mut attempts = 0u32;
        while !self.stopping() {
            attempts += 1;
            self.shared.lock().status = LinkStatus::Starting;
            let frames_before = self.shared.frames.load(Ordering::Relaxed);
            let reason = self.session();
            if self.stopping() {
                break;
            }
            if self.shared.frames.load(Ordering::Relaxed) > frames_before {
                // It worked for a while: this is a new failure, not the same one again.
                backoff = self.config.backoff_initial;
                attempts = 1;
            }
            tracing::warn!("CARLA link down: {reason}; retrying in {backoff:?} (attempt {attempts})");
            self.shared.lock().status = LinkStatus::Retrying { reason, retry_in: backoff, attempts };
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.stopping() {
                // Commands meant for a sidecar that is not there are stale by the next one.
                while self.commands.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// One sidecar, from start to exit; returns why it ended.
    fn session(&self) -> String {
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(e) => return format!("cannot start the sidecar with {}: {e}", self.config.python.display()),
        };
        self.shared.sidecar_starts.fetch_add(1, Ordering::Relaxed);
        let reason = match self.accept(&mut child) {
            Ok(stream) => self.converse(stream),
            Err(reason) => reason,
        };
        let status = stop_child(&mut child);
        match status {
            Some(status) if !status.success() && !reason.contains("sidecar") => {
                format!("{reason} (sidecar {status})")
            }
            _ => reason,
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let c = &self.config;
        let mut cmd = Command::new(&c.python);
        cmd.arg("-u")
            .arg(&self.script)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--host", &c.host, "--port", &c.port.to_string()])
            .args(["--width", &c.width.to_string(), "--height", &c.height.to_string()])
            .args(["--fps", &c.fps.to_string(), "--vehicle", &c.vehicle_filter])
            .args(["--timeout", &c.client_timeout_s.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        cmd.spawn()
    }

    fn accept(&self, child: &mut Child) -> Result<UnixStream, String> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        self.listener.set_nonblocking(true).map_err(|e| format!("socket: {e}"))?;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).map_err(|e| format!("socket: {e}"))?;
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("accepting the sidecar: {e}")),
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the sidecar exited before connecting ({status})"));
            }
            if self.stopping() {
                return Err("stopping".into());
            }
            if Instant::now() > deadline {
                return Err(format!("the sidecar did not connect within {CONNECT_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reads reports on a thread of its own and writes commands here, until either side ends.
    fn converse(&self, stream: UnixStream) -> String {
        let reader_stream = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => return format!("socket: {e}"),
        };
        let done = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&self.shared);
        let size = (self.config.width, self.config.height);
        let reader_done = Arc::clone(&done);
        let reader = std::thread::Builder::new().name("carla-reader".into()).spawn(move || {
            let reason = read_reports(reader_stream, &shared, size);
            reader_done.store(true, Ordering::Relaxed);
            reason
        });
        let reader = match reader {
            Ok(r) => r,
            Err(e) => return format!("starting the reader thread: {e}"),
        };
        let mut out = stream;
        let mut paused_sent = false;
        let mut write_error = None;
        while !done.load(Ordering::Relaxed) {
            if self.stopping() {
                let _ = write_message(&mut out, &ToSidecar::Quit, &[]);
                break;
            }
            // A restarted sidecar starts ticking; if we were paused, it must not.
            if !paused_sent && self.shared.paused.load(Ordering::Relaxed) {
                if let Err(e) = write_message(&mut out, &ToSidecar::Pause, &[]) {
                    write_error = Some(e.to_string());
                    break;
                }
            }
            paused_sent = true;
            match self.commands.recv_timeout(Duration::from_millis(20)) {
                Ok(command) => {
                    if let Err(e) = write_message(&mut out, &command, &[]) {
                        write_error = Some(e.to_string());
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let reason = if self.stopping() {
            // Give the sidecar its time to restore asynchronous mode before the reader goes.
            let deadline = Instant::now() + QUIT_GRACE;
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = out.shutdown(std::net::Shutdown::Both);
            "stopping".to_string()
        } else {
            // Closing our side only: the sidecar sees the end, restores the server and exits,
            // and the reader still gets whatever it said before going.
            let _ = out.shutdown(std::net::Shutdown::Write);
            let deadline = Instant::now() + QUIT_GRACE;
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = out.shutdown(std::net::Shutdown::Both);
            String::new()
        };
        let (read_reason, reported) =
            reader.join().unwrap_or_else(|_| ("the reader thread panicked".into(), false));
        // What the sidecar said (e.g. "unreachable") explains a broken pipe, not the reverse.
        match write_error {
            Some(_) if reported => read_reason,
            Some(e) => format!("writing to the sidecar: {e}"),
            None if reason.is_empty() => read_reason,
            None => reason,
        }
    }
}

/// The reader: returns why the conversation ended, and whether the sidecar said so itself.
fn read_reports(mut stream: UnixStream, shared: &Shared, (width, height): (u32, u32)) -> (String, bool) {
    let mut payload = Vec::new();
    let mut last_error: Option<String> = None;
    loop {
        let report: FromSidecar = match read_message(&mut stream, &mut payload) {
            Ok(r) => r,
            Err(e) => {
                return match last_error {
                    Some(reported) => (reported, true),
                    None => (format!("the sidecar closed the connection ({e})"), false),
                }
            }
        };
        match report {
            FromSidecar::Ready { map, spawn_points, max_steer_deg, .. } => {
                tracing::info!(%map, spawn_points, "CARLA connected");
                let mut inner = shared.lock();
                inner.spawn_points = spawn_points;
                if max_steer_deg > 0.0 {
                    inner.max_steer_rad = max_steer_deg.to_radians();
                }
                inner.status = LinkStatus::Connected { map, spawn_points };
            }
            FromSidecar::Frame { frame, sim_time_s, width: w, height: h, x_m, y_m, yaw_deg, speed_mps } => {
                if (w, h) != (width, height) {
                    return (
                        format!("the sidecar sent a {w}x{h} image, the frames ring is {width}x{height}"),
                        false,
                    );
                }
                let mut pixels = vec![0u8; width as usize * height as usize * 3];
                if let Err(e) = bgra_to_bgr(&payload, w, h, &mut pixels, width as usize * 3) {
                    return (format!("frame {frame}: {e}"), false);
                }
                let (x_m, y_m, yaw_rad) = carla_to_ads_pose(x_m, y_m, yaw_deg);
                let received = Instant::now();
                let carla_frame =
                    CarlaFrame { pixels, frame, sim_time_s, x_m, y_m, yaw_rad, speed_mps, received };
                shared.lock().frame = Some(carla_frame);
                shared.frames.fetch_add(1, Ordering::Relaxed);
                shared.frame_ready.notify_all();
            }
            FromSidecar::Respawned { spawn_point, x_m, y_m } => {
                let (x_m, y_m, _) = carla_to_ads_pose(x_m, y_m, 0.0);
                shared.lock().events.push(BridgeEvent::Respawned { spawn_point, x_m, y_m });
            }
            FromSidecar::Rejected { detail } => shared.lock().events.push(BridgeEvent::Rejected { detail }),
            FromSidecar::Error { kind, message } => {
                tracing::warn!(kind, "CARLA sidecar: {message}");
                last_error = Some(message);
            }
        }
    }
}

/// Waits for a sidecar that was asked to quit (or lost its socket), then SIGTERM, then SIGKILL.
fn stop_child(child: &mut Child) -> Option<std::process::ExitStatus> {
    let wait = |child: &mut Child, grace: Duration| {
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    };
    if let Some(status) = wait(child, QUIT_GRACE) {
        return Some(status);
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if let Some(status) = wait(child, Duration::from_secs(2)) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}
