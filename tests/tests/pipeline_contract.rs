//! The build-on-miss pipeline (`factory-pipeline`), one generic suite run against every adapter
//! pair: `embedded::*` on [`FsStore`] + [`MemoryQueue`], `aws::*` on [`S3Store`] + [`SqsQueue`] in
//! LocalStack (see `common` for the environment it needs; without it these tests fail, saying how
//! to start LocalStack). Assets are opaque here: a dummy assembler writes bytes taken from the spec.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use factory_aws::{ensure_build_queue_with, BuildQueueConfig, S3Store, SqsQueue};
use factory_pipeline::{
    handle_batch, poll_once, AssembleError, AssembledMeta, Assembler, BatchMessage, BuildMessage, Builder,
    BuilderConfig, ClaimOutcome, Claims, Index, ObjectCheck, Outcome, Pipeline, PollConfig, Response,
};
use factory_signing::SigningKey;
use factory_store::fs::FsStore;
use factory_store::memory::MemoryQueue;
use factory_store::{BuildQueue, ContentStore, PutCondition};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A store and a queue under test, and what must live as long as them.
struct Fixture {
    store: Arc<dyn ContentStore>,
    queue: Arc<dyn BuildQueue>,
    _dir: Option<tempfile::TempDir>,
}

/// Short enough that a redelivery test stays fast, long enough for one dummy build.
const VISIBILITY: Duration = Duration::from_secs(2);

async fn embedded_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        store: Arc::new(FsStore::new(dir.path().join("store")).unwrap()),
        queue: Arc::new(MemoryQueue::new(VISIBILITY, 5)),
        _dir: Some(dir),
    }
}

async fn aws_fixture() -> Fixture {
    let s3 = crate::common::s3_client().await;
    let bucket = crate::common::test_bucket(&s3).await;
    let prefix = format!("{}/", crate::common::unique_name("pipeline"));
    let sqs = crate::common::sqs_client().await;
    let config = BuildQueueConfig {
        visibility_timeout: VISIBILITY,
        max_receive_count: 5,
    };
    let (queue_url, dlq_url) =
        ensure_build_queue_with(&sqs, &crate::common::unique_name("pipeline"), &config)
            .await
            .unwrap();
    Fixture {
        store: Arc::new(S3Store::new(s3, bucket, prefix)),
        queue: Arc::new(SqsQueue::new(sqs, queue_url, Some(dlq_url))),
        _dir: None,
    }
}

/// Runs every listed case against every adapter pair, each on a fresh store and queue.
macro_rules! pipeline_suite {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fixture = super::embedded_fixture().await;
                    super::$case(&fixture).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fixture = super::aws_fixture().await;
                    super::$case(&fixture).await;
                }
            )*
        }
    };
}

pipeline_suite!(
    cold_request_is_built_by_a_worker,
    concurrent_requests_build_once,
    expired_claim_is_taken_over,
    racing_builders_build_once,
    user_error_is_remembered_until_its_ttl,
    retryable_failure_then_success,
    failed_assembly_leaves_nothing,
    tampered_index_signature_is_a_miss_and_rebuilt,
    altered_object_bytes_are_detected_and_rebuilt,
    object_check_is_trusted_for_the_recheck_interval,
);

// ---------------------------------------------------------------------------------------------
// The dummy assembler

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Ok,
    /// A user-caused failure with this message.
    User(String),
    /// Retryable failures for this many calls, then success.
    RetryTimes(usize),
    /// Writes some bytes, then fails retryably (a crash mid-upload, as seen by the store).
    FailMidStream,
}

/// Writes `content` repeated `repeat` times (spec fields) as `file_name`, after `delay`.
#[derive(Debug)]
struct Dummy {
    calls: AtomicUsize,
    delay: Duration,
    mode: Mutex<Mode>,
}

impl Dummy {
    fn new(delay: Duration, mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            delay,
            mode: Mutex::new(mode),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

#[async_trait]
impl Assembler for Dummy {
    async fn assemble(
        &self,
        spec: &serde_json::Value,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<AssembledMeta, AssembleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let mode = {
            let mut mode = self.mode.lock().unwrap();
            let current = mode.clone();
            if let Mode::RetryTimes(n) = current {
                *mode = if n > 1 { Mode::RetryTimes(n - 1) } else { Mode::Ok };
            }
            current
        };
        match mode {
            Mode::User(message) => return Err(AssembleError::User(message)),
            Mode::RetryTimes(_) => return Err(AssembleError::Retryable("registry hiccup".into())),
            Mode::Ok | Mode::FailMidStream => {}
        }
        let content = spec["content"].as_str().unwrap_or("x").as_bytes();
        let repeat = spec["repeat"].as_u64().unwrap_or(1);
        let io = |e: std::io::Error| AssembleError::Retryable(e.to_string());
        for _ in 0..repeat {
            out.write_all(content).await.map_err(io)?;
        }
        if mode == Mode::FailMidStream {
            return Err(AssembleError::Retryable("upstream connection reset".into()));
        }
        out.flush().await.map_err(io)?;
        Ok(AssembledMeta {
            content_type: "application/octet-stream".into(),
            file_name: spec["file_name"].as_str().unwrap_or("asset.bin").into(),
            input_digests: [("kernel".to_owned(), "sha256:0123".to_owned())].into(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Everything one test needs around a fixture.
struct Setup {
    store: Arc<dyn ContentStore>,
    queue: Arc<dyn BuildQueue>,
    key: Arc<SigningKey>,
    dummy: Arc<Dummy>,
    builder: Builder,
    pipeline: Pipeline,
}

fn config() -> BuilderConfig {
    BuilderConfig {
        lease: Duration::from_secs(2),
        failure_ttl: Duration::from_secs(600),
    }
}

fn setup(fixture: &Fixture, dummy: Arc<Dummy>, config: BuilderConfig) -> Setup {
    let key = Arc::new(SigningKey::generate());
    let builder = Builder::new(fixture.store.clone(), key.clone(), dummy.clone(), config).unwrap();
    let pipeline = Pipeline::new(index(fixture, &key), fixture.queue.clone(), poll());
    Setup {
        store: fixture.store.clone(),
        queue: fixture.queue.clone(),
        key,
        dummy,
        builder,
        pipeline,
    }
}

fn index(fixture: &Fixture, key: &SigningKey) -> Index {
    Index::from_public_key_pem(fixture.store.clone(), &key.public_key_pem()).unwrap()
}

fn poll() -> PollConfig {
    PollConfig {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(300),
        retry_after: Duration::from_secs(3),
    }
}

fn cache_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// 30 000 bytes over several writer chunks... and, with `repeat` 40 000, 400 kB over many.
fn spec(content: &str, repeat: u64) -> serde_json::Value {
    serde_json::json!({ "content": content, "repeat": repeat, "file_name": "kernel-amd64" })
}

fn expected_bytes(content: &str, repeat: u64) -> Vec<u8> {
    content.repeat(usize::try_from(repeat).unwrap()).into_bytes()
}

/// A worker draining the queue until dropped, as the builder Lambda would.
struct Worker(tokio::task::JoinHandle<()>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn worker(queue: Arc<dyn BuildQueue>, builder: Builder) -> Worker {
    Worker(tokio::spawn(async move {
        loop {
            if let Err(e) = poll_once(&*queue, &builder, 10, Duration::from_secs(1)).await {
                eprintln!("worker: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }))
}

async fn served(pipeline: &Pipeline, key: &str, spec: &serde_json::Value) -> factory_pipeline::Published {
    match pipeline
        .get_or_build(key, spec, Duration::from_secs(20))
        .await
        .unwrap()
    {
        Response::Served(p) => p,
        other => panic!("expected Served, got {other:?}"),
    }
}

/// Rewrites the object at `key` with its first byte flipped: same size, other bytes.
async fn alter_first_byte(store: &dyn ContentStore, key: &str) {
    let mut altered = read_all(store, key).await;
    altered[0] ^= 0xff;
    store
        .put(key, Bytes::from(altered), None, PutCondition::Overwrite)
        .await
        .unwrap();
}

async fn read_all(store: &dyn ContentStore, key: &str) -> Vec<u8> {
    let (_, mut stream) = store.get_stream(key).await.unwrap().unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Cases

async fn cold_request_is_built_by_a_worker(fixture: &Fixture) {
    let s = setup(fixture, Dummy::new(Duration::ZERO, Mode::Ok), config());
    let key = cache_key();
    let spec = spec("talos-kernel-", 40_000);

    // No worker yet: the budget runs out while the message waits.
    let cold = s
        .pipeline
        .get_or_build(&key, &spec, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        cold,
        Response::Building {
            retry_after: Duration::from_secs(3)
        }
    );

    let _worker = worker(s.queue.clone(), s.builder.clone());
    let published = served(&s.pipeline, &key, &spec).await;
    let bytes = expected_bytes("talos-kernel-", 40_000);
    let sha256 = hex::encode(Sha256::digest(&bytes));
    assert_eq!(published.cache_key, key);
    assert_eq!(
        published.object_key,
        format!("assets/{key}/{sha256}/kernel-amd64")
    );
    assert_eq!(published.sha256, sha256);
    assert_eq!(published.sha512, hex::encode(sha2::Sha512::digest(&bytes)));
    assert_eq!(published.size, bytes.len() as u64);
    assert_eq!(published.content_type, "application/octet-stream");
    assert_eq!(published.input_digests["kernel"], "sha256:0123");
    assert_eq!(read_all(&*s.store, &published.object_key).await, bytes);
    assert_eq!(
        s.pipeline.index().verify_object(&published).await.unwrap(),
        ObjectCheck::Intact
    );
    // Staging is cleaned up; the claim is released (expired) for whoever comes next.
    assert!(s.store.list("staging/").await.unwrap().is_empty());
    let claim = Claims::new(s.store.clone()).current(&key).await.unwrap().unwrap();
    assert_eq!(claim.expires_at, 0);
    // Served again without a build.
    assert_eq!(served(&s.pipeline, &key, &spec).await, published);
    assert_eq!(s.dummy.calls(), 1);
}

async fn concurrent_requests_build_once(fixture: &Fixture) {
    let s = setup(
        fixture,
        Dummy::new(Duration::from_millis(300), Mode::Ok),
        config(),
    );
    let key = cache_key();
    let spec = spec("abc", 1000);
    let _worker = worker(s.queue.clone(), s.builder.clone());
    let requests = (0..20).map(|_| {
        let pipeline = s.pipeline.clone();
        let (key, spec) = (key.clone(), spec.clone());
        tokio::spawn(async move { served(&pipeline, &key, &spec).await })
    });
    let results = futures::future::join_all(requests).await;
    let first = results[0].as_ref().unwrap().clone();
    for r in results {
        assert_eq!(r.unwrap(), first);
    }
    assert_eq!(
        s.dummy.calls(),
        1,
        "exactly one assembly for 20 concurrent requests"
    );
}

async fn expired_claim_is_taken_over(fixture: &Fixture) {
    let s = setup(fixture, Dummy::new(Duration::ZERO, Mode::Ok), config());
    let claims = Claims::new(s.store.clone());
    let key = cache_key();
    // Long enough to outlast the handful of LocalStack round trips below while still live.
    let lease = Duration::from_millis(1500);

    // A builder that "dies" holding the claim.
    let ClaimOutcome::Claimed(dead) = claims.try_claim(&key, "dead", lease).await.unwrap() else {
        panic!("first claim must succeed");
    };
    assert!(matches!(
        claims.try_claim(&key, "other", lease).await.unwrap(),
        ClaimOutcome::HeldByOther { ref owner, .. } if owner == "dead"
    ));
    let message = BuildMessage::new(&key, spec("x", 10));
    let outcome = s.builder.handle(&message).await;
    assert!(matches!(outcome, Outcome::ClaimedElsewhere { .. }), "{outcome:?}");
    assert_eq!(s.dummy.calls(), 0);

    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    // Several contenders for the expired claim: exactly one compare-and-swap wins.
    let contenders = (0..5).map(|i| {
        let claims = claims.clone();
        let key = key.clone();
        tokio::spawn(async move {
            claims
                .try_claim(&key, &format!("c{i}"), Duration::from_secs(5))
                .await
                .unwrap()
        })
    });
    let outcomes = futures::future::join_all(contenders).await;
    let winners: Vec<_> = outcomes
        .into_iter()
        .filter_map(|o| match o.unwrap() {
            ClaimOutcome::Claimed(lease) => Some(lease),
            ClaimOutcome::HeldByOther { .. } => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "one winner of the takeover: {winners:?}");
    // The dead holder can neither renew nor release the new holder's claim.
    let mut dead = dead;
    assert!(!claims.renew(&mut dead, lease).await.unwrap());
    assert!(!claims.release(&dead).await.unwrap());
    assert_eq!(
        claims.current(&key).await.unwrap().unwrap().owner,
        winners[0].owner
    );
    // Its holder renews and releases; then a builder claims and builds.
    let mut held = winners[0].clone();
    assert!(claims.renew(&mut held, Duration::from_secs(5)).await.unwrap());
    assert!(claims.release(&held).await.unwrap());
    assert!(matches!(s.builder.handle(&message).await, Outcome::Built(_)));
    assert_eq!(s.dummy.calls(), 1);
}

async fn racing_builders_build_once(fixture: &Fixture) {
    let s = setup(
        fixture,
        Dummy::new(Duration::from_millis(400), Mode::Ok),
        config(),
    );
    // A second builder instance (another Lambda) with the same key and assembler.
    let other = Builder::new(s.store.clone(), s.key.clone(), s.dummy.clone(), config()).unwrap();
    let key = cache_key();
    let message = BuildMessage::new(&key, spec("race", 100));
    let (a, b) = tokio::join!(s.builder.handle(&message), other.handle(&message));
    let built = [&a, &b].iter().filter(|o| matches!(o, Outcome::Built(_))).count();
    assert_eq!(built, 1, "{a:?} / {b:?}");
    assert!(
        [&a, &b]
            .iter()
            .any(|o| matches!(o, Outcome::ClaimedElsewhere { .. } | Outcome::AlreadyPublished(_))),
        "{a:?} / {b:?}"
    );
    assert_eq!(s.dummy.calls(), 1);
    // The loser's redelivery finds the record.
    assert!(matches!(
        other.handle(&message).await,
        Outcome::AlreadyPublished(_)
    ));
}

async fn user_error_is_remembered_until_its_ttl(fixture: &Fixture) {
    let ttl = Duration::from_secs(2);
    let dummy = Dummy::new(
        Duration::ZERO,
        Mode::User("extension foo is not available for v1.9.0".into()),
    );
    let s = setup(
        fixture,
        dummy,
        BuilderConfig {
            failure_ttl: ttl,
            ..config()
        },
    );
    let key = cache_key();
    let spec = spec("ok", 10);
    let _worker = worker(s.queue.clone(), s.builder.clone());
    let answer = s
        .pipeline
        .get_or_build(&key, &spec, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        answer,
        Response::Failed("extension foo is not available for v1.9.0".into())
    );
    // Remembered: answered at once, no rebuild (neither by request nor by a stray message).
    let again = s
        .pipeline
        .get_or_build(&key, &spec, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(again, answer);
    let message = BuildMessage::new(&key, spec.clone());
    assert!(matches!(s.builder.handle(&message).await, Outcome::UserError(_)));
    assert_eq!(s.dummy.calls(), 1);
    // The message was finished, not left for redelivery.
    let stray = handle_batch(
        &s.builder,
        &[BatchMessage {
            message_id: "m1".into(),
            body: serde_json::to_string(&message).unwrap(),
        }],
    )
    .await;
    assert!(stray.is_empty());

    // After the TTL (the cause fixed upstream, say) the next request builds again, even inside the
    // queue's 5-minute deduplication window.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    s.dummy.set_mode(Mode::Ok);
    served(&s.pipeline, &key, &spec).await;
    assert_eq!(s.dummy.calls(), 2);
}

async fn retryable_failure_then_success(fixture: &Fixture) {
    let s = setup(fixture, Dummy::new(Duration::ZERO, Mode::RetryTimes(1)), config());
    let key = cache_key();
    let message = BuildMessage::new(&key, spec("retry", 100));
    let body = serde_json::to_string(&message).unwrap();
    let batch = [
        BatchMessage {
            message_id: "good".into(),
            body: body.clone(),
        },
        BatchMessage {
            message_id: "poison".into(),
            body: "{not json".into(),
        },
    ];
    // First delivery: retryable → batch item failure (and the undecodable one too).
    assert_eq!(
        handle_batch(&s.builder, &batch).await,
        vec!["good".to_owned(), "poison".to_owned()]
    );
    assert!(s.pipeline.index().lookup(&key).await.unwrap().is_none());
    assert!(
        s.store.list("failures/").await.unwrap().is_empty(),
        "a retryable error is not negative-cached"
    );
    // The claim was released: the redelivery builds at once, without waiting for the lease.
    assert!(matches!(s.builder.handle(&message).await, Outcome::Built(_)));
    assert_eq!(s.dummy.calls(), 2);

    // End to end through the queue: the failed delivery comes back after the visibility timeout.
    let key = cache_key();
    let spec = spec("again", 10);
    s.dummy.set_mode(Mode::RetryTimes(1));
    let _worker = worker(s.queue.clone(), s.builder.clone());
    served(&s.pipeline, &key, &spec).await;
    assert_eq!(s.dummy.calls(), 4);
}

async fn failed_assembly_leaves_nothing(fixture: &Fixture) {
    let s = setup(fixture, Dummy::new(Duration::ZERO, Mode::FailMidStream), config());
    let key = cache_key();
    // Larger than one S3 part would not be fast; a few writer chunks suffice for the channel.
    let message = BuildMessage::new(&key, spec("partial-", 50_000));
    assert!(matches!(s.builder.handle(&message).await, Outcome::Retry(_)));
    assert!(s.store.list("staging/").await.unwrap().is_empty());
    assert!(s.store.list("assets/").await.unwrap().is_empty());
    assert!(s.pipeline.index().lookup(&key).await.unwrap().is_none());
}

async fn tampered_index_signature_is_a_miss_and_rebuilt(fixture: &Fixture) {
    let s = setup(fixture, Dummy::new(Duration::ZERO, Mode::Ok), config());
    let key = cache_key();
    let spec = spec("signed", 100);
    let _worker = worker(s.queue.clone(), s.builder.clone());
    let published = served(&s.pipeline, &key, &spec).await;

    // Point the record at other bytes, keeping the old signature.
    let index_key = format!("index/{key}.json");
    let (_, body) = s.store.get(&index_key).await.unwrap().unwrap();
    let mut envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let tampered = envelope["payload"]
        .as_str()
        .unwrap()
        .replace(&published.sha256, &"0".repeat(64));
    envelope["payload"] = tampered.into();
    s.store
        .put(
            &index_key,
            Bytes::from(serde_json::to_vec(&envelope).unwrap()),
            None,
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    assert!(
        s.pipeline.index().lookup(&key).await.unwrap().is_none(),
        "bad signature = miss"
    );
    // A record signed by another key is a miss too.
    let stranger = index(fixture, &SigningKey::generate());
    s.store
        .put(&index_key, body, None, PutCondition::Overwrite)
        .await
        .unwrap();
    assert!(stranger.lookup(&key).await.unwrap().is_none());
    assert!(s.pipeline.index().lookup(&key).await.unwrap().is_some());

    // Tamper again (signature bytes this time): a new process (a new pipeline over the same
    // store) finds a miss and rebuilds and republishes; the running one verified the record
    // before and keeps serving it (its object is intact), building nothing.
    envelope["payload"] =
        serde_json::from_slice::<serde_json::Value>(&s.store.get(&index_key).await.unwrap().unwrap().1)
            .unwrap()["payload"]
            .clone();
    let sig = envelope["signature"].as_str().unwrap().to_owned();
    let flipped = if sig.ends_with('0') { "1" } else { "0" };
    envelope["signature"] = format!("{}{flipped}", &sig[..sig.len() - 1]).into();
    s.store
        .put(
            &index_key,
            Bytes::from(serde_json::to_vec(&envelope).unwrap()),
            None,
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    assert!(s.pipeline.index().lookup(&key).await.unwrap().is_none());
    assert_eq!(served(&s.pipeline, &key, &spec).await, published);
    assert_eq!(s.dummy.calls(), 1, "the running pipeline rebuilt nothing");
    let fresh = Pipeline::new(index(fixture, &s.key), s.queue.clone(), poll());
    let rebuilt = served(&fresh, &key, &spec).await;
    assert_eq!(rebuilt.sha256, published.sha256);
    assert_eq!(s.dummy.calls(), 2);
}

async fn altered_object_bytes_are_detected_and_rebuilt(fixture: &Fixture) {
    let s = setup(fixture, Dummy::new(Duration::ZERO, Mode::Ok), config());
    // Every request checks the object (the recheck interval is the next test's).
    let pipeline = s.pipeline.clone().with_object_recheck(Duration::ZERO);
    let key = cache_key();
    let spec = spec("genuine", 1000);
    let _worker = worker(s.queue.clone(), s.builder.clone());
    let published = served(&pipeline, &key, &spec).await;
    assert_eq!(
        pipeline.index().verify_object(&published).await.unwrap(),
        ObjectCheck::Intact
    );

    // Same size, different bytes.
    alter_first_byte(&*s.store, &published.object_key).await;
    assert!(matches!(
        pipeline.index().verify_object(&published).await.unwrap(),
        ObjectCheck::Corrupt { .. }
    ));
    // The cheap check before every redirect (size + etag) notices too, and the request side
    // rebuilds instead of serving: the answer is an intact object, never the altered one.
    assert!(matches!(
        pipeline.index().check_object(&published).await.unwrap(),
        ObjectCheck::Corrupt { .. }
    ));
    let repaired = served(&pipeline, &key, &spec).await;
    assert_eq!(
        pipeline.index().check_object(&repaired).await.unwrap(),
        ObjectCheck::Intact
    );
    assert_eq!(
        read_all(&*s.store, &repaired.object_key).await,
        expected_bytes("genuine", 1000)
    );
    assert_eq!(s.dummy.calls(), 2, "the request side rebuilt the altered asset");

    s.store.delete(&published.object_key).await.unwrap();
    assert_eq!(
        pipeline.index().verify_object(&published).await.unwrap(),
        ObjectCheck::Missing
    );

    // Invalidate → rebuild inside the dedup window of the first build's message.
    pipeline.invalidate(&key, &spec).await.unwrap();
    let rebuilt = served(&pipeline, &key, &spec).await;
    assert_eq!(rebuilt.object_key, published.object_key);
    assert_eq!(
        pipeline.index().verify_object(&rebuilt).await.unwrap(),
        ObjectCheck::Intact
    );
    assert_eq!(
        read_all(&*s.store, &rebuilt.object_key).await,
        expected_bytes("genuine", 1000)
    );
    assert_eq!(s.dummy.calls(), 3);
}

/// A check that an object is intact is trusted for the recheck interval: a warm request within
/// it asks the store nothing (the altered object is still handed out, as the CDN would hand out
/// the redirect it keeps), the first one after it checks again and rebuilds.
async fn object_check_is_trusted_for_the_recheck_interval(fixture: &Fixture) {
    const RECHECK: Duration = Duration::from_secs(3);
    let s = setup(fixture, Dummy::new(Duration::ZERO, Mode::Ok), config());
    let pipeline = s.pipeline.clone().with_object_recheck(RECHECK);
    assert_eq!(pipeline.object_recheck(), RECHECK);
    let key = cache_key();
    let spec = spec("genuine", 1000);
    let _worker = worker(s.queue.clone(), s.builder.clone());
    let published = served(&pipeline, &key, &spec).await;
    let checked_at = std::time::Instant::now();

    alter_first_byte(&*s.store, &published.object_key).await;
    let within = served(&pipeline, &key, &spec).await;
    assert!(
        checked_at.elapsed() < RECHECK / 2,
        "the test took longer than the interval it tests; nothing was shown"
    );
    assert_eq!(
        within, published,
        "trusted within the interval: not checked again"
    );
    assert_eq!(s.dummy.calls(), 1);

    tokio::time::sleep(RECHECK.saturating_sub(checked_at.elapsed()) + Duration::from_millis(100)).await;
    let repaired = served(&pipeline, &key, &spec).await;
    assert_eq!(
        s.dummy.calls(),
        2,
        "checked again after the interval, found altered, rebuilt"
    );
    assert_eq!(
        read_all(&*s.store, &repaired.object_key).await,
        expected_bytes("genuine", 1000)
    );
}
