//! The one error type of the HTTP layer and its one rendering: Go's `http.Error` (plain text,
//! message + newline). Client errors carry their precise message; server errors answer with a
//! generic text and log the detail, so that internals (bucket names, paths) never leak.

use std::error::Error as _;
use std::fmt::Write as _;

use axum::response::{IntoResponse, Response};
use factory_core::schematic::SchematicError;
use factory_store::StoreError;
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
    /// A dependency is not reachable yet (readiness): 503, the reason is logged.
    #[error("not ready: {0}")]
    NotReady(String),
    /// Storage failed: 500, logged.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Storage failed: 500, logged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A server-side fault that is not the client's: 500, logged.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidSchematic(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::SchematicNotFound | Self::PageNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Repo(_) | Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The text the client sees: the error itself for client errors, a fixed text for server
    /// errors (as the Go factory: `internal server error`, readiness `not ready`).
    pub fn public_message(&self) -> String {
        match self {
            Self::NotReady(_) => "not ready".to_owned(),
            _ if self.status().is_server_error() => "internal server error".to_owned(),
            _ => self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // Logged here, inside the request span (method, path, request ID), exactly once.
            tracing::error!(status = status.as_u16(), error = %chain(&self), "request failed");
        }
        plain_text(status, self.public_message())
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
}
