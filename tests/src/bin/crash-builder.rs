//! `crash-builder BUCKET PREFIX QUEUE_URL SIGNING_KEY_PEM`: a builder process for
//! `tests/builder_crash.rs` to kill in the middle of an upload.
//!
//! It runs the pipeline's [`Builder`] over S3 (`BUCKET`, keys under `PREFIX`) fed by the SQS FIFO
//! queue `QUEUE_URL`, with the AWS environment it inherits (`AWS_ENDPOINT_URL` for LocalStack),
//! signing with the key in `SIGNING_KEY_PEM` (created if missing), a short claim lease
//! ([`LEASE`], renewed every third of it while alive) and a [`SlowAssembler`] that stalls once
//! [`STALL_AFTER`] bytes are written: past the first multipart part, so S3 holds an incomplete
//! upload under `staging/`. It prints [`POLLING`] when it polls the queue and
//! [`STALLED`](factory_tests::slow_assembler::STALLED) when it stalls, and runs until killed
//! (or until its stdin closes, so it never outlives a test that died).

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use factory_aws::{S3Store, SqsQueue};
use factory_pipeline::{poll_once, Builder, BuilderConfig};
use factory_signing::SigningKey;
use factory_tests::slow_assembler::{SlowAssembler, POLLING};

/// The claim lease: short, so that a takeover after the kill comes quickly.
const LEASE: Duration = Duration::from_secs(3);
/// Pause between 64 KiB chunks: a slow assembler.
const CHUNK_DELAY: Duration = Duration::from_millis(5);
/// Where it stalls: 12 MiB, past the first 8 MiB multipart part.
const STALL_AFTER: u64 = 12 * 1024 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bucket, prefix, queue_url, key_path] = args.as_slice() else {
        eprintln!("usage: crash-builder BUCKET PREFIX QUEUE_URL SIGNING_KEY_PEM");
        return ExitCode::from(2);
    };
    // Exit when the parent goes away (its end of our stdin closes).
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        eprintln!("crash-builder: stdin closed; exiting");
        std::process::exit(3);
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("crash-builder: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(bucket, prefix, queue_url, key_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash-builder: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(bucket: &str, prefix: &str, queue_url: &str, key_path: &str) -> Result<(), String> {
    let key = SigningKey::load_or_generate(key_path).map_err(|e| format!("signing key {key_path}: {e}"))?;
    let sdk = factory_aws::aws_config_from_env().await;
    let store = Arc::new(S3Store::new(factory_aws::s3_client(&sdk), bucket, prefix));
    let queue = SqsQueue::new(factory_aws::sqs_client(&sdk), queue_url, None);
    let assembler = Arc::new(SlowAssembler {
        chunk_delay: CHUNK_DELAY,
        stall_after: Some(STALL_AFTER),
    });
    let config = BuilderConfig {
        lease: LEASE,
        failure_ttl: Duration::from_secs(60),
    };
    let builder = Builder::new(store, Arc::new(key), assembler, config).map_err(|e| e.to_string())?;
    println!("{POLLING}");
    loop {
        match poll_once(&queue, &builder, 1, Duration::from_secs(1)).await {
            Ok(0) => {}
            Ok(n) => println!("crash-builder: handled {n} message(s)"),
            Err(e) => {
                eprintln!("crash-builder: receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
