//! The factory's read-only OCI registry of customised Talos installer images
//! (`<image>/<schematic>:<version>`, spec §8): what a registry build job is, how the builder
//! publishes an installer image index with its cosign signature, and how the request side reads
//! and verifies it back. The `/v2` HTTP routes live in `factory-http`.
//!
//! # Why the registry is made of pipeline assets
//!
//! The Go factory pushes into a real registry; here there is only the content store. A tag is a
//! build-on-miss asset of the pipeline like any other: its cache key covers the registry identity,
//! the tag and the installer assets of every architecture ([`job::registry_job`]), so concurrent
//! pulls of a tag enqueue one build, and the pipeline's signed index record is the tag → digest
//! pointer. The asset's bytes are a small JSON [`TagRecord`]; the image itself (layers, configs,
//! manifests, index, signature) is published content-addressed by the [`RegistryAssembler`]
//! *before* it returns, so a tag never resolves to an image that is incomplete or unsigned.
//!
//! # Object keys ([`keys`])
//!
//! | key | what | why |
//! |---|---|---|
//! | `assets/oci/sha256/<hex>` | every blob and manifest, by digest | content addressed, so concurrent builders write identical bytes and a CDN may cache forever; under `assets/` so the CDN behaviour and the builder's write permission already cover it |
//! | `oci/referrers/sha256/<subject hex>/sha256-<referrer hex>` | the descriptor of one referrer of a subject | the OCI 1.1 referrers API lists them with one `LIST`; one object per referrer, so concurrent writers never race on a shared list |
//!
//! # Signing ([`cosign`])
//!
//! The index digest is signed as cosign does with a key (spec §9.4), so `cosign verify --key
//! /oci/cosign/signing-key.pub` works against the factory. The request side verifies the same
//! signature ([`RegistryReader::verify`]) before it serves a tag: the store is not trusted.

pub mod assembler;
pub mod cosign;
pub mod job;
pub mod keys;
pub mod media;
pub mod name;
pub mod oci;
pub mod publish;
mod reader;

use serde::{Deserialize, Serialize};

pub use assembler::{FactoryAssembler, RegistryAssembler};
pub use reader::{RegistryReader, StoredManifest};

/// The output of a registry job, i.e. the bytes of the pipeline asset: the tag's resolution.
/// Published by the pipeline only after everything it names is stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagRecord {
    /// `<registry host[:port]>/<image>/<schematic>`: the cosign docker-reference.
    pub identity: String,
    pub tag: String,
    /// Media type of the tagged manifest (an OCI image index).
    pub media_type: String,
    /// `sha256:<hex>` of the tagged index.
    pub digest: String,
    /// Size of the tagged index in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the cosign signature manifest signing `digest`.
    pub signature: String,
}

/// Errors of reading the registry back.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed (worth a retry, a 5xx).
    #[error(transparent)]
    Store(#[from] factory_store::StoreError),
    /// Stored content does not match its digest or is malformed: never served.
    #[error("corrupt registry content: {0}")]
    Corrupt(String),
    /// The tag's cosign signature is missing or does not verify: rebuild, never serve.
    #[error("signature verification failed: {0}")]
    Signature(String),
    /// The caller passed something malformed (a digest that is not `sha256:<64 hex>`, a bad key).
    #[error("invalid: {0}")]
    Invalid(String),
}
