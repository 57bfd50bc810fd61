//! The CloudFront distribution in front of everything, shaped by the template's cache behaviours:
//! a path pattern routed to the content bucket is read from S3 (LocalStack) and streamed, with the
//! headers of the template's viewer-response function (`Content-Disposition` from `?filename=` or
//! the key's last segment, immutable `Cache-Control`; the JavaScript itself is run by
//! `tests/tests/cloudfront_function.rs`); every other path goes to the HTTP API, the viewer's
//! `Host` replaced by the API's (origin request policy `AllViewerExceptHostHeader`).
//!
//! As with an origin access control and no `s3:ListBucket`, a missing object answers 403; a
//! method the behaviour does not allow answers 403 as CloudFront does.

use std::net::SocketAddr;
use std::sync::Arc;

use aws_sdk_s3::Client as S3;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, Response, StatusCode};

use crate::apigw::{percent_decode, HttpApi};
use crate::template::{Behaviour, Origin};

/// Everything the CDN front needs.
#[derive(Debug, Clone)]
pub struct Cdn {
    pub behaviours: Vec<Behaviour>,
    pub api: HttpApi,
    pub s3: S3,
    /// Bucket logical ID → bucket name.
    pub buckets: std::collections::BTreeMap<String, String>,
}

/// The axum app serving [`Cdn`].
pub fn app(cdn: Cdn) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(Arc::new(cdn))
}

/// CloudFront path patterns: `*` any run of characters, `?` one; case-sensitive.
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    fn rec(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], s) || (!s.is_empty() && rec(p, &s[1..])),
            (Some(b'?'), Some(_)) => rec(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &s[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), path.as_bytes())
}

async fn handle(
    State(cdn): State<Arc<Cdn>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let Some(behaviour) = cdn.behaviours.iter().find(|b| {
        b.path_pattern
            .as_deref()
            .is_none_or(|p| pattern_matches(p, &path))
    }) else {
        return plain(StatusCode::NOT_FOUND, "no cache behaviour");
    };
    if !behaviour
        .allowed_methods
        .iter()
        .any(|m| m == request.method().as_str())
    {
        return plain(
            StatusCode::FORBIDDEN,
            "This distribution is not configured to allow the HTTP request method",
        );
    }
    let mut response = match &behaviour.origin {
        Origin::Api => {
            let (parts, body) = request.into_parts();
            let body = match axum::body::to_bytes(body, crate::apigw::MAX_REQUEST_BYTES + 1).await {
                Ok(b) => b,
                Err(_) => Bytes::from(vec![0; crate::apigw::MAX_REQUEST_BYTES + 1]),
            };
            let mut headers = parts.headers.clone();
            headers.remove("host");
            let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(f) => format!("{f}, {}", peer.ip()),
                None => peer.ip().to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                headers.insert("x-forwarded-for", v);
            }
            headers.insert(
                "via",
                HeaderValue::from_static("2.0 local.cloudfront.net (CloudFront)"),
            );
            // CloudFront's edge is the API's client.
            cdn.api
                .handle(parts.method, &parts.uri, &headers, body, "127.0.0.1")
                .await
        }
        Origin::Bucket(logical) => {
            let Some(bucket) = cdn.buckets.get(logical) else {
                return plain(StatusCode::BAD_GATEWAY, "unknown bucket origin");
            };
            let key = percent_decode(path.trim_start_matches('/'), false);
            let range = request
                .headers()
                .get("range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let head = request.method() == Method::HEAD;
            let mut r = object(&cdn.s3, bucket, &key, range, head).await;
            if r.status().is_success() {
                viewer_response(request.uri(), &mut r);
            }
            r
        }
    };
    response.headers_mut().insert(
        "via",
        HeaderValue::from_static("1.1 local.cloudfront.net (CloudFront)"),
    );
    response
}

/// What the template's `AssetHeadersFunction` adds to asset responses.
fn viewer_response(uri: &http::Uri, response: &mut Response<Body>) {
    fn safe(name: &str) -> Option<&str> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
        ok.then_some(name)
    }
    let query_name = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix("filename="))
            .map(|v| percent_decode(v, false))
    });
    let last = percent_decode(uri.path().rsplit('/').next().unwrap_or(""), false);
    let name = query_name.as_deref().and_then(safe).or_else(|| safe(&last));
    let disposition = match name {
        Some(n) => format!("attachment; filename=\"{n}\""),
        None => "attachment".to_owned(),
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert("content-disposition", v);
    }
    headers.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
}

async fn object(s3: &S3, bucket: &str, key: &str, range: Option<String>, head: bool) -> Response<Body> {
    if head {
        return match s3.head_object().bucket(bucket).key(key).send().await {
            Ok(o) => {
                let mut r = Response::new(Body::empty());
                let h = r.headers_mut();
                if let Some(n) = o.content_length() {
                    h.insert("content-length", HeaderValue::from(n));
                }
                set(h, "content-type", o.content_type());
                set(h, "etag", o.e_tag());
                h.insert("accept-ranges", HeaderValue::from_static("bytes"));
                r
            }
            Err(_) => plain(StatusCode::FORBIDDEN, "AccessDenied"),
        };
    }
    let mut request = s3.get_object().bucket(bucket).key(key);
    if let Some(range) = range {
        request = request.range(range);
    }
    match request.send().await {
        Ok(o) => {
            let status = if o.content_range().is_some() {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            };
            let length = o.content_length();
            let content_type = o.content_type().map(str::to_owned);
            let etag = o.e_tag().map(str::to_owned);
            let content_range = o.content_range().map(str::to_owned);
            // Streamed: an asset never sits in memory whole.
            let stream = futures::stream::unfold(o.body, |mut body| async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => Some((Ok::<Bytes, std::io::Error>(chunk), body)),
                    Ok(None) => None,
                    Err(e) => Some((Err(std::io::Error::other(e)), body)),
                }
            });
            let mut r = Response::new(Body::from_stream(stream));
            *r.status_mut() = status;
            let h = r.headers_mut();
            if let Some(n) = length {
                h.insert("content-length", HeaderValue::from(n));
            }
            set(h, "content-type", content_type.as_deref());
            set(h, "etag", etag.as_deref());
            set(h, "content-range", content_range.as_deref());
            h.insert("accept-ranges", HeaderValue::from_static("bytes"));
            r
        }
        Err(e) => {
            let service = e.as_service_error().map(|s| s.to_string()).unwrap_or_default();
            if service.contains("InvalidRange") {
                plain(StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange")
            } else {
                plain(StatusCode::FORBIDDEN, "AccessDenied")
            }
        }
    }
}

fn set(headers: &mut http::HeaderMap, name: &'static str, value: Option<&str>) {
    if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(name, v);
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(text.to_owned()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns() {
        assert!(pattern_matches("/assets/*", "/assets/a/b/c.iso"));
        assert!(!pattern_matches("/assets/*", "/image/assets/x"));
        assert!(pattern_matches("/a?c", "/abc"));
        assert!(!pattern_matches("/assets/*", "/Assets/x"));
    }
}
