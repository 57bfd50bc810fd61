//! Complete Talos disk images (talos-imager.md §10): the GPT layout of the bootloader, the ESP,
//! the BOOT partition and the GRUB BIOS boot code where the layout has them, and META — as a
//! [`SparseImage`] to stream (raw) or convert.
//!
//! | layout | ESP (our FAT32 writer) | BIOS (amd64) | BOOT (`mkfs.xfs`) |
//! | --- | --- | --- | --- |
//! | `sd-boot` | systemd-boot at `EFI/boot/BOOTX64.efi` (`BOOTAA64.efi`), the UKI at `EFI/Linux/Talos-<version>.efi`, `loader/loader.conf` | – | – |
//! | `dual-boot` | as `sd-boot` | `core.img`, `boot.img` in the MBR | `A/vmlinuz`, `A/initramfs.xz`, `grub/grub.cfg` |
//! | `grub` | the GRUB EFI loader at `EFI/boot/BOOTX64.efi` (`BOOTAA64.efi`) | as `dual-boot` | as `dual-boot` |
//!
//! META holds the schematic's values (+ key 0x11 `dual-boot` for amd64 ≥ 1.10 dual-boot images).
//! The image's extents point into the caller's files (kernel, initramfs, systemd-boot, UKI) and
//! into `scratch` (the BOOT file system, the GRUB EFI loader): both must stay until the image is
//! written. Memory: the GPT, META, FAT metadata and `core.img` (a few hundred KiB).
//!
//! Every file timestamp on the ESP is [`SOURCE_DATE_EPOCH`] (the imager runs with Talos'), the
//! ESP is deterministic, the GPT and META are; the BOOT file system is except for its inode
//! timestamps (see [`crate::xfs`]).
//!
//! Deliberate differences from the Go imager, besides those of [`crate::fat`], [`crate::xfs`]
//! and [`crate::grub`]: no SecureBoot yet (no signed files, no `secure-boot-enroll`, no key
//! enrollment files), no IMAGECACHE, no overlays (no skipped sectors).

use std::collections::BTreeMap;
use std::path::Path;

use crate::fat::{FatOptions, FatSource, FatVolume};
use crate::grub;
use crate::image::SparseImage;
use crate::layout::{image_disk_size, Bootloader, DiskLayout, TalosVersion};
use crate::meta;
use crate::tools::{Tool, GRUB_MKIMAGE, MKFS_XFS};
use crate::xfs;
use crate::{BootFiles, Error, Result};

/// Talos' SOURCE_DATE_EPOCH (the imager's environment): the timestamp of every ESP entry.
pub const SOURCE_DATE_EPOCH: u64 = 1_559_424_892;

/// `loader/loader.conf` of systemd-boot ESPs (without SecureBoot enrollment).
pub const LOADER_CONF: &str = "# systemd-boot configuration\n\ntimeout 10\n";

/// What disk image to build.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// The Talos version (its gates).
    pub version: TalosVersion,
    /// The version as tagged (`v1.11.0`, `v1.13.0-alpha.1`): the UKI's file name on the ESP
    /// and the GRUB menu entry carry it verbatim.
    pub version_tag: String,
    /// `amd64` or `arm64`.
    pub arch: String,
    /// The bootloader layout (already selected, [`Bootloader::select`]).
    pub bootloader: Bootloader,
    /// The profile's disk size **before** [`image_disk_size`] (which [`build_disk`] applies).
    pub disk_size: u64,
    /// Logical sector size: 512 or 4096.
    pub sector_size: u32,
    /// The kernel command line of `grub.cfg` (the UKI carries its own).
    pub cmdline: String,
    /// The schematic's META values, in schematic order (a later duplicate wins).
    pub meta: Vec<(u8, Vec<u8>)>,
}

/// The external tools [`build_disk`] calls for `bootloader` on `arch` (the builder checks them
/// at start with [`crate::tools::check`]).
pub fn required_tools(bootloader: Bootloader, arch: &str) -> Vec<Tool> {
    let mut tools = Vec::new();
    if bootloader == Bootloader::SdBoot {
        return tools;
    }
    tools.push(MKFS_XFS);
    let bios = arch == "amd64";
    if bios || bootloader == Bootloader::Grub {
        tools.push(GRUB_MKIMAGE);
    }
    if bios {
        tools.push(grub::GRUB_PC_BIN);
    }
    if bootloader == Bootloader::Grub {
        match arch {
            "arm64" => tools.push(grub::GRUB_EFI_ARM64_BIN),
            _ => tools.push(grub::GRUB_EFI_AMD64_BIN),
        }
    }
    tools
}

fn partition_err(name: &str, reason: impl Into<String>) -> Error {
    Error::Partition {
        name: name.into(),
        reason: reason.into(),
    }
}

/// Builds the raw disk image. File extents of the returned image point into `scratch` (the
/// caller keeps it alive while streaming the image) and into `files`.
pub fn build_disk(spec: &DiskSpec, files: &BootFiles, scratch: &Path) -> Result<SparseImage> {
    let v = spec.version;
    let bl = spec.bootloader;
    let efi_name = grub::efi_boot_name(&spec.arch)?;
    if spec.version_tag.is_empty() || spec.version_tag.contains(['/', '\\']) {
        return Err(partition_err(
            "EFI",
            format!("version tag {:?} cannot name a file", spec.version_tag),
        ));
    }
    let size = image_disk_size(spec.disk_size, v, bl);
    let layout = DiskLayout::new(v, bl, size, spec.sector_size);
    let gpt = layout.gpt()?;
    let mut img = SparseImage::new(size);
    let range = |name: &str| {
        gpt.partition(name)
            .map(|p| (p, gpt.byte_range(p)))
            .ok_or_else(|| partition_err(name, "missing from the layout"))
    };

    // ESP
    let mut esp: BTreeMap<String, FatSource> = BTreeMap::new();
    match bl {
        Bootloader::SdBoot | Bootloader::DualBoot => {
            let uki = files
                .uki
                .as_ref()
                .ok_or_else(|| partition_err("EFI", "a systemd-boot layout needs the UKI"))?;
            esp.insert(
                format!("EFI/boot/{efi_name}"),
                FatSource::File(files.sd_boot.clone()),
            );
            esp.insert(
                format!("EFI/Linux/Talos-{}.efi", spec.version_tag),
                FatSource::File(uki.clone()),
            );
            esp.insert(
                "loader/loader.conf".into(),
                LOADER_CONF.as_bytes().to_vec().into(),
            );
        }
        Bootloader::Grub => {
            let loader = scratch.join("grub-efi.img");
            grub::efi_image(&spec.arch, &loader)?;
            esp.insert(format!("EFI/boot/{efi_name}"), FatSource::File(loader));
        }
    }
    let (_, (esp_off, esp_len)) = range("EFI")?;
    let mut esp_opts = FatOptions::esp(esp_len, spec.sector_size);
    esp_opts.timestamp = Some(SOURCE_DATE_EPOCH);
    FatVolume::new(&esp_opts, &esp)?.add_to(&mut img, esp_off)?;

    // BOOT and the GRUB BIOS boot code
    let mut boot_code = None;
    if bl != Bootloader::SdBoot {
        let (_, (boot_off, boot_len)) = range("BOOT")?;
        let staging = scratch.join("boot-staging");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(&staging)?;
        // symlinks: mkfs.xfs reads the sources through them, nothing is copied
        std::os::unix::fs::symlink(std::path::absolute(&files.kernel)?, staging.join("vmlinuz"))?;
        std::os::unix::fs::symlink(
            std::path::absolute(&files.initramfs)?,
            staging.join("initramfs.xz"),
        )?;
        let cfg = grub::grub_cfg(&spec.version_tag, &spec.cmdline, v.at_least(1, 4));
        std::fs::write(staging.join("grub.cfg"), cfg)?;
        let mut tree = xfs::Tree::default();
        tree.file("A/initramfs.xz", "initramfs.xz", 0o644)?
            .file("A/vmlinuz", "vmlinuz", 0o644)?
            .dir("grub", 0o700)?
            .file("grub/grub.cfg", "grub.cfg", 0o600)?;
        let fs_path = scratch.join("boot.xfs");
        let opts = xfs::XfsOptions::boot(boot_len, spec.sector_size, v);
        xfs::make(&opts, &tree, &staging, &fs_path)?;
        img.add_sparse_file(boot_off, boot_len, &fs_path, 0)?;

        if spec.arch == "amd64" {
            let (bios, (bios_off, bios_len)) = range("BIOS")?;
            let code = grub::bios_boot(scratch, bios.first_lba, bios_len)?;
            img.add_bytes(bios_off, code.core_img.clone())?;
            boot_code = Some(code);
        }
    }

    gpt.add_to(&mut img, boot_code.as_ref().map(grub::BiosBoot::mbr_boot_code))?;

    let values = meta::disk_image_meta_values(
        spec.meta.iter().map(|(k, v)| (*k, v.as_slice())),
        &spec.arch,
        false,
        v,
        bl,
    );
    meta::add_meta(&mut img, &gpt, &values)?;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_per_layout() {
        assert!(required_tools(Bootloader::SdBoot, "amd64").is_empty());
        assert_eq!(
            required_tools(Bootloader::DualBoot, "amd64"),
            [MKFS_XFS, GRUB_MKIMAGE, grub::GRUB_PC_BIN]
        );
        assert_eq!(
            required_tools(Bootloader::Grub, "amd64"),
            [
                MKFS_XFS,
                GRUB_MKIMAGE,
                grub::GRUB_PC_BIN,
                grub::GRUB_EFI_AMD64_BIN
            ]
        );
        assert_eq!(
            required_tools(Bootloader::Grub, "arm64"),
            [MKFS_XFS, GRUB_MKIMAGE, grub::GRUB_EFI_ARM64_BIN]
        );
    }
}
