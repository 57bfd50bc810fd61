//! A store that counts the requests made of it: for tests that hold a code path to a number of
//! store round trips (in Lambda, each is an S3 request with its latency and price), and for
//! anything that wants to report them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ByteStream, ContentStore, ObjectMeta, PresignHeaders, PutCondition, PutOutcome, StoreError};

/// Requests made so far, by kind.
#[derive(Debug, Default)]
pub struct StoreCounts {
    pub get: AtomicU64,
    pub head: AtomicU64,
    pub put: AtomicU64,
    pub get_stream: AtomicU64,
    pub put_stream: AtomicU64,
    pub delete: AtomicU64,
    pub list: AtomicU64,
    pub presign: AtomicU64,
}

impl StoreCounts {
    /// Every request that reaches the backing store (presigning is local computation).
    pub fn requests(&self) -> u64 {
        [
            &self.get,
            &self.head,
            &self.put,
            &self.get_stream,
            &self.put_stream,
            &self.delete,
            &self.list,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// `kind=count` pairs of the non-zero counters, for assertion messages.
    pub fn summary(&self) -> String {
        let all = [
            ("get", &self.get),
            ("head", &self.head),
            ("put", &self.put),
            ("get_stream", &self.get_stream),
            ("put_stream", &self.put_stream),
            ("delete", &self.delete),
            ("list", &self.list),
            ("presign", &self.presign),
        ];
        let parts: Vec<String> = all
            .iter()
            .map(|(name, c)| (name, c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name}={n}"))
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

/// Wraps a store, counting each request before passing it on.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ContentStore>,
    counts: Arc<StoreCounts>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ContentStore>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }

    /// The counters (shared: they keep counting after this is moved into an `Arc<dyn ...>`).
    pub fn counts(&self) -> Arc<StoreCounts> {
        Arc::clone(&self.counts)
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[async_trait]
impl ContentStore for CountingStore {
    async fn get(&self, key: &str) -> Result<Option<(ObjectMeta, Bytes)>, StoreError> {
        bump(&self.counts.get);
        self.inner.get(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        bump(&self.counts.head);
        self.inner.head(key).await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StoreError> {
        bump(&self.counts.put);
        self.inner.put(key, body, content_type, condition).await
    }

    async fn put_stream(
        &self,
        key: &str,
        body: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        bump(&self.counts.put_stream);
        self.inner.put_stream(key, body, content_type).await
    }

    async fn get_stream(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>, StoreError> {
        bump(&self.counts.get_stream);
        self.inner.get_stream(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        bump(&self.counts.delete);
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        bump(&self.counts.list);
        self.inner.list(prefix).await
    }

    async fn presign_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
        headers: &PresignHeaders,
    ) -> Result<Option<String>, StoreError> {
        bump(&self.counts.presign);
        self.inner.presign_get(key, ttl, headers).await
    }
}
