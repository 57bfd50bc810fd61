//! Disk images for the Talos factory (talos-imager.md §7, §10).
//!
//! * [`image`]: a sparse image model — an ordered list of extents (zeros, bytes, file ranges) that
//!   is streamed to any [`std::io::Write`] (zeros written as zeros) or to a sparse file (holes
//!   seeked over). Memory stays bounded by the largest in-memory extent plus a 64 KiB buffer.
//! * [`gpt`]: the GPT writer (protective MBR, primary/backup headers and entries, CRC32s,
//!   deterministic GUIDs) with go-blockdevice's geometry rules.
//! * [`layout`]: the Talos disk layouts (sd-boot, grub, dual-boot) per version as data.
//! * [`fat`]: a deterministic write-once FAT32 volume (the ESP) laid out directly as image extents.
//! * [`meta`]: the META partition content (Talos ADV, §7.2) and the key 0x11 rule (§7.4).
//!
//! Typical use by an image builder:
//!
//! ```no_run
//! # fn main() -> factory_disk::Result<()> {
//! use factory_disk::{layout, meta, Bootloader, DiskLayout, FatOptions, FatVolume, SparseImage, TalosVersion};
//! let v = TalosVersion::parse("v1.11.0");
//! let bl = Bootloader::select(v, "amd64", false, None);
//! let size = layout::image_disk_size(layout::MIN_RAW_DISK_SIZE, v, bl);
//! let gpt = DiskLayout::new(v, bl, size, 512).gpt()?;
//! let mut img = SparseImage::new(size);
//! gpt.add_to(&mut img, None)?; // or Some(&boot_img[..446]) for GRUB BIOS
//! let efi = gpt.partition("EFI").expect("EFI");
//! let (off, len) = gpt.byte_range(efi);
//! let files = Default::default(); // "EFI/boot/BOOTX64.efi" → FatSource, …
//! FatVolume::new(&FatOptions::esp(len, 512), &files)?.add_to(&mut img, off)?;
//! let values = meta::disk_image_meta_values([(0x0c, &b"hello"[..])], "amd64", false, v, bl);
//! meta::add_meta(&mut img, &gpt, &values)?;
//! img.write_to(&mut std::io::sink())?; // or a compressor; or write_sparse_file
//! # Ok(()) }
//! ```
//!
//! Differences from the Go imager (all deliberate, for determinism or because the Go side is
//! unspecified): META records are written by ascending key (Go: map order); the ESP is written by
//! our own FAT32 writer (same volume id/label/cluster-size rules as `mkfs.vfat --invariant`, not
//! byte-identical to mkfs.vfat + mcopy); the first usable LBA is 34 (512) / 6 (4096) as in
//! go-blockdevice (talos-imager.md §10.2 says "rounded up to the alignment"; the go-blockdevice
//! source and its gdisk fixtures show it is not — only partition starts are rounded).

pub mod assemble;
pub mod fat;
pub mod format;
pub mod gpt;
pub mod grub;
pub mod image;
pub mod iso;
pub mod layout;
pub mod meta;
pub mod tools;
pub mod xfs;

pub use fat::{FatOptions, FatSource, FatVolume};
pub use gpt::{guid_from_label, Gpt, Guid, Partition, PartitionSize, PartitionSpec};
pub use image::{Extent, Source, SparseImage};
pub use layout::{Bootloader, DiskLayout, TalosVersion};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid sector size {0} (512 or 4096)")]
    SectorSize(u32),
    #[error("extent {offset}+{len} overlaps another extent or exceeds the image size {size}")]
    Extent { offset: u64, len: u64, size: u64 },
    #[error("disk of {0} bytes is too small for the partition layout")]
    DiskTooSmall(u64),
    #[error("partition name {0:?} too long (max 36 UTF-16 code units)")]
    NameTooLong(String),
    #[error("partition {name:?}: {reason}")]
    Partition { name: String, reason: String },
    #[error("META: {0}")]
    Meta(String),
    #[error("the builder lacks the tool {program} (Debian package {package}); see infra/README.md for the builder image")]
    ToolMissing {
        program: &'static str,
        package: &'static str,
    },
    #[error("{program} failed: {message}")]
    ToolFailed { program: &'static str, message: String },
}

/// The release and schematic files an ISO or a disk image is made of, already on local disk
/// (the caller pulls them from the release and builds the customised initramfs and the UKI).
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// The release kernel (`usr/install/<arch>/vmlinuz`): GRUB boots it (BOOT partition, ISO).
    pub kernel: std::path::PathBuf,
    /// The customised initramfs (the `initramfs-<arch>.xz` asset of the schematic).
    pub initramfs: std::path::PathBuf,
    /// The release's systemd-boot (`usr/install/<arch>/systemd-boot.efi`).
    pub sd_boot: std::path::PathBuf,
    /// The UKI with the asset's command line (the ESP's `EFI/Linux/Talos-<version>.efi`);
    /// `None` for layouts and ISOs that boot only GRUB.
    pub uki: Option<std::path::PathBuf>,
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// 1 MiB, the partition alignment and the unit of every Talos partition size.
pub const MIB: u64 = 1024 * 1024;
