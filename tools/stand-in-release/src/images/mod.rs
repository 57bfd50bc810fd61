//! The images of a Talos release, one module per image family. Each builder adds its blobs and
//! tags to the [`Store`](crate::oci::Store) and returns the tagged descriptor.

pub mod extensions;
pub mod imager;
pub mod installer;
pub mod overlays;
pub mod talosctl;

use std::collections::BTreeMap;

use crate::versions::Release;

/// The registry the references inside the release name (catalog lines, signatures, overlay
/// refs): the stand-in release is a copy of what `ghcr.io` serves, wherever it is pushed.
pub const REGISTRY: &str = "ghcr.io";

/// Repository paths (the directory names under `--out`, and the registry repositories).
pub const IMAGER: &str = "siderolabs/imager";
pub const INSTALLER_BASE: &str = "siderolabs/installer-base";
pub const INSTALLER: &str = "siderolabs/installer";
pub const EXTENSIONS: &str = "siderolabs/extensions";
pub const OVERLAYS: &str = "siderolabs/overlays";
pub const TALOSCTL_ALL: &str = "siderolabs/talosctl-all";

/// Labels every image of a release carries.
pub fn labels(release: &Release) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "org.opencontainers.image.source".to_owned(),
            "https://github.com/siderolabs/talos".to_owned(),
        ),
        (
            "org.opencontainers.image.version".to_owned(),
            release.tag.to_owned(),
        ),
        (
            "org.opencontainers.image.vendor".to_owned(),
            "talos-factory-rs stand-in release".to_owned(),
        ),
    ])
}

/// A small executable stand-in: a POSIX shell script that says what it stands for.
pub fn stand_in_script(what: &str, release: &str, arch: &str) -> String {
    format!(
        "#!/bin/sh\n# {what} {release} ({arch}): stand-in from talos-factory-rs tools/stand-in-release\n\
         echo \"{what} {release} ({arch}) stand-in\"\n"
    )
}
