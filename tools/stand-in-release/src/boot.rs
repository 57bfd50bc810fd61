//! The boot parts of the release payload: real ones from `scripts/fetch-boot-parts` (Debian
//! kernel, static busybox, systemd-boot and systemd-stub, amd64 only) or placeholders.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::oci::Arch;
use crate::{placeholder, Error};

/// Kernel release of the placeholder kernels (and of every arch when parts are placeholders).
pub const PLACEHOLDER_KERNEL_RELEASE: &str = "6.1.0-stand-in";

/// Where the boot parts come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BootPartsSource {
    /// `$FACTORY_BOOT_PARTS`, else `.test-run/boot-parts` of the current directory or of the
    /// workspace, when complete; placeholders otherwise.
    #[default]
    Auto,
    /// This directory; incomplete is an error.
    Dir(PathBuf),
    /// Placeholders only.
    Placeholders,
}

/// The files of `.test-run/boot-parts` (written by `scripts/fetch-boot-parts`), besides the
/// [`VIRTIO_BLOCK_MODULES`].
const REQUIRED: [&str; 6] = [
    "vmlinuz",
    "kernel-release",
    "busybox",
    "systemd-bootx64.efi",
    "linuxx64.efi.stub",
    "modules/modules.order",
];
/// The kernel modules the amd64 `/init` loads to see virtio disks (the Debian kernel has no
/// built-in virtio drivers): virtio_blk and its dependencies in load order (`modinfo -F
/// depends`; Debian ships no modules.dep). Paths below `modules/` of the boot parts and below
/// `lib/modules/<kver>/` in the initramfs; the same list is in `scripts/fetch-boot-parts`.
pub const VIRTIO_BLOCK_MODULES: [&str; 6] = [
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
];
/// Module lists copied into the rootfs when present.
const MODULE_LISTS: [&str; 3] = ["modules.order", "modules.builtin", "modules.builtin.modinfo"];

/// One architecture's boot payload.
#[derive(Debug, Clone)]
pub struct ArchParts {
    pub vmlinuz: Bytes,
    pub busybox: Bytes,
    pub systemd_boot: Bytes,
    pub systemd_stub: Bytes,
    /// `(path below lib/modules/<kver>/, contents)` of the [`VIRTIO_BLOCK_MODULES`] for the
    /// initramfs, in load order; empty for placeholders.
    pub modules: Vec<(String, Bytes)>,
    /// Whether this architecture's payload boots (real kernel and busybox).
    pub bootable: bool,
}

/// The boot parts of both architectures.
#[derive(Debug, Clone)]
pub struct BootParts {
    /// The kernel release shared by both architectures (the modules directory name).
    pub kernel_release: String,
    pub amd64: ArchParts,
    pub arm64: ArchParts,
    /// `(file name, contents)` of the kernel's module lists for `<modules>/<kver>/`.
    pub module_lists: Vec<(String, Bytes)>,
    /// Where the real parts came from, if any.
    pub dir: Option<PathBuf>,
}

impl BootParts {
    pub fn load(source: &BootPartsSource) -> Result<Self, Error> {
        match source {
            BootPartsSource::Placeholders => Ok(Self::placeholders()),
            BootPartsSource::Dir(dir) => Self::from_dir(dir),
            BootPartsSource::Auto => match default_dirs().into_iter().find(|d| missing(d).is_empty()) {
                Some(dir) => Self::from_dir(&dir),
                None => Ok(Self::placeholders()),
            },
        }
    }

    pub fn arch(&self, arch: Arch) -> &ArchParts {
        match arch {
            Arch::Amd64 => &self.amd64,
            Arch::Arm64 => &self.arm64,
        }
    }

    /// One line for the summary.
    pub fn describe(&self) -> String {
        match &self.dir {
            Some(dir) => format!(
                "amd64 real (Debian kernel {}, static busybox, systemd-boot/stub from {}), arm64 placeholders",
                self.kernel_release,
                dir.display()
            ),
            None => format!("placeholders (kernel release {}; run scripts/fetch-boot-parts)", self.kernel_release),
        }
    }

    fn placeholders() -> Self {
        let kver = PLACEHOLDER_KERNEL_RELEASE;
        Self {
            kernel_release: kver.to_owned(),
            amd64: ArchParts {
                vmlinuz: placeholder::bzimage(kver).into(),
                busybox: placeholder::busybox().into(),
                systemd_boot: placeholder::systemd_boot(placeholder::PE_AMD64).into(),
                systemd_stub: placeholder::systemd_stub(placeholder::PE_AMD64).into(),
                modules: Vec::new(),
                bootable: false,
            },
            arm64: arm64_placeholders(kver),
            module_lists: placeholder_module_lists(kver),
            dir: None,
        }
    }

    fn from_dir(dir: &Path) -> Result<Self, Error> {
        let missing = missing(dir);
        if !missing.is_empty() {
            return Err(Error::BootParts {
                dir: dir.to_owned(),
                missing: missing.join(", "),
            });
        }
        let read = |name: &str| -> Result<Bytes, Error> {
            let path = dir.join(name);
            fs::read(&path)
                .map(Bytes::from)
                .map_err(Error::io("reading boot part", path))
        };
        let kver = String::from_utf8_lossy(&read("kernel-release")?)
            .trim()
            .to_owned();
        let mut module_lists = Vec::new();
        for name in MODULE_LISTS {
            if dir.join("modules").join(name).is_file() {
                module_lists.push((name.to_owned(), read(&format!("modules/{name}"))?));
            }
        }
        let modules = VIRTIO_BLOCK_MODULES
            .iter()
            .map(|path| Ok(((*path).to_owned(), read(&format!("modules/{path}"))?)))
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            amd64: ArchParts {
                vmlinuz: read("vmlinuz")?,
                busybox: read("busybox")?,
                systemd_boot: read("systemd-bootx64.efi")?,
                systemd_stub: read("linuxx64.efi.stub")?,
                modules,
                bootable: true,
            },
            arm64: arm64_placeholders(&kver),
            kernel_release: kver,
            module_lists,
            dir: Some(dir.to_owned()),
        })
    }
}

fn arm64_placeholders(kver: &str) -> ArchParts {
    ArchParts {
        vmlinuz: placeholder::arm64_image(kver).into(),
        busybox: placeholder::busybox().into(),
        systemd_boot: placeholder::systemd_boot(placeholder::PE_ARM64).into(),
        systemd_stub: placeholder::systemd_stub(placeholder::PE_ARM64).into(),
        modules: Vec::new(),
        bootable: false,
    }
}

fn placeholder_module_lists(kver: &str) -> Vec<(String, Bytes)> {
    vec![
        (
            "modules.order".to_owned(),
            Bytes::from("kernel/drivers/stand-in/stand-in-core.ko\n"),
        ),
        (
            "modules.builtin".to_owned(),
            Bytes::from("kernel/drivers/stand-in/stand-in-builtin.ko\n"),
        ),
        (
            "modules.builtin.modinfo".to_owned(),
            Bytes::from(format!(
                "stand-in-builtin.description=stand-in builtin module of {kver}\0"
            )),
        ),
    ]
}

/// Parts missing (or empty) in `dir`.
fn missing(dir: &Path) -> Vec<String> {
    let modules = VIRTIO_BLOCK_MODULES.iter().map(|m| format!("modules/{m}"));
    REQUIRED
        .iter()
        .map(|name| (*name).to_owned())
        .chain(modules)
        .filter(|name| fs::metadata(dir.join(name)).map(|m| m.len() == 0).unwrap_or(true))
        .collect()
}

/// Candidate directories for [`BootPartsSource::Auto`], most specific first.
pub fn default_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("FACTORY_BOOT_PARTS") {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs = vec![PathBuf::from(".test-run/boot-parts")];
    // The workspace root, two levels above this crate: tests and `cargo run` from anywhere in the
    // checkout find the parts that scripts/fetch-boot-parts put there.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    dirs.push(workspace.join(".test-run/boot-parts"));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scripts/fetch-boot-parts keeps its own copy of the module list (bash cannot read ours):
    /// the same paths in the same order.
    #[test]
    fn fetch_boot_parts_fetches_the_virtio_block_modules_in_order() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-boot-parts");
        let script = fs::read_to_string(&script).expect("scripts/fetch-boot-parts");
        let listed: Vec<&str> = script
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("kernel/") && l.ends_with(".ko"))
            .collect();
        assert_eq!(listed, VIRTIO_BLOCK_MODULES);
    }

    #[test]
    fn a_parts_dir_without_the_modules_is_incomplete() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in REQUIRED {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, "x").expect("write");
        }
        let missing = missing(dir.path());
        assert_eq!(missing.len(), VIRTIO_BLOCK_MODULES.len(), "{missing:?}");
        assert!(missing.contains(&"modules/kernel/drivers/block/virtio_blk.ko".to_owned()));
        assert!(matches!(
            BootParts::load(&BootPartsSource::Dir(dir.path().to_owned())),
            Err(Error::BootParts { .. })
        ));
    }
}
