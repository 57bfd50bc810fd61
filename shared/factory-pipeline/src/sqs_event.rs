//! The builder's SQS entry point: an SQS event as the Lambda event source mapping delivers it in,
//! a [`SqsBatchResponse`] out (the event source mapping must enable `ReportBatchItemFailures`).
//! The builder Lambda and the local server's queue poller both go through
//! [`handle_sqs_event`], so they handle messages, report failures and decide what is deleted in
//! exactly the same way.
//!
//! # Records
//!
//! Each record becomes a [`BatchMessage`] (`messageId`, `body`) for [`handle_batch`]; the ids it
//! hands back become `batchItemFailures` (`itemIdentifier` = message id): SQS makes those visible
//! again after the visibility timeout, deletes every other message of the batch, and moves a
//! message to the dead-letter queue after the queue's `maxReceiveCount`.
//!
//! * A record **without a body** is logged and handled as an empty body: undecodable, so it is
//!   reported as a failure under its id and ends in the DLQ like any other garbage.
//! * A record **without a message id** (absent or empty) cannot be reported on its own, and the
//!   event source mapping never sends one (SQS always assigns an id): the event did not come
//!   from SQS as we know it. The whole event is refused with [`SqsEventError`] *before anything is
//!   built*: the invocation fails, so under an event source mapping every message of the batch is
//!   retried (and dead-lettered after `maxReceiveCount`), and whoever invoked the function by hand
//!   sees the error. Building part of an event we do not understand, and then having to fail the
//!   whole batch anyway (Lambda treats a blank `itemIdentifier` as a failure of the whole batch),
//!   would only do work that is thrown away.
//!
//! [`sqs_event_from_received`] goes the other way, for pollers: it turns messages received from
//! a [`factory_store::BuildQueue`] into the event the event source mapping would have delivered.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use factory_store::{BuildQueue, ReceivedMessage};

use crate::builder::{handle_batch_detailed, BatchMessage, Builder};

/// The `eventSource` of records from SQS.
pub const SQS_EVENT_SOURCE: &str = "aws:sqs";

/// The record attribute SQS counts deliveries in.
pub const APPROXIMATE_RECEIVE_COUNT: &str = "ApproximateReceiveCount";

/// An SQS event the builder refuses whole (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqsEventError {
    #[error(
        "{without_id} of {records} SQS records have no messageId and cannot be reported as batch \
         item failures; refusing the whole event so that it is retried"
    )]
    RecordsWithoutId { without_id: usize, records: usize },
}

/// Handles an SQS event with [`handle_batch`]: the records that must be redelivered are the
/// response's `batchItemFailures`. Fails (building nothing) when a record has no message id.
/// Redeliveries come after the queue's visibility timeout.
pub async fn handle_sqs_event(builder: &Builder, event: SqsEvent) -> Result<SqsBatchResponse, SqsEventError> {
    handle_sqs_event_with_retries(builder, event, None).await
}

/// As [`handle_sqs_event`]; with `retries = Some((queue, delay))`, a message that failed for a
/// transient reason is made visible again after `delay` (`ChangeMessageVisibility` on its receipt
/// handle) instead of after the queue's visibility timeout, which must cover the longest build
/// (the deployed queue's is 90 minutes). Messages whose key another builder holds keep the long
/// timeout. A failed visibility change is logged: the message then simply comes back later.
pub async fn handle_sqs_event_with_retries(
    builder: &Builder,
    event: SqsEvent,
    retries: Option<(&dyn BuildQueue, Duration)>,
) -> Result<SqsBatchResponse, SqsEventError> {
    let receipts: HashMap<String, String> = event
        .records
        .iter()
        .filter_map(|r| Some((r.message_id.clone()?, r.receipt_handle.clone()?)))
        .collect();
    let messages = batch_messages(event)?;
    let redeliveries = handle_batch_detailed(builder, &messages).await;
    if let Some((queue, delay)) = retries {
        for redelivery in redeliveries.iter().filter(|r| r.soon) {
            let Some(receipt) = receipts.get(&redelivery.message_id) else {
                continue;
            };
            if let Err(e) = queue.retry_after(receipt, delay).await {
                tracing::warn!(message_id = %redelivery.message_id, error = %e, "shortening the visibility timeout failed; the message comes back later");
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    response.set_failures(redeliveries.into_iter().map(|r| r.message_id).collect::<Vec<_>>());
    Ok(response)
}

/// The records of `event` as [`BatchMessage`]s, in order (see the module documentation for
/// records without a body or an id).
pub fn batch_messages(event: SqsEvent) -> Result<Vec<BatchMessage>, SqsEventError> {
    let records = event.records.len();
    let without_id = event
        .records
        .iter()
        .filter(|r| r.message_id.as_deref().is_none_or(str::is_empty))
        .count();
    if without_id > 0 {
        tracing::error!(
            without_id,
            records,
            "SQS event with records that have no messageId"
        );
        return Err(SqsEventError::RecordsWithoutId { without_id, records });
    }
    Ok(event
        .records
        .into_iter()
        .map(|record| {
            let message_id = record.message_id.unwrap_or_default();
            let body = record.body.unwrap_or_else(|| {
                tracing::warn!(%message_id, "SQS record without a body; handled as an empty body");
                String::new()
            });
            BatchMessage { message_id, body }
        })
        .collect())
}

/// Where a poller's events say their records come from: the `eventSourceARN` and `awsRegion`
/// of each record (informational; [`handle_sqs_event`] does not read them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSource {
    pub arn: Option<String>,
    pub region: Option<String>,
}

impl EventSource {
    /// The source of an SQS queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`, and
    /// LocalStack's `http://host:4566/<account>/<name>` or `http://host:4566/queue/<region>/<account>/<name>`
    /// alike): the queue's ARN `arn:aws:sqs:<region>:<account>:<name>` when the URL ends in
    /// `<account>/<name>` and a region is known.
    pub fn sqs_queue(queue_url: &str, region: Option<&str>) -> Self {
        let region = region.filter(|r| !r.is_empty()).map(str::to_owned);
        let path = queue_url
            .split_once("://")
            .map_or(queue_url, |(_, rest)| rest)
            .split_once('/')
            .map_or("", |(_, path)| path);
        let mut segments = path.trim_end_matches('/').rsplit('/');
        let arn = match (segments.next(), segments.next(), &region) {
            (Some(name), Some(account), Some(region))
                if !name.is_empty() && !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Some(format!("arn:aws:sqs:{region}:{account}:{name}"))
            }
            _ => None,
        };
        Self { arn, region }
    }
}

/// The SQS event the Lambda event source mapping would deliver for `messages`: per record
/// `messageId`, `receiptHandle`, `body`, the `ApproximateReceiveCount` attribute,
/// `eventSource` `aws:sqs` and `source`'s ARN and region.
pub fn sqs_event_from_received(messages: &[ReceivedMessage], source: &EventSource) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = Some(m.message_id.clone());
            record.receipt_handle = Some(m.receipt.clone());
            record.body = Some(m.body.clone());
            record.attributes =
                HashMap::from([(APPROXIMATE_RECEIVE_COUNT.to_owned(), m.receive_count.to_string())]);
            record.event_source = Some(SQS_EVENT_SOURCE.to_owned());
            record.event_source_arn = source.arn.clone();
            record.aws_region = source.region.clone();
            record
        })
        .collect();
    event
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use async_trait::async_trait;
    use factory_signing::SigningKey;
    use factory_store::fs::FsStore;
    use tokio::io::{AsyncWrite, AsyncWriteExt};

    use super::*;
    use crate::{AssembleError, AssembledMeta, Assembler, BuildMessage, BuilderConfig};

    /// Writes the spec's `content` as `asset.bin`; a spec with `"user_error"` fails as the user's
    /// fault.
    #[derive(Debug)]
    struct Echo;

    #[async_trait]
    impl Assembler for Echo {
        async fn assemble(
            &self,
            spec: &serde_json::Value,
            out: &mut (dyn AsyncWrite + Send + Unpin),
        ) -> Result<AssembledMeta, AssembleError> {
            if let Some(message) = spec["user_error"].as_str() {
                return Err(AssembleError::User(message.to_owned()));
            }
            let io = |e: std::io::Error| AssembleError::Retryable(e.to_string());
            out.write_all(spec["content"].as_str().unwrap_or("x").as_bytes())
                .await
                .map_err(io)?;
            out.flush().await.map_err(io)?;
            Ok(AssembledMeta {
                content_type: "application/octet-stream".into(),
                file_name: "asset.bin".into(),
                input_digests: Default::default(),
            })
        }
    }

    fn builder(dir: &tempfile::TempDir) -> Builder {
        let store = Arc::new(FsStore::new(dir.path().join("store")).unwrap());
        Builder::new(
            store,
            Arc::new(SigningKey::generate()),
            Arc::new(Echo),
            BuilderConfig::default(),
        )
        .unwrap()
    }

    fn body(cache_key: &str, spec: serde_json::Value) -> String {
        BuildMessage::new(cache_key, spec)
            .to_queue_message()
            .unwrap()
            .body
    }

    /// An event as Lambda delivers it from a FIFO queue (the shape of the example in the Lambda
    /// developer guide, "Using Lambda with Amazon SQS"), with the given `(messageId, body)` records.
    fn lambda_event(records: &[(Option<&str>, Option<&str>)]) -> String {
        let records: Vec<serde_json::Value> = records
            .iter()
            .enumerate()
            .map(|(i, (id, body))| {
                let mut record = serde_json::json!({
                    "receiptHandle": format!("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a{i}..."),
                    "attributes": {
                        "ApproximateReceiveCount": "1",
                        "SentTimestamp": "1573251510774",
                        "SequenceNumber": format!("1880001430987654321012345678{i}"),
                        "MessageGroupId": "1",
                        "SenderId": "AIDAIO23YVJENQZJOL4VO",
                        "MessageDeduplicationId": format!("dedup-{i}"),
                        "ApproximateFirstReceiveTimestamp": "1573251510774"
                    },
                    "messageAttributes": {},
                    "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:talos-factory-builds.fifo",
                    "awsRegion": "us-east-2"
                });
                if let Some(id) = id {
                    record["messageId"] = serde_json::json!(id);
                }
                if let Some(body) = body {
                    record["body"] = serde_json::json!(body);
                }
                record
            })
            .collect();
        serde_json::json!({ "Records": records }).to_string()
    }

    fn failures(response: &SqsBatchResponse) -> Vec<&str> {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    #[tokio::test]
    async fn garbage_and_bodiless_records_are_batch_item_failures_and_the_rest_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let builder = builder(&dir);
        let good = body("key-good", serde_json::json!({ "content": "kernel bytes" }));
        let user = body(
            "key-user",
            serde_json::json!({ "user_error": "no such extension" }),
        );
        let json = lambda_event(&[
            (Some("059f36b4-87a3-44ab-83d2-661975830a7d"), Some(&good)),
            (
                Some("2e1424d4-f796-459a-8184-9c92662be6da"),
                Some("{not a build message"),
            ),
            (Some("3e1424d4-0000-459a-8184-9c92662be6da"), None),
            (Some("4e1424d4-1111-459a-8184-9c92662be6da"), Some(&user)),
        ]);
        let event: SqsEvent = serde_json::from_str(&json).unwrap();
        let response = handle_sqs_event(&builder, event).await.unwrap();

        assert_eq!(
            failures(&response),
            [
                "2e1424d4-f796-459a-8184-9c92662be6da",
                "3e1424d4-0000-459a-8184-9c92662be6da"
            ]
        );
        let published = builder.index().lookup("key-good").await.unwrap();
        assert!(published.is_some(), "the valid message was built and published");
        assert_eq!(builder.stats().built(), 1);
        assert_eq!(
            builder.stats().user_errors(),
            1,
            "a user error is finished, not retried"
        );
        // The response serializes as Lambda expects it.
        let wire = serde_json::to_value(&response).unwrap();
        assert_eq!(
            wire["batchItemFailures"][0]["itemIdentifier"],
            "2e1424d4-f796-459a-8184-9c92662be6da"
        );
    }

    #[tokio::test]
    async fn a_clean_batch_reports_no_failures() {
        let dir = tempfile::tempdir().unwrap();
        let builder = builder(&dir);
        let a = body("key-a", serde_json::json!({ "content": "a" }));
        let event: SqsEvent = serde_json::from_str(&lambda_event(&[(Some("id-a"), Some(&a))])).unwrap();
        let response = handle_sqs_event(&builder, event).await.unwrap();
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
        let wire = serde_json::to_string(&response).unwrap();
        assert_eq!(wire, r#"{"batchItemFailures":[]}"#);
        assert_eq!(builder.stats().built(), 1);
    }

    #[tokio::test]
    async fn records_without_an_id_refuse_the_whole_event_before_building() {
        let dir = tempfile::tempdir().unwrap();
        let builder = builder(&dir);
        let good = body("key-good", serde_json::json!({ "content": "k" }));
        for missing in [None, Some("")] {
            let event: SqsEvent = serde_json::from_str(&lambda_event(&[
                (Some("id-1"), Some(&good)),
                (missing, Some(&good)),
            ]))
            .unwrap();
            let error = handle_sqs_event(&builder, event).await.unwrap_err();
            assert_eq!(
                error,
                SqsEventError::RecordsWithoutId {
                    without_id: 1,
                    records: 2
                }
            );
        }
        assert_eq!(builder.stats().built(), 0, "nothing was built");
        assert!(builder.index().lookup("key-good").await.unwrap().is_none());
    }

    #[test]
    fn received_messages_become_the_event_lambda_would_deliver() {
        let received = [
            ReceivedMessage {
                body: "b1".into(),
                receipt: "r1".into(),
                message_id: "m1".into(),
                receive_count: 1,
            },
            ReceivedMessage {
                body: "b2".into(),
                receipt: "r2".into(),
                message_id: "m2".into(),
                receive_count: 3,
            },
        ];
        let source = EventSource::sqs_queue(
            "http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/builds.fifo",
            Some("us-east-1"),
        );
        let event = sqs_event_from_received(&received, &source);
        let wire = serde_json::to_value(&event).unwrap();
        let record = &wire["Records"][1];
        assert_eq!(record["messageId"], "m2");
        assert_eq!(record["receiptHandle"], "r2");
        assert_eq!(record["body"], "b2");
        assert_eq!(record["attributes"]["ApproximateReceiveCount"], "3");
        assert_eq!(record["eventSource"], "aws:sqs");
        assert_eq!(
            record["eventSourceARN"],
            "arn:aws:sqs:us-east-1:000000000000:builds.fifo"
        );
        assert_eq!(record["awsRegion"], "us-east-1");
        // What a handler reads back from it.
        let back: SqsEvent = serde_json::from_value(wire).unwrap();
        let messages = batch_messages(back).unwrap();
        assert_eq!(
            messages,
            [
                BatchMessage {
                    message_id: "m1".into(),
                    body: "b1".into()
                },
                BatchMessage {
                    message_id: "m2".into(),
                    body: "b2".into()
                }
            ]
        );
    }

    #[test]
    fn queue_arns_from_urls() {
        let arn = |url: &str, region: Option<&str>| EventSource::sqs_queue(url, region).arn;
        assert_eq!(
            arn(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/q.fifo",
                Some("eu-west-1")
            )
            .as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:q.fifo")
        );
        assert_eq!(
            arn("http://localhost:4566/000000000000/q", Some("us-east-1")).as_deref(),
            Some("arn:aws:sqs:us-east-1:000000000000:q")
        );
        assert_eq!(
            arn(
                "http://localhost:4566/queue/us-east-1/000000000000/q.fifo",
                Some("us-east-1")
            )
            .as_deref(),
            Some("arn:aws:sqs:us-east-1:000000000000:q.fifo")
        );
        assert_eq!(arn("http://localhost:4566/000000000000/q", None), None);
        assert_eq!(arn("http://localhost:4566/q", Some("us-east-1")), None);
        assert_eq!(arn("http://localhost:4566/acct/q", Some("us-east-1")), None);
        assert_eq!(arn("in-process", Some("us-east-1")), None);
        assert_eq!(
            EventSource::sqs_queue("in-process", Some("")).region,
            None,
            "a blank region is no region"
        );
    }
}
