//! Integer hashes: every "random" thing in the simulator is a pure function of a seed and a
//! position or frame number, which is what makes frames reproducible byte for byte.

/// SplitMix64's finaliser: a cheap bijective 64-bit mix.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a 2-D integer cell; used once per pixel, so three multiplies and no more.
#[inline(always)]
pub(crate) fn hash2(x: u32, y: u32, seed: u32) -> u32 {
    let mut h = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x7FEB_352D) ^ seed;
    h ^= h >> 15;
    h = h.wrapping_mul(0x846C_A68B);
    h ^ (h >> 16)
}

/// Uniform in [0, 1) from a hash.
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Smooth value noise in [−1, 1] on a square grid of `cell` metres.
pub(crate) fn value_noise(x: f64, y: f64, cell: f64, seed: u32) -> f64 {
    let (gx, gy) = (x / cell, y / cell);
    let (fx, fy) = (super::floor_i64(gx), super::floor_i64(gy));
    let (tx, ty) = (gx - fx as f64, gy - fy as f64);
    let (ix, iy) = (fx as u32, fy as u32);
    let at = |dx: u32, dy: u32| {
        f64::from(hash2(ix.wrapping_add(dx), iy.wrapping_add(dy), seed)) / f64::from(u32::MAX)
    };
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let top = at(0, 0) + (at(1, 0) - at(0, 0)) * sx;
    let bottom = at(0, 1) + (at(1, 1) - at(0, 1)) * sx;
    2.0 * (top + (bottom - top) * sy) - 1.0
}

/// Pixels of noise in the table; each row reads a window of it at an offset hashed from
/// (seed, frame, row).
const NOISE_PERIOD: usize = 16_384;

/// Sensor noise as a precomputed table read at random offsets: a per-pixel random number
/// generator was two thirds of the frame time, a table lookup with saturating byte adds is
/// a few percent. Luminance noise is triangular with the track's σ; chroma noise is half that.
#[derive(Debug, Clone)]
pub(crate) struct SensorNoise {
    /// Positive and negative parts, so applying it is two saturating byte operations that the
    /// compiler turns into vector instructions.
    add: Vec<u8>,
    sub: Vec<u8>,
    seed: u64,
}

impl SensorNoise {
    pub(crate) fn new(seed: u64, sigma: f32, width: usize) -> Self {
        let seed = mix64(seed ^ 0x5E_4503);
        let len = 3 * (width + NOISE_PERIOD);
        let mut add = vec![0u8; len];
        let mut sub = vec![0u8; len];
        let sigma = f64::from(sigma);
        for (i, (a, s)) in add.chunks_exact_mut(3).zip(sub.chunks_exact_mut(3)).enumerate() {
            let h = mix64(seed ^ i as u64);
            let byte = |k: u32| ((h >> (8 * k)) & 0xFF) as f64;
            // Sum of two uniform bytes: triangular, σ = 104.
            let luma = (byte(0) + byte(1) - 255.0) / 104.0 * sigma;
            let chroma = |k: u32| (byte(k) - 127.5) / 74.0 * 0.5 * sigma;
            for (c, v) in [luma + chroma(2), luma, luma + chroma(3)].into_iter().enumerate() {
                let v = v.round().clamp(-255.0, 255.0);
                a[c] = v.max(0.0) as u8;
                s[c] = (-v).max(0.0) as u8;
            }
        }
        Self { add, sub, seed }
    }

    /// Adds this frame's noise to image row `v`.
    pub(crate) fn apply(&self, frame: u64, v: usize, row: &mut [u8]) {
        let h = mix64(mix64(self.seed ^ frame) ^ (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let off = 3 * (h % NOISE_PERIOD as u64) as usize;
        let n = row.len().min(self.add.len() - off);
        let (add, sub) = (&self.add[off..off + n], &self.sub[off..off + n]);
        for ((o, &a), &s) in row.iter_mut().zip(add).zip(sub) {
            *o = o.saturating_add(a).saturating_sub(s);
        }
    }
}
