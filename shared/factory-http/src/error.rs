//! The one error type of the HTTP layer and its one rendering: Go's `http.Error` (plain text,
//! message + newline). Client errors carry their precise message; server errors answer with a
//! generic text and log the detail, so that internals (bucket names, paths) never leak.

use std::error::Error as _;
use std::fmt::Write as _;

use axum::response::{IntoResponse, Response};
use factory_core::schematic::SchematicError;
use factory_core::version::TalosVersion;
use factory_store::StoreError;
use factory_upstream::{CatalogError, UpstreamError};
use http::{header, HeaderValue, StatusCode};

use crate::repo::RepoError;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The schematic in the request is invalid (parse or validation): 400 with the parser's text.
    #[error(transparent)]
    InvalidSchematic(#[from] SchematicError),
    /// Another client error: 400 with this text.
    #[error("{0}")]
    BadRequest(String),
    /// `GET /schematics/{id}` for an unknown or malformed ID (the Go handler's own wording).
    #[error("schematic not found")]
    SchematicNotFound,
    /// No route for the path (Go's default not-found body).
    #[error("404 page not found")]
    PageNotFound,
    /// The path exists but not for this method; the router adds the `Allow` header.
    #[error("method {method} is not allowed for {path}; see the Allow header")]
    MethodNotAllowed { method: String, path: String },
    /// The request body exceeds what the route accepts.
    #[error("request body too large: the limit is {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The Talos version is not offered (spec §4.5): 404, printed without `v` as Go does.
    #[error("version {} is not available", .0.semver())]
    VersionNotAvailable(TalosVersion),
    /// The upstream release source failed. Its message names the upstream and what failed, and
    /// is shown: 503 when it cannot be reached, 502 when what it served is refused (signature,
    /// content, missing image); a cache (store) failure inside it is a plain 500.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The catalog routes are switched off in this process for this reason: 503, shown.
    #[error("{0}")]
    CatalogDisabled(String),
    /// A dependency is not reachable yet (readiness): 503, the reason is logged.
    #[error("not ready: {0}")]
    NotReady(String),
    /// Something the request names does not exist: 404 with this text.
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but this factory does not build it yet: 501 with this text.
    #[error("{0}")]
    NotImplemented(String),
    /// The asset is still being built: 503 with `Retry-After` (whole seconds) and this text.
    #[error("{message}")]
    Building { message: String, retry_after_secs: u64 },
    /// The asset cannot be built for a reason the user caused: 400 with the builder's text.
    #[error("{0}")]
    AssetBuild(String),
    /// The build pipeline failed: 500, logged.
    #[error(transparent)]
    Pipeline(#[from] factory_pipeline::PipelineError),
    /// Storage failed: 500, logged.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Storage failed: 500, logged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A server-side fault that is not the client's: 500, logged.
    #[error("{0}")]
    Internal(String),
    /// An error of the registry (`/v2`): rendered as the OCI distribution error envelope
    /// `{"errors":[{"code","message","detail"}]}` rather than Go's plain text, because registry
    /// clients (docker, containerd, skopeo) show the code and message of that envelope and
    /// nothing of a plain-text body. `cause` is the error it was made from, logged for 5xx.
    #[error("{message}")]
    Registry {
        status: StatusCode,
        code: &'static str,
        message: String,
        retry_after_secs: Option<u64>,
        allow: Option<&'static str>,
    },
}

impl ApiError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidSchematic(_) | Self::BadRequest(_) | Self::AssetBuild(_) => StatusCode::BAD_REQUEST,
            Self::SchematicNotFound | Self::PageNotFound | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Building { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::VersionNotAvailable(_) => StatusCode::NOT_FOUND,
            Self::Upstream(error) => match error {
                UpstreamError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamError::Signature { .. }
                | UpstreamError::Invalid { .. }
                | UpstreamError::NotFound(_) => StatusCode::BAD_GATEWAY,
                UpstreamError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::NotReady(_) | Self::CatalogDisabled(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Repo(_) | Self::Store(_) | Self::Internal(_) | Self::Pipeline(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Registry { status, .. } => *status,
        }
    }

    /// The text the client sees: the error itself for client errors, a fixed text for server
    /// errors (as the Go factory: `internal server error`, readiness `not ready`), except for
    /// upstream failures, whose message tells the client which upstream failed and how.
    pub fn public_message(&self) -> String {
        match self {
            Self::NotReady(_) => "not ready".to_owned(),
            Self::Upstream(UpstreamError::Store(_)) => "internal server error".to_owned(),
            Self::Upstream(_)
            | Self::CatalogDisabled(_)
            | Self::NotImplemented(_)
            | Self::Building { .. }
            | Self::Registry { .. } => self.to_string(),
            _ if self.status().is_server_error() => "internal server error".to_owned(),
            _ => self.to_string(),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::NotAvailable(version) => Self::VersionNotAvailable(version),
            CatalogError::Upstream(error) => Self::Upstream(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error()
            && !matches!(
                self,
                Self::Building { .. } | Self::NotImplemented(_) | Self::Registry { .. }
            )
        {
            // Logged here, inside the request span (method, path, request ID), exactly once.
            tracing::error!(status = status.as_u16(), error = %chain(&self), "request failed");
        }
        if let Self::Registry {
            code,
            message,
            retry_after_secs,
            allow,
            ..
        } = &self
        {
            return registry_error(status, code, message, *retry_after_secs, *allow);
        }
        let retry_after = match &self {
            Self::Building { retry_after_secs, .. } => Some(*retry_after_secs),
            _ => None,
        };
        let mut response = plain_text(status, self.public_message());
        crate::cache_control::set(&mut response, crate::cache_control::NO_STORE);
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A Go `http.Error` response: `text/plain; charset=utf-8`, `nosniff`, body = message + `\n`.
pub fn plain_text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The OCI distribution error envelope (distribution-spec "Error Codes"); `detail` is always
/// null (the message says everything).
fn registry_error(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after_secs: Option<u64>,
    allow: Option<&'static str>,
) -> Response {
    let body = serde_json::json!({
        "errors": [{ "code": code, "message": message, "detail": null }]
    });
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    if let Some(secs) = retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(allow) = allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    response
}

/// The error and its sources, `a: b: c`, for the log line.
fn chain(error: &ApiError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `transparent` variants repeat their source's text; say it once.
        if !text.ends_with(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn render(error: ApiError) -> (StatusCode, http::HeaderMap, String) {
        let response = error.into_response();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn client_errors_carry_their_message_go_style() {
        let (status, headers, body) = render(ApiError::SchematicNotFound).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "schematic not found\n");
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

        let (status, _, body) = render(ApiError::InvalidSchematic(SchematicError::Invalid(
            "yaml: bad".into(),
        )))
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, "yaml: bad\n"));
    }

    #[tokio::test]
    async fn server_errors_hide_their_detail() {
        let error = ApiError::Store(StoreError::Backend("bucket secret-bucket unreachable".into()));
        let (status, _, body) = render(error).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
        );

        let (status, _, body) = render(ApiError::NotReady("store down".into())).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        );
    }

    #[tokio::test]
    async fn catalog_errors_say_what_failed_upstream() {
        let version = TalosVersion::parse("v1.99.0").expect("version");
        let (status, _, body) = render(CatalogError::NotAvailable(version).into()).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "version 1.99.0 is not available\n")
        );

        let unreachable = UpstreamError::Unavailable {
            source_name: "registry https://ghcr.io".into(),
            message: "connection refused".into(),
        };
        let (status, _, body) = render(CatalogError::Upstream(unreachable).into()).await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream registry https://ghcr.io unavailable: connection refused\n"
            )
        );

        let refused = UpstreamError::Signature {
            image: "siderolabs/extensions@sha256:00".into(),
            reason: "no signature verifies".into(),
        };
        let (status, _, body) = render(ApiError::Upstream(refused)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(
            body.starts_with("signature verification failed for siderolabs/extensions"),
            "{body}"
        );

        // The cache is ours, not the upstream's: its failures stay internal.
        let store = UpstreamError::Store(StoreError::Backend("bucket secret-bucket".into()));
        let (status, _, body) = render(ApiError::Upstream(store)).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
        );

        let (status, _, body) = render(ApiError::CatalogDisabled(
            "no key: pass --upstream-cosign-key".into(),
        ))
        .await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "no key: pass --upstream-cosign-key\n"
            )
        );
    }
}
