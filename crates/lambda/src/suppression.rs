//! The suppression list: the people an operator erased, so that events about them arriving later are not forwarded
//! (an identify would make the contact again). Kept in a DynamoDB table of the stack's (`SUPPRESSION_TABLE`), never in
//! the environment: a person's id is personal data.
//!
//! The table holds no id in the clear: each entry's key is the SHA-256 of what named the person (`user_id:<userId>`,
//! `email:<address, lowercased>`), in hex. Whoever holds a userId or an address can tell whether it was erased, which is
//! what the list is for; nobody can read one out of it. Each entry also holds when and by which request.
//!
//! The forwarder reads the list once per batch (the batch's people) and, for an erasure, adds the request's ids and the
//! ids and addresses of the contacts it found before deleting any. A batch whose list
//! cannot be read is not forwarded: its events wait and are tried again, as when Intercom fails.
//!
//! Here: the keys, the [`SuppressionList`] the forwarder holds, and [`MemorySuppression`] for tests and local runs; the
//! DynamoDB table is `crate::aws::DynamoSuppression`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::mapping::ContactKey;

/// The key of a person named by their userId.
pub fn user_key(user_id: &str) -> String {
    digest("user_id:", user_id.trim())
}

/// The key of a person named by their email (compared as Intercom does, ignoring case).
pub fn email_key(email: &str) -> String {
    digest("email:", &email.trim().to_lowercase())
}

pub(crate) fn digest(kind: &str, value: &str) -> String {
    crate::hex(&Sha256::new().chain_update(kind).chain_update(value).finalize())
}

/// The key of a contact a plan names: a user by their userId (their external_id), a lead by their address. An event
/// is matched by the contacts it would write to, as the mapper names them: a user's events by their userId alone (not
/// by an address they carry, which another user may share), a lead's by the address.
pub(crate) fn key_of(contact: &ContactKey) -> String {
    match contact {
        ContactKey::ExternalId(id) => user_key(id),
        ContactKey::Email(email) => email_key(email),
    }
}

/// Why the list could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the suppression list ({list}) {doing}: {reason}")]
pub struct SuppressionError {
    /// Which list: `DynamoDB table NAME`.
    pub(crate) list: String,
    /// `cannot be read`, `cannot be written`, `cannot be reached`.
    pub(crate) doing: &'static str,
    /// What went wrong, on one line.
    pub(crate) reason: String,
    /// Whether trying again may help (throttling, the store's own failures, no answer).
    pub(crate) retryable: bool,
    /// The store's own error, when there is one.
    #[source]
    pub(crate) source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Where the people erased are kept: read once per batch, added to before anyone is deleted.
pub trait SuppressionList: Send + Sync {
    /// Which list, for messages (`DynamoDB table NAME`).
    fn name(&self) -> String;

    /// Those of `keys` the list holds.
    fn held<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<HashSet<String>, SuppressionError>>;

    /// Adds `keys`, erased by `request_id`; a key already there is left as it was (its first erasure's time).
    fn add<'a>(&'a self, keys: &'a [String], request_id: &'a str) -> BoxFuture<'a, Result<(), SuppressionError>>;

    /// The error of a call cut off by the invocation's time.
    fn too_slow(&self, doing: &'static str) -> SuppressionError {
        let reason = "no answer in the time the invocation had left".to_owned();
        SuppressionError { list: self.name(), doing, reason, retryable: true, source: None }
    }
}

/// Seconds since the epoch: an entry's `erased_at`.
pub(crate) fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A list in memory, for tests and local runs: each key with its `erased_at` and `request_id`.
#[derive(Debug, Default)]
pub struct MemorySuppression {
    entries: Mutex<HashMap<String, (u64, String)>>,
}

impl MemorySuppression {
    pub fn new() -> MemorySuppression {
        MemorySuppression::default()
    }

    /// Every entry, as (key, request_id), sorted.
    pub fn entries(&self) -> Vec<(String, String)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries: Vec<(String, String)> = entries.iter().map(|(k, (_, r))| (k.clone(), r.clone())).collect();
        entries.sort();
        entries
    }
}

impl SuppressionList for MemorySuppression {
    fn name(&self) -> String {
        "in memory".into()
    }

    fn held<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<HashSet<String>, SuppressionError>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let held = keys.iter().filter(|key| entries.contains_key(*key)).cloned().collect();
        Box::pin(std::future::ready(Ok(held)))
    }

    fn add<'a>(&'a self, keys: &'a [String], request_id: &'a str) -> BoxFuture<'a, Result<(), SuppressionError>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            entries.entry(key.clone()).or_insert_with(|| (now_s(), request_id.to_owned()));
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{Value, json};

    fn contacts(value: Value) -> Vec<String> {
        use crate::event::{BatchDefaults, RawEvent, parse_event, parse_timestamp};
        let text = value.to_string();
        let received = parse_timestamp("2024-05-01T12:00:00Z").unwrap();
        let event = parse_event(&RawEvent::parse(&text).unwrap(), None, &BatchDefaults::default(), received).unwrap();
        let plan = crate::mapping::map_event(&event).unwrap();
        let mut keys: Vec<String> = plan.contacts().map(key_of).collect();
        keys.dedup();
        keys
    }

    #[test]
    fn an_event_is_matched_by_the_contacts_its_plan_names() {
        // `printf 'user_id:u-1' | sha256sum`, `printf 'email:ada@example.com' | sha256sum`
        assert_eq!(user_key(" u-1"), "a8ae9346b4f3e606434b5bf77a2ba2ea81313df4283d69d85bcef9e93a78a4f8");
        assert_eq!(email_key("ADA@example.com"), "9b62a3a2bce7c868f30d60f0818e84d225bceb56f6c2dccaa4ac388af5fd8f7f");
        // A user by their userId, not by the address they carry.
        let identify = json!({"type": "identify", "userId": "u-1", "messageId": "m",
            "traits": {"email": "ada@example.com", "company": {"id": "c-1"}}});
        assert_eq!(contacts(identify), [user_key("u-1")]);
        // A lead by the address the mapper finds: a track's properties.email, or context.traits.email.
        let track = json!({"type": "track", "anonymousId": "a-1", "event": "E", "messageId": "m",
            "properties": {"email": "Ada@Example.com"}});
        assert_eq!(contacts(track), [email_key("ada@example.com")]);
        let page = json!({"type": "page", "anonymousId": "a-1", "messageId": "m",
            "context": {"traits": {"email": "lead@example.com"}}});
        assert_eq!(contacts(page), [email_key("lead@example.com")]);
        // A group names its contact, not the company's address.
        let group = json!({"type": "group", "userId": "u-2", "groupId": "c-1", "messageId": "m",
            "traits": {"email": "billing@example.com"}});
        assert_eq!(contacts(group), [user_key("u-2")]);
        // An alias names both people.
        let alias = json!({"type": "alias", "userId": "u-3", "previousId": "u-old", "messageId": "m"});
        assert_eq!(contacts(alias), [user_key("u-old"), user_key("u-3")]);
    }

    #[tokio::test]
    async fn the_list_in_memory_holds_what_was_added_first() {
        let list = MemorySuppression::new();
        let keys = [user_key("u-1"), email_key("ada@example.com")];
        list.add(&keys, "r-1").await.unwrap();
        list.add(&keys[..1], "r-2").await.unwrap();
        let asked = [user_key("u-1"), user_key("u-2")];
        assert_eq!(list.held(&asked).await.unwrap(), HashSet::from([user_key("u-1")]));
        assert!(list.entries().iter().all(|(_, request)| request == "r-1"), "the first erasure's");
        assert!(list.too_slow("cannot be read").retryable);
    }
}
