//! The installer base images (talos-imager §11.1), per architecture, under one index:
//!
//! * `siderolabs/installer-base:<v>` (since 1.10): one layer with `usr/bin/installer`, the
//!   symlink `usr/bin/imager -> installer` and the usr-merge symlink `bin -> usr/bin`; config
//!   `Entrypoint ["/bin/installer"]`, env `VERSION=<v>`, label `alpha.talos.dev/version`. No
//!   boot assets.
//! * `siderolabs/installer:<v>` (before 1.10): two layers, the second with that architecture's
//!   boot assets under `usr/install/<arch>/` (the factory drops exactly that layer when it
//!   builds a customised installer).

use bytes::Bytes;

use super::{labels, stand_in_script, INSTALLER, INSTALLER_BASE};
use crate::boot::BootParts;
use crate::oci::{Arch, Descriptor, ImageConfig, Layer, Store};
use crate::tree::Tree;
use crate::versions::Release;
use crate::Error;

pub fn build(
    store: &mut Store,
    release: &Release,
    boot: &BootParts,
    initramfs: &dyn Fn(Arch) -> Bytes,
) -> Result<Descriptor, Error> {
    let repository = if release.installer_base() {
        INSTALLER_BASE
    } else {
        INSTALLER
    };
    let repo = store.repo(repository);
    let index = repo.multi_arch(|arch| {
        let script = stand_in_script("installer", release.tag, arch.name());
        let mut base = Tree::new();
        if release.installer_base() {
            base.exec("usr/bin/installer", script);
            base.symlink("usr/bin/imager", "installer");
            base.symlink("bin", "usr/bin");
        } else {
            base.exec("bin/installer", script);
        }
        base.file(
            "etc/ssl/certs/ca-certificates.crt",
            "# stand-in: no certificates\n",
        );
        let mut layers = vec![Layer::from_tree(&base)?];
        let mut history = vec![format!("installer base {} ({})", release.tag, arch.name())];
        if !release.installer_base() {
            let parts = boot.arch(arch);
            let dir = format!("usr/install/{}", arch.name());
            let mut assets = Tree::new();
            assets.file(&format!("{dir}/vmlinuz"), parts.vmlinuz.clone());
            assets.file(&format!("{dir}/initramfs.xz"), initramfs(arch));
            assets.file(&format!("{dir}/systemd-boot.efi"), parts.systemd_boot.clone());
            assets.file(&format!("{dir}/systemd-stub.efi"), parts.systemd_stub.clone());
            layers.push(Layer::from_tree(&assets)?);
            history.push(format!("boot assets {} ({})", release.tag, arch.name()));
        }
        let mut image_labels = labels(release);
        image_labels.insert("alpha.talos.dev/version".to_owned(), release.tag.to_owned());
        let config = ImageConfig {
            env: vec![
                "PATH=/usr/bin:/bin".to_owned(),
                format!("VERSION={}", release.tag),
            ],
            entrypoint: vec!["/bin/installer".to_owned()],
            labels: image_labels,
            history,
        };
        Ok((layers, config))
    })?;
    repo.tag(repository, release.tag, &index)?;
    Ok(index)
}
