//! The video socket's flow control against clients that do not play by the rules, with the
//! real `ads-vehicle` on loopback: a frame only for a credit, credits for frames not in flight
//! count for nothing, a client's cap holds, and none of it touches another client or the
//! vehicle's state stream.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{
    decode, encode_video_request, Credit, FrameInfo, Message, VehicleState, VideoHello, VideoRequest,
    CODEC_JPEG,
};
use ads_testkit::{TestVehicle, DEADLINE};
use std::process::Command;
use std::time::{Duration, Instant};

struct Vehicle {
    car: TestVehicle,
    states: zmq::Socket,
    context: zmq::Context,
}

impl Vehicle {
    fn start(test: &str) -> Self {
        let car = TestVehicle::build(test)
            .binary(env!("CARGO_BIN_EXE_ads-vehicle"))
            .vehicle_id("car")
            .args(["--control", "truth"])
            .log("error")
            .spawn();
        let context = zmq::Context::new();
        let states = context.socket(zmq::SUB).unwrap();
        states.set_subscribe(b"state").unwrap();
        states.set_rcvtimeo(1000).unwrap();
        states.connect(&car.endpoint()).unwrap();
        Self { car, states, context }
    }

    /// The newest state (older queued ones are skipped).
    fn state(&mut self) -> VehicleState {
        let deadline = Instant::now() + DEADLINE;
        let parse = |parts: Vec<Vec<u8>>| {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            match decode(&refs).map(|m| m.message) {
                Ok(Message::State(s)) => Some(s),
                _ => None,
            }
        };
        loop {
            assert!(Instant::now() < deadline, "no state");
            if let Ok(Some(status)) = self.car.process.0.try_wait() {
                panic!("the vehicle exited: {status}");
            }
            let Ok(parts) = self.states.recv_multipart(0) else { continue };
            let Some(mut newest) = parse(parts) else { continue };
            while let Ok(parts) = self.states.recv_multipart(zmq::DONTWAIT) {
                newest = parse(parts).unwrap_or(newest);
            }
            return newest;
        }
    }

    fn client(&self) -> Client {
        let socket = self.context.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        socket.connect(&self.car.video_endpoint()).unwrap();
        Client { socket }
    }
}

struct Client {
    socket: zmq::Socket,
}

impl Client {
    fn send(&self, request: VideoRequest) {
        self.socket.send_multipart(encode_video_request("*", 1, 0, &request), 0).unwrap();
    }

    fn hello(&self, max_kbps: Option<u32>) {
        self.send(VideoRequest::Hello(VideoHello {
            codec: CODEC_JPEG.into(),
            codecs: vec![],
            max_kbps,
            full_size: false,
        }));
    }

    fn credit(&self, frame_id: u64) {
        self.send(VideoRequest::Credit(Credit { frame_id, bytes: 1 }));
    }

    /// The next frame within `wait`, with its JPEG's size.
    fn frame(&self, wait: Duration) -> Option<(FrameInfo, usize)> {
        if self.socket.poll(zmq::POLLIN, wait.as_millis() as i64).unwrap() == 0 {
            return None;
        }
        let parts = self.socket.recv_multipart(0).unwrap();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        match decode(&refs).unwrap() {
            ads_protocol::WireMessage { message: Message::Frame(f), payload: Some(p), .. } => {
                Some((f, p.len()))
            }
            other => panic!("not a frame on the video socket: {other:?}"),
        }
    }

    /// Frames, crediting each, until `count` arrived; returns the last.
    fn take(&self, count: usize) -> FrameInfo {
        let deadline = Instant::now() + DEADLINE;
        let mut last = None;
        let mut hello_at = Instant::now();
        for _ in 0..count {
            loop {
                assert!(Instant::now() < deadline, "frames stopped coming");
                if hello_at.elapsed() > Duration::from_millis(900) {
                    hello_at = Instant::now();
                    self.hello(None);
                }
                if let Some((f, _)) = self.frame(Duration::from_millis(200)) {
                    self.credit(f.frame_id);
                    last = Some(f);
                    break;
                }
            }
        }
        last.unwrap()
    }
}

#[test]
fn no_credit_no_frame_and_false_credits_buy_nothing_while_state_flows() {
    let mut v = Vehicle::start("stingy");
    let stingy = v.client();
    stingy.hello(None);
    let (first, _) = stingy.frame(DEADLINE).expect("a first frame for the hello");
    // It never credits that frame: whatever else it sends, nothing more comes, while the
    // vehicle goes on producing and publishing state.
    let before = v.state();
    for bogus in [first.frame_id + 1, first.frame_id + 1000, 0, first.frame_id + 1] {
        stingy.credit(bogus);
    }
    stingy.hello(Some(1_000_000));
    let later = loop {
        let s = v.state();
        if s.frame_id >= before.frame_id + 30 {
            break s;
        }
    };
    assert!(stingy.frame(Duration::from_millis(300)).is_none(), "a frame without a credit");
    let session = later.link.viewers.first().expect("its session in state.link");
    assert_eq!(session.in_flight, 1, "{:?}", later.link);
    assert!(session.credits_ignored >= 4, "{:?}", later.link);
    assert_eq!(session.frames_sent, 1, "{:?}", later.link);
    // The true credit is the one that buys the next frame.
    stingy.credit(first.frame_id);
    let (next, _) = stingy.frame(DEADLINE).expect("a frame for the credit");
    assert!(next.frame_id > first.frame_id);
    // A client that never said hello gets nothing for its credits.
    let stranger = v.client();
    for id in next.frame_id..next.frame_id + 5 {
        stranger.credit(id);
    }
    assert!(stranger.frame(Duration::from_millis(500)).is_none());
}

#[test]
fn a_misbehaving_client_does_not_touch_another_clients_stream() {
    let mut v = Vehicle::start("neighbours");
    let good = v.client();
    good.hello(None);
    good.take(5);
    let rogue = v.client();
    rogue.hello(None);
    let (held, _) = rogue.frame(DEADLINE).expect("the rogue's first frame");
    // The rogue floods hellos and credits for frames it never got, and returns none it did.
    for i in 0..2000u64 {
        rogue.credit(held.frame_id + 1 + i % 7);
        if i % 100 == 0 {
            rogue.hello(Some(u32::MAX));
        }
    }
    // The good client's stream goes on, and on loopback reaches the best tier.
    let deadline = Instant::now() + DEADLINE;
    let mut last = good.take(30);
    while last.tier != 0 {
        assert!(Instant::now() < deadline, "the good client never reached the best tier: {last:?}");
        last = good.take(1);
    }
    assert_eq!((last.width, last.height), (800, 600));
    assert!(rogue.frame(Duration::from_millis(100)).is_none(), "the rogue got a frame it did not pay for");
    // Both sessions are there, the rogue's with its one frame in flight and nothing more.
    let deadline = Instant::now() + DEADLINE;
    let s = loop {
        let s = v.state();
        if s.link.viewers.len() == 2 && s.link.viewers.iter().any(|x| x.credits_ignored > 0) {
            break s;
        }
        assert!(Instant::now() < deadline, "{:?}", s.link);
    };
    let rogue_session = s.link.viewers.iter().find(|x| x.credits_ignored > 0).unwrap();
    assert_eq!((rogue_session.frames_sent, rogue_session.in_flight), (1, 1), "{:?}", s.link);
}

#[test]
fn a_clients_own_cap_holds_its_bytes() {
    let v = Vehicle::start("capped");
    let capped = v.client();
    let cap_kbps = 300u32;
    capped.hello(Some(cap_kbps));
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut frames = 0;
    let mut hello_at = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        if hello_at.elapsed() > Duration::from_millis(900) {
            hello_at = Instant::now();
            capped.hello(Some(cap_kbps));
        }
        if let Some((f, len)) = capped.frame(Duration::from_millis(100)) {
            capped.credit(f.frame_id);
            bytes += len;
            frames += 1;
        }
    }
    // The cap bounds what was sent over the time it ran, plus one frame saved up: a limit
    // on bytes, which a slower machine only makes smaller.
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = f64::from(cap_kbps) * 1000.0 / 8.0 * elapsed + 40_000.0;
    assert!(frames > 3, "the cap stops the stream instead of thinning it: {frames} frames");
    assert!((bytes as f64) <= allowed, "{bytes} bytes in {elapsed:.1} s over a {cap_kbps} kbit/s cap");
}

/// The venv with pyzmq and msgpack that scripts/python-env.sh makes (idempotent).
fn python() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out =
        Command::new("bash").arg(root.join("scripts/python-env.sh")).current_dir(&root).output().unwrap();
    assert!(out.status.success(), "python-env.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
}

#[test]
fn the_documented_python_example_watches_the_video() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read_to_string(root.join("tests/python/video_example.py")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/protocol.md")).unwrap();
    assert!(
        doc.contains(example.trim_end()),
        "docs/protocol.md 10.1 differs from tests/python/video_example.py"
    );
    let mut v = Vehicle::start("example");
    let dir = std::env::temp_dir().join(format!("ads-video-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(python())
        .arg(root.join("tests/python/video_example.py"))
        .args([&v.car.video_endpoint(), "3"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let frames: u64 = stdout.lines().filter_map(|l| l.split(' ').next()?.parse::<u64>().ok()).sum();
    assert!(frames > 0, "{stdout}");
    let jpeg = std::fs::read(dir.join("newest.jpg")).unwrap();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
    std::fs::remove_dir_all(&dir).unwrap();
    // Its session had at most one frame in flight the whole time (it is the only viewer).
    let s = v.state();
    assert!(s.link.viewers.iter().all(|x| x.in_flight <= 1 && x.credits_ignored == 0), "{:?}", s.link);
}
