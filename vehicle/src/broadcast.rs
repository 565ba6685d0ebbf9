//! The broadcaster: one thread that owns the vehicle's two outgoing sockets. The PUB socket
//! carries the small messages (state, event, detection, truth) queued by the other threads;
//! the video socket ([`crate::video::link`]) carries frames, read straight from the frames ring
//! (a reader like any other, zero-copy) and sent to each viewer only while it has room.
//!
//! Nothing here can slow the control loop: the loop hands small messages over with a
//! non-blocking `try_send` into a bounded queue (full → dropped and counted) and never waits
//! for frames to be sent. Only the newest frame is ever offered, so frames a viewer cannot
//! take in time are skipped (and counted), never queued. Small messages are drained before
//! every frame and travel on their own connection, so video never stands in front of them.

use crate::config::{BroadcastSection, H264Section, LinkSection};
use crate::video::link::{Overrun, VideoLink, VideoStats};
use ads_protocol::{encode, Message, Topic};
use ads_shmem_ipc::{clock, Error as RingError, FrameReader, FrameReaderOptions, ReadMode, Wait};
use anyhow::Context as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Small messages waiting for the broadcaster; beyond this they are dropped.
pub const OUTBOX_CAPACITY: usize = 256;
/// Urgent messages (e-stop acknowledgements) waiting; they have a queue of their own, drained
/// first, so a burst of other messages cannot push one out.
pub const URGENT_CAPACITY: usize = 256;

/// A small message on its way out.
#[derive(Debug)]
pub struct Outgoing {
    pub message: Message,
    /// Wall clock ns the message's data was captured (goes into the envelope).
    pub capture_ns: u64,
}

/// The non-blocking entrance to the broadcaster's queues.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: SyncSender<Outgoing>,
    urgent: SyncSender<Outgoing>,
    dropped: Arc<AtomicU64>,
}

/// The broadcaster's end of the [`Outbox`].
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: Receiver<Outgoing>,
    urgent: Receiver<Outgoing>,
}

impl OutboxReceiver {
    /// The next message, urgent ones first; `Err(Disconnected)` once every sender is gone.
    fn try_recv(&self) -> Result<Outgoing, TryRecvError> {
        match self.urgent.try_recv() {
            Ok(out) => Ok(out),
            Err(_) => self.rx.try_recv(),
        }
    }
}

impl Outbox {
    pub fn new() -> (Self, OutboxReceiver) {
        let (tx, rx) = std::sync::mpsc::sync_channel(OUTBOX_CAPACITY);
        let (urgent, urgent_rx) = std::sync::mpsc::sync_channel(URGENT_CAPACITY);
        (Self { tx, urgent, dropped: Arc::new(AtomicU64::new(0)) }, OutboxReceiver { rx, urgent: urgent_rx })
    }

    /// Queues `message` unless the queue is full (then it is dropped and counted).
    pub fn send(&self, message: Message, capture_ns: u64) {
        Self::queue(&self.tx, &self.dropped, message, capture_ns);
    }

    /// Queues `message` ahead of everything sent with [`Outbox::send`].
    pub fn send_urgent(&self, message: Message, capture_ns: u64) {
        Self::queue(&self.urgent, &self.dropped, message, capture_ns);
    }

    fn queue(tx: &SyncSender<Outgoing>, dropped: &AtomicU64, message: Message, capture_ns: u64) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            tx.try_send(Outgoing { message, capture_ns })
        {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What the broadcaster did, for the vehicle's state.
#[derive(Debug, Default)]
pub struct BroadcastStats {
    /// Frames no viewer got: nobody watching, or no viewer had room for them.
    pub frames_not_broadcast: AtomicU64,
    /// Frames overwritten in the ring while being compressed.
    pub frames_overrun: AtomicU64,
    pub last_encode_us: AtomicU64,
    /// The last frame sent: the video link's time besides encoding (queueing, bookkeeping).
    pub last_send_us: AtomicU64,
    /// Messages ZeroMQ refused to queue (reported with the outbox's drops).
    pub send_failures: AtomicU64,
    pub video: Arc<VideoStats>,
}

#[derive(Debug, Clone)]
pub struct BroadcastSettings {
    pub vehicle_id: String,
    pub frames_ring: String,
    pub frame_size: (u32, u32),
    pub broadcast: BroadcastSection,
    pub link: LinkSection,
    pub h264: H264Section,
    /// The source's frame rate (what the H.264 rate control budgets frames for).
    pub fps: f64,
    /// The action key: hellos signed with it hold sessions unsigned ones cannot displace.
    pub hello_key: Option<ads_protocol::ActionKey>,
}

/// Binds both sockets (errors surface here, before the thread starts) and runs the
/// broadcaster until `stop`, after which it flushes the queued small messages.
pub fn spawn(
    context: &zmq::Context,
    settings: BroadcastSettings,
    outbox: OutboxReceiver,
    stats: Arc<BroadcastStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let socket = context.socket(zmq::PUB).context("creating the PUB socket")?;
    // Before bind: they apply to the connections made afterwards. A small kernel buffer,
    // because whatever waits there waits in line.
    socket.set_sndhwm(settings.broadcast.send_hwm)?;
    socket.set_sndbuf(settings.broadcast.send_buffer_bytes)?;
    socket.set_linger(0)?;
    // State and acks in Wi-Fi's voice class, ahead of the video (docs/deployment.md).
    socket.set_tos(i32::from(settings.broadcast.dscp) << 2)?;
    crate::peer_heartbeat::watch_peers(&socket)?;
    socket
        .bind(&settings.broadcast.endpoint)
        .with_context(|| format!("binding the PUB socket to {}", settings.broadcast.endpoint))?;
    let video = VideoLink::bind(
        context,
        &settings.link,
        &settings.vehicle_id,
        settings.frame_size,
        settings.hello_key.clone(),
        Arc::clone(&stats.video),
    )?
    .with_h264(crate::video::h264::H264Tiers::new(
        &settings.h264,
        settings.frame_size,
        settings.fps,
        crate::video::h264_encoder::OpenH264Encoder::boxed,
    ));
    let handle = std::thread::Builder::new().name("broadcaster".into()).spawn(move || {
        let mut broadcaster =
            Broadcaster { socket, video, settings, stats, seq: [0; Topic::ALL.len()], not_taken: 0 };
        broadcaster.run(&outbox, &stop);
    })?;
    Ok(handle)
}

struct Broadcaster {
    socket: zmq::Socket,
    video: VideoLink,
    settings: BroadcastSettings,
    stats: Arc<BroadcastStats>,
    seq: [u64; Topic::ALL.len()],
    not_taken: u64,
}

impl Broadcaster {
    fn run(&mut self, outbox: &OutboxReceiver, stop: &AtomicBool) {
        let mut reader: Option<FrameReader> = None;
        loop {
            loop {
                match outbox.try_recv() {
                    Ok(out) => self.publish(&out.message, out.capture_ns),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            self.video.receive();
            self.video.refresh_stats(clock::monotonic_ns());
            let Some(ring) = reader.as_mut() else {
                let options = FrameReaderOptions { mode: ReadMode::Latest, expect: None };
                match FrameReader::attach(&self.settings.frames_ring, options) {
                    Ok(r) => reader = Some(r),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
                continue;
            };
            // While a credit is due, wait on the video socket so its arrival is timed to the
            // millisecond (the goodput estimate is made of those times), and look at the ring
            // in between; otherwise sleep on the ring. Short waits either way: queued small
            // messages go out within a few ms even with no frames.
            let wait = if self.video.awaiting_credits() {
                self.video.wait(1);
                self.video.receive();
                Wait::Poll
            } else {
                Wait::Block(Duration::from_millis(5))
            };
            let lost = match ring.read(wait) {
                Ok(Some(frame)) => {
                    self.video.receive();
                    let offered = clock::monotonic_ns();
                    match self.video.offer(frame) {
                        Ok(Some(report)) => {
                            let offer_us = (clock::monotonic_ns() - offered) / 1000;
                            self.stats.last_encode_us.store(report.encode_us, Ordering::Relaxed);
                            if report.sent > 0 {
                                let send_us = offer_us.saturating_sub(report.encode_us);
                                self.stats.last_send_us.store(send_us, Ordering::Relaxed);
                            }
                            if report.sent == 0 {
                                self.not_taken += 1;
                            }
                        }
                        // Nobody watching, or nobody with room: not compressed, counted.
                        Ok(None) => self.not_taken += 1,
                        Err(Overrun) => {
                            self.stats.frames_overrun.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    false
                }
                Ok(None) => false,
                Err(RingError::WriterGone { .. }) => true,
                Err(e) => {
                    tracing::warn!("frames ring: {e}");
                    true
                }
            };
            if lost {
                reader = None;
            } else {
                let skipped = ring.stats().skipped;
                self.stats.frames_not_broadcast.store(skipped + self.not_taken, Ordering::Relaxed);
            }
        }
    }

    fn publish(&mut self, message: &Message, capture_ns: u64) {
        let topic = message.topic();
        let index = Topic::ALL.iter().position(|t| *t == topic).unwrap_or(0);
        self.seq[index] += 1;
        let envelope =
            encode(&self.settings.vehicle_id, self.seq[index], capture_ns, clock::wall_ns(), message);
        let parts: [&[u8]; 2] = [topic.as_str().as_bytes(), &envelope];
        // PUB never blocks: a subscriber whose queue is at the high-water mark loses the message.
        if let Err(e) = self.socket.send_multipart(parts, zmq::DONTWAIT) {
            self.stats.send_failures.fetch_add(1, Ordering::Relaxed);
            tracing::trace!("send failed: {e}");
        }
    }
}
