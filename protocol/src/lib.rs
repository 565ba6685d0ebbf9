//! What the ads processes say to each other over the network: ports and topics.
//!
//! The wire messages themselves (msgpack envelopes) arrive with the vehicle; this crate
//! already fixes the names every process must agree on.

/// Default port of the vehicle's ZeroMQ PUB socket (frames, detections, state, events).
pub const DEFAULT_PUB_PORT: u16 = 5557;
/// Default port of the vehicle's ZeroMQ SUB socket (actions from viewers).
pub const DEFAULT_ACTION_PORT: u16 = 5558;
/// Default port of the viewer's web UI.
pub const DEFAULT_VIEWER_PORT: u16 = 8080;

/// Shared-memory ring the frame source writes and the detector reads.
pub const FRAMES_RING: &str = "frames";
/// Shared-memory ring the detector writes and the vehicle's control loop reads.
pub const DETECTIONS_RING: &str = "detections";

/// ZeroMQ topics: the first frame of every multipart message.
pub mod topic {
    pub const FRAME: &str = "frame";
    pub const DETECTION: &str = "detection";
    pub const STATE: &str = "state";
    pub const EVENT: &str = "event";
    pub const ACTION: &str = "action";
    pub const TRUTH: &str = "truth";

    /// Every topic, for subscribers that want all of them.
    pub const ALL: [&str; 6] = [FRAME, DETECTION, STATE, EVENT, ACTION, TRUTH];
}

#[cfg(test)]
mod tests {
    use super::topic;

    /// ZeroMQ SUB filters match by prefix: if one topic were a prefix of another, a
    /// subscriber to the shorter one would silently receive both.
    #[test]
    fn no_topic_is_a_prefix_of_another() {
        for a in topic::ALL {
            for b in topic::ALL {
                assert!(a == b || !b.starts_with(a), "{a:?} is a prefix of {b:?}");
            }
        }
    }
}
