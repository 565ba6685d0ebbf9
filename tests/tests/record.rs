//! ads-record against a real vehicle (and detector) on loopback, its files checked by an
//! independent reader: the Python `mcap` package (tests/python/check_recording.py).
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{decode, Message, VehicleState};
use ads_testkit::{bin, free_port, Kill, StateSubscriber, TestVehicle};
use serde_json::Value;
use std::ffi::OsStr;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Only keeps a broken test from hanging.
const DEADLINE: Duration = Duration::from_secs(120);

struct Drive {
    car: TestVehicle,
    endpoint: String,
    video: String,
    states: StateSubscriber,
}

impl Drive {
    fn start(test: &str) -> Self {
        let car = TestVehicle::build(test).args(["--control", "truth"]).detector().spawn();
        let (endpoint, video) = (car.endpoint(), car.video_endpoint());
        let states = StateSubscriber::connect(&car);
        Drive { car, endpoint, video, states }
    }

    fn state(&mut self) -> VehicleState {
        self.states.next(&mut self.car)
    }

    /// Waits until the vehicle has produced `frames` more frames than now.
    fn frames_advance(&mut self, frames: u64) -> VehicleState {
        let start = self.state().frame_id;
        loop {
            let s = self.state();
            if s.frame_id >= start + frames {
                return s;
            }
        }
    }
}

struct Recorder {
    process: Kill,
    lines: Receiver<Value>,
}

impl Recorder {
    fn start(command: &mut Command) -> Self {
        let mut child = command.env("RUST_LOG", "warn").stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Recorder { process: Kill(child), lines }
    }

    fn progress_where(&self, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("recorder output");
            if v["event"] == "progress" && accept(&v["progress"]) {
                return v["progress"].clone();
            }
        }
    }
}

fn record_command(vehicle: &str, video: &str, output: &Path) -> Command {
    let mut command = Command::new(bin("ads-record"));
    command.args(["--vehicle", vehicle, "--video", video, "-o"]).arg(output);
    command
}

fn workdir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("record-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(root.join("scripts/python-env.sh")).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "scripts/python-env.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
}

/// The independent reader's view of a recording.
fn check(file: &Path, extra: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/check_recording.py");
    let out =
        Command::new(python()).arg(script).arg(file).args(extra).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "check_recording.py failed on {}", file.display());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `@mcap/core`'s `McapIndexedReader` on a file (tests/node/mcap_check.js, its packages from
/// scripts/node-env.sh): messages per topic, or `None` when it cannot open the file.
fn mcap_core(file: &Path) -> Option<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let env = Command::new(root.join("scripts/node-env.sh")).stderr(Stdio::inherit()).output().unwrap();
    assert!(env.status.success(), "scripts/node-env.sh failed");
    let modules = String::from_utf8(env.stdout).unwrap().lines().last().unwrap().trim().to_string();
    let out = Command::new("node")
        .arg(root.join("tests/node/mcap_check.js"))
        .arg(file)
        .env("NODE_PATH", modules)
        .stderr(Stdio::inherit())
        .output()
        .expect("node (scripts/setup.sh installs it)");
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

#[test]
fn ten_seconds_of_the_simulator_read_back_by_an_independent_reader() {
    let mut drive = Drive::start("rec10");
    drive.frames_advance(10); // the detector is up and frames flow
    let dir = workdir("ten");
    let file = dir.join("drive.mcap");
    let mut recorder =
        Recorder::start(record_command(&drive.endpoint, &drive.video, &file).args(["--duration", "10"]));
    let status = recorder.process.wait_exit("ads-record");
    assert!(status.success(), "ads-record failed: {status}");

    let image = dir.join("first.jpg");
    let found = check(&file, &["--image-out", image.to_str().unwrap()]);
    let expected_schemas = [
        ("/camera/image", "foxglove.CompressedImage"),
        ("/frame", "ads.Frame"),
        ("/detection", "ads.Detections"),
        ("/detection/annotations", "foxglove.ImageAnnotations"),
        ("/state", "ads.VehicleState"),
        ("/event", "ads.Event"),
        ("/truth", "ads.LaneTruth"),
        ("/truth/annotations", "foxglove.ImageAnnotations"),
        ("/controls", "ads.Controls"),
    ];
    for (topic, schema) in expected_schemas {
        assert_eq!(found["summary_channels"][topic], schema, "{topic} in {found}");
    }
    for topic in ["/camera/image", "/frame", "/detection", "/detection/annotations", "/state", "/truth"] {
        assert_eq!(found["channels"][topic]["message_encoding"], "json");
        assert_eq!(found["counts"][topic], found["summary_counts"][topic], "{topic}: index and data agree");
    }
    let counts = &found["counts"];
    let frames = counts["/frame"].as_u64().unwrap();
    // 10 s at 30 fps; generous for a loaded machine, but frames did flow the whole time.
    assert!(frames >= 100, "only {frames} frames in 10 s");
    assert_eq!(counts["/camera/image"], counts["/frame"]);
    assert_eq!(counts["/detection/annotations"], counts["/detection"]);
    // A label per frame the vehicle produced (the recorder gets some frames, all labels).
    assert!(counts["/controls"].as_u64().unwrap() >= frames, "labels: {counts}");
    assert!(counts["/detection"].as_u64().unwrap() >= 50, "detections: {counts}");

    // Every frame the vehicle sent while recording is there: the wire sequence numbers run
    // without a gap, and gaps in frame ids are frames the vehicle counted as not broadcast.
    let seqs = u64s(&found["frame_seqs"]);
    assert_eq!(seqs.len() as u64, frames);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "frame sequence numbers with gaps: {seqs:?}");
    let ids = u64s(&found["frame_ids"]);
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "frame ids not increasing");
    let skipped: u64 = ids.windows(2).map(|w| w[1] - w[0] - 1).sum();
    let states = found["states"].as_array().unwrap();
    // Frames the vehicle did not capture into the ring (overrun, not broadcast), or that the
    // recorder's video session skipped (no credit yet: it takes them as fast as it credits).
    let drops = |s: &Value| {
        s["not_broadcast"].as_u64().unwrap()
            + s["overrun"].as_u64().unwrap()
            + s["link_skipped"].as_u64().unwrap()
    };
    let explained = drops(states.last().unwrap()) - drops(&states[0]);
    // A state and the frames around it interleave: allow the frames of one state interval.
    assert!(skipped <= explained + 10, "{skipped} frame ids missing, the vehicle dropped only {explained}");

    let jpeg = std::fs::read(&image).unwrap();
    let decoded = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).unwrap();
    assert_eq!((decoded.width, decoded.height), (800, 600));

    // Every image whole from the first: the recorder's session asks for the full picture
    // (`full_size`, docs/protocol.md 2.1), never a rate-adapted small tier; so the annotations,
    // drawn in the source's pixels, lie inside the image they annotate.
    eprintln!("{frames} frames, image sizes {}, annotations {}", found["image_sizes"], found["annotations"]);
    assert_eq!(found["image_sizes"], serde_json::json!({ "800x600": frames }), "{}", found["image_sizes"]);
    let annotations = &found["annotations"];
    assert!(annotations["checked"].as_u64().unwrap() >= 50, "{annotations}");
    assert_eq!(annotations["outside"], 0, "annotations outside their image: {annotations}");
}

#[test]
fn a_killed_recorder_leaves_a_file_readable_up_to_its_last_chunk() {
    let mut drive = Drive::start("reckill");
    drive.frames_advance(5);
    let dir = workdir("kill");
    let file = dir.join("killed.mcap");
    let mut recorder =
        Recorder::start(record_command(&drive.endpoint, &drive.video, &file).args(["--flush-ms", "200"]));
    let reported = recorder.progress_where(|p| p["frames"].as_u64().unwrap() >= 30);
    let reported_frames = reported["frames"].as_u64().unwrap();
    // Several flush intervals after the report, so those frames are in whole chunks.
    std::thread::sleep(Duration::from_secs(1));
    recorder.process.crash();

    let found = check(&file, &["--linear"]);
    let frames = found["counts"]["/camera/image"].as_u64().unwrap_or(0);
    assert!(
        frames >= reported_frames,
        "{frames} frames readable, {reported_frames} were recorded a second before the kill"
    );
    assert!(found["truncated"].is_string(), "a killed recorder wrote no footer: {found}");

    // A new recorder on the same file refuses to overwrite it, and says how to recover it.
    let before = std::fs::read(&file).unwrap();
    let again = record_command(&drive.endpoint, &drive.video, &file)
        .args(["--duration", "2"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "ads-record overwrote an unfinished recording: {said}");
    assert!(said.contains(&format!("ads-record --recover {}", file.display())), "{said}");
    assert!(std::fs::read(&file).unwrap() == before, "the unfinished recording was changed");
    // The indexed readers cannot open it yet.
    assert!(mcap_core(&file).is_none(), "@mcap/core's indexed reader opened a file without its summary");

    let recovered = dir.join("recovered.mcap");
    let status = Command::new(bin("ads-record"))
        .arg("--recover")
        .arg(&file)
        .arg("-o")
        .arg(&recovered)
        .status()
        .unwrap();
    assert!(status.success());
    let complete = check(&recovered, &[]);
    assert!(complete["counts"]["/camera/image"].as_u64().unwrap() >= frames);
    assert_eq!(complete["summary_counts"]["/frame"], complete["counts"]["/frame"]);

    // The command the refusal named: recovery in place. Then both indexed readers open it:
    // Python mcap's make_reader (check) and @mcap/core's McapIndexedReader, CRCs checked.
    let status = Command::new(bin("ads-record")).arg("--recover").arg(&file).status().unwrap();
    assert!(status.success());
    let in_place = check(&file, &[]);
    assert_eq!(in_place["counts"], complete["counts"]);
    let indexed = mcap_core(&file).expect("@mcap/core's indexed reader opens the recovered file");
    assert_eq!(indexed["topics"], in_place["counts"], "both readers read the same messages");
}

#[test]
fn a_full_disk_stops_the_recorder_with_a_clear_error_and_the_vehicle_drives_on() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: mounting a small tmpfs (in a private mount namespace) needs root");
        return;
    }
    if Command::new("unshare").arg("--version").stdout(Stdio::null()).status().is_err() {
        println!("skipped: unshare(1) is not installed (util-linux)");
        return;
    }
    let mut drive = Drive::start("recfull");
    drive.frames_advance(5);
    let dir = workdir("full");
    let mount = dir.join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let kept = dir.join("kept.mcap");
    // The tmpfs exists only in the recorder's own mount namespace: the host sees an empty dir.
    // The recording is copied out before the namespace goes.
    let script = r#"mount -t tmpfs -o size=3m ads-record-test "$1" && "$2" --vehicle "$3" -o "$1/full.mcap" --flush-ms 200; rc=$?; cp "$1/full.mcap" "$4"; exit $rc"#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&mount)
        .arg(bin("ads-record"))
        .arg(&drive.endpoint)
        .arg(&kept)
        .env("ADS_RECORD_VIDEO", &drive.video)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "ads-record should fail: {stderr}");
    assert!(stderr.contains("the disk is full"), "unclear error: {stderr}");
    assert!(stderr.contains("full.mcap"), "the error names no file: {stderr}");

    // The vehicle never noticed: still running, still producing frames.
    let after = drive.frames_advance(30);
    assert!(after.fps > 0.0);
    // What fitted is readable.
    let found = check(&kept, &["--linear"]);
    assert!(found["counts"]["/camera/image"].as_u64().unwrap_or(0) >= 10, "{found}");
}

/// `ads-vehicle --source recording` with a detector (configured by `detector_config`, if any)
/// and a recorder: the replay's detections, recorded.
fn replay_through_the_detector(test: &str, baseline: &Path, detector_config: Option<&Path>, output: &Path) {
    let config: Vec<&OsStr> =
        detector_config.into_iter().flat_map(|c| [OsStr::new("--config"), c.as_os_str()]).collect();
    let setup = TestVehicle::build(test)
        .args(["--source", "recording", "--control", "detections", "--path"])
        .arg(baseline)
        .detector_args(config);
    let (endpoint, video) = (setup.endpoint(), setup.video_endpoint());
    // The recorder first, so it hears the replay from its first frame.
    let mut recorder = Recorder::start(record_command(&endpoint, &video, output).args(["--duration", "9"]));
    let _vehicle = setup.spawn();
    assert!(recorder.process.wait_exit("ads-record").success());
}

fn compare(baseline: &Path, candidate: &Path) -> (bool, String) {
    let out = Command::new(bin("ads-record")).arg("compare").arg(baseline).arg(candidate).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn a_recorded_drive_through_the_detector_again_passes_unchanged_and_fails_perturbed() {
    let dir = workdir("replay");
    let baseline = dir.join("baseline.mcap");
    {
        let mut drive = Drive::start("recbase");
        drive.frames_advance(10);
        let mut recorder = Recorder::start(
            record_command(&drive.endpoint, &drive.video, &baseline).args(["--duration", "5"]),
        );
        assert!(recorder.process.wait_exit("ads-record").success());
    }

    let unchanged = dir.join("unchanged.mcap");
    replay_through_the_detector("recsame", &baseline, None, &unchanged);
    let (pass, text) = compare(&baseline, &unchanged);
    assert!(pass, "an unchanged detector should pass: {text}");
    assert!(text.contains("PASS"), "{text}");

    // The lane centre moved by 4 warped pixels (0.2 m): every offset shifts.
    let perturbed_config = dir.join("perturbed.toml");
    std::fs::write(&perturbed_config, "[lanes]\ncentre_col = 203.5\n").unwrap();
    let perturbed = dir.join("perturbed.mcap");
    replay_through_the_detector("recpert", &baseline, Some(&perturbed_config), &perturbed);
    let (pass, text) = compare(&baseline, &perturbed);
    assert!(!pass, "a perturbed detector should fail: {text}");
    assert!(text.contains("FAIL") && text.contains("lane offset differs"), "{text}");
}

/// A viewer's side of a replay: everything it publishes, and actions to it.
struct ReplayClient {
    sub: zmq::Socket,
    /// A video session (docs/protocol.md 2.1): hello every second, a credit per frame.
    video: zmq::Socket,
    last_hello: std::cell::Cell<Option<Instant>>,
    actions: zmq::Socket,
    seq: u64,
    /// The replay's run id and run clock from its newest state, and when it was heard.
    run: std::cell::RefCell<Option<(String, u64, Instant)>>,
    /// Signs actions when set (a replay started with --action-key).
    key: Option<ads_protocol::ActionKey>,
    _context: zmq::Context,
}

enum Heard {
    Frame(u64),
    State(Box<VehicleState>),
    Ack { id: String, accepted: bool, reason: Option<ads_protocol::RejectReason> },
    Other,
}

impl ReplayClient {
    fn connect(broadcast: &str, video: &str, actions: &str) -> Self {
        let context = zmq::Context::new();
        let sub = context.socket(zmq::SUB).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.connect(broadcast).unwrap();
        let dealer = context.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        dealer.connect(video).unwrap();
        let publisher = context.socket(zmq::PUB).unwrap();
        publisher.connect(actions).unwrap();
        let last_hello = std::cell::Cell::new(None);
        ReplayClient {
            sub,
            video: dealer,
            last_hello,
            actions: publisher,
            seq: 0,
            run: std::cell::RefCell::new(None),
            key: None,
            _context: context,
        }
    }

    fn hear(&self) -> Option<Heard> {
        if self.last_hello.get().is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1)) {
            self.last_hello.set(Some(Instant::now()));
            let hello = ads_protocol::VideoRequest::Hello(ads_protocol::VideoHello {
                codec: ads_protocol::CODEC_JPEG.into(),
                codecs: Vec::new(),
                max_kbps: None,
                full_size: false,
            });
            self.video.send_multipart(ads_protocol::encode_video_request("*", 0, 0, &hello), 0).unwrap();
        }
        let mut items = [self.sub.as_poll_item(zmq::POLLIN), self.video.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, 200).ok()?;
        let parts = match self.video.recv_multipart(zmq::DONTWAIT) {
            Ok(parts) => parts,
            Err(_) => self.sub.recv_multipart(zmq::DONTWAIT).ok()?,
        };
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Some(match decode(&refs).unwrap().message {
            Message::Frame(info) => {
                let credit = ads_protocol::VideoRequest::Credit(ads_protocol::Credit {
                    frame_id: info.frame_id,
                    bytes: refs.get(2).map_or(0, |p| p.len()) as u32,
                });
                self.video.send_multipart(ads_protocol::encode_video_request("*", 0, 0, &credit), 0).unwrap();
                Heard::Frame(info.frame_id)
            }
            Message::State(s) => {
                *self.run.borrow_mut() = Some((s.commands.run_id.clone(), s.commands.run_ns, Instant::now()));
                Heard::State(Box::new(s))
            }
            Message::Event(ads_protocol::Event::Ack { action_id, accepted, reason, .. }) => {
                Heard::Ack { id: action_id, accepted, reason }
            }
            _ => Heard::Other,
        })
    }

    fn frames(&self, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + DEADLINE;
        let mut ids = Vec::new();
        while ids.len() < n {
            assert!(Instant::now() < deadline, "only {} frames from the replay", ids.len());
            if let Some(Heard::Frame(id)) = self.hear() {
                ids.push(id);
            }
        }
        ids
    }

    /// The run stamp a viewer would give an action now: the replay's run, 30 s ahead.
    fn run_stamp(&self) -> ads_protocol::ActionRun {
        let deadline = Instant::now() + DEADLINE;
        while self.run.borrow().is_none() {
            assert!(Instant::now() < deadline, "no state from the replay");
            self.hear();
        }
        let (run_id, run_ns, heard) = self.run.borrow().clone().unwrap();
        let now = run_ns + heard.elapsed().as_nanos() as u64;
        ads_protocol::ActionRun { run_id, expires_run_ns: now + 30_000_000_000 }
    }

    /// Sends `command` until acknowledged (as the viewer retransmits); frames heard on the way
    /// come back too.
    fn act(&mut self, command: ads_protocol::Command) -> (bool, Vec<u64>) {
        let key = self.key.clone();
        let (accepted, _, frames) = self.act_signed(command, key.as_ref());
        (accepted, frames)
    }

    /// As [`ReplayClient::act`], signed with `key`; also the rejection's reason.
    fn act_signed(
        &mut self,
        command: ads_protocol::Command,
        key: Option<&ads_protocol::ActionKey>,
    ) -> (bool, Option<ads_protocol::RejectReason>, Vec<u64>) {
        self.seq += 1;
        let now = ads_shmem_ipc::clock::wall_ns();
        let action = ads_protocol::Action {
            id: format!("test-{}", self.seq),
            sender: "record-test".into(),
            run: self.run_stamp(),
            command,
        };
        let parts = ads_protocol::encode_action("replay", self.seq, now, &action, key);
        let deadline = Instant::now() + DEADLINE;
        let mut frames = Vec::new();
        let mut sent = Instant::now() - Duration::from_secs(1);
        loop {
            assert!(Instant::now() < deadline, "no acknowledgement of {}", action.id);
            if sent.elapsed() >= Duration::from_millis(300) {
                self.actions.send_multipart(&parts, 0).unwrap();
                sent = Instant::now();
            }
            match self.hear() {
                Some(Heard::Ack { id, accepted, reason }) if id == action.id => {
                    return (accepted, reason, frames)
                }
                Some(Heard::Frame(id)) => frames.push(id),
                _ => {}
            }
        }
    }
}

fn record_seconds(name: &str, file: &Path, seconds: &str) {
    let mut drive = Drive::start(name);
    drive.frames_advance(5);
    let mut recorder =
        Recorder::start(record_command(&drive.endpoint, &drive.video, file).args(["--duration", seconds]));
    assert!(recorder.process.wait_exit("ads-record").success());
}

#[test]
fn a_replay_looks_live_to_a_viewer_and_obeys_pause_resume_and_seek() {
    let dir = workdir("play");
    let file = dir.join("drive.mcap");
    record_seconds("recplay", &file, "4");
    let recorded = u64s(&check(&file, &[])["frame_ids"]);
    let position = |id: u64| {
        recorded.iter().position(|&r| r == id).unwrap_or_else(|| panic!("frame {id} was not recorded"))
    };

    let (broadcast, actions) =
        (format!("tcp://127.0.0.1:{}", free_port()), format!("tcp://127.0.0.1:{}", free_port()));
    let video = format!("tcp://127.0.0.1:{}", free_port());
    let mut client = ReplayClient::connect(&broadcast, &video, &actions);
    let _replay = Kill(
        Command::new(bin("ads-replay"))
            .arg(&file)
            .args(["--broadcast", &broadcast, "--video-endpoint", &video, "--actions", &actions])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    // The recorded frames, in their recorded order with their recorded ids.
    let heard = client.frames(20);
    let start = position(heard[0]);
    assert_eq!(heard, recorded[start..start + heard.len()], "frames out of recorded order");

    let (accepted, _) = client.act(ads_protocol::Command::Pause);
    assert!(accepted);
    // Frames and acknowledgements travel on different sockets: the one frame the session's
    // credit allowed may still have been on its way when the pause was carried out.
    let until = Instant::now() + Duration::from_millis(1500);
    let (mut paused_states, mut late_frames) = (0, Vec::new());
    while Instant::now() < until {
        match client.hear() {
            Some(Heard::Frame(id)) => late_frames.push(id),
            Some(Heard::State(s)) => paused_states += usize::from(s.paused),
            _ => {}
        }
    }
    assert!(late_frames.len() <= 1, "frames {late_frames:?} after the pause was acknowledged");
    assert!(paused_states >= 2, "a paused replay keeps sending state, paused");

    let (accepted, _) = client.act(ads_protocol::Command::Resume);
    assert!(accepted);
    let resumed = client.frames(3);
    assert!(position(resumed[0]) > start, "resumed where it paused");

    // respawn = seek: to the start.
    let (accepted, before) = client.act(ads_protocol::Command::Respawn { spawn_point: None });
    assert!(accepted);
    // Frames and the acknowledgement travel on different sockets: the first frame after the
    // seek may come before the ack, and one from before it may still come after.
    let mut heard = before;
    heard.extend(client.frames(2));
    let at = heard.iter().position(|&id| id == recorded[0]);
    let at = at.unwrap_or_else(|| panic!("seek to the start did not play the first frame: heard {heard:?}"));
    assert_eq!(heard[at..], recorded[..heard.len() - at], "after the seek, the recorded order: {heard:?}");
    // Beyond the end: rejected with a reason.
    let (accepted, _) = client.act(ads_protocol::Command::Respawn { spawn_point: Some(3600) });
    assert!(!accepted);
}

#[test]
fn a_replay_of_a_truncated_file_plays_what_it_holds_and_a_foreign_file_is_refused() {
    let dir = workdir("bad");
    let file = dir.join("drive.mcap");
    record_seconds("recbad", &file, "2");
    let bytes = std::fs::read(&file).unwrap();
    let truncated = dir.join("truncated.mcap");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let foreign = dir.join("foreign.mcap");
    std::fs::write(&foreign, b"this is a video, honest\n").unwrap();

    let out = Command::new(bin("ads-replay")).arg(&foreign).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("is not an MCAP file"), "{stderr}");

    let (broadcast, actions) =
        (format!("tcp://127.0.0.1:{}", free_port()), format!("tcp://127.0.0.1:{}", free_port()));
    let video = format!("tcp://127.0.0.1:{}", free_port());
    let client = ReplayClient::connect(&broadcast, &video, &actions);
    let replay = Command::new(bin("ads-replay"))
        .arg(&truncated)
        .args(["--broadcast", &broadcast, "--video-endpoint", &video, "--actions", &actions])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut replay = Kill(replay);
    let mut warning = String::new();
    std::io::BufReader::new(replay.0.stderr.take().unwrap()).read_line(&mut warning).unwrap();
    assert!(warning.contains("truncated"), "{warning}");
    assert_eq!(client.frames(10).len(), 10);
}

#[test]
fn a_replay_says_it_is_one_and_takes_actions_only_under_its_key_and_run() {
    let dir = workdir("honest");
    let file = dir.join("drive.mcap");
    let mut drive = Drive::start("rechonest");
    let recorded_run = drive.frames_advance(5).commands.run_id;
    let mut recorder =
        Recorder::start(record_command(&drive.endpoint, &drive.video, &file).args(["--duration", "2"]));
    assert!(recorder.process.wait_exit("ads-record").success());
    drop(drive);
    let key_file = dir.join("action.key");
    let key = ads_protocol::ActionKey::from_bytes(&[0x42; 32]).unwrap();
    std::fs::write(&key_file, format!("{}\n", key.to_hex())).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (broadcast, actions) =
        (format!("tcp://127.0.0.1:{}", free_port()), format!("tcp://127.0.0.1:{}", free_port()));
    let video = format!("tcp://127.0.0.1:{}", free_port());
    let mut client = ReplayClient::connect(&broadcast, &video, &actions);
    let _replay = Kill(
        Command::new(bin("ads-replay"))
            .arg(&file)
            .args(["--broadcast", &broadcast, "--video-endpoint", &video, "--actions", &actions])
            .arg("--action-key")
            .arg(&key_file)
            .args(["--loop"])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    // Every state says it is a replay, under a run id of its own (not the recorded car's).
    for _ in 0..10 {
        let state = loop {
            if let Some(Heard::State(s)) = client.hear() {
                break s;
            }
        };
        assert_eq!(state.source, "replay", "{state:?}");
        assert_ne!(state.commands.run_id, recorded_run, "the recorded car's run id");
    }
    // A bad MAC, and no MAC, are refused; the key's MAC is taken.
    let wrong = ads_protocol::ActionKey::from_bytes(&[0x43; 32]).unwrap();
    let (accepted, reason, _) = client.act_signed(ads_protocol::Command::EmergencyStop, Some(&wrong));
    assert_eq!((accepted, reason), (false, Some(ads_protocol::RejectReason::BadMac)));
    let (accepted, reason, _) = client.act_signed(ads_protocol::Command::Pause, None);
    assert_eq!((accepted, reason), (false, Some(ads_protocol::RejectReason::Unauthenticated)));
    let (accepted, reason, _) = client.act_signed(ads_protocol::Command::Pause, Some(&key));
    assert!(accepted, "{reason:?}");
}
