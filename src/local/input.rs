//! What `replay` reads: files and directories, each file one of the shapes events travel in, recognised by content.

use std::fmt;
use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use serde_json::value::RawValue;

use intercom_relay_lambda::queue::{SqsEvent, SqsRecordExt};

/// What a file holds.
#[derive(Debug)]
pub(crate) enum Input {
    /// One Segment event (`{"type": "track", …}`).
    Event(String),
    /// A batch body, as `/v1/batch` takes it.
    Batch(String),
    /// A JSON array of Segment events.
    Array(Vec<String>),
    /// Newline-delimited JSON: one event or batch body per line.
    Ndjson(Vec<Line>),
    /// A function-URL (API Gateway payload 2.0) request, as Lambda hands it to the ingest function.
    Request(Box<lambda_http::Request>),
    /// An SQS event of envelopes, as Lambda hands it to the forward function.
    Sqs(SqsEvent),
    /// A destination-settings document (`events/settings/`): not events; `--settings` takes it.
    Settings,
}

impl Input {
    /// What the file was recognised as, for the user.
    pub(crate) fn describe(&self) -> String {
        match self {
            Input::Event(_) => "a Segment event".into(),
            Input::Batch(_) => "a batch body".into(),
            Input::Array(events) => format!("a JSON array of {} events", events.len()),
            Input::Ndjson(lines) => format!("NDJSON, {} lines", lines.len()),
            Input::Request(_) => "a function-URL request".into(),
            Input::Sqs(event) => format!("an SQS event of {} records", event.records.len()),
            Input::Settings => "a settings document".into(),
        }
    }
}

/// One line of an NDJSON file.
#[derive(Debug)]
pub(crate) struct Line {
    /// From 1.
    pub(crate) number: usize,
    pub(crate) text: String,
    /// A batch body rather than one event.
    pub(crate) batch: bool,
}

/// Why a path could not be read as input; the message names the file and what was expected.
#[derive(Debug)]
pub struct InputError {
    pub(crate) path: PathBuf,
    pub(crate) message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for InputError {}

/// Why a file's text is none of the shapes replay reads; the message says what was expected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unrecognised {
    #[error("is empty: {SHAPES}")]
    Empty,
    #[error("is an empty array: {SHAPES}")]
    EmptyArray,
    #[error("holds a JSON {0}, not an object or array: {SHAPES}")]
    NotAnObjectOrArray(&'static str),
    #[error("is neither JSON ({json}) nor NDJSON ({ndjson})")]
    Neither {
        #[source]
        json: serde_json::Error,
        ndjson: NotNdjson,
    },
    #[error("looks like an SQS event (it has \"Records\") but is not one: {0}")]
    NotAnSqsEvent(#[source] serde_json::Error),
    #[error("holds the SQS messageId {0} twice: each record of an SQS event is one message")]
    SqsMessageTwice(String),
    #[error("looks like a function-URL request (it has \"requestContext\") but is not one: {0}")]
    NotARequest(#[source] serde_json::Error),
    #[error("is a JSON object of no shape replay knows: {SHAPES}")]
    UnknownObject,
}

/// Why a text is not NDJSON (read when it is not JSON as a whole).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotNdjson {
    #[error("line {number} holds a JSON {kind}, not an event")]
    NotAnEvent { number: usize, kind: &'static str },
    #[error("line {number}: {error}")]
    Malformed {
        number: usize,
        #[source]
        error: serde_json::Error,
    },
    #[error("it has fewer than two JSON lines")]
    TooFewLines,
}

const SHAPES: &str = "expected a Segment event (an object with \"type\"), a batch body ({\"batch\": [...]}), a JSON array \
of events, NDJSON (one event per line), a function-URL request event (with \"requestContext\") or an SQS event \
({\"Records\": [...]})";

/// Extensions a directory walk picks up; a file named on the command line is read whatever its name.
const EXTENSIONS: [&str; 3] = ["json", "ndjson", "jsonl"];

/// The files `paths` name: files as given, directories walked recursively (files with a JSON or NDJSON extension, in
/// name order), so a replay is repeatable.
pub(crate) fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut files = Vec::new();
    for path in paths {
        let metadata =
            std::fs::metadata(path).map_err(|e| InputError { path: path.clone(), message: e.to_string() })?;
        if metadata.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// The paths in `dir`, in name order.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let error = |e: std::io::Error| InputError { path: dir.to_owned(), message: e.to_string() };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(error)?;
    entries.sort();
    Ok(entries)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let error = |e: std::io::Error| InputError { path: dir.to_owned(), message: e.to_string() };
    for path in sorted_entries(dir)? {
        // A symlinked directory is not followed (a link back up the tree would never end); name it to replay it.
        let is_dir = std::fs::symlink_metadata(&path).map_err(error)?.is_dir();
        if is_dir {
            walk(&path, files)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e)) {
            files.push(path);
        }
    }
    Ok(())
}

/// Reads `path` and recognises what it holds.
pub(crate) fn read(path: &Path) -> Result<Input, InputError> {
    let error = |message: String| InputError { path: path.to_owned(), message };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        error(format!("is not UTF-8 text (the first bad byte is at offset {})", e.utf8_error().valid_up_to()))
    })?;
    recognise(text).map_err(|unrecognised| error(unrecognised.to_string()))
}

/// Recognises what `text` holds. Only the top level is read here (as raw JSON, so an event's own numbers and duplicate
/// keys reach the ingest validation intact, and one bad event is refused alone rather than stopping the run).
pub(crate) fn recognise(text: String) -> Result<Input, Unrecognised> {
    if text.trim().is_empty() {
        return Err(Unrecognised::Empty);
    }
    let first = text.trim_start_matches('\u{feff}').trim_start().as_bytes().first().copied();
    let whole_error = match first {
        Some(b'[') => match serde_json::from_str::<Vec<Box<RawValue>>>(&text) {
            Ok(events) if events.is_empty() => return Err(Unrecognised::EmptyArray),
            Ok(events) => return Ok(Input::Array(events.into_iter().map(|e| e.get().to_owned()).collect())),
            Err(e) => e,
        },
        Some(b'{') => match serde_json::from_str::<TopLevel>(&text) {
            Ok(object) => return object_shape(text, &object),
            Err(e) => e,
        },
        _ => match serde_json::from_str::<Value>(&text) {
            Ok(other) => return Err(Unrecognised::NotAnObjectOrArray(kind(&other))),
            Err(e) => e,
        },
    };
    ndjson(&text).map_err(|ndjson| Unrecognised::Neither { json: whole_error, ndjson })
}

/// An object's top-level members, unparsed.
type TopLevel = BTreeMap<String, Box<RawValue>>;

fn object_shape(text: String, object: &TopLevel) -> Result<Input, Unrecognised> {
    if object.contains_key("Records") {
        let event: SqsEvent = serde_json::from_str(&text).map_err(Unrecognised::NotAnSqsEvent)?;
        let mut seen = HashSet::new();
        if let Some(twice) = event.records.iter().find(|r| !seen.insert(r.id())) {
            return Err(Unrecognised::SqsMessageTwice(twice.id().to_owned()));
        }
        return Ok(Input::Sqs(event));
    }
    if object.contains_key("requestContext") {
        // Through the same guard as the ingest function: lambda_http panics on a body marked base64 that is not.
        return serde_json::from_str::<lambda_http::request::LambdaRequest>(&text)
            .map(|event| Input::Request(Box::new(intercom_relay_lambda::ingest::guard_base64(event).into())))
            .map_err(Unrecognised::NotARequest);
    }
    if object.contains_key("batch") {
        return Ok(Input::Batch(text));
    }
    if object.get("type").is_some_and(|t| t.get().starts_with('"')) {
        return Ok(Input::Event(text));
    }
    let schema = intercom_relay_lambda::settings::committed_schema();
    let settings_keys = schema["properties"].as_object();
    if !object.is_empty() && object.keys().all(|key| settings_keys.is_some_and(|keys| keys.contains_key(key))) {
        return Ok(Input::Settings);
    }
    Err(Unrecognised::UnknownObject)
}

fn ndjson(text: &str) -> Result<Input, NotNdjson> {
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, line)| (i + 1, line.trim())) {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<TopLevel>(line) {
            Ok(object) => lines.push(Line { number, text: line.to_owned(), batch: object.contains_key("batch") }),
            Err(e) => {
                return Err(match serde_json::from_str::<Value>(line) {
                    Ok(other) => NotNdjson::NotAnEvent { number, kind: kind(&other) },
                    Err(_) => NotNdjson::Malformed { number, error: e },
                });
            }
        }
    }
    if lines.len() < 2 {
        return Err(NotNdjson::TooFewLines);
    }
    Ok(Input::Ndjson(lines))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(text: &str) -> Result<String, Unrecognised> {
        recognise(text.to_owned()).map(|input| input.describe())
    }

    #[test]
    fn every_shape_is_recognised_by_its_content() {
        let cases = [
            (r#"{"type": "track", "userId": "u", "event": "E"}"#, "a Segment event"),
            (r#"{"batch": [{"type": "track"}], "sentAt": "2026-01-01T00:00:00Z"}"#, "a batch body"),
            (r#"[{"type": "track"}, {"type": "page"}]"#, "a JSON array of 2 events"),
            ("{\"type\": \"track\"}\n\n{\"type\": \"page\"}\n", "NDJSON, 2 lines"),
            // Numbers beyond f64 and duplicate keys are the ingest validation's to refuse, event by event.
            (r#"[{"type": "track", "n": 1e400}, {"type": "page", "a": 1, "a": 2}]"#, "a JSON array of 2 events"),
            (include_str!("../../events/requests/track.json"), "a function-URL request"),
            (r#"{"Records": [{"messageId": "m", "body": "{}"}]}"#, "an SQS event of 1 records"),
            (r#"{"events": {"deny": ["Debug *"]}, "page": null}"#, "a settings document"),
        ];
        for (text, expected) in cases {
            match shape(text) {
                Ok(shape) => assert_eq!(shape, expected, "{text}"),
                Err(error) => panic!("{text}: {error}"),
            }
        }
    }

    #[test]
    fn events_are_passed_on_as_written_and_batch_lines_are_known() {
        let Ok(Input::Array(events)) = recognise(r#"[{"type": "track", "n": 1e400}]"#.into()) else { panic!() };
        assert_eq!(events, [r#"{"type": "track", "n": 1e400}"#]);
        let text = "{\"type\": \"page\"}\n{ \"sentAt\": \"2026-01-01T00:00:00Z\", \"batch\": [] }\n";
        let Ok(Input::Ndjson(lines)) = recognise(text.into()) else { panic!() };
        assert_eq!(lines.iter().map(|l| (l.number, l.batch)).collect::<Vec<_>>(), [(1, false), (2, true)]);
    }

    #[test]
    fn what_cannot_be_recognised_is_said_with_what_was_expected() {
        let cases = [
            ("", "is empty: expected a Segment event"),
            ("{\"userId\": \"u\"}", "is a JSON object of no shape replay knows: expected a Segment event"),
            ("42", "holds a JSON number, not an object or array"),
            ("[]", "is an empty array"),
            ("{\"type\": \"track\"", "is neither JSON (EOF while parsing an object at line 1 column 16) nor NDJSON"),
            ("{\"type\": \"track\"}\n{\"type\": ", "nor NDJSON (line 2: EOF while parsing a value"),
            ("{\"type\": \"track\"}\n[1]", "nor NDJSON (line 2 holds a JSON array, not an event)"),
            (r#"{"Records": {"a": 1}}"#, "looks like an SQS event (it has \"Records\") but is not one: invalid type"),
            (
                r#"{"requestContext": 1}"#,
                "looks like a function-URL request (it has \"requestContext\") but is not one",
            ),
        ];
        for (text, expected) in cases {
            let error = shape(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
