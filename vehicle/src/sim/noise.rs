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
    let (fx, fy) = (gx.floor(), gy.floor());
    let (tx, ty) = (gx - fx, gy - fy);
    let (ix, iy) = (fx as i64 as u32, fy as i64 as u32);
    let at = |dx: u32, dy: u32| {
        f64::from(hash2(ix.wrapping_add(dx), iy.wrapping_add(dy), seed)) / f64::from(u32::MAX)
    };
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let top = at(0, 0) + (at(1, 0) - at(0, 0)) * sx;
    let bottom = at(0, 1) + (at(1, 1) - at(0, 1)) * sx;
    2.0 * (top + (bottom - top) * sy) - 1.0
}
