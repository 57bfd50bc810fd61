//! The request side: serve a published asset, or enqueue its build and wait a bounded time.
//!
//! # Deduplication ids
//!
//! The build message's FIFO dedup id is the cache key, so any burst of requests for a key that
//! was never built becomes one message. A key can also need a *re*build inside SQS's 5-minute
//! dedup window, and a message with the same id would then be silently dropped: an index record
//! that exists but was rejected (tampered signature), an expired failure record, or an object
//! found corrupt ([`Pipeline::invalidate`]). In those cases the dedup id is
//! `<cache_key>-<16 hex of sha256 of the etag of the state being replaced>`: still the same for
//! every request that sees that same state (one message per burst), but new for each new state.
//!
//! # Wait budget
//!
//! After enqueueing, the index is polled with exponential backoff until the budget runs out
//! (the caller picks it: ~20 s leaves room under API Gateway's 29 s limit); then the answer is
//! [`Response::Building`] with a `Retry-After` hint, and clients retry.
//!
//! # Object recheck
//!
//! Before a published asset is served, one `HEAD` checks that its object is still the one
//! published (size and etag). A process then trusts that check for [`Pipeline::object_recheck`]
//! ([`DEFAULT_OBJECT_RECHECK`] unless set), so a warm hit costs no storage request at all; an
//! object altered or deleted behind the factory's back is noticed by the first request after
//! that interval, and rebuilt. The interval is far below how long the CDN keeps the redirect
//! itself (`Cache-Control` of the image route, 300 s), which bounds what clients can see in any
//! case; zero checks on every request.

use std::sync::Arc;
use std::time::Duration;

use factory_store::{BuildQueue, Memo};
use sha2::{Digest, Sha256};

use crate::failures::Failures;
use crate::index::{Index, ObjectCheck, Published};
use crate::keys::{index_key, validate_cache_key};
use crate::message::BuildMessage;
use crate::PipelineError;

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Published and verified: redirect to / serve `object_key`.
    Served(Published),
    /// Not ready within the budget: answer 503 with this `Retry-After`.
    Building { retry_after: Duration },
    /// A remembered user-caused failure: answer 4xx with this message.
    Failed(String),
}

/// Backoff of the index polling.
#[derive(Debug, Clone)]
pub struct PollConfig {
    pub initial: Duration,
    pub max: Duration,
    /// The `Retry-After` suggested when the budget runs out.
    pub retry_after: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            retry_after: Duration::from_secs(10),
        }
    }
}

/// How long a process trusts an object check by default (see the module documentation).
pub const DEFAULT_OBJECT_RECHECK: Duration = Duration::from_secs(10);

/// Objects found intact, at most this many remembered (a key and an etag each).
const CHECKED_MEMO_ENTRIES: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct Pipeline {
    index: Index,
    failures: Failures,
    queue: Arc<dyn BuildQueue>,
    poll: PollConfig,
    /// Objects found intact within the recheck interval: (object key, etag as published).
    /// Keyed by the etag too, so that a check of one published object never vouches for another.
    checked: Option<Arc<Memo<(String, String), ()>>>,
    object_recheck: Duration,
}

impl Pipeline {
    pub fn new(index: Index, queue: Arc<dyn BuildQueue>, poll: PollConfig) -> Self {
        Self {
            failures: Failures::new(index.store().clone()),
            index,
            queue,
            poll,
            checked: None,
            object_recheck: Duration::ZERO,
        }
        .with_object_recheck(DEFAULT_OBJECT_RECHECK)
    }

    /// How long an object found intact is trusted without another `HEAD` (zero: never).
    pub fn with_object_recheck(mut self, interval: Duration) -> Self {
        self.object_recheck = interval;
        self.checked =
            (!interval.is_zero()).then(|| Arc::new(Memo::with_ttl(CHECKED_MEMO_ENTRIES, interval)));
        self
    }

    pub fn object_recheck(&self) -> Duration {
        self.object_recheck
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Served if published and the object passes [`Index::check_object`]; Failed if a live
    /// failure record exists; otherwise enqueues the build (deduplicated) and polls until
    /// `wait_budget`, then Building. A published asset whose object is missing or altered is
    /// forgotten and rebuilt: altered bytes are never served.
    pub async fn get_or_build(
        &self,
        cache_key: &str,
        spec: &serde_json::Value,
        wait_budget: Duration,
    ) -> Result<Response, PipelineError> {
        validate_cache_key(cache_key)?;
        let deadline = tokio::time::Instant::now() + wait_budget;
        // The warm path: a record verified earlier, and one `HEAD` that its object is intact.
        if let Some(published) = self.index.remembered(cache_key) {
            if self.intact(&published).await? {
                return Ok(Response::Served(published));
            }
            // Whatever the store now holds for the key decides, as on a cold lookup.
            self.index.forget(cache_key);
        }
        let index = self.index.lookup_with_etag(cache_key).await?;
        let replaced = match index.published {
            Some(published) => {
                if self.intact(&published).await? {
                    return Ok(Response::Served(published));
                }
                // A published record whose object is gone or altered: forget it and rebuild. The
                // record's etag makes the rebuild's dedup id new (see the module documentation).
                self.index.store().delete(&index_key(cache_key)).await?;
                index.etag
            }
            None => {
                let failure = self.failures.state(cache_key).await?;
                if let Some(record) = failure.valid {
                    return Ok(Response::Failed(record.message));
                }
                // The state this build replaces, for the dedup id.
                index.etag.or(failure.etag)
            }
        };
        self.enqueue(cache_key, spec, replaced.as_deref()).await?;

        let mut delay = self.poll.initial;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Response::Building {
                    retry_after: self.poll.retry_after,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(self.poll.max);
            if let Some(published) = self.index.lookup(cache_key).await? {
                // A fresh record whose object fails the check is left to the next request,
                // which invalidates it (with a dedup id of its own).
                if self.intact(&published).await? {
                    return Ok(Response::Served(published));
                }
            }
            if let Some(record) = self.failures.current(cache_key).await? {
                return Ok(Response::Failed(record.message));
            }
        }
    }

    /// Whether the published object still is what was published (one `HEAD`: size and etag),
    /// unless a check within the recheck interval found it so.
    async fn intact(&self, published: &crate::Published) -> Result<bool, PipelineError> {
        let memo_key = || (published.object_key.clone(), published.object_etag.clone());
        if let Some(checked) = &self.checked {
            if checked.get(&memo_key()).is_some() {
                return Ok(true);
            }
        }
        match self.index.check_object(published).await? {
            ObjectCheck::Intact => {
                if let Some(checked) = &self.checked {
                    checked.insert(memo_key(), ());
                }
                Ok(true)
            }
            ObjectCheck::Missing => {
                tracing::warn!(cache_key = %published.cache_key, object_key = %published.object_key, "published object is missing; rebuilding");
                Ok(false)
            }
            ObjectCheck::Corrupt { detail } => {
                tracing::warn!(cache_key = %published.cache_key, object_key = %published.object_key, %detail, "published object was altered; rebuilding");
                Ok(false)
            }
        }
    }

    /// Forgets a published asset whose object failed [`Index::verify_object`] and enqueues its
    /// rebuild (with a dedup id that the earlier build's message cannot swallow).
    pub async fn invalidate(&self, cache_key: &str, spec: &serde_json::Value) -> Result<(), PipelineError> {
        validate_cache_key(cache_key)?;
        // This process trusts neither the record nor a recent check of its object any more.
        if let Some(published) = self.index.remembered(cache_key) {
            if let Some(checked) = &self.checked {
                checked.remove(&(published.object_key, published.object_etag));
            }
            self.index.forget(cache_key);
        }
        let key = index_key(cache_key);
        let etag = self.index.store().head(&key).await?.map(|m| m.etag);
        self.index.store().delete(&key).await?;
        tracing::warn!(cache_key, "published asset invalidated; rebuilding");
        self.enqueue(cache_key, spec, etag.as_deref()).await
    }

    async fn enqueue(
        &self,
        cache_key: &str,
        spec: &serde_json::Value,
        replaced_etag: Option<&str>,
    ) -> Result<(), PipelineError> {
        let message = BuildMessage::new(cache_key, spec.clone());
        let dedup_id = dedup_id(cache_key, replaced_etag);
        self.queue
            .send(message.to_queue_message_with_dedup(dedup_id)?)
            .await?;
        Ok(())
    }
}

/// The FIFO dedup id of a build of `cache_key` that replaces the stored state with `etag`.
pub fn dedup_id(cache_key: &str, replaced_etag: Option<&str>) -> String {
    match replaced_etag {
        None => cache_key.to_owned(),
        Some(etag) => {
            let digest = hex::encode(Sha256::digest(etag.trim_matches('"').as_bytes()));
            format!("{cache_key}-{}", &digest[..16])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_are_the_cache_key_unless_a_stored_state_is_replaced() {
        assert_eq!(dedup_id("k", None), "k");
        let a = dedup_id("k", Some("\"etag-1\""));
        assert_eq!(a, dedup_id("k", Some("etag-1")), "quotes do not matter");
        assert_ne!(a, dedup_id("k", Some("etag-2")));
        assert_eq!(a.len(), "k".len() + 17);
    }
}
