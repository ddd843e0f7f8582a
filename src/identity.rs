//! The identity store: which Intercom contact the relay made or found for a person's key, shared by every forwarder
//! and kept across cold starts, so that a contact is found without Intercom's search (minutes behind new contacts) and
//! is never made twice: a forwarder claims a key before it creates the contact, and one that loses the claim uses the
//! winner's contact instead of making another.
//!
//! Keys are hashed as the suppression list's are (`crate::suppression::key_of`): a user by their userId, a lead (or a
//! user's address) by email, a visitor by anonymousId; nobody's id or address is held in the clear. The store speeds
//! things up and breaks races; it never gates delivery: when it fails, the forwarder goes on as it would without it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::intercom::ContactId;
use crate::mapping::ContactKey;
use crate::suppression::{digest, key_of, now_s};

/// How long an entry lives without being written again (DynamoDB's TTL deletes it some time after; an expired entry
/// is treated as absent until then).
pub const ENTRY_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// The store's key of a contact key (the suppression list's hashing).
pub fn contact_key(contact: &ContactKey) -> String {
    key_of(contact)
}

/// The store's key of a visitor, by the anonymousId their lead carries.
pub fn visitor_key(anonymous_id: &str) -> String {
    digest("anonymous_id:", anonymous_id.trim())
}

/// What Intercom made for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub id: ContactId,
    /// A lead: a user's `role` is `user`.
    pub is_lead: bool,
}

/// The answer to a claim on a key before making its contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This forwarder may make the contact (nobody held the key, or a claimant's lease ran out).
    Won,
    /// The contact exists: use it.
    Held(Known),
    /// Another forwarder is making it now: wait briefly for its id.
    Pending,
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the identity store ({store}) {doing}: {reason}")]
pub struct IdentityError {
    /// Which store: `DynamoDB table NAME`.
    pub store: String,
    pub doing: &'static str,
    pub reason: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Where the relay remembers whom it made in Intercom.
pub trait IdentityStore: Send + Sync {
    /// Which store, for messages.
    fn name(&self) -> String;

    /// The contact held for `key`, unless it expired.
    fn find<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Known>, IdentityError>>;

    /// Claims `key` for `lease` before making its contact: won, or whom it is held for, or pending.
    fn claim<'a>(&'a self, key: &'a str, lease: Duration) -> BoxFuture<'a, Result<Claim, IdentityError>>;

    /// Holds `known` for each of `keys` (after Intercom confirmed it).
    fn record<'a>(&'a self, keys: &'a [String], known: &'a Known) -> BoxFuture<'a, Result<(), IdentityError>>;

    /// Forgets `keys` (a contact gone, an erasure).
    fn forget<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), IdentityError>>;
}

/// One key's entry: a contact made, or a claim until a time (seconds since the epoch).
#[derive(Clone, Debug)]
enum Entry {
    Made { known: Known, expires_at: u64 },
    Claimed { until: u64 },
}

/// The store in memory: `replay`, `serve` and tests; one process's forwarders share it.
#[derive(Default)]
pub struct MemoryIdentities {
    entries: Mutex<HashMap<String, Entry>>,
}

impl MemoryIdentities {
    pub fn new() -> MemoryIdentities {
        MemoryIdentities::default()
    }

    /// How many keys it holds a contact for.
    pub fn len(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values().filter(|e| matches!(e, Entry::Made { .. })).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl IdentityStore for MemoryIdentities {
    fn name(&self) -> String {
        "in memory".into()
    }

    fn find<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Known>, IdentityError>> {
        let found = self.with(|entries| match entries.get(key) {
            Some(Entry::Made { known, expires_at }) if *expires_at > now_s() => Some(known.clone()),
            _ => None,
        });
        Box::pin(async move { Ok(found) })
    }

    fn claim<'a>(&'a self, key: &'a str, lease: Duration) -> BoxFuture<'a, Result<Claim, IdentityError>> {
        let now = now_s();
        let claim = self.with(|entries| match entries.get(key) {
            Some(Entry::Made { known, expires_at }) if *expires_at > now => Claim::Held(known.clone()),
            Some(Entry::Claimed { until }) if *until > now => Claim::Pending,
            _ => {
                entries.insert(key.to_owned(), Entry::Claimed { until: now + lease.as_secs().max(1) });
                Claim::Won
            }
        });
        Box::pin(async move { Ok(claim) })
    }

    fn record<'a>(&'a self, keys: &'a [String], known: &'a Known) -> BoxFuture<'a, Result<(), IdentityError>> {
        let expires_at = now_s() + ENTRY_LIFETIME.as_secs();
        self.with(|entries| {
            for key in keys {
                entries.insert(key.clone(), Entry::Made { known: known.clone(), expires_at });
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn forget<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), IdentityError>> {
        self.with(|entries| keys.iter().for_each(|key| _ = entries.remove(key)));
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(id: &str, is_lead: bool) -> Known {
        Known { id: ContactId::new(id), is_lead }
    }

    #[tokio::test]
    async fn a_claim_is_won_once_then_pending_then_held_once_recorded() {
        let store = MemoryIdentities::new();
        let key = contact_key(&ContactKey::Email("ada@example.com".into()));
        assert_eq!(store.claim(&key, Duration::from_secs(30)).await.unwrap(), Claim::Won);
        assert_eq!(store.claim(&key, Duration::from_secs(30)).await.unwrap(), Claim::Pending);
        assert_eq!(store.find(&key).await.unwrap(), None, "a claim is no contact");
        store.record(std::slice::from_ref(&key), &known("c-1", true)).await.unwrap();
        assert_eq!(store.claim(&key, Duration::from_secs(30)).await.unwrap(), Claim::Held(known("c-1", true)));
        assert_eq!(store.find(&key).await.unwrap(), Some(known("c-1", true)));
        store.forget(std::slice::from_ref(&key)).await.unwrap();
        assert_eq!(store.find(&key).await.unwrap(), None);
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn a_claim_whose_lease_ran_out_is_taken_over() {
        let store = MemoryIdentities::new();
        let key = visitor_key("anon-1");
        store.with(|entries| entries.insert(key.clone(), Entry::Claimed { until: now_s().saturating_sub(1) }));
        assert_eq!(store.claim(&key, Duration::from_secs(30)).await.unwrap(), Claim::Won);
    }

    #[test]
    fn keys_hold_no_id_in_the_clear_and_differ_by_kind() {
        let user = contact_key(&ContactKey::ExternalId("ada".into()));
        let email = contact_key(&ContactKey::Email("ada".into()));
        let visitor = visitor_key("ada");
        assert!(!user.contains("ada") && user.len() == 64);
        assert!(user != email && email != visitor && user != visitor);
        assert_eq!(email, contact_key(&ContactKey::Email(" ADA ".into())), "addresses compare ignoring case");
    }
}
