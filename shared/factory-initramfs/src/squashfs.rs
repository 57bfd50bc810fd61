//! A squashfs 4.0 writer for extension layers: what `mksquashfs <rootfs> <out> -all-root
//! -noappend` writes, with the imager's compressor settings.
//!
//! Written here rather than with `backhand`'s writer because layers need two things it lacks:
//! extended attributes (the embedded machine configuration carries its SELinux label,
//! talos-imager §4.3) and block compression on every core (mksquashfs is multi-threaded; zstd
//! level 18 on one core would be several times slower). The format is the kernel's
//! (`Documentation/filesystems/squashfs.rst`); the layout is mksquashfs': superblock, compressor
//! options, data and fragment blocks, inode table, directory table, fragment table, id table,
//! xattr table, padded to 4 KiB. Not written: the NFS export table (optional) and duplicate-file
//! detection (a size optimisation).
//!
//! Deterministic: every inode is owned by 0:0 and has the given mtime, the superblock too; entries
//! are in name order; blocks are written in submission order whatever the thread timing.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::compress::{with_pool, Block, BlockCodec, BlockCompressor, Pool};
use crate::tree::{Content, Kind, Node};

const MAGIC: u32 = 0x7371_7368;
/// mksquashfs' default block size.
pub const BLOCK_SIZE: u32 = 128 * 1024;
const METADATA_SIZE: usize = 8192;
const METADATA_UNCOMPRESSED: u16 = 0x8000;
const DATA_UNCOMPRESSED: u32 = 1 << 24;
const INVALID: u64 = u64::MAX;
const NO_FRAGMENT: u32 = u32::MAX;
const NO_XATTR: u32 = u32::MAX;
/// zstd's level when mksquashfs writes no compressor options.
const ZSTD_DEFAULT_LEVEL: i32 = 15;
const MAX_NAME: usize = 256;

const FLAG_NO_XATTRS: u16 = 1 << 9;
const FLAG_COMPRESSOR_OPTIONS: u16 = 1 << 10;

const DIR: u16 = 1;
const FILE: u16 = 2;
const SYMLINK: u16 = 3;
const EXT_DIR: u16 = 8;
const EXT_FILE: u16 = 9;
const EXT_SYMLINK: u16 = 10;

/// How to write an image.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub codec: BlockCodec,
    /// Modification time of every inode and of the image.
    pub mtime: u32,
    /// Compression threads.
    pub threads: usize,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Bytes of the image, padding included.
    pub size: u64,
    pub inodes: u32,
}

/// Writes a squashfs image of the directory `root` (its mode becomes the root inode's) to `out`,
/// which must be at offset 0 and seekable (the superblock is written last).
pub fn write<W: Write + Seek>(root: &Node, out: &mut W, options: &Options) -> io::Result<Summary> {
    if !matches!(root.kind, Kind::Dir(_)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "squashfs root is not a directory",
        ));
    }
    let compressor_options = match options.codec {
        BlockCodec::Zstd { level } if level != ZSTD_DEFAULT_LEVEL => Some(level.to_le_bytes().to_vec()),
        _ => None,
    };
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&[0u8; 96])?;
    let mut sink = Sink {
        out,
        pos: 96,
        blocks: Vec::new(),
    };
    if let Some(opts) = &compressor_options {
        let header = u16::try_from(opts.len()).unwrap_or(0) | METADATA_UNCOMPRESSED;
        sink.put(&header.to_le_bytes())?;
        sink.put(opts)?;
    }

    // Data: every file's blocks, small files packed into fragments.
    let mut files = Vec::new();
    let mut fragments = Fragments::default();
    with_pool(options.codec, options.threads, |pool| {
        write_data(root, pool, &mut sink, &mut files, &mut fragments)?;
        fragments.flush(pool, &mut sink)?;
        pool.drain(&mut |b| sink.accept(b))
    })?;
    let data_end = sink.pos;

    // Inodes and directories, children before their parent.
    let mut compressor = options.codec.compressor()?;
    let total = count(root);
    let mut tables = Tables {
        inodes: Metadata::default(),
        dirs: Metadata::default(),
        xattr_sets: Vec::new(),
        xattr_index: HashMap::new(),
        mtime: options.mtime,
        next_ino: 1,
        files: files.into_iter(),
        blocks: &sink.blocks,
        data_end,
    };
    let root_entry = tables.dir(root, total + 1, &mut compressor)?;
    let Tables {
        inodes,
        dirs,
        xattr_sets,
        ..
    } = tables;

    let inode_table_start = sink.pos;
    sink.put(&inodes.finish(&mut compressor)?.bytes)?;
    let directory_table_start = sink.pos;
    sink.put(&dirs.finish(&mut compressor)?.bytes)?;

    let mut fragment_entries = Vec::with_capacity(fragments.blocks.len() * 16);
    for id in &fragments.blocks {
        let (start, size) = sink.block(*id)?;
        fragment_entries.extend_from_slice(&start.to_le_bytes());
        fragment_entries.extend_from_slice(&size.to_le_bytes());
        fragment_entries.extend_from_slice(&0u32.to_le_bytes());
    }
    let fragment_table_start = if fragments.blocks.is_empty() {
        sink.pos
    } else {
        sink.table(&fragment_entries, &mut compressor)?
    };
    // One id: root (`-all-root`).
    let id_table_start = sink.table(&0u32.to_le_bytes(), &mut compressor)?;

    let xattr_id_table_start = if xattr_sets.is_empty() {
        INVALID
    } else {
        let mut kv = Metadata::default();
        let mut ids = Vec::with_capacity(xattr_sets.len() * 16);
        for set in &xattr_sets {
            let (block, offset) = kv.position();
            let start = kv.written();
            for (name, value) in set {
                let (kind, short) = xattr_prefix(name)?;
                kv.put(&kind.to_le_bytes());
                kv.put(
                    &u16::try_from(short.len())
                        .map_err(|_| too_long(name))?
                        .to_le_bytes(),
                );
                kv.put(short.as_bytes());
                kv.put(
                    &u32::try_from(value.len())
                        .map_err(|_| too_long(name))?
                        .to_le_bytes(),
                );
                kv.put(value);
                kv.flush_full(&mut compressor)?;
            }
            let size = u32::try_from(kv.written() - start).map_err(|_| too_long("xattrs"))?;
            ids.extend_from_slice(&((u64::from(block) << 16) | u64::from(offset)).to_le_bytes());
            ids.extend_from_slice(&u32::try_from(set.len()).unwrap_or(u32::MAX).to_le_bytes());
            ids.extend_from_slice(&size.to_le_bytes());
        }
        let kv_start = sink.pos;
        sink.put(&kv.finish(&mut compressor)?.bytes)?;
        let id_blocks_start = sink.pos;
        let id_md = metadata_blocks(&ids, &mut compressor)?;
        sink.put(&id_md.bytes)?;
        let header_at = sink.pos;
        sink.put(&kv_start.to_le_bytes())?;
        sink.put(&u32::try_from(xattr_sets.len()).unwrap_or(u32::MAX).to_le_bytes())?;
        sink.put(&0u32.to_le_bytes())?;
        for rel in id_md.block_starts {
            sink.put(&(id_blocks_start + u64::from(rel)).to_le_bytes())?;
        }
        header_at
    };

    let bytes_used = sink.pos;
    let padded = bytes_used.div_ceil(4096) * 4096;
    let padding = usize::try_from(padded - bytes_used).unwrap_or(0);
    sink.put(&vec![0u8; padding])?;

    let mut flags = 0u16;
    if xattr_sets.is_empty() {
        flags |= FLAG_NO_XATTRS;
    }
    if compressor_options.is_some() {
        flags |= FLAG_COMPRESSOR_OPTIONS;
    }
    let mut sb = Vec::with_capacity(96);
    sb.extend_from_slice(&MAGIC.to_le_bytes());
    sb.extend_from_slice(&total.to_le_bytes());
    sb.extend_from_slice(&options.mtime.to_le_bytes());
    sb.extend_from_slice(&BLOCK_SIZE.to_le_bytes());
    sb.extend_from_slice(
        &u32::try_from(fragments.blocks.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    sb.extend_from_slice(&options.codec.squashfs_id().to_le_bytes());
    sb.extend_from_slice(&(BLOCK_SIZE.trailing_zeros() as u16).to_le_bytes());
    sb.extend_from_slice(&flags.to_le_bytes());
    sb.extend_from_slice(&1u16.to_le_bytes()); // ids
    sb.extend_from_slice(&4u16.to_le_bytes());
    sb.extend_from_slice(&0u16.to_le_bytes());
    sb.extend_from_slice(&root_entry.inode_ref.to_le_bytes());
    sb.extend_from_slice(&bytes_used.to_le_bytes());
    sb.extend_from_slice(&id_table_start.to_le_bytes());
    sb.extend_from_slice(&xattr_id_table_start.to_le_bytes());
    sb.extend_from_slice(&inode_table_start.to_le_bytes());
    sb.extend_from_slice(&directory_table_start.to_le_bytes());
    sb.extend_from_slice(&fragment_table_start.to_le_bytes());
    sb.extend_from_slice(&INVALID.to_le_bytes()); // export table
    let out = sink.out;
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&sb)?;
    out.seek(SeekFrom::Start(padded))?;
    out.flush()?;
    Ok(Summary {
        size: padded,
        inodes: total,
    })
}

/// Where blocks go: the output, and where each block (by pool id) landed.
struct Sink<'w, W: Write> {
    out: &'w mut W,
    pos: u64,
    /// `(start, size word)` of every data/fragment block, by pool id.
    blocks: Vec<(u64, u32)>,
}

impl<W: Write> Sink<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn accept(&mut self, block: Block) -> io::Result<()> {
        debug_assert_eq!(block.id, self.blocks.len() as u64);
        let len = u32::try_from(block.bytes.len()).map_err(|_| io::Error::other("block too large"))?;
        let word = if block.compressed {
            len
        } else {
            len | DATA_UNCOMPRESSED
        };
        self.blocks.push((self.pos, word));
        self.put(&block.bytes)
    }

    fn block(&self, id: u64) -> io::Result<(u64, u32)> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.blocks.get(i).copied())
            .ok_or_else(|| io::Error::other("squashfs block was never written"))
    }

    /// A lookup table (fragments, ids): its metadata blocks, then the index of their absolute
    /// positions; returns the index's position (what the superblock points at).
    fn table(&mut self, entries: &[u8], compressor: &mut BlockCompressor) -> io::Result<u64> {
        let start = self.pos;
        let md = metadata_blocks(entries, compressor)?;
        self.put(&md.bytes)?;
        let index = self.pos;
        for rel in md.block_starts {
            self.put(&(start + u64::from(rel)).to_le_bytes())?;
        }
        Ok(index)
    }
}

/// A file's data as written: its blocks (by pool id, `None` for a sparse block) and fragment.
struct FileData {
    size: u64,
    blocks: Vec<Option<u64>>,
    /// The pool id the file's blocks start at (where they would be if all were sparse).
    first_id: u64,
    fragment: Option<(u32, u32)>,
    sparse_bytes: u64,
}

#[derive(Default)]
struct Fragments {
    current: Vec<u8>,
    /// Pool ids of the fragment blocks, by fragment index.
    blocks: Vec<u64>,
}

impl Fragments {
    /// Packs a tail; returns (fragment index, offset).
    fn add<W: Write>(
        &mut self,
        tail: &[u8],
        pool: &mut Pool,
        sink: &mut Sink<'_, W>,
    ) -> io::Result<(u32, u32)> {
        if self.current.len() + tail.len() > BLOCK_SIZE as usize {
            self.flush(pool, sink)?;
        }
        let index = u32::try_from(self.blocks.len()).map_err(|_| io::Error::other("too many fragments"))?;
        let offset = self.current.len() as u32;
        self.current.extend_from_slice(tail);
        Ok((index, offset))
    }

    fn flush<W: Write>(&mut self, pool: &mut Pool, sink: &mut Sink<'_, W>) -> io::Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.current, Vec::with_capacity(BLOCK_SIZE as usize));
        let id = pool.submit(data, &mut |b| sink.accept(b))?;
        self.blocks.push(id);
        Ok(())
    }
}

/// Writes the data of every file under `dir` (children in name order, directories where they
/// stand: the order [`Tables::dir`] visits them in).
fn write_data<W: Write>(
    dir: &Node,
    pool: &mut Pool,
    sink: &mut Sink<'_, W>,
    files: &mut Vec<FileData>,
    fragments: &mut Fragments,
) -> io::Result<()> {
    let Kind::Dir(children) = &dir.kind else {
        return Ok(());
    };
    for child in children.values() {
        match &child.kind {
            Kind::Dir(_) => write_data(child, pool, sink, files, fragments)?,
            Kind::File(content) => files.push(write_file(content, pool, sink, fragments)?),
            Kind::Symlink(_) => {}
        }
    }
    Ok(())
}

fn write_file<W: Write>(
    content: &Content,
    pool: &mut Pool,
    sink: &mut Sink<'_, W>,
    fragments: &mut Fragments,
) -> io::Result<FileData> {
    let size = content.size();
    let block = BLOCK_SIZE as usize;
    let mut data = FileData {
        size,
        blocks: Vec::new(),
        first_id: 0,
        fragment: None,
        sparse_bytes: 0,
    };
    let mut reader = content.open()?;
    if size == 0 {
        return Ok(data);
    }
    if size < u64::from(BLOCK_SIZE) {
        let mut tail = Vec::with_capacity(block);
        reader.read_to_end(&mut tail)?;
        data.fragment = Some(fragments.add(&tail, pool, sink)?);
        return Ok(data);
    }
    // A block queued ahead of this file's first one may still be in flight; ids are what count.
    let mut remaining = size;
    let mut first = true;
    while remaining > 0 {
        let want = usize::try_from(remaining.min(u64::from(BLOCK_SIZE))).unwrap_or(block);
        let mut buf = vec![0u8; want];
        reader.read_exact(&mut buf)?;
        remaining -= want as u64;
        if buf.iter().all(|b| *b == 0) {
            data.blocks.push(None);
            data.sparse_bytes += want as u64;
            continue;
        }
        let id = pool.submit(buf, &mut |b| sink.accept(b))?;
        if first {
            data.first_id = id;
            first = false;
        }
        data.blocks.push(Some(id));
    }
    if first {
        // Only sparse blocks: point at where the next block will be.
        data.first_id = u64::MAX;
    }
    // Nothing more may follow: the content must end here.
    if reader.read(&mut [0u8; 1])? != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file grew while it was read",
        ));
    }
    Ok(data)
}

/// Uncompressed metadata being cut into 8 KiB blocks.
#[derive(Default)]
struct Metadata {
    pending: Vec<u8>,
    /// Blocks done so far (compressed, with their 2-byte headers).
    done: Vec<u8>,
    block_starts: Vec<u32>,
    /// Uncompressed bytes taken so far.
    taken: u64,
}

struct MetadataBlocks {
    bytes: Vec<u8>,
    /// Start of each block, relative to the first.
    block_starts: Vec<u32>,
}

impl Metadata {
    /// (start of the current block relative to the table, offset in it): a metadata reference.
    fn position(&self) -> (u32, u16) {
        (self.done.len() as u32, self.pending.len() as u16)
    }

    fn written(&self) -> u64 {
        self.taken
    }

    /// Appends bytes; call [`Metadata::flush_full`] after (kept apart so `put` cannot fail).
    fn put(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        self.taken += bytes.len() as u64;
    }

    fn flush_full(&mut self, compressor: &mut BlockCompressor) -> io::Result<()> {
        while self.pending.len() >= METADATA_SIZE {
            let rest = self.pending.split_off(METADATA_SIZE);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.emit(&chunk, compressor)?;
        }
        Ok(())
    }

    fn emit(&mut self, chunk: &[u8], compressor: &mut BlockCompressor) -> io::Result<()> {
        self.block_starts.push(self.done.len() as u32);
        match compressor.compress(chunk)? {
            Some(packed) => {
                self.done.extend_from_slice(&(packed.len() as u16).to_le_bytes());
                self.done.extend_from_slice(&packed);
            }
            None => {
                self.done
                    .extend_from_slice(&((chunk.len() as u16) | METADATA_UNCOMPRESSED).to_le_bytes());
                self.done.extend_from_slice(chunk);
            }
        }
        Ok(())
    }

    fn finish(mut self, compressor: &mut BlockCompressor) -> io::Result<MetadataBlocks> {
        self.flush_full(compressor)?;
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.emit(&chunk, compressor)?;
        }
        Ok(MetadataBlocks {
            bytes: self.done,
            block_starts: self.block_starts,
        })
    }
}

fn metadata_blocks(bytes: &[u8], compressor: &mut BlockCompressor) -> io::Result<MetadataBlocks> {
    let mut md = Metadata::default();
    md.put(bytes);
    md.finish(compressor)
}

/// A written inode, as its parent's directory entry needs it.
struct Entry {
    /// `(metadata block start << 16) | offset` in the inode table.
    inode_ref: u64,
    block: u32,
    offset: u16,
    ino: u32,
    kind: u16,
}

struct Tables<'b, I: Iterator<Item = FileData>> {
    inodes: Metadata,
    dirs: Metadata,
    xattr_sets: Vec<Vec<(String, Vec<u8>)>>,
    xattr_index: HashMap<Vec<(String, Vec<u8>)>, u32>,
    mtime: u32,
    next_ino: u32,
    files: I,
    blocks: &'b [(u64, u32)],
    data_end: u64,
}

/// Inodes in the subtree of `node`, itself included.
fn count(node: &Node) -> u32 {
    match &node.kind {
        Kind::Dir(children) => 1 + children.values().map(count).sum::<u32>(),
        _ => 1,
    }
}

impl<I: Iterator<Item = FileData>> Tables<'_, I> {
    fn xattr(&mut self, node: &Node) -> Option<u32> {
        if node.xattrs.is_empty() {
            return None;
        }
        let mut set = node.xattrs.clone();
        set.sort();
        let next = self.xattr_sets.len() as u32;
        let index = *self.xattr_index.entry(set.clone()).or_insert(next);
        if index == next {
            self.xattr_sets.push(set);
        }
        Some(index)
    }

    fn header(&mut self, kind: u16, mode: u32, ino: u32) {
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(&kind.to_le_bytes());
        h.extend_from_slice(&((mode & 0o7777) as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&self.mtime.to_le_bytes());
        h.extend_from_slice(&ino.to_le_bytes());
        self.inodes.put(&h);
    }

    fn start_inode(&mut self) -> (u64, u32, u16, u32) {
        let (block, offset) = self.inodes.position();
        let ino = self.next_ino;
        self.next_ino += 1;
        ((u64::from(block) << 16) | u64::from(offset), block, offset, ino)
    }

    /// Writes the subtree of the directory `dir` (children first) and returns its entry.
    fn dir(&mut self, dir: &Node, parent_ino: u32, compressor: &mut BlockCompressor) -> io::Result<Entry> {
        let Kind::Dir(children) = &dir.kind else {
            return Err(io::Error::other("not a directory"));
        };
        // This directory's number comes after all of its subtree's (post-order numbering).
        let own_ino = self.next_ino + count(dir) - 1;
        let mut entries = Vec::with_capacity(children.len());
        let mut subdirs = 0u32;
        for (name, child) in children {
            if name.len() > MAX_NAME || name.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "file name {:?} is not valid in squashfs",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            let entry = match &child.kind {
                Kind::Dir(_) => {
                    subdirs += 1;
                    self.dir(child, own_ino, compressor)?
                }
                Kind::File(_) => self.file(child, compressor)?,
                Kind::Symlink(target) => self.symlink(child, target, compressor)?,
            };
            entries.push((name, entry));
        }

        // The listing, grouped under headers (same inode block, at most 256, deltas in i16).
        let (dir_block, dir_offset) = self.dirs.position();
        let listing_start = self.dirs.written();
        let mut i = 0;
        while i < entries.len() {
            let base = &entries[i].1;
            let mut j = i + 1;
            while j < entries.len()
                && j - i < 256
                && entries[j].1.block == base.block
                && i64::from(entries[j].1.ino) - i64::from(base.ino) <= i64::from(i16::MAX)
                && i64::from(entries[j].1.ino) - i64::from(base.ino) >= i64::from(i16::MIN)
            {
                j += 1;
            }
            let mut h = Vec::with_capacity(12);
            h.extend_from_slice(&((j - i - 1) as u32).to_le_bytes());
            h.extend_from_slice(&base.block.to_le_bytes());
            h.extend_from_slice(&base.ino.to_le_bytes());
            self.dirs.put(&h);
            for (name, e) in &entries[i..j] {
                let mut d = Vec::with_capacity(8 + name.len());
                d.extend_from_slice(&e.offset.to_le_bytes());
                d.extend_from_slice(&((i64::from(e.ino) - i64::from(base.ino)) as i16).to_le_bytes());
                d.extend_from_slice(&e.kind.to_le_bytes());
                d.extend_from_slice(&((name.len() - 1) as u16).to_le_bytes());
                d.extend_from_slice(name);
                self.dirs.put(&d);
            }
            self.dirs.flush_full(compressor)?;
            i = j;
        }
        let file_size = self.dirs.written() - listing_start + 3;

        let xattr = self.xattr(dir);
        let (inode_ref, block, offset, ino) = self.start_inode();
        debug_assert_eq!(ino, own_ino);
        let nlink = 2 + subdirs;
        if xattr.is_some() || file_size > u64::from(u16::MAX) {
            self.header(EXT_DIR, dir.mode, ino);
            let mut b = Vec::with_capacity(24);
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(
                &u32::try_from(file_size)
                    .map_err(|_| io::Error::other("directory too large"))?
                    .to_le_bytes(),
            );
            b.extend_from_slice(&dir_block.to_le_bytes());
            b.extend_from_slice(&parent_ino.to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes()); // no directory index
            b.extend_from_slice(&dir_offset.to_le_bytes());
            b.extend_from_slice(&xattr.unwrap_or(NO_XATTR).to_le_bytes());
            self.inodes.put(&b);
        } else {
            self.header(DIR, dir.mode, ino);
            let mut b = Vec::with_capacity(16);
            b.extend_from_slice(&dir_block.to_le_bytes());
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(&(file_size as u16).to_le_bytes());
            b.extend_from_slice(&dir_offset.to_le_bytes());
            b.extend_from_slice(&parent_ino.to_le_bytes());
            self.inodes.put(&b);
        }
        self.inodes.flush_full(compressor)?;
        Ok(Entry {
            inode_ref,
            block,
            offset,
            ino,
            kind: DIR,
        })
    }

    fn file(&mut self, node: &Node, compressor: &mut BlockCompressor) -> io::Result<Entry> {
        let data = self
            .files
            .next()
            .ok_or_else(|| io::Error::other("file data out of step with the tree"))?;
        let start = if data.first_id == u64::MAX || data.blocks.is_empty() {
            self.data_end
        } else {
            usize::try_from(data.first_id)
                .ok()
                .and_then(|i| self.blocks.get(i))
                .map(|b| b.0)
                .ok_or_else(|| io::Error::other("squashfs block was never written"))?
        };
        let mut sizes = Vec::with_capacity(data.blocks.len() * 4);
        for block in &data.blocks {
            let word = match block {
                None => 0,
                Some(id) => usize::try_from(*id)
                    .ok()
                    .and_then(|i| self.blocks.get(i))
                    .map(|b| b.1)
                    .ok_or_else(|| io::Error::other("squashfs block was never written"))?,
            };
            sizes.extend_from_slice(&word.to_le_bytes());
        }
        let (fragment, frag_offset) = data.fragment.unwrap_or((NO_FRAGMENT, 0));
        let xattr = self.xattr(node);
        let (inode_ref, block, offset, ino) = self.start_inode();
        let extended = xattr.is_some() || start > u64::from(u32::MAX) || data.size > u64::from(u32::MAX);
        if extended {
            self.header(EXT_FILE, node.mode, ino);
            let mut b = Vec::with_capacity(40);
            b.extend_from_slice(&start.to_le_bytes());
            b.extend_from_slice(&data.size.to_le_bytes());
            b.extend_from_slice(&data.sparse_bytes.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&fragment.to_le_bytes());
            b.extend_from_slice(&frag_offset.to_le_bytes());
            b.extend_from_slice(&xattr.unwrap_or(NO_XATTR).to_le_bytes());
            self.inodes.put(&b);
        } else {
            self.header(FILE, node.mode, ino);
            let mut b = Vec::with_capacity(16);
            b.extend_from_slice(&(start as u32).to_le_bytes());
            b.extend_from_slice(&fragment.to_le_bytes());
            b.extend_from_slice(&frag_offset.to_le_bytes());
            b.extend_from_slice(&(data.size as u32).to_le_bytes());
            self.inodes.put(&b);
        }
        self.inodes.put(&sizes);
        self.inodes.flush_full(compressor)?;
        Ok(Entry {
            inode_ref,
            block,
            offset,
            ino,
            kind: FILE,
        })
    }

    fn symlink(&mut self, node: &Node, target: &[u8], compressor: &mut BlockCompressor) -> io::Result<Entry> {
        let xattr = self.xattr(node);
        let (inode_ref, block, offset, ino) = self.start_inode();
        self.header(if xattr.is_some() { EXT_SYMLINK } else { SYMLINK }, 0o777, ino);
        let mut b = Vec::with_capacity(8 + target.len() + 4);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(
            &u32::try_from(target.len())
                .map_err(|_| too_long("symlink"))?
                .to_le_bytes(),
        );
        b.extend_from_slice(target);
        if let Some(x) = xattr {
            b.extend_from_slice(&x.to_le_bytes());
        }
        self.inodes.put(&b);
        self.inodes.flush_full(compressor)?;
        Ok(Entry {
            inode_ref,
            block,
            offset,
            ino,
            kind: SYMLINK,
        })
    }
}

/// squashfs' xattr type (prefix index) and the name without the prefix.
fn xattr_prefix(name: &str) -> io::Result<(u16, &str)> {
    for (kind, prefix) in [(0u16, "user."), (1, "trusted."), (2, "security.")] {
        if let Some(short) = name.strip_prefix(prefix) {
            return Ok((kind, short));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("extended attribute {name:?} has no prefix squashfs can store"),
    ))
}

fn too_long(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}: too long for squashfs"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Cursor;

    use super::*;

    fn image(root: &Node, codec: BlockCodec) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        write(
            root,
            &mut out,
            &Options {
                codec,
                mtime: 1,
                threads: 2,
            },
        )
        .unwrap();
        out.into_inner()
    }

    fn sample() -> Node {
        let mut root = Node::dir(0o755);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        root.insert(
            "usr/local/bin/big",
            Node::file(0o755, Content::memory(big)),
            0o755,
        );
        let mut sparse = vec![0u8; 3 * BLOCK_SIZE as usize];
        sparse[BLOCK_SIZE as usize + 7] = 1;
        root.insert(
            "usr/local/sparse",
            Node::file(0o644, Content::memory(sparse)),
            0o755,
        );
        root.insert(
            "usr/local/small",
            Node::file(0o600, Content::memory("small")),
            0o755,
        );
        root.insert("usr/local/empty", Node::file(0o644, Content::memory("")), 0o755);
        root.insert("usr/local/link", Node::symlink("bin/big"), 0o755);
        let mut labelled = Node::file(0o400, Content::memory("config"));
        labelled.xattrs.push((
            "security.selinux".into(),
            b"system_u:object_r:system_state_t:s0".to_vec(),
        ));
        root.insert("usr/local/etc/talos/config.yaml", labelled, 0o755);
        for i in 0..600 {
            root.insert(
                &format!("usr/local/many/f{i:04}"),
                Node::file(0o644, Content::memory(format!("file {i}\n"))),
                0o755,
            );
        }
        root
    }

    #[test]
    fn backhand_reads_it_back() {
        let root = sample();
        for codec in [
            BlockCodec::Zstd { level: 18 },
            BlockCodec::Xz {
                dict_size: BLOCK_SIZE,
            },
        ] {
            let bytes = image(&root, codec);
            assert_eq!(bytes.len() % 4096, 0);
            assert_eq!(bytes, image(&root, codec), "deterministic");
            let fs = backhand::FilesystemReader::from_reader(Cursor::new(bytes)).unwrap();
            let mut seen = 0;
            for node in fs.files() {
                let path = node.fullpath.to_string_lossy().trim_start_matches('/').to_owned();
                if let backhand::InnerNode::File(file) = &node.inner {
                    let mut got = Vec::new();
                    fs.file(file).reader().read_to_end(&mut got).unwrap();
                    let Kind::File(content) = &root.get(&path).unwrap().kind else {
                        panic!("{path} is not a file")
                    };
                    let mut want = Vec::new();
                    content.open().unwrap().read_to_end(&mut want).unwrap();
                    assert_eq!(got, want, "{path}");
                    seen += 1;
                }
            }
            assert_eq!(seen, 605);
        }
    }
}
