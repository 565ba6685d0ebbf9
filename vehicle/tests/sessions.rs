//! Places on the video link cannot be squatted, with the real `ads-vehicle` and real ZeroMQ
//! clients on loopback: hello-only clients give their places up to a viewer that credits its
//! frames, a session signed with the action key is never displaced by unsigned hellos (and a
//! signed hello takes an unsigned session's place), one address holds at most its share, and
//! a hello that gets no place is told why.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_protocol::{
    decode, decode_video_refusal, encode_video_request, sign_video_request, ActionKey, Credit, Message,
    VideoHello, VideoRefusal, VideoRequest, CODEC_JPEG,
};
use ads_testkit::{unique_name, TestVehicle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Long enough for anything that happens at all on a loaded machine; only against hangs.
const PATIENCE: Duration = Duration::from_secs(40);

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(test));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn vehicle(test: &str, config: &str, key: Option<&ActionKey>) -> TestVehicle {
    let dir = temp_dir(test);
    let path = dir.join("vehicle.toml");
    std::fs::write(&path, config).unwrap();
    let mut builder = TestVehicle::build(test)
        .binary(env!("CARGO_BIN_EXE_ads-vehicle"))
        .vehicle_id("car")
        .arg("--config")
        .arg(&path)
        .args(["--control", "truth"])
        .log("error");
    if let Some(key) = key {
        builder = builder.arg("--action-key").arg(write_key(&dir, key));
    }
    builder.spawn()
}

fn write_key(dir: &Path, key: &ActionKey) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("action.key");
    std::fs::write(&path, format!("{}\n", key.to_hex())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// What a client got on its socket.
#[derive(Debug)]
enum Got {
    Frame(u64),
    Refused(VideoRefusal),
}

struct Client {
    socket: zmq::Socket,
    key: Option<ActionKey>,
}

impl Client {
    fn connect(context: &zmq::Context, endpoint: &str, key: Option<&ActionKey>) -> Self {
        let socket = context.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        socket.connect(endpoint).unwrap();
        Self { socket, key: key.cloned() }
    }

    fn hello(&self) {
        let hello = VideoHello { codec: CODEC_JPEG.into(), codecs: vec![], max_kbps: None, full_size: false };
        let mut parts = encode_video_request("car", 1, 0, &VideoRequest::Hello(hello));
        if let Some(key) = &self.key {
            sign_video_request(&mut parts, key);
        }
        self.socket.send_multipart(parts, 0).unwrap();
    }

    fn credit(&self, frame_id: u64) {
        let parts = encode_video_request("car", 1, 0, &VideoRequest::Credit(Credit { frame_id, bytes: 1 }));
        self.socket.send_multipart(parts, 0).unwrap();
    }

    fn next(&self, wait: Duration) -> Option<Got> {
        if self.socket.poll(zmq::POLLIN, wait.as_millis() as i64).unwrap() == 0 {
            return None;
        }
        let parts = self.socket.recv_multipart(0).unwrap();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        if let Ok(refusal) = decode_video_refusal(&refs) {
            return Some(Got::Refused(refusal));
        }
        match decode(&refs).unwrap().message {
            Message::Frame(f) => Some(Got::Frame(f.frame_id)),
            other => panic!("not a frame on the video socket: {other:?}"),
        }
    }

    /// Says hello every 0.9 s and credits every frame until `frames` arrived; the refusals it
    /// got on the way. Panics after [`PATIENCE`].
    fn watch(&self, frames: usize) -> Vec<VideoRefusal> {
        let deadline = Instant::now() + PATIENCE;
        let mut refusals = Vec::new();
        let mut hello_at: Option<Instant> = None;
        let mut got = 0;
        while got < frames {
            assert!(Instant::now() < deadline, "{got} of {frames} frames; refused: {refusals:?}");
            if hello_at.is_none_or(|t| t.elapsed() > Duration::from_millis(900)) {
                hello_at = Some(Instant::now());
                self.hello();
            }
            match self.next(Duration::from_millis(100)) {
                Some(Got::Frame(id)) => {
                    self.credit(id);
                    got += 1;
                }
                Some(Got::Refused(r)) => refusals.push(r),
                None => {}
            }
        }
        refusals
    }

    /// Says hello (never a credit) and waits for a refusal for up to `wait`; frames are
    /// dropped uncredited.
    fn refusal(&self, wait: Duration) -> Option<VideoRefusal> {
        self.hello();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(Got::Refused(r)) = self.next(Duration::from_millis(50)) {
                return Some(r);
            }
        }
        None
    }
}

/// Twelve clients that only ever say hello (as an attacker without the key would), started
/// before the operator: the operator's viewer still gets its frames, and the squatters are
/// told they were displaced. Before sessions could be displaced it got none.
#[test]
fn hello_only_clients_give_their_places_to_a_viewer_that_credits() {
    let car = vehicle("squat", "[link]\nmax_sessions_per_peer = 0\nsession_idle_ms = 1000\n", None);
    let context = zmq::Context::new();
    let endpoint = car.video_endpoint();
    let rogues: Vec<Client> = (0..12).map(|_| Client::connect(&context, &endpoint, None)).collect();
    // Until all 8 places are held (each got its first frame), hellos kept up as the
    // protocol asks, so they never time out.
    let deadline = Instant::now() + PATIENCE;
    let mut holding = vec![false; rogues.len()];
    while holding.iter().filter(|&&h| h).count() < 8 {
        assert!(Instant::now() < deadline, "the rogues never got their places");
        for (rogue, holds) in rogues.iter().zip(&mut holding) {
            rogue.hello();
            *holds |= matches!(rogue.next(Duration::from_millis(10)), Some(Got::Frame(_)));
        }
    }
    let operator = Client::connect(&context, &endpoint, None);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let squatting = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut told = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for rogue in &rogues {
                    rogue.hello();
                    while let Some(got) = rogue.next(Duration::ZERO) {
                        told += usize::from(matches!(got, Got::Refused(ref r) if r.reason == "displaced"));
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            told
        })
    };
    operator.watch(60);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let displaced = squatting.join().unwrap();
    assert!(displaced >= 1, "no squatter was told it was displaced");
}

/// With the action key, a signed session keeps its place even while idle, against unsigned
/// hellos, which are told the link is full; a signed hello takes an unsigned session's
/// place. Before, the unsigned hello got silence and the signed one no place.
#[test]
fn signed_sessions_are_not_displaced_by_unsigned_hellos() {
    let key = ActionKey::from_bytes(&[5; 32]).unwrap();
    let config = "[link]\nmax_viewers = 1\nmax_sessions_per_peer = 0\nsession_idle_ms = 200\n";
    let car = vehicle("signed", config, Some(&key));
    let context = zmq::Context::new();
    let endpoint = car.video_endpoint();

    // An unsigned client holds the only place, crediting; a signed hello takes it.
    let unsigned = Client::connect(&context, &endpoint, None);
    unsigned.watch(5);
    let operator = Client::connect(&context, &endpoint, Some(&key));
    operator.watch(5);
    let deadline = Instant::now() + PATIENCE;
    let displaced = loop {
        assert!(Instant::now() < deadline, "the unsigned session was never told");
        if let Some(Got::Refused(r)) = unsigned.next(Duration::from_millis(100)) {
            break r;
        }
    };
    assert_eq!(displaced.reason, "displaced", "{displaced:?}");

    // The operator goes idle (no credit for longer than session_idle_ms): still its place.
    let held = match operator.next(PATIENCE) {
        Some(Got::Frame(id)) => id,
        other => panic!("no frame for the operator: {other:?}"),
    };
    std::thread::sleep(Duration::from_millis(600));
    let intruder = Client::connect(&context, &endpoint, None);
    let refused = intruder.refusal(PATIENCE).expect("an unsigned hello got no answer");
    assert_eq!(refused.reason, "full", "{refused:?}");
    // A hello with a MAC of another key is refused as such.
    let forger = Client::connect(&context, &endpoint, Some(&ActionKey::from_bytes(&[6; 32]).unwrap()));
    let forged = forger.refusal(PATIENCE).expect("a forged hello got no answer");
    assert_eq!(forged.reason, "bad_mac", "{forged:?}");
    // And the operator, back to crediting everything it has, goes on.
    operator.credit(held);
    let refusals = operator.watch(5);
    assert!(refusals.is_empty(), "the signed session was refused: {refusals:?}");
}

/// One address holds at most `link.max_sessions_per_peer` sessions; the next hello from it
/// is refused and told so (before: served, up to `max_viewers`).
#[test]
fn one_address_holds_at_most_its_share() {
    let car = vehicle("peercap", "[link]\nmax_sessions_per_peer = 2\n", None);
    let context = zmq::Context::new();
    let endpoint = car.video_endpoint();
    let first = Client::connect(&context, &endpoint, None);
    let second = Client::connect(&context, &endpoint, None);
    first.watch(3);
    second.watch(3);
    let third = Client::connect(&context, &endpoint, None);
    let refused = third.refusal(PATIENCE).expect("the third hello got no answer");
    assert_eq!(refused.reason, "peer_cap", "{refused:?}");
    assert!(refused.detail.contains("127.0.0.1"), "{refused:?}");
    // The two that hold their places keep them.
    first.watch(3);
    second.watch(3);
}

/// Payload bytes of a frame off `socket`, crediting it; `None` when nothing came in `wait`.
fn take_and_credit(socket: &zmq::Socket, wait: Duration) -> Option<usize> {
    if socket.poll(zmq::POLLIN, wait.as_millis() as i64).unwrap() == 0 {
        return None;
    }
    let parts = socket.recv_multipart(0).unwrap();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let wire = decode(&refs).ok()?;
    let Message::Frame(frame) = wire.message else { return None };
    let bytes = wire.payload.map_or(0, <[u8]>::len);
    let credit = VideoRequest::Credit(Credit { frame_id: frame.frame_id, bytes: bytes as u32 });
    socket.send_multipart(encode_video_request("car", 1, 0, &credit), 0).unwrap();
    Some(bytes)
}

#[test]
fn clients_without_the_key_share_a_small_rate_while_the_operator_watches() {
    let key = ActionKey::from_bytes(&[9; 32]).unwrap();
    let car = vehicle("share", "[link]\nmax_sessions_per_peer = 0\nunsigned_share_kbps = 200\n", Some(&key));
    let context = zmq::Context::new();
    let endpoint = car.video_endpoint();
    let operator = Client::connect(&context, &endpoint, Some(&key));
    let stranger = Client::connect(&context, &endpoint, None);
    // Both credit every frame at once (as alive as can be); the stranger's hello is unsigned.
    let (started, mut last_hello) = (Instant::now(), None::<Instant>);
    let (mut operator_frames, mut stranger_bytes, mut stranger_frames) = (0usize, 0usize, 0usize);
    let measured = Duration::from_secs(4);
    let from = Duration::from_secs(2);
    while started.elapsed() < from + measured {
        assert!(started.elapsed() < PATIENCE, "never finished");
        if last_hello.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
            last_hello = Some(Instant::now());
            operator.hello();
            stranger.hello();
        }
        let counting = started.elapsed() >= from;
        if take_and_credit(&operator.socket, Duration::from_millis(5)).is_some() && counting {
            operator_frames += 1;
        }
        while let Some(bytes) = take_and_credit(&stranger.socket, Duration::ZERO) {
            if counting {
                stranger_bytes += bytes;
                stranger_frames += 1;
            }
        }
    }
    let stranger_kbps = stranger_bytes as f64 * 8.0 / measured.as_secs_f64() / 1000.0;
    eprintln!(
        "operator {operator_frames} frames; stranger {stranger_frames} frames, {stranger_kbps:.0} kbit/s"
    );
    assert!(operator_frames > 0, "the operator got nothing");
    // 200 kbit/s is its share; its pacing allows a burst of a frame or two beyond that.
    assert!(stranger_kbps < 400.0, "the unsigned client took {stranger_kbps:.0} kbit/s, its share is 200");
}
