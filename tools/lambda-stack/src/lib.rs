//! The deployable stack of `template.yaml`, run locally and repeatably (issue 14): the release
//! binaries of every function under a Lambda Runtime API emulator ([`runtime`]), in front of
//! them the CloudFront distribution ([`cdn`]) and the HTTP API ([`apigw`]) routed exactly as the
//! template routes ([`template`], [`intrinsics`]), and the SQS event source mapping that feeds
//! the builder ([`sqs`]), all against LocalStack. [`stack`] puts them together; the
//! `lambda-stack` binary serves it for people, the tests start it in-process. With
//! [`Options::existing_stack`] the bucket, queues and signing key are those of a stack
//! CloudFormation deployed ([`cloudformation`]; `scripts/deploy-localstack`).

pub mod apigw;
pub mod cdn;
pub mod cloudformation;
pub mod intrinsics;
pub mod runtime;
pub mod sqs;
pub mod stack;
pub mod template;

pub use stack::{Options, Stack};

/// Everything that can go wrong setting the stack up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template says something the local stack cannot run (or contradicts itself).
    #[error("template: {0}")]
    Template(String),
    /// A resource or process could not be created.
    #[error("setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The default of the template's `SigningKeySecretName`: the secret the functions' signing key
/// is resolved from.
pub const SIGNING_KEY_SECRET: &str = "talos-factory/signing-key";

/// The factory signing key at `path` (generated there when missing) as PKCS#8 PEM, the form the
/// secret holds.
pub fn signing_key_pem(path: &std::path::Path) -> Result<String, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = factory_signing::SigningKey::load_or_generate(path)
        .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?;
    key.private_key_pem().map_err(|e| Error::Setup(e.to_string()))
}
