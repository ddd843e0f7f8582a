//! What a warm function learns of the workspace by asking once: no lock is held across the call that learns it, nor
//! across its retry sleeps. A caller needing a fact that is being learned waits for that one call's answer; callers
//! needing anything else never wait.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OnceCell;

/// Locks `mutex` for a moment's read or update (never across an await); a panic elsewhere does not poison the facts.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One fact, learned by the first caller that needs it, kept until forgotten (then learned again).
pub(super) struct Learned<T>(Mutex<Arc<OnceCell<T>>>);

/// A learned fact, readable while it is replaced by a newer one.
pub(super) struct Fact<T>(Arc<OnceCell<T>>);

impl<T> Deref for Fact<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.get().expect("a Fact is made only once its cell holds a value")
    }
}

impl<T> Default for Learned<T> {
    fn default() -> Learned<T> {
        Learned(Mutex::new(Arc::new(OnceCell::new())))
    }
}

impl<T> Learned<T> {
    /// The fact, learned by `learn` unless known; a failure leaves it to be learned by the next caller.
    pub(super) async fn get_or_learn<E, F>(&self, learn: impl FnOnce() -> F) -> Result<Fact<T>, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let cell = lock(&self.0).clone();
        cell.get_or_try_init(learn).await?;
        Ok(Fact(cell))
    }

    /// Learned again on its next use (what it said turned out stale).
    pub(super) fn forget(&self) {
        *lock(&self.0) = Arc::new(OnceCell::new());
    }
}

/// One call per key at a time (creating one attribute, one tag): callers for a key being made wait for that call's
/// answer instead of making it again; callers for other keys never wait. A failure leaves the key to the next caller.
pub(super) struct OncePerKey<K, V>(Mutex<HashMap<K, Arc<OnceCell<V>>>>);

impl<K, V> Default for OncePerKey<K, V> {
    fn default() -> OncePerKey<K, V> {
        OncePerKey(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq, V: Clone> OncePerKey<K, V> {
    pub(super) async fn get_or_make<E, F>(&self, key: K, make: impl FnOnce() -> F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        let cell = lock(&self.0).entry(key).or_default().clone();
        cell.get_or_try_init(make).await.cloned()
    }

    /// Every answer forgotten (what they said turned out stale).
    pub(super) fn clear(&self) {
        lock(&self.0).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;

    #[tokio::test]
    async fn concurrent_callers_share_one_learning_call_and_a_failure_leaves_it_to_the_next() {
        let learned: Learned<u32> = Learned::default();
        let calls = AtomicUsize::new(0);
        let learn = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<u32, ()>(7)
        };
        let (a, b) = tokio::join!(learned.get_or_learn(learn), learned.get_or_learn(learn));
        assert_eq!((*a.unwrap(), *b.unwrap(), calls.load(Ordering::SeqCst)), (7, 7, 1));

        let failing: Learned<u32> = Learned::default();
        assert!(failing.get_or_learn(|| async { Err::<u32, ()>(()) }).await.is_err());
        assert_eq!(*failing.get_or_learn(|| async { Ok::<u32, ()>(3) }).await.unwrap(), 3);
        failing.forget();
        assert_eq!(*failing.get_or_learn(|| async { Ok::<u32, ()>(4) }).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_key_being_made_holds_back_only_callers_for_that_key() {
        let once: OncePerKey<&str, u32> = OncePerKey::default();
        // "plan" is made only once "tier" is: were "tier" held back by "plan", neither would finish.
        let tier_made = Notify::new();
        let slow = || async {
            tier_made.notified().await;
            Ok::<u32, ()>(1)
        };
        let other = async {
            let answer = once.get_or_make("tier", || async { Ok::<u32, ()>(2) }).await;
            tier_made.notify_one();
            answer
        };
        let both = async { tokio::join!(once.get_or_make("plan", slow), other) };
        let answers = tokio::time::timeout(Duration::from_secs(10), both).await;
        assert_eq!(answers.expect("another key does not wait for the one being made"), (Ok(1), Ok(2)));
        assert_eq!(once.get_or_make("plan", || async { Ok::<u32, ()>(9) }).await, Ok(1), "made once");
    }
}
