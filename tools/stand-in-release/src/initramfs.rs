//! The base initramfs of a release (`usr/install/<arch>/initramfs.xz`, talos-imager §5.1): one
//! compressed stream (zstd since 1.8, xz with CRC32 before) of a newc cpio holding `init` and
//! `rootfs.sqsh`, plus what the stand-in `init` needs to run: `bin/busybox`, `dev/console`
//! (without a console node the kernel starts init with no stdout) and, with the real parts, the
//! virtio block modules under `lib/modules/<kver>/` (to read the META partition of a virtio disk).

use crate::boot::BootParts;
use crate::oci::Arch;
use crate::tree::Tree;
use crate::versions::Release;
use crate::{compress, cpio, init_script, squashfs, Error};

/// The content of `rootfs.sqsh`: an os-release naming the version, and the kernel's module lists
/// under `<modules dir>/<kver>/` (what the imager's depmod step needs from the rootfs).
pub fn rootfs(release: &Release, arch: Arch, boot: &BootParts) -> Tree {
    let mut tree = Tree::new();
    tree.file(
        "etc/os-release",
        format!(
            "NAME=\"Talos\"\nID=talos\nVERSION_ID={v}\nPRETTY_NAME=\"Talos ({v}, stand-in {arch})\"\n\
             HOME_URL=\"https://github.com/siderolabs/talos\"\n",
            v = release.tag,
            arch = arch.name()
        ),
    );
    let modules = format!("{}/{}", release.modules_dir(), boot.kernel_release);
    for (name, data) in &boot.module_lists {
        tree.file(&format!("{modules}/{name}"), data.clone());
    }
    tree
}

/// The compressed initramfs of `release` for `arch`.
pub fn build(release: &Release, arch: Arch, boot: &BootParts) -> Result<Vec<u8>, Error> {
    let parts = boot.arch(arch);
    let mut tree = Tree::new();
    tree.exec("bin/busybox", parts.busybox.clone());
    tree.char_device("dev/console", 5, 1, 0o600);
    for (path, data) in &parts.modules {
        tree.file(
            &format!("lib/modules/{}/{path}", boot.kernel_release),
            data.clone(),
        );
    }
    tree.exec("init", init_script::script(release, arch));
    tree.file(
        "rootfs.sqsh",
        squashfs::build(&rootfs(release, arch, boot), release.zstd())?,
    );
    let archive = cpio::newc(&tree);
    if release.zstd() {
        compress::zstd(&archive)
    } else {
        compress::xz_crc32(&archive)
    }
}
