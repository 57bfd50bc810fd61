//! JSON bodies byte-for-byte as Go's `json.Encoder` writes them, for clients that compare or
//! hash responses: HTML-sensitive characters escaped, and a trailing newline.

use serde::Serialize;

use crate::ApiError;

/// `value` as Go's `json.NewEncoder(w).Encode(value)` would write it.
pub fn go_json(value: &impl Serialize) -> Result<String, ApiError> {
    let json = serde_json::to_string(value)
        .map_err(|e| ApiError::Internal(format!("encoding the JSON response failed: {e}")))?;
    let mut out = String::with_capacity(json.len() + 1);
    // These characters are never JSON syntax, so they can only occur inside strings, where the
    // escape means the same character: rewriting the whole text is safe.
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::go_json;

    #[test]
    fn escapes_like_go() {
        let json = go_json(&serde_json::json!({"a": "<b> & \u{2028}\n\"q\""})).expect("json");
        assert_eq!(json, "{\"a\":\"\\u003cb\\u003e \\u0026 \\u2028\\n\\\"q\\\"\"}\n");
    }
}
