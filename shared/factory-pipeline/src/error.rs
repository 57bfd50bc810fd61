use factory_store::{QueueError, StoreError};

/// Infrastructure errors of the pipeline (store, queue, encoding). None of them is the user's
/// fault: on the request side they are a 5xx, on the builder side a retry.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A cache key or file name that cannot be part of an object key: a caller bug.
    #[error("invalid {what} {value:?}")]
    Invalid { what: &'static str, value: String },
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The factory key cannot be used (its public half does not parse).
    #[error("signing key: {0}")]
    Key(String),
    /// The streamed object did not hash to what was written (staging object changed underneath).
    #[error("integrity check failed for {key}: {detail}")]
    Integrity { key: String, detail: String },
}
