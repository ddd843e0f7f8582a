//! The fewest Intercom calls a day of events needs, worked out from the events alone (no relay code), to hold the
//! relay's calls against: 1 per page, screen or track of a user; 1 per identify or group whose facts changed (the
//! first of each person or company included); 1 per attach (the first time a user and a company are tied); 1 per new
//! custom attribute (each name once per model). What counts as a change:
//!
//! - an identify changes its person when a trait it sends differs from the value last written for that person
//!   (traits it leaves out are kept, as Intercom keeps them), or when its time is `last_seen_resolution` or more past
//!   the last_seen_at last written (an event with `context.active: false` says nothing of being seen);
//! - a group changes its company when a trait differs from the company's last ones, whichever user sent them; an
//!   identify's `traits.company` (an object with an id) is that company's traits and an attach, as a group would be.
//!
//! Events nobody can be found by cost nothing: pages and tracks of visitors who never identified (no userId), aliases
//! (here their previous ids never made a contact), identifies without a userId (no lead is made from an email unless
//! the settings say so).

// Each user (the figures bench, the integration tests) uses part of it.
#![allow(dead_code)]

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A contact's traits that are Intercom's own fields (or handled apart): every other one is a custom attribute. Kept
/// apart from `src/mapping`'s lists on purpose: the floor is worked out without the relay's code, to judge it.
const CONTACT_FIELDS: [&str; 15] = [
    "email",
    "phone",
    "name",
    "firstName",
    "lastName",
    "avatar",
    "createdAt",
    "unsubscribedFromEmails",
    "unsubscribed_from_emails",
    "owner_id",
    "ownerId",
    "id",
    "tags",
    "company",
    "companies",
];
/// A company's traits that are Intercom's own company fields (or its id).
const COMPANY_FIELDS: [&str; 12] = [
    "id",
    "company_id",
    "remove",
    "name",
    "plan",
    "employees",
    "size",
    "website",
    "industry",
    "monthly_spend",
    "monthlySpend",
    "createdAt",
];

/// The floor of a day, by what the calls are for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Floor {
    pub events: u64,
    /// Pages, screens and tracks of users: one call each.
    pub data_events: u64,
    /// Identifies that changed their person (a contact created or updated).
    pub contact_writes: u64,
    /// Groups (and identifies' companies) that changed their company.
    pub company_writes: u64,
    /// First ties of a user and a company.
    pub attaches: u64,
    /// Custom attribute names, each once per model (contact, company).
    pub attributes: u64,
}

impl Floor {
    pub(crate) fn calls(&self) -> u64 {
        self.data_events + self.contact_writes + self.company_writes + self.attaches + self.attributes
    }
}

#[derive(Default)]
struct Person {
    traits: Map<String, Value>,
    /// Unix seconds of the last_seen_at last written.
    seen: Option<i64>,
}

/// What has been written so far, as the day goes.
#[derive(Default)]
struct Written {
    people: HashMap<String, Person>,
    companies: HashMap<String, Map<String, Value>>,
    ties: HashSet<(String, String)>,
    attributes: HashSet<(&'static str, String)>,
}

/// The floor of `events` (in the order sent), with last_seen_at written again once it moved `last_seen_resolution`
/// seconds or more.
pub(crate) fn floor(events: &[Value], last_seen_resolution: i64) -> Floor {
    let mut floor = Floor { events: events.len() as u64, ..Floor::default() };
    let mut written = Written::default();
    for event in events {
        let Some(user) = event["userId"].as_str().filter(|id| !id.is_empty()) else { continue };
        let traits = event["traits"].as_object().cloned().unwrap_or_default();
        match event["type"].as_str() {
            Some("page" | "screen" | "track") => floor.data_events += 1,
            Some("identify") => {
                let seen = (event["context"]["active"] != false).then(|| unix_seconds(&event["timestamp"])).flatten();
                identify(user, &traits, seen, last_seen_resolution, &mut written, &mut floor);
            }
            Some("group") => {
                let Some(company) = id_text(&event["groupId"]) else { continue };
                company_and_tie(user, &company, &traits, &mut written, &mut floor);
            }
            _ => {}
        }
    }
    floor
}

fn identify(
    user: &str,
    traits: &Map<String, Value>,
    seen: Option<i64>,
    resolution: i64,
    written: &mut Written,
    floor: &mut Floor,
) {
    let custom = traits.iter().filter(|(name, _)| !CONTACT_FIELDS.contains(&name.as_str()));
    count_attributes("contact", custom, written, floor);
    let known = written.people.entry(user.to_owned());
    let mut changed = matches!(known, Entry::Vacant(_));
    let person = known.or_default();
    let facts = traits.iter().filter(|(name, _)| !matches!(name.as_str(), "company" | "companies"));
    for (name, value) in facts {
        if person.traits.get(name) != Some(value) {
            person.traits.insert(name.clone(), value.clone());
            changed = true;
        }
    }
    let moved = seen.is_some_and(|at| person.seen.is_none_or(|last| at - last >= resolution));
    if changed || moved {
        floor.contact_writes += 1;
        // The write carries the time seen, whichever fact made it.
        person.seen = seen.or(person.seen);
    }
    if let Some(company) = traits.get("company").and_then(Value::as_object)
        && let Some(id) = company.get("id").or_else(|| company.get("company_id")).and_then(id_text)
    {
        company_and_tie(user, &id, company, written, floor);
    }
}

/// A company's traits written when they changed, and the user tied to it the first time.
fn company_and_tie(user: &str, company: &str, traits: &Map<String, Value>, written: &mut Written, floor: &mut Floor) {
    let custom = traits.iter().filter(|(name, _)| !COMPANY_FIELDS.contains(&name.as_str()));
    count_attributes("company", custom, written, floor);
    let known = written.companies.entry(company.to_owned());
    let mut changed = matches!(known, Entry::Vacant(_));
    let held = known.or_default();
    for (name, value) in traits.iter().filter(|(name, _)| !matches!(name.as_str(), "id" | "company_id")) {
        if held.get(name) != Some(value) {
            held.insert(name.clone(), value.clone());
            changed = true;
        }
    }
    floor.company_writes += u64::from(changed);
    floor.attaches += u64::from(written.ties.insert((user.to_owned(), company.to_owned())));
}

/// Each custom attribute name not met before for `model`: objects flattened with `_` (Intercom's attributes are
/// flat), lists and nulls left out (Intercom's attributes hold neither).
fn count_attributes<'t>(
    model: &'static str,
    traits: impl Iterator<Item = (&'t String, &'t Value)>,
    written: &mut Written,
    floor: &mut Floor,
) {
    let mut names = Vec::new();
    for (name, value) in traits {
        flat_names(name, value, &mut names);
    }
    for name in names {
        floor.attributes += u64::from(written.attributes.insert((model, name)));
    }
}

fn flat_names(name: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            fields.iter().for_each(|(child, value)| flat_names(&format!("{name}_{child}"), value, out))
        }
        Value::Array(_) | Value::Null => {}
        _ => out.push(name.to_owned()),
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn unix_seconds(value: &Value) -> Option<i64> {
    Some(OffsetDateTime::parse(value.as_str()?, &Rfc3339).ok()?.unix_timestamp())
}

/// The floor's parts as a line of Markdown.
pub(crate) fn describe(floor: &Floor) -> String {
    format!(
        "{} calls: {} pages, screens and tracks + {} contact writes + {} company writes + {} attaches + {} new custom attributes",
        floor.calls(),
        floor.data_events,
        floor.contact_writes,
        floor.company_writes,
        floor.attaches,
        floor.attributes
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOUR: i64 = 3_600;

    fn at(minute: u32) -> String {
        format!("2026-01-01T{:02}:{:02}:00Z", minute / 60, minute % 60)
    }

    fn identify(user: &str, minute: u32, traits: Value) -> Value {
        json!({"type": "identify", "userId": user, "anonymousId": "a-1", "traits": traits, "timestamp": at(minute)})
    }

    fn group(user: &str, company: &str, minute: u32, traits: Value) -> Value {
        json!({"type": "group", "userId": user, "groupId": company, "traits": traits, "timestamp": at(minute)})
    }

    #[test]
    fn data_events_cost_one_call_each_and_a_visitors_or_an_alias_none() {
        let events = [
            json!({"type": "track", "userId": "u1", "event": "Signed In", "timestamp": at(0)}),
            json!({"type": "page", "userId": "u1", "timestamp": at(1)}),
            json!({"type": "screen", "userId": "u1", "timestamp": at(2)}),
            json!({"type": "page", "anonymousId": "visitor", "timestamp": at(3)}),
            json!({"type": "alias", "userId": "u1", "previousId": "visitor", "timestamp": at(4)}),
        ];
        let floor = floor(&events, HOUR);
        assert_eq!(floor, Floor { events: 5, data_events: 3, ..Floor::default() });
        assert_eq!(floor.calls(), 3);
    }

    #[test]
    fn the_same_identify_again_within_the_resolution_is_no_call_and_past_it_one() {
        let traits = json!({"email": "a@example.com", "plan": "pro"});
        let events: Vec<Value> = [0, 10, 59, 60, 61, 119, 125].map(|m| identify("u1", m, traits.clone())).into();
        // Written at 0 (new), 60 (seen an hour on), 125 (an hour past 60); `plan` is a new attribute once.
        assert_eq!(floor(&events, HOUR), Floor { events: 7, contact_writes: 3, attributes: 1, ..Floor::default() });
        // With no resolution every identify moves last_seen_at.
        assert_eq!(floor(&events, 0).contact_writes, 7);
    }

    #[test]
    fn a_changed_trait_is_a_write_and_a_trait_left_out_is_kept() {
        let events = [
            identify("u1", 0, json!({"email": "a@example.com", "plan": "free", "logins": 1})),
            identify("u1", 1, json!({"plan": "free"})),
            identify("u1", 2, json!({"plan": "pro"})),
            identify("u1", 3, json!({"email": "a@example.com", "logins": 1})),
            identify("u2", 4, json!({"email": "b@example.com", "plan": "pro", "address": {"city": "Paris"}})),
        ];
        let floor = floor(&events, HOUR);
        assert_eq!(floor.contact_writes, 3, "u1 new, u1's plan, u2 new");
        assert_eq!(floor.attributes, 3, "plan, logins, address_city");
    }

    #[test]
    fn an_identify_out_of_the_browser_session_says_nothing_of_being_seen() {
        let mut later = identify("u1", 120, json!({"plan": "pro"}));
        later["context"] = json!({"active": false});
        let events = [identify("u1", 0, json!({"plan": "pro"})), later];
        assert_eq!(floor(&events, HOUR).contact_writes, 1);
    }

    #[test]
    fn a_company_is_written_when_its_traits_change_and_each_user_tied_once() {
        let acme = json!({"name": "Acme", "plan": "pro", "region": "EU"});
        let events = [
            group("u1", "acme", 0, acme.clone()),
            group("u1", "acme", 1, acme.clone()),
            group("u2", "acme", 2, acme.clone()),
            group("u2", "acme", 3, json!({"name": "Acme", "plan": "enterprise"})),
            identify("u3", 4, json!({"company": {"id": "acme", "name": "Acme"}, "plan": "x"})),
            identify("u3", 5, json!({"company": {"id": "other", "name": "Other"}, "plan": "x"})),
        ];
        let floor = floor(&events, HOUR);
        assert_eq!(floor.company_writes, 3, "acme new, acme's plan, other new");
        assert_eq!(floor.attaches, 4, "u1, u2 and u3 to acme; u3 to other");
        assert_eq!(floor.contact_writes, 1, "u3 new; its later identify neither changed nor moved an hour");
        assert_eq!(floor.attributes, 2, "region of companies, plan of contacts");
        assert_eq!(
            describe(&floor),
            "10 calls: 0 pages, screens and tracks + 1 contact writes + 3 company writes + 4 attaches + 2 new custom attributes"
        );
    }

    #[test]
    fn a_page_load_day_costs_a_page_each_and_a_write_per_person_and_company_and_hour_seen() {
        use intercom_relay::local::{GenerateOptions, generate_page_loads};
        let start = OffsetDateTime::parse("2026-01-01T00:00:00Z", &Rfc3339).unwrap();
        let mut ndjson = Vec::new();
        let options = GenerateOptions { events: 2_000, users: 200, seed: 42, start, days: 1 };
        generate_page_loads(&options, &mut ndjson).unwrap();
        let events: Vec<Value> =
            String::from_utf8(ndjson).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let count = |kind: &str| events.iter().filter(|e| e["type"] == kind).count() as u64;
        let users: HashSet<&str> = events.iter().map(|e| e["userId"].as_str().unwrap()).collect();
        let grouping: HashSet<&str> =
            events.iter().filter(|e| e["type"] == "group").map(|e| e["userId"].as_str().unwrap()).collect();
        let companies: HashSet<&str> = events.iter().filter_map(|e| e["groupId"].as_str()).collect();
        let day = floor(&events, HOUR);
        assert_eq!(day.data_events, count("page"));
        assert_eq!(day.company_writes, companies.len() as u64, "each company once: its traits never change");
        assert_eq!(day.attaches, grouping.len() as u64);
        assert_eq!(day.attributes, 1, "the contacts' plan");
        // Each person once, then once an hour at most while they keep loading pages.
        assert!(day.contact_writes >= users.len() as u64 && day.contact_writes < count("identify"), "{day:?}");
        assert_eq!(floor(&events, 0).contact_writes, count("identify"));
    }
}
