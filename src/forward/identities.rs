//! The identity store as the forwarder uses it: read before any lookup or search, claimed before a lead is made,
//! written once Intercom confirmed a contact. Every call is allowed to fail: the forwarder then goes on as it would
//! without a store (search, create, 409), with a WARN, and nothing waits on it.

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::executor::Run;
use crate::identity::{Claim, IdentityError, Known, contact_key, visitor_key};
use crate::intercom::{ContactId, IntercomApi};
use crate::mapping::ContactKey;

/// A claim's lease: a forwarder that claimed a key and died is taken over after this.
const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// How long a forwarder that lost a claim waits for the winner's contact, asking this often.
const PENDING_WAIT: Duration = Duration::from_secs(3);
const PENDING_POLL: Duration = Duration::from_millis(200);

impl<A: IntercomApi> Run<'_, A> {
    /// The contact the store holds for `key`.
    pub(super) async fn stored(&self, key: &ContactKey) -> Option<Known> {
        let store = self.executor.identities.as_ref()?;
        match store.find(&contact_key(key)).await {
            Ok(found) => found,
            Err(error) => warned(error, None),
        }
    }

    /// The contact the store holds for a visitor: their lead, or the user it was merged into.
    pub(super) async fn stored_visitor(&self, anonymous_id: &str) -> Option<Known> {
        let store = self.executor.identities.as_ref()?;
        match store.find(&visitor_key(anonymous_id)).await {
            Ok(found) => found,
            Err(error) => warned(error, None),
        }
    }

    /// The visitor's lead was merged into `user`: what names the visitor now names the user, for every forwarder.
    pub(super) async fn remember_merged(&self, anonymous_id: &str, user: &ContactId) {
        let Some(store) = self.executor.identities.as_ref() else { return };
        let known = Known { id: user.clone(), is_lead: false };
        if let Err(error) = store.record(&[visitor_key(anonymous_id)], &known).await {
            warned(error, ());
        }
    }

    /// Before making a lead for `key`: `None` to make it (the claim won, or the store failed), else the contact another
    /// forwarder made (waiting briefly for one being made).
    pub(super) async fn claim_lead(&self, key: &ContactKey) -> Option<Known> {
        let store = self.executor.identities.as_ref()?;
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
                        Ok(Some(known)) => return Some(known),
                        Ok(None) => {}
                        Err(error) => return warned(error, None),
                    }
                }
                warn!("Another forwarder claimed this lead and made none in time; making it here.");
                None
            }
            Err(error) => warned(error, None),
        }
    }

    /// Holds `id` for the contact's keys: its own, and for a user the address it carries, for a lead the visitor it was.
    pub(super) async fn remember(&self, key: &ContactKey, id: &ContactId, is_lead: bool, also: Option<String>) {
        let Some(store) = self.executor.identities.as_ref() else { return };
        let mut keys = vec![contact_key(key)];
        keys.extend(also);
        let known = Known { id: id.clone(), is_lead };
        if let Err(error) = store.record(&keys, &known).await {
            warned(error, ());
        }
    }

    /// Forgets the visitor a contact that is gone was.
    pub(super) async fn forget_visitor(&self, anonymous_id: &str) {
        let Some(store) = self.executor.identities.as_ref() else { return };
        if let Err(error) = store.forget(&[visitor_key(anonymous_id)]).await {
            warned(error, ());
        }
    }

    /// Forgets the keys of a contact that is gone.
    pub(super) async fn forget_stored(&self, keys: &[ContactKey]) {
        let Some(store) = self.executor.identities.as_ref() else { return };
        let keys: Vec<String> = keys.iter().map(contact_key).collect();
        if let Err(error) = store.forget(&keys).await {
            warned(error, ());
        }
    }
}

/// The store's key a contact's other name gives: a user's address, a lead's visitor.
pub(super) fn other_key(key: &ContactKey, email: Option<&str>, anonymous_id: Option<&str>) -> Option<String> {
    match key {
        ContactKey::ExternalId(_) => email.map(|email| contact_key(&ContactKey::Email(email.to_owned()))),
        ContactKey::Email(_) => anonymous_id.map(visitor_key),
    }
}

fn warned<T>(error: IdentityError, fallback: T) -> T {
    warn!(%error, "The identity store failed; going on without it.");
    fallback
}
