//! Route families, each a router of its own so that each Lambda function serves only its family
//! and the local server merges them all.

mod body;
pub(crate) mod build;
mod catalog;
mod image;
mod keys;
mod lookup;
mod pxe;
mod registry;
mod registry_proxy;
mod schematics;

pub use catalog::catalog_router;
pub use image::{assets_router, image_router};
pub use keys::{health_router, keys_router, READYZ_PROBE_KEY};
pub use pxe::pxe_router;
pub use registry::registry_router;
pub use schematics::{schematics_router, MAX_SCHEMATIC_BODY};
