//! The schematic data model, field for field the Go `pkg/schematic` structs. Field order here is
//! the order of the canonical YAML.

use super::{SchematicError, SchematicId};

/// A schematic as stored: normalised (parsing then canonicalising is idempotent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schematic {
    /// Enterprise only; a community factory refuses schematics that set it.
    pub owner: String,
    pub overlay: Overlay,
    pub customization: Customization,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    pub image: String,
    pub name: String,
    /// Free-form options handed to the overlay installer; keys sorted (Go marshals maps sorted).
    pub options: Vec<(String, OverlayValue)>,
}

/// A free-form YAML value (overlay options), kept with enough detail to re-emit it as Go would.
#[derive(Debug, Clone, PartialEq)]
pub enum OverlayValue {
    Null,
    Bool(bool),
    /// An integer, kept as its decimal text (any size Go accepts).
    Int(String),
    /// A float, kept as the f64 Go would hold.
    Float(f64),
    String(String),
    Seq(Vec<OverlayValue>),
    /// Keys are rendered strings, sorted as Go sorts map keys.
    Map(Vec<(OverlayValue, OverlayValue)>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Customization {
    pub embedded_machine_configuration: String,
    pub extra_kernel_args: Vec<String>,
    pub meta: Vec<MetaValue>,
    pub official_extensions: Vec<String>,
    pub bootloader: Option<Bootloader>,
    pub secureboot: SecureBoot,
    pub disk_image: DiskImage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaValue {
    pub key: u8,
    pub value_index: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootloader {
    DualBoot,
    SdBoot,
    Grub,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecureBoot {
    pub enroll_keys: String,
    pub include_well_known_certificates: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskImage {
    pub sector_size: u64,
}

impl Schematic {
    /// Parses a request body: YAML or JSON, first document only, strict (unknown fields refused).
    pub fn parse(_body: &[u8]) -> Result<Self, SchematicError> {
        Err(SchematicError::Invalid("not implemented yet".into()))
    }

    /// Community-edition validation at creation time (`owner` is Enterprise only).
    pub fn validate_community(&self) -> Result<(), SchematicError> {
        if self.owner.is_empty() {
            Ok(())
        } else {
            Err(SchematicError::Unsupported("owner field is only supported in Enterprise edition".into()))
        }
    }

    /// The canonical YAML: what is stored, returned and hashed.
    pub fn canonical_yaml(&self) -> String {
        String::from("customization: {}\n")
    }

    /// The content address of this schematic.
    pub fn id(&self) -> SchematicId {
        SchematicId::of_canonical(&self.canonical_yaml())
    }
}
