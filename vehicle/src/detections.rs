//! The control loop's view of the detector: the newest record of the `detections` ring.
//! The detector may start later, crash or restart; the loop never waits for it beyond the idle
//! time it has anyway between two frames.

use ads_protocol::{decode_record, Detections};
use ads_shmem_ipc::{clock, MessageReader, ReadMode, Wait};
use std::time::Duration;

/// How often to look for the ring while the detector is absent.
const ATTACH_EVERY_NS: u64 = 500_000_000;

/// A change of the detector's presence, for notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectorChange {
    Connected { pid: u32 },
    Lost(String),
}

#[derive(Debug)]
pub struct DetectionInput {
    ring: String,
    reader: Option<MessageReader>,
    last_attempt_ns: u64,
    buf: Vec<u8>,
    /// Newest decoded record.
    pub latest: Option<Detections>,
    /// Its frame's capture time on the monotonic clock (from the ring's stamp): the fail-safe
    /// ages results on it, so a wall clock stepped back cannot make a dead detector look fresh.
    latest_capture_mono_ns: u64,
    /// Records read since the last `take_news`, with the wall-clock ns they were read at.
    news: Vec<(Detections, u64)>,
    changes: Vec<DetectorChange>,
}

impl DetectionInput {
    pub fn new(ring: &str) -> Self {
        Self {
            ring: ring.to_string(),
            reader: None,
            last_attempt_ns: 0,
            buf: Vec::new(),
            latest: None,
            latest_capture_mono_ns: 0,
            news: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Takes what is there now, without waiting.
    pub fn poll(&mut self) {
        while self.read(Wait::Poll) {}
    }

    /// Takes detections as they arrive until `deadline_mono_ns`: the control loop's idle time
    /// between frames, so a result is seen when it lands, not at the next frame.
    pub fn wait_until(&mut self, deadline_mono_ns: u64) {
        loop {
            let now = clock::monotonic_ns();
            if now >= deadline_mono_ns {
                return;
            }
            let left = Duration::from_nanos(deadline_mono_ns - now);
            if self.reader.is_none() && !self.try_attach(now) {
                std::thread::sleep(left.min(Duration::from_millis(50)));
                continue;
            }
            self.read(Wait::Block(left));
        }
    }

    /// Records read and presence changes since the last call.
    pub fn take_news(&mut self) -> (Vec<(Detections, u64)>, Vec<DetectorChange>) {
        (std::mem::take(&mut self.news), std::mem::take(&mut self.changes))
    }

    /// Age of the newest detection's source frame, monotonic clock.
    pub fn age_ns(&self, now_mono_ns: u64) -> Option<u64> {
        self.latest.as_ref().map(|_| now_mono_ns.saturating_sub(self.latest_capture_mono_ns))
    }

    fn try_attach(&mut self, now: u64) -> bool {
        if now.saturating_sub(self.last_attempt_ns) < ATTACH_EVERY_NS {
            return false;
        }
        self.last_attempt_ns = now;
        match MessageReader::attach(&self.ring, ReadMode::Latest) {
            Ok(reader) => {
                self.changes.push(DetectorChange::Connected { pid: reader.writer_pid() });
                self.reader = Some(reader);
                true
            }
            Err(_) => false,
        }
    }

    /// One read; true if a record was taken.
    fn read(&mut self, wait: Wait) -> bool {
        if self.reader.is_none() && !self.try_attach(clock::monotonic_ns()) {
            return false;
        }
        let Some(reader) = self.reader.as_mut() else { return false };
        match reader.read_copy(wait, &mut self.buf) {
            Ok(Some(info)) => {
                match decode_record(&self.buf) {
                    Ok(record) => {
                        // A writer without a monotonic stamp: age from when we read it.
                        let mono = info.stamp.capture_mono_ns;
                        self.latest_capture_mono_ns = if mono == 0 { clock::monotonic_ns() } else { mono };
                        self.latest = Some(record.clone());
                        self.news.push((record, clock::wall_ns()));
                    }
                    Err(e) => {
                        tracing::warn!("undecodable detection record: {e}");
                    }
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.reader = None;
                self.changes.push(DetectorChange::Lost(e.to_string()));
                false
            }
        }
    }
}
