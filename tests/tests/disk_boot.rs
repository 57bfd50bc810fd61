//! Heavy: complete disk images from `factory_disk::assemble::build_disk` boot in QEMU.
//!
//! The images are built directly (no server) from the bootable stand-in payload: the real
//! Debian kernel and systemd-boot of `scripts/fetch-boot-parts`, the amd64 stand-in initramfs of
//! [`VERSION`] (its `/init` prints a report and powers off), and a UKI made of those with
//! `factory_uki` (as `factory-assets` builds it; profile `main` only, see
//! [`boot_files`]), with `console=ttyS0` in every command line. Written sparse to a temp
//! file and attached as `-drive file=X,format=raw,if=virtio`:
//!
//! * `sd-boot` layout under OVMF: the firmware boots `EFI/boot/BOOTX64.efi` (systemd-boot), which
//!   finds the UKI in `EFI/Linux/` (Boot Loader Specification type #2, `loader.conf` timeout 10
//!   s): the kernel gets the UKI's `.cmdline`, exactly.
//! * `dual-boot` layout under SeaBIOS: the MBR boot code (GRUB's patched `boot.img`) loads
//!   `core.img` from the BIOS partition, GRUB reads `grub/grub.cfg` from the XFS BOOT partition
//!   (prefix `(hd0,gpt3)/grub`) and boots `A/vmlinuz` with `A/initramfs.xz`: the kernel gets
//!   `BOOT_IMAGE=/A/vmlinuz` (GRUB's) and the command line, unquoted again (`;` and `&` are
//!   escaped in `grub.cfg`).
//!
//! Both check the META partition the `/init` found (by its GPT label) against the schematic's
//! values (+ 0x11 `dual-boot` for the dual-boot image).
//!
//! Select with `cargo nextest run -p factory-tests --test disk_boot` (~1 min). Needs QEMU, OVMF,
//! xfsprogs, grub-pc-bin and the boot parts, not LocalStack; skipped without them unless
//! FACTORY_REQUIRE_BOOT=1.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::common::boot::{
    boot_parts_dir, missing_prerequisite, qemu, skip, with_ovmf, BootRun, OVMF_CODE, OVMF_VARS,
};
use crate::common::stand_in::VERSION;
use factory_disk::assemble::{build_disk, DiskSpec};
use factory_disk::layout::MIN_RAW_DISK_SIZE;
use factory_disk::{BootFiles, Bootloader, TalosVersion};
use factory_uki::{
    kernel_version, os_release, AssembleOptions, SectionData, Stub, TalosUki, KERNEL_VERSION_PROBE_LEN,
};
use stand_in_release::boot::{BootParts, BootPartsSource};
use stand_in_release::oci::Arch;
use stand_in_release::versions::RELEASES;

/// The command line of both images (GRUB's and the UKI's): `;` and `&` exercise GRUB's quoting.
const CMDLINE: &str = "talos.platform=metal console=ttyS0 panic=-1 talos.test=disk;a&b";

/// The schematic's META values.
fn schematic_meta() -> Vec<(u8, Vec<u8>)> {
    vec![
        (0x0a, b"{\"externalIPs\":[\"1.2.3.4\"]}".to_vec()),
        (0x0c, b"hello".to_vec()),
    ]
}

/// The boot files in `dir`: the real kernel and systemd-boot, the stand-in initramfs of
/// [`VERSION`] and a UKI of them with [`CMDLINE`].
fn boot_files(parts: &Path, dir: &Path) -> BootFiles {
    let boot = BootParts::load(&BootPartsSource::Dir(parts.to_owned())).unwrap();
    let release = RELEASES.iter().find(|r| r.tag == VERSION).unwrap();
    let initramfs = dir.join("initramfs.xz");
    std::fs::write(
        &initramfs,
        stand_in_release::initramfs::build(release, Arch::Amd64, &boot).unwrap(),
    )
    .unwrap();
    let kernel = parts.join("vmlinuz");
    let stub = Stub::parse(std::fs::read(parts.join("linuxx64.efi.stub")).unwrap()).unwrap();
    let mut probe = Vec::new();
    File::open(&kernel)
        .unwrap()
        .take(KERNEL_VERSION_PROBE_LEN as u64)
        .read_to_end(&mut probe)
        .unwrap();
    let uki = dir.join("uki.efi");
    let mut out = std::io::BufWriter::new(File::create(&uki).unwrap());
    factory_uki::build(
        &stub,
        TalosUki {
            osrel: os_release("Talos", VERSION),
            cmdline: CMDLINE.to_owned(),
            uname: kernel_version(&probe),
            splash: None,
            pcrpkey: None,
            kernel: SectionData::File(kernel.clone()),
            initrd: SectionData::File(initramfs.clone()),
            // Only `main`: a disk image's UKI also has `reset-maintenance` with its own `.cmdline`
            // after `main`'s, and Debian 12's systemd-boot (252, the boot parts') predates UKI
            // profiles: it passes the **last** `.cmdline` section (the reset one) as the options.
            // Talos' systemd-boot (≥ 257) picks the profile; the ESP layout under test is the same.
            profiles: Some(Vec::new()),
        },
        &AssembleOptions {
            timestamp: Some(1_559_424_892),
        },
        &mut out,
    )
    .unwrap();
    out.flush().unwrap();
    BootFiles {
        kernel,
        initramfs,
        sd_boot: parts.join("systemd-bootx64.efi"),
        uki: Some(uki),
    }
}

/// Builds the `bootloader` image of [`VERSION`] and writes it sparse to `dir/disk.raw`.
fn disk(files: &BootFiles, bootloader: Bootloader, dir: &Path) -> std::path::PathBuf {
    let spec = DiskSpec {
        version: TalosVersion::parse(VERSION),
        version_tag: VERSION.to_owned(),
        arch: "amd64".into(),
        bootloader,
        disk_size: MIN_RAW_DISK_SIZE,
        sector_size: 512,
        cmdline: CMDLINE.into(),
        meta: schematic_meta(),
    };
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let image = build_disk(&spec, files, &scratch).unwrap();
    let path = dir.join("disk.raw");
    image
        .write_sparse_file(&mut File::create(&path).unwrap())
        .unwrap();
    path
}

/// For failure messages: QEMU's exit status and the serial console's end.
fn context(run: &BootRun) -> String {
    let lines: Vec<&str> = run.serial.lines().collect();
    format!(
        "qemu (under timeout) exit {}; serial tail:\n{}",
        run.status,
        lines[lines.len().saturating_sub(60)..].join("\n")
    )
}

/// The report is complete and the guest powered off by itself; the META partition holds
/// exactly `want`.
fn check(run: &BootRun, want_cmdline: &str, want_meta: &BTreeMap<u8, Vec<u8>>) {
    let context = context(run);
    assert!(
        run.has(&format!("BEGIN talos={VERSION} arch=amd64")),
        "no report; {context}"
    );
    assert!(run.has("END"), "the report did not end; {context}");
    assert!(
        run.status.success(),
        "QEMU did not power off by itself; {context}"
    );
    assert_eq!(run.cmdline(), want_cmdline, "{:#?}", run.report);
    let meta = run.meta().expect("the /init found no META partition");
    assert_eq!(meta.values.as_ref(), Some(want_meta), "META on {}", meta.device);
}

#[test]
fn ovmf_boots_the_sd_boot_disk_image() {
    let missing = missing_prerequisite(&[(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")], &[]);
    if skip("sd-boot disk image boot with OVMF", missing) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = boot_files(&boot_parts_dir().unwrap(), dir.path());
    let started = std::time::Instant::now();
    let image = disk(&files, Bootloader::SdBoot, dir.path());
    let built = started.elapsed();

    let mut qemu = qemu();
    with_ovmf(&mut qemu, dir.path());
    qemu.args(["-nic", "none", "-drive"])
        .arg(format!("file={},format=raw,if=virtio", image.display()));
    let run = BootRun::run(&mut qemu);
    // systemd-boot passes the UKI's `.cmdline`; nothing is added
    let want: BTreeMap<u8, Vec<u8>> = schematic_meta().into_iter().collect();
    check(&run, CMDLINE, &want);
    eprintln!(
        "sd-boot disk image: built in {built:.1?}, OVMF boot {:.1?}; report:\n{}",
        run.elapsed,
        run.report
            .iter()
            .filter(|l| !l.starts_with("meta"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn seabios_boots_the_dual_boot_disk_image_with_grub() {
    let missing = missing_prerequisite(
        &[
            ("/usr/lib/grub/i386-pc/boot.img", "grub-pc-bin"),
            ("/usr/sbin/mkfs.xfs", "xfsprogs"),
            ("/usr/bin/grub-mkimage", "grub-common"),
        ],
        &[],
    );
    if skip("dual-boot disk image boot with SeaBIOS", missing) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = boot_files(&boot_parts_dir().unwrap(), dir.path());
    let started = std::time::Instant::now();
    let image = disk(&files, Bootloader::DualBoot, dir.path());
    let built = started.elapsed();

    let mut qemu = qemu();
    qemu.args(["-nic", "none", "-drive"])
        .arg(format!("file={},format=raw,if=virtio", image.display()));
    let run = BootRun::run(&mut qemu);
    let mut want: BTreeMap<u8, Vec<u8>> = schematic_meta().into_iter().collect();
    want.insert(0x11, b"dual-boot".to_vec());
    check(&run, &format!("BOOT_IMAGE=/A/vmlinuz {CMDLINE}"), &want);
    eprintln!(
        "dual-boot disk image: built in {built:.1?}, SeaBIOS + GRUB boot {:.1?}; report:\n{}",
        run.elapsed,
        run.report
            .iter()
            .filter(|l| !l.starts_with("meta"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
