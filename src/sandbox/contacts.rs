//! Contacts: create, update, find, search, archive and merge, with the refusals Intercom makes (RULES.md).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::attributes::apply_custom;
use super::state::{Contact, DeletedContact, SandboxOptions, SandboxRequest, SandboxResponse, SandboxState, error, ok};

/// The standard fields a contact write takes besides role, external_id, email and custom_attributes.
const CONTACT_FIELDS: [&str; 8] =
    ["phone", "name", "avatar", "signed_up_at", "last_seen_at", "owner_id", "unsubscribed_from_emails", "email"];

/// Leads hold no external_id (Segment's Intercom destination docs; unverified whether Intercom refuses it or drops it).
pub(crate) const LEAD_EXTERNAL_ID: &str =
    "A lead can't have an external_id: create a user, or convert the lead with role user";

/// A merge chain is resolved at most this far, as Intercom does (2.16, line 8338: "up to 3 hops").
const MERGE_HOPS: usize = 3;

/// A standard field, what its value must be, and how a refusal says so.
type FieldRule = (&'static str, fn(&Value) -> bool, &'static str);

/// Refuses a standard field of the wrong JSON type (2.16 create_contact_request, lines 28037-28110, and
/// update_contact_request, lines 34772-34850; 2.15 line 18935 for owner_id). Strict: what Intercom does with a wrong
/// type is unverified.
fn refuse_field_types(request: &SandboxRequest, body: &Value) -> Option<SandboxResponse> {
    let integer = |v: &Value| v.is_i64() || v.is_u64();
    let rules: [FieldRule; 11] = [
        ("role", |v| matches!(v.as_str(), Some("user" | "lead")), "\"user\" or \"lead\""),
        ("external_id", Value::is_string, "a string"),
        ("email", Value::is_string, "a string"),
        ("phone", |v| v.is_string() || v.is_null(), "a string or null"),
        ("name", |v| v.is_string() || v.is_null(), "a string or null"),
        ("avatar", |v| v.is_string() || v.is_null(), "a string or null"),
        ("signed_up_at", |v| v.is_i64() || v.is_u64() || v.is_null(), "an integer (Unix seconds) or null"),
        ("last_seen_at", |v| v.is_i64() || v.is_u64() || v.is_null(), "an integer (Unix seconds) or null"),
        ("unsubscribed_from_emails", |v| v.is_boolean() || v.is_null(), "a boolean or null"),
        ("email_verified", |v| v.is_boolean() || v.is_null(), "a boolean or null"),
        ("custom_attributes", |v| v.is_object() || v.is_null(), "an object or null"),
    ];
    for (field, valid, expected) in rules {
        if body.get(field).is_some_and(|v| !valid(v)) {
            return Some(error(400, "parameter_invalid", &format!("'{field}' must be {expected}")));
        }
    }
    // owner_id: a string in 2.16 (line 28087), an integer in 2.15 (line 18935).
    match body.get("owner_id") {
        Some(Value::Null) | None => {}
        Some(Value::String(_)) if request.is_2_16() => {}
        Some(owner) if !request.is_2_16() && integer(owner) => {}
        Some(_) => {
            let expected = if request.is_2_16() { "a string" } else { "an integer" };
            let version = if request.is_2_16() { "2.16" } else { "2.15 and older" };
            let message = format!("'owner_id' must be {expected} or null (Intercom-Version {version})");
            return Some(error(400, "parameter_invalid", &message));
        }
    }
    // 2.16: email_verified "must be supplied together with an email in the same request" (line 28053).
    if request.is_2_16() && body.get("email_verified").is_some() && body.get("email").is_none() {
        return Some(error(400, "parameter_invalid", "email_verified must be supplied together with an email"));
    }
    None
}

/// Refuses an owner that is not an admin of the workspace (SOURCE.txt; `GET /admins` lists them).
fn refuse_owner(options: &SandboxOptions, body: &Value) -> Option<SandboxResponse> {
    let owner = match body.get("owner_id")? {
        Value::String(id) => id.clone(),
        Value::Number(id) => id.to_string(),
        _ => return None,
    };
    (!options.admins.contains(&owner))
        .then(|| error(400, "parameter_invalid", "The owner specified is not a member of the workspace"))
}

/// Whether a write left what a contact holds as it was (its values equal what was held).
fn same_values(before: &Contact, after: &Contact) -> bool {
    (before.role == after.role && before.external_id == after.external_id && before.email == after.email)
        && (before.fields == after.fields && before.custom_attributes == after.custom_attributes)
}

fn conflict(existing: &Contact) -> SandboxResponse {
    let prefix = if existing.archived { "An archived contact" } else { "A contact" };
    error(409, "conflict", &format!("{prefix} matching those details already exists with id={}", existing.id))
}

impl SandboxState {
    /// Drops `id` from the lookups (before a change of its identifiers, or its removal).
    fn unindex(&mut self, id: &str) {
        let Some(contact) = self.contacts.get(id) else { return };
        if let Some(external_id) = &contact.external_id
            && self.by_external_id.get(external_id).is_some_and(|held| held == id)
        {
            self.by_external_id.remove(external_id);
        }
        if let Some(email) = contact.email.as_ref().filter(|_| contact.role == "user")
            && let Some(ids) = self.users_by_email.get_mut(email)
        {
            ids.remove(id);
            if ids.is_empty() {
                self.users_by_email.remove(email);
            }
        }
    }

    fn index(&mut self, id: &str) {
        let Some(contact) = self.contacts.get(id) else { return };
        if let Some(external_id) = &contact.external_id {
            self.by_external_id.insert(external_id.clone(), id.to_owned());
        }
        if let Some(email) = contact.email.as_ref().filter(|_| contact.role == "user") {
            self.users_by_email.entry(email.clone()).or_default().insert(id.to_owned());
        }
    }

    /// The contact a create would conflict with: the same external_id, or (for users) the same email among users.
    /// Leads may share an email, as in Intercom: several leads can hold one address.
    fn find(&self, external_id: Option<&str>, email: Option<&str>, role: &str) -> Option<&Contact> {
        let id = match (external_id, email) {
            (Some(external_id), _) => self.by_external_id.get(external_id),
            (None, Some(email)) if role == "user" => self.users_by_email.get(email).and_then(|ids| ids.first()),
            _ => None,
        };
        id.and_then(|id| self.contacts.get(id))
    }

    /// Where a contact merged away went, following the chain as far as Intercom does.
    fn canonical(&self, id: &str) -> Option<&str> {
        let mut canonical = self.merged_into.get(id)?;
        for _ in 1..MERGE_HOPS {
            match self.merged_into.get(canonical) {
                Some(next) => canonical = next,
                None => break,
            }
        }
        Some(canonical)
    }

    /// 410 `contact_merged` with the `Link` to the contact it became (2.16, lines 8322-8336 and 8457-8476).
    fn merged(&self, id: &str) -> Option<SandboxResponse> {
        let canonical = self.canonical(id)?;
        let message = "This contact has been merged. See the 'Link' header for the canonical contact.";
        let mut answer = error(410, "contact_merged", message);
        answer.headers.push(("link", format!("</contacts/{canonical}>; rel=\"canonical\"")));
        Some(answer)
    }

    pub(super) fn create_contact(
        &mut self,
        options: &SandboxOptions,
        request: &SandboxRequest,
        body: &Value,
        now: u64,
    ) -> SandboxResponse {
        if let Some(refused) = refuse_field_types(request, body) {
            return refused;
        }
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        let (role, external_id, email) =
            (text("role").unwrap_or_else(|| "user".into()), text("external_id"), text("email"));
        if role == "lead" && external_id.is_some() {
            return error(400, "parameter_invalid", LEAD_EXTERNAL_ID);
        }
        if external_id.is_none() && email.is_none() && role == "user" {
            return error(400, "parameter_not_found", "Either external_id or email must be provided for users");
        }
        if let Some(existing) = self.find(external_id.as_deref(), email.as_deref(), &role) {
            return conflict(existing);
        }
        if let Some(refused) = refuse_owner(options, body) {
            return refused;
        }
        if let Some(refused) = self.refuse_custom_attributes("contact", body.get("custom_attributes")) {
            return refused;
        }
        let id = self.new_id();
        let mut contact = Contact {
            id: id.clone(),
            role,
            external_id,
            email,
            fields: Map::new(),
            custom_attributes: Map::new(),
            companies: Vec::new(),
            tags: BTreeMap::new(),
            archived: false,
            created_at: now,
            updated_at: now,
            updated_seq: 0,
        };
        apply_fields(&mut contact.fields, request, body);
        apply_custom(&mut contact.custom_attributes, body.get("custom_attributes"));
        self.contacts.insert(id.clone(), contact);
        self.index(&id);
        self.touch(&id, now);
        self.changes += 1;
        self.contact_answer(&id)
    }

    pub(super) fn update_contact(
        &mut self,
        options: &SandboxOptions,
        request: &SandboxRequest,
        id: &str,
        body: &Value,
        now: u64,
    ) -> SandboxResponse {
        if let Some(refused) = refuse_field_types(request, body) {
            return refused;
        }
        // A contact merged away is gone: a write to it is undocumented (unverified: 404, as for an unknown id).
        let Some(contact) = self.contacts.get(id).filter(|c| !c.archived) else {
            return error(404, "not_found", "User Not Found");
        };
        let role = body.get("role").and_then(Value::as_str);
        let external_id = body.get("external_id").and_then(Value::as_str);
        if contact.role == "user" && role == Some("lead") {
            return error(400, "parameter_invalid", "Contact with user role can't be converted to a lead");
        }
        if contact.role == "lead" && role != Some("user") && external_id.is_some() {
            return error(400, "parameter_invalid", LEAD_EXTERNAL_ID);
        }
        if let Some(holder) = external_id.and_then(|x| self.by_external_id.get(x)).filter(|holder| *holder != id) {
            return conflict(&self.contacts[holder]);
        }
        if let Some(refused) = refuse_owner(options, body) {
            return refused;
        }
        if let Some(refused) = self.refuse_custom_attributes("contact", body.get("custom_attributes")) {
            return refused;
        }
        self.unindex(id);
        let contact = self.contacts.get_mut(id).expect("checked above");
        let before = contact.clone();
        apply_fields(&mut contact.fields, request, body);
        if let Some(email) = body.get("email").and_then(Value::as_str) {
            contact.email = Some(email.to_owned());
        }
        if let Some(external_id) = external_id {
            contact.external_id = Some(external_id.to_owned());
        }
        if let Some(role) = role {
            contact.role = role.to_owned();
        }
        apply_custom(&mut contact.custom_attributes, body.get("custom_attributes"));
        let changed = !same_values(&before, contact);
        self.index(id);
        if changed {
            self.touch(id, now);
            self.changes += 1;
        }
        self.contact_answer(id)
    }

    /// `GET /contacts/{id}`; a contact merged away answers 410 under 2.16 and 404 under 2.15, whose spec has no 410
    /// (unverified).
    pub(super) fn show_contact(&self, request: &SandboxRequest, id: &str) -> SandboxResponse {
        match self.merged(id) {
            Some(merged) if request.is_2_16() => merged,
            _ => self.contact_answer(id),
        }
    }

    /// `GET /contacts/find_by_external_id/{external_id}` (2.16, lines 9100-9130): users only, never leads, from no
    /// search index (no lag). Archived users are not found (unverified).
    pub(super) fn find_by_external_id(&self, request: &SandboxRequest, external_id: &str) -> SandboxResponse {
        let found = self.by_external_id.get(external_id).and_then(|id| self.contacts.get(id));
        match found.filter(|c| c.role == "user" && !c.archived) {
            Some(contact) => self.contact_answer(&contact.id),
            None => match self.merged_external_ids.get(external_id).and_then(|id| self.merged(id)) {
                Some(merged) if request.is_2_16() => merged,
                _ => error(404, "not_found", "User Not Found"),
            },
        }
    }

    pub(super) fn contact_answer(&self, id: &str) -> SandboxResponse {
        match self.contacts.get(id) {
            Some(c) => {
                let mut answer = json!({"type": "contact", "id": c.id, "role": c.role, "external_id": c.external_id,
                    "email": c.email, "custom_attributes": c.custom_attributes, "created_at": c.created_at,
                    "updated_at": c.updated_at, "tags": c.tag_list()});
                for (key, value) in &c.fields {
                    answer[key] = value.clone();
                }
                ok(200, answer)
            }
            None => error(404, "not_found", "User Not Found"),
        }
    }

    /// `DELETE /contacts/{id}` (2.16, lines 8479-8502): the contact is gone with everything it held, its events too
    /// (Intercom help, article 1815435: deleting "will remove all of their associated data"), unlike an archived one,
    /// which a create finds again (409). Its external_id and email are free for a new contact. Answers
    /// `contact_deleted` (lines 25530-25539, on `contact_reference`, 25615-25634): `{"type": "contact", "id",
    /// "external_id", "deleted": true}`, the same under 2.15 (lines 5469-5492, 17436).
    pub(super) fn delete_contact(&mut self, id: &str, now: u64) -> SandboxResponse {
        if !self.contacts.contains_key(id) {
            // The spec documents no 404 here; Intercom's 2.6 reference shows this one (unverified for 2.15 and 2.16).
            return error(404, "not_found", "Contact Not Found");
        }
        self.unindex(id);
        let contact = self.contacts.remove(id).expect("checked above");
        self.remove_events(id);
        self.forget_merges_into(id);
        let Contact { role, external_id, email, .. } = contact;
        let answer = json!({"type": "contact", "id": id, "external_id": external_id, "deleted": true});
        self.deleted_contacts.insert(id.to_owned(), DeletedContact { role, external_id, email, deleted_at: now });
        self.changes += 1;
        ok(200, answer)
    }

    /// Forgets the leads merged into `id`, and into those, so none answers 410 pointing at a deleted contact (what
    /// Intercom answers for them then is unverified: here 404, as for any unknown id).
    fn forget_merges_into(&mut self, id: &str) {
        let mut gone = vec![id.to_owned()];
        while let Some(into) = gone.pop() {
            let from: Vec<String> =
                self.merged_into.iter().filter(|(_, to)| **to == into).map(|(from, _)| from.clone()).collect();
            for from in from {
                self.merged_into.remove(&from);
                self.merged_external_ids.retain(|_, lead| *lead != from);
                gone.push(from);
            }
        }
    }

    pub(super) fn set_archived(&mut self, id: &str, archived: bool) -> SandboxResponse {
        match self.contacts.get_mut(id) {
            Some(contact) => {
                if contact.archived != archived {
                    contact.archived = archived;
                    self.changes += 1;
                }
                ok(200, json!({"id": id, "object": "contact", "archived": archived}))
            }
            None => error(404, "not_found", "User Not Found"),
        }
    }

    pub(super) fn search_contacts(&self, options: &SandboxOptions, body: &Value, now: u64) -> SandboxResponse {
        let query = &body["query"];
        let filters: Vec<&Value> = match query.get("value") {
            Some(Value::Array(list)) if query.get("field").is_none() => list.iter().collect(),
            _ => vec![query],
        };
        let matches = |contact: &Contact| {
            filters.iter().all(|filter| {
                let wanted = &filter["value"];
                match filter["field"].as_str() {
                    Some("external_id") => contact.external_id.as_deref() == wanted.as_str(),
                    Some("email") => contact.email.as_deref() == wanted.as_str(),
                    Some("role") => wanted.as_str() == Some(contact.role.as_str()),
                    Some("id") => wanted.as_str() == Some(contact.id.as_str()),
                    // Custom attributes are searchable as `custom_attributes.<name>` (2.16 spec line 8811, "Accepted Fields").
                    Some(field) if field.starts_with("custom_attributes.") => {
                        contact.custom_attributes.get(&field["custom_attributes.".len()..]) == Some(wanted)
                    }
                    _ => false,
                }
            })
        };
        // The index lags: a contact created less than `search_lag` seconds ago is not found yet. Contacts merged
        // away are gone from it (2.16, "Merged Contacts", line 8728).
        let mut found: Vec<&Contact> = self
            .contacts
            .values()
            .filter(|c| !c.archived && now >= c.created_at + options.search_lag && matches(c))
            .collect();
        // Intercom sorts by the field asked for, descending unless told otherwise; by created_at by default here.
        // Contacts are held in the order they were created, so a stable sort breaks created_at ties correctly.
        let sort = &body["sort"];
        match sort["field"].as_str() {
            Some("updated_at") => found.sort_by_key(|c| (c.updated_at, c.updated_seq)),
            _ => found.sort_by_key(|c| c.created_at),
        }
        if sort["order"].as_str() != Some("ascending") {
            found.reverse();
        }
        // One page: `pagination.per_page` (starting_after_paging, 2.16 L33405-33418), "The default is `50` results per
        // page" (L8725); `total_count` counts every match, `pages` is a contact_list's cursor_pages (L25540-25561,
        // L28919-28946). The `starting_after` cursor of the next page is not modelled.
        let per_page = body["pagination"]["per_page"].as_u64().filter(|n| *n >= 1).unwrap_or(50) as usize;
        let total = found.len();
        let data: Vec<Value> =
            found.into_iter().take(per_page).filter_map(|c| self.contact_answer(&c.id).body).collect();
        let pages =
            json!({"type": "pages", "page": 1, "per_page": per_page, "total_pages": total.div_ceil(per_page).max(1)});
        ok(200, json!({"type": "list", "data": data, "total_count": total, "pages": pages}))
    }

    /// `POST /contacts/merge` (2.16, lines 8650-8663; merge_contacts_request, lines 32412-32432): a lead into a user;
    /// under 2.16 only duplicates (a shared email or phone) unless `skip_duplicate_validation` is true.
    pub(super) fn merge(&mut self, request: &SandboxRequest, body: &Value, now: u64) -> SandboxResponse {
        let (Some(from), Some(into)) = (body["from"].as_str(), body["into"].as_str()) else {
            return error(400, "parameter_not_found", "from and into are required");
        };
        let (Some(lead), Some(user)) = (self.contacts.get(from), self.contacts.get(into)) else {
            return error(404, "not_found", "User Not Found");
        };
        if lead.role != "lead" || user.role != "user" {
            return error(400, "parameter_invalid", "Only a lead can be merged into a user");
        }
        let same = |a: Option<&str>, b: Option<&str>| a.is_some_and(|a| !a.is_empty() && Some(a) == b);
        let phone = |c: &Contact| c.fields.get("phone").and_then(Value::as_str).map(str::to_owned);
        let duplicates =
            same(lead.email.as_deref(), user.email.as_deref()) || same(phone(lead).as_deref(), phone(user).as_deref());
        if request.is_2_16() && !duplicates && body["skip_duplicate_validation"] != json!(true) {
            let message = "Contacts can only be merged when they are duplicates (matching email or phone). Pass skip_duplicate_validation=true to override this check.";
            return error(400, "invalid_merge", message);
        }
        self.unindex(from);
        let lead = self.contacts.remove(from).expect("checked above");
        self.move_events(from, into);
        if let Some(external_id) = lead.external_id {
            self.merged_external_ids.insert(external_id, from.to_owned());
        }
        self.merged_into.insert(from.to_owned(), into.to_owned());
        let user = self.contacts.get_mut(into).expect("checked above");
        for (key, value) in lead.custom_attributes {
            user.custom_attributes.entry(key).or_insert(value);
        }
        self.touch(into, now);
        self.changes += 1;
        self.contact_answer(into)
    }
}

/// Keeps the standard fields of a write (`email_verified` only under 2.16, whose spec has it); a `null` clears one.
fn apply_fields(fields: &mut Map<String, Value>, request: &SandboxRequest, body: &Value) {
    let verified = request.is_2_16().then_some("email_verified");
    for field in CONTACT_FIELDS.iter().copied().chain(verified) {
        match body.get(field) {
            Some(Value::Null) => {
                fields.remove(field);
            }
            Some(value) => {
                fields.insert(field.to_owned(), value.clone());
            }
            None => {}
        }
    }
}
