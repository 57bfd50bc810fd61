//! Strict decoding of a schematic body, with go-yaml's rules for turning scalars into Go fields
//! (`owner: 1` is the string "1", `key: 0xa` is 10, `yes` is true only for booleans, ...) and its
//! error wording (`yaml: construct errors: line 1: field x not found in type schematic.Schematic`).
//! Like go-yaml, decoding goes on after a field error so that one answer lists every problem.

use super::model::{Bootloader, Customization, MetaValue, Overlay, Schematic};
use super::SchematicError;
use crate::goyaml::{
    load_first_document, resolve_plain, sort_go_map, LoadError, Node, NodeKind, Resolved, Value,
};

pub(super) fn decode(body: &[u8]) -> Result<Schematic, SchematicError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| SchematicError::Invalid(format!("yaml: invalid UTF-8 in the request body: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_control() && !matches!(c, '\t' | '\n' | '\r') && c < '\u{7f}')
    {
        return Err(SchematicError::Invalid(format!(
            "yaml: control characters are not allowed (value: {})",
            c as u32
        )));
    }
    // go-yaml (YAML 1.1) also breaks lines at U+2028/U+2029, in some places but not others; rather
    // than guess and risk an ID the Go factory would not compute, refuse them raw.
    if text.contains(['\u{2028}', '\u{2029}']) {
        return Err(SchematicError::Invalid(
            "yaml: raw U+2028/U+2029 separators are not accepted; write them as \\u2028/\\u2029 in double quotes"
                .into(),
        ));
    }
    // go-yaml reads CR LF, a lone CR and NEL as line breaks (YAML 1.1); the parser we use knows
    // only LF, so normalise them first.
    let normalised;
    let text = if text.contains(['\r', '\u{85}']) {
        normalised = text.replace("\r\n", "\n").replace(['\r', '\u{85}'], "\n");
        normalised.as_str()
    } else {
        text
    };
    let root = load_first_document(text).map_err(|e| match e {
        LoadError::Empty => SchematicError::Empty,
        LoadError::Syntax { .. } => SchematicError::Invalid(e.to_string()),
    })?;
    let mut d = Decoder::default();
    let mut schematic = Schematic::default();
    d.decode_schematic(&root, &mut schematic);
    if d.errors.is_empty() {
        Ok(schematic)
    } else {
        let list: Vec<String> = d
            .errors
            .iter()
            .map(|(line, msg)| format!("line {line}: {msg}"))
            .collect();
        Err(SchematicError::Invalid(format!(
            "yaml: construct errors: {}",
            list.join("; ")
        )))
    }
}

/// A scalar as go-yaml sees it: its text and what it resolves to.
struct Scalar<'a> {
    value: &'a str,
    resolved: Resolved,
    /// `!!binary` scalars decode to their bytes.
    binary: bool,
}

#[derive(Debug, Default)]
struct Decoder {
    errors: Vec<(usize, String)>,
}

impl Decoder {
    fn error(&mut self, line: usize, msg: impl Into<String>) {
        self.errors.push((line, msg.into()));
    }

    /// Classifies a scalar node; `None` (after recording an error) for tags we do not support.
    fn scalar<'a>(&mut self, node: &'a Node) -> Option<Scalar<'a>> {
        let NodeKind::Scalar { value, plain, tag } = &node.kind else {
            return None;
        };
        let resolved = match tag.as_deref() {
            None if *plain => resolve_plain(value),
            None | Some("!!str") | Some("!") => Resolved::Str,
            Some("!!binary") => {
                return Some(Scalar {
                    value,
                    resolved: Resolved::Str,
                    binary: true,
                })
            }
            Some(t @ ("!!int" | "!!float" | "!!bool" | "!!null" | "!!timestamp")) => {
                let r = resolve_plain(value);
                let fits = matches!(
                    (t, &r),
                    ("!!int", Resolved::Int(_) | Resolved::Uint(_))
                        | (
                            "!!float",
                            Resolved::Float(_) | Resolved::Int(_) | Resolved::Uint(_)
                        )
                        | ("!!bool", Resolved::Bool(_))
                        | ("!!null", Resolved::Null)
                        | ("!!timestamp", Resolved::Timestamp)
                );
                if !fits {
                    self.error(
                        node.line,
                        format!("cannot construct {} `{value}` as a {t}", r.tag()),
                    );
                    return None;
                }
                match (t, r) {
                    ("!!float", Resolved::Int(i)) => Resolved::Float(i as f64),
                    ("!!float", Resolved::Uint(u)) => Resolved::Float(u as f64),
                    (_, r) => r,
                }
            }
            // Application tags (`!foo`) do not change how a scalar decodes into a Go string.
            Some(_) => Resolved::Str,
        };
        Some(Scalar {
            value,
            resolved,
            binary: false,
        })
    }

    fn is_null(&self, node: &Node) -> bool {
        matches!(&node.kind, NodeKind::Scalar { .. })
            && matches!(self.peek_resolved(node), Some(Resolved::Null))
    }

    fn peek_resolved(&self, node: &Node) -> Option<Resolved> {
        match &node.kind {
            NodeKind::Scalar {
                value,
                plain: true,
                tag: None,
            } => Some(resolve_plain(value)),
            NodeKind::Scalar {
                value, tag: Some(t), ..
            } if t == "!!null" => Some(resolve_plain(value)),
            _ => None,
        }
    }

    /// "cannot construct !!seq into T" / "cannot construct !!int `1` into T".
    fn mismatch(&mut self, node: &Node, into: &str) {
        let what = match &node.kind {
            NodeKind::Seq(_) => "!!seq".to_owned(),
            NodeKind::Map(_) => "!!map".to_owned(),
            NodeKind::Scalar { value, .. } => {
                let tag = self.scalar_tag(node);
                // go-yaml shortens long values in messages to their first 7 bytes.
                if value.len() > 10 {
                    let mut end = 7;
                    while !value.is_char_boundary(end) {
                        end -= 1;
                    }
                    format!("{tag} `{}...`", &value[..end])
                } else {
                    format!("{tag} `{value}`")
                }
            }
        };
        self.error(node.line, format!("cannot construct {what} into {into}"));
    }

    fn scalar_tag(&self, node: &Node) -> &'static str {
        match &node.kind {
            NodeKind::Scalar {
                value,
                plain: true,
                tag: None,
            } => resolve_plain(value).tag(),
            NodeKind::Scalar { tag: Some(t), .. } if t == "!!binary" => "!!binary",
            _ => "!!str",
        }
    }

    /// Walks a mapping that decodes into a Go struct: unknown and duplicate keys are errors; merge
    /// keys (`<<`) contribute fields that explicit keys override. Returns the (key, value) pairs
    /// to apply, in order.
    fn struct_fields<'a>(
        &mut self,
        node: &'a Node,
        type_name: &str,
        known: &[&str],
    ) -> Vec<(&'a str, &'a Node)> {
        let mut fields: Vec<(&'a str, &'a Node)> = Vec::new();
        match &node.kind {
            NodeKind::Map(pairs) => {
                let mut merged: Vec<(&'a str, &'a Node)> = Vec::new();
                let mut seen: Vec<(&'a str, usize)> = Vec::new();
                for (k, v) in pairs {
                    let NodeKind::Scalar { value: key, .. } = &k.kind else {
                        self.mismatch(k, "string");
                        continue;
                    };
                    if matches!(self.peek_resolved(k), Some(Resolved::Merge)) {
                        let sources: Vec<&Node> = match &v.kind {
                            NodeKind::Seq(items) => items.iter().collect(),
                            _ => vec![v],
                        };
                        for src in sources {
                            merged.extend(self.struct_fields(src, type_name, known));
                        }
                        continue;
                    }
                    if let Some((_, first)) = seen.iter().find(|(name, _)| name == key) {
                        let msg = format!("mapping key \"{key}\" already defined at line {first}");
                        self.error(k.line, msg);
                        continue;
                    }
                    seen.push((key, k.line));
                    if !known.contains(&key.as_str()) {
                        self.error(k.line, format!("field {key} not found in type {type_name}"));
                        continue;
                    }
                    fields.push((key, v));
                }
                merged.retain(|(name, _)| !fields.iter().any(|(f, _)| f == name));
                merged.extend(fields);
                merged
            }
            _ if self.is_null(node) => fields,
            _ => {
                self.mismatch(node, type_name);
                fields
            }
        }
    }

    fn decode_schematic(&mut self, node: &Node, out: &mut Schematic) {
        for (key, v) in self.struct_fields(
            node,
            "schematic.Schematic",
            &["owner", "overlay", "customization"],
        ) {
            match key {
                "owner" => out.owner = self.string(v),
                "overlay" => self.decode_overlay(v, &mut out.overlay),
                _ => self.decode_customization(v, &mut out.customization),
            }
        }
    }

    fn decode_overlay(&mut self, node: &Node, out: &mut Overlay) {
        for (key, v) in self.struct_fields(node, "schematic.Overlay", &["image", "name", "options"]) {
            match key {
                "image" => out.image = self.string(v),
                "name" => out.name = self.string(v),
                _ => out.options = self.options(v),
            }
        }
    }

    fn decode_customization(&mut self, node: &Node, out: &mut Customization) {
        const FIELDS: &[&str] = &[
            "embeddedMachineConfiguration",
            "extraKernelArgs",
            "meta",
            "systemExtensions",
            "bootloader",
            "secureboot",
            "diskImage",
        ];
        for (key, v) in self.struct_fields(node, "schematic.Customization", FIELDS) {
            match key {
                "embeddedMachineConfiguration" => out.embedded_machine_configuration = self.string(v),
                "extraKernelArgs" => out.extra_kernel_args = self.strings(v),
                "meta" => out.meta = self.meta(v),
                "systemExtensions" => {
                    for (_, exts) in
                        self.struct_fields(v, "schematic.SystemExtensions", &["officialExtensions"])
                    {
                        out.official_extensions = self.strings(exts);
                    }
                }
                "bootloader" => out.bootloader = self.bootloader(v),
                "secureboot" => {
                    let known = &["enrollKeys", "includeWellKnownCertificates"];
                    for (k, sv) in self.struct_fields(v, "schematic.SecureBootCustomization", known) {
                        match k {
                            "enrollKeys" => out.secureboot.enroll_keys = self.string(sv),
                            _ => out.secureboot.include_well_known_certificates = self.boolean(sv),
                        }
                    }
                }
                _ => {
                    for (_, sv) in self.struct_fields(v, "schematic.DiskImageCustomization", &["sectorSize"])
                    {
                        out.disk_image.sector_size = self.unsigned(sv, u64::MAX, "uint");
                    }
                }
            }
        }
    }

    /// A Go `string` field: any scalar's text, except a timestamp; null is "".
    fn string(&mut self, node: &Node) -> String {
        if !matches!(node.kind, NodeKind::Scalar { .. }) {
            self.mismatch(node, "string");
            return String::new();
        }
        let Some(s) = self.scalar(node) else {
            return String::new();
        };
        if s.binary {
            return self.binary(node, s.value);
        }
        match s.resolved {
            Resolved::Null => String::new(),
            Resolved::Timestamp => {
                self.mismatch(node, "string");
                String::new()
            }
            _ => s.value.to_owned(),
        }
    }

    fn binary(&mut self, node: &Node, value: &str) -> String {
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        match decode_base64(&compact).map(String::from_utf8) {
            Some(Ok(s)) => s,
            _ => {
                let msg =
                    "!!binary value is not base64-encoded UTF-8 text (binary strings are not supported)";
                self.error(node.line, msg);
                String::new()
            }
        }
    }

    fn strings(&mut self, node: &Node) -> Vec<String> {
        match &node.kind {
            // go-yaml leaves null items out of typed slices.
            NodeKind::Seq(items) => {
                let items: Vec<&Node> = items.iter().filter(|item| !self.is_null(item)).collect();
                items.into_iter().map(|item| self.string(item)).collect()
            }
            _ if self.is_null(node) => Vec::new(),
            _ => {
                self.mismatch(node, "[]string");
                Vec::new()
            }
        }
    }

    fn meta(&mut self, node: &Node) -> Vec<MetaValue> {
        match &node.kind {
            NodeKind::Seq(items) => items
                .iter()
                .filter(|item| !self.is_null(item))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|item| {
                    let mut mv = MetaValue::default();
                    for (k, v) in self.struct_fields(item, "schematic.MetaValue", &["key", "value"]) {
                        match k {
                            // uint8: the range check is what makes `key: 300` a 400.
                            "key" => mv.key = self.unsigned(v, u8::MAX.into(), "uint8") as u8,
                            _ => mv.value = self.string(v),
                        }
                    }
                    mv
                })
                .collect(),
            _ if self.is_null(node) => Vec::new(),
            _ => {
                self.mismatch(node, "[]schematic.MetaValue");
                Vec::new()
            }
        }
    }

    /// A Go unsigned integer field: integers in range, and floats with an integral value.
    fn unsigned(&mut self, node: &Node, max: u64, type_name: &str) -> u64 {
        if !matches!(node.kind, NodeKind::Scalar { .. }) {
            self.mismatch(node, type_name);
            return 0;
        }
        let Some(s) = self.scalar(node) else { return 0 };
        let v = match s.resolved {
            Resolved::Null => Some(0),
            Resolved::Int(i) => u64::try_from(i).ok(),
            Resolved::Uint(u) => Some(u),
            Resolved::Float(f) if f.fract() == 0.0 && (0.0..=max as f64).contains(&f) => Some(f as u64),
            _ => None,
        };
        match v.filter(|v| *v <= max) {
            Some(v) if !s.binary => v,
            _ => {
                self.mismatch(node, type_name);
                0
            }
        }
    }

    /// A Go `bool` field: YAML booleans, plus the YAML 1.1 spellings (`yes`, `on`, ...) that
    /// go-yaml accepts when the target is a bool.
    fn boolean(&mut self, node: &Node) -> bool {
        if !matches!(node.kind, NodeKind::Scalar { .. }) {
            self.mismatch(node, "bool");
            return false;
        }
        let Some(s) = self.scalar(node) else { return false };
        match (&s.resolved, s.value) {
            (Resolved::Bool(b), _) => *b,
            (Resolved::Null, _) => false,
            (Resolved::Str, "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON") if !s.binary => true,
            (Resolved::Str, "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF") if !s.binary => false,
            _ => {
                self.mismatch(node, "bool");
                false
            }
        }
    }

    /// `none|dual-boot|sd-boot|grub`, any case; `none` and null mean unset.
    fn bootloader(&mut self, node: &Node) -> Option<Bootloader> {
        if !matches!(node.kind, NodeKind::Scalar { .. }) {
            self.mismatch(node, "imageropts.BootloaderKind");
            return None;
        }
        let s = self.scalar(node)?;
        if s.resolved == Resolved::Null && !s.binary {
            return None;
        }
        let text = if s.binary {
            self.binary(node, s.value)
        } else {
            s.value.to_owned()
        };
        match text.to_lowercase().as_str() {
            "none" => None,
            "dual-boot" => Some(Bootloader::DualBoot),
            "sd-boot" => Some(Bootloader::SdBoot),
            "grub" => Some(Bootloader::Grub),
            _ => {
                self.error(
                    node.line,
                    format!(
                        "{text} does not belong to BootloaderKind values (none, dual-boot, sd-boot, grub)"
                    ),
                );
                None
            }
        }
    }

    /// Overlay options: Go `map[string]any`.
    fn options(&mut self, node: &Node) -> Vec<(String, Value)> {
        let pairs = match &node.kind {
            NodeKind::Map(pairs) => pairs,
            _ if self.is_null(node) => return Vec::new(),
            _ => {
                self.mismatch(node, "map[string]interface {}");
                return Vec::new();
            }
        };
        let mut entries: Vec<(Value, Value)> = Vec::new();
        for (k, v) in pairs {
            let key = Value::Str(self.string(k));
            let value = self.any(v);
            // A Go map keeps the last value for a key.
            entries.retain(|(existing, _)| existing != &key);
            entries.push((key, value));
        }
        sort_go_map(&mut entries);
        entries
            .into_iter()
            .map(|(k, v)| match k {
                Value::Str(k) => (k, v),
                _ => (String::new(), v),
            })
            .collect()
    }

    /// A Go `any`: the natural type of each scalar, `[]any` and maps.
    fn any(&mut self, node: &Node) -> Value {
        match &node.kind {
            NodeKind::Seq(items) => Value::Seq(items.iter().map(|i| self.any(i)).collect()),
            NodeKind::Map(pairs) => {
                let mut entries: Vec<(Value, Value)> = Vec::new();
                for (k, v) in pairs {
                    if !matches!(k.kind, NodeKind::Scalar { .. }) {
                        self.error(k.line, "overlay options: mapping keys must be scalars");
                        continue;
                    }
                    let key = self.any(k);
                    let value = self.any(v);
                    entries.retain(|(existing, _)| existing != &key);
                    entries.push((key, value));
                }
                sort_go_map(&mut entries);
                Value::Map(entries)
            }
            NodeKind::Scalar { .. } => {
                let Some(s) = self.scalar(node) else {
                    return Value::Null;
                };
                if s.binary {
                    return Value::Str(self.binary(node, s.value));
                }
                match s.resolved {
                    Resolved::Null => Value::Null,
                    Resolved::Bool(b) => Value::Bool(b),
                    Resolved::Int(i) => Value::Int(i),
                    Resolved::Uint(u) => Value::Uint(u),
                    Resolved::Float(f) => Value::Float(f),
                    Resolved::Str | Resolved::Merge => Value::Str(s.value.to_owned()),
                    Resolved::Timestamp => {
                        // Go would turn it into a time.Time and re-format it; we refuse rather
                        // than risk an ID that differs from the Go factory's.
                        let msg = format!(
                            "overlay options: timestamp `{}` is not supported, quote it to pass a string",
                            s.value
                        );
                        self.error(node.line, msg);
                        Value::Null
                    }
                }
            }
        }
    }
}

/// Standard base64 (with padding), as Go's `!!binary` decoding expects.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i + 1 == b.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}
