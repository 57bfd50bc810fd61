//! The read-only OCI distribution API under `/v2` (spec §8, issue 7): customised Talos installer
//! images `<image>/<schematic>:<version>` for `docker pull`, containerd, skopeo and Talos
//! upgrades, and the source-image proxy `/v2/siderolabs/<component>/…`.
//!
//! Routing follows the Go factory (spec §8.1): below `/v2/`, the last two segments are
//! `<resource>/<reference>` (`tags/list` aside) and the rest is the repository; a repository that
//! starts with `siderolabs` goes to the proxy, any other must be exactly `<image>/<schematic>`.
//!
//! A version tag is published through the build pipeline as ONE job (a
//! [`factory_registry::job::registry_job`]) covering both architectures, so that any number of
//! concurrent pulls build once; the builder publishes every blob content-addressed, the OCI index,
//! its cosign signature, and only then the tag record (the job's asset), so a resolvable tag
//! always has a signature. Serving a tag re-checks that signature with the factory's public key
//! (spec §8.3 step 4); a tag whose signature or bytes do not verify is rebuilt.
//!
//! Deliberate differences from the Go factory, documented in docs/api.md: errors use the OCI
//! error envelope; manifests are served by this function (not proxied to a backing registry) and
//! blobs redirect (`307`) to the CDN or a presigned object URL (streamed by the local server);
//! `tags/list` lists every version the factory can build plus `latest`; writes answer `405`
//! `UNSUPPORTED`; a cold tag that does not finish within the wait budget answers `503`
//! `UNAVAILABLE` with `Retry-After`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use factory_core::arch::Arch;
use factory_core::schematic::{Schematic, SchematicId};
use factory_core::version::TalosVersion;
use factory_pipeline::Response as PipelineResponse;
use factory_registry::job::{registry_job, PlatformBuild};
use factory_registry::keys::blob_key;
use factory_registry::name::ImageName;
use factory_registry::{media, RegistryError, RegistryReader, StoredManifest};
use factory_store::PresignHeaders;
use factory_upstream::UpstreamError;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::{ApiError, AppState, AssetLinks};

/// The architectures of every installer index, in index order (spec §8.3).
const ARCHES: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// The `/v2` routes.
pub fn registry_router(state: AppState) -> Router {
    Router::new()
        .route("/v2", any(ping))
        .route("/v2/", any(ping))
        .route("/v2/{*rest}", any(dispatch))
        .with_state(state)
}

/// An error of the OCI envelope (see [`ApiError::Registry`]).
pub(crate) fn oci(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Registry {
        status,
        code,
        message: message.into(),
        retry_after_secs: None,
        allow: None,
    }
}

/// The registry's answer to an error of the shared layers (schematic lookup, profile planning,
/// pipeline, store): the same status where one fits, with the OCI code clients understand.
fn to_oci(error: ApiError) -> ApiError {
    let status = error.status();
    match error {
        ApiError::Registry { .. } => error,
        ApiError::SchematicNotFound | ApiError::NotFound(_) | ApiError::PageNotFound => {
            oci(StatusCode::NOT_FOUND, "NAME_UNKNOWN", error.to_string())
        }
        ApiError::VersionNotAvailable(_) => oci(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", error.to_string()),
        ApiError::BadRequest(_) | ApiError::AssetBuild(_) | ApiError::InvalidSchematic(_) => oci(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            format!("the installer cannot be built: {error}"),
        ),
        ApiError::NotImplemented(_) => oci(StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED", error.to_string()),
        ApiError::Building {
            message,
            retry_after_secs,
        } => ApiError::Registry {
            status,
            code: "UNAVAILABLE",
            message,
            retry_after_secs: Some(retry_after_secs),
            allow: None,
        },
        ApiError::CatalogDisabled(_) | ApiError::Upstream(UpstreamError::Unavailable { .. }) => oci(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            error.public_message(),
        ),
        other => {
            let message = other.public_message();
            if status.is_server_error() {
                tracing::error!(status = status.as_u16(), error = %other, "registry request failed");
            }
            oci(status, "UNKNOWN", message)
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::Store(e) => ApiError::Store(e),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// `GET /v2/`: the API version check every client makes first.
async fn ping(method: Method) -> Result<Response, ApiError> {
    refuse_writes(&method)?;
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        "{}",
    )
        .into_response();
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    Ok(response)
}

/// The registry is read-only: every other method is `405 UNSUPPORTED` (what distribution answers
/// in read-only mode), so that a `docker push` fails at its first request with a clear message.
fn refuse_writes(method: &Method) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    Err(ApiError::Registry {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "UNSUPPORTED",
        message: format!("this registry is read-only: {method} is not supported"),
        retry_after_secs: None,
        allow: Some("GET, HEAD"),
    })
}

/// A parsed `/v2/...` path (spec §8.1).
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Image {
        image: &'a str,
        schematic: &'a str,
        resource: Resource<'a>,
    },
    Proxy {
        component: String,
        resource: Resource<'a>,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum Resource<'a> {
    Manifest(&'a str),
    Blob(&'a str),
    Referrers(&'a str),
    Tags,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Route<'a>> {
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() < 3 || segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        let (repository, tail) = segments.split_at(segments.len() - 2);
        let resource = match (tail[0], tail[1]) {
            ("tags", "list") => Resource::Tags,
            ("manifests", reference) => Resource::Manifest(reference),
            ("blobs", digest) => Resource::Blob(digest),
            ("referrers", digest) => Resource::Referrers(digest),
            _ => return None,
        };
        if repository[0] == "siderolabs" {
            if repository.len() < 2 {
                return None;
            }
            return Some(Route::Proxy {
                component: repository[1..].join("/"),
                resource,
            });
        }
        match repository {
            [image, schematic] => Some(Route::Image {
                image,
                schematic,
                resource,
            }),
            _ => None,
        }
    }
}

async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    refuse_writes(&method)?;
    let path = rest.trim_matches('/');
    if path.is_empty() {
        return ping(method).await;
    }
    let route = Route::parse(path).ok_or_else(|| {
        oci(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("unknown registry path: {path:?}"),
        )
    })?;
    let answer = match route {
        Route::Image {
            image,
            schematic,
            resource,
        } => {
            serve_image(
                &state,
                &method,
                &headers,
                query.as_deref(),
                image,
                schematic,
                resource,
            )
            .await
        }
        Route::Proxy { component, resource } => {
            super::registry_proxy::serve(&state, &method, &headers, &component, resource_parts(&resource))
                .await
        }
    };
    answer.map_err(to_oci)
}

/// The proxy's view of a resource.
fn resource_parts<'a>(resource: &Resource<'a>) -> super::registry_proxy::ProxyResource<'a> {
    use super::registry_proxy::ProxyResource;
    match resource {
        Resource::Manifest(r) => ProxyResource::Manifest(r),
        Resource::Blob(d) => ProxyResource::Blob(d),
        Resource::Referrers(_) => ProxyResource::Referrers,
        Resource::Tags => ProxyResource::Tags,
    }
}

/// `<image>/<schematic>/...`: the schematic must exist (404 `NAME_UNKNOWN`), then the image name
/// must be one of spec §8.2 (400 `NAME_INVALID`), in the Go handler's order.
async fn serve_image(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    image: &str,
    schematic_id: &str,
    resource: Resource<'_>,
) -> Result<Response, ApiError> {
    let unknown = || {
        oci(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("schematic ID {schematic_id:?} not found"),
        )
    };
    let id = SchematicId::parse(schematic_id).ok_or_else(unknown)?;
    let schematic = state.schematics().get(&id).await?.ok_or_else(unknown)?;
    let name = ImageName::parse(image).ok_or_else(|| {
        oci(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid image: {image}"),
        )
    })?;
    let reader = state.registry_reader()?;
    match resource {
        Resource::Manifest(reference) => {
            let manifest = if reference.starts_with("sha256:") {
                let digest = valid_digest(reference)?;
                reader
                    .manifest(digest)
                    .await?
                    .ok_or_else(|| manifest_unknown(reference))?
            } else if let Some(hex) = reference
                .strip_prefix("sha256-")
                .and_then(|r| r.strip_suffix(".sig"))
            {
                let subject = format!("sha256:{hex}");
                valid_digest(&subject)?;
                reader
                    .signature_manifest(&subject)
                    .await?
                    .ok_or_else(|| manifest_unknown(reference))?
            } else {
                let version = tag_version(state, reference).await?;
                publish_tag(state, reader, &schematic, &name, image, schematic_id, &version).await?
            };
            manifest_response(method, headers, manifest)
        }
        Resource::Blob(digest) => {
            let digest = valid_digest(digest)?;
            let meta = reader.blob(digest).await?.ok_or_else(|| {
                oci(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    format!("blob {digest} is not known to this registry"),
                )
            })?;
            blob_response(state, method, digest, meta.size).await
        }
        Resource::Referrers(digest) => {
            let digest = valid_digest(digest)?;
            let artifact_type = query_param(query, "artifactType");
            let bytes = reader.referrers(digest, artifact_type.as_deref()).await?;
            let mut response = bytes_response(method, media::OCI_INDEX, &sha256_digest(&bytes), bytes)?;
            if artifact_type.is_some() {
                response
                    .headers_mut()
                    .insert(FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
            }
            Ok(response)
        }
        Resource::Tags => tags_response(state, method, &format!("{image}/{schematic_id}"), query).await,
    }
}

fn manifest_unknown(reference: &str) -> ApiError {
    oci(
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
        format!("manifest {reference} is not known to this registry"),
    )
}

/// `sha256:<64 lowercase hex>`, the only digests the factory publishes: 400 `DIGEST_INVALID`
/// otherwise.
pub(crate) fn valid_digest(digest: &str) -> Result<&str, ApiError> {
    match blob_key(digest) {
        Some(_) => Ok(digest),
        None => Err(oci(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("invalid digest {digest:?}: expected sha256:<64 lowercase hex digits>"),
        )),
    }
}

/// A tag → the Talos version it names: `latest` is the newest offered release (not a
/// pre-release); other tags must be offered versions (`v` included, as Talos tags are).
async fn tag_version(state: &AppState, tag: &str) -> Result<TalosVersion, ApiError> {
    let catalog = state.catalog()?;
    if tag == "latest" {
        let versions = catalog.versions().await?;
        return versions
            .into_iter()
            .filter(|v| !v.is_pre_release())
            .max()
            .ok_or_else(|| manifest_unknown("latest (no Talos release is offered)"));
    }
    let version = tag
        .starts_with('v')
        .then(|| TalosVersion::parse(tag).ok())
        .flatten()
        .ok_or_else(|| {
            oci(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                format!("tag {tag:?} is not known: tags are Talos versions (v1.12.1) or latest"),
            )
        })?;
    if !catalog.is_available(&version).await? {
        return Err(oci(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("version {} is not available", version.semver()),
        ));
    }
    Ok(version)
}

/// The published, signature-checked index of `<image>/<schematic>:<version>`, built through
/// the pipeline on first use (both architectures in one job). A record whose signature does not
/// verify is forgotten and rebuilt (spec §8.3 step 4).
///
/// A tag once published is served through its pointer ([`tag_pointer_key`]) without resolving
/// anything upstream, as the Go factory serves a built tag from its registry: a warm pull costs a
/// few store reads and one signature check, however far the upstream registry is. Without a
/// pointer, or when what it points to no longer verifies, the full path runs: profiles, upstream
/// digests, the registry job's cache key.
async fn publish_tag(
    state: &AppState,
    reader: &RegistryReader,
    schematic: &Schematic,
    name: &ImageName,
    image: &str,
    schematic_id: &str,
    version: &TalosVersion,
) -> Result<StoredManifest, ApiError> {
    let tag = version.to_string();
    let pointer = tag_pointer_key(image, schematic_id, &tag);
    if let Some(index) = through_pointer(state, reader, &pointer).await {
        return Ok(index);
    }

    let mut platforms = Vec::with_capacity(ARCHES.len());
    for arch in ARCHES {
        let path = name.installer_path(arch);
        let planned = super::build::plan(state, schematic, version, &path).await?;
        let request = super::build::resolve(state, schematic, &planned).await?;
        platforms.push(PlatformBuild {
            arch,
            cache_key: request.cache_key,
            spec: request.spec,
        });
    }
    let identity = format!(
        "{}/{image}/{schematic_id}",
        registry_host(&state.config().external_url)
    );
    let (cache_key, spec) = registry_job(&identity, &tag, &platforms);
    let pipeline = state.pipeline()?;
    let building = |retry_after: std::time::Duration| {
        let secs = retry_after.as_secs().max(1);
        ApiError::Building {
            message: format!("{image}:{tag} is being built; retry in {secs} seconds"),
            retry_after_secs: secs,
        }
    };
    match pipeline
        .get_or_build(&cache_key, &spec, state.registry_wait_budget())
        .await?
    {
        PipelineResponse::Served(published) => {
            let record = reader.tag_record(&published.object_key).await?;
            match reader.verify(&record).await {
                Ok(index) => {
                    write_pointer(state, &pointer, &cache_key).await;
                    Ok(index)
                }
                Err(error @ (RegistryError::Signature(_) | RegistryError::Corrupt(_))) => {
                    tracing::warn!(%error, %identity, %tag, "published installer index does not verify; rebuilding");
                    pipeline.invalidate(&cache_key, &spec).await?;
                    Err(building(std::time::Duration::from_secs(10)))
                }
                Err(other) => Err(other.into()),
            }
        }
        PipelineResponse::Building { retry_after } => Err(building(retry_after)),
        PipelineResponse::Failed(message) => Err(ApiError::AssetBuild(message)),
    }
}

/// Where the registry job's cache key of a published tag is remembered: under `cache/` (derived
/// data any request-side function may write and lose without harm).
fn tag_pointer_key(image: &str, schematic_id: &str, tag: &str) -> String {
    format!("cache/registry-tags/{image}/{schematic_id}/{tag}.json")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TagPointer {
    cache_key: String,
}

/// The index the pointer leads to, if all of it is there and verifies: the signed index
/// record, the intact tag record, the cosign signature. Anything else (no pointer, a store error,
/// a record that fails) falls back to the full path, which repairs it: never an error here.
async fn through_pointer(state: &AppState, reader: &RegistryReader, pointer: &str) -> Option<StoredManifest> {
    let (_, bytes) = state.store().get(pointer).await.ok()??;
    let TagPointer { cache_key } = serde_json::from_slice(&bytes).ok()?;
    let index = state.pipeline().ok()?.index();
    let published = index.lookup(&cache_key).await.ok()??;
    let record = reader.tag_record(&published.object_key).await.ok()?;
    match reader.verify(&record).await {
        Ok(index) => Some(index),
        Err(error) => {
            tracing::warn!(%error, pointer, "a published tag does not verify; taking the full path");
            None
        }
    }
}

/// Remembers a served tag's job; a failure only costs the next pull the full path.
async fn write_pointer(state: &AppState, pointer: &str, cache_key: &str) {
    let Ok(body) = serde_json::to_vec(&TagPointer {
        cache_key: cache_key.to_owned(),
    }) else {
        return;
    };
    if let Err(error) = state
        .store()
        .put(
            pointer,
            body.into(),
            Some("application/json"),
            factory_store::PutCondition::Overwrite,
        )
        .await
    {
        tracing::warn!(%error, pointer, "could not remember the published tag");
    }
}

/// The registry host of the cosign identity (`docker-reference`): the external URL without
/// scheme and path, as clients name the image (`factory.example.com/metal-installer/<id>`).
fn registry_host(external_url: &str) -> &str {
    let rest = external_url
        .split_once("://")
        .map_or(external_url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// Whether the request's `Accept` allows `media_type` (no header, or a wildcard, allows all).
fn acceptable(headers: &HeaderMap, media_type: &str) -> bool {
    let mut any = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let item = item.split(';').next().unwrap_or_default().trim();
            if item.is_empty() {
                continue;
            }
            any = true;
            if item == media_type || item == "*/*" {
                return true;
            }
        }
    }
    !any
}

/// A manifest by content: `Content-Type` = its media type, `Docker-Content-Digest`, exact
/// `Content-Length`; `404 MANIFEST_UNKNOWN` when the client's `Accept` excludes its type (as
/// distribution does for an OCI index asked for with Docker types only).
pub(crate) fn manifest_response(
    method: &Method,
    headers: &HeaderMap,
    manifest: StoredManifest,
) -> Result<Response, ApiError> {
    if !acceptable(headers, &manifest.media_type) {
        return Err(oci(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!(
                "manifest {} is an {}, which the request's Accept header does not allow",
                manifest.digest, manifest.media_type
            ),
        ));
    }
    bytes_response(method, &manifest.media_type, &manifest.digest, manifest.bytes)
}

fn bytes_response(
    method: &Method,
    media_type: &str,
    digest: &str,
    bytes: bytes::Bytes,
) -> Result<Response, ApiError> {
    let length = bytes.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(media_type)?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(CONTENT_DIGEST, header_value(digest)?);
    h.insert(header::ETAG, header_value(&format!("\"{digest}\""))?);
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    Ok(response)
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(|e| ApiError::Internal(format!("header value {text:?}: {e}")))
}

/// A blob: `HEAD` answers from the store's metadata; `GET` redirects (`307`) to the CDN or a
/// presigned URL, or streams the bytes (re-hashed on the way out) where there is neither.
async fn blob_response(
    state: &AppState,
    method: &Method,
    digest: &str,
    size: u64,
) -> Result<Response, ApiError> {
    let key = blob_key(digest).ok_or_else(|| ApiError::Internal(format!("digest {digest}")))?;
    let headers_only = |body: Body| -> Result<Response, ApiError> {
        let mut response = (StatusCode::OK, body).into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        h.insert(CONTENT_DIGEST, header_value(digest)?);
        h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        Ok(response)
    };
    if method == Method::HEAD {
        return headers_only(Body::empty());
    }
    let location = match &state.config().asset_links {
        AssetLinks::Cdn(base) => Some(format!("{}/{key}", base.trim_end_matches('/'))),
        AssetLinks::Presigned(ttl) => {
            let headers = PresignHeaders {
                content_type: Some("application/octet-stream".to_owned()),
                content_disposition: None,
            };
            state.store().presign_get(&key, *ttl, &headers).await?
        }
        AssetLinks::ObjectRoute => None,
    };
    if let Some(location) = location {
        let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
        let h = response.headers_mut();
        h.insert(header::LOCATION, header_value(&location)?);
        h.insert(CONTENT_DIGEST, header_value(digest)?);
        h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        return Ok(response);
    }
    let (_, stream) = state.store().get_stream(&key).await?.ok_or_else(|| {
        oci(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {digest} is not known to this registry"),
        )
    })?;
    let hex = digest.trim_start_matches("sha256:").to_owned();
    headers_only(Body::from_stream(super::image::verified(stream, hex, key)))
}

/// `tags/list`: every version the factory offers (each is built on first pull) and `latest`,
/// sorted, with the distribution API's `n`/`last` pagination.
async fn tags_response(
    state: &AppState,
    method: &Method,
    repository: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let mut tags: Vec<String> = state
        .catalog()?
        .versions()
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    tags.push("latest".to_owned());
    tags.sort();
    if let Some(last) = query_param(query, "last") {
        tags.retain(|t| *t > last);
    }
    if let Some(n) = query_param(query, "n") {
        let n: usize = n.parse().map_err(|_| {
            oci(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("invalid n {n:?}"),
            )
        })?;
        tags.truncate(n);
    }
    let body = serde_json::json!({ "name": repository, "tags": tags }).to_string();
    let bytes = bytes::Bytes::from(body);
    let mut response = bytes_response(method, "application/json", &sha256_digest(&bytes), bytes)?;
    response.headers_mut().remove(CONTENT_DIGEST);
    response.headers_mut().remove(header::ETAG);
    Ok(response)
}

/// One query parameter, percent-decoded (`artifactType` values contain `/` and `+`).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%' && i + 2 < bytes.len())
            .then(|| Some((hex(bytes[i + 1])?, hex(bytes[i + 2])?)))
            .flatten();
        match (b, escaped) {
            (_, Some((high, low))) => {
                // Two hex digits are < 256.
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_as_spec_8_1() {
        assert_eq!(
            Route::parse("metal-installer/abc/manifests/v1.12.1"),
            Some(Route::Image {
                image: "metal-installer",
                schematic: "abc",
                resource: Resource::Manifest("v1.12.1")
            })
        );
        assert_eq!(
            Route::parse("installer/abc/tags/list"),
            Some(Route::Image {
                image: "installer",
                schematic: "abc",
                resource: Resource::Tags
            })
        );
        assert_eq!(
            Route::parse("siderolabs/installer-base/blobs/sha256:00"),
            Some(Route::Proxy {
                component: "installer-base".into(),
                resource: Resource::Blob("sha256:00")
            })
        );
        for bad in [
            "a/b/c/manifests/v1",
            "siderolabs/installer/tags/v1",
            "siderolabs/manifests/v1",
            "a/manifests/v1",
            "a/b/uploads/x",
            "a//b/manifests/v1",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn accept_negotiation() {
        let mut headers = HeaderMap::new();
        assert!(acceptable(&headers, media::OCI_INDEX));
        headers.append(header::ACCEPT, HeaderValue::from_static(media::DOCKER_MANIFEST));
        assert!(!acceptable(&headers, media::OCI_INDEX));
        headers.append(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json; q=0.5, text/plain"),
        );
        assert!(acceptable(&headers, media::OCI_INDEX));
        let mut wild = HeaderMap::new();
        wild.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(acceptable(&wild, media::OCI_MANIFEST));
    }

    #[test]
    fn registry_host_drops_scheme_and_path() {
        assert_eq!(
            registry_host("https://factory.example.com/"),
            "factory.example.com"
        );
        assert_eq!(registry_host("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(registry_host("http://h:1/base/path/"), "h:1");
    }

    #[test]
    fn query_parameters_are_decoded() {
        let q = Some("n=2&artifactType=application%2Fvnd.dev.cosign.artifact.sig.v1%2Bjson");
        assert_eq!(
            query_param(q, "artifactType").as_deref(),
            Some("application/vnd.dev.cosign.artifact.sig.v1+json")
        );
        assert_eq!(query_param(q, "n").as_deref(), Some("2"));
        assert_eq!(query_param(q, "last"), None);
        assert_eq!(percent_decode("100%"), "100%");
    }
}
