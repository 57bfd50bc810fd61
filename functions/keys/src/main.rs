//! The `keys` Lambda function: `GET /oci/cosign/signing-key.pub` (the public key that verifies the
//! factory's cosign signatures), `GET|HEAD /healthz` and `/readyz`.
//!
//! Environment, read once per cold start (an invalid value stops the function at once rather
//! than failing requests later):
//!
//! * `FACTORY_SIGNING_KEY_PEM` (required): the signing key as PEM. This function only publishes
//!   the public half, so give it just that (`PUBLIC KEY` PEM, e.g. from
//!   `openssl ec -in key.pem -pubout`); a private key (PKCS#8 or SEC1) is accepted too, and only
//!   its public half is kept in memory. Line breaks may be written as `\n` (one-line settings).
//! * `FACTORY_BUCKET` (required), `FACTORY_STORE_PREFIX` (default empty): the store `/readyz`
//!   checks.
//! * `FACTORY_EXTERNAL_URL`, `FACTORY_ALLOWED_ORIGINS`: see [`factory_http::HttpConfig`].
//! * `RUST_LOG` (default `info`): log filter; logs are JSON lines for CloudWatch.
//! * The standard AWS SDK variables (region, credentials, `AWS_ENDPOINT_URL` for emulators).

use std::sync::Arc;

use factory_aws::S3Store;
use factory_http::{AppState, HttpConfig};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let config = HttpConfig::from_env()?;
    let key_pem = unescape_newlines(required_env("FACTORY_SIGNING_KEY_PEM")?);
    let public_key_pem = factory_signing::public_key_pem_from_pem(&key_pem)
        .map_err(|e| format!("FACTORY_SIGNING_KEY_PEM: {e}"))?;
    let bucket = required_env("FACTORY_BUCKET")?;
    let prefix = std::env::var("FACTORY_STORE_PREFIX").unwrap_or_default();

    let sdk = factory_aws::aws_config_from_env().await;
    let store = S3Store::new(factory_aws::s3_client(&sdk), bucket, prefix);
    let state = AppState::new(Arc::new(store), config).with_signing_key_pem(public_key_pem);

    lambda_http::run(factory_http::keys_app(state)).await
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

/// A PEM pasted into a one-line setting often arrives with literal `\n` instead of line breaks.
fn unescape_newlines(pem: String) -> String {
    if pem.contains('\n') {
        pem
    } else {
        pem.replace("\\n", "\n")
    }
}

fn required_env(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("environment variable {name} is required"))
}
