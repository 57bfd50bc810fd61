use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use factory_assets::ReleaseAssembler;
use factory_http::{AppState, HttpConfig};
use factory_pipeline::{poll_once, Builder, BuilderConfig, Pipeline, PollConfig};
use factory_signing::SigningKey;
use factory_store::fs::FsStore;
use factory_store::memory::MemoryQueue;
use factory_store::{BuildQueue, ContentStore};
use tokio::net::TcpListener;

use crate::{LocalError, Options};

/// A server ready to run: state built, signing key loaded, listener bound.
#[derive(Debug)]
pub struct LocalServer {
    listener: TcpListener,
    state: AppState,
    store_description: String,
    upstream_description: String,
    signing_key_path: std::path::PathBuf,
    /// The in-process build queue and the builder polling it (absent without a release catalog).
    builder: Option<(Arc<MemoryQueue>, Builder)>,
}

/// How long a received build message stays invisible: the builder's claim lease, so a build
/// that outlives it is redelivered (and then finds the claim or the published record).
const BUILD_VISIBILITY: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// Deliveries before a build message is dead-lettered.
const BUILD_MAX_RECEIVES: u32 = 5;

impl LocalServer {
    /// Opens the store (creating the bucket with `--aws`), loads or generates the signing key,
    /// sets up the upstream (generating the stand-in release for `--upstream demo`) and reads the
    /// configuration. Fails before serving anything if any of it is wrong.
    pub async fn prepare(options: Options, listener: TcpListener) -> Result<Self, LocalError> {
        let local_addr = listener.local_addr().map_err(|source| LocalError::Bind {
            addr: options.listen,
            source,
        })?;
        let external_url = match &options.external_url {
            Some(url) => url.clone(),
            None => default_external_url(local_addr),
        };
        let config = HttpConfig::default()
            .with_external_url(&external_url)?
            .with_allowed_origins(options.allowed_origins.iter().map(String::as_str))?;

        let (store, store_description) = open_store(&options).await?;
        let signing_key_path = options.signing_key_path();
        let key = SigningKey::load_or_generate(&signing_key_path)?;
        let (catalog, upstream_description) = crate::upstream::catalog(&options, Arc::clone(&store)).await?;
        let state = AppState::new(Arc::clone(&store), config)
            .with_signing_key_pem(key.public_key_pem())
            .with_image_wait_budget(std::time::Duration::from_secs(options.image_wait_seconds));
        let mut builder = None;
        let state = match catalog {
            Ok(catalog) => {
                // The same builder code the builder Lambda runs, fed by an in-process queue.
                let queue = Arc::new(MemoryQueue::new(BUILD_VISIBILITY, BUILD_MAX_RECEIVES));
                let assembler = Arc::new(ReleaseAssembler::new(Arc::clone(catalog.upstream())));
                let build = Builder::new(
                    Arc::clone(&store),
                    Arc::new(key),
                    assembler,
                    BuilderConfig::default(),
                )?;
                let pipeline = Pipeline::new(
                    build.index().clone(),
                    Arc::clone(&queue) as Arc<dyn BuildQueue>,
                    PollConfig::default(),
                );
                builder = Some((queue, build));
                state.with_catalog(catalog).with_pipeline(Arc::new(pipeline))
            }
            Err(reason) => state.with_catalog_disabled(reason),
        };
        Ok(Self {
            listener,
            state,
            store_description,
            upstream_description,
            signing_key_path,
            builder,
        })
    }

    /// The builder's counters (absent without a release catalog): how many assets it built.
    pub fn build_stats(&self) -> Option<Arc<factory_pipeline::BuildStats>> {
        self.builder.as_ref().map(|(_, builder)| builder.stats())
    }

    /// The base URL clients use, without a trailing slash.
    pub fn url(&self) -> &str {
        self.state.config().external_url.trim_end_matches('/')
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// What to print on start: where it listens, where data goes, and how to try it.
    pub fn banner(&self) -> String {
        let url = self.url();
        format!(
            "Image Factory (talos-factory-rs {version}) listening on {url}/\n\
             \x20 store:       {store}\n\
             \x20 signing key: {key}\n\
             \x20 upstream:    {upstream}\n\
             Create a schematic:\n\
             \x20 curl -X POST --data-binary @schematic.yaml {url}/schematics\n\
             List the Talos versions:\n\
             \x20 curl {url}/versions\n",
            version = env!("CARGO_PKG_VERSION"),
            store = self.store_description,
            upstream = self.upstream_description,
            key = self.signing_key_path.display(),
        )
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), LocalError> {
        let app = factory_http::app(self.state);
        let worker = self
            .builder
            .map(|(queue, builder)| tokio::spawn(build_loop(queue, builder)));
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(LocalError::Serve);
        if let Some(worker) = worker {
            worker.abort();
        }
        served
    }
}

/// [`LocalServer::prepare`] then [`LocalServer::run`].
pub async fn serve(
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LocalError> {
    LocalServer::prepare(options, listener).await?.run(shutdown).await
}

/// The local builder: receives from the in-process queue and handles messages with the
/// builder code the Lambda runs, one at a time, until the server stops.
async fn build_loop(queue: Arc<MemoryQueue>, builder: Builder) {
    loop {
        if let Err(e) = poll_once(queue.as_ref(), &builder, 1, std::time::Duration::from_secs(1)).await {
            tracing::error!(error = %e, "build queue receive failed");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

async fn open_store(options: &Options) -> Result<(Arc<dyn ContentStore>, String), LocalError> {
    if options.aws {
        let sdk = factory_aws::aws_config_from_env().await;
        let s3 = factory_aws::s3_client(&sdk);
        factory_aws::ensure_bucket(&s3, &options.bucket)
            .await
            .map_err(|source| LocalError::Bucket {
                bucket: options.bucket.clone(),
                source,
            })?;
        let endpoint = sdk.endpoint_url().map(|e| format!(" at {e}")).unwrap_or_default();
        let description = format!("s3://{}/{}{endpoint}", options.bucket, options.prefix);
        let store = factory_aws::S3Store::new(s3, options.bucket.clone(), options.prefix.clone());
        Ok((Arc::new(store), description))
    } else {
        let dir = options.store_dir();
        let store = FsStore::new(&dir).map_err(|source| LocalError::Store {
            path: dir.clone(),
            source,
        })?;
        Ok((Arc::new(store), dir.display().to_string()))
    }
}

/// `http://<addr>/`, with a wildcard address replaced by loopback so the URL is usable.
fn default_external_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        let loopback = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        addr.set_ip(loopback);
    }
    format!("http://{addr}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_is_reachable() {
        let url = |s: &str| default_external_url(s.parse().expect("addr"));
        assert_eq!(url("127.0.0.1:8080"), "http://127.0.0.1:8080/");
        assert_eq!(url("0.0.0.0:80"), "http://127.0.0.1:80/");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080/");
    }

    #[tokio::test]
    async fn prepares_a_data_dir_and_announces_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = Options::with_data_dir(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = LocalServer::prepare(options, listener).await.expect("prepare");
        assert_eq!(server.url(), format!("http://127.0.0.1:{port}"));
        assert!(dir.path().join("signing-key.pem").is_file());
        let banner = server.banner();
        assert!(
            banner.contains(&format!(
                "curl -X POST --data-binary @schematic.yaml http://127.0.0.1:{port}/schematics"
            )),
            "{banner}"
        );
    }
}
