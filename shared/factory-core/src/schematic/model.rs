//! The schematic data model, field for field the Go `pkg/schematic` structs, and its canonical
//! YAML. Field order here is the order of the canonical YAML.

use super::decode;
use super::{SchematicError, SchematicId};
use crate::goyaml::{emit_document, Value};

/// A schematic, normalised: parsing the canonical YAML again gives the same schematic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schematic {
    /// Enterprise only; a community factory refuses schematics that set it.
    pub owner: String,
    pub overlay: Overlay,
    pub customization: Customization,
}

/// The board overlay (single-board computers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// Repository of the overlay image (informational; lookup is by name).
    pub image: String,
    /// Overlay name from the overlays catalog.
    pub name: String,
    /// Free-form options for the overlay installer, as a YAML mapping (Go `map[string]any`): keys
    /// are strings, entries sorted in go-yaml's map order.
    pub options: Vec<(String, Value)>,
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

/// An initial META partition value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaValue {
    pub key: u8,
    pub value: String,
}

/// The bootloader of disk images and ISOs. Unset (`none` in YAML) lets the Talos version decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootloader {
    DualBoot,
    SdBoot,
    Grub,
}

impl Bootloader {
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::DualBoot => "dual-boot",
            Bootloader::SdBoot => "sd-boot",
            Bootloader::Grub => "grub",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecureBoot {
    /// `off`, `manual`, `if-safe` or `force`; validated when a SecureBoot asset is built.
    pub enroll_keys: String,
    pub include_well_known_certificates: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskImage {
    /// Sector size of disk images in bytes; 0 means the default (512).
    pub sector_size: u64,
}

impl Schematic {
    /// Parses a request body: YAML or JSON, first document only, strict (unknown fields are
    /// refused), with go-yaml's typing rules so that the canonical form matches the Go factory.
    pub fn parse(body: &[u8]) -> Result<Self, SchematicError> {
        decode::decode(body)
    }

    /// Community-edition validation at creation time (`owner` is Enterprise only).
    pub fn validate_community(&self) -> Result<(), SchematicError> {
        if self.owner.is_empty() {
            Ok(())
        } else {
            Err(SchematicError::Unsupported(
                "owner field is only supported in Enterprise edition".into(),
            ))
        }
    }

    /// The canonical YAML (what go-yaml's `Marshal` gives for the Go struct): what is stored,
    /// returned and hashed.
    pub fn canonical_yaml(&self) -> String {
        emit_document(&self.to_value())
    }

    /// The content address of this schematic.
    pub fn id(&self) -> SchematicId {
        SchematicId::of_canonical(&self.canonical_yaml())
    }

    /// The value tree go-yaml would marshal, with Go's `omitempty` rules applied.
    fn to_value(&self) -> Value {
        let mut root = Vec::new();
        if !self.owner.is_empty() {
            root.push(field("owner", str(&self.owner)));
        }
        let o = &self.overlay;
        if !(o.image.is_empty() && o.name.is_empty() && o.options.is_empty()) {
            // `image` and `name` have no omitempty: once the overlay is there, both are written.
            let mut overlay = vec![field("image", str(&o.image)), field("name", str(&o.name))];
            if !o.options.is_empty() {
                let options = o.options.iter().map(|(k, v)| (str(k), v.clone())).collect();
                overlay.push(field("options", Value::Map(options)));
            }
            root.push(field("overlay", Value::Map(overlay)));
        }
        root.push(field("customization", self.customization.to_value()));
        Value::Map(root)
    }
}

impl Customization {
    fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if !self.embedded_machine_configuration.is_empty() {
            m.push(field(
                "embeddedMachineConfiguration",
                str(&self.embedded_machine_configuration),
            ));
        }
        if !self.extra_kernel_args.is_empty() {
            m.push(field("extraKernelArgs", strs(&self.extra_kernel_args)));
        }
        if !self.meta.is_empty() {
            let items = self
                .meta
                .iter()
                .map(|mv| {
                    Value::Map(vec![
                        field("key", Value::Uint(mv.key.into())),
                        field("value", str(&mv.value)),
                    ])
                })
                .collect();
            m.push(field("meta", Value::Seq(items)));
        }
        if !self.official_extensions.is_empty() {
            let exts = Value::Map(vec![field("officialExtensions", strs(&self.official_extensions))]);
            m.push(field("systemExtensions", exts));
        }
        if let Some(b) = self.bootloader {
            m.push(field("bootloader", str(b.as_str())));
        }
        let sb = &self.secureboot;
        if !sb.enroll_keys.is_empty() || sb.include_well_known_certificates {
            let mut s = Vec::new();
            if !sb.enroll_keys.is_empty() {
                s.push(field("enrollKeys", str(&sb.enroll_keys)));
            }
            if sb.include_well_known_certificates {
                s.push(field("includeWellKnownCertificates", Value::Bool(true)));
            }
            m.push(field("secureboot", Value::Map(s)));
        }
        if self.disk_image.sector_size != 0 {
            let d = Value::Map(vec![field(
                "sectorSize",
                Value::Uint(self.disk_image.sector_size),
            )]);
            m.push(field("diskImage", d));
        }
        Value::Map(m)
    }
}

fn field(name: &str, v: Value) -> (Value, Value) {
    (str(name), v)
}

fn str(s: &str) -> Value {
    Value::Str(s.to_owned())
}

fn strs(items: &[String]) -> Value {
    Value::Seq(items.iter().map(|s| str(s)).collect())
}
