//! The download path grammar (spec §6.1), in the Go factory's evaluation order. The order is
//! observable: `initramfs-amd64` (no `.xz`) or `installer-amd64.raw` fall through to later
//! patterns and fail there with *their* messages, and error texts are part of the HTTP contract
//! (the HTTP layer prefixes `error parsing profile from path: `).

use super::platforms::{platform_default, DEFAULT_RAW_DISK_SIZE};
use super::{DiskFormat, ImageOptions, OutFormat, Output, OutputKind};
use crate::arch::Arch;

/// Why a path names no profile. Messages are the Go factory's, with Go `%q` quoting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing matched, or a disk image without a known disk format. Carries the path with its
    /// compression suffix already removed, as Go reports it.
    #[error("invalid profile path: {}", go_quote(.0))]
    InvalidProfilePath(String),
    #[error("invalid architecture: {}", go_quote(.0))]
    InvalidArchitecture(String),
    /// `<platform>-<arch>` without any dash.
    #[error("invalid platform-arch: {}", go_quote(.0))]
    InvalidPlatformArch(String),
}

/// A parsed `<platform>-<arch>[-secureboot]`, also what the PXE frontend needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformArch {
    pub platform: String,
    pub arch: Arch,
    pub secureboot: bool,
}

/// What a download path asks for, before the schematic and version refine it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPath {
    pub platform: String,
    pub arch: Arch,
    pub secureboot: bool,
    pub output: Output,
}

/// `amd64`, `arm64`, or the iPXE aliases `x86_64` / `i386` (→ amd64).
pub fn parse_arch(s: &str) -> Result<Arch, PathError> {
    Arch::parse(s).ok_or_else(|| PathError::InvalidArchitecture(s.to_owned()))
}

/// `<platform>-<arch>[-secureboot]`: the suffix is cut first, then the platform is the text
/// before the first dash, except `digital-ocean`, the one platform with a dash in its name. The
/// platform is not checked against a list.
pub fn parse_platform_arch(s: &str) -> Result<PlatformArch, PathError> {
    let (s, secureboot) = match s.strip_suffix("-secureboot") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let Some((mut platform, mut rest)) = s.split_once('-') else {
        return Err(PathError::InvalidPlatformArch(s.to_owned()));
    };
    if platform == "digital" {
        if let Some(after) = rest.strip_prefix("ocean-") {
            platform = "digital-ocean";
            rest = after;
        }
    }
    Ok(PlatformArch {
        platform: platform.to_owned(),
        arch: parse_arch(rest)?,
        secureboot,
    })
}

/// Parses the `:path` of `/image/:schematic/:version/:path` (spec §6.1), first match wins:
///
/// 1. `kernel-<arch>`
/// 2. `cmdline-<pa>`
/// 3. `initramfs-<arch>.xz`
/// 4. `<pa>.iso`
/// 5. `<pa>-uki.efi`
/// 6. `installer-<arch>[-secureboot].tar` (platform metal)
/// 7. `<platform>-installer-<arch>[-secureboot].tar`
/// 8. `<pa>.<raw|qcow2|vhd|ova>[.tar.gz|.gz|.xz|.zst]`
///
/// where `<pa>` is `<platform>-<arch>[-secureboot]`.
pub fn parse_path(path: &str) -> Result<ParsedPath, PathError> {
    let simple = |platform: &str, arch: Arch, secureboot: bool, kind: OutputKind| ParsedPath {
        platform: platform.to_owned(),
        arch,
        secureboot,
        output: Output {
            kind,
            out_format: OutFormat::Raw,
            image_options: None,
            iso_options: None,
        },
    };
    let from_pa = |pa: PlatformArch, kind: OutputKind| simple(&pa.platform, pa.arch, pa.secureboot, kind);

    // 1. The kernel is the same for every platform; metal is a placeholder.
    if let Some(rest) = path.strip_prefix("kernel-") {
        return Ok(simple("metal", parse_arch(rest)?, false, OutputKind::Kernel));
    }
    // 2.
    if let Some(rest) = path.strip_prefix("cmdline-") {
        return Ok(from_pa(parse_platform_arch(rest)?, OutputKind::Cmdline));
    }
    // 3. Only with `.xz`; otherwise fall through.
    if let Some(rest) = path
        .strip_prefix("initramfs-")
        .and_then(|r| r.strip_suffix(".xz"))
    {
        return Ok(simple("metal", parse_arch(rest)?, false, OutputKind::Initramfs));
    }
    // 4.
    if let Some(rest) = path.strip_suffix(".iso") {
        return Ok(from_pa(parse_platform_arch(rest)?, OutputKind::Iso));
    }
    // 5.
    if let Some(rest) = path.strip_suffix("-uki.efi") {
        return Ok(from_pa(parse_platform_arch(rest)?, OutputKind::Uki));
    }
    // 6. Legacy installer naming; only with `.tar`, otherwise fall through.
    if let Some(rest) = path
        .strip_prefix("installer-")
        .and_then(|r| r.strip_suffix(".tar"))
    {
        let (rest, secureboot) = match rest.strip_suffix("-secureboot") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        return Ok(simple(
            "metal",
            parse_arch(rest)?,
            secureboot,
            OutputKind::Installer,
        ));
    }
    // 7. Split at the first `-installer-`; only with `.tar`, otherwise fall through.
    if let Some((platform, rest)) = path.split_once("-installer-") {
        if let Some(rest) = rest.strip_suffix(".tar") {
            let pa = parse_platform_arch(&format!("{platform}-{rest}"))?;
            return Ok(from_pa(pa, OutputKind::Installer));
        }
    }
    // 8. Anything else must be a disk image: compression suffix (first match in this order),
    // then the disk format, then `<pa>`.
    let mut rest = path;
    let mut out_format = OutFormat::Raw;
    for format in [OutFormat::TarGz, OutFormat::Gz, OutFormat::Xz, OutFormat::Zst] {
        if let Some(r) = rest.strip_suffix(format.suffix()) {
            rest = r;
            out_format = format;
            break;
        }
    }
    let mut disk_format = None;
    for format in [
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vhd,
        DiskFormat::Ova,
    ] {
        if let Some(r) = rest
            .strip_suffix(format.as_str())
            .and_then(|r| r.strip_suffix('.'))
        {
            rest = r;
            disk_format = Some(format);
            break;
        }
    }
    let Some(disk_format) = disk_format else {
        return Err(PathError::InvalidProfilePath(rest.to_owned()));
    };
    let pa = parse_platform_arch(rest)?;

    let mut image = ImageOptions {
        disk_size: DEFAULT_RAW_DISK_SIZE,
        disk_format,
        disk_format_options: if disk_format == DiskFormat::Qcow2 {
            "cluster_size=8k".to_owned()
        } else {
            String::new()
        },
        disk_sector_size: 0,
        bootloader: None,
        sd_boot_enroll_keys: None,
    };
    // The platform's default profile overrides size and options (not format or compression:
    // the path chose those).
    if let Some(default) = platform_default(&pa.platform) {
        if default.disk_size != 0 {
            image.disk_size = default.disk_size;
        }
        if !default.disk_format_options.is_empty() {
            image.disk_format_options = default.disk_format_options.to_owned();
        }
    }
    Ok(ParsedPath {
        platform: pa.platform,
        arch: pa.arch,
        secureboot: pa.secureboot,
        output: Output {
            kind: OutputKind::Image,
            out_format,
            image_options: Some(image),
            iso_options: None,
        },
    })
}

/// Go's `strconv.Quote` (what `%q` prints for a string), so that messages match byte for byte.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            // Go keeps printable runes; control and other non-graphic runes are escaped. Rust's
            // `is_control` covers Cc; Go also escapes a few format/space runes, approximated here
            // by the common ones (paths come from URLs, where such runes are rare).
            c if c.is_control()
                || matches!(
                    c,
                    '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{feff}'
                ) =>
            {
                let n = c as u32;
                if n < 0x80 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// (path, expected kind, platform, arch, secureboot, out format, disk format)
    type Row = (
        &'static str,
        OutputKind,
        &'static str,
        Arch,
        bool,
        OutFormat,
        Option<DiskFormat>,
    );

    #[test]
    fn every_pattern_of_the_grammar() {
        use Arch::*;
        use OutputKind::*;
        let rows: &[Row] = &[
            (
                "kernel-amd64",
                Kernel,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "kernel-arm64",
                Kernel,
                "metal",
                Arm64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "kernel-x86_64",
                Kernel,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "cmdline-metal-amd64",
                Cmdline,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "cmdline-aws-arm64",
                Cmdline,
                "aws",
                Arm64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "cmdline-equinixMetal-amd64",
                Cmdline,
                "equinixMetal",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "cmdline-metal-amd64-secureboot",
                Cmdline,
                "metal",
                Amd64,
                true,
                OutFormat::Raw,
                None,
            ),
            (
                "initramfs-amd64.xz",
                Initramfs,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "initramfs-arm64.xz",
                Initramfs,
                "metal",
                Arm64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "metal-amd64.iso",
                Iso,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "metal-arm64-secureboot.iso",
                Iso,
                "metal",
                Arm64,
                true,
                OutFormat::Raw,
                None,
            ),
            ("metal-i386.iso", Iso, "metal", Amd64, false, OutFormat::Raw, None),
            (
                "metal-amd64-uki.efi",
                Uki,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "metal-amd64-secureboot-uki.efi",
                Uki,
                "metal",
                Amd64,
                true,
                OutFormat::Raw,
                None,
            ),
            (
                "nocloud-amd64-uki.efi",
                Uki,
                "nocloud",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "installer-amd64.tar",
                Installer,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "installer-arm64-secureboot.tar",
                Installer,
                "metal",
                Arm64,
                true,
                OutFormat::Raw,
                None,
            ),
            (
                "metal-installer-amd64.tar",
                Installer,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "metal-installer-amd64-secureboot.tar",
                Installer,
                "metal",
                Amd64,
                true,
                OutFormat::Raw,
                None,
            ),
            (
                "aws-installer-arm64.tar",
                Installer,
                "aws",
                Arm64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "nocloud-installer-amd64.tar",
                Installer,
                "nocloud",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "digital-ocean-installer-amd64.tar",
                Installer,
                "digital-ocean",
                Amd64,
                false,
                OutFormat::Raw,
                None,
            ),
            (
                "metal-amd64.raw",
                Image,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                Some(DiskFormat::Raw),
            ),
            (
                "metal-amd64.raw.xz",
                Image,
                "metal",
                Amd64,
                false,
                OutFormat::Xz,
                Some(DiskFormat::Raw),
            ),
            (
                "metal-arm64.raw.zst",
                Image,
                "metal",
                Arm64,
                false,
                OutFormat::Zst,
                Some(DiskFormat::Raw),
            ),
            (
                "metal-amd64-secureboot.raw.zst",
                Image,
                "metal",
                Amd64,
                true,
                OutFormat::Zst,
                Some(DiskFormat::Raw),
            ),
            (
                "metal-amd64.qcow2",
                Image,
                "metal",
                Amd64,
                false,
                OutFormat::Raw,
                Some(DiskFormat::Qcow2),
            ),
            (
                "aws-amd64.raw.xz",
                Image,
                "aws",
                Amd64,
                false,
                OutFormat::Xz,
                Some(DiskFormat::Raw),
            ),
            (
                "gcp-amd64.raw.tar.gz",
                Image,
                "gcp",
                Amd64,
                false,
                OutFormat::TarGz,
                Some(DiskFormat::Raw),
            ),
            (
                "azure-amd64.vhd.xz",
                Image,
                "azure",
                Amd64,
                false,
                OutFormat::Xz,
                Some(DiskFormat::Vhd),
            ),
            (
                "digital-ocean-amd64.raw.gz",
                Image,
                "digital-ocean",
                Amd64,
                false,
                OutFormat::Gz,
                Some(DiskFormat::Raw),
            ),
            (
                "vmware-amd64.ova",
                Image,
                "vmware",
                Amd64,
                false,
                OutFormat::Raw,
                Some(DiskFormat::Ova),
            ),
            (
                "oracle-arm64.qcow2",
                Image,
                "oracle",
                Arm64,
                false,
                OutFormat::Raw,
                Some(DiskFormat::Qcow2),
            ),
            (
                "nocloud-x86_64.raw.xz",
                Image,
                "nocloud",
                Amd64,
                false,
                OutFormat::Xz,
                Some(DiskFormat::Raw),
            ),
        ];
        for &(path, kind, platform, arch, secureboot, out_format, disk) in rows {
            let p = parse_path(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(p.output.kind, kind, "{path}");
            assert_eq!(p.platform, platform, "{path}");
            assert_eq!(p.arch, arch, "{path}");
            assert_eq!(p.secureboot, secureboot, "{path}");
            assert_eq!(p.output.out_format, out_format, "{path}");
            assert_eq!(
                p.output.image_options.as_ref().map(|o| o.disk_format),
                disk,
                "{path}"
            );
            assert_eq!(p.output.image_options.is_some(), kind == Image, "{path}");
        }
    }

    #[test]
    fn errors_and_their_texts() {
        let cases: &[(&str, &str)] = &[
            ("metal-amd64.ssd", r#"invalid profile path: "metal-amd64.ssd""#),
            // The compression suffix is gone when the disk format is missing.
            ("metal-amd64.ssd.xz", r#"invalid profile path: "metal-amd64.ssd""#),
            // A PXE-style name is not a download.
            ("metal-x86_64", r#"invalid profile path: "metal-x86_64""#),
            ("", r#"invalid profile path: """#),
            ("kernel-x", r#"invalid architecture: "x""#),
            ("kernel-amd64.xz", r#"invalid architecture: "amd64.xz""#),
            ("initramfs-riscv64.xz", r#"invalid architecture: "riscv64""#),
            // Without `.xz`, `initramfs-...` falls through to the disk image rule.
            ("initramfs-amd64", r#"invalid profile path: "initramfs-amd64""#),
            (
                "metal-rpi_generic-arm64.raw.xz",
                r#"invalid architecture: "rpi_generic-arm64""#,
            ),
            ("metal.iso", r#"invalid platform-arch: "metal""#),
            ("metal-secureboot.iso", r#"invalid platform-arch: "metal""#),
            ("cmdline-metal", r#"invalid platform-arch: "metal""#),
            ("digital-ocean.raw", r#"invalid architecture: "ocean""#),
            ("metal-aarch64.iso", r#"invalid architecture: "aarch64""#),
            (
                "installer-amd64-secureboot-x.tar",
                r#"invalid architecture: "amd64-secureboot-x""#,
            ),
            // Without `.tar`, installers fall through to the disk image rule.
            (
                "aws-installer-amd64.raw.xz",
                r#"invalid architecture: "installer-amd64""#,
            ),
            ("metal-amd64\".iso", r#"invalid architecture: "amd64\"""#),
            ("metal-amd64\n.raw", r#"invalid architecture: "amd64\n""#),
        ];
        for &(path, want) in cases {
            match parse_path(path) {
                Err(e) => assert_eq!(e.to_string(), want, "{path:?}"),
                Ok(p) => panic!("{path:?} parsed as {p:?}"),
            }
        }
    }

    #[test]
    fn installer_raw_is_a_disk_image_of_platform_installer() {
        // Not `.tar`, no `-installer-`: a disk image of a platform named "installer". (The Go
        // factory would dereference the nil image options of Talos' "installer" profile here;
        // we simply have no default for it.)
        let p = parse_path("installer-amd64.raw").unwrap();
        assert_eq!(p.platform, "installer");
        assert_eq!(p.output.kind, OutputKind::Image);
        assert_eq!(p.output.image_options.unwrap().disk_size, DEFAULT_RAW_DISK_SIZE);
    }

    #[test]
    fn disk_defaults_come_from_the_platform_profile() {
        let opts = |p: &str| parse_path(p).unwrap().output.image_options.unwrap();
        let mib = 1024 * 1024;
        assert_eq!(opts("metal-amd64.raw.zst").disk_size, 1246 * mib);
        assert_eq!(opts("aws-amd64.raw.xz").disk_size, 8192 * mib);
        assert_eq!(opts("unknowncloud-amd64.raw").disk_size, 8192 * mib);
        assert_eq!(opts("exoscale-amd64.qcow2").disk_size, 10240 * mib);
        assert_eq!(opts("metal-amd64.qcow2").disk_format_options, "cluster_size=8k");
        assert_eq!(opts("metal-amd64.raw").disk_format_options, "");
        assert_eq!(
            opts("azure-amd64.vhd.xz").disk_format_options,
            "subformat=fixed,force_size"
        );
        // As in Go, the options follow the platform even for another format.
        assert_eq!(
            opts("azure-amd64.raw.xz").disk_format_options,
            "subformat=fixed,force_size"
        );
        assert_eq!(opts("digital-ocean-amd64.raw.gz").disk_size, 8192 * mib);
        assert_eq!(opts("vmware-amd64.ova").disk_format, DiskFormat::Ova);
    }

    #[test]
    fn platform_arch_for_pxe() {
        let pa = parse_platform_arch("metal-x86_64").unwrap();
        assert_eq!(
            (pa.platform.as_str(), pa.arch, pa.secureboot),
            ("metal", Arch::Amd64, false)
        );
        let pa = parse_platform_arch("digital-ocean-amd64-secureboot").unwrap();
        assert_eq!(
            (pa.platform.as_str(), pa.arch, pa.secureboot),
            ("digital-ocean", Arch::Amd64, true)
        );
        // `digital-ocean` only when followed by a dash.
        let pa = parse_platform_arch("digital-amd64").unwrap();
        assert_eq!(pa.platform, "digital");
    }

    #[test]
    fn go_quote_escapes_like_strconv_quote() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\r\n\u{1}\u{7f}"), r#""\r\n\x01\x7f""#);
        assert_eq!(go_quote("é"), "\"é\"");
    }
}
