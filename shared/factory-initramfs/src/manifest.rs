//! `manifest.yaml` of an extension (talos-imager §4.1) and the `extensions.yaml` the imager
//! writes into the initramfs (§4.4 step 4), in go-yaml's encoding (4-space indentation, the
//! quoting rules of [`factory_core::goyaml`]).

use factory_core::goyaml::{
    emit_document, load_first_document, resolve_plain, Node, NodeKind, Resolved, Value,
};

/// The only manifest version the imager accepts.
pub const MANIFEST_VERSION: &str = "v1alpha1";

/// `metadata` of an extension manifest: what `talosctl get extensions` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub author: String,
    pub description: String,
    /// `compatibility.talos.version`: a blang/semver range, empty for "any".
    pub compatibility: String,
    /// Free text (the factory stores the schematic YAML here); omitted when empty.
    pub extra_info: String,
}

impl Metadata {
    /// Parses `manifest.yaml` like the imager's non-strict go-yaml decoder: unknown fields are
    /// ignored, `version` must be `v1alpha1`, and an all-empty manifest counts as missing.
    pub fn parse_manifest(text: &str) -> Result<Metadata, String> {
        let root = match load_first_document(text) {
            Ok(root) => root,
            Err(e) => return Err(e.to_string()),
        };
        let mut version = String::new();
        let mut metadata = Metadata::default();
        for (key, value) in mapping(&root)? {
            match key.as_str() {
                "version" => version = scalar(value, "version")?,
                "metadata" => metadata = Metadata::from_node(value)?,
                _ => {}
            }
        }
        if version != MANIFEST_VERSION {
            if version.is_empty() && metadata == Metadata::default() {
                return Err("extension manifest is missing".into());
            }
            return Err(format!("unsupported manifest version: {version:?}"));
        }
        Ok(metadata)
    }

    fn from_node(node: &Node) -> Result<Metadata, String> {
        let mut m = Metadata::default();
        for (key, value) in mapping(node)? {
            match key.as_str() {
                "name" => m.name = scalar(value, "name")?,
                "version" => m.version = scalar(value, "version")?,
                "author" => m.author = scalar(value, "author")?,
                "description" => m.description = scalar(value, "description")?,
                "extraInfo" => m.extra_info = scalar(value, "extraInfo")?,
                "compatibility" => {
                    for (key, talos) in mapping(value)? {
                        if key == "talos" {
                            for (key, version) in mapping(talos)? {
                                if key == "version" {
                                    m.compatibility = scalar(version, "version")?;
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }

    /// The YAML mapping of the Go `extensions.Metadata` struct (field order as declared).
    pub(crate) fn to_value(&self) -> Value {
        let s = |v: &str| Value::Str(v.to_owned());
        let mut fields = vec![
            (s("name"), s(&self.name)),
            (s("version"), s(&self.version)),
            (s("author"), s(&self.author)),
            (s("description"), s(&self.description)),
            (
                s("compatibility"),
                Value::Map(vec![(
                    s("talos"),
                    Value::Map(vec![(s("version"), s(&self.compatibility))]),
                )]),
            ),
        ];
        if !self.extra_info.is_empty() {
            fields.push((s("extraInfo"), s(&self.extra_info)));
        }
        Value::Map(fields)
    }

    /// `manifest.yaml` for this metadata (what a virtual extension's tarball carries).
    pub fn manifest_yaml(&self) -> String {
        emit_document(&Value::Map(vec![
            (Value::Str("version".into()), Value::Str(MANIFEST_VERSION.into())),
            (Value::Str("metadata".into()), self.to_value()),
        ]))
    }
}

/// `extensions.yaml`: `layers`, each `image` (the squashfs file name) and `metadata`.
pub fn extensions_yaml(layers: &[(String, Metadata)]) -> String {
    let items = layers
        .iter()
        .map(|(image, metadata)| {
            Value::Map(vec![
                (Value::Str("image".into()), Value::Str(image.clone())),
                (Value::Str("metadata".into()), metadata.to_value()),
            ])
        })
        .collect();
    emit_document(&Value::Map(vec![(
        Value::Str("layers".into()),
        Value::Seq(items),
    )]))
}

/// The entries of a mapping node; a null (empty) node is an empty mapping, as in go-yaml.
fn mapping(node: &Node) -> Result<Vec<(String, &Node)>, String> {
    match &node.kind {
        NodeKind::Map(entries) => entries
            .iter()
            .map(|(k, v)| match &k.kind {
                NodeKind::Scalar { value, .. } => Ok((value.clone(), v)),
                _ => Err(format!("yaml: line {}: mapping keys must be scalars", k.line)),
            })
            .collect(),
        NodeKind::Scalar { value, plain, .. } if *plain && resolve_plain(value) == Resolved::Null => {
            Ok(Vec::new())
        }
        NodeKind::Scalar { value, .. } => Err(format!(
            "yaml: line {}: cannot unmarshal {value:?} into a mapping",
            node.line
        )),
        NodeKind::Seq(_) => Err(format!(
            "yaml: line {}: cannot unmarshal !!seq into a mapping",
            node.line
        )),
    }
}

/// A scalar read into a Go string field: its text (go-yaml accepts any scalar there), or empty
/// for a plain null.
fn scalar(node: &Node, field: &str) -> Result<String, String> {
    match &node.kind {
        NodeKind::Scalar { value, plain, .. } => {
            if *plain && resolve_plain(value) == Resolved::Null {
                Ok(String::new())
            } else {
                Ok(value.clone())
            }
        }
        _ => Err(format!(
            "yaml: line {}: cannot unmarshal a collection into Go struct field {field} of type string",
            node.line
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_stand_in_manifest_shape() {
        let text = "version: v1alpha1\nmetadata:\n  name: intel-ucode\n  version: \"20250211\"\n  \
                    author: Sidero Labs (stand-in)\n  description: Stand-in.\n  compatibility:\n    \
                    talos:\n      version: \">= v1.10.0\"\n  unknown: ignored\n";
        let m = Metadata::parse_manifest(text).expect("parses");
        assert_eq!(m.name, "intel-ucode");
        assert_eq!(m.version, "20250211");
        assert_eq!(m.compatibility, ">= v1.10.0");
        assert_eq!(m.extra_info, "");
    }

    #[test]
    fn refuses_what_the_imager_refuses() {
        assert_eq!(
            Metadata::parse_manifest("version: v1\nmetadata:\n  name: x\n"),
            Err("unsupported manifest version: \"v1\"".into())
        );
        assert_eq!(
            Metadata::parse_manifest("{}\n"),
            Err("extension manifest is missing".into())
        );
        assert!(Metadata::parse_manifest("version: [v1alpha1]\n").is_err());
    }

    #[test]
    fn extensions_yaml_is_go_yaml() {
        let layers = vec![
            (
                "0.sqsh".to_owned(),
                Metadata {
                    name: "gvisor".into(),
                    version: "20250505.0-v1.12.1".into(),
                    author: "Sidero Labs".into(),
                    description: "gVisor".into(),
                    compatibility: ">= v1.0.0".into(),
                    extra_info: String::new(),
                },
            ),
            (
                "1.sqsh".to_owned(),
                Metadata {
                    name: "schematic".into(),
                    version: "abc".into(),
                    author: "Image Factory (http://127.0.0.1:8080)".into(),
                    description: "d".into(),
                    compatibility: ">= 1.0.0".into(),
                    extra_info: "customization: {}\n".into(),
                },
            ),
        ];
        let expected = "layers:\n    - image: 0.sqsh\n      metadata:\n        name: gvisor\n        \
            version: 20250505.0-v1.12.1\n        author: Sidero Labs\n        description: gVisor\n        \
            compatibility:\n            talos:\n                version: '>= v1.0.0'\n    - image: 1.sqsh\n      \
            metadata:\n        name: schematic\n        version: abc\n        \
            author: Image Factory (http://127.0.0.1:8080)\n        description: d\n        \
            compatibility:\n            talos:\n                version: '>= 1.0.0'\n        \
            extraInfo: |\n            customization: {}\n";
        assert_eq!(extensions_yaml(&layers), expected);
    }
}
