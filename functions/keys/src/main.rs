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

use factory_http::{AppState, HttpConfig};
use factory_lambda::{required_env, unescape_newlines};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    factory_lambda::init();
    let config = HttpConfig::from_env()?;
    let key_pem = unescape_newlines(required_env("FACTORY_SIGNING_KEY_PEM")?);
    let public_key_pem = factory_signing::public_key_pem_from_pem(&key_pem)
        .map_err(|e| format!("FACTORY_SIGNING_KEY_PEM: {e}"))?;
    let store = factory_lambda::s3_store_from_env().await?;
    let state = AppState::new(Arc::new(store), config).with_signing_key_pem(public_key_pem);

    lambda_http::run(factory_http::keys_app(state)).await
}
