//! Erasure: whom a request names found first (so that what names them can be kept in the suppression list), then
//! deleted, one `DELETE /contacts/{id}` each.

use tokio::time::Instant;

use super::executor::{Executor, Failed, Run};
use crate::erasure::ErasureRequest;
use crate::intercom::requests::{self, Person};
use crate::intercom::{ContactId, IntercomApi, IntercomError};
use crate::mapping::{ANONYMOUS_ID_ATTRIBUTE, ContactKey};
use crate::retry::RetryPolicy;

/// What an erasure found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Intercom's ids of the contacts deleted.
    pub contacts: Vec<ContactId>,
    /// Of the contacts found: users and leads.
    pub(crate) users: usize,
    pub(crate) leads: usize,
    /// What else there is to know: nobody found, a user left who shares the address, several users erased.
    pub(crate) notes: Vec<String>,
    pub(crate) calls: usize,
}

/// Whom an erasure request names, found and not yet deleted (no `Debug`: it holds their addresses).
pub struct ErasureTargets {
    targets: Vec<Person>,
    notes: Vec<String>,
    /// Intercom calls spent finding them.
    calls: usize,
}

impl ErasureTargets {
    /// The addresses the contacts found hold (for the suppression list; never logged).
    pub(crate) fn emails(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().filter_map(|t| t.email.as_deref())
    }

    /// Intercom calls spent finding them.
    pub(crate) fn calls(&self) -> usize {
        self.calls
    }

    /// The users' external_ids among the contacts found (an erasure by email names them by nothing else).
    pub(crate) fn external_ids(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().filter_map(|t| t.external_id.as_deref())
    }
}

impl<A: IntercomApi> Executor<A> {
    /// Finds whom `request` names: their user (by `find_by_external_id`, no index lag), the contacts holding their
    /// email (by search, behind its lag: the users when no userId is given, the leads when asked). Nothing is deleted
    /// until [`Executor::erase`] is given the answer, so that what names them can be kept first.
    pub async fn erasure_targets(
        &self,
        request: &ErasureRequest,
        retry: RetryPolicy,
        until: Instant,
    ) -> Result<ErasureTargets, Failed> {
        let run = self.run(retry, until, 0);
        let found = run.find_targets(request).await;
        let ((targets, notes), _, calls) = run.finish(found)?;
        Ok(ErasureTargets { targets, notes, calls })
    }

    /// Erases what [`Executor::erasure_targets`] found: one `DELETE /contacts/{id}` each (one gone already is passed
    /// over). What was found and done is in the answer.
    pub async fn erase(&self, found: ErasureTargets, retry: RetryPolicy, until: Instant) -> Result<Erased, Failed> {
        let run = self.run(retry, until, found.calls);
        let erased = run.delete_targets(found).await;
        let (erased, _, calls) = run.finish(erased)?;
        Ok(Erased { calls, ..erased })
    }
}

impl<A: IntercomApi> Run<'_, A> {
    async fn find_targets(&self, request: &ErasureRequest) -> Result<(Vec<Person>, Vec<String>), IntercomError> {
        let mut targets: Vec<Person> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        if let Some(user_id) = &request.user_id {
            match self.call(requests::find_by_external_id(user_id)).await {
                Ok(contact) => targets.extend(requests::read_person(&contact)),
                Err(error) if error.kind().is_gone() => notes.push("no user has this userId".into()),
                Err(error) => return Err(error),
            }
        }
        let email = request.email.clone().or_else(|| targets.first().and_then(|user| user.email.clone()));
        if let Some(email) = email.filter(|_| request.user_id.is_none() || request.leads) {
            self.add_holders_of(&email, request, &mut targets, &mut notes).await?;
        }
        let users = targets.iter().filter(|t| !t.is_lead).count();
        if request.user_id.is_none() && users > 1 {
            notes.push(format!("{users} users held the email; all were erased"));
        }
        if targets.is_empty() && notes.is_empty() {
            notes.push("no contact holds this email".into());
        }
        Ok((targets, notes))
    }

    /// Adds the contacts holding `email` the request wants: the users when it names no userId, the leads when asked.
    async fn add_holders_of(
        &self,
        email: &str,
        request: &ErasureRequest,
        targets: &mut Vec<Person>,
        notes: &mut Vec<String>,
    ) -> Result<(), IntercomError> {
        let (total, people) = requests::read_people(&self.call(requests::search_email(email)).await?);
        let read = people.len();
        for person in people {
            if targets.iter().any(|t| t.id == person.id) {
                continue;
            }
            let wanted =
                if person.is_lead { request.leads || request.user_id.is_none() } else { request.user_id.is_none() };
            if wanted {
                targets.push(person);
            } else if !person.is_lead {
                notes.push("another user holds the same email and was left (name them by their userId)".into());
            }
        }
        if total as usize > read {
            notes.push(format!("{total} contacts hold the email; only the first page was read: ask again"));
        }
        Ok(())
    }

    async fn delete_targets(&self, found: ErasureTargets) -> Result<Erased, IntercomError> {
        let ErasureTargets { targets, notes, .. } = found;
        let users = targets.iter().filter(|t| !t.is_lead).count();
        let mut erased = Vec::with_capacity(targets.len());
        for person in &targets {
            match self.call(requests::delete_contact(&person.id)).await {
                Ok(_) => erased.push(person.id.clone()),
                // Gone already (merged, or erased by an earlier request).
                Err(error) if error.kind().is_gone() => {}
                Err(error) => return Err(error),
            }
            let external_id = person.external_id.iter().map(|id| ContactKey::ExternalId(id.clone()));
            let keys: Vec<ContactKey> =
                external_id.chain(person.email.iter().map(|e| ContactKey::Email(e.clone()))).collect();
            for key in &keys {
                self.executor.ids.contacts.forget(key);
            }
            self.forget_stored(&keys).await;
            // Every other key that named it: addresses it held before, visitors it was.
            self.forget_contact(&person.id).await;
            if let Some(anonymous_id) = person.custom_attributes.get(ANONYMOUS_ID_ATTRIBUTE).and_then(|a| a.as_str()) {
                self.forget_visitor(anonymous_id).await;
            }
        }
        let leads = targets.iter().filter(|t| t.is_lead).count();
        Ok(Erased { contacts: erased, users, leads, notes, calls: 0 })
    }
}
