//! The `installer` asset (`installer-<arch>.tar`, `<platform>-installer-<arch>.tar`, talos-imager
//! §11.2) without SecureBoot: the release's base installer image for `linux/<arch>` with an
//! artifacts layer on top, and with a board overlay a third layer, as an OCI image
//! ([`build_image`]) that the registry side publishes, or written as a tarball
//! ([`InstallerImage::write_archive`]) for downloads.
//!
//! # The image
//!
//! * Base: `siderolabs/installer-base` (≥ 1.10) or `siderolabs/installer` (< 1.10), pulled by the
//!   exact digest the spec names (`inputs["base-installer"]`, signature verified) for
//!   `linux/<arch>`. Its layers are kept as they are (same blobs, pulled from upstream when the
//!   image is written), except that a base of **exactly two** layers keeps only the first: the
//!   second is the pre-1.10 installer's own boot assets, which ours replace. Docker gzip layers
//!   are announced with the OCI gzip media type (same bytes); OCI layer types are kept; anything
//!   else is refused.
//! * Artifacts layer (tar + gzip, OCI gzip layer media type): from 1.10 `usr/install/<arch>/
//!   systemd-boot.efi` (the release's, from the imager image) and `usr/install/<arch>/vmlinuz.efi`
//!   (a UKI: systemd-stub + kernel + the initramfs with the schematic's extensions, the profile's
//!   command line, the `main` and `reset-maintenance` boot profiles — the UKI of a disk image);
//!   before 1.10 `usr/install/<arch>/vmlinuz` and `usr/install/<arch>/initramfs.xz` (the
//!   customised initramfs, byte for byte the `initramfs-<arch>.xz` asset). With an overlay the
//!   UKI's command line also has the overlay's kernel args (what its installer answers to
//!   `get-options`, applied after the platform's, see [`crate::overlay`]).
//! * Overlay layer (schematics with an overlay only; tar + gzip like the artifacts layer):
//!   `overlay/artifacts/**` (the overlay image's `artifacts/` for the target arch; files 0644, or
//!   0755 when executable there; symlinks kept), `overlay/installers/default` (the target arch's
//!   `installers/<name>`, 0755) and `overlay/extra-options` (the schematic's overlay options YAML,
//!   `{}` when none), with their directories.
//! * Config: OCI image config with `architecture`, `os: linux`, the base config's `config`
//!   object (entrypoint, environment, labels, working directory…) carried over, and `rootfs`
//!   with the kept base layers' diff IDs plus ours (artifacts, then overlay). No `history`.
//! * Manifest: OCI image manifest, config media type `application/vnd.oci.image.config.v1+json`.
//!
//! # Deliberate differences from the Go imager
//!
//! * `created` is the fixed [`CREATED`] (Talos' `SOURCE_DATE_EPOCH`, 1559424892) rather than the
//!   build time: the asset cache expects the same spec to give the same bytes, and with a fixed
//!   time two builds of a cache key give the same config, manifest and digests.
//! * The artifacts layer's files have mode 0644 (Go writes mode 0) and the layer has explicit
//!   directory entries `usr/`, `usr/install/`, `usr/install/<arch>/` with mode 0755 (Go has
//!   none). Mode-0 files are readable only with `CAP_DAC_OVERRIDE`, which breaks rootless
//!   extraction and inspection tools (`umoci`, `skopeo` + `tar` as a user), and runtimes differ in
//!   the modes they give directories a layer implies without naming; explicit entries make the
//!   extracted tree the same everywhere. Every entry has owner 0:0 and mtime 0, in path order.
//! * The tarball names no image (`RepoTags: []`): the Go tarball tags it with the base image's
//!   reference, which names the base, not this image.
//!
//! # The tarball
//!
//! One file that is both a `docker save` archive (`manifest.json`, as Docker 25+ writes it,
//! for `docker load` and `docker-archive:`) and an OCI image layout (`oci-layout`, `index.json`,
//! for `oci-archive:`), sharing `blobs/sha256/<hex>`. The small documents come first, then the
//! config and manifest blobs, then the layers, each announced with its exact size and streamed
//! (base layers from upstream, verified while read): memory stays bounded.
//!
//! Determinism: gzip without name or mtime and OS byte 255, tar headers with mtime 0, owner 0,
//! fixed modes, JSON with a fixed field order: two builds of the same spec give the same bytes.

mod archive;
mod base;
#[cfg(test)]
mod fixtures;
mod hashing;
mod layer;
mod oci;
mod ustar;

use std::path::PathBuf;

use factory_core::arch::Arch;
use factory_core::version::TalosVersion;
use factory_pipeline::AssembleError;
use factory_uki::{os_release, UkiProfile};
use factory_upstream::digest::{sha256_digest, VerifyingReader};
use factory_upstream::{BlobStream, ResolvedImage, Upstream};

use crate::imager;
use crate::initramfs;
use crate::overlay;
use crate::spec::{spec_error, Spec, BASE_INSTALLER_INPUT};
use crate::uki::{build_uki, io_error, write_file, UkiFiles};
use crate::upstream_error;

use base::keep_base_layers;
use layer::{write_artifacts_layer, write_layer_file};
pub(crate) use layer::{EntryData, LayerEntry};
use oci::{image_config, image_manifest};
pub use oci::{CREATED, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};

/// The unified installer (UKI + sd-boot in the artifacts layer) from this version.
const UNIFIED_SINCE: TalosVersion = TalosVersion::new(1, 10, 0);

/// A customised installer image for one arch, ready to publish or to write as a tarball.
#[derive(Debug)]
pub struct InstallerImage {
    pub arch: Arch,
    /// The verified base image (by digest).
    pub base: ResolvedImage,
    /// The exact OCI image config JSON bytes.
    pub config: Vec<u8>,
    /// `sha256:<hex>` of [`InstallerImage::config`].
    pub config_digest: String,
    /// The exact OCI image manifest JSON bytes (media type [`OCI_MANIFEST`]).
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    /// In manifest order: the kept base layers, the artifacts layer, the overlay layer if any.
    pub layers: Vec<InstallerLayer>,
    /// Holds the artifacts (and overlay) layer files.
    _scratch: tempfile::TempDir,
}

/// One layer of an [`InstallerImage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallerLayer {
    pub media_type: String,
    /// `sha256:<hex>` of the (compressed) blob.
    pub digest: String,
    pub size: u64,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    source: LayerSource,
}

/// Where a layer's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LayerSource {
    /// A blob of the base image's repository upstream.
    Upstream { repository: String },
    /// A file in the image's scratch directory.
    Scratch(PathBuf),
}

/// Builds the image described by an installer build spec (the JSON [`BuildInputs::spec`] makes
/// for an installer profile): pulls the base by the digest in `inputs["base-installer"]`, builds
/// the artifacts layer and, with an overlay, pulls it by the digest in `inputs["overlay/<repo>"]`,
/// runs its `get-options` and builds the overlay layer.
///
/// [`BuildInputs::spec`]: crate::BuildInputs::spec
pub async fn build_image(
    upstream: &Upstream,
    spec: &serde_json::Value,
) -> Result<InstallerImage, AssembleError> {
    let mut spec = Spec::parse(spec)?;
    let profile = &spec.profile;
    if profile.output.kind != "installer" {
        return Err(spec_error(format!(
            "kind {} is not an installer",
            profile.output.kind
        )));
    }
    if profile.secureboot {
        return Err(AssembleError::User(
            "installer assets with SecureBoot are not built by this factory yet".into(),
        ));
    }
    let arch = spec.arch()?;
    let components = &upstream.config().components;
    let repository = match profile.inputs.base_installer.as_deref() {
        Some("installer-base") => &components.installer_base,
        Some("installer") => &components.installer,
        other => return Err(spec_error(format!("base installer {other:?}"))),
    };
    let digest = spec
        .inputs
        .get(BASE_INSTALLER_INPUT)
        .ok_or_else(|| spec_error(format!("no {BASE_INSTALLER_INPUT} digest")))?;
    let base = upstream
        .resolve(repository, digest)
        .await
        .map_err(upstream_error)?;
    let platform = upstream
        .platform_image(&base, arch)
        .await
        .map_err(upstream_error)?;
    let (mut layers, runtime) = keep_base_layers(&base, &platform)?;

    let scratch = crate::scratch_dir()?;
    // The overlay's kernel args go into the UKI's command line: known before it is computed.
    let overlay = match &spec.profile.inputs.overlay {
        Some(_) => {
            let prepared = overlay::prepare(upstream, &spec, arch, scratch.path()).await?;
            spec.profile.customization.overlay_kernel_args = prepared.options.kernel_args.clone();
            Some(prepared)
        }
        None => None,
    };
    let spec = spec;
    let profile = &spec.profile;
    let unified = profile.version.core() >= UNIFIED_SINCE;
    // The layers outlive the scratch files they are made of: they have a directory of their own.
    let layer_dir = crate::scratch_dir()?;
    let layer = layer_dir.path().join("artifacts.tar.gz");
    let overlay_layer = layer_dir.path().join("overlay.tar.gz");
    let extra: &[&str] = if unified {
        &[imager::KERNEL, imager::SD_STUB, imager::SD_BOOT]
    } else {
        &[imager::KERNEL]
    };
    let (prepared, paths) = initramfs::prepare(upstream, &spec, arch, extra, scratch.path()).await?;
    let uki = if unified {
        let cmdline = crate::cmdline::cmdline(&spec)?;
        let osrel = os_release(&profile.name, &profile.version.to_string());
        // The installer's UKI is the disk image's (talos-imager §8.1): `main` and
        // `reset-maintenance`.
        let profiles = vec![UkiProfile::reset_maintenance(&cmdline)];
        Some((cmdline, osrel, profiles))
    } else {
        None
    };

    let artifacts = run_blocking(move || {
        let dir = scratch.path();
        let initrd = dir.join("initramfs.xz");
        write_file(&initrd, |f| initramfs::build(&prepared, f))?;
        let files = match uki {
            Some((cmdline, osrel, profiles)) => {
                let (kernel, stub, sd_boot) = (&paths[0], &paths[1], &paths[2]);
                let path = dir.join("vmlinuz.efi");
                let files = UkiFiles {
                    stub,
                    kernel,
                    initrd: &initrd,
                };
                write_file(&path, |f| build_uki(&files, osrel, cmdline, Some(profiles), f))?;
                vec![
                    (imager::SD_BOOT.to_owned(), sd_boot.clone()),
                    ("vmlinuz.efi".to_owned(), path),
                ]
            }
            None => vec![
                (imager::KERNEL.to_owned(), paths[0].clone()),
                (imager::INITRAMFS.to_owned(), initrd.clone()),
            ],
        };
        let written = write_artifacts_layer(arch, &files, &layer)?;
        tracing::info!(
            size = written.size,
            digest = %written.digest,
            "built the installer artifacts layer"
        );
        let mut built = vec![written.into_layer(layer)];
        if let Some(overlay) = &overlay {
            let written = write_layer_file(overlay::layer_entries(overlay)?, &overlay_layer)?;
            tracing::info!(
                size = written.size,
                digest = %written.digest,
                "built the installer overlay layer"
            );
            built.push(written.into_layer(overlay_layer));
        }
        // The imager files, extensions, initramfs, UKI and overlay files go now (also on error,
        // when dropped).
        drop(scratch);
        Ok(built)
    })
    .await?;
    layers.extend(artifacts);

    let config = image_config(arch, runtime.as_ref(), &layers)?;
    let config_digest = sha256_digest(&config);
    let manifest = image_manifest(&config, &config_digest, &layers)?;
    let manifest_digest = sha256_digest(&manifest);
    Ok(InstallerImage {
        arch,
        base,
        config,
        config_digest,
        manifest,
        manifest_digest,
        layers,
        _scratch: layer_dir,
    })
}

impl InstallerImage {
    /// The bytes of layer `index`, streamed; a base layer comes from upstream and is checked
    /// against its digest while read (an `io::Error` before EOF on mismatch — never a clean EOF
    /// with wrong bytes). The artifacts layer is checked the same way.
    pub async fn open_layer(&self, upstream: &Upstream, index: usize) -> Result<BlobStream, AssembleError> {
        let layer = self.layers.get(index).ok_or_else(|| {
            AssembleError::User(format!(
                "the installer image has {} layers, not {}",
                self.layers.len(),
                index + 1
            ))
        })?;
        match &layer.source {
            LayerSource::Upstream { repository } => upstream
                .verified_blob(repository, &layer.digest, Some(layer.size))
                .await
                .map_err(upstream_error),
            LayerSource::Scratch(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(io_error("opening", path))?;
                Ok(Box::pin(VerifyingReader::new(
                    file,
                    &layer.digest,
                    Some(layer.size),
                )))
            }
        }
    }
}

/// Runs blocking work on a blocking thread, re-raising its panic.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AssembleError> + Send + 'static,
) -> Result<T, AssembleError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(AssembleError::Retryable(format!("the build task failed: {e}"))),
    }
}
