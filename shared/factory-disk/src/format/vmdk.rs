//! Stream-optimized VMDK (VMware Virtual Disk Format 5.0, "Stream-Optimized Compressed Sparse
//! Extents"), what `vmdk-convert` (open-vmdk) produces for the OVA.
//!
//! File order: the sparse header (grain directory "at end"), the embedded descriptor, then one
//! compressed grain per non-zero 64 KiB grain (a grain marker `lba, size` followed by the
//! zlib-compressed grain, padded to a sector), then a grain-table marker and grain table for
//! every 32 MiB of the disk, the grain-directory marker and directory, the footer marker and
//! footer (the header with the directory's offset), and the end-of-stream marker. All-zero
//! grains are omitted (their grain-table entry is 0: unallocated, reads as zeros).
//!
//! Grains are compressed in parallel in small batches (`threads` × 4 grains), written in order.

use std::io::{self, Write};

use flate2::{Compress, FlushCompress, Status};
use sha2::{Digest, Sha256};

use super::{data_blocks, is_zero, BlockReader};
use crate::image::{Source, SparseImage};

const SECTOR: u64 = 512;
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
const GT_ENTRIES: u64 = 512;
const GD_AT_END: u64 = u64::MAX;
/// Sectors reserved for the embedded descriptor (the usual 10 KiB).
const DESCRIPTOR_SECTORS: u64 = 20;
/// Grains start here (sectors): 64 KiB, after the header and descriptor.
const OVERHEAD: u64 = 128;
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// zlib level of the grains (zlib's default, as qemu and open-vmdk use).
const LEVEL: u32 = 6;

/// The 512-byte sparse extent header.
fn header(capacity: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let mut at = 0;
    let mut put = |v: &[u8]| {
        h[at..at + v.len()].copy_from_slice(v);
        at += v.len();
    };
    put(b"KDMV");
    put(&3u32.to_le_bytes()); // version 3: stream-optimized
                              // flags: valid newline test (bit 0), compressed grains (16), markers (17)
    put(&(1u32 | (1 << 16) | (1 << 17)).to_le_bytes());
    put(&capacity.to_le_bytes());
    put(&GRAIN_SECTORS.to_le_bytes());
    put(&1u64.to_le_bytes()); // descriptor offset
    put(&DESCRIPTOR_SECTORS.to_le_bytes());
    put(&(GT_ENTRIES as u32).to_le_bytes());
    put(&0u64.to_le_bytes()); // redundant grain directory: none
    put(&gd_offset.to_le_bytes());
    put(&OVERHEAD.to_le_bytes());
    put(&[0]); // unclean shutdown
    put(b"\n \r\n"); // newline detection characters
    put(&1u16.to_le_bytes()); // compression: deflate
    h
}

/// A metadata marker (`numSectors`, size 0, type) padded to a sector.
fn marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// The embedded descriptor. The content ID is derived from the image's extent map and
/// in-memory bytes (GPT, META…), not from file content, so it is cheap and deterministic.
fn descriptor(img: &SparseImage, capacity: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"talos-factory vmdk cid v1");
    h.update(img.size().to_be_bytes());
    for e in img.extents() {
        h.update(e.offset.to_be_bytes());
        h.update(e.len.to_be_bytes());
        if let Source::Bytes(b) = &e.source {
            h.update(b);
        }
    }
    let d = h.finalize();
    let cid = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) | 1;
    let long: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    let cylinders = (capacity / (255 * 63)).min(65535);
    let text = format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"disk.vmdk\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.longContentID = \"{long}\"\n\
         ddb.virtualHWVersion = \"4\"\n"
    );
    let mut v = text.into_bytes();
    v.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
    v
}

/// Writes `w` at a tracked position (the format addresses everything in sectors).
struct Pos<'a> {
    w: &'a mut dyn Write,
    pos: u64,
}

impl Pos<'_> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }
    /// Pads to the next sector.
    fn pad(&mut self) -> io::Result<()> {
        let n = self.pos.next_multiple_of(SECTOR) - self.pos;
        self.put(&super::ZEROS[..n as usize])
    }
    fn sector(&self) -> u64 {
        self.pos / SECTOR
    }
}

/// Writes the stream-optimized VMDK of `img` to `w`.
pub(crate) fn write(img: &SparseImage, w: &mut dyn Write, threads: usize) -> io::Result<()> {
    let capacity = img.size().div_ceil(SECTOR);
    let grains = capacity.div_ceil(GRAIN_SECTORS);
    let gts = grains.div_ceil(GT_ENTRIES);
    let mut out = Pos { w, pos: 0 };
    out.put(&header(capacity, GD_AT_END))?;
    out.put(&descriptor(img, capacity))?;
    out.pad()?;
    let n = OVERHEAD * SECTOR - out.pos;
    out.put(&super::ZEROS[..n as usize])?;

    // (grain index, sector of its marker), in grain order
    let mut placed: Vec<(u64, u32)> = Vec::new();
    let batch = threads.max(1) * 4;
    let mut reader = BlockReader::new(img);
    let mut blocks = data_blocks(img, GRAIN).peekable();
    let mut bufs: Vec<(u64, Vec<u8>)> = Vec::with_capacity(batch);
    while blocks.peek().is_some() {
        bufs.clear();
        for g in blocks.by_ref() {
            let mut b = vec![0u8; GRAIN as usize];
            reader.read(g * GRAIN, &mut b)?;
            if !is_zero(&b) {
                bufs.push((g, b));
                if bufs.len() == batch {
                    break;
                }
            }
        }
        for (g, z) in compress_batch(&bufs, threads)? {
            let sector =
                u32::try_from(out.sector()).map_err(|_| io::Error::other("vmdk larger than 2 TiB"))?;
            placed.push((g, sector));
            let mut m = [0u8; 12];
            m[..8].copy_from_slice(&(g * GRAIN_SECTORS).to_le_bytes());
            m[8..].copy_from_slice(&(z.len() as u32).to_le_bytes());
            out.put(&m)?;
            out.put(&z)?;
            out.pad()?;
        }
    }

    // grain tables: one per 512 grains, written for the whole disk (empty ones too, which
    // every reader accepts)
    let gt_sectors = GT_ENTRIES * 4 / SECTOR;
    let mut gd = Vec::with_capacity(gts as usize * 4);
    let mut next = placed.iter().peekable();
    let mut gt = vec![0u8; (GT_ENTRIES * 4) as usize];
    for t in 0..gts {
        gt.fill(0);
        while let Some(&&(g, s)) = next.peek() {
            if g / GT_ENTRIES != t {
                break;
            }
            let k = (g % GT_ENTRIES) as usize;
            gt[4 * k..4 * k + 4].copy_from_slice(&s.to_le_bytes());
            next.next();
        }
        out.put(&marker(gt_sectors, MARKER_GT))?;
        let sector = u32::try_from(out.sector()).map_err(|_| io::Error::other("vmdk larger than 2 TiB"))?;
        gd.extend_from_slice(&sector.to_le_bytes());
        out.put(&gt)?;
    }
    let gd_sectors = (gd.len() as u64).div_ceil(SECTOR);
    out.put(&marker(gd_sectors, MARKER_GD))?;
    let gd_offset = out.sector();
    out.put(&gd)?;
    out.pad()?;
    out.put(&marker(1, MARKER_FOOTER))?;
    out.put(&header(capacity, gd_offset))?;
    out.put(&marker(0, MARKER_EOS))?;
    Ok(())
}

/// zlib-compresses the grains of a batch on up to `threads` threads; results in input order.
fn compress_batch(bufs: &[(u64, Vec<u8>)], threads: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let per = bufs.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = bufs
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    let mut c = Compress::new(flate2::Compression::new(LEVEL), true);
                    part.iter()
                        .map(|(g, b)| {
                            c.reset();
                            zlib(&mut c, b).map(|z| (*g, z))
                        })
                        .collect::<io::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(bufs.len());
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| io::Error::other("grain compressor panicked"))??,
            );
        }
        Ok(all)
    })
}

/// One complete zlib stream of `data`.
fn zlib(c: &mut Compress, data: &[u8]) -> io::Result<Vec<u8>> {
    let start = c.total_in();
    let mut out = Vec::with_capacity(data.len() + data.len() / 100 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(16 * 1024);
        }
        let done = (c.total_in() - start) as usize;
        match c
            .compress_vec(&data[done..], &mut out, FlushCompress::Finish)
            .map_err(io::Error::other)?
        {
            Status::StreamEnd => return Ok(out),
            _ => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = header(2048, GD_AT_END);
        assert_eq!(&h[..4], b"KDMV");
        // capacity at 12, grain size at 20, gdOffset at 56, overhead at 64, the newline
        // characters at 73, compression at 77: the packed layout of the spec
        assert_eq!(u64::from_le_bytes(h[12..20].try_into().unwrap_or_default()), 2048);
        assert_eq!(u64::from_le_bytes(h[20..28].try_into().unwrap_or_default()), 128);
        assert_eq!(
            u64::from_le_bytes(h[56..64].try_into().unwrap_or_default()),
            GD_AT_END
        );
        assert_eq!(
            u64::from_le_bytes(h[64..72].try_into().unwrap_or_default()),
            OVERHEAD
        );
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes([h[77], h[78]]), 1);
        assert!(h[79..].iter().all(|&b| b == 0));
    }
}
