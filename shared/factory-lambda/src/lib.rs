//! The cold-start chores every Lambda function of the factory shares, so that each `main.rs`
//! stays a few lines: JSON logging, required environment, the content store, the build queue,
//! the signing key, the upstream release and the builder's settings.
//!
//! Environment common to the functions:
//! * `FACTORY_BUCKET` (required), `FACTORY_STORE_PREFIX` (default empty): the content store.
//! * `RUST_LOG` (default `info`): log filter, `level` and `target=level` directives separated by
//!   commas (see [`init_tracing`]); logs are JSON lines for CloudWatch.
//! * The standard AWS SDK variables (region, credentials, `AWS_ENDPOINT_URL` for emulators).
//!
//! Read by some functions (each function's documentation lists what it reads):
//! * [`ENV_SIGNING_KEY_PEM`]: the factory's signing key ([`signing_key_from_env`],
//!   [`public_key_pem_from_env`]).
//! * [`ENV_BUILD_QUEUE_URL`]: the SQS FIFO build queue ([`build_queue`]).
//! * [`ENV_IMAGE_WAIT_SECONDS`], [`ENV_OBJECT_RECHECK_SECONDS`], [`ENV_BUILD_LEASE_SECONDS`],
//!   [`ENV_FAILURE_TTL_SECONDS`]: [`image_wait_budget_from_env`], [`object_recheck_from_env`],
//!   [`builder_config_from_env`].
//! * The `FACTORY_UPSTREAM_*` and Talos version variables: [`factory_upstream::settings`]
//!   ([`upstream_from_env`], [`release_catalog_from_env`]).

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
pub use factory_aws::aws_config_from_env;
use factory_aws::{S3Store, SqsQueue};
use factory_pipeline::BuilderConfig;
use factory_signing::SigningKey;
use factory_store::ContentStore;
use factory_upstream::settings::UpstreamSettings;
use factory_upstream::{CatalogConfig, ReleaseCatalog, Upstream};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The factory's signing key as PEM (line breaks may be written as `\n`).
pub const ENV_SIGNING_KEY_PEM: &str = "FACTORY_SIGNING_KEY_PEM";
/// The URL of the SQS FIFO build queue.
pub const ENV_BUILD_QUEUE_URL: &str = "FACTORY_BUILD_QUEUE_URL";
/// Seconds an image request waits for its build before answering 503 (default 20, 0 to 28:
/// API Gateway gives up after 29 s).
pub const ENV_IMAGE_WAIT_SECONDS: &str = "FACTORY_IMAGE_WAIT_SECONDS";
/// Seconds a verified asset's object check is trusted before a request checks again (default
/// 10, 0 to 300: at most what the CDN keeps a redirect; 0 checks on every request).
pub const ENV_OBJECT_RECHECK_SECONDS: &str = "FACTORY_OBJECT_RECHECK_SECONDS";
/// The builder's claim lease in seconds (default 300, 10 to 3600).
pub const ENV_BUILD_LEASE_SECONDS: &str = "FACTORY_BUILD_LEASE_SECONDS";
/// How long a user-caused build failure is remembered, in seconds (default 600, 1 to 604800).
pub const ENV_FAILURE_TTL_SECONDS: &str = "FACTORY_FAILURE_TTL_SECONDS";

/// The accepted values of [`ENV_IMAGE_WAIT_SECONDS`]: below API Gateway's 29 s timeout.
pub const IMAGE_WAIT_SECONDS: RangeInclusive<u64> = 0..=28;
/// The accepted values of [`ENV_OBJECT_RECHECK_SECONDS`]: up to the image route's redirect TTL.
pub const OBJECT_RECHECK_SECONDS: RangeInclusive<u64> = 0..=300;
/// The accepted values of [`ENV_BUILD_LEASE_SECONDS`].
pub const BUILD_LEASE_SECONDS: RangeInclusive<u64> = 10..=3600;
/// The accepted values of [`ENV_FAILURE_TTL_SECONDS`].
pub const FAILURE_TTL_SECONDS: RangeInclusive<u64> = 1..=604_800;
/// Environment variable: how soon the builder retries a build that failed for a transient
/// reason (seconds, 0 to 43200; default 30), instead of after the queue's visibility timeout.
pub const ENV_RETRY_DELAY_SECONDS: &str = "FACTORY_RETRY_DELAY_SECONDS";
pub const RETRY_DELAY_SECONDS: RangeInclusive<u64> = 0..=43_200;

/// What each function's `main` does first: installs *ring* as the process's rustls crypto provider
/// (the upstream registry client is built without one of its own, see `factory-upstream`'s
/// `aws-lc` feature), then [`init_tracing`].
pub fn init() {
    // Err only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_tracing();
}

/// JSON log lines without timestamps (CloudWatch stamps each line itself), filtered by `RUST_LOG`
/// read as tracing-subscriber's [`Targets`]: `info`, `warn,factory_http=debug`, ... (`EnvFilter`'s
/// span and field filters are not supported: its regex engine would add 0.5 MB to every function).
/// A value that does not parse means `info`.
pub fn init_tracing() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::fmt()
        .json()
        .with_span_list(false)
        .without_time()
        .finish()
        .with(filter)
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

/// A whole number of seconds from the environment variable `name`: `default` when unset or
/// blank, refused (naming the variable) when not a number in `range`.
pub fn env_seconds(name: &str, default: u64, range: RangeInclusive<u64>) -> Result<Duration, String> {
    seconds(name, std::env::var(name).ok(), default, range)
}

fn seconds(
    name: &str,
    value: Option<String>,
    default: u64,
    range: RangeInclusive<u64>,
) -> Result<Duration, String> {
    let secs = match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => default,
        Some(text) => match text.parse::<u64>() {
            Ok(secs) if range.contains(&secs) => secs,
            _ => {
                return Err(format!(
                    "{name}={text:?}: a whole number of seconds from {} to {} is required",
                    range.start(),
                    range.end()
                ))
            }
        },
    };
    Ok(Duration::from_secs(secs))
}

/// The S3 content store named by `FACTORY_BUCKET` / `FACTORY_STORE_PREFIX`, with the SDK
/// configured from the standard AWS environment.
pub async fn s3_store_from_env() -> Result<S3Store, String> {
    s3_store(&factory_aws::aws_config_from_env().await)
}

/// The S3 content store named by `FACTORY_BUCKET` / `FACTORY_STORE_PREFIX`, over `sdk` (for a
/// function that also talks to SQS and loads the SDK configuration once).
pub fn s3_store(sdk: &SdkConfig) -> Result<S3Store, String> {
    let bucket = required_env("FACTORY_BUCKET")?;
    let prefix = std::env::var("FACTORY_STORE_PREFIX").unwrap_or_default();
    Ok(S3Store::new(factory_aws::s3_client(sdk), bucket, prefix))
}

/// The build queue at [`ENV_BUILD_QUEUE_URL`] (required), over `sdk`. Only sent to here (the
/// event source mapping receives for the builder), so no dead-letter queue is named.
pub fn build_queue(sdk: &SdkConfig) -> Result<SqsQueue, String> {
    let url = required_env(ENV_BUILD_QUEUE_URL)?;
    Ok(SqsQueue::new(factory_aws::sqs_client(sdk), url.trim(), None))
}

/// The builder's early-retry setting: the build queue named by [`ENV_BUILD_QUEUE_URL`] (where
/// the receipts of the event come from) and [`ENV_RETRY_DELAY_SECONDS`]. `None` when the queue
/// URL is unset: failed builds then come back after the queue's visibility timeout.
pub fn retry_queue_from_env(sdk: &SdkConfig) -> Result<Option<(SqsQueue, Duration)>, String> {
    if std::env::var(ENV_BUILD_QUEUE_URL).map_or(true, |v| v.trim().is_empty()) {
        return Ok(None);
    }
    let delay = env_seconds(ENV_RETRY_DELAY_SECONDS, 30, RETRY_DELAY_SECONDS)?;
    Ok(Some((build_queue(sdk)?, delay)))
}

/// The private signing key from [`ENV_SIGNING_KEY_PEM`] (required; PKCS#8 or SEC1 PEM), for the
/// function that signs (the builder).
pub fn signing_key_from_env() -> Result<SigningKey, String> {
    let pem = unescape_newlines(required_env(ENV_SIGNING_KEY_PEM)?);
    SigningKey::from_pem(&pem).map_err(|e| format!("{ENV_SIGNING_KEY_PEM}: a private key is required: {e}"))
}

/// The public half (PKIX PEM) of the key in [`ENV_SIGNING_KEY_PEM`] (required), which may be a
/// public or a private key; only the public half is kept. For functions that only verify.
pub fn public_key_pem_from_env() -> Result<String, String> {
    let pem = unescape_newlines(required_env(ENV_SIGNING_KEY_PEM)?);
    factory_signing::public_key_pem_from_pem(&pem).map_err(|e| format!("{ENV_SIGNING_KEY_PEM}: {e}"))
}

/// How long an image request waits for its build ([`ENV_IMAGE_WAIT_SECONDS`]).
pub fn image_wait_budget_from_env() -> Result<Duration, String> {
    env_seconds(ENV_IMAGE_WAIT_SECONDS, 20, IMAGE_WAIT_SECONDS)
}

/// How long an object check is trusted ([`ENV_OBJECT_RECHECK_SECONDS`]; default
/// [`factory_pipeline::DEFAULT_OBJECT_RECHECK`]).
pub fn object_recheck_from_env() -> Result<Duration, String> {
    env_seconds(
        ENV_OBJECT_RECHECK_SECONDS,
        factory_pipeline::DEFAULT_OBJECT_RECHECK.as_secs(),
        OBJECT_RECHECK_SECONDS,
    )
}

/// The builder's lease and failure TTL ([`ENV_BUILD_LEASE_SECONDS`],
/// [`ENV_FAILURE_TTL_SECONDS`]); defaults are [`BuilderConfig::default`]'s.
pub fn builder_config_from_env() -> Result<BuilderConfig, String> {
    let defaults = BuilderConfig::default();
    Ok(BuilderConfig {
        lease: env_seconds(
            ENV_BUILD_LEASE_SECONDS,
            defaults.lease.as_secs(),
            BUILD_LEASE_SECONDS,
        )?,
        failure_ttl: env_seconds(
            ENV_FAILURE_TTL_SECONDS,
            defaults.failure_ttl.as_secs(),
            FAILURE_TTL_SECONDS,
        )?,
    })
}

/// The upstream Talos release from the `FACTORY_UPSTREAM_*` variables (see
/// [`factory_upstream::settings`]), logged once.
pub fn upstream_from_env() -> Result<Arc<Upstream>, String> {
    upstream(&upstream_settings_from_env()?)
}

/// The release catalog (versions, extensions, overlays) from the `FACTORY_UPSTREAM_*`,
/// `FACTORY_MIN_TALOS_VERSION` and `FACTORY_BROKEN_TALOS_VERSIONS` variables, cached in `store`.
pub fn release_catalog_from_env(store: Arc<dyn ContentStore>) -> Result<ReleaseCatalog, String> {
    let settings = upstream_settings_from_env()?;
    let catalog_config = CatalogConfig::from_env(settings.display_registry()).map_err(|e| e.to_string())?;
    Ok(ReleaseCatalog::new(upstream(&settings)?, store, catalog_config))
}

fn upstream_settings_from_env() -> Result<UpstreamSettings, String> {
    UpstreamSettings::from_env().map_err(|e| e.to_string())
}

fn upstream(settings: &UpstreamSettings) -> Result<Arc<Upstream>, String> {
    let upstream = settings.upstream().map_err(|e| e.to_string())?;
    tracing::info!(upstream = %upstream.describe(), "upstream release");
    Ok(upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_pems_get_their_line_breaks_back() {
        assert_eq!(unescape_newlines("a\\nb".into()), "a\nb");
        assert_eq!(unescape_newlines("a\nb\\n".into()), "a\nb\\n");
    }

    #[test]
    fn seconds_default_when_unset_and_are_range_checked() {
        let s = |value: Option<&str>| seconds("X", value.map(str::to_owned), 20, IMAGE_WAIT_SECONDS);
        assert_eq!(s(None), Ok(Duration::from_secs(20)));
        assert_eq!(s(Some("  ")), Ok(Duration::from_secs(20)));
        assert_eq!(s(Some(" 5 ")), Ok(Duration::from_secs(5)));
        assert_eq!(s(Some("0")), Ok(Duration::ZERO));
        assert_eq!(s(Some("28")), Ok(Duration::from_secs(28)));
        for bad in ["29", "-1", "1.5", "20s", "x"] {
            let error = s(Some(bad)).expect_err(bad);
            assert!(error.starts_with(&format!("X={bad:?}: ")), "{error}");
            assert!(error.contains("from 0 to 28"), "{error}");
        }
    }

    #[test]
    fn defaults_are_the_builders() {
        let defaults = BuilderConfig::default();
        assert!(BUILD_LEASE_SECONDS.contains(&defaults.lease.as_secs()));
        assert!(FAILURE_TTL_SECONDS.contains(&defaults.failure_ttl.as_secs()));
    }
}
