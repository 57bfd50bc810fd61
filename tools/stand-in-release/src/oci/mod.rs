//! OCI images in memory and on disk: the JSON documents, deterministic layers, a per-repository
//! blob store with tags, and the image-layout directory format.

pub mod layer;
pub mod layout;
pub mod spec;
pub mod store;

pub use layer::Layer;
pub use spec::{Descriptor, Platform};
pub use store::{Arch, ImageConfig, Repo, Store};

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}
