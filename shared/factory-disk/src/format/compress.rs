//! Output compressors with the parameters of the imager's CLI tools (talos-imager.md §10.6).
//!
//! xz and zstd use their libraries' own multi-threading with the CLI settings (`xz -0 -T0`:
//! preset 0, default block size, CRC64; `zstd -T0 -18`: level 18, checksum, content size).
//! gzip is our pigz-like parallel encoder [`ParGz`].

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

use super::{is_zero, Compression, Sink, ZEROS};

/// A compressing [`Sink`] over `W`.
pub(crate) enum Encoder<W: Write> {
    Plain(W),
    Xz(liblzma::write::XzEncoder<W>),
    Zst(zstd::stream::write::Encoder<'static, W>),
    Gz(ParGz<W>),
}

impl<W: Write> Encoder<W> {
    /// `len`: the exact number of bytes that will be written (zstd stores it in the frame).
    /// `Compression::TarGz` is the caller's business (tar framing around `Gz`).
    pub(crate) fn new(c: Compression, out: W, len: u64, threads: usize) -> io::Result<Self> {
        let t = u32::try_from(threads.max(1)).unwrap_or(u32::MAX);
        Ok(match c {
            Compression::None => Encoder::Plain(out),
            Compression::Xz => {
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .threads(t)
                    .preset(0)
                    .check(liblzma::stream::Check::Crc64)
                    .encoder()?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
            }
            Compression::Zst => {
                let mut e = zstd::stream::write::Encoder::new(out, 18)?;
                e.include_checksum(true)?;
                e.include_contentsize(true)?;
                e.set_pledged_src_size(Some(len))?;
                e.multithread(t)?;
                Encoder::Zst(e)
            }
            Compression::Gz | Compression::TarGz => Encoder::Gz(ParGz::new(out, 6, threads)),
        })
    }

    /// Ends the stream (trailers, checksums) and flushes it to the writer.
    pub(crate) fn finish(self) -> io::Result<()> {
        let mut w = match self {
            Encoder::Plain(w) => w,
            Encoder::Xz(e) => e.finish()?,
            Encoder::Zst(e) => e.finish()?,
            Encoder::Gz(e) => e.finish()?,
        };
        w.flush()
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zst(e) => e.write(buf),
            Encoder::Gz(e) => e.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(buf),
            Encoder::Xz(e) => e.write_all(buf),
            Encoder::Zst(e) => e.write_all(buf),
            Encoder::Gz(e) => e.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Zst(e) => e.flush(),
            Encoder::Gz(e) => e.flush(),
        }
    }
}

impl<W: Write> Sink for Encoder<W> {
    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        match self {
            Encoder::Gz(e) => e.write_zeros(n),
            _ => {
                // 64 KiB pieces: the source stays in the CPU cache while the encoder copies it
                let mut n = n;
                while n > 0 {
                    let k = n.min(FEED as u64) as usize;
                    self.write_all(&ZEROS[..k])?;
                    n -= k as u64;
                }
                Ok(())
            }
        }
    }
}

/// Bytes per write of zeros into xz and zstd.
const FEED: usize = 64 * 1024;

/// Input bytes per parallel gzip chunk.
const GZ_CHUNK: usize = 1 << 20;
/// Deflate's window: each chunk is compressed with the previous chunk's tail as dictionary,
/// so chunking costs almost no ratio (pigz does the same).
const WINDOW: usize = 32 * 1024;

/// One chunk for a worker.
struct Job {
    data: Vec<u8>,
    dict: Option<Vec<u8>>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// A chunk's compressed bytes: ready or still being compressed.
enum Pending {
    Ready(Arc<[u8]>),
    Wait(Receiver<io::Result<Vec<u8>>>),
}

/// Parallel gzip (the pigz scheme): the input is cut into 1 MiB chunks, each compressed to raw
/// deflate by a worker thread with the previous 32 KiB as dictionary and ended with a sync
/// flush (so it ends on a byte boundary and the pieces concatenate into one deflate stream),
/// the last with the final block. The CRC32 is computed in order on this thread. A chunk of
/// only zeros that no dictionary is needed for is not compressed again: its compressed form is
/// computed once and reused, so long zero runs (most of a sparse disk image) cost nothing.
///
/// Header as `pigz --no-time`: mtime 0, XFL 0 (level 6), OS 3 (Unix).
pub(crate) struct ParGz<W: Write> {
    out: W,
    level: u32,
    buf: Vec<u8>,
    /// The last [`WINDOW`] bytes before `buf` (`None` at the stream start).
    tail: Option<Vec<u8>>,
    crc: crc32fast::Hasher,
    total: u64,
    /// Compressed 1 MiB zero chunk (sync-flushed, no dictionary) and its CRC state.
    zero_chunk: Option<(Arc<[u8]>, crc32fast::Hasher)>,
    queue: VecDeque<Pending>,
    max_queue: usize,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    header_done: bool,
}

impl<W: Write> ParGz<W> {
    pub(crate) fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || worker(&rx, level))
            })
            .collect();
        Self {
            out,
            level,
            buf: Vec::with_capacity(GZ_CHUNK),
            tail: None,
            crc: crc32fast::Hasher::new(),
            total: 0,
            zero_chunk: None,
            queue: VecDeque::new(),
            max_queue: threads * 2 + 2,
            jobs: Some(tx),
            workers,
            header_done: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            self.out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
            self.header_done = true;
        }
        Ok(())
    }

    /// Writes out finished chunks until at most `keep` are queued.
    fn drain(&mut self, keep: usize) -> io::Result<()> {
        self.header()?;
        while self.queue.len() > keep {
            match self.queue.pop_front() {
                Some(Pending::Ready(b)) => self.out.write_all(&b)?,
                Some(Pending::Wait(rx)) => {
                    let b = rx.recv().map_err(|_| io::Error::other("gzip worker died"))??;
                    self.out.write_all(&b)?;
                }
                None => break,
            }
        }
        Ok(())
    }

    fn push(&mut self, p: Pending) -> io::Result<()> {
        self.queue.push_back(p);
        let keep = self.max_queue;
        self.drain(keep)
    }

    fn zero_chunk(&mut self) -> io::Result<(Arc<[u8]>, crc32fast::Hasher)> {
        if let Some(z) = &self.zero_chunk {
            return Ok(z.clone());
        }
        let mut c = Compress::new(flate2::Compression::new(self.level), false);
        let bytes: Arc<[u8]> = deflate(&mut c, &ZEROS[..GZ_CHUNK], None, false)?.into();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&ZEROS[..GZ_CHUNK]);
        self.zero_chunk = Some((bytes.clone(), crc.clone()));
        Ok((bytes, crc))
    }

    /// Queues a whole zero chunk without compressing it.
    fn push_zero_chunk(&mut self) -> io::Result<()> {
        let (bytes, crc) = self.zero_chunk()?;
        self.crc.combine(&crc);
        self.total += GZ_CHUNK as u64;
        self.tail = Some(vec![0u8; WINDOW]);
        self.push(Pending::Ready(bytes))
    }

    /// Hands `buf` to a worker (or to the zero-chunk cache).
    fn flush_chunk(&mut self, last: bool) -> io::Result<()> {
        if !last && self.buf.len() == GZ_CHUNK && is_zero(&self.buf) {
            self.buf.clear();
            return self.push_zero_chunk();
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(GZ_CHUNK));
        self.crc.update(&data);
        self.total += data.len() as u64;
        let dict = self.tail.take();
        self.tail = Some(data[data.len().saturating_sub(WINDOW)..].to_vec());
        let (reply, rx) = sync_channel(1);
        let job = Job {
            data,
            dict,
            last,
            reply,
        };
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?
            .send(job)
            .map_err(|_| io::Error::other("gzip workers died"))?;
        self.push(Pending::Wait(rx))
    }

    pub(crate) fn write_zeros(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && n >= GZ_CHUNK as u64 {
                self.push_zero_chunk()?;
                n -= GZ_CHUNK as u64;
                continue;
            }
            let k = ((GZ_CHUNK - self.buf.len()) as u64).min(n) as usize;
            self.buf.extend_from_slice(&ZEROS[..k]);
            n -= k as u64;
            if self.buf.len() == GZ_CHUNK {
                self.flush_chunk(false)?;
            }
        }
        Ok(())
    }

    /// Compresses the rest, writes the trailer; returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if self.buf.is_empty() {
            // every chunk so far ended with a sync flush: end with an empty final block
            // (fixed Huffman, just the end-of-block code)
            self.push(Pending::Ready(Arc::from(&[0x03u8, 0x00][..])))?;
        } else {
            self.flush_chunk(true)?;
        }
        self.drain(0)?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            w.join().map_err(|_| io::Error::other("gzip worker panicked"))?;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.to_le_bytes());
        // ISIZE is the length modulo 2^32 (RFC 1952)
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        self.out.write_all(&trailer)?;
        // `self` implements no Drop, so the writer can be moved out
        Ok(self.out)
    }
}

impl<W: Write> Write for ParGz<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let k = (GZ_CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..k]);
            data = &data[k..];
            if self.buf.len() == GZ_CHUNK {
                self.flush_chunk(false)?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        // chunks are only complete when full; nothing useful to flush early
        Ok(())
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, level: u32) {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    loop {
        let job = match rx.lock() {
            Ok(guard) => match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        c.reset();
        let res = deflate(&mut c, &job.data, job.dict.as_deref(), job.last);
        // the receiver is gone only if the encoder was dropped: nothing to report to
        let _ = job.reply.send(res);
    }
}

/// Raw-deflates `data` (after `reset`) with an optional dictionary, ending with a sync flush
/// (byte-aligned, not final) or, if `last`, the final block.
fn deflate(c: &mut Compress, data: &[u8], dict: Option<&[u8]>, last: bool) -> io::Result<Vec<u8>> {
    if let Some(d) = dict {
        c.set_dictionary(d).map_err(io::Error::other)?;
    }
    let start = c.total_in();
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let done = (c.total_in() - start) as usize;
        let st = c
            .compress_vec(&data[done..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = (c.total_in() - start) as usize;
        match st {
            Status::StreamEnd => return Ok(out),
            // a sync flush is complete once all input is in and output space is left over
            _ if !last && done == data.len() && out.len() < out.capacity() => return Ok(out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut d = flate2::write::GzDecoder::new(&mut out);
        d.write_all(data).expect("valid gzip");
        d.finish().expect("valid gzip");
        out
    }

    #[test]
    fn par_gz_roundtrip_with_zero_chunks() -> io::Result<()> {
        let mut expect = Vec::new();
        let mut gz = ParGz::new(Vec::new(), 6, 3);
        let pattern: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        gz.write_all(&pattern[..1234])?;
        expect.extend_from_slice(&pattern[..1234]);
        gz.write_zeros(5 * GZ_CHUNK as u64 + 17)?;
        expect.resize(expect.len() + 5 * GZ_CHUNK + 17, 0);
        gz.write_all(&pattern)?;
        expect.extend_from_slice(&pattern);
        gz.write_zeros(GZ_CHUNK as u64 * 2 - 17 - 1234 - 3_000_000 % GZ_CHUNK as u64)?;
        expect.resize(expect.len() + GZ_CHUNK * 2 - 17 - 1234 - 3_000_000 % GZ_CHUNK, 0);
        assert_eq!(
            expect.len() % GZ_CHUNK,
            0,
            "ends on a chunk boundary: final empty block"
        );
        let out = gz.finish()?;
        assert!(gunzip(&out) == expect);

        let empty = ParGz::new(Vec::new(), 6, 1).finish()?;
        assert!(gunzip(&empty).is_empty());
        Ok(())
    }
}
