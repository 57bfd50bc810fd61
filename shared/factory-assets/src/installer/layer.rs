//! The layers the installer builds (artifacts, overlay): a deterministic tar of their entries
//! (sorted by path, owner 0:0, mtime 0, fixed modes) through gzip (no name or mtime, OS 255),
//! with the blob's digest and size and the tar's diff ID measured in the same pass.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use factory_core::arch::Arch;
use factory_pipeline::AssembleError;

use super::hashing::Hashing;
use super::ustar::{append, entry_header, DIR_MODE, FILE_MODE};
use super::{InstallerLayer, LayerSource, OCI_LAYER_GZIP};
use crate::uki::io_error;

/// What writing a layer measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WrittenLayer {
    pub(super) digest: String,
    pub(super) size: u64,
    pub(super) diff_id: String,
}

impl WrittenLayer {
    /// The layer of an image, from its file in the scratch directory.
    pub(super) fn into_layer(self, path: PathBuf) -> InstallerLayer {
        InstallerLayer {
            media_type: OCI_LAYER_GZIP.to_owned(),
            digest: self.digest,
            size: self.size,
            diff_id: self.diff_id,
            source: LayerSource::Scratch(path),
        }
    }
}

/// Writes the artifacts layer to `dest` (blocking): `files` (name under `usr/install/<arch>/`,
/// local path) as a deterministic tar (see the module docs) through gzip, measuring the diff ID
/// and the blob's digest and size in the same pass.
pub(super) fn write_artifacts_layer(
    arch: Arch,
    files: &[(String, PathBuf)],
    dest: &Path,
) -> Result<WrittenLayer, AssembleError> {
    write_layer_file(artifacts_entries(arch, files), dest)
}

/// The artifacts layer into `out`: `(out, digest, size, diff ID)`.
#[cfg(test)]
fn write_layer<W: Write>(
    arch: Arch,
    files: &[(String, PathBuf)],
    out: W,
) -> Result<(W, String, u64, String), AssembleError> {
    write_entries(artifacts_entries(arch, files), out)
}

/// The entries of the artifacts layer: `files` under `usr/install/<arch>/` and their directories.
fn artifacts_entries(arch: Arch, files: &[(String, PathBuf)]) -> Vec<LayerEntry> {
    let dir = format!("usr/install/{arch}/");
    let mut entries: Vec<LayerEntry> = ["usr/", "usr/install/", dir.as_str()]
        .into_iter()
        .map(LayerEntry::dir)
        .collect();
    for (name, source) in files {
        entries.push(LayerEntry {
            path: format!("{dir}{name}"),
            data: EntryData::File {
                source: source.clone(),
                mode: FILE_MODE,
            },
        });
    }
    entries
}

/// One entry of a layer we build: a path (directories with a trailing `/`) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerEntry {
    pub path: String,
    pub data: EntryData,
}

/// What a [`LayerEntry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryData {
    /// A directory, mode 0755.
    Dir,
    /// A regular file copied from `source`, with `mode` (0644 or 0755).
    File { source: PathBuf, mode: u32 },
    /// A regular file with these bytes, mode 0644.
    Bytes(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
}

impl LayerEntry {
    pub(crate) fn dir(path: &str) -> LayerEntry {
        LayerEntry {
            path: path.to_owned(),
            data: EntryData::Dir,
        }
    }
}

/// Writes a layer (blocking) to `dest`: `entries` as [`write_entries`] does, measured.
pub(super) fn write_layer_file(entries: Vec<LayerEntry>, dest: &Path) -> Result<WrittenLayer, AssembleError> {
    let file = File::create(dest).map_err(io_error("creating", dest))?;
    let write = |e: io::Error| AssembleError::Retryable(format!("writing {}: {e}", dest.display()));
    let (file, digest, size, diff_id) = write_entries(entries, BufWriter::new(file))?;
    file.into_inner()
        .map_err(|e| write(e.into_error()))?
        .sync_all()
        .map_err(write)?;
    Ok(WrittenLayer {
        digest,
        size,
        diff_id,
    })
}

/// A deterministic tar of `entries` (sorted by path, so parents come first; owner 0:0, mtime 0)
/// through gzip (no name or mtime, OS 255) into `out`: `(out, digest, size, diff ID)`, measured
/// in the same pass. Paths of 100 bytes or more use the ustar prefix or a GNU long name.
fn write_entries<W: Write>(
    mut entries: Vec<LayerEntry>,
    out: W,
) -> Result<(W, String, u64, String), AssembleError> {
    let write = |e: io::Error| AssembleError::Retryable(format!("writing the layer: {e}"));
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Hashing::new(out), flate2::Compression::default());
    let mut tar = tar::Builder::new(Hashing::new(gzip));
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(twice) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(AssembleError::User(format!(
            "the layer would name {} twice",
            twice[0].path
        )));
    }
    for entry in entries {
        let path = entry.path.as_str();
        match entry.data {
            EntryData::Dir => {
                let header = entry_header(path, tar::EntryType::Directory, 0, DIR_MODE).map_err(write)?;
                append(&mut tar, header, path, io::empty()).map_err(write)?;
            }
            EntryData::Bytes(bytes) => {
                let header = entry_header(path, tar::EntryType::Regular, bytes.len() as u64, FILE_MODE)
                    .map_err(write)?;
                append(&mut tar, header, path, &bytes[..]).map_err(write)?;
            }
            EntryData::File { source, mode } => {
                let file = File::open(&source).map_err(io_error("opening", &source))?;
                let size = file.metadata().map_err(io_error("reading", &source))?.len();
                let header = entry_header(path, tar::EntryType::Regular, size, mode).map_err(write)?;
                let mut data = file.take(size);
                append(&mut tar, header, path, &mut data).map_err(write)?;
                if data.limit() != 0 {
                    return Err(AssembleError::Retryable(format!(
                        "{} shrank while it was archived",
                        source.display()
                    )));
                }
            }
            EntryData::Symlink(target) => {
                let mut header = entry_header(path, tar::EntryType::Symlink, 0, 0o777).map_err(write)?;
                if path.len() < 100 && target.len() < 100 {
                    header.set_link_name(&target).map_err(write)?;
                    header.set_cksum();
                    tar.append(&header, io::empty()).map_err(write)?;
                } else {
                    tar.append_link(&mut header, path, &target).map_err(write)?;
                }
            }
        }
    }
    let (gzip, diff_id, _) = tar.into_inner().map_err(write)?.finish();
    let (out, digest, size) = gzip.finish().map_err(write)?.finish();
    Ok((out, digest, size, diff_id))
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use factory_upstream::digest::sha256_digest;

    use super::*;
    use crate::installer::fixtures::scratch_files;

    #[test]
    fn the_artifacts_layer_is_deterministic_and_measured() {
        let (_dir, files) = scratch_files();
        let (a, digest, size, diff_id) = write_layer(Arch::Amd64, &files, Vec::new()).unwrap();
        let (b, ..) = write_layer(Arch::Amd64, &files, Vec::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(digest, sha256_digest(&a));
        assert_eq!(size, a.len() as u64);
        // gzip: no mtime, no name, OS 255.
        assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
        assert_eq!(a[9], 255);

        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(diff_id, sha256_digest(&tar_bytes));
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entries: Vec<(String, u32, u64, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(h.path_bytes().into_owned()).unwrap(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("usr/".to_owned(), 0o755, 0, 0, 0),
                ("usr/install/".to_owned(), 0o755, 0, 0, 0),
                ("usr/install/amd64/".to_owned(), 0o755, 0, 0, 0),
                ("usr/install/amd64/systemd-boot.efi".to_owned(), 0o644, 0, 0, 1000),
                ("usr/install/amd64/vmlinuz.efi".to_owned(), 0o644, 0, 0, 6),
            ]
        );
    }

    #[test]
    fn generic_layers_keep_modes_links_and_long_names() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("tool");
        std::fs::write(&source, b"#!/bin/sh\n").unwrap();
        let long = format!("overlay/artifacts/{}/dtb", "d".repeat(120));
        let entries = vec![
            LayerEntry {
                path: "overlay/installers/default".into(),
                data: EntryData::File {
                    source: source.clone(),
                    mode: 0o755,
                },
            },
            LayerEntry::dir("overlay/"),
            LayerEntry {
                path: long.clone(),
                data: EntryData::Bytes(b"dtb".to_vec()),
            },
            LayerEntry {
                path: "overlay/link".into(),
                data: EntryData::Symlink("artifacts".into()),
            },
        ];
        let (gz, ..) = write_entries(entries.clone(), Vec::new()).unwrap();
        assert_eq!(gz, write_entries(entries.clone(), Vec::new()).unwrap().0);
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let found: Vec<(String, u32, Option<String>, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                    link,
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("overlay/".to_owned(), 0o755, None, 0),
                (long.clone(), 0o644, None, 0),
                ("overlay/installers/default".to_owned(), 0o755, None, 0),
                ("overlay/link".to_owned(), 0o777, Some("artifacts".to_owned()), 0),
            ]
        );
        let mut twice = entries;
        twice.push(LayerEntry::dir("overlay/"));
        assert!(write_entries(twice, Vec::new()).is_err());
    }
}
