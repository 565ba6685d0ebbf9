//! A real ads-viewer fed an H.264 stream by a hostile vehicle: this test binds the vehicle's
//! video socket itself and sends real openh264 access units with corrupt and truncated ones
//! among them. The viewer drops and counts them, asks for a keyframe (seen here, on the
//! socket), and decodes again from the keyframe that answers it; it never stops serving.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod support;

use ads_protocol::{decode_video_request, encode, FrameInfo, Message, VideoRequest, CODEC_H264};
use ads_testkit::{bin, free_port, Kill, DEADLINE};
use openh264::encoder::{Encoder, EncoderConfig};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::metric;

struct FakeVehicle {
    video: zmq::Socket,
    _states: zmq::Socket,
    viewer_id: Option<Vec<u8>>,
    encoder: Encoder,
    yuv: openh264::formats::YUVBuffer,
    frame_id: u64,
    key_requests: u64,
}

const W: usize = 160;
const H: usize = 120;

impl FakeVehicle {
    /// The next access unit of a moving picture (`key`: an IDR).
    fn unit(&mut self, key: bool) -> Vec<u8> {
        self.frame_id += 1;
        let t = self.frame_id as usize;
        let rgb: Vec<u8> = (0..W * H * 3).map(|i| ((i / 3 % W + t * 5) % 256) as u8).collect();
        self.yuv.read_rgb8(openh264::formats::RgbSliceU8::new(&rgb, (W, H)));
        if key {
            self.encoder.force_intra_frame();
        }
        self.encoder.encode(&self.yuv).unwrap().to_vec()
    }

    /// Takes the viewer's requests: its identity from a hello, keyframe requests counted.
    fn receive(&mut self) {
        while let Ok(parts) = self.video.recv_multipart(zmq::DONTWAIT) {
            let refs: Vec<&[u8]> = parts[1..].iter().map(Vec::as_slice).collect();
            match decode_video_request(&refs) {
                Ok(VideoRequest::Hello(hello)) => {
                    assert_eq!(hello.codecs.first().map(String::as_str), Some(CODEC_H264), "{hello:?}");
                    self.viewer_id = Some(parts[0].clone());
                }
                Ok(VideoRequest::Keyframe(_)) => self.key_requests += 1,
                _ => {}
            }
        }
    }

    fn send(&mut self, unit: &[u8], keyframe: bool) {
        let info = FrameInfo {
            frame_id: self.frame_id,
            width: W as u32,
            height: H as u32,
            quality: 0,
            encode_us: 0,
            tier: 0,
            goodput_kbps: 0,
            reduced: false,
            codec: CODEC_H264.into(),
            keyframe,
            source_width: 0,
            source_height: 0,
        };
        let now = ads_viewer::hub::wall_ns();
        let envelope = encode("car", self.frame_id, now, now, &Message::Frame(info));
        let id = self.viewer_id.clone().unwrap();
        let parts: [&[u8]; 4] = [&id, b"frame", &envelope, unit];
        self.video.send_multipart(parts, 0).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn corrupt_access_units_are_dropped_counted_and_a_keyframe_brings_the_picture_back() {
    let context = zmq::Context::new();
    let (pub_port, video_port, action_port, web_port) = (free_port(), free_port(), free_port(), free_port());
    let video = context.socket(zmq::ROUTER).unwrap();
    video.bind(&format!("tcp://127.0.0.1:{video_port}")).unwrap();
    let states = context.socket(zmq::PUB).unwrap();
    states.bind(&format!("tcp://127.0.0.1:{pub_port}")).unwrap();
    let api = openh264::OpenH264API::from_source();
    let mut car = FakeVehicle {
        video,
        _states: states,
        viewer_id: None,
        encoder: Encoder::with_api_config(api, EncoderConfig::new()).unwrap(),
        yuv: openh264::formats::YUVBuffer::new(W, H),
        frame_id: 0,
        key_requests: 0,
    };
    let _viewer = Kill(
        Command::new(bin("ads-viewer"))
            .args(["--vehicle", &format!("tcp://127.0.0.1:{pub_port}")])
            .args(["--actions", &format!("tcp://127.0.0.1:{action_port}")])
            .args(["--video", &format!("tcp://127.0.0.1:{video_port}")])
            .args(["--port", &web_port.to_string(), "--codec", "h264"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + DEADLINE;
    while car.viewer_id.is_none() {
        assert!(Instant::now() < deadline, "the viewer never said hello on the video socket");
        car.receive();
        std::thread::sleep(Duration::from_millis(20));
    }
    let count = |name: &str| metric(&metrics(web_port), name).unwrap_or(0.0);
    let key = car.unit(true);
    car.send(&key, true);
    for _ in 0..4 {
        let unit = car.unit(false);
        car.send(&unit, false);
    }
    while count("ads_viewer_h264_decoded_total") < 5.0 {
        assert!(Instant::now() < deadline, "the viewer did not decode the sound stream");
        std::thread::sleep(Duration::from_millis(50));
    }
    car.receive();
    let requests_before = car.key_requests;

    // Damage: a truncated P frame, a unit of garbage behind a start code, no start code at
    // all, a frame that claims another size; then P frames that refer to what was lost.
    let unit = car.unit(false);
    car.send(&unit[..unit.len() / 3], false);
    car.send(b"\x00\x00\x00\x01\x65\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", true);
    car.send(b"not h264 at all", false);
    for _ in 0..3 {
        let unit = car.unit(false);
        car.send(&unit, false);
    }
    while count("ads_viewer_h264_corrupt_total") < 1.0 {
        assert!(Instant::now() < deadline, "the damage was not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The viewer asks for a keyframe; the answer makes it decode again.
    while car.key_requests == requests_before {
        assert!(Instant::now() < deadline, "the viewer never asked for a keyframe");
        car.receive();
        std::thread::sleep(Duration::from_millis(20));
    }
    let decoded = count("ads_viewer_h264_decoded_total");
    let key = car.unit(true);
    car.send(&key, true);
    for _ in 0..3 {
        let unit = car.unit(false);
        car.send(&unit, false);
    }
    while count("ads_viewer_h264_decoded_total") < decoded + 4.0 {
        assert!(Instant::now() < deadline, "the stream did not come back after the keyframe");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = metrics(web_port);
    assert!(metric(&text, "ads_viewer_h264_waiting_total").unwrap() >= 1.0, "{text}");
    assert!(metric(&text, "ads_viewer_h264_key_requests_total").unwrap() >= 1.0, "{text}");
}
