//! The systemd deployment, as far as it can be checked without systemd as PID 1:
//! - `ads-vehicle` and `ads-detection`, started like systemd starts a `Type=notify` service
//!   with `WatchdogSec=` (`NOTIFY_SOCKET` naming a datagram socket this test binds,
//!   `WATCHDOG_USEC`), say `READY=1` once their ring exists and then `WATCHDOG=1` again and
//!   again from their main loop; a stopped process (SIGSTOP, i.e. hung) stops pinging, which is
//!   what makes systemd restart it.
//! - `scripts/install-vehicle.sh` into a temporary `DESTDIR`: files, modes, the `ads` user, the
//!   enable symlinks; `systemd-analyze verify` passes on the installed units.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_testkit::{bin, unique_name, Kill, VehicleBuilder, DEADLINE};
use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Short, so the test sees many pings quickly: the processes ping every quarter of it.
const WATCHDOG: Duration = Duration::from_millis(400);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn segment(ring: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/ads.{ring}"))
}

/// What systemd's end of `NOTIFY_SOCKET` is: a Unix datagram socket, one datagram per
/// `sd_notify` call, lines of `KEY=VALUE`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{name}.notify"));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        Self { socket, path }
    }

    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                None
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }

    /// The next datagram, failing the test after [`DEADLINE`].
    fn next(&self, what: &str) -> String {
        self.recv(DEADLINE).unwrap_or_else(|| panic!("no notification ({what}) within {DEADLINE:?}"))
    }

    /// Waits for `n` more `WATCHDOG=1` datagrams; any other datagram fails the test.
    fn expect_pings(&self, n: usize) {
        for _ in 0..n {
            let message = self.next("WATCHDOG=1");
            assert_eq!(message.trim_end(), "WATCHDOG=1", "expected a watchdog ping");
        }
    }

    fn drain(&self) -> usize {
        std::iter::from_fn(|| self.recv(Duration::from_millis(1))).count()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A child stopped like systemd stops a unit (SIGTERM, a grace period, SIGKILL), resumed
/// first if the test left it stopped, so nothing is left in /dev/shm.
struct Service(Kill);

impl Service {
    fn signal(&self, signal: rustix::process::Signal) {
        self.0.signal(signal);
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.0 .0.try_wait().unwrap() {
            panic!("the process exited: {status}");
        }
    }

    /// SIGSTOP, and wait until the kernel reports the process stopped (`T` in /proc).
    fn stop(&self) {
        self.signal(rustix::process::Signal::STOP);
        let stat_path = format!("/proc/{}/stat", self.0 .0.id());
        let deadline = Instant::now() + DEADLINE;
        loop {
            let stat = std::fs::read_to_string(&stat_path).unwrap();
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(')').unwrap().1.trim_start().chars().next();
            if state == Some('T') {
                return;
            }
            assert!(Instant::now() < deadline, "the process did not stop: {stat}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        self.0.terminate()
    }
}

/// The environment systemd gives a `Type=notify` service with `WatchdogSec=`.
fn under_systemd(command: &mut Command, notify: &NotifySocket, watchdog: Duration) {
    command
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
        // systemd sets it to the main pid; unset, the watchdog applies to whoever reads it.
        .env_remove("WATCHDOG_PID");
}

fn vehicle(test: &str) -> VehicleBuilder {
    VehicleBuilder::new(test).args(["--control", "truth"])
}

/// `READY=1` carries a status line; it must come first, before any ping.
fn expect_ready(notify: &NotifySocket, ring: &str) {
    let ready = notify.next("READY=1");
    let lines: Vec<&str> = ready.lines().collect();
    assert!(lines.contains(&"READY=1"), "the first notification is not READY=1: {ready:?}");
    assert!(lines.iter().any(|l| l.starts_with("STATUS=")), "READY=1 without a status: {ready:?}");
    assert!(segment(ring).exists(), "READY=1 came before {} existed", segment(ring).display());
}

/// Stopped, the process sends nothing for three whole watchdog periods (systemd would have
/// killed it after one); resumed, it pings again.
fn assert_pings_stop_while_stopped(service: &mut Service, notify: &NotifySocket) {
    service.stop();
    notify.drain();
    let silent_until = Instant::now() + 3 * WATCHDOG;
    while let Some(left) = silent_until.checked_duration_since(Instant::now()) {
        if let Some(message) = notify.recv(left) {
            panic!("a stopped process sent {message:?}");
        }
    }
    service.signal(rustix::process::Signal::CONT);
    notify.expect_pings(2);
    service.assert_running();
}

#[test]
fn vehicle_says_ready_once_its_ring_exists_and_pings_from_its_control_loop() {
    let car = vehicle("sdv");
    let frames = car.frames_ring();
    let notify = NotifySocket::bind(car.name());
    let mut command = car.command();
    under_systemd(&mut command, &notify, WATCHDOG);
    let mut service = Service(Kill(command.spawn().unwrap()));

    expect_ready(&notify, &frames);
    notify.expect_pings(5);
    service.assert_running();
    assert_pings_stop_while_stopped(&mut service, &notify);

    assert!(service.terminate().success(), "SIGTERM is a clean stop");
    assert!(!segment(&frames).exists(), "the ring is unlinked on a clean stop");
}

#[test]
fn detection_pings_while_it_waits_for_the_ring_and_while_it_reads_frames() {
    let car = vehicle("sdd");
    let (frames, detections) = (car.frames_ring(), car.detections_ring());
    let notify = NotifySocket::bind(car.name());
    let mut command = Command::new(bin("ads-detection"));
    command
        .args(["--method", "cv", "--frames-ring", &frames, "--detections-ring", &detections])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    under_systemd(&mut command, &notify, WATCHDOG);
    let mut child = command.spawn().unwrap();
    let log = log_lines(&mut child, "ads-detection");
    let mut detector = Service(Kill(child));

    // No vehicle yet: ready (its own ring exists) and alive while it waits.
    expect_ready(&notify, &detections);
    notify.expect_pings(5);
    assert!(!segment(&frames).exists());
    assert_pings_stop_while_stopped(&mut detector, &notify);

    // With frames to read, the pings come from the reading loop.
    let _vehicle = car.spawn();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log.recv_timeout(left).expect("ads-detection never logged \"reading frames\"");
        if line.contains("reading frames") {
            break;
        }
    }
    notify.drain();
    notify.expect_pings(5);
    assert_pings_stop_while_stopped(&mut detector, &notify);
    assert!(detector.terminate().success(), "SIGTERM is a clean stop");
}

#[test]
fn an_unreachable_notify_socket_does_not_stop_the_vehicle() {
    let car = vehicle("sdx");
    let frames = car.frames_ring();
    let missing = std::env::temp_dir().join(format!("{}-nobody-listens.notify", car.name()));
    let mut service = Service(Kill(
        car.command()
            .env("NOTIFY_SOCKET", &missing)
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
            .spawn()
            .unwrap(),
    ));
    let deadline = Instant::now() + DEADLINE;
    while !segment(&frames).exists() {
        service.assert_running();
        assert!(Instant::now() < deadline, "the vehicle never created its ring");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Several watchdog intervals of failed sends later, it is still driving.
    std::thread::sleep(2 * WATCHDOG);
    service.assert_running();
    assert!(service.terminate().success());
}

/// Lines of the child's stderr, echoed so a failing test shows them.
fn log_lines(child: &mut Child, role: &'static str) -> Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{role}] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

// --- install-vehicle.sh -------------------------------------------------------------------

struct TempRoot(PathBuf);

impl TempRoot {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{name}-root"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn join(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn install(root: &TempRoot, prefix: &str) -> std::process::Output {
    let bin_dir = bin("ads-vehicle").parent().unwrap().to_path_buf();
    let output = Command::new(repo_root().join("scripts/install-vehicle.sh"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--no-build")
        .env("DESTDIR", &root.0)
        .env("PREFIX", prefix)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "install-vehicle.sh failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode()
        & 0o7777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `systemd-analyze verify` on units in `root`, against the host's own systemd units (the same
/// systemd 252 as on a Debian 12 vehicle), with ExecStart= binaries looked up inside `root`.
fn verify(root: &TempRoot, units: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.0.display()))
        .args(units)
        .output()
        .expect("systemd-analyze is missing: scripts/setup.sh installs it (package systemd)")
}

#[test]
fn install_script_lays_out_a_vehicle_that_systemd_analyze_accepts() {
    let root = TempRoot::new(&unique_name("install"));
    // Not /usr/local: the prefix must reach the units' ExecStart=.
    install(&root, "/opt/ads");

    for b in ["ads-vehicle", "ads-detection", "ads-ring"] {
        assert_eq!(mode(&root.join(&format!("/opt/ads/bin/{b}"))), 0o755, "{b}");
    }
    let units = root.join("/etc/systemd/system");
    for unit in ["ads.target", "ads-vehicle.service", "ads-detection.service"] {
        assert_eq!(mode(&units.join(unit)), 0o644, "{unit}");
    }
    let vehicle_unit = read(&units.join("ads-vehicle.service"));
    assert!(vehicle_unit.contains("\nExecStart=/opt/ads/bin/ads-vehicle --config /etc/ads/vehicle.toml\n"));
    assert!(!vehicle_unit.contains("/usr/local/bin"), "the prefix was not applied everywhere");
    let detection_unit = read(&units.join("ads-detection.service"));
    assert!(
        detection_unit.contains("\nExecStart=/opt/ads/bin/ads-detection --config /etc/ads/detection.toml\n")
    );

    // Enabled: the target at boot, both services in it.
    for (link, target) in [
        ("multi-user.target.wants/ads.target", "/etc/systemd/system/ads.target"),
        ("ads.target.wants/ads-vehicle.service", "/etc/systemd/system/ads-vehicle.service"),
        ("ads.target.wants/ads-detection.service", "/etc/systemd/system/ads-detection.service"),
    ] {
        let link = units.join(link);
        assert_eq!(
            std::fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display())),
            Path::new(target)
        );
    }

    // Configs, readable by the service user; the model path points at the installed model.
    for config in ["vehicle.toml", "detection.toml"] {
        assert_eq!(mode(&root.join(&format!("/etc/ads/{config}"))), 0o644, "{config}");
    }
    let detection_config = read(&root.join("/etc/ads/detection.toml"));
    assert!(detection_config.contains("model = \"/opt/ads/share/ads/models/frozen_inference_graph.pb\""));
    assert_eq!(read(&root.join("/etc/ads/vehicle.toml")), read(&repo_root().join("configs/vehicle.toml")));

    // The ads user, in the video group (cameras).
    let passwd = read(&root.join("/etc/passwd"));
    assert!(passwd.lines().any(|l| l.starts_with("ads:")), "no ads user in {passwd}");
    let group = read(&root.join("/etc/group"));
    let video = group.lines().find(|l| l.starts_with("video:")).expect("no video group");
    assert!(video.rsplit(':').next().unwrap().split(',').any(|m| m == "ads"), "ads not in {video}");

    // A config the owner edited survives a re-install; the shipped one lands next to it.
    let vehicle_config = root.join("/etc/ads/vehicle.toml");
    std::fs::write(&vehicle_config, "vehicle_id = \"car-7\"\n").unwrap();
    install(&root, "/opt/ads");
    assert_eq!(read(&vehicle_config), "vehicle_id = \"car-7\"\n");
    assert_eq!(
        read(&root.join("/etc/ads/vehicle.toml.new")),
        read(&repo_root().join("configs/vehicle.toml"))
    );

    // systemd-analyze verify, with the standard units (sysinit.target, ...) of this machine.
    std::fs::create_dir_all(root.join("/usr/lib/systemd")).unwrap();
    let status = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(root.join("/usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(status.success());
    let all = ["ads.target", "ads-vehicle.service", "ads-detection.service"];
    let output = verify(&root, &all);
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");

    // ... and it does catch a broken install.
    std::fs::remove_file(root.join("/opt/ads/bin/ads-detection")).unwrap();
    let output = verify(&root, &all);
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "verify passed without the detection binary");
    assert!(complaints.contains("/opt/ads/bin/ads-detection"), "{complaints}");
}

/// `Key=value` settings of a unit file, in order, comments and sections dropped.
fn settings(unit: &str) -> Vec<(String, String)> {
    read(&repo_root().join("configs/systemd").join(unit))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn values(settings: &[(String, String)], key: &str) -> Vec<String> {
    settings.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
}

#[test]
fn the_units_share_dev_shm_and_the_detector_does_not_die_with_the_vehicle() {
    let vehicle = settings("ads-vehicle.service");
    let detection = settings("ads-detection.service");
    for (unit, s) in [("ads-vehicle", &vehicle), ("ads-detection", &detection)] {
        // A private /dev (PrivateDevices) has its own /dev/shm; DynamicUser and RemoveIPC delete
        // the user's segments when a unit stops: each would split or break the rings.
        for (key, forbidden) in [("PrivateDevices", "yes"), ("PrivateIPC", "yes"), ("DynamicUser", "yes")] {
            assert!(
                !values(s, key).iter().any(|v| v == forbidden || v == "true"),
                "{unit}: {key}={forbidden}"
            );
        }
        assert_eq!(values(s, "RemoveIPC"), ["no"], "{unit}");
        assert_eq!(values(s, "Type"), ["notify"], "{unit}");
        assert_eq!(values(s, "Restart"), ["on-failure"], "{unit}");
        assert_eq!(values(s, "SupplementaryGroups"), ["video"], "{unit}");
        assert_eq!(values(s, "WantedBy"), ["ads.target"], "{unit}");
        assert!(!values(s, "WatchdogSec").is_empty(), "{unit} has no watchdog");
    }
    assert_eq!(values(&vehicle, "User"), values(&detection, "User"), "the rings are files of one user");
    assert_eq!(values(&detection, "After"), ["ads-vehicle.service"]);
    assert_eq!(values(&detection, "Wants"), ["ads-vehicle.service"]);
    for binding in ["Requires", "BindsTo", "Requisite", "PartOf"] {
        assert!(
            !values(&detection, binding).iter().any(|v| v.contains("ads-vehicle")),
            "ads-detection must not stop or restart with ads-vehicle ({binding})"
        );
    }
}
