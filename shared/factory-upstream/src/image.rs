//! The facade the factory uses: resolve a tag to a verified digest, then read files from, or
//! extract, the flattened `linux/<arch>` filesystem of that image.

mod extract;
mod files;
mod layer;
pub mod manifest;
mod paths;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use factory_core::arch::Arch;
use factory_store::Memo;
use tokio::sync::{mpsc, oneshot};

pub use extract::ExtractSummary;
pub use files::FILE_LIMIT;

use crate::config::UpstreamConfig;
use crate::digest::{content_mismatch, is_digest_reference, read_verified, VerifyingReader};
use crate::source::{BlobStream, OciSource, RawManifest, UpstreamError};
use crate::verify::{verify_image, Verification};
use layer::{CancelOnDrop, LayerCtx};
use manifest::{is_linux, Descriptor, ImageConfig, Parsed};

/// Image configs are a few KiB; this only guards against nonsense.
const CONFIG_LIMIT: u64 = 4 << 20;
/// Index → index → manifest is already unusual; deeper nesting is refused.
const MAX_NESTING: usize = 4;

/// Upstream images for the factory. Cheap to share in an `Arc`.
#[derive(Debug)]
pub struct Upstream {
    source: Arc<dyn OciSource>,
    config: UpstreamConfig,
    /// Whether the "verification disabled" warning was logged (once per instance).
    warned_disabled: AtomicBool,
    /// Verified resolutions by (repository, reference): by digest for good (content addressed),
    /// by tag for [`RESOLVED_TAG_TTL`].
    resolved: Memo<(String, String), ResolvedImage>,
}

/// How long a process reuses a tag's verified digest before asking the registry again. Every
/// image request resolves the imager tag of its version; without this each one would cost a
/// registry round trip and a signature check. Release tags are not moved upstream; were one
/// moved, a process would pick the new digest up within this time (the version list's own TTL
/// is 15 minutes too).
pub const RESOLVED_TAG_TTL: Duration = Duration::from_secs(15 * 60);

/// Resolutions a process keeps (each holds a manifest of a few KiB).
const RESOLVED_MEMO_ENTRIES: usize = 1024;

/// A repository reference resolved to its top-level digest (signature checked).
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub repository: String,
    /// The tag or digest that was asked for.
    pub reference: String,
    /// `sha256:<hex>` of the top-level manifest or index.
    pub digest: String,
    pub manifest: RawManifest,
}

impl ResolvedImage {
    /// `repository@digest`, for messages.
    pub fn name(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

impl Upstream {
    pub fn new(source: Arc<dyn OciSource>, config: UpstreamConfig) -> Self {
        Upstream {
            source,
            config,
            warned_disabled: AtomicBool::new(false),
            resolved: Memo::new(RESOLVED_MEMO_ENTRIES),
        }
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    pub fn source(&self) -> &Arc<dyn OciSource> {
        &self.source
    }

    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// All tags of a repository.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, UpstreamError> {
        self.source.list_tags(repository).await
    }

    /// repository:reference (tag or digest) → top-level digest, cosign-verified (unless disabled).
    pub async fn resolve(&self, repository: &str, reference: &str) -> Result<ResolvedImage, UpstreamError> {
        let memo_key = (repository.to_owned(), reference.to_owned());
        if let Some(resolved) = self.resolved.get(&memo_key) {
            return Ok(resolved);
        }
        let resolved = self.resolve_uncached(repository, reference).await?;
        let expires = if is_digest_reference(reference) {
            None
        } else {
            Instant::now().checked_add(RESOLVED_TAG_TTL)
        };
        self.resolved.insert_until(memo_key, resolved.clone(), expires);
        Ok(resolved)
    }

    async fn resolve_uncached(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<ResolvedImage, UpstreamError> {
        let manifest = self.source.manifest(repository, reference).await?;
        // Adapters check this too; a second look costs nothing and guards against a faulty one.
        if is_digest_reference(reference) && manifest.digest != reference {
            return Err(UpstreamError::Invalid {
                image: format!("{repository}@{reference}"),
                reason: format!("manifest digest is {}", manifest.digest),
            });
        }
        match &self.config.verification {
            Verification::Key(key) => {
                verify_image(self.source.as_ref(), repository, &manifest.digest, key).await?
            }
            Verification::Disabled => {
                if !self.warned_disabled.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        source = %self.source.describe(),
                        "container signature verification is disabled: upstream images are used unverified"
                    );
                }
            }
        }
        Ok(ResolvedImage {
            repository: repository.to_string(),
            reference: reference.to_string(),
            digest: manifest.digest.clone(),
            manifest,
        })
    }

    /// Small files (catalog files, manifest.yaml) of the flattened `linux/<arch>` image; paths
    /// relative, no leading '/'; missing paths are absent from the map, which is keyed by the
    /// paths as given. Bounded: refuses files over 16 MiB ([`FILE_LIMIT`]). Paths are matched
    /// as the layers spell them: symlinked directories are not followed, and a requested path
    /// that is a symlink or an unresolvable hard link is an error rather than silently absent.
    /// Layers are read from the top, and lower layers are not fetched once every path is decided.
    pub async fn read_files(
        &self,
        image: &ResolvedImage,
        arch: Arch,
        paths: &[&str],
    ) -> Result<BTreeMap<String, Vec<u8>>, UpstreamError> {
        let mut requested = Vec::with_capacity(paths.len());
        for given in paths {
            let normalised =
                paths::normalize(given.trim_start_matches('/')).map_err(|reason| UpstreamError::Invalid {
                    image: image.name(),
                    reason,
                })?;
            requested.push((normalised, given.to_string()));
        }
        if requested.is_empty() {
            return Ok(BTreeMap::new());
        }
        let layers = self.platform_layers(image, arch).await?;
        let ctx = self.layer_ctx(image);
        let _cancel = CancelOnDrop(ctx.cancelled.clone());
        let name = image.name();
        join(tokio::task::spawn_blocking(move || {
            let mut scan = files::FileScan::new(&name, requested);
            for layer in layers.iter().rev() {
                if scan.done() {
                    break;
                }
                let mut this_layer = files::LayerScan::default();
                layer::for_each_entry(&ctx, layer, |entry| scan.visit(&mut this_layer, entry))?;
                scan.end_layer(this_layer);
            }
            Ok(scan.into_found())
        }))
        .await
    }

    /// Extracts the flattened `linux/<arch>` filesystem (entries whose relative path `filter`
    /// accepts) under `dest`, streaming. Layers are applied in order with OCI whiteouts; modes
    /// are kept (not owners, times or xattrs); directories the filter rejects but that lead to
    /// accepted entries are created with mode 0755. Nothing is written outside `dest`, which
    /// should be new or empty (existing content is merged with, as a lower layer). On error the
    /// contents of `dest` are unspecified (possibly from a layer that failed its digest check):
    /// discard it.
    pub async fn extract(
        &self,
        image: &ResolvedImage,
        arch: Arch,
        dest: &Path,
        filter: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<ExtractSummary, UpstreamError> {
        let layers = self.platform_layers(image, arch).await?;
        let ctx = self.layer_ctx(image);
        let _cancel = CancelOnDrop(ctx.cancelled.clone());
        let dest = dest.to_path_buf();
        let name = image.name();
        // The filter borrows from the caller, so it cannot move to the blocking thread: that
        // thread asks for each entry through this channel and the async side answers.
        let (ask, mut questions) = mpsc::channel::<(String, oneshot::Sender<bool>)>(1);
        let work = tokio::task::spawn_blocking(move || {
            let cancelled = || UpstreamError::Invalid {
                image: name.clone(),
                reason: "extraction was cancelled".into(),
            };
            let mut accept = |path: &str| -> Result<bool, UpstreamError> {
                let (reply, answer) = oneshot::channel();
                ask.blocking_send((path.to_string(), reply))
                    .map_err(|_| cancelled())?;
                answer.blocking_recv().map_err(|_| cancelled())
            };
            let mut extractor = extract::Extractor::new(&dest, &name)?;
            for layer in &layers {
                extractor.begin_layer();
                layer::for_each_entry(&ctx, layer, |entry| extractor.apply(entry, &mut accept))?;
            }
            extractor.finish()
        });
        while let Some((path, reply)) = questions.recv().await {
            // The worker may have given up meanwhile; then nobody needs the answer.
            let _ = reply.send(filter(&path));
        }
        join(work).await
    }

    fn layer_ctx(&self, image: &ResolvedImage) -> LayerCtx {
        LayerCtx {
            source: self.source.clone(),
            repository: image.repository.clone(),
            image: image.name(),
            runtime: tokio::runtime::Handle::current(),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The `linux/<arch>` image of `image` as stored: its manifest (exact bytes), its config
    /// (exact bytes, verified against the manifest's config descriptor) and its layer
    /// descriptors, in order. Selected as [`Upstream::extract`] selects it (through an index if
    /// there is one); every layer has a filesystem media type. For callers that re-publish the
    /// image's blobs (the customised installer), which read them with [`Upstream::verified_blob`].
    pub async fn platform_image(
        &self,
        image: &ResolvedImage,
        arch: Arch,
    ) -> Result<PlatformImage, UpstreamError> {
        let found = self.platform_manifest(image, arch).await?;
        let config = match found.config_bytes {
            Some(bytes) => bytes,
            None => {
                self.read_config(&image.repository, &found.config, &found.label)
                    .await?
            }
        };
        Ok(PlatformImage {
            manifest: found.raw,
            config: Bytes::from(config),
            config_digest: found.config.digest,
            layers: found.layers,
        })
    }

    /// A blob of `repository`, streamed and checked against `digest` (and `size`, when given)
    /// while it is read: a mismatch is an `io::Error` (kind `InvalidData`, carrying a
    /// [`ContentMismatch`](crate::digest::ContentMismatch)) in place of the end of the stream,
    /// never a clean end after wrong bytes.
    pub async fn verified_blob(
        &self,
        repository: &str,
        digest: &str,
        size: Option<u64>,
    ) -> Result<BlobStream, UpstreamError> {
        let stream = self.source.blob(repository, digest).await?;
        Ok(Box::pin(VerifyingReader::new(stream, digest, size)))
    }

    /// The layers of the `linux/<arch>` image (see `platform_manifest`).
    async fn platform_layers(
        &self,
        image: &ResolvedImage,
        arch: Arch,
    ) -> Result<Vec<Descriptor>, UpstreamError> {
        Ok(self.platform_manifest(image, arch).await?.layers)
    }

    /// The manifest of the `linux/<arch>` image: through the index (OCI or Docker list) if there
    /// is one, else the manifest itself if its config is that platform (or says nothing). Layers
    /// with a media type that is not a filesystem layer are refused.
    async fn platform_manifest(
        &self,
        image: &ResolvedImage,
        arch: Arch,
    ) -> Result<PlatformManifest, UpstreamError> {
        let mut raw = image.manifest.clone();
        let mut label = image.name();
        let mut from_index = false;
        for _ in 0..MAX_NESTING {
            match manifest::parse(&raw, &label)? {
                Parsed::Index(entries) => {
                    let wanted = entries
                        .iter()
                        .find(|e| e.platform.as_ref().is_some_and(|p| is_linux(p, arch.as_str())));
                    let Some(wanted) = wanted else {
                        let available: Vec<String> = entries
                            .iter()
                            .filter_map(|e| e.platform.as_ref())
                            .filter(|p| p.os != "unknown")
                            .map(ToString::to_string)
                            .collect();
                        return Err(UpstreamError::NotFound(format!(
                            "linux/{arch} image in {label} (available platforms: {})",
                            if available.is_empty() {
                                "none".to_string()
                            } else {
                                available.join(", ")
                            }
                        )));
                    };
                    raw = self.source.manifest(&image.repository, &wanted.digest).await?;
                    label = format!("{}@{} (linux/{arch})", image.repository, wanted.digest);
                    from_index = true;
                }
                Parsed::Image { config, layers } => {
                    let config_bytes = if from_index {
                        None
                    } else {
                        let bytes = self.read_config(&image.repository, &config, &label).await?;
                        check_config_platform(&bytes, arch, &label)?;
                        Some(bytes)
                    };
                    if let Some(bad) = layers
                        .iter()
                        .find(|l| layer::compression(l.media_type.as_deref().unwrap_or_default()).is_none())
                    {
                        return Err(UpstreamError::Invalid {
                            image: label,
                            reason: format!(
                                "layer {} has unsupported media type {:?}",
                                bad.digest, bad.media_type
                            ),
                        });
                    }
                    return Ok(PlatformManifest {
                        raw,
                        label,
                        config,
                        config_bytes,
                        layers,
                    });
                }
            }
        }
        Err(UpstreamError::Invalid {
            image: label,
            reason: "image indexes nested too deeply".into(),
        })
    }

    /// The config blob of an image manifest, verified against its descriptor.
    async fn read_config(
        &self,
        repository: &str,
        config: &Descriptor,
        label: &str,
    ) -> Result<Vec<u8>, UpstreamError> {
        let stream = self.source.blob(repository, &config.digest).await?;
        read_verified(stream, &config.digest, config.size, CONFIG_LIMIT)
            .await
            .map_err(|e| match content_mismatch(&e) {
                Some(m) => UpstreamError::Invalid {
                    image: label.to_string(),
                    reason: format!("config: {m}"),
                },
                None => UpstreamError::Unavailable {
                    source_name: self.source.describe(),
                    message: format!("reading the config of {label}: {e}"),
                },
            })
    }
}

/// The `linux/<arch>` image of a resolved reference, as [`Upstream::platform_image`] returns it.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// The platform manifest: the top-level one, or the index entry for `linux/<arch>`.
    pub manifest: RawManifest,
    /// The exact config bytes (digest verified).
    pub config: Bytes,
    /// `sha256:<hex>` of [`PlatformImage::config`].
    pub config_digest: String,
    /// The layer descriptors, in manifest order (bottom first).
    pub layers: Vec<Descriptor>,
}

/// What [`Upstream::platform_manifest`] found.
struct PlatformManifest {
    raw: RawManifest,
    /// `repository@digest[ (linux/<arch>)]`, for messages.
    label: String,
    config: Descriptor,
    /// The config, when it was read to check the platform (a manifest not chosen by an index).
    config_bytes: Option<Vec<u8>>,
    layers: Vec<Descriptor>,
}

/// A single-platform manifest is used for `linux/<arch>` only if its config does not say
/// otherwise.
fn check_config_platform(config: &[u8], arch: Arch, label: &str) -> Result<(), UpstreamError> {
    // Non-image configs (artifacts) carry no platform; the layer check decides about them.
    let parsed: ImageConfig = serde_json::from_slice(config).unwrap_or_default();
    let os = parsed.os.unwrap_or_default();
    let architecture = parsed.architecture.unwrap_or_default();
    if os.is_empty() && architecture.is_empty() {
        return Ok(());
    }
    if os == "linux" && architecture == arch.as_str() {
        return Ok(());
    }
    Err(UpstreamError::NotFound(format!(
        "linux/{arch} image in {label} (available platforms: {os}/{architecture})"
    )))
}

/// Waits for a blocking task, re-raising its panic (a bug) rather than hiding it in an error.
async fn join<T>(task: tokio::task::JoinHandle<Result<T, UpstreamError>>) -> Result<T, UpstreamError> {
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(UpstreamError::Unavailable {
            source_name: "blocking task".into(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use async_trait::async_trait;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::digest::sha256_digest;
    use manifest::{DOCKER_LIST, DOCKER_MANIFEST};

    /// One repository in memory; `corrupt` serves other bytes for a blob than it is named for.
    #[derive(Debug, Default)]
    struct Memory {
        manifests: BTreeMap<String, (String, Vec<u8>)>,
        blobs: BTreeMap<String, Vec<u8>>,
        corrupt: BTreeMap<String, Vec<u8>>,
    }

    impl Memory {
        fn add_blob(&mut self, bytes: &[u8]) -> (String, usize) {
            let digest = sha256_digest(bytes);
            self.blobs.insert(digest.clone(), bytes.to_vec());
            (digest, bytes.len())
        }

        fn add_manifest(&mut self, reference: &str, media_type: &str, json: &str) -> String {
            let digest = sha256_digest(json.as_bytes());
            for key in [reference.to_owned(), digest.clone()] {
                self.manifests
                    .insert(key, (media_type.to_owned(), json.as_bytes().to_vec()));
            }
            digest
        }
    }

    #[async_trait]
    impl OciSource for Memory {
        async fn list_tags(&self, _: &str) -> Result<Vec<String>, UpstreamError> {
            Ok(Vec::new())
        }
        async fn manifest(&self, _: &str, reference: &str) -> Result<RawManifest, UpstreamError> {
            let (media_type, bytes) = self
                .manifests
                .get(reference)
                .ok_or_else(|| UpstreamError::NotFound(reference.to_owned()))?;
            Ok(RawManifest {
                digest: sha256_digest(bytes),
                media_type: media_type.clone(),
                bytes: Bytes::from(bytes.clone()),
            })
        }
        async fn blob(&self, _: &str, digest: &str) -> Result<BlobStream, UpstreamError> {
            let bytes = self
                .corrupt
                .get(digest)
                .or_else(|| self.blobs.get(digest))
                .ok_or_else(|| UpstreamError::NotFound(digest.to_owned()))?;
            Ok(Box::pin(std::io::Cursor::new(bytes.clone())))
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    /// A Docker-style index with one linux/amd64 image of two layers.
    fn fixture() -> (Memory, String, String) {
        let mut m = Memory::default();
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/x"]},"rootfs":{"type":"layers","diff_ids":["sha256:a","sha256:b"]}}"#;
        let (config_digest, config_size) = m.add_blob(config);
        let (l1, s1) = m.add_blob(b"layer one");
        let (l2, s2) = m.add_blob(b"layer two");
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{l1}","size":{s1}}},{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{l2}","size":{s2}}}]}}"#
        );
        let manifest_digest = m.add_manifest("amd64-only", DOCKER_MANIFEST, &manifest);
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{manifest_digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            manifest.len()
        );
        m.add_manifest("v1", DOCKER_LIST, &index);
        (m, manifest_digest, config_digest)
    }

    fn upstream(m: Memory) -> Upstream {
        Upstream::new(Arc::new(m), UpstreamConfig::new(Verification::Disabled))
    }

    #[tokio::test]
    async fn platform_image_through_an_index_and_direct() {
        let (m, manifest_digest, config_digest) = fixture();
        let config = m.blobs[&config_digest].clone();
        let up = upstream(m);
        for reference in ["v1", "amd64-only"] {
            let image = up.resolve("r", reference).await.unwrap();
            let platform = up.platform_image(&image, Arch::Amd64).await.unwrap();
            assert_eq!(platform.manifest.digest, manifest_digest);
            assert_eq!(platform.manifest.media_type, DOCKER_MANIFEST);
            assert_eq!(platform.config_digest, config_digest);
            assert_eq!(platform.config, config);
            assert_eq!(platform.layers.len(), 2);
            let err = up.platform_image(&image, Arch::Arm64).await.unwrap_err();
            assert!(matches!(err, UpstreamError::NotFound(_)), "{err:?}");
        }
    }

    #[tokio::test]
    async fn a_corrupt_config_is_refused() {
        let (mut m, _, config_digest) = fixture();
        m.corrupt.insert(config_digest, b"{}".to_vec());
        let up = upstream(m);
        let image = up.resolve("r", "v1").await.unwrap();
        let err = up.platform_image(&image, Arch::Amd64).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Invalid { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn verified_blobs_fail_instead_of_ending_on_wrong_bytes() {
        let (mut m, _, _) = fixture();
        let (digest, size) = m.add_blob(b"layer one");
        let up = upstream(m);
        let mut good = Vec::new();
        up.verified_blob("r", &digest, Some(size as u64))
            .await
            .unwrap()
            .read_to_end(&mut good)
            .await
            .unwrap();
        assert_eq!(good, b"layer one");

        let (mut m, _, _) = fixture();
        m.corrupt.insert(digest.clone(), b"layer 0ne".to_vec());
        let up = upstream(m);
        let mut out = Vec::new();
        let err = up
            .verified_blob("r", &digest, Some(size as u64))
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert!(content_mismatch(&err).is_some(), "{err:?}");
    }
}
