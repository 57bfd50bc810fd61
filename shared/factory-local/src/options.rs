use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use factory_core::version::{TalosVersion, DEFAULT_MIN_VERSION};

/// The bucket used with `--aws` unless told otherwise.
pub const DEFAULT_BUCKET: &str = "talos-factory";

/// The SQS build queue used with `--aws` unless told otherwise (`<name>.fifo`, with the
/// dead-letter queue `<name>-dlq.fifo`).
pub const DEFAULT_BUILD_QUEUE: &str = "talos-factory-builds";

/// The production upstream, as in the Go factory.
pub const DEFAULT_UPSTREAM: &str = "https://ghcr.io";

/// Where Talos release images come from (`--upstream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamChoice {
    /// An OCI registry, `http(s)://host[:port]`.
    Registry(String),
    /// `oci-layout:DIR`: one OCI image layout per repository, `DIR/siderolabs/imager/` etc.
    Layout(PathBuf),
    /// `demo`: the stand-in release, generated into the data directory on first start.
    Demo,
}

impl UpstreamChoice {
    /// Parses the `--upstream` value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "demo" {
            Ok(Self::Demo)
        } else if let Some(dir) = text.strip_prefix("oci-layout:") {
            if dir.is_empty() {
                Err("oci-layout: needs a directory, e.g. oci-layout:/srv/release".to_owned())
            } else {
                Ok(Self::Layout(PathBuf::from(dir)))
            }
        } else if text.starts_with("http://") || text.starts_with("https://") {
            Ok(Self::Registry(text.trim_end_matches('/').to_owned()))
        } else {
            Err(format!(
                "{text:?}: expected a registry URL (https://ghcr.io), oci-layout:DIR or demo"
            ))
        }
    }
}

fn parse_version(text: &str) -> Result<TalosVersion, String> {
    TalosVersion::parse_tolerant(text).map_err(|e| e.to_string())
}

/// Command line of `image-factory-local`. Each flag can also be set by the environment variable
/// shown in `--help`; the names are those the Lambda functions read.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "image-factory-local",
    version,
    about = "Talos Image Factory API (talos-factory-rs) as one local process"
)]
pub struct Options {
    /// Address to listen on.
    #[arg(long, env = "FACTORY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for local state: the signing key (`signing-key.pem`) and, without `--aws`, the
    /// content store (`store/`).
    #[arg(long, env = "FACTORY_DATA_DIR", default_value = "./factory-data")]
    pub data_dir: PathBuf,

    /// Store content in S3 and queue builds on SQS (credentials, region and `AWS_ENDPOINT_URL`
    /// from the standard AWS environment) instead of the data directory and an in-process queue.
    /// The bucket and the queue (`--queue`) are created if missing.
    #[arg(long)]
    pub aws: bool,

    /// S3 bucket used with `--aws`.
    #[arg(long, env = "FACTORY_BUCKET", default_value = DEFAULT_BUCKET)]
    pub bucket: String,

    /// Key prefix inside the bucket used with `--aws` (e.g. `dev/`).
    #[arg(long, env = "FACTORY_STORE_PREFIX", default_value = "")]
    pub prefix: String,

    /// SQS FIFO build queue used with `--aws`: `<name>.fifo` and its dead-letter queue
    /// `<name>-dlq.fifo`, created if missing (visibility timeout 5 minutes, the builder's lease;
    /// dead-lettered after 5 receives). Without `--aws`, builds are queued in process.
    #[arg(long, env = "FACTORY_BUILD_QUEUE", default_value = DEFAULT_BUILD_QUEUE)]
    pub queue: String,

    /// URL clients use to reach this server (default: `http://<listen address>/`).
    #[arg(long, env = "FACTORY_EXTERNAL_URL")]
    pub external_url: Option<String>,

    /// Base URL of a CDN serving the content store (e.g. `https://dxxxx.cloudfront.net/`): built
    /// assets are then redirected to `<URL>/<object key>` instead of this server's `/assets/`
    /// route.
    #[arg(long, env = "FACTORY_ASSET_BASE_URL")]
    pub asset_base_url: Option<String>,

    /// Comma-separated CORS origins (default `*`).
    #[arg(long, env = "FACTORY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Where Talos releases come from: a registry URL (`https://ghcr.io`, `http://127.0.0.1:5001`),
    /// `oci-layout:DIR` (one OCI image layout per repository, `DIR/siderolabs/imager/`...), or
    /// `demo` (a stand-in release generated into `<data-dir>/stand-in-release` on first start
    /// and verified with its own `cosign.pub`: fully offline).
    #[arg(long, env = "FACTORY_UPSTREAM", default_value = DEFAULT_UPSTREAM, value_parser = UpstreamChoice::parse)]
    pub upstream: UpstreamChoice,

    /// Pull-through prefix of the upstream registry (e.g. a Harbor project).
    #[arg(long, env = "FACTORY_UPSTREAM_NAMESPACE", default_value = "")]
    pub upstream_namespace: String,

    /// PEM cosign public key the release images must be signed with (with `demo`, the stand-in's
    /// own `cosign.pub` by default). Without a key or `--upstream-no-verify`, the catalog routes
    /// answer 503 saying so; the rest of the API works.
    #[arg(long, env = "FACTORY_UPSTREAM_COSIGN_KEY_FILE")]
    pub upstream_cosign_key: Option<PathBuf>,

    /// Use release images without checking their signatures (logged as a warning).
    #[arg(long, conflicts_with = "upstream_cosign_key")]
    pub upstream_no_verify: bool,

    /// Oldest Talos version offered.
    #[arg(long, env = "FACTORY_MIN_TALOS_VERSION", default_value = "1.2.0", value_parser = parse_version)]
    pub min_talos_version: TalosVersion,

    /// Comma-separated Talos versions to hide from `/versions` and refuse (shown by
    /// `/versions?broken=true`).
    #[arg(long, env = "FACTORY_BROKEN_TALOS_VERSIONS", value_delimiter = ',', value_parser = parse_version)]
    pub broken_versions: Vec<TalosVersion>,

    /// Seconds an image request waits for its build before answering 503 with `Retry-After`.
    #[arg(long, env = "FACTORY_IMAGE_WAIT_SECONDS", default_value_t = 20)]
    pub image_wait_seconds: u64,

    /// Seconds a registry manifest request (`docker pull` of a cold tag) waits for its build
    /// before answering 503 with `Retry-After`. Longer than the image route's: pull clients
    /// (docker, containerd, podman) do not retry a 503 by themselves, and nothing in front of
    /// the local server cuts the request short.
    #[arg(long, env = "FACTORY_REGISTRY_WAIT_SECONDS", default_value_t = 600)]
    pub registry_wait_seconds: u64,

    /// Seconds a verified asset's object check (one `HEAD`: size and etag) is trusted before the
    /// next request checks again; 0 checks on every request. An object altered or deleted behind
    /// the factory's back is noticed within this interval and rebuilt.
    #[arg(long, env = "FACTORY_OBJECT_RECHECK_SECONDS", default_value_t = 10)]
    pub object_recheck_seconds: u64,
}

impl Options {
    /// The built-in defaults with `data_dir` replaced, ignoring command line and environment:
    /// a deterministic start for tests and embedders.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: data_dir.into(),
            aws: false,
            bucket: DEFAULT_BUCKET.to_owned(),
            prefix: String::new(),
            queue: DEFAULT_BUILD_QUEUE.to_owned(),
            external_url: None,
            asset_base_url: None,
            allowed_origins: Vec::new(),
            upstream: UpstreamChoice::Registry(DEFAULT_UPSTREAM.to_owned()),
            upstream_namespace: String::new(),
            upstream_cosign_key: None,
            upstream_no_verify: false,
            min_talos_version: DEFAULT_MIN_VERSION,
            broken_versions: Vec::new(),
            image_wait_seconds: 20,
            registry_wait_seconds: 600,
            object_recheck_seconds: 10,
        }
    }

    /// Where the signing key is kept.
    pub fn signing_key_path(&self) -> PathBuf {
        self.data_dir.join("signing-key.pem")
    }

    /// Where `--upstream demo` keeps the generated stand-in release.
    pub fn stand_in_release_dir(&self) -> PathBuf {
        self.data_dir.join("stand-in-release")
    }

    /// Where the on-disk content store lives (without `--aws`).
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Options::command().debug_assert();
    }

    #[test]
    fn with_data_dir_matches_the_command_line_defaults() {
        let parsed = Options::try_parse_from(["image-factory-local", "--data-dir", "/d"]).expect("parse");
        let built = Options::with_data_dir("/d");
        // The environment may override parsed values; compare only what it cannot reach here.
        if std::env::vars().all(|(k, _)| !k.starts_with("FACTORY_")) {
            assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
        }
    }

    #[test]
    fn flags_override_defaults() {
        let o = Options::parse_from([
            "image-factory-local",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/x",
            "--aws",
            "--bucket",
            "b",
            "--allowed-origins",
            "https://a.example,https://b.example",
            "--queue",
            "q",
            "--asset-base-url",
            "https://cdn.example/",
        ]);
        assert_eq!(o.listen.port(), 0);
        assert!(o.aws);
        assert_eq!(o.bucket, "b");
        assert_eq!(o.queue, "q");
        assert_eq!(o.asset_base_url.as_deref(), Some("https://cdn.example/"));
        assert_eq!(o.allowed_origins, vec!["https://a.example", "https://b.example"]);
        assert_eq!(o.signing_key_path(), PathBuf::from("/tmp/x/signing-key.pem"));
    }

    #[test]
    fn upstream_choices() {
        let parse = |args: &[&str]| {
            let mut all = vec!["image-factory-local"];
            all.extend_from_slice(args);
            Options::try_parse_from(all)
        };
        let o = parse(&["--upstream", "demo", "--broken-versions", "1.13.1,v1.12.0"]).expect("demo");
        assert_eq!(o.upstream, UpstreamChoice::Demo);
        assert_eq!(
            o.broken_versions,
            vec![TalosVersion::new(1, 13, 1), TalosVersion::new(1, 12, 0)]
        );
        let o = parse(&["--upstream", "oci-layout:/srv/r"]).expect("layout");
        assert_eq!(o.upstream, UpstreamChoice::Layout(PathBuf::from("/srv/r")));
        let o = parse(&["--upstream", "http://127.0.0.1:5001/", "--upstream-no-verify"]).expect("registry");
        assert_eq!(
            o.upstream,
            UpstreamChoice::Registry("http://127.0.0.1:5001".into())
        );
        assert!(o.upstream_no_verify);
        assert!(parse(&["--upstream", "ghcr.io"]).is_err());
        assert!(parse(&["--upstream", "oci-layout:"]).is_err());
        assert!(parse(&["--broken-versions", "x"]).is_err());
        assert!(parse(&["--upstream-no-verify", "--upstream-cosign-key", "k.pub"]).is_err());
    }
}
