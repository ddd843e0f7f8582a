//! An in-memory queue: the local pipeline's and the tests' stand-in for SQS.

use std::sync::Mutex;

use super::{Enqueue, EnqueueError, QueuedMessage};

/// Holds messages in arrival order.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    messages: Mutex<Vec<QueuedMessage>>,
}

impl MemoryQueue {
    pub fn new() -> MemoryQueue {
        MemoryQueue::default()
    }

    /// A copy of what the queue holds.
    pub fn messages(&self) -> Vec<QueuedMessage> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<QueuedMessage>> {
        // A panic while holding the lock cannot leave the Vec half-written, so a poisoned lock is still usable.
        self.messages.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Enqueue for MemoryQueue {
    async fn enqueue(&self, messages: Vec<QueuedMessage>) -> Result<(), EnqueueError> {
        self.lock().extend(messages);
        Ok(())
    }
}
