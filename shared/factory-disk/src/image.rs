//! A sparse disk image: a size and a sorted list of non-overlapping extents; everything not
//! covered by an extent reads as zeros.
//!
//! The image is streamed, never materialised: [`SparseImage::reader`] yields the bytes in order
//! (gaps and [`Source::Zeros`] as zero bytes, for compressors and format converters downstream),
//! [`SparseImage::write_sparse_file`] writes only the data and leaves holes elsewhere (all-zero
//! 64 KiB chunks of data extents become holes too). Memory is bounded by the in-memory
//! [`Source::Bytes`] extents the caller adds (GPT structures, META: a few hundred KiB) plus one
//! 64 KiB buffer.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::{Error, Result};

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0u8; CHUNK];

/// Where the bytes of an extent come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// All zeros (the same as leaving the range uncovered; useful to document intent).
    Zeros,
    /// In-memory bytes; must be exactly the extent length.
    Bytes(Arc<[u8]>),
    /// `len` bytes of a file starting at `offset` (e.g. a partition image built in a temp file).
    File { path: PathBuf, offset: u64 },
}

/// One extent of the image.
#[derive(Debug, Clone)]
pub struct Extent {
    /// Byte offset in the image.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Content.
    pub source: Source,
}

impl Extent {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// A sparse image of a fixed size.
#[derive(Debug, Clone)]
pub struct SparseImage {
    size: u64,
    extents: Vec<Extent>,
}

impl SparseImage {
    /// An all-zero image of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            extents: Vec::new(),
        }
    }

    /// Image size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The extents, sorted by offset.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Adds in-memory bytes at `offset`.
    pub fn add_bytes(&mut self, offset: u64, bytes: impl Into<Arc<[u8]>>) -> Result<()> {
        let bytes: Arc<[u8]> = bytes.into();
        let len = bytes.len() as u64;
        self.add(Extent {
            offset,
            len,
            source: Source::Bytes(bytes),
        })
    }

    /// Adds `len` bytes of the file at `path` starting at `file_offset`, placed at `offset`.
    /// The file is opened when the image is written; it must then hold the whole range.
    pub fn add_file(
        &mut self,
        offset: u64,
        len: u64,
        path: impl Into<PathBuf>,
        file_offset: u64,
    ) -> Result<()> {
        self.add(Extent {
            offset,
            len,
            source: Source::File {
                path: path.into(),
                offset: file_offset,
            },
        })
    }

    /// Adds the **data regions** of `len` bytes of the sparse file at `path` starting at
    /// `file_offset`, placed at `offset`: only ranges the file system reports as data
    /// (`lseek` `SEEK_DATA`/`SEEK_HOLE`) become [`Source::File`] extents, holes stay gaps (zeros)
    /// and cost nothing when the image is written. For partition images a tool wrote into a
    /// partition-sized sparse file (the BOOT XFS). Returns the number of data bytes added.
    ///
    /// The file must not change afterwards (the extents are read when the image is written).
    /// Where the OS cannot report holes, the whole range is added as one extent.
    pub fn add_sparse_file(
        &mut self,
        offset: u64,
        len: u64,
        path: impl Into<PathBuf>,
        file_offset: u64,
    ) -> Result<u64> {
        let path: PathBuf = path.into();
        let file = File::open(&path)?;
        let end = file_offset.checked_add(len).ok_or(Error::Extent {
            offset,
            len,
            size: self.size,
        })?;
        let mut added = 0u64;
        for (start, stop) in data_regions(&file, file_offset, end)? {
            self.add_file(offset + (start - file_offset), stop - start, path.clone(), start)?;
            added += stop - start;
        }
        Ok(added)
    }

    /// Adds an extent; it must lie inside the image and not overlap another extent.
    pub fn add(&mut self, extent: Extent) -> Result<()> {
        let bad = || Error::Extent {
            offset: extent.offset,
            len: extent.len,
            size: self.size,
        };
        if let Source::Bytes(b) = &extent.source {
            if b.len() as u64 != extent.len {
                return Err(bad());
            }
        }
        let end = extent.offset.checked_add(extent.len).ok_or_else(bad)?;
        if end > self.size {
            return Err(bad());
        }
        if extent.len == 0 {
            return Ok(());
        }
        let idx = self.extents.partition_point(|e| e.offset < extent.offset);
        if idx > 0 && self.extents[idx - 1].end() > extent.offset {
            return Err(bad());
        }
        if idx < self.extents.len() && self.extents[idx].offset < end {
            return Err(bad());
        }
        self.extents.insert(idx, extent);
        Ok(())
    }

    /// A reader over the whole image, in order, zeros included.
    pub fn reader(&self) -> ImageReader<'_> {
        ImageReader {
            image: self,
            pos: 0,
            idx: 0,
            open: None,
        }
    }

    /// Streams every byte of the image (zeros included) to `w`; returns the bytes written.
    pub fn write_to<W: Write + ?Sized>(&self, w: &mut W) -> Result<u64> {
        let mut r = self.reader();
        let mut buf = vec![0u8; 4 * CHUNK];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
            total += n as u64;
        }
        Ok(total)
    }

    /// Writes the image into `file` sparsely: sets its length, writes data extents (skipping
    /// all-zero chunks) and seeks over the rest. `file` should be empty (or already zero).
    pub fn write_sparse_file(&self, file: &mut File) -> Result<()> {
        file.set_len(0)?;
        file.set_len(self.size)?;
        let mut buf = vec![0u8; CHUNK];
        for e in &self.extents {
            match &e.source {
                Source::Zeros => {}
                Source::Bytes(b) => {
                    for (i, chunk) in b.chunks(CHUNK).enumerate() {
                        if !is_zero(chunk) {
                            file.seek(SeekFrom::Start(e.offset + (i * CHUNK) as u64))?;
                            file.write_all(chunk)?;
                        }
                    }
                }
                Source::File { path, offset } => {
                    let mut src = File::open(path)?;
                    src.seek(SeekFrom::Start(*offset))?;
                    let mut done = 0u64;
                    while done < e.len {
                        let n = ((e.len - done) as usize).min(CHUNK);
                        src.read_exact(&mut buf[..n])?;
                        if !is_zero(&buf[..n]) {
                            file.seek(SeekFrom::Start(e.offset + done))?;
                            file.write_all(&buf[..n])?;
                        }
                        done += n as u64;
                    }
                }
            }
        }
        file.flush()?;
        Ok(())
    }
}

/// The data regions `[start, stop)` of `file` within `[from, to)` (clipped to the file size).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "macos"
))]
fn data_regions(file: &File, from: u64, to: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom as RSeek};
    let to = to.min(file.metadata()?.len());
    let mut regions = Vec::new();
    let mut pos = from;
    while pos < to {
        let data = match seek(file, RSeek::Data(pos)) {
            Ok(d) => d,
            // no data after `pos`: the rest is a hole
            Err(e) if e == rustix::io::Errno::NXIO => break,
            // SEEK_DATA unsupported here: treat everything as data
            Err(e) if e == rustix::io::Errno::INVAL => {
                regions.push((pos, to));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if data >= to {
            break;
        }
        let hole = seek(file, RSeek::Hole(data))?.min(to);
        regions.push((data, hole));
        pos = hole;
    }
    Ok(regions)
}

/// Without `SEEK_DATA`, the whole range is data.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "macos"
)))]
fn data_regions(file: &File, from: u64, to: u64) -> io::Result<Vec<(u64, u64)>> {
    let to = to.min(file.metadata()?.len());
    Ok(if from < to { vec![(from, to)] } else { Vec::new() })
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Sequential reader over a [`SparseImage`] (see [`SparseImage::reader`]).
#[derive(Debug)]
pub struct ImageReader<'a> {
    image: &'a SparseImage,
    pos: u64,
    /// First extent whose end is beyond `pos`.
    idx: usize,
    /// The file of extent `.0`, positioned at the reader's position in it.
    open: Option<(usize, File)>,
}

impl Read for ImageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let extents = &self.image.extents;
        while self.idx < extents.len() && extents[self.idx].end() <= self.pos {
            self.idx += 1;
        }
        if self.pos >= self.image.size || buf.is_empty() {
            return Ok(0);
        }
        let room = buf.len() as u64;
        let n;
        match extents.get(self.idx).filter(|e| e.offset <= self.pos) {
            None => {
                // a gap: zeros up to the next extent or the end
                let next = extents.get(self.idx).map_or(self.image.size, |e| e.offset);
                n = (next - self.pos).min(room) as usize;
                buf[..n].fill(0);
            }
            Some(e) => {
                let within = self.pos - e.offset;
                n = (e.len - within).min(room) as usize;
                match &e.source {
                    Source::Zeros => buf[..n].fill(0),
                    Source::Bytes(b) => buf[..n].copy_from_slice(&b[within as usize..within as usize + n]),
                    Source::File { path, offset } => {
                        if self.open.as_ref().map(|(i, _)| *i) != Some(self.idx) {
                            let mut f = File::open(path)?;
                            f.seek(SeekFrom::Start(offset + within))?;
                            self.open = Some((self.idx, f));
                        }
                        let Some((_, f)) = self.open.as_mut() else {
                            unreachable!()
                        };
                        f.read_exact(&mut buf[..n])?;
                    }
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Copies `len` zero bytes to `w` (helper for writers that emit gaps themselves).
pub fn write_zeros<W: Write + ?Sized>(w: &mut W, mut len: u64) -> io::Result<()> {
    while len > 0 {
        let n = len.min(CHUNK as u64) as usize;
        w.write_all(&ZEROS[..n])?;
        len -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_matches_model() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("src.bin");
        std::fs::write(
            &p,
            (0..200_000u32).map(|i| (i % 251) as u8 + 1).collect::<Vec<_>>(),
        )?;
        let mut img = SparseImage::new(1_000_000);
        img.add_bytes(10, vec![7u8; 100])?;
        img.add_file(300_000, 150_000, &p, 1000)?;
        img.add(Extent {
            offset: 500_000,
            len: 10,
            source: Source::Zeros,
        })?;
        img.add_bytes(999_990, vec![9u8; 10])?;
        assert!(img.add_bytes(50, vec![1u8; 100]).is_err(), "overlap");
        assert!(img.add_bytes(999_999, vec![1u8; 2]).is_err(), "past the end");

        let mut expect = vec![0u8; 1_000_000];
        expect[10..110].fill(7);
        let src = std::fs::read(&p)?;
        expect[300_000..450_000].copy_from_slice(&src[1000..151_000]);
        expect[999_990..].fill(9);

        let mut out = Vec::new();
        assert_eq!(img.write_to(&mut out)?, 1_000_000);
        assert!(out == expect);

        let f = dir.path().join("img");
        img.write_sparse_file(&mut File::create(&f)?)?;
        assert!(std::fs::read(&f)? == expect);
        Ok(())
    }

    #[test]
    fn sparse_file_adds_only_data_regions() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("sparse.bin");
        let mut f = File::create(&p)?;
        f.set_len(64 * 1024 * 1024)?;
        f.seek(SeekFrom::Start(8 * 1024 * 1024))?;
        f.write_all(&[5u8; 5000])?;
        f.seek(SeekFrom::Start(40 * 1024 * 1024 + 17))?;
        f.write_all(&[6u8; 100])?;
        f.sync_all()?;
        drop(f);

        let mut img = SparseImage::new(100 * 1024 * 1024);
        // the last 1 MiB of the file is left out
        let added = img.add_sparse_file(1024 * 1024, 63 * 1024 * 1024, &p, 0)?;
        // file systems report data in blocks: at least what was written, far less than 63 MiB
        assert!((5100..2 * 1024 * 1024).contains(&added), "{added}");
        let mut expect = vec![0u8; 100 * 1024 * 1024];
        expect[9 * 1024 * 1024..9 * 1024 * 1024 + 5000].fill(5);
        expect[41 * 1024 * 1024 + 17..41 * 1024 * 1024 + 117].fill(6);
        let mut out = Vec::new();
        img.write_to(&mut out)?;
        assert!(out == expect);

        // a range starting inside the file
        let mut part = SparseImage::new(1024 * 1024);
        part.add_sparse_file(0, 1024 * 1024, &p, 40 * 1024 * 1024)?;
        let mut out = Vec::new();
        part.write_to(&mut out)?;
        assert!(out[17..117].iter().all(|&b| b == 6) && out[117..].iter().all(|&b| b == 0));
        Ok(())
    }
}
