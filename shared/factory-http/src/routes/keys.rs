//! Health, readiness and the public signing key: the routes that need no schematic.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::CONTENT_TYPE;
use http::StatusCode;

use crate::{ApiError, AppState};

/// The object `/readyz` asks the store about. It never exists; answering "absent" proves the
/// store is reachable and the bucket is there. Under `schematics/` so that it needs no
/// permission beyond what `GET /schematics/{id}` needs (for S3: `s3:GetObject` and, so that an
/// absent object reads as 404 rather than 403, `s3:ListBucket`).
pub const READYZ_PROBE_KEY: &str = "schematics/readyz-probe";

/// `GET|HEAD /healthz` and `/readyz`.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `GET /oci/cosign/signing-key.pub` plus the health routes.
pub fn keys_router(state: AppState) -> Router {
    Router::new()
        .route("/oci/cosign/signing-key.pub", get(signing_key))
        .with_state(state.clone())
        .merge(health_router(state))
}

/// The process is up.
async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// The process can serve: its store answers.
async fn readyz(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    match state.store().head(READYZ_PROBE_KEY).await {
        Ok(_) => Ok(StatusCode::OK),
        Err(e) => Err(ApiError::NotReady(format!("content store: {e}"))),
    }
}

/// The PKIX PEM of the key that signs cache entries and installer images.
async fn signing_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let pem = state
        .signing_key_pem()
        .ok_or_else(|| ApiError::Internal("no signing key is configured for this function".into()))?;
    Ok(([(CONTENT_TYPE, "application/x-pem-file")], pem.to_owned()).into_response())
}
