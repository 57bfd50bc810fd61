//! The typed build message shared by the request side and the builder.

use factory_store::QueueMessage;
use serde::{Deserialize, Serialize};

use crate::PipelineError;

/// "Build the asset for this cache key from this spec." JSON on the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildMessage {
    pub cache_key: String,
    /// The enhanced profile; opaque to the pipeline, interpreted by the [`crate::Assembler`].
    pub spec: serde_json::Value,
    /// When the request side enqueued it (ms since the Unix epoch); for logs and latency metrics.
    pub requested_at: u64,
}

impl BuildMessage {
    pub fn new(cache_key: impl Into<String>, spec: serde_json::Value) -> Self {
        Self {
            cache_key: cache_key.into(),
            spec,
            requested_at: crate::now_ms(),
        }
    }

    /// The queue message with group id = dedup id = cache key: FIFO deduplication turns a burst of
    /// requests for one key into one build, and one group per key keeps keys independent.
    pub fn to_queue_message(&self) -> Result<QueueMessage, PipelineError> {
        self.to_queue_message_with_dedup(self.cache_key.clone())
    }

    /// As [`Self::to_queue_message`] with an explicit dedup id, for a deliberate rebuild inside
    /// the 5-minute deduplication window (see [`crate::pipeline`]).
    pub fn to_queue_message_with_dedup(&self, dedup_id: String) -> Result<QueueMessage, PipelineError> {
        let body = serde_json::to_string(self).map_err(|source| PipelineError::Encode {
            what: "build message",
            source,
        })?;
        Ok(QueueMessage {
            body,
            group_id: self.cache_key.clone(),
            dedup_id,
        })
    }

    pub fn from_json(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_and_uses_the_cache_key_for_dedup_and_group() {
        let m = BuildMessage::new("k1", serde_json::json!({"arch": "amd64"}));
        let q = m.to_queue_message().expect("encodes");
        assert_eq!(q.dedup_id, "k1");
        assert_eq!(q.group_id, "k1");
        assert_eq!(BuildMessage::from_json(&q.body).expect("decodes"), m);
    }
}
