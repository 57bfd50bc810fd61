//! The upstream side of the factory: Talos release images (imager, installer, extensions and
//! overlays catalogs, extension and overlay images, talosctl) read over the OCI distribution API
//! from a registry (`ghcr.io` in production, a mirror, a loopback registry in tests) or from OCI
//! image layout directories, verified against a cosign public key, flattened and extracted with
//! bounded memory; and on top of that the version list and the catalogs, cached in the content
//! store so that every Lambda shares them.

pub mod catalog;
pub mod config;
pub mod counting;
pub mod digest;
pub mod image;
pub mod layout;
pub mod registry;
pub mod settings;
pub mod source;
pub mod verify;

pub use catalog::{CatalogConfig, CatalogError, ReleaseCatalog};
pub use config::{Components, UpstreamConfig};
pub use counting::{CountingSource, SourceCounts};
pub use image::{ExtractSummary, PlatformImage, ResolvedImage, Upstream};
pub use layout::{LayoutSource, COSIGN_KEY_FILE};
pub use registry::RegistrySource;
pub use source::{BlobStream, OciSource, RawManifest, UpstreamError};
pub use verify::Verification;
