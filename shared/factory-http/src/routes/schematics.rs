//! `POST /schematics` and `GET /schematics/{id}` (spec §4.1, §4.2).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use factory_core::schematic::{Schematic, SchematicId};
use http::header::CONTENT_TYPE;
use http::StatusCode;
use serde::Serialize;

use super::body::LimitedBody;
use crate::cache_control;
use crate::gojson::go_json;
use crate::repo::{PutResult, SCHEMATIC_CONTENT_TYPE};
use crate::{ApiError, AppState};

/// Largest schematic accepted (1 MiB). Real schematics are a few KiB even with an embedded
/// machine configuration; the limit only keeps a client from making us buffer arbitrary data.
pub const MAX_SCHEMATIC_BODY: usize = 1024 * 1024;

/// `POST /schematics`, `GET /schematics/{id}`.
pub fn schematics_router(state: AppState) -> Router {
    Router::new()
        .route("/schematics", post(create))
        .route("/schematics/{id}", get(fetch))
        .with_state(state)
}

/// The creation answer; field order as the Go factory's.
#[derive(Serialize)]
struct Created<'a> {
    id: &'a str,
    schematic: &'a str,
}

/// Parses, validates and stores a schematic; creating an existing one is a success (content
/// addressing makes the operation idempotent). `Content-Type` is ignored: JSON is YAML.
async fn create(
    State(state): State<AppState>,
    LimitedBody(body): LimitedBody<MAX_SCHEMATIC_BODY>,
) -> Result<Response, ApiError> {
    let schematic = Schematic::parse(&body)?;
    schematic.validate_community()?;
    let (id, canonical, result) = state.schematics().put(&schematic).await?;
    tracing::info!(schematic_id = %id, duplicate = result == PutResult::AlreadyExisted, "schematic stored");
    let json = go_json(&Created {
        id: id.as_str(),
        schematic: &canonical,
    })?;
    Ok((StatusCode::CREATED, [(CONTENT_TYPE, "application/json")], json).into_response())
}

/// The canonical YAML of a stored schematic. Anything that cannot be an ID is simply not found,
/// without a store round trip.
async fn fetch(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id
        .ok()
        .and_then(|Path(id)| SchematicId::parse(&id))
        .ok_or(ApiError::SchematicNotFound)?;
    let yaml = state
        .schematics()
        .get_canonical(&id)
        .await?
        .ok_or(ApiError::SchematicNotFound)?;
    Ok(cache_control::with(
        ([(CONTENT_TYPE, SCHEMATIC_CONTENT_TYPE)], yaml).into_response(),
        cache_control::IMMUTABLE,
    ))
}
