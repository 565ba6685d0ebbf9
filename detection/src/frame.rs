//! A BGR frame as the detectors take it: borrowed bytes, usually straight from the ring.

/// A borrowed 8-bit BGR image. `stride` is the distance between rows in bytes
/// (>= width * 3); frames from the ring are packed (`stride == width * 3`).
#[derive(Debug, Clone, Copy)]
pub struct BgrFrame<'a> {
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

/// Why a frame cannot be processed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {width}x{height} with stride {stride} needs {needed} bytes, got {got}")]
    TooShort { width: u32, height: u32, stride: u32, needed: usize, got: usize },
    #[error("stride {stride} is shorter than a row of {width} BGR pixels")]
    BadStride { width: u32, stride: u32 },
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
}

impl<'a> BgrFrame<'a> {
    /// A packed frame (`stride == width * 3`).
    pub fn packed(data: &'a [u8], width: u32, height: u32) -> Self {
        Self { data, width, height, stride: width * 3 }
    }

    /// Checks that the bytes cover the geometry.
    pub fn check(&self) -> Result<(), FrameError> {
        if self.stride < self.width * 3 {
            return Err(FrameError::BadStride { width: self.width, stride: self.stride });
        }
        let needed = self.stride as usize * self.height.saturating_sub(1) as usize + self.width as usize * 3;
        if self.data.len() < needed || self.height == 0 {
            return Err(FrameError::TooShort {
                width: self.width,
                height: self.height,
                stride: self.stride,
                needed,
                got: self.data.len(),
            });
        }
        Ok(())
    }
}
