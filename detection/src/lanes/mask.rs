//! Which bird's-eye pixels look like paint: a colour test and a gradient test at once.
//!
//! A marking is a narrow band brighter (white) or yellower (yellow) than the road on *both*
//! sides. Measuring that rise against the road a line-width away, rather than with an absolute
//! threshold or a 3-px Sobel, keeps the test working in shade and on pale concrete, and makes
//! wide bright areas (kerbs, gravel, sunlit patches) fail it: they rise on one side only.
//! Working in the warped image means every marking is about the same width in pixels,
//! whatever its distance, so one scale fits all.

use opencv::core::{self, Mat, Rect, Scalar, CV_8UC1};
use opencv::prelude::*;

use super::LaneConfig;

/// The per-frame buffers, allocated on the first frame and reused.
#[derive(Debug)]
pub(crate) struct Masker {
    brightness: Mat,
    yellowness: Mat,
    to_brightness: Mat,
    to_yellowness: Mat,
    side: Mat,
    rise: Mat,
    hit: Mat,
    white: Mat,
    bright: Mat,
    pub(crate) mask: Mat,
    ridge_px: i32,
    white_rise: f64,
    yellow_rise: f64,
    min_brightness: f64,
}

impl Masker {
    pub(crate) fn new(cfg: &LaneConfig) -> opencv::Result<Self> {
        let third = 1.0 / 3.0;
        let ridge_px = ((cfg.ridge_m / cfg.m_per_px_x).round() as i32).max(1);
        Ok(Self {
            brightness: Mat::default(),
            yellowness: Mat::default(),
            // BGR → one channel, saturating: (B+G+R)/3 and (R+G)/2 − B.
            to_brightness: Mat::from_slice_2d(&[[third, third, third]])?,
            to_yellowness: Mat::from_slice_2d(&[[-1.0f64, 0.5, 0.5]])?,
            side: Mat::default(),
            rise: Mat::default(),
            hit: Mat::default(),
            white: Mat::default(),
            bright: Mat::default(),
            mask: Mat::default(),
            ridge_px,
            white_rise: f64::from(cfg.white_rise),
            yellow_rise: f64::from(cfg.yellow_rise),
            min_brightness: f64::from(cfg.min_brightness),
        })
    }

    /// Fills `self.mask` (0 or 255, the size of `warped`) from a warped BGR image.
    pub(crate) fn run(&mut self, warped: &Mat) -> opencv::Result<()> {
        core::transform(warped, &mut self.brightness, &self.to_brightness)?;
        core::transform(warped, &mut self.yellowness, &self.to_yellowness)?;
        let (w, h) = (warped.cols(), warped.rows());
        // Only the inner columns are written below: the margins stay zero from here.
        super::ensure_mat(&mut self.mask, h, w, CV_8UC1)?;
        let d = self.ridge_px;
        if w <= 2 * d {
            return Ok(());
        }
        let inner = Rect::new(d, 0, w - 2 * d, h);
        ridge(&self.brightness, d, self.white_rise, &mut self.side, &mut self.rise, &mut self.hit)?;
        // Paint is bright in absolute terms too: this drops dark seams between darker patches.
        core::compare(
            &Mat::roi(&self.brightness, inner)?,
            &Scalar::all(self.min_brightness),
            &mut self.bright,
            core::CMP_GE,
        )?;
        core::bitwise_and(&self.hit, &self.bright, &mut self.white, &core::no_array())?;
        ridge(&self.yellowness, d, self.yellow_rise, &mut self.side, &mut self.rise, &mut self.hit)?;
        let mut out = Mat::roi_mut(&mut self.mask, inner)?;
        core::bitwise_or(&self.white, &self.hit, &mut out, &core::no_array())?;
        Ok(())
    }
}

/// `hit` = 255 where `channel` exceeds both its values `d` columns left and right by at least
/// `min_rise`; `hit` covers columns d..w−d of `channel`.
fn ridge(
    channel: &Mat,
    d: i32,
    min_rise: f64,
    side: &mut Mat,
    rise: &mut Mat,
    hit: &mut Mat,
) -> opencv::Result<()> {
    let (w, h) = (channel.cols(), channel.rows());
    let inner = w - 2 * d;
    let left = Mat::roi(channel, Rect::new(0, 0, inner, h))?;
    let mid = Mat::roi(channel, Rect::new(d, 0, inner, h))?;
    let right = Mat::roi(channel, Rect::new(2 * d, 0, inner, h))?;
    core::max(&left, &right, side)?;
    // u8 subtraction saturates at 0: darker than either side is no rise at all.
    core::subtract(&mid, side, rise, &core::no_array(), -1)?;
    core::compare(rise, &Scalar::all(min_rise), hit, core::CMP_GE)?;
    Ok(())
}
