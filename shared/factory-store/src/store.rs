use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A stream of object bytes, as handed out by [`ContentStore::get_stream`].
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// Errors of the content store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is not acceptable to the store (empty, `..`, absolute, ...): a caller bug.
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The backend failed (network, permissions, disk). Usually worth a retry.
    #[error("content store backend error: {0}")]
    Backend(String),
    /// Reading the body that was to be stored failed.
    #[error("reading the object body failed: {0}")]
    Body(#[from] std::io::Error),
}

/// Checks that `key` is a valid object key, the same rule for every adapter: a non-empty,
/// `/`-separated relative path whose segments are non-empty and neither `.` nor `..`, without
/// backslashes or NUL bytes. (So a key that works on S3 also works on disk, and no key can escape
/// a store's root.)
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && !key.contains(['\\', '\0'])
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_owned()))
    }
}

/// What the store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Opaque version tag (S3 ETag, a content hash on disk); used by [`PutCondition::IfMatch`].
    pub etag: String,
    pub content_type: Option<String>,
}

/// When a write may happen. Conditional writes are what make the factory safe with many
/// concurrent Lambdas: write-once schematics, build claims and leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// Always write (last writer wins).
    Overwrite,
    /// Write only if no object exists under the key (`If-None-Match: *`).
    IfAbsent,
    /// Write only if the current object has this etag (`If-Match`): compare-and-swap.
    IfMatch(String),
}

/// The result of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written; its new metadata.
    Written(ObjectMeta),
    /// The condition did not hold; nothing was written.
    ConditionFailed,
}

/// An object store. Every write is atomic: a reader sees the whole old object, the whole new one,
/// or nothing; never a partial object.
#[async_trait]
pub trait ContentStore: Send + Sync + std::fmt::Debug {
    /// Reads a small object whole. `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<(ObjectMeta, Bytes)>, StoreError>;

    /// Metadata of an object. `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// Writes a small object whole, under a condition.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StoreError>;

    /// Streams a large object in with bounded memory (S3 multipart upload; a temp file renamed into
    /// place on disk). The object becomes visible only once complete. Unconditional.
    async fn put_stream(
        &self,
        key: &str,
        body: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, StoreError>;

    /// Streams an object out. `None` when absent.
    async fn get_stream(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>, StoreError>;

    /// Deletes an object; deleting an absent object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Keys under a prefix, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// A URL a client can `GET` the object from directly for `ttl`, answered with the given
    /// response headers (an S3 presigned `GetObject`). `None` when the store has no such URLs
    /// (the disk store: the server serves the object itself).
    async fn presign_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
        headers: &PresignHeaders,
    ) -> Result<Option<String>, StoreError> {
        let _ = (key, ttl, headers);
        Ok(None)
    }
}

/// Response headers a presigned URL makes the store answer with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresignHeaders {
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
}
