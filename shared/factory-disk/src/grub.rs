//! GRUB for disk images (talos-imager.md §10.4): the `grub/grub.cfg` of the BOOT partition, the
//! GRUB EFI loader of the `grub` layout's ESP, and the BIOS boot code (`boot.img` in the MBR,
//! `core.img` in the BIOS boot partition) of amd64 `grub`/`dual-boot` images.
//!
//! * `grub.cfg`: the installer's template for one `A` entry plus (≥ 1.4) the reset entry, with
//!   the command line quoted by GRUB's rules as the Go `Quote` does (a backslash before each of
//!   `\ { } & $ | ; < > "`).
//! * Images: `grub-mkimage` with the prefix `(hd0,gpt3)/grub` (BOOT is always partition 3) and
//!   the installer's module list; `--format x86_64-efi|arm64-efi --compression xz` for UEFI,
//!   `--format i386-pc` with `biosdisk part_msdos` added for BIOS.
//! * BIOS patches (what `grub-install` does, and the Go installer by hand): `boot.img[0x5c..]` =
//!   the BIOS partition's first LBA (LE64), `boot.img[0x66..0x68]` = `90 90` (no drive check),
//!   `core.img[0x1f4..]` = first LBA + 1 (LE64, where the rest of `core.img` starts); `core.img`
//!   must fit the BIOS partition; the first 446 bytes of `boot.img` become the MBR boot code.
//!
//! Deliberate difference from the Go imager: the GRUB modules, `boot.img` and the
//! `grub-mkimage` come from the builder's own GRUB (Debian 12: GRUB 2.06), not from the Talos
//! release's GRUB build (2.12 in recent releases), so `core.img` and the EFI loader are not
//! byte-identical with those of official images. They read the same BOOT partition (Debian's
//! 2.06 reads XFS with `nrext64`, checked by the tests with `grub-fstest`). The LBAs are device
//! sectors, as in Go: with 4096-byte sectors GRUB's 512-byte-sector blocklist does not match,
//! so BIOS boot of 4K-sector images works no better than upstream's.

use std::path::{Path, PathBuf};

use crate::tools::{self, Tool, GRUB_MKIMAGE};
use crate::{Error, Result};

/// GRUB's prefix in every Talos GRUB image: the `grub` directory of partition 3 (BOOT).
pub const PREFIX: &str = "(hd0,gpt3)/grub";

/// Modules of every GRUB image (the Go installer's list, in its order).
pub const MODULES: &[&str] = &[
    "part_gpt",
    "ext2",
    "fat",
    "xfs",
    "normal",
    "configfile",
    "linux",
    "boot",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "ls",
    "cat",
    "echo",
    "test",
    "help",
    "reboot",
    "halt",
    "all_video",
];

/// Extra modules of the BIOS `core.img`.
pub const BIOS_MODULES: &[&str] = &["biosdisk", "part_msdos"];

/// GRUB's BIOS platform directory (`boot.img`, the i386-pc modules).
pub const I386_PC_DIR: &str = "/usr/lib/grub/i386-pc";

/// The i386-pc modules and `boot.img`, as a [`Tool`] for [`tools::check`]: the "program" is an
/// absolute path, which [`tools::find`] finds as is (joining an absolute path replaces the
/// directory), so a builder without the package fails its start-up check naming it.
pub const GRUB_PC_BIN: Tool = Tool {
    program: "/usr/lib/grub/i386-pc/boot.img",
    package: "grub-pc-bin",
};
/// The x86_64-efi modules (see [`GRUB_PC_BIN`]).
pub const GRUB_EFI_AMD64_BIN: Tool = Tool {
    program: "/usr/lib/grub/x86_64-efi/moddep.lst",
    package: "grub-efi-amd64-bin",
};
/// The arm64-efi modules (see [`GRUB_PC_BIN`]).
pub const GRUB_EFI_ARM64_BIN: Tool = Tool {
    program: "/usr/lib/grub/arm64-efi/moddep.lst",
    package: "grub-efi-arm64-bin",
};

/// Offset in `boot.img` of the LBA of `core.img`'s first sector (`GRUB_BOOT_MACHINE_KERNEL_SECTOR`).
pub const BOOT_IMG_KERNEL_SECTOR: usize = 0x5c;
/// Offset in `boot.img` of the drive check jump that `grub-install` replaces by two NOPs.
pub const BOOT_IMG_DRIVE_CHECK: usize = 0x66;
/// Offset in `core.img` of the first blocklist's start sector (the sectors after the first).
pub const CORE_IMG_BLOCKLIST: usize = 0x1f4;
/// The MBR boot code area.
pub const MBR_BOOT_CODE_LEN: usize = 446;

/// Quotes a command line for `grub.cfg` (the Go installer's `Quote`): a backslash before each of
/// `\ { } & $ | ; < > "`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '\\' | '{' | '}' | '&' | '$' | '|' | ';' | '<' | '>' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `grub/grub.cfg` of an image: entry `A - Talos <version_tag>` booting `/A/vmlinuz` with
/// `cmdline` and `/A/initramfs.xz`, and, when `reset` (Talos ≥ 1.4), the entry that boots the
/// same with `talos.experimental.wipe=system:EPHEMERAL,STATE` appended.
pub fn grub_cfg(version_tag: &str, cmdline: &str, reset: bool) -> String {
    let name = format!("A - Talos {version_tag}");
    let cmdline = quote(cmdline);
    let mut cfg = format!(
        "set default=\"{name}\"\n\nset timeout=3\n\ninsmod all_video\n\n\
         terminal_input console\nterminal_output console\n\n"
    );
    let entry = |title: &str, extra: &str| {
        format!(
            "menuentry \"{title}\" {{\n  set gfxmode=auto\n  set gfxpayload=text\n  \
             linux /A/vmlinuz {cmdline}{extra}\n  initrd /A/initramfs.xz\n}}\n"
        )
    };
    cfg.push_str(&entry(&name, ""));
    if reset {
        cfg.push_str(&entry(
            "Reset Talos installation and return to maintenance mode",
            " talos.experimental.wipe=system:EPHEMERAL,STATE",
        ));
    }
    cfg
}

/// `grub-mkimage --format <format> --output <out> --prefix (hd0,gpt3)/grub [extra] <modules>`.
fn mkimage(format: &str, out: &Path, extra: &[&str], modules: &[&str]) -> Result<()> {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--format".as_ref(),
        format.as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
        "--prefix".as_ref(),
        PREFIX.as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.extend(modules.iter().map(std::ffi::OsStr::new));
    tools::run(GRUB_MKIMAGE, args)
}

/// The EFI file name of systemd-boot or GRUB on the ESP for `arch` (`EFI/boot/<name>`).
pub fn efi_boot_name(arch: &str) -> Result<&'static str> {
    match arch {
        "amd64" => Ok("BOOTX64.efi"),
        "arm64" => Ok("BOOTAA64.efi"),
        other => Err(Error::Partition {
            name: "EFI".into(),
            reason: format!("unsupported architecture {other:?}"),
        }),
    }
}

/// Builds the GRUB EFI loader for `arch` (`amd64`/`arm64`) into `out`.
pub fn efi_image(arch: &str, out: &Path) -> Result<()> {
    let (format, modules) = match arch {
        "amd64" => ("x86_64-efi", GRUB_EFI_AMD64_BIN),
        "arm64" => ("arm64-efi", GRUB_EFI_ARM64_BIN),
        other => {
            return Err(Error::Partition {
                name: "EFI".into(),
                reason: format!("no GRUB EFI image for {other:?}"),
            })
        }
    };
    tools::find(modules)?;
    mkimage(format, out, &["--compression", "xz"], MODULES)
}

/// The BIOS boot code of an amd64 GRUB image.
#[derive(Debug, Clone)]
pub struct BiosBoot {
    /// The patched `boot.img` (512 bytes); its first [`MBR_BOOT_CODE_LEN`] bytes go to the MBR.
    pub boot_img: Vec<u8>,
    /// The patched `core.img` for the start of the BIOS boot partition (tens of KiB).
    pub core_img: Vec<u8>,
}

impl BiosBoot {
    /// The MBR boot code: the first 446 bytes of the patched `boot.img`.
    pub fn mbr_boot_code(&self) -> &[u8] {
        &self.boot_img[..MBR_BOOT_CODE_LEN]
    }
}

/// Builds `core.img` (in `scratch`) and patches it and `boot.img` for a BIOS boot partition
/// starting at `first_lba` of `len` bytes.
pub fn bios_boot(scratch: &Path, first_lba: u64, len: u64) -> Result<BiosBoot> {
    let boot_img_path = tools::find(GRUB_PC_BIN)?;
    let core_path: PathBuf = scratch.join("grub-core.img");
    let modules: Vec<&str> = MODULES.iter().chain(BIOS_MODULES).copied().collect();
    mkimage("i386-pc", &core_path, &[], &modules)?;
    let core = std::fs::read(&core_path)?;
    let boot = std::fs::read(&boot_img_path)?;
    let bios_err = |reason: String| Error::Partition {
        name: "BIOS".into(),
        reason,
    };
    if boot.len() != 512 {
        return Err(bios_err(format!(
            "{} is {} bytes, not 512",
            boot_img_path.display(),
            boot.len()
        )));
    }
    patch_bios(boot, core, first_lba, len).map_err(bios_err)
}

/// The patches of [`bios_boot`] on given `boot.img`/`core.img` bytes (separate for tests).
pub fn patch_bios(
    mut boot: Vec<u8>,
    mut core: Vec<u8>,
    first_lba: u64,
    len: u64,
) -> Result<BiosBoot, String> {
    if core.len() < CORE_IMG_BLOCKLIST + 8 {
        return Err(format!("core.img of {} bytes is too short", core.len()));
    }
    if core.len() as u64 > len {
        return Err(format!(
            "core.img of {} bytes does not fit the BIOS boot partition of {len} bytes",
            core.len()
        ));
    }
    boot[BOOT_IMG_KERNEL_SECTOR..BOOT_IMG_KERNEL_SECTOR + 8].copy_from_slice(&first_lba.to_le_bytes());
    boot[BOOT_IMG_DRIVE_CHECK..BOOT_IMG_DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    core[CORE_IMG_BLOCKLIST..CORE_IMG_BLOCKLIST + 8].copy_from_slice(&(first_lba + 1).to_le_bytes());
    Ok(BiosBoot {
        boot_img: boot,
        core_img: core,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_the_go_rules() {
        assert_eq!(quote("a=b c"), "a=b c");
        assert_eq!(
            quote(r#"x\y {z} a&b $v a|b a;b <i> "q""#),
            r#"x\\y \{z\} a\&b \$v a\|b a\;b \<i\> \"q\""#
        );
    }

    #[test]
    fn grub_cfg_matches_the_installer_template() {
        // the Go installer's own fixture (grub_write_test.cfg) with our entry name
        let want = "set default=\"A - Talos v1.11.0\"\n\nset timeout=3\n\ninsmod all_video\n\n\
                    terminal_input console\nterminal_output console\n\n\
                    menuentry \"A - Talos v1.11.0\" {\n  set gfxmode=auto\n  set gfxpayload=text\n  \
                    linux /A/vmlinuz cmdline A\n  initrd /A/initramfs.xz\n}\n\
                    menuentry \"Reset Talos installation and return to maintenance mode\" {\n  \
                    set gfxmode=auto\n  set gfxpayload=text\n  \
                    linux /A/vmlinuz cmdline A talos.experimental.wipe=system:EPHEMERAL,STATE\n  \
                    initrd /A/initramfs.xz\n}\n";
        assert_eq!(grub_cfg("v1.11.0", "cmdline A", true), want);
        let no_reset = grub_cfg("v1.3.7", "a;b", false);
        assert!(no_reset.ends_with("linux /A/vmlinuz a\\;b\n  initrd /A/initramfs.xz\n}\n"));
        assert!(!no_reset.contains("Reset"));
    }

    #[test]
    fn bios_patches() -> Result<(), String> {
        let boot = vec![0xAAu8; 512];
        let core = vec![0x55u8; 40_000];
        let b = patch_bios(boot, core, 4_304_896, 1024 * 1024)?;
        assert_eq!(&b.boot_img[0x5c..0x64], &4_304_896u64.to_le_bytes());
        assert_eq!(&b.boot_img[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&b.core_img[0x1f4..0x1fc], &4_304_897u64.to_le_bytes());
        assert_eq!(b.mbr_boot_code().len(), 446);
        assert!(patch_bios(vec![0; 512], vec![0; 2 << 20], 2048, 1 << 20).is_err());
        Ok(())
    }
}
