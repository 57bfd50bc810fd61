//! Refining a parsed path with the schematic and the version (spec §6.5, Go
//! `EnhanceFromSchematic`), in the Go order so that the first failing rule is the one reported.
//!
//! What needs registries is not done here: the builder checks the extension and overlay names
//! against the version's catalog with [`resolve_extensions`] / [`resolve_overlay`] (same error
//! texts as the Go factory), pulls the images, merges the overlay's profile, and feeds the exact
//! digests into [`Profile::cache_key`](super::Profile::cache_key).

use super::path::go_quote;
use super::quirks::Quirks;
use super::{
    BaseInstaller, EnrollKeys, IsoOptions, OutputKind, ParsedPath, Profile, ProfileCustomization,
    ProfileInputs, ProfileMeta, ProfileOverlay, SchematicExtension, SecureBootInput, TALOS_NAME,
};
use crate::catalog::{ExtensionEntry, OverlayEntry};
use crate::goyaml::{emit_document, Value};
use crate::schematic::Schematic;
use crate::version::TalosVersion;

/// Why a schematic cannot be applied to a path at a version. Every variant is a client error
/// (HTTP 400 in the Go factory); texts are the Go factory's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnhanceError {
    #[error("embedding configuration is not supported for Talos version {0}")]
    EmbeddedConfigUnsupported(TalosVersion),
    /// The deployment has no SecureBoot signing material.
    #[error("secure boot is disabled")]
    SecureBootDisabled,
    #[error("invalid secureboot enrollKeys value {q}: {0} does not belong to SDBootEnrollKeys values", q = go_quote(.0))]
    InvalidEnrollKeys(String),
    #[error("overlay is not supported for Talos version {0}")]
    OverlayUnsupported(TalosVersion),
    /// Ours: the Go factory lets the imager fail (a 500) for SecureBoot before 1.5.
    #[error("SecureBoot is not supported for Talos version {0}")]
    SecureBootUnsupported(TalosVersion),
    /// Ours: the Go factory lets the imager fail (a 500) for UKIs before 1.5.
    #[error("UKI is not supported for Talos version {0}")]
    UkiUnsupported(TalosVersion),
    #[error("official extension {q} is not available for Talos version {version}", q = go_quote(name))]
    ExtensionUnavailable { name: String, version: TalosVersion },
    /// The Go factory prints the empty catalog entry here; we print the requested name.
    #[error("official overlay {q} is not available for Talos version {version}", q = go_quote(name))]
    OverlayUnavailable { name: String, version: TalosVersion },
}

/// Deployment facts enhancement depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnhanceContext {
    /// Whether SecureBoot signing material is configured. Default: yes.
    pub secureboot_available: bool,
}

impl Default for EnhanceContext {
    fn default() -> Self {
        Self {
            secureboot_available: true,
        }
    }
}

/// [`enhance_with`] for a deployment with SecureBoot configured.
pub fn enhance(
    parsed: ParsedPath,
    schematic: &Schematic,
    version: &TalosVersion,
) -> Result<Profile, EnhanceError> {
    enhance_with(parsed, schematic, version, &EnhanceContext::default())
}

/// Builds the profile for `parsed` with `schematic` at `version` (spec §6.5).
pub fn enhance_with(
    parsed: ParsedPath,
    schematic: &Schematic,
    version: &TalosVersion,
    ctx: &EnhanceContext,
) -> Result<Profile, EnhanceError> {
    let q = Quirks::new(version);
    let c = &schematic.customization;
    let kind = parsed.output.kind;
    // Kernel and cmdline are schematic-independent apart from args/META: no extensions, no
    // embedded config, no schematic extension.
    let carries_system = !matches!(kind, OutputKind::Kernel | OutputKind::Cmdline);

    // Ours: fail cleanly where the imager would (sd-stub/sd-boot exist from 1.5).
    if kind == OutputKind::Uki && !q.supports_uki() {
        return Err(EnhanceError::UkiUnsupported(version.clone()));
    }

    let mut profile = Profile {
        name: TALOS_NAME.to_owned(),
        version: version.clone(),
        platform: parsed.platform,
        arch: parsed.arch,
        secureboot: parsed.secureboot,
        output: parsed.output,
        customization: ProfileCustomization::default(),
        inputs: ProfileInputs::default(),
    };

    if carries_system && !c.embedded_machine_configuration.is_empty() {
        if !q.supports_embedded_config() {
            return Err(EnhanceError::EmbeddedConfigUnsupported(version.clone()));
        }
        profile.customization.embedded_machine_configuration = c.embedded_machine_configuration.clone();
    }

    if profile.secureboot {
        if !ctx.secureboot_available {
            return Err(EnhanceError::SecureBootDisabled);
        }
        if !q.supports_uki() {
            return Err(EnhanceError::SecureBootUnsupported(version.clone()));
        }
        profile.inputs.secureboot = Some(SecureBootInput {
            include_well_known_certificates: c.secureboot.include_well_known_certificates,
        });
        if !c.secureboot.enroll_keys.is_empty() {
            // Validated for every kind (as Go does), applied only where a loader.conf exists.
            let enroll = EnrollKeys::parse(&c.secureboot.enroll_keys)
                .ok_or_else(|| EnhanceError::InvalidEnrollKeys(c.secureboot.enroll_keys.clone()))?;
            match kind {
                OutputKind::Iso => {
                    profile
                        .output
                        .iso_options
                        .get_or_insert_with(IsoOptions::default)
                        .sd_boot_enroll_keys = Some(enroll);
                }
                OutputKind::Image => {
                    if let Some(image) = profile.output.image_options.as_mut() {
                        image.sd_boot_enroll_keys = Some(enroll);
                    }
                }
                _ => {}
            }
        }
    }

    // Checked for every kind, kernel included, as in Go.
    if !schematic.overlay.name.is_empty() && !q.supports_overlays() {
        return Err(EnhanceError::OverlayUnsupported(version.clone()));
    }

    if kind == OutputKind::Installer {
        profile.inputs.base_installer = Some(if q.supports_unified_installer() {
            BaseInstaller::InstallerBase
        } else {
            BaseInstaller::Installer
        });
    }

    if carries_system {
        // Names as written; the builder resolves them (aliases included) per target arch.
        profile.inputs.system_extensions = c.official_extensions.clone();
        profile.inputs.schematic_extension = Some(SchematicExtension {
            schematic_id: schematic.id().as_str().to_owned(),
            embeds_schematic_yaml: q.supports_overlays(),
        });
        if !schematic.overlay.name.is_empty() {
            let o = &schematic.overlay;
            profile.inputs.overlay = Some(ProfileOverlay {
                name: o.name.clone(),
                image: o.image.clone(),
                options_yaml: if o.options.is_empty() {
                    String::new()
                } else {
                    let map = o
                        .options
                        .iter()
                        .map(|(k, v)| (Value::Str(k.clone()), v.clone()))
                        .collect();
                    emit_document(&Value::Map(map))
                },
            });
        }
    }

    let args_and_meta = |p: &mut Profile| {
        p.customization.extra_kernel_args = c.extra_kernel_args.clone();
        p.customization.meta = c
            .meta
            .iter()
            .map(|m| ProfileMeta {
                key: m.key,
                value: m.value.clone(),
            })
            .collect();
    };
    match kind {
        // Neither can carry kernel args nor META.
        OutputKind::Kernel | OutputKind::Initramfs => {}
        // The cmdline is baked into the UKI: args only, and only when the UKI is what boots
        // (SecureBoot) or the installer is unified (≥ 1.10). META is never embedded.
        OutputKind::Installer | OutputKind::Uki => {
            if profile.secureboot || q.supports_unified_installer() {
                profile.customization.extra_kernel_args = c.extra_kernel_args.clone();
            }
        }
        OutputKind::Iso => {
            args_and_meta(&mut profile);
            if let Some(b) = c.bootloader {
                profile
                    .output
                    .iso_options
                    .get_or_insert_with(IsoOptions::default)
                    .bootloader = Some(b);
            }
        }
        OutputKind::Image => {
            args_and_meta(&mut profile);
            if let Some(image) = profile.output.image_options.as_mut() {
                if let Some(b) = c.bootloader {
                    image.bootloader = Some(b);
                }
                if c.disk_image.sector_size != 0 {
                    image.disk_sector_size = c.disk_image.sector_size;
                }
            }
        }
        OutputKind::Cmdline => args_and_meta(&mut profile),
    }

    Ok(profile)
}

/// The catalog name an official extension got after a rename or under its manifest's wrong
/// name (spec §6.5), tried when the name itself is not in the catalog.
pub fn extension_alias(name: &str) -> Option<&'static str> {
    Some(match name {
        "siderolabs/v4l-uvc" => "siderolabs/v4l-uvc-drivers",
        "siderolabs/usb-modem" => "siderolabs/usb-modem-drivers",
        "siderolabs/gasket" => "siderolabs/gasket-driver",
        "siderolabs/talos-vmtoolsd" => "siderolabs/vmtoolsd-guest-agent",
        "siderolabs/xe-guest-utilities" => "siderolabs/xen-guest-agent",
        "siderolabs/nvidia-container-toolkit" => "siderolabs/nvidia-container-toolkit-lts",
        "siderolabs/nvidia-open-gpu-kernel-modules" => "siderolabs/nvidia-open-gpu-kernel-modules-lts",
        "siderolabs/nonfree-kmod-nvidia" => "siderolabs/nonfree-kmod-nvidia-lts",
        "siderolabs/nvidia-fabricmanager" => "siderolabs/nvidia-fabric-manager-lts",
        "siderolabs/i915-ucode" => "siderolabs/i915",
        "siderolabs/amdgpu-firmware" => "siderolabs/amdgpu",
        _ => return None,
    })
}

/// The builder's seam: each requested extension's catalog entry, in the requested order, by
/// name and then by alias. The first missing one is the error.
pub fn resolve_extensions<'c>(
    requested: &[String],
    catalog: &'c [ExtensionEntry],
    version: &TalosVersion,
) -> Result<Vec<&'c ExtensionEntry>, EnhanceError> {
    let find = |name: &str| catalog.iter().find(|e| e.name == name);
    requested
        .iter()
        .map(|name| {
            find(name)
                .or_else(|| extension_alias(name).and_then(find))
                .ok_or_else(|| EnhanceError::ExtensionUnavailable {
                    name: name.clone(),
                    version: version.clone(),
                })
        })
        .collect()
}

/// The builder's seam for overlays: the catalog entry named `name`.
pub fn resolve_overlay<'c>(
    name: &str,
    catalog: &'c [OverlayEntry],
    version: &TalosVersion,
) -> Result<&'c OverlayEntry, EnhanceError> {
    catalog
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| EnhanceError::OverlayUnavailable {
            name: name.to_owned(),
            version: version.clone(),
        })
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::arch::Arch;
    use crate::profile::parse_path;
    use crate::schematic::{Bootloader, MetaValue};

    fn v(s: &str) -> TalosVersion {
        TalosVersion::parse(s).unwrap()
    }

    fn run(path: &str, s: &Schematic, version: &str) -> Result<Profile, EnhanceError> {
        enhance(parse_path(path).unwrap(), s, &v(version))
    }

    fn full() -> Schematic {
        let mut s = Schematic::default();
        s.customization.extra_kernel_args = vec!["nolapic".into(), "nomodeset".into()];
        s.customization.meta = vec![MetaValue {
            key: 0x0a,
            value: "{\"externalIPs\":[\"1.2.3.4\"]}".into(),
        }];
        s.customization.official_extensions = vec!["siderolabs/gvisor".into(), "siderolabs/amd-ucode".into()];
        s
    }

    #[test]
    fn args_and_meta_per_kind() {
        let s = full();
        let args = |p: &Profile| p.customization.extra_kernel_args.len();
        let meta = |p: &Profile| p.customization.meta.len();
        for (path, version, want_args, want_meta) in [
            ("kernel-amd64", "1.12.0", 0, 0),
            ("initramfs-amd64.xz", "1.12.0", 0, 0),
            ("cmdline-metal-amd64", "1.5.0", 2, 1),
            ("metal-amd64.iso", "1.5.0", 2, 1),
            ("metal-amd64.raw.xz", "1.5.0", 2, 1),
            ("metal-amd64-uki.efi", "1.9.5", 0, 0),
            ("metal-amd64-uki.efi", "1.10.0-alpha.0", 2, 0),
            ("metal-amd64-secureboot-uki.efi", "1.9.5", 2, 0),
            ("installer-amd64.tar", "1.9.5", 0, 0),
            ("installer-amd64.tar", "1.10.0", 2, 0),
            ("metal-installer-amd64-secureboot.tar", "1.8.0", 2, 0),
        ] {
            let p = run(path, &s, version).unwrap();
            assert_eq!((args(&p), meta(&p)), (want_args, want_meta), "{path} {version}");
        }
    }

    #[test]
    fn extensions_and_schematic_extension() {
        let s = full();
        let p = run("metal-amd64.iso", &s, "1.6.0").unwrap();
        assert_eq!(p.inputs.system_extensions, s.customization.official_extensions);
        let ext = p.inputs.schematic_extension.unwrap();
        assert_eq!(ext.schematic_id, s.id().as_str());
        assert!(!ext.embeds_schematic_yaml);
        assert!(
            run("metal-amd64.iso", &s, "1.7.0-beta.0")
                .unwrap()
                .inputs
                .schematic_extension
                .unwrap()
                .embeds_schematic_yaml
        );
        for path in ["kernel-amd64", "cmdline-metal-amd64"] {
            let p = run(path, &s, "1.12.0").unwrap();
            assert!(p.inputs.system_extensions.is_empty());
            assert!(p.inputs.schematic_extension.is_none());
        }
        let p = run("initramfs-arm64.xz", &s, "1.12.0").unwrap();
        assert_eq!(p.inputs.system_extensions.len(), 2);
        assert_eq!(p.version.to_string(), "v1.12.0");
        assert_eq!(p.name, "Talos");
    }

    #[test]
    fn overlay_gate_at_1_7() {
        let mut s = Schematic::default();
        s.overlay.name = "rpi_generic".into();
        s.overlay.image = "siderolabs/sbc-raspberrypi".into();
        let err = run("metal-arm64.raw.xz", &s, "1.6.7").unwrap_err();
        assert_eq!(
            err.to_string(),
            "overlay is not supported for Talos version v1.6.7"
        );
        // Every kind, kernel included.
        assert!(run("kernel-arm64", &s, "1.6.7").is_err());
        let p = run("metal-arm64.raw.xz", &s, "1.7.0-alpha.1").unwrap();
        assert_eq!(p.inputs.overlay.unwrap().name, "rpi_generic");
        assert!(run("kernel-arm64", &s, "1.7.0").unwrap().inputs.overlay.is_none());
    }

    #[test]
    fn embedded_config_gate_at_1_12() {
        let mut s = Schematic::default();
        s.customization.embedded_machine_configuration = "apiVersion: v1alpha1\n".into();
        let err = run("metal-amd64.iso", &s, "1.11.5").unwrap_err();
        assert_eq!(
            err.to_string(),
            "embedding configuration is not supported for Talos version v1.11.5"
        );
        assert!(run("initramfs-amd64.xz", &s, "1.11.5").is_err());
        // Kernel and cmdline ignore it.
        assert!(run("kernel-amd64", &s, "1.11.5").is_ok());
        assert!(run("cmdline-metal-amd64", &s, "1.2.0").is_ok());
        let p = run("metal-amd64.iso", &s, "1.12.0-alpha.2").unwrap();
        assert_eq!(
            p.customization.embedded_machine_configuration,
            "apiVersion: v1alpha1\n"
        );
        assert!(run("kernel-amd64", &s, "1.12.0")
            .unwrap()
            .customization
            .embedded_machine_configuration
            .is_empty());
    }

    #[test]
    fn base_installer_at_1_10() {
        let s = Schematic::default();
        let base = |v: &str| run("installer-amd64.tar", &s, v).unwrap().inputs.base_installer;
        assert_eq!(base("1.9.5"), Some(BaseInstaller::Installer));
        assert_eq!(base("1.10.0-alpha.0"), Some(BaseInstaller::InstallerBase));
        assert_eq!(
            run("metal-amd64.iso", &s, "1.10.0")
                .unwrap()
                .inputs
                .base_installer,
            None
        );
    }

    #[test]
    fn secureboot_rules() {
        let mut s = Schematic::default();
        s.customization.secureboot.enroll_keys = "force".into();
        s.customization.secureboot.include_well_known_certificates = true;
        let p = run("metal-amd64-secureboot.iso", &s, "1.10.0").unwrap();
        assert_eq!(
            p.output.iso_options.as_ref().unwrap().sd_boot_enroll_keys,
            Some(EnrollKeys::Force)
        );
        assert!(p.inputs.secureboot.unwrap().include_well_known_certificates);
        let p = run("metal-amd64-secureboot.raw.xz", &s, "1.10.0").unwrap();
        assert_eq!(
            p.output.image_options.unwrap().sd_boot_enroll_keys,
            Some(EnrollKeys::Force)
        );
        // Not applied to UKIs/installers, and not without SecureBoot.
        let p = run("metal-amd64-secureboot-uki.efi", &s, "1.10.0").unwrap();
        assert_eq!(p.output.iso_options, None);
        let p = run("metal-amd64.iso", &s, "1.10.0").unwrap();
        assert_eq!(p.output.iso_options, None);
        assert_eq!(p.inputs.secureboot, None);

        s.customization.secureboot.enroll_keys = "always".into();
        assert_eq!(
            run("metal-amd64-secureboot-uki.efi", &s, "1.10.0")
                .unwrap_err()
                .to_string(),
            r#"invalid secureboot enrollKeys value "always": always does not belong to SDBootEnrollKeys values"#
        );
        assert!(run("metal-amd64.iso", &s, "1.10.0").is_ok());

        let off = EnhanceContext {
            secureboot_available: false,
        };
        let parsed = parse_path("metal-amd64-secureboot.iso").unwrap();
        let err = enhance_with(parsed, &Schematic::default(), &v("1.10.0"), &off).unwrap_err();
        assert_eq!(err.to_string(), "secure boot is disabled");
        assert_eq!(
            run("metal-amd64-secureboot.iso", &Schematic::default(), "1.4.8").unwrap_err(),
            EnhanceError::SecureBootUnsupported(v("1.4.8"))
        );
        assert_eq!(
            run("metal-amd64-uki.efi", &Schematic::default(), "1.4.8").unwrap_err(),
            EnhanceError::UkiUnsupported(v("1.4.8"))
        );
    }

    #[test]
    fn bootloader_and_sector_size() {
        let mut s = Schematic::default();
        let boot = |p: &str, s: &Schematic, v: &str| run(p, s, v).unwrap().effective_bootloader();
        assert_eq!(boot("metal-amd64.raw.zst", &s, "1.9.0"), Some(Bootloader::Grub));
        assert_eq!(
            boot("metal-amd64.raw.zst", &s, "1.10.0"),
            Some(Bootloader::DualBoot)
        );
        assert_eq!(
            boot("metal-arm64.raw.zst", &s, "1.10.0"),
            Some(Bootloader::SdBoot)
        );
        assert_eq!(
            boot("metal-amd64-secureboot.raw.zst", &s, "1.9.0"),
            Some(Bootloader::SdBoot)
        );
        assert_eq!(boot("metal-amd64-uki.efi", &s, "1.10.0"), None);
        s.customization.bootloader = Some(Bootloader::Grub);
        s.customization.disk_image.sector_size = 4096;
        let p = run("metal-amd64.raw.zst", &s, "1.12.0").unwrap();
        assert_eq!(p.effective_bootloader(), Some(Bootloader::Grub));
        assert_eq!(p.output.image_options.as_ref().unwrap().disk_sector_size, 4096);
        assert_eq!(
            boot("metal-amd64-secureboot.raw.zst", &s, "1.12.0"),
            Some(Bootloader::SdBoot)
        );
        // ISO: requested value carried, honoured from 1.12.
        let iso = run("metal-amd64.iso", &s, "1.11.0").unwrap();
        assert_eq!(
            iso.output.iso_options.as_ref().unwrap().bootloader,
            Some(Bootloader::Grub)
        );
        assert_eq!(iso.effective_bootloader(), Some(Bootloader::DualBoot));
        assert_eq!(
            boot("metal-amd64.iso", &s, "1.12.0-alpha.2"),
            Some(Bootloader::Grub)
        );
        // Sector size only for disk images.
        assert!(run("metal-amd64.iso", &s, "1.12.0")
            .unwrap()
            .output
            .image_options
            .is_none());
        assert_eq!(run("metal-arm64.iso", &s, "1.12.0").unwrap().arch, Arch::Arm64);
    }

    #[test]
    fn catalog_seam() {
        let entry = |name: &str| ExtensionEntry {
            name: name.into(),
            reference_tag: "1".into(),
            digest: "sha256:00".into(),
            author: String::new(),
            description: String::new(),
        };
        let catalog = vec![entry("siderolabs/gvisor"), entry("siderolabs/i915")];
        let got = resolve_extensions(
            &["siderolabs/i915-ucode".into(), "siderolabs/gvisor".into()],
            &catalog,
            &v("1.8.0"),
        )
        .unwrap();
        assert_eq!(got[0].name, "siderolabs/i915");
        assert_eq!(got[1].name, "siderolabs/gvisor");
        let err = resolve_extensions(&["siderolabs/nope".into()], &catalog, &v("1.8.0")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"official extension "siderolabs/nope" is not available for Talos version v1.8.0"#
        );
        assert!(resolve_overlay("rpi_generic", &[], &v("1.8.0")).is_err());
    }
}
