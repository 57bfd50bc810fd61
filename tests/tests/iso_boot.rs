//! Heavy: the ISO builder (`factory_disk::iso::build_iso`) proven by booting its ISOs in QEMU
//! (TCG), without the factory around it (the end-to-end route test is `media_boot.rs`). The
//! payload is the bootable stand-in amd64 Talos: the real Debian kernel and systemd-boot from
//! `scripts/fetch-boot-parts`, the stand-in initramfs of [`VERSION`] whose `/init` prints a
//! marked report on the serial console and powers off (`stand_in_release::initramfs`), and a UKI
//! built from them with `factory_uki` (Debian's systemd-stub, the `main` profile only: see
//! [`payload`] for why not the ISO's `reset` profile too).
//!
//! The UKI and `grub.cfg` get different command lines so that each boot shows which path it
//! took; the report's `cmdline:` must be exactly:
//! * hybrid ISO under SeaBIOS (`-cdrom x.iso -boot d`): GRUB from the El Torito BIOS image,
//!   `BOOT_IMAGE=/boot/vmlinuz` (GRUB's own) and [`GRUB_CMDLINE`] as GRUB passes it after
//!   unquoting (`${uuid}`, `&` survive literally);
//! * hybrid ISO under OVMF: systemd-boot from the appended ESP, the UKI's [`UKI_CMDLINE`];
//! * sd-boot ISO under OVMF: the same;
//! * GRUB ISO of 1.9 under OVMF: GRUB EFI from grub-mkrescue's EFI image, as under SeaBIOS.
//!
//! Each boot runs in its own temp dir under `timeout` ([`BOOT_TIMEOUT_SECS`]), so the tests can
//! run in parallel. Select with `cargo nextest run -p factory-tests --test iso_boot`. Needs
//! `qemu-system-x86 ovmf xorriso grub-common grub-pc-bin` and the boot parts; skipped without
//! those unless FACTORY_REQUIRE_BOOT=1 (scripts/test). No LocalStack.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::Path;

use crate::common::boot::{
    boot_parts_dir, missing_prerequisite, qemu, skip, with_ovmf, BootRun, BOOT_TIMEOUT_SECS, OVMF_CODE,
    OVMF_VARS,
};
use crate::common::stand_in::VERSION;
use factory_disk::iso::{build_iso, IsoSpec, IsoVariant, SOURCE_DATE_EPOCH};
use factory_disk::BootFiles;
use factory_uki::{
    kernel_version, os_release, AssembleOptions, SectionData, Stub, TalosUki, KERNEL_VERSION_PROBE_LEN,
};
use stand_in_release::boot::{BootParts, BootPartsSource};
use stand_in_release::oci::Arch;
use stand_in_release::versions::RELEASES;

/// The UKI's `.cmdline` (what systemd-stub boots with under UEFI).
const UKI_CMDLINE: &str = "talos.platform=metal console=ttyS0 panic=-1 stand-in.iso=uki";
/// The ISO's command line, in `grub.cfg` (what GRUB boots with under BIOS), with characters GRUB
/// must see quoted.
const GRUB_CMDLINE: &str =
    "talos.platform=metal console=ttyS0 panic=-1 stand-in.iso=grub talos.config=http://10.0.2.2/c?u=${uuid}&s=1";

/// A stand-in release version before 1.10 (GRUB boots UEFI too).
const GRUB_EFI_VERSION: &str = "v1.9.5";

/// The inputs of an ISO, in a temp dir of their own.
struct Payload {
    dir: tempfile::TempDir,
    files: BootFiles,
}

/// The stand-in payload of `version` (a stand-in release) from the real boot parts in `parts`,
/// plus its UKI.
fn payload(parts: &Path, version: &str) -> Payload {
    let dir = tempfile::tempdir().unwrap();
    let boot = BootParts::load(&BootPartsSource::Dir(parts.to_owned())).expect("the boot parts");
    assert!(boot.amd64.bootable, "the boot parts are placeholders");
    let release = RELEASES
        .iter()
        .find(|r| r.tag == version)
        .unwrap_or_else(|| panic!("the stand-in release has no {version}"));
    let initramfs = dir.path().join("initramfs.xz");
    std::fs::write(
        &initramfs,
        stand_in_release::initramfs::build(release, Arch::Amd64, &boot).expect("the stand-in initramfs"),
    )
    .unwrap();
    let kernel = parts.join("vmlinuz");
    let sd_boot = parts.join("systemd-bootx64.efi");

    // A ≥ 1.10 UKI with only the `main` profile. The Go imager's ISO UKI also has the `reset`
    // profile with its own `.cmdline`, but Debian 12's systemd-stub (252) predates UKI profiles
    // (systemd 257): it boots the *last* `.cmdline` section, the reset profile's. What the ISO
    // builder must prove is that firmware → sd-boot → this UKI works, so the UKI stays simple.
    let stub = Stub::parse(std::fs::read(parts.join("linuxx64.efi.stub")).unwrap()).expect("sd-stub");
    let mut probe = Vec::new();
    std::fs::File::open(&kernel)
        .unwrap()
        .take(KERNEL_VERSION_PROBE_LEN as u64)
        .read_to_end(&mut probe)
        .unwrap();
    let uki = TalosUki {
        osrel: os_release("Talos", version),
        cmdline: UKI_CMDLINE.to_owned(),
        uname: kernel_version(&probe),
        splash: None,
        pcrpkey: None,
        kernel: SectionData::File(kernel.clone()),
        initrd: SectionData::File(initramfs.clone()),
        profiles: Some(Vec::new()),
    };
    let uki_path = dir.path().join("uki.efi");
    let out = std::io::BufWriter::new(std::fs::File::create(&uki_path).unwrap());
    let options = AssembleOptions {
        timestamp: Some(u32::try_from(SOURCE_DATE_EPOCH).unwrap()),
    };
    factory_uki::build(&stub, uki, &options, out).expect("the UKI");
    Payload {
        dir,
        files: BootFiles {
            kernel,
            initramfs,
            sd_boot,
            uki: Some(uki_path),
        },
    }
}

enum Firmware {
    SeaBios,
    Ovmf,
}

/// Builds the `variant` ISO and boots it from the CD-ROM; the run, after checking that the
/// report is complete and the guest powered off by itself.
fn boot(variant: IsoVariant, version: &str, firmware: Firmware) -> Option<BootRun> {
    let what = format!("{variant:?} ISO {version} boot");
    let mut files = vec![];
    if matches!(firmware, Firmware::Ovmf) {
        files = vec![(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")];
    }
    let mut tools = vec![("xorriso", "xorriso")];
    if variant != IsoVariant::SdBoot {
        tools.push(("grub-mkrescue", "grub-common"));
        files.push(("/usr/lib/grub/i386-pc/moddep.lst", "grub-pc-bin"));
    }
    if variant == IsoVariant::Grub {
        tools.push(("mformat", "mtools"));
        files.push(("/usr/lib/grub/x86_64-efi/moddep.lst", "grub-efi-amd64-bin"));
    }
    if skip(&what, missing_prerequisite(&files, &tools)) {
        return None;
    }
    let parts = boot_parts_dir().expect("checked above");
    let payload = payload(&parts, version);
    let built = std::time::Instant::now();
    let spec = IsoSpec {
        version: version.to_owned(),
        arch: "amd64".to_owned(),
        variant,
        cmdline: GRUB_CMDLINE.to_owned(),
    };
    let iso = build_iso(&spec, &payload.files, payload.dir.path()).expect("the ISO");
    let build_time = built.elapsed();

    let mut qemu = qemu();
    match firmware {
        Firmware::SeaBios => {
            qemu.args(["-boot", "d"]);
        }
        Firmware::Ovmf => with_ovmf(&mut qemu, payload.dir.path()),
    }
    qemu.args(["-nic", "none", "-cdrom"]).arg(&iso);
    let run = BootRun::run(&mut qemu);
    let lines: Vec<&str> = run.serial.lines().collect();
    let context = format!(
        "qemu (under timeout {BOOT_TIMEOUT_SECS} s) exit {}; serial tail:\n{}",
        run.status,
        lines[lines.len().saturating_sub(60)..].join("\n")
    );
    assert!(
        run.has(&format!("BEGIN talos={version} arch=amd64")),
        "no report; {context}"
    );
    assert!(run.has("END"), "the report did not end; {context}");
    assert!(
        run.status.success(),
        "QEMU did not power off by itself; {context}"
    );
    eprintln!(
        "{what}: ISO ({:.1} MiB) built in {build_time:.1?}, boot {:.1?}; cmdline {:?}",
        std::fs::metadata(&iso).unwrap().len() as f64 / 1048576.0,
        run.elapsed,
        run.cmdline()
    );
    Some(run)
}

#[test]
fn hybrid_iso_boots_grub_under_seabios() {
    let Some(run) = boot(IsoVariant::Hybrid, VERSION, Firmware::SeaBios) else {
        return;
    };
    // GRUB's `linux` command puts `BOOT_IMAGE=<kernel path>` first (as with the Go imager's
    // ISOs); the rest is grub.cfg's command line, unquoted by GRUB.
    assert_eq!(
        run.cmdline(),
        format!("BOOT_IMAGE=/boot/vmlinuz {GRUB_CMDLINE}"),
        "{:#?}",
        run.report
    );
}

#[test]
fn hybrid_iso_boots_sd_boot_under_ovmf() {
    let Some(run) = boot(IsoVariant::Hybrid, VERSION, Firmware::Ovmf) else {
        return;
    };
    assert_eq!(run.cmdline(), UKI_CMDLINE, "{:#?}", run.report);
}

#[test]
fn sd_boot_iso_boots_under_ovmf() {
    let Some(run) = boot(IsoVariant::SdBoot, VERSION, Firmware::Ovmf) else {
        return;
    };
    assert_eq!(run.cmdline(), UKI_CMDLINE, "{:#?}", run.report);
}

/// Before 1.10 the GRUB ISO boots UEFI through GRUB too (grub-mkrescue's own EFI image): GRUB
/// EFI under OVMF with grub.cfg's command line.
#[test]
fn grub_iso_boots_grub_efi_under_ovmf_before_1_10() {
    let Some(run) = boot(IsoVariant::Grub, GRUB_EFI_VERSION, Firmware::Ovmf) else {
        return;
    };
    assert_eq!(
        run.cmdline(),
        format!("BOOT_IMAGE=/boot/vmlinuz {GRUB_CMDLINE}"),
        "{:#?}",
        run.report
    );
}
