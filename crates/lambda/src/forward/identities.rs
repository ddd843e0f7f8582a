//! The identity store as the forwarder uses it: read once per batch for every key its events name, before any lookup
//! or search; claimed before a lead is made; written once Intercom confirmed a contact or a write. Every call is
//! allowed to fail: the forwarder then goes on as it would without a store (search, create, 409, write everything),
//! with a WARN, and nothing waits on it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::executor::{Executor, Run};
use crate::identity::{
    Claim, IdentityError, IdentityStore, Known, Stored, Written, company_key, contact_key, visitor_key,
};
use crate::intercom::{CompanyId, ContactId, IntercomApi};
use crate::mapping::{ANONYMOUS_ID_ATTRIBUTE, ContactKey, Operation, Plan};
use crate::suppression::now_s;

/// A claim's lease: a forwarder that claimed a key and died is taken over after this.
const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// How long a forwarder that lost a claim waits for the winner's contact, asking this often.
const PENDING_WAIT: Duration = Duration::from_secs(3);
const PENDING_POLL: Duration = Duration::from_millis(200);

/// How long the store is left alone after it failed: a slow or failing store would otherwise cost every event its
/// tries (each up to the client's timeout, and the SDK's retries).
const STORE_REST: Duration = Duration::from_secs(30);

/// Keys tracked at most as possibly stale: past it, the set starts again (the refresh bounds what that costs).
const UNSURE_KEYS: usize = 10_000;

/// What a warm forwarder knows of the store's health: resting after a failure, and the keys whose last write to
/// Intercom the store may not hold (its write-down failed, or the store was resting): what it says was written there
/// is not gone by until a write-down succeeds again.
#[derive(Default)]
pub(crate) struct StoreHealth {
    resting_until: Mutex<Option<Instant>>,
    unsure: Mutex<std::collections::HashSet<String>>,
}

impl StoreHealth {
    pub(super) fn resting(&self) -> bool {
        lock(&self.resting_until).is_some_and(|until| Instant::now() < until)
    }

    fn rest(&self) {
        *lock(&self.resting_until) = Some(Instant::now() + STORE_REST);
    }

    pub(super) fn is_unsure(&self, key: &str) -> bool {
        lock(&self.unsure).contains(key)
    }

    fn unsure(&self, key: &str, unsure: bool) {
        let mut keys = lock(&self.unsure);
        if !unsure {
            keys.remove(key);
        } else {
            if keys.len() >= UNSURE_KEYS {
                keys.clear();
            }
            keys.insert(key.to_owned());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the store held for a batch's keys, read in one go before its records and kept up to date as they write: a
/// key read (held or not) is not asked again within the batch. Other forwarders' writes meanwhile are met by the
/// claims and conditional writes, which go to the store itself. Once the store failed, the batch goes on without it.
#[derive(Default)]
pub(crate) struct StoreView {
    held: Mutex<HashMap<String, Option<Stored>>>,
    down: std::sync::atomic::AtomicBool,
}

impl StoreView {
    fn get(&self, key: &str) -> Option<Option<Stored>> {
        lock(&self.held).get(key).cloned()
    }

    fn set(&self, key: &str, stored: Option<Stored>) {
        lock(&self.held).insert(key.to_owned(), stored);
    }

    /// Not known any more: read again when asked.
    fn unknown(&self, key: &str) {
        lock(&self.held).remove(key);
    }

    fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Every store key a plan may read: its contacts, the visitors it names, its companies.
fn plan_keys(plan: &Plan, keys: &mut BTreeSet<String>) {
    keys.extend(plan.contacts().map(contact_key));
    for operation in &plan.operations {
        match operation {
            Operation::UpsertContact(upsert) => {
                let anonymous_id = upsert.custom_attributes.get(ANONYMOUS_ID_ATTRIBUTE).and_then(|a| a.as_str());
                keys.extend(anonymous_id.map(visitor_key));
            }
            Operation::Merge { from: ContactKey::ExternalId(previous), .. } => _ = keys.insert(visitor_key(previous)),
            Operation::MergeVisitor { anonymous_id, .. } => _ = keys.insert(visitor_key(anonymous_id)),
            Operation::UpsertCompany(company) => _ = keys.insert(company_key(&company.company_id)),
            Operation::AttachCompany { company_id, .. } | Operation::DetachCompany { company_id, .. } => {
                keys.insert(company_key(company_id));
            }
            _ => {}
        }
    }
}

impl<A> Executor<A> {
    /// The batch's view of the store: every key `plans` name read with one batched read, given up at `until` (none
    /// without a store; all left to be read one by one when it fails).
    pub(super) async fn read_ahead(&self, plans: impl Iterator<Item = Plan>, until: Instant) -> StoreView {
        let view = StoreView::default();
        let Some(store) = self.identities.as_ref().filter(|_| !self.store_health.resting()) else {
            view.down.store(self.identities.is_some(), std::sync::atomic::Ordering::Relaxed);
            return view;
        };
        let mut keys = BTreeSet::new();
        plans.for_each(|plan| plan_keys(&plan, &mut keys));
        if keys.is_empty() {
            return view;
        }
        let keys: Vec<String> = keys.into_iter().collect();
        let failed = match tokio::time::timeout_at(until, store.find_many(&keys)).await {
            Ok(Ok(held)) => {
                held.into_iter().for_each(|(key, stored)| view.set(&key, stored));
                return view;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "it did not answer the batch's read in time".to_owned(),
        };
        warn!(error = %failed, rest_s = STORE_REST.as_secs(), "The identity store failed; going on without it.");
        self.store_health.rest();
        view.down.store(true, std::sync::atomic::Ordering::Relaxed);
        view
    }
}

impl<A: IntercomApi> Run<'_, A> {
    /// The store, unless there is none or it failed (for this batch, or resting after a failure).
    fn store(&self) -> Option<&Arc<dyn IdentityStore>> {
        let health = &self.executor.store_health;
        self.executor.identities.as_ref().filter(|_| !self.view.is_down() && !health.resting())
    }

    /// The store failed: the batch goes on without it, and the forwarder leaves it alone for a while.
    fn store_failed(&self, error: IdentityError) {
        warn!(%error, rest_s = STORE_REST.as_secs(), "The identity store failed; going on without it.");
        self.view.down.store(true, std::sync::atomic::Ordering::Relaxed);
        self.executor.store_health.rest();
    }

    /// What the store holds for the hashed `key`: from the batch's view, else read (and kept in it).
    pub(super) async fn entry(&self, key: &str) -> Option<Stored> {
        let store = self.store()?;
        if let Some(held) = self.view.get(key) {
            return held;
        }
        match store.find(key).await {
            Ok(found) => {
                self.view.set(key, found.clone());
                found
            }
            Err(error) => {
                self.store_failed(error);
                None
            }
        }
    }

    /// The contact the store holds for `key`.
    pub(super) async fn stored(&self, key: &ContactKey) -> Option<Known> {
        self.entry(&contact_key(key)).await.map(|stored| stored.known)
    }

    /// The contact the store holds for a visitor: their lead, or the user it was merged into.
    pub(super) async fn stored_visitor(&self, anonymous_id: &str) -> Option<Known> {
        self.entry(&visitor_key(anonymous_id)).await.map(|stored| stored.known)
    }

    /// The company's Intercom id, and what the store holds for it. (The store holds any Intercom id as a contact's.)
    pub(super) async fn stored_company(&self, company_id: &str) -> Option<(CompanyId, Stored)> {
        let stored = self.entry(&company_key(company_id)).await?;
        Some((CompanyId::from(stored.known.id.as_str()), stored))
    }

    /// Holds what was written to the company, `prior` being what the store held before.
    pub(super) async fn write_down_company(
        &self,
        company_id: &str,
        id: &CompanyId,
        written: Written,
        prior: Option<Stored>,
    ) {
        let known = Known { id: ContactId::from(id.as_str()), is_lead: false };
        let made_at = prior.as_ref().filter(|p| p.known == known).map_or_else(now_s, |p| p.made_at);
        let prior = prior.map(|p| p.written).unwrap_or_default();
        self.write_down(&company_key(company_id), Stored { written, made_at, ..Stored::new(known) }, &prior).await;
    }

    /// Holds `stored` under the hashed `key`, if the store still holds `prior` as written there. When another
    /// forwarder wrote meanwhile, which write Intercom holds last is unknown: then nothing is held as written (if the
    /// key still names the contact).
    pub(super) async fn write_down(&self, key: &str, stored: Stored, prior: &Written) {
        let health = &self.executor.store_health;
        let Some(store) = self.store() else {
            // Intercom took a write the store cannot hear of: what it says was written there is not to go by.
            return health.unsure(key, self.executor.identities.is_some());
        };
        let cleared = Stored { written: Written::default(), ..stored.clone() };
        let held = match store.write_down(key, &stored, Some(prior)).await {
            Ok(true) => Ok(Some(stored)),
            Ok(false) => match store.write_down(key, &cleared, None).await {
                Ok(true) => Ok(Some(cleared)),
                // Gone meanwhile, or another contact's now: nothing of this contact is held there.
                Ok(false) => Ok(None),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match held {
            Ok(held) => {
                health.unsure(key, false);
                match held {
                    Some(held) => self.view.set(key, Some(held)),
                    None => self.view.unknown(key),
                }
            }
            Err(error) => {
                health.unsure(key, true);
                self.view.unknown(key);
                self.store_failed(error);
            }
        }
    }

    /// The visitor's lead was merged into `user`: what names the visitor now names the user, for every forwarder.
    pub(super) async fn remember_merged(&self, anonymous_id: &str, user: &ContactId) {
        self.record(vec![visitor_key(anonymous_id)], Known { id: user.clone(), is_lead: false }).await;
    }

    /// Holds `known` for the visitor unless another forwarder holds a contact for them already: that one, else `None`.
    /// A user's forwarder and the visitor's lead's forwarder thereby meet, whichever comes first.
    pub(super) async fn hold_visitor(&self, anonymous_id: &str, known: &Known) -> Option<Known> {
        let store = self.store()?;
        let key = visitor_key(anonymous_id);
        match store.record_if_absent(&key, known).await {
            Ok(None) => {
                self.view.set(&key, Some(Stored::new(known.clone())));
                None
            }
            Ok(Some(held)) => Some(held),
            Err(error) => {
                self.store_failed(error);
                None
            }
        }
    }

    /// Before making a lead for `key`: `None` to make it (the claim won, or the store failed), else the contact another
    /// forwarder made (waiting briefly for one being made).
    pub(super) async fn claim_lead(&self, key: &ContactKey) -> Option<Known> {
        let store = self.store()?;
        let hashed = contact_key(key);
        match store.claim(&hashed, CLAIM_LEASE).await {
            Ok(Claim::Won) => None,
            Ok(Claim::Held(known)) => Some(known),
            Ok(Claim::Pending) => {
                // Within the invocation's time: a wait that would end after it gives the claim up instead.
                let until = self.intercom.until().min(Instant::now() + PENDING_WAIT);
                while Instant::now() + PENDING_POLL <= until {
                    tokio::time::sleep(PENDING_POLL).await;
                    match store.find(&hashed).await {
                        Ok(Some(stored)) => return Some(stored.known),
                        Ok(None) => {}
                        Err(error) => {
                            self.store_failed(error);
                            return None;
                        }
                    }
                }
                warn!("Another forwarder claimed this lead and made none in time; making it here.");
                None
            }
            Err(error) => {
                self.store_failed(error);
                None
            }
        }
    }

    /// Holds `id` for the contact's keys: its own, and for a user the address it carries.
    pub(super) async fn remember(&self, key: &ContactKey, id: &ContactId, is_lead: bool, also: Option<String>) {
        let mut keys = vec![contact_key(key)];
        keys.extend(also);
        self.record(keys, Known { id: id.clone(), is_lead }).await;
    }

    async fn record(&self, keys: Vec<String>, known: Known) {
        let Some(store) = self.store() else { return };
        match store.record(&keys, &known).await {
            Ok(()) => {
                for (n, key) in keys.iter().enumerate() {
                    let primary = (n > 0).then(|| keys[0].clone());
                    self.view.set(key, Some(Stored { primary, ..Stored::new(known.clone()) }));
                }
            }
            Err(error) => self.store_failed(error),
        }
    }

    /// Forgets the visitor a contact that is gone was.
    pub(super) async fn forget_visitor(&self, anonymous_id: &str) {
        self.forget(vec![visitor_key(anonymous_id)]).await;
    }

    /// Forgets a company that is gone.
    pub(super) async fn forget_company(&self, company_id: &str) {
        self.forget(vec![company_key(company_id)]).await;
    }

    /// Forgets the keys of a contact that is gone.
    pub(super) async fn forget_stored(&self, keys: &[ContactKey]) {
        self.forget(keys.iter().map(contact_key).collect()).await;
    }

    async fn forget(&self, keys: Vec<String>) {
        let Some(store) = self.store() else { return };
        keys.iter().for_each(|key| self.view.set(key, None));
        if let Err(error) = store.forget(&keys).await {
            self.store_failed(error);
        }
    }

    /// Forgets every key that named an erased contact.
    pub(super) async fn forget_contact(&self, id: &ContactId) {
        let Some(store) = self.store() else { return };
        if let Err(error) = store.forget_contact(id).await {
            self.store_failed(error);
        }
    }
}

/// The store's key a user's other name gives: the address it carries.
pub(super) fn other_key(key: &ContactKey, email: Option<&str>) -> Option<String> {
    match key {
        ContactKey::ExternalId(_) => email.map(|email| contact_key(&ContactKey::Email(email.to_owned()))),
        ContactKey::Email(_) => None,
    }
}
