//! Schematics: the customisation of Talos boot media, content-addressed by the sha256 of their
//! canonical YAML (byte-exact with the Go image factory, see `canonical`).

mod model;
mod id;

pub use id::SchematicId;
pub use model::{Bootloader, Customization, DiskImage, MetaValue, Overlay, OverlayValue, Schematic, SecureBoot};

/// Why a schematic was refused. Every variant is the client's fault (a 4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchematicError {
    /// The body is empty (Go: `EOF`).
    #[error("empty schematic: the request body holds no YAML document")]
    Empty,
    /// The body is not valid YAML, or does not fit the schematic's shape.
    #[error("{0}")]
    Invalid(String),
    /// A field that this edition does not accept.
    #[error("{0}")]
    Unsupported(String),
}
