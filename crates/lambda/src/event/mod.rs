//! The Segment spec: typed events, parsing with validation (errors name the JSON path) and normalisation.

mod fields;
mod json;
mod parse;
mod scan;
mod timestamp;

use serde::ser::{Serialize, Serializer};
use serde_json::value::RawValue;
use time::OffsetDateTime;

pub(crate) use json::JsonObject;
pub use json::{RawObject, TopLevel};
pub use parse::{
    Batch, BatchDefaults, BodyError, FieldError, MAX_DEPTH, RawEvent, Rejected, parse_batch, parse_event, parse_single,
    timestamp_member,
};
pub use timestamp::{TimestampError, format_timestamp, parse_timestamp, read_timestamp};

/// Most bytes one event may take, as Segment's API allows (32 KB).
pub(crate) const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Most bytes one batch request may take after decompression, as Segment's API allows (500 KB).
pub(crate) const MAX_BATCH_BYTES: usize = 500 * 1024;

/// A Segment event type, as `type` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventType {
    /// Every type, in the order the Segment spec lists them.
    pub const ALL: [EventType; 6] =
        [EventType::Identify, EventType::Track, EventType::Page, EventType::Screen, EventType::Group, EventType::Alias];

    /// The name used in `type` and in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Identify => "identify",
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }

    /// The type named `name`, exactly as the spec spells it.
    pub(crate) fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated, normalised Segment event.
///
/// Free-form parts (`context`, `traits`, …) are kept as their original JSON text: ingest passes them through
/// byte for byte (key order and number precision intact) and only the forwarder looks inside.
#[derive(Clone, Debug)]
pub struct Event {
    pub(crate) kind: EventType,
    pub message_id: String,
    pub(crate) user_id: Option<String>,
    pub(crate) anonymous_id: Option<String>,
    /// When the event happened, corrected for the client's clock skew.
    pub timestamp: OffsetDateTime,
    /// The client's own timestamp, when skew correction changed it.
    pub original_timestamp: Option<OffsetDateTime>,
    pub sent_at: Option<OffsetDateTime>,
    pub(crate) received_at: OffsetDateTime,
    pub(crate) context: Option<RawObject>,
    pub(crate) integrations: Option<RawObject>,
    pub(crate) traits: Option<RawObject>,
    pub(crate) properties: Option<RawObject>,
    /// The track event's name.
    pub(crate) event: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) category: Option<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) previous_id: Option<String>,
    /// Top-level fields the spec does not name, kept as sent.
    pub(crate) extra: Vec<(String, Box<RawValue>)>,
}

impl Event {
    /// The key that orders this person's events: userId, else anonymousId (group calls: userId, else groupId).
    pub(crate) fn ordering_key(&self) -> &str {
        let fallback = match self.kind {
            EventType::Group => self.group_id.as_deref(),
            _ => self.anonymous_id.as_deref(),
        };
        self.user_id.as_deref().or(fallback).or(self.anonymous_id.as_deref()).unwrap_or(&self.message_id)
    }

    /// Appends the event as compact JSON: Segment's field names, free-form parts as their original text, times as
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`. Written directly rather than through serde, as ingest does this for every event.
    pub(crate) fn write_json(&self, out: &mut String) {
        let mut object = JsonObject::start(out);
        object.string("type", self.kind.as_str());
        object.string("messageId", &self.message_id);
        let strings = [
            ("userId", &self.user_id),
            ("anonymousId", &self.anonymous_id),
            ("event", &self.event),
            ("name", &self.name),
            ("category", &self.category),
            ("groupId", &self.group_id),
            ("previousId", &self.previous_id),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                object.string(key, value);
            }
        }
        let objects = [
            ("traits", &self.traits),
            ("properties", &self.properties),
            ("context", &self.context),
            ("integrations", &self.integrations),
        ];
        for (key, value) in objects {
            if let Some(value) = value {
                object.raw(key, value.get());
            }
        }
        object.time("timestamp", self.timestamp);
        if let Some(original) = self.original_timestamp {
            object.time("originalTimestamp", original);
        }
        if let Some(sent_at) = self.sent_at {
            object.time("sentAt", sent_at);
        }
        object.time("receivedAt", self.received_at);
        for (key, value) in &self.extra {
            object.raw(key, value.get());
        }
        object.end();
    }
}

/// The same JSON as [`Event::write_json`].
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut json = String::new();
        self.write_json(&mut json);
        let raw = RawValue::from_string(json).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}
