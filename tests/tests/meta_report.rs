//! The stand-in `/init` reports the META partition of the boot disk
//! (tools/stand-in-release/src/init_script.rs, `meta:` and `meta-tail:` lines), which the disk
//! image boot tests rely on: here it is checked against disks whose META we wrote ourselves.
//!
//! A disk with the Talos layout of [`VERSION`] (dual-boot, GPT from `factory_disk`, the META
//! partition holding a Talos ADV, or left zero) is attached as a virtio disk, and the Debian
//! kernel of the boot parts boots directly (`-kernel`/`-initrd`, no bootloader) with the amd64
//! stand-in initramfs; [`BootRun::meta`] decodes what the `/init` found. SeaBIOS (`pc`) and
//! OVMF (`q35`, where virtio devices sit on PCIe) both, since disk images boot under both.
//!
//! Select with `cargo nextest run -p factory-tests --test meta_report` (~30 s). Needs QEMU, OVMF
//! and the boot parts (`scripts/fetch-boot-parts`), not LocalStack; skipped without them unless
//! FACTORY_REQUIRE_BOOT=1.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::Path;

use crate::common::boot::{
    boot_parts_dir, missing_prerequisite, qemu, skip, with_ovmf, BootRun, OVMF_CODE, OVMF_VARS,
};
use crate::common::stand_in::VERSION;
use factory_disk::layout::{image_disk_size, MIN_RAW_DISK_SIZE};
use factory_disk::meta::{add_meta, disk_image_meta_values, keys};
use factory_disk::{Bootloader, DiskLayout, SparseImage, TalosVersion};
use stand_in_release::boot::{BootParts, BootPartsSource};
use stand_in_release::oci::Arch;
use stand_in_release::versions::RELEASES;

/// The schematic's META value of `common::boot::SCHEMATIC` (key 0x0a).
const NETWORK: &str = "{\"externalIPs\":[\"1.2.3.4\"]}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Firmware {
    Bios,
    Uefi,
}

/// Writes a sparse raw disk with the dual-boot layout of [`VERSION`] to `path`, META holding
/// `values` (schematic values; the dual-boot key 0x11 is added as for a real image).
fn disk(path: &Path, values: &[(u8, &[u8])]) {
    let version = TalosVersion::parse(VERSION);
    let size = image_disk_size(MIN_RAW_DISK_SIZE, version, Bootloader::DualBoot);
    let gpt = DiskLayout::new(version, Bootloader::DualBoot, size, 512)
        .gpt()
        .unwrap();
    let mut image = SparseImage::new(size);
    gpt.add_to(&mut image, None).unwrap();
    let values = if values.is_empty() {
        Default::default()
    } else {
        disk_image_meta_values(
            values.iter().copied(),
            "amd64",
            false,
            version,
            Bootloader::DualBoot,
        )
    };
    add_meta(&mut image, &gpt, &values).unwrap();
    image.write_sparse_file(&mut File::create(path).unwrap()).unwrap();
}

/// Boots the stand-in kernel and amd64 initramfs of [`VERSION`] with `disk` as a virtio disk;
/// `None` when the boot cannot run here (see `common::boot::skip`).
fn boot(what: &str, firmware: Firmware, disk: &Path) -> Option<BootRun> {
    let files: &[(&str, &str)] = match firmware {
        Firmware::Bios => &[],
        Firmware::Uefi => &[(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")],
    };
    if skip(what, missing_prerequisite(files, &[])) {
        return None;
    }
    let parts = boot_parts_dir().expect("checked above");
    let boot = BootParts::load(&BootPartsSource::Dir(parts.clone())).unwrap();
    let release = RELEASES.iter().find(|r| r.tag == VERSION).unwrap();
    let dir = disk.parent().unwrap();
    let initramfs = dir.join("initramfs.zst");
    let built = stand_in_release::initramfs::build(release, Arch::Amd64, &boot).unwrap();
    std::fs::write(&initramfs, built).unwrap();

    let mut qemu = qemu();
    if firmware == Firmware::Uefi {
        with_ovmf(&mut qemu, dir);
    }
    qemu.args(["-nic", "none", "-kernel"])
        .arg(parts.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()));
    let run = BootRun::run(&mut qemu);
    let lines: Vec<&str> = run.serial.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    assert!(run.has("END"), "no complete report; serial tail:\n{tail}");
    assert!(
        run.status.success(),
        "QEMU did not power off: {}\n{tail}",
        run.status
    );
    eprintln!("{what}: boot {:.1?}", run.elapsed);
    Some(run)
}

#[test]
fn meta_values_of_a_virtio_disk_under_seabios() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    disk(
        &path,
        &[(keys::METAL_NETWORK_PLATFORM_CONFIG, NETWORK.as_bytes())],
    );
    let Some(run) = boot("META boot (SeaBIOS)", Firmware::Bios, &path) else {
        return;
    };
    let meta = run.meta().expect("a META partition");
    // EFI, BIOS, BOOT, META: the fourth partition of the first virtio disk.
    assert_eq!(meta.device, "vda4", "{meta:#?}");
    assert_eq!(
        meta.value(keys::METAL_NETWORK_PLATFORM_CONFIG).as_deref(),
        Some(NETWORK)
    );
    assert_eq!(
        meta.value(keys::DISK_IMAGE_BOOTLOADER).as_deref(),
        Some("dual-boot")
    );
    assert_eq!(meta.values.as_ref().map(|v| v.len()), Some(2), "{meta:#?}");
}

#[test]
fn zero_meta_of_a_virtio_disk_under_ovmf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    disk(&path, &[]);
    let Some(run) = boot("META boot (OVMF)", Firmware::Uefi, &path) else {
        return;
    };
    let meta = run.meta().expect("a META partition");
    assert_eq!(meta.device, "vda4", "{meta:#?}");
    assert_eq!(meta.values, None, "no values: the partition stays zero");
}
