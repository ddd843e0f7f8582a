//! Data events: submitting them (`POST /events`), with the refusals Intercom makes, and keeping their indexes right when
//! contacts merge or are deleted.

use std::time::Duration;

use serde_json::{Map, Value};

use super::state::{DataEvent, SandboxResponse, SandboxState, error};

/// Intercom allows at most this many active event names per workspace.
pub const MAX_EVENT_NAMES: usize = 120;

impl SandboxState {
    /// Moves the events of `from` to `into` (a merge), keeping the de-duplication keys right.
    pub(super) fn move_events(&mut self, from: &str, into: &str) {
        let moved = self.events_by_contact.remove(from).unwrap_or_default();
        for &index in &moved {
            let event = &mut self.events[index];
            self.event_keys.remove(&(event.contact_id.clone(), event.event_name.clone(), event.created_at));
            event.contact_id = into.to_owned();
            self.event_keys.insert((event.contact_id.clone(), event.event_name.clone(), event.created_at));
        }
        self.events_by_contact.entry(into.to_owned()).or_default().extend(moved);
    }

    /// Drops the events of `contact_id` (a deletion); their names stay among the workspace's event names.
    pub(super) fn remove_events(&mut self, contact_id: &str) {
        let Some(removed) = self.events_by_contact.remove(contact_id) else { return };
        for index in removed {
            let event = &self.events[index];
            self.event_keys.remove(&(event.contact_id.clone(), event.event_name.clone(), event.created_at));
        }
        self.events.retain(|event| event.contact_id != contact_id);
        // The other contacts' events moved: index them again (deletions are rare, events many).
        self.events_by_contact.clear();
        for (index, event) in self.events.iter().enumerate() {
            self.events_by_contact.entry(event.contact_id.clone()).or_default().push(index);
        }
    }

    pub(super) fn submit_event(&mut self, body: &Value) -> SandboxResponse {
        let Some(event_name) = body["event_name"].as_str().filter(|n| !n.is_empty()) else {
            return error(400, "parameter_not_found", "event_name is required");
        };
        let Some(created_at) = body["created_at"].as_i64() else {
            return error(400, "parameter_not_found", "created_at is required");
        };
        // A contact merged away is gone: Intercom's answer to an event for it is undocumented (unverified: 404).
        let contact = if let Some(id) = body["id"].as_str() {
            self.contacts.get(id)
        } else if let Some(user_id) = body["user_id"].as_str() {
            self.by_external_id.get(user_id).and_then(|id| self.contacts.get(id))
        } else if let Some(email) = body["email"].as_str() {
            self.users_by_email.get(email).and_then(|ids| ids.first()).and_then(|id| self.contacts.get(id))
        } else {
            None
        };
        let Some(contact_id) = contact.filter(|c| !c.archived).map(|c| c.id.clone()) else {
            return error(404, "not_found", "User Not Found");
        };
        if let Some(refused) = refuse_metadata(body.get("metadata")) {
            return refused;
        }
        // Intercom names events case-insensitively and keeps at most 10 metadata keys, ignoring the rest.
        let event_name = event_name.to_lowercase().replace(['.', '$'], "-");
        let metadata: Map<String, Value> = body["metadata"]
            .as_object()
            .map(|m| m.iter().take(10).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        if self.event_names.len() >= MAX_EVENT_NAMES && !self.event_names.contains(&event_name) {
            let message =
                format!("This workspace already has {MAX_EVENT_NAMES} active event names; archive some first");
            return error(400, "event_name_limit_reached", &message);
        }
        if self.event_keys.insert((contact_id.clone(), event_name.clone(), created_at)) {
            self.event_names.insert(event_name.clone());
            self.events_by_contact.entry(contact_id.clone()).or_default().push(self.events.len());
            self.events.push(DataEvent { contact_id, event_name, created_at, metadata });
            self.changes += 1;
        } else {
            self.duplicate_events += 1;
        }
        SandboxResponse { status: 202, headers: Vec::new(), body: None, delay: Duration::ZERO }
    }
}

/// Refuses event metadata of a type the spec does not list (2.16, lines 16078-16092): strings, numbers, `_date` keys
/// in Unix seconds, rich links `{url, value}` and money `{amount, currency}` with a positive integer amount in cents.
/// Booleans, nulls, arrays and other objects are refused (unverified: Intercom may drop them instead).
fn refuse_metadata(metadata: Option<&Value>) -> Option<SandboxResponse> {
    let metadata = match metadata? {
        Value::Object(metadata) => metadata,
        _ => return Some(error(400, "parameter_invalid", "'metadata' must be an object")),
    };
    let refuse = |key: &str, why: &str| Some(error(400, "parameter_invalid", &format!("Metadata '{key}' {why}")));
    for (key, value) in metadata {
        let keys = |o: &Map<String, Value>, a: &str, b: &str| o.len() == 2 && o.contains_key(a) && o.contains_key(b);
        match value {
            Value::String(_) | Value::Number(_) if key.ends_with("_date") && !(value.is_i64() || value.is_u64()) => {
                return refuse(key, "must be a date in Unix seconds (an integer): its key ends in _date");
            }
            Value::String(_) | Value::Number(_) => {}
            Value::Object(link) if keys(link, "url", "value") => {
                if !(link["url"].is_string() && link["value"].is_string()) {
                    return refuse(key, "is a rich link: its url and value must be strings");
                }
            }
            Value::Object(money) if keys(money, "amount", "currency") => {
                if money["amount"].as_u64().is_none_or(|amount| amount == 0) {
                    return refuse(key, "is a monetary amount: its amount must be a positive integer (cents)");
                }
                if !money["currency"].is_string() {
                    return refuse(key, "is a monetary amount: its currency must be a string");
                }
            }
            _ => {
                return refuse(
                    key,
                    "must be a string, a number, a rich link {url, value} or a monetary amount {amount, currency}",
                );
            }
        }
    }
    None
}
