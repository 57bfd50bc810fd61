//! `GET|HEAD /image/{schematic}/{version}/{*path}` (spec §4.3, issue 4: build on miss) and the
//! object route `GET|HEAD /assets/{*key}` that serves built assets from the content store (the
//! redirect target when no CDN is configured, as in the local server).
//!
//! Processing order of the image route, as the Go handler: strip a `.sha256` / `.sha512` suffix;
//! load the schematic (404); the version (`v` added; malformed → 400, where Go answers 500; not
//! offered → 404); parse the path (400); enhance from the schematic (400), which includes
//! resolving the schematic's official extensions in the version's catalog (names, aliases: see
//! [`factory_assets::extensions`]; an unknown one → 400 naming it and the version); then, ours:
//! profiles this factory does not build yet → 501; the download name (`?filename=`, validated →
//! 400); the exact imager digest → cache key (over the profile, the imager and extension digests
//! and the schematic extension's author); get or build within the wait budget.
//!
//! Answers: published → `GET` a `302` to `<external URL>/assets/<object key>` (with
//! `?filename=` when a download name was asked for), `HEAD` a `200` with the object's headers
//! and no redirect, a checksum suffix the `<hex>  <file name>\n` line; still building → `503`
//! with `Retry-After`; a remembered user-caused failure → `400` with its message.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use factory_core::profile::{content_type, download_file_name};
use factory_pipeline::keys::ASSETS_PREFIX;
use factory_pipeline::{Published, Response as PipelineResponse};
use http::{header, HeaderValue, Method, StatusCode};

use factory_store::PresignHeaders;

use crate::cache_control;
use crate::{ApiError, AppState, AssetLinks};

/// The image route.
pub fn image_router(state: AppState) -> Router {
    Router::new()
        .route("/image/{schematic}/{version}/{*path}", get(image))
        .with_state(state)
}

/// The object route serving `assets/...` keys of the content store.
pub fn assets_router(state: AppState) -> Router {
    Router::new()
        .route("/assets/{*key}", get(asset))
        .with_state(state)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    Sha256,
    Sha512,
}

/// `path` without a checksum suffix, and which one it had.
fn strip_checksum(path: &str) -> (&str, Option<Checksum>) {
    if let Some(p) = path.strip_suffix(".sha512") {
        (p, Some(Checksum::Sha512))
    } else if let Some(p) = path.strip_suffix(".sha256") {
        (p, Some(Checksum::Sha256))
    } else {
        (path, None)
    }
}

/// The `filename` query parameter, if the query parses (Go ignores malformed pairs).
fn filename_query(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Option<String> {
    query
        .ok()
        .and_then(|Query(pairs)| pairs.into_iter().find(|(k, _)| k == "filename"))
        .map(|(_, v)| v)
}

async fn image(
    State(state): State<AppState>,
    method: Method,
    params: Result<Path<(String, String, String)>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((schematic_id, version_text, raw_path)) =
        params.map_err(|e| ApiError::BadRequest(format!("invalid request path: {e}")))?;
    let (path, checksum) = strip_checksum(&raw_path);

    let asked_name = filename_query(query);
    let memo_key = (schematic_id, version_text, path.to_owned());
    let request = match state.plans().get(&memo_key) {
        // Resolved before: the lookups and the plan succeeded then, so only the download name
        // (per request, checked below) can still be refused, as it would be after them.
        Some(request) => request,
        None => {
            let (schematic_id, version_text, _) = &memo_key;
            let super::lookup::Target {
                schematic, version, ..
            } = super::lookup::schematic_and_version(&state, schematic_id, version_text).await?;
            let planned = super::build::plan(&state, &schematic, &version, path).await?;
            download_file_name(path, asked_name.as_deref())
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let request = Arc::new(super::build::resolve(&state, &schematic, &planned).await?);
            state.plans().insert(memo_key, Arc::clone(&request));
            request
        }
    };
    let file_name =
        download_file_name(path, asked_name.as_deref()).map_err(|e| ApiError::BadRequest(e.to_string()))?;

    let answer = state
        .pipeline()?
        .get_or_build(&request.cache_key, &request.spec, state.image_wait_budget())
        .await?;
    let published = match answer {
        PipelineResponse::Served(published) => published,
        PipelineResponse::Building { retry_after } => {
            let secs = retry_after.as_secs().max(1);
            return Err(ApiError::Building {
                message: format!("{path} is being built; retry in {secs} seconds"),
                retry_after_secs: secs,
            });
        }
        PipelineResponse::Failed(message) => return Err(ApiError::AssetBuild(message)),
    };

    if let Some(checksum) = checksum {
        let hex = match checksum {
            Checksum::Sha256 => &published.sha256,
            Checksum::Sha512 => &published.sha512,
        };
        let response = (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{hex}  {file_name}\n"),
        )
            .into_response();
        return Ok(cache_control::with(response, cache_control::ASSET_LINK));
    }

    if method == Method::HEAD {
        let response = object_headers(
            StatusCode::OK,
            published.size,
            content_type(path),
            &file_name,
            Body::empty(),
        )?;
        return Ok(cache_control::with(response, cache_control::ASSET_LINK));
    }
    let named = asked_name
        .is_some_and(|n| !n.is_empty())
        .then_some(file_name.as_str());
    redirect(&state, &published, content_type(path), named).await
}

/// `302` to where the bytes are ([`AssetLinks`]), carrying the download name when one was asked
/// for.
async fn redirect(
    state: &AppState,
    published: &Published,
    content_type: &str,
    file_name: Option<&str>,
) -> Result<Response, ApiError> {
    let with_name = |base: &str| {
        let mut location = format!("{}/{}", base.trim_end_matches('/'), published.object_key);
        if let Some(name) = file_name {
            location.push_str("?filename=");
            location.push_str(&percent_encode(name));
        }
        location
    };
    // Presigned URLs expire and differ per request: never kept.
    let mut caching = cache_control::ASSET_LINK;
    let location = match &state.config().asset_links {
        AssetLinks::Cdn(base) => with_name(base),
        AssetLinks::ObjectRoute => with_name(&state.config().external_url),
        AssetLinks::Presigned(ttl) => {
            caching = cache_control::NO_STORE;
            let headers = PresignHeaders {
                content_type: Some(content_type.to_owned()),
                content_disposition: Some(attachment(file_name.unwrap_or(&published.file_name))),
            };
            match state
                .store()
                .presign_get(&published.object_key, *ttl, &headers)
                .await?
            {
                Some(url) => url,
                None => with_name(&state.config().external_url),
            }
        }
    };
    let value = HeaderValue::from_str(&location)
        .map_err(|e| ApiError::Internal(format!("redirect location {location:?}: {e}")))?;
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(header::LOCATION, value);
    cache_control::set(&mut response, caching);
    Ok(response)
}

/// `attachment; filename="<name>"`; names are validated to need no escaping.
fn attachment(file_name: &str) -> String {
    format!("attachment; filename=\"{file_name}\"")
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A download response: `Content-Length`, `Content-Type`, `Content-Disposition: attachment`.
fn object_headers(
    status: StatusCode,
    size: u64,
    content_type: &str,
    file_name: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let disposition = HeaderValue::from_str(&attachment(file_name))
        .map_err(|e| ApiError::BadRequest(format!("invalid filename: {e}")))?;
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    Ok(response)
}

/// Streams `assets/<key>` from the store (headers only for `HEAD`).
async fn asset(
    State(state): State<AppState>,
    method: Method,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = key.map_err(|_| ApiError::PageNotFound)?;
    if key
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(ApiError::PageNotFound);
    }
    let object_key = format!("{ASSETS_PREFIX}{key}");
    let name = key.rsplit('/').next().unwrap_or(&key);
    let file_name = download_file_name(name, filename_query(query).as_deref())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let kind = content_type(name);
    if method == Method::HEAD {
        let meta = state
            .store()
            .head(&object_key)
            .await?
            .ok_or(ApiError::PageNotFound)?;
        let response = object_headers(StatusCode::OK, meta.size, kind, &file_name, Body::empty())?;
        // Asset keys name their content (as the CDN's viewer-response function says too).
        return Ok(cache_control::with(response, cache_control::IMMUTABLE));
    }
    let (meta, stream) = state
        .store()
        .get_stream(&object_key)
        .await?
        .ok_or(ApiError::PageNotFound)?;
    let body = match key.split('/').nth(1) {
        Some(sha256) => Body::from_stream(verified(stream, sha256.to_owned(), object_key)),
        None => Body::from_stream(stream),
    };
    let response = object_headers(StatusCode::OK, meta.size, kind, &file_name, body)?;
    Ok(cache_control::with(response, cache_control::IMMUTABLE))
}

/// The object's bytes, re-hashed on the way out: asset keys name their sha256
/// (`<cache key>/<sha256>/<file>`), and bytes that do not hash to it end the body with an error,
/// so the client sees a broken transfer (short of `Content-Length`) rather than a complete,
/// altered file. The last chunk is held back until the hash is known: with `Content-Length` set,
/// the server stops reading the body once that many bytes went out, so an error after the last
/// byte would never be seen. Cheap (one pass, one chunk held); the image route's `HEAD` check
/// makes the next request rebuild.
pub(crate) fn verified(
    stream: factory_store::ByteStream,
    expected_sha256: String,
    object_key: String,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    use futures::StreamExt;
    use sha2::Digest;
    struct State {
        inner: factory_store::ByteStream,
        hasher: sha2::Sha256,
        held: Option<bytes::Bytes>,
        expected: String,
        object_key: String,
        finished: bool,
    }
    let state = State {
        inner: stream,
        hasher: sha2::Sha256::new(),
        held: None,
        expected: expected_sha256,
        object_key,
        finished: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            match st.inner.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    st.hasher.update(&chunk);
                    if let Some(previous) = st.held.replace(chunk) {
                        return Some((Ok(previous), st));
                    }
                }
                Some(Err(e)) => {
                    st.finished = true;
                    return Some((Err(std::io::Error::other(e)), st));
                }
                None => {
                    st.finished = true;
                    let actual = hex::encode(st.hasher.clone().finalize());
                    if actual != st.expected {
                        tracing::error!(object_key = %st.object_key, actual, "served object does not match its content address; aborting the response");
                        let error = std::io::Error::other(format!("{} is corrupt", st.object_key));
                        return Some((Err(error), st));
                    }
                    return st.held.take().map(|last| (Ok(last), st));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_suffixes_are_stripped() {
        assert_eq!(
            strip_checksum("kernel-amd64.sha256"),
            ("kernel-amd64", Some(Checksum::Sha256))
        );
        assert_eq!(
            strip_checksum("kernel-amd64.sha512"),
            ("kernel-amd64", Some(Checksum::Sha512))
        );
        assert_eq!(strip_checksum("kernel-amd64"), ("kernel-amd64", None));
    }

    #[test]
    fn percent_encoding_keeps_unreserved() {
        assert_eq!(percent_encode("a b+c.iso"), "a%20b%2Bc.iso");
    }
}
