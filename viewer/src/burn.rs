//! Overlays burned into the JPEG, for `/stream.mjpg` and `/snapshot.jpg` (VLC, curl, anything
//! that is not our page). Same layers and colours as the browser draws.

use crate::overlay::{Layers, Overlay};
use crate::raster::{Canvas, Rgb};

pub const LANE: Rgb = [0, 230, 0];
pub const AREA: Rgb = [0, 200, 80];
pub const CENTRE: Rgb = [255, 220, 0];
pub const OBJECT: Rgb = [255, 64, 160];
pub const TRUTH: Rgb = [0, 200, 255];
pub const WARN: Rgb = [255, 70, 40];
pub const TEXT: Rgb = [255, 255, 255];

#[derive(Debug, thiserror::Error)]
pub enum BurnError {
    #[error("decoding the vehicle's JPEG: {0}")]
    Decode(turbojpeg::Error),
    #[error("encoding the JPEG: {0}")]
    Encode(turbojpeg::Error),
    #[error("the JPEG is {got:?} but the overlay is for {want:?}")]
    Size { got: (usize, usize), want: (u32, u32) },
    #[error("the JPEG claims {width}x{height} pixels, more than the {max} this viewer decodes")]
    TooLarge { width: usize, height: usize, max: u64 },
}

/// Reads only the JPEG's header: its size must be what the frame message said and at most
/// `max_pixels`, so that a 600-byte "JPEG bomb" claiming 20000x20000 is never decoded.
pub fn check_jpeg(jpeg: &[u8], width: u32, height: u32, max_pixels: u64) -> Result<(), BurnError> {
    let header = turbojpeg::read_header(jpeg).map_err(BurnError::Decode)?;
    if (header.width as u64).saturating_mul(header.height as u64) > max_pixels {
        return Err(BurnError::TooLarge { width: header.width, height: header.height, max: max_pixels });
    }
    if (header.width, header.height) != (width as usize, height as usize) {
        return Err(BurnError::Size { got: (header.width, header.height), want: (width, height) });
    }
    Ok(())
}

/// Decodes `jpeg` (after [`check_jpeg`] against `max_pixels`), draws `overlay`'s `layers` on
/// it and encodes it again.
pub fn burn(
    jpeg: &[u8],
    overlay: &Overlay,
    layers: Layers,
    quality: u8,
    max_pixels: u64,
) -> Result<Vec<u8>, BurnError> {
    check_jpeg(jpeg, overlay.width, overlay.height, max_pixels)?;
    let mut image = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).map_err(BurnError::Decode)?;
    let (w, h) = (image.width, image.height);
    if overlay.width as usize != w || overlay.height as usize != h {
        return Err(BurnError::Size { got: (w, h), want: (overlay.width, overlay.height) });
    }
    if let Some(mut canvas) = Canvas::new(&mut image.pixels, w, h) {
        draw(&mut canvas, overlay, layers);
    }
    let encoded = turbojpeg::compress(image.as_deref(), i32::from(quality), turbojpeg::Subsamp::Sub2x2)
        .map_err(BurnError::Encode)?;
    Ok(encoded.to_vec())
}

pub fn draw(c: &mut Canvas<'_>, overlay: &Overlay, layers: Layers) {
    if let Some(lanes) = &overlay.lanes {
        if layers.area {
            c.fill_polygon(&lanes.area, AREA, 0.3);
        }
        if layers.lanes {
            c.polyline(&lanes.left, 4.0, LANE);
            c.polyline(&lanes.right, 4.0, LANE);
        }
        if layers.centre {
            c.polyline(&lanes.centre, 2.0, CENTRE);
            if let Some(bottom) = lanes.centre.last() {
                c.text(bottom[0] - 40.0, bottom[1] - 24.0, &format!("{:+.2} m", lanes.offset_m), 2, CENTRE);
            }
        }
    }
    if layers.truth {
        for line in &overlay.truth {
            c.polyline(line, 2.0, TRUTH);
        }
    }
    if layers.objects {
        for b in &overlay.objects {
            c.rect_outline(b.x, b.y, b.w, b.h, 3.0, OBJECT);
            c.text(b.x, (b.y - 12.0).max(0.0), &format!("{} {:.0}%", b.label, b.score * 100.0), 1, OBJECT);
        }
    }
    if layers.hud {
        if let Some(hud) = &overlay.hud {
            for (i, line) in hud.lines().iter().enumerate() {
                c.text(8.0, 8.0 + i as f32 * 20.0, line, 2, TEXT);
            }
        }
    }
    if layers.stale {
        let right = c.width() as f32 - 8.0;
        for (i, warning) in overlay.stale.iter().enumerate() {
            let width = warning.len() as f32 * 16.0;
            c.text(right - width, 8.0 + i as f32 * 20.0, warning, 2, WARN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::{LaneOverlay, ObjectBox};

    fn overlay() -> Overlay {
        Overlay {
            width: 64,
            height: 48,
            lanes: Some(LaneOverlay {
                left: vec![[10.0, 10.0], [10.0, 40.0]],
                right: vec![[50.0, 10.0], [50.0, 40.0]],
                ..LaneOverlay::default()
            }),
            objects: vec![ObjectBox { x: 20.0, y: 20.0, w: 10.0, h: 10.0, label: "car".into(), score: 0.5 }],
            ..Overlay::default()
        }
    }

    fn green_pixels(jpeg: &[u8]) -> usize {
        let img = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).unwrap();
        img.pixels.chunks_exact(3).filter(|p| p[1] > 150 && p[0] < 100 && p[2] < 100).count()
    }

    #[test]
    fn burned_lanes_show_up_in_the_jpeg_only_when_their_layer_is_on() {
        let grey = turbojpeg::Image {
            pixels: vec![90u8; 64 * 48 * 3],
            width: 64,
            pitch: 64 * 3,
            height: 48,
            format: turbojpeg::PixelFormat::RGB,
        };
        let jpeg = turbojpeg::compress(grey.as_deref(), 90, turbojpeg::Subsamp::None).unwrap().to_vec();
        let with = burn(&jpeg, &overlay(), Layers::default(), 90, MAX).unwrap();
        let without = burn(&jpeg, &overlay(), Layers { lanes: false, ..Layers::default() }, 90, MAX).unwrap();
        assert!(green_pixels(&with) > 80, "{}", green_pixels(&with));
        assert_eq!(green_pixels(&without), 0);
        let wrong = Overlay { width: 65, ..overlay() };
        assert!(matches!(burn(&jpeg, &wrong, Layers::default(), 90, MAX), Err(BurnError::Size { .. })));
        assert!(matches!(
            burn(b"not a jpeg", &overlay(), Layers::default(), 90, MAX),
            Err(BurnError::Decode(_))
        ));
        assert!(matches!(
            burn(&jpeg, &overlay(), Layers::default(), 90, 64 * 47),
            Err(BurnError::TooLarge { .. })
        ));
    }

    const MAX: u64 = 1 << 20;

    /// A valid JPEG header claiming `width`x`height`, with almost no data behind it.
    pub fn bomb(width: u16, height: u16) -> Vec<u8> {
        let small = turbojpeg::Image {
            pixels: vec![0u8; 16 * 16 * 3],
            width: 16,
            pitch: 16 * 3,
            height: 16,
            format: turbojpeg::PixelFormat::RGB,
        };
        let mut jpeg = turbojpeg::compress(small.as_deref(), 50, turbojpeg::Subsamp::None).unwrap().to_vec();
        // SOF0: FF C0, length (2), precision (1), height (2), width (2).
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    #[test]
    fn a_jpeg_bomb_is_refused_from_its_header() {
        let err = check_jpeg(&bomb(20_000, 20_000), 20_000, 20_000, 3840 * 2160).unwrap_err();
        assert!(matches!(err, BurnError::TooLarge { width: 20_000, height: 20_000, .. }), "{err}");
        assert!(check_jpeg(&bomb(16, 16), 16, 16, 3840 * 2160).is_ok());
        assert!(matches!(check_jpeg(&bomb(16, 16), 17, 16, 1 << 20), Err(BurnError::Size { .. })));
    }
}
