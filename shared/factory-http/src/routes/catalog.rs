//! `GET /versions`, `GET /version/{version}/extensions/official` and
//! `GET /version/{version}/overlays/official` (spec §4.4–4.6).
//!
//! Two deliberate differences from the Go factory, for clients that parse the answers: they are
//! sent as `application/json` (Go lets them be sniffed as `text/plain`), and an empty list is
//! `[]` (Go encodes `null`). A malformed version is a 400 (Go: 500).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use factory_core::catalog::{extensions_json, overlays_json};
use factory_core::version::TalosVersion;
use http::header::CONTENT_TYPE;
use serde::Serialize;

use crate::cache_control;
use crate::gojson::go_json;
use crate::{ApiError, AppState};

/// The three catalog routes.
pub fn catalog_router(state: AppState) -> Router {
    Router::new()
        .route("/versions", get(versions))
        .route("/version/{version}/extensions/official", get(extensions))
        .route("/version/{version}/overlays/official", get(overlays))
        .with_state(state)
}

/// The offered versions, or with `?broken=true` (exactly that value, as Go's
/// `Query().Get("broken") == "true"`) the configured broken ones in configuration order. A query
/// that does not parse is treated as absent, as Go ignores malformed query pairs.
async fn versions(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let catalog = state.catalog()?;
    let broken = query
        .ok()
        .and_then(|Query(pairs)| pairs.into_iter().find(|(key, _)| key == "broken"))
        .is_some_and(|(_, value)| value == "true");
    let response = if broken {
        json(&catalog.broken())?
    } else {
        json(&catalog.versions().await?)?
    };
    Ok(cache_control::with(response, cache_control::VERSIONS))
}

async fn extensions(
    State(state): State<AppState>,
    version: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let catalog = state.catalog()?;
    let version = parse_version(version)?;
    let entries = catalog.extensions(&version).await?;
    let response = json(&extensions_json(&entries, &catalog.config().display_registry))?;
    Ok(cache_control::with(response, cache_control::CATALOG))
}

async fn overlays(
    State(state): State<AppState>,
    version: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let catalog = state.catalog()?;
    let version = parse_version(version)?;
    let entries = catalog.overlays(&version).await?;
    let response = json(&overlays_json(&entries, &catalog.config().display_registry))?;
    Ok(cache_control::with(response, cache_control::CATALOG))
}

/// The path's version, `v` optional, strict semver.
fn parse_version(version: Result<Path<String>, PathRejection>) -> Result<TalosVersion, ApiError> {
    let Path(text) = version.map_err(|e| ApiError::BadRequest(format!("invalid version: {e}")))?;
    TalosVersion::parse(&text).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// A Go-encoded JSON body sent as `application/json`.
fn json(value: &impl Serialize) -> Result<Response, ApiError> {
    Ok(([(CONTENT_TYPE, "application/json")], go_json(value)?).into_response())
}
