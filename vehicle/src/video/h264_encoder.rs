//! H.264 encoders: the trait a hardware encoder (V4L2 M2M on a Raspberry Pi, NVENC on a
//! Jetson) can stand behind, and Cisco's OpenH264, the software one.

/// One access unit out of an encoder.
#[derive(Debug, Clone)]
pub struct AccessUnit {
    /// Annex B: NAL units each behind a `00 00 00 01` start code.
    pub bytes: Vec<u8>,
    pub keyframe: bool,
}

/// An H.264 encoder of one fixed picture size and bit rate. Constrained baseline, no B-frames
/// (every access unit is decodable as soon as it arrives), SPS and PPS before every IDR.
pub trait VideoEncoder: Send {
    /// What it is, for logs and `state` (`openh264`, `v4l2m2m`, ...).
    fn name(&self) -> &'static str;
    /// Encodes one packed BGR picture (`width * 3` bytes a row) of the encoder's size taken
    /// at `at_ns` (monotonic); `keyframe` forces an IDR. The rate control spends its budget
    /// by these times: a stream fed fewer frames than its nominal rate gets more bits each.
    /// An empty access unit: the rate control skipped the picture (nothing refers to it).
    fn encode(&mut self, bgr: &[u8], keyframe: bool, at_ns: u64) -> anyhow::Result<AccessUnit>;
}

/// What an encoder is made for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamSpec {
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u32,
    pub fps: f32,
    /// Frames between periodic keyframes.
    pub gop_frames: u32,
}

/// Makes an encoder for a tier; the software one is [`OpenH264Encoder::boxed`].
pub type EncoderFactory = fn(StreamSpec) -> anyhow::Result<Box<dyn VideoEncoder>>;

/// Cisco's OpenH264, built from source by the `openh264` crate.
pub struct OpenH264Encoder {
    encoder: openh264::encoder::Encoder,
    yuv: openh264::formats::YUVBuffer,
    spec: StreamSpec,
    frames: u64,
    /// Time of the first picture, and the last timestamp given (ms since it).
    first_ns: Option<u64>,
    last_ms: Option<u64>,
}

impl std::fmt::Debug for OpenH264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenH264Encoder").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl OpenH264Encoder {
    pub fn new(spec: StreamSpec) -> anyhow::Result<Self> {
        use openh264::encoder::{
            BitRate, Complexity, EncoderConfig, FrameRate, IntraFramePeriod, Profile, RateControlMode,
            SpsPpsStrategy, UsageType,
        };
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(spec.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(spec.fps))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            // The rate control may skip a frame to hold the bit rate (an empty access unit,
            // not sent: nothing refers to it); without skipping openh264 cannot hold it.
            .skip_frames(true)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .intra_frame_period(IntraFramePeriod::from_num_frames(spec.gop_frames))
            // One thread: the vehicle's CPU is shared with detection and control.
            .num_threads(1)
            // Low: ~15 % less CPU than Medium for SSIM within 0.01 here (docs/benchmarks.md).
            .complexity(Complexity::Low);
        let api = openh264::OpenH264API::from_source();
        let encoder = openh264::encoder::Encoder::with_api_config(api, config)?;
        let yuv = openh264::formats::YUVBuffer::new(spec.width as usize, spec.height as usize);
        Ok(Self { encoder, yuv, spec, frames: 0, first_ns: None, last_ms: None })
    }

    /// The [`EncoderFactory`] of the software encoder.
    pub fn boxed(spec: StreamSpec) -> anyhow::Result<Box<dyn VideoEncoder>> {
        Ok(Box::new(Self::new(spec)?))
    }
}

impl VideoEncoder for OpenH264Encoder {
    fn name(&self) -> &'static str {
        "openh264"
    }

    fn encode(&mut self, bgr: &[u8], keyframe: bool, at_ns: u64) -> anyhow::Result<AccessUnit> {
        let (w, h) = (self.spec.width as usize, self.spec.height as usize);
        anyhow::ensure!(bgr.len() == w * h * 3, "picture of {} bytes for {w}x{h} BGR", bgr.len());
        self.yuv.read_rgb(openh264::formats::BgrSliceU8::new(bgr, (w, h)));
        // The first frame is an IDR anyway; forcing it again would make two.
        if keyframe && self.frames > 0 {
            self.encoder.force_intra_frame();
        }
        // The pictures' own times, so that frames the link skipped leave their bits to the
        // next ones (counted frames at the nominal rate would starve a stream fed at 20 fps
        // and make the rate control skip more). Strictly increasing, as openh264 wants.
        let first = *self.first_ns.get_or_insert(at_ns);
        let mut ms = at_ns.saturating_sub(first) / 1_000_000;
        if let Some(last) = self.last_ms.filter(|&last| ms <= last) {
            ms = last + 1;
        }
        self.last_ms = Some(ms);
        let stream = self.encoder.encode_at(&self.yuv, openh264::Timestamp::from_millis(ms))?;
        let keyframe = matches!(stream.frame_type(), openh264::encoder::FrameType::IDR);
        let bytes = stream.to_vec();
        self.frames += 1;
        Ok(AccessUnit { bytes, keyframe })
    }
}

/// Whether `bytes` is an Annex B access unit with an IDR slice (NAL type 5), SPS (7) and PPS (8).
pub fn is_idr_with_parameter_sets(bytes: &[u8]) -> bool {
    let types: Vec<u8> = nal_types(bytes).collect();
    types.contains(&5) && types.contains(&7) && types.contains(&8)
}

/// The NAL unit types of an Annex B stream, in order.
pub fn nal_types(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    // Emulation prevention keeps `00 00 01` out of NAL payloads: every one starts a unit.
    bytes.windows(4).filter(|w| w[..3] == [0, 0, 1]).map(|w| w[3] & 0x1f)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn road(width: u32, height: u32, t: u32) -> Vec<u8> {
        let mut px = vec![0u8; (width * height * 3) as usize];
        for y in 0..height {
            for x in 0..width {
                let i = ((y * width + x) * 3) as usize;
                let v = ((x + t * 4) % 64 * 4) as u8;
                px[i..i + 3].copy_from_slice(&[v, (y % 200) as u8, 90]);
            }
        }
        px
    }

    #[test]
    fn openh264_makes_annex_b_with_parameter_sets_on_every_keyframe() {
        let spec = StreamSpec { width: 160, height: 120, bitrate_bps: 500_000, fps: 30.0, gop_frames: 10 };
        let mut encoder = OpenH264Encoder::new(spec).unwrap();
        let mut keys = Vec::new();
        for t in 0..25 {
            let unit = encoder.encode(&road(160, 120, t), t == 13, u64::from(t) * 33_333_333).unwrap();
            assert_eq!(&unit.bytes[..4], &[0, 0, 0, 1], "Annex B start code");
            assert_eq!(unit.keyframe, is_idr_with_parameter_sets(&unit.bytes), "frame {t}");
            if unit.keyframe {
                keys.push(t);
            }
        }
        assert!(keys.contains(&0) && keys.contains(&13), "first and forced keyframes: {keys:?}");
        assert!(keys.len() >= 3, "periodic keyframes too: {keys:?}");
        assert!(
            encoder.encode(&[0; 10], false, 10_000_000_000).is_err(),
            "a picture of the wrong size is an error"
        );
    }
}
