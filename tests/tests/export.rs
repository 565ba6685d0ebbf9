//! Drives as training data, end to end: ads-vehicle on the simulator driven by hand (ZeroMQ
//! `set_drive_mode manual` and `drive` actions at 25 Hz, the way the viewer sends them),
//! recorded by ads-record, exported as a Donkey Car tub and as CSV; the tub opened by the
//! `donkeycar` package's own `Tub` reader (tests/python/check_tub.py), the recording read
//! into numpy by python/examples/drive_to_numpy.py; every label checked against what was sent.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{
    decode, encode, Action, ActionRun, Command, DriveMode, Event, Message, PilotMode, VehicleState,
};
use ads_shmem_ipc::clock;
use ads_testkit::{bin, Kill, TestVehicle, DEADLINE};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn workdir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("export-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The venv's python (scripts/python-env.sh: mcap, numpy, Pillow, donkeycar).
fn python() -> PathBuf {
    let out = Process::new(root().join("scripts/python-env.sh")).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "scripts/python-env.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
}

/// An operator at a keyboard: actions to the vehicle, and what it says back.
struct Operator {
    car: TestVehicle,
    actions: zmq::Socket,
    incoming: Receiver<Message>,
    /// The newest state's run id and run clock, and when it was heard.
    run: (String, u64, Instant),
    seq: u64,
    /// Every drive command sent: sequence number → (steering, throttle).
    sent: HashMap<u64, (f64, f64)>,
    _context: zmq::Context,
}

const SENDER: &str = "export-test";

impl Operator {
    fn connect(car: TestVehicle) -> Self {
        let context = zmq::Context::new();
        let sub = context.socket(zmq::SUB).unwrap();
        sub.set_subscribe(b"state").unwrap();
        sub.set_subscribe(b"event").unwrap();
        sub.connect(&car.endpoint()).unwrap();
        let actions = context.socket(zmq::PUB).unwrap();
        actions.set_linger(0).unwrap();
        actions.connect(&car.action_endpoint()).unwrap();
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || loop {
            let Ok(parts) = sub.recv_multipart(0) else { return };
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let wire = decode(&refs).expect("the vehicle only sends valid messages");
            if tx.send(wire.message).is_err() {
                return;
            }
        });
        let mut operator = Self {
            car,
            actions,
            incoming,
            run: (String::new(), 0, Instant::now()),
            seq: 0,
            sent: HashMap::new(),
            _context: context,
        };
        operator.state_where("a first state", |_| true);
        operator
    }

    fn next_message(&mut self, deadline: Instant) -> Option<Message> {
        if let Ok(Some(status)) = self.car.process.0.try_wait() {
            panic!("ads-vehicle exited: {status}");
        }
        let slice = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
        let message = self.incoming.recv_timeout(slice).ok()?;
        if let Message::State(s) = &message {
            self.run = (s.commands.run_id.clone(), s.commands.run_ns, Instant::now());
        }
        Some(message)
    }

    fn state_where(&mut self, what: &str, accept: impl Fn(&VehicleState) -> bool) -> VehicleState {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no {what} within {DEADLINE:?}");
            if let Some(Message::State(s)) = self.next_message(deadline) {
                if accept(&s) {
                    return s;
                }
            }
        }
    }

    fn send(&mut self, command: Command) -> String {
        self.seq += 1;
        let id = format!("{SENDER}-{}", self.seq);
        let now_run = self.run.1 + self.run.2.elapsed().as_nanos() as u64;
        let action = Action {
            id: id.clone(),
            sender: SENDER.into(),
            command,
            run: ActionRun { run_id: self.run.0.clone(), expires_run_ns: now_run + 5_000_000_000 },
        };
        let now = clock::wall_ns();
        let envelope = encode(self.car.vehicle_id(), self.seq, now, now, &Message::Action(action));
        self.actions.send_multipart([&b"action"[..], &envelope], 0).unwrap();
        id
    }

    /// Sends `command` until it is acknowledged; asserts it was accepted.
    fn act(&mut self, command: Command) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no acknowledgement for {command:?}");
            let id = self.send(command.clone());
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                if let Some(Message::Event(Event::Ack { action_id, accepted, detail, .. })) =
                    self.next_message(until)
                {
                    if action_id == id {
                        assert!(accepted, "{command:?} refused: {detail}");
                        return;
                    }
                }
            }
        }
    }

    /// One drive command (never acknowledged); remembered for checking the labels.
    fn drive(&mut self, steering: f64, throttle: f64) {
        let command = Command::Drive { steering, throttle, lease_ms: 300, issued_ns: clock::wall_ns() };
        self.send(command);
        self.sent.insert(self.seq, (steering, throttle));
        // Keep the run clock fresh and the queue short.
        while let Ok(message) = self.incoming.try_recv() {
            if let Message::State(s) = &message {
                self.run = (s.commands.run_id.clone(), s.commands.run_ns, Instant::now());
            }
        }
    }
}

/// ads-record, its JSON lines read on a thread.
struct Recorder {
    process: Kill,
    lines: Receiver<Value>,
}

impl Recorder {
    fn start(car: &TestVehicle, output: &Path) -> Self {
        let mut child = Process::new(bin("ads-record"))
            .args(["--vehicle", &car.endpoint(), "--video", &car.video_endpoint(), "-o"])
            .arg(output)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
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

    /// Waits until the recorder has written frames.
    fn recording(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("progress");
            if v["event"] == "progress" && v["progress"]["frames"].as_u64().unwrap_or(0) > 0 {
                return;
            }
        }
    }
}

fn export(format: &str, out: &Path, recording: &Path, extra: &[&str]) -> Value {
    let output = Process::new(bin("ads-record"))
        .args(["export", "--format", format, "--out"])
        .arg(out)
        .args(extra)
        .arg(recording)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "ads-record export --format {format} failed");
    let line: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["event"], "exported");
    line["report"].clone()
}

/// A row of labels.csv.
#[derive(Debug, Clone)]
struct Row {
    frame_id: u64,
    image: String,
    steering: f64,
    throttle: f64,
    label: String,
    pilot: String,
    commanded_steering: f64,
    operator_seq: Option<u64>,
    operator: Option<(f64, f64)>,
}

fn read_csv(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col =
        |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (frame_id, image, steering, throttle, label, pilot) =
        (col("frame_id"), col("image"), col("steering"), col("throttle"), col("label"), col("pilot"));
    let commanded = col("commanded_steering");
    let (op_seq, op_steering, op_throttle) =
        (col("operator_seq"), col("operator_steering"), col("operator_throttle"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), header.len(), "{line}");
            Row {
                frame_id: f[frame_id].parse().unwrap(),
                image: f[image].to_string(),
                steering: f[steering].parse().unwrap(),
                throttle: f[throttle].parse().unwrap(),
                label: f[label].to_string(),
                pilot: f[pilot].to_string(),
                commanded_steering: f[commanded].parse().unwrap(),
                operator_seq: f[op_seq].parse().ok(),
                operator: f[op_steering].parse().ok().zip(f[op_throttle].parse().ok()),
            }
        })
        .collect()
}

/// What donkeycar's reader found in the tub (tests/python/check_tub.py), or its error text.
fn read_tub(python: &Path, tub: &Path) -> Result<Value, String> {
    let out = Process::new(python).arg(root().join("tests/python/check_tub.py")).arg(tub).output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        // The end of the traceback (donkeycar's banner and logs come before it).
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        Err(lines[lines.len().saturating_sub(6)..].join("\n"))
    }
}

/// The tub's records against the CSV export of the same drive: the same frames in the same
/// order, Donkey's angle our steering negated (Donkey: −1 = full left), the same throttle.
fn tub_agrees_with_csv(records: &[Value], rows: &[Row]) -> Result<(), String> {
    if records.len() != rows.len() {
        return Err(format!("{} tub records, {} CSV rows", records.len(), rows.len()));
    }
    for (i, (record, row)) in records.iter().zip(rows).enumerate() {
        let angle = record["user/angle"].as_f64().unwrap();
        let throttle = record["user/throttle"].as_f64().unwrap();
        let mode = match row.pilot.as_str() {
            "manual" => "user",
            "assist" => "local_angle",
            _ => "local",
        };
        let checks = [
            (record["_index"].as_u64() == Some(i as u64), "_index"),
            (record["ads/frame_id"].as_u64() == Some(row.frame_id), "ads/frame_id"),
            (angle == -row.steering, "user/angle = -steering"),
            (throttle == row.throttle, "user/throttle"),
            (record["user/mode"] == mode, "user/mode"),
            (record["cam/image_array"] == format!("{i}_cam_image_array_.jpg"), "cam/image_array"),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(format!("record {i}: {what} differs: {record} vs {row:?}"));
        }
    }
    Ok(())
}

#[test]
fn a_manual_drive_exports_as_a_donkey_tub_donkeycar_reads_and_as_csv_and_numpy() {
    let dir = workdir("manual");
    let recording = dir.join("manual.mcap");
    // Donkey's own camera size: 160x120.
    let car = TestVehicle::build("export").args(["--control", "truth", "--resolution", "160x120"]).spawn();
    let mut operator = Operator::connect(car);
    operator.state_where("driving", |s| s.mode == DriveMode::Driving);
    let mut recorder = Recorder::start(&operator.car, &recording);
    recorder.recording();

    operator.act(Command::SetDriveMode { mode: PilotMode::Manual });
    let s = operator.state_where("manual mode", |s| s.teleop.pilot == PilotMode::Manual);
    if s.paused || s.mode == DriveMode::Stopped {
        operator.act(Command::Resume);
    }
    // Left, right, gently left, gently right, straight: ~1 s each at 25 Hz, the throttle
    // varying too, so every label is tied to the command that made it.
    let pattern = [(0.6, 0.35), (-0.6, 0.3), (0.25, 0.4), (-0.25, 0.3), (0.0, 0.25)];
    for (phase, (steering, throttle)) in pattern.into_iter().enumerate() {
        for tick in 0..25 {
            // A distinct throttle per command: the label names the very command in force.
            operator.drive(steering, throttle + f64::from(tick) * 1e-3 + phase as f64 * 1e-4);
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    let moved = operator.state_where("a state after driving", |_| true);
    assert!(moved.teleop.taken > 0, "no drive command taken: {:?}", moved.teleop);
    // Assist: the loop steers (truth keeps the lane), the operator's throttle sets the pace;
    // their full right lock is not the label.
    operator.act(Command::SetDriveMode { mode: PilotMode::Assist });
    for tick in 0..30 {
        operator.drive(-1.0, 0.3 + f64::from(tick) * 1e-3);
        std::thread::sleep(Duration::from_millis(40));
    }
    // The lease runs out: the car brakes on its own (frames labelled with the brake).
    operator.state_where("the lease lapsed", |s| !s.teleop.live);
    std::thread::sleep(Duration::from_millis(300));
    let status = recorder.process.terminate();
    assert!(status.success(), "ads-recorder ended with {status}");

    let tub = dir.join("tub");
    let donkey = export("donkey", &tub, &recording, &[]);
    let csv_dir = dir.join("csv");
    let csv = export("csv", &csv_dir, &recording, &[]);
    eprintln!("donkey export: {donkey}\ncsv export: {csv}");
    let count = |v: &Value, key: &str| v[key].as_u64().unwrap();
    assert_eq!(donkey, csv, "both formats pair the same frames");
    assert_eq!(
        count(&csv, "exported")
            + count(&csv, "unlabelled")
            + count(&csv, "ambiguous")
            + count(&csv, "not_jpeg"),
        count(&csv, "frames"),
        "every frame accounted for: {csv}"
    );
    assert_eq!(count(&csv, "ambiguous"), 0);
    assert_eq!(count(&csv, "not_jpeg"), 0);
    assert_eq!(
        count(&csv, "operator_labels") + count(&csv, "assist_labels") + count(&csv, "commanded_labels"),
        count(&csv, "exported")
    );
    assert!(count(&csv, "assist_labels") >= 5, "{csv}");
    // A frame goes unlabelled only at the recording's edges (its controls sent before the
    // recorder's subscription was up, or after it stopped); a drive of 5 s has 150 frames.
    assert!(count(&csv, "unlabelled") * 10 < count(&csv, "frames"), "{csv}");
    assert!(count(&csv, "operator_labels") >= 20, "{csv}");
    assert!(count(&csv, "commanded_labels") >= 1, "the autopilot and brake frames around the drive: {csv}");

    // The CSV: every image decodes; every operator label is the command of that sequence
    // number as sent, in ads conventions (+ = left).
    let rows = read_csv(&csv_dir.join("labels.csv"));
    assert_eq!(rows.len() as u64, count(&csv, "exported"));
    assert!(rows.windows(2).all(|w| w[1].frame_id > w[0].frame_id), "frames in order");
    for row in &rows {
        let jpeg = std::fs::read(csv_dir.join(&row.image)).unwrap();
        let image = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).unwrap();
        assert_eq!((image.width, image.height), (160, 120), "{}", row.image);
    }
    let mut steerings = BTreeSet::new();
    for row in rows.iter().filter(|r| r.label == "operator") {
        assert_eq!(row.pilot, "manual");
        let seq = row.operator_seq.unwrap();
        let sent = operator.sent.get(&seq).unwrap_or_else(|| panic!("label from an unknown command {seq}"));
        assert_eq!(
            (row.steering, row.throttle),
            *sent,
            "frame {}: the label is not command {seq}",
            row.frame_id
        );
        assert_eq!(row.operator, Some(*sent));
        steerings.insert((row.steering * 100.0).round() as i64);
    }
    for row in rows.iter().filter(|r| r.label == "assist") {
        assert_eq!(row.pilot, "assist");
        let sent = operator.sent[&row.operator_seq.unwrap()];
        assert_eq!((row.steering, row.throttle), (row.commanded_steering, sent.1), "frame {}", row.frame_id);
        assert_ne!(row.steering, -1.0, "assist labelled with the operator's ignored steering");
    }
    assert!(steerings.len() >= 4, "the drive's steering varied, the labels do not: {steerings:?}");
    assert!(steerings.contains(&60) && steerings.contains(&-60), "{steerings:?}");

    // The label choices: only the operator's frames; what the loop commanded, always.
    let only = dir.join("operator-only");
    let report = export("csv", &only, &recording, &["--operator-only"]);
    let by_hand = read_csv(&only.join("labels.csv"));
    assert_eq!(count(&report, "not_operator"), count(&csv, "commanded_labels"));
    assert_eq!(by_hand.len() as u64, count(&csv, "operator_labels") + count(&csv, "assist_labels"));
    assert!(by_hand.iter().all(|r| r.label != "commanded"));
    let loop_dir = dir.join("commanded");
    export("csv", &loop_dir, &recording, &["--label", "commanded"]);
    let commanded = read_csv(&loop_dir.join("labels.csv"));
    assert_eq!(commanded.len(), rows.len());
    assert!(commanded.iter().all(|r| r.label == "commanded" && r.steering == r.commanded_steering));

    // The tub, through donkeycar's own Tub and TubRecord: the same frames, Donkey's sign.
    let python = python();
    let found = read_tub(&python, &tub).unwrap_or_else(|e| panic!("donkeycar could not read the tub: {e}"));
    assert_eq!(found["reader"], "donkeycar");
    assert_eq!(found["len"].as_u64().unwrap(), count(&csv, "exported"));
    let records = found["records"].as_array().unwrap();
    tub_agrees_with_csv(records, &rows).unwrap();
    assert!(
        found["image_shapes"] == serde_json::json!({ "120x160x3": rows.len() }),
        "{}",
        found["image_shapes"]
    );
    let left =
        records.iter().find(|r| r["ads/label"] == "operator" && r["user/angle"].as_f64() == Some(-0.6));
    assert!(left.is_some(), "a full-left command (ads +0.6) is Donkey's -0.6");
    // A wrong sign would have been caught.
    let flipped: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["user/angle"] = serde_json::json!(-r["user/angle"].as_f64().unwrap());
            r
        })
        .collect();
    assert!(tub_agrees_with_csv(&flipped, &rows).is_err(), "a flipped angle went unnoticed");
    // And a tub without its catalog manifest does not open.
    let broken = dir.join("broken-tub");
    std::fs::create_dir_all(broken.join("images")).unwrap();
    for entry in std::fs::read_dir(&tub).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && !path.to_string_lossy().ends_with(".catalog_manifest") {
            std::fs::copy(&path, broken.join(path.file_name().unwrap())).unwrap();
        }
    }
    let error = read_tub(&python, &broken).expect_err("a tub without catalog_0.catalog_manifest opened");
    assert!(error.contains("catalog_manifest"), "{error}");

    // The Python example: the same frames and labels as numpy arrays.
    let npz = dir.join("drive.npz");
    let out = Process::new(&python)
        .arg(root().join("python/examples/drive_to_numpy.py"))
        .arg(&recording)
        .arg("--out")
        .arg(&npz)
        .arg("--summary")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "drive_to_numpy.py failed");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["images"]["shape"], serde_json::json!([rows.len(), 120, 160, 3]));
    assert_eq!(summary["images"]["dtype"], "uint8");
    assert_eq!(summary["labels"]["shape"], serde_json::json!([rows.len(), 2]));
    let ids: Vec<u64> =
        summary["frame_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(ids, rows.iter().map(|r| r.frame_id).collect::<Vec<_>>());
    for (label, row) in summary["labels"]["values"].as_array().unwrap().iter().zip(&rows) {
        assert_eq!(label, &serde_json::json!([row.steering, row.throttle]), "frame {}", row.frame_id);
    }
    // The first image's pixels as turbojpeg decodes the exported file (decoders may differ
    // by a level here and there).
    let jpeg = std::fs::read(csv_dir.join(&rows[0].image)).unwrap();
    let image = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).unwrap();
    let mean = image.pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / image.pixels.len() as f64;
    let theirs = summary["first_image_mean"].as_f64().unwrap();
    assert!((mean - theirs).abs() < 1.0, "first image mean {theirs} in numpy, {mean} decoded here");
    assert!(std::fs::metadata(&npz).unwrap().len() > 0);

    // A recording whose recorder was killed: both read it up to the damage, and agree.
    let bytes = std::fs::read(&recording).unwrap();
    let killed = dir.join("killed.mcap");
    std::fs::write(&killed, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let partial_dir = dir.join("partial");
    let partial = export("csv", &partial_dir, &killed, &[]);
    assert!(partial["truncated"].is_string(), "{partial}");
    let partial_rows = read_csv(&partial_dir.join("labels.csv"));
    assert!(!partial_rows.is_empty() && partial_rows.len() < rows.len(), "{partial}");
    let out = Process::new(&python)
        .arg(root().join("python/examples/drive_to_numpy.py"))
        .arg(&killed)
        .arg("--summary")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "drive_to_numpy.py failed on a truncated file");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["truncated"].is_string(), "{}", summary["truncated"]);
    let ids: Vec<u64> =
        summary["frame_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(ids, partial_rows.iter().map(|r| r.frame_id).collect::<Vec<_>>());

    // An export never writes into a directory that holds something.
    let again = Process::new(bin("ads-record"))
        .args(["export", "--format", "donkey", "--out"])
        .arg(&tub)
        .arg(&recording)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let _ = std::fs::remove_dir_all(&dir);
}
