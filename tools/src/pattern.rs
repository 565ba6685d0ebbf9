//! A per-frame byte pattern that makes a torn frame (bytes from two frames) detectable.

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

fn word(id: u64, index: usize) -> u64 {
    id.wrapping_mul(MIX) ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// Fills `buf` with the pattern of frame `id`. Every 8-byte word depends on both the frame
/// id and its position, so mixing any two frames (or a shifted copy) cannot pass `verify`.
pub fn fill(buf: &mut [u8], id: u64) {
    let mut chunks = buf.chunks_exact_mut(8);
    for (i, chunk) in chunks.by_ref().enumerate() {
        chunk.copy_from_slice(&word(id, i).to_le_bytes());
    }
    let tail = chunks.into_remainder();
    let last = word(id, usize::MAX).to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// True if `buf` holds exactly the pattern of frame `id`.
pub fn verify(buf: &[u8], id: u64) -> bool {
    let mut chunks = buf.chunks_exact(8);
    let words_ok = chunks.by_ref().enumerate().all(|(i, c)| c == word(id, i).to_le_bytes());
    let tail = chunks.remainder();
    words_ok && tail == &word(id, usize::MAX).to_le_bytes()[..tail.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_frame_made_of_two() {
        let mut a = vec![0u8; 1003];
        let mut b = vec![0u8; 1003];
        fill(&mut a, 7);
        fill(&mut b, 8);
        assert!(verify(&a, 7));
        assert!(!verify(&a, 8));
        a[500..].copy_from_slice(&b[500..]);
        assert!(!verify(&a, 7));
        assert!(!verify(&a, 8));
        fill(&mut a, 7);
        a[1002] ^= 1;
        assert!(!verify(&a, 7), "the unaligned tail is checked too");
    }
}
