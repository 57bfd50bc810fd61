//! In-process build queue: the [`BuildQueue`] of the local server, emulating SQS FIFO.
//!
//! * Messages of one group are delivered in send order, and a group with a message in flight
//!   (received, not acknowledged, visibility timeout not expired) delivers nothing else until that
//!   message is acknowledged or becomes visible again. One `receive` may return several
//!   consecutive messages of a group, as SQS does.
//! * A `dedup_id` seen in the last 5 minutes makes `send` accept the message without enqueuing it.
//! * A message that was received `max_receives` times without being acknowledged is moved to the
//!   dead-letter list at the next receive attempt instead of being delivered again.
//! * Receipts are per delivery: after a redelivery only the newest receipt acknowledges.
//!
//! State lives in memory only (lost on restart), which suits the single-process local server.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{BuildQueue, QueueError, QueueMessage, ReceivedMessage};

/// The deduplication window of SQS FIFO queues.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// An in-process FIFO queue with visibility timeouts, deduplication and a dead-letter list.
#[derive(Debug)]
pub struct MemoryQueue {
    visibility_timeout: Duration,
    max_receives: u32,
    state: Mutex<State>,
    /// Woken on send and ack (which may unblock a group); expiries are waited for by time.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    /// Pending messages per group, in send order; in-flight messages are at the front.
    groups: HashMap<String, VecDeque<Entry>>,
    /// dedup_id → end of its deduplication window.
    dedup: HashMap<String, Instant>,
    /// Latest receipt → (group, seq) of the message it acknowledges.
    receipts: HashMap<String, (String, u64)>,
    dead_letters: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    message_id: String,
    body: String,
    receive_count: u32,
    in_flight: Option<InFlight>,
}

#[derive(Debug)]
struct InFlight {
    receipt: String,
    until: Instant,
}

impl Entry {
    fn invisible_at(&self, now: Instant) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.until > now)
    }
}

impl MemoryQueue {
    /// A queue whose unacknowledged messages reappear after `visibility_timeout` and go to the
    /// dead-letter list after `max_receives` deliveries (at least 1).
    pub fn new(visibility_timeout: Duration, max_receives: u32) -> Self {
        Self {
            visibility_timeout,
            max_receives: max_receives.max(1),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// Messages not yet acknowledged nor dead-lettered (in flight or waiting).
    pub fn pending(&self) -> usize {
        self.lock().groups.values().map(VecDeque::len).sum()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is a few field writes.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One receive attempt: the delivered messages, and when the next in-flight message expires.
    fn try_receive(&self, max: usize, now: Instant) -> (Vec<ReceivedMessage>, Option<Instant>) {
        let mut state = self.lock();
        let state = &mut *state;
        let mut next_expiry: Option<Instant> = None;
        let mut candidates: Vec<(u64, String)> = Vec::new();
        let mut emptied = Vec::new();

        for (group, entries) in &mut state.groups {
            if let Some(until) = entries
                .iter()
                .filter(|e| e.invisible_at(now))
                .filter_map(|e| e.in_flight.as_ref().map(|f| f.until))
                .min()
            {
                next_expiry = Some(next_expiry.map_or(until, |n| n.min(until)));
                continue; // a group with a message in flight is blocked
            }
            // Every message of an unblocked group is visible: retire the exhausted ones.
            let max_receives = self.max_receives;
            entries.retain(|e| {
                if e.receive_count < max_receives {
                    return true;
                }
                tracing::warn!(message_id = %e.message_id, receive_count = e.receive_count, "moving message to the dead-letter list");
                if let Some(f) = &e.in_flight {
                    state.receipts.remove(&f.receipt);
                }
                state.dead_letters.push(e.body.clone());
                false
            });
            if entries.is_empty() {
                emptied.push(group.clone());
            }
            candidates.extend(entries.iter().map(|e| (e.seq, group.clone())));
        }
        for group in emptied {
            state.groups.remove(&group);
        }

        // Oldest first across groups; per group the order is the send order.
        candidates.sort_unstable_by_key(|(seq, _)| *seq);
        candidates.truncate(max);
        let mut delivered = Vec::with_capacity(candidates.len());
        for (seq, group) in candidates {
            let Some(entry) = state
                .groups
                .get_mut(&group)
                .and_then(|entries| entries.iter_mut().find(|e| e.seq == seq))
            else {
                continue;
            };
            if let Some(old) = entry.in_flight.take() {
                state.receipts.remove(&old.receipt);
            }
            let receipt = uuid::Uuid::new_v4().to_string();
            entry.receive_count += 1;
            entry.in_flight = Some(InFlight {
                receipt: receipt.clone(),
                until: now + self.visibility_timeout,
            });
            state.receipts.insert(receipt.clone(), (group, seq));
            delivered.push(ReceivedMessage {
                body: entry.body.clone(),
                receipt,
                message_id: entry.message_id.clone(),
                receive_count: entry.receive_count,
            });
        }
        (delivered, next_expiry)
    }
}

#[async_trait]
impl BuildQueue for MemoryQueue {
    async fn send(&self, message: QueueMessage) -> Result<(), QueueError> {
        let now = Instant::now();
        {
            let mut state = self.lock();
            state.dedup.retain(|_, until| *until > now);
            if state.dedup.contains_key(&message.dedup_id) {
                tracing::debug!(dedup_id = %message.dedup_id, "duplicate message accepted and dropped");
                return Ok(());
            }
            state.dedup.insert(message.dedup_id, now + DEDUP_WINDOW);
            let seq = state.next_seq;
            state.next_seq += 1;
            state
                .groups
                .entry(message.group_id)
                .or_default()
                .push_back(Entry {
                    seq,
                    message_id: uuid::Uuid::new_v4().to_string(),
                    body: message.body,
                    receive_count: 0,
                    in_flight: None,
                });
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let start = Instant::now();
        let deadline = start
            .checked_add(wait)
            .unwrap_or(start + Duration::from_secs(86_400));
        loop {
            // Register for wake-ups before looking, so that a send in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let now = Instant::now();
            let (delivered, next_expiry) = self.try_receive(max, now);
            if !delivered.is_empty() || now >= deadline {
                return Ok(delivered);
            }
            let wake = next_expiry.map_or(deadline, |expiry| expiry.min(deadline));
            let _ = tokio::time::timeout_at(wake, changed).await;
        }
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            let (group, seq) = state.receipts.remove(receipt).ok_or(QueueError::UnknownReceipt)?;
            if let Some(entries) = state.groups.get_mut(&group) {
                entries.retain(|e| e.seq != seq);
                if entries.is_empty() {
                    state.groups.remove(&group);
                }
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn retry_after(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            let (group, seq) = state
                .receipts
                .get(receipt)
                .cloned()
                .ok_or(QueueError::UnknownReceipt)?;
            let flight = state
                .groups
                .get_mut(&group)
                .and_then(|entries| entries.iter_mut().find(|e| e.seq == seq))
                .and_then(|e| e.in_flight.as_mut())
                .ok_or(QueueError::UnknownReceipt)?;
            flight.until = Instant::now() + delay;
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<String>, QueueError> {
        Ok(self.lock().dead_letters.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn msg(body: &str, group: &str, dedup: &str) -> QueueMessage {
        QueueMessage {
            body: body.to_owned(),
            group_id: group.to_owned(),
            dedup_id: dedup.to_owned(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dedup_window_expires() {
        let q = MemoryQueue::new(Duration::from_secs(30), 3);
        q.send(msg("a", "g", "d")).await.unwrap();
        q.send(msg("b", "g", "d")).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1);
        q.ack(&got[0].receipt).await.unwrap();
        tokio::time::advance(DEDUP_WINDOW + Duration::from_secs(1)).await;
        q.send(msg("c", "g", "d")).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got[0].body, "c");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_shortens_the_visibility_timeout() {
        let q = MemoryQueue::new(Duration::from_secs(300), 3);
        q.send(msg("m", "g", "1")).await.unwrap();
        let t0 = Instant::now();
        let got = q.receive(1, Duration::ZERO).await.unwrap();
        q.retry_after(&got[0].receipt, Duration::from_secs(7))
            .await
            .unwrap();
        let again = q.receive(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(again[0].receive_count, 2);
        assert_eq!(t0.elapsed(), Duration::from_secs(7));
        assert!(matches!(
            q.retry_after(&got[0].receipt, Duration::ZERO).await,
            Err(QueueError::UnknownReceipt)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn receive_waits_for_a_send_and_for_an_expiry() {
        let q = std::sync::Arc::new(MemoryQueue::new(Duration::from_secs(30), 3));
        let sender = std::sync::Arc::clone(&q);
        let t0 = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            sender.send(msg("late", "g", "1")).await.unwrap();
        });
        let got = q.receive(1, Duration::from_secs(20)).await.unwrap();
        assert_eq!(got[0].body, "late");
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        // Not acked: visible again after 30 s, which a 60 s wait sees.
        let again = q.receive(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            (again[0].receive_count, &again[0].message_id),
            (2, &got[0].message_id)
        );
        // The first receipt is stale now.
        assert!(matches!(
            q.ack(&got[0].receipt).await,
            Err(QueueError::UnknownReceipt)
        ));
        q.ack(&again[0].receipt).await.unwrap();
        assert_eq!(q.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn several_messages_of_a_group_in_one_receive_block_the_group() {
        let q = MemoryQueue::new(Duration::from_secs(30), 3);
        for (i, body) in ["a1", "a2", "a3"].iter().enumerate() {
            q.send(msg(body, "a", &i.to_string())).await.unwrap();
        }
        q.send(msg("b1", "b", "b1")).await.unwrap();
        let got = q.receive(2, Duration::ZERO).await.unwrap();
        let bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["a1", "a2"]);
        let next = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(next.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["b1"]);
        q.ack(&got[0].receipt).await.unwrap();
        assert!(
            q.receive(10, Duration::ZERO).await.unwrap().is_empty(),
            "a2 still in flight"
        );
        q.ack(&got[1].receipt).await.unwrap();
        assert_eq!(q.receive(10, Duration::ZERO).await.unwrap()[0].body, "a3");
    }
}
