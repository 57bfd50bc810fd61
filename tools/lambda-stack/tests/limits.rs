//! Lambda's limits as the emulator enforces them, checked with a function that misbehaves on
//! request: a small Python program speaking the Runtime API (any language can; this one needs no
//! build). The factory's functions rely on these limits being real here: an asset streamed
//! through a function, or a wait past the timeout, must fail locally as it would in AWS.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use lambda_stack::runtime::{FunctionSpec, InvokeError, LambdaRuntime, MAX_RESPONSE_BYTES};

/// Answers an event `{"bytes": N}` with N bytes, `{"sleep": S}` after S seconds, `{"exit": 1}` by
/// dying mid-invocation, `{"error": "..."}` with a function error; anything else is echoed.
const FUNCTION: &str = r#"#!/usr/bin/python3
import json, os, sys, time, urllib.error, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"].removeprefix("http://") + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    kind, body = "response", json.dumps(event).encode()
    if "bytes" in event:
        body = json.dumps("x" * (event["bytes"] - 2)).encode()
    if "sleep" in event:
        time.sleep(event["sleep"])
    if "exit" in event:
        sys.exit(event["exit"])
    if "error" in event:
        kind, body = "error", json.dumps({"errorType": "Probe", "errorMessage": event["error"]}).encode()
    try:
        urllib.request.urlopen(urllib.request.Request(api + rid + "/" + kind, data=body, method="POST")).read()
    except urllib.error.HTTPError as refused:  # 413 for an oversized response, as in AWS
        print("runtime API refused the response:", refused.code, flush=True)
"#;

async fn runtime(dir: &std::path::Path, timeout: Duration) -> LambdaRuntime {
    let binary = dir.join("bootstrap");
    std::fs::write(&binary, FUNCTION).unwrap();
    let mut perms = std::fs::metadata(&binary).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&binary, perms).unwrap();
    let spec = FunctionSpec {
        name: "probe".into(),
        binary,
        environment: BTreeMap::new(),
        timeout,
        memory_mb: 128,
        // One environment: scale-out never blurs which invocation started a new one.
        max_instances: 1,
    };
    LambdaRuntime::start(vec![spec], dir.join("scratch"), false)
        .await
        .unwrap()
}

async fn invoke(runtime: &LambdaRuntime, event: serde_json::Value) -> Result<Bytes, InvokeError> {
    runtime
        .invoke("probe", Bytes::from(serde_json::to_vec(&event).unwrap()))
        .await
}

#[tokio::test]
async fn payloads_over_6_mb_fail_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path(), Duration::from_secs(30)).await;

    let fits = invoke(&runtime, serde_json::json!({ "bytes": MAX_RESPONSE_BYTES })).await;
    assert_eq!(
        fits.map(|b| b.len()).unwrap(),
        MAX_RESPONSE_BYTES,
        "6 MB exactly is allowed"
    );
    let over = invoke(&runtime, serde_json::json!({ "bytes": MAX_RESPONSE_BYTES + 1 })).await;
    assert_eq!(over, Err(InvokeError::ResponseTooLarge(MAX_RESPONSE_BYTES + 1)));

    let big = serde_json::json!({ "pad": "y".repeat(MAX_RESPONSE_BYTES) });
    assert!(matches!(
        invoke(&runtime, big).await,
        Err(InvokeError::RequestTooLarge(_))
    ));
    // The environment survived both: one cold start for all of it.
    assert_eq!(
        invoke(&runtime, serde_json::json!({"n": 1})).await.unwrap(),
        r#"{"n": 1}"#
    );
    assert_eq!(
        runtime
            .stats("probe")
            .unwrap()
            .cold_starts
            .load(Ordering::Relaxed),
        1,
        "{:#?}",
        runtime.logs("probe")
    );
}

#[tokio::test]
async fn timeouts_kill_the_environment_and_errors_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path(), Duration::from_secs(2)).await;

    let error = invoke(&runtime, serde_json::json!({ "error": "boom" })).await;
    match error {
        Err(InvokeError::Function { body, .. }) => {
            assert!(body.contains("Probe") && body.contains("boom"), "{body}");
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    let started = std::time::Instant::now();
    assert_eq!(
        invoke(&runtime, serde_json::json!({ "sleep": 10 })).await,
        Err(InvokeError::Timeout)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(8),
        "the invocation ends at the timeout, not when the function would have: {waited:?}"
    );
    // The timed-out environment is gone: the next invocation is a cold start.
    assert_eq!(
        invoke(&runtime, serde_json::json!({"n": 2})).await.unwrap(),
        r#"{"n": 2}"#
    );
    assert_eq!(
        runtime
            .stats("probe")
            .unwrap()
            .cold_starts
            .load(Ordering::Relaxed),
        2
    );

    // A process that dies mid-invocation fails it, and the next one starts afresh.
    assert!(matches!(
        invoke(&runtime, serde_json::json!({ "exit": 3 })).await,
        Err(InvokeError::Runtime(_))
    ));
    assert_eq!(
        invoke(&runtime, serde_json::json!({"n": 3})).await.unwrap(),
        r#"{"n": 3}"#
    );
    assert_eq!(
        runtime
            .stats("probe")
            .unwrap()
            .cold_starts
            .load(Ordering::Relaxed),
        3
    );
    runtime.stop();
}
