use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The bucket used with `--aws` unless told otherwise.
pub const DEFAULT_BUCKET: &str = "talos-factory";

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

    /// Store content in S3 (credentials, region and `AWS_ENDPOINT_URL` from the standard AWS
    /// environment) instead of the data directory. The bucket is created if missing.
    #[arg(long)]
    pub aws: bool,

    /// S3 bucket used with `--aws`.
    #[arg(long, env = "FACTORY_BUCKET", default_value = DEFAULT_BUCKET)]
    pub bucket: String,

    /// Key prefix inside the bucket used with `--aws` (e.g. `dev/`).
    #[arg(long, env = "FACTORY_STORE_PREFIX", default_value = "")]
    pub prefix: String,

    /// URL clients use to reach this server (default: `http://<listen address>/`).
    #[arg(long, env = "FACTORY_EXTERNAL_URL")]
    pub external_url: Option<String>,

    /// Comma-separated CORS origins (default `*`).
    #[arg(long, env = "FACTORY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
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
            external_url: None,
            allowed_origins: Vec::new(),
        }
    }

    /// Where the signing key is kept.
    pub fn signing_key_path(&self) -> PathBuf {
        self.data_dir.join("signing-key.pem")
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
        ]);
        assert_eq!(o.listen.port(), 0);
        assert!(o.aws);
        assert_eq!(o.bucket, "b");
        assert_eq!(o.allowed_origins, vec!["https://a.example", "https://b.example"]);
        assert_eq!(o.signing_key_path(), PathBuf::from("/tmp/x/signing-key.pem"));
    }
}
