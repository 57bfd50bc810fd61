//! Heavy, the acceptance of issue 5: a machine boots Talos (the stand-in release) over the
//! network from the factory. `image-factory-local` runs in-process on the LocalStack backend
//! (`--aws`: S3 under a prefix of its own, its own SQS FIFO build queue, so every cache is
//! cold) over a stand-in release generated with the **real boot parts** (Debian kernel, static
//! busybox: `scripts/fetch-boot-parts`). QEMU (TCG) boots with Debian's iPXE (`ipxe-qemu`, the
//! virtio-net option ROM), BIOS (SeaBIOS) and UEFI (OVMF): DHCP hands iPXE the script URL
//! `http://10.0.2.2:<port>/pxe/<id>/v1.12.1/metal-amd64` as its boot file, which iPXE chains;
//! the script fetches `kernel-amd64` and `initramfs-amd64.xz` from the image route (built on
//! this first request, then `302` to the object route), and boots them.
//!
//! QEMU's user networking shows the host's loopback to the guest as `10.0.2.2`: the server's
//! external URL is `http://10.0.2.2:<port>/`, so the script's URLs and the redirects are what
//! the guest reaches (`common::boot`, shared with `uki_boot.rs`).
//!
//! The release's `/init` (tools/stand-in-release/src/init_script.rs) reports on the serial
//! console what the booted system got; asserted here: the exact kernel command line (the
//! cmdline asset: Talos' defaults, the schematic's two extra args, `talos.environment` whose
//! `INSTALLER_META_BASE64` decodes to the META value of key 0xa — plus what iPXE adds), the
//! schematic's two extensions and the schematic extension in `extensions.yaml` with their
//! `.sqsh` layers, the firmware and the early microcode; and that the boot built exactly the
//! two assets (kernel, initramfs: the script's command line is computed, not built).
//!
//! Select with `cargo nextest run -p factory-tests --test pxe_boot` (~1–2 min per boot). Needs
//! LocalStack (fails without it, like every `--aws` test), `qemu-system-x86 ipxe-qemu ovmf` and
//! the boot parts; skipped without those unless FACTORY_REQUIRE_BOOT=1 (scripts/test).
#![allow(clippy::unwrap_used)]

use crate::common::boot::{
    base64_decode, boot_parts_dir, missing_prerequisite, qemu, skip, with_ovmf, BootRun, GuestServer,
    CMDLINE, META, OVMF_CODE, OVMF_VARS, SCHEMATIC,
};
use crate::common::stand_in::VERSION;

/// Debian's iPXE for virtio-net (BIOS and EFI images in one ROM): QEMU's default option ROM of
/// `virtio-net-pci`, found on its firmware path. (Naming it with `romfile=` makes SeaBIOS skip
/// it with this QEMU, so the default is relied on and only its presence checked.)
const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Firmware {
    Bios,
    Uefi,
}

fn boot(firmware: Firmware) {
    boot_from(firmware, false);
}

/// `stack`: the serverless stack of template.yaml serves instead of the local server.
fn boot_from(firmware: Firmware, stack: bool) {
    let mut files = vec![(IPXE_ROM, "ipxe-qemu")];
    if firmware == Firmware::Uefi {
        files.extend([(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf")]);
    }
    if skip(
        &format!("iPXE {firmware:?} boot"),
        missing_prerequisite(&files, &[]),
    ) {
        return;
    }
    let parts = boot_parts_dir().expect("checked above");
    let server = if stack {
        GuestServer::start_stack(parts)
    } else {
        GuestServer::start(parts, "pxe-boot")
    };
    let id = server.post_schematic(SCHEMATIC);
    let script_path = format!("/pxe/{id}/{VERSION}/metal-amd64");
    assert_eq!(server.built(), 0, "a cold cache");

    // Boot. The guest asks for the script itself (DHCP boot file), then for the assets.
    let dir = tempfile::tempdir().unwrap();
    let mut qemu = qemu();
    qemu.arg("-netdev")
        .arg(format!("user,id=n0,bootfile={}{script_path}", server.guest_url()));
    let nic = "virtio-net-pci,netdev=n0";
    match firmware {
        Firmware::Uefi => {
            with_ovmf(&mut qemu, dir.path());
            qemu.arg("-device").arg(format!("{nic},bootindex=1"));
        }
        Firmware::Bios => {
            qemu.args(["-device", nic, "-boot", "n"]);
        }
    }
    let run = BootRun::run(&mut qemu);
    run.assert_completed(&server);
    let report = &run.report;

    // The command line: the cmdline asset, after what iPXE puts first (UEFI: the image name;
    // both: the `initrd=` argument of our script).
    let expected_prefix = match firmware {
        Firmware::Bios => "initrd=initramfs-amd64.xz ",
        Firmware::Uefi => "kernel-amd64 initrd=initramfs-amd64.xz ",
    };
    let cmdline = run.cmdline();
    assert_eq!(cmdline, format!("{expected_prefix}{CMDLINE}"), "{report:#?}");
    let environment = run.environment();
    assert_eq!(environment.len(), 1, "{report:#?}");
    let encoded = environment[0]
        .strip_prefix("INSTALLER_META_BASE64=")
        .unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(String::from_utf8(base64_decode(encoded)).unwrap(), META);

    // The initramfs of the image route: the two extensions and the schematic's, with their
    // layers, the firmware and the microcode.
    run.check_schematic_extensions(&server, &id);

    // Built on this boot's requests: the kernel and the initramfs, nothing else; now published,
    // they are redirects to the object route at the address the guest reaches.
    let built = server.built();
    assert_eq!(built, 2, "kernel and initramfs; {}", run.context(&server));
    for file in ["kernel-amd64", "initramfs-amd64.xz"] {
        let reply = server.curl(&[], &format!("/image/{id}/{VERSION}/{file}"));
        assert_eq!(reply.status, 302, "{file}: {}", reply.text());
        let location = reply.header("location");
        assert!(
            location.starts_with(&format!("{}/assets/", server.guest_url()))
                && location.ends_with(&format!("/{file}")),
            "{file}: {location}"
        );
    }
    // And the command line the guest got is the cmdline asset, byte for byte.
    let asset = server.download(&format!("/image/{id}/{VERSION}/cmdline-metal-amd64"));
    assert_eq!(asset.status, 200, "{}", asset.text());
    assert_eq!(format!("{expected_prefix}{}", asset.text()), cmdline);

    eprintln!(
        "iPXE {firmware:?}: release generated in {:.1?}, boot (cold cache: kernel and initramfs \
         built on request) {:.1?}; report:\n{}",
        server.generated(),
        run.elapsed,
        report.join("\n")
    );
}

#[test]
fn ipxe_bios_boots_talos_from_the_pxe_route() {
    boot(Firmware::Bios);
}

#[test]
fn ipxe_uefi_boots_talos_from_the_pxe_route() {
    boot(Firmware::Uefi);
}

/// The same boot through the deployed shape: the PXE script from the pxe function behind the
/// HTTP API, the kernel and initramfs built by the builder function (fed by the SQS event source
/// mapping) and fetched through the image function's redirects to the CDN's /assets/.
#[test]
fn ipxe_bios_boots_talos_through_the_serverless_stack() {
    boot_from(Firmware::Bios, true);
}
