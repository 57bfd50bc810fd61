//! The builder's SQS code path for real, against LocalStack S3 + SQS (see `common` for the
//! environment it needs; without it these tests fail, saying how to start LocalStack):
//!
//! * the `builder` Lambda's handler ([`handle_sqs_event`]) fed with a checked-in SQS event as
//!   the event source mapping delivers it (`fixtures/lambda/sqs-build-batch.json`);
//! * the local server's event source mapping ([`poll_build_queue`]) on a real FIFO queue with a
//!   short visibility timeout and a redrive policy: poison messages end in the dead-letter queue,
//!   good ones are built and deleted;
//! * the local server with `--aws` creating its queue from `--queue`.
//!
//! Assets are opaque here: a dummy assembler writes bytes taken from the spec.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::types::QueueAttributeName;
use factory_aws::{ensure_build_queue_with, BuildQueueConfig, S3Store, SqsQueue};
use factory_local::{poll_build_queue, LocalServer, Options, PollRound, UpstreamChoice};
use factory_pipeline::{
    handle_sqs_event, AssembleError, AssembledMeta, Assembler, BuildMessage, Builder, BuilderConfig,
    EventSource, Index, ObjectCheck,
};
use factory_signing::SigningKey;
use factory_store::{BuildQueue, ContentStore, QueueMessage};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writes the spec's `content` `repeat` times as `file_name`.
#[derive(Debug)]
struct Dummy;

#[async_trait]
impl Assembler for Dummy {
    async fn assemble(
        &self,
        spec: &serde_json::Value,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<AssembledMeta, AssembleError> {
        let io = |e: std::io::Error| AssembleError::Retryable(e.to_string());
        let content = spec["content"].as_str().unwrap_or("x").as_bytes();
        for _ in 0..spec["repeat"].as_u64().unwrap_or(1) {
            out.write_all(content).await.map_err(io)?;
        }
        out.flush().await.map_err(io)?;
        Ok(AssembledMeta {
            content_type: "application/octet-stream".into(),
            file_name: spec["file_name"].as_str().unwrap_or("asset.bin").into(),
            input_digests: [("kernel".to_owned(), "sha256:0123".to_owned())].into(),
        })
    }
}

/// A builder over a fresh prefix of the test bucket, with its key.
async fn s3_builder() -> (Builder, Arc<dyn ContentStore>, Arc<SigningKey>) {
    let s3 = crate::common::s3_client().await;
    let bucket = crate::common::test_bucket(&s3).await;
    let prefix = format!("{}/", crate::common::unique_name("builder-sqs"));
    let store: Arc<dyn ContentStore> = Arc::new(S3Store::new(s3, bucket, prefix));
    let key = Arc::new(SigningKey::generate());
    let config = BuilderConfig {
        lease: Duration::from_secs(30),
        failure_ttl: Duration::from_secs(600),
    };
    let builder = Builder::new(store.clone(), key.clone(), Arc::new(Dummy), config).unwrap();
    (builder, store, key)
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lambda")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Checks, with an index of its own over the public key only, that `cache_key` is published,
/// its signature verifies, its object is intact and holds `expected`.
async fn assert_published(store: &Arc<dyn ContentStore>, key: &SigningKey, cache_key: &str, expected: &[u8]) {
    let index = Index::from_public_key_pem(store.clone(), &key.public_key_pem()).unwrap();
    let published = index
        .lookup(cache_key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no verified index record for {cache_key}"));
    assert_eq!(published.cache_key, cache_key);
    assert_eq!(published.file_name, "kernel-amd64");
    assert_eq!(published.size, expected.len() as u64);
    assert_eq!(
        index.verify_object(&published).await.unwrap(),
        ObjectCheck::Intact
    );
    let (_, bytes) = store.get(&published.object_key).await.unwrap().unwrap();
    assert_eq!(
        bytes.as_ref(),
        expected,
        "the published object holds the assembled bytes"
    );
    let other_key = SigningKey::generate();
    let stranger = Index::from_public_key_pem(store.clone(), &other_key.public_key_pem()).unwrap();
    assert!(
        stranger.lookup(cache_key).await.unwrap().is_none(),
        "a record signed by another key is not a hit"
    );
}

// ---------------------------------------------------------------------------------------------
// (a) The builder Lambda's handler with an event as the event source mapping delivers it

/// The fixture's two records: a build message and a body that is not one.
const FIXTURE_GOOD_ID: &str = "0d2b7c3e-5f41-4a8e-9c6d-1b2a3f4e5d6c";
const FIXTURE_GARBAGE_ID: &str = "7a9e4f10-3c2b-4d5e-8f6a-0b1c2d3e4f5a";
const FIXTURE_CACHE_KEY: &str = "5d2c4b1e9a7f3c6b8e0d2a4f6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lambda_event_fixture_builds_the_good_record_and_reports_the_garbage_one() {
    let (builder, store, key) = s3_builder().await;
    let event: SqsEvent = serde_json::from_str(&fixture("sqs-build-batch.json")).unwrap();
    let ids: Vec<Option<&str>> = event.records.iter().map(|r| r.message_id.as_deref()).collect();
    assert_eq!(
        ids,
        [Some(FIXTURE_GOOD_ID), Some(FIXTURE_GARBAGE_ID)],
        "the fixture has the two records this test is about"
    );

    let response = handle_sqs_event(&builder, event.clone()).await.unwrap();

    // Exactly what the function hands back to Lambda.
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": FIXTURE_GARBAGE_ID }] })
    );
    assert_eq!(builder.stats().built(), 1);
    assert_published(
        &store,
        &key,
        FIXTURE_CACHE_KEY,
        "talos kernel bytes ".repeat(1000).as_bytes(),
    )
    .await;

    // Redelivered as is (the garbage one by SQS, the good one by a retry of the whole batch):
    // the good record is found published, not rebuilt; the garbage one fails again.
    let again = handle_sqs_event(&builder, event).await.unwrap();
    let failed: Vec<&str> = again
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, [FIXTURE_GARBAGE_ID]);
    assert_eq!(builder.stats().built(), 1, "not built twice");
    assert_eq!(builder.stats().already_published(), 1);
}

// ---------------------------------------------------------------------------------------------
// (b) The local poller on a real FIFO queue with a redrive policy

/// Short, so that redeliveries come quickly; longer than one dummy build.
const VISIBILITY: Duration = Duration::from_secs(2);
const MAX_RECEIVES: u32 = 2;

/// How many messages the queue at `url` holds, visible or in flight.
async fn messages_in(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let count = |name: QueueAttributeName| -> u64 {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .unwrap_or_else(|| panic!("no {name:?} attribute"))
            .parse()
            .unwrap()
    };
    count(QueueAttributeName::ApproximateNumberOfMessages)
        + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_poller_dead_letters_poison_and_deletes_what_it_built() {
    let sdk = crate::common::aws_config().await;
    let sqs = factory_aws::sqs_client(&sdk);
    let config = BuildQueueConfig {
        visibility_timeout: VISIBILITY,
        max_receive_count: MAX_RECEIVES,
    };
    let (queue_url, dlq_url) =
        ensure_build_queue_with(&sqs, &crate::common::unique_name("builder-sqs"), &config)
            .await
            .unwrap();
    let queue = SqsQueue::new(sqs.clone(), queue_url.clone(), Some(dlq_url.clone()));
    let source = EventSource::sqs_queue(&queue_url, sdk.region().map(|r| r.as_ref()));
    assert!(
        source.arn.is_some(),
        "LocalStack queue URLs map to ARNs: {queue_url}"
    );
    let (builder, store, key) = s3_builder().await;

    let poison = format!("not a build message {}", uuid::Uuid::new_v4());
    queue
        .send(QueueMessage {
            body: poison.clone(),
            group_id: "poison".into(),
            dedup_id: uuid::Uuid::new_v4().simple().to_string(),
        })
        .await
        .unwrap();
    let cache_key = uuid::Uuid::new_v4().simple().to_string();
    let spec = serde_json::json!({ "content": "good ", "repeat": 5000, "file_name": "kernel-amd64" });
    queue
        .send(BuildMessage::new(&cache_key, spec).to_queue_message().unwrap())
        .await
        .unwrap();

    // Poll as the local server does (with short waits) until the poison is dead-lettered.
    let mut rounds: Vec<PollRound> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let round = poll_build_queue(&queue, &builder, &source, Duration::from_secs(1), None)
            .await
            .unwrap();
        if round.received > 0 {
            rounds.push(round);
        }
        if queue.dead_letters().await.unwrap().contains(&poison) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison message was not dead-lettered within 60 s; rounds: {rounds:?}"
        );
    }

    let deleted: usize = rounds.iter().map(|r| r.deleted).sum();
    let received: usize = rounds.iter().map(|r| r.received).sum();
    let redelivered: Vec<&String> = rounds.iter().flat_map(|r| &r.redelivered).collect();
    assert_eq!(deleted, 1, "the good message was deleted once: {rounds:?}");
    assert_eq!(
        redelivered.len(),
        MAX_RECEIVES as usize,
        "the poison was received {MAX_RECEIVES} times and failed each time: {rounds:?}"
    );
    assert!(
        redelivered.iter().all(|id| *id == redelivered[0]),
        "only the poison failed: {rounds:?}"
    );
    assert_eq!(received, 1 + MAX_RECEIVES as usize, "{rounds:?}");
    assert_eq!(builder.stats().built(), 1);
    assert_eq!(builder.stats().retries(), 0);
    assert_published(&store, &key, &cache_key, "good ".repeat(5000).as_bytes()).await;

    // Nothing left: the good message deleted, the poison moved.
    assert_eq!(messages_in(&sqs, &queue_url).await, 0, "the build queue is empty");
    let after = poll_build_queue(&queue, &builder, &source, Duration::from_secs(1), None)
        .await
        .unwrap();
    assert_eq!(after, PollRound::default(), "nothing is redelivered");
    assert_eq!(
        queue.dead_letters().await.unwrap(),
        [poison],
        "only the poison is dead"
    );
}

// ---------------------------------------------------------------------------------------------
// The local server with --aws: its build queue comes from --queue

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_server_with_aws_creates_its_fifo_queue_and_dead_letter_queue() {
    let sdk = crate::common::aws_config().await;
    let sqs = factory_aws::sqs_client(&sdk);
    let s3 = factory_aws::s3_client(&sdk);
    let dir = tempfile::tempdir().unwrap();
    let queue = crate::common::unique_name("local-queue");
    let mut options = Options::with_data_dir(dir.path());
    options.aws = true;
    options.bucket = crate::common::test_bucket(&s3).await;
    options.prefix = format!("{}/", crate::common::unique_name("local-server"));
    options.queue = queue.clone();
    // A release catalog (so that there is a builder), never contacted by this test.
    options.upstream = UpstreamChoice::Registry("http://127.0.0.1:9".into());
    options.upstream_no_verify = true;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = LocalServer::prepare(options, listener).await.unwrap();
    assert!(server.build_stats().is_some(), "the server has a builder");

    let url = |name: String| {
        let sqs = sqs.clone();
        async move {
            sqs.get_queue_url()
                .queue_name(&name)
                .send()
                .await
                .unwrap_or_else(|e| panic!("queue {name} was not created: {e:?}"))
                .queue_url()
                .unwrap()
                .to_owned()
        }
    };
    let queue_url = url(format!("{queue}.fifo")).await;
    let dlq_url = url(format!("{queue}-dlq.fifo")).await;
    let banner = server.banner();
    assert!(
        banner.contains(&format!("build queue: {queue_url} (dead letters: {dlq_url})")),
        "{banner}"
    );
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attribute = |name: QueueAttributeName| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name:?}"))
    };
    assert_eq!(attribute(QueueAttributeName::FifoQueue), "true");
    assert_eq!(
        attribute(QueueAttributeName::VisibilityTimeout),
        "300",
        "the builder's lease"
    );
    let redrive: serde_json::Value =
        serde_json::from_str(&attribute(QueueAttributeName::RedrivePolicy)).unwrap();
    assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), "5");
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{queue}-dlq.fifo")),
        "{redrive}"
    );
}

// ---------------------------------------------------------------------------------------------
// A transient failure is retried after the retry delay, not after the visibility timeout

/// Fails its first assembly with a retryable error, then writes the spec's bytes.
#[derive(Debug, Default)]
struct FlakyOnce {
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Assembler for FlakyOnce {
    async fn assemble(
        &self,
        spec: &serde_json::Value,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<AssembledMeta, AssembleError> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(AssembleError::Retryable("registry hiccup".into()));
        }
        Dummy.assemble(spec, out).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_failure_comes_back_after_the_retry_delay() {
    let sdk = crate::common::aws_config().await;
    let sqs = factory_aws::sqs_client(&sdk);
    // A visibility timeout far beyond the test's deadline: only the retry delay brings it back.
    let config = BuildQueueConfig {
        visibility_timeout: Duration::from_secs(600),
        max_receive_count: 3,
    };
    let (queue_url, dlq_url) =
        ensure_build_queue_with(&sqs, &crate::common::unique_name("builder-retry"), &config)
            .await
            .unwrap();
    let queue = SqsQueue::new(sqs.clone(), queue_url.clone(), Some(dlq_url));
    let source = EventSource::sqs_queue(&queue_url, sdk.region().map(|r| r.as_ref()));
    let (_, store, key) = s3_builder().await;
    let config = BuilderConfig {
        lease: Duration::from_secs(30),
        failure_ttl: Duration::from_secs(600),
    };
    let builder = Builder::new(store.clone(), key.clone(), Arc::new(FlakyOnce::default()), config).unwrap();

    let cache_key = uuid::Uuid::new_v4().simple().to_string();
    let spec = serde_json::json!({ "content": "retried ", "repeat": 100, "file_name": "kernel-amd64" });
    queue
        .send(BuildMessage::new(&cache_key, spec).to_queue_message().unwrap())
        .await
        .unwrap();

    let retry = Some(Duration::from_secs(1));
    let first = poll_build_queue(&queue, &builder, &source, Duration::from_secs(5), retry)
        .await
        .unwrap();
    assert_eq!(
        (first.received, first.deleted, first.redelivered.len()),
        (1, 0, 1),
        "{first:?}"
    );
    assert_eq!(builder.stats().retries(), 1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while builder.stats().built() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failed message did not come back within 30 s (visibility timeout is 600 s)"
        );
        poll_build_queue(&queue, &builder, &source, Duration::from_secs(2), retry)
            .await
            .unwrap();
    }
    assert_published(&store, &key, &cache_key, "retried ".repeat(100).as_bytes()).await;
    assert_eq!(messages_in(&sqs, &queue_url).await, 0, "the build queue is empty");
}
