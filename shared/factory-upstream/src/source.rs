//! The port: where OCI images come from.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;

/// A blob's bytes, streamed (layers can be hundreds of MiB).
pub type BlobStream = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// A manifest or index as stored upstream: its exact bytes (digests are over them), its digest
/// (`sha256:<hex>`) and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Bytes,
}

/// Errors of the upstream layer. `NotFound` is a normal answer for lookups (a version that does
/// not exist); the others are failures with a message for operators and clients.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The repository, tag, manifest or blob does not exist upstream.
    #[error("{0} not found")]
    NotFound(String),
    /// The upstream could not be reached or answered with an error (network, 5xx, auth).
    #[error("upstream {source_name} unavailable: {message}")]
    Unavailable { source_name: String, message: String },
    /// A signature is missing or does not verify: the image is not used.
    #[error("signature verification failed for {image}: {reason}")]
    Signature { image: String, reason: String },
    /// Upstream content is malformed (bad JSON, digest mismatch, bad tar, missing file).
    #[error("invalid upstream content in {image}: {reason}")]
    Invalid { image: String, reason: String },
    /// The shared cache in the content store failed.
    #[error(transparent)]
    Store(#[from] factory_store::StoreError),
}

/// Read access to OCI repositories: a registry or a set of OCI image layouts. Repository names
/// are paths such as `siderolabs/imager` (namespace prefixes are the adapter's business).
#[async_trait]
pub trait OciSource: Send + Sync + std::fmt::Debug {
    /// All tags of a repository (`NotFound` when the repository does not exist).
    async fn list_tags(&self, repository: &str) -> Result<Vec<String>, UpstreamError>;

    /// A manifest or index by tag or digest (`sha256:...`). The adapter checks that a manifest
    /// fetched by digest has that digest.
    async fn manifest(&self, repository: &str, reference: &str) -> Result<RawManifest, UpstreamError>;

    /// A blob by digest, streamed. Callers verify the digest while reading (see `digest`).
    async fn blob(&self, repository: &str, digest: &str) -> Result<BlobStream, UpstreamError>;

    /// Where the images come from, for messages and logs (`registry https://ghcr.io`, ...).
    fn describe(&self) -> String;
}
