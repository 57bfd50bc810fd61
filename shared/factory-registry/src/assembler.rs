//! The builder side of a registry job: [`RegistryAssembler`] builds the installer image of each
//! architecture, publishes it, the index and the signature, and outputs the [`TagRecord`];
//! [`FactoryAssembler`] is what builders run, dispatching registry jobs to it and every other
//! spec to the release assembler.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use factory_assets::installer::{build_image, InstallerImage};
use factory_assets::ReleaseAssembler;
use factory_pipeline::{AssembleError, AssembledMeta, Assembler};
use factory_signing::SigningKey;
use factory_store::ContentStore;
use factory_upstream::{BlobStream, Upstream};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::job::{is_registry_job, RegistryJob};
use crate::publish::{publish_image, publish_tag, LayerBlob, LayerSource, PlatformImage};
use crate::TagRecord;

/// The file name of a registry job's asset (the tag record).
pub const TAG_RECORD_FILE_NAME: &str = "installer-index.json";
/// The content type of the tag record.
pub const TAG_RECORD_CONTENT_TYPE: &str = "application/json";

/// Runs registry jobs (see [`crate::job`]).
#[derive(Debug, Clone)]
pub struct RegistryAssembler {
    upstream: Arc<Upstream>,
    store: Arc<dyn ContentStore>,
    key: Arc<SigningKey>,
}

impl RegistryAssembler {
    pub fn new(upstream: Arc<Upstream>, store: Arc<dyn ContentStore>, key: Arc<SigningKey>) -> Self {
        Self { upstream, store, key }
    }
}

/// The installer builder's layers as a [`LayerSource`].
struct InstallerLayers<'a> {
    image: &'a InstallerImage,
    upstream: &'a Upstream,
}

#[async_trait]
impl LayerSource for InstallerLayers<'_> {
    async fn open_layer(&self, index: usize) -> Result<BlobStream, AssembleError> {
        self.image.open_layer(self.upstream, index).await
    }
}

#[async_trait]
impl Assembler for RegistryAssembler {
    async fn assemble(
        &self,
        spec: &serde_json::Value,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<AssembledMeta, AssembleError> {
        let job = RegistryJob::parse(spec)?;
        let mut manifests = Vec::with_capacity(job.platforms.len());
        let mut input_digests = BTreeMap::new();
        // One architecture at a time: each image holds a scratch layer on disk until published.
        for platform in &job.platforms {
            let arch = platform.arch;
            tracing::info!(identity = %job.identity, tag = %job.tag, %arch, installer = %platform.cache_key, "building the installer image");
            let image = build_image(&self.upstream, &platform.spec).await?;
            if image.arch != arch {
                return Err(AssembleError::User(format!(
                    "invalid registry job: the {arch} spec builds a {} image",
                    image.arch
                )));
            }
            let layers = image
                .layers
                .iter()
                .map(|l| LayerBlob::new(&l.media_type, &l.digest, l.size))
                .collect();
            let source = InstallerLayers {
                image: &image,
                upstream: &self.upstream,
            };
            let published = PlatformImage {
                arch,
                manifest: &image.manifest,
                manifest_digest: &image.manifest_digest,
                config: &image.config,
                config_digest: &image.config_digest,
                layers,
                source: &source,
            };
            manifests.push(publish_image(self.store.as_ref(), &published).await?);
            input_digests.extend(platform_inputs(arch.as_str(), &platform.spec));
        }
        let record = publish_tag(self.store.as_ref(), &self.key, &job.identity, &job.tag, manifests).await?;
        write_record(&record, out).await?;
        tracing::info!(identity = %record.identity, tag = %record.tag, digest = %record.digest, "installer index published");
        Ok(AssembledMeta {
            content_type: TAG_RECORD_CONTENT_TYPE.to_owned(),
            file_name: TAG_RECORD_FILE_NAME.to_owned(),
            input_digests,
        })
    }
}

/// Writes the tag record, the asset's bytes.
pub async fn write_record(
    record: &TagRecord,
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), AssembleError> {
    let bytes = serde_json::to_vec(record)
        .map_err(|e| AssembleError::Retryable(format!("encoding the tag record: {e}")))?;
    out.write_all(&bytes)
        .await
        .map_err(|e| AssembleError::Retryable(format!("writing the tag record: {e}")))?;
    out.flush()
        .await
        .map_err(|e| AssembleError::Retryable(format!("flushing the tag record: {e}")))
}

/// A platform spec's `inputs` (name → digest), each name prefixed `<arch>/` so the two
/// architectures' inputs stay apart in the tag's index record.
fn platform_inputs(arch: &str, spec: &serde_json::Value) -> BTreeMap<String, String> {
    spec.get("inputs")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((format!("{arch}/{name}"), value.as_str()?.to_owned())))
        .collect()
}

/// What builders run: registry jobs (specs with a `registry` key) go to the
/// [`RegistryAssembler`], every other spec to the [`ReleaseAssembler`]. One queue and one builder
/// serve both, so an installer index and the assets it is made of share claims and limits.
#[derive(Debug, Clone)]
pub struct FactoryAssembler {
    registry: RegistryAssembler,
    release: ReleaseAssembler,
}

impl FactoryAssembler {
    pub fn new(upstream: Arc<Upstream>, store: Arc<dyn ContentStore>, key: Arc<SigningKey>) -> Self {
        Self {
            release: ReleaseAssembler::new(upstream.clone()),
            registry: RegistryAssembler::new(upstream, store, key),
        }
    }
}

#[async_trait]
impl Assembler for FactoryAssembler {
    async fn assemble(
        &self,
        spec: &serde_json::Value,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<AssembledMeta, AssembleError> {
        if is_registry_job(spec) {
            self.registry.assemble(spec, out).await
        } else {
            self.release.assemble(spec, out).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_prefixed_by_arch() {
        let spec = json!({"inputs": {"imager": "sha256:aa", "base-installer": "sha256:bb", "odd": 1}});
        let inputs = platform_inputs("arm64", &spec);
        assert_eq!(
            inputs,
            BTreeMap::from([
                ("arm64/base-installer".to_owned(), "sha256:bb".to_owned()),
                ("arm64/imager".to_owned(), "sha256:aa".to_owned()),
            ])
        );
        assert!(platform_inputs("amd64", &json!({})).is_empty());
        assert!(factory_pipeline::keys::validate_file_name(TAG_RECORD_FILE_NAME).is_ok());
    }
}
