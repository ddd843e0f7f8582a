//! Contact resolution: a person's contact found through the warm cache and lag-free lookups (a user by external id),
//! by search only where nothing else can (a lead by email), followed when merged, created when missing.

use std::collections::HashSet;

use serde_json::{Map, Value};
use tracing::warn;

use super::executor::Run;
use super::identities::other_key;
use crate::intercom::requests::{self, EventContact, Fields, FoundContact};
use crate::intercom::{ContactId, ErrorKind, IntercomApi, IntercomError, Model, TagId};
use crate::mapping::{ANONYMOUS_ID_ATTRIBUTE, ContactKey, ContactUpsert, EventSubmission};

impl<A: IntercomApi> Run<'_, A> {
    /// Creates or updates the contact: `(created, the tag ids its answer showed)`.
    pub(super) async fn upsert_contact(
        &mut self,
        upsert: &ContactUpsert,
    ) -> Result<(bool, Option<HashSet<TagId>>), IntercomError> {
        let mut attributes = upsert.attributes.clone();
        let mut custom = upsert.custom_attributes.clone();
        self.known_attributes(Model::Contact, &mut custom, &upsert.dates).await?;
        self.known_owner(&mut attributes).await?;
        let key = &upsert.key;
        let cached = self.executor.ids.contacts.get(key);
        let stored = if cached.is_none() { self.stored(key).await } else { None };
        let known = cached.clone().map(|id| (id, None)).or_else(|| stored.map(|k| (k.id, Some(k.is_lead))));
        let (id, created, answer, is_lead) = match self.update_known(known, key, &mut attributes, &mut custom).await? {
            Some((id, answer, is_lead)) => (id, false, answer, is_lead),
            None => self.create_or_update(key, &mut attributes, &mut custom).await?,
        };
        let ids = &self.executor.ids;
        ids.contacts.put(key.clone(), &id);
        let anonymous_id = custom.get(ANONYMOUS_ID_ATTRIBUTE).and_then(Value::as_str);
        let is_lead = is_lead.unwrap_or(matches!(key, ContactKey::Email(_)));
        // Only a lead is a visitor's to merge: an address the store knows as a user's updated that user.
        if let (ContactKey::Email(_), Some(anonymous_id), true) = (key, anonymous_id, is_lead) {
            ids.visitors.put(anonymous_id.to_owned(), &id);
        }
        if cached.as_ref() != Some(&id) {
            let email = attributes.get("email").and_then(Value::as_str);
            let also = other_key(key, email, anonymous_id);
            self.remember(key, &id, is_lead, also).await;
        }
        Ok((created, requests::contact_tag_ids(&answer)))
    }

    /// Updates the contact the cache or the store knows (`(id, whether a lead, when the store says)`), or the one it
    /// was merged into; `None` when neither knows one that still works.
    async fn update_known(
        &mut self,
        known: Option<(ContactId, Option<bool>)>,
        key: &ContactKey,
        attributes: &mut Map<String, Value>,
        custom: &mut Map<String, Value>,
    ) -> Result<Option<(ContactId, Value, Option<bool>)>, IntercomError> {
        let dialect = self.executor.dialect;
        let Some((id, is_lead)) = known else { return Ok(None) };
        let update = |f: &Fields<'_>| dialect.update_contact(&id, f);
        match self.write(update, attributes, custom).await {
            Ok(answer) => Ok(Some((id, answer, is_lead))),
            Err(error) if error.kind().is_gone() => {
                self.executor.ids.contacts.forget(key);
                self.forget_stored(std::slice::from_ref(key)).await;
                let Some(target) = self.moved(&id, &error).await? else { return Ok(None) };
                let update = |f: &Fields<'_>| dialect.update_contact(&target, f);
                let answer = self.write(update, attributes, custom).await?;
                Ok(Some((target, answer, is_lead)))
            }
            Err(error) => Err(error),
        }
    }

    /// Updates the contact holding the email, else creates the contact (a 409 names the one that exists, which is
    /// updated): `(id, created, answer, whether a lead when known)`.
    async fn create_or_update(
        &mut self,
        key: &ContactKey,
        attributes: &mut Map<String, Value>,
        custom: &mut Map<String, Value>,
    ) -> Result<(ContactId, bool, Value, Option<bool>), IntercomError> {
        let dialect = self.executor.dialect;
        if let ContactKey::Email(email) = key {
            // Several leads may share an address, so creating blindly could add one more: find the existing one
            // first (behind the index's lag: see the README on duplicate leads), then claim the address in the
            // identity store, so that two forwarders behind that lag do not both make one.
            let found = match self.find_by_email(email).await? {
                Some(found) => Some((found.id, found.is_lead)),
                None => self.claim_lead(key).await.map(|known| (known.id, known.is_lead)),
            };
            if let Some((id, is_lead)) = found {
                let update = |f: &Fields<'_>| dialect.update_contact(&id, f);
                let answer = self.write(update, attributes, custom).await?;
                return Ok((id, false, answer, Some(is_lead)));
            }
        }
        let create = |f: &Fields<'_>| match key {
            ContactKey::ExternalId(external_id) => dialect.create_user(external_id, f),
            ContactKey::Email(email) => dialect.create_lead(email, f),
        };
        match self.write(create, attributes, custom).await {
            Ok(created) => Ok((requests::read_id(&created)?, true, created, None)),
            Err(error) if error.kind() == ErrorKind::Conflict => {
                let existing = self.existing(error).await?;
                let update = |f: &Fields<'_>| dialect.update_contact(&existing, f);
                let answer = self.write(update, attributes, custom).await?;
                Ok((existing, false, answer, None))
            }
            Err(error) => Err(error),
        }
    }

    /// The contact a 409 names as existing, unarchived when it was archived.
    pub(super) async fn existing(&self, conflict: IntercomError) -> Result<ContactId, IntercomError> {
        let existing = conflict.conflicting_contact().ok_or(conflict)?;
        if existing.archived {
            self.call(requests::unarchive(&existing.id)).await?;
        }
        Ok(existing.id)
    }

    /// The contact an id that stopped working became: the merge target a 410 names, or `None` when it is gone (or
    /// archived: creating it again then meets the 409 that unarchives it). A write to a merged id may answer 404 or
    /// 410 (the spec documents 410 for reads only), so a 404 asks the read, which says.
    pub(super) async fn moved(
        &self,
        id: &ContactId,
        error: &IntercomError,
    ) -> Result<Option<ContactId>, IntercomError> {
        if let Some(target) = error.merged_into() {
            return Ok(Some(target));
        }
        match self.call(requests::get_contact(id)).await {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::Merged => Ok(e.merged_into()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The most recently updated contact holding `email`; several matches are logged, and none is created.
    pub(super) async fn find_by_email(&self, email: &str) -> Result<Option<FoundContact>, IntercomError> {
        let found = self.call(requests::search_email(email)).await?;
        let (total, mut contacts) = requests::read_search(&found);
        if total > 1
            && let Some(first) = contacts.first()
        {
            warn!(matches = total, chosen = %first.id, "Several contacts hold this email; using the most recently updated.");
        }
        Ok((!contacts.is_empty()).then(|| contacts.swap_remove(0)))
    }

    /// The user with `external_id`, read without the search index; a merged one gives the contact it became.
    pub(super) async fn find_user(&self, external_id: &str) -> Result<Option<ContactId>, IntercomError> {
        match self.call(requests::find_by_external_id(external_id)).await {
            Ok(contact) => Ok(Some(requests::read_id(&contact)?)),
            Err(error) if error.kind() == ErrorKind::Merged => Ok(error.merged_into()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates the contact `key` names with nothing but its key; a 409 names the one that exists.
    pub(super) async fn create_contact(&self, key: &ContactKey) -> Result<ContactId, IntercomError> {
        let empty = Map::new();
        let fields = Fields { attributes: &empty, custom_attributes: &empty };
        let request = match key {
            ContactKey::ExternalId(external_id) => self.executor.dialect.create_user(external_id, &fields),
            ContactKey::Email(email) => self.executor.dialect.create_lead(email, &fields),
        };
        let id = match self.call(request).await {
            Ok(created) => requests::read_id(&created)?,
            Err(error) if error.kind() == ErrorKind::Conflict => self.existing(error).await?,
            Err(error) => return Err(error),
        };
        self.executor.ids.contacts.put(key.clone(), &id);
        Ok(id)
    }

    /// The contact's id: cached, else in the identity store, else found (a user by external id, a lead by email).
    pub(super) async fn contact_id(&self, key: &ContactKey) -> Result<Option<ContactId>, IntercomError> {
        let contacts = &self.executor.ids.contacts;
        if let Some(id) = contacts.get(key) {
            return Ok(Some(id));
        }
        let found = match self.stored(key).await {
            Some(known) => Some(known.id),
            None => match key {
                ContactKey::ExternalId(external_id) => self.find_user(external_id).await?,
                ContactKey::Email(email) => self.find_by_email(email).await?.map(|c| c.id),
            },
        };
        if let Some(id) = &found {
            contacts.put(key.clone(), id);
        }
        Ok(found)
    }

    /// The contact's id, created with nothing but its key when Intercom has none.
    pub(super) async fn contact_made(&self, key: &ContactKey) -> Result<ContactId, IntercomError> {
        match self.contact_id(key).await? {
            Some(id) => Ok(id),
            None => self.create_contact(key).await,
        }
    }

    /// `POST /events` for the contact: a user by external id (created first if the track came before its identify), a
    /// lead by Intercom's id.
    pub(super) async fn submit_event(&self, event: &EventSubmission) -> Result<(), IntercomError> {
        let send = |contact: EventContact<'_>| {
            requests::submit_event(contact, &event.event_name, event.created_at, &event.metadata)
        };
        let contacts = &self.executor.ids.contacts;
        let id = match &event.contact {
            ContactKey::ExternalId(user_id) => match self.call(send(EventContact::UserId(user_id))).await {
                // A track that arrives before its identify: create the user, then send again.
                Err(error) if error.kind() == ErrorKind::NotFound => {
                    contacts.forget(&event.contact);
                    self.create_contact(&event.contact).await?
                }
                other => return other.map(drop),
            },
            lead @ ContactKey::Email(_) => {
                let id = self.contact_made(lead).await?;
                match self.call(send(EventContact::Id(&id))).await {
                    Err(error) if error.kind().is_gone() => {
                        contacts.forget(lead);
                        match self.moved(&id, &error).await? {
                            Some(target) => target,
                            None => self.create_contact(lead).await?,
                        }
                    }
                    other => return other.map(drop),
                }
            }
        };
        contacts.put(event.contact.clone(), &id);
        self.call(send(EventContact::Id(&id))).await.map(drop)
    }
}
