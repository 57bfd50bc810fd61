//! The three compressed formats of a Talos release, all deterministic: gzip for OCI layers (no
//! file name, mtime 0), zstd for the initramfs since 1.8, xz with a CRC32 check before 1.8 (the
//! kernel's xz decoder supports only CRC32 or no check, never the CRC64 default of `xz`).
//!
//! Levels are fast ones: the payloads are small or already compressed (a bzImage), and a test
//! run should take seconds. Talos itself uses much higher levels, which changes only the size.

use std::io::Write;

use flate2::{Compression, GzBuilder};
use liblzma::stream::{Check, Stream};

use crate::Error;

/// zstd level of the initramfs (Talos: 18; 3 is zstd's default and ~20x faster).
const ZSTD_LEVEL: i32 = 3;
/// xz preset of the pre-1.8 initramfs (Talos: `-0 -e`).
const XZ_PRESET: u32 = 0;

/// gzip at level 1, header without name and with mtime 0.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>, Error> {
    // Already-compressed payloads (kernels, initramfs) barely shrink: store them instead of
    // spending a second deflating them (still valid gzip, still deterministic).
    let level = if data.len() > 1 << 20 {
        Compression::none()
    } else {
        Compression::fast()
    };
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(data.len() / 2 + 64), level);
    encoder
        .write_all(data)
        .map_err(|e| Error::build("gzip stream", e))?;
    encoder.finish().map_err(|e| Error::build("gzip stream", e))
}

pub fn zstd(data: &[u8]) -> Result<Vec<u8>, Error> {
    zstd::bulk::compress(data, ZSTD_LEVEL).map_err(|e| Error::build("zstd stream", e))
}

/// One xz stream with a CRC32 check.
pub fn xz_crc32(data: &[u8]) -> Result<Vec<u8>, Error> {
    let stream =
        Stream::new_easy_encoder(XZ_PRESET, Check::Crc32).map_err(|e| Error::build("xz stream", e))?;
    let mut encoder = liblzma::write::XzEncoder::new_stream(Vec::with_capacity(data.len() / 2 + 64), stream);
    encoder
        .write_all(data)
        .map_err(|e| Error::build("xz stream", e))?;
    encoder.finish().map_err(|e| Error::build("xz stream", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_have_their_magic_and_are_deterministic() {
        let data = b"stand-in ".repeat(100);
        let gz = gzip(&data).expect("gzip");
        assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(gz, gzip(&data).expect("gzip"));
        assert_eq!(&zstd(&data).expect("zstd")[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        let xz = xz_crc32(&data).expect("xz");
        assert_eq!(&xz[..6], &[0xfd, b'7', b'z', b'X', b'Z', 0]);
        assert_eq!(xz[7], 0x01, "stream flags: CRC32 check");
    }
}
