//! A measuring viewer: SUB on the vehicle's PUB socket and a DEALER session on its video
//! socket, through one shaped address; it credits every frame the way ads-viewer does, records
//! every frame and state, scores sampled frames against the ring's originals, and (the first
//! viewer) sends emergency stops and resumes and times their acknowledgements.

use super::quality;
use super::{ACTION_PORT, PUB_PORT, VIDEO_PORT};
use ads_protocol::{
    decode, encode_action, encode_video_request, Action, ActionRun, Command, Credit, Event, Message,
    VideoHello, VideoRequest, CODEC_H264, CODEC_JPEG,
};
use ads_shmem_ipc::{FrameReader, FrameReaderOptions, ReadMode, Wait};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frames kept for scoring: about 1.5 s at 30 fps.
const ORIGINALS_KEPT: usize = 48;
/// One delivered frame in this many is scored.
const SCORE_EVERY: usize = 6;

pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The ring's newest frames, copied out as they are published.
#[derive(Debug, Default)]
pub struct Originals {
    frames: Mutex<VecDeque<(u64, Arc<Vec<u8>>)>>,
    geometry: Mutex<Option<(usize, usize, usize)>>,
}

impl Originals {
    pub fn follow(ring: &str) -> anyhow::Result<Arc<Self>> {
        let originals = Arc::new(Self::default());
        let me = Arc::clone(&originals);
        let ring = ring.to_string();
        std::thread::Builder::new().name("originals".into()).spawn(move || {
            let mut reader = None;
            loop {
                let Some(r) = reader.as_mut() else {
                    match FrameReader::attach(
                        &ring,
                        FrameReaderOptions { mode: ReadMode::InOrder, expect: None },
                    ) {
                        Ok(r) => {
                            let g = r.geometry();
                            *me.geometry.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some((g.width as usize, g.height as usize, g.stride as usize));
                            reader = Some(r);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                    continue;
                };
                let mut out = Vec::new();
                match r.read_copy(Wait::Block(Duration::from_millis(100)), &mut out) {
                    Ok(Some(info)) => {
                        let mut frames = me.frames.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if frames.len() == ORIGINALS_KEPT {
                            frames.pop_front();
                        }
                        frames.push_back((info.stamp.id, Arc::new(out)));
                    }
                    Ok(None) => {}
                    Err(_) => reader = None,
                }
            }
        })?;
        Ok(originals)
    }

    /// (PSNR dB, SSIM) of a delivered JPEG against the original frame, if still kept.
    fn score(&self, frame_id: u64, jpeg: &[u8]) -> Option<(f64, f64)> {
        let image = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::BGR).ok()?;
        self.score_bgr(frame_id, &image.pixels, image.width, image.height, image.pitch)
    }

    /// (PSNR dB, SSIM) of a delivered picture (packed BGR) against the original frame.
    fn score_bgr(
        &self,
        frame_id: u64,
        pixels: &[u8],
        width: usize,
        height: usize,
        pitch: usize,
    ) -> Option<(f64, f64)> {
        let (w, h, stride) = (*self.geometry.lock().ok()?)?;
        let original = {
            let frames = self.frames.lock().ok()?;
            Arc::clone(&frames.iter().find(|(id, _)| *id == frame_id)?.1)
        };
        let got = quality::luma_bgr(pixels, width, height, pitch);
        let got = quality::resize(&got, width, height, w, h);
        let want = quality::luma_bgr(&original, w, h, stride);
        Some((quality::psnr(&want, &got), quality::ssim(&want, &got, w, h)))
    }
}

#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// The vehicle's host as this client reaches it (on loopback, an address shaped on its own).
    pub vehicle_host: String,
    /// The host the vehicle takes actions on.
    pub actions_host: String,
    /// Actions (and hellos, where the vehicle wants them signed) carry a MAC under this key.
    pub key: Option<ads_protocol::ActionKey>,
    pub send_actions: bool,
    /// Nothing before this is recorded.
    pub measure_from: Instant,
    /// False: a client that never returns a credit.
    pub credits: bool,
    /// Codec asked for: `jpeg` or `h264` (decoded here with openh264, every unit).
    pub codec: String,
    /// Print the vehicle's view of the newest session with every state.
    pub trace: bool,
    /// Heartbeats and quick reconnects on its sockets, as docs/protocol.md 1 asks.
    pub heartbeats: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct FrameRecord {
    pub frame_id: u64,
    pub capture_ns: u64,
    pub recv_ns: u64,
    pub bytes: usize,
    pub tier: u8,
    /// Time this client took to decode it (H.264 only; JPEG is decoded only when scored).
    pub decode_us: Option<u32>,
}

#[derive(Debug, Default)]
pub struct CaseRecord {
    pub frames: Vec<FrameRecord>,
    /// Every measured state: (received, captured), wall ns.
    pub state_times: Vec<(u64, u64)>,
    /// Every acknowledged action: (sent, acknowledged) wall ns, and whether it was an e-stop.
    pub acks: Vec<(u64, u64, bool)>,
    pub actions_sent: usize,
    pub scores: Vec<(f64, f64)>,
    /// Frames that arrived with an id not above one received before (a backlog).
    pub out_of_order: usize,
    /// Most frames in flight to any session, from the vehicle's state.
    pub max_in_flight: u8,
    /// The vehicle's encode time per frame, µs, from its state (H.264: all its tiers).
    pub encode_us: Vec<f64>,
    /// H.264 units that did not decode here, and keyframes it asked for.
    pub decode_errors: usize,
    pub codec: String,
    /// From the vehicle's state at the first and the last measured state: pictures the H.264
    /// rate control skipped (all sessions), and frames the newest session's pacing skipped.
    pub rate_skips: Option<(u64, u64)>,
    pub pace_skips: Option<(u64, u64)>,
    /// Teleop (assist mode, drive commands at 25 Hz): the vehicle's own figures from the last
    /// state, input (`issued_ns`) → control loop, ms, and the commands it took.
    pub drive_p50_ms: Option<f32>,
    pub drive_p99_ms: Option<f32>,
    pub drives_sent: usize,
    pub drives_taken: u64,
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// A link outage in a case: when it went down and came back, wall ns.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub down_ns: u64,
    pub up_ns: u64,
}

/// A frame or a state no older than this is fresh (what an operator can act on).
const FRESH_NS: u64 = 200_000_000;
/// A state older than this shown after the link came back is a stale one.
const STALE_NS: u64 = 1_000_000_000;

/// What happened after the link came back: how long until a fresh frame and a fresh state
/// arrived, how many seconds-old states arrived first (a client that shows every state shows
/// them), and when the e-stops sent into the outage were acknowledged.
fn after_outage(record: &CaseRecord, outage: Outage) -> Value {
    let first_fresh = |times: &mut dyn Iterator<Item = (u64, u64)>| {
        times
            .filter(|&(recv, capture)| recv >= outage.up_ns && recv.saturating_sub(capture) <= FRESH_NS)
            .map(|(recv, _)| (recv - outage.up_ns) as f64 / 1e6)
            .next()
    };
    let fresh_frame_ms = first_fresh(&mut record.frames.iter().map(|f| (f.recv_ns, f.capture_ns)));
    let fresh_state_ms = first_fresh(&mut record.state_times.iter().copied());
    let stale_states = record
        .state_times
        .iter()
        .filter(|&&(recv, capture)| recv >= outage.up_ns && recv - capture > STALE_NS)
        .count();
    let oldest_state_ms = record
        .state_times
        .iter()
        .filter(|&&(recv, _)| recv >= outage.up_ns)
        .map(|&(recv, capture)| recv.saturating_sub(capture) as f64 / 1e6)
        .fold(0.0, f64::max);
    let estop_after_ms: Vec<f64> = record
        .acks
        .iter()
        .filter(|&&(sent, _, estop)| estop && sent >= outage.down_ns && sent < outage.up_ns)
        .map(|&(_, acked, _)| acked.saturating_sub(outage.up_ns) as f64 / 1e6)
        .collect();
    json!({
        "fresh_frame_ms": fresh_frame_ms,
        "fresh_state_ms": fresh_state_ms,
        "stale_states": stale_states,
        "oldest_state_ms": oldest_state_ms,
        "estop_in_outage_acked_ms": estop_after_ms,
    })
}

impl CaseRecord {
    pub fn summary(
        &self,
        seconds: f64,
        link_kbps: f64,
        step_ns: Option<u64>,
        outage: Option<Outage>,
    ) -> Value {
        // Acknowledgements that waited for the link to come back are reported apart.
        let across_outage =
            |sent: u64, acked: u64| outage.is_some_and(|o| sent < o.up_ns && acked > o.down_ns);
        let ack_ms: Vec<f64> = self
            .acks
            .iter()
            .filter(|&&(sent, acked, estop)| estop && !across_outage(sent, acked))
            .map(|&(sent, acked, _)| acked.saturating_sub(sent) as f64 / 1e6)
            .collect();
        // The longest silence between two states, outside an outage's window (and the 1 s
        // after it).
        let state_gap_max_ms = self
            .state_times
            .windows(2)
            .filter(|w| outage.is_none_or(|o| w[1].0 < o.down_ns || w[0].0 > o.up_ns + 1_000_000_000))
            .map(|w| w[1].0.saturating_sub(w[0].0) as f64 / 1e6)
            .fold(0.0, f64::max);
        // Ages outside an outage and the second after it (reported apart, in "outage").
        let steady = |recv: u64| outage.is_none_or(|o| recv < o.down_ns || recv > o.up_ns + 1_000_000_000);
        let ages: Vec<f64> = self
            .frames
            .iter()
            .filter(|f| steady(f.recv_ns))
            .map(|f| (f.recv_ns as f64 - f.capture_ns as f64) / 1e6)
            .collect();
        let state_ages_ms: Vec<f64> = self
            .state_times
            .iter()
            .filter(|&&(recv, _)| steady(recv))
            .map(|&(recv, capture)| (recv as f64 - capture as f64) / 1e6)
            .collect();
        let bytes: usize = self.frames.iter().map(|f| f.bytes).sum();
        let goodput_kbps = bytes as f64 * 8.0 / seconds / 1000.0;
        let mut tiers: Vec<u8> = self.frames.iter().map(|f| f.tier).collect();
        tiers.sort_unstable();
        tiers.dedup();
        let last_tier = self.frames.last().map(|f| f.tier);
        // After a step: how long until no frame was 150 ms old any more.
        let recovery_ms = step_ns.map(|step| {
            self.frames
                .iter()
                .filter(|f| f.recv_ns > step && f.recv_ns - f.capture_ns >= 150_000_000)
                .map(|f| (f.recv_ns - step) as f64 / 1e6)
                .fold(0.0, f64::max)
        });
        let mean = |v: Vec<f64>| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
        let decode_ms: Vec<f64> =
            self.frames.iter().filter_map(|f| f.decode_us).map(|us| f64::from(us) / 1e3).collect();
        json!({
            "frames": self.frames.len(),
            "fps": self.frames.len() as f64 / seconds,
            "age_p50_ms": percentile(&ages, 0.5),
            "age_p99_ms": percentile(&ages, 0.99),
            "age_max_ms": percentile(&ages, 1.0),
            "goodput_kbps": goodput_kbps,
            "goodput_share_pct": 100.0 * goodput_kbps / link_kbps,
            "state_age_p99_ms": percentile(&state_ages_ms, 0.99),
            "states": self.state_times.len(),
            "state_gap_max_ms": state_gap_max_ms,
            "estop_ack_p50_ms": percentile(&ack_ms, 0.5),
            "estop_ack_p99_ms": percentile(&ack_ms, 0.99),
            "actions_sent": self.actions_sent,
            "actions_acked": self.acks.len(),
            "outage": outage.map(|o| after_outage(self, o)),
            "psnr_db": mean(self.scores.iter().map(|s| s.0).collect()),
            "ssim": mean(self.scores.iter().map(|s| s.1).collect()),
            "ssim_min": self.scores.iter().map(|s| s.1).fold(f64::NAN, f64::min),
            "scored": self.scores.len(),
            "tiers": tiers.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
            "last_tier": last_tier,
            "mean_frame_kb": bytes as f64 / self.frames.len().max(1) as f64 / 1000.0,
            "recovery_ms": recovery_ms,
            "out_of_order": self.out_of_order,
            "max_in_flight": self.max_in_flight,
            "codec": self.codec,
            "encode_p50_ms": percentile(&self.encode_us, 0.5) / 1e3,
            "encode_p99_ms": percentile(&self.encode_us, 0.99) / 1e3,
            "decode_p50_ms": percentile(&decode_ms, 0.5),
            "decode_errors": self.decode_errors,
            "h264_rate_skips": self.rate_skips.map(|(a, b)| b.saturating_sub(a)),
            "pacing_skips": self.pace_skips.map(|(a, b)| b.saturating_sub(a)),
            "drive_p50_ms": self.drive_p50_ms,
            "drive_p99_ms": self.drive_p99_ms,
            "drives_sent": self.drives_sent,
            "drives_taken": self.drives_taken,
        })
    }
}

/// An action sent and not yet acknowledged.
struct Pending {
    sent_ns: u64,
    estop: bool,
    parts: Vec<Vec<u8>>,
    last_sent: Instant,
}

const RESEND_ESTOP: Duration = Duration::from_millis(250);

pub fn spawn(
    plan: ClientPlan,
    record: Arc<Mutex<CaseRecord>>,
    originals: Arc<Originals>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Err(e) = run(&plan, &record, &originals, &stop) {
            eprintln!("measuring client {}: {e}", plan.vehicle_host);
        }
    })
}

fn run(
    plan: &ClientPlan,
    record: &Mutex<CaseRecord>,
    originals: &Originals,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let context = zmq::Context::new();
    // As docs/protocol.md 1 asks of a client: heartbeats notice a dead link within 2 s and
    // drop what was queued for it; reconnects at most 250 ms apart pick up the link's return.
    let link_options = |socket: &zmq::Socket| -> zmq::Result<()> {
        if !plan.heartbeats {
            return Ok(());
        }
        socket.set_heartbeat_ivl(500)?;
        socket.set_heartbeat_timeout(2000)?;
        socket.set_heartbeat_ttl(2000)?;
        socket.set_reconnect_ivl(100)?;
        socket.set_reconnect_ivl_max(250)?;
        socket.set_connect_timeout(250)
    };
    let sub = context.socket(zmq::SUB)?;
    link_options(&sub)?;
    sub.set_subscribe(b"state")?;
    sub.set_subscribe(b"event")?;
    sub.set_linger(0)?;
    sub.connect(&format!("tcp://{}:{PUB_PORT}", plan.vehicle_host))?;
    let video = context.socket(zmq::DEALER)?;
    link_options(&video)?;
    video.set_linger(0)?;
    video.connect(&format!("tcp://{}:{VIDEO_PORT}", plan.vehicle_host))?;
    let actions = context.socket(zmq::PUB)?;
    link_options(&actions)?;
    actions.set_linger(0)?;
    actions.connect(&format!("tcp://{}:{ACTION_PORT}", plan.actions_host))?;
    let sender = format!("linkbench-{}-{}", std::process::id(), plan.vehicle_host);
    // Actions awaiting their ack: when sent (wall ns), and whether an e-stop.
    // An e-stop is sent again every 250 ms until acknowledged, as ads-viewer does (a
    // connection that died in an outage took it along).
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let (mut last_hello, mut last_action, mut last_frame) = (None::<Instant>, Instant::now(), Instant::now());
    let (mut action_seq, mut estop_next, mut delivered, mut last_id) = (wall_ns(), true, 0usize, None::<u64>);
    // The vehicle's run from its newest state (id, run clock, when heard): actions name it.
    let mut run: Option<(String, u64, Instant)> = None;
    let stamp = |run: &Option<(String, u64, Instant)>| match run {
        Some((id, run_ns, heard)) => ActionRun {
            run_id: id.clone(),
            expires_run_ns: run_ns + heard.elapsed().as_nanos() as u64 + 5_000_000_000,
        },
        // Only an e-stop may go before a state was heard.
        None => ActionRun { run_id: String::new(), expires_run_ns: 0 },
    };
    record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).codec = plan.codec.clone();
    let mut h264 = openh264::decoder::Decoder::with_api_config(
        openh264::OpenH264API::from_source(),
        openh264::decoder::DecoderConfig::new(),
    )?;
    let mut picture: Vec<u8> = Vec::new();
    // Teleop alongside: assist mode (the autopilot keeps the lane), throttle from here.
    let (mut assist_sent, mut last_drive) = (false, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if plan.send_actions && run.is_some() && now >= plan.measure_from {
            let command = if !assist_sent {
                assist_sent = true;
                Some(Command::SetDriveMode { mode: ads_protocol::PilotMode::Assist })
            } else if now.duration_since(last_drive) >= Duration::from_millis(40) {
                last_drive = now;
                Some(Command::Drive { steering: 0.0, throttle: 0.3, lease_ms: 250, issued_ns: wall_ns() })
            } else {
                None
            };
            if let Some(command) = command {
                action_seq += 1;
                let mut run_stamp = stamp(&run);
                if matches!(command, Command::Drive { .. }) {
                    // As the viewer does: a drive command expires soon (twice its lease).
                    run_stamp.expires_run_ns -= 5_000_000_000 - 500_000_000;
                    record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drives_sent += 1;
                }
                let action = Action {
                    id: format!("{sender}-{action_seq}"),
                    sender: sender.clone(),
                    run: run_stamp,
                    command,
                };
                actions.send_multipart(
                    encode_action("*", action_seq, wall_ns(), &action, plan.key.as_ref()),
                    zmq::DONTWAIT,
                )?;
            }
        }
        // A hello every second; every 200 ms while no frame comes (as ads-viewer does), so a
        // session closed during an outage is opened again as soon as the link is back.
        let starved = now.duration_since(last_frame) > Duration::from_millis(500);
        let hello_every = if starved { Duration::from_millis(200) } else { Duration::from_secs(1) };
        if last_hello.is_none_or(|t| now.duration_since(t) >= hello_every) {
            last_hello = Some(now);
            let codecs = if plan.codec == CODEC_H264 { vec![CODEC_H264.into()] } else { vec![] };
            let hello = VideoRequest::Hello(VideoHello {
                codec: CODEC_JPEG.into(),
                codecs,
                max_kbps: None,
                full_size: false,
            });
            let mut parts = encode_video_request("*", 0, wall_ns(), &hello);
            // The operator's hellos are signed where actions are: its session cannot be
            // displaced by unsigned ones (docs/protocol.md 2.1).
            if let Some(key) = &plan.key {
                ads_protocol::sign_video_request(&mut parts, key);
            }
            video.send_multipart(parts, zmq::DONTWAIT)?;
        }
        // An emergency stop, then a resume, every 1.5 s; each acknowledgement timed.
        // An emergency stop, then its reset and a resume (the latch needs both), every 1.5 s.
        if plan.send_actions
            && run.is_some()
            && now >= plan.measure_from
            && now.duration_since(last_action) >= Duration::from_millis(1500)
        {
            last_action = now;
            let commands: &[Command] =
                if estop_next { &[Command::EmergencyStop] } else { &[Command::Reset, Command::Resume] };
            estop_next = !estop_next;
            for command in commands {
                action_seq += 1;
                let id = format!("{sender}-{action_seq}");
                let action = Action {
                    id: id.clone(),
                    sender: sender.clone(),
                    run: stamp(&run),
                    command: command.clone(),
                };
                let parts = encode_action("*", action_seq, wall_ns(), &action, plan.key.as_ref());
                actions.send_multipart(parts.clone(), zmq::DONTWAIT)?;
                let estop = matches!(command, Command::EmergencyStop);
                pending.insert(id, Pending { sent_ns: wall_ns(), estop, parts, last_sent: now });
                record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).actions_sent += 1;
            }
        }
        for p in pending.values_mut().filter(|p| p.estop && now.duration_since(p.last_sent) >= RESEND_ESTOP) {
            p.last_sent = now;
            let _ = actions.send_multipart(p.parts.clone(), zmq::DONTWAIT);
        }
        let mut items = [sub.as_poll_item(zmq::POLLIN), video.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, 5)?;
        while let Ok(parts) = video.recv_multipart(zmq::DONTWAIT) {
            let recv_ns = wall_ns();
            last_frame = Instant::now();
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let Ok(wire) = decode(&refs) else { continue };
            let (Message::Frame(info), Some(jpeg)) = (&wire.message, wire.payload) else { continue };
            if plan.credits {
                let credit = Credit { frame_id: info.frame_id, bytes: jpeg.len() as u32 };
                video.send_multipart(
                    encode_video_request("*", 0, wall_ns(), &VideoRequest::Credit(credit)),
                    zmq::DONTWAIT,
                )?;
            }
            // Every H.264 unit is decoded (the next ones refer to it); a failure asks for a
            // keyframe, as ads-viewer does.
            let mut decode_us = None;
            let mut decoded = None;
            if info.codec == CODEC_H264 {
                use openh264::formats::YUVSource as _;
                let started = Instant::now();
                match h264.decode(jpeg) {
                    Ok(Some(yuv)) => {
                        let (w, h) = yuv.dimensions();
                        picture.resize(w * h * 3, 0);
                        yuv.write_rgb8(&mut picture);
                        decoded = Some((w, h));
                    }
                    _ => {
                        record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).decode_errors += 1;
                        let key = VideoRequest::Keyframe(ads_protocol::KeyframeRequest { after_frame_id: 0 });
                        video.send_multipart(encode_video_request("*", 0, wall_ns(), &key), zmq::DONTWAIT)?;
                    }
                }
                decode_us = Some(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            if Instant::now() < plan.measure_from {
                continue;
            }
            let mut r = record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last_id.is_some_and(|last| info.frame_id <= last) {
                r.out_of_order += 1;
            }
            last_id = Some(info.frame_id);
            r.frames.push(FrameRecord {
                frame_id: info.frame_id,
                capture_ns: wire.capture_ns,
                recv_ns,
                bytes: jpeg.len(),
                tier: info.tier,
                decode_us,
            });
            drop(r);
            delivered += 1;
            if delivered % SCORE_EVERY == 0 {
                let score = match decoded {
                    Some((w, h)) => {
                        // RGB from the decoder; the score reads BGR.
                        picture.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
                        originals.score_bgr(info.frame_id, &picture, w, h, w * 3)
                    }
                    None if info.codec == CODEC_JPEG => originals.score(info.frame_id, jpeg),
                    None => None,
                };
                if let Some(score) = score {
                    record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).scores.push(score);
                }
            }
        }
        while let Ok(parts) = sub.recv_multipart(zmq::DONTWAIT) {
            let recv_ns = wall_ns();
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let Ok(wire) = decode(&refs) else { continue };
            let measuring = Instant::now() >= plan.measure_from;
            if let Message::State(s) = &wire.message {
                run = Some((s.commands.run_id.clone(), s.commands.run_ns, Instant::now()));
            }
            match wire.message {
                Message::State(s) if measuring => {
                    let mut r = record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    r.state_times.push((recv_ns, wire.capture_ns));
                    r.drive_p50_ms = s.teleop.latency_p50_ms;
                    r.drive_p99_ms = s.teleop.latency_p99_ms;
                    r.drives_taken = s.teleop.taken;
                    let most = s.link.viewers.iter().map(|v| v.in_flight).max().unwrap_or(0);
                    r.max_in_flight = r.max_in_flight.max(most);
                    let skips = s.link.h264_rate_skips;
                    r.rate_skips = Some(r.rate_skips.map_or((skips, skips), |(a, _)| (a, skips)));
                    if plan.trace {
                        if let Some(v) = s.link.viewers.iter().max_by_key(|v| v.session) {
                            eprintln!(
                                "link {}: goodput {} kbit/s, sent {} kbit/s, {} fps, tier {}, delivery {:.1} ms, in flight {}, skipped {}",
                                plan.vehicle_host, v.goodput_kbps, v.sent_kbps, v.fps, v.tier, v.delivery_ms, v.in_flight, v.frames_skipped
                            );
                        }
                    }
                    if let Some(newest) = s.link.viewers.iter().max_by_key(|v| v.session) {
                        let n = newest.frames_skipped;
                        r.pace_skips = Some(r.pace_skips.map_or((n, n), |(a, _)| (a, n)));
                    }
                    let encode_us =
                        if plan.codec == CODEC_H264 { s.link.h264_encode_us } else { s.timings.encode_us };
                    if encode_us > 0 {
                        r.encode_us.push(f64::from(encode_us));
                    }
                }
                Message::Event(Event::Ack { action_id, .. }) => {
                    if let Some(p) = pending.remove(&action_id) {
                        let mut r = record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        r.acks.push((p.sent_ns, recv_ns, p.estop));
                    }
                }
                _ => {}
            }
        }
    }
    // Leave the car driving for the next case: autopilot (which holds) and, after an e-stop,
    // its reset; then resume.
    if plan.send_actions {
        let after_estop: &[Command] = if estop_next { &[] } else { &[Command::Reset] };
        let autopilot = Command::SetDriveMode { mode: ads_protocol::PilotMode::Autopilot };
        for command in after_estop.iter().cloned().chain([autopilot, Command::Resume]) {
            action_seq += 1;
            let action = Action {
                id: format!("{sender}-{action_seq}"),
                sender: sender.clone(),
                run: stamp(&run),
                command,
            };
            let _ = actions
                .send_multipart(encode_action("*", action_seq, wall_ns(), &action, plan.key.as_ref()), 0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
