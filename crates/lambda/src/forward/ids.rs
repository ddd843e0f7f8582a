//! Intercom's ids by our keys, remembered by a warm function across invocations: what spares a lookup (and the search
//! index's lag) for a person met before.

use std::borrow::Borrow;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use crate::intercom::{CompanyId, ContactId};
use crate::mapping::ContactKey;

/// Intercom's ids by a key of ours, in an LRU shared by every invocation of a warm function. A poisoned lock (a panic
/// elsewhere) only costs lookups: the cache is an optimisation.
pub(super) struct Ids<K: Hash + Eq, V>(Mutex<LruCache<K, V>>);

impl<K: Hash + Eq, V: Clone> Ids<K, V> {
    fn new(size: NonZeroUsize) -> Ids<K, V> {
        Ids(Mutex::new(LruCache::new(size)))
    }

    pub(super) fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.0.lock().ok()?.get(key).cloned()
    }

    pub(super) fn put(&self, key: K, id: &V) {
        if let Ok(mut cache) = self.0.lock() {
            cache.put(key, id.clone());
        }
    }

    pub(super) fn forget<Q: Hash + Eq + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        if let Ok(mut cache) = self.0.lock() {
            cache.pop(key);
        }
    }
}

/// Every id a warm function remembers.
pub(super) struct KnownIds {
    /// Users by external_id, leads by email.
    pub(super) contacts: Ids<ContactKey, ContactId>,
    /// Visitors' leads by anonymousId: leads carry no external_id, so this (and the lead's `anonymous_id` attribute,
    /// behind the search index's lag) is how an alias or an identify finds them.
    pub(super) visitors: Ids<String, ContactId>,
    /// Visitors whose lead this forwarder merged into a user, by anonymousId: the user's id. Browser SDKs send each
    /// event in its own request, so an identify naming the user and the visitor can land before the alias of the same
    /// two, which then finds the lead gone: the alias is done, not skipped.
    pub(super) merged_visitors: Ids<String, ContactId>,
    /// Intercom's company ids by company_id.
    pub(super) companies: Ids<String, CompanyId>,
}

impl KnownIds {
    pub(super) fn new(size: NonZeroUsize) -> KnownIds {
        KnownIds {
            contacts: Ids::new(size),
            visitors: Ids::new(size),
            merged_visitors: Ids::new(size),
            companies: Ids::new(size),
        }
    }
}
