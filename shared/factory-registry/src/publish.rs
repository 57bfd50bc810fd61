//! The publication half of a registry build, separate from building the installer images so that
//! it can be exercised without an upstream: store one architecture's image
//! ([`publish_image`]), then the index over all of them with its signature ([`publish_tag`]).
//!
//! Every blob goes to its content-addressed key ([`crate::keys::blob_key`]); since the key names
//! the bytes, concurrent builders of the same tag write identical objects and any order of their
//! writes is harmless. Within one image, layers and config are stored before the manifest naming
//! them, and within a tag the images and the index before the signature: whatever a reader can
//! reach is complete. The tag itself (the pipeline asset) is published after all of this.

use bytes::Bytes;
use factory_core::arch::Arch;
use factory_pipeline::AssembleError;
use factory_signing::SigningKey;
use factory_store::{ContentStore, PutCondition};
use factory_upstream::digest::{verify_bytes, VerifyingReader};
use factory_upstream::BlobStream;

use crate::cosign::SignatureImage;
use crate::keys::{blob_key, referrer_record_key};
use crate::media;
use crate::oci::{Descriptor, ImageIndex, ImageManifest, Platform};
use crate::TagRecord;

/// One layer as the image manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl LayerBlob {
    pub fn new(media_type: &str, digest: &str, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size,
        }
    }
}

/// Where the bytes of an image's layers come from (the installer builder, or a test).
#[async_trait::async_trait]
pub trait LayerSource: Send + Sync {
    /// The bytes of layer `index` (in manifest order). They are checked against the layer's
    /// digest and size while they are stored, whatever the source already checks.
    async fn open_layer(&self, index: usize) -> Result<BlobStream, AssembleError>;
}

/// One architecture's built image: exact manifest and config bytes, and its layers.
pub struct PlatformImage<'a> {
    pub arch: Arch,
    pub manifest: &'a [u8],
    pub manifest_digest: &'a str,
    pub config: &'a [u8],
    pub config_digest: &'a str,
    pub layers: Vec<LayerBlob>,
    pub source: &'a dyn LayerSource,
}

impl std::fmt::Debug for PlatformImage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformImage")
            .field("arch", &self.arch)
            .field("manifest_digest", &self.manifest_digest)
            .field("config_digest", &self.config_digest)
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

/// Stores one image (layers, config, then manifest) and returns its index entry (platform
/// `linux/<arch>`). Layers already stored with the right size are not uploaded again: their key
/// names their digest, and the size check catches a truncated leftover.
pub async fn publish_image(
    store: &dyn ContentStore,
    image: &PlatformImage<'_>,
) -> Result<Descriptor, AssembleError> {
    let arch = image.arch;
    verify_bytes(image.config_digest, image.config)
        .map_err(|e| AssembleError::Retryable(format!("{arch} image config: {e}")))?;
    verify_bytes(image.manifest_digest, image.manifest)
        .map_err(|e| AssembleError::Retryable(format!("{arch} image manifest: {e}")))?;
    let manifest: ImageManifest = serde_json::from_slice(image.manifest).map_err(|e| {
        AssembleError::Retryable(format!("{arch} image manifest is not an OCI manifest: {e}"))
    })?;
    let described: Vec<LayerBlob> = manifest
        .layers
        .iter()
        .map(|l| LayerBlob::new(&l.media_type, &l.digest, l.size))
        .collect();
    if manifest.config.digest != image.config_digest || described != image.layers {
        return Err(AssembleError::Retryable(format!(
            "{arch} image manifest {} does not describe the built config and layers",
            image.manifest_digest
        )));
    }
    for (index, layer) in image.layers.iter().enumerate() {
        publish_layer(store, image, index, layer).await?;
    }
    put_blob(store, image.config, &manifest.config.media_type).await?;
    let media_type = manifest
        .media_type
        .unwrap_or_else(|| media::OCI_MANIFEST.to_owned());
    put_blob(store, image.manifest, &media_type).await?;
    tracing::info!(%arch, manifest = image.manifest_digest, layers = image.layers.len(), "installer image stored");
    Ok(Descriptor {
        platform: Some(Platform {
            architecture: arch.as_str().to_owned(),
            os: "linux".to_owned(),
        }),
        ..Descriptor::of(&media_type, image.manifest)
    })
}

async fn publish_layer(
    store: &dyn ContentStore,
    image: &PlatformImage<'_>,
    index: usize,
    layer: &LayerBlob,
) -> Result<(), AssembleError> {
    let key = key_of(&layer.digest)?;
    let existing = store.head(&key).await.map_err(|e| store_error("layer", e))?;
    if existing.is_some_and(|meta| meta.size == layer.size) {
        tracing::debug!(digest = %layer.digest, "layer already stored");
        return Ok(());
    }
    let stream = image.source.open_layer(index).await?;
    // A mismatch fails the read before EOF, so the store commits nothing under the digest's key.
    let verified = VerifyingReader::new(stream, &layer.digest, Some(layer.size));
    let written = store
        .put_stream(&key, Box::new(verified), Some(&layer.media_type))
        .await
        .map_err(|e| store_error("layer", e))?;
    if written.size != layer.size {
        return Err(AssembleError::Retryable(format!(
            "stored {} bytes of layer {}, expected {}",
            written.size, layer.digest, layer.size
        )));
    }
    tracing::info!(arch = %image.arch, digest = %layer.digest, size = layer.size, "layer stored");
    Ok(())
}

/// Stores the index over `manifests` (in order), signs its digest as `identity`, stores the
/// signature image and its referrer record, and returns the tag record to publish as
/// `identity:tag`.
pub async fn publish_tag(
    store: &dyn ContentStore,
    key: &SigningKey,
    identity: &str,
    tag: &str,
    manifests: Vec<Descriptor>,
) -> Result<TagRecord, AssembleError> {
    let index = ImageIndex::new(manifests).to_bytes();
    let subject = Descriptor::of(media::OCI_INDEX, &index);
    put_blob(store, &index, media::OCI_INDEX).await?;

    let signature = SignatureImage::sign(key, identity, &subject);
    put_blob(store, &signature.payload, media::COSIGN_SIMPLE_SIGNING).await?;
    put_blob(store, &signature.config, media::OCI_CONFIG).await?;
    put_blob(store, &signature.manifest, media::OCI_MANIFEST).await?;
    let record_key = referrer_record_key(&subject.digest, &signature.manifest_digest)
        .ok_or_else(|| AssembleError::Retryable("referrer record key".to_owned()))?;
    let record = serde_json::to_vec(&signature.referrer())
        .map_err(|e| AssembleError::Retryable(format!("encoding the referrer record: {e}")))?;
    store
        .put(
            &record_key,
            Bytes::from(record),
            Some("application/json"),
            PutCondition::Overwrite,
        )
        .await
        .map_err(|e| store_error("referrer record", e))?;
    tracing::info!(identity, tag, index = %subject.digest, signature = %signature.manifest_digest, "index stored and signed");
    Ok(TagRecord {
        identity: identity.to_owned(),
        tag: tag.to_owned(),
        media_type: subject.media_type,
        digest: subject.digest,
        size: subject.size,
        signature: signature.manifest_digest,
    })
}

/// Stores small bytes under their digest. Overwriting is harmless (same key, same bytes) and
/// repairs an object that was altered in the store.
async fn put_blob(store: &dyn ContentStore, bytes: &[u8], media_type: &str) -> Result<(), AssembleError> {
    let digest = factory_upstream::digest::sha256_digest(bytes);
    let key = key_of(&digest)?;
    store
        .put(
            &key,
            Bytes::copy_from_slice(bytes),
            Some(media_type),
            PutCondition::Overwrite,
        )
        .await
        .map_err(|e| store_error(media_type, e))?;
    Ok(())
}

fn key_of(digest: &str) -> Result<String, AssembleError> {
    blob_key(digest).ok_or_else(|| AssembleError::Retryable(format!("unsupported digest {digest:?}")))
}

fn store_error(what: &str, e: factory_store::StoreError) -> AssembleError {
    AssembleError::Retryable(format!("storing {what}: {e}"))
}
