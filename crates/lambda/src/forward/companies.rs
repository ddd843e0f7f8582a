//! Companies: upserted by the app's company_id, and contacts attached to and detached from them by Intercom's id.

use std::collections::HashSet;

use serde_json::{Map, Value};
use tracing::info;

use super::executor::Run;
use crate::identity::{Stored, Written, company_key, contact_key};
use crate::intercom::requests::{self, Fields};
use crate::intercom::{CompanyId, ContactId, ErrorKind, IntercomApi, IntercomError, Model};
use crate::mapping::{CompanyUpsert, ContactKey};
use crate::suppression::now_s;

impl<A: IntercomApi> Run<'_, A> {
    /// Creates or updates the company: the names of the tags its answer showed. What the identity store says was
    /// written to it (and is still fresh) is left out, and nothing is sent when nothing is left.
    pub(super) async fn upsert_company(
        &mut self,
        company: &CompanyUpsert,
    ) -> Result<Option<HashSet<String>>, IntercomError> {
        let company_id = &company.company_id;
        let mut attributes = company.attributes.clone();
        let mut custom = company.custom_attributes.clone();
        let stored = self.stored_company(company_id).await;
        let now = now_s();
        let memory = self.executor.memory;
        let unsure = self.executor.store_health.is_unsure(&company_key(company_id));
        let fresh = (stored.as_ref().filter(|_| !unsure))
            .is_some_and(|(_, s)| memory.leave_out_unchanged(&s.written, &mut attributes, &mut custom, now, false));
        if let (true, true, Some((id, _))) = (fresh, attributes.is_empty() && custom.is_empty(), &stored) {
            self.executor.ids.companies.put(company_id.clone(), id);
            return Ok(None);
        }
        let answer = match self.write_company(company, &mut attributes, &mut custom).await {
            Ok(answer) => answer,
            Err(error) => {
                // Refused: written whole next time.
                if let Some((id, held)) = stored.filter(|(_, s)| s.written != Written::default()) {
                    self.write_down_company(company_id, &id, Written::default(), Some(held)).await;
                }
                return Err(error);
            }
        };
        let id = self.known_company(company_id, &answer)?;
        let held = stored.map(|(_, held)| held);
        let before = held.as_ref().map(|h| &h.written).filter(|_| fresh);
        // What Intercom took: the checks and its refusals left out what it cannot hold.
        let written = self.executor.memory.after_write(before, &attributes, &custom, now);
        self.write_down_company(company_id, &id, written, held).await;
        Ok(requests::company_tag_names(&answer))
    }

    async fn write_company(
        &mut self,
        company: &CompanyUpsert,
        attributes: &mut Map<String, Value>,
        custom: &mut Map<String, Value>,
    ) -> Result<Value, IntercomError> {
        self.known_attributes(Model::Company, custom, &company.dates).await?;
        let build = |f: &Fields<'_>| requests::upsert_company(&company.company_id, f.attributes, f.custom_attributes);
        self.write(build, attributes, custom).await
    }

    /// Intercom's id of the company: cached, else in the identity store.
    async fn company_known(&self, company_id: &str) -> Option<CompanyId> {
        if let Some(id) = self.executor.ids.companies.get(company_id) {
            return Some(id);
        }
        let (id, _) = self.stored_company(company_id).await?;
        self.executor.ids.companies.put(company_id.to_owned(), &id);
        Some(id)
    }

    /// Intercom's id of the company with `company_id`: cached or stored, else looked up; `None` when Intercom has none.
    async fn company_id(&self, company_id: &str) -> Result<Option<CompanyId>, IntercomError> {
        if let Some(id) = self.company_known(company_id).await {
            return Ok(Some(id));
        }
        match self.call(requests::find_company(company_id)).await {
            Ok(answer) => self.known_company(company_id, &answer).map(Some),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Intercom's id of the company with `company_id`: cached, else upserted with nothing but its company_id (which
    /// makes it when Intercom has none).
    async fn company_made(&self, company_id: &str) -> Result<CompanyId, IntercomError> {
        if let Some(id) = self.company_known(company_id).await {
            return Ok(id);
        }
        let empty = Map::new();
        let answer = self.call(requests::upsert_company(company_id, &empty, &empty)).await?;
        self.known_company(company_id, &answer)
    }

    /// The id a company answer holds, remembered by its company_id.
    fn known_company(&self, company_id: &str, answer: &serde_json::Value) -> Result<CompanyId, IntercomError> {
        let id: CompanyId = requests::read_id(answer)?;
        self.executor.ids.companies.put(company_id.to_owned(), &id);
        Ok(id)
    }

    /// The contact is attached to the company, both made when Intercom lacks them; a contact id that stopped working
    /// is followed (or the contact made again) once.
    pub(super) async fn attach(&self, contact: &ContactKey, company_id: &str) -> Result<(), IntercomError> {
        if self.attached(contact, company_id).await == Some(true) {
            return Ok(());
        }
        let id = self.attach_once(contact, company_id).await?;
        self.note_attached(contact, &id, company_id, true).await;
        Ok(())
    }

    /// Whether the identity store says the contact was attached to the company (and that is still fresh).
    async fn attached(&self, contact: &ContactKey, company_id: &str) -> Option<bool> {
        let key = contact_key(contact);
        let entry = self.entry(&key).await.filter(|_| !self.executor.store_health.is_unsure(&key))?;
        let written = &entry.written;
        let fresh = written.is_fresh(self.executor.memory.refresh, now_s());
        Some(fresh && written.companies.contains(&Written::company_digest(company_id)))
    }

    /// Holds in the store whether the contact is attached to the company, when it holds the contact.
    async fn note_attached(&self, contact: &ContactKey, id: &ContactId, company_id: &str, attached: bool) {
        let key = contact_key(contact);
        let Some(entry) = self.entry(&key).await.filter(|e| e.known.id == *id && e.primary.is_none()) else { return };
        let mut written = entry.written.clone();
        let digest = Written::company_digest(company_id);
        let changed = if attached { written.companies.insert(digest) } else { written.companies.remove(&digest) };
        if changed {
            if written.refreshed_at == 0 {
                written.refreshed_at = now_s();
            }
            let prior = entry.written.clone();
            self.write_down(&key, Stored { written, ..entry }, &prior).await;
        }
    }

    /// Attaches the contact (following or making it again once when its id stopped working): the contact's id.
    async fn attach_once(&self, contact: &ContactKey, company_id: &str) -> Result<ContactId, IntercomError> {
        let mut id = self.contact_made(contact).await?;
        let mut company = self.company_made(company_id).await?;
        for retry in [false, true] {
            match self.call(requests::attach_company(&id, &company)).await {
                // A company deleted in Intercom: forgotten (the store would name it again), made again.
                Err(error) if error.is_unknown_company() && !retry => {
                    self.executor.ids.companies.forget(company_id);
                    self.forget_company(company_id).await;
                    company = self.company_made(company_id).await?;
                }
                Err(error) if error.kind().is_gone() && !retry => {
                    self.executor.ids.contacts.forget(contact);
                    self.forget_stored(std::slice::from_ref(contact)).await;
                    id = match self.moved(&id, &error).await? {
                        Some(target) => target,
                        None => self.create_contact(contact).await?,
                    };
                    self.executor.ids.contacts.put(contact.clone(), &id);
                }
                other => return other.map(|_| id),
            }
        }
        Ok(id)
    }

    /// Detaching what Intercom does not hold (an unknown contact or company, or one not attached) changes nothing and
    /// creates nothing.
    pub(super) async fn detach(&self, contact: &ContactKey, company_id: &str) -> Result<(), IntercomError> {
        let Some(id) = self.contact_id(contact).await? else {
            info!("Detach: Intercom holds no such contact.");
            return Ok(());
        };
        let Some(company) = self.company_id(company_id).await? else {
            info!("Detach: Intercom holds no such company.");
            return Ok(());
        };
        match self.call(requests::detach_company(&id, &company)).await {
            Err(e) if e.kind().is_gone() => info!("Detach: the contact was not attached."),
            other => _ = other?,
        }
        self.note_attached(contact, &id, company_id, false).await;
        Ok(())
    }
}
