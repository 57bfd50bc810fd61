//! The builder side: one [`BuildMessage`] in, one [`Outcome`] out.
//!
//! # Streaming scheme (bounded memory)
//!
//! The final object key contains the sha256 of the content, which is known only after the last
//! byte. So a build runs in two streaming passes through the store, never through memory:
//!
//! 1. The [`Assembler`] writes into a hashing writer that forwards 64 KiB chunks through a bounded
//!    channel into `put_stream(staging/<cache_key>/<build id>)` (S3 multipart on AWS), computing
//!    size, sha256 and sha512 on the way. If the assembler fails, the body ends with an error and
//!    the store commits nothing.
//! 2. The staging object is streamed (`get_stream` → `put_stream`) to
//!    `assets/<cache_key>/<sha256>/<file name>`, re-hashing on the way; a mismatch with pass 1
//!    (the staging object changed underneath) fails the build as retryable. Then the staging object
//!    is deleted.
//!
//! The second pass costs one more transfer of the asset inside the region; the store port has no
//! server-side copy yet (S3 `CopyObject`/`UploadPartCopy` would make it free). Alternatives
//! rejected: buffering in memory (unbounded), assembling twice (doubles the expensive part and
//! needs bit-exact reproducibility), a temporary file (bounded by Lambda's ephemeral storage and
//! still a second upload). Staging objects of builders that died are removed by a lifecycle rule
//! on `staging/` (with `AbortIncompleteMultipartUpload`).
//!
//! # Steps of [`Builder::handle`]
//!
//! verified index record present → `AlreadyPublished`; live failure record → `UserError`; claim
//! (held elsewhere → `ClaimedElsewhere`); index re-checked under the claim; assemble + stream
//! (lease renewed every third of the lease meanwhile; a lost lease stops the build); publish the
//! index record (last); release the claim. User errors write a failure record and finish the
//! message; everything else is `Retry` (the claim is released so the redelivery need not wait).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use factory_signing::SigningKey;
use factory_store::{BuildQueue, ContentStore, QueueError, StoreError};
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWrite;
use tracing::Instrument;

use crate::claims::{ClaimOutcome, Claims, Lease};
use crate::failures::Failures;
use crate::hashing::{self, Hashes};
use crate::index::{Index, IndexRecord, Published, Publisher, FORMAT_VERSION};
use crate::keys::{asset_key, staging_key, validate_cache_key, validate_file_name};
use crate::message::BuildMessage;
use crate::PipelineError;

/// What an assembler reports about the bytes it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssembledMeta {
    pub content_type: String,
    pub file_name: String,
    /// Exact digests of every upstream input (name → digest).
    pub input_digests: std::collections::BTreeMap<String, String>,
}

/// Why an assembly failed, classified for the queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// The request cannot be built (e.g. an extension not available for that version): a 4xx for
    /// the user, remembered in the negative cache, not retried.
    #[error("{0}")]
    User(String),
    /// A transient failure (registry or store hiccup): the message is redelivered.
    #[error("retryable: {0}")]
    Retryable(String),
}

/// Turns a spec into asset bytes. Implementations write the asset to `out` and must not buffer
/// it whole: the output goes straight to the store. An error *writing to `out`* means the store
/// stopped accepting the upload: classify it [`AssembleError::Retryable`] (the builder keeps the
/// assembler's classification, since it cannot tell such a failure from the assembler's own).
#[async_trait]
pub trait Assembler: Send + Sync + std::fmt::Debug {
    async fn assemble(
        &self,
        spec: &serde_json::Value,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<AssembledMeta, AssembleError>;
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This builder built and published it.
    Built(Published),
    /// A verified record already existed (a duplicate or redelivered message).
    AlreadyPublished(Published),
    /// Another builder holds a live claim (until, ms since the Unix epoch), or took ours over.
    ClaimedElsewhere { until: u64 },
    /// The user's request cannot be built; recorded in the negative cache.
    UserError(String),
    /// Transient failure; the message should be redelivered.
    Retry(String),
}

impl Outcome {
    /// Whether the queue message is finished (acknowledged) or must be redelivered (a batch item
    /// failure). `ClaimedElsewhere` is redelivered: if the holder dies, its claim expires and the
    /// redelivery takes over; if it succeeds, the redelivery finds `AlreadyPublished`.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Self::Built(_) | Self::AlreadyPublished(_) | Self::UserError(_)
        )
    }
}

/// Counters of what a builder did, per process: logged and asserted on by tests (a test that
/// wants "exactly one build" counts `built` here rather than guessing from stored objects).
#[derive(Debug, Default)]
pub struct BuildStats {
    built: AtomicU64,
    already_published: AtomicU64,
    claimed_elsewhere: AtomicU64,
    user_errors: AtomicU64,
    retries: AtomicU64,
}

impl BuildStats {
    fn record(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Built(_) => &self.built,
            Outcome::AlreadyPublished(_) => &self.already_published,
            Outcome::ClaimedElsewhere { .. } => &self.claimed_elsewhere,
            Outcome::UserError(_) => &self.user_errors,
            Outcome::Retry(_) => &self.retries,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Assets assembled and published.
    pub fn built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }

    /// Messages that found the asset already published.
    pub fn already_published(&self) -> u64 {
        self.already_published.load(Ordering::Relaxed)
    }

    /// Messages that found another builder's live claim.
    pub fn claimed_elsewhere(&self) -> u64 {
        self.claimed_elsewhere.load(Ordering::Relaxed)
    }

    /// Messages finished with a user-caused failure.
    pub fn user_errors(&self) -> u64 {
        self.user_errors.load(Ordering::Relaxed)
    }

    /// Messages handed back for redelivery.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
pub struct BuilderConfig {
    /// Claim lease; renewed every third of it while building. Builder death is noticed after at
    /// most this long.
    pub lease: Duration,
    /// How long a user-caused failure is remembered.
    pub failure_ttl: Duration,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(5 * 60),
            failure_ttl: Duration::from_secs(10 * 60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Builder {
    store: Arc<dyn ContentStore>,
    index: Index,
    publisher: Publisher,
    claims: Claims,
    failures: Failures,
    assembler: Arc<dyn Assembler>,
    config: BuilderConfig,
    /// Identifies this builder instance in claims (plus a per-build suffix).
    id: String,
    stats: Arc<BuildStats>,
}

/// Internal result of the claimed part of a build.
enum Step {
    Done(Outcome),
    Failed(PipelineError),
}

impl Builder {
    pub fn new(
        store: Arc<dyn ContentStore>,
        signing_key: Arc<SigningKey>,
        assembler: Arc<dyn Assembler>,
        config: BuilderConfig,
    ) -> Result<Self, PipelineError> {
        let index = Index::from_public_key_pem(store.clone(), &signing_key.public_key_pem())
            .map_err(|e| PipelineError::Key(e.to_string()))?;
        Ok(Self {
            index,
            publisher: Publisher::new(store.clone(), signing_key),
            claims: Claims::new(store.clone()),
            failures: Failures::new(store.clone()),
            store,
            assembler,
            config,
            id: uuid::Uuid::new_v4().simple().to_string(),
            stats: Arc::default(),
        })
    }

    /// This builder's counters (shared by its clones).
    pub fn stats(&self) -> Arc<BuildStats> {
        Arc::clone(&self.stats)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Handles one message; never fails (infrastructure errors become [`Outcome::Retry`]).
    pub async fn handle(&self, message: &BuildMessage) -> Outcome {
        let outcome = match self.try_handle(message).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(cache_key = %message.cache_key, error = %e, "build failed; will be retried");
                Outcome::Retry(e.to_string())
            }
        };
        self.stats.record(&outcome);
        outcome
    }

    async fn try_handle(&self, message: &BuildMessage) -> Result<Outcome, PipelineError> {
        let cache_key = message.cache_key.as_str();
        validate_cache_key(cache_key)?;
        if let Some(published) = self.index.lookup(cache_key).await? {
            return Ok(Outcome::AlreadyPublished(published));
        }
        if let Some(failure) = self.failures.current(cache_key).await? {
            return Ok(Outcome::UserError(failure.message));
        }
        // A fresh owner per build: two deliveries handled by one instance must not share a claim.
        let owner = format!("{}-{}", self.id, uuid::Uuid::new_v4().simple());
        let mut lease = match self
            .claims
            .try_claim(cache_key, &owner, self.config.lease)
            .await?
        {
            ClaimOutcome::Claimed(lease) => lease,
            ClaimOutcome::HeldByOther { until, .. } => return Ok(Outcome::ClaimedElsewhere { until }),
        };
        let step = self.build_claimed(message, &mut lease).await;
        // Release in every case: after success the record exists; after a failure the redelivery
        // should not wait for the lease. A lost lease is not ours to release.
        if !matches!(step, Step::Done(Outcome::ClaimedElsewhere { .. })) {
            if let Err(e) = self.claims.release(&lease).await {
                tracing::warn!(cache_key, error = %e, "releasing the build claim failed; it will expire");
            }
        }
        match step {
            Step::Done(outcome) => Ok(outcome),
            Step::Failed(e) => Err(e),
        }
    }

    async fn build_claimed(&self, message: &BuildMessage, lease: &mut Lease) -> Step {
        let cache_key = message.cache_key.as_str();
        // Someone may have published between our first look and our claim.
        match self.index.lookup(cache_key).await {
            Ok(Some(published)) => return Step::Done(Outcome::AlreadyPublished(published)),
            Ok(None) => {}
            Err(e) => return Step::Failed(e),
        }
        let build = self.build(message);
        tokio::pin!(build);
        let renew_every = (self.config.lease / 3).max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        let result = loop {
            tokio::select! {
                result = &mut build => break result,
                _ = ticker.tick() => match self.claims.renew(lease, self.config.lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(cache_key, "build claim taken over; abandoning this build");
                        return Step::Done(Outcome::ClaimedElsewhere { until: lease.expires_at });
                    }
                    // A failed renewal is not yet a lost lease; the next tick tries again.
                    Err(e) => tracing::warn!(cache_key, error = %e, "renewing the build claim failed"),
                },
            }
        };
        match result {
            Ok(Ok(record)) => match self.publisher.publish(&record).await {
                Ok(()) => {
                    tracing::info!(cache_key, object_key = %record.object_key, size = record.size, "published");
                    Step::Done(Outcome::Built(record))
                }
                Err(e) => Step::Failed(e),
            },
            Ok(Err(AssembleError::User(msg))) => {
                match self
                    .failures
                    .record(cache_key, &msg, self.config.failure_ttl)
                    .await
                {
                    Ok(_) => Step::Done(Outcome::UserError(msg)),
                    // Without the record, the next request would rebuild at once: retry instead.
                    Err(e) => Step::Failed(e),
                }
            }
            Ok(Err(AssembleError::Retryable(msg))) => Step::Done(Outcome::Retry(msg)),
            Err(e) => Step::Failed(e),
        }
    }

    /// Assembles into staging and moves the result to its content-addressed key. The outer error
    /// is infrastructure, the inner one the assembler's classification.
    async fn build(
        &self,
        message: &BuildMessage,
    ) -> Result<Result<IndexRecord, AssembleError>, PipelineError> {
        let cache_key = message.cache_key.as_str();
        let staging = staging_key(cache_key, &uuid::Uuid::new_v4().simple().to_string());
        let (mut writer, rx) = hashing::channel();
        let reader = tokio_util::io::StreamReader::new(rx);
        let upload = self.store.put_stream(&staging, Box::new(reader), None);
        let produce = async {
            let result = self.assembler.assemble(&message.spec, &mut writer).await;
            match result {
                Ok(meta) => writer
                    .finish()
                    .await
                    .map(|d| Ok((meta, d)))
                    .map_err(|e| e.to_string()),
                Err(e) => {
                    writer.abort(&e.to_string()).await;
                    Ok(Err(e))
                }
            }
        };
        let (uploaded, produced) = tokio::join!(upload, produce);
        let (meta, digests) = match produced {
            Ok(Ok(done)) => done,
            Ok(Err(assemble_error)) => {
                // The aborted body made put_stream fail; should a store have committed anyway,
                // remove the partial staging object.
                if uploaded.is_ok() {
                    self.delete_quietly(&staging).await;
                }
                return Ok(Err(assemble_error));
            }
            Err(io) => {
                return Err(uploaded.err().map_or_else(
                    || PipelineError::Store(StoreError::Backend(format!("streaming the asset: {io}"))),
                    PipelineError::Store,
                ))
            }
        };
        let staged = uploaded?;
        if staged.size != digests.size {
            self.delete_quietly(&staging).await;
            return Err(PipelineError::Integrity {
                key: staging,
                detail: format!("stored {} bytes, assembled {}", staged.size, digests.size),
            });
        }
        if let Err(e) = validate_file_name(&meta.file_name) {
            self.delete_quietly(&staging).await;
            return Err(e);
        }
        let object_key = asset_key(cache_key, &digests.sha256, &meta.file_name);
        let copied = self
            .copy_verified(&staging, &object_key, &meta.content_type, &digests.sha256)
            .await;
        self.delete_quietly(&staging).await;
        let object = copied?;
        Ok(Ok(IndexRecord {
            cache_key: cache_key.to_owned(),
            object_key,
            sha256: digests.sha256,
            sha512: digests.sha512,
            size: digests.size,
            object_etag: object.etag,
            content_type: meta.content_type,
            file_name: meta.file_name,
            input_digests: meta.input_digests,
            built_at: crate::now_ms(),
            format_version: FORMAT_VERSION,
        }))
    }

    /// Streams `from` to `to`, failing (and removing `to`) if the bytes do not hash to `sha256`.
    async fn copy_verified(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        sha256: &str,
    ) -> Result<factory_store::ObjectMeta, PipelineError> {
        let Some((_, stream)) = self.store.get_stream(from).await? else {
            return Err(PipelineError::Integrity {
                key: from.to_owned(),
                detail: "staging object vanished".to_owned(),
            });
        };
        let hashes = Arc::new(std::sync::Mutex::new(Hashes::default()));
        let tap = hashes.clone();
        let stream = stream
            .inspect_ok(move |chunk| {
                if let Ok(mut h) = tap.lock() {
                    h.update(chunk);
                }
            })
            .map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(stream.boxed());
        let content_type = (!content_type.is_empty()).then_some(content_type);
        let written = self.store.put_stream(to, Box::new(reader), content_type).await?;
        let actual = match hashes.lock() {
            Ok(h) => h.clone().finish().sha256,
            Err(_) => String::new(),
        };
        if actual != sha256 {
            self.delete_quietly(to).await;
            return Err(PipelineError::Integrity {
                key: to.to_owned(),
                detail: format!("copied sha256 {actual}, assembled {sha256}"),
            });
        }
        Ok(written)
    }

    async fn delete_quietly(&self, key: &str) {
        if let Err(e) = self.store.delete(key).await {
            tracing::warn!(key, error = %e, "cleanup delete failed");
        }
    }
}

/// One queue message as an SQS event (or a local poller) delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMessage {
    pub message_id: String,
    pub body: String,
}

/// A message [`handle_batch_detailed`] hands back for redelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redelivery {
    pub message_id: String,
    /// A failure worth retrying soon (transient error, undecodable body) rather than after the
    /// queue's visibility timeout; `false` when another builder holds the claim (its build may
    /// run long, and each early redelivery would count towards the DLQ).
    pub soon: bool,
}

/// Handles a batch, one span per message, and returns the ids of the messages to redeliver (the
/// SQS `batchItemFailures`). A body that is not a [`BuildMessage`] is reported as a failure too:
/// it is not ours to drop silently, and after `maxReceiveCount` it lands in the DLQ for a human.
pub async fn handle_batch(builder: &Builder, messages: &[BatchMessage]) -> Vec<String> {
    handle_batch_detailed(builder, messages)
        .await
        .into_iter()
        .map(|r| r.message_id)
        .collect()
}

/// [`handle_batch`], telling for each redelivery whether it should come soon.
pub async fn handle_batch_detailed(builder: &Builder, messages: &[BatchMessage]) -> Vec<Redelivery> {
    let mut failures = Vec::new();
    // Sequentially: SQS FIFO hands over a group's messages in order and expects them handled in
    // order, and one build at a time keeps the function's memory and disk use bounded.
    for m in messages {
        let span = tracing::info_span!("build_message", message_id = %m.message_id);
        let redeliver = async {
            match BuildMessage::from_json(&m.body) {
                Ok(message) => {
                    let outcome = builder.handle(&message).await;
                    tracing::info!(cache_key = %message.cache_key, ?outcome, "build message handled");
                    match outcome {
                        o if o.is_done() => None,
                        Outcome::ClaimedElsewhere { .. } => Some(false),
                        _ => Some(true),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "undecodable build message");
                    Some(true)
                }
            }
        }
        .instrument(span)
        .await;
        if let Some(soon) = redeliver {
            failures.push(Redelivery {
                message_id: m.message_id.clone(),
                soon,
            });
        }
    }
    failures
}

/// Receives up to `max` messages (waiting up to `wait`), handles them with [`handle_batch`] and
/// acknowledges the finished ones, as the Lambda event source mapping does. Returns how many
/// messages were received. For the local server's poller and for tests.
pub async fn poll_once(
    queue: &dyn BuildQueue,
    builder: &Builder,
    max: usize,
    wait: Duration,
) -> Result<usize, QueueError> {
    let received = queue.receive(max, wait).await?;
    let batch: Vec<BatchMessage> = received
        .iter()
        .map(|r| BatchMessage {
            message_id: r.message_id.clone(),
            body: r.body.clone(),
        })
        .collect();
    let failed = handle_batch(builder, &batch).await;
    for r in &received {
        if !failed.contains(&r.message_id) {
            queue.ack(&r.receipt).await?;
        }
    }
    Ok(received.len())
}
