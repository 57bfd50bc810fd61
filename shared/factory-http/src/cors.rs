//! CORS as the Go factory does it with `rs/cors` (spec §2.4).
//!
//! Not tower-http's `CorsLayer`: that one answers *every* `OPTIONS` request itself and always
//! sends its headers, while `rs/cors` only intercepts real preflights (`OPTIONS` with
//! `Access-Control-Request-Method`), lets a plain `OPTIONS` reach the router (which answers it with
//! `Allow`), and answers a preflight it refuses without any `Access-Control-Allow-*` header.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// Methods a cross-origin page may use (the Go factory's list; `POST /schematics` is not in it).
const ALLOWED_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
/// Request headers a cross-origin page may send; `rs/cors` always adds `Origin`.
const ALLOWED_HEADERS: [&str; 2] = ["cache-control", "origin"];
/// Response headers a cross-origin page may read (downloads need their name and size).
const EXPOSED_HEADERS: &str = "Content-Disposition, Content-Length, Content-Type";
const PREFLIGHT_VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// Which origins may call the API.
#[derive(Debug, Clone)]
pub(crate) struct CorsPolicy {
    any_origin: bool,
    /// Lower-cased, compared case-insensitively as browsers and `rs/cors` do.
    origins: Vec<String>,
}

impl CorsPolicy {
    /// `*` anywhere in the list allows every origin; otherwise exact matches only.
    pub(crate) fn new(allowed_origins: &[String]) -> Self {
        Self {
            any_origin: allowed_origins.iter().any(|o| o == "*"),
            origins: allowed_origins.iter().map(|o| o.to_ascii_lowercase()).collect(),
        }
    }

    fn allows_origin(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// `*` when any origin is allowed (cacheable), otherwise the caller's own origin.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    fn preflight(&self, headers: &HeaderMap) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let out = response.headers_mut();
        out.insert(VARY, HeaderValue::from_static(PREFLIGHT_VARY));

        let Some(origin) = headers
            .get(ORIGIN)
            .filter(|o| o.to_str().is_ok_and(|o| self.allows_origin(o)))
        else {
            return response;
        };
        let method = headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| m.to_str().ok())
            .map(str::to_ascii_uppercase)
            .filter(|m| ALLOWED_METHODS.contains(&m.as_str()));
        let Some(method) = method.and_then(|m| HeaderValue::from_str(&m).ok()) else {
            return response;
        };
        let requested_headers = headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        let headers_ok = requested_headers.is_none_or(|value| {
            value.to_str().is_ok_and(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .all(|h| ALLOWED_HEADERS.iter().any(|a| a.eq_ignore_ascii_case(h)))
            })
        });
        if !headers_ok {
            return response;
        }

        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, method);
        if let Some(requested) = requested_headers {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        response
    }

    fn decorate(&self, method: &Method, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        out.append(VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| self.allows_origin(o))) else {
            return;
        };
        if !ALLOWED_METHODS.contains(&method.as_str()) {
            return;
        }
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        out.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
}

/// The middleware: answers preflights, decorates everything else.
pub(crate) async fn cors(State(policy): State<Arc<CorsPolicy>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if request.method() == Method::OPTIONS && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
        return policy.preflight(headers);
    }
    let method = request.method().clone();
    let origin = headers.get(ORIGIN).cloned();
    let mut response = next.run(request).await;
    policy.decorate(&method, origin.as_ref(), response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn preflight_echoes_method_and_headers() {
        let policy = CorsPolicy::new(&["*".into()]);
        let response = policy.preflight(&headers(&[
            ("origin", "https://foo.com"),
            ("access-control-request-method", "get"),
            ("access-control-request-headers", "cache-control"),
        ]));
        let h = response.headers();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "cache-control");
    }

    #[test]
    fn preflight_refusals_carry_no_allow_headers() {
        let policy = CorsPolicy::new(&["https://ok.example".into()]);
        for request in [
            headers(&[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ]),
            headers(&[
                ("origin", "https://ok.example"),
                ("access-control-request-method", "POST"),
            ]),
            headers(&[
                ("origin", "https://ok.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-custom"),
            ]),
        ] {
            let response = policy.preflight(&request);
            assert!(
                !response.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
                "{request:?}"
            );
        }
        let ok = policy.preflight(&headers(&[
            ("origin", "https://OK.example"),
            ("access-control-request-method", "HEAD"),
        ]));
        assert_eq!(ok.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "https://OK.example");
    }

    #[test]
    fn actual_requests_get_origin_and_exposed_headers() {
        let policy = CorsPolicy::new(&["*".into()]);
        let origin = HeaderValue::from_static("https://foo.com");
        let mut out = HeaderMap::new();
        policy.decorate(&Method::GET, Some(&origin), &mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(out[ACCESS_CONTROL_EXPOSE_HEADERS], EXPOSED_HEADERS);
        assert_eq!(out[VARY], "Origin");

        let mut out = HeaderMap::new();
        policy.decorate(&Method::POST, Some(&origin), &mut out);
        assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
