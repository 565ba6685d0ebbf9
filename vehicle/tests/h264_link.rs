//! H.264 on the real `ads-vehicle`'s video socket: a client that asks for H.264 gets Annex B
//! access units that decode, starting with a keyframe (SPS, PPS, IDR); a client that asks
//! only for JPEG keeps getting JPEG meanwhile; a client joining mid-stream starts with a
//! keyframe, and a keyframe request is answered with one. Periodic keyframes are configured
//! out of the way (one per 600 frames), so every keyframe seen is one made on demand.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{
    decode, encode_video_request, Credit, FrameInfo, KeyframeRequest, Message, VehicleState, VideoHello,
    VideoRequest, CODEC_H264, CODEC_JPEG,
};
use ads_testkit::{unique_name, TestVehicle, DEADLINE};
use std::time::{Duration, Instant};

struct Client {
    socket: zmq::Socket,
    codecs: Vec<String>,
    seq: u64,
    last_hello: Instant,
    decoder: openh264::decoder::Decoder,
}

impl Client {
    fn connect(context: &zmq::Context, endpoint: &str, codecs: &[&str]) -> Self {
        let socket = context.socket(zmq::DEALER).unwrap();
        socket.set_rcvtimeo(200).unwrap();
        socket.connect(endpoint).unwrap();
        let api = openh264::OpenH264API::from_source();
        let decoder =
            openh264::decoder::Decoder::with_api_config(api, openh264::decoder::DecoderConfig::new())
                .unwrap();
        let mut client = Self {
            socket,
            codecs: codecs.iter().map(|c| (*c).to_string()).collect(),
            seq: 0,
            last_hello: Instant::now(),
            decoder,
        };
        client.hello();
        client
    }

    fn send(&mut self, request: &VideoRequest) {
        self.seq += 1;
        self.socket.send_multipart(encode_video_request("test", self.seq, 0, request), 0).unwrap();
    }

    fn hello(&mut self) {
        self.last_hello = Instant::now();
        let hello = VideoHello {
            codec: CODEC_JPEG.into(),
            codecs: self.codecs.clone(),
            max_kbps: None,
            full_size: false,
        };
        self.send(&VideoRequest::Hello(hello));
    }

    /// The next frame (credited at once); H.264 ones are decoded and must decode.
    fn frame(&mut self) -> (FrameInfo, Vec<u8>) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no frame");
            if self.last_hello.elapsed() > Duration::from_millis(900) {
                self.hello();
            }
            let Ok(parts) = self.socket.recv_multipart(0) else { continue };
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let message = decode(&refs).unwrap();
            let Message::Frame(info) = message.message else { continue };
            let payload = message.payload.unwrap().to_vec();
            let credit = Credit { frame_id: info.frame_id, bytes: payload.len() as u32 };
            self.send(&VideoRequest::Credit(credit));
            return (info, payload);
        }
    }

    /// A frame if one arrives within 5 ms (credited, hello kept up).
    fn try_frame(&mut self) -> Option<(FrameInfo, Vec<u8>)> {
        if self.last_hello.elapsed() > Duration::from_millis(900) {
            self.hello();
        }
        if self.socket.poll(zmq::POLLIN, 5).unwrap() == 0 {
            return None;
        }
        Some(self.frame())
    }

    fn decodes(&mut self, unit: &[u8]) -> bool {
        matches!(self.decoder.decode(unit), Ok(Some(_)))
    }
}

fn nal_types(unit: &[u8]) -> Vec<u8> {
    unit.windows(4).filter(|w| w[..3] == [0, 0, 1]).map(|w| w[3] & 0x1f).collect()
}

#[test]
fn h264_and_jpeg_viewers_side_by_side_with_keyframes_on_demand() {
    let dir = std::env::temp_dir().join(unique_name("h264"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vehicle.toml");
    std::fs::write(&config, "[h264]\nkeyframe_interval_frames = 600\n").unwrap();
    let car = TestVehicle::build("h264")
        .binary(env!("CARGO_BIN_EXE_ads-vehicle"))
        .vehicle_id("car")
        .arg("--config")
        .arg(&config)
        .args(["--control", "truth"])
        .log("error")
        .spawn();
    let context = zmq::Context::new();
    let endpoint = car.video_endpoint();

    // H.264: the first unit is a keyframe with its parameter sets, and the stream decodes.
    let mut a = Client::connect(&context, &endpoint, &[CODEC_H264, CODEC_JPEG]);
    let (info, unit) = a.frame();
    assert_eq!((info.codec.as_str(), info.keyframe), (CODEC_H264, true), "{info:?}");
    assert!(unit.starts_with(&[0, 0, 0, 1]), "Annex B");
    let types = nal_types(&unit);
    assert!(types.contains(&7) && types.contains(&8) && types.contains(&5), "SPS, PPS, IDR: {types:?}");
    assert!(a.decodes(&unit));
    let mut deltas = 0;
    for _ in 0..20 {
        let (info, unit) = a.frame();
        assert_eq!(info.codec, CODEC_H264);
        assert!(a.decodes(&unit), "frame {} does not decode", info.frame_id);
        deltas += usize::from(!info.keyframe);
    }
    assert!(deltas > 0, "only keyframes: no inter prediction");

    // JPEG for the client that asks for it, while A keeps its H.264.
    let mut c = Client::connect(&context, &endpoint, &[]);
    for _ in 0..5 {
        let (info, jpeg) = c.frame();
        assert_eq!(info.codec, CODEC_JPEG);
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        let (info, unit) = a.frame();
        assert_eq!(info.codec, CODEC_H264);
        assert!(a.decodes(&unit));
    }

    // A client joining mid-stream starts with a keyframe, and keeps its picture when its rate
    // moves it onto another tier, A's among them, whose stream is mid-GOP then (the next
    // periodic keyframe is up to 600 frames away): each move is answered by a keyframe on
    // demand. Measured in the vehicle's own frame ids: the gap in B's frames at each move
    // stays far below the periodic interval.
    let mut b = Client::connect(&context, &endpoint, &[CODEC_H264]);
    let (mut b_frames, mut b_last, mut moves) = (0, None::<(u64, u8)>, Vec::new());
    let deadline = Instant::now() + DEADLINE;
    while b_frames < 30 {
        assert!(Instant::now() < deadline, "B got only {b_frames} frames; moves so far {moves:?}");
        if let Some((info, unit)) = b.try_frame() {
            if b_last.is_none() {
                assert!(
                    info.keyframe && nal_types(&unit).contains(&5),
                    "the newcomer's first frame: {info:?}"
                );
            }
            assert!(b.decodes(&unit), "B's frame {} does not decode", info.frame_id);
            if let Some((last_id, last_tier)) = b_last.filter(|&(_, tier)| tier != info.tier) {
                assert!(info.keyframe, "B's first frame on tier {} is not a keyframe", info.tier);
                moves.push((last_tier, info.tier, info.frame_id - last_id));
            }
            b_last = Some((info.frame_id, info.tier));
            b_frames += 1;
        }
        if let Some((info, unit)) = a.try_frame() {
            assert!(a.decodes(&unit), "A's frame {} does not decode", info.frame_id);
        }
        c.try_frame();
    }
    eprintln!("B's tier moves (from, to, frame ids between): {moves:?}");
    for (from, to, gap) in &moves {
        assert!(*gap < 150, "B waited {gap} frames for a picture on tier {to} (from {from})");
    }

    // A keyframe request is answered by a keyframe.
    a.send(&VideoRequest::Keyframe(KeyframeRequest { after_frame_id: 0 }));
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "no keyframe after the request");
        let (info, unit) = a.frame();
        assert!(a.decodes(&unit));
        b.frame();
        c.frame();
        if info.keyframe {
            break;
        }
    }

    // The vehicle's state tells who gets what, and what H.264 costs.
    let states = context.socket(zmq::SUB).unwrap();
    states.set_subscribe(b"state").unwrap();
    states.set_rcvtimeo(200).unwrap();
    states.connect(&car.endpoint()).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let state: VehicleState = loop {
        assert!(Instant::now() < deadline, "no state");
        a.frame();
        b.frame();
        c.frame();
        let Ok(parts) = states.recv_multipart(0) else { continue };
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        if let Ok(Message::State(s)) = decode(&refs).map(|m| m.message) {
            if s.link.viewers.len() == 3 && s.link.h264_key_requests >= 1 {
                break s;
            }
        }
    };
    let codecs: Vec<&str> = state.link.viewers.iter().map(|v| v.codec.as_str()).collect();
    assert_eq!(codecs.iter().filter(|c| **c == CODEC_H264).count(), 2, "{codecs:?}");
    assert_eq!(codecs.iter().filter(|c| **c == CODEC_JPEG).count(), 1, "{codecs:?}");
    assert!(state.link.h264_encode_us > 0 && state.link.h264_keyframes >= 2, "{:?}", state.link);
    // SIGTERM, so the vehicle removes its rings (a SIGKILL would leave them in /dev/shm).
    car.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Seven viewers asking for a keyframe after every frame (as the attacker did: 62
/// IDR/s) get no more keyframes than the limit, 2/s per tier, besides their first and those
/// of tier moves; and they keep getting frames. Before, every request forced one.
#[test]
fn keyframe_requests_cannot_force_more_than_the_limit() {
    let dir = std::env::temp_dir().join(unique_name("keyflood"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vehicle.toml");
    // All seven from one address (loopback): no per-address cap here.
    std::fs::write(&config, "[link]\nmax_sessions_per_peer = 0\n").unwrap();
    let car = TestVehicle::build("keyflood")
        .binary(env!("CARGO_BIN_EXE_ads-vehicle"))
        .vehicle_id("car")
        .arg("--config")
        .arg(&config)
        .args(["--control", "truth"])
        .log("error")
        .spawn();
    let context = zmq::Context::new();
    let endpoint = car.video_endpoint();
    let mut flooders: Vec<Client> =
        (0..7).map(|_| Client::connect(&context, &endpoint, &[CODEC_H264])).collect();
    // Everyone's first frame (a keyframe each) before counting.
    for f in &mut flooders {
        f.frame();
    }
    let started = Instant::now();
    let deadline = started + DEADLINE;
    let mut frames = [0usize; 7];
    let mut keys = [0usize; 7];
    let mut tiers: Vec<Vec<u8>> = vec![Vec::new(); 7];
    while frames.iter().any(|&n| n < 60) {
        assert!(Instant::now() < deadline, "frames stopped: {frames:?}");
        for (i, f) in flooders.iter_mut().enumerate() {
            let Some((info, _)) = f.try_frame() else { continue };
            assert_eq!(info.codec, CODEC_H264);
            frames[i] += 1;
            keys[i] += usize::from(info.keyframe);
            if tiers[i].last() != Some(&info.tier) {
                tiers[i].push(info.tier);
            }
            f.send(&VideoRequest::Keyframe(KeyframeRequest { after_frame_id: info.frame_id }));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{seconds:.1} s: frames {frames:?}, keyframes {keys:?}, tiers {tiers:?}");
    for i in 0..7 {
        // 2/s on its tier, plus one for each tier it moved to, plus one for rounding.
        let allowed = (2.0 * seconds).ceil() as usize + tiers[i].len() + 1;
        assert!(
            keys[i] <= allowed,
            "viewer {i}: {} keyframes in {seconds:.1} s (at most {allowed})",
            keys[i]
        );
    }
}
