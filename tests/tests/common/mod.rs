//! Helpers shared by the integration tests (`tests/tests/*.rs`, modules of the one test binary `main.rs`).
//!
//! * LocalStack: [`aws_config`], [`s3_client`], [`sqs_client`], [`test_bucket`] read the standard AWS
//!   environment and **fail the test** (never skip it) when `AWS_ENDPOINT_URL` is unset or LocalStack
//!   does not answer, telling how to start it.
//! * Unique names: [`unique_name`] isolates tests that share a LocalStack (buckets prefixes, queues).
//! * [`stand_in`]: the generated stand-in Talos release as an upstream; [`image`]: the local server
//!   over it on either backend, for the image route tests; [`inspect`]: the independent tools
//!   (cpio, zstd, unsquashfs, objdump, objcopy) that look inside what it serves; [`boot`]: booting
//!   what it serves in QEMU on LocalStack (the heavy boot tests); [`oci`]: registry clients and
//!   OCI layouts for the registry tests.

// Helpers for every kind of test; a run with a filter uses only part of them.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

pub mod boot;
pub mod curl;
pub mod disk;
pub mod image;
pub mod inspect;
pub mod local_server;
pub mod oci;
pub mod registry;
pub mod stack;
pub mod stand_in;

/// What to do when the AWS-backed tests cannot run.
pub const LOCALSTACK_HELP: &str = "these tests need LocalStack (S3 + SQS). Start it and point the AWS SDK at it:\n\
     \x20   localstack/start && localstack/init\n\
     \x20   export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1\n\
     (localstack/stop stops it again)";

/// The bucket the AWS-backed tests share (each test works under its own unique prefix).
pub const DEFAULT_TEST_BUCKET: &str = "factory-tests";

/// The LocalStack endpoint from `AWS_ENDPOINT_URL`; panics with [`LOCALSTACK_HELP`] when unset.
pub fn localstack_endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!("AWS_ENDPOINT_URL is not set: {LOCALSTACK_HELP}"),
    }
}

/// SDK configuration for LocalStack, after checking the environment and that the endpoint
/// answers. Panics with instructions otherwise.
pub async fn aws_config() -> aws_config::SdkConfig {
    let endpoint = localstack_endpoint();
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        if std::env::var_os(var).is_none() {
            panic!("{var} is not set: {LOCALSTACK_HELP}");
        }
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        panic!("AWS_REGION is not set: {LOCALSTACK_HELP}");
    }
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let address = if authority.contains(':') {
        authority.clone()
    } else if endpoint.starts_with("https://") {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("LocalStack at {endpoint} does not answer ({e}): {LOCALSTACK_HELP}"),
        Err(_) => panic!("LocalStack at {endpoint} does not answer (connect timeout): {LOCALSTACK_HELP}"),
    }
    factory_aws::aws_config_from_env().await
}

/// An S3 client for LocalStack (path-style addressing).
pub async fn s3_client() -> aws_sdk_s3::Client {
    factory_aws::s3_client(&aws_config().await)
}

/// An SQS client for LocalStack.
pub async fn sqs_client() -> aws_sdk_sqs::Client {
    factory_aws::sqs_client(&aws_config().await)
}

/// The shared test bucket (`FACTORY_TEST_BUCKET`, default [`DEFAULT_TEST_BUCKET`]), created if needed.
pub async fn test_bucket(s3: &aws_sdk_s3::Client) -> String {
    let bucket = std::env::var("FACTORY_TEST_BUCKET").unwrap_or_else(|_| DEFAULT_TEST_BUCKET.to_owned());
    factory_aws::ensure_bucket(s3, &bucket)
        .await
        .unwrap_or_else(|e| panic!("cannot create the test bucket {bucket}: {e}"));
    bucket
}

/// `<prefix>-<32 hex digits>`: unique per call, usable in bucket prefixes, queue names (letters,
/// digits, `-`, `_`; keep `prefix` under 40 characters for queues) and object keys.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
