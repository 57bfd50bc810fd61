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

use factory_aws::S3Store;
use factory_http::{AppState, HttpConfig};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let config = HttpConfig::from_env()?;
    let bucket = required_env("FACTORY_BUCKET")?;
    let prefix = std::env::var("FACTORY_STORE_PREFIX").unwrap_or_default();

    let sdk = factory_aws::aws_config_from_env().await;
    let store = S3Store::new(factory_aws::s3_client(&sdk), bucket, prefix);
    let state = AppState::new(Arc::new(store), config);

    lambda_http::run(factory_http::schematics_app(state)).await
}

/// JSON log lines without timestamps (CloudWatch stamps each line itself).
fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_span_list(false)
        .without_time()
        .init();
}

fn required_env(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("environment variable {name} is required"))
}
