//! The schematic ID vectors of the Go factory's own tests (image-factory-spec §5.3).

use factory_core::schematic::{Schematic, SchematicError};

fn id(body: &str) -> String {
    let s = Schematic::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    s.id().to_string()
}

#[test]
fn empty_schematic_in_every_spelling() {
    let want = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
    for body in [
        "customization: {}",
        "{}",
        "customization: {\"extraKernelArgs\": []}",
        "---\n",
        "null",
        "customization:\n",
    ] {
        assert_eq!(id(body), want, "{body:?}");
    }
    assert_eq!(
        Schematic::parse(b"{}").map(|s| s.canonical_yaml()),
        Ok("customization: {}\n".into())
    );
}

#[test]
fn kernel_args() {
    assert_eq!(
        id("customization:\n  extraKernelArgs:\n    - noapic\n    - nolapic\n"),
        "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c"
    );
    assert_eq!(
        id(r#"{"customization":{"extraKernelArgs":["nolapic","nomodeset"]}}"#),
        "e0fb1129bbbdfb5d002e94af4cdce712a8370e850950a33a242d4c3f178c532d"
    );
}

#[test]
fn meta_values() {
    assert_eq!(
        id("customization:\n  meta:\n    - key: 0xa\n      value: foo\n"),
        "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f"
    );
    let body = "customization:\n  meta:\n    - key: 10\n      value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n";
    assert_eq!(
        id(body),
        "fe866116408a5a13dab7d5003eb57a00954ea81ebeec3fbbcd1a6d4462a00036"
    );
    let s = Schematic::parse(body.as_bytes()).expect("parses");
    assert_eq!(
        s.canonical_yaml(),
        "customization:\n    meta:\n        - key: 10\n          value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n"
    );
}

#[test]
fn extensions_keep_their_order() {
    let body = "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/amd-ucode\n      - siderolabs/gvisor\n      - siderolabs/gasket-driver\n";
    assert_eq!(
        id(body),
        "51ff3e49313773332729a5c04e57af0dbe2e6d3f65ff638e6d4c3a05065fefff"
    );
    assert_eq!(
        id("customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/qemu-guest-agent]\n"),
        "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
    );
}

#[test]
fn overlay() {
    assert_eq!(
        id("overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\ncustomization: {}\n"),
        "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9"
    );
}

#[test]
fn secureboot_disk_image_and_bootloaders() {
    assert_eq!(
        id("customization:\n  secureboot:\n    includeWellKnownCertificates: true\n"),
        "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6"
    );
    assert_eq!(
        id("customization:\n  diskImage:\n    sectorSize: 4096\n"),
        "92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea"
    );
    for (b, want) in [
        (
            "grub",
            "39d496b2cbdb6265d3b714514c5334bf010f1b4d31b23b9e38c80fb2f3ad7ecb",
        ),
        (
            "sd-boot",
            "9ed5fecdacb36b5c5427b87d409f1065cfb2df69b0f71c58b868d9d466d8dab3",
        ),
        (
            "SD-BOOT",
            "9ed5fecdacb36b5c5427b87d409f1065cfb2df69b0f71c58b868d9d466d8dab3",
        ),
        (
            "dual-boot",
            "43a1a6104d8dcd6547983f4ed13abb6f5e8a1b2fdad796c69e7db6e95d122884",
        ),
        (
            "none",
            "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
        ),
    ] {
        assert_eq!(id(&format!("customization:\n  bootloader: {b}\n")), want, "{b}");
    }
}

#[test]
fn embedded_machine_configuration_is_a_literal_block() {
    let body = "customization:\n  embeddedMachineConfiguration: |\n    apiVersion: v1alpha1\n    kind: HostnameConfig\n    hostname: x\n";
    assert_eq!(
        id(body),
        "9ac3dc5caac49e82fbbec38c43da76931796494729505840e038aea736ac46f1"
    );
}

#[test]
fn bad_inputs_are_refused_with_a_message() {
    let err = |body: &str| Schematic::parse(body.as_bytes()).expect_err(body).to_string();
    assert_eq!(
        err("something: 1"),
        "yaml: construct errors: line 1: field something not found in type schematic.Schematic"
    );
    assert!(err("customization:\n  meta:\n    - key: 300\n      value: x")
        .contains("cannot construct !!int `300` into uint8"));
    assert!(err("customization:\n  bootloader: foo").contains("foo does not belong to BootloaderKind values"));
    assert!(err("customization: [").starts_with("yaml: line 2:"));
    assert_eq!(Schematic::parse(b""), Err(SchematicError::Empty));
    assert_eq!(Schematic::parse(b"# nothing\n"), Err(SchematicError::Empty));
    let owner = Schematic::parse(b"owner: alice\n").expect("parses");
    assert!(owner.validate_community().is_err());
}
