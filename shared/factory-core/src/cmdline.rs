//! The Talos kernel command line, byte for byte as the Talos imager builds it (`buildCmdline` in
//! `pkg/imager/imager.go`): the `cmdline-<platform>-<arch>[-secureboot]` asset, the UKI
//! `.cmdline` section and the GRUB entries all carry this string.
//!
//! Build order (each step merges into one go-procfs [`Cmdline`], see [`procfs`]):
//!
//! 1. `talos.platform=<name>`;
//! 2. `SetAll(platform args)` ([`platform::platform_args`]);
//! 3. ISO output and ≥ 1.8: `talos.halt_if_installed=1`;
//! 4. `SetAll(overlay kernel args)` (SBC overlays; they replace e.g. `console`);
//! 5. `AppendAll(default args)` ([`defaults::default_args`]);
//! 6. SecureBoot: `AppendAll(lockdown=confidentiality)` before 1.14;
//! 7. META values: `Append(talos.environment, INSTALLER_META_BASE64=<b64>)` ([`meta`]);
//! 8. `AppendAll(extra kernel args)` with `console` and `talos.platform` overwritten in place and
//!    `-arg` / `-arg=value` removals.
//!
//! Versions gate steps 2, 3, 5, 6 and 7 by `major.minor.patch` only (Talos' quirks), so a
//! pre-release behaves as its release. Where the docs and upstream differ, the Go source of the
//! snapshot the docs name (talos `main` @ `ad8823176e75`, go-procfs v0.1.2) was followed; the
//! decisions are written next to the code concerned.

pub mod defaults;
pub mod meta;
pub mod platform;
pub mod procfs;

pub use procfs::{AppendAllOptions, Cmdline, Parameter};

use crate::arch::Arch;
use crate::schematic::MetaValue;
use crate::version::TalosVersion;

/// `talos.halt_if_installed=1` is added to ISO command lines from 1.8 (quirk
/// `SupportsHaltIfInstalled`): an ISO left in the drive then halts instead of reinstalling.
const HALT_IF_INSTALLED_SINCE: TalosVersion = TalosVersion::new(1, 8, 0);

/// The kernel parameter naming the platform.
pub const PLATFORM_PARAM: &str = "talos.platform";

/// What the command line depends on.
///
/// The caller decides which customisation applies to the output kind, as the factory's
/// `EnhanceFromSchematic` does before calling the imager (spec §6.5): `extra_kernel_args` and
/// `meta` empty for kernel/initramfs; `meta` empty for disk images (their META goes into the META
/// partition, and the imager never puts it on their cmdline), installers and UKIs.
#[derive(Debug, Clone, Copy)]
pub struct CmdlineInput<'a> {
    /// The platform as written in the path (`metal`, `aws`, `digital-ocean`, `equinixMetal`, ...).
    pub platform: &'a str,
    pub arch: Arch,
    pub version: &'a TalosVersion,
    pub secureboot: bool,
    /// The output is an ISO (adds `talos.halt_if_installed=1` from 1.8).
    pub iso: bool,
    /// The schematic's `customization.extraKernelArgs`; elements are joined with a space before
    /// parsing, so one element may carry several arguments.
    pub extra_kernel_args: &'a [String],
    /// The overlay installer's `get-options` `kernelArgs` (SBC images).
    pub overlay_kernel_args: &'a [String],
    /// The schematic's `customization.meta`, in schematic order.
    pub meta: &'a [MetaValue],
}

/// The imager refuses platforms it does not know (`unknown platform: "<name>"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform: {0:?}")]
pub struct UnknownPlatform(pub String);

/// Whether the imager knows the platform (see [`platform::PLATFORMS`]).
pub fn is_known_platform(platform: &str) -> bool {
    platform::PLATFORMS.contains(&platform)
}

/// The command line the imager builds, or the imager's refusal of an unknown platform.
pub fn try_kernel_cmdline(input: &CmdlineInput) -> Result<String, UnknownPlatform> {
    if !is_known_platform(input.platform) {
        return Err(UnknownPlatform(input.platform.to_owned()));
    }
    Ok(kernel_cmdline(input))
}

/// The exact command line the imager builds (no trailing newline).
///
/// Total by design: an unknown platform — which the imager rejects, see [`try_kernel_cmdline`] —
/// is rendered as `talos.platform=<platform>` with no platform arguments, rather than panicking.
pub fn kernel_cmdline(input: &CmdlineInput) -> String {
    let version = input.version;
    let core = version.core();
    let mut cmdline = Cmdline::new();

    let (name, platform_args) = match platform::platform_args(input.platform, input.arch, version) {
        Some(p) => (p.name, p.kernel_args),
        None => (input.platform, Vec::new()),
    };
    cmdline.append(PLATFORM_PARAM, name);
    cmdline.set_all(&platform_args);

    if input.iso && core >= HALT_IF_INSTALLED_SINCE {
        cmdline.append("talos.halt_if_installed", "1");
    }

    cmdline.set_all(input.overlay_kernel_args);

    // Defaults before the user's arguments, so that the user's arguments can override them.
    let plain = AppendAllOptions::default();
    cmdline.append_all(&defaults::default_args(version), &plain);
    if input.secureboot {
        cmdline.append_all(&defaults::secure_boot_args(version), &plain);
    }

    if !input.meta.is_empty() {
        let encoded = meta::encode_meta(input.meta, meta::supports_compressed_meta(version));
        cmdline.append(
            meta::ENVIRONMENT_PARAM,
            &format!("{}={encoded}", meta::META_ENV_VAR),
        );
    }

    cmdline.append_all(
        input.extra_kernel_args,
        &AppendAllOptions {
            overwrite_args: vec!["console".to_owned(), PLATFORM_PARAM.to_owned()],
            delete_negated_args: true,
        },
    );

    cmdline.to_string()
}

/// The whole kernel argument carrying the META values,
/// `talos.environment=INSTALLER_META_BASE64=<base64>`, or `None` without values. Payloads over
/// 256 bytes are gzip-compressed from 1.6.3 (see [`meta`], including why compressed payloads are
/// not byte-identical to Go's).
pub fn meta_environment(meta: &[MetaValue], version: &TalosVersion) -> Option<String> {
    if meta.is_empty() {
        return None;
    }
    let encoded = meta::encode_meta(meta, meta::supports_compressed_meta(version));
    Some(format!(
        "{}={}={encoded}",
        meta::ENVIRONMENT_PARAM,
        meta::META_ENV_VAR
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        TalosVersion::parse(s).expect("test version")
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    /// A plain `cmdline-<platform>-<arch>` request for the empty schematic.
    fn plain(platform: &str, arch: Arch, version: &str) -> String {
        let version = v(version);
        kernel_cmdline(&CmdlineInput {
            platform,
            arch,
            version: &version,
            secureboot: false,
            iso: false,
            extra_kernel_args: &[],
            overlay_kernel_args: &[],
            meta: &[],
        })
    }

    struct Custom<'a> {
        platform: &'a str,
        arch: Arch,
        version: &'a str,
        secureboot: bool,
        iso: bool,
        extra: &'a [&'a str],
        overlay: &'a [&'a str],
        meta: &'a [MetaValue],
    }

    impl Default for Custom<'_> {
        fn default() -> Self {
            Self {
                platform: "metal",
                arch: Arch::Amd64,
                version: "1.13.0",
                secureboot: false,
                iso: false,
                extra: &[],
                overlay: &[],
                meta: &[],
            }
        }
    }

    fn build(c: Custom) -> String {
        let version = v(c.version);
        let extra = strings(c.extra);
        let overlay = strings(c.overlay);
        kernel_cmdline(&CmdlineInput {
            platform: c.platform,
            arch: c.arch,
            version: &version,
            secureboot: c.secureboot,
            iso: c.iso,
            extra_kernel_args: &extra,
            overlay_kernel_args: &overlay,
            meta: c.meta,
        })
    }

    const METAL_1_13_AMD64: &str = "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge \
        pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 \
        module.sig_enforce=1 proc_mem.force_override=never";

    // ---- Golden vectors: upstream pkg/imager/imager_test.go (kind cmdline, empty customisation).
    // The four of talos-imager.md §6.4 are among them (1.7 amd64, 1.13 amd64, 1.14 arm64,
    // 1.14 aws).

    #[test]
    fn golden_imager_test_vectors() {
        let ima = "ima_template=ima-ng ima_appraise=fix ima_hash=sha512";
        let old = "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 \
                   printk.devkmsg=on";
        let new = "slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 \
                   proc_mem.force_override=never";
        let cases: Vec<(&str, Arch, &str, String)> = vec![
            (
                "metal",
                Arch::Amd64,
                "1.7.0",
                format!("talos.platform=metal console=ttyS0 console=tty0 {old} {ima}"),
            ),
            (
                "metal",
                Arch::Arm64,
                "1.7.0",
                format!("talos.platform=metal console=ttyAMA0 console=tty0 {old} {ima}"),
            ),
            (
                "metal",
                Arch::Amd64,
                "1.8.0",
                format!("talos.platform=metal console=tty0 {old} {ima}"),
            ),
            (
                "metal",
                Arch::Arm64,
                "1.8.0",
                format!("talos.platform=metal console=ttyAMA0 console=tty0 {old} {ima}"),
            ),
            (
                "metal",
                Arch::Amd64,
                "1.10.1",
                format!("talos.platform=metal console=tty0 {old} {ima} selinux=1"),
            ),
            (
                "metal",
                Arch::Arm64,
                "1.10.1",
                format!("talos.platform=metal console=ttyAMA0 console=tty0 {old} {ima} selinux=1"),
            ),
            (
                "metal",
                Arch::Amd64,
                "1.11.0",
                format!("talos.platform=metal console=tty0 {old} selinux=1"),
            ),
            (
                "metal",
                Arch::Arm64,
                "1.11.0",
                format!("talos.platform=metal console=ttyAMA0 console=tty0 {old} selinux=1"),
            ),
            ("metal", Arch::Amd64, "1.13.0", METAL_1_13_AMD64.to_owned()),
            (
                "metal",
                Arch::Arm64,
                "1.13.0",
                format!(
                    "talos.platform=metal console=ttyAMA0 console=tty0 {old} selinux=1 \
                     module.sig_enforce=1 proc_mem.force_override=never"
                ),
            ),
            (
                "aws",
                Arch::Amd64,
                "1.13.0",
                format!(
                    "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 {old} selinux=1 \
                     module.sig_enforce=1 proc_mem.force_override=never"
                ),
            ),
            (
                "aws",
                Arch::Arm64,
                "1.13.0",
                format!(
                    "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 {old} selinux=1 \
                     module.sig_enforce=1 proc_mem.force_override=never"
                ),
            ),
            (
                "metal",
                Arch::Amd64,
                "1.14.0",
                format!("talos.platform=metal console=tty0 {new}"),
            ),
            (
                "metal",
                Arch::Arm64,
                "1.14.0",
                format!("talos.platform=metal console=ttyAMA0 console=tty0 {new}"),
            ),
            (
                "aws",
                Arch::Amd64,
                "1.14.0",
                format!(
                    "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 \
                     nvme_core.io_timeout=4294967295 {new}"
                ),
            ),
            (
                "aws",
                Arch::Arm64,
                "1.14.0",
                format!(
                    "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 \
                     nvme_core.io_timeout=4294967295 {new}"
                ),
            ),
        ];
        for (platform, arch, version, expected) in cases {
            assert_eq!(
                plain(platform, arch, version),
                expected,
                "{platform} {arch} {version}"
            );
        }
    }

    /// talos-imager.md §6.4, literally.
    #[test]
    fn golden_talos_imager_doc_vectors() {
        assert_eq!(
            plain("metal", Arch::Amd64, "1.7.0"),
            "talos.platform=metal console=ttyS0 console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix ima_hash=sha512"
        );
        assert_eq!(
            plain("metal", Arch::Amd64, "1.13.0"),
            "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        );
        assert_eq!(
            plain("metal", Arch::Arm64, "1.14.0"),
            "talos.platform=metal console=ttyAMA0 console=tty0 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        );
        assert_eq!(
            plain("aws", Arch::Amd64, "1.14.0"),
            "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 nvme_core.io_timeout=4294967295 slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        );
    }

    /// Spec §6.4 `cmdline-metal-amd64`: the 1.7 base string transformed per version.
    #[test]
    fn golden_spec_metal_amd64_gating() {
        let base = "talos.platform=metal console=ttyS0 console=tty0 init_on_alloc=1 slab_nomerge pti=on \
                    consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng \
                    ima_appraise=fix ima_hash=sha512";
        let expect = |version: &str| -> String {
            let core = v(version).core();
            let mut s = base.to_owned();
            if core >= v("1.8.0") {
                s = s.replace(" console=ttyS0", "");
            }
            if core >= v("1.10.0") {
                s.push_str(" selinux=1");
            }
            if core >= v("1.11.0") {
                s = s.replace(" ima_template=ima-ng ima_appraise=fix ima_hash=sha512", "");
            }
            if core >= v("1.12.0") {
                s.push_str(" module.sig_enforce=1");
            }
            if core >= v("1.13.0") {
                s.push_str(" proc_mem.force_override=never");
            }
            s
        };
        for version in [
            "1.2.0",
            "1.5.5",
            "1.6.3",
            "1.7.6",
            "1.8.0-alpha.1",
            "1.8.4",
            "1.9.6",
            "1.10.0",
            "1.10.7",
            "1.11.0-beta.0",
            "1.11.5",
            "1.12.1",
            "1.13.9",
        ] {
            assert_eq!(plain("metal", Arch::Amd64, version), expect(version), "{version}");
        }
    }

    /// Spec §6.4 `cmdline-aws-arm64`: same gating, `console=ttyS0` kept (the drop is metal-only).
    #[test]
    fn golden_spec_aws_arm64_gating() {
        let head = "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0";
        let old = "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 \
                   printk.devkmsg=on";
        let ima = "ima_template=ima-ng ima_appraise=fix ima_hash=sha512";
        assert_eq!(plain("aws", Arch::Arm64, "1.7.0"), format!("{head} {old} {ima}"));
        assert_eq!(plain("aws", Arch::Arm64, "1.9.0"), format!("{head} {old} {ima}"));
        assert_eq!(
            plain("aws", Arch::Arm64, "1.10.3"),
            format!("{head} {old} {ima} selinux=1")
        );
        assert_eq!(
            plain("aws", Arch::Arm64, "1.11.2"),
            format!("{head} {old} selinux=1")
        );
        assert_eq!(
            plain("aws", Arch::Arm64, "1.12.0"),
            format!("{head} {old} selinux=1 module.sig_enforce=1")
        );
    }

    /// Spec §6.4 `cmdline-equinixMetal-amd64` (and the `packet` alias, reported as equinixMetal).
    #[test]
    fn golden_spec_equinix_metal() {
        let prefix = "talos.platform=equinixMetal console=ttyS1,115200n8 init_on_alloc=1 ";
        assert!(plain("equinixMetal", Arch::Amd64, "1.12.0").starts_with(prefix));
        assert_eq!(
            plain("packet", Arch::Amd64, "1.12.0"),
            plain("equinixMetal", Arch::Amd64, "1.12.0")
        );
        assert!(plain("equinixMetal", Arch::Arm64, "1.12.0")
            .starts_with("talos.platform=equinixMetal console=ttyAMA0,115200 init_on_alloc=1 "));
    }

    /// Spec §6.4: the UKI inside ≥ 1.10 unified installers carries the plain platform string.
    #[test]
    fn golden_spec_installer_uki_strings() {
        assert!(plain("metal", Arch::Amd64, "1.10.0")
            .starts_with("talos.platform=metal console=tty0 init_on_alloc=1 "));
        assert!(plain("metal", Arch::Arm64, "1.10.0")
            .starts_with("talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 "));
        assert!(plain("nocloud", Arch::Amd64, "1.10.0")
            .starts_with("talos.platform=nocloud console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 "));
    }

    // ---- SecureBoot.

    #[test]
    fn secureboot_appends_lockdown_after_defaults_before_1_14() {
        let sb = |version: &str| {
            build(Custom {
                version,
                secureboot: true,
                ..Custom::default()
            })
        };
        assert_eq!(
            sb("1.13.0"),
            format!("{METAL_1_13_AMD64} lockdown=confidentiality")
        );
        assert!(sb("1.10.0").ends_with(" selinux=1 lockdown=confidentiality"));
        assert!(sb("1.9.0").ends_with(" ima_hash=sha512 lockdown=confidentiality"));
        assert_eq!(sb("1.14.0"), plain("metal", Arch::Amd64, "1.14.0"));
        // Lockdown comes before META and the user's arguments, which may remove it.
        let meta = [MetaValue {
            key: 0xc,
            value: "hello".to_owned(),
        }];
        assert_eq!(
            build(Custom {
                secureboot: true,
                meta: &meta,
                extra: &["nolapic"],
                ..Custom::default()
            }),
            format!(
                "{METAL_1_13_AMD64} lockdown=confidentiality \
                 talos.environment=INSTALLER_META_BASE64=MHhjPWhlbGxv nolapic"
            )
        );
        assert_eq!(
            build(Custom {
                secureboot: true,
                extra: &["-lockdown"],
                ..Custom::default()
            }),
            METAL_1_13_AMD64
        );
    }

    // ---- ISO.

    #[test]
    fn iso_halts_if_installed_from_1_8_right_after_platform_args() {
        let iso = |platform: &str, version: &str| {
            build(Custom {
                platform,
                version,
                iso: true,
                ..Custom::default()
            })
        };
        assert_eq!(
            iso("metal", "1.13.0"),
            METAL_1_13_AMD64.replace("console=tty0 ", "console=tty0 talos.halt_if_installed=1 ")
        );
        assert!(iso("nocloud", "1.8.0-alpha.2").starts_with(
            "talos.platform=nocloud console=tty1 console=ttyS0 net.ifnames=0 talos.halt_if_installed=1 init_on_alloc=1 "
        ));
        assert_eq!(iso("metal", "1.7.6"), plain("metal", Arch::Amd64, "1.7.6"));
        // Before an overlay's arguments (they are set after it).
        assert!(build(Custom {
            arch: Arch::Arm64,
            iso: true,
            overlay: &["console=tty1"],
            ..Custom::default()
        })
        .starts_with("talos.platform=metal console=tty1 talos.halt_if_installed=1 init_on_alloc=1 "));
    }

    // ---- Overlays (talos-imager §12.3).

    #[test]
    fn overlay_args_replace_platform_args_in_place_before_defaults() {
        let rpi = build(Custom {
            arch: Arch::Arm64,
            overlay: &[
                "console=tty0 console=ttyAMA0,115200",
                "sysctl.kernel.kexec_load_disabled=1",
            ],
            ..Custom::default()
        });
        assert_eq!(
            rpi,
            "talos.platform=metal console=tty0 console=ttyAMA0,115200 sysctl.kernel.kexec_load_disabled=1 \
             init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 \
             printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        );
        // An overlay naming a default keeps its position and the default is appended after it.
        let rockchip = build(Custom {
            arch: Arch::Arm64,
            version: "1.14.0",
            overlay: &["console=ttyS2,1500000n8", "pti=off"],
            ..Custom::default()
        });
        assert_eq!(
            rockchip,
            "talos.platform=metal console=ttyS2,1500000n8 pti=off pti=on slab_nomerge consoleblank=0 \
             printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        );
    }

    // ---- The user's extra kernel arguments.

    #[test]
    fn extra_args_are_appended_after_defaults() {
        assert_eq!(
            build(Custom {
                extra: &["nolapic", "nomodeset"],
                ..Custom::default()
            }),
            format!("{METAL_1_13_AMD64} nolapic nomodeset")
        );
        // One element may hold several arguments.
        assert_eq!(
            build(Custom {
                extra: &["nolapic nomodeset"],
                ..Custom::default()
            }),
            format!("{METAL_1_13_AMD64} nolapic nomodeset")
        );
    }

    #[test]
    fn extra_console_overwrites_the_platform_consoles_in_place() {
        assert_eq!(
            build(Custom {
                platform: "aws",
                extra: &["console=ttyS1,115200", "net.ifnames=1"],
                ..Custom::default()
            }),
            "talos.platform=aws console=ttyS1,115200 net.ifnames=0 net.ifnames=1 init_on_alloc=1 \
             slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on \
             selinux=1 module.sig_enforce=1 proc_mem.force_override=never"
        );
        // Several console values in the user's arguments replace all the platform's together.
        assert!(build(Custom {
            arch: Arch::Arm64,
            extra: &["console=ttyS0", "quiet", "console=tty1"],
            ..Custom::default()
        })
        .starts_with("talos.platform=metal console=ttyS0 console=tty1 init_on_alloc=1 "));
    }

    #[test]
    fn extra_talos_platform_overwrites_in_place() {
        assert_eq!(
            build(Custom {
                extra: &["talos.platform=nocloud"],
                ..Custom::default()
            }),
            METAL_1_13_AMD64.replace("talos.platform=metal", "talos.platform=nocloud")
        );
    }

    #[test]
    fn extra_negation_removes_keys_or_values() {
        // `-key` removes the key entirely; a later value is then appended at the end.
        assert_eq!(
            build(Custom {
                arch: Arch::Arm64,
                extra: &["-console", "-selinux", "-init_on_alloc", "console=ttyS0"],
                ..Custom::default()
            }),
            "talos.platform=metal slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 \
             printk.devkmsg=on module.sig_enforce=1 proc_mem.force_override=never console=ttyS0"
        );
        // `-key=value` removes that value only.
        assert!(build(Custom {
            arch: Arch::Arm64,
            extra: &["-console=tty0"],
            ..Custom::default()
        })
        .starts_with("talos.platform=metal console=ttyAMA0 init_on_alloc=1 "));
        // `-slab_nomerge` removes a bare flag; removing an absent key does nothing.
        assert_eq!(
            build(Custom {
                extra: &["-slab_nomerge", "-does_not_exist"],
                ..Custom::default()
            }),
            METAL_1_13_AMD64.replace(" slab_nomerge", "")
        );
    }

    #[test]
    fn extra_duplicates_of_defaults_are_kept_next_to_them() {
        assert_eq!(
            build(Custom {
                extra: &["selinux=0", "pti=on", "slab_nomerge", "ip=dhcp"],
                ..Custom::default()
            }),
            "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge slab_nomerge pti=on pti=on \
             consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 selinux=0 \
             module.sig_enforce=1 proc_mem.force_override=never ip=dhcp"
        );
    }

    // ---- META on the command line.

    #[test]
    fn meta_is_appended_before_extra_args() {
        let meta = [MetaValue {
            key: 0xa,
            value: "{\"externalIPs\":[\"1.2.3.4\"]}".to_owned(),
        }];
        assert_eq!(
            build(Custom {
                meta: &meta,
                extra: &["nolapic"],
                ..Custom::default()
            }),
            format!(
                "{METAL_1_13_AMD64} \
                 talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ== nolapic"
            )
        );
        // A user's own talos.environment joins the META one (same key, printed next to it).
        assert_eq!(
            build(Custom {
                meta: &meta,
                extra: &["nolapic", "talos.environment=FOO=bar"],
                ..Custom::default()
            }),
            format!(
                "{METAL_1_13_AMD64} \
                 talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ== \
                 talos.environment=FOO=bar nolapic"
            )
        );
    }

    #[test]
    fn meta_environment_small_and_large_by_version() {
        let small = [MetaValue {
            key: 0xc,
            value: "hello".to_owned(),
        }];
        assert_eq!(meta_environment(&[], &v("1.12.0")), None);
        assert_eq!(
            meta_environment(&small, &v("1.5.0")).as_deref(),
            Some("talos.environment=INSTALLER_META_BASE64=MHhjPWhlbGxv")
        );
        assert_eq!(
            meta_environment(&small, &v("1.12.0")).as_deref(),
            Some("talos.environment=INSTALLER_META_BASE64=MHhjPWhlbGxv")
        );

        let large = [
            MetaValue {
                key: 0xa,
                value: format!("{{\"addresses\":[\"{}\"]}}", "10.0.0.1/24".repeat(30)),
            },
            MetaValue {
                key: 0x0c,
                value: "second".to_owned(),
            },
        ];
        let prefix = "talos.environment=INSTALLER_META_BASE64=";
        for (version, gzipped) in [("1.6.2", false), ("1.6.3", true), ("1.13.0", true)] {
            let arg = meta_environment(&large, &v(version)).expect("values");
            let encoded = arg.strip_prefix(prefix).expect("prefix");
            assert_eq!(
                meta::tests::decode_meta(encoded),
                (gzipped, large.to_vec()),
                "{version}"
            );
            // kernel_cmdline carries the same argument.
            let line = build(Custom {
                version,
                meta: &large,
                ..Custom::default()
            });
            assert!(line.ends_with(&format!(" {arg}")), "{version}");
        }
    }

    // ---- Every platform of the table.

    #[test]
    fn every_platform_amd64_and_arm64() {
        let defaults = "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 \
                        printk.devkmsg=on selinux=1 module.sig_enforce=1 proc_mem.force_override=never";
        let serial = "console=tty1 console=ttyS0 net.ifnames=0";
        let table: &[(&str, &str, &str)] = &[
            (
                "akamai",
                "console=ttyS0 console=tty0 console=tty1 net.ifnames=0",
                "",
            ),
            ("alibabacloud", serial, ""),
            ("aws", serial, ""),
            (
                "azure",
                "console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300 net.ifnames=0 \
                 talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1",
                "",
            ),
            ("cloudstack", serial, ""),
            ("container", "", ""),
            (
                "digital-ocean",
                "console=ttyS0 console=tty0 console=tty1 net.ifnames=0",
                "",
            ),
            ("equinixMetal", "console=ttyS1,115200n8", "console=ttyAMA0,115200"),
            ("exoscale", serial, ""),
            (
                "gcp",
                "console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1",
                "",
            ),
            ("hcloud", serial, ""),
            ("metal", "console=tty0", "console=ttyAMA0 console=tty0"),
            ("nocloud", serial, ""),
            ("opennebula", serial, ""),
            ("openstack", serial, ""),
            (
                "oracle",
                "console=tty1 console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1",
                "",
            ),
            (
                "scaleway",
                "console=tty1 console=ttyS0 net.ifnames=0 talos.dashboard.disabled=1",
                "",
            ),
            ("upcloud", "net.ifnames=0", ""),
            (
                "vmware",
                "talos.config=guestinfo console=tty0 console=ttyS0 earlyprintk=ttyS0,115200 net.ifnames=0",
                "talos.config=guestinfo console=tty0 console=ttyAMA0 net.ifnames=0",
            ),
            ("vultr", "net.ifnames=0", ""),
        ];
        for (platform, amd64, arm64) in table {
            for (arch, args) in [
                (Arch::Amd64, *amd64),
                (Arch::Arm64, if arm64.is_empty() { *amd64 } else { *arm64 }),
            ] {
                let mut expected = format!("talos.platform={platform} ");
                if !args.is_empty() {
                    expected.push_str(args);
                    expected.push(' ');
                }
                expected.push_str(defaults);
                assert_eq!(plain(platform, arch, "1.13.0"), expected, "{platform} {arch}");
            }
        }
        assert_eq!(
            table.len() + 1,
            platform::PLATFORMS.len(),
            "packet is the only alias"
        );
    }

    #[test]
    fn unknown_platform() {
        let version = v("1.13.0");
        let input = CmdlineInput {
            platform: "rpi_generic",
            arch: Arch::Arm64,
            version: &version,
            secureboot: false,
            iso: false,
            extra_kernel_args: &[],
            overlay_kernel_args: &[],
            meta: &[],
        };
        assert_eq!(
            try_kernel_cmdline(&input),
            Err(UnknownPlatform("rpi_generic".to_owned()))
        );
        assert_eq!(
            try_kernel_cmdline(&input).map_err(|e| e.to_string()),
            Err("unknown platform: \"rpi_generic\"".to_owned())
        );
        assert!(kernel_cmdline(&input).starts_with("talos.platform=rpi_generic init_on_alloc=1 "));
        let known = CmdlineInput {
            platform: "metal",
            ..input
        };
        assert_eq!(
            try_kernel_cmdline(&known).as_deref(),
            Ok(plain("metal", Arch::Arm64, "1.13.0").as_str())
        );
    }
}
