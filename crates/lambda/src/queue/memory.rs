//! An in-memory FIFO queue with SQS's delivery rules: the local pipeline's and the tests' stand-in for SQS.
//!
//! Like a FIFO queue, it hands a person's (ordering key's) messages out in order and holds the rest of that person's
//! messages back while one is being worked on or waits to be visible again; a message handed back comes out again after
//! its wait, its receive count one higher; and it stamps each message with when it was sent and first received, as
//! SQS's `SentTimestamp` and `ApproximateFirstReceiveTimestamp`, so the forwarder's retry horizon and backoff work here
//! as they do in Lambda.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Enqueue, EnqueueError, QueuedMessage};

/// Holds messages in arrival order until they are deleted.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    inner: Mutex<Inner>,
    /// Woken when messages arrive or become visible.
    changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    held: VecDeque<Held>,
    /// Messages ever enqueued: the next one's sequence number.
    enqueued: u64,
}

#[derive(Debug)]
struct Held {
    sequence: u64,
    message: QueuedMessage,
    receives: u32,
    /// Received and neither deleted nor handed back yet.
    in_flight: bool,
    /// Handed back: invisible until then.
    visible_at: Option<Instant>,
    /// Unix milliseconds.
    sent_at_ms: u64,
    first_received_at_ms: Option<u64>,
}

/// A message as a receive hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The queue's id of the message (what [`MemoryQueue::delete`] and [`MemoryQueue::hand_back`] take).
    pub id: String,
    /// How many times it was received, this time included.
    pub receive_count: u32,
    /// When it was enqueued and first received, in Unix milliseconds.
    pub sent_at_ms: u64,
    pub first_received_at_ms: u64,
    pub message: QueuedMessage,
}

impl MemoryQueue {
    pub fn new() -> MemoryQueue {
        MemoryQueue::default()
    }

    /// A copy of what the queue holds, in arrival order.
    pub fn messages(&self) -> Vec<QueuedMessage> {
        self.lock().held.iter().map(|held| held.message.clone()).collect()
    }

    /// Messages held: waiting, in flight or handed back.
    pub fn len(&self) -> usize {
        self.lock().held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().held.is_empty()
    }

    /// Messages ever enqueued; the next message's sequence number.
    pub fn enqueued(&self) -> u64 {
        self.lock().enqueued
    }

    /// The messages held that were enqueued at `sequence` or later, with their queue ids, in order.
    pub fn since(&self, sequence: u64) -> Vec<(String, QueuedMessage)> {
        let inner = self.lock();
        let start = inner.held.partition_point(|held| held.sequence < sequence);
        inner.held.range(start..).map(|held| (message_id(held.sequence), held.message.clone())).collect()
    }

    /// Up to `max` visible messages, in order, never one whose person has an earlier message in flight or handed back.
    pub fn receive(&self, max: usize) -> Vec<ReceivedMessage> {
        let now = Instant::now();
        let now_ms = epoch_ms();
        let mut inner = self.lock();
        let mut blocked: HashSet<String> = HashSet::new();
        let mut received = Vec::new();
        for held in inner.held.iter_mut() {
            if received.len() == max {
                break;
            }
            if blocked.contains(&held.message.ordering_key) {
                continue;
            }
            let waiting = held.visible_at.is_some_and(|at| at > now);
            if held.in_flight || waiting {
                blocked.insert(held.message.ordering_key.clone());
                continue;
            }
            held.in_flight = true;
            held.visible_at = None;
            held.receives += 1;
            let first_received_at_ms = *held.first_received_at_ms.get_or_insert(now_ms);
            received.push(ReceivedMessage {
                id: message_id(held.sequence),
                receive_count: held.receives,
                sent_at_ms: held.sent_at_ms,
                first_received_at_ms,
                message: held.message.clone(),
            });
        }
        received
    }

    /// Removes a received message for good.
    pub fn delete(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(index) = inner.position(id) {
            inner.held.remove(index);
        }
        drop(inner);
        self.changed.notify_one();
    }

    /// Makes a received message visible again after `delay`, its person's later messages waiting behind it.
    pub fn hand_back(&self, id: &str, delay: Duration) {
        let mut inner = self.lock();
        if let Some(index) = inner.position(id) {
            let held = &mut inner.held[index];
            held.in_flight = false;
            held.visible_at = Some(Instant::now() + delay);
        }
        drop(inner);
        self.changed.notify_one();
    }

    /// When the next handed-back message becomes visible, if one is still invisible. (One already visible but held back
    /// behind an invisible message of the same person does not count: waking for it would only spin.)
    pub fn next_visible_at(&self) -> Option<Instant> {
        let now = Instant::now();
        let inner = self.lock();
        let waiting = inner.held.iter().filter(|held| !held.in_flight).filter_map(|held| held.visible_at);
        waiting.filter(|at| *at > now).min()
    }

    /// Waits until messages arrive, are deleted or are handed back (or `until`, whichever comes first).
    pub async fn changed(&self, until: Instant) {
        let _ = tokio::time::timeout_at(until, self.changed.notified()).await;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the queue half-written, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Now, in Unix milliseconds.
pub fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn message_id(sequence: u64) -> String {
    format!("local-{sequence:08}")
}

impl Inner {
    /// Where the message `id` is held (messages are held in sequence order).
    fn position(&self, id: &str) -> Option<usize> {
        let sequence: u64 = id.strip_prefix("local-")?.parse().ok()?;
        self.held.binary_search_by_key(&sequence, |held| held.sequence).ok()
    }
}

impl Enqueue for MemoryQueue {
    async fn enqueue(&self, messages: Vec<QueuedMessage>) -> Result<(), EnqueueError> {
        let mut inner = self.lock();
        let sent_at_ms = epoch_ms();
        for message in messages {
            let sequence = inner.enqueued;
            inner.enqueued += 1;
            inner.held.push_back(Held {
                sequence,
                message,
                receives: 0,
                in_flight: false,
                visible_at: None,
                sent_at_ms,
                first_received_at_ms: None,
            });
        }
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    fn message(person: &str, n: u32) -> QueuedMessage {
        QueuedMessage {
            message_id: format!("{person}-{n}"),
            ordering_key: person.into(),
            event_type: EventType::Track,
            event_name: None,
            body: String::new(),
        }
    }

    fn ids(received: &[ReceivedMessage]) -> Vec<&str> {
        received.iter().map(|r| r.message.message_id.as_str()).collect()
    }

    #[tokio::test]
    async fn a_person_waits_behind_a_message_in_flight_or_handed_back_and_others_do_not() {
        let queue = MemoryQueue::new();
        queue.enqueue(vec![message("a", 1), message("a", 2), message("b", 1)]).await.unwrap();
        let first = queue.receive(1);
        assert_eq!(ids(&first), ["a-1"]);
        // a-2 waits behind a-1 in flight; b is free.
        assert_eq!(ids(&queue.receive(10)), ["b-1"]);
        queue.hand_back(&first[0].id, Duration::from_secs(3600));
        assert!(queue.receive(10).is_empty(), "a-1 is invisible and a-2 must not overtake it");
        assert!(queue.next_visible_at().is_some_and(|at| at > Instant::now() + Duration::from_secs(3500)));
        assert_eq!((queue.len(), queue.enqueued()), (3, 3));
        // b-1 handed back with no delay is visible at once: the next wake-up is still a-1's, not a moment already past.
        queue.hand_back(&message_id(2), Duration::ZERO);
        assert!(queue.next_visible_at().is_some_and(|at| at > Instant::now() + Duration::from_secs(3500)));
        assert_eq!(ids(&queue.receive(10)), ["b-1"]);
    }

    #[tokio::test]
    async fn a_message_handed_back_comes_again_in_order_with_its_receive_count_raised() {
        let queue = MemoryQueue::new();
        queue.enqueue(vec![message("c", 1), message("c", 2)]).await.unwrap();
        let first = queue.receive(10);
        assert_eq!(ids(&first), ["c-1", "c-2"]);
        for received in &first {
            queue.hand_back(&received.id, Duration::ZERO);
        }
        let again = queue.receive(10);
        assert_eq!(ids(&again), ["c-1", "c-2"]);
        assert_eq!(again.iter().map(|r| r.receive_count).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(again[0].first_received_at_ms, first[0].first_received_at_ms, "the first receive is remembered");
        assert!(first[0].sent_at_ms <= first[0].first_received_at_ms);
        queue.delete(&again[0].id);
        assert_eq!(queue.since(0).iter().map(|(_, m)| m.message_id.as_str()).collect::<Vec<_>>(), ["c-2"]);
    }
}
