//! qcow2 version 3, written front to back.
//!
//! Layout (host clusters, in file order): the header; the L1 table; the refcount table; the
//! refcount blocks; the L2 tables of the 8 MiB (at 8 KiB clusters) ranges that hold data; the
//! data clusters in guest order. Every cluster in the file is referenced exactly once
//! (refcount 1, so every L1/L2 entry carries the COPIED flag), nothing is leaked, and clusters
//! that are all zeros are left unallocated (they read as zeros).
//!
//! Laying the metadata out first needs the set of allocated clusters up front: [`Plan::new`]
//! reads every cluster that intersects a data extent once and keeps a bitmap of the non-zero
//! ones (one bit per guest cluster: 160 KiB for 10 GiB at 8 KiB); [`Plan::write`] reads them
//! again to write them. Only data is read twice, never zeros.

use std::io;

use super::{data_blocks, invalid, is_zero, BlockReader, Sink};
use crate::image::SparseImage;

const QCOW_MAGIC: u32 = 0x5146_49fb;
/// Header length of version 3 without optional fields.
const HEADER_LEN: u32 = 104;
/// Refcount entries are 16 bits (`refcount_order` 4, qemu's default).
const REFCOUNT_ORDER: u32 = 4;
/// L1/L2 entry flag: refcount is exactly one.
const COPIED: u64 = 1 << 63;

/// Sizes and positions (in clusters) of the structures of a qcow2 file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub cluster_size: u64,
    pub virtual_size: u64,
    /// L1 entries (one per L2 table's worth of guest clusters).
    pub l1_entries: u64,
    pub l1_clusters: u64,
    pub refcount_table_clusters: u64,
    pub refcount_blocks: u64,
    pub l2_tables: u64,
    pub data_clusters: u64,
}

impl Layout {
    /// `l2_tables` and `data_clusters`: how many L2 tables and data clusters are allocated.
    pub(crate) fn new(cluster_size: u64, virtual_size: u64, l2_tables: u64, data_clusters: u64) -> Self {
        let l2_entries = cluster_size / 8;
        let l1_entries = virtual_size.div_ceil(cluster_size * l2_entries);
        let l1_clusters = (l1_entries * 8).div_ceil(cluster_size).max(1);
        let per_block = cluster_size * 8 / (1 << REFCOUNT_ORDER);
        // the refcount structures count themselves: iterate to the fixed point (monotone,
        // converges in two or three rounds)
        let (mut rt, mut rb) = (1u64, 1u64);
        loop {
            let total = 1 + l1_clusters + rt + rb + l2_tables + data_clusters;
            let rb2 = total.div_ceil(per_block);
            let rt2 = (rb2 * 8).div_ceil(cluster_size);
            if (rb2, rt2) == (rb, rt) {
                break;
            }
            rb = rb2.max(rb);
            rt = rt2.max(rt);
        }
        Self {
            cluster_size,
            virtual_size,
            l1_entries,
            l1_clusters,
            refcount_table_clusters: rt,
            refcount_blocks: rb,
            l2_tables,
            data_clusters,
        }
    }

    pub(crate) fn l1_start(&self) -> u64 {
        1
    }
    pub(crate) fn refcount_table_start(&self) -> u64 {
        self.l1_start() + self.l1_clusters
    }
    pub(crate) fn refcount_blocks_start(&self) -> u64 {
        self.refcount_table_start() + self.refcount_table_clusters
    }
    pub(crate) fn l2_start(&self) -> u64 {
        self.refcount_blocks_start() + self.refcount_blocks
    }
    pub(crate) fn data_start(&self) -> u64 {
        self.l2_start() + self.l2_tables
    }
    pub(crate) fn total_clusters(&self) -> u64 {
        self.data_start() + self.data_clusters
    }
    /// Length of the file in bytes.
    pub(crate) fn file_len(&self) -> u64 {
        self.total_clusters() * self.cluster_size
    }

    /// The header cluster.
    pub(crate) fn header(&self) -> Vec<u8> {
        let cs = self.cluster_size;
        let mut h = vec![0u8; cs as usize];
        let mut put = |at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
        put(0, &QCOW_MAGIC.to_be_bytes());
        put(4, &3u32.to_be_bytes());
        // 8: backing file offset, 16: its size: none
        put(20, &cs.trailing_zeros().to_be_bytes());
        put(24, &self.virtual_size.to_be_bytes());
        // 32: no encryption
        put(36, &(self.l1_entries as u32).to_be_bytes());
        put(40, &(self.l1_start() * cs).to_be_bytes());
        put(48, &(self.refcount_table_start() * cs).to_be_bytes());
        put(56, &(self.refcount_table_clusters as u32).to_be_bytes());
        // 60: no snapshots, 64: snapshot offset; 72/80/88: no incompatible, compatible,
        // autoclear features
        put(96, &REFCOUNT_ORDER.to_be_bytes());
        put(100, &HEADER_LEN.to_be_bytes());
        // header extensions start at 104: all zeros = the end-of-extensions marker
        h
    }
}

/// The allocation of a qcow2 file for one image.
pub(crate) struct Plan {
    pub layout: Layout,
    /// One bit per guest cluster: allocated (holds non-zero bytes).
    bitmap: Vec<u64>,
}

impl Plan {
    pub(crate) fn new(img: &SparseImage, cluster_size: u32) -> io::Result<Self> {
        let cs = u64::from(cluster_size);
        if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
            return Err(invalid(format!(
                "qcow2 cluster size {cluster_size}: must be a power of two from 512 to 2 MiB"
            )));
        }
        let clusters = img.size().div_ceil(cs);
        let mut bitmap = vec![0u64; clusters.div_ceil(64) as usize];
        let mut reader = BlockReader::new(img);
        let mut buf = vec![0u8; cs as usize];
        let mut data_clusters = 0u64;
        for c in data_blocks(img, cs) {
            reader.read(c * cs, &mut buf)?;
            if !is_zero(&buf) {
                bitmap[(c / 64) as usize] |= 1 << (c % 64);
                data_clusters += 1;
            }
        }
        let l2_entries = cs / 8;
        let l1_entries = img.size().div_ceil(cs * l2_entries);
        let l2_tables = (0..l1_entries)
            .filter(|&i| range_allocated(&bitmap, i * l2_entries, (i + 1) * l2_entries))
            .count() as u64;
        Ok(Self {
            layout: Layout::new(cs, img.size(), l2_tables, data_clusters),
            bitmap,
        })
    }

    fn allocated(&self, c: u64) -> bool {
        self.bitmap
            .get((c / 64) as usize)
            .is_some_and(|w| w & (1 << (c % 64)) != 0)
    }

    pub(crate) fn write(&self, img: &SparseImage, sink: &mut dyn Sink) -> io::Result<()> {
        let l = &self.layout;
        let cs = l.cluster_size;
        let l2_entries = cs / 8;
        sink.write_all(&l.header())?;

        // L1: the allocated L2 tables get consecutive clusters
        let mut table = Vec::with_capacity((l.l1_clusters * cs) as usize);
        let mut next_l2 = l.l2_start();
        for i in 0..l.l1_entries {
            let mut e = 0u64;
            if range_allocated(&self.bitmap, i * l2_entries, (i + 1) * l2_entries) {
                e = (next_l2 * cs) | COPIED;
                next_l2 += 1;
            }
            table.extend_from_slice(&e.to_be_bytes());
        }
        table.resize((l.l1_clusters * cs) as usize, 0);
        sink.write_all(&table)?;

        // refcount table: the blocks are consecutive
        table.clear();
        for j in 0..l.refcount_blocks {
            table.extend_from_slice(&((l.refcount_blocks_start() + j) * cs).to_be_bytes());
        }
        table.resize((l.refcount_table_clusters * cs) as usize, 0);
        sink.write_all(&table)?;

        // refcount blocks: 1 for every cluster of the file, 0 beyond its end
        let per_block = cs / 2;
        let total = l.total_clusters();
        let mut block = vec![0u8; cs as usize];
        for j in 0..l.refcount_blocks {
            block.fill(0);
            let first = j * per_block;
            let used = total.saturating_sub(first).min(per_block) as usize;
            for k in 0..used {
                block[2 * k..2 * k + 2].copy_from_slice(&1u16.to_be_bytes());
            }
            sink.write_all(&block)?;
        }

        // L2 tables: data clusters are consecutive, in guest order
        let mut next_data = l.data_start();
        for i in 0..l.l1_entries {
            let (first, end) = (i * l2_entries, (i + 1) * l2_entries);
            if !range_allocated(&self.bitmap, first, end) {
                continue;
            }
            block.fill(0);
            for c in first..end {
                if self.allocated(c) {
                    let k = (c - first) as usize;
                    block[8 * k..8 * k + 8].copy_from_slice(&((next_data * cs) | COPIED).to_be_bytes());
                    next_data += 1;
                }
            }
            sink.write_all(&block)?;
        }

        // data
        let mut reader = BlockReader::new(img);
        for c in data_blocks(img, cs) {
            if self.allocated(c) {
                reader.read(c * cs, &mut block)?;
                sink.write_all(&block)?;
            }
        }
        Ok(())
    }
}

/// Whether any bit in `first..end` is set (word-wise; ranges are L2-sized, so this is cheap).
fn range_allocated(bitmap: &[u64], first: u64, end: u64) -> bool {
    let mut c = first;
    while c < end {
        let Some(&w) = bitmap.get((c / 64) as usize) else {
            return false;
        };
        if c % 64 == 0 && end - c >= 64 {
            if w != 0 {
                return true;
            }
            c += 64;
        } else {
            if w & (1 << (c % 64)) != 0 {
                return true;
            }
            c += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_math() {
        // 64 MiB at 8 KiB clusters: 8 L1 entries (8 MiB each) in one cluster
        let l = Layout::new(8192, 64 << 20, 2, 100);
        assert_eq!(l.l1_entries, 8);
        assert_eq!(l.l1_clusters, 1);
        assert_eq!((l.refcount_table_clusters, l.refcount_blocks), (1, 1));
        assert_eq!(l.total_clusters(), 1 + 1 + 1 + 1 + 2 + 100);
        assert_eq!(l.data_start(), 6);

        // 10 GiB: 1280 L1 entries = 10 KiB = 2 clusters
        let l = Layout::new(8192, 10 << 30, 0, 0);
        assert_eq!((l.l1_entries, l.l1_clusters), (1280, 2));

        // a refcount block covers 4096 clusters: 4091 + header/L1/table/block = 4095 fits one
        // block, one more cluster needs a second block
        let l = Layout::new(8192, 1 << 30, 0, 4091);
        assert_eq!((l.l1_clusters, l.refcount_blocks), (1, 1));
        assert_eq!(l.total_clusters(), 4095);
        let l = Layout::new(8192, 1 << 30, 0, 4093);
        assert_eq!(l.refcount_blocks, 2);
        assert_eq!(l.total_clusters(), 4098);
        let l = Layout::new(8192, 1 << 30, 0, 4092);
        // 4092 + 4 = 4096 exactly fills the block
        assert_eq!((l.refcount_blocks, l.total_clusters()), (1, 4096));

        // the refcount table grows past one cluster beyond 1024 blocks (32 GiB of file)
        let l = Layout::new(8192, 64 << 30, 0, 1024 * 4096);
        assert_eq!(l.refcount_blocks, 1025);
        assert_eq!(l.refcount_table_clusters, 2);
        assert!(l.total_clusters() <= l.refcount_blocks * 4096);
        assert!(l.total_clusters() > (l.refcount_blocks - 1) * 4096);
    }

    #[test]
    fn header_fields() {
        let l = Layout::new(8192, 123 << 20, 1, 1);
        let h = l.header();
        assert_eq!(h.len(), 8192);
        assert_eq!(&h[..4], b"QFI\xfb");
        assert_eq!(u32::from_be_bytes([h[20], h[21], h[22], h[23]]), 13);
        assert_eq!(
            u64::from_be_bytes(h[24..32].try_into().unwrap_or_default()),
            123 << 20
        );
        assert_eq!(u64::from_be_bytes(h[40..48].try_into().unwrap_or_default()), 8192);
        assert_eq!(
            u64::from_be_bytes(h[48..56].try_into().unwrap_or_default()),
            2 * 8192
        );
    }

    #[test]
    fn bitmap_ranges() {
        let mut b = vec![0u64; 4];
        assert!(!range_allocated(&b, 0, 256));
        b[2] = 1 << 5;
        assert!(range_allocated(&b, 0, 256));
        assert!(range_allocated(&b, 133, 134));
        assert!(!range_allocated(&b, 134, 256));
        assert!(!range_allocated(&b, 0, 133));
    }
}
