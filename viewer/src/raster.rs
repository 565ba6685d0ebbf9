//! Drawing on an RGB8 image: what `/stream.mjpg` needs to burn overlays in. Deliberately
//! small (lines, polygons, boxes, 8x8 bitmap text); anything fancier belongs in the browser.

use crate::overlay::Point;

pub type Rgb = [u8; 3];

/// A packed RGB8 image borrowed for drawing.
#[derive(Debug)]
pub struct Canvas<'a> {
    pixels: &'a mut [u8],
    width: usize,
    height: usize,
}

impl<'a> Canvas<'a> {
    /// `None` if `pixels` is not `width * height * 3` bytes.
    pub fn new(pixels: &'a mut [u8], width: usize, height: usize) -> Option<Self> {
        (pixels.len() == width * height * 3).then_some(Self { pixels, width, height })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    fn blend(&mut self, x: i64, y: i64, color: Rgb, alpha: f32) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let i = (y as usize * self.width + x as usize) * 3;
        for (c, &new) in self.pixels[i..i + 3].iter_mut().zip(&color) {
            *c = (f32::from(*c) * (1.0 - alpha) + f32::from(new) * alpha).round() as u8;
        }
    }

    pub fn fill_rect(&mut self, x: f32, y: f32, w: f32, h: f32, color: Rgb, alpha: f32) {
        let (x0, y0) = (x.floor() as i64, y.floor() as i64);
        let (x1, y1) = ((x + w).ceil() as i64, (y + h).ceil() as i64);
        for py in y0.max(0)..y1.min(self.height as i64) {
            for px in x0.max(0)..x1.min(self.width as i64) {
                self.blend(px, py, color, alpha);
            }
        }
    }

    /// A line `thickness` pixels wide, drawn by stamping squares along it. The segment is
    /// first clipped to the canvas (plus the line's width), so the number of steps is bounded
    /// by the canvas, whatever the coordinates.
    pub fn line(&mut self, a: Point, b: Point, thickness: f32, color: Rgb) {
        let margin = thickness.clamp(0.0, 64.0) + 1.0;
        let bounds = [-margin, -margin, self.width as f32 + margin, self.height as f32 + margin];
        let Some((a, b)) = clip_segment(a, b, bounds) else { return };
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let steps = (dx.abs().max(dy.abs()) * 2.0).ceil().max(1.0) as usize;
        let half = thickness / 2.0;
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            let (x, y) = (a[0] + dx * t, a[1] + dy * t);
            self.fill_rect(x - half, y - half, thickness, thickness, color, 1.0);
        }
    }

    pub fn polyline(&mut self, points: &[Point], thickness: f32, color: Rgb) {
        for pair in points.windows(2) {
            self.line(pair[0], pair[1], thickness, color);
        }
    }

    /// Even-odd scanline fill, blended with `alpha`.
    pub fn fill_polygon(&mut self, points: &[Point], color: Rgb, alpha: f32) {
        if points.len() < 3 {
            return;
        }
        let y_min = points.iter().map(|p| p[1]).fold(f32::INFINITY, f32::min).max(0.0).floor() as i64;
        let y_max = points
            .iter()
            .map(|p| p[1])
            .fold(f32::NEG_INFINITY, f32::max)
            .min(self.height as f32 - 1.0)
            .ceil() as i64;
        let mut crossings = Vec::new();
        for y in y_min..=y_max {
            let yc = y as f32 + 0.5;
            crossings.clear();
            for (i, a) in points.iter().enumerate() {
                let b = points[(i + 1) % points.len()];
                if (a[1] <= yc) != (b[1] <= yc) {
                    crossings.push(a[0] + (yc - a[1]) / (b[1] - a[1]) * (b[0] - a[0]));
                }
            }
            crossings.sort_by(f32::total_cmp);
            for pair in crossings.chunks_exact(2) {
                let (x0, x1) = (pair[0].round() as i64, pair[1].round() as i64);
                for x in x0.max(0)..x1.min(self.width as i64) {
                    self.blend(x, y, color, alpha);
                }
            }
        }
    }

    pub fn rect_outline(&mut self, x: f32, y: f32, w: f32, h: f32, thickness: f32, color: Rgb) {
        self.fill_rect(x, y, w, thickness, color, 1.0);
        self.fill_rect(x, y + h - thickness, w, thickness, color, 1.0);
        self.fill_rect(x, y, thickness, h, color, 1.0);
        self.fill_rect(x + w - thickness, y, thickness, h, color, 1.0);
    }

    /// ASCII text in an 8x8 font scaled by `scale`, on a dark box for legibility. Returns
    /// the width drawn.
    pub fn text(&mut self, x: f32, y: f32, text: &str, scale: u32, color: Rgb) -> f32 {
        let s = scale.max(1) as f32;
        let width = text.chars().count() as f32 * 8.0 * s;
        self.fill_rect(x - 2.0, y - 2.0, width + 4.0, 8.0 * s + 4.0, [0, 0, 0], 0.55);
        for (i, ch) in text.chars().enumerate() {
            let glyph =
                font8x8::legacy::BASIC_LEGACY[if ch.is_ascii() { ch as usize } else { b'?' as usize }];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        let px = x + (i as f32 * 8.0 + col as f32) * s;
                        let py = y + row as f32 * s;
                        self.fill_rect(px, py, s, s, color, 1.0);
                    }
                }
            }
        }
        width
    }
}

/// Cohen–Sutherland: the part of segment `a`–`b` inside `[x0, y0, x1, y1]`, if any; `None`
/// for non-finite input. Intersections are computed at the boundary itself (not through a
/// parameter along the segment), so even ±3e38 endpoints clip to the right pixels, and the
/// result is clamped to the bounds whatever rounding did.
fn clip_segment(a: Point, b: Point, [x0, y0, x1, y1]: [f32; 4]) -> Option<(Point, Point)> {
    if !(a.iter().chain(&b).all(|v| v.is_finite())) {
        return None;
    }
    let (x0, y0, x1, y1) = (f64::from(x0), f64::from(y0), f64::from(x1), f64::from(y1));
    let code = |[x, y]: [f64; 2]| {
        u8::from(x < x0) | u8::from(x > x1) << 1 | u8::from(y < y0) << 2 | u8::from(y > y1) << 3
    };
    let (mut p, mut q) = ([f64::from(a[0]), f64::from(a[1])], [f64::from(b[0]), f64::from(b[1])]);
    for _ in 0..8 {
        let (cp, cq) = (code(p), code(q));
        if cp | cq == 0 {
            let clamp = |[x, y]: [f64; 2]| [x.clamp(x0, x1) as f32, y.clamp(y0, y1) as f32];
            return Some((clamp(p), clamp(q)));
        }
        if cp & cq != 0 {
            return None;
        }
        let (out, other) = if cp != 0 { (&mut p, q) } else { (&mut q, p) };
        let c = code(*out);
        let (dx, dy) = (other[0] - out[0], other[1] - out[1]);
        *out = if c & 0b1100 != 0 {
            let edge = if c & 0b0100 != 0 { y0 } else { y1 };
            [out[0] + dx * (edge - out[1]) / dy, edge]
        } else {
            let edge = if c & 0b0001 != 0 { x0 } else { x1 };
            [edge, out[1] + dy * (edge - out[0]) / dx]
        };
        if !out.iter().all(|v| v.is_finite()) {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(pixels: &[u8], color: Rgb) -> usize {
        pixels.chunks_exact(3).filter(|p| *p == color).count()
    }

    #[test]
    fn a_filled_square_polygon_covers_its_area_and_nothing_else() {
        let mut px = vec![0u8; 20 * 20 * 3];
        let mut c = Canvas::new(&mut px, 20, 20).unwrap();
        c.fill_polygon(&[[5.0, 5.0], [15.0, 5.0], [15.0, 15.0], [5.0, 15.0]], [0, 255, 0], 1.0);
        assert_eq!(count(&px, [0, 255, 0]), 100);
    }

    #[test]
    fn lines_clip_at_the_edges_and_text_draws_glyphs() {
        let mut px = vec![0u8; 30 * 10 * 3];
        let mut c = Canvas::new(&mut px, 30, 10).unwrap();
        c.line([-10.0, 5.0], [40.0, 5.0], 1.0, [255, 0, 0]);
        assert_eq!(count(&px, [255, 0, 0]), 30 * 2);
        let mut px = vec![0u8; 20 * 10 * 3];
        let mut c = Canvas::new(&mut px, 20, 10).unwrap();
        c.text(1.0, 1.0, "A", 1, [255, 255, 255]);
        let lit = count(&px, [255, 255, 255]);
        // The glyph 'A' of font8x8 has 18 lit pixels.
        assert_eq!(
            lit,
            font8x8::legacy::BASIC_LEGACY[b'A' as usize]
                .iter()
                .map(|b| b.count_ones() as usize)
                .sum::<usize>()
        );
        assert!(Canvas::new(&mut px, 21, 10).is_none());
    }

    #[test]
    fn absurd_coordinates_draw_the_visible_part_and_return_at_once() {
        let mut px = vec![0u8; 30 * 10 * 3];
        let mut c = Canvas::new(&mut px, 30, 10).unwrap();
        // Unclipped, this line takes ~2^64 steps.
        c.line([-3e38, 5.0], [3e38, 5.0], 1.0, [255, 0, 0]);
        c.line([f32::NAN, 0.0], [5.0, 5.0], 1.0, [0, 0, 255]);
        c.line([f32::INFINITY, 0.0], [5.0, 5.0], 1.0, [0, 0, 255]);
        c.line([100.0, 100.0], [200.0, 300.0], 1.0, [0, 0, 255]);
        assert_eq!(count(&px, [255, 0, 0]), 30 * 2);
        assert_eq!(count(&px, [0, 0, 255]), 0);
    }
}
