//! `siderolabs/imager:<v>`: the release's boot inputs under `usr/install/<arch>/` (both
//! architectures in every platform image, like the real imager, talos-imager §2.1).
//!
//! Three layers, so that the big, version-independent ones are stored once for all versions:
//! the boot assets (kernels, systemd-boot, systemd-stub: identical in every version), the
//! version's two initramfs, and a tiny per-architecture layer with the imager stand-in and the
//! depmod configuration the imager ships.

use bytes::Bytes;

use super::{labels, stand_in_script, IMAGER};
use crate::boot::BootParts;
use crate::oci::{Arch, Descriptor, ImageConfig, Layer, Store};
use crate::tree::Tree;
use crate::versions::Release;
use crate::Error;

/// The boot-assets layer shared by every version.
pub fn boot_assets_layer(boot: &BootParts) -> Result<Layer, Error> {
    let mut tree = Tree::new();
    for arch in Arch::ALL {
        let parts = boot.arch(arch);
        let dir = format!("usr/install/{}", arch.name());
        tree.file(&format!("{dir}/vmlinuz"), parts.vmlinuz.clone());
        tree.file(&format!("{dir}/systemd-boot.efi"), parts.systemd_boot.clone());
        tree.file(&format!("{dir}/systemd-stub.efi"), parts.systemd_stub.clone());
    }
    Layer::from_tree(&tree)
}

/// Builds and tags `imager:<release.tag>`; `initramfs` yields the version's initramfs per arch.
pub fn build(
    store: &mut Store,
    release: &Release,
    boot_assets: &Layer,
    initramfs: &dyn Fn(Arch) -> Bytes,
) -> Result<Descriptor, Error> {
    let mut tree = Tree::new();
    for arch in Arch::ALL {
        tree.file(
            &format!("usr/install/{}/initramfs.xz", arch.name()),
            initramfs(arch),
        );
    }
    let initramfs_layer = Layer::from_tree(&tree)?;

    let repo = store.repo(IMAGER);
    let index = repo.multi_arch(|arch| {
        let mut tools = Tree::new();
        tools.exec(
            "usr/bin/imager",
            stand_in_script("imager", release.tag, arch.name()),
        );
        tools.file("etc/modules.d/10-extra-modules.conf", "search extras built-in\n");
        let config = ImageConfig {
            env: vec![
                "PATH=/usr/bin:/bin".to_owned(),
                format!("VERSION={}", release.tag),
            ],
            entrypoint: vec!["/usr/bin/imager".to_owned()],
            labels: labels(release),
            history: vec![
                "boot assets: kernels, systemd-boot, systemd-stub".to_owned(),
                format!("initramfs {}", release.tag),
                format!("imager stand-in ({})", arch.name()),
            ],
        };
        Ok((
            vec![
                boot_assets.clone(),
                initramfs_layer.clone(),
                Layer::from_tree(&tools)?,
            ],
            config,
        ))
    })?;
    repo.tag(IMAGER, release.tag, &index)?;
    Ok(index)
}
