//! The `installer` asset (`installer-<arch>.tar`, `<platform>-installer-<arch>.tar`, talos-imager
//! §11.2) without SecureBoot or overlay: the release's base installer image for `linux/<arch>`
//! with one artifacts layer on top, as an OCI image ([`build_image`]) that the registry side
//! publishes, or written as a tarball ([`InstallerImage::write_archive`]) for downloads.
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
//!   customised initramfs, byte for byte the `initramfs-<arch>.xz` asset).
//! * Config: OCI image config with `architecture`, `os: linux`, the base config's `config`
//!   object (entrypoint, environment, labels, working directory…) carried over, and `rootfs`
//!   with the kept base layers' diff IDs plus ours. No `history`.
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

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use factory_core::arch::Arch;
use factory_core::version::TalosVersion;
use factory_pipeline::AssembleError;
use factory_uki::{os_release, UkiProfile};
use factory_upstream::digest::{content_mismatch, sha256_digest, VerifyingReader};
use factory_upstream::image::manifest::Descriptor;
use factory_upstream::{BlobStream, PlatformImage, ResolvedImage, Upstream};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::imager;
use crate::initramfs;
use crate::spec::{spec_error, Spec, BASE_INSTALLER_INPUT};
use crate::uki::{build_uki, io_error, write_file, UkiFiles};
use crate::upstream_error;

/// `application/vnd.oci.image.manifest.v1+json`.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.index.v1+json`.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.config.v1+json`.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar+gzip`: the artifacts layer's media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The image config's `created`: Talos' `SOURCE_DATE_EPOCH` (1559424892), see the module docs.
pub const CREATED: &str = "2019-06-01T21:34:52Z";

const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The OCI layer media types kept as they are.
const OCI_LAYERS: [&str; 3] = [
    "application/vnd.oci.image.layer.v1.tar",
    OCI_LAYER_GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd",
];
/// The unified installer (UKI + sd-boot in the artifacts layer) from this version.
const UNIFIED_SINCE: TalosVersion = TalosVersion::new(1, 10, 0);
/// The modes of the artifacts layer's and the tarball's entries.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;
const BLOCK: usize = 512;
/// The chunk size of layer copies into the tarball.
const COPY_BYTES: usize = 256 << 10;

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
    /// In manifest order: the kept base layers, then the artifacts layer.
    pub layers: Vec<InstallerLayer>,
    /// Holds the artifacts layer file.
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
/// the artifacts layer.
///
/// [`BuildInputs::spec`]: crate::BuildInputs::spec
pub async fn build_image(
    upstream: &Upstream,
    spec: &serde_json::Value,
) -> Result<InstallerImage, AssembleError> {
    let spec = Spec::parse(spec)?;
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
    if profile.inputs.overlay.is_some() {
        return Err(AssembleError::User(
            "installer assets with an overlay are not built by this factory yet".into(),
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

    let unified = profile.version.core() >= UNIFIED_SINCE;
    let scratch = crate::scratch_dir()?;
    // The layer outlives the scratch files it is made of: it has a directory of its own.
    let layer_dir = crate::scratch_dir()?;
    let layer = layer_dir.path().join("artifacts.tar.gz");
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
        // The imager files, extensions, initramfs and UKI go now (also on error, when dropped).
        drop(scratch);
        Ok(InstallerLayer {
            media_type: OCI_LAYER_GZIP.to_owned(),
            digest: written.digest,
            size: written.size,
            diff_id: written.diff_id,
            source: LayerSource::Scratch(layer),
        })
    })
    .await?;
    layers.push(artifacts);

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

    /// Writes the image as a `docker save` / OCI layout tarball (see the module docs), streaming
    /// the layers.
    pub async fn write_archive(
        &self,
        upstream: &Upstream,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), AssembleError> {
        let write_error =
            |e: io::Error| AssembleError::Retryable(format!("writing the installer tarball: {e}"));
        for member in self.archive_members()? {
            let header = tar_header(&member.path, member.kind(), member.size)
                .map_err(|e| AssembleError::Retryable(format!("tar header {}: {e}", member.path)))?;
            out.write_all(header.as_bytes()).await.map_err(write_error)?;
            match member.data {
                MemberData::Dir => {}
                MemberData::Bytes(bytes) => out.write_all(&bytes).await.map_err(write_error)?,
                MemberData::Layer(index) => {
                    let stream = self.open_layer(upstream, index).await?;
                    let layer = &self.layers[index];
                    copy_layer(stream, layer, out).await?;
                }
            }
            out.write_all(&[0; BLOCK][..padding(member.size)])
                .await
                .map_err(write_error)?;
        }
        // The end of the archive: two zero blocks.
        out.write_all(&[0; 2 * BLOCK]).await.map_err(write_error)
    }

    /// The members of the tarball, in order (see the module docs).
    fn archive_members(&self) -> Result<Vec<Member>, AssembleError> {
        let blob = |digest: &str| -> Result<String, AssembleError> {
            let hex = factory_upstream::digest::sha256_hex(digest)
                .ok_or_else(|| AssembleError::User(format!("unsupported digest {digest:?}")))?;
            Ok(format!("blobs/sha256/{hex}"))
        };
        let docker = vec![DockerManifest {
            config: blob(&self.config_digest)?,
            repo_tags: Vec::new(),
            layers: self
                .layers
                .iter()
                .map(|l| blob(&l.digest))
                .collect::<Result<_, _>>()?,
        }];
        let index = OciIndex {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests: vec![IndexEntry {
                media_type: OCI_MANIFEST,
                digest: &self.manifest_digest,
                size: self.manifest.len() as u64,
                platform: EntryPlatform {
                    architecture: self.arch.as_str(),
                    os: "linux",
                },
            }],
        };
        let mut members = vec![
            Member::bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            Member::bytes("index.json", to_json(&index)?),
            Member::bytes("manifest.json", to_json(&docker)?),
            Member::dir("blobs/"),
            Member::dir("blobs/sha256/"),
            Member::bytes(&blob(&self.config_digest)?, self.config.clone()),
            Member::bytes(&blob(&self.manifest_digest)?, self.manifest.clone()),
        ];
        for (index, layer) in self.layers.iter().enumerate() {
            let path = blob(&layer.digest)?;
            // A blob is stored once, however many layers use it.
            if members.iter().any(|m| m.path == path) {
                continue;
            }
            members.push(Member {
                path,
                size: layer.size,
                data: MemberData::Layer(index),
            });
        }
        Ok(members)
    }
}

/// One member of the tarball.
#[derive(Debug)]
struct Member {
    path: String,
    size: u64,
    data: MemberData,
}

#[derive(Debug)]
enum MemberData {
    Dir,
    Bytes(Vec<u8>),
    Layer(usize),
}

impl Member {
    fn bytes(path: &str, bytes: Vec<u8>) -> Member {
        Member {
            path: path.to_owned(),
            size: bytes.len() as u64,
            data: MemberData::Bytes(bytes),
        }
    }

    fn dir(path: &str) -> Member {
        Member {
            path: path.to_owned(),
            size: 0,
            data: MemberData::Dir,
        }
    }

    fn kind(&self) -> tar::EntryType {
        match self.data {
            MemberData::Dir => tar::EntryType::Directory,
            _ => tar::EntryType::Regular,
        }
    }
}

/// Copies one layer into the tarball, exactly `layer.size` bytes: a read error is the source's
/// (a digest mismatch of a base layer is upstream's content, not retried; anything else,
/// including a damaged scratch file, is), a write error the output's.
async fn copy_layer(
    mut stream: BlobStream,
    layer: &InstallerLayer,
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), AssembleError> {
    let mut buf = vec![0u8; COPY_BYTES];
    let mut copied = 0u64;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let upstream = matches!(layer.source, LayerSource::Upstream { .. });
                return Err(match content_mismatch(&e) {
                    Some(m) if upstream => AssembleError::User(format!("layer {}: {m}", layer.digest)),
                    _ => AssembleError::Retryable(format!("reading layer {}: {e}", layer.digest)),
                });
            }
        };
        if n == 0 {
            break;
        }
        copied += n as u64;
        out.write_all(&buf[..n])
            .await
            .map_err(|e| AssembleError::Retryable(format!("writing the installer tarball: {e}")))?;
    }
    // The verifying reader enforces the size; this guards the tar framing regardless.
    if copied != layer.size {
        return Err(AssembleError::Retryable(format!(
            "layer {} has {copied} bytes, not {}",
            layer.digest, layer.size
        )));
    }
    Ok(())
}

/// Zero bytes after `size` bytes of data up to the next tar block.
fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// A deterministic ustar header: the name as given (a trailing `/` kept for directories), owner
/// 0:0, mtime 0, mode 0644 for files and 0755 for directories.
fn tar_header(path: &str, kind: tar::EntryType, size: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    let name = &mut header.as_old_mut().name;
    // Every name here is short; the NUL terminator is the zero-filled rest.
    if path.len() >= name.len() {
        return Err(io::Error::other(format!("tar path {path:?} is too long")));
    }
    name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(if kind == tar::EntryType::Directory {
        DIR_MODE
    } else {
        FILE_MODE
    });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header.set_device_major(0)?;
    header.set_device_minor(0)?;
    header.set_cksum();
    Ok(header)
}

/// The base layers the installer keeps (all, or the first of exactly two), with OCI media types
/// and their diff IDs from the base config; and the base config's runtime `config` object.
fn keep_base_layers(
    base: &ResolvedImage,
    platform: &PlatformImage,
) -> Result<(Vec<InstallerLayer>, Option<serde_json::Value>), AssembleError> {
    let invalid = |reason: String| AssembleError::User(format!("base installer {}: {reason}", base.name()));
    let config: BaseConfig =
        serde_json::from_slice(&platform.config).map_err(|e| invalid(format!("image config: {e}")))?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != platform.layers.len() {
        return Err(invalid(format!(
            "{} layers but {} diff IDs",
            platform.layers.len(),
            diff_ids.len()
        )));
    }
    let kept = match platform.layers.len() {
        // The pre-1.10 installer: base + its boot assets, which ours replace.
        2 => 1,
        n => n,
    };
    let mut layers = Vec::with_capacity(kept + 1);
    for (descriptor, diff_id) in platform.layers.iter().zip(diff_ids).take(kept) {
        layers.push(InstallerLayer {
            media_type: oci_layer_media_type(descriptor).map_err(invalid)?.to_owned(),
            digest: descriptor.digest.clone(),
            size: descriptor
                .size
                .ok_or_else(|| invalid(format!("layer {} has no size", descriptor.digest)))?,
            diff_id,
            source: LayerSource::Upstream {
                repository: base.repository.clone(),
            },
        });
    }
    Ok((layers, config.config))
}

/// The OCI media type a base layer is published with: Docker gzip layers become OCI gzip layers
/// (the same bytes), OCI layer types stay.
fn oci_layer_media_type(descriptor: &Descriptor) -> Result<&'static str, String> {
    let media_type = descriptor.media_type.as_deref().unwrap_or_default();
    if media_type == DOCKER_LAYER_GZIP {
        return Ok(OCI_LAYER_GZIP);
    }
    OCI_LAYERS.into_iter().find(|t| *t == media_type).ok_or_else(|| {
        format!(
            "layer {} has media type {media_type:?}, which the installer does not carry over",
            descriptor.digest
        )
    })
}

/// The fields of the base image config the installer reads.
#[derive(Deserialize)]
struct BaseConfig {
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    rootfs: Option<BaseRootFs>,
}

#[derive(Deserialize)]
struct BaseRootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The OCI image config (field order fixed).
#[derive(Serialize)]
struct ImageConfig<'a> {
    created: &'static str,
    architecture: &'a str,
    os: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'a serde_json::Value>,
    rootfs: RootFs<'a>,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: ManifestDescriptor<'a>,
    layers: Vec<ManifestDescriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDescriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<IndexEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry<'a> {
    media_type: &'static str,
    digest: &'a str,
    size: u64,
    platform: EntryPlatform<'a>,
}

#[derive(Serialize)]
struct EntryPlatform<'a> {
    architecture: &'a str,
    os: &'static str,
}

/// An entry of `docker save`'s `manifest.json`.
#[derive(Serialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, AssembleError> {
    serde_json::to_vec(value).map_err(|e| AssembleError::Retryable(format!("serialising JSON: {e}")))
}

/// The image config of the installer (see the module docs).
fn image_config(
    arch: Arch,
    runtime: Option<&serde_json::Value>,
    layers: &[InstallerLayer],
) -> Result<Vec<u8>, AssembleError> {
    to_json(&ImageConfig {
        created: CREATED,
        architecture: arch.as_str(),
        os: "linux",
        config: runtime,
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.diff_id.as_str()).collect(),
        },
    })
}

/// The OCI image manifest of the installer.
fn image_manifest(
    config: &[u8],
    config_digest: &str,
    layers: &[InstallerLayer],
) -> Result<Vec<u8>, AssembleError> {
    to_json(&ImageManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: ManifestDescriptor {
            media_type: OCI_CONFIG,
            digest: config_digest,
            size: config.len() as u64,
        },
        layers: layers
            .iter()
            .map(|l| ManifestDescriptor {
                media_type: &l.media_type,
                digest: &l.digest,
                size: l.size,
            })
            .collect(),
    })
}

/// What writing a layer measured.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WrittenLayer {
    digest: String,
    size: u64,
    diff_id: String,
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The writer, `sha256:<hex>` and the byte count.
    fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the artifacts layer to `dest` (blocking): `files` (name under `usr/install/<arch>/`,
/// local path) as a deterministic tar (see the module docs) through gzip, measuring the diff ID
/// and the blob's digest and size in the same pass.
fn write_artifacts_layer(
    arch: Arch,
    files: &[(String, PathBuf)],
    dest: &Path,
) -> Result<WrittenLayer, AssembleError> {
    let file = File::create(dest).map_err(io_error("creating", dest))?;
    let write = |e: io::Error| AssembleError::Retryable(format!("writing {}: {e}", dest.display()));
    let (file, digest, size, diff_id) = write_layer(arch, files, BufWriter::new(file))?;
    file.into_inner()
        .map_err(|e| write(e.into_error()))?
        .sync_all()
        .map_err(write)?;
    Ok(WrittenLayer {
        digest,
        size,
        diff_id,
    })
}

/// The layer into `out`: `(out, digest, size, diff ID)`.
fn write_layer<W: Write>(
    arch: Arch,
    files: &[(String, PathBuf)],
    out: W,
) -> Result<(W, String, u64, String), AssembleError> {
    let write = |e: io::Error| AssembleError::Retryable(format!("writing the artifacts layer: {e}"));
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Hashing::new(out), flate2::Compression::default());
    let mut tar = tar::Builder::new(Hashing::new(gzip));
    let dir = format!("usr/install/{arch}/");
    for path in ["usr/", "usr/install/", dir.as_str()] {
        let header = tar_header(path, tar::EntryType::Directory, 0).map_err(write)?;
        tar.append(&header, io::empty()).map_err(write)?;
    }
    let mut sorted: Vec<&(String, PathBuf)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, source) in sorted {
        let file = File::open(source).map_err(io_error("opening", source))?;
        let size = file.metadata().map_err(io_error("reading", source))?.len();
        let header = tar_header(&format!("{dir}{name}"), tar::EntryType::Regular, size).map_err(write)?;
        let mut data = file.take(size);
        tar.append(&header, &mut data).map_err(write)?;
        if data.limit() != 0 {
            return Err(AssembleError::Retryable(format!(
                "{} shrank while it was archived",
                source.display()
            )));
        }
    }
    let (gzip, diff_id, _) = tar.into_inner().map_err(write)?.finish();
    let (out, digest, size) = gzip.finish().map_err(write)?.finish();
    Ok((out, digest, size, diff_id))
}

/// Runs blocking work on a blocking thread, re-raising its panic.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AssembleError> + Send + 'static,
) -> Result<T, AssembleError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(AssembleError::Retryable(format!("the build task failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
        serde_json::from_value(serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": size
        }))
        .unwrap()
    }

    fn resolved() -> ResolvedImage {
        ResolvedImage {
            repository: "siderolabs/installer".into(),
            reference: "sha256:00".into(),
            digest: "sha256:00".into(),
            manifest: factory_upstream::RawManifest {
                digest: "sha256:00".into(),
                media_type: OCI_MANIFEST.into(),
                bytes: Default::default(),
            },
        }
    }

    fn platform(layers: Vec<Descriptor>, config: serde_json::Value) -> PlatformImage {
        let config = serde_json::to_vec(&config).unwrap();
        PlatformImage {
            manifest: resolved().manifest,
            config_digest: sha256_digest(&config),
            config: config.into(),
            layers,
        }
    }

    fn config(diff_ids: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2025-01-01T00:00:00Z",
            "config": {"Entrypoint": ["/bin/installer"], "Env": ["VERSION=v1.9.5"],
                       "Labels": {"alpha.talos.dev/version": "v1.9.5"}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "x"}]
        })
    }

    #[test]
    fn media_types_map_to_oci() {
        let d = |t: &str| oci_layer_media_type(&descriptor(t, "sha256:1", 1));
        assert_eq!(d(DOCKER_LAYER_GZIP), Ok(OCI_LAYER_GZIP));
        assert_eq!(d(OCI_LAYER_GZIP), Ok(OCI_LAYER_GZIP));
        assert_eq!(
            d("application/vnd.oci.image.layer.v1.tar+zstd"),
            Ok("application/vnd.oci.image.layer.v1.tar+zstd")
        );
        assert!(d("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip").is_err());
        assert!(d("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip").is_err());
    }

    #[test]
    fn a_two_layer_base_keeps_its_first_layer_only() {
        let two = platform(
            vec![
                descriptor(DOCKER_LAYER_GZIP, "sha256:l1", 10),
                descriptor(DOCKER_LAYER_GZIP, "sha256:l2", 20),
            ],
            config(&["sha256:d1", "sha256:d2"]),
        );
        let (layers, runtime) = keep_base_layers(&resolved(), &two).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].digest, "sha256:l1");
        assert_eq!(layers[0].diff_id, "sha256:d1");
        assert_eq!(layers[0].size, 10);
        assert_eq!(layers[0].media_type, OCI_LAYER_GZIP);
        assert_eq!(runtime.unwrap()["Entrypoint"][0], "/bin/installer");

        let one = platform(
            vec![descriptor(OCI_LAYER_GZIP, "sha256:l1", 10)],
            config(&["sha256:d1"]),
        );
        assert_eq!(keep_base_layers(&resolved(), &one).unwrap().0.len(), 1);
        let three = platform(
            vec![
                descriptor(OCI_LAYER_GZIP, "sha256:l1", 10),
                descriptor(OCI_LAYER_GZIP, "sha256:l2", 10),
                descriptor(OCI_LAYER_GZIP, "sha256:l3", 10),
            ],
            config(&["sha256:d1", "sha256:d2", "sha256:d3"]),
        );
        assert_eq!(keep_base_layers(&resolved(), &three).unwrap().0.len(), 3);

        // Diff IDs that do not match the layers, or a layer type we do not carry, are refused.
        let short = platform(vec![descriptor(OCI_LAYER_GZIP, "sha256:l1", 10)], config(&[]));
        assert!(matches!(
            keep_base_layers(&resolved(), &short),
            Err(AssembleError::User(m)) if m.contains("diff IDs")
        ));
        let foreign = platform(
            vec![descriptor("application/x-foo", "sha256:l1", 10)],
            config(&["sha256:d1"]),
        );
        assert!(matches!(
            keep_base_layers(&resolved(), &foreign),
            Err(AssembleError::User(m)) if m.contains("application/x-foo")
        ));
    }

    fn scratch_files() -> (tempfile::TempDir, Vec<(String, PathBuf)>) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        // Given out of order: the layer sorts them.
        for (name, content) in [
            ("vmlinuz.efi", b"MZ uki".to_vec()),
            ("systemd-boot.efi", vec![7u8; 1000]),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            files.push((name.to_owned(), path));
        }
        (dir, files)
    }

    #[test]
    fn the_artifacts_layer_is_deterministic_and_measured() {
        let (_dir, files) = scratch_files();
        let (a, digest, size, diff_id) = write_layer(Arch::Amd64, &files, Vec::new()).unwrap();
        let (b, ..) = write_layer(Arch::Amd64, &files, Vec::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(digest, sha256_digest(&a));
        assert_eq!(size, a.len() as u64);
        // gzip: no mtime, no name, OS 255.
        assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
        assert_eq!(a[9], 255);

        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(diff_id, sha256_digest(&tar_bytes));
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entries: Vec<(String, u32, u64, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(h.path_bytes().into_owned()).unwrap(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("usr/".to_owned(), 0o755, 0, 0, 0),
                ("usr/install/".to_owned(), 0o755, 0, 0, 0),
                ("usr/install/amd64/".to_owned(), 0o755, 0, 0, 0),
                ("usr/install/amd64/systemd-boot.efi".to_owned(), 0o644, 0, 0, 1000),
                ("usr/install/amd64/vmlinuz.efi".to_owned(), 0o644, 0, 0, 6),
            ]
        );
    }

    fn image(dir: &Path) -> InstallerImage {
        let (_files_dir, files) = scratch_files();
        let path = dir.join("layer");
        let written = write_artifacts_layer(Arch::Arm64, &files, &path).unwrap();
        let (mut layers, runtime) = keep_base_layers(
            &resolved(),
            &platform(
                vec![
                    descriptor(DOCKER_LAYER_GZIP, &sha256_digest(b"l1"), 2),
                    descriptor(DOCKER_LAYER_GZIP, &sha256_digest(b"l2"), 2),
                ],
                config(&["sha256:d1", "sha256:d2"]),
            ),
        )
        .unwrap();
        layers.push(InstallerLayer {
            media_type: OCI_LAYER_GZIP.into(),
            digest: written.digest,
            size: written.size,
            diff_id: written.diff_id,
            source: LayerSource::Scratch(path),
        });
        let config = image_config(Arch::Arm64, runtime.as_ref(), &layers).unwrap();
        let config_digest = sha256_digest(&config);
        let manifest = image_manifest(&config, &config_digest, &layers).unwrap();
        InstallerImage {
            arch: Arch::Arm64,
            base: resolved(),
            manifest_digest: sha256_digest(&manifest),
            config,
            config_digest,
            manifest,
            layers,
            _scratch: tempfile::tempdir().unwrap(),
        }
    }

    #[test]
    fn config_and_manifest_shape() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
        let diff_id = image.layers[1].diff_id.clone();
        assert_eq!(
            config,
            serde_json::json!({
                "created": CREATED, "architecture": "arm64", "os": "linux",
                "config": {"Entrypoint": ["/bin/installer"], "Env": ["VERSION=v1.9.5"],
                           "Labels": {"alpha.talos.dev/version": "v1.9.5"}},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:d1", diff_id]}
            })
        );
        // Fixed field order.
        assert!(std::str::from_utf8(&image.config).unwrap().starts_with(
            r#"{"created":"2019-06-01T21:34:52Z","architecture":"arm64","os":"linux","config":{"#
        ));
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], OCI_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
        assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());
        assert_eq!(manifest["config"]["size"], image.config.len());
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0]["mediaType"], OCI_LAYER_GZIP);
        assert_eq!(layers[0]["digest"], sha256_digest(b"l1").as_str());
        assert_eq!(layers[1]["digest"], image.layers[1].digest.as_str());
        assert_eq!(layers[1]["size"], image.layers[1].size);
    }

    #[test]
    fn archive_members_are_docker_save_and_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let members = image.archive_members().unwrap();
        let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
        let names: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
        let config = format!("blobs/sha256/{}", hex(&image.config_digest));
        let manifest = format!("blobs/sha256/{}", hex(&image.manifest_digest));
        let l1 = format!("blobs/sha256/{}", hex(&image.layers[0].digest));
        let l2 = format!("blobs/sha256/{}", hex(&image.layers[1].digest));
        assert_eq!(
            names,
            [
                "oci-layout",
                "index.json",
                "manifest.json",
                "blobs/",
                "blobs/sha256/",
                &config,
                &manifest,
                &l1,
                &l2
            ]
        );
        let bytes = |i: usize| match &members[i].data {
            MemberData::Bytes(b) => serde_json::from_slice::<serde_json::Value>(b).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bytes(2),
            serde_json::json!([{"Config": config, "RepoTags": [], "Layers": [l1, l2]}])
        );
        assert_eq!(
            bytes(1)["manifests"][0],
            serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": image.manifest_digest,
                "size": image.manifest.len(), "platform": {"architecture": "arm64", "os": "linux"}
            })
        );
        assert_eq!(bytes(0)["imageLayoutVersion"], "1.0.0");
        assert!(matches!(members[8].data, MemberData::Layer(1)));
        assert_eq!(members[8].size, image.layers[1].size);
    }

    #[test]
    fn tar_headers_are_fixed() {
        let h = tar_header("blobs/", tar::EntryType::Directory, 0).unwrap();
        assert_eq!(h.path_bytes().as_ref(), b"blobs/");
        assert_eq!(h.mode().unwrap(), 0o755);
        let h = tar_header("index.json", tar::EntryType::Regular, 1234).unwrap();
        assert_eq!(
            (h.mode().unwrap(), h.size().unwrap(), h.mtime().unwrap()),
            (0o644, 1234, 0)
        );
        assert!(tar_header(&"x".repeat(100), tar::EntryType::Regular, 0).is_err());
        assert_eq!(
            (padding(0), padding(1), padding(512), padding(513)),
            (0, 511, 0, 511)
        );
    }

    #[tokio::test]
    async fn the_tarball_frames_the_scratch_layer() {
        // Only the artifacts layer is local; write a one-layer image and read it back with `tar`.
        let dir = tempfile::tempdir().unwrap();
        let mut image = image(dir.path());
        image.layers.remove(0);
        let upstream = Upstream::new(
            std::sync::Arc::new(factory_upstream::LayoutSource::new(dir.path())),
            factory_upstream::UpstreamConfig::new(factory_upstream::Verification::Disabled),
        );
        let mut out = Vec::new();
        image.write_archive(&upstream, &mut out).await.unwrap();
        assert_eq!(out.len() % BLOCK, 0);
        let mut archive = tar::Archive::new(&out[..]);
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.push((path, data));
        }
        let layer = &image.layers[0];
        let (_, data) = found
            .iter()
            .find(|(p, _)| p.ends_with(layer.digest.trim_start_matches("sha256:")))
            .unwrap();
        assert_eq!(sha256_digest(data), layer.digest);
        assert_eq!(found.len(), 8);

        // A scratch layer that changed is caught by its digest (local trouble: retried).
        let LayerSource::Scratch(path) = &layer.source else {
            panic!()
        };
        let mut bytes = std::fs::read(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(path, bytes).unwrap();
        let err = image.write_archive(&upstream, &mut Vec::new()).await.unwrap_err();
        assert!(
            matches!(&err, AssembleError::Retryable(m) if m.contains("mismatch")),
            "{err:?}"
        );
    }
}
