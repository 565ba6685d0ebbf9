//! A laptop that knows only the car's PUB endpoint: the vehicle runs in a "car" network
//! namespace on non-default ports, the clients in a "laptop" namespace joined to it by a veth
//! pair, actions signed under a key; `ads-record --vehicle tcp://CAR:PORT` and the Python
//! SDK's `VehicleClient("tcp://CAR:PORT")` find the video and action endpoints in the
//! vehicle's states (docs/protocol.md 1) with no other endpoint flag. Needs root and `ip
//! netns`; skipped with a printed reason elsewhere.

#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_testkit::{bin, TestVehicle};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CAR: &str = "10.201.0.1";
const LAPTOP: &str = "10.201.0.2";

fn ip(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("ip").args(args).output()
}

/// Two namespaces joined by a veth pair, deleted afterwards.
struct TwoHosts {
    car: String,
    laptop: String,
}

impl TwoHosts {
    fn new(tag: &str) -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: not root");
            return None;
        }
        let id = std::process::id();
        let hosts = Self { car: format!("ads-t{id}-{tag}-car"), laptop: format!("ads-t{id}-{tag}-lap") };
        for ns in [&hosts.car, &hosts.laptop] {
            match ip(&["netns", "add", ns]) {
                Ok(out) if out.status.success() => {}
                other => {
                    eprintln!("skipped: ip netns add failed: {other:?}");
                    return None;
                }
            }
        }
        let must = |args: &[&str]| {
            let out = ip(args).unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        must(&[
            "link",
            "add",
            "lap0",
            "netns",
            &hosts.laptop,
            "type",
            "veth",
            "peer",
            "name",
            "car0",
            "netns",
            &hosts.car,
        ]);
        for (ns, dev, address) in [(&hosts.car, "car0", CAR), (&hosts.laptop, "lap0", LAPTOP)] {
            must(&["-n", ns, "addr", "add", &format!("{address}/24"), "dev", dev]);
            must(&["-n", ns, "link", "set", dev, "up"]);
            must(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Some(hosts)
    }

    /// `program` run in the laptop's namespace.
    fn on_laptop(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.laptop]).arg(program);
        command
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.laptop]);
        let _ = ip(&["netns", "del", &self.car]);
    }
}

fn workdir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("discovery-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("action.key");
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    std::io::Write::write_all(&mut file, hex.as_bytes()).unwrap();
    path
}

/// The car: a simulator vehicle in the car's namespace on ports chosen here (none of them
/// the defaults), taking only signed actions.
fn car(hosts: &TwoHosts, test: &str, key: &Path) -> TestVehicle {
    TestVehicle::build(test)
        .wrapper(["ip", "netns", "exec", &hosts.car])
        .listen_host("*")
        .action_host("*")
        .arg("--action-key")
        .arg(key)
        .spawn()
}

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(root.join("scripts/python-env.sh")).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "scripts/python-env.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
}

#[test]
fn a_recorder_given_only_the_pub_endpoint_records_the_video() {
    let Some(hosts) = TwoHosts::new("rec") else { return };
    let dir = workdir("rec");
    let key = key_file(&dir);
    let vehicle = car(&hosts, "disc-rec", &key);
    assert!(![5557, 5558, 5559].contains(&vehicle.video_port()), "the test wants non-default ports");
    let output = dir.join("drive.mcap");
    let pub_endpoint = format!("tcp://{CAR}:{}", vehicle.pub_port());
    let out = hosts
        .on_laptop(&bin("ads-record"))
        .args(["--vehicle", &pub_endpoint, "--duration", "6", "-o"])
        .arg(&output)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "ads-record failed: {}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "stopped")
        .unwrap_or_else(|| panic!("no final report in {stdout}"));
    let progress = &report["report"]["progress"];
    let (messages, frames) = (progress["messages"].as_u64().unwrap(), progress["frames"].as_u64().unwrap());
    eprintln!("{report}");
    assert!(messages > frames, "nothing but frames recorded: {report}");
    // Without the video endpoint found in the states, a recorder gets no frames at all.
    assert!(frames > 0, "no frame recorded from the advertised video port: {report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_sdk_given_only_the_pub_endpoint_sends_signed_actions() {
    let Some(hosts) = TwoHosts::new("sdk") else { return };
    let dir = workdir("sdk");
    let key = key_file(&dir);
    let vehicle = car(&hosts, "disc-sdk", &key);
    let script = r#"
import json, sys
from ads.client import VehicleClient
with VehicleClient(sys.argv[1], vehicle=sys.argv[2], key_file=sys.argv[3]) as car:
    state = car.recv(timeout=20, topics=("state",))
    ack = car.send({"type": "pause"}, timeout=20)
    print(json.dumps({"actions": car.actions, "signed": state.body["commands"]["signed_actions"], "ack": ack}))
"#;
    let out = hosts
        .on_laptop(&python())
        .args(["-c", script, &format!("tcp://{CAR}:{}", vehicle.pub_port()), vehicle.vehicle_id()])
        .arg(&key)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "the SDK client failed: {}", String::from_utf8_lossy(&out.stdout));
    let result: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(result["actions"], format!("tcp://{CAR}:{}", vehicle.action_port()));
    assert_eq!(result["signed"], true);
    assert_eq!(result["ack"]["accepted"], true, "{result}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_readmes_viewer_command_finds_video_and_actions() {
    let Some(hosts) = TwoHosts::new("view") else { return };
    let dir = workdir("view");
    let key = key_file(&dir);
    let vehicle = car(&hosts, "disc-view", &key);
    // The README's laptop command as written, but for a car on non-default ports.
    let pub_endpoint = format!("tcp://{CAR}:{}", vehicle.pub_port());
    let viewer = hosts
        .on_laptop(&bin("ads-viewer"))
        .args(["--vehicle", &pub_endpoint, "--port", "8080", "--action-key"])
        .arg(&key)
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let _viewer = ads_testkit::Kill(viewer);
    // In the laptop's namespace: a snapshot (video from the advertised port) and an action
    // acknowledged by the vehicle (signed, to the advertised action port).
    let script = r#"
import json, time, urllib.request
deadline = time.monotonic() + 40
snapshot = None
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8080/snapshot.jpg", timeout=5) as r:
            body = r.read()
            if r.status == 200 and body[:2] == b"\xff\xd8":
                snapshot = len(body)
                break
    except Exception:
        pass
    time.sleep(0.2)
request = urllib.request.Request(
    "http://127.0.0.1:8080/api/action", data=json.dumps({"command": {"type": "pause"}}).encode(),
    headers={"Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(request, timeout=20) as r:
    ack = json.loads(r.read())
print(json.dumps({"snapshot_bytes": snapshot, "ack": ack}))
"#;
    let out = hosts.on_laptop(&python()).args(["-c", script]).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "the laptop's checks failed: {}", String::from_utf8_lossy(&out.stdout));
    let result: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    eprintln!("{result}");
    assert!(
        result["snapshot_bytes"].as_u64().unwrap_or(0) > 0,
        "no video through the found endpoint: {result}"
    );
    assert_eq!(result["ack"]["status"], "accepted", "the action was not taken: {result}");
    let _ = std::fs::remove_dir_all(&dir);
}
