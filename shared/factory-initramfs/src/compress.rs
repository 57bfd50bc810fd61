//! The compressors of a build, with the imager's settings (talos-imager §4.4 step 3, §5.2):
//!
//! * squashfs blocks: zstd level 18 since Talos 1.8 (`mksquashfs -comp zstd
//!   -Xcompression-level 18`), before that xz with a dictionary of the block size
//!   (`-comp xz -Xdict-size 100%`: LZMA2 preset 6, CRC32 check, as mksquashfs' xz wrapper);
//!   compressed on every core by an ordered worker pool;
//! * the appended archive: one zstd stream, level 18 with a checksum (`zstd -T0 -18`), or one xz
//!   stream with a CRC32 check, preset 0 extreme (`xz -C crc32 -0 -e -T 0`), multi-threaded.
//!
//! One deliberate difference: inside the appended zstd stream, members that are already
//! compressed (the `.sqsh` layers) are compressed with zstd level 1's search parameters (the
//! parameters of a multi-threaded frame may change between jobs). Level 18 gains nothing on
//! squashfs blocks (0.2 % in a measurement) and costs most of the time; the stream stays one
//! frame, which the kernel requires (its zstd decompressor stops at the end of the first frame).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;

use zstd::zstd_safe::{CParameter, Strategy};

/// zstd level of squashfs blocks and of the appended archive (≥ 1.8).
pub const ZSTD_LEVEL: i32 = 18;
/// xz preset of squashfs blocks (< 1.8): mksquashfs' xz wrapper uses the default preset.
pub const XZ_SQUASHFS_PRESET: u32 = 6;
/// xz preset of the appended archive (< 1.8): `xz -0 -e`.
pub const XZ_STREAM_PRESET: u32 = liblzma::stream::PRESET_EXTREME;
/// Job size of the multi-threaded zstd stream: zstd's default for level 18 is 32 MiB, so the
/// firmware of most schematics would be one job on one core. With 8 MiB jobs and a 1 MiB overlap
/// (`OverlapSizeLog` 6: 1/8 of the 8 MiB window) the output grew by 1.2 % on 17 MiB of binaries.
const ZSTD_JOB_SIZE: u32 = 8 << 20;
const ZSTD_OVERLAP_LOG: u32 = 6;

/// How squashfs blocks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCodec {
    Zstd { level: i32 },
    Xz { dict_size: u32 },
}

impl BlockCodec {
    /// The squashfs compressor id (superblock `compression`).
    pub fn squashfs_id(self) -> u16 {
        match self {
            BlockCodec::Zstd { .. } => 6,
            BlockCodec::Xz { .. } => 4,
        }
    }

    pub(crate) fn compressor(self) -> io::Result<BlockCompressor> {
        Ok(match self {
            BlockCodec::Zstd { level } => BlockCompressor::Zstd(zstd::bulk::Compressor::new(level)?),
            BlockCodec::Xz { dict_size } => BlockCompressor::Xz { dict_size },
        })
    }
}

/// A per-thread block compressor.
pub(crate) enum BlockCompressor {
    Zstd(zstd::bulk::Compressor<'static>),
    Xz { dict_size: u32 },
}

impl BlockCompressor {
    /// `data` compressed, or `None` when that would not be smaller (the block is then stored).
    pub(crate) fn compress(&mut self, data: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let out = match self {
            BlockCompressor::Zstd(c) => c.compress(data)?,
            BlockCompressor::Xz { dict_size } => {
                let mut opts =
                    liblzma::stream::LzmaOptions::new_preset(XZ_SQUASHFS_PRESET).map_err(io::Error::other)?;
                opts.dict_size(*dict_size);
                let mut filters = liblzma::stream::Filters::new();
                filters.lzma2(&opts);
                let stream =
                    liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32)
                        .map_err(io::Error::other)?;
                let mut enc =
                    liblzma::write::XzEncoder::new_stream(Vec::with_capacity(data.len() / 2 + 128), stream);
                enc.write_all(data)?;
                enc.finish()?
            }
        };
        Ok((out.len() < data.len()).then_some(out))
    }
}

/// A compressed block as the pool hands it back.
#[derive(Debug)]
pub(crate) struct Block {
    pub id: u64,
    /// The bytes to store: compressed, or the input when compressing did not help.
    pub bytes: Vec<u8>,
    pub compressed: bool,
}

/// Compresses blocks on worker threads and hands them back in submission order, with a bounded
/// number in flight (so memory stays at a few blocks per thread).
pub(crate) struct Pool {
    jobs: Option<SyncSender<(u64, Vec<u8>)>>,
    results: Receiver<(u64, io::Result<Block>)>,
    next_id: u64,
    next_out: u64,
    ready: BTreeMap<u64, io::Result<Block>>,
    limit: u64,
}

impl Pool {
    /// Queues `data`; blocks that are done, in order, go to `out`. Returns the block's id.
    pub(crate) fn submit(
        &mut self,
        data: Vec<u8>,
        out: &mut dyn FnMut(Block) -> io::Result<()>,
    ) -> io::Result<u64> {
        while self.next_id - self.next_out >= self.limit {
            self.wait_one(out)?;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("compression pool closed"))?
            .send((id, data))
            .map_err(|_| io::Error::other("compression workers stopped"))?;
        Ok(id)
    }

    /// Waits for every queued block.
    pub(crate) fn drain(&mut self, out: &mut dyn FnMut(Block) -> io::Result<()>) -> io::Result<()> {
        while self.next_out < self.next_id {
            self.wait_one(out)?;
        }
        Ok(())
    }

    fn wait_one(&mut self, out: &mut dyn FnMut(Block) -> io::Result<()>) -> io::Result<()> {
        while !self.ready.contains_key(&self.next_out) {
            let (id, result) = self
                .results
                .recv()
                .map_err(|_| io::Error::other("compression workers stopped"))?;
            self.ready.insert(id, result);
        }
        if let Some(result) = self.ready.remove(&self.next_out) {
            self.next_out += 1;
            out(result?)?;
        }
        Ok(())
    }
}

/// Runs `f` with a pool of `threads` workers compressing with `codec`.
pub(crate) fn with_pool<R>(
    codec: BlockCodec,
    threads: usize,
    f: impl FnOnce(&mut Pool) -> io::Result<R>,
) -> io::Result<R> {
    let threads = threads.max(1);
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads * 2);
    let (result_tx, result_rx) = mpsc::channel();
    let job_rx = Arc::new(Mutex::new(job_rx));
    thread::scope(|scope| {
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let result_tx = result_tx.clone();
            scope.spawn(move || worker(codec, &job_rx, &result_tx));
        }
        drop(result_tx);
        let mut pool = Pool {
            jobs: Some(job_tx),
            results: result_rx,
            next_id: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            limit: (threads as u64) * 4,
        };
        let result = f(&mut pool);
        // Closing the queue stops the workers once it is empty.
        pool.jobs = None;
        result
    })
}

fn worker(
    codec: BlockCodec,
    jobs: &Mutex<Receiver<(u64, Vec<u8>)>>,
    results: &mpsc::Sender<(u64, io::Result<Block>)>,
) {
    let mut compressor = codec.compressor();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((id, data)) = job else { return };
        let result = match &mut compressor {
            Ok(c) => c.compress(&data).map(|packed| match packed {
                Some(bytes) => Block {
                    id,
                    bytes,
                    compressed: true,
                },
                None => Block {
                    id,
                    bytes: data,
                    compressed: false,
                },
            }),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        if results.send((id, result)).is_err() {
            return;
        }
    }
}

/// The strategy of a zstd level for inputs of unknown size (zstd's `clevels.h`): what a
/// strategy override has to return to.
fn level_strategy(level: i32) -> Strategy {
    match level {
        ..=2 => Strategy::ZSTD_fast,
        3..=4 => Strategy::ZSTD_dfast,
        5 => Strategy::ZSTD_greedy,
        6..=7 => Strategy::ZSTD_lazy,
        8..=12 => Strategy::ZSTD_lazy2,
        13..=15 => Strategy::ZSTD_btlazy2,
        16..=17 => Strategy::ZSTD_btopt,
        18 => Strategy::ZSTD_btultra,
        _ => Strategy::ZSTD_btultra2,
    }
}

/// The compressor of the appended archive.
pub(crate) enum StreamEncoder<W: Write> {
    Zstd {
        enc: zstd::stream::write::Encoder<'static, W>,
        /// The level of everything but precompressed members.
        level: i32,
    },
    Xz(liblzma::write::XzEncoder<W>),
}

impl<W: Write> StreamEncoder<W> {
    /// zstd level 18 with a checksum on `threads` workers (≥ 1.8), else xz -0 -e with a CRC32
    /// check.
    pub(crate) fn new(out: W, zstd: bool, threads: usize) -> io::Result<Self> {
        Self::with_zstd_settings(out, zstd, threads, ZSTD_LEVEL, ZSTD_JOB_SIZE)
    }

    fn with_zstd_settings(out: W, zstd: bool, threads: usize, level: i32, job_size: u32) -> io::Result<Self> {
        let threads = u32::try_from(threads.max(1)).unwrap_or(1);
        if zstd {
            let mut enc = zstd::stream::write::Encoder::new(out, level)?;
            enc.include_checksum(true)?;
            // At least one worker, whatever the core count: the level can then change between
            // jobs, and the output does not depend on the number of workers.
            enc.multithread(threads)?;
            enc.set_parameter(CParameter::JobSize(job_size))?;
            enc.set_parameter(CParameter::OverlapSizeLog(ZSTD_OVERLAP_LOG))?;
            Ok(StreamEncoder::Zstd { enc, level })
        } else {
            let stream = liblzma::stream::MtStreamBuilder::new()
                .preset(XZ_STREAM_PRESET)
                .check(liblzma::stream::Check::Crc32)
                .threads(threads)
                .encoder()
                .map_err(io::Error::other)?;
            Ok(StreamEncoder::Xz(liblzma::write::XzEncoder::new_stream(
                out, stream,
            )))
        }
    }

    /// Whether what follows is already compressed: zstd then spends no effort on it (ends the
    /// current job and switches level); xz keeps its settings (one preset per stream).
    pub(crate) fn set_precompressed(&mut self, precompressed: bool) -> io::Result<()> {
        match self {
            StreamEncoder::Zstd { enc, level } => {
                enc.flush()?;
                // Changing the compression level in the middle of a frame leaves later jobs
                // worse off than the level says (zstd 1.5.7), so the level stays and only the
                // search parameters are overridden: zstd level 1's for precompressed data, then
                // back to the level's own (0 = the level's default; the strategy has none).
                let (strategy, hash, chain, search, min_match) = if precompressed {
                    (Strategy::ZSTD_fast, 14, 13, 1, 7)
                } else {
                    (level_strategy(*level), 0, 0, 0, 0)
                };
                enc.set_parameter(CParameter::Strategy(strategy))?;
                enc.set_parameter(CParameter::HashLog(hash))?;
                enc.set_parameter(CParameter::ChainLog(chain))?;
                enc.set_parameter(CParameter::SearchLog(search))?;
                enc.set_parameter(CParameter::MinMatch(min_match))?;
                enc.set_parameter(CParameter::TargetLength(0))
            }
            StreamEncoder::Xz(_) => Ok(()),
        }
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            StreamEncoder::Zstd { enc, .. } => enc.finish(),
            StreamEncoder::Xz(enc) => enc.finish(),
        }
    }
}

impl<W: Write> Write for StreamEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamEncoder::Zstd { enc, .. } => enc.write(buf),
            StreamEncoder::Xz(enc) => enc.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            StreamEncoder::Zstd { enc, .. } => enc.flush(),
            StreamEncoder::Xz(enc) => enc.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[(i % 3) + 1] % 17)
            .collect()
    }

    #[test]
    fn pool_keeps_order() {
        for codec in [
            BlockCodec::Zstd { level: 3 },
            BlockCodec::Xz { dict_size: 1 << 17 },
        ] {
            let mut seen = Vec::new();
            with_pool(codec, 3, |pool| {
                for i in 0..20u8 {
                    let data = if i % 5 == 0 {
                        vec![i; 1]
                    } else {
                        sample(4096 + usize::from(i))
                    };
                    pool.submit(data, &mut |b| {
                        seen.push((b.id, b.compressed));
                        Ok(())
                    })?;
                }
                pool.drain(&mut |b| {
                    seen.push((b.id, b.compressed));
                    Ok(())
                })
            })
            .unwrap();
            let ids: Vec<u64> = seen.iter().map(|s| s.0).collect();
            assert_eq!(ids, (0..20).collect::<Vec<_>>());
            assert!(!seen[0].1, "one byte does not compress");
            assert!(seen[1].1);
        }
    }

    fn stream(data: &[&[u8]], threads: usize) -> Vec<u8> {
        // Level 18 takes seconds per MiB in a debug build: the mechanics are the same at 3.
        let mut enc = StreamEncoder::with_zstd_settings(Vec::new(), true, threads, 3, 1 << 20).unwrap();
        for (i, part) in data.iter().enumerate() {
            enc.set_precompressed(i % 2 == 1).unwrap();
            enc.write_all(part).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn zstd_stream_is_one_frame_independent_of_workers() {
        let a = sample(3 << 20);
        let b = sample(300_000);
        let one = stream(&[&a, &b, &a[..1000]], 1);
        let three = stream(&[&a, &b, &a[..1000]], 3);
        assert_eq!(one, three, "output depends on the worker count");
        let mut plain = Vec::new();
        zstd::stream::copy_decode(&one[..], &mut plain).unwrap();
        assert_eq!(plain.len(), a.len() + b.len() + 1000);
        // One frame: the decoder stops at its end with nothing left over.
        let mut decoder = zstd::stream::read::Decoder::new(&one[..]).unwrap().single_frame();
        let mut once = Vec::new();
        io::copy(&mut decoder, &mut once).unwrap();
        assert_eq!(once.len(), plain.len());
    }
}
