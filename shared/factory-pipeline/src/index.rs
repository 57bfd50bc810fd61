//! The signed index record: the only mutable pointer per cache key.
//!
//! * Stored at `index/<cache_key>.json` as an envelope `{"payload": "<canonical record JSON>",
//!   "signature": "<hex DER ECDSA P-256/SHA-256 over the payload bytes>"}`. The signature covers
//!   the exact stored payload bytes (verify, then parse), so readers never depend on
//!   re-serialising identically. The canonical payload is compact `serde_json` of [`IndexRecord`]:
//!   fields in declaration order, `input_digests` a sorted map.
//! * [`Publisher::publish`] writes it **last**, after the object is completely stored: a record
//!   that exists always points at a complete object. It overwrites, so a rebuild replaces a
//!   rejected (tampered) record.
//! * [`Index::lookup`] treats a missing, unparsable, badly signed or mismatching record (wrong
//!   cache key, object key not derived from the record's own digest, other format version) as a
//!   **miss**, logged: the consequence is a rebuild, never serving something unverified.
//! * [`Index::verify_object`] re-hashes the object, streaming, before it is served or when
//!   checking: the object store (or CDN origin) is not trusted to keep bytes unaltered.
//! * Each process remembers the records it verified ([`Index::remembered`]): a record is the
//!   signed statement "this cache key is this object", true for good once made, so a warm
//!   request need not read and verify it again. What can still change is the object under it
//!   (deleted, overwritten): the request side keeps its one `HEAD` per hit
//!   ([`Index::check_object`]) and forgets the remembered record when that check fails, so an
//!   altered or missing object is never redirected to, with or without the memo. A record
//!   replaced in the store by a rebuild (same cache key, new object) is picked up when the old
//!   object fails that check, or when the process ends; until then the old object, intact, is
//!   served, which is as correct as the new one (same inputs).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use factory_signing::SigningKey;
use factory_store::{ContentStore, Memo, PutCondition};
use futures::StreamExt;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};

use crate::hashing::Hashes;
use crate::keys::{asset_key, index_key, validate_cache_key};
use crate::PipelineError;

/// Bumped when the record's meaning changes; records of another version are misses (rebuilt).
pub const FORMAT_VERSION: u32 = 2;

/// What is known about a published asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    pub cache_key: String,
    pub object_key: String,
    pub sha256: String,
    pub sha512: String,
    pub size: u64,
    /// The store's etag of the object as written. Checked (with the size) by a cheap `HEAD`
    /// before every redirect: an object rewritten in place gets a new etag, so altered bytes are
    /// never redirected to without re-reading the whole object per request.
    pub object_etag: String,
    pub content_type: String,
    pub file_name: String,
    /// Exact digests of every upstream input (name → digest), as reported by the assembler.
    pub input_digests: BTreeMap<String, String>,
    /// Build completion time, ms since the Unix epoch.
    pub built_at: u64,
    pub format_version: u32,
}

/// A verified index record.
pub type Published = IndexRecord;

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    payload: String,
    signature: String,
}

/// Result of [`Index::verify_object`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectCheck {
    /// Size and sha256 match the record.
    Intact,
    /// The object is gone.
    Missing,
    /// The bytes differ from what was published.
    Corrupt { detail: String },
}

/// Writes signed index records.
#[derive(Debug, Clone)]
pub struct Publisher {
    store: Arc<dyn ContentStore>,
    key: Arc<SigningKey>,
}

impl Publisher {
    pub fn new(store: Arc<dyn ContentStore>, key: Arc<SigningKey>) -> Self {
        Self { store, key }
    }

    /// Signs and stores the record. Call only once the object is completely stored.
    pub async fn publish(&self, record: &IndexRecord) -> Result<(), PipelineError> {
        validate_cache_key(&record.cache_key)?;
        let payload = serde_json::to_string(record).map_err(|source| PipelineError::Encode {
            what: "index record",
            source,
        })?;
        let signature = hex::encode(self.key.sign_sha256(payload.as_bytes()));
        let body =
            serde_json::to_vec(&Envelope { payload, signature }).map_err(|source| PipelineError::Encode {
                what: "index envelope",
                source,
            })?;
        self.store
            .put(
                &index_key(&record.cache_key),
                Bytes::from(body),
                Some("application/json"),
                PutCondition::Overwrite,
            )
            .await?;
        Ok(())
    }
}

/// Reads and verifies index records.
#[derive(Debug, Clone)]
pub struct Index {
    store: Arc<dyn ContentStore>,
    verifying_key: VerifyingKey,
    /// Records this process verified, by cache key (shared by clones).
    verified: Arc<Memo<String, Published>>,
}

/// Verified records a process keeps (a few hundred bytes each).
const VERIFIED_MEMO_ENTRIES: usize = 16 * 1024;

impl Index {
    pub fn new(store: Arc<dyn ContentStore>, verifying_key: VerifyingKey) -> Self {
        Self {
            store,
            verifying_key,
            verified: Arc::new(Memo::new(VERIFIED_MEMO_ENTRIES)),
        }
    }

    /// A record this process verified before, without asking the store.
    pub fn remembered(&self, cache_key: &str) -> Option<Published> {
        self.verified.get(&cache_key.to_owned())
    }

    /// Forgets a remembered record (its object failed a check).
    pub fn forget(&self, cache_key: &str) {
        self.verified.remove(&cache_key.to_owned());
    }

    /// An index verifying with the public key PEM the factory publishes (`PUBLIC KEY`, PKIX).
    pub fn from_public_key_pem(
        store: Arc<dyn ContentStore>,
        pem: &str,
    ) -> Result<Self, p256::pkcs8::spki::Error> {
        Ok(Self::new(store, VerifyingKey::from_public_key_pem(pem)?))
    }

    pub fn store(&self) -> &Arc<dyn ContentStore> {
        &self.store
    }

    /// The verified record for `cache_key`; anything that does not verify is a miss.
    pub async fn lookup(&self, cache_key: &str) -> Result<Option<Published>, PipelineError> {
        Ok(self.lookup_with_etag(cache_key).await?.published)
    }

    /// As [`Self::lookup`], plus the etag of the stored record (also of a rejected one), which the
    /// request side uses to tell "never built" from "built but rejected" when deduplicating.
    pub(crate) async fn lookup_with_etag(&self, cache_key: &str) -> Result<IndexState, PipelineError> {
        validate_cache_key(cache_key)?;
        let Some((meta, body)) = self.store.get(&index_key(cache_key)).await? else {
            return Ok(IndexState {
                etag: None,
                published: None,
            });
        };
        let published = match self.verify(cache_key, &body) {
            Ok(record) => {
                self.verified.insert(cache_key.to_owned(), record.clone());
                Some(record)
            }
            Err(reason) => {
                tracing::warn!(cache_key, etag = %meta.etag, %reason, "index record rejected; treating as a miss");
                None
            }
        };
        Ok(IndexState {
            etag: Some(meta.etag),
            published,
        })
    }

    fn verify(&self, cache_key: &str, body: &[u8]) -> Result<IndexRecord, String> {
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(|e| format!("not an index envelope: {e}"))?;
        let der = hex::decode(&envelope.signature).map_err(|e| format!("signature is not hex: {e}"))?;
        let signature =
            DerSignature::try_from(der.as_slice()).map_err(|e| format!("signature is not DER: {e}"))?;
        self.verifying_key
            .verify(envelope.payload.as_bytes(), &signature)
            .map_err(|_| "bad signature".to_owned())?;
        let record: IndexRecord = serde_json::from_str(&envelope.payload)
            .map_err(|e| format!("signed payload is not a record: {e}"))?;
        // A validly signed record copied under another key must not serve the wrong asset.
        if record.cache_key != cache_key {
            return Err(format!("record is for cache key {:?}", record.cache_key));
        }
        if record.format_version != FORMAT_VERSION {
            return Err(format!("format version {}", record.format_version));
        }
        if record.object_key != asset_key(cache_key, &record.sha256, &record.file_name) {
            return Err(format!(
                "object key {:?} is not derived from the record",
                record.object_key
            ));
        }
        Ok(record)
    }

    /// Re-hashes the published object (streaming, bounded memory) and compares size and sha256.
    pub async fn verify_object(&self, published: &Published) -> Result<ObjectCheck, PipelineError> {
        let Some((_, mut stream)) = self.store.get_stream(&published.object_key).await? else {
            return Ok(ObjectCheck::Missing);
        };
        let mut hashes = Hashes::default();
        while let Some(chunk) = stream.next().await {
            hashes.update(&chunk?);
        }
        let actual = hashes.finish();
        Ok(if actual.size != published.size {
            ObjectCheck::Corrupt {
                detail: format!("size {} instead of {}", actual.size, published.size),
            }
        } else if actual.sha256 != published.sha256 {
            ObjectCheck::Corrupt {
                detail: format!("sha256 {} instead of {}", actual.sha256, published.sha256),
            }
        } else {
            ObjectCheck::Intact
        })
    }
}

impl Index {
    /// The cheap check done before every redirect: the object exists with the published size
    /// and etag (one `HEAD`). The full re-hash is [`Self::verify_object`].
    pub async fn check_object(&self, published: &Published) -> Result<ObjectCheck, PipelineError> {
        let Some(meta) = self.store.head(&published.object_key).await? else {
            return Ok(ObjectCheck::Missing);
        };
        Ok(if meta.size != published.size {
            ObjectCheck::Corrupt {
                detail: format!("size {} instead of {}", meta.size, published.size),
            }
        } else if meta.etag.trim_matches('"') != published.object_etag.trim_matches('"') {
            ObjectCheck::Corrupt {
                detail: format!("etag {} instead of {}", meta.etag, published.object_etag),
            }
        } else {
            ObjectCheck::Intact
        })
    }
}

/// The stored index record's state.
#[derive(Debug)]
pub(crate) struct IndexState {
    pub etag: Option<String>,
    pub published: Option<Published>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use factory_store::fs::FsStore;

    use super::*;

    fn record(cache_key: &str) -> IndexRecord {
        let sha256 = "ab".repeat(32);
        IndexRecord {
            cache_key: cache_key.to_owned(),
            object_key: asset_key(cache_key, &sha256, "kernel-amd64"),
            sha256,
            sha512: "cd".repeat(64),
            size: 3,
            object_etag: "e".to_owned(),
            content_type: "application/octet-stream".to_owned(),
            file_name: "kernel-amd64".to_owned(),
            input_digests: BTreeMap::from([("kernel".to_owned(), "sha256:00".to_owned())]),
            built_at: 1,
            format_version: FORMAT_VERSION,
        }
    }

    #[tokio::test]
    async fn only_verified_records_for_the_right_key_are_hits() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ContentStore> = Arc::new(FsStore::new(dir.path()).unwrap());
        let key = Arc::new(SigningKey::generate());
        let publisher = Publisher::new(store.clone(), key.clone());
        let index = Index::from_public_key_pem(store.clone(), &key.public_key_pem()).unwrap();

        assert_eq!(index.lookup("k1").await.unwrap(), None);
        publisher.publish(&record("k1")).await.unwrap();
        assert_eq!(index.lookup("k1").await.unwrap(), Some(record("k1")));

        // A validly signed record copied under another cache key is a miss.
        let (_, body) = store.get(&index_key("k1")).await.unwrap().unwrap();
        store
            .put(&index_key("k2"), body, None, PutCondition::Overwrite)
            .await
            .unwrap();
        assert_eq!(index.lookup("k2").await.unwrap(), None);

        // Garbage and an object key not derived from the digest are misses too.
        store
            .put(
                &index_key("k3"),
                Bytes::from_static(b"{"),
                None,
                PutCondition::Overwrite,
            )
            .await
            .unwrap();
        assert_eq!(index.lookup("k3").await.unwrap(), None);
        let mut wrong = record("k4");
        wrong.object_key = "assets/k4/elsewhere".to_owned();
        publisher.publish(&wrong).await.unwrap();
        assert_eq!(index.lookup("k4").await.unwrap(), None);
    }
}
