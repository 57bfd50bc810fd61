//! The request side: reads what registry builds published, and verifies it before it is served.

use std::sync::Arc;

use bytes::Bytes;
use factory_store::{ContentStore, ObjectMeta};
use factory_upstream::digest::{sha256_digest, sha256_hex, verify_bytes};
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;

use crate::cosign::{verify_payload, SIGNATURE_ANNOTATION};
use crate::keys::{blob_key, referrer_of_record_key, referrers_prefix};
use crate::media;
use crate::oci::{Descriptor, ImageIndex, ImageManifest, MediaTypeProbe};
use crate::{RegistryError, TagRecord};

/// Largest manifest or index read into memory (what common registries accept).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;
/// Largest signature payload read (a simple-signing payload is a few hundred bytes).
const MAX_PAYLOAD_SIZE: u64 = 64 * 1024;
/// Largest tag record read.
const MAX_TAG_RECORD_SIZE: u64 = 64 * 1024;
/// Largest referrer record read (one descriptor).
const MAX_REFERRER_RECORD_SIZE: u64 = 64 * 1024;

/// A manifest or index as stored: exact bytes (checked against `digest`) and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Bytes,
}

/// Reads and verifies the registry's objects.
#[derive(Debug, Clone)]
pub struct RegistryReader {
    store: Arc<dyn ContentStore>,
    verifying_key: VerifyingKey,
}

impl RegistryReader {
    pub fn new(store: Arc<dyn ContentStore>, verifying_key: VerifyingKey) -> Self {
        Self { store, verifying_key }
    }

    /// A reader verifying with the public key PEM the factory publishes (`PUBLIC KEY`, PKIX).
    pub fn from_public_key_pem(store: Arc<dyn ContentStore>, pem: &str) -> Result<Self, RegistryError> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| RegistryError::Invalid(format!("public key: {e}")))?;
        Ok(Self::new(store, key))
    }

    pub fn store(&self) -> &Arc<dyn ContentStore> {
        &self.store
    }

    /// The tag record a registry job published as its asset (`Published::object_key`). The asset
    /// key names the sha256 of its bytes; they are checked against it.
    pub async fn tag_record(&self, object_key: &str) -> Result<TagRecord, RegistryError> {
        let Some((_, bytes)) = self.store.get(object_key).await? else {
            return Err(RegistryError::Corrupt(format!(
                "tag record {object_key} is missing"
            )));
        };
        if bytes.len() as u64 > MAX_TAG_RECORD_SIZE {
            return Err(RegistryError::Corrupt(format!(
                "tag record {object_key} is too large"
            )));
        }
        // assets/<cache key>/<sha256 hex>/<file name>
        if let Some(hex) = object_key.split('/').nth(2) {
            let expected = format!("sha256:{hex}");
            if sha256_hex(&expected).is_some() && sha256_digest(&bytes) != expected {
                return Err(RegistryError::Corrupt(format!(
                    "tag record {object_key} does not match its digest"
                )));
            }
        }
        let record: TagRecord = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Corrupt(format!("tag record {object_key}: {e}")))?;
        if sha256_hex(&record.digest).is_none() || sha256_hex(&record.signature).is_none() {
            return Err(RegistryError::Corrupt(format!(
                "tag record {object_key} has malformed digests"
            )));
        }
        Ok(record)
    }

    /// The manifest or index with this digest; `None` when absent or when the blob is not a
    /// manifest (a layer, a config, a signature payload), so `/manifests/` never serves those.
    /// The bytes are re-hashed: a mismatch is [`RegistryError::Corrupt`]. The media type is the
    /// stored object's content type when that is a manifest type, else the JSON `mediaType`.
    pub async fn manifest(&self, digest: &str) -> Result<Option<StoredManifest>, RegistryError> {
        let key = blob_key(digest).ok_or_else(|| RegistryError::Invalid(format!("digest {digest:?}")))?;
        // HEAD first: a layer may be hundreds of MiB and must not be read to find that out.
        let Some(meta) = self.store.head(&key).await? else {
            return Ok(None);
        };
        if meta.size > MAX_MANIFEST_SIZE || meta.content_type.as_deref().is_some_and(is_other_blob_type) {
            return Ok(None);
        }
        let Some((meta, bytes)) = self.store.get(&key).await? else {
            return Ok(None);
        };
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Ok(None);
        }
        verify_bytes(digest, &bytes).map_err(|e| RegistryError::Corrupt(format!("{key}: {e}")))?;
        let media_type = meta
            .content_type
            .filter(|ct| media::is_manifest(ct))
            .or_else(|| manifest_media_type(&bytes));
        Ok(media_type.map(|media_type| StoredManifest {
            media_type,
            digest: digest.to_owned(),
            bytes,
        }))
    }

    /// What the store knows about the blob with this digest (`None` when absent).
    pub async fn blob(&self, digest: &str) -> Result<Option<ObjectMeta>, RegistryError> {
        let key = blob_key(digest).ok_or_else(|| RegistryError::Invalid(format!("digest {digest:?}")))?;
        Ok(self.store.head(&key).await?)
    }

    /// Verifies a tag as `cosign verify --key <factory key> <identity>@<digest>` would, plus
    /// what the store could have altered: the index is present and hashes to `record.digest`
    /// with `record.size` bytes; the signature manifest `record.signature` is present and intact;
    /// one of its simple-signing layers has a payload blob (digest-checked) whose signature
    /// verifies with the factory key and which signs `record.digest` as `record.identity`.
    ///
    /// Fails with [`RegistryError::Signature`] for anything wrong with the content (a corrupt
    /// object included: the remedy is the same, a rebuild) and [`RegistryError::Store`] when the
    /// store could not answer. On success, the verified index: what the tag serves, so that the
    /// caller does not read it again.
    pub async fn verify(&self, record: &TagRecord) -> Result<StoredManifest, RegistryError> {
        let index = self
            .manifest(&record.digest)
            .await
            .map_err(content_to_signature)?
            .ok_or_else(|| RegistryError::Signature(format!("index {} is missing", record.digest)))?;
        if !media::is_index(&index.media_type) || index.bytes.len() as u64 != record.size {
            return Err(RegistryError::Signature(format!(
                "{} is not the {}-byte index the tag names",
                record.digest, record.size
            )));
        }
        let signature = self
            .manifest(&record.signature)
            .await
            .map_err(content_to_signature)?
            .ok_or_else(|| {
                RegistryError::Signature(format!("signature manifest {} is missing", record.signature))
            })?;
        self.check_signature(&signature.bytes, Some(&record.identity), &record.digest)
            .await?
            .map_err(RegistryError::Signature)?;
        Ok(index)
    }

    /// The cosign signature manifest of `subject_digest` (what the tag `sha256-<hex>.sig`
    /// resolves to), found through the subject's referrer records. Of several, the first one
    /// signed by the factory key (older ones may be signed by a rotated-out key), else the first.
    pub async fn signature_manifest(
        &self,
        subject_digest: &str,
    ) -> Result<Option<StoredManifest>, RegistryError> {
        let prefix = referrers_prefix(subject_digest)
            .ok_or_else(|| RegistryError::Invalid(format!("digest {subject_digest:?}")))?;
        let mut fallback = None;
        for key in self.store.list(&prefix).await? {
            let Some(referrer) = referrer_of_record_key(&key) else {
                continue;
            };
            let stored = match self.manifest(&referrer).await {
                Ok(Some(stored)) => stored,
                Ok(None) => continue,
                Err(RegistryError::Corrupt(reason)) => {
                    tracing::warn!(%referrer, %reason, "skipping a corrupt referrer");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&stored.bytes) else {
                continue;
            };
            let is_signature = !manifest.layers.is_empty()
                && manifest
                    .layers
                    .iter()
                    .all(|l| l.media_type == media::COSIGN_SIMPLE_SIGNING)
                && manifest
                    .subject
                    .as_ref()
                    .is_none_or(|s| s.digest == subject_digest);
            if !is_signature {
                continue;
            }
            if self
                .check_signature(&stored.bytes, None, subject_digest)
                .await?
                .is_ok()
            {
                return Ok(Some(stored));
            }
            fallback.get_or_insert(stored);
        }
        Ok(fallback)
    }

    /// The OCI 1.1 referrers response for `subject_digest`: an image index of the referrers'
    /// descriptors (with `artifactType` and annotations), only those of `artifact_type` when
    /// given; empty when there are none.
    pub async fn referrers(
        &self,
        subject_digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, RegistryError> {
        let prefix = referrers_prefix(subject_digest)
            .ok_or_else(|| RegistryError::Invalid(format!("digest {subject_digest:?}")))?;
        let mut manifests = Vec::new();
        for key in self.store.list(&prefix).await? {
            let Some(referrer) = referrer_of_record_key(&key) else {
                continue;
            };
            let Some((_, bytes)) = self.store.get(&key).await? else {
                continue;
            };
            let descriptor = (bytes.len() as u64 <= MAX_REFERRER_RECORD_SIZE)
                .then(|| serde_json::from_slice::<Descriptor>(&bytes).ok())
                .flatten()
                .filter(|d| d.digest == referrer);
            let Some(descriptor) = descriptor else {
                tracing::warn!(key, "skipping a malformed referrer record");
                continue;
            };
            if artifact_type.is_none_or(|wanted| descriptor.artifact_type.as_deref() == Some(wanted)) {
                manifests.push(descriptor);
            }
        }
        Ok(Bytes::from(ImageIndex::new(manifests).to_bytes()))
    }

    /// Checks a signature manifest's simple-signing layers; `Ok(Err(reason))` when none
    /// verifies, `Err` only when the store fails.
    async fn check_signature(
        &self,
        manifest: &[u8],
        identity: Option<&str>,
        digest: &str,
    ) -> Result<Result<(), String>, RegistryError> {
        let manifest: ImageManifest = match serde_json::from_slice(manifest) {
            Ok(m) => m,
            Err(e) => return Ok(Err(format!("signature manifest: {e}"))),
        };
        let mut reason = "no simple-signing layer".to_owned();
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == media::COSIGN_SIMPLE_SIGNING)
        {
            let Some(signature) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            else {
                reason = format!("layer {} has no signature annotation", layer.digest);
                continue;
            };
            let payload = match self.payload(layer).await? {
                Ok(payload) => payload,
                Err(why) => {
                    reason = why;
                    continue;
                }
            };
            match verify_payload(&self.verifying_key, &payload, signature, identity, digest) {
                Ok(()) => return Ok(Ok(())),
                Err(why) => reason = why,
            }
        }
        Ok(Err(reason))
    }

    /// A signature payload blob, checked against its descriptor.
    async fn payload(&self, layer: &Descriptor) -> Result<Result<Bytes, String>, RegistryError> {
        if layer.size > MAX_PAYLOAD_SIZE {
            return Ok(Err(format!("payload {} is too large", layer.digest)));
        }
        let Some(key) = blob_key(&layer.digest) else {
            return Ok(Err(format!("payload digest {:?}", layer.digest)));
        };
        let Some((_, bytes)) = self.store.get(&key).await? else {
            return Ok(Err(format!("payload {} is missing", layer.digest)));
        };
        if bytes.len() as u64 != layer.size {
            return Ok(Err(format!("payload {} has the wrong size", layer.digest)));
        }
        Ok(verify_bytes(&layer.digest, &bytes)
            .map(|()| bytes)
            .map_err(|e| format!("payload: {e}")))
    }
}

/// A content type that names a blob which is not a manifest (layers, configs, payloads). Generic
/// JSON or octet-stream types say nothing, so such objects are looked into.
fn is_other_blob_type(content_type: &str) -> bool {
    !content_type.is_empty()
        && !media::is_manifest(content_type)
        && !matches!(content_type, "application/json" | "application/octet-stream")
}

/// The `mediaType` field of manifest bytes, if it names a manifest type.
fn manifest_media_type(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<MediaTypeProbe>(bytes)
        .ok()
        .and_then(|p| p.media_type)
        .filter(|m| media::is_manifest(m))
}

/// Inside [`RegistryReader::verify`], corrupt or malformed content is a failed verification.
fn content_to_signature(e: RegistryError) -> RegistryError {
    match e {
        RegistryError::Corrupt(reason) | RegistryError::Invalid(reason) => RegistryError::Signature(reason),
        other => other,
    }
}
