//! One event → the Intercom operations it plans (pure: the forwarder resolves contacts and makes the calls).

mod values;

use serde::Serialize;
use serde_json::map::Entry;
use serde_json::{Map, Value, json};

use serde_json::value::RawValue;

use crate::event::{Event, EventType, RawObject, TopLevel};
use crate::settings::{Settings, Skip, Verdict};
use values::{Attributes, Location, NAME_TAKEN, admin_id, cents, company_integer, flatten_attribute, unix_seconds};
pub use values::{Dropped, attribute_name_problem};

/// Intercom keeps at most this many metadata keys on an event.
pub const MAX_METADATA_KEYS: usize = 10;

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
pub enum Role {
    User,
    Lead,
}

/// Create or update a contact.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContactUpsert {
    pub key: ContactKey,
    pub role: Role,
    /// Intercom's own fields (`email`, `name`, `signed_up_at`…); `owner_id` is the admin id's text (`"991266252"`),
    /// which the request builder writes as the API version wants.
    pub attributes: Map<String, Value>,
    /// A `null` clears the attribute: it is sent, but creates no attribute Intercom lacks.
    pub custom_attributes: Map<String, Value>,
    /// Names, in `custom_attributes` order, of the custom attributes holding a time in Unix seconds: an attribute
    /// Intercom lacks is created with data_type `date`. Not serialised when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dates: Vec<String>,
}

/// Create or update a company by its `company_id`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompanyUpsert {
    pub company_id: String,
    pub attributes: Map<String, Value>,
    /// As [`ContactUpsert::custom_attributes`].
    pub custom_attributes: Map<String, Value>,
    /// As [`ContactUpsert::dates`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dates: Vec<String>,
}

/// Submit a data event (`POST /events`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventSubmission {
    pub contact: ContactKey,
    pub event_name: String,
    /// Unix seconds.
    pub created_at: i64,
    pub metadata: Map<String, Value>,
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
pub const ANONYMOUS_ID_ATTRIBUTE: &str = "anonymous_id";

/// What one event plans, and what it leaves out.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    pub operations: Vec<Operation>,
    pub dropped: Vec<Dropped>,
    /// The only custom attributes it may create, when it may not create any it likes: an event of a browser key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub may_create: Option<std::collections::BTreeSet<String>>,
}

/// What only the business decides, never a browser key (anyone may send with one): the contact's owner and email
/// consent, and tags.
const SERVER_ONLY_FIELDS: [(&str, &str); 2] =
    [("owner_id", "traits.owner_id"), ("unsubscribed_from_emails", "traits.unsubscribedFromEmails")];

impl Plan {
    /// Every contact the plan names (a user by external_id, a lead by email), as often as named.
    pub fn contacts(&self) -> impl Iterator<Item = &ContactKey> {
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
    pub fn for_browser_key(mut self, settings: &Settings) -> Plan {
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

/// Traits that map to Intercom's own contact fields, or are handled apart; the rest become custom attributes.
const CONTACT_FIELDS: [&str; 15] = [
    "tags",
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
    "company",
    "companies",
];

/// An identify: the contact upsert (its fields, then its custom attributes), then its companies.
fn identify(event: &Event, traits: &Map<String, Value>, settings: &Settings, plan: &mut Plan) -> Result<(), Unmapped> {
    let (key, role) = identify_contact(event, traits, settings)?;
    let attributes = contact_fields(event, traits, settings, &mut plan.dropped)?;
    let mut custom = contact_custom_attributes(event, traits, settings, &mut plan.dropped)?;
    let visitor = event.anonymous_id.as_deref().filter(|anonymous| Some(*anonymous) != user_id(event, settings));
    if let (Role::Lead, Some(anonymous_id)) = (role, visitor) {
        custom.values.entry(ANONYMOUS_ID_ATTRIBUTE).or_insert_with(|| anonymous_id.into());
    }
    plan.operations.push(Operation::UpsertContact(ContactUpsert {
        key: key.clone(),
        role,
        attributes,
        custom_attributes: custom.values,
        dates: custom.dates,
    }));
    if let (Role::User, Some(anonymous_id)) = (role, visitor) {
        plan.operations.push(Operation::MergeVisitor { anonymous_id: anonymous_id.to_owned(), into: key.clone() });
    }
    identify_companies(traits, &key, plan);
    // The traits' own list, else `context.traits.tags` (where analytics.js keeps traits it remembers).
    let context_traits = context_member(event, "traits")?;
    let listed = match traits.get("tags") {
        Some(tags) => Some((tags, "traits.tags")),
        None => context_traits.as_ref().and_then(|t| t.get("tags")).map(|tags| (tags, "context.traits.tags")),
    };
    if let Some(tags) = listed.and_then(|(tags, path)| tag_names(tags, path, settings, &mut plan.dropped)) {
        let remove_missing = settings.tags().remove_missing;
        plan.operations.push(Operation::TagContact { contact: key, tags, remove_missing });
    }
    Ok(())
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

/// Who an identify is about: a user by userId, else a lead by the email trait when the settings allow leads.
fn identify_contact(
    event: &Event,
    traits: &Map<String, Value>,
    settings: &Settings,
) -> Result<(ContactKey, Role), Unmapped> {
    match (user_id(event, settings), email(traits)) {
        (Some(user_id), _) => Ok((ContactKey::ExternalId(user_id.to_owned()), Role::User)),
        (None, Some(email)) => {
            lead_allowed(settings)?;
            Ok((ContactKey::Email(email), Role::Lead))
        }
        (None, None) => Err(Unmapped::Skipped(NO_CONTACT_IDENTIFIER)),
    }
}

/// The traits that are Intercom's own contact fields.
fn contact_fields(
    event: &Event,
    traits: &Map<String, Value>,
    settings: &Settings,
    dropped: &mut Vec<Dropped>,
) -> Result<Map<String, Value>, Unmapped> {
    // An event sent with `context.active: false` (a server acting for the user) says nothing about when they were seen.
    let seen = settings.identify().update_last_seen && context_member(event, "active")? != Some(Value::Bool(false));
    let mut attributes = Map::new();
    let text = |name: &str| traits.get(name).and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty());
    for field in ["email", "phone", "avatar"] {
        if let Some(value) = text(field) {
            attributes.insert(field.into(), value.into());
        }
    }
    let full_name = match (text("firstName"), text("lastName")) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (first, last) => first.or(last).map(str::to_owned),
    };
    if let Some(name) = text("name").map(str::to_owned).or(full_name) {
        attributes.insert("name".into(), name.into());
    }
    if let Some(created) = traits.get("createdAt") {
        match unix_seconds(created) {
            Some(seconds) => _ = attributes.insert("signed_up_at".into(), Value::from(seconds)),
            None => dropped.push(Dropped { path: "traits.createdAt".into(), reason: "not a time Intercom can read" }),
        }
    }
    if seen {
        attributes.insert("last_seen_at".into(), Value::from(event.timestamp.unix_timestamp()));
    }
    let unsubscribed = traits.get("unsubscribedFromEmails").or_else(|| traits.get("unsubscribed_from_emails"));
    if let Some(value) = unsubscribed.and_then(Value::as_bool) {
        attributes.insert("unsubscribed_from_emails".into(), value.into());
    }
    if let Some((name, owner)) = first_of(traits, ["owner_id", "ownerId"]) {
        match admin_id(owner) {
            Some(id) => _ = attributes.insert("owner_id".into(), Value::String(id)),
            None => dropped.push(Dropped {
                path: format!("traits.{name}"),
                reason: "an owner_id is an admin's id: a whole number or its digits",
            }),
        }
    }
    Ok(attributes)
}

/// The first of `names` that `fields` holds, with its value.
fn first_of<'f, const N: usize>(
    fields: &'f Map<String, Value>,
    names: [&'static str; N],
) -> Option<(&'static str, &'f Value)> {
    names.into_iter().find_map(|name| Some((name, fields.get(name)?)))
}

/// The other traits the settings forward, flattened, then the context members they ask for.
fn contact_custom_attributes(
    event: &Event,
    traits: &Map<String, Value>,
    settings: &Settings,
    dropped: &mut Vec<Dropped>,
) -> Result<Attributes, Unmapped> {
    let mut custom = Attributes::default();
    for (name, value) in traits.iter().filter(|(name, _)| !CONTACT_FIELDS.contains(&name.as_str())) {
        if settings.forwards_attribute(name) {
            flatten_attribute(name, value, "traits", &mut custom, dropped);
        } else {
            dropped.push(Dropped { path: format!("traits.{name}"), reason: "attributes.allow does not list it" });
        }
    }
    if settings.identify().include_context {
        context_attributes(event, &mut custom.values, dropped)?;
    }
    Ok(custom)
}

/// The companies of an identify: upserted and attached, or detached when marked `remove`.
///
/// Both may be sent: `company` first, then the list; a company named twice is planned once, as first sent.
fn identify_companies(traits: &Map<String, Value>, key: &ContactKey, plan: &mut Plan) {
    let listed = match traits.get("companies") {
        Some(Value::Array(list)) => list.as_slice(),
        _ => &[],
    };
    let single = traits.get("company").map(|company| (company, "traits.company".to_owned()));
    let companies =
        single.into_iter().chain(listed.iter().enumerate().map(|(i, c)| (c, format!("traits.companies[{i}]"))));
    for (value, path) in companies {
        let Some(fields) = value.as_object() else {
            plan.dropped.push(Dropped { path, reason: "a company must be an object with an id" });
            continue;
        };
        let Some(company_id) = fields.get("id").or_else(|| fields.get("company_id")).and_then(id_text) else {
            plan.dropped.push(Dropped { path, reason: "a company needs an id (its company_id in Intercom)" });
            continue;
        };
        if plan.operations.iter().any(|op| names_company(op, &company_id)) {
            plan.dropped.push(Dropped { path, reason: "an earlier company has the same id" });
            continue;
        }
        let contact = key.clone();
        if fields.get("remove") == Some(&Value::Bool(true)) {
            plan.operations.push(Operation::DetachCompany { contact, company_id });
        } else {
            plan.operations.push(Operation::UpsertCompany(company(
                company_id.clone(),
                fields,
                &path,
                &mut plan.dropped,
            )));
            plan.operations.push(Operation::AttachCompany { contact, company_id });
        }
    }
    if traits.get("companies").is_some_and(|companies| !companies.is_array()) {
        plan.dropped.push(Dropped { path: "traits.companies".into(), reason: "companies must be a list of companies" });
    }
}

/// The members of `context` that `identify.include_context` sends, as `context_<member>[_<field>]`.
const CONTEXT_ATTRIBUTES: [(&str, &[&str]); 5] = [
    ("device", &["type", "manufacturer", "model", "name"]),
    ("os", &["name", "version"]),
    ("app", &["name", "version", "build", "namespace"]),
    ("locale", &[]),
    ("timezone", &[]),
];

/// The device, OS, app, locale and timezone as custom attributes; a trait of the same name wins.
fn context_attributes(event: &Event, out: &mut Map<String, Value>, dropped: &mut Vec<Dropped>) -> Result<(), Unmapped> {
    for (member, fields) in CONTEXT_ATTRIBUTES {
        let Some(value) = context_member(event, member)? else { continue };
        let values: Vec<(String, String, &Value)> = if fields.is_empty() {
            vec![(format!("context_{member}"), format!("context.{member}"), &value)]
        } else {
            fields
                .iter()
                .filter_map(|field| {
                    Some((format!("context_{member}_{field}"), format!("context.{member}.{field}"), value.get(field)?))
                })
                .collect()
        };
        for (name, path, value) in values {
            match value {
                Value::String(text) if text.chars().count() > 255 => {
                    dropped.push(Dropped { path, reason: "Intercom attribute strings hold at most 255 characters" })
                }
                Value::String(text) if text.trim().is_empty() => {}
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    if let Entry::Vacant(slot) = out.entry(name) {
                        slot.insert(value.clone());
                    }
                }
                _ => dropped.push(Dropped { path, reason: "context attributes must be strings, numbers or booleans" }),
            }
        }
    }
    Ok(())
}

/// Whether `operation` attaches or detaches the company `company_id`.
fn names_company(operation: &Operation, company_id: &str) -> bool {
    match operation {
        Operation::AttachCompany { company_id: id, .. } | Operation::DetachCompany { company_id: id, .. } => {
            id == company_id
        }
        _ => false,
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
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

fn submit(contact: ContactKey, name: &str, event: &Event, metadata: Map<String, Value>) -> Operation {
    // Intercom turns '.' and '$' in event names into '-'; doing it here keeps what we log equal to what Intercom holds.
    let event_name = name.trim().replace(['.', '$'], "-");
    Operation::SubmitEvent(EventSubmission {
        contact,
        event_name,
        created_at: event.timestamp.unix_timestamp(),
        metadata,
    })
}

/// Keys whose amount becomes the event's `price`, in order of preference.
const MONEY_KEYS: [&str; 3] = ["revenue", "total", "value"];

/// Why Intercom's limit leaves a metadata key out.
const OVER_CAP: &str = "Intercom keeps at most 10 metadata keys";

/// Track metadata: money first as `price` (a `price` property then gives way to it), then the properties in the order
/// sent, the first value of each flattened name, at most [`MAX_METADATA_KEYS`].
///
/// The money is the first of [`MONEY_KEYS`] with a positive amount: Intercom's `price.amount` is a positive integer, so a
/// refund's negative revenue or a zero total is sent as the plain number it is, under its own key, as is `currency`.
///
/// Read from the raw members: a list is dropped without being parsed, and values are moved, not copied.
fn metadata(properties: &TopLevel<'_>, dropped: &mut Vec<Dropped>) -> Result<Map<String, Value>, Unmapped> {
    let parse = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).map_err(unreadable);
    // Sized by what was sent: most events send fewer properties than the cap, and a smaller block is cheaper to get.
    let mut flat = Map::with_capacity(properties.0.len().min(MAX_METADATA_KEYS));
    let mut money = None;
    for key in MONEY_KEYS {
        if let Some(amount) = properties.get(key).map(parse).transpose()?.as_ref().and_then(cents).filter(|c| *c > 0) {
            money = Some((key, amount));
            break;
        }
    }
    if let Some((_, amount)) = money {
        let sent = properties.get("currency").map(parse).transpose()?;
        let code = sent.as_ref().and_then(Value::as_str).map(str::trim);
        let code = code.filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()));
        if sent.is_some() && code.is_none() {
            dropped.push(Dropped {
                path: "properties.currency".into(),
                reason: "not a 3-letter currency code: USD was used",
            });
        }
        let currency = code.unwrap_or("USD").to_ascii_lowercase();
        flat.insert("price".into(), json!({"amount": amount, "currency": currency}));
    }
    let root = Location::root("properties");
    for (key, raw) in &properties.0 {
        if let Some((money_key, _)) = money {
            if key == money_key || key == "currency" {
                continue;
            }
            // Segment's "Product Viewed" sends the amount again as `price`: the money, with its currency, is kept.
            if key == "price" {
                dropped.push(Dropped {
                    path: "properties.price".into(),
                    reason: "price holds the amount of revenue, total or value",
                });
                continue;
            }
        }
        if raw.get().starts_with('[') && !key.ends_with("_date") {
            dropped.push(Dropped { path: format!("properties.{key}"), reason: "Intercom metadata cannot hold lists" });
            continue;
        }
        metadata_value(key, parse(raw)?, root.child(key), &mut flat, dropped);
    }
    Ok(flat)
}

/// Adds `value` (sent at `at`) to the metadata as `key`, flattening objects into `parent_child` keys.
fn metadata_value(key: &str, value: Value, at: Location<'_>, out: &mut Map<String, Value>, dropped: &mut Vec<Dropped>) {
    match value {
        // A rich link: Intercom shows `value` linked to `url`.
        Value::Object(link)
            if link.len() == 2 && link.get("url").is_some_and(Value::is_string) && link.contains_key("value") =>
        {
            keep(key, Value::Object(link), at, out, dropped);
        }
        Value::Object(fields) => {
            for (child, value) in fields {
                metadata_value(&format!("{key}_{child}"), value, at.child(&child), out, dropped);
            }
        }
        _ if key.ends_with("_date") => match unix_seconds(&value) {
            Some(seconds) => keep(key, Value::from(seconds), at, out, dropped),
            None => {
                dropped.push(Dropped { path: at.to_string(), reason: "a _date key needs a time Intercom can read" })
            }
        },
        Value::Array(_) => {
            dropped.push(Dropped { path: at.to_string(), reason: "Intercom metadata cannot hold lists" })
        }
        Value::Null => dropped.push(Dropped { path: at.to_string(), reason: "Intercom metadata cannot hold null" }),
        // Booleans are not among Intercom's metadata types (strings, numbers, `_date` times, links, rich links, money):
        // their text is a string Intercom holds whether or not it would take a boolean.
        Value::Bool(flag) => keep(key, Value::from(if flag { "true" } else { "false" }), at, out, dropped),
        scalar => keep(key, scalar, at, out, dropped),
    }
}

/// Inserts `key` unless an earlier value holds it (the first sent wins) or Intercom's cap is reached; capping here,
/// where the value's location is known, names what is left out as it was sent.
fn keep(key: &str, value: Value, at: Location<'_>, out: &mut Map<String, Value>, dropped: &mut Vec<Dropped>) {
    let full = out.len() >= MAX_METADATA_KEYS;
    // One lookup, and the key copied once, as a plain insert would: the check costs nothing when names differ.
    let reason = match out.entry(key) {
        Entry::Occupied(_) => NAME_TAKEN,
        Entry::Vacant(_) if full => OVER_CAP,
        Entry::Vacant(slot) => {
            slot.insert(value);
            return;
        }
    };
    dropped.push(Dropped { path: at.to_string(), reason });
}

/// Page and screen views: what the view says about itself.
fn view_metadata(event: &Event, properties: &Map<String, Value>, page: &Map<String, Value>) -> Map<String, Value> {
    let mut metadata = Map::new();
    let from =
        |key: &str| properties.get(key).or_else(|| page.get(key)).and_then(Value::as_str).filter(|v| !v.is_empty());
    let keys: &[&str] = match event.kind {
        EventType::Page => &["url", "path", "title", "referrer"],
        _ => &[],
    };
    for key in keys {
        if let Some(value) = from(key) {
            metadata.insert((*key).to_owned(), value.into());
        }
    }
    if let Some(view) = event.name.as_deref().filter(|n| !n.is_empty()) {
        metadata.insert("name".into(), view.into());
    }
    if let Some(category) = event.category.as_deref().filter(|c| !c.is_empty() && event.kind == EventType::Page) {
        metadata.insert("category".into(), category.into());
    }
    metadata
}

#[cfg(test)]
mod tests;
