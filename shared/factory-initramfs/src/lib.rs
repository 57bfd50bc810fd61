//! The customised Talos initramfs (issue 5): the release's `initramfs.xz` with a schematic's
//! system extensions appended exactly as the Talos imager's `Builder.Build` does
//! (talos-imager §4.4, §5.2), as a pure library (no HTTP, no object store).
//!
//! ```text
//! [raw newc cpio: kernel/x86/microcode/{AuthenticAMD,GenuineIntel}.bin]   only with microcode
//! [the release initramfs, byte for byte]
//! [zstd (≥ 1.8) or xz/CRC32 newc cpio: 0.sqsh 1.sqsh … extensions.yaml <firmware> modules.dep.sqsh]
//! ```
//!
//! Per extension (official ones in schematic order, then the `schematic` virtual extension, then
//! `embedded-config` for ≥ 1.12; numbered `0, 1, …` and taken in *string* order of those numbers,
//! as the imager lists its extension directories): the manifest's compatibility constraint is
//! checked against the Talos version ([`Error::Incompatible`], a user error); Intel and AMD
//! microcode blobs are concatenated into the early-microcode archive; the firmware directory
//! (`/usr/lib/firmware`, `/lib/firmware` before 1.10) moves into the appended archive; the rest of
//! `rootfs/` becomes `<n>.sqsh`. With kernel modules, a `modules.dep` layer made by `depmod` comes
//! last ([`modules`]). Entry owners are 0:0 and every timestamp is [`Options::mtime`], so the same
//! inputs give the same bytes.
//!
//! Blocking and CPU-bound (all cores): from async code run [`build`] in
//! `tokio::task::spawn_blocking`, writing into a `tokio_util::io::SyncIoBridge` (or a file).
//! Memory stays bounded: file contents are streamed from the extracted extension directories,
//! squashfs layers are written to a scratch directory and streamed from there.
//!
//! Compression is the imager's: squashfs layers zstd level 18 (≥ 1.8) or xz with a block-sized
//! dictionary, the appended archive `zstd -T0 -18` (with checksum) or `xz -C crc32 -0 -e -T 0`
//! ([`compress`]). `depmod` is kmod's, run as a program ([`modules`]).
//!
//! Differences from the Go imager, all invisible to a booting Talos: squashfs layers come from
//! our own writer ([`squashfs`]: no duplicate-file detection, no NFS export table); in the
//! appended zstd stream the `.sqsh` members are compressed with level 1's search parameters (they
//! are compressed already: 0.2 % lost) and jobs are 8 MiB so that firmware uses every core (1 %
//! lost); cpio members carry a fixed mtime and archives are padded to 4 bytes, not 512; firmware
//! symlinks that point nowhere are kept as links (the imager fails on them); extension files
//! carry no extended attributes besides the embedded configuration's SELinux label (the upstream
//! extractor keeps none).

pub mod compress;
pub mod constraint;
pub mod cpio;
mod error;
pub mod manifest;
pub mod modules;
pub mod squashfs;
pub mod tree;

mod build;

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use factory_core::schematic::Schematic;
use factory_core::version::TalosVersion;

pub use build::build;
pub use error::{Error, ErrorKind};
pub use manifest::Metadata;

/// Talos' `SOURCE_DATE_EPOCH`: the default timestamp of every entry.
pub const SOURCE_DATE_EPOCH: u32 = 1_559_424_892;

/// The release's initramfs (`usr/install/<arch>/initramfs.xz` of the imager image). Read twice
/// when an extension has kernel modules (once for `rootfs.sqsh`), hence a source rather than a
/// reader.
#[derive(Debug, Clone)]
pub enum Base {
    Path(PathBuf),
    Bytes(Arc<[u8]>),
}

impl Base {
    pub fn open(&self) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(match self {
            Base::Path(path) => Box::new(io::BufReader::new(File::open(path)?)),
            Base::Bytes(bytes) => Box::new(&bytes[..]),
        })
    }
}

/// One extension image, flattened into a directory holding `manifest.yaml` and `rootfs/` (what
/// `factory_upstream::Upstream::extract` writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionSource {
    pub dir: PathBuf,
    /// How messages name it until its manifest is read (e.g. the image reference).
    pub label: String,
}

impl ExtensionSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let label = dir.display().to_string();
        ExtensionSource { dir, label }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

/// The factory's `schematic` virtual extension (spec §6.5) and the schematic's embedded machine
/// configuration (the imager's `embedded-config` extension, ≥ 1.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchematicLayer {
    /// The schematic ID: the layer's version and the marker file's name.
    pub id: String,
    /// Canonical YAML, stored as `extraInfo` for Talos ≥ 1.7.
    pub canonical_yaml: String,
    /// `customization.embeddedMachineConfiguration`, empty when none.
    pub embedded_config: String,
    /// `metadata.author`: `Image Factory (<external URL>)`.
    pub author: String,
}

impl SchematicLayer {
    /// The layer for `schematic`, served by the factory at `external_url`.
    pub fn new(schematic: &Schematic, external_url: &str) -> Self {
        let canonical_yaml = schematic.canonical_yaml();
        SchematicLayer {
            id: factory_core::schematic::SchematicId::of_canonical(&canonical_yaml)
                .as_str()
                .to_owned(),
            canonical_yaml,
            embedded_config: schematic.customization.embedded_machine_configuration.clone(),
            author: format!("Image Factory ({external_url})"),
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Request {
    /// The Talos version the initramfs is for (selects paths, compressors, virtual extensions).
    pub version: TalosVersion,
    /// The official extensions, in schematic order.
    pub extensions: Vec<ExtensionSource>,
    /// The schematic's virtual extension; the factory always has one.
    pub schematic: Option<SchematicLayer>,
}

/// How to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where squashfs layers and the modules work tree go (a fresh subdirectory, removed after).
    pub scratch_dir: PathBuf,
    /// kmod's `depmod`, run only for extensions with kernel modules.
    pub depmod: PathBuf,
    /// Compression threads; 0 for one per core.
    pub threads: usize,
    /// Timestamp of every cpio entry and squashfs inode.
    pub mtime: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scratch_dir: std::env::temp_dir(),
            depmod: PathBuf::from("depmod"),
            threads: 0,
            mtime: SOURCE_DATE_EPOCH,
        }
    }
}

/// One layer listed in `extensions.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The squashfs file name (`0.sqsh`, `modules.dep.sqsh`).
    pub image: String,
    pub metadata: Metadata,
    /// Size of the squashfs image.
    pub squashfs_bytes: u64,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Total bytes written.
    pub size: u64,
    /// Byte range of the leading uncompressed early-microcode archive, if any.
    pub microcode: Option<Range<u64>>,
    /// Byte range of the release's initramfs.
    pub base: Range<u64>,
    /// Byte range of the appended compressed archive.
    pub appended: Range<u64>,
    /// The layers, in `extensions.yaml` order.
    pub layers: Vec<Layer>,
    /// `extensions.yaml` as written.
    pub extensions_yaml: String,
    /// Regular files moved from the firmware directories into the appended archive.
    pub firmware_files: u64,
    /// The kernel release the `modules.dep` layer was made for, when there is one.
    pub kernel_release: Option<String>,
}
