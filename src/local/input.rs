//! What `replay` reads: files and directories, each file one of the shapes events travel in, recognised by content.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::forward::SqsEvent;

/// What a file holds.
#[derive(Debug)]
pub enum Input {
    /// One Segment event (`{"type": "track", …}`).
    Event(String),
    /// A batch body, as `/v1/batch` takes it.
    Batch(String),
    /// A JSON array of Segment events.
    Array(Vec<String>),
    /// Newline-delimited JSON: one event or batch body per line, with its line number.
    Ndjson(Vec<(usize, String)>),
    /// A function-URL (API Gateway payload 2.0) request, as Lambda hands it to the ingest function.
    Request(Box<lambda_http::Request>),
    /// An SQS event of envelopes, as Lambda hands it to the forward function.
    Sqs(SqsEvent),
}

impl Input {
    /// What the file was recognised as, for the user.
    pub fn describe(&self) -> String {
        match self {
            Input::Event(_) => "a Segment event".into(),
            Input::Batch(_) => "a batch body".into(),
            Input::Array(events) => format!("a JSON array of {} events", events.len()),
            Input::Ndjson(lines) => format!("NDJSON, {} lines", lines.len()),
            Input::Request(_) => "a function-URL request".into(),
            Input::Sqs(event) => format!("an SQS event of {} records", event.records.len()),
        }
    }
}

/// Why a path could not be read as input; the message names the file and what was expected.
#[derive(Debug)]
pub struct InputError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for InputError {}

const SHAPES: &str = "expected a Segment event (an object with \"type\"), a batch body ({\"batch\": [...]}), a JSON array \
of events, NDJSON (one event per line), a function-URL request event (with \"requestContext\") or an SQS event \
({\"Records\": [...]})";

/// Extensions a directory walk picks up; a file named on the command line is read whatever its name.
const EXTENSIONS: [&str; 3] = ["json", "ndjson", "jsonl"];

/// The files `paths` name: files as given, directories walked recursively (files with a JSON or NDJSON extension, in
/// name order), so a replay is repeatable.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
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

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let error = |e: std::io::Error| InputError { path: dir.to_owned(), message: e.to_string() };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(error)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, files)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e)) {
            files.push(path);
        }
    }
    Ok(())
}

/// Reads `path` and recognises what it holds.
pub fn read(path: &Path) -> Result<Input, InputError> {
    let error = |message: String| InputError { path: path.to_owned(), message };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        error(format!("is not UTF-8 text (the first bad byte is at offset {})", e.utf8_error().valid_up_to()))
    })?;
    recognise(text).map_err(error)
}

/// Recognises what `text` holds.
pub fn recognise(text: String) -> Result<Input, String> {
    if text.trim().is_empty() {
        return Err(format!("is empty: {SHAPES}"));
    }
    let whole = match serde_json::from_str::<Value>(&text) {
        Ok(value) => value,
        Err(whole) => return ndjson(&text).map_err(|line| format!("is neither JSON ({whole}) nor NDJSON ({line})")),
    };
    match &whole {
        Value::Array(events) => {
            if events.is_empty() {
                return Err(format!("is an empty array: {SHAPES}"));
            }
            Ok(Input::Array(events.iter().map(Value::to_string).collect()))
        }
        Value::Object(object) if object.contains_key("Records") => {
            let event: SqsEvent = serde_json::from_value(whole.clone())
                .map_err(|e| format!("looks like an SQS event (it has \"Records\") but is not one: {e}"))?;
            Ok(Input::Sqs(event))
        }
        Value::Object(object) if object.contains_key("requestContext") => lambda_http::request::from_str(&text)
            .map(|request| Input::Request(Box::new(request)))
            .map_err(|e| format!("looks like a function-URL request (it has \"requestContext\") but is not one: {e}")),
        Value::Object(object) if object.contains_key("batch") => Ok(Input::Batch(text)),
        Value::Object(object) if object.get("type").is_some_and(Value::is_string) => Ok(Input::Event(text)),
        Value::Object(_) => Err(format!("is a JSON object of no shape replay knows: {SHAPES}")),
        _ => Err(format!("holds a JSON {}, not an object or array: {SHAPES}", kind(&whole))),
    }
}

fn ndjson(text: &str) -> Result<Input, String> {
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, line)| (i + 1, line.trim())) {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(_)) => lines.push((number, line.to_owned())),
            Ok(other) => return Err(format!("line {number} holds a JSON {}, not an event", kind(&other))),
            Err(e) => return Err(format!("line {number}: {e}")),
        }
    }
    if lines.len() < 2 {
        return Err("it has fewer than two JSON lines".into());
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

    fn shape(text: &str) -> Result<String, String> {
        recognise(text.to_owned()).map(|input| input.describe())
    }

    #[test]
    fn every_shape_is_recognised_by_its_content() {
        let cases = [
            (r#"{"type": "track", "userId": "u", "event": "E"}"#, "a Segment event"),
            (r#"{"batch": [{"type": "track"}], "sentAt": "2026-01-01T00:00:00Z"}"#, "a batch body"),
            (r#"[{"type": "track"}, {"type": "page"}]"#, "a JSON array of 2 events"),
            ("{\"type\": \"track\"}\n\n{\"type\": \"page\"}\n", "NDJSON, 2 lines"),
            (include_str!("../../events/requests/track.json"), "a function-URL request"),
            (r#"{"Records": [{"messageId": "m", "body": "{}"}]}"#, "an SQS event of 1 records"),
        ];
        for (text, expected) in cases {
            assert_eq!(shape(text).as_deref(), Ok(expected), "{text}");
        }
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
            let error = shape(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
