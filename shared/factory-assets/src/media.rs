//! Boot media: the `<platform>-<arch>.iso` ISOs (talos-imager §9) and the
//! `<platform>-<arch>.<raw|qcow2|vhd|ova>[.xz|.gz|.zst|.tar.gz]` disk images (§10), assembled by
//! [`factory_disk`] from the release's kernel and systemd-boot, the schematic's initramfs (the
//! `initramfs-<arch>.xz` asset's bytes) and a UKI with the medium's own command line.
//!
//! * Command line: the profile's, with the ISO rules (`talos.halt_if_installed=1`, META as
//!   `talos.environment`) for ISOs; disk images carry META in their META partition instead
//!   (§7.4). GRUB's `grub.cfg` and the UKI's `.cmdline` get the same string; from 1.10 the UKI
//!   also has the reset profile of its medium (§8.1: `reset` with `talos.experimental.wipe=system`
//!   on ISOs, `reset-maintenance` on disk images), as GRUB has its reset menu entry.
//! * Bootloader: decided by the request side ([`Profile::effective_bootloader`], carried in the
//!   spec): `dual-boot` → hybrid ISO / GPT with ESP + BIOS + BOOT; `sd-boot` → UEFI-only;
//!   `grub` → GRUB ISO / GRUB layout. The UKI is built only when systemd-boot boots it.
//! * Streaming: the ISO is a file in the scratch directory (≈ the size of its payload) copied
//!   to the output; a disk image is never materialised: its extents (GPT, FAT ESP, XFS BOOT as a
//!   sparse file, META) are streamed through the container and compression writers.
//!
//! Failures: a disk too small for the layout, a partition that cannot be made with the asked
//! sector size, or META values over the ADV capacity are the user's (400); a missing tool (`mkfs.xfs`, `grub-mkimage`, `xorriso`) or a failing one is the
//! deployment's: logged as an error and retried, never blamed on the user.
//!
//! [`Profile::effective_bootloader`]: factory_core::profile::Profile::effective_bootloader

use std::fs::File;

use factory_core::arch::Arch;
use factory_core::version::TalosVersion;
use factory_disk::assemble::DiskSpec;
use factory_disk::format::{Compression, Container};
use factory_disk::iso::{IsoSpec, IsoVariant};
use factory_disk::BootFiles;
use factory_pipeline::AssembleError;
use factory_uki::{os_release, UkiProfile};
use factory_upstream::Upstream;
use tokio::io::AsyncWrite;

use crate::blocking::write_blocking;
use crate::imager;
use crate::initramfs;
use crate::spec::{spec_error, Spec};
use crate::uki::{build_uki, io_error, write_file, UkiFiles};

/// What the spec asks for, checked before anything is pulled.
#[derive(Debug, Clone)]
enum Medium {
    Iso(IsoVariant),
    Disk {
        bootloader: factory_disk::Bootloader,
        container: Container,
        compression: Compression,
        disk_size: u64,
        sector_size: u32,
    },
}

impl Medium {
    fn from_spec(spec: &Spec) -> Result<Medium, AssembleError> {
        let profile = &spec.profile;
        let bootloader = spec
            .bootloader
            .as_deref()
            .ok_or_else(|| spec_error("no bootloader for a boot medium"))?;
        match profile.output.kind.as_str() {
            "iso" => Ok(Medium::Iso(match bootloader {
                "dual-boot" => IsoVariant::Hybrid,
                "sd-boot" => IsoVariant::SdBoot,
                "grub" => IsoVariant::Grub,
                other => return Err(spec_error(format!("bootloader {other:?}"))),
            })),
            "image" => {
                let options = profile
                    .output
                    .image_options
                    .as_ref()
                    .ok_or_else(|| spec_error("a disk image without imageOptions"))?;
                let container = Container::from_disk_format(&options.disk_format)
                    .ok_or_else(|| spec_error(format!("disk format {:?}", options.disk_format)))?;
                let out_format = profile.output.out_format.as_deref().unwrap_or("raw");
                let compression = Compression::from_suffix(out_format)
                    .ok_or_else(|| spec_error(format!("output format {out_format:?}")))?;
                let sector_size = match options.disk_sector_size {
                    0 | 512 => 512,
                    4096 => 4096,
                    other => {
                        return Err(AssembleError::User(format!(
                            "disk sector size {other} (512 or 4096)"
                        )))
                    }
                };
                Ok(Medium::Disk {
                    bootloader: factory_disk::Bootloader::parse(bootloader)
                        .ok_or_else(|| spec_error(format!("bootloader {bootloader:?}")))?,
                    container,
                    compression,
                    disk_size: options.disk_size,
                    sector_size,
                })
            }
            other => Err(spec_error(format!("kind {other} is not a boot medium"))),
        }
    }

    /// Whether systemd-boot boots a UKI from this medium (else GRUB boots kernel + initramfs).
    fn needs_uki(&self) -> bool {
        match self {
            Medium::Iso(variant) => !matches!(variant, IsoVariant::Grub),
            Medium::Disk { bootloader, .. } => !matches!(bootloader, factory_disk::Bootloader::Grub),
        }
    }
}

pub(crate) async fn assemble(
    upstream: &Upstream,
    spec: &Spec,
    arch: Arch,
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), AssembleError> {
    let medium = Medium::from_spec(spec)?;
    let profile = &spec.profile;
    let version = profile.version.to_string();
    let cmdline = crate::cmdline::cmdline(spec)?;
    let osrel = os_release(&profile.name, &version);
    // From 1.10 the UKI has a second boot profile (talos-imager §8.1): ISOs wipe the system disk,
    // disk images reset to maintenance mode.
    let profiles = (profile.version.core() >= TalosVersion::new(1, 10, 0)).then(|| match medium {
        Medium::Iso(_) => vec![UkiProfile::reset_iso(&cmdline)],
        Medium::Disk { .. } => vec![UkiProfile::reset_maintenance(&cmdline)],
    });
    let meta: Vec<(u8, Vec<u8>)> = spec
        .profile
        .customization
        .meta
        .iter()
        .map(|m| (m.key, m.value.clone().into_bytes()))
        .collect();

    let scratch = crate::scratch_dir()?;
    let (prepared, paths) = initramfs::prepare(
        upstream,
        spec,
        arch,
        &[imager::KERNEL, imager::SD_STUB, imager::SD_BOOT],
        scratch.path(),
    )
    .await?;
    let (kernel, stub, sd_boot) = (paths[0].clone(), paths[1].clone(), paths[2].clone());

    write_blocking(out, move |w| {
        let dir = scratch.path();
        let initrd = dir.join("initramfs.xz");
        write_file(&initrd, |f| initramfs::build(&prepared, f))?;
        let uki = if medium.needs_uki() {
            let path = dir.join("uki.efi");
            let files = UkiFiles {
                stub: &stub,
                kernel: &kernel,
                initrd: &initrd,
            };
            write_file(&path, |f| build_uki(&files, osrel, cmdline.clone(), profiles, f))?;
            Some(path)
        } else {
            None
        };
        let files = BootFiles {
            kernel,
            initramfs: initrd,
            sd_boot,
            uki,
        };
        let media = dir.join("media");
        std::fs::create_dir_all(&media).map_err(io_error("creating", &media))?;
        match medium {
            Medium::Iso(variant) => {
                let spec = IsoSpec {
                    version,
                    arch: arch.as_str().to_owned(),
                    variant,
                    cmdline,
                };
                let iso = factory_disk::iso::build_iso(&spec, &files, &media).map_err(disk_error)?;
                let mut file = File::open(&iso).map_err(io_error("opening", &iso))?;
                std::io::copy(&mut file, w).map_err(io_error("streaming", &iso))?;
            }
            Medium::Disk {
                bootloader,
                container,
                compression,
                disk_size,
                sector_size,
            } => {
                let spec = DiskSpec {
                    version: factory_disk::TalosVersion::parse(&version),
                    version_tag: version.clone(),
                    arch: arch.as_str().to_owned(),
                    bootloader,
                    disk_size,
                    sector_size,
                    cmdline,
                    meta,
                };
                let image = factory_disk::assemble::build_disk(&spec, &files, &media).map_err(disk_error)?;
                let written = factory_disk::format::write_image(&image, container, compression, &media, w)
                    .map_err(disk_error)?;
                tracing::info!(size = image.size(), written, "built the disk image");
            }
        }
        Ok(())
    })
    .await
}

/// Sorts a disk/ISO failure for the pipeline (see the module documentation).
fn disk_error(error: factory_disk::Error) -> AssembleError {
    use factory_disk::Error;
    match &error {
        // Consequences of what the schematic asks for: a layout that does not fit the disk or
        // the sector size (the grub layout's 100 MiB ESP cannot be FAT32 with 4 KiB sectors),
        // META over the ADV's capacity.
        Error::DiskTooSmall(_) | Error::Meta(_) | Error::Partition { .. } | Error::SectorSize(_) => {
            AssembleError::User(error.to_string())
        }
        Error::Io(_) => AssembleError::Retryable(error.to_string()),
        _ => {
            tracing::error!(
                error = %error,
                "building the boot medium failed for a reason the user cannot fix: the builder \
                 image or this factory needs attention"
            );
            AssembleError::Retryable(error.to_string())
        }
    }
}

/// The canonical file name of an ISO or disk image: `<platform>-<arch>[-secureboot].iso`,
/// `<platform>-<arch>[-secureboot].<disk format><out format suffix>`.
pub(crate) fn file_name(spec: &Spec, arch: Arch) -> Result<String, AssembleError> {
    let profile = &spec.profile;
    let base = format!(
        "{}-{arch}{}",
        profile.platform,
        if profile.secureboot { "-secureboot" } else { "" }
    );
    match profile.output.kind.as_str() {
        "iso" => Ok(format!("{base}.iso")),
        _ => {
            let options = profile
                .output
                .image_options
                .as_ref()
                .ok_or_else(|| spec_error("a disk image without imageOptions"))?;
            let suffix = match profile.output.out_format.as_deref().unwrap_or("raw") {
                "raw" => "",
                other => other,
            };
            Ok(format!("{base}.{}{suffix}", options.disk_format))
        }
    }
}
