//! Disk formats and output compression of disk images (talos-imager.md §10.5, §10.6), written
//! as one sequential stream from a [`SparseImage`] without ever materialising the raw image.
//!
//! * [`Container::Raw`]: the image bytes.
//! * [`Container::Qcow2`]: qcow2 version 3 (what `qemu-img convert -O qcow2 -o cluster_size=8k`
//!   produces, not byte-identical): every metadata structure precedes the data, so the file is
//!   written front to back in one go after a first pass that finds the non-zero clusters.
//! * [`Container::VhdFixed`]: the raw bytes plus a 512-byte `conectix` footer
//!   (`qemu-img convert -O vpc -o subformat=fixed,force_size`).
//! * [`Container::Ova`]: a tar of `disk.ovf`, `disk.mf` and a stream-optimized `disk.vmdk`; the
//!   vmdk (compressed, so small) is the one intermediate file, in the caller's scratch directory.
//!
//! Then [`Compression`]: `.xz` (preset 0, multi-threaded, CRC64), `.gz` (level 6, pigz-style
//! multi-threaded), `.zst` (level 18, multi-threaded, checksum) or `.tar.gz` (a GNU tar with the
//! single member `disk.raw`, gzip-compressed as `.gz`).
//!
//! Memory is bounded by a few MiB plus the compressors' own buffers, independent of the image
//! size. Zero ranges are never read: they are written from a shared zero buffer (or skipped by
//! formats that can leave them unallocated, and by the gzip encoder, which emits a cached
//! compressed zero chunk).
//!
//! Output is deterministic: the same image and options give the same bytes (timestamps come
//! from [`WriteOptions::mtime`], identifiers are derived from the image).

mod compress;
mod ova;
mod qcow2;
mod vhd;
mod vmdk;

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::image::{Source, SparseImage};
use crate::Result;

/// Disk container of an image (talos-imager.md §10.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// The image bytes as they are.
    Raw,
    /// qcow2 version 3 with the given cluster size (a power of two, 512 B to 2 MiB; the factory
    /// uses 8192).
    Qcow2 {
        /// Bytes per cluster.
        cluster_size: u32,
    },
    /// A fixed VHD: raw bytes followed by the 512-byte footer, exact size (`force_size`).
    VhdFixed,
    /// An OVA (tar of `disk.ovf`, `disk.mf`, stream-optimized `disk.vmdk`).
    Ova,
}

impl Container {
    /// The factory's qcow2 (`cluster_size=8k`).
    pub const QCOW2_8K: Container = Container::Qcow2 { cluster_size: 8192 };

    /// The container of a download path's disk format: `raw`, `qcow2` (8 KiB clusters), `vhd`,
    /// `ova`.
    pub fn from_disk_format(name: &str) -> Option<Container> {
        match name {
            "raw" => Some(Container::Raw),
            "qcow2" => Some(Container::QCOW2_8K),
            "vhd" => Some(Container::VhdFixed),
            "ova" => Some(Container::Ova),
            _ => None,
        }
    }
}

impl Compression {
    /// The compression of an output suffix: `xz`, `gz`, `zst`, `tar.gz`, or `none` (a leading
    /// dot is accepted: `.zst`, as profiles spell it; `raw` is Talos's name for none).
    pub fn from_suffix(name: &str) -> Option<Compression> {
        match name.trim_start_matches('.') {
            "none" | "raw" | "" => Some(Compression::None),
            "xz" => Some(Compression::Xz),
            "gz" => Some(Compression::Gz),
            "zst" => Some(Compression::Zst),
            "tar.gz" => Some(Compression::TarGz),
            _ => None,
        }
    }
}

/// Post-processing compression of the written container (talos-imager.md §10.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// None.
    None,
    /// `xz -0 -T0`: preset 0, multi-threaded, CRC64 check.
    Xz,
    /// `pigz -6 --no-time`: gzip level 6, multi-threaded.
    Gz,
    /// `zstd -T0 -18`: level 18, multi-threaded, with checksum and content size.
    Zst,
    /// A tar with the single member `disk.raw` (GNU format, mode 0644, uid/gid 0, mtime from
    /// [`WriteOptions::mtime`]), compressed as [`Compression::Gz`].
    TarGz,
}

/// Options of [`write_image_with`].
#[derive(Debug, Clone)]
pub struct WriteOptions<'a> {
    /// The container.
    pub container: Container,
    /// The compression of the container.
    pub compression: Compression,
    /// Directory for the one intermediate file (the OVA's vmdk). Unused by other containers.
    pub scratch: &'a Path,
    /// Compressor threads (xz, zstd, gzip, vmdk grains); at least 1.
    pub threads: usize,
    /// Timestamp (seconds since the Unix epoch) stored where formats need one: tar member
    /// mtimes, the VHD footer. Default 0, i.e. `SOURCE_DATE_EPOCH=0`.
    pub mtime: u64,
}

impl<'a> WriteOptions<'a> {
    /// Defaults: `threads` = available parallelism, `mtime` = 0.
    pub fn new(container: Container, compression: Compression, scratch: &'a Path) -> Self {
        Self {
            container,
            compression,
            scratch,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mtime: 0,
        }
    }
}

/// Writes `img` in `container`, compressed by `compression`, to `out`; returns the bytes
/// written to `out`. `scratch` holds the OVA's intermediate vmdk (see [`WriteOptions`]).
pub fn write_image(
    img: &SparseImage,
    container: Container,
    compression: Compression,
    scratch: &Path,
    out: &mut dyn Write,
) -> Result<u64> {
    write_image_with(img, &WriteOptions::new(container, compression, scratch), out)
}

/// [`write_image`] with every option.
pub fn write_image_with(img: &SparseImage, opts: &WriteOptions<'_>, out: &mut dyn Write) -> Result<u64> {
    let threads = opts.threads.max(1);
    let prepared = Prepared::new(img, opts.container, opts.scratch, threads)?;
    let len = prepared.len(img);
    let mut counted = Counting { inner: out, count: 0 };
    match opts.compression {
        Compression::TarGz => {
            let header = ova::tar_header("disk.raw", len, opts.mtime, ova::TarFlavor::Gnu);
            let tar_len = 512 + len.next_multiple_of(512) + 1024;
            let mut enc = compress::Encoder::new(Compression::Gz, &mut counted, tar_len, threads)?;
            enc.write_all(&header)?;
            prepared.write(img, &mut enc, opts.mtime)?;
            enc.write_zeros(len.next_multiple_of(512) - len + 1024)?;
            enc.finish()?;
        }
        c => {
            let mut enc = compress::Encoder::new(c, &mut counted, len, threads)?;
            prepared.write(img, &mut enc, opts.mtime)?;
            enc.finish()?;
        }
    }
    counted.flush()?;
    Ok(counted.count)
}

/// A container after its first pass: its byte length is then known (needed by tar headers and
/// by zstd's content size).
enum Prepared {
    Raw,
    Vhd,
    Qcow2(qcow2::Plan),
    Ova(ova::Ova),
}

impl Prepared {
    fn new(img: &SparseImage, container: Container, scratch: &Path, threads: usize) -> Result<Self> {
        Ok(match container {
            Container::Raw => Prepared::Raw,
            Container::VhdFixed => Prepared::Vhd,
            Container::Qcow2 { cluster_size } => Prepared::Qcow2(qcow2::Plan::new(img, cluster_size)?),
            Container::Ova => Prepared::Ova(ova::Ova::prepare(img, scratch, threads)?),
        })
    }

    /// Byte length of the container.
    fn len(&self, img: &SparseImage) -> u64 {
        match self {
            Prepared::Raw => img.size(),
            Prepared::Vhd => img.size() + vhd::FOOTER_LEN,
            Prepared::Qcow2(p) => p.layout.file_len(),
            Prepared::Ova(o) => o.len(),
        }
    }

    fn write(&self, img: &SparseImage, sink: &mut dyn Sink, mtime: u64) -> Result<()> {
        match self {
            Prepared::Raw => stream_raw(img, sink, |_, _| {})?,
            Prepared::Vhd => vhd::write(img, sink, mtime)?,
            Prepared::Qcow2(p) => p.write(img, sink)?,
            Prepared::Ova(o) => o.write(sink, mtime)?,
        }
        Ok(())
    }
}

/// A writer that can also be told "n zero bytes follow", which encoders may handle without
/// touching the bytes (the gzip encoder emits a cached compressed zero chunk).
pub(crate) trait Sink: Write {
    /// Writes `n` zero bytes.
    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        let mut n = n;
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

/// 1 MiB of zeros shared by every writer (static, so it costs no allocation and stays in the
/// zero page until read).
pub(crate) static ZEROS: [u8; 1 << 20] = [0u8; 1 << 20];

/// Read size for file extents.
const READ_CHUNK: usize = 1 << 20;

/// Counts the bytes written to the caller's writer.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.count += buf.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams the image bytes in order: gaps and zero extents through [`Sink::write_zeros`], data
/// through `write_all`, each data piece also passed to `on_data(offset, bytes)` (the VHD footer
/// identifier hashes them).
pub(crate) fn stream_raw(
    img: &SparseImage,
    sink: &mut dyn Sink,
    mut on_data: impl FnMut(u64, &[u8]),
) -> io::Result<()> {
    let mut pos = 0u64;
    let mut buf = Vec::new();
    for e in img.extents() {
        if e.offset > pos {
            sink.write_zeros(e.offset - pos)?;
        }
        match &e.source {
            Source::Zeros => sink.write_zeros(e.len)?,
            Source::Bytes(b) => {
                on_data(e.offset, b);
                sink.write_all(b)?;
            }
            Source::File { path, offset } => {
                let f = File::open(path)?;
                buf.resize(READ_CHUNK, 0);
                let mut done = 0u64;
                while done < e.len {
                    let n = (e.len - done).min(READ_CHUNK as u64) as usize;
                    f.read_exact_at(&mut buf[..n], offset + done)?;
                    on_data(e.offset + done, &buf[..n]);
                    sink.write_all(&buf[..n])?;
                    done += n as u64;
                }
            }
        }
        pos = e.offset + e.len;
    }
    if img.size() > pos {
        sink.write_zeros(img.size() - pos)?;
    }
    Ok(())
}

/// Indices of the `unit`-sized blocks (clusters, grains) that intersect a data extent, in
/// increasing order without repeats. Gaps and [`Source::Zeros`] extents yield nothing, so this
/// costs O(data blocks), not O(image size).
pub(crate) fn data_blocks(img: &SparseImage, unit: u64) -> impl Iterator<Item = u64> + '_ {
    let mut next = 0u64;
    img.extents()
        .iter()
        .filter(|e| !matches!(e.source, Source::Zeros))
        .flat_map(move |e| {
            let first = (e.offset / unit).max(next);
            let end = (e.offset + e.len).div_ceil(unit);
            next = next.max(end);
            first..end
        })
}

/// Random reads of image ranges in non-decreasing order (block by block), for the cluster
/// and grain based formats. Keeps the current extent's file open.
pub(crate) struct BlockReader<'a> {
    img: &'a SparseImage,
    /// First extent that may intersect the next read.
    idx: usize,
    file: Option<(usize, File)>,
}

impl<'a> BlockReader<'a> {
    pub(crate) fn new(img: &'a SparseImage) -> Self {
        Self {
            img,
            idx: 0,
            file: None,
        }
    }

    /// Fills `buf` with the image bytes at `start..start + buf.len()` (zeros past the image
    /// end). `start` must not decrease between calls.
    pub(crate) fn read(&mut self, start: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        let end = start + buf.len() as u64;
        let extents = self.img.extents();
        while self.idx < extents.len() && extents[self.idx].offset + extents[self.idx].len <= start {
            self.idx += 1;
        }
        let mut i = self.idx;
        while i < extents.len() && extents[i].offset < end {
            let e = &extents[i];
            let s = e.offset.max(start);
            let t = (e.offset + e.len).min(end);
            let dst = &mut buf[(s - start) as usize..(t - start) as usize];
            match &e.source {
                Source::Zeros => {}
                Source::Bytes(b) => {
                    dst.copy_from_slice(&b[(s - e.offset) as usize..(t - e.offset) as usize]);
                }
                Source::File { path, offset } => {
                    if self.file.as_ref().map(|(j, _)| *j) != Some(i) {
                        self.file = Some((i, File::open(path)?));
                    }
                    if let Some((_, f)) = &self.file {
                        f.read_exact_at(dst, offset + (s - e.offset))?;
                    }
                }
            }
            i += 1;
        }
        Ok(())
    }
}

/// Whether every byte is zero (in 64-byte strides the compiler vectorises).
pub(crate) fn is_zero(b: &[u8]) -> bool {
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
