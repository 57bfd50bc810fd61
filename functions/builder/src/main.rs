//! The `builder` Lambda function: the consumer of the SQS FIFO build queue. Each invocation gets
//! an SQS event (a batch of build messages) from the event source mapping and handles it with
//! [`factory_pipeline::handle_sqs_event`], the code the local server's queue poller runs too:
//! messages one at a time, in order; each asset assembled from the upstream release, streamed
//! into S3 and published with a signed index record. The answer lists the messages to redeliver
//! as `batchItemFailures` (the event source mapping must set `ReportBatchItemFailures`);
//! everything else in the batch is deleted. A user-caused failure is remembered (the image route
//! answers it with a 400) and its message finished; transient failures are redelivered after the
//! queue's visibility timeout, and the queue's redrive policy dead-letters a message after
//! `maxReceiveCount` receives. An event with records that lack a message id fails the invocation
//! whole (see [`factory_pipeline::sqs_event`]).
//!
//! Environment, read once per cold start (an invalid value stops the function at once rather
//! than failing invocations later):
//!
//! * `FACTORY_SIGNING_KEY_PEM` (required): the factory's **private** signing key (PKCS#8 or SEC1
//!   PEM; line breaks may be written as `\n`), which signs the index records and the cosign
//!   signatures of published installer images.
//! * `FACTORY_BUILD_LEASE_SECONDS` (default 300, 10 to 3600): the build claim's lease, renewed
//!   every third of it while building; a dead builder's claim is taken over after at most this.
//! * `FACTORY_FAILURE_TTL_SECONDS` (default 600, 1 to 604800): how long a user-caused failure
//!   is remembered.
//! * `FACTORY_UPSTREAM_REGISTRY`, `FACTORY_UPSTREAM_NAMESPACE`, `FACTORY_UPSTREAM_COSIGN_KEY_PEM`,
//!   `FACTORY_UPSTREAM_VERIFY`: where release images are read from and how they are verified
//!   (see `factory_upstream::settings`).
//! * `FACTORY_BUILD_QUEUE_URL` (optional, the queue of the event source mapping) and
//!   `FACTORY_RETRY_DELAY_SECONDS` (default 30): a build that failed for a transient reason is
//!   made visible again after this delay instead of after the queue's visibility timeout (which
//!   must cover the longest build). Without the URL, the visibility timeout applies.
//! * `FACTORY_BUCKET` (required), `FACTORY_STORE_PREFIX` (default empty): where assets, index
//!   records, claims and failure records go.
//! * `RUST_LOG` (default `info`): log filter; logs are JSON lines for CloudWatch.
//! * The standard AWS SDK variables (region, credentials, `AWS_ENDPOINT_URL` for emulators).

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use factory_aws::SqsQueue;
use factory_pipeline::{handle_sqs_event_with_retries, Builder};
use factory_registry::FactoryAssembler;
use factory_store::BuildQueue;
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    factory_lambda::init();
    let key = Arc::new(factory_lambda::signing_key_from_env()?);
    let config = factory_lambda::builder_config_from_env()?;
    let upstream = factory_lambda::upstream_from_env()?;
    let sdk = factory_aws::aws_config_from_env().await;
    let store = Arc::new(factory_lambda::s3_store(&sdk)?);
    let retries = factory_lambda::retry_queue_from_env(&sdk)?;
    // Release assets, and registry jobs: installer images published as OCI blobs, an index and
    // its cosign signature (signed with the same key).
    let assembler = FactoryAssembler::new(upstream, Arc::clone(&store) as _, Arc::clone(&key));
    let builder = Builder::new(store, key, Arc::new(assembler), config)?;
    // A builder image without a tool still builds what does not need it; say so once, loudly.
    let missing = factory_assets::missing_tools();
    if !missing.is_empty() {
        tracing::error!(
            ?missing,
            "the builder image lacks tools: builds that need them will fail"
        );
    }

    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        handle(&builder, retries.as_ref(), event)
    }))
    .await
}

async fn handle(
    builder: &Builder,
    retries: Option<&(SqsQueue, Duration)>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let records = event.payload.records.len();
    let retries = retries.map(|(queue, delay)| (queue as &dyn BuildQueue, *delay));
    let response = handle_sqs_event_with_retries(builder, event.payload, retries).await?;
    tracing::info!(
        records,
        redelivered = response.batch_item_failures.len(),
        "build batch handled"
    );
    Ok(response)
}
