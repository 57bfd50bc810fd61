//! The `pxe` Lambda function: `GET|HEAD /pxe/{schematic}/{version}/{platform}-{arch}[-secureboot]`
//! behind an API Gateway HTTP API or a Function URL (see `docs/api.md`): the iPXE script that
//! boots Talos from the image routes (`kernel-<arch>` and `initramfs-<arch>.xz`, or the
//! SecureBoot UKI), with the schematic's kernel command line. The command line is computed from
//! the schematic and the version (it is the `cmdline-<platform>-<arch>` asset, byte for byte), so
//! this function never builds, enqueues or waits: it reads the schematic and the versions offered.
//!
//! Environment, read once per cold start (an invalid value stops the function at once rather
//! than failing requests later):
//!
//! * `FACTORY_EXTERNAL_PXE_URL` (default: `FACTORY_EXTERNAL_URL`): the base of the image URLs in
//!   the scripts; `FACTORY_EXTERNAL_URL`, `FACTORY_ALLOWED_ORIGINS`: see
//!   [`factory_http::HttpConfig`].
//! * `FACTORY_UPSTREAM_REGISTRY`, `FACTORY_UPSTREAM_NAMESPACE`, `FACTORY_UPSTREAM_COSIGN_KEY_PEM`,
//!   `FACTORY_UPSTREAM_VERIFY`, `FACTORY_MIN_TALOS_VERSION`, `FACTORY_BROKEN_TALOS_VERSIONS`: the
//!   release the versions offered come from, as for the `catalog` function (see
//!   `factory_upstream::settings`).
//! * `FACTORY_BUCKET` (required), `FACTORY_STORE_PREFIX` (default empty): schematics and the
//!   version cache.
//! * `RUST_LOG` (default `info`): log filter; logs are JSON lines for CloudWatch.
//! * The standard AWS SDK variables (region, credentials, `AWS_ENDPOINT_URL` for emulators).

use std::sync::Arc;

use factory_http::{AppState, HttpConfig};
use factory_store::ContentStore;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    factory_lambda::init();
    let config = HttpConfig::from_env()?;
    let store: Arc<dyn ContentStore> = Arc::new(factory_lambda::s3_store_from_env().await?);
    let catalog = factory_lambda::release_catalog_from_env(Arc::clone(&store))?;
    let state = AppState::new(store, config).with_catalog(Arc::new(catalog));

    lambda_http::run(factory_http::pxe_app(state)).await
}
