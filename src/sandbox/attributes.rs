//! Data attributes: Intercom's standard ones, a workspace's custom ones, and the check of the values a write carries.

use serde_json::{Map, Value, json};

use super::state::{SandboxResponse, SandboxState, error, ok, query_param};
use intercom_relay_lambda::intercom::{DataAttribute, DataType, MAX_CUSTOM_ATTRIBUTES, Model};

/// A custom data attribute as the sandbox holds it: Intercom's shape (`intercom_relay_lambda::intercom::DataAttribute`, shared with
/// the forwarder), and what only an answer shows.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldAttribute {
    pub(crate) id: u64,
    pub(crate) attribute: DataAttribute,
    pub(crate) created_at: u64,
}

/// Shown (in the sandbox's state over HTTP) as `{id, data_type, options, archived, created_at}`, options only for a list.
impl serde::Serialize for HeldAttribute {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let attribute = &self.attribute;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("data_type", attribute.data_type.as_str())?;
        if !attribute.options.is_empty() {
            map.serialize_entry("options", &attribute.options)?;
        }
        map.serialize_entry("archived", &attribute.archived)?;
        map.serialize_entry("created_at", &self.created_at)?;
        map.end()
    }
}

/// Compares the data type, so `state.data_attributes["contact"]["plan"] == "string"` reads as it did when only the
/// type was held.
impl PartialEq<&str> for HeldAttribute {
    fn eq(&self, other: &&str) -> bool {
        self.attribute.data_type.as_str() == *other
    }
}

/// A custom data attribute the sandbox holds before the first call (`SandboxOptions::seed_attributes`), so a test can
/// start from an archived one or a list one without creating it.
#[derive(Clone, Debug, Default)]
pub struct SeedAttribute {
    /// `contact` or `company`.
    pub(crate) model: String,
    pub(crate) name: String,
    pub(crate) data_type: String,
    pub(crate) options: Vec<String>,
    pub(crate) archived: bool,
}

impl SeedAttribute {
    pub fn new(model: &str, name: &str, data_type: &str) -> SeedAttribute {
        SeedAttribute {
            model: model.into(),
            name: name.into(),
            data_type: data_type.into(),
            ..SeedAttribute::default()
        }
    }

    /// A list attribute: a string taking only these values.
    pub fn with_options(self, options: &[&str]) -> SeedAttribute {
        SeedAttribute { data_type: "string".into(), options: options.iter().map(|o| (*o).to_owned()).collect(), ..self }
    }

    pub fn archived(self) -> SeedAttribute {
        SeedAttribute { archived: true, ..self }
    }
}

/// One of Intercom's own attributes: (name, full_name, label, data_type, api_writable).
type Standard = (&'static str, &'static str, &'static str, &'static str, bool);

/// Intercom's standard people attributes: the fields of the contact schema (2.16, `contact`, from line 25222) with
/// the labels Intercom's UI gives them.
const CONTACT_STANDARD: &[Standard] = &[
    ("id", "id", "ID", "string", false),
    ("name", "name", "Name", "string", true),
    ("email", "email", "Email", "string", true),
    ("phone", "phone", "Phone", "string", true),
    ("external_id", "external_id", "User ID", "string", true),
    ("role", "role", "Role", "string", true),
    ("owner_id", "owner_id", "Owner", "string", true),
    ("avatar", "avatar", "Avatar", "string", true),
    ("signed_up_at", "signed_up_at", "Signed up", "date", true),
    ("last_seen_at", "last_seen_at", "Last seen", "date", true),
    ("last_replied_at", "last_replied_at", "Last replied", "date", false),
    ("last_contacted_at", "last_contacted_at", "Last contacted", "date", false),
    ("last_email_opened_at", "last_email_opened_at", "Last opened email", "date", false),
    ("last_email_clicked_at", "last_email_clicked_at", "Last clicked on link in email", "date", false),
    ("created_at", "created_at", "Created at", "date", false),
    ("updated_at", "updated_at", "Updated at", "date", false),
    ("unsubscribed_from_emails", "unsubscribed_from_emails", "Unsubscribed from emails", "boolean", true),
    ("has_hard_bounced", "has_hard_bounced", "Has hard bounced", "boolean", false),
    ("marked_email_as_spam", "marked_email_as_spam", "Marked email as spam", "boolean", false),
    ("language_override", "language_override", "Language override", "string", true),
    ("browser", "browser", "Browser", "string", false),
    ("browser_version", "browser_version", "Browser version", "string", false),
    ("browser_language", "browser_language", "Browser language", "string", false),
    ("os", "os", "OS", "string", false),
    ("country", "location.country", "Country", "string", false),
    ("region", "location.region", "Region", "string", false),
    ("city", "location.city", "City", "string", false),
    ("session_count", "session_count", "Web sessions", "integer", false),
];

/// Intercom's standard company attributes, as the spec's example answer of `GET /data_attributes?model=company` lists
/// them (2.16, lines 14697-14935).
const COMPANY_STANDARD: &[Standard] = &[
    ("name", "name", "Company name", "string", true),
    ("company_id", "company_id", "Company ID", "string", false),
    ("last_request_at", "last_request_at", "Company last seen", "date", false),
    ("remote_created_at", "remote_created_at", "Company created at", "date", true),
    ("user_count", "user_count", "People", "integer", false),
    ("session_count", "session_count", "Company web sessions", "integer", false),
    ("name", "plan.name", "Plan", "string", false),
    ("monthly_spend", "monthly_spend", "Monthly Spend", "float", true),
    ("size", "size", "Company size", "integer", true),
    ("industry", "industry", "Company industry", "string", true),
    ("website", "website", "Company website", "string", true),
    ("id", "id", "ID", "string", false),
    ("created_at", "created_at", "Created at", "date", false),
    ("updated_at", "updated_at", "Updated at", "date", false),
    ("id", "plan.id", "Plan ID", "string", false),
    ("app_id", "app_id", "App ID", "string", false),
];

fn standard(model: &str) -> &'static [Standard] {
    if model == "company" { COMPANY_STANDARD } else { CONTACT_STANDARD }
}

/// How Intercom's messages name a model's data.
fn data_word(model: &str) -> &'static str {
    if model == "company" { "company" } else { "people" }
}

/// Letters and digits (ASCII only: whether Intercom takes other scripts is unverified), currency symbols, hyphens,
/// spaces (the spec's own "Mithril Shirt") and underscores (Intercom's own names hold them: `monthly_spend`).
fn valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ' ' | '_') || is_currency_symbol(c))
}

/// Unicode's currency symbols (category Sc), without a Unicode-tables crate for one category.
fn is_currency_symbol(c: char) -> bool {
    matches!(c, '$' | '\u{a2}'..='\u{a5}' | '\u{58f}' | '\u{60b}' | '\u{7fe}' | '\u{7ff}' | '\u{9f2}' | '\u{9f3}'
        | '\u{9fb}' | '\u{af1}' | '\u{bf9}' | '\u{e3f}' | '\u{17db}' | '\u{20a0}'..='\u{20c0}' | '\u{a838}' | '\u{fdfc}'
        | '\u{fe69}' | '\u{ff04}' | '\u{ffe0}' | '\u{ffe1}' | '\u{ffe5}' | '\u{ffe6}')
}

/// What a value of `data_type` must be, for the refusal's wording.
fn expected(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Integer => "an integer",
        DataType::Float => "a number",
        DataType::Boolean => "a boolean",
        DataType::Date => "a date in Unix seconds (an integer)",
        DataType::String | DataType::Other => "a string",
    }
}

fn has_type(data_type: DataType, value: &Value) -> bool {
    match data_type {
        DataType::Integer | DataType::Date => value.is_i64() || value.is_u64(),
        DataType::Float => value.is_number(),
        DataType::Boolean => value.is_boolean(),
        DataType::String | DataType::Other => value.is_string(),
    }
}

fn text_of(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// The options of a list attribute as a create or update sends them: `[{"value": "1-10"}, …]`, at least two.
fn parse_options(options: &Value) -> Result<Vec<String>, SandboxResponse> {
    let Some(list) = options.as_array() else {
        return Err(error(400, "parameter_invalid", "Options isn't an array"));
    };
    let values: Option<Vec<String>> = list.iter().map(|o| o["value"].as_str().map(str::to_owned)).collect();
    let Some(values) = values else {
        return Err(error(400, "parameter_invalid", "Each option must be an object with a string value"));
    };
    if values.len() < 2 {
        return Err(error(
            400,
            "parameter_invalid",
            "You must have at least two options on a list type data attribute",
        ));
    }
    Ok(values)
}

impl SandboxState {
    /// Adds `seed` as it stands, without the checks a create makes (and not counted as a change).
    pub(crate) fn seed_attribute(&mut self, seed: &SeedAttribute) {
        let data_type = DataType::parse(&seed.data_type).unwrap_or(DataType::Other);
        let attribute = DataAttribute {
            options: seed.options.clone(),
            archived: seed.archived,
            ..DataAttribute::created(&seed.name, data_type)
        };
        let held = HeldAttribute { id: self.next_attribute_id(), attribute, created_at: 0 };
        self.data_attributes.entry(seed.model.clone()).or_default().insert(seed.name.clone(), held);
    }

    fn next_attribute_id(&mut self) -> u64 {
        self.data_attributes.values().flat_map(|m| m.values()).map(|a| a.id).max().unwrap_or(0) + 1
    }

    /// Refuses a write whose `custom_attributes` name an attribute the model lacks (or archived) or give one a value
    /// it cannot take: not one of a list's options, or not of its type. `null` clears a value and is always taken.
    pub(super) fn refuse_custom_attributes(&self, model: &str, attributes: Option<&Value>) -> Option<SandboxResponse> {
        let attributes = match attributes? {
            Value::Null => return None,
            Value::Object(attributes) => attributes,
            _ => return Some(error(400, "parameter_invalid", "'custom_attributes' must be an object")),
        };
        let known = self.data_attributes.get(model);
        for (name, value) in attributes {
            let held = known.and_then(|k| k.get(name)).map(|h| &h.attribute);
            let Some(attribute) = held.filter(|a| !a.archived) else {
                return Some(error(400, "parameter_invalid", &format!("Custom attribute '{name}' does not exist")));
            };
            if value.is_null() {
                continue;
            }
            if !attribute.options.is_empty()
                && !value.as_str().is_some_and(|v| attribute.options.iter().any(|o| o == v))
            {
                let message = format!("Custom attribute '{name}' has no option '{}'", text_of(value));
                return Some(error(400, "parameter_invalid", &message));
            }
            if !has_type(attribute.data_type, value) {
                let message = format!("Custom attribute '{name}' must be {}", expected(attribute.data_type));
                return Some(error(400, "parameter_invalid", &message));
            }
        }
        None
    }

    pub(super) fn list_attributes(&self, query: &str) -> SandboxResponse {
        let models: &[&str] = match query_param(query, "model").as_deref() {
            None => &["contact", "company"],
            Some("contact") => &["contact"],
            Some("company") => &["company"],
            Some("conversation") => {
                let message = "model=conversation is no longer supported. Use GET /conversations/attributes instead";
                return error(422, "parameter_invalid", message);
            }
            Some(_) => {
                return error(
                    400,
                    "parameter_invalid",
                    "The Data Attribute model field must be either contact or company",
                );
            }
        };
        let include_archived = query_param(query, "include_archived").as_deref() == Some("true");
        let mut data = Vec::new();
        for model in models {
            for (name, full_name, label, data_type, api_writable) in standard(model) {
                data.push(json!({"type": "data_attribute", "name": name, "full_name": full_name, "label": label,
                    "data_type": data_type, "api_writable": api_writable, "custom": false, "archived": false,
                    "model": model}));
            }
            let custom = self.data_attributes.get(*model).into_iter().flatten();
            for held in custom.map(|(_, h)| h).filter(|h| include_archived || !h.attribute.archived) {
                data.push(attribute_answer(model, held));
            }
        }
        ok(200, json!({"type": "list", "data": data}))
    }

    pub(super) fn create_attribute(&mut self, body: &Value, now: u64) -> SandboxResponse {
        let (Some(name), Some(model), Some(data_type)) =
            (body["name"].as_str(), body["model"].as_str(), body["data_type"].as_str())
        else {
            return error(400, "parameter_not_found", "name, model and data_type are required");
        };
        let Some(model) = Model::parse(model) else {
            return error(400, "parameter_invalid", "The Data Attribute model field must be either contact or company");
        };
        let (data_type, options) = match creatable(data_type, body.get("options")) {
            Ok(created) => created,
            Err(refused) => return refused,
        };
        if let Some(refused) = self.refuse_name(name, model) {
            return refused;
        }
        let active = self.data_attributes.values().flat_map(|m| m.values()).filter(|h| !h.attribute.archived).count();
        if active >= MAX_CUSTOM_ATTRIBUTES {
            let message = format!(
                "You have reached the limit of {MAX_CUSTOM_ATTRIBUTES} custom data attributes; archive unused ones to free up space"
            );
            return error(400, "parameter_invalid", &message);
        }
        let attribute = DataAttribute { options, ..DataAttribute::created(name, data_type) };
        let held = HeldAttribute { id: self.next_attribute_id(), attribute, created_at: now };
        let answer = attribute_answer(model.as_str(), &held);
        self.data_attributes.entry(model.as_str().to_owned()).or_default().insert(name.to_owned(), held);
        self.changes += 1;
        ok(200, answer)
    }

    /// Why `name` cannot be a new attribute of `model`: not a valid name, a standard attribute's, or held already by
    /// either model.
    fn refuse_name(&self, name: &str, model: Model) -> Option<SandboxResponse> {
        if !valid_name(name) {
            let message =
                "Your name for this attribute must only contain alphanumeric characters, currency symbols, and hyphens";
            return Some(error(400, "parameter_invalid", message));
        }
        let word = data_word(model.as_str());
        if let Some((_, _, label, ..)) = standard(model.as_str())
            .iter()
            .find(|(standard, _, label, ..)| standard.eq_ignore_ascii_case(name) || label.eq_ignore_ascii_case(name))
        {
            let message = format!(
                "'{label}' is one of our standard attributes for your {word} data. To save this as new {word} data, use a different name."
            );
            return Some(error(400, "parameter_invalid", &message));
        }
        for held_in in [model, model.other()] {
            let held = self.data_attributes.get(held_in.as_str()).into_iter().flatten();
            if let Some((held, _)) = held.clone().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                let message = format!(
                    "You already have '{held}' in your {} data. To save this as new {word} data, use a different name.",
                    data_word(held_in.as_str())
                );
                return Some(error(400, "parameter_invalid", &message));
            }
        }
        None
    }

    /// `PUT /data_attributes/{id}`: archives (or restores) a custom attribute, or replaces a list attribute's options.
    pub(super) fn update_attribute(&mut self, id: &str, body: &Value) -> SandboxResponse {
        let found = self.data_attributes.iter_mut().find_map(|(model, attributes)| {
            attributes.values_mut().find(|h| h.id.to_string() == id).map(|held| (model.clone(), held))
        });
        let Some((model, held)) = found else {
            return error(404, "field_not_found", "We couldn't find that data attribute to update");
        };
        let options = match body.get("options") {
            Some(_) if held.attribute.options.is_empty() => {
                return error(400, "parameter_invalid", "Options can only be given to a list attribute");
            }
            Some(options) => match parse_options(options) {
                Ok(options) => Some(options),
                Err(refused) => return refused,
            },
            None => None,
        };
        let archived = match body.get("archived") {
            None => None,
            Some(Value::Bool(archived)) => Some(*archived),
            Some(_) => return error(400, "parameter_invalid", "'archived' must be a boolean"),
        };
        let before = held.clone();
        if let Some(options) = options {
            held.attribute.options = options;
        }
        if let Some(archived) = archived {
            held.attribute.archived = archived;
        }
        let changed = *held != before;
        let answer = attribute_answer(&model, held);
        if changed {
            self.changes += 1;
        }
        ok(200, answer)
    }
}

/// The data type and options a create asks for, or its refusal.
fn creatable(data_type: &str, options: Option<&Value>) -> Result<(DataType, Vec<String>), SandboxResponse> {
    // `datetime` is in 2.16's create request but not its data_attribute schema: held as `date` (unverified).
    match (data_type, options) {
        ("options", None) => {
            Err(error(400, "parameter_invalid", "You must have at least two options on a list type data attribute"))
        }
        // 2.16 (create_data_attribute_request) says `options`; Intercom's SDKs say `string` with options.
        ("options" | "string", Some(options)) => Ok((DataType::String, parse_options(options)?)),
        ("datetime", None) => Ok((DataType::Date, Vec::new())),
        (text, None) if DataType::parse(text).is_some() => Ok((DataType::parse(text).expect("parsed"), Vec::new())),
        ("integer" | "float" | "boolean" | "date" | "datetime", Some(_)) => {
            Err(error(400, "parameter_invalid", "Options can only be given to a list attribute"))
        }
        _ => Err(error(400, "parameter_invalid", "Data Type isn't an option")),
    }
}

fn attribute_answer(model: &str, held: &HeldAttribute) -> Value {
    let (attribute, name) = (&held.attribute, &held.attribute.name);
    let mut answer = json!({"type": "data_attribute", "id": held.id, "name": name,
        "full_name": format!("custom_attributes.{name}"), "label": name, "data_type": attribute.data_type.as_str(),
        "api_writable": true, "custom": true, "archived": attribute.archived, "model": model,
        "created_at": held.created_at, "updated_at": held.created_at});
    if !attribute.options.is_empty() {
        answer["options"] = json!(attribute.options);
    }
    answer
}

/// Keeps the custom attributes of a write: a `null` clears one.
pub(super) fn apply_custom(held: &mut Map<String, Value>, sent: Option<&Value>) {
    for (name, value) in sent.and_then(Value::as_object).into_iter().flatten() {
        if value.is_null() {
            held.remove(name);
        } else {
            held.insert(name.clone(), value.clone());
        }
    }
}
