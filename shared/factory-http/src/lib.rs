//! The factory's HTTP API as axum routers, with the Go factory's common behaviour (spec §2):
//! plain-text errors, `Server` and `X-Request-ID` on every response, `rs/cors`-style CORS, Go's
//! 404 and 405 answers.
//!
//! Each route family has its own router ([`schematics_router`], [`keys_router`],
//! [`catalog_router`], [`image_router`], [`pxe_router`]) so that each Lambda function serves only
//! its family; [`with_common_layers`] completes one or several of them into a service, and [`app`]
//! is everything (the local server).
//! Lambda wraps the result with `lambda_http::run`; tests call it with `tower::ServiceExt::oneshot`.

pub mod cache_control;
mod config;
mod cors;
mod error;
mod gojson;
mod layers;
mod repo;
mod routes;
mod state;

use axum::Router;

pub use config::{
    default_server_name, AssetLinks, ConfigError, HttpConfig, DEFAULT_ASSET_URL_TTL, DEFAULT_EXTERNAL_URL,
    ENV_ALLOWED_ORIGINS, ENV_ASSET_BASE_URL, ENV_ASSET_URL_TTL, ENV_EXTERNAL_PXE_URL, ENV_EXTERNAL_URL,
};
pub use error::{plain_text, ApiError};
pub use gojson::go_json;
pub use layers::{with_common_layers, REQUEST_ID_HEADER};
pub use repo::{PutResult, RepoError, SchematicRepo, SCHEMATIC_CONTENT_TYPE};
pub use routes::{
    assets_router, catalog_router, health_router, image_router, keys_router, pxe_router, registry_router,
    schematics_router, MAX_SCHEMATIC_BODY, READYZ_PROBE_KEY,
};
pub use state::{AppState, DEFAULT_IMAGE_WAIT_BUDGET};

/// Every route family with the common layers: the whole factory API (the local server).
pub fn app(state: AppState) -> Router {
    let routes = schematics_router(state.clone())
        .merge(keys_router(state.clone()))
        .merge(catalog_router(state.clone()))
        .merge(image_router(state.clone()))
        .merge(pxe_router(state.clone()))
        .merge(registry_router(state.clone()))
        .merge(assets_router(state.clone()));
    with_common_layers(routes, state.config())
}

/// What the `image` Lambda function serves. Not the object route: a Lambda response is capped
/// at 6 MB, so built assets are served by the CDN or presigned S3 URLs ([`AssetLinks`]).
pub fn image_app(state: AppState) -> Router {
    with_common_layers(image_router(state.clone()), state.config())
}

/// What the `pxe` Lambda function serves: the iPXE scripts (it needs the schematics and the
/// release catalog, not the build pipeline: the command line is computed, not built).
pub fn pxe_app(state: AppState) -> Router {
    with_common_layers(pxe_router(state.clone()), state.config())
}

/// What the `registry` Lambda function serves: the read-only OCI distribution API under `/v2`
/// (installer images built through the pipeline, blobs redirected to the CDN or presigned URLs).
pub fn registry_app(state: AppState) -> Router {
    with_common_layers(registry_router(state.clone()), state.config())
}

/// What the `schematics` Lambda function serves.
pub fn schematics_app(state: AppState) -> Router {
    with_common_layers(schematics_router(state.clone()), state.config())
}

/// What the `keys` Lambda function serves.
pub fn keys_app(state: AppState) -> Router {
    with_common_layers(keys_router(state.clone()), state.config())
}

/// What the `catalog` Lambda function serves.
pub fn catalog_app(state: AppState) -> Router {
    with_common_layers(catalog_router(state.clone()), state.config())
}

#[cfg(test)]
mod tests;
