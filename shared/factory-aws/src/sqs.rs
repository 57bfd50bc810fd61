//! [`BuildQueue`] on SQS FIFO, and the provisioning of such a queue.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use factory_store::{BuildQueue, QueueError, QueueMessage, ReceivedMessage};
use sha2::{Digest, Sha256};

use crate::error::AwsError;

/// SQS's longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS's largest batch.
const MAX_BATCH: usize = 10;
/// How many receives [`SqsQueue::dead_letters`] makes at most.
const DLQ_PEEK_ROUNDS: usize = 5;

/// A [`BuildQueue`] on an SQS FIFO queue (`*.fifo`) whose redrive policy moves messages to
/// `dlq_url` after `maxReceiveCount` receives.
///
/// The visibility timeout and the receive limit are attributes of the queue (see
/// [`ensure_build_queue_with`]), not of this value. Group and deduplication ids that SQS would
/// refuse (longer than 128 characters, or with characters other than printable ASCII) are
/// replaced by their hex sha256, which keeps equal ids equal.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    dlq_url: Option<String>,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>, dlq_url: Option<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url,
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    pub fn dlq_url(&self) -> Option<&str> {
        self.dlq_url.as_deref()
    }
}

#[async_trait]
impl BuildQueue for SqsQueue {
    async fn send(&self, message: QueueMessage) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message.body)
            .message_group_id(sqs_id(&message.group_id))
            .message_deduplication_id(sqs_id(&message.dedup_id))
            .send()
            .await
            .map_err(|e| AwsError::sdk(format!("SendMessage {}", self.queue_url), &e))?;
        Ok(())
    }

    /// Long polls for up to `wait` (rounded up to whole seconds, at most 20 s, SQS's limit) and
    /// returns at most 10 messages (SQS's limit) whatever `max` is.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.min(MAX_BATCH) as i32)
            .wait_time_seconds(wait_seconds(wait))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| AwsError::sdk(format!("ReceiveMessage {}", self.queue_url), &e))?;
        out.messages()
            .iter()
            .map(|m| {
                let missing = |field| QueueError::Backend(format!("SQS message without {field}"));
                Ok(ReceivedMessage {
                    body: m.body().unwrap_or_default().to_owned(),
                    receipt: m
                        .receipt_handle()
                        .ok_or_else(|| missing("receipt handle"))?
                        .to_owned(),
                    message_id: m.message_id().ok_or_else(|| missing("message id"))?.to_owned(),
                    receive_count: m
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                })
            })
            .collect()
    }

    async fn retry_after(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        // SQS takes 0 to 43 200 s (12 hours).
        let secs = i32::try_from(delay.as_secs().min(43_200)).unwrap_or(43_200);
        match self
            .client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_receipt_handle_is_invalid() || s.is_message_not_inflight()) =>
            {
                Err(QueueError::UnknownReceipt)
            }
            Err(e) => {
                let err = AwsError::sdk(format!("ChangeMessageVisibility {}", self.queue_url), &e);
                if err.is_code(&[
                    "ReceiptHandleIsInvalid",
                    "InvalidParameterValue",
                    "MessageNotInflight",
                ]) {
                    Err(QueueError::UnknownReceipt)
                } else {
                    Err(err.into())
                }
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        match self
            .client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_receipt_handle_is_invalid()) =>
            {
                Err(QueueError::UnknownReceipt)
            }
            Err(e) => {
                let err = AwsError::sdk(format!("DeleteMessage {}", self.queue_url), &e);
                if err.is_code(&["ReceiptHandleIsInvalid", "InvalidParameterValue"]) {
                    Err(QueueError::UnknownReceipt)
                } else {
                    Err(err.into())
                }
            }
        }
    }

    /// A peek at the dead-letter queue, for operators and tests: receives with a visibility timeout
    /// of 0 (the messages stay where they are, only their receive counts grow) and a short wait, a
    /// few times, and returns the distinct bodies seen. Not exhaustive: with more than 10 messages
    /// waiting SQS may return the same ones each time. Empty without a DLQ.
    async fn dead_letters(&self) -> Result<Vec<String>, QueueError> {
        let Some(dlq_url) = &self.dlq_url else {
            return Ok(Vec::new());
        };
        let mut seen = HashSet::new();
        let mut bodies = Vec::new();
        for round in 0..DLQ_PEEK_ROUNDS {
            let out = self
                .client
                .receive_message()
                .queue_url(dlq_url)
                .max_number_of_messages(MAX_BATCH as i32)
                .visibility_timeout(0)
                .wait_time_seconds(if round == 0 { 1 } else { 0 })
                .send()
                .await
                .map_err(|e| AwsError::sdk(format!("ReceiveMessage {dlq_url}"), &e))?;
            let mut new = false;
            for m in out.messages() {
                if seen.insert(m.message_id().unwrap_or_default().to_owned()) {
                    new = true;
                    bodies.push(m.body().unwrap_or_default().to_owned());
                }
            }
            if !new {
                break;
            }
        }
        Ok(bodies)
    }
}

fn wait_seconds(wait: Duration) -> i32 {
    let wait = wait.min(MAX_WAIT);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs as i32
}

/// A group or deduplication id as SQS accepts it (1–128 printable ASCII characters).
fn sqs_id(id: &str) -> Cow<'_, str> {
    if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(hex::encode(Sha256::digest(id.as_bytes())))
    }
}

/// The shape of a build queue made by [`ensure_build_queue_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildQueueConfig {
    /// How long a received message stays invisible (whole seconds, 0 s to 12 h). Must exceed the
    /// builder's run time: 15 minutes, the Lambda maximum, by default.
    pub visibility_timeout: Duration,
    /// Receives after which a message moves to the dead-letter queue (1 to 1000; default 3).
    pub max_receive_count: u32,
}

impl Default for BuildQueueConfig {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(15 * 60),
            max_receive_count: 3,
        }
    }
}

/// [`ensure_build_queue_with`] with the default configuration: visibility timeout 15 minutes,
/// dead-lettering after 3 receives.
pub async fn ensure_build_queue(sqs: &Client, name: &str) -> Result<(String, String), AwsError> {
    ensure_build_queue_with(sqs, name, &BuildQueueConfig::default()).await
}

/// Creates (or brings up to date) the FIFO queue `<name>.fifo` and its dead-letter queue
/// `<name>-dlq.fifo` (14 days retention), idempotently; a trailing `.fifo` on `name` is ignored.
/// Returns `(queue_url, dlq_url)`.
pub async fn ensure_build_queue_with(
    sqs: &Client,
    name: &str,
    config: &BuildQueueConfig,
) -> Result<(String, String), AwsError> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    let dlq_url = ensure_queue(
        sqs,
        &format!("{base}-dlq.fifo"),
        &[(QueueAttributeName::MessageRetentionPeriod, "1209600".to_owned())],
    )
    .await?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| AwsError::sdk(format!("GetQueueAttributes {dlq_url}"), &e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| AwsError::other(format!("GetQueueAttributes {dlq_url}"), "no QueueArn"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": config.max_receive_count,
    });
    let queue_url = ensure_queue(
        sqs,
        &format!("{base}.fifo"),
        &[
            (
                QueueAttributeName::VisibilityTimeout,
                config.visibility_timeout.as_secs().to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        ],
    )
    .await?;
    Ok((queue_url, dlq_url))
}

/// Creates a FIFO queue with `attributes`; when it exists with other attributes, updates them.
async fn ensure_queue(
    sqs: &Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<String, AwsError> {
    let mut create = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true");
    for (key, value) in attributes {
        create = create.attributes(key.clone(), value);
    }
    match create.send().await {
        Ok(out) => out
            .queue_url()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::other(format!("CreateQueue {name}"), "no QueueUrl")),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_queue_name_exists()) => {
            let url = sqs
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| AwsError::sdk(format!("GetQueueUrl {name}"), &e))?
                .queue_url()
                .map(str::to_owned)
                .ok_or_else(|| AwsError::other(format!("GetQueueUrl {name}"), "no QueueUrl"))?;
            let mut update = sqs.set_queue_attributes().queue_url(&url);
            for (key, value) in attributes {
                update = update.attributes(key.clone(), value);
            }
            update
                .send()
                .await
                .map_err(|e| AwsError::sdk(format!("SetQueueAttributes {url}"), &e))?;
            Ok(url)
        }
        Err(e) => Err(AwsError::sdk(format!("CreateQueue {name}"), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_waits() {
        assert_eq!(sqs_id("schematic-1:v1.9.0"), "schematic-1:v1.9.0");
        assert_eq!(sqs_id("with space").len(), 64);
        assert_eq!(sqs_id(&"x".repeat(129)).len(), 64);
        assert_eq!(sqs_id(""), sqs_id(""));
        assert_eq!(wait_seconds(Duration::ZERO), 0);
        assert_eq!(wait_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(wait_seconds(Duration::from_secs(60)), 20);
    }
}
