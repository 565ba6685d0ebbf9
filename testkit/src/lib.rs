//! What the workspace's multi-process tests share: the workspace's binaries, free ports and
//! unique names, children stopped the way a supervisor stops them, and an `ads-vehicle` on
//! ports, rings and an e-stop latch of its own.
//!
//! Test-only (`publish = false`, a dev-dependency wherever it is used). What one test file
//! alone needs (its clients, its event readers, its assertions) stays in that file.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// Generous: only keeps a broken test from hanging, it measures nothing.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Between SIGTERM and SIGKILL when a test lets go of a child.
const GRACE: Duration = Duration::from_secs(10);

/// A workspace binary next to the running test's executable (`target/<profile>/<name>`).
/// Tests of another package than the binary's need it built first:
/// `cargo build --workspace --bins` (scripts/test.sh does).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own executable");
    let path = exe.parent().and_then(Path::parent).expect("the target directory").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A TCP port free on loopback just now, for a process to bind a moment later. Drawn below
/// the kernel's ephemeral range: a port the kernel hands out (`bind(0)`) is also what it
/// gives the next outgoing connection as its source port, and the many ZeroMQ clients of
/// parallel tests took such a port before the vehicle meant to bind it could.
pub fn free_port() -> u16 {
    free_port_block(1)
}

/// `n` consecutive TCP ports free on loopback just now, for a program that binds them a
/// while later (`scripts/demo.sh` derives its action and video ports from the first). Taken
/// below the kernel's ephemeral range (32768–60999 here), where [`free_port`] of other tests
/// and outgoing connections never land, so the wait before the program binds them cannot
/// hand them to someone else.
pub fn free_port_block(n: u16) -> u16 {
    let seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for attempt in 0..200u64 {
        let first = 20_000 + ((seed.wrapping_add(attempt.wrapping_mul(7919)) % 12_000) as u16);
        let held: Vec<_> =
            (first..first + n).map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok()).collect();
        if held.len() == usize::from(n) {
            return first;
        }
    }
    panic!("no {n} consecutive free ports in 20000..32000");
}

/// A name no other test process uses: `t<pid>-<test>` (ring names, vehicle ids).
pub fn unique_name(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

/// A child stopped like a supervisor stops it when the test lets go of it: SIGCONT (a
/// stopped process would sit on SIGTERM forever), SIGTERM, a grace period, then SIGKILL, so
/// even a failing test leaves nothing in /dev/shm. A child already reaped gets no signal:
/// its pid may belong to another process by now.
#[derive(Debug)]
pub struct Kill(pub Child);

impl Kill {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32).expect("a child's pid is not 0")
    }

    /// Sends `signal`; panics if it cannot be sent.
    pub fn signal(&self, signal: Signal) {
        self.try_signal(signal).expect("kill");
    }

    pub fn try_signal(&self, signal: Signal) -> rustix::io::Result<()> {
        rustix::process::kill_process(self.pid(), signal)
    }

    /// SIGKILL, and wait until it is gone, so what follows happens without it.
    pub fn crash(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        self.signal(Signal::KILL);
        self.0.wait().expect("wait");
    }

    /// Its exit status, once it exits by itself within [`DEADLINE`].
    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{what} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGCONT and SIGTERM, a grace period, SIGKILL; the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_like_a_supervisor().expect("wait")
    }

    fn stop_like_a_supervisor(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.0.try_wait()? {
            return Ok(status);
        }
        let _ = self.try_signal(Signal::CONT);
        let _ = self.try_signal(Signal::TERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        self.0.wait()
    }
}

impl Drop for Kill {
    /// Never panics (it may run while a failed test unwinds).
    fn drop(&mut self) {
        let _ = self.stop_like_a_supervisor();
    }
}

/// How a [`TestVehicle`] is started: `ads-vehicle` on free loopback ports (stream, video,
/// actions), rings `<name>-frames` and `<name>-det`, and an e-stop latch in the temporary
/// directory (never the user's `~/.local/state`). The ports and names are fixed when it is
/// made, so every process started from it (a restart) has the same ones.
#[derive(Debug, Clone)]
pub struct VehicleBuilder {
    binary: Option<PathBuf>,
    name: String,
    vehicle_id: String,
    ports: Ports,
    action_host: String,
    /// The host the PUB and video sockets bind (`*` for every address).
    listen_host: String,
    latch: PathBuf,
    /// The latch is this builder's own (removed before a start and when the vehicle is
    /// dropped), not one the test passed in.
    own_latch: bool,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: String,
    detector: Option<Vec<OsString>>,
    /// A program (with its arguments) that runs `ads-vehicle`, e.g. `prlimit --nofile=..`.
    wrapper: Vec<OsString>,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    stream: u16,
    video: u16,
    actions: u16,
}

impl VehicleBuilder {
    /// Named [`unique_name`]`(test)`, which is also its vehicle id.
    pub fn new(test: &str) -> Self {
        let name = unique_name(test);
        Self {
            binary: None,
            vehicle_id: name.clone(),
            ports: Ports { stream: free_port(), video: free_port(), actions: free_port() },
            action_host: "127.0.0.1".into(),
            listen_host: "127.0.0.1".into(),
            latch: std::env::temp_dir().join(format!("ads-test-{name}.latch")),
            name,
            own_latch: true,
            args: Vec::new(),
            env: Vec::new(),
            log: "warn".into(),
            detector: None,
            wrapper: Vec::new(),
        }
    }

    /// Runs `ads-vehicle` through this program and its arguments (the vehicle's path and
    /// flags follow them). Signals go to the wrapper: use one that execs the vehicle
    /// (`prlimit`, `setpriv`), or stop the vehicle yourself.
    pub fn wrapper<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, wrapper: I) -> Self {
        self.wrapper = wrapper.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        self
    }

    /// The `ads-vehicle` executable [default: [`bin`]`("ads-vehicle")`]; the vehicle's own
    /// tests pass `env!("CARGO_BIN_EXE_ads-vehicle")`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    pub fn vehicle_id(mut self, id: &str) -> Self {
        self.vehicle_id = id.to_string();
        self
    }

    /// The host of the action endpoint it binds [default: `127.0.0.1`], e.g. `*`.
    /// Binds the PUB and video sockets on `host` (e.g. `*`) instead of 127.0.0.1: for a
    /// vehicle reached from another network namespace.
    pub fn listen_host(mut self, host: &str) -> Self {
        self.listen_host = host.into();
        self
    }

    pub fn action_host(mut self, host: &str) -> Self {
        self.action_host = host.to_string();
        self
    }

    /// A latch file the test keeps (across vehicles, say); it is neither reset nor removed.
    pub fn latch_file(mut self, path: &Path) -> Self {
        self.latch = path.to_path_buf();
        self.own_latch = false;
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// More `ads-vehicle` flags.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// `RUST_LOG` of the vehicle and its detector [default: `warn`].
    pub fn log(mut self, filter: &str) -> Self {
        self.log = filter.to_string();
        self
    }

    /// Also run `ads-detection --method cv` on its rings ([`bin`]`("ads-detection")`).
    pub fn detector(self) -> Self {
        self.detector_args::<[&str; 0], &str>([])
    }

    /// Also run `ads-detection --method cv` on its rings, with these flags too.
    pub fn detector_args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.detector = Some(args.into_iter().map(|a| a.as_ref().to_os_string()).collect());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn frames_ring(&self) -> String {
        format!("{}-frames", self.name)
    }

    pub fn detections_ring(&self) -> String {
        format!("{}-det", self.name)
    }

    pub fn latch(&self) -> &Path {
        &self.latch
    }

    pub fn pub_port(&self) -> u16 {
        self.ports.stream
    }

    pub fn video_port(&self) -> u16 {
        self.ports.video
    }

    pub fn action_port(&self) -> u16 {
        self.ports.actions
    }

    /// Its stream (PUB) endpoint on loopback.
    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.ports.stream)
    }

    pub fn video_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.ports.video)
    }

    /// Its action endpoint on loopback (whatever host it binds).
    pub fn action_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.ports.actions)
    }

    /// The `ads-vehicle` command, not started: for a test that runs it its own way (under a
    /// wrapper, to its exit). Its process and latch file are the caller's.
    pub fn command(&self) -> Command {
        let binary = self.binary.clone().unwrap_or_else(|| bin("ads-vehicle"));
        let mut command = match self.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["--vehicle-id", &self.vehicle_id])
            .args(["--broadcast", &format!("tcp://{}:{}", self.listen_host, self.ports.stream)])
            .args(["--video-endpoint", &format!("tcp://{}:{}", self.listen_host, self.ports.video)])
            .args(["--actions", &format!("tcp://{}:{}", self.action_host, self.ports.actions)])
            .args(["--frames-ring", &self.frames_ring(), "--detections-ring", &self.detections_ring()])
            .arg("--latch-file")
            .arg(&self.latch)
            .args(&self.args)
            .env("RUST_LOG", &self.log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null());
        command
    }

    /// Starts the vehicle (and its detector, if asked for).
    pub fn spawn(self) -> TestVehicle {
        if self.own_latch {
            let _ = std::fs::remove_file(&self.latch);
        }
        let process = Kill(self.command().spawn().expect("start ads-vehicle"));
        let latch = self.own_latch.then(|| RemoveOnDrop(self.latch.clone()));
        let mut vehicle = TestVehicle { detector: None, process, setup: self, _latch: latch };
        if vehicle.setup.detector.is_some() {
            vehicle.start_detector();
        }
        vehicle
    }
}

/// A running `ads-vehicle` (see [`VehicleBuilder`]), and its `ads-detection` if it has one.
/// Dropped, both get SIGTERM (then SIGKILL after a grace period), so their rings are removed
/// from /dev/shm, and the latch file made for it is removed.
#[derive(Debug)]
pub struct TestVehicle {
    /// Stopped first: the detector before the vehicle, as systemd stops `ads.target`.
    pub detector: Option<Kill>,
    pub process: Kill,
    setup: VehicleBuilder,
    _latch: Option<RemoveOnDrop>,
}

impl TestVehicle {
    /// [`VehicleBuilder::new`]`(test)`.
    pub fn build(test: &str) -> VehicleBuilder {
        VehicleBuilder::new(test)
    }

    /// What it was started from (to start another one just like it).
    pub fn setup(&self) -> &VehicleBuilder {
        &self.setup
    }

    pub fn name(&self) -> &str {
        self.setup.name()
    }

    pub fn vehicle_id(&self) -> &str {
        &self.setup.vehicle_id
    }

    pub fn frames_ring(&self) -> String {
        self.setup.frames_ring()
    }

    pub fn detections_ring(&self) -> String {
        self.setup.detections_ring()
    }

    pub fn latch(&self) -> &Path {
        self.setup.latch()
    }

    pub fn pub_port(&self) -> u16 {
        self.setup.pub_port()
    }

    pub fn video_port(&self) -> u16 {
        self.setup.video_port()
    }

    pub fn action_port(&self) -> u16 {
        self.setup.action_port()
    }

    /// Its stream (PUB) endpoint on loopback.
    pub fn endpoint(&self) -> String {
        self.setup.endpoint()
    }

    pub fn video_endpoint(&self) -> String {
        self.setup.video_endpoint()
    }

    pub fn action_endpoint(&self) -> String {
        self.setup.action_endpoint()
    }

    /// A new `ads-detection` on its rings (the one before, if any, is stopped first).
    pub fn start_detector(&mut self) {
        self.detector = None;
        let extra = self.setup.detector.clone().unwrap_or_default();
        let child = Command::new(bin("ads-detection"))
            .args(["--method", "cv", "--frames-ring", &self.frames_ring()])
            .args(["--detections-ring", &self.detections_ring()])
            .args(extra)
            .env("RUST_LOG", &self.setup.log)
            .stdout(Stdio::null())
            .spawn()
            .expect("start ads-detection");
        self.detector = Some(Kill(child));
    }

    /// A new vehicle process on the same ports, rings and latch, as systemd would restart it
    /// (the one before is stopped first, if it still runs).
    pub fn restart(&mut self) {
        self.process.terminate();
        self.process = Kill(self.setup.command().spawn().expect("start ads-vehicle"));
    }

    /// A clean stop: SIGTERM to the detector and the vehicle, each must exit successfully
    /// within [`DEADLINE`] and take its ring out of /dev/shm.
    pub fn stop(mut self) {
        if let Some(mut detector) = self.detector.take() {
            detector.signal(Signal::TERM);
            let status = detector.wait_exit("ads-detection after SIGTERM");
            assert!(status.success(), "ads-detection after SIGTERM: {status}");
            let ring = self.detections_ring();
            assert!(!ads_shmem_ipc::shm_path(&ring).exists(), "{ring} was not unlinked");
        }
        self.process.signal(Signal::TERM);
        let status = self.process.wait_exit("ads-vehicle after SIGTERM");
        assert!(status.success(), "ads-vehicle after SIGTERM: {status}");
        let ring = self.frames_ring();
        assert!(!ads_shmem_ipc::shm_path(&ring).exists(), "{ring} was not unlinked");
    }
}

/// A file removed when this is dropped.
#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A SUB socket on a test vehicle's `state` topic.
pub struct StateSubscriber {
    socket: zmq::Socket,
    _context: zmq::Context,
}

impl std::fmt::Debug for StateSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSubscriber").finish_non_exhaustive()
    }
}

impl StateSubscriber {
    pub fn connect(vehicle: &TestVehicle) -> Self {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::SUB).expect("a SUB socket");
        socket.set_subscribe(b"state").expect("subscribe");
        socket.set_rcvtimeo(1000).expect("receive timeout");
        socket.connect(&vehicle.endpoint()).expect("connect");
        Self { socket, _context: context }
    }

    /// The socket, for tests that read it their own way.
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// The next state `vehicle` sends; panics if it exits first or nothing comes within
    /// [`DEADLINE`].
    pub fn next(&self, vehicle: &mut TestVehicle) -> ads_protocol::VehicleState {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            assert!(std::time::Instant::now() < deadline, "no state from the vehicle");
            if let Ok(Some(status)) = vehicle.process.0.try_wait() {
                panic!("the vehicle exited: {status}");
            }
            let Ok(parts) = self.socket.recv_multipart(0) else { continue };
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            if let ads_protocol::Message::State(s) =
                ads_protocol::decode(&refs).expect("a valid message").message
            {
                return s;
            }
        }
    }
}
