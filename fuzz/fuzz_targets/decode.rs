//! `ads_protocol::decode` over arbitrary multipart messages, and the ring record decoder:
//! never a panic, a hang or unbounded memory, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "parts.rs"]
mod parts;

fuzz_target!(|data: &[u8]| {
    let parts = parts::split(data);
    if let Ok(wire) = ads_protocol::decode(&parts) {
        // Whatever decodes must encode again and decode to the same topic.
        let again = ads_protocol::encode(&wire.vehicle, wire.seq, wire.capture_ns, wire.send_ns, &wire.message);
        let topic = wire.message.topic().as_str().as_bytes();
        let mut reparts: Vec<&[u8]> = vec![topic, &again];
        reparts.extend(wire.payload);
        let redecoded = ads_protocol::decode(&reparts).expect("a decoded message re-encodes validly");
        assert_eq!(redecoded.message.topic(), wire.message.topic());
    }
    if let [_, envelope, ..] = parts.as_slice() {
        let _ = ads_protocol::peek_action_identity(envelope);
    }
    let _ = ads_protocol::decode_record(data);
});
