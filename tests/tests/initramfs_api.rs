//! The customised initramfs and the UKI through the image route (issue 5): `image-factory-local`
//! over the stand-in Talos release, driven with `curl`, on both backends where the bytes travel
//! (`fs::*`, `s3::*` on LocalStack), and what it serves taken apart with independent tools
//! (`cpio`, `zstd`, `unsquashfs`, `objdump`, `objcopy`; see `common::inspect`).
//!
//! * `initramfs-amd64.xz` of a schematic with two extensions: the leading early-microcode archive,
//!   the release initramfs byte for byte, the appended zstd archive with one squashfs layer per
//!   extension plus the schematic's, the firmware, and `extensions.yaml`; rebuilt after its object
//!   vanished, the same bytes.
//! * `metal-amd64-uki.efi`: the sections `objdump` sees, `.cmdline` equal to the
//!   `cmdline-metal-amd64` asset, `.initrd` equal to the `initramfs-amd64.xz` asset (a second,
//!   independent build of the same bytes), `.linux` the release kernel.
//! * Refusals: an extension the version's catalog lacks is a `400` naming it and the version,
//!   before anything is enqueued; one the catalog lists but whose manifest excludes the version
//!   is the builder's `400`, remembered in the negative cache.
#![allow(clippy::unwrap_used)]

use crate::common::curl::curl;
use crate::common::image::{assert_error, assert_same_bytes, download, redirect_key, Backend, ImageServer};
use crate::common::inspect::{
    cpio_extract, cpio_list, pe_section, pe_sections, split_leading_cpio, unsquashfs_list, zstd_decompress,
    zstd_test,
};
use crate::common::stand_in::VERSION;
use factory_core::arch::Arch;
use factory_core::cmdline::{kernel_cmdline, CmdlineInput};
use factory_core::version::TalosVersion;

crate::common::image::backend_tests!(initramfs_with_extensions, uki_without_secureboot);

/// The release initramfs of `amd64` inside the imager image.
const BASE_INITRAMFS: &str = "usr/install/amd64/initramfs.xz";

/// Two official extensions (the firmware one by its full name, Intel microcode by its short
/// name), extra kernel args and, when `meta`, a META value.
fn schematic(meta: bool) -> String {
    let meta = if meta {
        "  meta:\n    - key: 10\n      value: hello\n"
    } else {
        ""
    };
    format!(
        "customization:\n  extraKernelArgs:\n    - net.ifnames=0\n    - console=ttyS1\n{meta}  \
         systemExtensions:\n    officialExtensions:\n      - siderolabs/stand-in-firmware\n      - intel-ucode\n"
    )
}

fn initramfs_with_extensions(backend: Backend) {
    // It deletes the built object and expects the very next request to notice.
    let server = ImageServer::start_checking_every_request(backend);
    let url = server.url().to_owned();
    let id = server.post_schematic(&schematic(true));
    let path = format!("/image/{id}/{VERSION}/initramfs-amd64.xz");

    let initramfs = download(&url, &path);
    assert_eq!(initramfs.status, 200, "{}", initramfs.text());
    assert_eq!(initramfs.header("content-type"), "application/x-xz");
    assert_eq!(
        initramfs.header("content-disposition"),
        "attachment; filename=\"initramfs-amd64.xz\""
    );
    let base = server.release_file(VERSION, BASE_INITRAMFS);
    check_initramfs(&initramfs.body, &base, &id);

    // Deterministic: the object gone, the next request rebuilds exactly the same bytes (and so
    // the same content address).
    let key = redirect_key(&curl(&url, &[], &path));
    server.block_on(server.store().delete(&key)).unwrap();
    let rebuilt = download(&url, &path);
    assert_eq!(rebuilt.status, 200, "{}", rebuilt.text());
    assert_eq!(server.built_at_least(2), 2, "rebuilt once");
    assert_same_bytes(&rebuilt.body, &initramfs.body, "the rebuilt initramfs");
    assert_eq!(redirect_key(&curl(&url, &[], &path)), key);
}

/// `[raw cpio: early microcode] [the release initramfs] [zstd cpio: layers, firmware,
/// extensions.yaml]`, as the Talos imager writes it (talos-imager §5.2).
fn check_initramfs(bytes: &[u8], base: &[u8], id: &str) {
    let scratch = tempfile::tempdir().unwrap();

    let (microcode, rest) = split_leading_cpio(bytes);
    assert_eq!(
        cpio_list(microcode),
        [
            "kernel",
            "kernel/x86",
            "kernel/x86/microcode",
            "kernel/x86/microcode/GenuineIntel.bin"
        ]
    );
    cpio_extract(microcode, &scratch.path().join("microcode"));
    let intel = std::fs::read(
        scratch
            .path()
            .join("microcode/kernel/x86/microcode/GenuineIntel.bin"),
    )
    .unwrap();
    assert_eq!(intel.len(), 2 * 2048, "both Intel blobs, concatenated");
    assert!(intel.starts_with(b"STAND-IN intel-ucode 06-55-04"));
    assert!(intel[2048..].starts_with(b"STAND-IN intel-ucode 06-8f-08"));

    assert!(
        rest.starts_with(base),
        "the release initramfs follows the microcode, byte for byte"
    );
    let appended = &rest[base.len()..];
    zstd_test(appended);
    let archive = zstd_decompress(appended);
    let listing = cpio_list(&archive);
    for member in [
        "0.sqsh",
        "1.sqsh",
        "2.sqsh",
        "extensions.yaml",
        "usr/lib/firmware/stand-in/stand-in-fw.bin",
        "usr/lib/firmware/stand-in/LICENSE.stand-in",
    ] {
        assert!(listing.iter().any(|m| m == member), "{member} in {listing:?}");
    }
    assert!(
        !listing.iter().any(|m| m.contains("intel-ucode/")),
        "the microcode blobs went to the early archive only (their directory stays, as with the imager): \
         {listing:?}"
    );

    let unpacked = scratch.path().join("appended");
    cpio_extract(&archive, &unpacked);
    let yaml = std::fs::read_to_string(unpacked.join("extensions.yaml")).unwrap();
    let at = |part: &str| {
        yaml.find(part)
            .unwrap_or_else(|| panic!("{part:?} is not in extensions.yaml:\n{yaml}"))
    };
    // Schematic order, then the schematic's own layer, with its ID and the factory as author.
    assert!(at("image: 0.sqsh") < at("name: stand-in-firmware"));
    assert!(at("name: stand-in-firmware") < at("image: 1.sqsh"));
    assert!(at("image: 1.sqsh") < at("name: intel-ucode"));
    assert!(at("name: intel-ucode") < at("image: 2.sqsh"));
    assert!(at("image: 2.sqsh") < at("name: schematic"));
    at(&format!("version: {id}"));
    at("Image Factory (http://127.0.0.1:");
    at("extraInfo:");
    assert!(
        unsquashfs_list(&unpacked.join("2.sqsh")).contains(&format!("usr/local/share/schematic/{id}")),
        "the schematic layer carries the ID marker"
    );
}

fn uki_without_secureboot(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let id = server.post_schematic(&schematic(false));
    let image = |path: &str| {
        let reply = download(&url, &format!("/image/{id}/{VERSION}/{path}"));
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        reply
    };

    let uki = image("metal-amd64-uki.efi");
    assert_eq!(uki.header("content-type"), "application/efi");
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("metal-amd64-uki.efi");
    std::fs::write(&file, &uki.body).unwrap();

    let sections = pe_sections(&file);
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

    // The same command line as the cmdline asset (no META in this schematic: UKIs never embed it).
    let cmdline = image("cmdline-metal-amd64");
    assert_eq!(pe_section(&file, ".cmdline"), cmdline.body);
    assert!(cmdline.text().contains(" net.ifnames=0"), "{}", cmdline.text());
    // The initrd is the initramfs asset of the schematic: a separate build, the same bytes.
    let initramfs = image("initramfs-amd64.xz");
    assert_same_bytes(&pe_section(&file, ".initrd"), &initramfs.body, ".initrd");
    let kernel = server.release_kernel();
    assert_same_bytes(&pe_section(&file, ".linux"), &kernel, ".linux");

    let osrel = String::from_utf8(pe_section(&file, ".osrel")).unwrap();
    assert!(osrel.contains("NAME=\"Talos\"\n"), "{osrel}");
    assert!(osrel.contains(&format!("VERSION_ID={VERSION}\n")), "{osrel}");
    let uname = pe_section(&file, ".uname");
    assert!(!uname.is_empty());
    let banner = [uname.as_slice(), b" ("].concat();
    assert!(
        kernel.windows(banner.len()).any(|w| w == banner),
        "{:?} is the kernel's version",
        String::from_utf8_lossy(&uname)
    );
    assert_eq!(pe_section(&file, ".profile"), b"ID=main");
}

/// Before Talos 1.10 a UKI has no boot profile and no extra kernel args (nor ever META); with
/// SecureBoot it is not built yet.
#[test]
fn uki_version_gates_and_secureboot() {
    let server = ImageServer::start(Backend::Fs);
    let url = server.url().to_owned();
    let id = server.post_schematic(&schematic(true));
    let version = "v1.9.5";
    let uki = download(&url, &format!("/image/{id}/{version}/metal-amd64-uki.efi"));
    assert_eq!(uki.status, 200, "{}", uki.text());
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("uki.efi");
    std::fs::write(&file, &uki.body).unwrap();
    let sections = pe_sections(&file);
    assert!(!sections.iter().any(|s| s == ".profile"), "{sections:?}");
    let expected = kernel_cmdline(&CmdlineInput {
        platform: "metal",
        arch: Arch::Amd64,
        version: &TalosVersion::parse(version).unwrap(),
        secureboot: false,
        iso: false,
        extra_kernel_args: &[],
        overlay_kernel_args: &[],
        meta: &[],
    });
    assert_eq!(
        String::from_utf8(pe_section(&file, ".cmdline")).unwrap(),
        expected
    );
    check_base_follows(
        &pe_section(&file, ".initrd"),
        &server.release_file(version, BASE_INITRAMFS),
    );

    let secureboot = curl(
        &url,
        &[],
        &format!("/image/{id}/{VERSION}/metal-amd64-secureboot-uki.efi"),
    );
    assert_error(
        &secureboot,
        501,
        "metal-amd64-secureboot-uki.efi: SecureBoot assets are not built by this factory yet",
    );
}

/// The initramfs of an older release: the microcode archive, then that release's initramfs.
fn check_base_follows(initrd: &[u8], base: &[u8]) {
    let (_, rest) = split_leading_cpio(initrd);
    assert!(
        rest.starts_with(base),
        "the release initramfs follows the microcode"
    );
}

/// Extensions the version's catalog lacks are refused at once, before anything is enqueued;
/// one the catalog lists but that does not support the version is refused by the builder, and
/// that answer is remembered.
#[test]
fn extension_errors() {
    let server = ImageServer::start(Backend::Fs);
    let url = server.url().to_owned();
    let with = |names: &[&str]| {
        let list: String = names.iter().map(|n| format!("      - {n}\n")).collect();
        server.post_schematic(&format!(
            "customization:\n  systemExtensions:\n    officialExtensions:\n{list}"
        ))
    };
    let unknown = with(&["siderolabs/stand-in-firmware", "siderolabs/nope"]);
    let short = with(&["nope"]);
    let legacy = with(&["siderolabs/legacy-only"]);
    let refused = |id: &str, version: &str, path: &str, name: &str| {
        let path = format!("/image/{id}/{version}/{path}");
        let message = format!(
            "error enhancing profile from schematic: official extension \"{name}\" is not available \
             for Talos version {version}"
        );
        assert_error(&curl(&url, &[], &path), 400, &message);
        assert_eq!(curl(&url, &["--head"], &path).status, 400, "HEAD {path}");
    };
    refused(&unknown, VERSION, "initramfs-amd64.xz", "siderolabs/nope");
    refused(&unknown, VERSION, "metal-amd64-uki.efi", "siderolabs/nope");
    // As in Go, before the kind is looked at.
    refused(&unknown, VERSION, "metal-amd64.iso", "siderolabs/nope");
    refused(&short, VERSION, "initramfs-arm64.xz", "nope");
    // The stand-in catalogs list legacy-only below 1.12 only.
    refused(&legacy, VERSION, "initramfs-amd64.xz", "siderolabs/legacy-only");
    for prefix in ["claims/", "failures/", "index/", "staging/"] {
        assert!(
            server.list(prefix).is_empty(),
            "{prefix}: {:?}",
            server.list(prefix)
        );
    }

    // Listed for 1.11, but its manifest wants Talos < 1.10: the builder's user error.
    let path = format!("/image/{legacy}/v1.11.3/initramfs-amd64.xz");
    let message = "error validating extension \"legacy-only\" (version 0.9.0): version constraint \
                   < v1.10.0 can't be satisfied with Talos version 1.11.3";
    assert_error(&download(&url, &path), 400, message);
    assert_eq!(server.list("failures/").len(), 1, "negative-cached");
    assert_error(&curl(&url, &[], &path), 400, message);
    assert_eq!(curl(&url, &["--head"], &path).status, 400);
    assert!(server.list("index/").is_empty());
    assert_eq!(server.built(), 0);
    // The same builder is fine with the next asset.
    let kernel = download(&url, &format!("/image/{legacy}/v1.11.3/kernel-amd64"));
    assert_eq!(kernel.status, 200, "{}", kernel.text());
}
