//! The viewer's H.264 decode path (`ads_viewer::h264::H264Decoder`, openh264 underneath) over
//! a stream of hostile access units: never a crash, a hang or unbounded memory, and whatever
//! it returns is a picture of exactly the size the frame claimed.
#![no_main]

use ads_protocol::FrameInfo;
use libfuzzer_sys::fuzz_target;

#[path = "parts.rs"]
mod parts;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    // Small sizes keep each input fast; the first byte picks one and the keyframe flags.
    let (width, height) = [(16, 16), (64, 48), (160, 120), (32, 8)][usize::from(flags & 3)];
    let mut decoder = ads_viewer::h264::H264Decoder::new();
    for (i, unit) in parts::split(rest).into_iter().enumerate() {
        let info = FrameInfo {
            frame_id: i as u64 + 1,
            width,
            height,
            quality: 0,
            encode_us: 0,
            tier: 0,
            goodput_kbps: 0,
            reduced: false,
            codec: ads_protocol::CODEC_H264.into(),
            keyframe: flags & (4 << i.min(4)) != 0,
            source_width: 0,
            source_height: 0,
        };
        if let Ok(picture) = decoder.decode(&info, unit) {
            assert_eq!((picture.width, picture.height), (width, height));
            assert_eq!(picture.rgb.len(), (width * height * 3) as usize);
        }
    }
});
