//! AWS adapters of the factory's ports, and the glue around them:
//!
//! * [`S3Store`]: [`ContentStore`](factory_store::ContentStore) on an S3 bucket (conditional writes
//!   with `If-None-Match` / `If-Match`, multipart streaming uploads).
//! * [`SqsQueue`]: [`BuildQueue`](factory_store::BuildQueue) on an SQS FIFO queue with a dead-letter
//!   queue.
//! * [`aws_config_from_env`], [`s3_client`], [`sqs_client`]: SDK configuration from the
//!   environment; an endpoint override (`AWS_ENDPOINT_URL`, as for LocalStack) switches S3 to
//!   path-style addressing. [`https_client`]: the HTTPS client they use (rustls with ring).
//! * [`ensure_bucket`], [`ensure_build_queue`]: idempotent provisioning for tests and the local
//!   server (production resources come from the CloudFormation template).

mod error;
mod s3;
mod sqs;

pub use error::AwsError;
pub use s3::{ensure_bucket, S3Store, PART_SIZE};
pub use sqs::{ensure_build_queue, ensure_build_queue_with, BuildQueueConfig, SqsQueue};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{tls, ConnectorBuilder};

/// Loads the SDK configuration the usual way (environment, profile, container/instance
/// credentials). Honours `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` endpoint overrides.
pub async fn aws_config_from_env() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

/// The SDK's HTTPS client: what the SDK's `default-https-client` feature builds (hyper 1.x,
/// rustls, the platform's roots, proxy settings from the environment), with *ring* as rustls'
/// crypto provider instead of aws-lc: ring is the one crypto library the Lambda functions link
/// (the upstream registry client uses it too), which keeps them small (docs/bench.md).
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// An S3 client for `cfg`. With an endpoint override (LocalStack, MinIO, ...) it uses path-style
/// addressing (`http://host/bucket/key`), because such endpoints have no per-bucket DNS names.
pub fn s3_client(cfg: &SdkConfig) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(cfg);
    if has_endpoint_override(cfg, "AWS_ENDPOINT_URL_S3") {
        builder = builder.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// An SQS client for `cfg`.
pub fn sqs_client(cfg: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(cfg)
}

fn has_endpoint_override(cfg: &SdkConfig, service_var: &str) -> bool {
    cfg.endpoint_url().is_some() || std::env::var(service_var).is_ok_and(|v| !v.trim().is_empty())
}
