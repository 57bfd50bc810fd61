//! Files of the release's imager image (`usr/install/<arch>/…`, talos-imager §2.1), pulled by the
//! exact digest the spec names and extracted to a scratch directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use factory_core::arch::Arch;
use factory_pipeline::AssembleError;
use factory_upstream::Upstream;

use crate::spec::{spec_error, IMAGER_INPUT};
use crate::upstream_error;

/// The kernel (`input.kernel`).
pub const KERNEL: &str = "vmlinuz";
/// The base initramfs (`input.initramfs`; zstd since 1.8 despite the name).
pub const INITRAMFS: &str = "initramfs.xz";
/// The systemd-stub the UKI is built on (`input.sdStub`).
pub const SD_STUB: &str = "systemd-stub.efi";
/// systemd-boot, the UEFI boot loader of ISOs and disk images (`input.sdBoot`).
pub const SD_BOOT: &str = "systemd-boot.efi";

/// The path of `name` for `arch` inside the imager image.
pub fn install_path(arch: Arch, name: &str) -> String {
    format!("usr/install/{arch}/{name}")
}

/// Extracts `names` (under `usr/install/<arch>/`) of the imager image the spec's inputs name
/// (signature verified) into `dir`, in one pass over its layers; their paths, in `names` order.
/// A missing file is a user error naming it: the version does not ship it for `arch`.
pub async fn extract(
    upstream: &Upstream,
    inputs: &BTreeMap<String, String>,
    arch: Arch,
    names: &[&str],
    dir: &Path,
) -> Result<Vec<PathBuf>, AssembleError> {
    let digest = inputs
        .get(IMAGER_INPUT)
        .ok_or_else(|| spec_error("no imager digest"))?;
    let image = upstream
        .resolve(&upstream.config().components.imager, digest)
        .await
        .map_err(upstream_error)?;
    let wanted: Vec<String> = names.iter().map(|name| install_path(arch, name)).collect();
    let filter = |path: &str| {
        let path = path.trim_start_matches('/');
        wanted.iter().any(|w| w == path)
    };
    upstream
        .extract(&image, arch, dir, &filter)
        .await
        .map_err(upstream_error)?;
    let mut paths = Vec::with_capacity(wanted.len());
    for relative in &wanted {
        let path = dir.join(relative);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) if meta.is_file() => paths.push(path),
            Ok(_) => {
                return Err(AssembleError::User(format!(
                    "{} has no regular file {relative}",
                    image.name()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AssembleError::User(format!(
                    "{} has no {relative} for {arch}",
                    image.name()
                )))
            }
            Err(e) => {
                return Err(AssembleError::Retryable(format!(
                    "reading {}: {e}",
                    path.display()
                )))
            }
        }
    }
    Ok(paths)
}
