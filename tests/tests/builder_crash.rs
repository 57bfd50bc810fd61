//! A builder killed in the middle of an upload (issue 4 acceptance), on LocalStack S3 + SQS.
//!
//! The `crash-builder` binary (`src/bin/crash-builder.rs`) runs the pipeline's builder in a
//! separate process with a short claim lease, takes the one build message from an SQS FIFO queue
//! with a short visibility timeout, and streams a slow, deterministic asset (24 MiB) into S3 until
//! it stalls past the first multipart part. The test kills it there with `SIGKILL`, checks that
//! nothing was published or made visible, then lets an in-process builder poll the queue: the
//! redelivered message is built once the dead builder's lease has expired (claim takeover), with
//! exactly the expected bytes.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use factory_aws::{ensure_build_queue_with, BuildQueueConfig, S3Store, SqsQueue};
use factory_pipeline::{
    poll_once, BuildMessage, Builder, BuilderConfig, Claims, Index, Pipeline, PollConfig, Response,
};
use factory_signing::SigningKey;
use factory_store::{BuildQueue, ContentStore};
use factory_tests::slow_assembler::{self, SlowAssembler, POLLING, STALLED};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// The asset: three 8 MiB multipart parts.
const SIZE: u64 = 24 * 1024 * 1024;
/// The queue's visibility timeout: short, so the message comes back soon after the kill.
const VISIBILITY: Duration = Duration::from_secs(5);
/// Generous bounds for liveness only (never asserted as durations).
const PATIENCE: Duration = Duration::from_secs(120);

/// The crash-builder process, killed (SIGKILL) and reaped on drop if the test did not kill it.
struct Crasher {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Crasher {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-builder"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start crash-builder");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a stdout line starting with `prefix`; panics if the process exits first.
    fn wait_for_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("crash-builder printed no {prefix:?} line: {e}"),
            }
        }
    }

    /// `SIGKILL`, then reap it; its exit status.
    fn kill(&mut self) -> std::process::ExitStatus {
        self.child.kill().expect("kill crash-builder");
        self.child.wait().expect("reap crash-builder")
    }
}

impl Drop for Crasher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The incomplete multipart uploads under `prefix`: (S3 key, upload id).
async fn multipart_uploads(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    let listed = s3
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    listed
        .uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_owned(),
                u.upload_id().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// How many parts an incomplete multipart upload has so far.
async fn parts(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, upload_id: &str) -> usize {
    s3.list_parts()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .unwrap()
        .parts()
        .len()
}

async fn sha256_of(store: &dyn ContentStore, key: &str) -> (u64, String) {
    let (_, mut stream) = store.get_stream(key).await.unwrap().unwrap();
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (size, hex::encode(hasher.finalize()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builder_killed_mid_upload_is_taken_over() {
    let sdk = crate::common::aws_config().await;
    let s3 = factory_aws::s3_client(&sdk);
    let sqs = factory_aws::sqs_client(&sdk);
    let bucket = crate::common::test_bucket(&s3).await;
    let prefix = format!("{}/", crate::common::unique_name("crash"));
    let (queue_url, dlq_url) = ensure_build_queue_with(
        &sqs,
        &crate::common::unique_name("crash"),
        &BuildQueueConfig {
            visibility_timeout: VISIBILITY,
            max_receive_count: 20,
        },
    )
    .await
    .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("signing-key.pem");
    let key = Arc::new(SigningKey::load_or_generate(&key_path).unwrap());

    let store: Arc<dyn ContentStore> = Arc::new(S3Store::new(s3.clone(), &bucket, &prefix));
    let queue: Arc<dyn BuildQueue> = Arc::new(SqsQueue::new(sqs.clone(), &queue_url, Some(dlq_url.clone())));
    let index = Index::from_public_key_pem(store.clone(), &key.public_key_pem()).unwrap();
    let claims = Claims::new(store.clone());

    let cache_key = uuid::Uuid::new_v4().simple().to_string();
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    let spec = slow_assembler::spec(seed, SIZE, "kernel-amd64");
    let expected_sha256 = slow_assembler::pattern_sha256(seed, SIZE);
    let message = BuildMessage::new(&cache_key, spec.clone());
    queue.send(message.to_queue_message().unwrap()).await.unwrap();

    // The builder process takes the message and uploads until it stalls past the first part.
    let mut crasher = Crasher::spawn(&[&bucket, &prefix, &queue_url, key_path.to_str().unwrap()]);
    let stalled = tokio::task::block_in_place(|| {
        crasher.wait_for_line(POLLING);
        crasher.wait_for_line(STALLED)
    });
    let staging_prefix = format!("{prefix}staging/{cache_key}/");
    let deadline = Instant::now() + PATIENCE;
    let (upload_key, upload_id) = loop {
        let uploads = multipart_uploads(&s3, &bucket, &staging_prefix).await;
        if let Some((key, id)) = uploads.into_iter().next() {
            if parts(&s3, &bucket, &key, &id).await >= 1 {
                break (key, id);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no multipart part under {staging_prefix} ({stalled})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dead_claim = claims
        .current(&cache_key)
        .await
        .unwrap()
        .expect("the builder's claim");
    assert_ne!(dead_claim.expires_at, 0, "a live claim, not a released one");

    let status = crasher.kill();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");

    // Nothing published, nothing visible, nothing served.
    assert_eq!(index.lookup(&cache_key).await.unwrap(), None);
    assert_eq!(store.list("assets/").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.list("staging/").await.unwrap(),
        Vec::<String>::new(),
        "an incomplete upload is not an object"
    );
    assert!(
        multipart_uploads(&s3, &bucket, &staging_prefix)
            .await
            .iter()
            .any(|(key, id)| key == &upload_key && id == &upload_id),
        "the dead builder's upload is left incomplete (for the lifecycle rule)"
    );
    let pipeline = Pipeline::new(index.clone(), queue.clone(), PollConfig::default());
    assert!(matches!(
        pipeline
            .get_or_build(&cache_key, &spec, Duration::ZERO)
            .await
            .unwrap(),
        Response::Building { .. }
    ));

    // A live builder (same bytes, faster) takes the redelivered message over once the dead
    // builder's lease has expired.
    let assembler = Arc::new(SlowAssembler {
        chunk_delay: Duration::from_millis(1),
        stall_after: None,
    });
    let config = BuilderConfig {
        lease: Duration::from_secs(3),
        failure_ttl: Duration::from_secs(60),
    };
    let builder = Builder::new(store.clone(), key.clone(), assembler, config).unwrap();
    let stats = builder.stats();
    let deadline = Instant::now() + PATIENCE;
    while stats.built() == 0 {
        assert!(
            Instant::now() < deadline,
            "the redelivered message was not built: {stats:?}"
        );
        // A build that outlasts the visibility timeout cannot delete its message (the receipt
        // is stale); the redelivery then finds the asset published, as in the Lambda.
        if let Err(e) = poll_once(&*queue, &builder, 1, Duration::from_secs(1)).await {
            eprintln!("poll: {e}");
        }
    }
    assert_eq!(stats.built(), 1, "{stats:?}");
    assert_eq!(stats.user_errors(), 0, "{stats:?}");

    let published = index
        .lookup(&cache_key)
        .await
        .unwrap()
        .expect("a verified record");
    assert_eq!(published.sha256, expected_sha256);
    assert_eq!(published.size, SIZE);
    assert_eq!(
        published.object_key,
        format!("assets/{cache_key}/{expected_sha256}/kernel-amd64")
    );
    assert_eq!(
        sha256_of(&*store, &published.object_key).await,
        (SIZE, expected_sha256.clone())
    );
    assert_eq!(
        store.list("assets/").await.unwrap(),
        vec![published.object_key.clone()]
    );
    assert_eq!(store.list("staging/").await.unwrap(), Vec::<String>::new());
    let claim = claims.current(&cache_key).await.unwrap().unwrap();
    assert_ne!(claim.owner, dead_claim.owner, "the claim was taken over");
    assert_eq!(claim.expires_at, 0, "and released after publishing");
    assert!(matches!(
        pipeline
            .get_or_build(&cache_key, &spec, Duration::ZERO)
            .await
            .unwrap(),
        Response::Served(ref p) if p == &published
    ));

    // Tidy LocalStack: what the lifecycle rule would do, and the queues.
    let _ = s3
        .abort_multipart_upload()
        .bucket(&bucket)
        .key(&upload_key)
        .upload_id(&upload_id)
        .send()
        .await;
    for url in [&queue_url, &dlq_url] {
        let _ = sqs.delete_queue().queue_url(url).send().await;
    }
}
