//! The `schematics` Lambda function: `POST /schematics` and `GET /schematics/{id}` behind an API
//! Gateway HTTP API or a Function URL, over the S3 content store.
//!
//! Environment, read once per cold start (an invalid value stops the function at once rather
//! than failing requests later):
//!
//! * `FACTORY_BUCKET` (required): the S3 bucket holding schematics (`<prefix>schematics/<id>`).
//! * `FACTORY_STORE_PREFIX` (default empty): key prefix inside the bucket, e.g. `prod/`.
//! * `FACTORY_EXTERNAL_URL`, `FACTORY_ALLOWED_ORIGINS`: see [`factory_http::HttpConfig`].
//! * `RUST_LOG` (default `info`): log filter; logs are JSON lines for CloudWatch.
//! * The standard AWS SDK variables (region, credentials, `AWS_ENDPOINT_URL` for emulators).
//!
//! No signing key: this function never signs nor serves the key, so it is not given one.

use std::sync::Arc;

use factory_http::{AppState, HttpConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    factory_lambda::init();
    let config = HttpConfig::from_env()?;
    let store = factory_lambda::s3_store_from_env().await?;
    let state = AppState::new(Arc::new(store), config);

    lambda_http::run(factory_http::schematics_app(state)).await
}
