//! newc (`070701`) cpio, the archive format the kernel unpacks from an initramfs.
//!
//! The writer gives what `cpio -H newc --create --reproducible -R +0:+0` gives over a tree,
//! minus the host's timestamps: inode numbers count up from 1, device numbers are 0, owners are
//! 0:0 and every entry carries the same mtime. Header plus name and the data are padded to 4
//! bytes and the archive ends with `TRAILER!!!`, padded to 4 bytes (GNU cpio pads to 512; the
//! kernel needs only the 4-byte alignment). The reader finds one member in a stream.

use std::io::{self, Read, Write};

use crate::tree::{Content, Kind, Node};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
pub const TRAILER: &[u8] = b"TRAILER!!!";

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

/// Streams a newc archive into `W`.
#[derive(Debug)]
pub struct NewcWriter<W: Write> {
    out: W,
    next_ino: u32,
    mtime: u32,
    written: u64,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W, mtime: u32) -> Self {
        NewcWriter {
            out,
            next_ino: 1,
            mtime,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The underlying writer (for switching compression settings between members).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn dir(&mut self, name: &[u8], mode: u32, nlink: u32) -> io::Result<()> {
        let ino = self.ino();
        self.header(name, ino, S_IFDIR | (mode & 0o7777), nlink, 0)?;
        Ok(())
    }

    pub fn symlink(&mut self, name: &[u8], mode: u32, target: &[u8]) -> io::Result<()> {
        let ino = self.ino();
        self.header(name, ino, S_IFLNK | (mode & 0o7777), 1, target.len() as u64)?;
        self.put(target)?;
        self.pad()
    }

    /// A regular file whose bytes `data` yields, exactly `size` of them.
    pub fn file(&mut self, name: &[u8], mode: u32, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let ino = self.ino();
        self.header(name, ino, S_IFREG | (mode & 0o7777), 1, size)?;
        let copied = io::copy(&mut data.take(size), &mut Counting(self))?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: {copied} bytes instead of {size}",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
        self.pad()
    }

    /// A regular file from a [`Content`].
    pub fn content(&mut self, name: &[u8], mode: u32, content: &Content) -> io::Result<()> {
        let mut reader = content.open()?;
        self.file(name, mode, content.size(), &mut reader)
    }

    /// Every node under `root` in pre-order (see [`Node::walk`]), names prefixed with `prefix`
    /// (empty, or ending with `/`).
    pub fn tree(&mut self, prefix: &[u8], root: &Node) -> io::Result<()> {
        root.walk(&mut |path, node| {
            let mut name = prefix.to_vec();
            name.extend_from_slice(path);
            self.node(&name, node)
        })
    }

    /// One node (not its children).
    pub fn node(&mut self, name: &[u8], node: &Node) -> io::Result<()> {
        match &node.kind {
            Kind::Dir(children) => {
                let subdirs = children
                    .values()
                    .filter(|c| matches!(c.kind, Kind::Dir(_)))
                    .count();
                self.dir(
                    name,
                    node.mode,
                    2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2),
                )
            }
            Kind::File(content) => self.content(name, node.mode, content),
            Kind::Symlink(target) => self.symlink(name, node.mode, target),
        }
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, 1, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn ino(&mut self) -> u32 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    fn header(&mut self, name: &[u8], ino: u32, mode: u32, nlink: u32, size: u64) -> io::Result<()> {
        let size = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is too large for a newc archive (4 GiB at most)",
                    String::from_utf8_lossy(name)
                ),
            )
        })?;
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio member name too long"))?;
        let mtime = if name == TRAILER { 0 } else { self.mtime };
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        header.extend_from_slice(MAGIC);
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        for field in [ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, namesize, 0] {
            header.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        header.extend_from_slice(name);
        header.push(0);
        self.put(&header)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

/// Counts what is copied through the archive writer.
struct Counting<'a, W: Write>(&'a mut NewcWriter<W>);

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.out.write(buf)?;
        self.0.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.out.flush()
    }
}

/// One member header of a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Vec<u8>,
    pub mode: u32,
    pub size: u64,
}

/// Reads members of a newc archive from `input` in order, calling `visit` with each header and
/// a reader of its data (what `visit` leaves unread is skipped). Stops at the trailer, or when
/// `visit` answers `false`. Returns whether the trailer was reached.
pub fn read_members(
    input: &mut dyn Read,
    visit: &mut dyn FnMut(&Header, &mut dyn Read) -> io::Result<bool>,
) -> io::Result<bool> {
    let mut pos: u64 = 0;
    loop {
        let mut raw = [0u8; HEADER_LEN];
        input.read_exact(&mut raw)?;
        pos += HEADER_LEN as u64;
        if &raw[..6] != MAGIC && &raw[..6] != b"070702" {
            return Err(invalid("not a newc cpio archive"));
        }
        let field = |i: usize| -> io::Result<u32> {
            let text =
                std::str::from_utf8(&raw[6 + 8 * i..14 + 8 * i]).map_err(|_| invalid("bad cpio header"))?;
            u32::from_str_radix(text, 16).map_err(|_| invalid("bad cpio header"))
        };
        let mode = field(1)?;
        let size = u64::from(field(6)?);
        let namesize = field(11)? as usize;
        if namesize == 0 || namesize > 4096 {
            return Err(invalid("bad cpio member name size"));
        }
        let mut name = vec![0u8; namesize];
        input.read_exact(&mut name)?;
        pos += namesize as u64;
        name.pop();
        skip(input, pad4(pos))?;
        pos += pad4(pos);
        if name == TRAILER {
            return Ok(true);
        }
        let header = Header { name, mode, size };
        let mut data = input.take(size);
        let go_on = visit(&header, &mut data)?;
        if !go_on {
            return Ok(false);
        }
        io::copy(&mut data, &mut io::sink())?;
        if data.limit() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated cpio member",
            ));
        }
        pos += size;
        skip(input, pad4(pos))?;
        pos += pad4(pos);
    }
}

fn pad4(pos: u64) -> u64 {
    (4 - pos % 4) % 4
}

fn skip(input: &mut dyn Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut input.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated cpio archive",
        ));
    }
    Ok(())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn layout_and_round_trip() {
        let mut w = NewcWriter::new(Vec::new(), 7);
        w.dir(b"kernel", 0o755, 3).unwrap();
        w.file(b"kernel/a", 0o644, 3, &mut &b"abc"[..]).unwrap();
        w.symlink(b"l", 0o777, b"kernel/a").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        // ino 1, dir 0755
        assert_eq!(&out[6..22], b"00000001000041ED");
        let mut seen = Vec::new();
        let done = read_members(&mut &out[..], &mut |h, data| {
            let mut bytes = Vec::new();
            data.read_to_end(&mut bytes).unwrap();
            seen.push((String::from_utf8(h.name.clone()).unwrap(), h.mode, bytes));
            Ok(true)
        })
        .unwrap();
        assert!(done);
        assert_eq!(
            seen,
            [
                ("kernel".to_owned(), 0o40755, vec![]),
                ("kernel/a".to_owned(), 0o100644, b"abc".to_vec()),
                ("l".to_owned(), 0o120777, b"kernel/a".to_vec()),
            ]
        );
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = NewcWriter::new(Vec::new(), 0);
        assert!(w.file(b"x", 0o644, 4, &mut &b"abc"[..]).is_err());
    }
}
