//! The negative cache: `failures/<cache_key>.json` remembers a user-caused build failure (e.g. an
//! extension not available for that version) for a TTL, so requests get the same 4xx at once
//! instead of re-enqueueing a build that will fail again. Unsigned: whoever can write the bucket
//! can already deny service; the record only ever produces an error answer, never content.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use factory_store::{ContentStore, PutCondition};
use serde::{Deserialize, Serialize};

use crate::keys::{failure_key, validate_cache_key};
use crate::{duration_ms, now_ms, PipelineError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub cache_key: String,
    /// The message for the user (becomes the 4xx body).
    pub message: String,
    pub failed_at: u64,
    pub expires_at: u64,
}

impl FailureRecord {
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at
    }
}

/// Reads and writes failure records.
#[derive(Debug, Clone)]
pub struct Failures {
    store: Arc<dyn ContentStore>,
}

/// A stored failure record and its etag (also of an expired or unreadable one).
#[derive(Debug)]
pub(crate) struct FailureState {
    pub etag: Option<String>,
    pub valid: Option<FailureRecord>,
}

impl Failures {
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Self { store }
    }

    pub async fn record(
        &self,
        cache_key: &str,
        message: &str,
        ttl: Duration,
    ) -> Result<FailureRecord, PipelineError> {
        validate_cache_key(cache_key)?;
        let now = now_ms();
        let record = FailureRecord {
            cache_key: cache_key.to_owned(),
            message: message.to_owned(),
            failed_at: now,
            expires_at: now.saturating_add(duration_ms(ttl)),
        };
        let body = serde_json::to_vec(&record).map_err(|source| PipelineError::Encode {
            what: "failure record",
            source,
        })?;
        self.store
            .put(
                &failure_key(cache_key),
                Bytes::from(body),
                Some("application/json"),
                PutCondition::Overwrite,
            )
            .await?;
        Ok(record)
    }

    /// The failure record for `cache_key` if it has not expired.
    pub async fn current(&self, cache_key: &str) -> Result<Option<FailureRecord>, PipelineError> {
        Ok(self.state(cache_key).await?.valid)
    }

    pub(crate) async fn state(&self, cache_key: &str) -> Result<FailureState, PipelineError> {
        validate_cache_key(cache_key)?;
        let Some((meta, body)) = self.store.get(&failure_key(cache_key)).await? else {
            return Ok(FailureState {
                etag: None,
                valid: None,
            });
        };
        let valid = match serde_json::from_slice::<FailureRecord>(&body) {
            Ok(r) if r.cache_key == cache_key && r.is_valid_at(now_ms()) => Some(r),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(cache_key, error = %e, "unreadable failure record ignored");
                None
            }
        };
        Ok(FailureState {
            etag: Some(meta.etag),
            valid,
        })
    }

    pub async fn clear(&self, cache_key: &str) -> Result<(), PipelineError> {
        validate_cache_key(cache_key)?;
        Ok(self.store.delete(&failure_key(cache_key)).await?)
    }
}
