//! Heavy, the acceptance of issue 6 through the factory: boot media downloaded from the image
//! route, cold cache, boot the stand-in Talos release in QEMU (TCG). `image-factory-local` runs
//! in-process on the LocalStack backend over a stand-in release made with the real boot parts
//! (see `common::boot`, shared with `uki_boot.rs` and `pxe_boot.rs`); the media are built on the
//! first request and downloaded with `curl -L --retry` (the 503/Retry-After protocol of big
//! assets).
//!
//! * `metal-amd64.iso` (Talos 1.12 amd64 default: the hybrid ISO): El Torito read by
//!   `xorriso -report_el_torito`; booted from the CD-ROM under SeaBIOS (GRUB, `grub.cfg`'s
//!   command line) and under OVMF (systemd-boot, the UKI's `.cmdline`); both are the ISO
//!   command line: the schematic's args, `talos.halt_if_installed=1` and META as
//!   `talos.environment`.
//! * `metal-amd64.raw.zst` (dual-boot layout): `zstd -t`, decompressed sparse, GPT read by
//!   `sgdisk -v`; booted from a virtio disk under SeaBIOS (GRUB from the XFS BOOT partition):
//!   the command line has no META (disk images carry it in the META partition), and the init
//!   finds the schematic's META value and the dual-boot marker (key 0x11) in the partition
//!   labelled META.
//!
//! * with `bootloader: sd-boot`: the UEFI-only ISO (one El Torito entry) and the sd-boot disk
//!   layout (ESP + META), both booted under OVMF (systemd-boot → the UKI), META found in the
//!   partition, no dual-boot marker.
//!
//! The builders themselves (every variant and layout, GRUB ISOs, 4K sectors) are proven by
//! `iso_boot.rs`, `disk_boot.rs` and factory-disk's tests; this test proves the factory serves
//! what boots.
//!
//! Select with `cargo nextest run -p factory-tests --test media_boot`. Needs LocalStack, QEMU,
//! OVMF, xorriso, zstd, gdisk and the boot parts; skipped without those unless
//! FACTORY_REQUIRE_BOOT=1 (scripts/test).
#![allow(clippy::unwrap_used)]

use crate::common::boot::{
    boot_parts_dir, missing_prerequisite, qemu, skip, with_ovmf, BootRun, GuestServer, CMDLINE, META,
    OVMF_CODE, OVMF_VARS, SCHEMATIC,
};
use crate::common::disk::{gpt_names, tool, unzstd};
use crate::common::stand_in::VERSION;

/// The command line of an ISO of [`SCHEMATIC`]: the cmdline asset plus `talos.halt_if_installed=1`
/// after the platform's args (talos-imager §6.2 step 3).
fn iso_cmdline() -> String {
    let iso = CMDLINE.replacen("console=ttyS0 ", "console=ttyS0 talos.halt_if_installed=1 ", 1);
    assert_ne!(iso, CMDLINE);
    iso
}

/// The command line of a disk image of [`SCHEMATIC`]: no `talos.environment` (META is in the
/// META partition).
fn disk_cmdline() -> String {
    CMDLINE
        .split(' ')
        .filter(|arg| !arg.starts_with("talos.environment="))
        .collect::<Vec<_>>()
        .join(" ")
}

fn prerequisites(what: &str) -> bool {
    let missing = missing_prerequisite(
        &[(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")],
        &[("xorriso", "xorriso"), ("zstd", "zstd"), ("sgdisk", "gdisk")],
    );
    !skip(what, missing)
}

#[test]
fn hybrid_iso_from_the_image_route_boots_under_seabios_and_ovmf() {
    if !prerequisites("ISO boots") {
        return;
    }
    let server = GuestServer::start(boot_parts_dir().expect("checked above"), "iso-media-boot");
    let id = server.post_schematic(SCHEMATIC);
    let iso = server.download(&format!("/image/{id}/{VERSION}/metal-amd64.iso"));
    assert_eq!(iso.status, 200, "{}", iso.text());
    assert_eq!(iso.header("content-type"), "application/x-iso9660-image");
    assert_eq!(server.built_at_least(1), 1, "one asset: the ISO");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metal-amd64.iso");
    std::fs::write(&path, &iso.body).unwrap();

    // Two El Torito entries: BIOS (GRUB) and UEFI (the appended ESP with systemd-boot).
    let report = tool(
        "xorriso",
        &["-indev", path.to_str().unwrap(), "-report_el_torito", "plain"],
        "xorriso",
    );
    assert!(report.contains("BIOS"), "{report}");
    assert!(report.contains("UEFI"), "{report}");

    // SeaBIOS → GRUB, which puts `BOOT_IMAGE=<path>` first. OVMF → systemd-boot → the UKI. The
    // UKI has two boot profiles (`main`, and `reset` with `talos.experimental.wipe=system`, as the
    // Go imager's ISO UKI); the stand-in's systemd-stub is Debian's 252, older than UKI profiles
    // (systemd 257), and boots the last `.cmdline` section: the reset profile's. Talos's own stub
    // boots `main` unless the reset entry is chosen. So the OVMF boot proves the reset profile's
    // command line is exactly the ISO's plus the wipe argument.
    let expected = [
        ("seabios", format!("BOOT_IMAGE=/boot/vmlinuz {}", iso_cmdline())),
        (
            "ovmf",
            format!("{} talos.experimental.wipe=system", iso_cmdline()),
        ),
    ];
    for (firmware, expected) in expected {
        let mut qemu = qemu();
        if firmware == "ovmf" {
            let vars = dir.path().join("ovmf");
            std::fs::create_dir_all(&vars).unwrap();
            with_ovmf(&mut qemu, &vars);
        }
        qemu.args(["-nic", "none", "-cdrom"])
            .arg(&path)
            .args(["-boot", "d"]);
        let run = BootRun::run(&mut qemu);
        run.assert_completed(&server);
        assert_eq!(run.cmdline(), expected, "{firmware}: {:#?}", run.report);
        assert_eq!(
            run.meta().map(|m| m.device),
            None,
            "no META partition on a CD-ROM"
        );
        run.check_schematic_extensions(&server, &id);
    }
}

#[test]
fn dual_boot_raw_zst_from_the_image_route_boots_under_seabios_with_meta() {
    if !prerequisites("disk image boot") {
        return;
    }
    let server = GuestServer::start(boot_parts_dir().expect("checked above"), "disk-media-boot");
    let id = server.post_schematic(SCHEMATIC);
    let image = server.download(&format!("/image/{id}/{VERSION}/metal-amd64.raw.zst"));
    assert_eq!(image.status, 200, "{}", image.text());
    assert_eq!(image.header("content-type"), "application/zstd");
    assert_eq!(server.built_at_least(1), 1, "one asset: the image");
    let dir = tempfile::tempdir().unwrap();
    let zst = dir.path().join("metal-amd64.raw.zst");
    std::fs::write(&zst, &image.body).unwrap();
    let raw = unzstd(&zst);
    assert_eq!(gpt_names(&raw), ["EFI", "BIOS", "BOOT", "META"]);

    let mut qemu = qemu();
    qemu.args(["-nic", "none", "-drive"])
        .arg(format!("if=virtio,format=raw,file={}", raw.display()));
    let run = BootRun::run(&mut qemu);
    run.assert_completed(&server);
    // GRUB's `linux` command puts `BOOT_IMAGE=<path>` first.
    assert_eq!(
        run.cmdline(),
        format!("BOOT_IMAGE=/A/vmlinuz {}", disk_cmdline()),
        "{:#?}",
        run.report
    );
    assert_eq!(run.environment(), ["(none)"], "{:#?}", run.report);
    run.check_schematic_extensions(&server, &id);
    let meta = run
        .meta()
        .expect("a META partition")
        .values
        .expect("META values in the partition");
    let (key, value) = META.split_once('=').unwrap();
    let key = u8::from_str_radix(key.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        meta.get(&key).map(Vec::as_slice),
        Some(value.as_bytes()),
        "{meta:?}"
    );
    assert_eq!(
        meta.get(&0x11).map(Vec::as_slice),
        Some(&b"dual-boot"[..]),
        "{meta:?}"
    );
}

/// [`SCHEMATIC`] with `bootloader: sd-boot`: UEFI-only media.
fn sd_boot_schematic() -> String {
    SCHEMATIC.replacen("customization:\n", "customization:\n  bootloader: sd-boot\n", 1)
}

#[test]
fn sd_boot_iso_and_raw_from_the_image_route_boot_under_ovmf() {
    if !prerequisites("sd-boot media boots") {
        return;
    }
    let server = GuestServer::start(boot_parts_dir().expect("checked above"), "sd-boot-media-boot");
    let id = server.post_schematic(&sd_boot_schematic());
    let dir = tempfile::tempdir().unwrap();

    // The UEFI-only ISO: one El Torito entry, for UEFI.
    let iso = server.download(&format!("/image/{id}/{VERSION}/metal-amd64.iso"));
    assert_eq!(iso.status, 200, "{}", iso.text());
    let iso_path = dir.path().join("metal-amd64.iso");
    std::fs::write(&iso_path, &iso.body).unwrap();
    let report = tool(
        "xorriso",
        &["-indev", iso_path.to_str().unwrap(), "-report_el_torito", "plain"],
        "xorriso",
    );
    assert!(report.contains("UEFI") && !report.contains("BIOS"), "{report}");

    // The sd-boot disk layout: ESP and META only.
    let image = server.download(&format!("/image/{id}/{VERSION}/metal-amd64.raw.zst"));
    assert_eq!(image.status, 200, "{}", image.text());
    let zst = dir.path().join("metal-amd64.raw.zst");
    std::fs::write(&zst, &image.body).unwrap();
    let raw = unzstd(&zst);
    assert_eq!(gpt_names(&raw), ["EFI", "META"]);

    // Both boot systemd-boot → the UKI. The stand-in's Debian 252 stub boots the last `.cmdline`
    // (the reset profile's; see the hybrid ISO test): the ISO's and the disk image's command
    // lines plus their reset arguments.
    let boots = [
        (
            "iso",
            vec!["-cdrom".to_owned(), iso_path.display().to_string()],
            format!("{} talos.experimental.wipe=system", iso_cmdline()),
        ),
        (
            "raw",
            vec![
                "-drive".to_owned(),
                format!("if=virtio,format=raw,file={}", raw.display()),
            ],
            format!(
                "{} talos.experimental.wipe=system:EPHEMERAL,STATE",
                disk_cmdline()
            ),
        ),
    ];
    for (what, args, expected) in boots {
        let vars = dir.path().join(format!("ovmf-{what}"));
        std::fs::create_dir_all(&vars).unwrap();
        let mut qemu = qemu();
        with_ovmf(&mut qemu, &vars);
        qemu.args(["-nic", "none"]).args(&args);
        let run = BootRun::run(&mut qemu);
        run.assert_completed(&server);
        assert_eq!(run.cmdline(), expected, "{what}: {:#?}", run.report);
        run.check_schematic_extensions(&server, &id);
        if what == "raw" {
            let meta = run.meta().expect("a META partition").values.expect("META values");
            assert_eq!(
                meta.get(&0x0a).map(Vec::as_slice),
                Some(META.split_once('=').unwrap().1.as_bytes())
            );
            assert_eq!(
                meta.get(&0x11),
                None,
                "no dual-boot marker on an sd-boot image: {meta:?}"
            );
        }
    }
}
