//! System extension images (talos-imager §4.1) and the `siderolabs/extensions:<v>` catalog
//! (spec §10.2).
//!
//! Each extension is a multi-arch image whose filesystem has exactly `manifest.yaml` and
//! `rootfs/`. Like the real ones, some are tagged per Talos version (kernel modules, gvisor) and
//! some per upstream release (firmware, microcode, tools) and then shared by several catalogs.
//! Modules and firmware follow the usr-merge: `/usr/lib/...` since 1.10, `/lib/...` before, so
//! the firmware and microcode images of the two eras have different tags.

use bytes::Bytes;

use super::{labels, stand_in_script, EXTENSIONS, REGISTRY};
use crate::boot::BootParts;
use crate::oci::{Arch, Descriptor, ImageConfig, Layer, Store};
use crate::tree::Tree;
use crate::versions::Release;
use crate::yaml::quote;
use crate::Error;

/// The kinds of stand-in extensions, each exercising one branch of the imager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain firmware files: moved into the initramfs.
    Firmware,
    /// Intel microcode: concatenated into the early-microcode archive.
    IntelUcode,
    /// AMD microcode (`microcode_amd*.bin`): same, into `AuthenticAMD.bin`.
    AmdUcode,
    /// A kernel module under `<modules>/<kver>/extras`: triggers the depmod step.
    Module,
    /// A plain file under `/usr/local`: only a squashfs layer.
    Tools,
    /// Compatible only with Talos < 1.10: listed in the catalogs of versions < 1.12, so a
    /// request for it fails the compatibility check on 1.10/1.11 and is not found on >= 1.12.
    LegacyOnly,
    /// A runtime (`runsc` + CRI config), under a name the factory knows aliases for.
    Gvisor,
}

pub const ALL: [Kind; 7] = [
    Kind::Firmware,
    Kind::IntelUcode,
    Kind::AmdUcode,
    Kind::Module,
    Kind::Tools,
    Kind::LegacyOnly,
    Kind::Gvisor,
];

/// What one extension image of one release looks like.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    /// Repository path, e.g. `siderolabs/intel-ucode`.
    pub repository: &'static str,
    pub tag: String,
    pub author: &'static str,
    pub description: &'static str,
    /// blang/semver range against the Talos version, e.g. `>= v1.10.0`.
    pub compatibility: String,
}

const AUTHOR_SIDERO: &str = "Sidero Labs (stand-in)";
const AUTHOR_STAND_IN: &str = "talos-factory-rs stand-in release";

impl Kind {
    /// The spec of this extension for `release`, or `None` when its catalog does not list it.
    pub fn spec(self, release: &Release) -> Option<Spec> {
        let usr = release.usr_merged();
        let era = |usr_tag: &str, lib_tag: &str| {
            if usr {
                usr_tag.to_owned()
            } else {
                lib_tag.to_owned()
            }
        };
        let firmware_compat = if usr { ">= v1.10.0" } else { ">= v1.0.0" }.to_owned();
        let (repository, tag, author, description, compatibility) = match self {
            Kind::Firmware => (
                "siderolabs/stand-in-firmware",
                era("20250101", "20240101"),
                AUTHOR_STAND_IN,
                "Stand-in firmware blobs under the firmware directory (moved into the initramfs).",
                firmware_compat,
            ),
            Kind::IntelUcode => (
                "siderolabs/intel-ucode",
                era("20250211", "20240312"),
                AUTHOR_SIDERO,
                "Stand-in Intel microcode (early microcode archive GenuineIntel.bin).",
                firmware_compat,
            ),
            Kind::AmdUcode => (
                "siderolabs/amd-ucode",
                era("20250211", "20240312"),
                AUTHOR_SIDERO,
                "Stand-in AMD microcode (early microcode archive AuthenticAMD.bin).",
                firmware_compat,
            ),
            Kind::Module => (
                "siderolabs/stand-in-module",
                format!("1.0.0-{}", release.tag),
                AUTHOR_STAND_IN,
                "Stand-in kernel module under extras/ (triggers the modules.dep extension).",
                format!(">= {}", release.line()),
            ),
            Kind::Tools => (
                "siderolabs/stand-in-tools",
                "1.0.0".to_owned(),
                AUTHOR_STAND_IN,
                "Stand-in tool under /usr/local/bin.",
                ">= v1.2.0".to_owned(),
            ),
            Kind::LegacyOnly => {
                if release.at_least(1, 12) {
                    return None;
                }
                (
                    "siderolabs/legacy-only",
                    "0.9.0".to_owned(),
                    AUTHOR_STAND_IN,
                    "Stand-in extension that supports only Talos before 1.10.",
                    "< v1.10.0".to_owned(),
                )
            }
            Kind::Gvisor => (
                "siderolabs/gvisor",
                format!("20250505.0-{}", release.tag),
                AUTHOR_SIDERO,
                "Stand-in gVisor runtime (runsc) with its CRI configuration.",
                ">= v1.0.0".to_owned(),
            ),
        };
        Some(Spec {
            kind: self,
            repository,
            tag,
            author,
            description,
            compatibility,
        })
    }
}

impl Spec {
    /// `manifest.yaml` (version `v1alpha1`, talos-imager §4.1).
    pub fn manifest_yaml(&self) -> String {
        let name = self.repository.rsplit('/').next().unwrap_or(self.repository);
        format!(
            "version: v1alpha1\nmetadata:\n  name: {}\n  version: {}\n  author: {}\n  description: {}\n  \
             compatibility:\n    talos:\n      version: {}\n",
            quote(name),
            quote(&self.tag),
            quote(self.author),
            quote(self.description),
            quote(&self.compatibility)
        )
    }

    /// The files under `rootfs/` for `arch`.
    pub fn rootfs(&self, release: &Release, arch: Arch, boot: &BootParts) -> Tree {
        let fw = release.firmware_dir();
        let mut tree = Tree::new();
        match self.kind {
            Kind::Firmware => {
                tree.file(
                    &format!("{fw}/stand-in/stand-in-fw.bin"),
                    pattern("stand-in-fw", 1024),
                );
                tree.file(
                    &format!("{fw}/stand-in/LICENSE.stand-in"),
                    "Stand-in firmware: no rights reserved.\n",
                );
            }
            Kind::IntelUcode => {
                tree.file(
                    &format!("{fw}/intel-ucode/06-55-04"),
                    pattern("intel-ucode 06-55-04", 2048),
                );
                tree.file(
                    &format!("{fw}/intel-ucode/06-8f-08"),
                    pattern("intel-ucode 06-8f-08", 2048),
                );
            }
            Kind::AmdUcode => {
                tree.file(
                    &format!("{fw}/amd-ucode/microcode_amd_fam17h.bin"),
                    pattern("amd-ucode fam17h", 1536),
                );
                tree.file(
                    &format!("{fw}/amd-ucode/microcode_amd_fam19h.bin"),
                    pattern("amd-ucode fam19h", 1536),
                );
            }
            Kind::Module => {
                let dir = format!("{}/{}/extras", release.modules_dir(), boot.kernel_release);
                let body = format!(
                    "stand-in kernel module placeholder: {} {} kernel {}\n",
                    release.tag,
                    arch.name(),
                    boot.kernel_release
                );
                tree.file(&format!("{dir}/stand-in.ko"), body);
            }
            Kind::Tools => {
                tree.exec(
                    "usr/local/bin/stand-in-tool",
                    stand_in_script("stand-in-tool", &self.tag, arch.name()),
                );
                tree.file(
                    "usr/local/share/stand-in-tools/README",
                    "A stand-in system extension.\n",
                );
            }
            Kind::LegacyOnly => {
                tree.file(
                    "usr/local/share/legacy-only/README",
                    "Only for Talos before v1.10.0.\n",
                );
            }
            Kind::Gvisor => {
                tree.exec(
                    "usr/local/bin/runsc",
                    stand_in_script("runsc", &self.tag, arch.name()),
                );
                tree.exec(
                    "usr/local/bin/containerd-shim-runsc-v1",
                    stand_in_script("containerd-shim-runsc-v1", &self.tag, arch.name()),
                );
                tree.file(
                    "etc/cri/conf.d/gvisor.part",
                    "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runsc]\n  \
                     runtime_type = \"io.containerd.runsc.v1\"\n",
                );
            }
        }
        tree
    }

    /// `ghcr.io/<repository>:<tag>@<digest>`: a catalog line.
    pub fn catalog_line(&self, digest: &str) -> String {
        format!("{REGISTRY}/{}:{}@{digest}", self.repository, self.tag)
    }
}

/// Deterministic filler bytes that say what they stand for.
fn pattern(label: &str, len: usize) -> Bytes {
    let line = format!("STAND-IN {label} ");
    line.bytes().cycle().take(len).collect::<Vec<u8>>().into()
}

/// Builds (or reuses, when an earlier version's catalog already has it) one extension image.
pub fn build(
    store: &mut Store,
    release: &Release,
    spec: &Spec,
    boot: &BootParts,
) -> Result<Descriptor, Error> {
    if let Some(existing) = store.tagged(spec.repository, &spec.tag) {
        return Ok(existing.clone());
    }
    let repo = store.repo(spec.repository);
    let index = repo.multi_arch(|arch| {
        let mut tree = Tree::new();
        tree.file("manifest.yaml", spec.manifest_yaml());
        tree.dir("rootfs");
        tree.graft("rootfs", &spec.rootfs(release, arch, boot));
        debug_assert_eq!(tree.top_level(), ["manifest.yaml", "rootfs"]);
        let config = ImageConfig {
            labels: labels(release),
            history: vec![format!(
                "extension {}:{} ({})",
                spec.repository,
                spec.tag,
                arch.name()
            )],
            ..ImageConfig::default()
        };
        Ok((vec![Layer::from_tree(&tree)?], config))
    })?;
    repo.tag(spec.repository, &spec.tag, &index)?;
    Ok(index)
}

/// Builds the release's extension images and its catalog `siderolabs/extensions:<v>`.
pub fn build_catalog(store: &mut Store, release: &Release, boot: &BootParts) -> Result<Descriptor, Error> {
    let mut lines = Vec::new();
    for kind in ALL {
        let Some(spec) = kind.spec(release) else { continue };
        let descriptor = build(store, release, &spec, boot)?;
        lines.push((spec.catalog_line(&descriptor.digest), spec));
    }
    // The real catalog lists its lines sorted.
    lines.sort_by(|a, b| a.0.cmp(&b.0));

    let digests: String = lines.iter().map(|(line, _)| format!("{line}\n")).collect();
    let descriptions: String = lines
        .iter()
        .map(|(line, spec)| {
            format!(
                "{}:\n  author: {}\n  description: {}\n",
                quote(line),
                quote(spec.author),
                quote(spec.description)
            )
        })
        .collect();
    let mut tree = Tree::new();
    tree.file("image-digests", digests)
        .file("descriptions.yaml", descriptions);
    let layer = Layer::from_tree(&tree)?;

    let repo = store.repo(EXTENSIONS);
    let index = repo.multi_arch(|_| {
        let config = ImageConfig {
            labels: labels(release),
            history: vec![format!("extensions catalog {}", release.tag)],
            ..ImageConfig::default()
        };
        Ok((vec![layer.clone()], config))
    })?;
    repo.tag(EXTENSIONS, release.tag, &index)?;
    Ok(index)
}
