//! Schematics: the customisation of Talos boot media, content-addressed by the sha256 of their
//! canonical YAML (byte-exact with the Go image factory, see [`crate::goyaml`]).

mod decode;
mod id;
mod model;

pub use id::SchematicId;
pub use model::{Bootloader, Customization, DiskImage, MetaValue, Overlay, Schematic, SecureBoot};

/// Why a schematic was refused. Every variant is the client's fault (a 4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchematicError {
    /// The body holds no YAML document (Go answers `EOF`).
    #[error("EOF: the request body holds no YAML document")]
    Empty,
    /// The body is not valid YAML, or does not fit the schematic's shape. The message names the
    /// line and the field, in go-yaml's wording.
    #[error("{0}")]
    Invalid(String),
    /// A field this edition does not accept.
    #[error("{0}")]
    Unsupported(String),
}
