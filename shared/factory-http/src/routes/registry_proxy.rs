//! The source-image proxy `/v2/siderolabs/<component>/...` (spec §8.6): the factory's own
//! upstream release images (installer-base, installer, imager, extensions, overlays,
//! talosctl-all), read through the same verified-by-digest client the builder uses.
//!
//! Unlike the Go factory, which reverse-proxies only to a plain-HTTP core registry (and answers
//! `503` otherwise), this goes through the factory's upstream client, so it works with any
//! upstream (authenticated registries and OCI layouts included). Referrers are not proxied (the
//! upstream port has no referrers API): `501 UNSUPPORTED`. Blobs are streamed, so on Lambda they
//! are limited by the response size cap; the proxy is a convenience for air-gapped mirrors and
//! tests, where the local server serves it.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use factory_upstream::UpstreamError;

use super::registry::oci;
use crate::{ApiError, AppState};

/// What is asked of a source image.
#[derive(Debug)]
pub(crate) enum ProxyResource<'a> {
    Manifest(&'a str),
    Blob(&'a str),
    /// Not proxied (see the module documentation): the digest is not looked at.
    Referrers,
    Tags,
}

/// An upstream "not found" is the client's 404 with the code of what was asked for.
fn not_found(code: &'static str) -> impl Fn(UpstreamError) -> ApiError {
    move |error| match error {
        UpstreamError::NotFound(what) => oci(StatusCode::NOT_FOUND, code, format!("{what} not found")),
        other => ApiError::Upstream(other),
    }
}

pub(crate) async fn serve(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    component: &str,
    resource: ProxyResource<'_>,
) -> Result<Response, ApiError> {
    let upstream = state.catalog()?.upstream();
    let components = &upstream.config().components;
    let repository = match component {
        "installer-base" => &components.installer_base,
        "installer" => &components.installer,
        "imager" => &components.imager,
        "extensions" => &components.extensions,
        "overlays" => &components.overlays,
        "talosctl-all" => &components.talosctl_all,
        other => {
            return Err(oci(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                format!("siderolabs/{other} is not a source image of this factory"),
            ))
        }
    };
    let source = upstream.source();
    match resource {
        ProxyResource::Manifest(reference) => {
            let manifest = source
                .manifest(repository, reference)
                .await
                .map_err(not_found("MANIFEST_UNKNOWN"))?;
            let stored = factory_registry::StoredManifest {
                media_type: manifest.media_type,
                digest: manifest.digest,
                bytes: manifest.bytes,
            };
            super::registry::manifest_response(method, headers, stored)
        }
        ProxyResource::Blob(digest) => {
            super::registry::valid_digest(digest)?;
            let reader = source
                .blob(repository, digest)
                .await
                .map_err(not_found("BLOB_UNKNOWN"))?;
            let body = if method == Method::HEAD {
                Body::empty()
            } else {
                let stream = tokio_util::io::ReaderStream::new(reader)
                    .map(|chunk| chunk.map_err(|e| factory_store::StoreError::Backend(e.to_string())))
                    .boxed();
                let hex = digest.trim_start_matches("sha256:").to_owned();
                Body::from_stream(super::image::verified(
                    stream,
                    hex,
                    format!("{repository}@{digest}"),
                ))
            };
            let mut response = (StatusCode::OK, body).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(
                "docker-content-digest",
                HeaderValue::from_str(digest).map_err(|e| ApiError::Internal(e.to_string()))?,
            );
            Ok(response)
        }
        ProxyResource::Referrers => Err(oci(
            StatusCode::NOT_IMPLEMENTED,
            "UNSUPPORTED",
            "referrers of source images are not proxied by this factory",
        )),
        ProxyResource::Tags => {
            let mut tags = source
                .list_tags(repository)
                .await
                .map_err(not_found("NAME_UNKNOWN"))?;
            tags.sort();
            let body = serde_json::json!({ "name": format!("siderolabs/{component}"), "tags": tags });
            let mut response = (StatusCode::OK, body.to_string()).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
    }
}
