//! The asset-agnostic core of "build on miss": a request for an asset that is not built yet
//! enqueues one typed build message; a builder claims the key, assembles the asset **streaming**
//! into the content store, and publishes a signed index record as its very last step; every later
//! request finds the record and is served from an immutable, content-addressed object.
//!
//! Assets are opaque here: an [`Assembler`] turns a spec (the enhanced profile, a JSON value) into
//! bytes. Asset formats, the HTTP route and the Lambda wiring live elsewhere.
//!
//! # Object keys ([`keys`])
//!
//! | key | what | why |
//! |---|---|---|
//! | `assets/<cache_key>/<sha256>/<file name>` | the asset bytes | content addressed: the key names exactly one byte sequence, so a CDN may cache it forever and a rebuild with different bytes gets a different key instead of overwriting a cached object; the file name is the last segment so a plain `GET` downloads under a useful name |
//! | `staging/<cache_key>/<build id>` | the asset while it is assembled | the sha256 (part of the final key) is known only once the last byte is written; see [`builder`] |
//! | `index/<cache_key>.json` | the signed index record | the one mutable pointer per cache key; written last, so its presence means "complete" |
//! | `claims/<cache_key>.json` | the build claim (lease) | compare-and-swap target that makes one builder build |
//! | `failures/<cache_key>.json` | negative cache record with a TTL | a user-caused failure is answered without rebuilding until it expires |
//!
//! # Protocols
//!
//! * Claims/leases: [`claims`]. Publication and verification: [`index`]. Streaming build and
//!   failure classification: [`builder`]. Request side and deduplication ids: [`pipeline`].
//!   SQS events in, batch item failures out (the builder Lambda and the local poller):
//!   [`sqs_event`].

pub mod builder;
pub mod claims;
mod error;
pub mod failures;
mod hashing;
pub mod index;
pub mod keys;
pub mod message;
pub mod pipeline;
pub mod sqs_event;

pub use builder::{
    handle_batch, handle_batch_detailed, poll_once, AssembleError, AssembledMeta, Assembler, BatchMessage,
    BuildStats, Builder, BuilderConfig, Outcome, Redelivery,
};
pub use claims::{ClaimOutcome, ClaimRecord, Claims, Lease};
pub use error::PipelineError;
pub use failures::{FailureRecord, Failures};
pub use index::{Index, IndexRecord, ObjectCheck, Published, Publisher, FORMAT_VERSION};
pub use message::BuildMessage;
pub use pipeline::{Pipeline, PollConfig, Response, DEFAULT_OBJECT_RECHECK};
pub use sqs_event::{
    handle_sqs_event, handle_sqs_event_with_retries, sqs_event_from_received, EventSource, SqsEventError,
};

/// Milliseconds since the Unix epoch by the wall clock. Leases and TTLs are compared across
/// machines (Lambdas), so they use the wall clock, not a monotonic one; see [`claims`] for what
/// clock skew does.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
