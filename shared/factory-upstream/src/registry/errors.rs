//! Registry error answers → [`UpstreamError`]: "does not exist" is `NotFound`, everything else a
//! registry says (5xx, throttling, denied) is `Unavailable` with its codes and messages.

use reqwest::StatusCode;
use serde::Deserialize;

use crate::source::UpstreamError;

/// Codes of the distribution spec that mean "no such thing".
const NOT_FOUND_CODES: [&str; 3] = ["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"];

#[derive(Debug, Default, Deserialize)]
struct Envelope {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Maps a non-success answer for `what` (`siderolabs/imager:v1.10.0`) to an error.
pub fn status_error(source_name: &str, what: &str, status: StatusCode, body: &[u8]) -> UpstreamError {
    let envelope: Envelope = serde_json::from_slice(body).unwrap_or_default();
    let not_found_code = envelope
        .errors
        .iter()
        .any(|e| NOT_FOUND_CODES.contains(&e.code.as_str()));
    if status == StatusCode::NOT_FOUND || not_found_code {
        return UpstreamError::NotFound(format!("{what} in {source_name}"));
    }
    let details: Vec<String> = envelope
        .errors
        .iter()
        .map(|e| {
            if e.message.is_empty() {
                e.code.clone()
            } else {
                format!("{}: {}", e.code, e.message)
            }
        })
        .collect();
    let details = if details.is_empty() {
        // Not an error envelope: show the start of the body, which is usually an HTML error page.
        String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string()
    } else {
        details.join("; ")
    };
    UpstreamError::Unavailable {
        source_name: source_name.to_string(),
        message: format!("HTTP {status} for {what}: {details}"),
    }
}

/// Maps a transport failure (connect, TLS, timeout, reset) to `Unavailable`.
pub fn transport_error(source_name: &str, what: &str, err: &reqwest::Error) -> UpstreamError {
    UpstreamError::Unavailable {
        source_name: source_name.to_string(),
        message: format!("{what}: {}", chain(err)),
    }
}

/// An error with its causes: reqwest's Display hides them ("error sending request"), and they
/// say what happened (connection refused, certificate, timeout).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_are_not_found_whatever_the_status() {
        let body =
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#;
        assert!(matches!(
            status_error("r", "x", StatusCode::UNAUTHORIZED, body),
            UpstreamError::NotFound(_)
        ));
        assert!(matches!(
            status_error("r", "x", StatusCode::NOT_FOUND, b""),
            UpstreamError::NotFound(_)
        ));
    }

    #[test]
    fn other_errors_are_unavailable_with_details() {
        let body =
            br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        let e = status_error("registry https://ghcr.io", "a:b", StatusCode::FORBIDDEN, body);
        let text = e.to_string();
        assert!(
            text.contains("DENIED") && text.contains("ghcr.io") && text.contains("403"),
            "{text}"
        );
        let e = status_error("r", "a:b", StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert!(e.to_string().contains("bad gateway"));
    }
}
