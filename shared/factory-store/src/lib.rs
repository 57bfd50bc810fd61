//! Narrow ports the factory's logic depends on, and the embedded adapters behind them.
//!
//! * [`ContentStore`]: an object store with atomic, optionally conditional writes. S3 in production
//!   (`factory-aws`), a directory on disk for the local server ([`fs::FsStore`]).
//! * [`BuildQueue`]: a FIFO work queue with deduplication, visibility timeouts and a dead-letter
//!   queue. SQS FIFO in production (`factory-aws`), an in-process queue for the local server
//!   ([`memory::MemoryQueue`]).
//!
//! Both traits are object safe so that the HTTP layer and the builder hold `Arc<dyn ...>` and the
//! same code runs in Lambda, in the local server and in the tests.

pub mod counting;
pub mod fs;
pub mod memo;
pub mod memory;
mod queue;
mod store;

pub use counting::{CountingStore, StoreCounts};
pub use memo::Memo;
pub use queue::{BuildQueue, QueueError, QueueMessage, ReceivedMessage};
pub use store::{
    validate_key, ByteStream, ContentStore, ObjectMeta, PresignHeaders, PutCondition, PutOutcome, StoreError,
};
