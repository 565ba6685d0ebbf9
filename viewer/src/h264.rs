//! The viewer's H.264 decode: every access unit from the vehicle is decoded here (openh264)
//! before anything is forwarded, so a corrupt or hostile bitstream is dropped and counted here
//! and never reaches a browser's decoder; the decoded picture becomes the JPEG that
//! `/snapshot.jpg`, `/stream.mjpg` and browsers without WebCodecs get.
//!
//! After a bad access unit the stream cannot be trusted until the next keyframe: units are
//! dropped (counted as waiting) until one arrives, and a keyframe is requested.

use crate::metrics::Metrics;
use crate::packet::{DecodedUnit, ForwardUnit, FramePacket, Jpeg, KeyframeWish};
use ads_protocol::FrameInfo;

/// Largest picture side accepted from the vehicle (the vehicle's own bound is 8192).
const MAX_SIDE: u32 = 8192;

/// Why an access unit was not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum H264Error {
    #[error("not an Annex B access unit: {0}")]
    NotAnnexB(&'static str),
    #[error("waiting for a keyframe")]
    WaitingForKey,
    #[error("corrupt access unit: {0}")]
    Corrupt(String),
    #[error("picture of {got_w}x{got_h}, the frame says {want_w}x{want_h}")]
    Size { got_w: u32, got_h: u32, want_w: u32, want_h: u32 },
    #[error("the decoder could not be created: {0}")]
    Decoder(String),
}

impl H264Error {
    /// A damaged stream (counted as corrupt) rather than one we are waiting to resync.
    pub fn is_corrupt(&self) -> bool {
        !matches!(self, H264Error::WaitingForKey)
    }
}

pub use crate::packet::Picture;

/// One H.264 stream being decoded.
pub struct H264Decoder {
    decoder: Option<openh264::decoder::Decoder>,
    waiting_for_key: bool,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder").field("waiting_for_key", &self.waiting_for_key).finish_non_exhaustive()
    }
}

impl Default for H264Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl H264Decoder {
    pub fn new() -> Self {
        Self { decoder: None, waiting_for_key: true }
    }

    /// The next unit must be a keyframe (e.g. a frame was lost on the way).
    pub fn resync(&mut self) {
        self.waiting_for_key = true;
    }

    pub fn waiting_for_key(&self) -> bool {
        self.waiting_for_key
    }

    /// Decodes one access unit described by `info`. Never panics on any input.
    pub fn decode(&mut self, info: &FrameInfo, unit: &[u8]) -> Result<Picture, H264Error> {
        check_annex_b(unit).inspect_err(|_| self.waiting_for_key = true)?;
        if self.waiting_for_key && !(info.keyframe && has_idr(unit)) {
            return Err(H264Error::WaitingForKey);
        }
        if info.width == 0 || info.height == 0 || info.width > MAX_SIDE || info.height > MAX_SIDE {
            self.waiting_for_key = true;
            return Err(H264Error::Size { got_w: 0, got_h: 0, want_w: info.width, want_h: info.height });
        }
        let result = self.decode_unit(unit, (info.width, info.height));
        match &result {
            Ok(_) => self.waiting_for_key = false,
            Err(_) => {
                // Whatever state the decoder is in now is not to be trusted: a fresh one
                // starts at the next keyframe.
                self.decoder = None;
                self.waiting_for_key = true;
            }
        }
        result
    }

    fn decode_unit(&mut self, unit: &[u8], (want_w, want_h): (u32, u32)) -> Result<Picture, H264Error> {
        use openh264::formats::YUVSource as _;
        if self.decoder.is_none() {
            let api = openh264::OpenH264API::from_source();
            let config = openh264::decoder::DecoderConfig::new();
            let decoder = openh264::decoder::Decoder::with_api_config(api, config)
                .map_err(|e| H264Error::Decoder(e.to_string()))?;
            self.decoder = Some(decoder);
        }
        let decoder = self.decoder.as_mut().ok_or_else(|| H264Error::Decoder("none".into()))?;
        let picture = decoder
            .decode(unit)
            .map_err(|e| H264Error::Corrupt(e.to_string()))?
            .ok_or_else(|| H264Error::Corrupt("no picture in the access unit".into()))?;
        let (w, h) = picture.dimensions();
        let (got_w, got_h) = (u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX));
        if (got_w, got_h) != (want_w, want_h) {
            return Err(H264Error::Size { got_w, got_h, want_w, want_h });
        }
        let mut rgb = vec![0u8; w * h * 3];
        picture.write_rgb8(&mut rgb);
        Ok(Picture { width: got_w, height: got_h, rgb })
    }
}

/// The link thread's H.264 receiver: decodes, counts, and wishes for keyframes.
#[derive(Debug, Default)]
pub struct H264Receiver {
    decoder: H264Decoder,
    logged: u64,
}

impl H264Receiver {
    /// Takes one H.264 frame; `None`: dropped (counted, a keyframe asked for).
    pub fn take(
        &mut self,
        (m, wish, jpeg_quality): (&Metrics, &KeyframeWish, u8),
        info: &FrameInfo,
        unit: &[u8],
    ) -> Option<DecodedUnit> {
        use std::sync::atomic::Ordering;
        match self.decoder.decode(info, unit) {
            Ok(picture) => {
                m.h264_decoded.fetch_add(1, Ordering::Relaxed);
                Some(DecodedUnit {
                    unit: ForwardUnit { bytes: unit.to_vec(), keyframe: info.keyframe },
                    jpeg: Jpeg::from_picture(picture, jpeg_quality),
                })
            }
            Err(e) => {
                let counter = if e.is_corrupt() { &m.h264_corrupt } else { &m.h264_waiting };
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if e.is_corrupt() && (n < 5 || n % 1000 == 0) {
                    self.logged += 1;
                    tracing::warn!(
                        frame = info.frame_id,
                        "H.264 access unit dropped ({} so far): {e}",
                        n + 1
                    );
                }
                wish.want();
                None
            }
        }
    }
}

/// One browser's side of the H.264 stream: whether it decodes H.264 (it says so once its
/// WebCodecs decoder is configured), and whether it is in step. A browser that skipped a
/// frame (it was slower than the stream: newest wins) or whose decoder failed gets JPEG until
/// the next keyframe, so its canvas never freezes.
#[derive(Debug, Default)]
pub struct BrowserStream {
    accepts_h264: bool,
    in_step: bool,
}

impl BrowserStream {
    pub fn set_accepts_h264(&mut self, accepts: bool, wish: &KeyframeWish) {
        self.accepts_h264 = accepts;
        self.in_step = false;
        if accepts {
            wish.want();
        }
    }

    /// The browser's decoder failed: JPEG until the next keyframe.
    pub fn resync(&mut self, wish: &KeyframeWish) {
        self.in_step = false;
        wish.want();
    }

    /// What to send of `packet`, `skipped` packets after the previous one:
    /// (codec, payload, keyframe).
    pub fn choose<'a>(
        &mut self,
        packet: &'a FramePacket,
        skipped: u64,
        wish: &KeyframeWish,
    ) -> (&'static str, &'a [u8], bool) {
        let jpeg = || (ads_protocol::CODEC_JPEG, packet.jpeg.bytes(), true);
        let Some(unit) = packet.h264.as_ref().filter(|_| self.accepts_h264) else { return jpeg() };
        if skipped > 0 && self.in_step {
            self.in_step = false;
            wish.want();
        }
        if unit.keyframe {
            self.in_step = true;
        }
        if self.in_step {
            (ads_protocol::CODEC_H264, unit.bytes.as_slice(), unit.keyframe)
        } else {
            jpeg()
        }
    }
}

/// Starts with a start code and holds at least one NAL unit with a valid header.
fn check_annex_b(unit: &[u8]) -> Result<(), H264Error> {
    if unit.len() < 5 {
        return Err(H264Error::NotAnnexB("shorter than a start code and a NAL header"));
    }
    if !(unit.starts_with(&[0, 0, 0, 1]) || unit.starts_with(&[0, 0, 1])) {
        return Err(H264Error::NotAnnexB("no start code at the start"));
    }
    if nal_headers(unit).any(|h| h & 0x80 != 0) {
        return Err(H264Error::NotAnnexB("a NAL header with the forbidden bit set"));
    }
    Ok(())
}

/// The first byte of every NAL unit of an Annex B stream.
fn nal_headers(unit: &[u8]) -> impl Iterator<Item = u8> + '_ {
    // Emulation prevention keeps `00 00 01` out of NAL payloads: every one starts a unit.
    unit.windows(4).filter(|w| w[..3] == [0, 0, 1]).map(|w| w[3])
}

/// Holds an IDR slice (type 5) and the parameter sets it needs (SPS 7, PPS 8).
pub fn has_idr(unit: &[u8]) -> bool {
    let mut seen = [false; 3];
    for t in nal_headers(unit).map(|h| h & 0x1f) {
        match t {
            5 => seen[0] = true,
            7 => seen[1] = true,
            8 => seen[2] = true,
            _ => {}
        }
    }
    seen == [true; 3]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short real stream: an IDR then P frames, from openh264's encoder.
    pub(crate) fn stream(width: u32, height: u32, frames: usize) -> Vec<Vec<u8>> {
        use openh264::encoder::{Encoder, EncoderConfig};
        let api = openh264::OpenH264API::from_source();
        let mut encoder = Encoder::with_api_config(api, EncoderConfig::new()).unwrap();
        let mut yuv = openh264::formats::YUVBuffer::new(width as usize, height as usize);
        (0..frames)
            .map(|t| {
                let rgb: Vec<u8> =
                    (0..width * height * 3).map(|i| ((i / 3 % width + t as u32 * 3) % 256) as u8).collect();
                yuv.read_rgb8(openh264::formats::RgbSliceU8::new(&rgb, (width as usize, height as usize)));
                encoder.encode(&yuv).unwrap().to_vec()
            })
            .collect()
    }

    fn info(width: u32, height: u32, keyframe: bool) -> FrameInfo {
        FrameInfo {
            frame_id: 1,
            width,
            height,
            quality: 0,
            encode_us: 0,
            tier: 0,
            goodput_kbps: 0,
            reduced: false,
            codec: ads_protocol::CODEC_H264.into(),
            keyframe,
            source_width: 0,
            source_height: 0,
        }
    }

    #[test]
    fn a_stream_decodes_and_damage_waits_for_the_next_keyframe() {
        let units = stream(64, 48, 4);
        assert!(has_idr(&units[0]) && !has_idr(&units[1]));
        let mut d = H264Decoder::new();
        assert_eq!(d.decode(&info(64, 48, false), &units[1]).unwrap_err(), H264Error::WaitingForKey);
        let picture = d.decode(&info(64, 48, true), &units[0]).unwrap();
        assert_eq!((picture.width, picture.height, picture.rgb.len()), (64, 48, 64 * 48 * 3));
        assert!(d.decode(&info(64, 48, false), &units[1]).is_ok());
        // Truncated, garbage, and a frame that claims another size: errors, never a panic.
        let cut = &units[2][..units[2].len() / 2];
        assert!(d.decode(&info(64, 48, false), cut).is_err());
        assert!(d.waiting_for_key());
        assert_eq!(d.decode(&info(64, 48, false), &units[3]).unwrap_err(), H264Error::WaitingForKey);
        assert!(matches!(
            d.decode(&info(64, 48, false), b"\x00\x00\x00\x01\xff\xff"),
            Err(H264Error::NotAnnexB(_))
        ));
        assert!(matches!(d.decode(&info(64, 48, true), b"JFIF"), Err(H264Error::NotAnnexB(_))));
        assert!(matches!(d.decode(&info(640, 480, true), &units[0]), Err(H264Error::Size { .. })));
        // And back in step at the keyframe.
        assert!(d.decode(&info(64, 48, true), &units[0]).is_ok());
    }
}
