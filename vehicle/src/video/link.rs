//! The video socket: a ROUTER with one session per viewer. A viewer's DEALER says hello, then
//! returns a credit for every frame; a frame goes to a viewer only while it holds a credit
//! (at most `link.frames_in_flight`), so nothing queues however slow its link is, and its
//! goodput is measured from the credits' timing. Each frame is encoded once per tier that
//! some viewer wants right now; with nobody ready, not at all.
//!
//! Clients are untrusted: a credit only returns a frame that is in flight, a hello can only
//! lower the configured cap, and sessions are per connection, so nothing one client sends
//! reaches another's session. Places cannot be squatted ([`super::admission`]): when all are
//! taken, a new hello closes the session idle longest (no credit for a frame it was sent
//! within `link.session_idle_ms`); hellos signed with the action key hold places unsigned
//! ones never take; one address holds at most `link.max_sessions_per_peer`. A hello that
//! gets no place is told why (`refused`).

use super::admission::{self, Admission, Candidate};
use super::codec::{Batch, StreamCodec};
use super::h264::H264Tiers;
use super::jpeg::JpegCodec;
use super::picture::SourceImage;
use super::session::{Session, SessionRules};
use crate::config::LinkSection;
use ads_protocol::{
    decode_video_request, encode, encode_video_refusal, ActionKey, FrameInfo, LinkState, Message,
    VideoRefusal, VideoRequest, ViewerLink,
};
use ads_shmem_ipc::clock;
use anyhow::Context as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How often the shared [`LinkState`] snapshot is refreshed.
const STATS_EVERY_NS: u64 = 250_000_000;

/// What the video link reports to the vehicle's state.
#[derive(Debug, Default)]
pub struct VideoStats {
    pub link: Mutex<LinkState>,
    /// Requests that did not decode, hellos that got no place or asked for another codec.
    pub requests_refused: AtomicU64,
    /// Idle sessions closed to give their place to a new hello.
    pub sessions_displaced: AtomicU64,
}

pub struct VideoLink {
    socket: zmq::Socket,
    rules: SessionRules,
    /// The codecs this vehicle speaks; a session's `codec` indexes them. JPEG first, always.
    codecs: Vec<Box<dyn StreamCodec>>,
    sessions: HashMap<Vec<u8>, Session>,
    /// Per-session frame sequence numbers (the envelope's `seq`).
    seqs: HashMap<Vec<u8>, u64>,
    next_session: u64,
    max_viewers: usize,
    max_per_peer: usize,
    idle_ns: u64,
    /// `link.unsigned_share_kbps`: what unsigned sessions share while a signed one watches.
    unsigned_share_kbps: u32,
    /// Signs hellos (the action key); `None`: every session is unsigned.
    key: Option<ActionKey>,
    vehicle_id: String,
    video_port: u16,
    encodes: std::collections::VecDeque<u64>,
    stats: Arc<VideoStats>,
    last_stats_ns: u64,
}

impl std::fmt::Debug for VideoLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoLink").field("sessions", &self.sessions.len()).finish_non_exhaustive()
    }
}

/// A frame that went out, for the broadcaster's counters.
#[derive(Debug, Default)]
pub struct SendReport {
    pub encode_us: u64,
    pub sent: usize,
}

impl VideoLink {
    /// Binds the ROUTER socket (errors surface here, before any thread starts).
    pub fn bind(
        context: &zmq::Context,
        config: &LinkSection,
        vehicle_id: &str,
        frame_size: (u32, u32),
        key: Option<ActionKey>,
        stats: Arc<VideoStats>,
    ) -> anyhow::Result<Self> {
        let socket = context.socket(zmq::ROUTER).context("creating the video socket")?;
        // A send to a viewer that is gone fails (and ends its session) instead of vanishing.
        socket.set_router_mandatory(true)?;
        // Credits bound what is in flight; these only keep ZeroMQ and the kernel from
        // holding more than that even for a client that misbehaves.
        socket.set_sndhwm(4)?;
        socket.set_rcvhwm(1000)?;
        socket.set_sndbuf(64 * 1024)?;
        socket.set_linger(0)?;
        socket.set_maxmsgsize(4096)?;
        // Video in Wi-Fi's video class, behind the state and acks (docs/deployment.md).
        socket.set_tos(i32::from(config.dscp) << 2)?;
        socket
            .bind(&config.endpoint)
            .with_context(|| format!("binding the video socket to {}", config.endpoint))?;
        let video_port = socket
            .get_last_endpoint()
            .ok()
            .and_then(Result::ok)
            .and_then(|e| e.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .unwrap_or(0);
        let rules = SessionRules {
            frames_in_flight: config.frames_in_flight as usize,
            // H.264's own window comes with its tiers (`with_h264`).
            stream_frames_in_flight: config.frames_in_flight as usize,
            stream_bps: (250e3, 6e6),
            target_age_ns: u64::from(config.target_frame_age_ms) * 1_000_000,
            max_fps: config.max_fps,
            min_fps: config.min_fps,
            cap_bps: (config.max_kbps_per_viewer > 0).then(|| f64::from(config.max_kbps_per_viewer) * 1000.0),
            timeout_ns: u64::from(config.session_timeout_ms) * 1_000_000,
        };
        Ok(Self {
            socket,
            rules,
            codecs: vec![Box::new(
                JpegCodec::new(config, frame_size).context("creating the JPEG compressor")?,
            )],
            sessions: HashMap::new(),
            seqs: HashMap::new(),
            next_session: 1,
            max_viewers: config.max_viewers as usize,
            max_per_peer: config.max_sessions_per_peer as usize,
            idle_ns: u64::from(config.session_idle_ms) * 1_000_000,
            unsigned_share_kbps: config.unsigned_share_kbps,
            key,
            vehicle_id: vehicle_id.to_string(),
            video_port,
            encodes: std::collections::VecDeque::new(),
            stats,
            last_stats_ns: 0,
        })
    }

    /// Offers H.264 to viewers whose hello accepts it (unless `[h264] enabled = false`).
    pub fn with_h264(mut self, tiers: H264Tiers) -> Self {
        self.rules.stream_frames_in_flight = tiers.frames_in_flight();
        self.rules.stream_bps = tiers.bps_range();
        if tiers.enabled() {
            self.codecs.push(Box::new(tiers));
        }
        self
    }

    /// The codec a hello gets: the first of its list this vehicle speaks, else its `codec`.
    fn pick_codec(&self, hello: &ads_protocol::VideoHello) -> Option<usize> {
        let speaks = |c: &str| self.codecs.iter().position(|codec| codec.name() == c);
        hello.codecs.iter().find_map(|c| speaks(c)).or_else(|| speaks(&hello.codec))
    }

    /// Ends a session: its codec forgets it too.
    fn close(&mut self, identity: &[u8]) {
        if let Some(session) = self.sessions.remove(identity) {
            self.codecs[session.codec].leave(identity);
        }
        self.seqs.remove(identity);
    }

    /// Whether some viewer has a frame in flight (its credit may arrive any moment).
    pub fn awaiting_credits(&self) -> bool {
        self.sessions.values().any(|s| s.in_flight() > 0)
    }

    /// Waits up to `timeout_ms` for a request.
    pub fn wait(&self, timeout_ms: i64) {
        let _ = self.socket.poll(zmq::POLLIN, timeout_ms);
    }

    /// The rate a hello's session is held to, kbit/s: what it asked for, and for an unsigned
    /// session while a signed one watches, its share of `link.unsigned_share_kbps` (applied
    /// at each hello, so within a second of a signed session coming or going).
    fn asked_kbps(&self, identity: &[u8], signed: bool, asked: Option<u32>) -> Option<u32> {
        let share = self.unsigned_share_kbps;
        let signed = signed || self.sessions.get(identity).is_some_and(|s| s.signed);
        let signed_watching = self.sessions.values().any(|s| s.signed);
        if share == 0 || signed || !signed_watching {
            return asked;
        }
        let unsigned = self.sessions.iter().filter(|(id, s)| !s.signed || id.as_slice() == identity).count();
        let mine = (share / u32::try_from(unsigned.max(1)).unwrap_or(u32::MAX)).max(1);
        Some(asked.filter(|&k| k > 0).map_or(mine, |k| k.min(mine)))
    }

    /// Takes every request that arrived, and forgets silent sessions.
    pub fn receive(&mut self) {
        while let Some((parts, peer)) = self.recv() {
            let now = clock::monotonic_ns();
            let Some((identity, rest)) = parts.split_first() else { continue };
            // A hello may carry a third part, its MAC (signed with the action key).
            let (request, mac) = match rest {
                [topic, envelope, mac] if topic.as_slice() == b"hello" => (&rest[..2], Some((envelope, mac))),
                _ => (rest, None),
            };
            let refs: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
            match decode_video_request(&refs) {
                Ok(VideoRequest::Hello(hello)) => {
                    let signed = match (mac, &self.key) {
                        (Some((envelope, mac)), Some(key)) => {
                            if key.verify(envelope, mac).is_err() {
                                self.refuse_hello(
                                    identity,
                                    "bad_mac",
                                    "the hello's MAC does not match the action key".into(),
                                );
                                continue;
                            }
                            true
                        }
                        // Without a key there is nothing to check it against: unsigned.
                        _ => false,
                    };
                    let Some(codec) = self.pick_codec(&hello) else {
                        let detail =
                            format!("no codec of {:?} {:?} is spoken here", hello.codec, hello.codecs);
                        self.refuse_hello(identity, "codec", detail);
                        continue;
                    };
                    let asked_kbps = self.asked_kbps(identity, signed, hello.max_kbps);
                    if let Some(session) = self.sessions.get_mut(identity) {
                        session.hello(&self.rules, asked_kbps, now);
                        session.set_full_size(hello.full_size);
                        session.signed |= signed;
                        if session.codec != codec {
                            self.codecs[session.codec].leave(identity);
                            session.codec = codec;
                            self.codecs[codec].join(identity);
                        }
                        continue;
                    }
                    if !self.admit(identity, peer.as_deref(), signed, now) {
                        continue;
                    }
                    let number = self.next_session;
                    self.next_session += 1;
                    tracing::info!(
                        session = number,
                        signed,
                        peer = peer.as_deref().unwrap_or("?"),
                        "video viewer connected"
                    );
                    let mut session = Session::new(number, &self.rules, asked_kbps, now);
                    session.set_full_size(hello.full_size);
                    session.codec = codec;
                    session.signed = signed;
                    session.peer = peer;
                    self.codecs[codec].join(identity);
                    self.sessions.insert(identity.clone(), session);
                }
                Ok(VideoRequest::Credit(credit)) => match self.sessions.get_mut(identity) {
                    Some(session) => session.credit(&self.rules, credit.frame_id, now),
                    None => self.refuse(format_args!("a credit without a session")),
                },
                Ok(VideoRequest::Keyframe(_)) => {
                    let codec = self.sessions.get(identity).map(|s| s.codec);
                    if !codec.is_some_and(|c| self.codecs[c].request_keyframe(identity, now)) {
                        self.refuse(format_args!("a keyframe request outside an H.264 session"));
                    }
                }
                Err(e) => self.refuse(format_args!("a malformed request: {e}")),
            }
        }
        let now = clock::monotonic_ns();
        let silent: Vec<Vec<u8>> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expired(&self.rules, now))
            .map(|(id, _)| id.clone())
            .collect();
        for identity in silent {
            if let Some(s) = self.sessions.get(&identity) {
                tracing::info!(session = s.number, "video viewer silent: session closed");
            }
            self.close(&identity);
        }
    }

    /// One message off the socket, and the address of the peer that sent it.
    fn recv(&self) -> Option<(Vec<Vec<u8>>, Option<String>)> {
        let mut parts = Vec::new();
        let mut peer = None;
        loop {
            let mut message = self.socket.recv_msg(zmq::DONTWAIT).ok()?;
            // libzmq attaches the connection's metadata to the messages it received (the
            // routing id part it made up has none).
            if peer.is_none() {
                peer = message.gets("Peer-Address").map(str::to_owned);
            }
            let more = message.get_more();
            parts.push(message.to_vec());
            if !more {
                return Some((parts, peer));
            }
        }
    }

    /// Finds a place for a new session (closing an idle one if it must); `false`: refused
    /// and told why.
    fn admit(&mut self, identity: &[u8], peer: Option<&str>, signed: bool, now_ns: u64) -> bool {
        let candidates: Vec<Candidate> = self
            .sessions
            .iter()
            .map(|(id, s)| Candidate {
                identity: id.clone(),
                signed: s.signed,
                same_peer: peer.is_some() && s.peer.as_deref() == peer,
                idle_since_ns: s.idle_since(self.idle_ns, now_ns),
            })
            .collect();
        let limits = admission::Limits { max_sessions: self.max_viewers, max_per_peer: self.max_per_peer };
        match admission::decide(&candidates, limits, signed) {
            Admission::Open => true,
            Admission::Displace(victim) => {
                let number = self.sessions.get(&victim).map_or(0, |s| s.number);
                tracing::info!(session = number, "video session idle: closed for a new viewer");
                self.stats.sessions_displaced.fetch_add(1, Ordering::Relaxed);
                let detail = format!(
                    "no credit for {} ms while every place was wanted (link.session_idle_ms)",
                    self.idle_ns / 1_000_000
                );
                self.tell(&victim, "displaced", detail);
                self.close(&victim);
                true
            }
            Admission::Full => {
                let detail = format!(
                    "all {} places (link.max_viewers) are held by sessions that may not be displaced",
                    self.max_viewers
                );
                self.refuse_hello(identity, "full", detail);
                false
            }
            Admission::PeerCap => {
                let detail = format!(
                    "{} holds {} sessions already (link.max_sessions_per_peer)",
                    peer.unwrap_or("this address"),
                    self.max_per_peer
                );
                self.refuse_hello(identity, "peer_cap", detail);
                false
            }
        }
    }

    /// Refuses a hello: counted, and the client is told why.
    fn refuse_hello(&self, identity: &[u8], reason: &str, detail: String) {
        self.refuse(format_args!("a hello ({reason}: {detail})"));
        self.tell(identity, reason, detail);
    }

    /// Sends a client a `refused` message (never blocks; a client that cannot take it misses it).
    fn tell(&self, identity: &[u8], reason: &str, detail: String) {
        let refusal = VideoRefusal { reason: reason.to_string(), detail };
        let parts = encode_video_refusal(&self.vehicle_id, 0, clock::wall_ns(), &refusal);
        let message: [&[u8]; 3] = [identity, &parts[0], &parts[1]];
        if let Err(e) = self.socket.send_multipart(message, zmq::DONTWAIT) {
            tracing::trace!("video refusal: {e}");
        }
    }

    fn refuse(&self, what: std::fmt::Arguments<'_>) {
        let n = self.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
        // A flooding client must not flood the log.
        if n < 5 || n % 1000 == 0 {
            tracing::warn!("video socket: ignored {what} ({} so far)", n + 1);
        }
    }

    /// Offers one frame from the ring: encodes it once per tier some viewer takes now and
    /// sends it to those viewers. `None`: nobody took it (not encoded at all).
    pub fn offer(&mut self, frame: ads_shmem_ipc::Frame<'_>) -> Result<Option<SendReport>, Overrun> {
        let now = clock::monotonic_ns();
        // Takers per codec: (identity, tier).
        let mut takers: Vec<Vec<(Vec<u8>, usize)>> = vec![Vec::new(); self.codecs.len()];
        for (identity, session) in &mut self.sessions {
            let codec = session.codec;
            if let Some(tier) = self.codecs[codec].want(identity, session, &self.rules, now) {
                takers[codec].push((identity.clone(), tier));
            }
        }
        self.refresh_stats(now);
        if takers.iter().all(Vec::is_empty) {
            return Ok(None);
        }
        let geometry = frame.geometry();
        let image = SourceImage {
            pixels: frame.pixels(),
            width: geometry.width,
            height: geometry.height,
            stride: geometry.stride,
        };
        let batches: Vec<(usize, Batch)> = takers
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
            .map(|(codec, t)| (codec, self.codecs[codec].encode(image, t, now)))
            .collect();
        // Torn while we read it: nothing of it goes out (a stream codec's viewers of it are
        // out of step, so they get a keyframe next).
        let info = match frame.finish() {
            Ok(info) => info,
            Err(_) => {
                for (codec, batch) in &batches {
                    batch.units.iter().for_each(|u| self.codecs[*codec].missed(&u.identity));
                }
                return Err(Overrun);
            }
        };
        let mut report = SendReport { encode_us: batches.iter().map(|(_, b)| b.encode_us).sum(), sent: 0 };
        // `encodes_per_s` counts JPEG encodes (H.264's cost is `h264_encode_us`).
        for (codec, batch) in &batches {
            if self.codecs[*codec].name() == ads_protocol::CODEC_JPEG {
                (0..batch.encodes).for_each(|_| self.encodes.push_back(now));
            }
        }
        let mut lost = Vec::new();
        for (codec, unit) in batches.iter().flat_map(|(c, b)| b.units.iter().map(move |u| (*c, u))) {
            let Some(session) = self.sessions.get_mut(&unit.identity) else { continue };
            let e = &unit.encoded;
            let meta = FrameInfo {
                frame_id: info.stamp.id,
                width: e.width,
                height: e.height,
                quality: e.quality,
                encode_us: e.encode_us,
                tier: u8::try_from(unit.tier).unwrap_or(u8::MAX),
                goodput_kbps: (self.codecs[codec].goodput_bps(session) / 1000.0) as u32,
                reduced: session.reduced(&self.rules, now),
                codec: e.codec.to_string(),
                keyframe: e.keyframe,
                source_width: geometry.width,
                source_height: geometry.height,
            };
            let seq = self.seqs.entry(unit.identity.clone()).or_insert(0);
            *seq += 1;
            let envelope = encode(
                &self.vehicle_id,
                *seq,
                info.stamp.capture_wall_ns,
                clock::wall_ns(),
                &Message::Frame(meta),
            );
            let parts: [&[u8]; 4] = [&unit.identity, b"frame", &envelope, &e.bytes];
            match self.socket.send_multipart(parts, zmq::DONTWAIT) {
                Ok(()) => {
                    let encoder_bps = self.codecs[codec].encoder_bps(unit.tier);
                    session.sent(
                        info.stamp.id,
                        e.bytes.len(),
                        e.keyframe,
                        encoder_bps,
                        clock::monotonic_ns(),
                    );
                    report.sent += 1;
                }
                Err(zmq::Error::EHOSTUNREACH) => {
                    tracing::info!(session = session.number, "video viewer gone: session closed");
                    lost.push((unit.identity.clone(), true));
                }
                Err(e) => {
                    // Its pipe is full although its credits said there was room: skip it.
                    session.frames_skipped += 1;
                    tracing::trace!("video send: {e}");
                    lost.push((unit.identity.clone(), false));
                }
            }
        }
        for (identity, gone) in lost {
            if gone {
                self.close(&identity);
            } else if let Some(session) = self.sessions.get(&identity) {
                self.codecs[session.codec].missed(&identity);
            }
        }
        Ok(Some(report))
    }

    /// Refreshes the shared [`LinkState`] a few times a second.
    pub fn refresh_stats(&mut self, now: u64) {
        if now.saturating_sub(self.last_stats_ns) < STATS_EVERY_NS {
            return;
        }
        self.last_stats_ns = now;
        while self.encodes.front().is_some_and(|&t| now.saturating_sub(t) > 1_000_000_000) {
            self.encodes.pop_front();
        }
        let mut viewers: Vec<ViewerLink> = self
            .sessions
            .iter()
            .map(|(identity, s)| {
                let (kbps, fps) = s.recent_rate(now);
                let mut view = ViewerLink {
                    session: s.number,
                    sent_kbps: kbps as u32,
                    fps: fps as f32,
                    in_flight: u8::try_from(s.in_flight()).unwrap_or(u8::MAX),
                    delivery_ms: s.last_delivery_ns as f32 / 1e6,
                    frames_sent: s.frames_sent,
                    frames_skipped: s.frames_skipped,
                    credits_ignored: s.credits_ignored,
                    ..ViewerLink::default()
                };
                self.codecs[s.codec].describe(identity, s, &self.rules, now, &mut view);
                view
            })
            .collect();
        viewers.sort_by_key(|v| v.session);
        let mut state = LinkState {
            video_port: self.video_port,
            encodes_per_s: self.encodes.len() as f32,
            viewers,
            ..LinkState::default()
        };
        for codec in &self.codecs {
            codec.report(&mut state);
        }
        *self.stats.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }
}

/// The frame was overwritten in the ring while it was being encoded.
#[derive(Debug)]
pub struct Overrun;
