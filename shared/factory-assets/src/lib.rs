//! The asset assemblers of the build-on-miss pipeline (`factory_pipeline::Assembler`): the
//! request side computes a [`Profile`], resolves the exact digests of its upstream inputs
//! ([`resolve_official_extensions`], [`BuildInputs`]) and sends them as a build spec
//! ([`spec`]); the builder turns the spec into bytes here ([`ReleaseAssembler`]).
//!
//! # Assets built so far
//!
//! | kind | bytes | module |
//! |---|---|---|
//! | `kernel` | `usr/install/<arch>/vmlinuz` of the verified imager image, streamed | [`kernel`] |
//! | `cmdline` | the profile's kernel command line (no trailing newline) | [`cmdline`] |
//! | `initramfs` | the release initramfs with the schematic's extensions appended | [`initramfs`] |
//! | `uki` | systemd-stub + osrel, cmdline, uname, kernel, that initramfs (no SecureBoot) | [`uki`] |
//! | `iso` | sd-boot, hybrid or GRUB ISO with that initramfs and a UKI (no SecureBoot) | `media` |
//! | `image` | raw/qcow2/vhd/ova disk images, compressed as asked (no SecureBoot, no overlay) | `media` |
//! | `installer` | the base installer + an artifacts layer (UKI + sd-boot, or kernel + initramfs) + with an overlay an overlay layer, as a `docker save`/OCI layout tarball (no SecureBoot) | [`installer`], [`overlay`] |
//!
//! Other kinds, SecureBoot UKIs, media and installers, and UKIs and media with an overlay are
//! refused by the request side before anything is enqueued ([`is_profile_built`]); a spec for one
//! that reaches the builder anyway is a user error.
//!
//! Every output depends only on the spec: fixed timestamps, owners and orders (the initramfs and
//! UKI crates are deterministic), so a rebuild of a cache key gives the same bytes.

mod blocking;
pub mod cmdline;
pub mod extensions;
mod imager;
pub mod initramfs;
pub mod installer;
pub mod kernel;
mod media;
pub mod overlay;
pub mod spec;
pub mod uki;

use std::sync::Arc;

use async_trait::async_trait;
use factory_core::arch::Arch;
use factory_core::profile::{content_type, OutputKind, Profile};
use factory_pipeline::{AssembleError, AssembledMeta, Assembler};
use factory_upstream::{Upstream, UpstreamError};
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub use extensions::{
    extension_input, resolve_official_extensions, ResolvedExtension, EXTENSION_INPUT_PREFIX,
};
pub use overlay::{overlay_input, OVERLAY_INPUT_PREFIX};
pub use spec::{BuildInputs, BASE_INSTALLER_INPUT, IMAGER_INPUT, SCHEMATIC_AUTHOR_INPUT};

use spec::Spec;

/// Whether this factory builds assets of this kind.
pub fn is_built(kind: OutputKind) -> bool {
    matches!(
        kind,
        OutputKind::Kernel
            | OutputKind::Cmdline
            | OutputKind::Initramfs
            | OutputKind::Uki
            | OutputKind::Iso
            | OutputKind::Image
            | OutputKind::Installer
    )
}

/// Whether this factory builds this profile: a built kind, except
/// * UKIs, ISOs, disk images and installers with SecureBoot (signing is not implemented yet);
/// * UKIs, ISOs and disk images with an overlay (the overlay's `install` step, its partition
///   offset and profile merge are not implemented; installers with an overlay are built, see
///   [`overlay`]);
/// * arm64 media booted by GRUB (the builder carries the amd64 GRUB platforms only:
///   `i386-pc`, `x86_64-efi`; arm64 media default to systemd-boot from Talos 1.10).
pub fn is_profile_built(profile: &Profile) -> bool {
    use factory_core::schematic::Bootloader;
    let kind = profile.output.kind;
    if !is_built(kind) {
        return false;
    }
    let booted = matches!(
        kind,
        OutputKind::Uki | OutputKind::Iso | OutputKind::Image | OutputKind::Installer
    );
    if booted && profile.secureboot {
        return false;
    }
    if booted && kind != OutputKind::Installer && profile.inputs.overlay.is_some() {
        return false;
    }
    let grub = matches!(
        profile.effective_bootloader(),
        Some(Bootloader::Grub | Bootloader::DualBoot)
    );
    !(profile.arch == Arch::Arm64 && grub)
}

/// Why [`is_profile_built`] refuses a profile of a built kind (for the 501 message).
pub fn unbuilt_reason(profile: &Profile) -> Option<&'static str> {
    if !is_built(profile.output.kind) || is_profile_built(profile) {
        return None;
    }
    Some(if profile.secureboot {
        "SecureBoot assets are not built by this factory yet"
    } else if profile.inputs.overlay.is_some() {
        "UKIs, ISOs and disk images with an overlay are not built by this factory yet (installers are)"
    } else {
        "arm64 media booted by GRUB are not built by this factory (use bootloader: sd-boot)"
    })
}

/// Every external program and GRUB platform directory the builder calls, each with the Debian
/// package that provides it: what the builder's container image (`infra/builder/Dockerfile`) must
/// install (`tests/tests/builder_image.rs` checks its `apt-get install` list and its comment table
/// against this) and what [`missing_tools`] checks at start. A platform directory is named by a
/// file in it (see [`factory_disk::grub::GRUB_PC_BIN`]).
///
/// Not here: `grub-efi-arm64-bin` (arm64 media booted by GRUB are not built, see
/// [`is_profile_built`]; Debian ships it for arm64 only), and an overlay's own `installer`
/// binary, which comes with the overlay.
pub const BUILDER_TOOLS: &[factory_disk::tools::Tool] = &[
    // BOOT partition of grub and dual-boot disk images
    factory_disk::tools::MKFS_XFS,
    // GRUB core.img (BIOS) and the grub layout's EFI loader
    factory_disk::tools::GRUB_MKIMAGE,
    // hybrid and GRUB ISOs
    factory_disk::tools::GRUB_MKRESCUE,
    // every ISO (grub-mkrescue calls it too)
    factory_disk::tools::XORRISO,
    // grub-mkrescue's EFI FAT image (mformat, mcopy), and the shell of our mformat wrapper
    factory_disk::iso::MTOOLS,
    factory_disk::iso::SH,
    // GRUB's BIOS and UEFI platforms
    factory_disk::grub::GRUB_PC_BIN,
    factory_disk::grub::GRUB_EFI_AMD64_BIN,
    // modules.dep of extensions with kernel modules
    initramfs::DEPMOD,
];

/// The tools of [`BUILDER_TOOLS`] this machine lacks, each as `program (package)`: the builder
/// logs them at start (its container image must have them, see infra/README.md).
pub fn missing_tools() -> Vec<String> {
    BUILDER_TOOLS
        .iter()
        .filter(|t| factory_disk::tools::find(**t).is_err())
        .map(|t| format!("{} ({})", t.program, t.package))
        .collect()
}

/// The reference the imager image is resolved from: the profile's version tag.
pub fn imager_reference(profile: &Profile) -> String {
    profile.version.to_string()
}

/// The upstream repository of a profile's base installer (`None` for non-installer profiles),
/// from `components` (`upstream.config().components`): `installer_base` for
/// [`BaseInstaller::InstallerBase`](factory_core::profile::BaseInstaller::InstallerBase),
/// `installer` otherwise.
pub fn base_installer_repository<'a>(
    profile: &Profile,
    components: &'a factory_upstream::Components,
) -> Option<&'a str> {
    use factory_core::profile::BaseInstaller;
    if profile.output.kind != OutputKind::Installer {
        return None;
    }
    match profile.inputs.base_installer? {
        BaseInstaller::InstallerBase => Some(&components.installer_base),
        BaseInstaller::Installer => Some(&components.installer),
    }
}

/// The canonical file name of a profile's object (the path that names it, before `?filename=`):
/// `kernel-<arch>`, `cmdline-<platform>-<arch>[-secureboot]`, `initramfs-<arch>.xz`,
/// `<platform>-<arch>[-secureboot]-uki.efi`, `<platform>-installer-<arch>[-secureboot].tar`
/// (also for the legacy `installer-<arch>.tar` path, platform `metal`).
pub fn object_file_name(kind: OutputKind, platform: &str, arch: Arch, secureboot: bool) -> String {
    let suffix = if secureboot { "-secureboot" } else { "" };
    match kind {
        OutputKind::Kernel => format!("kernel-{arch}"),
        OutputKind::Initramfs => format!("initramfs-{arch}.xz"),
        OutputKind::Uki => format!("{platform}-{arch}{suffix}-uki.efi"),
        OutputKind::Installer => format!("{platform}-installer-{arch}{suffix}.tar"),
        _ => format!("{}-{platform}-{arch}{suffix}", kind.as_str()),
    }
}

/// A scratch directory for one assembly (removed when dropped).
pub(crate) fn scratch_dir() -> Result<tempfile::TempDir, AssembleError> {
    tempfile::Builder::new()
        .prefix("factory-assemble-")
        .tempdir()
        .map_err(|e| AssembleError::Retryable(format!("temporary directory: {e}")))
}

/// A refused image (signature, content) or a missing one is not going to change on retry; an
/// unreachable upstream or a cache failure may.
pub(crate) fn upstream_error(error: UpstreamError) -> AssembleError {
    match error {
        UpstreamError::Unavailable { .. } | UpstreamError::Store(_) => {
            AssembleError::Retryable(error.to_string())
        }
        UpstreamError::Signature { .. } | UpstreamError::Invalid { .. } | UpstreamError::NotFound(_) => {
            AssembleError::User(error.to_string())
        }
    }
}

/// Assembles the assets of the Talos release: kernel, cmdline, initramfs, UKI, boot media and
/// installers.
#[derive(Debug, Clone)]
pub struct ReleaseAssembler {
    upstream: Arc<Upstream>,
}

impl ReleaseAssembler {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream }
    }
}

#[async_trait]
impl Assembler for ReleaseAssembler {
    async fn assemble(
        &self,
        spec_json: &serde_json::Value,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<AssembledMeta, AssembleError> {
        let spec = Spec::parse(spec_json)?;
        let profile = &spec.profile;
        let arch = spec.arch()?;
        let kind = match profile.output.kind.as_str() {
            "kernel" => OutputKind::Kernel,
            "cmdline" => OutputKind::Cmdline,
            "initramfs" => OutputKind::Initramfs,
            "uki" if !profile.secureboot && profile.inputs.overlay.is_none() => OutputKind::Uki,
            "iso" if !profile.secureboot && profile.inputs.overlay.is_none() => OutputKind::Iso,
            "image" if !profile.secureboot && profile.inputs.overlay.is_none() => OutputKind::Image,
            "installer" if !profile.secureboot => OutputKind::Installer,
            other => {
                return Err(AssembleError::User(format!(
                    "{other} assets{} are not built by this factory yet",
                    if profile.secureboot {
                        " with SecureBoot"
                    } else if profile.inputs.overlay.is_some() {
                        " with an overlay"
                    } else {
                        ""
                    }
                )))
            }
        };
        let file_name = match kind {
            OutputKind::Iso | OutputKind::Image => media::file_name(&spec, arch)?,
            _ => object_file_name(kind, &profile.platform, arch, profile.secureboot),
        };
        let mut inputs = spec.inputs.clone();
        match kind {
            OutputKind::Kernel => {
                kernel::assemble(&self.upstream, &spec, arch, out).await?;
                // The kernel is the same whatever else the spec names.
                inputs.retain(|name, _| name == IMAGER_INPUT);
            }
            OutputKind::Cmdline => {
                out.write_all(cmdline::cmdline(&spec)?.as_bytes())
                    .await
                    .map_err(|e| AssembleError::Retryable(format!("writing the cmdline: {e}")))?;
            }
            OutputKind::Initramfs => initramfs::assemble(&self.upstream, &spec, arch, out).await?,
            OutputKind::Uki => uki::assemble(&self.upstream, &spec, arch, out).await?,
            OutputKind::Iso | OutputKind::Image => media::assemble(&self.upstream, &spec, arch, out).await?,
            OutputKind::Installer => {
                let image = installer::build_image(&self.upstream, spec_json).await?;
                image.write_archive(&self.upstream, out).await?;
            }
        }
        out.flush()
            .await
            .map_err(|e| AssembleError::Retryable(format!("flushing the output: {e}")))?;
        Ok(AssembledMeta {
            content_type: content_type(&file_name).to_owned(),
            file_name,
            input_digests: inputs,
        })
    }
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use factory_core::cmdline::{kernel_cmdline, CmdlineInput};
    use factory_core::profile::{enhance, parse_path};
    use factory_core::schematic::Schematic;
    use factory_core::version::TalosVersion;

    fn profile(path: &str, schematic: &Schematic) -> Profile {
        let version = TalosVersion::parse("v1.12.1").unwrap();
        enhance(parse_path(path).unwrap(), schematic, &version).unwrap()
    }

    fn inputs(path: &str, schematic: &Schematic) -> (Profile, BuildInputs) {
        let p = profile(path, schematic);
        let inputs = BuildInputs::new(&p, schematic, "sha256:00".into(), &[], "http://factory.test/");
        (p, inputs)
    }

    #[test]
    fn built_kinds_and_profiles() {
        for kind in [
            OutputKind::Kernel,
            OutputKind::Cmdline,
            OutputKind::Initramfs,
            OutputKind::Uki,
        ] {
            assert!(is_built(kind), "{kind:?}");
        }
        assert!(is_built(OutputKind::Iso));
        assert!(is_built(OutputKind::Image));
        assert!(is_built(OutputKind::Installer));
        assert!(is_profile_built(&profile(
            "installer-amd64.tar",
            &Schematic::default()
        )));
        assert!(is_profile_built(&profile(
            "aws-installer-arm64.tar",
            &Schematic::default()
        )));
        let sb = profile("metal-installer-amd64-secureboot.tar", &Schematic::default());
        assert!(!is_profile_built(&sb));
        assert!(unbuilt_reason(&sb).unwrap().contains("SecureBoot"));
        assert!(is_profile_built(&profile(
            "metal-amd64.iso",
            &Schematic::default()
        )));
        assert!(is_profile_built(&profile(
            "aws-amd64.raw.xz",
            &Schematic::default()
        )));
        assert!(!is_profile_built(&profile(
            "metal-amd64-secureboot.iso",
            &Schematic::default()
        )));
        // arm64 defaults to systemd-boot; GRUB on arm64 is not built (no arm64-efi GRUB).
        assert!(is_profile_built(&profile(
            "metal-arm64.raw.zst",
            &Schematic::default()
        )));
        let grub = Schematic::parse(b"customization:\n  bootloader: grub\n").unwrap();
        let arm64_grub = profile("metal-arm64.raw.zst", &grub);
        assert!(!is_profile_built(&arm64_grub));
        assert!(unbuilt_reason(&arm64_grub).unwrap().contains("GRUB"));
        assert!(is_profile_built(&profile("metal-amd64.raw.zst", &grub)));
        let s = Schematic::default();
        assert!(is_profile_built(&profile("metal-amd64-uki.efi", &s)));
        assert!(!is_profile_built(&profile("metal-amd64-secureboot-uki.efi", &s)));
        assert!(is_profile_built(&profile("cmdline-metal-amd64-secureboot", &s)));
        let mut overlay = Schematic::default();
        overlay.overlay.name = "rpi_generic".into();
        assert!(!is_profile_built(&profile("metal-arm64-uki.efi", &overlay)));
        // Installers with an overlay are built; UKIs, ISOs and disk images are not.
        let overlay_installer = profile("installer-arm64.tar", &overlay);
        assert!(is_profile_built(&overlay_installer));
        assert_eq!(unbuilt_reason(&overlay_installer), None);
        assert!(is_profile_built(&profile("metal-installer-amd64.tar", &overlay)));
        assert!(!is_profile_built(&profile(
            "metal-installer-arm64-secureboot.tar",
            &overlay
        )));
        for path in ["metal-arm64-uki.efi", "metal-arm64.iso", "metal-arm64.raw.xz"] {
            let p = profile(path, &overlay);
            assert!(!is_profile_built(&p), "{path}");
            assert!(unbuilt_reason(&p).unwrap().contains("overlay"), "{path}");
        }
        assert!(is_profile_built(&profile("initramfs-arm64.xz", &overlay)));
    }

    #[test]
    fn file_names_are_the_canonical_paths() {
        for (kind, platform, arch, secureboot, name) in [
            (OutputKind::Kernel, "metal", Arch::Amd64, false, "kernel-amd64"),
            (
                OutputKind::Cmdline,
                "aws",
                Arch::Arm64,
                true,
                "cmdline-aws-arm64-secureboot",
            ),
            (
                OutputKind::Initramfs,
                "metal",
                Arch::Arm64,
                false,
                "initramfs-arm64.xz",
            ),
            (
                OutputKind::Uki,
                "metal",
                Arch::Amd64,
                false,
                "metal-amd64-uki.efi",
            ),
            (
                OutputKind::Uki,
                "aws",
                Arch::Amd64,
                true,
                "aws-amd64-secureboot-uki.efi",
            ),
            (
                OutputKind::Installer,
                "metal",
                Arch::Amd64,
                false,
                "metal-installer-amd64.tar",
            ),
            (
                OutputKind::Installer,
                "aws",
                Arch::Arm64,
                true,
                "aws-installer-arm64-secureboot.tar",
            ),
        ] {
            assert_eq!(object_file_name(kind, platform, arch, secureboot), name);
            assert!(parse_path(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn installer_specs_name_their_base() {
        let schematic = Schematic::default();
        let components = factory_upstream::Components::default();
        let unified = profile("metal-installer-amd64.tar", &schematic);
        assert_eq!(
            base_installer_repository(&unified, &components),
            Some("siderolabs/installer-base")
        );
        let legacy = enhance(
            parse_path("installer-amd64.tar").unwrap(),
            &schematic,
            &TalosVersion::parse("v1.9.5").unwrap(),
        )
        .unwrap();
        assert_eq!(
            base_installer_repository(&legacy, &components),
            Some("siderolabs/installer")
        );
        assert_eq!(
            base_installer_repository(&profile("metal-amd64-uki.efi", &schematic), &components),
            None
        );

        let inputs = BuildInputs::new(&unified, &schematic, "sha256:00".into(), &[], "http://f.test/")
            .with_base_installer("sha256:11".into());
        assert_eq!(inputs.digests()[BASE_INSTALLER_INPUT], "sha256:11");
        let spec = Spec::parse(&inputs.spec(&unified)).unwrap();
        assert_eq!(
            spec.profile.inputs.base_installer.as_deref(),
            Some("installer-base")
        );
        assert_eq!(spec.inputs[BASE_INSTALLER_INPUT], "sha256:11");
        // The installer carries the schematic (its initramfs has the schematic extension).
        assert!(spec.schematic_layer().unwrap().is_some());
    }

    #[test]
    fn cmdline_spec_is_assembled_as_kernel_cmdline() {
        let schematic = Schematic::default();
        let (p, inputs) = inputs("cmdline-metal-amd64", &schematic);
        let spec = Spec::parse(&inputs.spec(&p)).unwrap();
        let expected = kernel_cmdline(&CmdlineInput {
            platform: "metal",
            arch: Arch::Amd64,
            version: &p.version,
            secureboot: false,
            iso: false,
            extra_kernel_args: &[],
            overlay_kernel_args: &[],
            meta: &[],
        });
        assert_eq!(cmdline::cmdline(&spec).unwrap(), expected);
        assert!(expected.contains("talos.platform=metal"), "{expected}");
        // Kernel and cmdline carry no schematic extension: only the imager is an input.
        assert_eq!(inputs.digests().len(), 1);
        assert!(spec.schematic.is_none());
    }

    #[test]
    fn initramfs_spec_carries_extensions_and_the_checked_schematic() {
        let schematic = Schematic::parse(
            b"customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/intel-ucode\n      - gvisor\n",
        )
        .unwrap();
        let p = profile("initramfs-amd64.xz", &schematic);
        let resolved = [
            ResolvedExtension {
                requested: "siderolabs/intel-ucode".into(),
                repository: "siderolabs/intel-ucode".into(),
                tag: "1".into(),
                digest: "sha256:11".into(),
            },
            ResolvedExtension {
                requested: "gvisor".into(),
                repository: "siderolabs/gvisor".into(),
                tag: "2".into(),
                digest: "sha256:22".into(),
            },
        ];
        let inputs = BuildInputs::new(&p, &schematic, "sha256:00".into(), &resolved, "http://f.test/");
        assert_eq!(
            inputs.digests().keys().collect::<Vec<_>>(),
            [
                "extension/0/siderolabs/intel-ucode",
                "extension/1/siderolabs/gvisor",
                "imager",
                "schematic-extension-author"
            ]
        );
        assert_eq!(
            inputs.digests()[SCHEMATIC_AUTHOR_INPUT],
            "Image Factory (http://f.test/)"
        );
        let json = inputs.spec(&p);
        let spec = Spec::parse(&json).unwrap();
        let layer = spec.schematic_layer().unwrap().unwrap();
        assert_eq!(layer.id, schematic.id().as_str());
        assert_eq!(layer.canonical_yaml, schematic.canonical_yaml());
        let ext = extensions::extension_inputs(&spec.inputs, 2).unwrap();
        assert_eq!(ext[1].repository, "siderolabs/gvisor");

        // A schematic that does not hash to the profile's ID is refused.
        let mut forged = json.clone();
        forged["schematic"] = "customization: {}\n".into();
        let err = Spec::parse(&forged).unwrap().schematic_layer().unwrap_err();
        assert!(matches!(err, AssembleError::User(m) if m.contains("hashes to")));

        // The external URL is part of the cache key.
        let other = BuildInputs::new(&p, &schematic, "sha256:00".into(), &resolved, "http://g.test/");
        assert_ne!(
            p.cache_key(inputs.digests(), "s"),
            p.cache_key(other.digests(), "s")
        );
    }
}
