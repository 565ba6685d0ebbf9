//! The vehicle's action gate with a key: MAC check, then decode and the replay checks.
//! Half of the inputs get a valid MAC computed over the fuzzer's envelope, so the fuzzer
//! also explores what lies behind authentication. The gate lives across inputs, as it does
//! in the vehicle, so sequences of inputs exercise its memory of ids and senders.
#![no_main]

use ads_protocol::{verify_action, ActionKey, Command};
use ads_protocol::gate::{ActionGate, SharedOutcomes, Verdict};
use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};

#[path = "parts.rs"]
mod parts;

fn key() -> ActionKey {
    ActionKey::from_bytes(&[0x5a; 32]).expect("32 bytes")
}

fn gate() -> &'static Mutex<ActionGate> {
    static GATE: OnceLock<Mutex<ActionGate>> = OnceLock::new();
    GATE.get_or_init(|| {
        Mutex::new(ActionGate::new("car", "run-1", Some(key()), 60_000_000_000, SharedOutcomes::default()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((now, rest)) = rest.split_first_chunk::<8>() else { return };
    let now_ns = u64::from_le_bytes(*now);
    let mut parts = parts::split(rest);
    let mac;
    if flags & 1 == 1 && parts.len() >= 2 {
        mac = key().mac(parts[1]);
        parts.truncate(2);
        parts.push(&mac);
    }
    let mut gate = gate().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match gate.judge(&parts, now_ns) {
        Verdict::Accept(accepted) => {
            // As the listener does: every other input is handed on, the rest find a full queue.
            let handed = flags & 2 == 0;
            let _ = gate.hand_off(accepted.clone(), |_| if handed { Ok(()) } else { Err(()) });
            // Nothing is accepted without a valid MAC over exactly what was judged.
            assert!(verify_action(&parts, &key()).is_ok(), "accepted an unauthenticated action");
            // Only an emergency stop is carried out whatever its run and expiry.
            if accepted.action.command != Command::EmergencyStop {
                assert_eq!(accepted.action.run.run_id, "run-1", "accepted an action of another run");
                assert!(accepted.action.run.expires_run_ns >= now_ns, "accepted an expired action");
            }
        }
        Verdict::Heartbeat | Verdict::Repeat(_) | Verdict::InProgress => {
            assert!(verify_action(&parts, &key()).is_ok(), "an unauthenticated message counted");
        }
        Verdict::Reject(_) => {}
    }
});
