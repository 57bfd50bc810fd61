//! The registry token flow (Docker "token authentication", as ghcr.io uses anonymously): a 401
//! carries `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`; a GET on the realm with
//! `service` and `scope` returns a JSON token that the retried request sends as `Bearer`.

use std::collections::BTreeMap;

/// A parsed `Bearer` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses a `WWW-Authenticate` value; `None` unless it is a `Bearer` challenge with a realm
/// (a `Basic` challenge means credentials, which an anonymous client does not have).
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest)?;
    Some(BearerChallenge {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key=value` or `key="quoted, value"` pairs separated by commas (RFC 7235 auth-params). Scopes
/// contain commas (`repository:x:pull,push`), so quoting must be honoured.
fn parse_params(input: &str) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(params);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.to_ascii_lowercase(), value);
    }
}

/// The token endpoint's answer: Docker's `token`, OAuth2's `access_token` (either may be sent).
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ghcr_style_challenges() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:siderolabs/imager:pull""#,
        );
        assert_eq!(
            c,
            Some(BearerChallenge {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:siderolabs/imager:pull".into()),
            })
        );
    }

    #[test]
    fn honours_quotes_and_odd_spacing() {
        let c = parse_bearer_challenge(
            r#"bearer  realm = "http://x/t" , scope="repository:a:pull,push",error=insufficient_scope"#,
        );
        let c = c.expect("challenge");
        assert_eq!(c.realm, "http://x/t");
        assert_eq!(c.scope.as_deref(), Some("repository:a:pull,push"));
        assert_eq!(c.service, None);
    }

    #[test]
    fn rejects_other_schemes_and_garbage() {
        assert_eq!(parse_bearer_challenge(r#"Basic realm="registry""#), None);
        assert_eq!(parse_bearer_challenge("Bearer"), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn token_field_variants() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).expect("json");
        assert_eq!(t.into_token().as_deref(), Some("a"));
        let t: TokenResponse = serde_json::from_str(r#"{"token":"b","access_token":"a"}"#).expect("json");
        assert_eq!(t.into_token().as_deref(), Some("b"));
        let t: TokenResponse = serde_json::from_str(r#"{}"#).expect("json");
        assert_eq!(t.into_token(), None);
    }
}
