//! Just enough YAML output for the release's small documents (extension manifests, catalogs,
//! overlay profiles): every string is written double-quoted with JSON escaping, which is valid
//! YAML and never misread (no accidental numbers, booleans or `key: value` splits).

/// `s` as a double-quoted YAML scalar.
pub fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
