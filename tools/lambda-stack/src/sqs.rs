//! The SQS event source mapping of the template: polls the queue (LocalStack), invokes the
//! function with an SQS event of at most `BatchSize` records, then deletes what succeeded. With
//! `ReportBatchItemFailures` the function's `{"batchItemFailures": [{"itemIdentifier": id}]}`
//! keeps those messages (an unknown or empty identifier fails the whole batch, as Lambda does);
//! a function error or timeout keeps them all. Kept messages come back after their visibility
//! timeout (or earlier if the function changed it), up to the queue's `maxReceiveCount`, after
//! which SQS moves them to the dead-letter queue.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client as Sqs;
use axum::body::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::runtime::LambdaRuntime;

/// One mapping, ready to run.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub queue_url: String,
    pub queue_arn: String,
    pub function: String,
    pub batch_size: u32,
    pub report_batch_item_failures: bool,
    /// Pollers at once (the mapping's `MaximumConcurrency`, capped for a 2-core machine); 0: none,
    /// the mapping is off (as a disabled one, or builders that cannot keep up).
    pub concurrency: usize,
    pub region: String,
}

/// Runs `mapping` until `stop` turns true.
pub async fn run(sqs: Sqs, runtime: LambdaRuntime, mapping: Mapping, stop: watch::Receiver<bool>) {
    let mapping = Arc::new(mapping);
    let mut workers = Vec::new();
    for _ in 0..mapping.concurrency {
        let (sqs, runtime, mapping, mut stop) =
            (sqs.clone(), runtime.clone(), Arc::clone(&mapping), stop.clone());
        workers.push(tokio::spawn(async move {
            while !*stop.borrow() {
                tokio::select! {
                    _ = stop.changed() => break,
                    () = poll_once(&sqs, &runtime, &mapping) => {}
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}

async fn poll_once(sqs: &Sqs, runtime: &LambdaRuntime, mapping: &Mapping) {
    let received = sqs
        .receive_message()
        .queue_url(&mapping.queue_url)
        .max_number_of_messages(i32::try_from(mapping.batch_size.clamp(1, 10)).unwrap_or(10))
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await;
    let messages = match received {
        Ok(r) => r.messages.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(queue = %mapping.queue_url, "receive: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
    };
    if messages.is_empty() {
        return;
    }
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut attributes = Map::new();
            for (k, v) in m.attributes().into_iter().flatten() {
                attributes.insert(k.as_str().to_owned(), json!(v));
            }
            let mut message_attributes = Map::new();
            for (k, v) in m.message_attributes().into_iter().flatten() {
                message_attributes.insert(
                    k.clone(),
                    json!({ "stringValue": v.string_value(), "dataType": v.data_type() }),
                );
            }
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body().unwrap_or(""),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": mapping.queue_arn,
                "awsRegion": mapping.region,
            })
        })
        .collect();
    let event = json!({ "Records": records });
    let outcome = runtime
        .invoke(&mapping.function, Bytes::from(event.to_string()))
        .await;
    let keep: Vec<String> = match outcome {
        Err(e) => {
            tracing::warn!(function = %mapping.function, "invocation failed, the batch stays on the queue: {e}");
            return;
        }
        Ok(result) if mapping.report_batch_item_failures => {
            match batch_item_failures(&result, messages.iter().filter_map(|m| m.message_id())) {
                Some(ids) => ids,
                None => {
                    tracing::warn!(function = %mapping.function, "invalid batchItemFailures: the whole batch stays on the queue");
                    return;
                }
            }
        }
        Ok(_) => Vec::new(),
    };
    for m in &messages {
        let (Some(id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
            continue;
        };
        if keep.iter().any(|k| k == id) {
            continue;
        }
        if let Err(e) = sqs
            .delete_message()
            .queue_url(&mapping.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            tracing::warn!(queue = %mapping.queue_url, "delete {id}: {e}");
        }
    }
}

/// The message IDs a `ReportBatchItemFailures` result keeps; `None` when the result is invalid
/// in the way that makes Lambda fail the whole batch (an identifier that is empty or not in it).
pub fn batch_item_failures<'a>(result: &[u8], ids: impl Iterator<Item = &'a str>) -> Option<Vec<String>> {
    let ids: Vec<&str> = ids.collect();
    let value: Value = match serde_json::from_slice(result) {
        Ok(v) => v,
        // Not JSON (or empty): treated as success, as Lambda does.
        Err(_) => return Some(Vec::new()),
    };
    let Some(failures) = value.get("batchItemFailures") else {
        return Some(Vec::new());
    };
    let Some(failures) = failures.as_array() else {
        return Some(Vec::new());
    };
    let mut keep = Vec::new();
    for f in failures {
        let id = f.get("itemIdentifier").and_then(Value::as_str).unwrap_or("");
        if id.is_empty() || !ids.contains(&id) {
            return None;
        }
        keep.push(id.to_owned());
    }
    Some(keep)
}

/// Creates `name` (FIFO when it ends in `.fifo`) with the template's attributes; its URL and ARN.
pub async fn create_queue(
    sqs: &Sqs,
    name: &str,
    visibility: Duration,
    redrive: Option<(u32, &str)>,
) -> Result<(String, String), crate::Error> {
    let mut request = sqs.create_queue().queue_name(name).attributes(
        QueueAttributeName::VisibilityTimeout,
        visibility.as_secs().to_string(),
    );
    if name.ends_with(".fifo") {
        request = request
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false");
    }
    if let Some((count, dlq_arn)) = redrive {
        request = request.attributes(
            QueueAttributeName::RedrivePolicy,
            json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": count.to_string() }).to_string(),
        );
    }
    let url = request
        .send()
        .await
        .map_err(|e| crate::Error::Setup(format!("create queue {name}: {e}")))?
        .queue_url
        .ok_or_else(|| crate::Error::Setup(format!("create queue {name}: no URL")))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| crate::Error::Setup(format!("queue {name}: {e}")))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| crate::Error::Setup(format!("queue {name}: no ARN")))?;
    Ok((url, arn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_item_failure_results() {
        let ids = ["a", "b"];
        assert_eq!(
            batch_item_failures(br#"{"batchItemFailures":[]}"#, ids.into_iter()),
            Some(vec![])
        );
        assert_eq!(
            batch_item_failures(
                br#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#,
                ids.into_iter()
            ),
            Some(vec!["b".to_owned()])
        );
        assert_eq!(
            batch_item_failures(
                br#"{"batchItemFailures":[{"itemIdentifier":"z"}]}"#,
                ids.into_iter()
            ),
            None
        );
        assert_eq!(
            batch_item_failures(
                br#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
                ids.into_iter()
            ),
            None
        );
        assert_eq!(batch_item_failures(b"null", ids.into_iter()), Some(vec![]));
    }
}
