//! The control loop's view of the detector: the newest record of the `detections` ring.
//! The detector may start later, crash or restart; the loop never waits for it.

use ads_protocol::{decode_record, Detections};
use ads_shmem_ipc::{clock, Error as RingError, MessageReader, ReadMode, Wait};

/// How often to look for the ring while the detector is absent.
const ATTACH_EVERY_NS: u64 = 500_000_000;

/// What changed on this poll, for notices.
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
    /// Newest decoded record and when (monotonic ns) it was read.
    pub latest: Option<Detections>,
    /// Records that failed to decode (a detector of another version, or a bug).
    pub undecodable: u64,
}

impl DetectionInput {
    pub fn new(ring: &str) -> Self {
        Self {
            ring: ring.to_string(),
            reader: None,
            last_attempt_ns: 0,
            buf: Vec::new(),
            latest: None,
            undecodable: 0,
        }
    }

    /// Takes the newest record if there is one. Returns a newly read record (to forward to
    /// viewers) and a change of the detector's presence, if any.
    pub fn poll(&mut self) -> (Option<Detections>, Option<DetectorChange>) {
        let now = clock::monotonic_ns();
        let mut change = None;
        if self.reader.is_none() && now.saturating_sub(self.last_attempt_ns) >= ATTACH_EVERY_NS {
            self.last_attempt_ns = now;
            if let Ok(reader) = MessageReader::attach(&self.ring, ReadMode::Latest) {
                change = Some(DetectorChange::Connected { pid: reader.writer_pid() });
                self.reader = Some(reader);
            }
        }
        let Some(reader) = self.reader.as_mut() else { return (None, change) };
        match reader.read_copy(Wait::Poll, &mut self.buf) {
            Ok(Some(_)) => match decode_record(&self.buf) {
                Ok(record) => {
                    self.latest = Some(record.clone());
                    (Some(record), change)
                }
                Err(e) => {
                    self.undecodable += 1;
                    tracing::warn!("undecodable detection record: {e}");
                    (None, change)
                }
            },
            Ok(None) => (None, change),
            Err(e @ RingError::WriterGone { .. }) => {
                self.reader = None;
                (None, Some(DetectorChange::Lost(e.to_string())))
            }
            Err(e) => {
                self.reader = None;
                (None, Some(DetectorChange::Lost(e.to_string())))
            }
        }
    }

    /// Age of the newest detection's source frame, wall clock.
    pub fn age_ns(&self, now_wall_ns: u64) -> Option<u64> {
        self.latest.as_ref().map(|d| now_wall_ns.saturating_sub(d.capture_ns))
    }
}
