//! The picture a codec starts from, and the downscale every codec's smaller tiers share.

/// The frame as it lies in the ring: BGR, `stride` bytes per row.
#[derive(Debug, Clone, Copy)]
pub struct SourceImage<'a> {
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

/// Area-average (box filter) downscale of a BGR image into `out` (packed, `width * 3` a row).
pub fn downscale_bgr(src: SourceImage<'_>, width: u32, height: u32, out: &mut Vec<u8>) {
    let (sw, sh, stride) = (src.width as usize, src.height as usize, src.stride as usize);
    let (w, h) = (width as usize, height as usize);
    let spans = |dst: usize, full: usize| -> Vec<(usize, usize)> {
        (0..dst).map(|i| (i * full / dst, ((i + 1) * full / dst).max(i * full / dst + 1).min(full))).collect()
    };
    let (cols, rows) = (spans(w, sw), spans(h, sh));
    out.clear();
    out.resize(w * h * 3, 0);
    let mut acc = vec![0u32; w * 3];
    for (y, &(y0, y1)) in rows.iter().enumerate() {
        acc.iter_mut().for_each(|a| *a = 0);
        for sy in y0..y1 {
            let row = &src.pixels[sy * stride..sy * stride + sw * 3];
            for (x, &(x0, x1)) in cols.iter().enumerate() {
                let (mut b, mut g, mut r) = (0u32, 0u32, 0u32);
                for px in row[x0 * 3..x1 * 3].chunks_exact(3) {
                    b += u32::from(px[0]);
                    g += u32::from(px[1]);
                    r += u32::from(px[2]);
                }
                acc[x * 3] += b;
                acc[x * 3 + 1] += g;
                acc[x * 3 + 2] += r;
            }
        }
        let line = &mut out[y * w * 3..(y + 1) * w * 3];
        for (x, &(x0, x1)) in cols.iter().enumerate() {
            let n = ((x1 - x0) * (y1 - y0)) as u32;
            for c in 0..3 {
                line[x * 3 + c] = ((acc[x * 3 + c] + n / 2) / n) as u8;
            }
        }
    }
}
