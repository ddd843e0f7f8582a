//! The SQS message both Lambdas agree on: a version, when the event was received, its message id and the normalised event.

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::event::{BatchDefaults, Event, JsonObject, RawEvent, TopLevel, parse_event, parse_timestamp};

/// The envelope format this build writes; readers refuse versions they do not know.
pub(crate) const ENVELOPE_VERSION: u32 = 1;

/// One event on its way from ingest to the forwarder.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub event: Event,
    /// The kind of write key the event came with.
    pub key: KeyKind,
}

/// Who sent an event: a server (its key is a secret, trusted), or a browser or app (its key ships in every page, so
/// anyone may send with it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyKind {
    #[default]
    Server,
    Browser,
}

impl Envelope {
    /// An envelope for an event sent with a server key (or by an operator).
    pub fn server(event: Event) -> Envelope {
        Envelope { event, key: KeyKind::Server }
    }
}

#[derive(Deserialize)]
struct In<'a> {
    version: u32,
    #[serde(borrow)]
    event: &'a RawValue,
    /// `"browser"` for an event sent with a browser key; absent for a server key (and in envelopes written before
    /// keys had kinds, all of which came with the one kind there was).
    #[serde(default)]
    key: Option<&'a str>,
}

/// Why a message body is not an envelope this build can read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the message body is not an envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("envelope version {0} is not one this build reads (it reads {ENVELOPE_VERSION})")]
    UnknownVersion(u32),
    #[error("the envelope's event is invalid: {0}")]
    InvalidEvent(String),
}

impl Envelope {
    /// The SQS message body: compact JSON whose characters SQS accepts.
    pub(crate) fn to_body(&self) -> String {
        // Sized once: the free-form parts are most of the body, and growing a 1 KB String by doubling costs more.
        let raw_parts = [&self.event.context, &self.event.traits, &self.event.properties, &self.event.integrations];
        let estimate =
            512 + raw_parts.iter().filter_map(|part| part.as_ref()).map(|part| part.get().len()).sum::<usize>();
        let mut json = String::with_capacity(estimate);
        let mut object = JsonObject::start(&mut json);
        object.number("version", ENVELOPE_VERSION.into());
        object.string("message_id", &self.event.message_id);
        object.time("received_at", self.event.received_at);
        if self.key == KeyKind::Browser {
            object.string("key", "browser");
        }
        self.event.write_json(object.member("event"));
        object.end();
        escape_for_sqs(json)
    }

    /// Reads a body written by [`Envelope::to_body`].
    pub fn from_body(body: &str) -> Result<Envelope, EnvelopeError> {
        let envelope: In<'_> = serde_json::from_str(body)?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnknownVersion(envelope.version));
        }
        // Skew correction is idempotent (receivedAt, sentAt and originalTimestamp are all kept), so it lands where it did.
        let received_at = TopLevel::parse(envelope.event.get())?
            .get("receivedAt")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .and_then(|text| parse_timestamp(&text))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let event =
            parse_event(&RawEvent::accepted(envelope.event.get())?, None, &BatchDefaults::default(), received_at)
                .map_err(|rejected| {
                    let errors: Vec<String> = rejected.errors.iter().map(ToString::to_string).collect();
                    EnvelopeError::InvalidEvent(errors.join("; "))
                })?;
        let key = if envelope.key == Some("browser") { KeyKind::Browser } else { KeyKind::Server };
        Ok(Envelope { event, key })
    }
}

/// SQS refuses U+FFFE and U+FFFF in a body; JSON lets them be written as escapes, which mean the same.
fn escape_for_sqs(json: String) -> String {
    // Both encode as EF BF BE / EF BF BF in UTF-8; 0xEF is rare, so memchr finds the answer fast.
    let bytes = json.as_bytes();
    let found = memchr::memchr_iter(0xEF, bytes)
        .any(|i| bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)));
    if !found {
        return json;
    }
    json.replace('\u{fffe}', "\\ufffe").replace('\u{ffff}', "\\uffff")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_keys_event_says_so_and_one_that_does_not_is_a_servers() {
        let sent = event(r#"{"type":"track","userId":"u","event":"e"}"#);
        let browser = Envelope { event: sent.clone(), key: KeyKind::Browser }.to_body();
        assert!(browser.contains(r#""key":"browser""#), "{browser}");
        assert_eq!(Envelope::from_body(&browser).unwrap().key, KeyKind::Browser);
        let server = Envelope::server(sent).to_body();
        assert!(!server.contains(r#""key""#), "{server}");
        assert_eq!(Envelope::from_body(&server).unwrap().key, KeyKind::Server);
    }

    fn event(json: &str) -> Event {
        let received = parse_timestamp("2024-05-01T12:00:00.123Z").unwrap();
        parse_event(&RawEvent::parse(json).unwrap(), None, &BatchDefaults::default(), received).unwrap()
    }

    #[test]
    fn an_envelope_round_trips_without_a_second_skew_correction() {
        let original = event(
            r#"{"type":"track","userId":"u","event":"Order Completed","messageId":"m-1","properties":{"revenue":9.99},"timestamp":"2024-05-01T13:00:00Z","sentAt":"2024-05-01T13:00:01Z"}"#,
        );
        let body = Envelope::server(original.clone()).to_body();
        assert!(
            body.starts_with(r#"{"version":1,"message_id":"m-1","received_at":"2024-05-01T12:00:00.123Z","event":{"#),
            "{body}"
        );
        let read = Envelope::from_body(&body).unwrap();
        assert_eq!(read.event.timestamp, original.timestamp);
        assert_eq!(read.event.received_at, original.received_at);
        assert_eq!(read.event.original_timestamp, original.original_timestamp);
        assert_eq!(read.event.properties.as_ref().unwrap().get(), r#"{"revenue":9.99}"#);
        assert_eq!(Envelope::server(read.event).to_body(), body);
    }

    #[test]
    fn an_event_with_sent_at_and_no_timestamp_reads_back_at_the_same_time() {
        // Found by the property tests: the forwarder read the stored timestamp as the client's and corrected it again,
        // by the whole gap to sentAt, and refused the event outright when that gap was centuries.
        for sent_at in ["2024-05-01T13:00:00Z", "4052-10-13T10:00:00Z"] {
            let original = event(&format!(r#"{{"type":"identify","userId":"u","sentAt":"{sent_at}"}}"#));
            assert_eq!(original.timestamp, original.received_at);
            let read = Envelope::from_body(&Envelope::server(original.clone()).to_body()).unwrap();
            assert_eq!(read.event.timestamp, original.timestamp, "{sent_at}");
        }
    }

    #[test]
    fn an_event_that_grew_past_32_kb_in_normalisation_is_still_read() {
        let padding = "x".repeat(crate::event::MAX_EVENT_BYTES - 80);
        let original =
            event(&format!(r#"{{"type":"track","userId":"u","event":"e","properties":{{"p":"{padding}"}}}}"#));
        let body = Envelope::server(original).to_body();
        assert!(body.len() > crate::event::MAX_EVENT_BYTES, "the envelope grew: {} bytes", body.len());
        assert!(Envelope::from_body(&body).is_ok());
    }

    #[test]
    fn characters_sqs_refuses_are_escaped() {
        let body =
            Envelope::server(event("{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"x\":\"a\u{ffff}b\"}"))
                .to_body();
        assert!(!body.contains('\u{ffff}'));
        assert!(body.contains("a\\uffffb"));
    }

    #[test]
    fn the_body_is_json_that_keeps_every_string_and_raw_part_exactly() {
        let user_id = "u \"quoted\" \\ back\nline\t\u{1} é 😀 \u{7f}";
        let json = format!(
            r#"{{"type":"track","userId":{},"event":"e","messageId":"m-2","properties":{{"n":1.50,"big":123456789012345678901234567890}},"odd \"key\"\n":[1, 2]}}"#,
            serde_json::to_string(user_id).unwrap()
        );
        let original = event(&json);
        let body = Envelope::server(original.clone()).to_body();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(value["message_id"], "m-2");
        assert_eq!(value["event"]["userId"], user_id);
        assert_eq!(value["event"]["odd \"key\"\n"], serde_json::json!([1, 2]));
        assert!(body.contains(r#""properties":{"n":1.50,"big":123456789012345678901234567890}"#), "{body}");
        assert!(body.contains(r#""odd \"key\"\n":[1, 2]"#), "{body}");
        // Event's Serialize writes the same text.
        let event_json = serde_json::to_string(&original).unwrap();
        assert!(body.ends_with(&format!(",\"event\":{event_json}}}")), "{body}");
        assert_eq!(Envelope::from_body(&body).unwrap().event.user_id.as_deref(), Some(user_id));
    }

    #[test]
    fn unknown_versions_are_refused() {
        let error = Envelope::from_body(r#"{"version":9,"event":{}}"#).unwrap_err();
        assert_eq!(error.to_string(), "envelope version 9 is not one this build reads (it reads 1)");
    }
}
