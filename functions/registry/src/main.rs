//! The `registry` Lambda function: the read-only OCI distribution API under `/v2` (spec §8,
//! `docs/api.md` "Registry") behind an API Gateway HTTP API or a Function URL. Talos nodes,
//! `docker pull`, containerd and skopeo pull `<factory>/<platform>-installer/<schematic>:<version>`
//! from it. A version tag is built on first pull through the same pipeline as the image route:
//! one build message (deduplicated) for the tag, whose builder job builds the installer for
//! amd64 and arm64, publishes the blobs, the OCI index and its cosign signature, and then the tag.
//! Manifests are answered from the bucket (a few KiB); blobs redirect (`307`) to the CDN or a
//! presigned S3 URL (a Lambda response is capped at 6 MB). A cold tag that does not finish within
//! the wait budget answers `503 UNAVAILABLE` with `Retry-After`.
//!
//! Environment, read once per cold start (an invalid value stops the function at once):
//!
//! * `FACTORY_SIGNING_KEY_PEM` (required): the factory's signing key as PEM: it verifies the
//!   builder's index records and the cosign signatures of published tags. Give this function
//!   just the public half (`PUBLIC KEY` PEM); a private key is accepted and only its public half
//!   kept. Line breaks may be written as `\n`.
//! * `FACTORY_BUILD_QUEUE_URL` (required): the SQS FIFO build queue (needs `sqs:SendMessage`).
//! * `FACTORY_IMAGE_WAIT_SECONDS` (default 20, 0 to 28): how long a manifest request waits for
//!   a cold tag's build (API Gateway gives up after 29 s).
//! * `FACTORY_OBJECT_RECHECK_SECONDS` (default 10, 0 to 300): how long a check that a published
//!   blob is intact (one `HEAD`) is trusted before the next request checks again.
//! * `FACTORY_EXTERNAL_URL` (required in practice): its host is the registry name in the cosign
//!   identity (`docker-reference`) of every signature, so it must be the name users pull from.
//! * `FACTORY_ASSET_BASE_URL` / `FACTORY_ASSET_URL_TTL_SECONDS`: where blobs are redirected to.
//! * `FACTORY_UPSTREAM_*`, `FACTORY_MIN_TALOS_VERSION`, `FACTORY_BROKEN_TALOS_VERSIONS`: the
//!   release the versions and the imager/installer digests come from (see
//!   `factory_upstream::settings`).
//! * `FACTORY_BUCKET` (required), `FACTORY_STORE_PREFIX` (default empty).
//! * `RUST_LOG` (default `info`); the standard AWS SDK variables.

use std::sync::Arc;

use factory_http::{AppState, HttpConfig};
use factory_pipeline::{Index, Pipeline, PollConfig};
use factory_registry::RegistryReader;
use factory_store::{BuildQueue, ContentStore};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    factory_lambda::init();
    let config = HttpConfig::from_env()?;
    let wait_budget = factory_lambda::image_wait_budget_from_env()?;
    let public_key_pem = factory_lambda::public_key_pem_from_env()?;
    let sdk = factory_lambda::aws_config_from_env().await;
    let store: Arc<dyn ContentStore> = Arc::new(factory_lambda::s3_store(&sdk)?);
    let queue: Arc<dyn BuildQueue> = Arc::new(factory_lambda::build_queue(&sdk)?);
    let catalog = factory_lambda::release_catalog_from_env(Arc::clone(&store))?;
    let index = Index::from_public_key_pem(Arc::clone(&store), &public_key_pem)?;
    let reader = RegistryReader::from_public_key_pem(Arc::clone(&store), &public_key_pem)?;
    let pipeline = Pipeline::new(index, queue, PollConfig::default())
        .with_object_recheck(factory_lambda::object_recheck_from_env()?);
    let state = AppState::new(store, config)
        .with_catalog(Arc::new(catalog))
        .with_pipeline(Arc::new(pipeline))
        .with_registry_reader(Arc::new(reader))
        .with_registry_wait_budget(wait_budget);

    lambda_http::run(factory_http::registry_app(state)).await
}
