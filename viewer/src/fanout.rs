//! The viewer's own vehicle stream, shared: the Record button's recorder and the Foxglove feed
//! take every message the link thread receives (frames as JPEG, H.264 ones as decoded here)
//! instead of opening sessions of their own on the vehicle.
//!
//! Never blocks the link: each subscriber has a bounded queue, and what does not fit is
//! dropped for that subscriber alone (counted). A subscriber that went away is forgotten at
//! the next message.

use crate::packet::DecodedUnit;
use ads_protocol::{Message, WireMessage};
use ads_record::subscribe::Received;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct Fanout {
    subscribers: Mutex<Vec<SyncSender<Arc<Received>>>>,
    /// Messages a subscriber's full queue did not take.
    pub dropped: AtomicU64,
}

impl Fanout {
    /// A new subscriber, with room for `capacity` messages.
    pub fn subscribe(&self, capacity: usize) -> Receiver<Arc<Received>> {
        let (tx, rx) = sync_channel(capacity);
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).push(tx);
        rx
    }

    /// Whether anyone takes messages (otherwise none are made).
    pub fn active(&self) -> bool {
        !self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    pub fn publish(&self, received: Received) {
        let received = Arc::new(received);
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).retain(|tx| {
            match tx.try_send(Arc::clone(&received)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }
}

/// `message` as the subscribers get it: an H.264 frame as the JPEG decoded here. `None` for a
/// frame not decoded (dropped as corrupt, or waiting for a keyframe) and for a reduced
/// picture (a smaller tier, before the vehicle heard that we ask for full ones): recordings
/// and Foxglove draw annotations in the source's pixels.
pub fn received(message: &WireMessage<'_>, recv_ns: u64, decoded: Option<&DecodedUnit>) -> Option<Received> {
    if let Message::Frame(info) = &message.message {
        let reduced = (info.source_width != 0 && info.width != info.source_width)
            || (info.source_height != 0 && info.height != info.source_height);
        if reduced {
            return None;
        }
    }
    let mut body = message.message.clone();
    let payload = match (&mut body, decoded) {
        (Message::Frame(info), Some(decoded)) => {
            info.codec = ads_protocol::CODEC_JPEG.into();
            info.keyframe = false;
            Some(decoded.jpeg.bytes().to_vec())
        }
        (Message::Frame(info), None) if info.codec != ads_protocol::CODEC_JPEG => return None,
        _ => message.payload.map(<[u8]>::to_vec),
    };
    Some(Received {
        recv_ns,
        vehicle: message.vehicle.clone(),
        seq: message.seq,
        capture_ns: message.capture_ns,
        send_ns: message.send_ns,
        message: body,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> Received {
        Received {
            recv_ns: seq,
            vehicle: "v".into(),
            seq,
            capture_ns: 0,
            send_ns: 0,
            message: ads_protocol::Message::Event(ads_protocol::Event::Notice {
                level: ads_protocol::NoticeLevel::Info,
                text: String::new(),
            }),
            payload: None,
        }
    }

    #[test]
    fn a_slow_subscriber_loses_only_its_own_messages_and_a_gone_one_is_forgotten() {
        let fanout = Fanout::default();
        assert!(!fanout.active());
        let slow = fanout.subscribe(2);
        let fast = fanout.subscribe(10);
        for seq in 0..5 {
            fanout.publish(message(seq));
        }
        assert_eq!(slow.try_iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(fast.try_iter().count(), 5);
        assert_eq!(fanout.dropped.load(Ordering::Relaxed), 3);
        drop(slow);
        drop(fast);
        fanout.publish(message(9));
        assert!(!fanout.active(), "gone subscribers are forgotten");
    }
}
