//! Download paths → build profiles (spec §6): what `/image/:schematic/:version/:path` asks for,
//! refined by the schematic and the Talos version into the [`Profile`] an asset builder executes
//! and the asset cache is keyed on.
//!
//! The flow is `parse_path` → [`enhance`] → [`Profile::cache_key`]. Everything here is pure: the
//! parts that need registries (extension and overlay availability, image digests, the overlay's
//! own profile) are left to the builder, which gets [`resolve_extensions`] / [`resolve_overlay`]
//! to check the catalog and passes the exact digests it pulled to [`Profile::cache_key`].
//!
//! The profile is our own structure, not a byte-for-byte copy of Talos' imager YAML: the Go
//! factory's cache key depends on go-yaml output of Talos' Go struct, which we cannot and need not
//! share (spec §9.1). What matters is that every input that changes the bytes of an asset is in
//! the profile or in the input digests.

use serde::{Serialize, Serializer};

use crate::arch::Arch;
use crate::schematic::Bootloader;
use crate::version::TalosVersion;

mod cache_key;
mod enhance;
mod mime;
mod path;
pub mod platforms;
pub mod quirks;

pub use cache_key::{canonical_json, ASSET_FORMAT_VERSION};
pub use enhance::{
    enhance, enhance_with, extension_alias, resolve_extensions, resolve_overlay, EnhanceContext, EnhanceError,
};
pub use mime::{content_type, download_file_name, FileNameError};
pub use path::{parse_arch, parse_path, parse_platform_arch, ParsedPath, PathError, PlatformArch};

/// `Profile.name` of the community edition; goes into the UKI's `.osrel`.
pub const TALOS_NAME: &str = "Talos";

/// The kind of artifact a path asks for (Talos `OutputKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    Iso,
    /// A disk image (`image` in Talos).
    Image,
    Installer,
    Kernel,
    Initramfs,
    Uki,
    Cmdline,
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Iso => "iso",
            OutputKind::Image => "image",
            OutputKind::Installer => "installer",
            OutputKind::Kernel => "kernel",
            OutputKind::Initramfs => "initramfs",
            OutputKind::Uki => "uki",
            OutputKind::Cmdline => "cmdline",
        }
    }
}

/// Post-processing of the output file (Talos `OutFormat`). Only disk images use anything but
/// [`OutFormat::Raw`]; the initramfs is always xz-named but that is its native form, not this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum OutFormat {
    /// Uncompressed.
    #[serde(rename = "raw")]
    Raw,
    /// A tar archive holding `disk.raw`, gzip-compressed (what GCP wants).
    #[serde(rename = ".tar.gz")]
    TarGz,
    #[serde(rename = ".gz")]
    Gz,
    #[serde(rename = ".xz")]
    Xz,
    #[serde(rename = ".zst")]
    Zst,
}

impl OutFormat {
    /// The file-name suffix this format appends (empty for raw).
    pub fn suffix(self) -> &'static str {
        match self {
            OutFormat::Raw => "",
            OutFormat::TarGz => ".tar.gz",
            OutFormat::Gz => ".gz",
            OutFormat::Xz => ".xz",
            OutFormat::Zst => ".zst",
        }
    }
}

/// Disk image container format (Talos `DiskFormat`; `vhd` is qemu-img's `vpc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vhd,
    Ova,
}

impl DiskFormat {
    /// The extension in download paths, without the dot.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Ova => "ova",
        }
    }
}

/// systemd-boot `secure-boot-enroll` (Talos `SDBootEnrollKeys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnrollKeys {
    IfSafe,
    Manual,
    Force,
    Off,
}

impl EnrollKeys {
    /// The schematic spelling (`if-safe`, `manual`, `force`, `off`).
    pub fn parse(s: &str) -> Option<EnrollKeys> {
        match s {
            "if-safe" => Some(EnrollKeys::IfSafe),
            "manual" => Some(EnrollKeys::Manual),
            "force" => Some(EnrollKeys::Force),
            "off" => Some(EnrollKeys::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EnrollKeys::IfSafe => "if-safe",
            EnrollKeys::Manual => "manual",
            EnrollKeys::Force => "force",
            EnrollKeys::Off => "off",
        }
    }
}

/// Options of disk image outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageOptions {
    /// Bytes, before the imager's `FillDefaults` adds the boot partition sizes (talos-imager §3.2):
    /// that adjustment is a function of the version, which is in the profile too.
    pub disk_size: u64,
    pub disk_format: DiskFormat,
    /// Passed to `qemu-img -o`. Copied from the platform's default profile whatever the requested
    /// format is, as the Go factory does (so `azure-amd64.raw` carries the vhd options).
    pub disk_format_options: String,
    /// 0 = default (512).
    pub disk_sector_size: u64,
    /// As requested by the schematic; `None` lets the version decide, see
    /// [`Profile::effective_bootloader`].
    #[serde(serialize_with = "ser_bootloader")]
    pub bootloader: Option<Bootloader>,
    /// Only for SecureBoot images.
    pub sd_boot_enroll_keys: Option<EnrollKeys>,
}

/// Options of ISO outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IsoOptions {
    /// As requested by the schematic (honoured by Talos ≥ 1.12 only).
    #[serde(serialize_with = "ser_bootloader")]
    pub bootloader: Option<Bootloader>,
    /// Only for SecureBoot ISOs.
    pub sd_boot_enroll_keys: Option<EnrollKeys>,
}

/// What to produce and how to package it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    pub kind: OutputKind,
    pub out_format: OutFormat,
    /// Present exactly for [`OutputKind::Image`].
    pub image_options: Option<ImageOptions>,
    /// Present for [`OutputKind::Iso`] once the schematic sets a bootloader or enroll keys.
    pub iso_options: Option<IsoOptions>,
}

/// One initial META value (key is a META tag such as `0x0a`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileMeta {
    pub key: u8,
    pub value: String,
}

/// What the schematic adds to the boot configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileCustomization {
    /// Schematic `extraKernelArgs`, in order, for the kinds that take them (spec §6.5).
    pub extra_kernel_args: Vec<String>,
    /// Kernel args from the overlay's own profile. Always empty after [`enhance`]: the overlay's
    /// `profiles/<name>.yaml` lives in the overlay image, so the builder fills this after pulling
    /// it (the image digest is in the cache key, so the key still determines it).
    pub overlay_kernel_args: Vec<String>,
    /// Schematic META values, in order, for the kinds that take them.
    pub meta: Vec<ProfileMeta>,
    /// The embedded machine configuration (≥ 1.12), empty when none. Carried whole rather than as
    /// a flag: the builder needs it, and any change must change the cache key.
    pub embedded_machine_configuration: String,
}

/// The base installer image a customised installer is layered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseInstaller {
    /// `siderolabs/installer` (before 1.10).
    Installer,
    /// `siderolabs/installer-base` (unified installer, ≥ 1.10).
    InstallerBase,
}

impl BaseInstaller {
    /// Repository path under the upstream registry.
    pub fn repository(self) -> &'static str {
        match self {
            BaseInstaller::Installer => "siderolabs/installer",
            BaseInstaller::InstallerBase => "siderolabs/installer-base",
        }
    }
}

/// The schematic virtual extension appended after the official ones (spec §6.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SchematicExtension {
    /// Its `metadata.version` and the name of the marker file.
    pub schematic_id: String,
    /// Whether `metadata.extraInfo` carries the canonical schematic YAML (≥ 1.7).
    pub embeds_schematic_yaml: bool,
}

/// The board overlay requested by the schematic (≥ 1.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileOverlay {
    /// Name in the overlays catalog (lookup key).
    pub name: String,
    /// The schematic's informational image field.
    pub image: String,
    /// The schematic's `overlay.options` as go-yaml YAML (empty when none): the map is free-form,
    /// and its canonical YAML is what the overlay installer receives.
    pub options_yaml: String,
}

/// SecureBoot settings the schematic chose (the signing material itself is deployment
/// configuration; its identity belongs in the cache key's input digests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecureBootInput {
    pub include_well_known_certificates: bool,
}

/// Build inputs, by name: the builder turns them into exact digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileInputs {
    /// Installer outputs only.
    pub base_installer: Option<BaseInstaller>,
    /// Official extension names exactly as the schematic lists them, in its order. Availability
    /// and aliasing are the builder's job ([`resolve_extensions`]).
    pub system_extensions: Vec<String>,
    /// All kinds except kernel and cmdline.
    pub schematic_extension: Option<SchematicExtension>,
    pub overlay: Option<ProfileOverlay>,
    /// Present exactly when the profile is SecureBoot.
    pub secureboot: Option<SecureBootInput>,
}

/// A build profile: the complete, deterministic description of one asset.
///
/// Field order is the serialization order (the cache key sorts keys anyway, so reordering fields
/// does not change keys; renaming or re-typing them does, which is what
/// [`ASSET_FORMAT_VERSION`] is bumped for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// [`TALOS_NAME`].
    pub name: String,
    /// `v<semver>`, pre-release included (it selects the upstream inputs).
    pub version: TalosVersion,
    /// `talos.platform`; not checked against a list (the imager decides what it means).
    pub platform: String,
    #[serde(serialize_with = "ser_arch")]
    pub arch: Arch,
    pub secureboot: bool,
    pub output: Output,
    pub customization: ProfileCustomization,
    pub inputs: ProfileInputs,
}

impl Profile {
    /// Whether the output is an ISO (the cmdline differs for ISOs).
    pub fn is_iso(&self) -> bool {
        self.output.kind == OutputKind::Iso
    }

    /// The kernel command line of this profile, with its own extra args, overlay args and META
    /// (the `cmdline-…` asset's bytes for a cmdline profile; what `/pxe` scripts pass).
    pub fn kernel_cmdline(&self) -> String {
        let meta: Vec<crate::schematic::MetaValue> = self
            .customization
            .meta
            .iter()
            .map(|m| crate::schematic::MetaValue {
                key: m.key,
                value: m.value.clone(),
            })
            .collect();
        crate::cmdline::kernel_cmdline(&crate::cmdline::CmdlineInput {
            platform: &self.platform,
            arch: self.arch,
            version: &self.version,
            secureboot: self.secureboot,
            iso: self.is_iso(),
            extra_kernel_args: &self.customization.extra_kernel_args,
            overlay_kernel_args: &self.customization.overlay_kernel_args,
            meta: &meta,
        })
    }

    /// The bootloader the imager will use for ISO and disk image outputs (talos-imager §10.1),
    /// `None` for other kinds. SecureBoot forces sd-boot; an explicit choice is kept (for ISOs
    /// only from 1.12, when it became selectable); otherwise grub before 1.10, sd-boot on arm64,
    /// dual-boot on amd64. Overlays may still pin grub through their own profile (builder side).
    pub fn effective_bootloader(&self) -> Option<Bootloader> {
        let requested = match (
            &self.output.kind,
            &self.output.image_options,
            &self.output.iso_options,
        ) {
            (OutputKind::Image, Some(o), _) => o.bootloader,
            (OutputKind::Image, None, _) => None,
            (OutputKind::Iso, _, o) => {
                let q = quirks::Quirks::new(&self.version);
                o.as_ref()
                    .and_then(|o| o.bootloader)
                    .filter(|_| q.iso_bootloader_selectable())
            }
            _ => return None,
        };
        if self.secureboot {
            return Some(Bootloader::SdBoot);
        }
        if let Some(explicit) = requested {
            return Some(explicit);
        }
        let q = quirks::Quirks::new(&self.version);
        Some(if !q.uses_sd_boot_for_uefi() {
            Bootloader::Grub
        } else if self.arch == Arch::Arm64 {
            Bootloader::SdBoot
        } else {
            Bootloader::DualBoot
        })
    }
}

fn ser_arch<S: Serializer>(arch: &Arch, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(arch.as_str())
}

fn ser_bootloader<S: Serializer>(b: &Option<Bootloader>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_some(b.as_str()),
        None => s.serialize_none(),
    }
}
