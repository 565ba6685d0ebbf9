//! Clients an attacker on the car's network would run (no key needed for either):
//! - a **squatter** says hello (again every second) and never returns a credit, to hold a
//!   video session the operator needs;
//! - a **keyframe flooder** returns every credit, so it looks alive, and asks for a keyframe
//!   after every frame, to make the vehicle encode IDR after IDR.
//!
//! Each counts what it got: frames, and keyframes (IDR units) among them.

use super::VIDEO_PORT;
use ads_protocol::{
    decode, encode_video_request, Credit, KeyframeRequest, Message, VideoHello, VideoRequest,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rogue {
    Squatter,
    KeyframeFlooder,
}

/// What the rogue clients of one kind got, all together.
#[derive(Debug, Default)]
pub struct RogueCounts {
    pub frames: AtomicU64,
    pub keyframes: AtomicU64,
    pub requests: AtomicU64,
    /// Refusals the vehicle answered a hello with (`refused`, docs/protocol.md 2.1).
    pub refused: AtomicU64,
}

/// Whether an H.264 access unit (Annex B) holds an IDR slice (NAL unit type 5).
pub fn has_idr(unit: &[u8]) -> bool {
    unit.windows(4).any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && w[3] & 0x1f == 5)
}

#[derive(Debug)]
pub struct RoguePlan {
    pub kind: Rogue,
    pub vehicle_host: String,
    /// Connect from this address (other machines on the car's network), if any.
    pub source: Option<String>,
    pub codec: String,
}

pub fn spawn(
    plan: RoguePlan,
    counts: Arc<RogueCounts>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Err(e) = run(&plan, &counts, &stop) {
            eprintln!("rogue client {:?}: {e}", plan.kind);
        }
    })
}

fn run(plan: &RoguePlan, counts: &RogueCounts, stop: &AtomicBool) -> anyhow::Result<()> {
    let context = zmq::Context::new();
    let video = context.socket(zmq::DEALER)?;
    video.set_linger(0)?;
    let target = format!("{}:{VIDEO_PORT}", plan.vehicle_host);
    let endpoint = match &plan.source {
        Some(source) => format!("tcp://{source}:0;{target}"),
        None => format!("tcp://{target}"),
    };
    video.connect(&endpoint)?;
    let mut last_hello = None::<Instant>;
    while !stop.load(Ordering::Relaxed) {
        if last_hello.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_hello = Some(Instant::now());
            let hello = VideoRequest::Hello(VideoHello {
                codec: ads_protocol::CODEC_JPEG.into(),
                codecs: vec![plan.codec.clone()],
                max_kbps: None,
                full_size: false,
            });
            video.send_multipart(
                encode_video_request("*", 0, super::client::wall_ns(), &hello),
                zmq::DONTWAIT,
            )?;
        }
        if video.poll(zmq::POLLIN, 20)? == 0 {
            continue;
        }
        while let Ok(parts) = video.recv_multipart(zmq::DONTWAIT) {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            if ads_protocol::decode_video_refusal(&refs).is_ok() {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Ok(wire) = decode(&refs) else { continue };
            let (Message::Frame(info), Some(unit)) = (&wire.message, wire.payload) else { continue };
            counts.frames.fetch_add(1, Ordering::Relaxed);
            if info.codec == ads_protocol::CODEC_H264 && has_idr(unit) {
                counts.keyframes.fetch_add(1, Ordering::Relaxed);
            }
            if plan.kind == Rogue::KeyframeFlooder {
                let now = super::client::wall_ns();
                let credit = Credit { frame_id: info.frame_id, bytes: unit.len() as u32 };
                video.send_multipart(
                    encode_video_request("*", 0, now, &VideoRequest::Credit(credit)),
                    zmq::DONTWAIT,
                )?;
                let key = VideoRequest::Keyframe(KeyframeRequest { after_frame_id: info.frame_id });
                video.send_multipart(encode_video_request("*", 0, now, &key), zmq::DONTWAIT)?;
                counts.requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_idr_slice_among_the_units_nal_units() {
        // SPS, PPS, IDR slice.
        let idr = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 9];
        // A non-IDR slice only.
        let delta = [0, 0, 0, 1, 0x41, 9, 9];
        assert!(has_idr(&idr));
        assert!(!has_idr(&delta));
    }
}
