//! Parsing a request body into events, validating each field (errors name its JSON path) and normalising.

use serde::Serialize;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use super::fields::{Fields, event_type, id_field, read_fields, require_fields, timestamp_field};
use super::json::{RawObject, TopLevel, read_members};
use super::scan::{may_hold_unreadable_values, nesting_depth, unreadable_values};
use super::{Event, EventType, MAX_EVENT_BYTES};

/// A problem with one field of an event or of the body; `path` is a JSON path relative to the event (or body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { path: path.into(), message: message.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// An event that was not accepted, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// Its position in the batch (0 for a single event).
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub errors: Vec<FieldError>,
}

/// What a batch carries besides its events, applied to each of them as Segment does.
#[derive(Debug, Default)]
pub struct BatchDefaults {
    pub(crate) context: Option<RawObject>,
    pub(crate) integrations: Option<RawObject>,
    pub sent_at: Option<OffsetDateTime>,
}

/// A body whose outer shape is valid; its events are still to be validated one by one.
#[derive(Debug)]
pub struct Batch<'a> {
    pub events: Vec<RawEvent<'a>>,
    pub defaults: BatchDefaults,
    /// The `writeKey` the body carries (what browsers send with `sendBeacon`).
    pub(crate) write_key: Option<String>,
}

/// One event of a body: its size and, when it is a JSON object, its top-level members.
#[derive(Debug)]
pub struct RawEvent<'a> {
    /// Bytes of JSON text (in a batch: of its members written compactly); 0 where no limit applies.
    bytes: usize,
    members: Option<TopLevel<'a>>,
    /// Whether its values must be read in full (see [`may_hold_unreadable_values`]).
    check_values: bool,
}

impl<'a> RawEvent<'a> {
    /// Reads the top level of one event's JSON text, as a client sent it.
    pub fn parse(text: &'a str) -> Result<RawEvent<'a>, serde_json::Error> {
        let text = text.trim();
        let members = if text.starts_with('{') { Some(TopLevel::parse(text)?) } else { None };
        Ok(RawEvent { bytes: text.len(), members, check_values: may_hold_unreadable_values(text.as_bytes()) })
    }

    /// Reads an event that ingest already accepted (from a queue message): normalisation may have grown it past the
    /// size limit, and its values were checked.
    pub(crate) fn accepted(text: &'a str) -> Result<RawEvent<'a>, serde_json::Error> {
        Ok(RawEvent { bytes: 0, check_values: false, ..RawEvent::parse(text)? })
    }

    /// A top-level member as sent; `None` for a missing one, or when the event is not an object.
    pub fn member(&self, key: &str) -> Option<&'a RawValue> {
        self.members.as_ref()?.get(key)
    }

    /// Whether the event names its own `messageId` (a non-blank string or a number), rather than being given one.
    pub fn has_message_id(&self) -> bool {
        let mut errors = Vec::new();
        self.member("messageId").and_then(|raw| id_field(raw, "messageId", &mut errors)).is_some()
    }
}

/// A member holding a time (`receivedAt`, an archive's `createdAt`), read as the event's own times are: `None` when
/// it is missing or null, the reason naming `path` when it is not an RFC 3339 timestamp.
pub fn timestamp_member(raw: Option<&RawValue>, path: &str) -> Result<Option<OffsetDateTime>, FieldError> {
    match raw {
        None => Ok(None),
        Some(raw) => timestamp_field(raw).map_err(|message| FieldError::new(path, message)),
    }
}

/// An element of a batch array, read in the same pass as the array.
impl<'de> Deserialize<'de> for RawEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match deserializer.deserialize_any(ElementVisitor { events_in_arrays: false })? {
            Element::Object(members) => {
                // `"key":value,` for each member, and the braces: the event's size written compactly.
                let bytes = members.0.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>() + 1;
                RawEvent { bytes, members: Some(members), check_values: false }
            }
            Element::Events(_) | Element::Other => RawEvent { bytes: 0, members: None, check_values: false },
        })
    }
}

/// `batch` as sent: an array of events, or something else.
enum BatchField<'a> {
    Events(Vec<RawEvent<'a>>),
    NotAnArray,
}

impl<'de> Deserialize<'de> for BatchField<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match deserializer.deserialize_any(ElementVisitor { events_in_arrays: true })? {
            Element::Events(events) => BatchField::Events(events),
            Element::Object(_) | Element::Other => BatchField::NotAnArray,
        })
    }
}

/// Any JSON value, read as far as a batch needs it: an object's members, an array's events, or nothing.
enum Element<'a> {
    Object(TopLevel<'a>),
    Events(Vec<RawEvent<'a>>),
    Other,
}

struct ElementVisitor {
    events_in_arrays: bool,
}

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
        read_members(access, |_, _| Ok(false)).map(Element::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        if !self.events_in_arrays {
            while access.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Element::Other);
        }
        let mut events = Vec::new();
        while let Some(event) = access.next_element()? {
            events.push(event);
        }
        Ok(Element::Events(events))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Element::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Element::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Element::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Element::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Element::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Element::Other)
    }
}

/// Why a body could not be read at all.
#[derive(Debug)]
pub enum BodyError {
    /// Not JSON; the parser's message names the line and column.
    Malformed(serde_json::Error),
    /// JSON of the wrong shape.
    Invalid(FieldError),
}

/// How deep objects and arrays may nest in a body: deeper than any real event, shallow enough for any parser downstream.
pub const MAX_DEPTH: usize = 64;

/// Reads the body of a single-event call (`/v1/track`, …).
pub fn parse_single(body: &str) -> Result<Batch<'_>, BodyError> {
    let body = check_object(body, "the body must be a JSON object holding one event")?;
    let members = TopLevel::parse(body).map_err(BodyError::Malformed)?;
    check_depth(members.0.iter().map(|(_, value)| *value), 1)?;
    let write_key = write_key(&members)?;
    let check_values = may_hold_unreadable_values(body.as_bytes());
    let event = RawEvent { bytes: body.len(), members: Some(members), check_values };
    Ok(Batch { events: vec![event], defaults: BatchDefaults::default(), write_key })
}

/// Reads the body of `/v1/batch` or `/v1/import`: `{"batch": […], "context"?, "integrations"?, "sentAt"?, "writeKey"?}`.
///
/// One pass over the body reads the top level and every event's members.
pub fn parse_batch(body: &str) -> Result<Batch<'_>, BodyError> {
    let body = check_object(body, "the body must be a JSON object such as {\"batch\": [...]}")?;
    let mut batch = Vec::new();
    let members = read_batch_body(body, &mut batch).map_err(BodyError::Malformed)?;
    let invalid = |path: &str, message: &str| BodyError::Invalid(FieldError::new(path, message));
    if let Some(key) = members.duplicate() {
        return Err(invalid(key, "appears more than once"));
    }
    let mut events = match batch.len() {
        0 => return Err(invalid("batch", "is required: an array of events")),
        1 => match batch.pop() {
            Some(BatchField::Events(events)) => events,
            _ => return Err(invalid("batch", "must be an array of events")),
        },
        _ => return Err(invalid("batch", "appears more than once")),
    };
    if events.is_empty() {
        return Err(invalid("batch", "must hold at least one event"));
    }
    // Depth is checked per value: the body as a whole holds more brackets than the fast check allows.
    check_depth(members.0.iter().map(|(_, value)| *value), 1)?;
    let event_members = events.iter().filter_map(|event| event.members.as_ref()).flat_map(|members| &members.0);
    check_depth(event_members.map(|(_, value)| *value), 3)?;
    if may_hold_unreadable_values(body.as_bytes()) {
        events.iter_mut().for_each(|event| event.check_values = true);
    }
    let object = |key: &str| match members.get(key) {
        Some(raw) if raw.get() != "null" => match RawObject::new(raw) {
            Some(object) => Ok(Some(object)),
            None => Err(invalid(key, "must be an object")),
        },
        _ => Ok(None),
    };
    let defaults = BatchDefaults {
        context: object("context")?,
        integrations: object("integrations")?,
        sent_at: match members.get("sentAt") {
            Some(raw) => timestamp_field(raw).map_err(|message| invalid("sentAt", &message))?,
            None => None,
        },
    };
    let write_key = write_key(&members)?;
    Ok(Batch { events, defaults, write_key })
}

/// The body, trimmed, when it is a JSON object; else why not.
fn check_object<'a>(body: &'a str, not_an_object: &str) -> Result<&'a str, BodyError> {
    // Some Windows tools start UTF-8 with a byte order mark; JSON parsers may ignore it (RFC 8259, section 8.1).
    let body = body.strip_prefix('\u{feff}').unwrap_or(body).trim();
    if !body.starts_with('{') {
        serde_json::from_str::<&RawValue>(body).map_err(BodyError::Malformed)?;
        return Err(BodyError::Invalid(FieldError::new("", not_an_object)));
    }
    Ok(body)
}

/// serde_json skims raw values without its recursion limit, so the depth of what passes through is ours to check.
/// `values` sit `above` levels deep in the body.
fn check_depth<'a>(values: impl Iterator<Item = &'a RawValue>, above: usize) -> Result<(), BodyError> {
    for value in values.filter(|value| value.get().starts_with(['{', '['])) {
        // Fewer opening brackets than the limit (counted fast, strings included) cannot nest deeper than it.
        let brackets = memchr::memchr2_iter(b'{', b'[', value.get().as_bytes()).count();
        if above + brackets <= MAX_DEPTH {
            continue;
        }
        let depth = above + nesting_depth(value.get());
        if depth > MAX_DEPTH {
            let message = format!("the body nests {depth} levels deep; at most {MAX_DEPTH} are allowed");
            return Err(BodyError::Invalid(FieldError::new("", message)));
        }
    }
    Ok(())
}

/// Reads the top level of a batch body, with each `batch` member read as events in the same pass.
fn read_batch_body<'a>(body: &'a str, batch: &mut Vec<BatchField<'a>>) -> Result<TopLevel<'a>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(body);
    let members = deserializer.deserialize_map(BatchVisitor { batch })?;
    deserializer.end()?;
    Ok(members)
}

struct BatchVisitor<'b, 'a> {
    batch: &'b mut Vec<BatchField<'a>>,
}

impl<'de> Visitor<'de> for BatchVisitor<'_, 'de> {
    type Value = TopLevel<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
        read_members(access, |key, access| {
            if key != "batch" {
                return Ok(false);
            }
            self.batch.push(access.next_value()?);
            Ok(true)
        })
    }
}

fn write_key(members: &TopLevel<'_>) -> Result<Option<String>, BodyError> {
    match members.get("writeKey").map(|raw| serde_json::from_str::<Option<String>>(raw.get())) {
        None => Ok(None),
        Some(Ok(key)) => Ok(key),
        Some(Err(_)) => Err(BodyError::Invalid(FieldError::new("writeKey", "must be a string"))),
    }
}

/// Validates and normalises one event of a body.
///
/// `expected` is the type the endpoint gives (`None` in a batch, where `type` is required). The event's messageId, when it
/// has a usable one, comes back with the errors so the caller can name the event.
pub fn parse_event(
    raw: &RawEvent<'_>,
    expected: Option<EventType>,
    defaults: &BatchDefaults,
    received_at: OffsetDateTime,
) -> Result<Event, Rejected> {
    let reject = |message_id: Option<String>, errors: Vec<FieldError>| Rejected { index: 0, message_id, errors };
    let Some(members) = &raw.members else {
        return Err(reject(None, vec![FieldError::new("", "an event must be a JSON object")]));
    };
    let mut errors = Vec::new();
    let message_id = match members.get("messageId") {
        Some(raw) => id_field(raw, "messageId", &mut errors),
        None => None,
    };
    let Some(kind) = screen(raw, members, expected, &mut errors) else {
        return Err(reject(message_id, errors));
    };
    let fields = read_fields(members, kind, &mut errors);
    require_fields(kind, &fields, &mut errors);
    if !errors.is_empty() {
        return Err(reject(message_id, errors));
    }
    normalise(kind, message_id, fields, defaults, received_at).map_err(|error| reject(None, vec![error]))
}

/// The checks that end the reading at their first failure, before any field is read: the event's size, a key sent
/// twice, values JSON tools cannot represent (with the messageId's error, if any), then its type.
fn screen(
    raw: &RawEvent<'_>,
    members: &TopLevel<'_>,
    expected: Option<EventType>,
    errors: &mut Vec<FieldError>,
) -> Option<EventType> {
    if raw.bytes > MAX_EVENT_BYTES {
        let message = format!("the event is {} bytes; the limit is {MAX_EVENT_BYTES} bytes per event", raw.bytes);
        errors.push(FieldError::new("", message));
        return None;
    }
    if let Some(key) = members.duplicate() {
        errors.push(FieldError::new(key, "appears more than once"));
        return None;
    }
    if raw.check_values {
        errors.extend(unreadable_values(members));
        if !errors.is_empty() {
            return None;
        }
    }
    match event_type(members.get("type"), expected) {
        Ok(kind) => Some(kind),
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

fn normalise(
    kind: EventType,
    message_id: Option<String>,
    mut fields: Fields,
    defaults: &BatchDefaults,
    received_at: OffsetDateTime,
) -> Result<Event, FieldError> {
    let sent_at = fields.sent_at.or(defaults.sent_at);
    // Segment's skew correction: the client's clock may be wrong, but the gap between its timestamp and its sentAt is not.
    let client_timestamp = fields.original_timestamp.or(fields.timestamp);
    let (timestamp, original_timestamp) = match (client_timestamp, sent_at) {
        (Some(client), Some(sent)) => {
            let corrected =
                received_at.checked_sub(sent - client).filter(|t| (1..=9999).contains(&t.year())).ok_or_else(|| {
                    FieldError::new("sentAt", "is too far from the event's timestamp to correct the clock skew")
                })?;
            (corrected, Some(client))
        }
        (Some(client), None) => (fields.timestamp.unwrap_or(client), fields.original_timestamp),
        // No timestamp: the event happened when it was sent. Keeping sentAt as the client's own time makes the gap zero,
        // so the forwarder, reading the stored timestamp back beside sentAt, lands on receivedAt again.
        (None, Some(sent)) => (received_at, Some(sent)),
        (None, None) => (received_at, None),
    };
    fields.context = merge_defaults(fields.context, defaults.context.as_ref());
    fields.integrations = merge_defaults(fields.integrations, defaults.integrations.as_ref());
    if kind == EventType::Identify {
        fields.traits = merge_context_traits(fields.traits, fields.context.as_ref());
    }
    Ok(Event {
        kind,
        message_id: message_id.unwrap_or_else(|| Uuid::new_v4().to_string()),
        user_id: fields.user_id,
        anonymous_id: fields.anonymous_id,
        timestamp,
        original_timestamp,
        sent_at,
        received_at,
        context: fields.context,
        integrations: fields.integrations,
        traits: fields.traits,
        properties: fields.properties,
        event: fields.event,
        name: fields.name,
        category: fields.category,
        group_id: fields.group_id,
        previous_id: fields.previous_id,
        extra: fields.extra,
    })
}

/// Adds the batch's keys that the event lacks (the event's own keys win).
fn merge_defaults(own: Option<RawObject>, defaults: Option<&RawObject>) -> Option<RawObject> {
    let Some(defaults) = defaults else { return own };
    let Some(own) = own else { return Some(defaults.clone()) };
    let (own_members, default_members) = (own.members(), defaults.members());
    let missing = default_members.0.iter().filter(|(key, _)| own_members.get(key).is_none());
    let merged = own_members.0.iter().chain(missing).map(|(key, value)| (key.as_ref(), *value));
    Some(RawObject::from_members(merged))
}

/// Identify traits sent in `context.traits` (RudderStack's SDKs do this) join `traits`; top-level traits win.
fn merge_context_traits(traits: Option<RawObject>, context: Option<&RawObject>) -> Option<RawObject> {
    // Most contexts hold no traits: a substring search is far cheaper than reading the context's members.
    let context = context.filter(|c| memchr::memmem::find(c.get().as_bytes(), b"\"traits\"").is_some());
    let context_traits = context.and_then(|c| c.members().get("traits")).and_then(RawObject::new);
    let Some(context_traits) = context_traits else { return traits };
    let (from_context, own) = (context_traits.members(), traits.as_ref().map(RawObject::members).unwrap_or_default());
    let shared = from_context.0.iter().map(|(key, value)| (key.as_ref(), own.get(key).unwrap_or(value)));
    let added =
        own.0.iter().filter(|(key, _)| from_context.get(key).is_none()).map(|(key, value)| (key.as_ref(), *value));
    Some(RawObject::from_members(shared.chain(added)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{format_timestamp, parse_timestamp};

    fn received() -> OffsetDateTime {
        parse_timestamp("2024-05-01T12:00:00.000Z").unwrap()
    }

    fn one(json: &str, expected: Option<EventType>) -> Result<Event, Rejected> {
        parse_event(&RawEvent::parse(json).unwrap(), expected, &BatchDefaults::default(), received())
    }

    fn errors(json: &str, expected: Option<EventType>) -> Vec<(String, String)> {
        one(json, expected).unwrap_err().errors.into_iter().map(|e| (e.path, e.message)).collect()
    }

    #[test]
    fn a_minimal_track_gets_a_message_id_and_the_received_time() {
        let event = one(r#"{"userId": 42, "event": "Signed Up"}"#, Some(EventType::Track)).unwrap();
        assert_eq!(event.user_id.as_deref(), Some("42"));
        assert_eq!(event.message_id.len(), 36);
        assert_eq!(event.timestamp, received());
        assert_eq!(event.received_at, received());
    }

    #[test]
    fn clock_skew_is_corrected_from_sent_at() {
        // The client's clock is 1 hour fast: it says it sent at 13:00:05 an event it made at 13:00:00.
        let event = one(
            r#"{"anonymousId":"a","event":"x","timestamp":"2024-05-01T13:00:00Z","sentAt":"2024-05-01T13:00:05Z"}"#,
            Some(EventType::Track),
        )
        .unwrap();
        assert_eq!(format_timestamp(event.timestamp), "2024-05-01T11:59:55.000Z");
        assert_eq!(format_timestamp(event.original_timestamp.unwrap()), "2024-05-01T13:00:00.000Z");
    }

    #[test]
    fn batch_sent_at_corrects_events_without_their_own() {
        let raw =
            RawEvent::parse(r#"{"type":"page","userId":"u","originalTimestamp":"2024-05-01T11:00:00Z"}"#).unwrap();
        let defaults = BatchDefaults { sent_at: parse_timestamp("2024-05-01T11:00:10Z"), ..Default::default() };
        let event = parse_event(&raw, None, &defaults, received()).unwrap();
        assert_eq!(format_timestamp(event.timestamp), "2024-05-01T11:59:50.000Z");
    }

    #[test]
    fn identify_context_traits_merge_into_traits_with_top_level_winning() {
        let event = one(
            r#"{"userId":"u","traits":{"plan":"pro"},"context":{"traits":{"plan":"free","email":"a@example.com"}}}"#,
            Some(EventType::Identify),
        )
        .unwrap();
        assert_eq!(event.traits.unwrap().get(), r#"{"plan":"pro","email":"a@example.com"}"#);
    }

    #[test]
    fn batch_context_merges_under_the_events_own() {
        let raw = RawEvent::parse(r#"{"type":"track","userId":"u","event":"e","context":{"ip":"1.2.3.4"}}"#).unwrap();
        let context: Box<RawValue> =
            serde_json::from_str(r#"{"ip":"9.9.9.9","library":{"name":"analytics-python"}}"#).unwrap();
        let defaults = BatchDefaults { context: RawObject::new(&context), ..Default::default() };
        let event = parse_event(&raw, None, &defaults, received()).unwrap();
        assert_eq!(event.context.unwrap().get(), r#"{"ip":"1.2.3.4","library":{"name":"analytics-python"}}"#);
    }

    #[test]
    fn integers_too_long_for_f64_are_found() {
        for offset in 0..40 {
            let padding = " ".repeat(offset);
            assert!(may_hold_unreadable_values(format!("{{{padding}\"n\":{}}}", "9".repeat(300)).as_bytes()));
            assert!(!may_hold_unreadable_values(format!("{{{padding}\"n\":{}}}", "9".repeat(200)).as_bytes()));
        }
        let found =
            errors(&format!(r#"{{"userId":"u","traits":{{"n":{}}}}}"#, "9".repeat(400)), Some(EventType::Identify));
        assert_eq!(found[0].0, "traits", "{found:?}");
    }

    #[test]
    fn values_json_tools_cannot_represent_are_refused_by_path() {
        let found = errors(r#"{"userId":"u","event":"e","properties":{"n":1e400}}"#, Some(EventType::Track));
        assert_eq!(found[0].0, "properties");
        assert!(found[0].1.contains("number out of range"), "{found:?}");
        let found = errors(r#"{"userId":"u","traits":{"name":"\ud800"}}"#, Some(EventType::Identify));
        assert_eq!(found[0].0, "traits");
        assert!(found[0].1.contains("cannot represent"), "{found:?}");
        let fine = r#"{"userId":"u","event":"e","properties":{"n":1e300,"id":"2e999x","s":"\ud83d\ude00"}}"#;
        assert!(one(fine, Some(EventType::Track)).is_ok(), "{fine}");
    }

    #[test]
    fn merging_keeps_numbers_and_escapes_exactly() {
        let event = one(
            r#"{"userId":"u","traits":{"big":123456789012345678901234567890,"e":"\ud83d\ude00"},"context":{"traits":{"x":1e30}}}"#,
            Some(EventType::Identify),
        )
        .unwrap();
        assert_eq!(
            event.traits.unwrap().get(),
            r#"{"x":1e30,"big":123456789012345678901234567890,"e":"\ud83d\ude00"}"#
        );
    }

    #[test]
    fn free_form_objects_and_unknown_fields_pass_through_unchanged() {
        let event = one(
            r#"{"userId":"u","event":"e","properties":{"big": 12345678901234567890123, "z": 1, "a": 2},"channel":"server"}"#,
            Some(EventType::Track),
        )
        .unwrap();
        assert_eq!(event.properties.as_ref().unwrap().get(), r#"{"big": 12345678901234567890123, "z": 1, "a": 2}"#);
        assert_eq!(event.extra[0].0, "channel");
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""channel":"server""#), "{json}");
        assert!(json.contains("12345678901234567890123"), "{json}");
    }

    #[test]
    fn ids_are_trimmed_and_blank_ids_count_as_missing() {
        let event = one(r#"{"userId":"  u1 ","anonymousId":"   ","traits":{}}"#, Some(EventType::Identify)).unwrap();
        assert_eq!(event.user_id.as_deref(), Some("u1"));
        assert_eq!(event.anonymous_id, None);
        assert_eq!(
            errors(r#"{"userId":" ","traits":{}}"#, Some(EventType::Identify)),
            [("userId".to_owned(), "userId or anonymousId is required (a non-empty string or a number)".to_owned())]
        );
    }

    #[test]
    fn the_write_key_is_never_kept_in_the_event() {
        let event = one(r#"{"userId":"u","event":"e","writeKey":"secret"}"#, Some(EventType::Track)).unwrap();
        assert!(!serde_json::to_string(&event).unwrap().contains("secret"));
    }

    #[test]
    fn every_error_names_its_path() {
        let cases: &[(&str, Option<EventType>, &str, &str)] = &[
            (r#"{"userId":"u"}"#, Some(EventType::Track), "event", "is required for track events"),
            (r#"{"userId":"u","event":7}"#, Some(EventType::Track), "event", "must be a string"),
            (r#"{"userId":"u"}"#, Some(EventType::Group), "groupId", "is required for group events"),
            (
                r#"{"previousId":"p","anonymousId":"a"}"#,
                Some(EventType::Alias),
                "userId",
                "is required for alias events",
            ),
            (r#"{"userId":"u"}"#, Some(EventType::Alias), "previousId", "is required for alias events"),
            (r#"{"userId":true}"#, Some(EventType::Identify), "userId", "must be a string or a number"),
            (r#"{"userId":"u","traits":[1]}"#, Some(EventType::Identify), "traits", "must be an object, not an array"),
            (r#"{"userId":"u","context":"x"}"#, Some(EventType::Page), "context", "must be an object, not a string"),
            (
                r#"{"userId":"u","timestamp":"2024-13-01"}"#,
                Some(EventType::Page),
                "timestamp",
                "must be an RFC 3339 timestamp",
            ),
            (
                r#"{"userId":"u","sentAt":1714564800}"#,
                Some(EventType::Page),
                "sentAt",
                "must be an RFC 3339 timestamp string, not a number",
            ),
            (
                r#"{"userId":"u","type":"track"}"#,
                Some(EventType::Page),
                "type",
                "is \"track\" but this endpoint takes page events",
            ),
            (r#"{"userId":"u"}"#, None, "type", "is required in a batch"),
            (r#"{"userId":"u","type":"Track"}"#, None, "type", "must be one of identify, track"),
            (r#"{"userId":"u","userId":"v"}"#, Some(EventType::Page), "userId", "appears more than once"),
        ];
        for (json, expected, path, message) in cases {
            let errors = errors(json, *expected);
            assert!(
                errors.iter().any(|(p, m)| p == path && m.starts_with(message)),
                "{json}: expected {path}: {message}…, got {errors:?}"
            );
        }
    }

    #[test]
    fn nesting_depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":"[[[{\\"}"}]}"#), 3);
        assert_eq!(nesting_depth("1"), 0);
        let nested = format!("{}1{}", r#"{"a":"#.repeat(62), "}".repeat(62));
        let deep = format!(r#"{{"batch":[{{"type":"track","userId":"u","event":"e","properties":{nested}}}]}}"#);
        assert!(matches!(parse_batch(&deep), Err(BodyError::Invalid(e)) if e.message.contains("65 levels")));
    }

    #[test]
    fn batch_bodies_need_a_non_empty_array() {
        let invalid = |body: &str| match parse_batch(body) {
            Err(BodyError::Invalid(error)) => error.to_string(),
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(invalid("{}"), "batch: is required: an array of events");
        assert_eq!(invalid(r#"{"batch":{}}"#), "batch: must be an array of events");
        assert_eq!(invalid(r#"{"batch":[]}"#), "batch: must hold at least one event");
        assert_eq!(invalid(r#"{"batch":[{}],"context":[]}"#), "context: must be an object");
        assert!(invalid(r#"{"batch":[{}],"sentAt":"now"}"#).starts_with("sentAt: must be an RFC 3339"));
        assert!(matches!(parse_batch(r#"{"batch":[}"#), Err(BodyError::Malformed(_))));
    }
}
