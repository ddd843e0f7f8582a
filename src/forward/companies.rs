//! Companies: upserted by the app's company_id, and contacts attached to and detached from them by Intercom's id.

use std::collections::HashSet;

use serde_json::Map;
use tracing::info;

use super::executor::Run;
use crate::intercom::requests::{self, Fields};
use crate::intercom::{CompanyId, ErrorKind, IntercomApi, IntercomError, Model};
use crate::mapping::{CompanyUpsert, ContactKey};

impl<A: IntercomApi> Run<'_, A> {
    /// Creates or updates the company: the names of the tags its answer showed.
    pub(super) async fn upsert_company(
        &mut self,
        company: &CompanyUpsert,
    ) -> Result<Option<HashSet<String>>, IntercomError> {
        let mut attributes = company.attributes.clone();
        let mut custom = company.custom_attributes.clone();
        self.known_attributes(Model::Company, &mut custom, &company.dates).await?;
        let build = |f: &Fields<'_>| requests::upsert_company(&company.company_id, f.attributes, f.custom_attributes);
        let answer = self.write(build, &mut attributes, &mut custom).await?;
        self.known_company(&company.company_id, &answer)?;
        Ok(requests::company_tag_names(&answer))
    }

    /// Intercom's id of the company with `company_id`: cached, else looked up; `None` when Intercom has none.
    async fn company_id(&self, company_id: &str) -> Result<Option<CompanyId>, IntercomError> {
        if let Some(id) = self.executor.ids.companies.get(company_id) {
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
        if let Some(id) = self.executor.ids.companies.get(company_id) {
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
        let mut id = self.contact_made(contact).await?;
        let company = self.company_made(company_id).await?;
        for retry in [false, true] {
            match self.call(requests::attach_company(&id, &company)).await {
                Err(error) if error.kind().is_gone() && !retry && !error.is_unknown_company() => {
                    self.executor.ids.contacts.forget(contact);
                    id = match self.moved(&id, &error).await? {
                        Some(target) => target,
                        None => self.create_contact(contact).await?,
                    };
                    self.executor.ids.contacts.put(contact.clone(), &id);
                }
                other => return other.map(drop),
            }
        }
        Ok(())
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
        Ok(())
    }
}
