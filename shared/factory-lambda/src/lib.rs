//! The cold-start chores every Lambda function of the factory shares, so that each `main.rs`
//! stays a few lines: JSON logging, required environment, the content store.
//!
//! Environment common to the functions:
//! * `FACTORY_BUCKET` (required), `FACTORY_STORE_PREFIX` (default empty): the content store.
//! * `RUST_LOG` (default `info`): log filter; logs are JSON lines for CloudWatch.
//! * The standard AWS SDK variables (region, credentials, `AWS_ENDPOINT_URL` for emulators).

use factory_aws::S3Store;
use tracing_subscriber::EnvFilter;

/// JSON log lines without timestamps (CloudWatch stamps each line itself).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_span_list(false)
        .without_time()
        .init();
}

/// A required, non-blank environment variable; the error names it (the function then stops at
/// cold start instead of failing requests later).
pub fn required_env(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("environment variable {name} is required"))
}

/// A PEM pasted into a one-line setting often arrives with literal `\n` instead of line breaks.
pub fn unescape_newlines(pem: String) -> String {
    if pem.contains('\n') {
        pem
    } else {
        pem.replace("\\n", "\n")
    }
}

/// The S3 content store named by `FACTORY_BUCKET` / `FACTORY_STORE_PREFIX`, with the SDK
/// configured from the standard AWS environment.
pub async fn s3_store_from_env() -> Result<S3Store, String> {
    let bucket = required_env("FACTORY_BUCKET")?;
    let prefix = std::env::var("FACTORY_STORE_PREFIX").unwrap_or_default();
    let sdk = factory_aws::aws_config_from_env().await;
    Ok(S3Store::new(factory_aws::s3_client(&sdk), bucket, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_pems_get_their_line_breaks_back() {
        assert_eq!(unescape_newlines("a\\nb".into()), "a\nb");
        assert_eq!(unescape_newlines("a\nb\\n".into()), "a\nb\\n");
    }
}
