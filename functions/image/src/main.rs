//! The `image` Lambda function: `GET|HEAD /image/{schematic}/{version}/{path}` behind an API
//! Gateway HTTP API or a Function URL (see `docs/api.md`). A published asset is answered with a
//! redirect to the CDN or a presigned S3 URL (a Lambda response is capped at 6 MB, so this
//! function never streams assets); a miss enqueues one build message on the SQS FIFO build queue
//! (deduplicated per cache key) and waits for the `builder` function to publish it, answering
//! `503 Retry-After` when the wait budget runs out.
//!
//! Environment, read once per cold start (an invalid value stops the function at once rather
//! than failing requests later):
//!
//! * `FACTORY_SIGNING_KEY_PEM` (required): the factory's signing key as PEM, to verify the
//!   builder's signed index records. This function only verifies, so give it just the public half
//!   (`PUBLIC KEY` PEM); a private key (PKCS#8 or SEC1) is accepted too, and only its public half
//!   is kept in memory. Line breaks may be written as `\n`.
//! * `FACTORY_BUILD_QUEUE_URL` (required): the SQS FIFO build queue (needs `sqs:SendMessage`).
//! * `FACTORY_IMAGE_WAIT_SECONDS` (default 20, 0 to 28): how long a request waits for its build
//!   (API Gateway gives up after 29 s).
//! * `FACTORY_OBJECT_RECHECK_SECONDS` (default 10, 0 to 300): how long a check that a published
//!   asset's object is intact (one `HEAD`) is trusted before the next request checks again; an
//!   object altered or deleted in the bucket is noticed within that time and rebuilt.
//! * `FACTORY_ASSET_BASE_URL` (the CDN in front of the bucket) or, without it,
//!   `FACTORY_ASSET_URL_TTL_SECONDS` (presigned URLs, default 3600): where assets are redirected
//!   to; `FACTORY_EXTERNAL_URL`, `FACTORY_ALLOWED_ORIGINS`: see [`factory_http::HttpConfig`].
//! * `FACTORY_UPSTREAM_REGISTRY`, `FACTORY_UPSTREAM_NAMESPACE`, `FACTORY_UPSTREAM_COSIGN_KEY_PEM`,
//!   `FACTORY_UPSTREAM_VERIFY`, `FACTORY_MIN_TALOS_VERSION`, `FACTORY_BROKEN_TALOS_VERSIONS`: the
//!   release the versions and imager digests come from, as for the `catalog` function (see
//!   `factory_upstream::settings`).
//! * `FACTORY_BUCKET` (required), `FACTORY_STORE_PREFIX` (default empty): schematics, index
//!   records, failure records, caches.
//! * `RUST_LOG` (default `info`): log filter; logs are JSON lines for CloudWatch.
//! * The standard AWS SDK variables (region, credentials, `AWS_ENDPOINT_URL` for emulators).

use std::sync::Arc;

use factory_http::{AppState, HttpConfig};
use factory_pipeline::{Index, Pipeline, PollConfig};
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
    let pipeline = Pipeline::new(index, queue, PollConfig::default())
        .with_object_recheck(factory_lambda::object_recheck_from_env()?);
    let state = AppState::new(store, config)
        .with_catalog(Arc::new(catalog))
        .with_pipeline(Arc::new(pipeline))
        .with_image_wait_budget(wait_budget);

    lambda_http::run(factory_http::image_app(state)).await
}
