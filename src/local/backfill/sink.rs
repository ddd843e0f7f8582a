//! Where a backfill's events go (the `Sink` trait: SQS, nowhere, the local pipeline), and one batch sent with retries.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Progress;
use crate::local::Local;
use intercom_relay_lambda::queue::{Enqueue, MemoryQueue, QueuedMessage, SqsQueue, Unconfirmed};
use intercom_relay_lambda::retry::RetryPolicy;

/// How a batch the destination took only in part is tried again before the run stops (after the queue's own retries).
pub const SEND_RETRY: RetryPolicy =
    RetryPolicy { attempts: 6, min_delay: Duration::from_secs(1), max_delay: Duration::from_secs(30) };

/// Where a backfill's events go.
pub trait Sink: Sync {
    /// The destination as the checkpoint records it (a resume must go to the same one).
    fn name(&self) -> String;

    /// Whether [`Sink::send`] uses the events' sources (`file:line`); building them costs time.
    fn wants_sources(&self) -> bool {
        false
    }

    /// Sends `messages` in order, confirming each; `sources` is empty unless [`Sink::wants_sources`].
    fn send(
        &self,
        messages: &[QueuedMessage],
        sources: &[String],
    ) -> impl Future<Output = Result<(), Unconfirmed>> + Send;
}

/// The events queue: confirmed is in SQS.
impl Sink for SqsQueue {
    fn name(&self) -> String {
        self.url().to_owned()
    }

    async fn send(&self, messages: &[QueuedMessage], _: &[String]) -> Result<(), Unconfirmed> {
        self.send_each(messages).await
    }
}

/// Nowhere: a check of an archive (every line read and validated, the counts and bad lines reported) that sends nothing.
pub struct DryRun;

/// What a dry run's report names as its destination.
pub const DRY_RUN: &str = "nowhere (--dry-run)";

impl Sink for DryRun {
    fn name(&self) -> String {
        DRY_RUN.to_owned()
    }

    async fn send(&self, _: &[QueuedMessage], _: &[String]) -> Result<(), Unconfirmed> {
        Ok(())
    }
}

/// The local pipeline: confirmed is forwarded to the end (delivered, skipped or dead-lettered).
pub struct InProcess<'a> {
    local: &'a Local,
    queue: MemoryQueue,
    name: String,
}

impl<'a> InProcess<'a> {
    /// Forwards through `local`; `name` says where to, stably across runs (`the built-in sandbox`, a URL).
    pub(crate) fn new(local: &'a Local, name: impl Into<String>) -> InProcess<'a> {
        InProcess { local, queue: MemoryQueue::new(), name: name.into() }
    }
}

impl Sink for InProcess<'_> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn wants_sources(&self) -> bool {
        true
    }

    async fn send(&self, messages: &[QueuedMessage], sources: &[String]) -> Result<(), Unconfirmed> {
        let before = self.queue.enqueued();
        self.local.tally.accepted(messages.len());
        // The memory queue always takes what it is given.
        let _ = self.queue.enqueue(messages.to_vec()).await;
        for ((id, message), source) in self.queue.since(before).iter().zip(sources) {
            self.local.tally.origin(id, source, Some(&message.message_id));
        }
        self.local.drain(&self.queue, &AtomicBool::new(true)).await;
        Ok(())
    }
}

/// Sends one chunk, trying again what the destination did not confirm; `Err` holds the messageIds it confirmed (the
/// rest of the chunk is not confirmed) and why it stopped.
pub(crate) async fn send<S: Sink>(
    sink: &S,
    messages: &[QueuedMessage],
    sources: &[String],
    retry: &RetryPolicy,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<(), (Vec<String>, String)> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut confirmed = Vec::new();
    let mut delays = retry.delays();
    loop {
        let result = if pending.len() == messages.len() {
            sink.send(messages, sources).await
        } else {
            let subset: Vec<QueuedMessage> = pending.iter().map(|&i| messages[i].clone()).collect();
            let labels: Vec<String> = pending.iter().filter_map(|&i| sources.get(i).cloned()).collect();
            sink.send(&subset, &labels).await
        };
        let Err(Unconfirmed { confirmed: flags, reason }) = result else {
            progress.sent.fetch_add(pending.len() as u64, Ordering::Relaxed);
            return Ok(());
        };
        let mut still = Vec::new();
        for (&index, sent) in pending.iter().zip(flags) {
            if sent {
                confirmed.push(messages[index].message_id.clone());
                progress.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                still.push(index);
            }
        }
        pending = still;
        match delays.next() {
            Some(delay) if !stop.load(Ordering::Acquire) => {
                tracing::warn!(
                    unconfirmed = pending.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    %reason,
                    "The queue did not take a batch; trying again."
                );
                tokio::time::sleep(delay).await;
            }
            _ => return Err((confirmed, reason)),
        }
    }
}
