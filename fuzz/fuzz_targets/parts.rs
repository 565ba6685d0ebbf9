/// Splits fuzzer bytes into ZeroMQ message parts: each part is a little-endian u16 length
/// followed by that many bytes (the last part takes what is left), at most 5 parts.
pub fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while !data.is_empty() && parts.len() < 5 {
        if data.len() < 2 {
            parts.push(data);
            break;
        }
        let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        parts.push(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    parts
}
