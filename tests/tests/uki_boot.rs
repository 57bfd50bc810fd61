//! Heavy, the acceptance of issue 5 for UKIs: a machine boots Talos (the stand-in release) from
//! the factory's `metal-amd64-uki.efi`. `image-factory-local` runs in-process on the LocalStack
//! backend (`--aws`: S3 under a prefix of its own, its own SQS FIFO build queue, so every cache
//! is cold) over a stand-in release generated with the **real boot parts** (Debian kernel,
//! Debian's systemd-stub, static busybox: `scripts/fetch-boot-parts`); see `common::boot`,
//! shared with `pxe_boot.rs`. The UKI is downloaded with `curl -L --retry` (built on this first
//! request, then `302` to the object route), checked with `objdump -h`, put on a FAT ESP made
//! with mtools as `EFI/BOOT/BOOTX64.EFI`, and booted by QEMU (TCG) with OVMF: the stub runs the
//! embedded `.linux` with `.initrd` and `.cmdline`.
//!
//! The release's `/init` (tools/stand-in-release/src/init_script.rs) reports on the serial
//! console what the booted system got; asserted here:
//! * the exact kernel command line: the UKI's `.cmdline`, with nothing added. A UKI never embeds
//!   META (as the Go imager), so for a schematic with META the `.cmdline` is not that
//!   schematic's `cmdline-metal-amd64` asset (which carries `talos.environment=…`) but the asset
//!   of the same schematic without META, byte for byte; and no `talos.environment` reaches the
//!   kernel;
//! * the schematic's two extensions and the schematic extension (its ID as version) in
//!   `extensions.yaml` with their `.sqsh` layers, the firmware and the early microcode;
//! * that the download built exactly one asset (the UKI; its initramfs is built inside).
//!
//! Select with `cargo nextest run -p factory-tests --test uki_boot` (~1–2 min). Needs LocalStack
//! (fails without it, like every `--aws` test), `qemu-system-x86 ovmf mtools binutils` and the
//! boot parts; skipped without those unless FACTORY_REQUIRE_BOOT=1 (scripts/test).
#![allow(clippy::unwrap_used)]

use crate::common::boot::{
    boot_parts_dir, esp_image, missing_prerequisite, qemu, skip, with_ovmf, BootRun, GuestServer, CMDLINE,
    OVMF_CODE, OVMF_VARS, SCHEMATIC,
};
use crate::common::inspect::{pe_section, pe_sections};
use crate::common::stand_in::VERSION;

/// [`SCHEMATIC`]'s META block: a UKI's command line is the cmdline asset of the schematic
/// without it.
const META_BLOCK: &str = "  meta:\n    - key: 10\n      value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n";

#[test]
fn ovmf_boots_talos_from_the_uki_route() {
    let missing = missing_prerequisite(
        &[(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")],
        &[
            ("mformat", "mtools"),
            ("mcopy", "mtools"),
            ("objdump", "binutils"),
        ],
    );
    if skip("UKI boot with OVMF", missing) {
        return;
    }
    let server = GuestServer::start(boot_parts_dir().expect("checked above"), "uki-boot");
    let id = server.post_schematic(SCHEMATIC);
    assert_eq!(server.built(), 0, "a cold cache");

    // The UKI, as a client downloads it.
    let downloaded = std::time::Instant::now();
    let uki = server.download(&format!("/image/{id}/{VERSION}/metal-amd64-uki.efi"));
    let download_time = downloaded.elapsed();
    assert_eq!(uki.status, 200, "{}", uki.text());
    assert_eq!(uki.header("content-type"), "application/efi");
    assert_eq!(
        server.built_at_least(1),
        1,
        "the UKI only (its initramfs is built inside)"
    );
    let dir = tempfile::tempdir().unwrap();
    let efi = dir.path().join("metal-amd64-uki.efi");
    std::fs::write(&efi, &uki.body).unwrap();

    // Its sections, as binutils sees them: the stub's, then the appended ones.
    let sections = pe_sections(&efi);
    let appended: Vec<&str> = sections
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s != ".osrel")
        .collect();
    assert_eq!(
        appended,
        [".osrel", ".cmdline", ".uname", ".linux", ".initrd", ".profile"],
        "{sections:?}"
    );
    assert!(
        sections.iter().any(|s| s == ".text"),
        "the stub's code: {sections:?}"
    );

    // Its command line: the cmdline asset of the schematic without META (a UKI never embeds
    // it); the schematic's own asset is that plus `talos.environment`.
    let embedded = String::from_utf8(pe_section(&efi, ".cmdline")).unwrap();
    let asset = server.download(&format!("/image/{id}/{VERSION}/cmdline-metal-amd64"));
    assert_eq!(asset.status, 200, "{}", asset.text());
    assert_eq!(asset.text(), CMDLINE);
    let without_meta = server.post_schematic(&SCHEMATIC.replace(META_BLOCK, ""));
    assert_ne!(without_meta, id);
    let uki_rules = server.download(&format!("/image/{without_meta}/{VERSION}/cmdline-metal-amd64"));
    assert_eq!(uki_rules.status, 200, "{}", uki_rules.text());
    assert_eq!(embedded, uki_rules.text(), "the UKI's .cmdline");
    let stripped: Vec<&str> = CMDLINE
        .split(' ')
        .filter(|arg| !arg.starts_with("talos.environment="))
        .collect();
    assert_eq!(embedded, stripped.join(" "), "the cmdline asset less META");

    // Boot it: OVMF finds the removable-media path on the ESP, the stub boots the kernel.
    let esp = dir.path().join("esp.img");
    esp_image(&efi, &esp);
    let mut qemu = qemu();
    with_ovmf(&mut qemu, dir.path());
    qemu.args(["-nic", "none", "-drive"])
        .arg(format!("if=virtio,format=raw,file={}", esp.display()));
    let run = BootRun::run(&mut qemu);
    run.assert_completed(&server);
    let report = &run.report;

    // Exactly the embedded command line (the firmware passes no options; the stub adds
    // nothing), so no META.
    assert_eq!(run.cmdline(), embedded, "{report:#?}");
    assert_eq!(run.environment(), ["(none)"], "{report:#?}");

    // The initramfs in `.initrd`: the two extensions and the schematic's, with their layers,
    // the firmware and the microcode.
    run.check_schematic_extensions(&server, &id);

    eprintln!(
        "UKI with OVMF: release generated in {:.1?}, UKI ({:.1} MiB) built and downloaded in {:.1?} \
         (cold cache), boot {:.1?}; sections {sections:?}; report:\n{}",
        server.generated(),
        uki.body.len() as f64 / 1048576.0,
        download_time,
        run.elapsed,
        report.join("\n")
    );
}
