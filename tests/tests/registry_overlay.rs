//! Installers with a board overlay (issue 7, talos-imager §11.2 step 4) through
//! `image-factory-local` over the stand-in release, read with `skopeo` as a client does.
//!
//! * `overlay_installer_has_the_overlay_layer` (embedded store): a schematic with the stand-in
//!   overlay (`stand-in-board` of `siderolabs/sbc-stand-in`, whose installer is a shell script
//!   speaking the overlay protocol), overlay options and an extra kernel arg; the arm64 image of
//!   `metal-installer/<id>:<version>` has three layers, the third with
//!   `overlay/artifacts/arm64/firmware/boot/config.txt`, the executable
//!   `overlay/installers/default` and `overlay/extra-options` (the options); the UKI's
//!   `.cmdline` has the kernel args the overlay's `get-options` answered and the schematic's.
//! * `overlay_refusals` (embedded store): an overlay the version's catalog does not have is a
//!   `400` naming it (image route and registry); a UKI with an overlay is still `501`.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;

use crate::common::curl::curl;
use crate::common::image::{assert_error, Backend, ImageServer};
use crate::common::oci::{copy_arch, extract_layer, host, layout_blob, layout_manifest, pe_section, skopeo};
use crate::common::stand_in::VERSION;

/// The stand-in overlay (tools/stand-in-release/src/images/overlays.rs).
const BOARD: &str = "stand-in-board";
const OVERLAY_IMAGE: &str = "siderolabs/sbc-stand-in";
/// What the stand-in's `get-options` answers as `kernelArgs`.
const OVERLAY_ARGS: [&str; 2] = ["console=ttyS2,1500000n8", "stand-in.board=stand-in-board"];

fn overlay_schematic(name: &str, marker: &str) -> String {
    format!(
        "overlay:\n  name: {name}\n  image: {OVERLAY_IMAGE}\n  options:\n    \
         configTxtAppend: dtoverlay=stand-in-{marker}\ncustomization:\n  extraKernelArgs:\n    \
         - test.overlay={marker}\n"
    )
}

#[test]
fn overlay_installer_has_the_overlay_layer() {
    let server = ImageServer::start(Backend::Fs);
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let id = server.post_schematic(&overlay_schematic(BOARD, &marker));
    let reference = format!("{}/metal-installer/{id}:{VERSION}", host(&server));
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("oci-arm64");
    copy_arch(&reference, "arm64", &layout);
    let manifest = layout_manifest(&layout);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "base + artifacts + overlay: {manifest}");
    let config: serde_json::Value = serde_json::from_slice(&layout_blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["architecture"], "arm64", "{config}");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        3,
        "{config}"
    );

    // The overlay layer.
    let root = work.path().join("overlay");
    let members = extract_layer(&layout, layers[2]["digest"].as_str().unwrap(), &root);
    for member in [
        "overlay",
        "overlay/artifacts/arm64/firmware/boot/config.txt",
        &format!("overlay/artifacts/arm64/u-boot/{BOARD}/u-boot.bin"),
        "overlay/installers/default",
        "overlay/extra-options",
    ] {
        assert!(members.iter().any(|m| m == member), "{member} in {members:?}");
    }
    let config_txt =
        std::fs::read_to_string(root.join("overlay/artifacts/arm64/firmware/boot/config.txt")).unwrap();
    assert!(config_txt.contains("arm_64bit=1"), "{config_txt}");
    let installer = root.join("overlay/installers/default");
    let mode = std::fs::metadata(&installer).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "executable: {mode:o}");
    let script = std::fs::read_to_string(&installer).unwrap();
    assert!(
        script.starts_with("#!/bin/sh") && script.contains("(arm64)"),
        "the arm64 installer: {script}"
    );
    let options = std::fs::read_to_string(root.join("overlay/extra-options")).unwrap();
    assert!(
        options.contains("configTxtAppend") && options.contains(&format!("dtoverlay=stand-in-{marker}")),
        "{options}"
    );

    // The artifacts layer's UKI: the overlay's kernel args (from get-options) and the schematic's.
    let artifacts = work.path().join("artifacts");
    let ours = extract_layer(&layout, layers[1]["digest"].as_str().unwrap(), &artifacts);
    assert!(
        ours.iter().any(|m| m == "usr/install/arm64/vmlinuz.efi"),
        "{ours:?}"
    );
    let cmdline = String::from_utf8(pe_section(
        &artifacts.join("usr/install/arm64/vmlinuz.efi"),
        ".cmdline",
    ))
    .unwrap();
    for arg in OVERLAY_ARGS
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("test.overlay={marker}")])
    {
        assert!(cmdline.split_whitespace().any(|a| a == arg), "{arg} in {cmdline}");
    }

    // The tarball download is the same image (the registry's arm64 manifest).
    let tarball = crate::common::image::download(
        server.url(),
        &format!("/image/{id}/{VERSION}/metal-installer-arm64.tar"),
    );
    assert_eq!(tarball.status, 200, "{}", tarball.text());
    let archive = work.path().join("installer.tar");
    std::fs::write(&archive, &tarball.body).unwrap();
    let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{}", archive.display())]);
    let from_tarball: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(from_tarball, manifest);
}

#[test]
fn overlay_refusals() {
    let server = ImageServer::start(Backend::Fs);
    let unknown = server.post_schematic(&overlay_schematic("no-such-board", "refused"));
    let reply = curl(
        server.url(),
        &[],
        &format!("/image/{unknown}/{VERSION}/metal-installer-arm64.tar"),
    );
    assert_error(&reply, 400, "\"no-such-board\" is not available");
    assert!(reply.text().contains(VERSION), "{}", reply.text());
    // The registry: the same refusal in the OCI envelope.
    let reply = curl(
        server.url(),
        &[],
        &format!("/v2/metal-installer/{unknown}/manifests/{VERSION}"),
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["errors"][0]["code"], "MANIFEST_INVALID");
    assert!(reply.text().contains("no-such-board"), "{}", reply.text());

    let id = server.post_schematic(&overlay_schematic(BOARD, "uki"));
    let reply = curl(
        server.url(),
        &[],
        &format!("/image/{id}/{VERSION}/metal-arm64-uki.efi"),
    );
    assert_error(&reply, 501, "overlay");
    assert_eq!(server.built(), 0, "nothing was built");
}
