//! A source that counts the requests made of it (in production each is a round trip to the
//! upstream registry): for tests that hold a path to a number of upstream requests, and for
//! reporting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::source::{BlobStream, OciSource, RawManifest, UpstreamError};

/// Requests made so far, by kind.
#[derive(Debug, Default)]
pub struct SourceCounts {
    pub list_tags: AtomicU64,
    pub manifest: AtomicU64,
    pub blob: AtomicU64,
}

impl SourceCounts {
    pub fn requests(&self) -> u64 {
        [&self.list_tags, &self.manifest, &self.blob]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// Wraps a source, counting each request before passing it on.
#[derive(Debug)]
pub struct CountingSource {
    inner: Arc<dyn OciSource>,
    counts: Arc<SourceCounts>,
}

impl CountingSource {
    pub fn new(inner: Arc<dyn OciSource>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }

    pub fn counts(&self) -> Arc<SourceCounts> {
        Arc::clone(&self.counts)
    }
}

#[async_trait]
impl OciSource for CountingSource {
    async fn list_tags(&self, repository: &str) -> Result<Vec<String>, UpstreamError> {
        self.counts.list_tags.fetch_add(1, Ordering::Relaxed);
        self.inner.list_tags(repository).await
    }

    async fn manifest(&self, repository: &str, reference: &str) -> Result<RawManifest, UpstreamError> {
        self.counts.manifest.fetch_add(1, Ordering::Relaxed);
        self.inner.manifest(repository, reference).await
    }

    async fn blob(&self, repository: &str, digest: &str) -> Result<BlobStream, UpstreamError> {
        self.counts.blob.fetch_add(1, Ordering::Relaxed);
        self.inner.blob(repository, digest).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
