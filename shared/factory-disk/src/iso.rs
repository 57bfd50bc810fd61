//! Talos ISOs (talos-imager.md §9): the UEFI-only sd-boot ISO (§9.3, `xorriso -as mkisofs`), the
//! hybrid dual-boot ISO (§9.4, `grub-mkrescue`: GRUB for BIOS, sd-boot for UEFI) and the GRUB ISO
//! (§9.2, `grub-mkrescue`).
//!
//! What goes where:
//! * `efiboot.img` (sd-boot and hybrid): a FAT32 image written by our own [`FatVolume`] (not
//!   `mkfs.vfat` + `mcopy`) holding `EFI/BOOT/BOOTX64.EFI` (`BOOTAA64.EFI` on arm64) = systemd-boot,
//!   `EFI/Linux/Talos-<version>.efi` = the UKI, `loader/loader.conf` and `loader/random-seed`
//!   (32 zero bytes, read-only attribute). It is appended to the ISO as MBR partition 2 (type
//!   0xEF; also a GPT partition in the hybrid ISO) and is the El Torito EFI boot image. The same
//!   files are in the ISO9660 tree.
//! * The GRUB part (hybrid and GRUB ISOs): `boot/vmlinuz`, `boot/initramfs.xz` and
//!   `boot/grub/grub.cfg` ([`grub_cfg`]: the ISO's command line, quoted for GRUB, plus a reset
//!   entry from 1.4); `grub-mkrescue` adds its BIOS El Torito image, the module tree and the
//!   GRUB hybrid MBR. As in the Go imager, GRUB gets one platform from 1.10 (sd-boot era):
//!   `i386-pc` (BIOS) on amd64, `arm64-efi` on arm64; before 1.10 grub-mkrescue takes every
//!   installed platform, so the GRUB ISO also boots UEFI through GRUB's own EFI FAT image.
//! * Volume id `TALOS_V1_12_0`-style and volume set id `Talos-<version>` from 1.8 ([`volume_id`]).
//!
//! Determinism: the same inputs give the same bytes (on the same builder image). [`SOURCE_DATE_EPOCH`]
//! is exported to the tools (xorriso then pins the creation date and the GPT disk GUID); every
//! file date and the volume modification date ("UUID") are set with `-volume_date`;
//! `GRUB_FAT_SERIAL_NUMBER` is set as the Go imager does, and since only the imager's patched
//! GRUB reads it, an `mformat` wrapper passes the same serial for Debian's `grub-mkrescue`; our
//! FAT image is deterministic by construction; and owners and modes in the ISO tree are
//! normalised (root:root, directories 0555, files 0444: an addition to the Go arguments) so
//! that neither the builder's user nor the input files' modes reach the image.
//!
//! Differences from the Go imager, all deliberate:
//! * **The GRUB is the builder's** (Debian's `grub-pc-bin`/`grub-efi-amd64-bin` module trees under
//!   `/usr/lib/grub`, the locales and fonts installed there), not the GRUB module tree shipped in
//!   the Talos imager image: the BIOS boot code, modules and GRUB version in hybrid and GRUB ISOs
//!   differ from the official ISOs (the boot flow is the same). Debian has no arm64-efi GRUB on
//!   amd64 unless `grub-efi-arm64-bin` is installed, which arm64 GRUB ISOs then need.
//! * The input files are grafted into the ISO (`-graft-points`) rather than copied into a staging
//!   directory, and `efiboot.img` lives outside the tree (so no `-m efiboot.img` is needed).
//! * `efiboot.img` is at least [`MIN_EFIBOOT_SIZE`] (a valid FAT32 needs 65 525 clusters; the
//!   10 MiB + inputs rule of §9.3 only falls below it for toy inputs, where `mkfs.vfat -F 32`
//!   would write an undersized FAT32), and its cluster size follows the `mkfs.vfat` default
//!   (the Go imager before v1.14.0-rc.1), not the later `-s` tuning.
//! * `grub-mkrescue` runs without `--verbose` (only its log differs).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::fat::{FatOptions, FatSource, FatVolume};
use crate::layout::TalosVersion;
use crate::tools::{self, Tool, GRUB_MKRESCUE, XORRISO};
use crate::{BootFiles, Error, Result, MIB};

/// Talos' `SOURCE_DATE_EPOCH` (the value of `factory_initramfs::SOURCE_DATE_EPOCH`; repeated here
/// because factory-disk does not depend on the initramfs crate).
pub const SOURCE_DATE_EPOCH: u64 = 1_559_424_892;

/// The smallest `efiboot.img`: a FAT32 of 512-byte clusters needs 65 525 of them plus the FATs.
pub const MIN_EFIBOOT_SIZE: u64 = 33 * MIB;

/// `loader/loader.conf` of the ISO ESP (§9.3, no SecureBoot: enrollment `off`).
pub const LOADER_CONF: &str = "# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll off\n";

/// `mformat`/`mcopy`, which `grub-mkrescue` calls for its own EFI FAT image (GRUB ISOs that boot
/// UEFI through GRUB, i.e. Talos < 1.10).
pub const MTOOLS: Tool = Tool {
    program: "mformat",
    package: "mtools",
};
/// The shell that runs the `mformat` wrapper pinning the FAT serial of `grub-mkrescue`'s EFI image
/// (Essential in Debian: in every Debian image).
pub const SH: Tool = Tool {
    program: "/bin/sh",
    package: "dash",
};

/// A GRUB platform directory (where Debian installs it) and the package that provides it.
#[derive(Debug, Clone, Copy)]
struct GrubPlatform {
    dir: &'static str,
    package: &'static str,
}

const I386_PC: GrubPlatform = GrubPlatform {
    dir: "/usr/lib/grub/i386-pc",
    package: "grub-pc-bin",
};
const X86_64_EFI: GrubPlatform = GrubPlatform {
    dir: "/usr/lib/grub/x86_64-efi",
    package: "grub-efi-amd64-bin",
};
const ARM64_EFI: GrubPlatform = GrubPlatform {
    dir: "/usr/lib/grub/arm64-efi",
    package: "grub-efi-arm64-bin",
};

/// Which ISO to build (§9.1 selects it from the version, SecureBoot and `isoOptions.bootloader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsoVariant {
    /// UEFI-only: systemd-boot and the UKI on the appended ESP (§9.3).
    SdBoot,
    /// Dual boot: GRUB for BIOS, systemd-boot for UEFI (§9.4).
    Hybrid,
    /// GRUB only (§9.2): BIOS on amd64 (and UEFI through GRUB before Talos 1.10).
    Grub,
}

impl IsoVariant {
    fn name(self) -> &'static str {
        match self {
            IsoVariant::SdBoot => "sd-boot",
            IsoVariant::Hybrid => "dual-boot",
            IsoVariant::Grub => "grub",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct IsoSpec {
    /// The Talos version, `v1.12.0`.
    pub version: String,
    /// `amd64` or `arm64`.
    pub arch: String,
    pub variant: IsoVariant,
    /// The ISO's kernel command line, used in `grub.cfg` (the UKI carries its own `.cmdline`).
    pub cmdline: String,
}

/// The external tools `variant` needs (the builder checks them at start). The GRUB variants also
/// need the GRUB platform directories, checked by [`build_iso`].
pub fn required_tools(variant: IsoVariant) -> &'static [Tool] {
    match variant {
        IsoVariant::SdBoot => &[XORRISO],
        IsoVariant::Hybrid => &[GRUB_MKRESCUE, XORRISO],
        IsoVariant::Grub => &[GRUB_MKRESCUE, XORRISO, MTOOLS],
    }
}

/// The ISO's full label, `Talos-<version>` (the volume set id).
pub fn label(version: &str) -> String {
    format!("Talos-{version}")
}

/// The ISO9660 volume id of `version` (§9.1, Talos ≥ 1.8): `Talos-<version>` upper-cased, `-`,
/// `.` and `_` as `_`, other characters outside `[A-Z0-9]` dropped, at most 32 characters.
pub fn volume_id(version: &str) -> String {
    label(version)
        .to_uppercase()
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' | '0'..='9' => Some(c),
            '-' | '.' | '_' => Some('_'),
            _ => None,
        })
        .take(32)
        .collect()
}

/// GRUB quoting of a command-line word (the Go imager's rule): a backslash before each of
/// `\ { } & $ | ; < > "`.
pub fn grub_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\{}&$|;<>\"".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The ISO's `boot/grub/grub.cfg` (§9.2) for `cmdline`, with the reset entry when `reset` (Talos
/// ≥ 1.4).
pub fn grub_cfg(cmdline: &str, reset: bool) -> String {
    let quoted = grub_quote(cmdline);
    let entry = |title: &str, extra: &str| {
        format!(
            "menuentry \"{title}\" {{\n\tset gfxmode=auto\n\tset gfxpayload=text\n\
             \tlinux /boot/vmlinuz {quoted}{extra}\n\tinitrd /boot/initramfs.xz\n}}\n"
        )
    };
    let mut cfg = String::from(
        "set default=0\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\n",
    );
    cfg.push_str(&entry("Talos ISO", ""));
    cfg.push('\n');
    if reset {
        cfg.push_str(&entry(
            "Reset Talos installation",
            " talos.experimental.wipe=system",
        ));
    }
    cfg
}

/// The size of `efiboot.img` for systemd-boot and UKI files of these sizes (§9.3): 10 MiB plus
/// each rounded up to 1 MiB, at least [`MIN_EFIBOOT_SIZE`].
pub fn efiboot_size(sd_boot: u64, uki: u64) -> u64 {
    (10 * MIB + sd_boot.next_multiple_of(MIB) + uki.next_multiple_of(MIB)).max(MIN_EFIBOOT_SIZE)
}

/// `YYYYMMDDhhmmss00` (UTC) of a Unix time: xorriso's `-volume_date uuid` format.
fn iso_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil date from days since 1970-01-01 (H. Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}00",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn invalid(message: String) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, message))
}

/// Escapes a path for an mkisofs graft point (`=` and `\` are special there).
fn graft_escape(path: &Path) -> Result<String> {
    let s = path
        .to_str()
        .ok_or_else(|| invalid(format!("{} is not UTF-8", path.display())))?;
    Ok(s.replace('\\', "\\\\").replace('=', "\\="))
}

/// The ISO tree: ISO path → local file, grafted by xorriso.
type Tree = BTreeMap<String, PathBuf>;

fn graft_args(tree: &Tree) -> Result<Vec<OsString>> {
    tree.iter()
        .map(|(iso, local)| Ok(format!("{iso}={}", graft_escape(local)?).into()))
        .collect()
}

/// Checks that `platform`'s GRUB directory exists; its path.
fn grub_platform(platform: GrubPlatform) -> Result<PathBuf> {
    let dir = PathBuf::from(platform.dir);
    if dir.join("moddep.lst").is_file() {
        Ok(dir)
    } else {
        Err(Error::ToolMissing {
            program: platform.dir,
            package: platform.package,
        })
    }
}

/// Sets a file's modification time to [`SOURCE_DATE_EPOCH`] (as the Go imager touches its
/// staging tree; the ISO dates are pinned by xorriso anyway, this keeps the scratch files
/// consistent with them).
fn touch(path: &Path) -> Result<()> {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(SOURCE_DATE_EPOCH);
    File::options().write(true).open(path)?.set_modified(t)?;
    Ok(())
}

/// The size of an input file; the error names it.
fn input_len(path: &Path) -> Result<u64> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))
}

fn write_generated(dir: &Path, name: &str, content: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    fs::write(&path, content)?;
    touch(&path)?;
    Ok(path)
}

/// Makes `grub-mkrescue` (run by `cmd`) format its EFI FAT image with the volume serial
/// `serial`. `GRUB_FAT_SERIAL_NUMBER` is honoured only by the GRUB of the Talos imager; Debian's
/// `grub-mkrescue` calls `mformat` from `PATH` without a serial, so mformat picks a random one and
/// GRUB ISOs with a GRUB EFI image (Talos < 1.10) would differ from build to build. A wrapper
/// `mformat` first on `PATH` passes `-N <serial>` to the real one.
fn pin_fat_serial(cmd: &mut Command, mformat: &Path, serial: &str, work: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let bin = work.join("bin");
    fs::create_dir_all(&bin)?;
    let real = mformat
        .to_str()
        .ok_or_else(|| invalid(format!("{} is not UTF-8", mformat.display())))?
        .replace('\'', "'\\''");
    let wrapper = bin.join("mformat");
    let sh = SH.program;
    fs::write(&wrapper, format!("#!{sh}\nexec '{real}' -N {serial} \"$@\"\n"))?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(bin).chain(std::env::split_paths(&path));
    cmd.env(
        "PATH",
        std::env::join_paths(paths).map_err(|e| invalid(format!("PATH: {e}")))?,
    );
    Ok(())
}

/// Builds the ISO into a file under `scratch` and returns its path. `files.uki` is required for
/// [`IsoVariant::SdBoot`] and [`IsoVariant::Hybrid`]; `files.kernel` and `files.initramfs` for
/// [`IsoVariant::Hybrid`] and [`IsoVariant::Grub`]. A work directory next to the output (holding
/// `efiboot.img`, about the size of the UKI) is removed when the build succeeds.
pub fn build_iso(spec: &IsoSpec, files: &BootFiles, scratch: &Path) -> Result<PathBuf> {
    let version = TalosVersion::parse(&spec.version);
    let efi_name = match spec.arch.as_str() {
        "amd64" => "BOOTX64.EFI",
        "arm64" => "BOOTAA64.EFI",
        other => return Err(invalid(format!("unknown architecture {other:?}"))),
    };
    if spec.cmdline.contains(['\n', '\r', '\0']) {
        return Err(invalid(
            "the kernel command line contains a line break or NUL".into(),
        ));
    }
    // The version names files and the ISO label: keep it to what a Talos tag can hold.
    if spec.version.is_empty()
        || !spec
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    {
        return Err(invalid(format!("invalid Talos version {:?}", spec.version)));
    }
    tools::check(required_tools(spec.variant))?;
    let uki = match spec.variant {
        IsoVariant::SdBoot | IsoVariant::Hybrid => Some(
            files
                .uki
                .as_deref()
                .ok_or_else(|| invalid(format!("a {} ISO needs the UKI", spec.variant.name())))?,
        ),
        IsoVariant::Grub => None,
    };

    let stem = format!("talos-{}-{}-{}", spec.version, spec.arch, spec.variant.name());
    let out = scratch.join(format!("{stem}.iso"));
    let work = scratch.join(format!("{stem}.work"));
    // xorriso would add a session to an existing ISO instead of replacing it.
    match fs::remove_file(&out) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;

    let mut tree = Tree::new();
    let mut efiboot = None;
    if let Some(uki) = uki {
        let loader_conf = write_generated(&work, "loader.conf", LOADER_CONF.as_bytes())?;
        let random_seed = write_generated(&work, "random-seed", &[0u8; 32])?;
        let uki_name = format!("EFI/Linux/Talos-{}.efi", spec.version);
        let esp_files: BTreeMap<String, FatSource> = [
            (
                format!("EFI/BOOT/{efi_name}"),
                FatSource::File(files.sd_boot.clone()),
            ),
            (uki_name.clone(), FatSource::File(uki.to_owned())),
            (
                "loader/loader.conf".to_owned(),
                FatSource::from(LOADER_CONF.as_bytes().to_vec()),
            ),
            (
                "loader/random-seed".to_owned(),
                FatSource::ReadOnly(Box::new(FatSource::from(vec![0u8; 32]))),
            ),
        ]
        .into_iter()
        .collect();
        let size = efiboot_size(input_len(&files.sd_boot)?, input_len(uki)?);
        let options = FatOptions {
            timestamp: Some(SOURCE_DATE_EPOCH),
            ..FatOptions::esp(size, 512)
        };
        let img = work.join("efiboot.img");
        FatVolume::new(&options, &esp_files)?.write_sparse_file(&img)?;
        efiboot = Some(img);
        tree.insert(format!("EFI/BOOT/{efi_name}"), files.sd_boot.clone());
        tree.insert(uki_name, uki.to_owned());
        tree.insert("loader/loader.conf".into(), loader_conf);
        tree.insert("loader/random-seed".into(), random_seed);
    }
    if matches!(spec.variant, IsoVariant::Hybrid | IsoVariant::Grub) {
        let cfg = grub_cfg(&spec.cmdline, version.at_least(1, 4));
        let cfg = write_generated(&work, "grub.cfg", cfg.as_bytes())?;
        tree.insert("boot/vmlinuz".into(), files.kernel.clone());
        tree.insert("boot/initramfs.xz".into(), files.initramfs.clone());
        tree.insert("boot/grub/grub.cfg".into(), cfg);
    }

    for local in tree.values() {
        input_len(local)?;
    }

    let mut args: Vec<OsString> = Vec::new();
    let push = |args: &mut Vec<OsString>, items: &[&str]| args.extend(items.iter().map(OsString::from));
    let tool = match spec.variant {
        IsoVariant::SdBoot => {
            let efiboot = efiboot
                .as_deref()
                .ok_or_else(|| invalid("no efiboot.img".into()))?;
            push(
                &mut args,
                &["-as", "mkisofs", "-e", "--interval:appended_partition_2:all::"],
            );
            push(&mut args, &["-append_partition", "2", "0xef"]);
            args.push(efiboot.into());
            push(
                &mut args,
                &[
                    "-partition_cyl_align",
                    "all",
                    "-partition_offset",
                    "16",
                    "-iso_mbr_part_type",
                    "0x83",
                    "-no-emul-boot",
                    "-iso-level",
                    "3",
                    "-graft-points",
                    "-o",
                ],
            );
            args.push(out.clone().into());
            args.extend(graft_args(&tree)?);
            XORRISO
        }
        IsoVariant::Hybrid => {
            let efiboot = efiboot
                .as_deref()
                .ok_or_else(|| invalid("no efiboot.img".into()))?;
            // BIOS only from GRUB: UEFI boots sd-boot from the appended ESP.
            let bios = grub_platform(I386_PC)?;
            args.push("--compress=xz".into());
            args.push(format!("--output={}", out.display()).into());
            args.push(format!("--directory={}", bios.display()).into());
            push(&mut args, &["-iso-level", "3"]);
            args.extend(graft_args(&tree)?);
            push(
                &mut args,
                &[
                    "-eltorito-alt-boot",
                    "-e",
                    "--interval:appended_partition_2:all::",
                ],
            );
            push(&mut args, &["-append_partition", "2", "0xef"]);
            args.push(efiboot.into());
            push(
                &mut args,
                &[
                    "-appended_part_as_gpt",
                    "-partition_cyl_align",
                    "all",
                    "-partition_offset",
                    "16",
                    "-iso_mbr_part_type",
                    "0x83",
                    "-no-emul-boot",
                ],
            );
            GRUB_MKRESCUE
        }
        IsoVariant::Grub => {
            args.push("--compress=xz".into());
            args.push(format!("--output={}", out.display()).into());
            if version.at_least_strict(1, 10) {
                // sd-boot era: GRUB covers only BIOS (amd64) or UEFI (arm64), one platform.
                let platform = if spec.arch == "arm64" { ARM64_EFI } else { I386_PC };
                args.push(format!("--directory={}", grub_platform(platform)?.display()).into());
            } else {
                // GRUB boots both firmwares: grub-mkrescue takes every platform installed.
                let needed: &[GrubPlatform] = if spec.arch == "arm64" {
                    &[ARM64_EFI]
                } else {
                    &[I386_PC, X86_64_EFI]
                };
                for platform in needed {
                    grub_platform(*platform)?;
                }
            }
            push(&mut args, &["-iso-level", "3"]);
            args.extend(graft_args(&tree)?);
            GRUB_MKRESCUE
        }
    };

    // xorriso native commands after `--`: pinned dates, the label, normalised owners and modes.
    args.push("--".into());
    let epoch = SOURCE_DATE_EPOCH.to_string();
    push(
        &mut args,
        &["-volume_date", "all_file_dates", &format!("={epoch}")],
    );
    push(
        &mut args,
        &["-volume_date", "uuid", &iso_stamp(SOURCE_DATE_EPOCH)],
    );
    if version.at_least(1, 8) {
        push(
            &mut args,
            &[
                "-volid",
                &volume_id(&spec.version),
                "-volset-id",
                &label(&spec.version),
            ],
        );
    }
    push(
        &mut args,
        &["-chown_r", "0", "/", "--", "-chgrp_r", "0", "/", "--"],
    );
    push(
        &mut args,
        &["-find", "/", "-type", "d", "-exec", "chmod", "0555", "--"],
    );
    push(
        &mut args,
        &["-find", "/", "-type", "f", "-exec", "chmod", "0444", "--"],
    );

    let serial = format!("{:x}", SOURCE_DATE_EPOCH as u32);
    let mut cmd = Command::new(tools::find(tool)?);
    cmd.args(&args)
        .env("SOURCE_DATE_EPOCH", &epoch)
        .env("GRUB_FAT_SERIAL_NUMBER", &serial);
    if tool == GRUB_MKRESCUE {
        if let Ok(mformat) = tools::find(MTOOLS) {
            pin_fat_serial(&mut cmd, &mformat, &serial, &work)?;
        }
    }
    tools::run_command(tool, cmd)?;
    if !out.is_file() {
        return Err(Error::ToolFailed {
            program: tool.program,
            message: format!("exited successfully but wrote no {}", out.display()),
        });
    }
    fs::remove_dir_all(&work)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids() {
        assert_eq!(volume_id("v1.9.0"), "TALOS_V1_9_0");
        assert_eq!(volume_id("v1.12.0-alpha.1"), "TALOS_V1_12_0_ALPHA_1");
        assert_eq!(volume_id("v1.12.0+dirty!"), "TALOS_V1_12_0DIRTY");
        assert_eq!(volume_id("v1.12.0-alpha.0-123-gabcdef01234").len(), 32);
        assert_eq!(label("v1.9.0"), "Talos-v1.9.0");
    }

    #[test]
    fn grub_quoting() {
        assert_eq!(grub_quote(""), "");
        assert_eq!(grub_quote("foo"), "foo");
        assert_eq!(grub_quote(r"foo\"), r"foo\\");
        assert_eq!(grub_quote(r"foo\$"), r"foo\\\$");
        assert_eq!(
            grub_quote("http://h/c?u=${uuid}&s=${serial}"),
            r"http://h/c?u=\$\{uuid\}\&s=\$\{serial\}"
        );
        assert_eq!(grub_quote(r#"a|b;c<d>e"f"#), r#"a\|b\;c\<d\>e\"f"#);
    }

    #[test]
    fn grub_cfg_text() {
        let with_reset = grub_cfg("console=ttyS0 a=$x", true);
        assert_eq!(
            with_reset,
            "set default=0\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\n\
             terminal_output console\n\nmenuentry \"Talos ISO\" {\n\tset gfxmode=auto\n\t\
             set gfxpayload=text\n\tlinux /boot/vmlinuz console=ttyS0 a=\\$x\n\t\
             initrd /boot/initramfs.xz\n}\n\nmenuentry \"Reset Talos installation\" {\n\t\
             set gfxmode=auto\n\tset gfxpayload=text\n\tlinux /boot/vmlinuz console=ttyS0 a=\\$x \
             talos.experimental.wipe=system\n\tinitrd /boot/initramfs.xz\n}\n"
        );
        let without = grub_cfg("x", false);
        assert!(without.ends_with("initrd /boot/initramfs.xz\n}\n\n"), "{without}");
        assert!(!without.contains("Reset"));
    }

    #[test]
    fn efiboot_sizes() {
        assert_eq!(efiboot_size(100_000, 60 * MIB + 1), 10 * MIB + MIB + 61 * MIB);
        assert_eq!(efiboot_size(1, 1), MIN_EFIBOOT_SIZE);
        // the minimum is a valid FAT32 for our writer, one MiB less is not
        let empty = BTreeMap::new();
        assert!(FatVolume::new(&FatOptions::esp(MIN_EFIBOOT_SIZE, 512), &empty).is_ok());
        assert!(FatVolume::new(&FatOptions::esp(MIN_EFIBOOT_SIZE - MIB, 512), &empty).is_err());
    }

    #[test]
    fn iso_stamps() {
        assert_eq!(iso_stamp(SOURCE_DATE_EPOCH), "2019060121345200");
        assert_eq!(iso_stamp(0), "1970010100000000");
        assert_eq!(iso_stamp(951_782_400), "2000022900000000");
    }

    #[test]
    fn tools_per_variant() {
        assert_eq!(required_tools(IsoVariant::SdBoot), &[XORRISO]);
        assert!(required_tools(IsoVariant::Hybrid).contains(&GRUB_MKRESCUE));
        assert!(required_tools(IsoVariant::Grub).contains(&XORRISO));
    }
}
