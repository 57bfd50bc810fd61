use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use factory_aws::{BuildQueueConfig, SqsQueue};
use factory_http::{AppState, AssetLinks, HttpConfig};
use factory_pipeline::{
    handle_sqs_event_with_retries, sqs_event_from_received, Builder, BuilderConfig, EventSource, Pipeline,
    PollConfig,
};
use factory_registry::{FactoryAssembler, RegistryReader};
use factory_signing::SigningKey;
use factory_store::fs::FsStore;
use factory_store::memory::MemoryQueue;
use factory_store::{BuildQueue, ContentStore, CountingStore, QueueError, StoreCounts};
use factory_upstream::SourceCounts;
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
    /// The build queue and the builder polling it (absent without a release catalog).
    builder: Option<BuildWorker>,
    counts: RequestCounts,
}

/// Counters of the requests the server made of its content store and of the upstream.
#[derive(Debug, Clone)]
pub struct RequestCounts {
    pub store: Arc<StoreCounts>,
    pub upstream: Arc<SourceCounts>,
}

/// The build queue, where its events say they come from, and the builder handling them.
#[derive(Debug)]
struct BuildWorker {
    queue: Arc<dyn BuildQueue>,
    source: EventSource,
    builder: Builder,
    description: String,
}

/// How long a received build message stays invisible: the builder's claim lease, so a build
/// that outlives it is redelivered (and then finds the claim or the published record).
const BUILD_VISIBILITY: Duration = Duration::from_secs(5 * 60);
/// Deliveries before a build message is dead-lettered.
const BUILD_MAX_RECEIVES: u32 = 5;
/// The most messages one receive returns (SQS's limit, and the event source mapping's default
/// batch size).
const POLL_BATCH: usize = 10;
/// How long one receive waits for a message (SQS's longest long poll).
const POLL_WAIT: Duration = Duration::from_secs(20);
/// How soon a build that failed for a transient reason is retried (the builder Lambda's
/// `FACTORY_RETRY_DELAY_SECONDS` default).
const RETRY_DELAY: Duration = Duration::from_secs(30);

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
        let mut config = HttpConfig::default()
            .with_external_url(&external_url)?
            .with_allowed_origins(options.allowed_origins.iter().map(String::as_str))?;
        if let Some(base) = &options.asset_base_url {
            config = config.with_asset_links(AssetLinks::Cdn(base.clone()))?;
        }

        let sdk = if options.aws {
            Some(factory_aws::aws_config_from_env().await)
        } else {
            None
        };
        let (store, store_description) = open_store(&options, sdk.as_ref()).await?;
        // Counted (relaxed atomic increments) for tests and reports of what a request costs.
        let counting = CountingStore::new(store);
        let store_counts = counting.counts();
        let store: Arc<dyn ContentStore> = Arc::new(counting);
        let signing_key_path = options.signing_key_path();
        let key = Arc::new(SigningKey::load_or_generate(&signing_key_path)?);
        let (catalog, upstream_description, upstream_counts) =
            crate::upstream::catalog(&options, Arc::clone(&store)).await?;
        let state = AppState::new(Arc::clone(&store), config)
            .with_signing_key_pem(key.public_key_pem())
            .with_image_wait_budget(Duration::from_secs(options.image_wait_seconds))
            .with_registry_wait_budget(Duration::from_secs(options.registry_wait_seconds));
        let mut builder = None;
        let state = match catalog {
            Ok(catalog) => {
                // The same builder code the builder Lambda runs, fed by the build queue.
                let (queue, source, description) = open_queue(&options, sdk.as_ref()).await?;
                // Release assets and registry jobs (installer images published as OCI blobs).
                let assembler = Arc::new(FactoryAssembler::new(
                    Arc::clone(catalog.upstream()),
                    Arc::clone(&store),
                    Arc::clone(&key),
                ));
                let build = Builder::new(
                    Arc::clone(&store),
                    Arc::clone(&key),
                    assembler,
                    BuilderConfig::default(),
                )?;
                let pipeline =
                    Pipeline::new(build.index().clone(), Arc::clone(&queue), PollConfig::default())
                        .with_object_recheck(Duration::from_secs(options.object_recheck_seconds));
                builder = Some(BuildWorker {
                    queue,
                    source,
                    builder: build,
                    description,
                });
                let reader = RegistryReader::from_public_key_pem(Arc::clone(&store), &key.public_key_pem())?;
                state
                    .with_catalog(catalog)
                    .with_pipeline(Arc::new(pipeline))
                    .with_registry_reader(Arc::new(reader))
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
            counts: RequestCounts {
                store: store_counts,
                upstream: upstream_counts,
            },
        })
    }

    /// Requests made so far of the content store and of the upstream.
    pub fn request_counts(&self) -> RequestCounts {
        self.counts.clone()
    }

    /// The builder's counters (absent without a release catalog): how many assets it built.
    pub fn build_stats(&self) -> Option<Arc<factory_pipeline::BuildStats>> {
        self.builder.as_ref().map(|worker| worker.builder.stats())
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
        let queue = match &self.builder {
            Some(worker) => worker.description.as_str(),
            None => "none (no release catalog: nothing is built)",
        };
        format!(
            "Image Factory (talos-factory-rs {version}) listening on {url}/\n\
             \x20 store:       {store}\n\
             \x20 signing key: {key}\n\
             \x20 upstream:    {upstream}\n\
             \x20 build queue: {queue}\n\
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
        if self.builder.is_some() {
            let missing = factory_assets::missing_tools();
            if !missing.is_empty() {
                tracing::warn!(
                    ?missing,
                    "tools for ISOs and disk images are missing (scripts/install-test-deps installs them): \
                     builds that need them will fail"
                );
            }
        }
        let worker = self
            .builder
            .map(|w| tokio::spawn(run_build_poller(w.queue, w.builder, w.source)));
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

/// What one [`poll_build_queue`] round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollRound {
    /// Messages received (and handed to the builder as one SQS event).
    pub received: usize,
    /// Messages finished and deleted from the queue.
    pub deleted: usize,
    /// Ids of the messages left in the queue for redelivery: the `batchItemFailures`, every
    /// message of an event the builder refused, and messages whose deletion failed.
    pub redelivered: Vec<String>,
}

/// One round of the local event source mapping: receives up to 10 messages from `queue`
/// (waiting up to `wait` for the first; SQS long polls at most 20 s), turns them into the SQS
/// event the Lambda event source mapping would deliver (records from `source`), handles it with
/// [`handle_sqs_event`] (the builder Lambda's code path) and deletes every message not listed in
/// its `batchItemFailures`. Failed messages stay in the queue: they reappear after its visibility
/// timeout and are dead-lettered by its redrive policy after its maximum receives. When the
/// builder refuses the whole event, nothing is deleted, as when the builder Lambda fails. Fails
/// only when receiving fails; a failed deletion is logged (the message is redelivered, and its
/// redelivery finds the asset published).
///
/// `retry_delay`: as the builder Lambda, a message that failed for a transient reason comes back
/// after this delay rather than after the queue's visibility timeout (`None`: the timeout).
pub async fn poll_build_queue(
    queue: &dyn BuildQueue,
    builder: &Builder,
    source: &EventSource,
    wait: Duration,
    retry_delay: Option<Duration>,
) -> Result<PollRound, QueueError> {
    let received = queue.receive(POLL_BATCH, wait).await?;
    let mut round = PollRound {
        received: received.len(),
        ..PollRound::default()
    };
    if received.is_empty() {
        return Ok(round);
    }
    let event = sqs_event_from_received(&received, source);
    let retries = retry_delay.map(|delay| (queue, delay));
    let failed: Vec<String> = match handle_sqs_event_with_retries(builder, event, retries).await {
        Ok(response) => response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect(),
        Err(e) => {
            tracing::error!(
                error = %e,
                "the builder refused the build event; every message will be redelivered"
            );
            received.iter().map(|m| m.message_id.clone()).collect()
        }
    };
    for message in &received {
        if failed.contains(&message.message_id) {
            tracing::info!(
                message_id = %message.message_id,
                receive_count = message.receive_count,
                "build message left for redelivery"
            );
            round.redelivered.push(message.message_id.clone());
            continue;
        }
        match queue.ack(&message.receipt).await {
            Ok(()) => round.deleted += 1,
            Err(e) => {
                tracing::warn!(
                    message_id = %message.message_id,
                    error = %e,
                    "deleting a finished build message failed; it will be redelivered"
                );
                round.redelivered.push(message.message_id.clone());
            }
        }
    }
    Ok(round)
}

/// The local builder: [`poll_build_queue`] rounds (long polls of 20 s) until the task is
/// dropped or aborted. A failed receive is logged and retried after a second.
pub async fn run_build_poller(queue: Arc<dyn BuildQueue>, builder: Builder, source: EventSource) {
    loop {
        let round = poll_build_queue(queue.as_ref(), &builder, &source, POLL_WAIT, Some(RETRY_DELAY)).await;
        if let Err(e) = round {
            tracing::error!(error = %e, "build queue receive failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The build queue: with `--aws` the SQS FIFO queue `--queue` (created, or its visibility
/// timeout and redrive policy brought up to date), else an in-process queue with the same
/// visibility timeout and receive limit.
async fn open_queue(
    options: &Options,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<(Arc<dyn BuildQueue>, EventSource, String), LocalError> {
    let Some(sdk) = sdk else {
        let queue = MemoryQueue::new(BUILD_VISIBILITY, BUILD_MAX_RECEIVES);
        return Ok((Arc::new(queue), EventSource::default(), "in process".to_owned()));
    };
    let sqs = factory_aws::sqs_client(sdk);
    let config = BuildQueueConfig {
        visibility_timeout: BUILD_VISIBILITY,
        max_receive_count: BUILD_MAX_RECEIVES,
    };
    let (queue_url, dlq_url) = factory_aws::ensure_build_queue_with(&sqs, &options.queue, &config)
        .await
        .map_err(|source| LocalError::Queue {
            name: options.queue.clone(),
            source,
        })?;
    let source = EventSource::sqs_queue(&queue_url, sdk.region().map(|r| r.as_ref()));
    let description = format!("{queue_url} (dead letters: {dlq_url})");
    Ok((
        Arc::new(SqsQueue::new(sqs, queue_url, Some(dlq_url))),
        source,
        description,
    ))
}

async fn open_store(
    options: &Options,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<(Arc<dyn ContentStore>, String), LocalError> {
    if let Some(sdk) = sdk {
        let s3 = factory_aws::s3_client(sdk);
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
        assert!(
            banner.contains("build queue: none (no release catalog"),
            "{banner}"
        );
        assert_eq!(server.state.config().asset_links, AssetLinks::ObjectRoute);
    }

    /// Options with a release catalog (never contacted) and so a builder.
    fn with_catalog(dir: &tempfile::TempDir) -> Options {
        let mut options = Options::with_data_dir(dir.path());
        options.upstream = crate::UpstreamChoice::Registry("http://127.0.0.1:9".into());
        options.upstream_no_verify = true;
        options
    }

    #[tokio::test]
    async fn asset_base_url_links_built_assets_to_the_cdn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = with_catalog(&dir);
        options.asset_base_url = Some("https://cdn.example/".into());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = LocalServer::prepare(options, listener).await.expect("prepare");
        assert_eq!(
            server.state.config().asset_links,
            AssetLinks::Cdn("https://cdn.example/".into())
        );
        assert!(server.build_stats().is_some());
        assert!(
            server.banner().contains("build queue: in process"),
            "{}",
            server.banner()
        );

        let mut options = with_catalog(&dir);
        options.asset_base_url = Some("cdn.example".into());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let refused = LocalServer::prepare(options, listener)
            .await
            .expect_err("not a URL");
        assert!(matches!(refused, LocalError::Config(_)), "{refused}");
    }

    /// Writes the spec's `content` as `kernel-amd64`.
    #[derive(Debug)]
    struct Echo;

    #[async_trait::async_trait]
    impl factory_pipeline::Assembler for Echo {
        async fn assemble(
            &self,
            spec: &serde_json::Value,
            out: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
        ) -> Result<factory_pipeline::AssembledMeta, factory_pipeline::AssembleError> {
            use tokio::io::AsyncWriteExt;
            let io = |e: std::io::Error| factory_pipeline::AssembleError::Retryable(e.to_string());
            let content = spec["content"].as_str().unwrap_or("x");
            out.write_all(content.as_bytes()).await.map_err(io)?;
            out.flush().await.map_err(io)?;
            Ok(factory_pipeline::AssembledMeta {
                content_type: "application/octet-stream".into(),
                file_name: "kernel-amd64".into(),
                input_digests: Default::default(),
            })
        }
    }

    #[tokio::test]
    async fn the_in_process_queue_goes_through_the_sqs_event_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ContentStore> = Arc::new(FsStore::new(dir.path()).expect("store"));
        let builder = Builder::new(
            Arc::clone(&store),
            Arc::new(SigningKey::generate()),
            Arc::new(Echo),
            BuilderConfig::default(),
        )
        .expect("builder");
        let queue = MemoryQueue::new(Duration::from_millis(200), 2);
        let poison = factory_store::QueueMessage {
            body: "not a build message".into(),
            group_id: "poison".into(),
            dedup_id: "poison".into(),
        };
        queue.send(poison).await.expect("send");
        let good = factory_pipeline::BuildMessage::new("key-1", serde_json::json!({ "content": "kernel" }));
        queue
            .send(good.to_queue_message().expect("encode"))
            .await
            .expect("send");

        let mut rounds = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while queue.dead_letters().await.expect("dlq").is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "{rounds:?}");
            let round = poll_build_queue(
                &queue,
                &builder,
                &EventSource::default(),
                Duration::from_millis(500),
                None,
            )
            .await
            .expect("poll");
            if round.received > 0 {
                rounds.push(round);
            }
        }
        assert_eq!(queue.dead_letters().await.expect("dlq"), ["not a build message"]);
        assert_eq!(rounds.iter().map(|r| r.deleted).sum::<usize>(), 1, "{rounds:?}");
        let redelivered: Vec<&String> = rounds.iter().flat_map(|r| &r.redelivered).collect();
        assert_eq!(redelivered.len(), 2, "{rounds:?}");
        assert_eq!(redelivered[0], redelivered[1], "{rounds:?}");
        assert_eq!(queue.pending(), 0);
        assert_eq!(builder.stats().built(), 1);
        assert!(builder.index().lookup("key-1").await.expect("lookup").is_some());
    }
}
