//! Pixels from devices and files into the ring's BGR8 at the ring's size.
//!
//! MJPEG is decoded with turbojpeg (libjpeg-turbo, SIMD); YUYV (4:2:2) is converted and
//! frames of another size are resized with OpenCV (`cvtColor`, `resize` with `INTER_AREA` when
//! shrinking, which averages instead of skipping pixels).

use opencv::core::{Mat, Size, ToInputArray, CV_8UC2, CV_8UC3};
use opencv::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("MJPEG frame does not decode: {0}")]
    Jpeg(#[from] turbojpeg::Error),
    #[error("{format} frame of {got} bytes is too short for {width}x{height} (needs {needed})")]
    Short { format: &'static str, width: u32, height: u32, got: usize, needed: usize },
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
}

/// Converts device frames into the ring's geometry, reusing its buffers between frames.
#[derive(Debug)]
pub struct Converter {
    width: u32,
    height: u32,
    decompressor: Option<turbojpeg::Decompressor>,
    decoded: Vec<u8>,
}

impl Converter {
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height, decompressor: None, decoded: Vec::new() }
    }

    /// Decodes an MJPEG frame (any size) into `out` (packed BGR of the ring's size).
    pub fn mjpeg(&mut self, jpeg: &[u8], out: &mut Vec<u8>) -> Result<(), ConvertError> {
        let d = match &mut self.decompressor {
            Some(d) => d,
            None => self.decompressor.insert(turbojpeg::Decompressor::new()?),
        };
        let header = d.read_header(jpeg)?;
        let (w, h) = (header.width, header.height);
        self.decoded.resize(w * h * 3, 0);
        let image = turbojpeg::Image {
            pixels: self.decoded.as_mut_slice(),
            width: w,
            pitch: w * 3,
            height: h,
            format: turbojpeg::PixelFormat::BGR,
        };
        d.decompress(jpeg, image)?;
        let decoded = std::mem::take(&mut self.decoded);
        let result = self.fit_bgr(&decoded, w as u32, h as u32, out);
        self.decoded = decoded;
        result
    }

    /// Converts a YUYV (YUY2) frame of `width`x`height` into `out`.
    pub fn yuyv(
        &mut self,
        data: &[u8],
        width: u32,
        height: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), ConvertError> {
        let needed = width as usize * height as usize * 2;
        if data.len() < needed {
            return Err(ConvertError::Short { format: "YUYV", width, height, got: data.len(), needed });
        }
        let src = Mat::new_rows_cols_with_data(height as i32, width as i32 * 2, &data[..needed])?;
        let src = src.reshape(2, height as i32)?;
        debug_assert_eq!(src.typ(), CV_8UC2);
        let mut bgr = Mat::default();
        opencv::imgproc::cvt_color_def(&src, &mut bgr, opencv::imgproc::COLOR_YUV2BGR_YUYV)?;
        self.fit_mat(&bgr, out)
    }

    /// Packed BGR of any size into `out` at the ring's size.
    pub fn fit_bgr(
        &self,
        data: &[u8],
        width: u32,
        height: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), ConvertError> {
        let needed = width as usize * height as usize * 3;
        if data.len() < needed {
            return Err(ConvertError::Short { format: "BGR", width, height, got: data.len(), needed });
        }
        if (width, height) == (self.width, self.height) {
            out.clear();
            out.extend_from_slice(&data[..needed]);
            return Ok(());
        }
        let src = Mat::new_rows_cols_with_data(height as i32, width as i32 * 3, &data[..needed])?;
        let src = src.reshape(3, height as i32)?;
        self.fit_mat(&src, out)
    }

    /// An 8-bit BGR `Mat` (e.g. from OpenCV's video decoder) into `out` at the ring's size.
    pub fn fit_mat(
        &self,
        src: &(impl MatTraitConst + ToInputArray),
        out: &mut Vec<u8>,
    ) -> Result<(), ConvertError> {
        debug_assert_eq!(src.typ(), CV_8UC3);
        let size = Size::new(self.width as i32, self.height as i32);
        if src.size()? == size {
            return self.copy_out(src, out);
        }
        let shrinking = src.cols() > size.width || src.rows() > size.height;
        let interpolation =
            if shrinking { opencv::imgproc::INTER_AREA } else { opencv::imgproc::INTER_LINEAR };
        let mut resized = Mat::default();
        opencv::imgproc::resize(src, &mut resized, size, 0.0, 0.0, interpolation)?;
        self.copy_out(&resized, out)
    }

    fn copy_out(&self, fitted: &impl MatTraitConst, out: &mut Vec<u8>) -> Result<(), ConvertError> {
        let row = self.width as usize * 3;
        out.clear();
        out.reserve(row * self.height as usize);
        if fitted.is_continuous() {
            out.extend_from_slice(&fitted.data_bytes()?[..row * self.height as usize]);
        } else {
            for r in 0..self.height as i32 {
                out.extend_from_slice(&fitted.row(r)?.data_bytes()?[..row]);
            }
        }
        Ok(())
    }
}

/// Copies a packed BGR frame into ring rows of `stride` bytes.
pub fn copy_rows(frame: &[u8], width: u32, pixels: &mut [u8], stride: usize) {
    let row = width as usize * 3;
    if stride == row {
        let n = frame.len().min(pixels.len());
        pixels[..n].copy_from_slice(&frame[..n]);
        return;
    }
    for (src, dst) in frame.chunks_exact(row).zip(pixels.chunks_mut(stride)) {
        dst[..row].copy_from_slice(src);
    }
}
