//! `image-factory-local`: the whole factory API in one process, for development and tests.
//!
//! It runs exactly the routers the Lambda functions run ([`factory_http::app`]), over either an
//! on-disk store (`<data-dir>/store`, the default) or S3 from the standard AWS environment
//! (`--aws`, e.g. LocalStack with `AWS_ENDPOINT_URL`). The signing key lives in
//! `<data-dir>/signing-key.pem` and is generated on first start. Talos releases come from
//! `--upstream`: a registry (default `https://ghcr.io`), `oci-layout:DIR`, or `demo`, a stand-in
//! release generated into `<data-dir>/stand-in-release` on first start (no network needed).
//!
//! Builds run in process, through the code path of the `builder` Lambda: a poller task
//! ([`run_build_poller`]) receives up to 10 build messages, turns them into the SQS event the
//! Lambda event source mapping would deliver, hands it to
//! [`factory_pipeline::handle_sqs_event`] and deletes every message not listed in its
//! `batchItemFailures`. The queue is in process over the on-disk store, and a real SQS FIFO queue
//! with `--aws` (`--queue`, created with its dead-letter queue if missing), whose visibility
//! timeout and redrive policy then redeliver and dead-letter failed messages.
//!
//! Tests start it in-process: bind a listener on `127.0.0.1:0`, then [`LocalServer::prepare`] and
//! [`LocalServer::run`] (or [`serve`]) with a shutdown future of their own.

mod error;
mod options;
mod server;
mod upstream;

pub use error::LocalError;
pub use options::{Options, UpstreamChoice, DEFAULT_BUCKET, DEFAULT_BUILD_QUEUE, DEFAULT_UPSTREAM};
pub use server::{poll_build_queue, run_build_poller, serve, LocalServer, PollRound, RequestCounts};
