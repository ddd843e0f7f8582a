//! An identify's operations: the contact upsert (Intercom's own fields, then custom attributes and context), its
//! companies, its tags.

use serde_json::map::Entry;
use serde_json::{Map, Value};

use super::values::{Attributes, admin_id, flatten_attribute, unix_seconds};
use super::{
    ANONYMOUS_ID_ATTRIBUTE, ContactKey, ContactUpsert, Dropped, NO_CONTACT_IDENTIFIER, Operation, Plan, Role, Unmapped,
    company, context_member, email, first_of, lead_allowed, tag_names, user_id,
};
use crate::event::Event;
use crate::settings::Settings;

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
pub(super) fn identify(
    event: &Event,
    traits: &Map<String, Value>,
    settings: &Settings,
    plan: &mut Plan,
) -> Result<(), Unmapped> {
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
