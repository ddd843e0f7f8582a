//! Companies: upserting and finding them, attaching them to contacts and detaching them, in the shapes Intercom answers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::attributes::apply_custom;
use super::state::{Company, SandboxResponse, SandboxState, Tag, error, ok, query_param};
use super::tags::tag_basic;

const COMPANY_FIELDS: [&str; 7] = ["name", "plan", "size", "website", "industry", "monthly_spend", "remote_created_at"];

/// The most `monthly_spend` holds: 2**31-1 (2.16, create_or_update_company_request, lines 28616-28622).
const MAX_MONTHLY_SPEND: i64 = 2_147_483_647;

impl SandboxState {
    pub(super) fn upsert_company(&mut self, body: &Value) -> SandboxResponse {
        let Some(company_id) = body.get("company_id").and_then(Value::as_str).map(str::to_owned) else {
            return error(400, "parameter_not_found", "company_id is required");
        };
        let mut fields = Map::new();
        for field in COMPANY_FIELDS {
            let Some(value) = body.get(field) else { continue };
            match company_field(field, value) {
                Ok(value) => fields.insert(field.to_owned(), value),
                Err(refused) => return refused,
            };
        }
        if body.get("update_last_request_at").is_some_and(|v| !v.is_boolean()) {
            return error(400, "parameter_invalid", "'update_last_request_at' must be a boolean");
        }
        if let Some(refused) = self.refuse_custom_attributes("company", body.get("custom_attributes")) {
            return refused;
        }
        let id = match self.by_company_id.get(&company_id) {
            Some(id) => id.clone(),
            None => {
                let id = self.new_id();
                self.by_company_id.insert(company_id.clone(), id.clone());
                let company = Company {
                    id: id.clone(),
                    company_id,
                    fields: Map::new(),
                    custom_attributes: Map::new(),
                    tags: BTreeSet::new(),
                };
                self.companies.insert(id.clone(), company);
                self.changes += 1;
                id
            }
        };
        let company = self.companies.get_mut(&id).expect("indexed");
        let before = (company.fields.clone(), company.custom_attributes.clone());
        company.fields.extend(fields);
        apply_custom(&mut company.custom_attributes, body.get("custom_attributes"));
        let changed = before != (company.fields.clone(), company.custom_attributes.clone());
        let answer = company_answer(company, &self.tags);
        if changed {
            self.changes += 1;
        }
        ok(200, answer)
    }

    pub(super) fn find_company(&self, query: &str) -> SandboxResponse {
        let wanted = query_param(query, "company_id");
        match wanted.and_then(|id| self.by_company_id.get(&id)).and_then(|id| self.companies.get(id)) {
            Some(company) => ok(200, company_answer(company, &self.tags)),
            None => error(404, "company_not_found", "Company Not Found"),
        }
    }

    pub(super) fn attach(&mut self, contact_id: &str, body: &Value) -> SandboxResponse {
        let Some(company) = body["id"].as_str().and_then(|id| self.companies.get(id)) else {
            return error(404, "company_not_found", "Company Not Found");
        };
        let answer = company_answer(company, &self.tags);
        let company_id = company.id.clone();
        // A contact merged away is gone: attaching to it is undocumented (unverified: 404, as for an unknown id).
        let Some(contact) = self.contacts.get_mut(contact_id) else {
            return error(404, "not_found", "User Not Found");
        };
        if !contact.companies.contains(&company_id) {
            contact.companies.push(company_id);
            self.changes += 1;
        }
        ok(200, answer)
    }

    pub(super) fn detach(&mut self, contact_id: &str, company_id: &str) -> SandboxResponse {
        let Some(contact) = self.contacts.get_mut(contact_id) else {
            return error(404, "not_found", "User Not Found");
        };
        let before = contact.companies.len();
        contact.companies.retain(|c| c != company_id);
        let detached = before != contact.companies.len();
        match (detached, self.companies.get(company_id)) {
            (true, Some(company)) => {
                self.changes += 1;
                ok(200, company_answer(company, &self.tags))
            }
            _ => error(404, "company_not_found", "Company Not Found"),
        }
    }
}

/// A company field as Intercom takes it (2.16, create_or_update_company_request, lines 28567-28622): `size` and
/// `remote_created_at` integers, `monthly_spend` an integer that a float is truncated to (at most 2**31-1), the rest
/// strings. None is nullable there: a `null` is refused (unverified).
fn company_field(field: &str, value: &Value) -> Result<Value, SandboxResponse> {
    let refuse = |expected: &str| Err(error(400, "parameter_invalid", &format!("'{field}' must be {expected}")));
    match field {
        "size" | "remote_created_at" if value.is_i64() || value.is_u64() => Ok(value.clone()),
        "size" | "remote_created_at" => refuse("an integer"),
        "monthly_spend" => match value.as_f64().map(f64::trunc) {
            Some(spend) if spend.abs() <= MAX_MONTHLY_SPEND as f64 => Ok(json!(spend as i64)),
            Some(_) => refuse("at most 2147483647"),
            None => refuse("a number (Intercom keeps its integer part)"),
        },
        _ if value.is_string() => Ok(value.clone()),
        _ => refuse("a string"),
    }
}

/// A company in the spec's shape, its tags a `tag.list` of `tag_basic` (2.16, lines 25051-25063).
fn company_answer(company: &Company, tags: &BTreeMap<String, Tag>) -> Value {
    let tags: Vec<Value> = company.tags.iter().filter_map(|id| tags.get(id)).map(tag_basic).collect();
    let mut answer = json!({"type": "company", "id": company.id, "company_id": company.company_id,
        "custom_attributes": company.custom_attributes, "tags": {"type": "tag.list", "tags": tags}});
    for (key, value) in &company.fields {
        answer[key] = value.clone();
    }
    answer
}
