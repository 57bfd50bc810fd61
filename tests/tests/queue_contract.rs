//! The contract of [`BuildQueue`], one generic suite run against every adapter: `memory::*` on
//! [`MemoryQueue`], `sqs::*` on [`SqsQueue`] in LocalStack (a fresh, uniquely named FIFO queue and
//! DLQ per test, with a short visibility timeout; see `common` for the environment it needs).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use factory_aws::{ensure_build_queue_with, BuildQueueConfig, SqsQueue};
use factory_store::memory::MemoryQueue;
use factory_store::{BuildQueue, QueueError, QueueMessage, ReceivedMessage};
use tokio::time::{sleep, Instant};

/// A queue under test and its settings.
struct Fixture {
    queue: Arc<dyn BuildQueue>,
    visibility: Duration,
    max_receives: u32,
    /// How long to watch for a delivery that must not happen (well below `visibility`).
    quiet: Duration,
}

fn memory_fixture() -> Fixture {
    let visibility = Duration::from_secs(1);
    Fixture {
        queue: Arc::new(MemoryQueue::new(visibility, 2)),
        visibility,
        max_receives: 2,
        quiet: Duration::from_millis(400),
    }
}

async fn sqs_fixture() -> Fixture {
    let sqs = crate::common::sqs_client().await;
    let config = BuildQueueConfig {
        visibility_timeout: Duration::from_secs(3),
        max_receive_count: 2,
    };
    let (queue_url, dlq_url) =
        ensure_build_queue_with(&sqs, &crate::common::unique_name("contract"), &config)
            .await
            .unwrap();
    Fixture {
        queue: Arc::new(SqsQueue::new(sqs, queue_url, Some(dlq_url))),
        visibility: config.visibility_timeout,
        max_receives: config.max_receive_count,
        quiet: Duration::from_secs(1),
    }
}

/// Runs every listed case against every adapter, each case on a fresh queue.
macro_rules! queue_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::memory_fixture()).await;
                }
            )*
        }
        mod sqs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::sqs_fixture().await).await;
                }
            )*
        }
    };
}

queue_suite!(
    send_receive_ack,
    duplicate_dedup_id_is_delivered_once,
    unacked_message_reappears,
    exhausted_message_is_dead_lettered,
    fifo_order_within_a_group,
    in_flight_message_blocks_its_group,
);

/// Long enough for any delivery that is due.
const DUE: Duration = Duration::from_secs(5);

fn message(body: &str, group: &str, dedup: &str) -> QueueMessage {
    QueueMessage {
        body: body.to_owned(),
        group_id: group.to_owned(),
        dedup_id: dedup.to_owned(),
    }
}

/// Receives exactly one message, waiting up to `within`.
async fn receive_one(queue: &dyn BuildQueue, within: Duration) -> ReceivedMessage {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut got = queue.receive(1, left).await.unwrap();
        assert!(got.len() <= 1, "receive(1) returned {got:?}");
        if let Some(m) = got.pop() {
            return m;
        }
        assert!(Instant::now() < deadline, "no message within {within:?}");
        sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that nothing is delivered for a while (`quiet`).
async fn assert_nothing(f: &Fixture, why: &str) {
    let got = f.queue.receive(10, f.quiet).await.unwrap();
    assert!(got.is_empty(), "{why}: got {got:?}");
}

/// Receives and acknowledges until `count` messages came or `within` passed; bodies in order.
async fn drain(queue: &dyn BuildQueue, count: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut bodies = Vec::new();
    while bodies.len() < count && Instant::now() < deadline {
        for m in queue.receive(10, Duration::from_secs(1)).await.unwrap() {
            queue.ack(&m.receipt).await.unwrap();
            bodies.push(m.body);
        }
    }
    bodies
}

async fn send_receive_ack(f: &Fixture) {
    let q = &*f.queue;
    q.send(message("build schematic-1 v1.9.0", "schematic-1", "d-1"))
        .await
        .unwrap();
    let m = receive_one(q, DUE).await;
    assert_eq!(m.body, "build schematic-1 v1.9.0");
    assert_eq!(m.receive_count, 1);
    assert!(!m.message_id.is_empty() && !m.receipt.is_empty());
    q.ack(&m.receipt).await.unwrap();
    // Acknowledged: gone for good, also after the visibility timeout.
    sleep(f.visibility).await;
    assert_nothing(f, "an acknowledged message came back").await;
    assert!(q.dead_letters().await.unwrap().is_empty());
    assert!(matches!(
        q.ack("not-a-receipt").await,
        Err(QueueError::UnknownReceipt)
    ));
}

async fn duplicate_dedup_id_is_delivered_once(f: &Fixture) {
    let q = &*f.queue;
    q.send(message("first", "g", "same")).await.unwrap();
    q.send(message("retry of first", "g", "same")).await.unwrap();
    q.send(message("other", "g", "different")).await.unwrap();
    assert_eq!(drain(q, 2, DUE).await, ["first", "other"]);
    assert_nothing(f, "a duplicate was delivered").await;
    // Still a duplicate after the original was acknowledged (5 minutes window).
    q.send(message("late retry of first", "g", "same")).await.unwrap();
    assert_nothing(f, "a duplicate was delivered after the ack").await;
}

async fn unacked_message_reappears(f: &Fixture) {
    let q = &*f.queue;
    q.send(message("crashy build", "g", "1")).await.unwrap();
    let first = receive_one(q, DUE).await;
    assert_eq!(first.receive_count, 1);
    assert_nothing(f, "a message in flight was delivered twice").await;
    // Not acknowledged: visible again after the visibility timeout.
    let again = receive_one(q, f.visibility + DUE).await;
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(again.body, "crashy build");
    assert_eq!(again.receive_count, 2);
    assert_ne!(again.receipt, first.receipt);
    q.ack(&again.receipt).await.unwrap();
    sleep(f.visibility).await;
    assert_nothing(f, "an acknowledged message came back").await;
}

async fn exhausted_message_is_dead_lettered(f: &Fixture) {
    let q = &*f.queue;
    q.send(message("poison", "g", "p")).await.unwrap();
    q.send(message("healthy", "h", "h")).await.unwrap();
    // "healthy" is processed normally; "poison" is never acknowledged.
    let mut poison_receives = 0;
    let deadline = Instant::now() + (f.visibility + DUE) * (f.max_receives + 1);
    while poison_receives < f.max_receives {
        assert!(
            Instant::now() < deadline,
            "poison received only {poison_receives} times"
        );
        for m in q.receive(10, Duration::from_secs(1)).await.unwrap() {
            if m.body == "poison" {
                poison_receives += 1;
                assert_eq!(m.receive_count, poison_receives);
            } else {
                q.ack(&m.receipt).await.unwrap();
            }
        }
    }
    // After max_receives deliveries it is not delivered again but dead-lettered.
    sleep(f.visibility).await;
    assert_nothing(f, "an exhausted message was delivered again").await;
    let deadline = Instant::now() + DUE;
    loop {
        let dead = q.dead_letters().await.unwrap();
        if dead.iter().any(|b| b == "poison") {
            assert_eq!(dead, ["poison"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "poison not in the dead letters: {dead:?}"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

async fn fifo_order_within_a_group(f: &Fixture) {
    let q = &*f.queue;
    let sent = ["a1", "b1", "a2", "a3", "b2", "a4", "b3", "a5"];
    for (i, body) in sent.iter().enumerate() {
        q.send(message(body, &body[..1], &format!("m{i}"))).await.unwrap();
    }
    let got = drain(q, sent.len(), DUE * 2).await;
    let mut per_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for body in &got {
        per_group.entry(&body[..1]).or_default().push(body);
    }
    assert_eq!(per_group["a"], ["a1", "a2", "a3", "a4", "a5"], "all: {got:?}");
    assert_eq!(per_group["b"], ["b1", "b2", "b3"], "all: {got:?}");
}

async fn in_flight_message_blocks_its_group(f: &Fixture) {
    let q = &*f.queue;
    q.send(message("x1", "x", "x1")).await.unwrap();
    q.send(message("x2", "x", "x2")).await.unwrap();
    q.send(message("y1", "y", "y1")).await.unwrap();
    let x1 = receive_one(q, DUE).await;
    assert_eq!(x1.body, "x1");
    // While x1 is in flight its group delivers nothing; another group is not blocked.
    let others = q.receive(10, f.quiet).await.unwrap();
    let bodies: Vec<_> = others.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["y1"], "x2 must wait for x1");
    q.ack(&others[0].receipt).await.unwrap();
    assert_nothing(f, "the next message of a group with one in flight was delivered").await;
    q.ack(&x1.receipt).await.unwrap();
    let x2 = receive_one(q, DUE).await;
    assert_eq!((x2.body.as_str(), x2.receive_count), ("x2", 1));
    q.ack(&x2.receipt).await.unwrap();
}
