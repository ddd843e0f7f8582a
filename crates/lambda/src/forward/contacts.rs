//! Contact resolution: a person's contact found through the warm cache and lag-free lookups (a user by external id),
//! by search only where nothing else can (a lead by email), followed when merged, created when missing.

use std::collections::HashSet;

use serde_json::{Map, Value};
use tracing::warn;

use super::executor::Run;
use super::identities::other_key;
use crate::identity::{Known, Stored, Written, contact_key};
use crate::intercom::requests::{self, EventContact, Fields, FoundContact};
use crate::intercom::{ContactId, ErrorKind, IntercomApi, IntercomError, Model, TagId};
use crate::mapping::{ANONYMOUS_ID_ATTRIBUTE, ContactKey, ContactUpsert, EventSubmission};
use crate::suppression::now_s;

/// A contact's fields on their way to Intercom; once it took them, what the store holds as written.
struct ToWrite {
    attributes: Map<String, Value>,
    custom: Map<String, Value>,
    /// Whether what the store says was written went by: only changes (or nothing) are left.
    fresh: bool,
}

impl ToWrite {
    fn of(upsert: &ContactUpsert) -> ToWrite {
        ToWrite { attributes: upsert.attributes.clone(), custom: upsert.custom_attributes.clone(), fresh: false }
    }
}

/// Whether what was written to `known` is held under `key`: a contact's own key (a user's userId, a lead's address);
/// a user's address written through names them, but what was written to them is their own key's to hold.
fn holds_written(key: &ContactKey, known: &Known) -> bool {
    matches!(key, ContactKey::ExternalId(_)) || known.is_lead
}

/// The visitor an upsert names (the anonymousId the relay gives a lead).
fn visitor_of(upsert: &ContactUpsert) -> Option<&str> {
    upsert.custom_attributes.get(ANONYMOUS_ID_ATTRIBUTE).and_then(Value::as_str)
}

impl<A: IntercomApi> Run<'_, A> {
    /// Creates or updates the contact: `(created, the tag ids its answer showed)`. What the identity store says was
    /// written to it (and is still fresh) is left out, and nothing is sent when nothing is left.
    pub(super) async fn upsert_contact(
        &mut self,
        upsert: &ContactUpsert,
    ) -> Result<(bool, Option<HashSet<TagId>>), IntercomError> {
        let key = &upsert.key;
        let cached = self.executor.ids.contacts.get(key);
        // What was written goes by for the contact the warm cache knows too (one merged since is another contact).
        let entry = self.entry(&contact_key(key)).await;
        let entry = entry.filter(|e| cached.as_ref().is_none_or(|id| *id == e.known.id));
        let mut fields = ToWrite::of(upsert);
        let now = now_s();
        // Another name of a user (their address): what was written is held under their own key, and goes by only there.
        let unsure = self.executor.store_health.is_unsure(&contact_key(key));
        if let Some(entry) = entry.as_ref().filter(|e| e.primary.is_none() && holds_written(key, &e.known) && !unsure) {
            let memory = self.executor.memory;
            // A user's events come in order in one lane: only their changes are sent. A lead's may come from two.
            let only_changes = matches!(key, ContactKey::ExternalId(_));
            let (attributes, custom) = (&mut fields.attributes, &mut fields.custom);
            fields.fresh = memory.leave_out_unchanged(&entry.written, attributes, custom, now, only_changes);
            if fields.fresh && fields.attributes.is_empty() && fields.custom.is_empty() {
                self.met(key, &entry.known.id, entry.known.is_lead, upsert);
                return Ok((false, None));
            }
        }
        let known = cached.map(|id| (id, None));
        let known = known.or_else(|| entry.as_ref().map(|e| (e.known.id.clone(), Some(e.known.is_lead))));
        let (id, created, answer, is_lead) = match self.upsert_fields(upsert, known, &mut fields).await {
            Ok(done) => done,
            Err(error) => {
                // Refused: what the store says was written may be what Intercom refuses now; written whole next time.
                if let Some(entry) = entry.filter(|e| e.written != Written::default()) {
                    let prior = entry.written.clone();
                    self.write_down(&contact_key(key), Stored { written: Written::default(), ..entry }, &prior).await;
                }
                return Err(error);
            }
        };
        let is_lead = is_lead.unwrap_or(matches!(key, ContactKey::Email(_)));
        self.met(key, &id, is_lead, upsert);
        if let Some(user) = self.meet_visitor(upsert, &id, is_lead).await? {
            self.executor.ids.contacts.put(key.clone(), &user);
            return Ok((created, None));
        }
        self.hold_written(key, entry, Known { id, is_lead }, &fields, now).await;
        Ok((created, requests::contact_tag_ids(&answer)))
    }

    /// Holds in the store what Intercom confirmed for the contact (the fields as sent, less what Intercom or the
    /// checks left out): under its own key, added to what `entry` held when that went by; through another name of a
    /// user, their own key's record made unknown.
    async fn hold_written(&self, key: &ContactKey, entry: Option<Stored>, known: Known, fields: &ToWrite, now: u64) {
        let own = holds_written(key, &known);
        let (attributes, custom) = (&fields.attributes, &fields.custom);
        match entry.filter(|e| e.known.id == known.id) {
            Some(Stored { primary: Some(primary), .. }) => self.written_elsewhere(&primary, &known).await,
            Some(entry) if own => {
                let before = Some(&entry.written).filter(|_| fields.fresh);
                let written = self.executor.memory.after_write(before, attributes, custom, now);
                let stored = Stored { written, ..entry.clone() };
                self.write_down(&contact_key(key), stored, &entry.written).await;
            }
            // A user's address the store knew no user's own key for: nothing is held as written under it.
            Some(_) => {}
            None => {
                let email = attributes.get("email").and_then(Value::as_str);
                self.remember(key, &known.id, known.is_lead, other_key(key, email)).await;
                if own {
                    let written = self.executor.memory.after_write(None, attributes, custom, now);
                    self.write_down(&contact_key(key), Stored { written, ..Stored::new(known) }, &Written::default())
                        .await;
                }
            }
        }
    }

    /// A user written through another name (their address): what their own key holds as written is not known any more.
    async fn written_elsewhere(&self, primary: &str, known: &Known) {
        let Some(held) = self.entry(primary).await.filter(|e| e.known == *known) else { return };
        if held.written != Written::default() {
            let prior = held.written.clone();
            self.write_down(primary, Stored { written: Written::default(), ..held }, &prior).await;
        }
    }

    /// The contact's fields, checked against the workspace, written to the contact known (or the one it became), else
    /// to the one holding its email, else to a new one: `(id, created, answer, whether a lead when known)`.
    async fn upsert_fields(
        &mut self,
        upsert: &ContactUpsert,
        known: Option<(ContactId, Option<bool>)>,
        fields: &mut ToWrite,
    ) -> Result<(ContactId, bool, Value, Option<bool>), IntercomError> {
        self.checked(upsert, fields).await?;
        if let Some((id, answer, is_lead)) = self.update_known(known, upsert, fields).await? {
            return Ok((id, false, answer, is_lead));
        }
        if fields.fresh {
            // The contact known is gone: the one found or made next gets everything.
            *fields = ToWrite::of(upsert);
            self.checked(upsert, fields).await?;
        }
        self.create_or_update(&upsert.key, &mut fields.attributes, &mut fields.custom).await
    }

    /// Leaves out what the workspace cannot hold: attributes it lacks (unless made), an owner who is no admin.
    async fn checked(&mut self, upsert: &ContactUpsert, fields: &mut ToWrite) -> Result<(), IntercomError> {
        self.known_attributes(Model::Contact, &mut fields.custom, &upsert.dates).await?;
        self.known_owner(&mut fields.attributes).await
    }

    /// The contact is known by its key now; a lead by the visitor it was, too.
    fn met(&self, key: &ContactKey, id: &ContactId, is_lead: bool, upsert: &ContactUpsert) {
        let ids = &self.executor.ids;
        ids.contacts.put(key.clone(), id);
        // Only a lead is a visitor's to merge: an address the store knows as a user's updated that user.
        if let (ContactKey::Email(_), Some(anonymous_id), true) = (key, visitor_of(upsert), is_lead) {
            ids.visitors.put(anonymous_id.to_owned(), id);
        }
    }

    /// A lead made or updated for a visitor: held as the visitor's in the store, unless the user the visitor became is
    /// held there already (another lane's alias or identify got there first): then the lead is merged into that user,
    /// whose id this answers.
    async fn meet_visitor(
        &self,
        upsert: &ContactUpsert,
        lead: &ContactId,
        is_lead: bool,
    ) -> Result<Option<ContactId>, IntercomError> {
        let (Some(anonymous_id), true) = (visitor_of(upsert), is_lead) else { return Ok(None) };
        let held = match self.stored_visitor(anonymous_id).await {
            Some(held) => Some(held),
            None => self.hold_visitor(anonymous_id, &Known { id: lead.clone(), is_lead: true }).await,
        };
        match held {
            Some(held) if !held.is_lead && held.id != *lead => {
                self.merge_lead(anonymous_id, lead, &held.id).await?;
                // The address now names the user the visitor became.
                self.remember(&upsert.key, &held.id, false, None).await;
                Ok(Some(held.id))
            }
            _ => Ok(None),
        }
    }

    /// Updates the contact the cache or the store knows (`(id, whether a lead, when the store says)`), or the one it
    /// was merged into; `None` when neither knows one that still works.
    async fn update_known(
        &mut self,
        known: Option<(ContactId, Option<bool>)>,
        upsert: &ContactUpsert,
        fields: &mut ToWrite,
    ) -> Result<Option<(ContactId, Value, Option<bool>)>, IntercomError> {
        let dialect = self.executor.dialect;
        let Some((id, is_lead)) = known else { return Ok(None) };
        let update = |f: &Fields<'_>| dialect.update_contact(&id, f);
        match self.write(update, &mut fields.attributes, &mut fields.custom).await {
            Ok(answer) => Ok(Some((id, answer, is_lead))),
            Err(error) if error.kind().is_gone() => {
                let key = &upsert.key;
                self.executor.ids.contacts.forget(key);
                self.forget_stored(std::slice::from_ref(key)).await;
                let Some(target) = self.moved(&id, &error).await? else { return Ok(None) };
                if fields.fresh {
                    // Another contact: it gets everything.
                    *fields = ToWrite::of(upsert);
                    self.checked(upsert, fields).await?;
                }
                let update = |f: &Fields<'_>| dialect.update_contact(&target, f);
                let answer = self.write(update, &mut fields.attributes, &mut fields.custom).await?;
                // Intercom merges a lead into a user: what it became is a user.
                Ok(Some((target, answer, Some(false))))
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
            // first (behind the index's lag: see docs/forwarding.md on duplicate leads), then claim the address in the
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

    /// Creates the contact `key` names with nothing but its key (a lead's address claimed first, as an upsert's is); a
    /// 409 names the one that exists.
    pub(super) async fn create_contact(&self, key: &ContactKey) -> Result<ContactId, IntercomError> {
        let is_lead = matches!(key, ContactKey::Email(_));
        if is_lead && let Some(known) = self.claim_lead(key).await {
            self.executor.ids.contacts.put(key.clone(), &known.id);
            return Ok(known.id);
        }
        let empty = Map::new();
        let fields = Fields { attributes: &empty, custom_attributes: &empty };
        let request = match key {
            ContactKey::ExternalId(external_id) => self.executor.dialect.create_user(external_id, &fields),
            ContactKey::Email(email) => self.executor.dialect.create_lead(email, &fields),
        };
        let id = match self.call(request).await {
            Ok(created) => {
                let id = requests::read_id(&created)?;
                self.remember(key, &id, is_lead, None).await;
                id
            }
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
                        // Gone from the store too: else the claim before making it again would name it once more.
                        contacts.forget(lead);
                        self.forget_stored(std::slice::from_ref(lead)).await;
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
