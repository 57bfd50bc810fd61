//! The `catalog` Lambda function: `GET /versions[?broken=true]`,
//! `GET /version/{version}/extensions/official` and `GET /version/{version}/overlays/official`
//! behind an API Gateway HTTP API or a Function URL. Versions come from the tags of the upstream
//! `siderolabs/imager`; catalogs from the verified `siderolabs/extensions` and
//! `siderolabs/overlays` release images. Both are cached in S3 (`<prefix>cache/...`), shared by
//! every instance.
//!
//! Environment, read once per cold start (an invalid value stops the function at once rather
//! than failing requests later):
//!
//! * `FACTORY_UPSTREAM_REGISTRY` (default `https://ghcr.io`), `FACTORY_UPSTREAM_NAMESPACE`
//!   (default empty), `FACTORY_UPSTREAM_COSIGN_KEY_PEM` (required unless
//!   `FACTORY_UPSTREAM_VERIFY=false`), `FACTORY_MIN_TALOS_VERSION` (default `1.2.0`),
//!   `FACTORY_BROKEN_TALOS_VERSIONS` (comma list): see [`factory_upstream::settings`].
//! * `FACTORY_BUCKET` (required), `FACTORY_STORE_PREFIX` (default empty): the cache.
//! * `FACTORY_EXTERNAL_URL`, `FACTORY_ALLOWED_ORIGINS`: see [`factory_http::HttpConfig`].
//! * `RUST_LOG` (default `info`): log filter; logs are JSON lines for CloudWatch.
//! * The standard AWS SDK variables (region, credentials, `AWS_ENDPOINT_URL` for emulators).

use std::sync::Arc;

use factory_http::{AppState, HttpConfig};
use factory_store::ContentStore;
use factory_upstream::settings::UpstreamSettings;
use factory_upstream::{CatalogConfig, ReleaseCatalog};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    factory_lambda::init();
    let config = HttpConfig::from_env()?;
    let settings = UpstreamSettings::from_env()?;
    let catalog_config = CatalogConfig::from_env(settings.display_registry())?;
    let upstream = settings.upstream()?;
    tracing::info!(upstream = %upstream.describe(), "release catalog");
    let store: Arc<dyn ContentStore> = Arc::new(factory_lambda::s3_store_from_env().await?);
    let catalog = ReleaseCatalog::new(upstream, Arc::clone(&store), catalog_config);
    let state = AppState::new(store, config).with_catalog(Arc::new(catalog));

    lambda_http::run(factory_http::catalog_app(state)).await
}
