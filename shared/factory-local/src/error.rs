use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the local server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("setting up the build pipeline: {0}")]
    Pipeline(#[from] factory_pipeline::PipelineError),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the content store in {}: {source}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: factory_store::StoreError,
    },
    #[error("preparing S3 bucket {bucket:?}: {source}")]
    Bucket {
        bucket: String,
        #[source]
        source: factory_aws::AwsError,
    },
    #[error("preparing SQS build queue {name:?}: {source}")]
    Queue {
        name: String,
        #[source]
        source: factory_aws::AwsError,
    },
    #[error("signing key: {0}")]
    Signing(#[from] factory_signing::SigningError),
    #[error("registry: {0}")]
    Registry(#[from] factory_registry::RegistryError),
    #[error("configuration: {0}")]
    Config(#[from] factory_http::ConfigError),
    #[error("upstream: {0}")]
    Upstream(#[from] factory_upstream::UpstreamError),
    #[error("upstream cosign public key {}: {reason}", path.display())]
    CosignKey { path: PathBuf, reason: String },
    #[error("generating the stand-in release in {}: {reason}", path.display())]
    StandInRelease { path: PathBuf, reason: String },
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}
