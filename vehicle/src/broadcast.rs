//! The broadcaster: one thread that owns the PUB socket. It reads the newest frame straight
//! from the frames ring (a reader like any other, zero-copy), compresses it with turbojpeg and
//! publishes it, and publishes the small messages (state, event, detection, truth) queued by
//! the other threads.
//!
//! Nothing here can slow the control loop: the loop hands small messages over with a
//! non-blocking `try_send` into a bounded queue (full → dropped and counted) and never waits
//! for frames to be sent; the broadcaster only ever compresses the newest frame, so frames it
//! cannot send in time are skipped (and counted), never queued. Small messages are drained
//! before every frame, so frames cannot starve them.

use ads_protocol::{encode, FrameInfo, Message, Topic};
use ads_shmem_ipc::{clock, Error as RingError, FrameReader, FrameReaderOptions, ReadMode, Wait};
use anyhow::Context as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Small messages waiting for the broadcaster; beyond this they are dropped.
pub const OUTBOX_CAPACITY: usize = 256;

/// A small message on its way out.
#[derive(Debug)]
pub struct Outgoing {
    pub message: Message,
    /// Wall clock ns the message's data was captured (goes into the envelope).
    pub capture_ns: u64,
}

/// The non-blocking entrance to the broadcaster's queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: SyncSender<Outgoing>,
    dropped: Arc<AtomicU64>,
}

impl Outbox {
    pub fn new() -> (Self, Receiver<Outgoing>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(OUTBOX_CAPACITY);
        (Self { tx, dropped: Arc::new(AtomicU64::new(0)) }, rx)
    }

    /// Queues `message` unless the queue is full (then it is dropped and counted).
    pub fn send(&self, message: Message, capture_ns: u64) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Outgoing { message, capture_ns })
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What the broadcaster did, for the vehicle's state.
#[derive(Debug, Default)]
pub struct BroadcastStats {
    /// Frames the broadcaster skipped (newer one already there) or held back (rate limit, or
    /// nobody subscribed to frames).
    pub frames_not_broadcast: AtomicU64,
    /// Frames overwritten in the ring while being compressed.
    pub frames_overrun: AtomicU64,
    pub last_encode_us: AtomicU64,
    /// Messages ZeroMQ refused to queue (reported with the outbox's drops).
    pub send_failures: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct BroadcastSettings {
    pub endpoint: String,
    pub vehicle_id: String,
    pub frames_ring: String,
    pub jpeg_quality: u8,
    pub max_fps: f64,
    pub send_hwm: i32,
}

/// Binds the PUB socket (errors surface here, before the thread starts) and runs the
/// broadcaster until `stop`, after which it flushes the queued small messages.
pub fn spawn(
    context: &zmq::Context,
    settings: BroadcastSettings,
    outbox: Receiver<Outgoing>,
    stats: Arc<BroadcastStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    // XPUB is a PUB that also reports subscriptions: the broadcaster compresses frames only
    // while somebody subscribes to them (JPEG is most of its CPU on a Raspberry Pi).
    let socket = context.socket(zmq::XPUB).context("creating the PUB socket")?;
    // High-water mark before bind: it applies to pipes created afterwards.
    socket.set_sndhwm(settings.send_hwm)?;
    socket.set_linger(0)?;
    socket
        .bind(&settings.endpoint)
        .with_context(|| format!("binding the PUB socket to {}", settings.endpoint))?;
    let mut compressor = turbojpeg::Compressor::new().context("creating the JPEG compressor")?;
    compressor.set_quality(i32::from(settings.jpeg_quality))?;
    compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2)?;
    let handle = std::thread::Builder::new().name("broadcaster".into()).spawn(move || {
        let mut broadcaster = Broadcaster {
            socket,
            settings,
            compressor,
            stats,
            seq: [0; 6],
            rate_limited: 0,
            subscriptions: Subscriptions::default(),
        };
        broadcaster.run(&outbox, &stop);
    })?;
    Ok(handle)
}

struct Broadcaster {
    socket: zmq::Socket,
    settings: BroadcastSettings,
    compressor: turbojpeg::Compressor,
    stats: Arc<BroadcastStats>,
    seq: [u64; 6],
    rate_limited: u64,
    subscriptions: Subscriptions,
}

/// Topic prefixes subscribed by at least one subscriber, as XPUB reports them (it passes on
/// the first subscription to a prefix and the last unsubscription from it).
#[derive(Debug, Default)]
pub struct Subscriptions {
    prefixes: std::collections::HashSet<Vec<u8>>,
}

impl Subscriptions {
    /// Applies one XPUB notification: `0x01 prefix` subscribes, `0x00 prefix` unsubscribes.
    pub fn apply(&mut self, notification: &[u8]) {
        match notification.split_first() {
            Some((1, prefix)) => {
                self.prefixes.insert(prefix.to_vec());
            }
            Some((0, prefix)) => {
                self.prefixes.remove(prefix);
            }
            _ => {}
        }
    }

    /// Whether a message on `topic` would reach anybody.
    pub fn wants(&self, topic: Topic) -> bool {
        self.prefixes.iter().any(|p| topic.as_str().as_bytes().starts_with(p))
    }
}

/// At most `rate` frames per second on average, bursts of up to two.
#[derive(Debug)]
struct FrameBudget {
    rate: f64,
    tokens: f64,
    last_ns: Option<u64>,
}

impl FrameBudget {
    const BURST: f64 = 2.0;

    fn new(rate: f64) -> Self {
        Self { rate, tokens: Self::BURST, last_ns: None }
    }

    /// Whether a frame captured at `at_ns` (monotonic) may go out.
    fn take(&mut self, at_ns: u64) -> bool {
        if let Some(last) = self.last_ns {
            let elapsed_s = at_ns.saturating_sub(last) as f64 / 1e9;
            self.tokens = (self.tokens + elapsed_s * self.rate).min(Self::BURST);
        }
        self.last_ns = Some(at_ns);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Broadcaster {
    fn run(&mut self, outbox: &Receiver<Outgoing>, stop: &AtomicBool) {
        // A token bucket on the frames' own capture times: over time at most max_fps frames
        // go out, but a frame that comes a little early (the source's loop jitters) is not
        // dropped for it, as it would be with a minimum interval.
        let mut budget = FrameBudget::new(self.settings.max_fps);
        let mut reader: Option<FrameReader> = None;
        loop {
            loop {
                match outbox.try_recv() {
                    Ok(out) => self.publish(&out.message, out.capture_ns, None),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            while let Ok(notification) = self.socket.recv_bytes(zmq::DONTWAIT) {
                self.subscriptions.apply(&notification);
            }
            let Some(ring) = reader.as_mut() else {
                let options = FrameReaderOptions { mode: ReadMode::Latest, expect: None };
                match FrameReader::attach(&self.settings.frames_ring, options) {
                    Ok(r) => reader = Some(r),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
                continue;
            };
            // Short waits: queued small messages go out within a few ms even with no frames.
            let lost = match ring.read(Wait::Block(Duration::from_millis(5))) {
                Ok(Some(frame)) => {
                    let captured = frame.info().stamp.capture_mono_ns;
                    if !self.subscriptions.wants(Topic::Frame) || !budget.take(captured) {
                        // Nobody watching, or over the rate limit: not compressed, counted.
                        self.rate_limited += 1;
                    } else {
                        self.send_frame(frame);
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
                self.stats.frames_not_broadcast.store(skipped + self.rate_limited, Ordering::Relaxed);
            }
        }
    }

    /// Compresses a frame in place in the ring and publishes it, unless the writer overwrote
    /// it meanwhile (then it is counted and dropped).
    fn send_frame(&mut self, frame: ads_shmem_ipc::Frame<'_>) {
        let geometry = frame.geometry();
        let image = turbojpeg::Image {
            pixels: frame.pixels(),
            width: geometry.width as usize,
            pitch: geometry.stride as usize,
            height: geometry.height as usize,
            format: turbojpeg::PixelFormat::BGR,
        };
        let started = clock::monotonic_ns();
        let jpeg = self.compressor.compress_to_owned(image);
        let encode_us = (clock::monotonic_ns() - started) / 1000;
        match (frame.finish(), jpeg) {
            (Ok(info), Ok(jpeg)) => {
                self.stats.last_encode_us.store(encode_us, Ordering::Relaxed);
                let meta = FrameInfo {
                    frame_id: info.stamp.id,
                    width: geometry.width,
                    height: geometry.height,
                    quality: self.settings.jpeg_quality,
                    encode_us: u32::try_from(encode_us).unwrap_or(u32::MAX),
                };
                self.publish(&Message::Frame(meta), info.stamp.capture_wall_ns, Some(&jpeg));
            }
            (Err(_), _) => {
                self.stats.frames_overrun.fetch_add(1, Ordering::Relaxed);
            }
            (Ok(_), Err(e)) => tracing::warn!("JPEG compression failed: {e}"),
        }
    }

    fn publish(&mut self, message: &Message, capture_ns: u64, payload: Option<&[u8]>) {
        let topic = message.topic();
        let index = Topic::ALL.iter().position(|t| *t == topic).unwrap_or(0);
        self.seq[index] += 1;
        let envelope =
            encode(&self.settings.vehicle_id, self.seq[index], capture_ns, clock::wall_ns(), message);
        let mut parts: Vec<&[u8]> = vec![topic.as_str().as_bytes(), &envelope];
        if let Some(p) = payload {
            parts.push(p);
        }
        // PUB never blocks: a subscriber whose queue is at the high-water mark loses the message.
        if let Err(e) = self.socket.send_multipart(parts, zmq::DONTWAIT) {
            self.stats.send_failures.fetch_add(1, Ordering::Relaxed);
            tracing::trace!("send failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_follow_xpub_notifications() {
        let mut s = Subscriptions::default();
        assert!(!s.wants(Topic::Frame));
        s.apply(b"\x01state");
        assert!(s.wants(Topic::State) && !s.wants(Topic::Frame));
        s.apply(b"\x01");
        assert!(s.wants(Topic::Frame), "the empty prefix subscribes to everything");
        s.apply(b"\x00");
        assert!(!s.wants(Topic::Frame));
        s.apply(b"\x01fr");
        assert!(s.wants(Topic::Frame));
        s.apply(b"\x00fr");
        s.apply(b"garbage-without-marker\x02");
        assert!(!s.wants(Topic::Frame) && s.wants(Topic::State));
    }

    #[test]
    fn the_frame_budget_tolerates_jitter_but_holds_the_average_rate() {
        let period = 33_333_333u64;
        // A 30 fps source whose frames come up to 5 ms early or late: all go out at 30.
        let mut b = FrameBudget::new(30.0);
        let sent =
            (0..300u64).filter(|i| b.take(i * period + if i % 2 == 0 { 0 } else { 5_000_000 })).count();
        assert_eq!(sent, 300);
        // A 60 fps source at max 30: half go out (plus the initial burst).
        let mut b = FrameBudget::new(30.0);
        let sent = (0..600u64).filter(|i| b.take(i * period / 2)).count();
        assert!((300..=302).contains(&sent), "{sent}");
    }
}
