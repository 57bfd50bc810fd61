//! The overlay image `siderolabs/sbc-stand-in` (talos-imager §12.1) and the
//! `siderolabs/overlays:<v>` catalog (spec §10.3), for Talos 1.7 and later.
//!
//! The overlay's installer is a POSIX shell script that speaks the overlay installer protocol
//! (§12.2: `get-options` / `install`, YAML on stdin), so the factory can really run it.

use super::{labels, OVERLAYS, REGISTRY};
use crate::oci::{Descriptor, ImageConfig, Layer, Store};
use crate::tree::Tree;
use crate::versions::Release;
use crate::yaml::quote;
use crate::Error;

pub const REPOSITORY: &str = "siderolabs/sbc-stand-in";
pub const TAG: &str = "v0.1.0";
/// The board (overlay name) the image provides.
pub const BOARD: &str = "stand-in-board";

/// Builds (once) the overlay image; returns its index descriptor.
pub fn build_overlay(store: &mut Store, release: &Release) -> Result<Descriptor, Error> {
    if let Some(existing) = store.tagged(REPOSITORY, TAG) {
        return Ok(existing.clone());
    }
    let repo = store.repo(REPOSITORY);
    let index = repo.multi_arch(|arch| {
        // SBC artifacts are arm64 builds in both platform variants (only the installer binary is
        // built per platform), as in the real sbc-* images.
        let mut tree = Tree::new();
        let artifacts = "artifacts/arm64";
        tree.file(
            &format!("{artifacts}/u-boot/{BOARD}/u-boot.bin"),
            filler("u-boot", 4096),
        );
        tree.file(
            &format!("{artifacts}/firmware/boot/{BOARD}.dtb"),
            filler("dtb", 2048),
        );
        tree.file(
            &format!("{artifacts}/firmware/boot/config.txt"),
            "# stand-in board config\narm_64bit=1\n",
        );
        tree.exec(&format!("installers/{BOARD}"), installer_script(arch.name()));
        tree.file(&format!("profiles/{BOARD}.yaml"), PROFILE);
        let config = ImageConfig {
            labels: labels(release),
            history: vec![format!("overlay {REPOSITORY}:{TAG} ({})", arch.name())],
            ..ImageConfig::default()
        };
        Ok((vec![Layer::from_tree(&tree)?], config))
    })?;
    repo.tag(REPOSITORY, TAG, &index)?;
    Ok(index)
}

/// Builds the overlay image if needed and the catalog `overlays:<v>`.
pub fn build_catalog(store: &mut Store, release: &Release) -> Result<Descriptor, Error> {
    let overlay = build_overlay(store, release)?;
    let yaml = format!(
        "overlays:\n  - name: {}\n    image: {}\n    digest: {}\n",
        quote(BOARD),
        quote(&format!("{REGISTRY}/{REPOSITORY}:{TAG}")),
        quote(&overlay.digest)
    );
    let mut tree = Tree::new();
    tree.file("overlays.yaml", yaml);
    let layer = Layer::from_tree(&tree)?;
    let repo = store.repo(OVERLAYS);
    let index = repo.multi_arch(|_| {
        let config = ImageConfig {
            labels: labels(release),
            history: vec![format!("overlays catalog {}", release.tag)],
            ..ImageConfig::default()
        };
        Ok((vec![layer.clone()], config))
    })?;
    repo.tag(OVERLAYS, release.tag, &index)?;
    Ok(index)
}

/// The board's imager profile (merged into the request profile by the factory).
const PROFILE: &str =
    "arch: arm64\nplatform: metal\nsecureboot: false\noutput:\n  kind: image\n  outFormat: .xz\n  \
                       imageOptions:\n    diskSize: 1306525696\n    diskFormat: raw\n    bootloader: grub\n";

fn filler(label: &str, len: usize) -> Vec<u8> {
    format!("STAND-IN {BOARD} {label} ")
        .bytes()
        .cycle()
        .take(len)
        .collect()
}

/// The installer: `get-options` answers the board's options; `install` writes u-boot at 32 KiB
/// into the disk image and drops the device tree into `<mountPrefix>/boot/EFI/`.
fn installer_script(arch: &str) -> String {
    format!(
        r#"#!/bin/sh
# Overlay installer for {BOARD} ({arch}): stand-in from talos-factory-rs tools/stand-in-release.
# Protocol (talos-imager 12.2): one argument, YAML on stdin.
set -eu
value() {{ printf '%s\n' "$input" | sed -n "s/^[[:space:]]*$1:[[:space:]]*//p" | head -n 1 | tr -d "\"'"; }}
case "${{1:-}}" in
get-options)
    cat >/dev/null
    printf 'name: {BOARD}\nkernelArgs:\n  - console=ttyS2,1500000n8\n  - stand-in.board={BOARD}\npartitionOptions:\n  offset: 20480\n'
    ;;
install)
    input=$(cat)
    disk=$(value installDisk)
    prefix=$(value mountPrefix)
    artifacts=$(value artifactsPath)
    dd if="$artifacts/arm64/u-boot/{BOARD}/u-boot.bin" of="$disk" bs=1024 seek=32 conv=notrunc 2>/dev/null
    mkdir -p "$prefix/boot/EFI"
    cp "$artifacts/arm64/firmware/boot/{BOARD}.dtb" "$prefix/boot/EFI/{BOARD}.dtb"
    ;;
*)
    echo "usage: $0 get-options|install" >&2
    exit 1
    ;;
esac
"#
    )
}
