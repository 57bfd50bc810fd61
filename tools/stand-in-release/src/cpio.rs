//! A newc (`070701`) cpio writer: the archive format of the Talos initramfs and the only one the
//! kernel unpacks.
//!
//! Written by hand because it is ~50 lines and we need full control for reproducibility: inode
//! numbers count up from 1 in entry order, owners are 0:0, every entry has the same mtime (what
//! `cpio --reproducible -R +0:+0` over a normalised tree gives). Header and name are padded to 4
//! bytes, data to 4 bytes, and the archive ends with the `TRAILER!!!` entry, padded to 4 bytes
//! (GNU cpio pads to 512; the kernel needs only the 4-byte alignment).

use crate::tree::{Node, Tree};
use crate::SOURCE_DATE_EPOCH;

const MAGIC: &[u8] = b"070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// The archive of `tree`, entries in tree order (byte order of paths).
pub fn newc(tree: &Tree) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(tree.file_bytes()).unwrap_or(0) + 4096);
    for (ino, (path, entry)) in (1u32..).zip(tree.iter()) {
        let (kind, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &entry.node {
            Node::Dir => (S_IFDIR, 2, &[], (0, 0)),
            Node::File(bytes) => (S_IFREG, 1, bytes, (0, 0)),
            Node::Symlink(target) => (S_IFLNK, 1, target.as_bytes(), (0, 0)),
            Node::CharDevice { major, minor } => (S_IFCHR, 1, &[], (*major, *minor)),
        };
        let header = Header {
            ino,
            mode: kind | entry.mode,
            nlink,
            mtime: SOURCE_DATE_EPOCH,
            size: data.len(),
            rdev,
        };
        push_entry(&mut out, &header, path, data);
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        nlink: 1,
        mtime: 0,
        size: 0,
        rdev: (0, 0),
    };
    push_entry(&mut out, &trailer, TRAILER, &[]);
    out
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    rdev: (u32, u32),
}

fn push_entry(out: &mut Vec<u8>, h: &Header, name: &str, data: &[u8]) {
    out.extend_from_slice(MAGIC);
    let size = u32::try_from(h.size).expect("cpio newc members are below 4 GiB");
    let namesize = u32::try_from(name.len() + 1).expect("short cpio member names");
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    for field in [
        h.ino, h.mode, 0, 0, h.nlink, h.mtime, size, 0, 0, h.rdev.0, h.rdev.1, namesize, 0,
    ] {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_newc_with_alignment_and_trailer() {
        let mut tree = Tree::new();
        tree.exec("init", "#!/bin/sh\n");
        let archive = newc(&tree);
        assert!(archive.starts_with(b"070701"));
        assert_eq!(archive.len() % 4, 0);
        // header (110) + "init\0" (5) padded to 116, then 10 data bytes padded to 12.
        assert_eq!(&archive[110..115], b"init\0");
        assert_eq!(&archive[116..126], b"#!/bin/sh\n");
        assert_eq!(&archive[128..134], b"070701");
        let trailer_name = &archive[128 + 110..128 + 110 + 10];
        assert_eq!(trailer_name, b"TRAILER!!!");
        // mode field of the first entry: regular file 0755
        assert_eq!(&archive[14..22], b"000081ED");
    }
}
