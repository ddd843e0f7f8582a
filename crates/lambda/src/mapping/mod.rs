//! One event → the Intercom operations it plans (pure: the forwarder resolves contacts and makes the calls).

mod identify;
mod metadata;
mod values;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::{Event, EventType, RawObject};
use crate::settings::{Settings, Skip, Verdict};
use identify::identify;
use metadata::{metadata, submit, view_metadata};
use values::{Attributes, company_integer, flatten_attribute, unix_seconds};
pub use values::{Dropped, attribute_name_problem};

/// Intercom keeps at most this many metadata keys on an event.
pub(crate) const MAX_METADATA_KEYS: usize = 10;

/// How an operation names the contact it is about; the forwarder turns it into Intercom's contact id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKey {
    /// A user, by the event's userId.
    ExternalId(String),
    /// A lead, by email (the event has no userId).
    Email(String),
}

/// A contact's role in Intercom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    User,
    Lead,
}

/// Create or update a contact.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContactUpsert {
    pub(crate) key: ContactKey,
    pub(crate) role: Role,
    /// Intercom's own fields (`email`, `name`, `signed_up_at`…); `owner_id` is the admin id's text (`"991266252"`),
    /// which the request builder writes as the API version wants.
    pub(crate) attributes: Map<String, Value>,
    /// A `null` clears the attribute: it is sent, but creates no attribute Intercom lacks.
    pub(crate) custom_attributes: Map<String, Value>,
    /// Names, in `custom_attributes` order, of the custom attributes holding a time in Unix seconds: an attribute
    /// Intercom lacks is created with data_type `date`. Not serialised when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) dates: Vec<String>,
}

/// Create or update a company by its `company_id`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompanyUpsert {
    pub(crate) company_id: String,
    pub(crate) attributes: Map<String, Value>,
    /// As [`ContactUpsert::custom_attributes`].
    pub(crate) custom_attributes: Map<String, Value>,
    /// As [`ContactUpsert::dates`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) dates: Vec<String>,
}

/// Submit a data event (`POST /events`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventSubmission {
    pub(crate) contact: ContactKey,
    pub(crate) event_name: String,
    /// Unix seconds.
    pub created_at: i64,
    pub(crate) metadata: Map<String, Value>,
}

/// One planned Intercom operation, in the order they must run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    UpsertContact(ContactUpsert),
    SubmitEvent(EventSubmission),
    UpsertCompany(CompanyUpsert),
    /// Attach the contact to the company (the forwarder looks up Intercom's id for `company_id`).
    AttachCompany {
        contact: ContactKey,
        company_id: String,
    },
    DetachCompany {
        contact: ContactKey,
        company_id: String,
    },
    /// Alias: `from` (the previous id) becomes `into` (the new userId): merged when both exist, renamed when only `from` does.
    Merge {
        from: ContactKey,
        into: ContactKey,
    },
    /// An identify naming both the user and the visitor they were: the visitor's lead, if Intercom holds one the relay
    /// knows of, is merged into the user.
    MergeVisitor {
        anonymous_id: String,
        into: ContactKey,
    },
    /// `traits.tags` of an identify: the contact (just upserted) carries these tags; with `remove_missing`, only these.
    TagContact {
        contact: ContactKey,
        tags: Vec<String>,
        remove_missing: bool,
    },
    /// `traits.tags` of a group: the company (just upserted) carries these tags; with `remove_missing`, only these.
    TagCompany {
        company_id: String,
        tags: Vec<String>,
        remove_missing: bool,
    },
}

/// The custom attribute a lead made from a visitor carries their anonymousId in: leads hold no external_id, and an
/// alias or a later identify names the visitor by nothing else.
pub(crate) const ANONYMOUS_ID_ATTRIBUTE: &str = "anonymous_id";

/// What one event plans, and what it leaves out.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    pub operations: Vec<Operation>,
    pub(crate) dropped: Vec<Dropped>,
    /// The only custom attributes it may create, when it may not create any it likes: an event of a browser key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) may_create: Option<std::collections::BTreeSet<String>>,
}

/// What only the business decides, never a browser key (anyone may send with one): the contact's owner and email
/// consent, and tags.
const SERVER_ONLY_FIELDS: [(&str, &str); 2] =
    [("owner_id", "traits.owner_id"), ("unsubscribed_from_emails", "traits.unsubscribedFromEmails")];

impl Plan {
    /// Every contact the plan names (a user by external_id, a lead by email), as often as named.
    pub(crate) fn contacts(&self) -> impl Iterator<Item = &ContactKey> {
        self.operations.iter().flat_map(|operation| {
            let (first, second) = match operation {
                Operation::UpsertContact(upsert) => (Some(&upsert.key), None),
                Operation::SubmitEvent(submission) => (Some(&submission.contact), None),
                Operation::AttachCompany { contact, .. }
                | Operation::DetachCompany { contact, .. }
                | Operation::TagContact { contact, .. } => (Some(contact), None),
                Operation::Merge { from, into } => (Some(from), Some(into)),
                Operation::MergeVisitor { into, .. } => (Some(into), None),
                Operation::UpsertCompany(_) | Operation::TagCompany { .. } => (None, None),
            };
            first.into_iter().chain(second)
        })
    }

    /// The plan as an event sent with a browser key may have it: no owner, no email consent, no tags, and custom
    /// attributes created only when `settings` name them (`attributes.browser_create`).
    pub(crate) fn for_browser_key(mut self, settings: &Settings) -> Plan {
        let only_server = "only a server key may set this (a browser key is public)";
        let mut dropped = Vec::new();
        let mut creatable = std::collections::BTreeSet::new();
        self.operations.retain_mut(|operation| match operation {
            Operation::UpsertContact(upsert) => {
                for (field, path) in SERVER_ONLY_FIELDS {
                    if upsert.attributes.remove(field).is_some() {
                        dropped.push(Dropped { path: path.into(), reason: only_server });
                    }
                }
                creatable.extend(upsert.custom_attributes.keys().filter(|n| settings.browser_may_create(n)).cloned());
                true
            }
            Operation::UpsertCompany(company) => {
                creatable.extend(company.custom_attributes.keys().filter(|n| settings.browser_may_create(n)).cloned());
                true
            }
            Operation::TagContact { .. } | Operation::TagCompany { .. } => {
                dropped.push(Dropped { path: "traits.tags".into(), reason: only_server });
                false
            }
            _ => true,
        });
        self.dropped.extend(dropped);
        self.may_create = Some(creatable);
        self
    }
}

/// Why an event plans nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// Nothing Intercom can hold: acknowledged and logged with the reason, never dead-lettered.
    Skipped(&'static str),
    /// The destination settings say no: acknowledged and logged with the rule, never dead-lettered.
    SkippedBy(Skip),
    /// The event cannot be read (it did not come through ingest): a permanent failure.
    Unreadable(String),
}

/// The reason an event that names no contact is skipped.
pub const NO_CONTACT_IDENTIFIER: &str = "no_contact_identifier";

/// Plans the Intercom operations for `event` under the default settings.
pub fn map_event(event: &Event) -> Result<Plan, Unmapped> {
    map_with(event, Settings::defaults())
}

/// Plans the Intercom operations for `event` under `settings`: nothing when they skip it, else the operations with the
/// names and identity they choose.
///
/// Free-form objects are parsed only as far as the event's type needs: `context` is large and rarely matters, so only the
/// member asked for is read.
pub fn map_with(event: &Event, settings: &Settings) -> Result<Plan, Unmapped> {
    let event_name = match settings.evaluate(event) {
        Verdict::Skip(skip) => return Err(Unmapped::SkippedBy(skip)),
        Verdict::Forward { event_name } => event_name.unwrap_or_default(),
    };
    let mut plan = Plan::default();
    match event.kind {
        EventType::Identify => {
            let traits = object(&event.traits)?;
            identify(event, &traits, settings, &mut plan)?
        }
        EventType::Track => {
            let properties = event.properties.as_ref().map(RawObject::members).unwrap_or_default();
            let contact = contact_key(event, settings, || {
                let email = properties.get("email").and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
                Ok(email.filter(|e| e.contains('@')).map(|e| e.trim().to_owned()).or(context_email(event)?))
            })?;
            let metadata = metadata(&properties, &mut plan.dropped)?;
            plan.operations.push(submit(contact, event_name, event, metadata));
        }
        EventType::Page | EventType::Screen => {
            let contact = contact_key(event, settings, || context_email(event))?;
            let properties = object(&event.properties)?;
            let page = match context_member(event, "page")? {
                Some(Value::Object(page)) => page,
                _ => Map::new(),
            };
            let metadata = view_metadata(event, &properties, &page);
            plan.operations.push(submit(contact, event_name, event, metadata));
        }
        EventType::Group => {
            let contact = contact_key(event, settings, || context_email(event))?;
            let traits = object(&event.traits)?;
            let company_id = event.group_id.clone().unwrap_or_default();
            let tags = traits.get("tags").and_then(|tags| tag_names(tags, "traits.tags", settings, &mut plan.dropped));
            let fields: Map<String, Value> = traits.into_iter().filter(|(name, _)| name != "tags").collect();
            plan.operations.push(Operation::UpsertCompany(company(
                company_id.clone(),
                &fields,
                "traits",
                &mut plan.dropped,
            )));
            plan.operations.push(Operation::AttachCompany { contact, company_id: company_id.clone() });
            if let Some(tags) = tags {
                let remove_missing = settings.tags().remove_missing;
                plan.operations.push(Operation::TagCompany { company_id, tags, remove_missing });
            }
        }
        EventType::Alias => {
            let (Some(previous), Some(user)) = (&event.previous_id, &event.user_id) else {
                return Err(Unmapped::Skipped(NO_CONTACT_IDENTIFIER));
            };
            let (from, into) = (ContactKey::ExternalId(previous.clone()), ContactKey::ExternalId(user.clone()));
            plan.operations.push(Operation::Merge { from, into });
        }
    }
    Ok(plan)
}

fn unreadable(error: serde_json::Error) -> Unmapped {
    Unmapped::Unreadable(error.to_string())
}

fn object(raw: &Option<RawObject>) -> Result<Map<String, Value>, Unmapped> {
    raw.as_ref().map(RawObject::to_map).transpose().map(Option::unwrap_or_default).map_err(unreadable)
}

/// One member of `context`, parsed.
fn context_member(event: &Event, key: &str) -> Result<Option<Value>, Unmapped> {
    let Some(context) = &event.context else { return Ok(None) };
    context.members().get(key).map(|raw| serde_json::from_str(raw.get())).transpose().map_err(unreadable)
}

/// `context.traits.email`.
fn context_email(event: &Event) -> Result<Option<String>, Unmapped> {
    Ok(context_member(event, "traits")?.as_ref().and_then(Value::as_object).and_then(email))
}

/// Who the event is about: its userId; else its anonymousId when the settings send it; else a lead by the email
/// `fallback` finds, when the settings allow leads.
fn contact_key(
    event: &Event,
    settings: &Settings,
    fallback: impl FnOnce() -> Result<Option<String>, Unmapped>,
) -> Result<ContactKey, Unmapped> {
    if let Some(id) = user_id(event, settings) {
        return Ok(ContactKey::ExternalId(id.to_owned()));
    }
    let email = fallback()?.ok_or(Unmapped::Skipped(NO_CONTACT_IDENTIFIER))?;
    lead_allowed(settings)?;
    Ok(ContactKey::Email(email))
}

/// The contact's external_id: the userId, else the anonymousId when `identity.send_anonymous_id` is set.
fn user_id<'e>(event: &'e Event, settings: &Settings) -> Option<&'e str> {
    let anonymous = event.anonymous_id.as_deref().filter(|_| settings.identity().send_anonymous_id);
    event.user_id.as_deref().or(anonymous)
}

fn lead_allowed(settings: &Settings) -> Result<(), Unmapped> {
    if settings.identity().lead_from_email {
        return Ok(());
    }
    Err(Unmapped::SkippedBy(Skip {
        rule: "identity.lead_from_email".into(),
        reason: "the event has no userId and leads are not made from email".into(),
    }))
}

fn email(source: &Map<String, Value>) -> Option<String> {
    source.get("email")?.as_str().map(str::trim).filter(|e| e.contains('@')).map(str::to_owned)
}

/// The tag names a `tags` value holds: trimmed, each once (Intercom's names are case-insensitive), empty and non-text
/// ones left out with the reason; `None` when it plans nothing (no list, an empty one that would remove nothing, or
/// one whose every name was refused: only a list written empty clears the tags under `remove_missing`).
fn tag_names(value: &Value, path: &str, settings: &Settings, dropped: &mut Vec<Dropped>) -> Option<Vec<String>> {
    let Value::Array(items) = value else {
        dropped.push(Dropped { path: path.into(), reason: "tags must be a list of tag names" });
        return None;
    };
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let reason = match item.as_str().map(str::trim) {
            None => "a tag name is text",
            Some("") => "an empty tag name",
            Some(name) if names.iter().any(|n| n.to_lowercase() == name.to_lowercase()) => {
                "the same tag as an earlier one (Intercom's tag names ignore case)"
            }
            Some(name) => {
                names.push(name.to_owned());
                continue;
            }
        };
        dropped.push(Dropped { path: format!("{path}[{index}]"), reason });
    }
    (!names.is_empty() || (items.is_empty() && settings.tags().remove_missing)).then_some(names)
}

/// Traits that map to Intercom's own company fields, or are handled apart.
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

fn company(company_id: String, fields: &Map<String, Value>, path: &str, dropped: &mut Vec<Dropped>) -> CompanyUpsert {
    let attributes = company_fields(fields, path, dropped);
    let mut custom = Attributes::default();
    for (name, value) in fields.iter().filter(|(name, _)| !COMPANY_FIELDS.contains(&name.as_str())) {
        flatten_attribute(name, value, path, &mut custom, dropped);
    }
    CompanyUpsert { company_id, attributes, custom_attributes: custom.values, dates: custom.dates }
}

/// The traits that are Intercom's own company fields.
fn company_fields(fields: &Map<String, Value>, path: &str, dropped: &mut Vec<Dropped>) -> Map<String, Value> {
    let mut attributes = Map::new();
    for field in ["name", "plan", "website", "industry"] {
        if let Some(value) = fields.get(field).and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty()) {
            attributes.insert(field.into(), value.into());
        }
    }
    let integers = [
        ("size", first_of(fields, ["employees", "size"])),
        ("monthly_spend", first_of(fields, ["monthly_spend", "monthlySpend"])),
    ];
    for (field, sent) in integers {
        let Some((name, value)) = sent else { continue };
        match company_integer(value) {
            Ok((number, capped)) => {
                attributes.insert(field.into(), Value::from(number));
                if let Some(reason) = capped {
                    dropped.push(Dropped { path: format!("{path}.{name}"), reason });
                }
            }
            Err(reason) => dropped.push(Dropped { path: format!("{path}.{name}"), reason }),
        }
    }
    if let Some(created) = fields.get("createdAt") {
        match unix_seconds(created) {
            Some(seconds) => _ = attributes.insert("remote_created_at".into(), Value::from(seconds)),
            None => dropped.push(Dropped { path: format!("{path}.createdAt"), reason: "not a time Intercom can read" }),
        }
    }
    attributes
}

/// The first of `names` that `fields` holds, with its value.
fn first_of<'f, const N: usize>(
    fields: &'f Map<String, Value>,
    names: [&'static str; N],
) -> Option<(&'static str, &'f Value)> {
    names.into_iter().find_map(|name| Some((name, fields.get(name)?)))
}

#[cfg(test)]
mod tests;
