//! Round trips of every topic, every typed error, and random/mutated input that must never panic.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::*;

fn samples() -> Vec<Message> {
    let lanes = LaneDetection {
        h_samples: vec![300, 310],
        left: vec![Some(100.5), None],
        right: vec![Some(700.0), Some(690.0)],
        left_confidence: 0.9,
        right_confidence: 0.4,
        lateral_offset_m: -0.2,
        heading_error_rad: 0.01,
        curvature_radius_m: Some(-120.0),
    };
    let detections = Detections {
        frame_id: 7,
        capture_ns: 1_700_000_000_000_000_000,
        detector: "cv".into(),
        processing_us: 4200,
        read_ns: 1_700_000_000_002_000_000,
        control_read_ns: 1_700_000_000_009_000_000,
        lanes: Some(lanes),
        objects: vec![DetectedObject {
            class: "car".into(),
            class_id: 3,
            score: 0.8,
            x_px: 1.0,
            y_px: 2.0,
            w_px: 30.0,
            h_px: 20.0,
        }],
    };
    vec![
        Message::Frame(FrameInfo {
            frame_id: 1,
            width: 400,
            height: 300,
            quality: 60,
            encode_us: 1400,
            tier: 4,
            goodput_kbps: 1900,
            reduced: true,
            codec: "h264".into(),
            keyframe: true,
            source_width: 800,
            source_height: 600,
        }),
        Message::Detection(detections),
        Message::State(VehicleState {
            frame_id: 9,
            pose: PoseMsg { x_m: 1.0, y_m: -2.0, yaw_rad: 0.5 },
            speed_mps: 10.0,
            target_speed_mps: 12.0,
            steering_rad: -0.1,
            throttle: 0.3,
            brake: 0.0,
            mode: DriveMode::Failsafe,
            paused: false,
            control: ControlSource::Truth,
            source: "sim".into(),
            fps: 30.0,
            timings: StageTimings::default(),
            drops: DropCounters::default(),
            health: Health {
                detections_fresh: false,
                detection_age_ms: None,
                stop_reason: Some("stale".into()),
            },
            distance_m: 12.5,
            started_ns: 1_700_000_000_000_000_000,
            truth_lateral_offset_m: Some(-0.25),
            commands: CommandStatus {
                run_id: "9f3c".into(),
                run_ns: 12_000_000,
                estop_latched: true,
                held: false,
                operator_required: true,
                operator_heartbeat_age_ms: Some(120),
                latch_error: Some("No space left on device".into()),
                action_port: 5558,
                signed_actions: true,
            },
            link: LinkState {
                video_port: 5559,
                encodes_per_s: 42.0,
                h264_encode_us: 6100,
                h264_keyframes: 3,
                h264_key_requests: 1,
                h264_rate_skips: 2,
                viewers: vec![ViewerLink {
                    session: 1,
                    goodput_kbps: 1900,
                    tier: 4,
                    reduced: true,
                    ..ViewerLink::default()
                }],
            },
            actuator: ActuatorState {
                backend: "serial".into(),
                state: "timed_out".into(),
                steering_us: Some(1480),
                throttle_us: Some(1500),
                command_age_ms: Some(140),
                fault: None,
                board: Some("neutral".into()),
                writes: 812,
                write_errors: 0,
                speed_source: "sim".into(),
                calibration: Some(CalibrationValues {
                    steering_centre_us: Some(1480),
                    brake_us: Some(1300),
                    ..CalibrationValues::default()
                }),
                calibration_throttle_us: Some((1350, 1650)),
                calibrating: Some(CalibrationChannel::Steering),
                lease_left_ms: Some(120),
            },
            teleop: TeleopState {
                pilot: PilotMode::Manual,
                driver: Some("viewer@laptop#1".into()),
                seq: 77,
                steering: -0.5,
                throttle: 0.25,
                age_ms: Some(12),
                live: true,
                taken: 70,
                dropped: 3,
                lapsed: 1,
                latency_p50_ms: Some(9.5),
                latency_p99_ms: Some(31.0),
            },
        }),
        Message::Event(Event::Ack {
            action_id: "a1".into(),
            sender: "me".into(),
            seq: 3,
            accepted: false,
            reason: Some(RejectReason::Expired),
            detail: "too late".into(),
            persisted: None,
        }),
        Message::Event(Event::Ack {
            action_id: "a2".into(),
            sender: "me".into(),
            seq: 4,
            accepted: true,
            reason: None,
            detail: "latched".into(),
            persisted: Some(false),
        }),
        Message::Event(Event::Notice { level: NoticeLevel::Warning, text: "hi".into() }),
        Message::Action(Action {
            id: "a2".into(),
            sender: "viewer".into(),
            command: Command::Respawn { spawn_point: Some(2) },
            run: ActionRun { run_id: "r1".into(), expires_run_ns: 5 },
        }),
        Message::Action(Action {
            id: "a3".into(),
            sender: "v".into(),
            command: Command::Pause,
            run: ActionRun { run_id: "r1".into(), expires_run_ns: 5 },
        }),
        Message::Action(Action {
            id: "a4".into(),
            sender: "v".into(),
            command: Command::SetTargetSpeed { mps: 8.5 },
            run: ActionRun { run_id: "r1".into(), expires_run_ns: 5 },
        }),
        Message::Action(Action {
            id: "a5".into(),
            sender: "v".into(),
            command: Command::Drive { steering: 0.25, throttle: -1.0, lease_ms: 250, issued_ns: 99 },
            run: ActionRun { run_id: "r1".into(), expires_run_ns: 5 },
        }),
        Message::Action(Action {
            id: "a6".into(),
            sender: "v".into(),
            command: Command::SetDriveMode { mode: PilotMode::Assist },
            run: ActionRun { run_id: "r1".into(), expires_run_ns: 5 },
        }),
        Message::Controls(ControlsMsg {
            frame_id: 3,
            pilot: PilotMode::Manual,
            mode: DriveMode::Driving,
            steering: 0.5,
            throttle: -0.2,
            operator: Some(OperatorCommand { seq: 4, steering: 0.5, throttle: -0.2, age_ms: 20 }),
        }),
        Message::Truth(LaneTruthMsg {
            frame_id: 3,
            h_samples: vec![300],
            lanes: vec![vec![Some(1.0)], vec![None]],
            ego_left: Some(0),
            ego_right: Some(1),
        }),
    ]
}

fn parts_of(message: &Message, payload: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = vec![message.topic().as_str().as_bytes().to_vec(), encode("car-1", 42, 10, 11, message)];
    if message.topic().has_payload() {
        parts.push(payload.to_vec());
    }
    parts
}

fn refs(parts: &[Vec<u8>]) -> Vec<&[u8]> {
    parts.iter().map(Vec::as_slice).collect()
}

#[test]
fn every_topic_round_trips() {
    for message in samples() {
        let parts = parts_of(&message, b"\xff\xd8jpeg");
        let decoded = decode(&refs(&parts)).unwrap();
        assert_eq!(decoded.message, message);
        assert_eq!(
            (decoded.vehicle.as_str(), decoded.seq, decoded.capture_ns, decoded.send_ns),
            ("car-1", 42, 10, 11)
        );
        assert_eq!(decoded.payload.is_some(), message.topic().has_payload());
    }
}

#[test]
fn detection_records_round_trip_and_check_their_version() {
    let Message::Detection(d) = &samples()[1] else { unreachable!() };
    let bytes = encode_record(d);
    assert!(bytes.len() as u64 <= MAX_DETECTION_RECORD);
    assert_eq!(&decode_record(&bytes).unwrap(), d);
    let mut bad = bytes.clone();
    // The record is a map {"v": 2, ...}: the version byte follows the key "v" (0xa1 0x76).
    let at = bad.windows(2).position(|w| w == [0xa1, b'v']).unwrap() + 2;
    bad[at] = 9;
    assert_eq!(decode_record(&bad), Err(DecodeError::Version { got: 9 }));
}

#[test]
fn each_kind_of_bad_message_has_its_own_error() {
    let frame = &samples()[0];
    let state = &samples()[2];
    let good_frame = parts_of(frame, b"jpeg");
    let good_state = parts_of(state, b"");

    assert_eq!(decode(&[b"state"]), Err(DecodeError::PartCount(1)));
    assert!(matches!(decode(&[b"nope", b"x"]), Err(DecodeError::UnknownTopic(t)) if t == "nope"));
    assert_eq!(decode(&refs(&good_frame[..2])), Err(DecodeError::MissingPayload(Topic::Frame)));
    let mut extra = good_state.clone();
    extra.push(b"x".to_vec());
    assert_eq!(decode(&refs(&extra)), Err(DecodeError::UnexpectedPayload(Topic::State)));
    let huge = vec![0u8; MAX_ENVELOPE_BYTES + 1];
    assert!(matches!(decode(&[b"state", &huge]), Err(DecodeError::TooLarge { part: "envelope", .. })));
    let huge_payload = vec![0u8; MAX_PAYLOAD_BYTES + 1];
    assert!(matches!(
        decode(&[b"frame", &good_frame[1], &huge_payload]),
        Err(DecodeError::TooLarge { part: "payload", .. })
    ));
    // A state envelope under the frame topic: wrong type.
    assert!(matches!(decode(&[b"frame", &good_state[1], b"jpeg"]), Err(DecodeError::Malformed { .. })));
    assert!(matches!(decode(&[b"state", b"\xc1garbage"]), Err(DecodeError::Malformed { .. })));
    // Truncated.
    let cut = &good_state[1][..good_state[1].len() / 2];
    assert!(matches!(decode(&[b"state", cut]), Err(DecodeError::Malformed { .. })));
}

/// Builds an action envelope by hand, as a client in another language would.
fn hand_made_action(version: u16, command: &[(&str, &str)]) -> Vec<u8> {
    use std::collections::BTreeMap;
    #[derive(serde::Serialize)]
    struct Env<'a> {
        v: u16,
        vehicle: &'a str,
        seq: u64,
        capture_ns: u64,
        send_ns: u64,
        body: Body<'a>,
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        id: &'a str,
        sender: &'a str,
        command: BTreeMap<&'a str, &'a str>,
        run: BTreeMap<&'a str, u64>,
    }
    let env = Env {
        v: version,
        vehicle: "car-1",
        seq: 5,
        capture_ns: 0,
        send_ns: 0,
        body: Body {
            id: "x1",
            sender: "py",
            command: command.iter().copied().collect(),
            run: BTreeMap::from([("expires_run_ns", u64::MAX)]),
        },
    };
    rmp_serde::to_vec_named(&env).unwrap()
}

#[test]
fn unknown_commands_and_versions_are_told_apart_from_garbage() {
    let fly = hand_made_action(PROTOCOL_VERSION, &[("type", "fly")]);
    assert_eq!(decode(&[b"action", &fly]), Err(DecodeError::UnknownCommand { kind: "fly".into() }));
    let (identity, seq) = peek_action_identity(&fly);
    assert_eq!((identity.id.as_str(), identity.sender.as_str(), seq), ("x1", "py", 5));

    let pause = hand_made_action(PROTOCOL_VERSION, &[("type", "pause")]);
    assert!(matches!(
        decode(&[b"action", &pause]).unwrap().message,
        Message::Action(Action { command: Command::Pause, .. })
    ));
    // Known command, wrong field type: malformed, not unknown.
    let bad_speed = hand_made_action(PROTOCOL_VERSION, &[("type", "set_target_speed"), ("mps", "fast")]);
    assert!(matches!(decode(&[b"action", &bad_speed]), Err(DecodeError::Malformed { .. })));
    let bad_pulse = hand_made_action(PROTOCOL_VERSION, &[("type", "calibrate_pulse"), ("channel", "wheel")]);
    assert!(matches!(decode(&[b"action", &bad_pulse]), Err(DecodeError::Malformed { .. })));
    let future = hand_made_action(PROTOCOL_VERSION + 1, &[("type", "pause")]);
    assert_eq!(decode(&[b"action", &future]), Err(DecodeError::Version { got: PROTOCOL_VERSION + 1 }));
    assert_eq!(peek_action_identity(b"\x00junk"), (ActionIdentity::default(), 0));
}

/// xorshift64*: a fixed seed makes every run feed the same inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_messages_never_panic() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let valid: Vec<Vec<Vec<u8>>> = samples().iter().map(|m| parts_of(m, b"jpeg")).collect();
    let topics: Vec<&[u8]> = vec![b"frame", b"detection", b"state", b"event", b"action", b"truth", b"x", b""];
    let (mut ok, mut errors) = (0u32, 0u32);
    for round in 0..60_000 {
        let mut parts = valid[rng.below(valid.len())].clone();
        match round % 4 {
            // Random bytes under a random topic.
            0 => {
                let len = rng.below(300);
                parts[1] = (0..len).map(|_| rng.next() as u8).collect();
                parts[0] = topics[rng.below(topics.len())].to_vec();
            }
            // Bit flips and byte overwrites in a valid envelope.
            1 => {
                for _ in 0..1 + rng.below(6) {
                    let i = rng.below(parts[1].len());
                    parts[1][i] ^= 1 << rng.below(8);
                }
            }
            // Truncation or extension.
            2 => {
                let cut = rng.below(parts[1].len() + 1);
                parts[1].truncate(cut);
                if rng.below(2) == 0 {
                    parts[1].extend((0..rng.below(20)).map(|_| rng.next() as u8));
                }
            }
            // Msgpack headers that claim huge lengths (array32/map32/str32/bin32).
            _ => {
                let marker = [0xdd, 0xdf, 0xdb, 0xc6][rng.below(4)];
                let at = rng.below(parts[1].len());
                parts[1].splice(at..at, [marker, 0xff, 0xff, 0xff, 0xf0]);
            }
        }
        if rng.below(10) == 0 {
            parts.truncate(rng.below(parts.len() + 1));
        }
        match decode(&refs(&parts)) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                errors += 1;
            }
        }
        let _ = decode_record(&parts.get(1).cloned().unwrap_or_default());
    }
    println!("60000 inputs: {ok} decoded, {errors} rejected with a typed error");
    assert!(errors > 50_000, "the mutations were too gentle to test anything");
}

#[test]
fn deep_nesting_is_rejected_not_a_stack_overflow() {
    // 100,000 nested one-element arrays inside the body.
    let mut envelope =
        rmp_serde::to_vec_named(&std::collections::BTreeMap::from([("v", PROTOCOL_VERSION)])).unwrap();
    envelope[0] += 1; // one more map entry: "body" below
    envelope.extend([0xa4, b'b', b'o', b'd', b'y']);
    envelope.extend(std::iter::repeat_n(0x91, 100_000));
    envelope.push(0xc0);
    assert!(decode(&[b"state", &envelope]).is_err());
}

#[test]
fn non_finite_numbers_are_refused_at_decode_naming_the_field() {
    let mut messages = samples();
    let Message::State(state) = &mut messages[2] else { panic!("sample order") };
    state.speed_mps = f64::NAN;
    let Message::Detection(d) = &mut messages[1] else { panic!("sample order") };
    d.lanes.as_mut().unwrap().left[0] = Some(f32::INFINITY);
    for (message, field) in [(&messages[2], "speed_mps"), (&messages[1], "lanes.left")] {
        let parts = parts_of(message, b"");
        match decode(&refs(&parts)) {
            Err(DecodeError::NonFinite { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let Message::Detection(d) = &messages[1] else { panic!("sample order") };
    assert!(matches!(decode_record(&encode_record(d)), Err(DecodeError::NonFinite { .. })));
    // Huge but finite values decode; the viewer clips them before drawing.
    let Message::Detection(d) = &mut messages[1] else { panic!("sample order") };
    d.lanes.as_mut().unwrap().left[0] = Some(3e38);
    assert!(decode_record(&encode_record(d)).is_ok());
}

/// Every key of every body the samples hold (all of them, nested).
fn keys(value: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                out.insert(key.clone());
                keys(inner, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// docs/protocol.md is what other people's clients are written from: a field added to a
/// message and not to its tables fails here.
#[test]
fn every_field_of_every_message_is_in_the_protocol_document() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
    let mut found = std::collections::BTreeSet::new();
    for message in samples() {
        let body = match &message {
            Message::Frame(b) => serde_json::to_value(b),
            Message::Detection(b) => serde_json::to_value(b),
            Message::State(b) => serde_json::to_value(b),
            Message::Event(b) => serde_json::to_value(b),
            Message::Action(b) => serde_json::to_value(b),
            Message::Truth(b) => serde_json::to_value(b),
            Message::Controls(b) => serde_json::to_value(b),
        }
        .unwrap();
        keys(&body, &mut found);
    }
    // A field is named in a table row (`key`) or in a map's type (`{x_m: f64, …}`).
    let named = |key: &str| doc.contains(&format!("`{key}`")) || doc.contains(&format!("{key}: "));
    let missing: Vec<_> = found.iter().filter(|key| !named(key)).collect();
    assert!(missing.is_empty(), "fields not named in docs/protocol.md: {missing:?}");
}
