//! Squashfs images (the Talos `rootfs.sqsh`), written with the pure-Rust `backhand` crate so the
//! generator needs no `mksquashfs` on the host.
//!
//! Like `mksquashfs -all-root` over a normalised tree: every inode is owned by 0:0 and carries the
//! fixed release timestamp, and the superblock time is that timestamp too, so the same tree
//! always gives the same bytes. Compression follows the Talos gate: zstd since 1.8, xz before.

use std::io::Cursor;

use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use crate::tree::{Node, Tree};
use crate::{Error, SOURCE_DATE_EPOCH};

/// A squashfs 4.0 image of `tree`, zstd- or xz-compressed.
pub fn build(tree: &Tree, zstd: bool) -> Result<Vec<u8>, Error> {
    let fail = |e: backhand::BackhandError| Error::build("squashfs", e);
    let mut fs = FilesystemWriter::default();
    fs.set_time(SOURCE_DATE_EPOCH);
    fs.set_root_mode(0o755);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    let compressor = if zstd { Compressor::Zstd } else { Compressor::Xz };
    fs.set_compressor(FilesystemCompressor::new(compressor, None).map_err(fail)?);

    for (path, entry) in tree.iter() {
        let mode = u16::try_from(entry.mode).map_err(|_| Error::build("squashfs", "mode above 0o7777"))?;
        let header = NodeHeader::new(mode, 0, 0, SOURCE_DATE_EPOCH);
        match &entry.node {
            Node::Dir => fs.push_dir(path, header).map_err(fail)?,
            Node::File(data) => fs
                .push_file(Cursor::new(data.clone()), path, header)
                .map_err(fail)?,
            Node::Symlink(target) => fs.push_symlink(target.as_str(), path, header).map_err(fail)?,
            Node::CharDevice { major, minor } => {
                let device = (major << 8) | (minor & 0xff);
                fs.push_char_device(device, path, header).map_err(fail)?
            }
        }
    }

    let mut out = Cursor::new(Vec::new());
    fs.write(&mut out).map_err(fail)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squashfs_is_deterministic_and_has_the_magic() {
        let mut tree = Tree::new();
        tree.file("usr/lib/modules/6.1.0-stand-in/modules.order", "kernel/x.ko\n");
        for zstd in [true, false] {
            let image = build(&tree, zstd).expect("squashfs");
            assert_eq!(&image[..4], b"hsqs");
            assert_eq!(image, build(&tree, zstd).expect("squashfs"));
        }
    }
}
