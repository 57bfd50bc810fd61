//! The deterministic ustar pieces the layers and the tarball share: block framing, entry modes
//! and headers with owner 0:0 and mtime 0.

use std::io::{self, Read, Write};

/// The modes of the artifacts layer's and the tarball's entries.
pub(super) const FILE_MODE: u32 = 0o644;
pub(super) const DIR_MODE: u32 = 0o755;
/// The tar block size.
pub(super) const BLOCK: usize = 512;

/// Zero bytes after `size` bytes of data up to the next tar block.
pub(super) fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// A ustar header without a name or mode: `kind`, `size`, owner 0:0, mtime 0, device 0:0.
fn unnamed_header(kind: tar::EntryType, size: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header.set_device_major(0)?;
    header.set_device_minor(0)?;
    Ok(header)
}

/// A deterministic ustar header: the name as given (a trailing `/` kept for directories), owner
/// 0:0, mtime 0, mode 0644 for files and 0755 for directories.
pub(super) fn tar_header(path: &str, kind: tar::EntryType, size: u64) -> io::Result<tar::Header> {
    let mut header = unnamed_header(kind, size)?;
    let name = &mut header.as_old_mut().name;
    // Every name here is short; the NUL terminator is the zero-filled rest.
    if path.len() >= name.len() {
        return Err(io::Error::other(format!("tar path {path:?} is too long")));
    }
    name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_mode(if kind == tar::EntryType::Directory {
        DIR_MODE
    } else {
        FILE_MODE
    });
    header.set_cksum();
    Ok(header)
}

/// The header of a layer entry: [`tar_header`]'s for names that fit the ustar name field (the
/// bytes of the layers built before longer names were possible stay the same), else a header
/// whose name [`append`] sets.
pub(super) fn entry_header(
    path: &str,
    kind: tar::EntryType,
    size: u64,
    mode: u32,
) -> io::Result<tar::Header> {
    let mut header = if path.len() < 100 {
        tar_header(path, kind, size)?
    } else {
        unnamed_header(kind, size)?
    };
    header.set_mode(mode);
    header.set_cksum();
    Ok(header)
}

/// Appends an entry: as is when its name is in the header already, else through the `tar`
/// crate's path handling (ustar prefix, or a GNU long-name entry).
pub(super) fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    mut header: tar::Header,
    path: &str,
    data: impl Read,
) -> io::Result<()> {
    if path.len() < 100 {
        tar.append(&header, data)
    } else {
        tar.append_data(&mut header, path, data)
    }
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tar_headers_are_fixed() {
        let h = tar_header("blobs/", tar::EntryType::Directory, 0).unwrap();
        assert_eq!(h.path_bytes().as_ref(), b"blobs/");
        assert_eq!(h.mode().unwrap(), 0o755);
        let h = tar_header("index.json", tar::EntryType::Regular, 1234).unwrap();
        assert_eq!(
            (h.mode().unwrap(), h.size().unwrap(), h.mtime().unwrap()),
            (0o644, 1234, 0)
        );
        assert!(tar_header(&"x".repeat(100), tar::EntryType::Regular, 0).is_err());
        assert_eq!(
            (padding(0), padding(1), padding(512), padding(513)),
            (0, 511, 0, 511)
        );
    }
}
