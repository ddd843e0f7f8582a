//! Parsing a request body into events, validating each field (errors name its JSON path) and normalising.

use serde::Serialize;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use super::json::{RawObject, TopLevel, read_members};
use super::timestamp::{TimestampError, read_timestamp};
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
    pub context: Option<RawObject>,
    pub integrations: Option<RawObject>,
    pub sent_at: Option<OffsetDateTime>,
}

/// A body whose outer shape is valid; its events are still to be validated one by one.
#[derive(Debug)]
pub struct Batch<'a> {
    pub events: Vec<RawEvent<'a>>,
    pub defaults: BatchDefaults,
    /// The `writeKey` the body carries (what browsers send with `sendBeacon`).
    pub write_key: Option<String>,
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
    pub fn accepted(text: &'a str) -> Result<RawEvent<'a>, serde_json::Error> {
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

/// Whether `text` may hold a number beyond f64's range or a lone UTF-16 surrogate escape. serde_json lets both through
/// when it skims raw values, but its `Value` parser (which the forwarder uses) refuses them, so such events are read in
/// full at ingest and refused there with a reason. Exponents of three digits and surrogate escapes are rare, so this fast
/// filter keeps the full read off the common path: it tests 32 bytes at a time with element-wise operations the compiler
/// turns into vector instructions, and looks byte by byte only at blocks holding a digit then `e`, or a backslash.
fn may_hold_unreadable_values(text: &[u8]) -> bool {
    // A block is read with the byte before it (an exponent's digit may end the block before), so blocks start at 1.
    if exact_hits(text, 0, text.len().min(1)) {
        return true;
    }
    let (mut at, mut digit_blocks) = (1, 0);
    while at + SCAN_BLOCK <= text.len() {
        let (hit, all_digits) = scan_block(&text[at - 1..at + SCAN_BLOCK]);
        if hit && exact_hits(text, at, at + SCAN_BLOCK) {
            return true;
        }
        digit_blocks = if all_digits { digit_blocks + 1 } else { 0 };
        // A run of 300 digits (an integer beyond f64's range) covers at least 7 whole blocks wherever it starts.
        if digit_blocks >= 7 {
            return true;
        }
        at += SCAN_BLOCK;
    }
    exact_hits(text, at.min(text.len()), text.len())
}

const SCAN_BLOCK: usize = 32;

/// For the block `window[1..]` (`window[0]` is the byte before it): whether it holds a digit then `e`/`E`, or a
/// backslash; and whether it is digits throughout.
#[inline(always)]
fn scan_block(window: &[u8]) -> (bool, bool) {
    let (before, here) = (&window[..SCAN_BLOCK], &window[1..=SCAN_BLOCK]);
    let (mut hit, mut all_digits) = (0u8, 1u8);
    for i in 0..SCAN_BLOCK {
        let exponent = u8::from(is_digit(before[i])) & u8::from(here[i] | 0x20 == b'e');
        hit |= exponent | u8::from(here[i] == b'\\');
        all_digits &= u8::from(is_digit(here[i]));
    }
    (hit != 0, all_digits != 0)
}

fn is_digit(byte: u8) -> bool {
    byte.wrapping_sub(b'0') < 10
}

/// Whether `text[from..to]` holds an exponent of three or more digits, or a `\u` escape of a surrogate (`\uD800` to
/// `\uDFFF`).
fn exact_hits(text: &[u8], from: usize, to: usize) -> bool {
    memchr::memchr3_iter(b'\\', b'e', b'E', &text[from..to]).map(|i| from + i).any(|i| match text[i] {
        b'\\' => {
            text.get(i + 1) == Some(&b'u')
                && matches!(text.get(i + 2), Some(b'd' | b'D'))
                && matches!(text.get(i + 3), Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
        }
        b'e' | b'E' if i > 0 && is_digit(text[i - 1]) => {
            let rest = &text[i + 1..];
            let digits = rest.strip_prefix(b"+").or_else(|| rest.strip_prefix(b"-")).unwrap_or(rest);
            digits.iter().take_while(|b| is_digit(**b)).count() >= 3
        }
        _ => false,
    })
}

/// The members whose values serde_json's `Value` parser refuses.
fn unreadable_values(members: &TopLevel<'_>) -> Vec<FieldError> {
    members
        .0
        .iter()
        .filter_map(|(key, value)| {
            let error = serde_json::from_str::<serde_json::Value>(value.get()).err()?;
            Some(FieldError::new(
                key.as_ref(),
                format!(
                    "holds a value JSON tools cannot represent (a number beyond ±1.8e308 or a lone surrogate): {error}"
                ),
            ))
        })
        .collect()
}

/// The deepest nesting of objects and arrays in valid JSON text; strings are skipped with memchr.
fn nesting_depth(json: &str) -> usize {
    let bytes = json.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => loop {
                match memchr::memchr2(b'"', b'\\', &bytes[i + 1..]) {
                    Some(j) if bytes[i + 1 + j] == b'\\' => i += j + 2,
                    Some(j) => {
                        i += j + 1;
                        break;
                    }
                    None => return deepest,
                }
            },
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
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
    if raw.bytes > MAX_EVENT_BYTES {
        let message = format!("the event is {} bytes; the limit is {MAX_EVENT_BYTES} bytes per event", raw.bytes);
        errors.push(FieldError::new("", message));
        return Err(reject(message_id, errors));
    }
    if let Some(key) = members.duplicate() {
        errors.push(FieldError::new(key, "appears more than once"));
        return Err(reject(message_id, errors));
    }
    if raw.check_values {
        errors.extend(unreadable_values(members));
        if !errors.is_empty() {
            return Err(reject(message_id, errors));
        }
    }
    let kind = match event_type(members.get("type"), expected) {
        Ok(kind) => kind,
        Err(error) => {
            errors.push(error);
            return Err(reject(message_id, errors));
        }
    };

    let mut fields = Fields::default();
    for (key, value) in members.0.iter() {
        let key = key.as_ref();
        match (key, kind) {
            ("type" | "messageId" | "writeKey" | "receivedAt", _) => {}
            ("userId", _) => fields.user_id = id_field(value, key, &mut errors),
            ("anonymousId", _) => fields.anonymous_id = id_field(value, key, &mut errors),
            ("timestamp", _) => fields.timestamp = timestamp(value, key, &mut errors),
            ("originalTimestamp", _) => fields.original_timestamp = timestamp(value, key, &mut errors),
            ("sentAt", _) => fields.sent_at = timestamp(value, key, &mut errors),
            ("context", _) => fields.context = object_field(value, key, &mut errors),
            ("integrations", _) => fields.integrations = object_field(value, key, &mut errors),
            ("traits", EventType::Identify | EventType::Group) => fields.traits = object_field(value, key, &mut errors),
            ("properties", EventType::Track | EventType::Page | EventType::Screen) => {
                fields.properties = object_field(value, key, &mut errors)
            }
            ("event", EventType::Track) => fields.event = string_field(value, key, &mut errors),
            ("name" | "category", EventType::Page | EventType::Screen) => {
                let value = string_field(value, key, &mut errors);
                *(if key == "name" { &mut fields.name } else { &mut fields.category }) = value;
            }
            ("groupId", EventType::Group) => fields.group_id = id_field(value, key, &mut errors),
            ("previousId", EventType::Alias) => fields.previous_id = id_field(value, key, &mut errors),
            _ => fields.extra.push((key.to_owned(), (*value).to_owned())),
        }
    }
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
    if !errors.is_empty() {
        return Err(reject(message_id, errors));
    }
    normalise(kind, message_id, fields, defaults, received_at).map_err(|error| reject(None, vec![error]))
}

#[derive(Default)]
struct Fields {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    timestamp: Option<OffsetDateTime>,
    original_timestamp: Option<OffsetDateTime>,
    sent_at: Option<OffsetDateTime>,
    context: Option<RawObject>,
    integrations: Option<RawObject>,
    traits: Option<RawObject>,
    properties: Option<RawObject>,
    event: Option<String>,
    name: Option<String>,
    category: Option<String>,
    group_id: Option<String>,
    previous_id: Option<String>,
    extra: Vec<(String, Box<RawValue>)>,
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

fn event_type(raw: Option<&RawValue>, expected: Option<EventType>) -> Result<EventType, FieldError> {
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
fn id_field(raw: &RawValue, path: &str, errors: &mut Vec<FieldError>) -> Option<String> {
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

fn timestamp_field(raw: &RawValue) -> Result<Option<OffsetDateTime>, String> {
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

    /// The filter's reference: every exponent start, surrogate escape and digit run, byte by byte.
    fn naive_unreadable(text: &[u8]) -> (bool, usize) {
        let long_exponent = (1..text.len()).any(|i| {
            let rest = &text[i + 1..];
            let exponent = match rest.first() {
                Some(b'+' | b'-') => &rest[1..],
                _ => rest,
            };
            text[i - 1].is_ascii_digit()
                && matches!(text[i], b'e' | b'E')
                && exponent.iter().take_while(|b| b.is_ascii_digit()).count() >= 3
        });
        let surrogate = text.windows(4).any(|w| {
            w[0] == b'\\'
                && w[1] == b'u'
                && matches!(w[2], b'd' | b'D')
                && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
        });
        let longest_run = text.split(|b| !is_digit(*b)).map(<[u8]>::len).max().unwrap_or(0);
        (long_exponent || surrogate || longest_run >= 300, longest_run)
    }

    #[test]
    fn the_unreadable_value_filter_finds_what_the_byte_by_byte_scan_finds_wherever_it_falls() {
        // Bytes that differ from a digit, an 'e' or a backslash only in the high bit, or sit just outside their ranges.
        let alphabet = [
            b'0', b'9', b'/', b':', b'e', b'E', b'a', b'+', b'-', b'\\', b'u', b'd', b'8', b'f', 0xB0, 0xB9, 0xE5,
            0xC5, 0xDC, b' ',
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut found = 0;
        for round in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 140) as usize;
            let mut text: Vec<u8> =
                (0..len).map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()]).collect();
            if round % 50 == 0 {
                // A digit run of 200 to 400 somewhere: integers near f64's limit of 309 digits.
                let at = (seed >> 20) as usize % (len + 1);
                let run = 200 + (seed >> 30) as usize % 200;
                text.splice(at..at, std::iter::repeat_n(b'7', run));
            }
            let (expected, longest_run) = naive_unreadable(&text);
            let filtered = may_hold_unreadable_values(&text);
            found += usize::from(expected);
            if longest_run < 224 {
                assert_eq!(filtered, expected, "{:?}", String::from_utf8_lossy(&text));
            } else {
                // Runs of 224 to 299 digits may be flagged too (it is a filter): the full read settles them.
                assert!(filtered || !expected, "{:?}", String::from_utf8_lossy(&text));
            }
        }
        assert!(found > 500, "the generator should make unreadable texts often enough to test: {found}");
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
