//! The publication half of a registry build against the filesystem store, read back and verified
//! by the request side, without an upstream: two hand-made "installer" images stand in for the
//! installer builder's.

// Panicking is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use factory_core::arch::Arch;
use factory_pipeline::AssembleError;
use factory_registry::assembler::write_record;
use factory_registry::cosign::SIGNATURE_ANNOTATION;
use factory_registry::keys::{blob_key, referrer_record_key};
use factory_registry::media;
use factory_registry::oci::{Descriptor, ImageIndex, ImageManifest};
use factory_registry::publish::{publish_image, publish_tag, LayerBlob, LayerSource, PlatformImage};
use factory_registry::{RegistryError, RegistryReader, StoredManifest, TagRecord};
use factory_signing::SigningKey;
use factory_store::fs::FsStore;
use factory_store::{ContentStore, PutCondition};
use factory_upstream::digest::sha256_digest;
use factory_upstream::BlobStream;
use serde_json::json;

const IDENTITY: &str =
    "factory.test:8080/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
const TAG: &str = "v1.12.1";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A built image held in memory.
struct FakeImage {
    arch: Arch,
    layers: Vec<Vec<u8>>,
    config: Vec<u8>,
    manifest: Vec<u8>,
    /// Layer bytes served instead of the real ones (a corrupt source).
    served: Option<Vec<Vec<u8>>>,
    opened: AtomicUsize,
}

impl FakeImage {
    fn new(arch: Arch) -> Self {
        // One layer shared by both architectures (as a base layer could be), one of each's own.
        let layers = vec![
            b"shared base layer".repeat(1000),
            format!("artifacts of {arch}").into_bytes().repeat(3000),
        ];
        let config = json!({"architecture": arch.as_str(), "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
            .to_string()
            .into_bytes();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::of(media::OCI_CONFIG, &config),
            layers: layers.iter().map(|l| Descriptor::of(LAYER, l)).collect(),
            subject: None,
            annotations: None,
        }
        .to_bytes();
        FakeImage {
            arch,
            layers,
            config,
            manifest,
            served: None,
            opened: AtomicUsize::new(0),
        }
    }

    fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    fn config_digest(&self) -> String {
        sha256_digest(&self.config)
    }

    fn blobs(&self) -> Vec<LayerBlob> {
        self.layers
            .iter()
            .map(|l| LayerBlob::new(LAYER, &sha256_digest(l), l.len() as u64))
            .collect()
    }
}

#[async_trait::async_trait]
impl LayerSource for FakeImage {
    async fn open_layer(&self, index: usize) -> Result<BlobStream, AssembleError> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let layers = self.served.as_ref().unwrap_or(&self.layers);
        let bytes = layers
            .get(index)
            .cloned()
            .ok_or_else(|| AssembleError::User(format!("no layer {index}")))?;
        Ok(Box::pin(std::io::Cursor::new(bytes)))
    }
}

async fn publish_one(store: &dyn ContentStore, image: &FakeImage) -> Result<Descriptor, AssembleError> {
    let manifest_digest = image.manifest_digest();
    let config_digest = image.config_digest();
    publish_image(
        store,
        &PlatformImage {
            arch: image.arch,
            manifest: &image.manifest,
            manifest_digest: &manifest_digest,
            config: &image.config,
            config_digest: &config_digest,
            layers: image.blobs(),
            source: image,
        },
    )
    .await
}

/// Publishes both images and the tag; returns the record and the published asset's key.
async fn publish_all(
    store: &Arc<dyn ContentStore>,
    key: &SigningKey,
    images: &[FakeImage],
) -> (TagRecord, String) {
    let mut manifests = Vec::new();
    for image in images {
        manifests.push(publish_one(store.as_ref(), image).await.unwrap());
    }
    let record = publish_tag(store.as_ref(), key, IDENTITY, TAG, manifests)
        .await
        .unwrap();
    // What the pipeline does with the assembler's output: store it content-addressed.
    let mut out = Vec::new();
    write_record(&record, &mut out).await.unwrap();
    let hex = sha256_digest(&out).trim_start_matches("sha256:").to_owned();
    let object_key = format!("assets/{}/{hex}/installer-index.json", "a".repeat(64));
    store
        .put(
            &object_key,
            Bytes::from(out),
            Some("application/json"),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    (record, object_key)
}

/// The signature manifest `reader` chooses for `digest`, which must have one.
async fn signature_manifest(reader: &RegistryReader, digest: &str) -> StoredManifest {
    reader.signature_manifest(digest).await.unwrap().unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn ContentStore>,
    key: SigningKey,
    reader: RegistryReader,
    images: Vec<FakeImage>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ContentStore> = Arc::new(FsStore::new(dir.path()).unwrap());
    let key = SigningKey::generate();
    let reader = RegistryReader::from_public_key_pem(store.clone(), &key.public_key_pem()).unwrap();
    Fixture {
        _dir: dir,
        store,
        key,
        reader,
        images: Arch::ALL.iter().map(|&a| FakeImage::new(a)).collect(),
    }
}

#[tokio::test]
async fn published_tag_reads_back_and_verifies() {
    let f = fixture();
    let (record, object_key) = publish_all(&f.store, &f.key, &f.images).await;
    assert_eq!(record.identity, IDENTITY);
    assert_eq!(record.tag, TAG);
    assert_eq!(record.media_type, media::OCI_INDEX);
    assert_eq!(f.reader.tag_record(&object_key).await.unwrap(), record);
    f.reader.verify(&record).await.unwrap();

    // The index: both platforms, in order, pointing at the stored manifests.
    let index = f.reader.manifest(&record.digest).await.unwrap().unwrap();
    assert_eq!(index.media_type, media::OCI_INDEX);
    assert_eq!(index.bytes.len() as u64, record.size);
    let parsed: ImageIndex = serde_json::from_slice(&index.bytes).unwrap();
    assert_eq!(parsed.schema_version, 2);
    assert_eq!(parsed.media_type, media::OCI_INDEX);
    let platforms: Vec<_> = parsed
        .manifests
        .iter()
        .map(|m| {
            let p = m.platform.as_ref().unwrap();
            format!("{}/{}", p.os, p.architecture)
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for (entry, image) in parsed.manifests.iter().zip(&f.images) {
        assert_eq!(entry.digest, image.manifest_digest());
        assert_eq!(entry.media_type, media::OCI_MANIFEST);
        let stored = f.reader.manifest(&entry.digest).await.unwrap().unwrap();
        assert_eq!(stored.media_type, media::OCI_MANIFEST);
        assert_eq!(stored.bytes, image.manifest);
        // Layers and configs are blobs, not manifests.
        assert!(f.reader.manifest(&image.config_digest()).await.unwrap().is_none());
        for layer in image.blobs() {
            assert!(f.reader.manifest(&layer.digest).await.unwrap().is_none());
            let meta = f.reader.blob(&layer.digest).await.unwrap().unwrap();
            assert_eq!(meta.size, layer.size);
            assert_eq!(meta.content_type.as_deref(), Some(LAYER));
        }
    }

    // The signature: as the `.sig` tag, as a referrer, with its payload a blob.
    let signature = signature_manifest(&f.reader, &record.digest).await;
    assert_eq!(signature.digest, record.signature);
    assert_eq!(signature.media_type, media::OCI_MANIFEST);
    let sig: ImageManifest = serde_json::from_slice(&signature.bytes).unwrap();
    assert_eq!(sig.subject.as_ref().unwrap().digest, record.digest);
    assert!(f.reader.manifest(&sig.layers[0].digest).await.unwrap().is_none());
    assert!(f.reader.blob(&sig.layers[0].digest).await.unwrap().is_some());
    assert!(f.reader.blob(&sig.config.digest).await.unwrap().is_some());
    let unrelated = sha256_digest(b"unrelated");
    assert!(f.reader.signature_manifest(&unrelated).await.unwrap().is_none());

    let referrers = |artifact_type: Option<&'static str>, subject: String| {
        let reader = f.reader.clone();
        async move {
            let bytes = reader.referrers(&subject, artifact_type).await.unwrap();
            let index: ImageIndex = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(index.schema_version, 2);
            assert_eq!(index.media_type, media::OCI_INDEX);
            index.manifests
        }
    };
    let all = referrers(None, record.digest.clone()).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].digest, record.signature);
    assert_eq!(all[0].media_type, media::OCI_MANIFEST);
    assert_eq!(all[0].size, signature.bytes.len() as u64);
    assert_eq!(all[0].artifact_type.as_deref(), Some(media::OCI_CONFIG));
    assert_eq!(
        referrers(Some(media::OCI_CONFIG), record.digest.clone()).await,
        all
    );
    assert!(referrers(Some("application/spdx+json"), record.digest.clone())
        .await
        .is_empty());
    assert!(referrers(None, unrelated.clone()).await.is_empty());
    let empty = f.reader.referrers(&unrelated, None).await.unwrap();
    assert_eq!(
        &empty[..],
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
    );

    // Malformed digests are refused before any key is built.
    for bad in ["sha256:../../index/x", "latest", ""] {
        assert!(matches!(
            f.reader.manifest(bad).await,
            Err(RegistryError::Invalid(_))
        ));
        assert!(matches!(f.reader.blob(bad).await, Err(RegistryError::Invalid(_))));
        assert!(matches!(
            f.reader.referrers(bad, None).await,
            Err(RegistryError::Invalid(_))
        ));
    }
}

#[tokio::test]
async fn republishing_is_identical_and_skips_stored_layers() {
    let f = fixture();
    let (first, _) = publish_all(&f.store, &f.key, &f.images).await;
    // The shared layer was uploaded once: arm64 found it stored.
    assert_eq!(f.images[0].opened.load(Ordering::SeqCst), 2);
    assert_eq!(f.images[1].opened.load(Ordering::SeqCst), 1);
    let (second, _) = publish_all(&f.store, &f.key, &f.images).await;
    assert_eq!(first, second, "deterministic signatures give identical bytes");
    assert_eq!(f.images[0].opened.load(Ordering::SeqCst), 2);
    assert_eq!(f.images[1].opened.load(Ordering::SeqCst), 1);
    let listed = f.store.list("oci/referrers/").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test]
async fn a_corrupt_layer_source_stores_nothing() {
    let f = fixture();
    let mut image = FakeImage::new(Arch::Amd64);
    let mut served = image.layers.clone();
    served[1][7] ^= 1;
    image.served = Some(served);
    let err = publish_one(f.store.as_ref(), &image).await.unwrap_err();
    assert!(matches!(err, AssembleError::Retryable(_)), "{err:?}");
    let layer = &image.blobs()[1];
    assert!(f.reader.blob(&layer.digest).await.unwrap().is_none());
    assert!(f
        .reader
        .manifest(&image.manifest_digest())
        .await
        .unwrap()
        .is_none());

    // Bytes that do not match the digests the caller states are refused before any upload.
    let other = FakeImage::new(Arch::Arm64);
    let manifest_digest = image.manifest_digest();
    let config_digest = image.config_digest();
    let err = publish_image(
        f.store.as_ref(),
        &PlatformImage {
            arch: Arch::Amd64,
            manifest: &image.manifest,
            manifest_digest: &manifest_digest,
            config: &image.config,
            config_digest: &config_digest,
            layers: other.blobs(),
            source: &other,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, AssembleError::Retryable(m) if m.contains("does not describe")),
        "{err:?}"
    );
    assert_eq!(other.opened.load(Ordering::SeqCst), 0);
}

async fn overwrite(store: &Arc<dyn ContentStore>, key: &str, body: Vec<u8>, content_type: &str) {
    store
        .put(
            key,
            Bytes::from(body),
            Some(content_type),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
}

fn assert_signature_error(result: Result<StoredManifest, RegistryError>, expect: &str) {
    match result {
        Err(RegistryError::Signature(reason)) => assert!(reason.contains(expect), "{reason}"),
        other => panic!("expected a signature failure ({expect}), got {other:?}"),
    }
}

#[tokio::test]
async fn verification_rejects_what_the_store_or_a_forger_changed() {
    let f = fixture();
    let (record, object_key) = publish_all(&f.store, &f.key, &f.images).await;
    f.reader.verify(&record).await.unwrap();

    // Another key.
    let stranger =
        RegistryReader::from_public_key_pem(f.store.clone(), &SigningKey::generate().public_key_pem())
            .unwrap();
    assert_signature_error(stranger.verify(&record).await, "does not verify");

    // The record claims another identity, or another index (which the signature does not sign).
    let renamed = TagRecord {
        identity: "factory.test:8080/installer/x".into(),
        ..record.clone()
    };
    assert_signature_error(f.reader.verify(&renamed).await, "identity");
    let other_index = ImageIndex::new(vec![]).to_bytes();
    overwrite(
        &f.store,
        &blob_key(&sha256_digest(&other_index)).unwrap(),
        other_index.clone(),
        media::OCI_INDEX,
    )
    .await;
    let repointed = TagRecord {
        digest: sha256_digest(&other_index),
        size: other_index.len() as u64,
        ..record.clone()
    };
    assert_signature_error(f.reader.verify(&repointed).await, "payload signs");
    let resized = TagRecord {
        size: record.size + 1,
        ..record.clone()
    };
    assert_signature_error(f.reader.verify(&resized).await, "index the tag names");

    // A tampered tag record asset.
    let (_, body) = f.store.get(&object_key).await.unwrap().unwrap();
    let mut tampered = body.to_vec();
    tampered[10] ^= 1;
    overwrite(&f.store, &object_key, tampered, "application/json").await;
    assert!(matches!(
        f.reader.tag_record(&object_key).await,
        Err(RegistryError::Corrupt(_))
    ));

    // The payload blob altered: its digest no longer matches.
    let sig: ImageManifest =
        serde_json::from_slice(&f.reader.manifest(&record.signature).await.unwrap().unwrap().bytes).unwrap();
    let payload_key = blob_key(&sig.layers[0].digest).unwrap();
    let (_, payload) = f.store.get(&payload_key).await.unwrap().unwrap();
    let forged = String::from_utf8(payload.to_vec())
        .unwrap()
        .replace("metal-installer", "metal-installex");
    overwrite(
        &f.store,
        &payload_key,
        forged.into_bytes(),
        media::COSIGN_SIMPLE_SIGNING,
    )
    .await;
    assert_signature_error(f.reader.verify(&record).await, "payload");
    overwrite(
        &f.store,
        &payload_key,
        payload.to_vec(),
        media::COSIGN_SIMPLE_SIGNING,
    )
    .await;
    f.reader.verify(&record).await.unwrap();

    // The index altered in the store.
    let index_key = blob_key(&record.digest).unwrap();
    let (_, index) = f.store.get(&index_key).await.unwrap().unwrap();
    let mut altered = index.to_vec();
    altered[3] ^= 1;
    overwrite(&f.store, &index_key, altered, media::OCI_INDEX).await;
    assert_signature_error(f.reader.verify(&record).await, "digest mismatch");
    assert!(matches!(
        f.reader.manifest(&record.digest).await,
        Err(RegistryError::Corrupt(_))
    ));
    overwrite(&f.store, &index_key, index.to_vec(), media::OCI_INDEX).await;

    // The signature manifest gone.
    f.store
        .delete(&blob_key(&record.signature).unwrap())
        .await
        .unwrap();
    assert_signature_error(f.reader.verify(&record).await, "missing");
}

#[tokio::test]
async fn signature_of_the_current_key_wins_over_a_rotated_one() {
    let f = fixture();
    let old = SigningKey::generate();
    let (old_record, _) = publish_all(&f.store, &old, &f.images).await;
    let (record, _) = publish_all(&f.store, &f.key, &f.images).await;
    assert_eq!(old_record.digest, record.digest, "same index, another signature");
    assert_ne!(old_record.signature, record.signature);
    let chosen = signature_manifest(&f.reader, &record.digest).await;
    assert_eq!(chosen.digest, record.signature);
    let old_reader = RegistryReader::from_public_key_pem(f.store.clone(), &old.public_key_pem()).unwrap();
    let chosen = signature_manifest(&old_reader, &record.digest).await;
    assert_eq!(chosen.digest, old_record.signature);
    let listed = f.reader.referrers(&record.digest, None).await.unwrap();
    let listed: ImageIndex = serde_json::from_slice(&listed).unwrap();
    assert_eq!(listed.manifests.len(), 2);
    // A record whose key and descriptor disagree is skipped.
    let bogus = referrer_record_key(&record.digest, &sha256_digest(b"x")).unwrap();
    overwrite(
        &f.store,
        &bogus,
        serde_json::to_vec(&listed.manifests[0]).unwrap(),
        "application/json",
    )
    .await;
    let listed = f.reader.referrers(&record.digest, None).await.unwrap();
    let listed: ImageIndex = serde_json::from_slice(&listed).unwrap();
    assert_eq!(listed.manifests.len(), 2);
}

#[tokio::test]
async fn manifest_media_type_falls_back_to_the_json_field() {
    let f = fixture();
    let index = ImageIndex::new(vec![]).to_bytes();
    let digest = sha256_digest(&index);
    overwrite(
        &f.store,
        &blob_key(&digest).unwrap(),
        index,
        "application/octet-stream",
    )
    .await;
    let stored = f.reader.manifest(&digest).await.unwrap().unwrap();
    assert_eq!(stored.media_type, media::OCI_INDEX);
    let json = br#"{"not":"a manifest"}"#.to_vec();
    let digest = sha256_digest(&json);
    overwrite(&f.store, &blob_key(&digest).unwrap(), json, "application/json").await;
    assert!(f.reader.manifest(&digest).await.unwrap().is_none());
}

/// An independent implementation agrees: OpenSSL verifies the signature over the payload with
/// the factory's public key PEM, as `cosign verify --key` would.
#[tokio::test]
async fn openssl_verifies_the_signature() {
    let f = fixture();
    let (record, _) = publish_all(&f.store, &f.key, &f.images).await;
    let sig: ImageManifest =
        serde_json::from_slice(&f.reader.manifest(&record.signature).await.unwrap().unwrap().bytes).unwrap();
    let layer = &sig.layers[0];
    let (_, payload) = f
        .store
        .get(&blob_key(&layer.digest).unwrap())
        .await
        .unwrap()
        .unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&layer.annotations.as_ref().unwrap()[SIGNATURE_ANNOTATION])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let public = write("pub.pem", f.key.public_key_pem().as_bytes());
    let signature = write("sig.der", &der);
    let good = write("payload.json", &payload);
    let mut bad_payload = payload.to_vec();
    bad_payload[0] = b' ';
    let bad = write("bad.json", &bad_payload);
    let verify = |data: &std::path::Path| {
        std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&signature)
            .arg(data)
            .output()
    };
    let output = match verify(&good) {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("openssl is not installed; skipping the independent check");
            return;
        }
        Err(e) => panic!("running openssl: {e}"),
    };
    assert!(
        output.status.success(),
        "openssl: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Verified OK"));
    assert!(!verify(&bad).unwrap().status.success());
}
