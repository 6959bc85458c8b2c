//! A minimal PNG writer and header reader: enough for a fake sd-cli to write a real image and
//! for tests to check its size.

use std::io::Write;

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (n, slot) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
        *slot = c;
    }
    !data.iter().fold(!0u32, |c, &b| table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// An RGB image of `width` × `height` with a gradient seeded by `seed` (so images differ).
pub fn gradient(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut raw = Vec::with_capacity(((width * 3 + 1) * height) as usize);
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend_from_slice(&[
                (x + seed as u32) as u8,
                y as u8,
                (seed as u8).wrapping_mul(37),
            ]);
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&raw).unwrap();
    let idat = z.finish().unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Width and height of a PNG whose signature and IHDR checksum are right.
pub fn size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 33 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let crc = u32::from_be_bytes(png[29..33].try_into().ok()?);
    (crc32(&png[12..29]) == crc).then(|| {
        (
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_known_crc() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        let png = super::gradient(64, 32, 7);
        assert_eq!(super::size(&png), Some((64, 32)));
        let mut bad = png.clone();
        bad[17] ^= 1;
        assert_eq!(super::size(&bad), None);
    }
}
