//! Tags: the workspace's tags, and tagging contacts and companies, with the answers Intercom gives (RULES.md, "Tags").

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::state::{Contact, SandboxOptions, SandboxRequest, SandboxResponse, SandboxState, Tag, error, ok};

/// A contact object shows this many of its tags; `GET /contacts/{id}/tags` lists them all (2.16, lines 25886-25887).
const TAGS_SHOWN: usize = 10;

/// Intercom's answer to `POST /tags` parameters it cannot use (2.16, lines 18237-18248).
fn invalid() -> SandboxResponse {
    error(400, "parameter_invalid", "invalid tag parameters")
}

/// An unknown tag (2.16, lines 7896-7901, 8002-8007, 18335-18340).
fn tag_not_found() -> SandboxResponse {
    error(404, "not_found", "Resource Not Found")
}

/// An unknown contact (2.16, lines 7824-7829).
fn user_not_found() -> SandboxResponse {
    error(404, "not_found", "User Not Found")
}

/// A tag id as sent: a string, as both request schemas declare it (2.16, lines 7923-7927 and 28707-28710). The
/// attach example's integer (line 7935) contradicts its schema: what Intercom does with one is unverified, so it is
/// refused here, and the relay sends strings.
fn id_text(value: &Value) -> Option<String> {
    value.as_str().filter(|id| !id.is_empty()).map(str::to_owned)
}

/// A tag's name as the sandbox takes it: a string, not empty, without whitespace at either end (what Intercom does
/// with those is unverified: refused here, so the relay trims). The spec sets no length limit; neither does this.
fn tag_name(body: &Value) -> Option<&str> {
    body.get("name").and_then(Value::as_str).filter(|name| !name.is_empty() && name.trim() == *name)
}

/// `tag_basic` (2.16, lines 33519-33538).
pub(super) fn tag_basic(tag: &Tag) -> Value {
    json!({"type": "tag", "id": tag.id, "name": tag.name})
}

/// A tag as a tagging operation on a contact answers it (`tag`, 2.16, lines 33487-33518): when and by whom it was
/// applied. The admin is the workspace's first (the token's owner, unverified).
fn applied(tag: &Tag, applied_at: u64, options: &SandboxOptions) -> Value {
    let applied_by = options.admins.first().map(|id| json!({"type": "admin", "id": id}));
    json!({"type": "tag", "id": tag.id, "name": tag.name, "applied_at": applied_at, "applied_by": applied_by})
}

impl Contact {
    /// The contact object's `tags` (`contact_tags`, 2.16, lines 25882-25908): references to the first ten, each an
    /// `addressable_list` (lines 22765-22783; its `url` form `/tags/ID` is unverified).
    pub(super) fn tag_list(&self) -> Value {
        let shown: Vec<Value> = self
            .tags
            .keys()
            .take(TAGS_SHOWN)
            .map(|id| json!({"type": "tag", "id": id, "url": format!("/tags/{id}")}))
            .collect();
        json!({"type": "list", "data": shown, "url": format!("/contacts/{}/tags", self.id),
            "total_count": self.tags.len(), "has_more": self.tags.len() > TAGS_SHOWN})
    }
}

/// What one `POST /tags` did: the tag, and the users and companies it tagged (`true`) or untagged (`false`).
struct Tagging {
    tag_id: String,
    users: Vec<Value>,
    companies: Vec<Value>,
}

impl Tagging {
    fn of(tag_id: String) -> Tagging {
        Tagging { tag_id, users: Vec::new(), companies: Vec::new() }
    }
}

impl SandboxState {
    /// The names of the tags `ids` names, leaving out ids of no tag.
    pub(crate) fn tag_names<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        ids.into_iter().filter_map(|id| self.tags.get(id)).map(|tag| tag.name.clone()).collect()
    }

    /// The names of the tags the contact with Intercom's id `contact_id` carries (none for an unknown contact).
    pub fn contact_tag_names(&self, contact_id: &str) -> BTreeSet<String> {
        self.contacts.get(contact_id).map(|c| self.tag_names(c.tags.keys())).unwrap_or_default()
    }

    /// The names of the tags the company with this `company_id` (yours, not Intercom's id) carries.
    pub fn company_tag_names(&self, company_id: &str) -> BTreeSet<String> {
        let company = self.by_company_id.get(company_id).and_then(|id| self.companies.get(id));
        company.map(|c| self.tag_names(&c.tags)).unwrap_or_default()
    }

    /// The tag of this name, whatever its case (2.16, line 28705: "Names are case insensitive").
    fn tag_named(&self, name: &str) -> Option<&Tag> {
        self.tags_by_name.get(&name.to_lowercase()).and_then(|id| self.tags.get(id))
    }

    /// The id of the tag named `name`, created if there is none.
    fn tag_or_new(&mut self, name: &str) -> String {
        if let Some(tag) = self.tag_named(name) {
            return tag.id.clone();
        }
        let id = self.new_tag_id();
        self.tags_by_name.insert(name.to_lowercase(), id.clone());
        self.tags.insert(id.clone(), Tag { id: id.clone(), name: name.to_owned() });
        self.changes += 1;
        id
    }

    /// `GET /tags` (2.16, lines 18156-18181): every tag of the workspace, as `tag_basic`, oldest first.
    pub(super) fn list_tags(&self) -> SandboxResponse {
        let data: Vec<Value> = self.tags.values().map(tag_basic).collect();
        ok(200, json!({"type": "list", "data": data}))
    }

    /// `GET /tags/{id}` (2.16, lines 18296-18340).
    pub(super) fn show_tag(&self, id: &str) -> SandboxResponse {
        self.tags.get(id).map_or_else(tag_not_found, |tag| ok(200, tag_basic(tag)))
    }

    /// `DELETE /tags/{id}` (2.16, lines 18357-18390): 200 without a body; the tag leaves every contact and company
    /// (unverified: the spec says only that the tag is deleted). The sandbox has no segments, so never
    /// `tag_has_dependent_objects`.
    pub(super) fn delete_tag(&mut self, id: &str) -> SandboxResponse {
        let Some(tag) = self.tags.remove(id) else { return tag_not_found() };
        self.tags_by_name.remove(&tag.name.to_lowercase());
        for contact in self.contacts.values_mut() {
            contact.tags.remove(id);
        }
        for company in self.companies.values_mut() {
            company.tags.remove(id);
        }
        self.changes += 1;
        SandboxResponse { status: 200, headers: Vec::new(), body: None, delay: Duration::ZERO }
    }

    /// `POST /tags` (2.16, lines 18196-18294): one of create (`name`), rename (`name` and `id`), tag or untag companies
    /// (`name`, `companies`) and tag contacts (`name`, `users`). Under 2.16 companies and contacts not found are
    /// skipped and the answer lists those done (`tag_create_response`, lines 33539-33578; Intercom-OpenAPI PR #604
    /// "tags skip-missing", from PR #481: "skips missing entities instead of returning 404"); under 2.15 one not found
    /// is a 404 (2.15, lines 11672-11690) and the answer is `tag_basic` (line 11657).
    pub(super) fn post_tags(&mut self, request: &SandboxRequest, body: &Value, now: u64) -> SandboxResponse {
        let Some(name) = tag_name(body) else { return invalid() };
        // The four payloads are a oneOf (line 18269); Intercom's v1 reference: "Companies and user tag directives
        // cannot be mixed in the same request".
        let done = match (body.get("id"), body.get("companies"), body.get("users")) {
            (None, None, None) => Ok(Tagging::of(self.tag_or_new(name))),
            (Some(id), None, None) => self.rename_tag(id, name),
            (None, Some(companies), None) => self.tag_companies(request, name, companies),
            (None, None, Some(users)) => self.tag_users(request, name, users, now),
            _ => Err(invalid()),
        };
        let Tagging { tag_id, users, companies } = match done {
            Ok(done) => done,
            Err(refused) => return refused,
        };
        let mut answer = tag_basic(&self.tags[&tag_id]);
        if request.is_2_16() {
            (answer["users"], answer["companies"]) = (json!(users), json!(companies));
        }
        ok(200, answer)
    }

    /// Renames tag `id` to `name` (create_or_update_tag_request, 2.16, lines 28696-28712). An unknown id, and a name
    /// another tag holds, are undocumented (unverified: 404 and 400).
    fn rename_tag(&mut self, id: &Value, name: &str) -> Result<Tagging, SandboxResponse> {
        let id = id_text(id).ok_or_else(invalid)?;
        let held = self.tags.get(&id).ok_or_else(tag_not_found)?.name.clone();
        if let Some(other) = self.tag_named(name).filter(|other| other.id != id) {
            return Err(error(400, "parameter_invalid", &format!("A tag named '{}' already exists", other.name)));
        }
        if held != name {
            self.tags_by_name.remove(&held.to_lowercase());
            self.tags_by_name.insert(name.to_lowercase(), id.clone());
            self.tags.get_mut(&id).expect("checked above").name = name.to_owned();
            self.changes += 1;
        }
        Ok(Tagging::of(id))
    }

    /// Tags or (`"untag": true`) untags companies named by Intercom's `id` or your `company_id` (tag_company_request
    /// and untag_company_request, 2.16, lines 33579-33604 and 34499-34525). A tag that does not exist is created
    /// (line 18213) unless every entry untags (then 404, unverified). Every entry is read before anything changes.
    fn tag_companies(
        &mut self,
        request: &SandboxRequest,
        name: &str,
        companies: &Value,
    ) -> Result<Tagging, SandboxResponse> {
        let entries = companies.as_array().filter(|entries| !entries.is_empty()).ok_or_else(invalid)?;
        // Tagging and untagging are two request schemas (the `oneOf`, line 18269-18273): one request does one.
        let untagging = entries.iter().filter(|entry| entry.get("untag").is_some()).count();
        if untagging != 0 && untagging != entries.len() {
            return Err(invalid());
        }
        let mut found: Vec<(String, bool)> = Vec::new();
        for entry in entries {
            let untag = match entry.get("untag") {
                None => false,
                Some(Value::Bool(true)) => true,
                // "Always set to true" (line 34522).
                Some(_) => return Err(invalid()),
            };
            // "The Intercom defined id or company_id" (lines 33600, 34524): one of them, not both.
            let company = match (entry.get("id"), entry.get("company_id")) {
                (Some(id), None) => self.companies.get(id.as_str().ok_or_else(invalid)?).map(|c| c.id.clone()),
                (None, Some(company_id)) => self.by_company_id.get(company_id.as_str().ok_or_else(invalid)?).cloned(),
                _ => return Err(invalid()),
            };
            match company {
                Some(id) if found.iter().all(|(held, _)| *held != id) => found.push((id, untag)),
                Some(_) => {}
                None if request.is_2_16() => {}
                None => return Err(error(404, "company_not_found", "Company Not Found")),
            }
        }
        let tag_id = match self.tag_named(name) {
            Some(tag) => tag.id.clone(),
            None if entries.iter().all(|entry| entry.get("untag").is_some()) => return Err(tag_not_found()),
            None => self.tag_or_new(name),
        };
        let mut done = Tagging::of(tag_id);
        for (id, untag) in found {
            let tags = &mut self.companies.get_mut(&id).expect("found above").tags;
            let changed = if untag { tags.remove(&done.tag_id) } else { tags.insert(done.tag_id.clone()) };
            if changed {
                self.changes += 1;
            }
            done.companies.push(json!({"id": id, "tagged": !untag}));
        }
        Ok(done)
    }

    /// Tags contacts named by Intercom's `id` (tag_multiple_users_request, 2.16, lines 33621-33640), leads too
    /// (Intercom's v1 reference: "Contacts/Leads can be tagged by supplying a users array"). Archived contacts are not
    /// found (unverified). `untag` is documented for companies only: refused here (unverified); detach instead.
    fn tag_users(
        &mut self,
        request: &SandboxRequest,
        name: &str,
        users: &Value,
        now: u64,
    ) -> Result<Tagging, SandboxResponse> {
        let entries = users.as_array().filter(|entries| !entries.is_empty()).ok_or_else(invalid)?;
        let mut found: Vec<String> = Vec::new();
        for entry in entries {
            if entry.get("untag").is_some() {
                return Err(invalid());
            }
            let id = entry.get("id").and_then(Value::as_str).ok_or_else(invalid)?;
            match self.contacts.get(id).filter(|c| !c.archived) {
                Some(contact) if !found.contains(&contact.id) => found.push(contact.id.clone()),
                Some(_) => {}
                None if request.is_2_16() => {}
                None => return Err(user_not_found()),
            }
        }
        let mut done = Tagging::of(self.tag_or_new(name));
        for id in found {
            let tags = &mut self.contacts.get_mut(&id).expect("found above").tags;
            if !tags.contains_key(&done.tag_id) {
                tags.insert(done.tag_id.clone(), now);
                self.changes += 1;
            }
            done.users.push(json!({"id": id, "tagged": true}));
        }
        Ok(done)
    }

    /// `GET /contacts/{id}/tags` (2.16, lines 7779-7845): every tag the contact carries, with when it was applied.
    pub(super) fn contact_tags(&self, options: &SandboxOptions, contact_id: &str) -> SandboxResponse {
        let Some(contact) = self.contacts.get(contact_id) else { return user_not_found() };
        let data: Vec<Value> = contact
            .tags
            .iter()
            .filter_map(|(id, applied_at)| self.tags.get(id).map(|tag| applied(tag, *applied_at, options)))
            .collect();
        ok(200, json!({"type": "list", "data": data}))
    }

    /// `POST /contacts/{id}/tags` with `{"id": TAG_ID}` (2.16, lines 7846-7943): answers the tag; again for a tag it
    /// carries, the same answer and nothing changes. An archived contact is not found (unverified, as for updates).
    pub(super) fn tag_contact(
        &mut self,
        options: &SandboxOptions,
        contact_id: &str,
        body: &Value,
        now: u64,
    ) -> SandboxResponse {
        let tag_id = match body.get("id") {
            None => return error(400, "parameter_not_found", "id is required"),
            Some(id) => match id_text(id) {
                Some(id) => id,
                None => return error(400, "parameter_invalid", "'id' must be a tag's id (a string)"),
            },
        };
        let Some(contact) = self.contacts.get_mut(contact_id).filter(|c| !c.archived) else {
            return user_not_found();
        };
        let Some(tag) = self.tags.get(&tag_id) else { return tag_not_found() };
        let applied_at = *contact.tags.entry(tag_id).or_insert_with(|| {
            self.changes += 1;
            now
        });
        ok(200, applied(tag, applied_at, options))
    }

    /// `DELETE /contacts/{id}/tags/{tag_id}` (2.16, lines 7945-8023): answers the tag removed. A tag the contact
    /// does not carry is undocumented (unverified: 404 "Resource Not Found", so a retried detach must take a 404).
    pub(super) fn untag_contact(
        &mut self,
        options: &SandboxOptions,
        contact_id: &str,
        tag_id: &str,
    ) -> SandboxResponse {
        let Some(contact) = self.contacts.get_mut(contact_id).filter(|c| !c.archived) else {
            return user_not_found();
        };
        let (Some(tag), Some(applied_at)) = (self.tags.get(tag_id), contact.tags.remove(tag_id)) else {
            return tag_not_found();
        };
        self.changes += 1;
        ok(200, applied(tag, applied_at, options))
    }
}
