//! Picking a camera format: a pure function of what the device offers and what was asked for,
//! so it is tested without hardware.

use std::fmt;

/// A pixel encoding by its V4L2 four-character code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    pub const MJPG: FourCc = FourCc(*b"MJPG");
    pub const YUYV: FourCc = FourCc(*b"YUYV");

    /// Whether ads-vehicle can convert it to BGR: MJPEG (turbojpeg) and YUYV.
    pub fn decodable(self) -> bool {
        self == Self::MJPG || self == Self::YUYV
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// One mode a device offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Offered {
    pub fourcc: FourCc,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl fmt::Display for Offered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}x{}@{}", self.fourcc, self.width, self.height, self.fps)
    }
}

/// What the vehicle wants: the ring's size and frame rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NegotiationError {
    #[error("the device offers no formats at all")]
    NoFormats,
    #[error("no format ads-vehicle can decode (MJPG or YUYV); the device offers: {}", list(.offered))]
    NothingDecodable { offered: Vec<Offered> },
}

/// Lists formats for error messages.
pub fn list(formats: &[Offered]) -> String {
    formats.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The best decodable mode for `request`, in this order of importance:
/// 1. not slower than asked (a control loop fed too few frames steers worse than one fed
///    smaller frames);
/// 2. the exact size, else the smallest larger one (shrinking loses nothing we keep), else the
///    largest smaller one (enlarging invents nothing, but is better than nothing);
/// 3. the frame rate closest to the one asked for;
/// 4. YUYV over MJPEG when both fit equally (no decoding, no compression artefacts).
pub fn negotiate(offered: &[Offered], request: &Request) -> Result<Offered, NegotiationError> {
    if offered.is_empty() {
        return Err(NegotiationError::NoFormats);
    }
    let want_area = u64::from(request.width) * u64::from(request.height);
    offered
        .iter()
        .filter(|o| o.fourcc.decodable())
        .min_by_key(|o| {
            let slower = f64::from(o.fps) + 0.5 < request.fps;
            let area = u64::from(o.width) * u64::from(o.height);
            let exact = (o.width, o.height) == (request.width, request.height);
            let larger = o.width >= request.width && o.height >= request.height;
            let (size_class, size_distance) = match (exact, larger) {
                (true, _) => (0, 0),
                (false, true) => (1, area - want_area),
                (false, false) => (2, u64::MAX - area),
            };
            let fps_distance = ((f64::from(o.fps) - request.fps).abs() * 1000.0) as u64;
            let encoding = u8::from(o.fourcc != FourCc::YUYV);
            (slower, size_class, size_distance, fps_distance, encoding)
        })
        .copied()
        .ok_or_else(|| NegotiationError::NothingDecodable { offered: offered.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(fourcc: FourCc, width: u32, height: u32, fps: u32) -> Offered {
        Offered { fourcc, width, height, fps }
    }
    const REQ: Request = Request { width: 800, height: 600, fps: 30.0 };
    const NV12: FourCc = FourCc(*b"NV12");

    #[test]
    fn exact_size_and_rate_wins_and_yuyv_breaks_ties() {
        let offered = [
            o(FourCc::MJPG, 1280, 720, 30),
            o(FourCc::MJPG, 800, 600, 30),
            o(FourCc::YUYV, 800, 600, 30),
            o(FourCc::YUYV, 640, 480, 30),
        ];
        assert_eq!(negotiate(&offered, &REQ).unwrap(), o(FourCc::YUYV, 800, 600, 30));
    }

    #[test]
    fn a_slower_mode_loses_to_a_faster_one_of_another_size() {
        // The typical USB webcam: YUYV is bandwidth-bound at 10 fps at this size, MJPEG is not.
        let offered =
            [o(FourCc::YUYV, 800, 600, 10), o(FourCc::MJPG, 800, 600, 30), o(FourCc::MJPG, 1280, 720, 30)];
        assert_eq!(negotiate(&offered, &REQ).unwrap(), o(FourCc::MJPG, 800, 600, 30));
        let offered = [o(FourCc::YUYV, 800, 600, 10), o(FourCc::MJPG, 1280, 720, 30)];
        assert_eq!(negotiate(&offered, &REQ).unwrap(), o(FourCc::MJPG, 1280, 720, 30));
    }

    #[test]
    fn without_the_size_the_smallest_larger_then_the_largest_smaller() {
        let offered =
            [o(FourCc::MJPG, 1920, 1080, 30), o(FourCc::MJPG, 1280, 720, 30), o(FourCc::MJPG, 640, 480, 30)];
        assert_eq!(negotiate(&offered, &REQ).unwrap(), o(FourCc::MJPG, 1280, 720, 30));
        let offered = [o(FourCc::YUYV, 320, 240, 30), o(FourCc::YUYV, 640, 480, 30)];
        assert_eq!(negotiate(&offered, &REQ).unwrap(), o(FourCc::YUYV, 640, 480, 30));
    }

    #[test]
    fn the_closest_rate_at_or_above_the_request() {
        let offered =
            [o(FourCc::MJPG, 800, 600, 60), o(FourCc::MJPG, 800, 600, 30), o(FourCc::MJPG, 800, 600, 15)];
        let req = Request { fps: 25.0, ..REQ };
        assert_eq!(negotiate(&offered, &req).unwrap(), o(FourCc::MJPG, 800, 600, 30));
        // Nothing fast enough: the fastest there is.
        let req = Request { fps: 90.0, ..REQ };
        assert_eq!(negotiate(&offered, &req).unwrap(), o(FourCc::MJPG, 800, 600, 60));
    }

    #[test]
    fn undecodable_formats_are_an_error_listing_what_was_offered() {
        let offered = [o(NV12, 800, 600, 30), o(FourCc(*b"GREY"), 640, 480, 60)];
        let err = negotiate(&offered, &REQ).unwrap_err();
        assert_eq!(err.to_string(), "no format ads-vehicle can decode (MJPG or YUYV); the device offers: NV12 800x600@30, GREY 640x480@60");
        assert_eq!(negotiate(&[], &REQ).unwrap_err(), NegotiationError::NoFormats);
        // A decodable mode among undecodable ones is found.
        let offered = [o(NV12, 800, 600, 30), o(FourCc::YUYV, 320, 240, 15)];
        assert_eq!(negotiate(&offered, &REQ).unwrap(), o(FourCc::YUYV, 320, 240, 15));
    }
}
