//! Tags: a contact's by Intercom's tag ids (learned once per cold start, made when missing), a company's by name; a
//! tag the object already carries costs no call.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::executor::Run;
use super::learned::lock;
use crate::intercom::requests;
use crate::intercom::{ContactId, ErrorKind, IntercomApi, IntercomError, TagId};
use crate::mapping::ContactKey;

impl<A: IntercomApi> Run<'_, A> {
    /// Intercom's ids of the tags named, learned once per cold start (`GET /tags`) and made when missing.
    async fn tag_ids(&self, names: &[String]) -> Result<Vec<TagId>, IntercomError> {
        let workspace = &self.executor.workspace;
        let listed = workspace.tags.get_or_learn(|| self.list_tags()).await?;
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            let key = name.to_lowercase();
            let known = lock(&listed).get(&key).cloned();
            let id = match known {
                Some(id) => id,
                None => {
                    let make = || async { requests::read_id(&self.call(requests::create_tag(name)).await?) };
                    let id = workspace.new_tags.get_or_make(key.clone(), make).await?;
                    lock(&listed).insert(key, id.clone());
                    id
                }
            };
            ids.push(id);
        }
        Ok(ids)
    }

    async fn list_tags(&self) -> Result<Mutex<HashMap<String, TagId>>, IntercomError> {
        let listed = requests::read_tags(&self.call(requests::list_tags()).await?);
        Ok(Mutex::new(listed.into_iter().map(|(id, name)| (name.to_lowercase(), id)).collect()))
    }

    /// The contact carries `names` (and, with `remove_missing`, no other tag); `held`: the tag ids its object showed,
    /// when it showed them all.
    pub(super) async fn tag_contact(
        &self,
        contact: &ContactKey,
        names: &[String],
        remove_missing: bool,
        held: Option<HashSet<TagId>>,
    ) -> Result<(), IntercomError> {
        // Upserted just before, so known unless the cache let it go meanwhile: then read again, never left untagged.
        let Some(id) = self.contact_id(contact).await? else { return Ok(()) };
        let wanted = self.tag_ids(names).await?;
        let held = match held {
            Some(held) => held,
            None => {
                let listed = self.call(requests::list_contact_tags(&id)).await?;
                requests::read_tags(&listed).into_iter().map(|(tag, _)| tag).collect()
            }
        };
        self.add_tags(&id, names, &wanted, &held).await?;
        if remove_missing {
            for tag in held.iter().filter(|tag| !wanted.contains(tag)) {
                match self.call(requests::untag_contact(&id, tag)).await {
                    Ok(_) => {}
                    Err(error) if error.kind() == ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// Tags the contact with the `wanted` ids of `names` it does not hold.
    async fn add_tags(
        &self,
        id: &ContactId,
        names: &[String],
        wanted: &[TagId],
        held: &HashSet<TagId>,
    ) -> Result<(), IntercomError> {
        for tag in wanted.iter().filter(|tag| !held.contains(*tag)) {
            match self.call(requests::tag_contact(id, tag)).await {
                Ok(_) => {}
                // The tag was deleted in Intercom since it was learned: learn the tags again, once.
                Err(error) if error.is_unknown_tag() => {
                    self.executor.workspace.tags.forget();
                    self.executor.workspace.new_tags.clear();
                    let again = self.tag_ids(names).await?;
                    for tag in again.iter().filter(|tag| !held.contains(*tag)) {
                        self.call(requests::tag_contact(id, tag)).await?;
                    }
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The company carries `names` (and, with `remove_missing`, no other tag); `held`: the names its object showed.
    pub(super) async fn tag_company(
        &self,
        company_id: &str,
        names: &[String],
        remove_missing: bool,
        held: Option<HashSet<String>>,
    ) -> Result<(), IntercomError> {
        let held = match held {
            Some(held) => held,
            None => {
                let found = self.call(requests::find_company(company_id)).await?;
                requests::company_tag_names(&found).unwrap_or_default()
            }
        };
        for name in names.iter().filter(|name| !held.contains(&name.to_lowercase())) {
            self.call(requests::tag_company(name, company_id, false)).await?;
        }
        if remove_missing {
            let wanted: HashSet<String> = names.iter().map(|name| name.to_lowercase()).collect();
            for name in held.iter().filter(|name| !wanted.contains(*name)) {
                self.call(requests::tag_company(name, company_id, true)).await?;
            }
        }
        Ok(())
    }
}
