//! Build claims: "exactly one build per key across all instances" with nothing but conditional
//! object writes.
//!
//! # Protocol
//!
//! The claim object `claims/<cache_key>.json` holds `{owner, claimed_at, expires_at}` (wall-clock
//! ms). [`Claims::try_claim`]:
//!
//! 1. `put(IfAbsent)` of a fresh claim. Written → claimed.
//! 2. Otherwise read it (with its etag). Owned by us → renew it (re-entrant). Live and owned by
//!    someone else → [`ClaimOutcome::HeldByOther`]. Expired (or unreadable) → take over with
//!    `put(IfMatch(etag))`: a compare-and-swap against exactly the expired version, so when several
//!    builders see the same expired claim exactly one write succeeds; the others re-read and find
//!    the winner's live claim.
//! 3. If the object vanished between the write and the read, start again (bounded attempts).
//!
//! [`Claims::renew`] and [`Claims::release`] are compare-and-swaps against the etag the holder
//! last wrote, so a holder whose lease was taken over cannot extend or clear the new holder's
//! claim: it learns it lost. Release writes an already-expired claim instead of deleting, because
//! the store has no conditional delete; a released claim is taken over like an expired one.
//!
//! # Failure cases
//!
//! * Builder dies (Lambda timeout, crash, SIGKILL) → its lease is not renewed, expires, and the
//!   next builder (the SQS redelivery) takes over. Nothing was published: the index record is
//!   written last; a half-written staging object is never visible (the store commits streams
//!   atomically) and is cleaned by a lifecycle rule on `staging/`.
//! * Slow builder (GC pause, network stall longer than the lease) → another builder may take over;
//!   the slow one notices at its next renewal and stops. If both finish, both publish a correct
//!   record for a content-addressed object: wasteful, never wrong. The claim is an efficiency
//!   lock; correctness rests on write-last publication and signatures.
//! * Clock skew between instances of `s` ms makes a claim look expired up to `s` ms early or late.
//!   With skew far below the lease length (NTP-synchronised Lambdas: milliseconds; leases:
//!   minutes) the effect is bounded by `s`, and at worst the duplicate build above.
//! * Store unavailable → errors propagate; the builder reports a retry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use factory_store::{ContentStore, PutCondition, PutOutcome};
use serde::{Deserialize, Serialize};

use crate::keys::{claim_key, validate_cache_key};
use crate::{duration_ms, now_ms, PipelineError};

/// The stored claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub cache_key: String,
    pub owner: String,
    pub claimed_at: u64,
    pub expires_at: u64,
}

/// A claim we hold: the etag we last wrote is the compare-and-swap token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub cache_key: String,
    pub owner: String,
    pub etag: String,
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(Lease),
    /// Another owner holds a live claim until this time (ms since the Unix epoch).
    HeldByOther {
        owner: String,
        until: u64,
    },
}

/// How many times `try_claim` restarts when the claim object changes under it.
const MAX_ATTEMPTS: usize = 5;

#[derive(Debug, Clone)]
pub struct Claims {
    store: Arc<dyn ContentStore>,
}

impl Claims {
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Self { store }
    }

    /// Claims `cache_key` for `owner` for `lease`; see the module documentation.
    pub async fn try_claim(
        &self,
        cache_key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<ClaimOutcome, PipelineError> {
        validate_cache_key(cache_key)?;
        let key = claim_key(cache_key);
        for _ in 0..MAX_ATTEMPTS {
            if let Some(lease) = self
                .write(cache_key, owner, lease, PutCondition::IfAbsent)
                .await?
            {
                return Ok(ClaimOutcome::Claimed(lease));
            }
            let Some((meta, body)) = self.store.get(&key).await? else {
                continue; // released and removed in between: try the IfAbsent write again
            };
            let current = serde_json::from_slice::<ClaimRecord>(&body).ok();
            let now = now_ms();
            let takeover = match &current {
                Some(c) if c.owner == owner => true,
                Some(c) if c.expires_at > now => {
                    return Ok(ClaimOutcome::HeldByOther {
                        owner: c.owner.clone(),
                        until: c.expires_at,
                    })
                }
                Some(c) => {
                    tracing::info!(cache_key, previous_owner = %c.owner, "taking over an expired build claim");
                    true
                }
                None => {
                    tracing::warn!(cache_key, "unreadable build claim; taking it over");
                    true
                }
            };
            if takeover {
                if let Some(lease) = self
                    .write(cache_key, owner, lease, PutCondition::IfMatch(meta.etag))
                    .await?
                {
                    return Ok(ClaimOutcome::Claimed(lease));
                }
                // Lost the compare-and-swap: loop to read the winner's claim.
            }
        }
        Err(PipelineError::Store(factory_store::StoreError::Backend(format!(
            "claim {key} kept changing during {MAX_ATTEMPTS} attempts"
        ))))
    }

    /// Extends a held lease. `Ok(false)` when the claim was taken over (the lease is lost).
    pub async fn renew(&self, held: &mut Lease, lease: Duration) -> Result<bool, PipelineError> {
        match self
            .write(
                &held.cache_key,
                &held.owner,
                lease,
                PutCondition::IfMatch(held.etag.clone()),
            )
            .await?
        {
            Some(new) => {
                *held = new;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives the claim up so that another builder need not wait for the lease to expire.
    /// `Ok(false)` when it had already been taken over.
    pub async fn release(&self, held: &Lease) -> Result<bool, PipelineError> {
        let now = now_ms();
        let record = ClaimRecord {
            cache_key: held.cache_key.clone(),
            owner: held.owner.clone(),
            claimed_at: now,
            expires_at: 0,
        };
        let outcome = self
            .put(&held.cache_key, &record, PutCondition::IfMatch(held.etag.clone()))
            .await?;
        Ok(matches!(outcome, PutOutcome::Written(_)))
    }

    /// The current claim, if any (for operators and tests).
    pub async fn current(&self, cache_key: &str) -> Result<Option<ClaimRecord>, PipelineError> {
        validate_cache_key(cache_key)?;
        Ok(match self.store.get(&claim_key(cache_key)).await? {
            Some((_, body)) => serde_json::from_slice(&body).ok(),
            None => None,
        })
    }

    async fn write(
        &self,
        cache_key: &str,
        owner: &str,
        lease: Duration,
        condition: PutCondition,
    ) -> Result<Option<Lease>, PipelineError> {
        let now = now_ms();
        let record = ClaimRecord {
            cache_key: cache_key.to_owned(),
            owner: owner.to_owned(),
            claimed_at: now,
            expires_at: now.saturating_add(duration_ms(lease)),
        };
        Ok(match self.put(cache_key, &record, condition).await? {
            PutOutcome::Written(meta) => Some(Lease {
                cache_key: cache_key.to_owned(),
                owner: owner.to_owned(),
                etag: meta.etag,
                expires_at: record.expires_at,
            }),
            PutOutcome::ConditionFailed => None,
        })
    }

    async fn put(
        &self,
        cache_key: &str,
        record: &ClaimRecord,
        condition: PutCondition,
    ) -> Result<PutOutcome, PipelineError> {
        let body = serde_json::to_vec(record).map_err(|source| PipelineError::Encode {
            what: "claim record",
            source,
        })?;
        Ok(self
            .store
            .put(
                &claim_key(cache_key),
                Bytes::from(body),
                Some("application/json"),
                condition,
            )
            .await?)
    }
}
