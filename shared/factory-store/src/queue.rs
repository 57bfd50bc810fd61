use std::time::Duration;

use async_trait::async_trait;

/// Errors of the build queue layer.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("build queue backend error: {0}")]
    Backend(String),
    #[error("unknown receipt handle")]
    UnknownReceipt,
}

/// A message to enqueue. FIFO semantics: messages of one group are delivered in order; a second
/// message with the same `dedup_id` inside the deduplication window (5 minutes, as SQS) is
/// accepted but not delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub body: String,
    pub group_id: String,
    pub dedup_id: String,
}

/// A delivered message; `receipt` acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub body: String,
    pub receipt: String,
    pub message_id: String,
    /// How many times this message has been received, this delivery included.
    pub receive_count: u32,
}

/// A work queue with at-least-once delivery: a message that is received but not acknowledged
/// becomes visible again after the visibility timeout, and after `max_receives` deliveries it is
/// moved to the dead-letter queue.
#[async_trait]
pub trait BuildQueue: Send + Sync + std::fmt::Debug {
    async fn send(&self, message: QueueMessage) -> Result<(), QueueError>;

    /// Receives up to `max` messages, waiting up to `wait` for the first one.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Acknowledges (deletes) a received message.
    async fn ack(&self, receipt: &str) -> Result<(), QueueError>;

    /// Makes a received, unacknowledged message visible again after `delay` instead of after the
    /// queue's visibility timeout (SQS `ChangeMessageVisibility`). The queue's timeout must cover
    /// the longest build; a failed build should be retried much sooner than that.
    async fn retry_after(&self, receipt: &str, delay: Duration) -> Result<(), QueueError>;

    /// Messages currently in the dead-letter queue (bodies), for operators and tests.
    async fn dead_letters(&self) -> Result<Vec<String>, QueueError>;
}
