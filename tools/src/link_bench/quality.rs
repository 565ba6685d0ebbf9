//! Quality of a delivered frame against the captured pixels: PSNR and SSIM on luma, the
//! delivered frame decoded and scaled back to the ring's size (bilinear, as a browser
//! stretches it). SSIM over 8x8 blocks (non-overlapping windows, the usual constants).

/// Luma (BT.601) of a BGR image with `stride` bytes a row.
pub fn luma_bgr(pixels: &[u8], width: usize, height: usize, stride: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(width * height);
    for y in 0..height {
        for px in pixels[y * stride..y * stride + width * 3].chunks_exact(3) {
            out.push(0.114 * f32::from(px[0]) + 0.587 * f32::from(px[1]) + 0.299 * f32::from(px[2]));
        }
    }
    out
}

/// Bilinear resize of a luma plane.
pub fn resize(src: &[f32], sw: usize, sh: usize, w: usize, h: usize) -> Vec<f32> {
    if (sw, sh) == (w, h) {
        return src.to_vec();
    }
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let fy = ((y as f32 + 0.5) * sh as f32 / h as f32 - 0.5).clamp(0.0, (sh - 1) as f32);
        let (y0, ty) = (fy.floor() as usize, fy.fract());
        let y1 = (y0 + 1).min(sh - 1);
        for x in 0..w {
            let fx = ((x as f32 + 0.5) * sw as f32 / w as f32 - 0.5).clamp(0.0, (sw - 1) as f32);
            let (x0, tx) = (fx.floor() as usize, fx.fract());
            let x1 = (x0 + 1).min(sw - 1);
            let top = src[y0 * sw + x0] * (1.0 - tx) + src[y0 * sw + x1] * tx;
            let bottom = src[y1 * sw + x0] * (1.0 - tx) + src[y1 * sw + x1] * tx;
            out.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    out
}

/// PSNR in dB (capped at 99 for identical planes).
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>() / a.len().max(1) as f64;
    if mse <= 1e-10 {
        99.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Mean SSIM over 8x8 blocks.
pub fn ssim(a: &[f32], b: &[f32], width: usize, height: usize) -> f64 {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    let (mut total, mut blocks) = (0.0, 0usize);
    for by in (0..height.saturating_sub(7)).step_by(8) {
        for bx in (0..width.saturating_sub(7)).step_by(8) {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
            for y in by..by + 8 {
                for x in bx..bx + 8 {
                    let (p, q) = (f64::from(a[y * width + x]), f64::from(b[y * width + x]));
                    sa += p;
                    sb += q;
                    saa += p * p;
                    sbb += q * q;
                    sab += p * q;
                }
            }
            let n = 64.0;
            let (ma, mb) = (sa / n, sb / n);
            let (va, vb, cov) = (saa / n - ma * ma, sbb / n - mb * mb, sab / n - ma * mb);
            total += ((2.0 * ma * mb + C1) * (2.0 * cov + C2)) / ((ma * ma + mb * mb + C1) * (va + vb + C2));
            blocks += 1;
        }
    }
    total / blocks.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_planes_score_perfectly_and_noise_lowers_both() {
        let (w, h) = (64, 48);
        let a: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 251) as f32).collect();
        assert_eq!(psnr(&a, &a), 99.0);
        assert!((ssim(&a, &a, w, h) - 1.0).abs() < 1e-9);
        let b: Vec<f32> =
            a.iter().enumerate().map(|(i, v)| v + if i % 2 == 0 { 40.0 } else { -40.0 }).collect();
        assert!(psnr(&a, &b) < 23.0);
        assert!(ssim(&a, &b, w, h) < 0.95);
        let small = resize(&a, w, h, w / 2, h / 2);
        assert_eq!(small.len(), w * h / 4);
    }
}
