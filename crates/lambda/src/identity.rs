//! The identity store: which Intercom contact (or company) the relay made or found for a person's key, and what it
//! last wrote there, shared by every forwarder and kept across cold starts. A contact is found without Intercom's
//! search (minutes behind new contacts) and is never made twice: a forwarder claims a key before it creates the
//! contact, and one that loses the claim uses the winner's contact instead of making another. A write that would set
//! exactly what was last written is not sent.
//!
//! Keys are hashed as the suppression list's are (`crate::suppression::key_of`): a user by their userId, a lead (or a
//! user's address) by email, a visitor by anonymousId, a company by its company_id; values last written are held as
//! digests. Nobody's id, address or traits are held in the clear. The store speeds things up and breaks races; it never
//! gates delivery: when it fails, the forwarder goes on as it would without it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::intercom::ContactId;
use crate::mapping::ContactKey;
use crate::suppression::{digest, key_of, now_s};

/// How long an entry lives without being written again (DynamoDB's TTL deletes it some time after; an expired entry
/// is treated as absent until then).
pub(crate) const ENTRY_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// The store's key of a contact key (the suppression list's hashing).
pub fn contact_key(contact: &ContactKey) -> String {
    key_of(contact)
}

/// The store's key of a visitor, by the anonymousId their lead carries.
pub fn visitor_key(anonymous_id: &str) -> String {
    digest("anonymous_id:", anonymous_id.trim())
}

/// The store's key of a company, by the app's company_id.
pub(crate) fn company_key(company_id: &str) -> String {
    digest("company_id:", company_id.trim())
}

/// The key of the list of a contact's own keys, by Intercom's id: an erasure finds every key that named it there.
pub(crate) fn own_keys_key(id: &ContactId) -> String {
    digest("contact:", id.as_str())
}

/// What Intercom made for a key: a contact (or, under a company's key, the company's Intercom id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub id: ContactId,
    /// A lead: a user's `role` is `user`.
    pub is_lead: bool,
}

/// What the relay last wrote to a contact or company and Intercom confirmed: each field's digest, never its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// When every field was written together last (seconds since the epoch): after `IDENTITY_REFRESH`, all again.
    #[serde(rename = "at")]
    pub refreshed_at: u64,
    /// Field (`a:name` for Intercom's own, `c:plan` for a custom attribute) to the digest of its value.
    #[serde(rename = "f", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// The `last_seen_at` last written (seconds): moved by less than `LAST_SEEN_RESOLUTION`, it is no change.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<i64>,
    /// Digests of the company_ids the contact was attached to.
    #[serde(rename = "c", default, skip_serializing_if = "BTreeSet::is_empty")]
    pub companies: BTreeSet<String>,
}

impl Written {
    /// Whether it is recent enough to go by at `now`: older than `refresh`, everything is written again.
    pub(crate) fn is_fresh(&self, refresh: Duration, now: u64) -> bool {
        self.refreshed_at > 0 && now < self.refreshed_at.saturating_add(refresh.as_secs())
    }

    /// The digest a company_id is held as among the contact's companies.
    pub fn company_digest(company_id: &str) -> String {
        company_key(company_id)[..32].to_owned()
    }
}

/// What the store holds for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub known: Known,
    /// What was last written through this key (only through a contact's own key: see `primary`).
    pub written: Written,
    /// For another name of a contact (a user's address): the key of the contact's own one (their userId), which holds
    /// what was written; a write through this key makes that unknown.
    pub primary: Option<String>,
    /// When the key was first held for the contact (seconds since the epoch).
    pub made_at: u64,
}

impl Stored {
    /// `known` held from now, with nothing written yet.
    pub fn new(known: Known) -> Stored {
        Stored { known, written: Written::default(), primary: None, made_at: now_s() }
    }
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
    pub(crate) store: String,
    pub(crate) doing: &'static str,
    pub(crate) reason: String,
    #[source]
    pub(crate) source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Where the relay remembers whom it made in Intercom and what it wrote there.
pub trait IdentityStore: Send + Sync {
    /// Which store, for messages.
    fn name(&self) -> String;

    /// What is held for `key`, unless it expired.
    fn find<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Stored>, IdentityError>>;

    /// What is held for each of `keys` read (`None`: nothing), with one batched read per hundred keys; a key the store
    /// left unread (throttled) is not in the answer, to be read on its own when needed.
    fn find_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, Option<Stored>>, IdentityError>>;

    /// Claims `key` for `lease` before making its contact: won, or whom it is held for, or pending.
    fn claim<'a>(&'a self, key: &'a str, lease: Duration) -> BoxFuture<'a, Result<Claim, IdentityError>>;

    /// Holds `known` for each of `keys` (after Intercom confirmed it), with nothing written yet, and adds the keys to
    /// the contact's own list; the first key is the contact's own, the others name it as their `primary`.
    fn record<'a>(&'a self, keys: &'a [String], known: &'a Known) -> BoxFuture<'a, Result<(), IdentityError>>;

    /// Holds `known` for `key` unless something is held there already: `None` when this took it, else what is held.
    /// Two forwarders each holding a different contact for one visitor thereby learn of each other.
    fn record_if_absent<'a>(
        &'a self,
        key: &'a str,
        known: &'a Known,
    ) -> BoxFuture<'a, Result<Option<Known>, IdentityError>>;

    /// Holds `stored` for `key` (the contact and what was last written to it), never over another contact's entry: with
    /// `prior`, only if what is held as written is still `prior` (nothing held counts as nothing written); without,
    /// only over an entry of the same contact (never bringing back a key forgotten meanwhile). `false` when refused.
    fn write_down<'a>(
        &'a self,
        key: &'a str,
        stored: &'a Stored,
        prior: Option<&'a Written>,
    ) -> BoxFuture<'a, Result<bool, IdentityError>>;

    /// Forgets `keys` (a contact gone).
    fn forget<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), IdentityError>>;

    /// Forgets every key that named the contact, and its list of them (an erasure).
    fn forget_contact<'a>(&'a self, id: &'a ContactId) -> BoxFuture<'a, Result<(), IdentityError>>;
}

/// One key's entry: a contact made (and what was written to it), a claim until a time (seconds since the epoch), or a
/// contact's own keys.
#[derive(Clone, Debug)]
enum Entry {
    Made { stored: Stored, expires_at: u64 },
    Claimed { until: u64 },
    Keys(BTreeSet<String>),
}

/// The store in memory: `replay`, `serve` and tests; one process's forwarders share it.
#[derive(Default)]
pub struct MemoryIdentities {
    entries: Mutex<HashMap<String, Entry>>,
    usage: Mutex<StoreUsage>,
}

/// What a run asked of the store, in DynamoDB's billing units (every item is under 1 KB): what the table would cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreUsage {
    /// Keys read (a strongly consistent read unit each), in `reads` requests (a batch's read is one).
    pub(crate) read_units: u64,
    pub(crate) reads: u64,
    /// Items put, updated or deleted (a write unit each).
    pub(crate) write_units: u64,
}

impl MemoryIdentities {
    pub fn new() -> MemoryIdentities {
        MemoryIdentities::default()
    }

    #[cfg(test)]
    /// How many keys it holds a contact or company for.
    pub(crate) fn len(&self) -> usize {
        self.with(|entries| entries.values().filter(|e| matches!(e, Entry::Made { .. })).count())
    }

    /// Whether it holds nothing at all: no contact, claim or list of keys.
    pub fn is_empty(&self) -> bool {
        self.with(|entries| entries.is_empty())
    }

    /// What was asked of it so far.
    pub fn usage(&self) -> StoreUsage {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, read_units: usize, write_units: usize) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.reads += u64::from(read_units > 0);
        usage.read_units += read_units as u64;
        usage.write_units += write_units as u64;
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn held(entries: &HashMap<String, Entry>, key: &str, now: u64) -> Option<Stored> {
        match entries.get(key) {
            Some(Entry::Made { stored, expires_at }) if *expires_at > now => Some(stored.clone()),
            _ => None,
        }
    }

    fn put(entries: &mut HashMap<String, Entry>, key: &str, stored: Stored) {
        let expires_at = now_s() + ENTRY_LIFETIME.as_secs();
        let own = own_keys_key(&stored.known.id);
        entries.insert(key.to_owned(), Entry::Made { stored, expires_at });
        match entries.entry(own).or_insert_with(|| Entry::Keys(BTreeSet::new())) {
            Entry::Keys(keys) => _ = keys.insert(key.to_owned()),
            other => *other = Entry::Keys([key.to_owned()].into()),
        }
    }
}

impl IdentityStore for MemoryIdentities {
    fn name(&self) -> String {
        "in memory".into()
    }

    fn find<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Stored>, IdentityError>> {
        self.count(1, 0);
        let found = self.with(|entries| Self::held(entries, key, now_s()));
        Box::pin(async move { Ok(found) })
    }

    fn find_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, Option<Stored>>, IdentityError>> {
        self.count(keys.len(), 0);
        let now = now_s();
        let found = self.with(|entries| keys.iter().map(|key| (key.clone(), Self::held(entries, key, now))).collect());
        Box::pin(async move { Ok(found) })
    }

    fn claim<'a>(&'a self, key: &'a str, lease: Duration) -> BoxFuture<'a, Result<Claim, IdentityError>> {
        self.count(0, 1);
        let now = now_s();
        let claim = self.with(|entries| match entries.get(key) {
            Some(Entry::Made { stored, expires_at }) if *expires_at > now => Claim::Held(stored.known.clone()),
            Some(Entry::Claimed { until }) if *until > now => Claim::Pending,
            _ => {
                entries.insert(key.to_owned(), Entry::Claimed { until: now + lease.as_secs().max(1) });
                Claim::Won
            }
        });
        Box::pin(async move { Ok(claim) })
    }

    fn record<'a>(&'a self, keys: &'a [String], known: &'a Known) -> BoxFuture<'a, Result<(), IdentityError>> {
        // Each key's item, and the contact's list of its keys.
        self.count(0, keys.len() + 1);
        self.with(|entries| {
            for (n, key) in keys.iter().enumerate() {
                let primary = (n > 0).then(|| keys[0].clone());
                Self::put(entries, key, Stored { primary, ..Stored::new(known.clone()) });
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn record_if_absent<'a>(
        &'a self,
        key: &'a str,
        known: &'a Known,
    ) -> BoxFuture<'a, Result<Option<Known>, IdentityError>> {
        self.count(0, 2);
        let held = self.with(|entries| match Self::held(entries, key, now_s()) {
            Some(stored) => Some(stored.known),
            None => {
                Self::put(entries, key, Stored::new(known.clone()));
                None
            }
        });
        Box::pin(async move { Ok(held) })
    }

    fn write_down<'a>(
        &'a self,
        key: &'a str,
        stored: &'a Stored,
        prior: Option<&'a Written>,
    ) -> BoxFuture<'a, Result<bool, IdentityError>> {
        self.count(0, 1);
        let written = self.with(|entries| {
            let held = Self::held(entries, key, now_s());
            let same = held.as_ref().map(|held| held.known.id == stored.known.id);
            let unchanged = match prior {
                Some(prior) => *prior == held.map(|held| held.written).unwrap_or_default() && same != Some(false),
                None => same == Some(true),
            };
            if unchanged {
                Self::put(entries, key, stored.clone());
            }
            unchanged
        });
        Box::pin(async move { Ok(written) })
    }

    fn forget<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), IdentityError>> {
        self.count(0, keys.len());
        self.with(|entries| keys.iter().for_each(|key| _ = entries.remove(key)));
        Box::pin(async { Ok(()) })
    }

    fn forget_contact<'a>(&'a self, id: &'a ContactId) -> BoxFuture<'a, Result<(), IdentityError>> {
        let deleted = self.with(|entries| match entries.remove(&own_keys_key(id)) {
            Some(Entry::Keys(keys)) => keys.iter().filter(|key| entries.remove(*key).is_some()).count() + 1,
            _ => 0,
        });
        self.count(1, deleted);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(id: &str, is_lead: bool) -> Known {
        Known { id: ContactId::new(id), is_lead }
    }

    /// Whom the store holds for `key`.
    async fn found(store: &MemoryIdentities, key: &str) -> Option<Known> {
        store.find(key).await.unwrap().map(|stored| stored.known)
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
        assert_eq!(found(&store, &key).await, Some(known("c-1", true)));
        store.forget(std::slice::from_ref(&key)).await.unwrap();
        assert_eq!(store.find(&key).await.unwrap(), None);
        assert_eq!(store.len(), 0);
    }

    #[tokio::test]
    async fn record_if_absent_takes_a_free_key_and_names_the_contact_a_held_one_holds() {
        let store = MemoryIdentities::new();
        let key = visitor_key("anon-1");
        assert_eq!(store.record_if_absent(&key, &known("user-1", false)).await.unwrap(), None);
        assert_eq!(store.record_if_absent(&key, &known("lead-1", true)).await.unwrap(), Some(known("user-1", false)));
        assert_eq!(found(&store, &key).await, Some(known("user-1", false)), "the first stays");
    }

    #[tokio::test]
    async fn forgetting_a_contact_forgets_every_key_that_named_it_and_what_was_written() {
        let store = MemoryIdentities::new();
        let (user, old_address) = (contact_key(&ContactKey::ExternalId("ada".into())), visitor_key("anon-1"));
        let other = contact_key(&ContactKey::ExternalId("bob".into()));
        store.record(&[user.clone(), old_address.clone()], &known("c-1", false)).await.unwrap();
        store.record(std::slice::from_ref(&other), &known("c-2", false)).await.unwrap();
        let written = Written { refreshed_at: 5, fields: [("a:name".into(), "d".into())].into(), ..Written::default() };
        let stored = Stored { written: written.clone(), ..Stored::new(known("c-1", false)) };
        assert!(store.write_down(&user, &stored, Some(&Written::default())).await.unwrap());
        assert_eq!(store.find(&user).await.unwrap().unwrap().written, written);
        assert_eq!(store.find(&old_address).await.unwrap().unwrap().primary, Some(user.clone()), "the user's own key");
        let meanwhile = Stored { written: Written::default(), ..stored.clone() };
        assert!(!store.write_down(&user, &meanwhile, Some(&Written::default())).await.unwrap(), "written since");
        assert_eq!(store.find(&user).await.unwrap().unwrap().written, written, "left as the other forwarder wrote it");
        store.forget_contact(&ContactId::new("c-1")).await.unwrap();
        let left = store.find_many(&[user, old_address, other.clone()]).await.unwrap();
        let held: Vec<String> = left.into_iter().filter_map(|(key, held)| held.map(|_| key)).collect();
        assert_eq!(held, [other], "only the other contact's key is left");
    }

    #[test]
    fn what_was_written_goes_by_until_the_refresh() {
        let written = Written { refreshed_at: 1_000, ..Written::default() };
        let day = Duration::from_secs(86_400);
        assert!(written.is_fresh(day, 1_000 + 86_399) && !written.is_fresh(day, 1_000 + 86_400));
        assert!(!written.is_fresh(Duration::ZERO, 1_000), "a refresh of 0 writes every time");
        assert!(!Written::default().is_fresh(day, 1), "nothing written yet");
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
