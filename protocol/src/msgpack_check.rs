//! A non-recursive walk over msgpack bytes, run before serde sees them.
//!
//! rmp-serde recurses once per nesting level, so a 100 kB message of nested arrays overflows
//! the stack and aborts the process — and it believes length headers, so a 5-byte "array of
//! 4 billion" asks for a huge allocation. This walk bounds both: nesting depth, and every
//! claimed length or count against the bytes actually present.

/// Deeper than any message of ours (envelope → body → lanes → line → point is 5).
pub(crate) const MAX_DEPTH: usize = 32;

/// `Ok` if `bytes` is exactly one well-formed msgpack value within the limits.
pub(crate) fn check(bytes: &[u8]) -> Result<(), String> {
    let mut pos = 0usize;
    // Items still to read at each open nesting level; the root holds one value.
    let mut pending: Vec<u64> = vec![1];
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let (header, body, items) = item(bytes, pos)?;
        pos = pos
            .checked_add(header)
            .and_then(|p| p.checked_add(body))
            .filter(|&p| p <= bytes.len())
            .ok_or_else(|| format!("value at byte {pos} runs past the end ({} bytes)", bytes.len()))?;
        if items > 0 {
            // Every item takes at least one byte: a count beyond what is left is a lie.
            if items > (bytes.len() - pos) as u64 {
                return Err(format!(
                    "container at byte {pos} claims {items} items in {} bytes",
                    bytes.len() - pos
                ));
            }
            if pending.len() >= MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
            pending.push(items);
        }
    }
    if pos != bytes.len() {
        return Err(format!("{} trailing bytes after the value", bytes.len() - pos));
    }
    Ok(())
}

/// (header bytes, body bytes, nested items) of the value starting at `pos`.
fn item(bytes: &[u8], pos: usize) -> Result<(usize, usize, u64), String> {
    let marker = *bytes.get(pos).ok_or_else(|| format!("missing value at byte {pos}"))?;
    let uint = |n: usize| -> Result<u64, String> {
        let raw = bytes.get(pos + 1..pos + 1 + n).ok_or_else(|| format!("truncated length at byte {pos}"))?;
        Ok(raw.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    };
    let len = |n: usize| -> Result<usize, String> {
        usize::try_from(uint(n)?).map_err(|_| "length overflows".to_string())
    };
    Ok(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
        0x80..=0x8f => (1, 0, 2 * u64::from(marker & 0x0f)),
        0x90..=0x9f => (1, 0, u64::from(marker & 0x0f)),
        0xa0..=0xbf => (1, usize::from(marker & 0x1f), 0),
        0xc4 | 0xd9 => (2, len(1)?, 0),
        0xc5 | 0xda => (3, len(2)?, 0),
        0xc6 | 0xdb => (5, len(4)?, 0),
        0xc7 => (3, len(1)?, 0),
        0xc8 => (4, len(2)?, 0),
        0xc9 => (6, len(4)?, 0),
        0xca => (1, 4, 0),
        0xcb => (1, 8, 0),
        0xcc | 0xd0 => (1, 1, 0),
        0xcd | 0xd1 => (1, 2, 0),
        0xce | 0xd2 => (1, 4, 0),
        0xcf | 0xd3 => (1, 8, 0),
        0xd4 => (2, 1, 0),
        0xd5 => (2, 2, 0),
        0xd6 => (2, 4, 0),
        0xd7 => (2, 8, 0),
        0xd8 => (2, 16, 0),
        0xdc => (3, 0, uint(2)?),
        0xdd => (5, 0, uint(4)?),
        0xde => (3, 0, 2 * uint(2)?),
        0xdf => (5, 0, 2 * uint(4)?),
        0xc1 => return Err(format!("invalid marker 0xc1 at byte {pos}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_rmp_serde_writes() {
        let v = (
            1u8,
            -5i64,
            3.5f64,
            "text",
            vec![Some(1.0f32), None],
            std::collections::BTreeMap::from([("k", u64::MAX)]),
        );
        let bytes = rmp_serde::to_vec_named(&v).expect("serialisable");
        assert_eq!(check(&bytes), Ok(()));
    }

    #[test]
    fn rejects_lies_depth_and_leftovers() {
        assert!(check(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err(), "4 billion items in 0 bytes");
        assert!(check(&[0xdb, 0x00, 0x00, 0x10, 0x00, b'a']).is_err(), "4096-byte string in 1 byte");
        assert!(check(&[0x91; 40].iter().copied().chain([0xc0]).collect::<Vec<_>>()).is_err(), "too deep");
        assert_eq!(check(&[0x91; 20].iter().copied().chain([0xc0]).collect::<Vec<_>>()), Ok(()));
        assert!(check(&[0xc0, 0xc0]).is_err(), "trailing bytes");
        assert!(check(&[]).is_err());
        assert!(check(&[0xc1]).is_err());
    }
}
