//! An event's fields, read one by one: each value checked against what the spec says the field holds (errors name the
//! field), then the fields its type requires.

use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::EventType;
use super::json::{RawObject, TopLevel};
use super::parse::FieldError;
use super::timestamp::{TimestampError, read_timestamp};

/// The fields of an event the spec names, read; the rest kept as sent in `extra`.
#[derive(Default)]
pub(super) struct Fields {
    pub(super) user_id: Option<String>,
    pub(super) anonymous_id: Option<String>,
    pub(super) timestamp: Option<OffsetDateTime>,
    pub(super) original_timestamp: Option<OffsetDateTime>,
    pub(super) sent_at: Option<OffsetDateTime>,
    pub(super) context: Option<RawObject>,
    pub(super) integrations: Option<RawObject>,
    pub(super) traits: Option<RawObject>,
    pub(super) properties: Option<RawObject>,
    pub(super) event: Option<String>,
    pub(super) name: Option<String>,
    pub(super) category: Option<String>,
    pub(super) group_id: Option<String>,
    pub(super) previous_id: Option<String>,
    pub(super) extra: Vec<(String, Box<RawValue>)>,
}

/// Reads each member as its type's spec has it, pushing an error (named by the member) for each value of the wrong
/// kind; members the type does not name are kept as sent.
pub(super) fn read_fields(members: &TopLevel<'_>, kind: EventType, errors: &mut Vec<FieldError>) -> Fields {
    let mut fields = Fields::default();
    for (key, value) in members.0.iter() {
        let key = key.as_ref();
        match (key, kind) {
            ("type" | "messageId" | "writeKey" | "receivedAt", _) => {}
            ("userId", _) => fields.user_id = id_field(value, key, errors),
            ("anonymousId", _) => fields.anonymous_id = id_field(value, key, errors),
            ("timestamp", _) => fields.timestamp = timestamp(value, key, errors),
            ("originalTimestamp", _) => fields.original_timestamp = timestamp(value, key, errors),
            ("sentAt", _) => fields.sent_at = timestamp(value, key, errors),
            ("context", _) => fields.context = object_field(value, key, errors),
            ("integrations", _) => fields.integrations = object_field(value, key, errors),
            ("traits", EventType::Identify | EventType::Group) => fields.traits = object_field(value, key, errors),
            ("properties", EventType::Track | EventType::Page | EventType::Screen) => {
                fields.properties = object_field(value, key, errors)
            }
            ("event", EventType::Track) => fields.event = string_field(value, key, errors),
            ("name" | "category", EventType::Page | EventType::Screen) => {
                let value = string_field(value, key, errors);
                *(if key == "name" { &mut fields.name } else { &mut fields.category }) = value;
            }
            ("groupId", EventType::Group) => fields.group_id = id_field(value, key, errors),
            ("previousId", EventType::Alias) => fields.previous_id = id_field(value, key, errors),
            _ => fields.extra.push((key.to_owned(), (*value).to_owned())),
        }
    }
    fields
}

/// Pushes an error for each field the type requires that is missing (a userId or anonymousId for every type), unless
/// the field already has one.
pub(super) fn require_fields(kind: EventType, fields: &Fields, errors: &mut Vec<FieldError>) {
    let ids_unusable = ["userId", "anonymousId"].iter().any(|path| errors.iter().any(|e| e.path == *path));
    if fields.user_id.is_none() && fields.anonymous_id.is_none() && !ids_unusable {
        errors.push(FieldError::new("userId", "userId or anonymousId is required (a non-empty string or a number)"));
    }
    let required = match kind {
        EventType::Track => {
            vec![(
                "event",
                fields.event.as_deref().is_some_and(|e| !e.trim().is_empty()),
                "a non-empty string naming the action",
            )]
        }
        EventType::Group => vec![("groupId", fields.group_id.is_some(), "a non-empty string or a number")],
        EventType::Alias => vec![
            ("userId", fields.user_id.is_some(), "the new id"),
            ("previousId", fields.previous_id.is_some(), "the id the user had before"),
        ],
        _ => vec![],
    };
    for (path, present, what) in required {
        if !present && !errors.iter().any(|e| e.path == path) {
            errors.push(FieldError::new(path, format!("is required for {kind} events ({what})")));
        }
    }
}

pub(super) fn event_type(raw: Option<&RawValue>, expected: Option<EventType>) -> Result<EventType, FieldError> {
    const ONE_OF: &str = "identify, track, page, screen, group, alias";
    let given = match raw.map(|raw| serde_json::from_str::<Option<&str>>(raw.get())) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(name))) => Some(name),
        Some(Err(_)) => return Err(FieldError::new("type", format!("must be a string: one of {ONE_OF}"))),
    };
    match (given, expected) {
        (None, Some(kind)) => Ok(kind),
        (None, None) => Err(FieldError::new("type", format!("is required in a batch: one of {ONE_OF}"))),
        (Some(name), Some(kind)) if name == kind.as_str() => Ok(kind),
        (Some(name), Some(kind)) => Err(FieldError::new(
            "type",
            format!(
                "is \"{}\" but this endpoint takes {kind} events; send it to /v1/{} or drop the field",
                excerpt(name),
                excerpt(name)
            ),
        )),
        (Some(name), None) => EventType::parse(name)
            .ok_or_else(|| FieldError::new("type", format!("must be one of {ONE_OF}; got \"{}\"", excerpt(name)))),
    }
}

/// An id: a string (trimmed; empty means absent) or a number (kept as its text).
pub(super) fn id_field(raw: &RawValue, path: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => match serde_json::from_str::<String>(text) {
            Ok(s) if s.trim().len() == s.len() => Some(s).filter(|s| !s.is_empty()),
            Ok(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            Err(e) => {
                errors.push(FieldError::new(path, e.to_string()));
                None
            }
        },
        Some(b'-' | b'0'..=b'9') => Some(text.to_owned()),
        _ if text == "null" => None,
        _ => {
            errors.push(FieldError::new(path, "must be a string or a number"));
            None
        }
    }
}

fn string_field(raw: &RawValue, path: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    match serde_json::from_str::<Option<String>>(raw.get()) {
        Ok(value) => value,
        Err(_) => {
            errors.push(FieldError::new(path, "must be a string"));
            None
        }
    }
}

fn object_field(raw: &RawValue, path: &str, errors: &mut Vec<FieldError>) -> Option<RawObject> {
    if raw.get() == "null" {
        return None;
    }
    let object = RawObject::new(raw);
    if object.is_none() {
        errors.push(FieldError::new(path, format!("must be an object, not {}", json_kind(raw))));
    }
    object
}

fn timestamp(raw: &RawValue, path: &str, errors: &mut Vec<FieldError>) -> Option<OffsetDateTime> {
    timestamp_field(raw).unwrap_or_else(|message| {
        errors.push(FieldError::new(path, message));
        None
    })
}

pub(super) fn timestamp_field(raw: &RawValue) -> Result<Option<OffsetDateTime>, String> {
    match serde_json::from_str::<Option<String>>(raw.get()) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => read_timestamp(&text).map(Some).map_err(|error| match error {
            TimestampError::Format => {
                format!("must be an RFC 3339 timestamp such as 2024-05-01T12:00:00.000Z; got \"{}\"", excerpt(&text))
            }
            TimestampError::Range => {
                format!("must fall within the years 0001–9999 in UTC; got \"{}\"", excerpt(&text))
            }
        }),
        Err(_) => Err(format!("must be an RFC 3339 timestamp string, not {}", json_kind(raw))),
    }
}

fn json_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// At most 64 characters of a value a client sent, for an error message.
fn excerpt(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    let cut = cut.escape_debug().to_string();
    if text.chars().nth(64).is_some() { format!("{cut}…") } else { cut }
}
