//! Fixed VHD: the raw image followed by the 512-byte footer of the Virtual Hard Disk Image
//! Format Specification (what `qemu-img convert -O vpc -o subformat=fixed,force_size` writes).
//!
//! * Current and original size are the exact image size; the creator application is `qem2`,
//!   which tells qemu (and Hyper-V/Azure, which always do) to take the size from the footer
//!   rather than from the CHS geometry, as qemu does for `force_size`.
//! * The CHS geometry follows the spec's algorithm (capped at 65535/16/255).
//! * The timestamp is [`super::WriteOptions::mtime`] in VHD time (seconds since
//!   2000-01-01 00:00:00 UTC), 0 for earlier times.
//! * The unique id, random in qemu, is derived: the first 16 bytes of SHA-256 over
//!   `"talos-factory vhd unique id v1"`, the image size, and for every data piece streamed
//!   (in order) its offset, length and bytes, with the RFC 9562 version 8 (custom) and variant
//!   bits set. Zero ranges are not hashed, so this costs a hash of the data only.

use std::io;

use sha2::{Digest, Sha256};

use super::{stream_raw, Sink};
use crate::image::SparseImage;

pub(crate) const FOOTER_LEN: u64 = 512;
/// 2000-01-01T00:00:00Z in Unix time.
const VHD_EPOCH: u64 = 946_684_800;

/// Writes the image and its footer.
pub(crate) fn write(img: &SparseImage, sink: &mut dyn Sink, mtime: u64) -> io::Result<()> {
    let mut h = Sha256::new();
    h.update(b"talos-factory vhd unique id v1");
    h.update(img.size().to_be_bytes());
    stream_raw(img, sink, |off, data| {
        h.update(off.to_be_bytes());
        h.update((data.len() as u64).to_be_bytes());
        h.update(data);
    })?;
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    let ts = u32::try_from(mtime.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX);
    sink.write_all(&footer(img.size(), ts, id))
}

/// CHS geometry (cylinders, heads, sectors per track) for a disk of `size` bytes, per the VHD
/// specification's algorithm.
pub(crate) fn geometry(size: u64) -> (u16, u8, u8) {
    let total = (size / 512).min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// One's complement of the byte sum of the footer (with the checksum field zero).
pub(crate) fn checksum(footer: &[u8]) -> u32 {
    !footer.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)))
}

/// The 512-byte footer of a fixed disk of `size` bytes.
pub(crate) fn footer(size: u64, timestamp: u32, unique_id: [u8; 16]) -> [u8; 512] {
    let mut f = [0u8; 512];
    let mut put = |at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
    put(0, b"conectix");
    put(8, &2u32.to_be_bytes()); // features: reserved bit, always set
    put(12, &0x0001_0000u32.to_be_bytes()); // format version 1.0
    put(16, &u64::MAX.to_be_bytes()); // data offset: none for fixed disks
    put(24, &timestamp.to_be_bytes());
    put(28, b"qem2");
    put(32, &0x0005_0003u32.to_be_bytes()); // creator version (qemu's)
    put(36, b"Wi2k"); // creator host OS
    put(40, &size.to_be_bytes()); // original size
    put(48, &size.to_be_bytes()); // current size
    let (c, h, s) = geometry(size);
    put(56, &c.to_be_bytes());
    put(58, &[h, s]);
    put(60, &2u32.to_be_bytes()); // disk type: fixed
    put(68, &unique_id);
    // 84: saved state 0, then reserved zeros
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_per_spec() {
        // 1 GiB: 2097152 sectors → 17 spt gives 123361 cyl*heads ≥ 16*1024 → 31 spt → 67650
        // ≥ 16384 → 63 spt, 16 heads, 33288 cth → 2080 cylinders
        assert_eq!(geometry(1 << 30), (2080, 16, 63));
        // 8 GiB: 16777216 sectors → 63 spt, 16 heads, 266305 cth
        assert_eq!(geometry(8 << 30), (16644, 16, 63));
        // 40 GiB: 83886080 sectors ≥ 65535*16*63 → 255 spt, 16 heads, 328965 cth
        assert_eq!(geometry(40 << 30), (20560, 16, 255));
        // small disks: 10 MiB = 20480 sectors → 17 spt, 1204 cth → 4 heads, 301 cylinders
        assert_eq!(geometry(10 << 20), (301, 4, 17));
        // capped
        assert_eq!(geometry(4 << 40), (65535, 16, 255));
    }

    #[test]
    fn footer_checksum_and_fields() {
        let f = footer(4_453_302_272, 0, [7u8; 16]);
        assert_eq!(&f[..8], b"conectix");
        let stored = u32::from_be_bytes([f[64], f[65], f[66], f[67]]);
        let mut z = f;
        z[64..68].fill(0);
        assert_eq!(stored, checksum(&z));
        // the sum of all bytes plus the checksum's complement is 0xffffffff
        let sum = z.iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        assert_eq!(sum.wrapping_add(stored), u32::MAX);
        assert_eq!(
            u64::from_be_bytes(f[48..56].try_into().unwrap_or_default()),
            4_453_302_272
        );
        assert_eq!(&f[28..32], b"qem2");
        assert_eq!(u32::from_be_bytes([f[60], f[61], f[62], f[63]]), 2);
    }
}
