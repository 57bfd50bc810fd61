//! `siderolabs/talosctl-all:<v>` (since 1.11, spec §10.4): every talosctl build at the root of
//! the filesystem, `talosctl-<os>-<arch>[.exe]`, as small stand-ins.

use super::{labels, stand_in_script, TALOSCTL_ALL};
use crate::oci::{Descriptor, ImageConfig, Layer, Store};
use crate::tree::Tree;
use crate::versions::Release;
use crate::Error;

/// `(os, arch)` of the builds Talos publishes.
pub const BUILDS: [(&str, &str); 9] = [
    ("darwin", "amd64"),
    ("darwin", "arm64"),
    ("freebsd", "amd64"),
    ("freebsd", "arm64"),
    ("linux", "amd64"),
    ("linux", "arm64"),
    ("linux", "armv7"),
    ("windows", "amd64"),
    ("windows", "arm64"),
];

/// The file name of one build.
pub fn file_name(os: &str, arch: &str) -> String {
    let exe = if os == "windows" { ".exe" } else { "" };
    format!("talosctl-{os}-{arch}{exe}")
}

pub fn build(store: &mut Store, release: &Release) -> Result<Descriptor, Error> {
    let mut tree = Tree::new();
    for (os, arch) in BUILDS {
        tree.exec(
            &file_name(os, arch),
            stand_in_script("talosctl", release.tag, &format!("{os}/{arch}")),
        );
    }
    let layer = Layer::from_tree(&tree)?;
    let repo = store.repo(TALOSCTL_ALL);
    let index = repo.multi_arch(|_| {
        let config = ImageConfig {
            labels: labels(release),
            history: vec![format!("talosctl-all {}", release.tag)],
            ..ImageConfig::default()
        };
        Ok((vec![layer.clone()], config))
    })?;
    repo.tag(TALOSCTL_ALL, release.tag, &index)?;
    Ok(index)
}
