//! Merges: an alias's previous contact (a visitor's lead, or a user) taken into the user it names, and an identify's
//! visitor lead merged into the user it became.

use tracing::info;

use super::executor::Run;
use crate::identity::Known;
use crate::intercom::requests::{self, FoundContact};
use crate::intercom::{ContactId, ErrorKind, IntercomApi, IntercomError, Model};
use crate::mapping::{ANONYMOUS_ID_ATTRIBUTE, ContactKey};

/// The skip of an alias whose previous contact Intercom does not hold (yet: it may travel in another FIFO group). With
/// an identity store the alias holds the visitor for the user, so that a lead made for them later is merged as it is
/// made; without one the forwarder hands the alias back for a while first (`ALIAS_WAIT`).
pub const ALIAS_PREVIOUS_UNKNOWN: &str = "alias_previous_contact_unknown";

impl<A: IntercomApi> Run<'_, A> {
    /// The contact an alias's previous id names: a visitor's lead (by its anonymousId) or a user (by external id).
    async fn previous_contact(&self, previous: &str) -> Result<Option<FoundContact>, IntercomError> {
        let ids = &self.executor.ids;
        if let Some(id) = ids.visitors.get(previous) {
            return Ok(Some(FoundContact { id, is_lead: true }));
        }
        let key = ContactKey::ExternalId(previous.to_owned());
        if let Some(id) = ids.contacts.get(&key) {
            return Ok(Some(FoundContact { id, is_lead: false }));
        }
        // Before any lookup: the store knows the visitors' leads every forwarder made (or the users they became).
        if let Some(known) = self.stored_visitor(previous).await {
            return Ok(Some(FoundContact { id: known.id, is_lead: known.is_lead }));
        }
        if let Some(known) = self.stored(&key).await {
            return Ok(Some(FoundContact { id: known.id, is_lead: known.is_lead }));
        }
        if let Some(id) = self.find_user(previous).await? {
            return Ok(Some(FoundContact { id, is_lead: false }));
        }
        // Without a store an alias is handed back to find the lead it raced; the attribute list learned at the first
        // try may be older than that lead, so it is searched for whatever the list said.
        let lead = if self.executor.remembers() {
            self.search_visitor(previous).await?
        } else {
            self.find_visitor(previous).await?
        };
        Ok(lead.map(|id| FoundContact { id, is_lead: true }))
    }

    /// A visitor's lead by the `anonymous_id` the relay gave it, through search (it lags behind new leads). A workspace
    /// without that attribute may refuse the query: then there is no such lead.
    async fn find_visitor(&self, anonymous_id: &str) -> Result<Option<ContactId>, IntercomError> {
        match self.call(requests::search_leads_by(ANONYMOUS_ID_ATTRIBUTE, anonymous_id)).await {
            Ok(found) => Ok(requests::read_search(&found).1.into_iter().find(|c| c.is_lead).map(|c| c.id)),
            Err(error) if error.kind() == ErrorKind::Refused => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Alias: the previous contact (a visitor's lead) merged into the user, or (when the user does not exist yet) made
    /// that user; `Some(reason)` when there is nothing to do.
    pub(super) async fn alias(
        &self,
        from: &ContactKey,
        into: &ContactKey,
    ) -> Result<Option<&'static str>, IntercomError> {
        let (ContactKey::ExternalId(previous), ContactKey::ExternalId(user_id)) = (from, into) else {
            return Ok(Some("alias_without_user_id"));
        };
        let ids = &self.executor.ids;
        let merged_into = ids.merged_visitors.get(previous);
        if merged_into.is_some() && merged_into == ids.contacts.get(into) {
            info!("Alias: the visitor's lead was merged into the user already.");
            return Ok(None);
        }
        let Some(previous_contact) = self.previous_contact(previous).await? else {
            self.hold_visitor_for(previous, into, user_id).await?;
            return Ok(Some(ALIAS_PREVIOUS_UNKNOWN));
        };
        let user = self.user_id(into, user_id).await?;
        match (previous_contact, user) {
            (previous, Some(user)) if previous.id == user => {
                ids.contacts.put(into.clone(), &user);
                Ok(None)
            }
            (FoundContact { id: lead, is_lead: true }, Some(user)) => {
                self.merge_lead(previous, &lead, &user).await?;
                ids.contacts.put(into.clone(), &user);
                Ok(None)
            }
            (FoundContact { is_lead: false, .. }, Some(_)) => Ok(Some("alias_both_users")),
            (found, None) => self.become_user(found, previous, user_id).await.map(|()| None),
        }
    }

    /// The alias's previous contact made the user `into` names (a lead converted, a user given the new external id);
    /// when another contact took that external id meanwhile, the lead is merged into it.
    async fn become_user(&self, found: FoundContact, previous: &str, user_id: &str) -> Result<(), IntercomError> {
        let (from, into) = (ContactKey::ExternalId(previous.to_owned()), ContactKey::ExternalId(user_id.to_owned()));
        let ids = &self.executor.ids;
        let FoundContact { id, is_lead } = found;
        match self.call(self.executor.dialect.convert_to_user(&id, user_id)).await {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::Conflict && is_lead => {
                let user = error.conflicting_contact().ok_or(error)?;
                self.merge(&id, &user.id).await?;
                ids.visitors.forget(previous);
                ids.contacts.put(into, &user.id);
                return Ok(());
            }
            Err(error) => return Err(error),
        }
        if is_lead {
            ids.visitors.forget(previous);
        } else {
            ids.contacts.forget(&from);
        }
        ids.contacts.put(into, &id);
        Ok(())
    }

    /// An alias whose visitor has no lead yet: with a store, the visitor is held for the user (when Intercom holds the
    /// user), so that the lead another lane makes for them is merged into the user as it is made; a lead held there
    /// meanwhile is merged now.
    async fn hold_visitor_for(&self, previous: &str, into: &ContactKey, user_id: &str) -> Result<(), IntercomError> {
        if !self.executor.remembers() {
            return Ok(());
        }
        let Some(user) = self.user_id(into, user_id).await? else { return Ok(()) };
        match self.hold_visitor(previous, &Known { id: user.clone(), is_lead: false }).await {
            Some(Known { id: lead, is_lead: true }) => self.merge_lead(previous, &lead, &user).await,
            _ => Ok(()),
        }
    }

    /// The user `into` names: warm, else in the identity store, else looked up (no index lag).
    async fn user_id(&self, into: &ContactKey, user_id: &str) -> Result<Option<ContactId>, IntercomError> {
        if let Some(id) = self.executor.ids.contacts.get(into) {
            return Ok(Some(id));
        }
        match self.stored(into).await {
            Some(known) => Ok(Some(known.id)),
            None => self.find_user(user_id).await,
        }
    }

    /// Merges the visitor's lead into the user, and remembers it: what named the visitor names the user now.
    pub(super) async fn merge_lead(
        &self,
        anonymous_id: &str,
        lead: &ContactId,
        user: &ContactId,
    ) -> Result<(), IntercomError> {
        self.merge(lead, user).await?;
        let ids = &self.executor.ids;
        ids.visitors.forget(anonymous_id);
        ids.merged_visitors.put(anonymous_id.to_owned(), user);
        self.remember_merged(anonymous_id, user).await;
        Ok(())
    }

    /// Merges the lead into the user; a lead already merged (a retry, another forwarder) is done.
    async fn merge(&self, lead: &ContactId, user: &ContactId) -> Result<(), IntercomError> {
        match self.call(self.executor.dialect.merge(lead, user)).await {
            Err(error) if error.kind().is_gone() => {
                info!("Merge: the lead was merged already.");
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// An identify naming the user and the visitor they were: the visitor's lead, when the relay knows one, is merged
    /// into the user. A user met before is asked about only from the warm cache: searching on every identify would
    /// double their cost. A new user with no lead known holds the visitor in the store, so that a lead another lane
    /// makes for them is merged as it is made.
    pub(super) async fn merge_visitor(
        &self,
        anonymous_id: &str,
        into: &ContactKey,
        created: bool,
    ) -> Result<(), IntercomError> {
        let ids = &self.executor.ids;
        let Some(user) = ids.contacts.get(into) else { return Ok(()) };
        let lead = match ids.visitors.get(anonymous_id) {
            Some(lead) => lead,
            None if created => match self.stored_visitor(anonymous_id).await {
                Some(known) if known.is_lead => known.id,
                // Merged into a user already.
                Some(_) => return Ok(()),
                None => match self.hold_visitor(anonymous_id, &Known { id: user.clone(), is_lead: false }).await {
                    Some(Known { id, is_lead: true }) => id,
                    Some(_) => return Ok(()),
                    None => match self.search_visitor(anonymous_id).await? {
                        Some(lead) => lead,
                        None => return Ok(()),
                    },
                },
            },
            // A user met before, on a new device: the store (read with the batch) may know the visitor's lead.
            None => match self.stored_visitor(anonymous_id).await {
                Some(Known { id, is_lead: true }) => id,
                _ => return Ok(()),
            },
        };
        self.merge_lead(anonymous_id, &lead, &user).await
    }

    /// A visitor's lead made before the store knew it, searched for only where a lead can carry the attribute: a
    /// search for every new user would cost a call each.
    async fn search_visitor(&self, anonymous_id: &str) -> Result<Option<ContactId>, IntercomError> {
        if self.has_attribute(Model::Contact, ANONYMOUS_ID_ATTRIBUTE).await? {
            self.find_visitor(anonymous_id).await
        } else {
            Ok(None)
        }
    }
}
