//! Archives a CDP leaves behind, read one line at a time: gzipped NDJSON (Segment's S3 destination, RudderStack's
//! event replay archive) or plain NDJSON, each line a Segment event, a batch body or a RudderStack archive record.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::bufread::MultiGzDecoder;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use super::input::InputError;
use intercom_relay_lambda::event::{
    Batch, BodyError, FieldError, TopLevel, parse_batch, parse_single, timestamp_member,
};

/// Extensions an archive's files have; a directory walk picks up these and passes over the rest.
pub(crate) const ARCHIVE_EXTENSIONS: [&str; 3] = ["gz", "ndjson", "jsonl"];

/// The longest line read whole (RudderStack's gateway takes requests of up to 4 MB); a longer one is refused.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// One file of an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ArchiveFile {
    pub(crate) path: PathBuf,
    /// Its size on disk (compressed, for a `.gz`).
    pub(crate) bytes: u64,
}

impl ArchiveFile {
    pub(crate) fn is_gzip(&self) -> bool {
        is_gzip(&self.path)
    }
}

/// Whether `path` names a gzipped file.
pub(crate) fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

fn is_archive(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ARCHIVE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The archive files `paths` name, in a stable order: each path in the order given, a directory walked recursively in
/// name order (Segment's received-day directories are Unix times of equal length, so name order is time order); a file
/// named twice is read once. Also returns how many files the walks passed over (not `.gz`, `.ndjson` or `.jsonl`).
/// A file named on the command line must be one of those.
pub(crate) fn archive_files(paths: &[PathBuf]) -> Result<(Vec<ArchiveFile>, usize), InputError> {
    let mut files = Vec::new();
    let mut passed_over = 0;
    for path in paths {
        let error = |e: std::io::Error| InputError { path: path.clone(), message: e.to_string() };
        let metadata = std::fs::metadata(path).map_err(error)?;
        if metadata.is_dir() {
            walk(path, &mut files, &mut passed_over)?;
        } else if is_archive(path) {
            files.push(ArchiveFile { path: path.clone(), bytes: metadata.len() });
        } else {
            return Err(InputError {
                path: path.clone(),
                message: "is not an archive file: a backfill reads gzipped NDJSON (.gz) and NDJSON (.ndjson, .jsonl), \
                          one event per line; replay other files without --to-queue, --since, --until or --checkpoint"
                    .into(),
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|file| seen.insert(file.path.clone()));
    Ok((files, passed_over))
}

/// Whether `paths` name a gzipped file, or a directory holding one at any depth: `replay` reads them as a backfill.
pub fn holds_gzip(paths: &[PathBuf]) -> bool {
    fn any(dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else { return false };
        entries.filter_map(Result::ok).any(|entry| {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => any(&path),
                Ok(_) => is_gzip(&path),
                Err(_) => false,
            }
        })
    }
    paths.iter().any(|path| if path.is_dir() { any(path) } else { is_gzip(path) })
}

fn walk(dir: &Path, files: &mut Vec<ArchiveFile>, passed_over: &mut usize) -> Result<(), InputError> {
    let error = |e: std::io::Error| InputError { path: dir.to_owned(), message: e.to_string() };
    for path in super::input::sorted_entries(dir)? {
        // A symlinked directory is not followed (a link back up the tree would never end); name it to read it.
        let metadata = std::fs::symlink_metadata(&path).map_err(error)?;
        if metadata.is_dir() {
            walk(&path, files, passed_over)?;
        } else if is_archive(&path) {
            let bytes = std::fs::metadata(&path).map_err(error)?.len();
            files.push(ArchiveFile { path, bytes });
        } else {
            *passed_over += 1;
        }
    }
    Ok(())
}

/// Counts the bytes read from the file (before decompression), for the progress bar.
struct Counted {
    file: File,
    read: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Why the next line could not be read.
#[derive(Debug)]
pub(crate) enum LineError {
    /// The line is over [`MAX_LINE_BYTES`]; the rest of it was passed over, and the lines after it can be read.
    TooLong,
    /// The file cannot be read on (a corrupt or truncated gzip stream, an I/O error): nothing after this is read.
    Broken(std::io::Error),
}

/// A file's lines, one at a time: memory holds one line, whatever the file's size. Gzip files may be several gzip
/// members one after another, as concatenated `.gz` files are.
pub(crate) struct Lines {
    reader: Box<dyn BufRead + Send>,
    /// Lines returned so far; the number of the last one.
    number: u64,
}

impl Lines {
    /// Opens `file`, adding the bytes read from it to `read` as they are read.
    pub(crate) fn open(file: &ArchiveFile, read: Arc<AtomicU64>) -> std::io::Result<Lines> {
        let counted = BufReader::with_capacity(64 * 1024, Counted { file: File::open(&file.path)?, read });
        let reader: Box<dyn BufRead + Send> = if file.is_gzip() {
            Box::new(BufReader::with_capacity(64 * 1024, MultiGzDecoder::new(counted)))
        } else {
            Box::new(counted)
        };
        Ok(Lines { reader, number: 0 })
    }

    /// The number of the last line returned (from 1).
    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Reads the next line into `line` (without its `\n` or `\r\n`); `Ok(false)` at the end of the file.
    pub(crate) fn next_line(&mut self, line: &mut Vec<u8>) -> Result<bool, LineError> {
        line.clear();
        let mut too_long = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LineError::Broken(e)),
            };
            if available.is_empty() {
                if line.is_empty() && !too_long {
                    return Ok(false);
                }
                break;
            }
            let (part, end) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            if !too_long && line.len() + part.len() > MAX_LINE_BYTES {
                too_long = true;
                line.clear();
            }
            if !too_long {
                line.extend_from_slice(part);
            }
            let used = end.unwrap_or(available.len());
            self.reader.consume(used);
            if end.is_some() {
                break;
            }
        }
        self.number += 1;
        if too_long {
            return Err(LineError::TooLong);
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(true)
    }
}

/// What one line of an archive holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One Segment event, as Segment's S3 destination writes each line.
    Event,
    /// A batch body (`{"batch": […]}`).
    Batch,
    /// A record of RudderStack's event replay archive: `{"userId", "payload", "createdAt", "messageId"}`, its payload
    /// the gateway's (`{"batch": [events], "receivedAt", "writeKey", "requestIP"}`); or a job of its older jobs-table
    /// backups (`{"UserID", "EventPayload", "CreatedAt", …}`).
    RudderStack,
}

/// A line read: its events, and when the CDP received them as the record (not each event) says.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub(crate) shape: Shape,
    pub(crate) batch: Batch<'a>,
    /// The batch's or RudderStack record's `receivedAt`, else the record's `createdAt`.
    pub(crate) received_at: Option<OffsetDateTime>,
}

/// Why a line holds no events to read: what is wrong, at which path of the line (empty for the whole line).
pub(crate) type LineRefusal = FieldError;

const SHAPES: &str = "expected a Segment event (an object with \"type\"), a batch body ({\"batch\": [...]}) or a RudderStack \
archive record ({\"payload\": {...}})";

/// Reads one line (trimmed, not empty) of an archive.
pub(crate) fn record(line: &str) -> Result<Record<'_>, LineRefusal> {
    let whole = |message: String| FieldError::new("", message);
    if !line.starts_with('{') {
        return Err(match serde_json::from_str::<serde_json::Value>(line) {
            Ok(other) => whole(format!("holds a JSON {}, not an object: {SHAPES}", kind(&other))),
            Err(e) => whole(format!("is not JSON: {e}")),
        });
    }
    let members = TopLevel::parse(line).map_err(|e| whole(format!("is not JSON: {e}")))?;
    if members.get("type").is_some() {
        return Ok(Record { shape: Shape::Event, batch: parse_single(line).map_err(refusal)?, received_at: None });
    }
    if members.get("batch").is_some() {
        let received_at = timestamp_member(members.get("receivedAt"), "receivedAt")?;
        return Ok(Record { shape: Shape::Batch, batch: parse_batch(line).map_err(refusal)?, received_at });
    }
    let Some((key, payload)) =
        ["payload", "EventPayload", "event_payload"].iter().find_map(|key| Some((*key, members.get(key)?)))
    else {
        return Err(whole(format!("is a JSON object of no shape a backfill knows: {SHAPES}")));
    };
    let created = ["createdAt", "CreatedAt", "created_at"].iter().find_map(|key| Some((*key, members.get(key)?)));
    let created_at = match created {
        Some((key, raw)) => timestamp_member(Some(raw), key)?,
        None => None,
    };
    record_payload(key, payload, created_at)
}

fn record_payload<'a>(
    key: &str,
    payload: &'a RawValue,
    created_at: Option<OffsetDateTime>,
) -> Result<Record<'a>, LineRefusal> {
    let text = payload.get();
    if !text.starts_with('{') {
        return Err(FieldError::new(key, "must be an object: the gateway's batch of events"));
    }
    let members = TopLevel::parse(text).map_err(|e| FieldError::new(key, e.to_string()))?;
    let inner = |error: BodyError| {
        let error = refusal(error);
        let path = if error.path.is_empty() { key.to_owned() } else { format!("{key}.{}", error.path) };
        FieldError::new(path, error.message)
    };
    let batch = if members.get("batch").is_some() { parse_batch(text) } else { parse_single(text) }.map_err(inner)?;
    let received_at = timestamp_member(members.get("receivedAt"), &format!("{key}.receivedAt"))?.or(created_at);
    Ok(Record { shape: Shape::RudderStack, batch, received_at })
}

fn refusal(error: BodyError) -> FieldError {
    match error {
        BodyError::Malformed(e) => FieldError::new("", format!("is not JSON: {e}")),
        BodyError::Invalid(e) => e,
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    fn lines_of(path: &Path) -> (Vec<Result<String, String>>, u64) {
        let read = Arc::new(AtomicU64::new(0));
        let file = ArchiveFile { path: path.to_owned(), bytes: std::fs::metadata(path).unwrap().len() };
        let mut lines = Lines::open(&file, read.clone()).unwrap();
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            match lines.next_line(&mut line) {
                Ok(true) => out.push(Ok(String::from_utf8(line.clone()).unwrap())),
                Ok(false) => break,
                Err(LineError::TooLong) => out.push(Err(format!("{}: too long", lines.number()))),
                Err(LineError::Broken(e)) => {
                    out.push(Err(format!("after {}: {e}", lines.number())));
                    break;
                }
            }
        }
        (out, read.load(Ordering::Relaxed))
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("archive-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn concatenated_gzip_members_read_as_one_stream_of_lines_and_every_byte_is_counted() {
        let dir = scratch("members");
        let path = dir.join("a.gz");
        let mut bytes = gzip("{\"a\":1}\n{\"b\":2}\r\n");
        bytes.extend(gzip("{\"c\":3}"));
        std::fs::write(&path, &bytes).unwrap();
        let (lines, read) = lines_of(&path);
        let expected: Vec<Result<String, String>> =
            vec![Ok("{\"a\":1}".into()), Ok("{\"b\":2}".into()), Ok("{\"c\":3}".into())];
        assert_eq!(lines, expected);
        assert_eq!(read, bytes.len() as u64);
    }

    #[test]
    fn a_truncated_gzip_file_yields_its_whole_lines_then_says_where_it_broke() {
        let dir = scratch("truncated");
        let path = dir.join("a.gz");
        let text: String = (0..2000).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 50))).collect();
        let bytes = gzip(&text);
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let (lines, _) = lines_of(&path);
        let last = lines.last().unwrap().as_ref().unwrap_err();
        assert!(last.starts_with("after ") && last.contains("incomplete deflate stream"), "{last}");
        let whole = lines.iter().filter(|l| l.is_ok()).count();
        assert!(whole > 100 && whole < 2000, "{whole}");
    }

    #[test]
    fn a_line_over_the_limit_is_refused_and_the_next_one_read() {
        let dir = scratch("long");
        let path = dir.join("a.ndjson");
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        std::fs::write(&path, format!("{{\"a\":1}}\n{long}\n{{\"b\":2}}")).unwrap();
        let (lines, _) = lines_of(&path);
        assert_eq!(lines, vec![Ok("{\"a\":1}".into()), Err("2: too long".into()), Ok("{\"b\":2}".into())]);
    }

    #[test]
    fn walks_pick_archive_files_in_name_order_and_name_what_they_pass_over() {
        let dir = scratch("walk");
        for name in ["b/2.gz", "b/1.gz", "a/x.jsonl", "a/notes.txt", "c.json", "d.NDJSON"] {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        let (files, passed_over) = archive_files(&[dir.clone(), dir.join("b/1.gz")]).unwrap();
        let names: Vec<String> =
            files.iter().map(|f| f.path.strip_prefix(&dir).unwrap().display().to_string()).collect();
        assert_eq!(names, ["a/x.jsonl", "b/1.gz", "b/2.gz", "d.NDJSON"]);
        assert_eq!(passed_over, 2);
        let error = archive_files(&[dir.join("c.json")]).unwrap_err();
        assert!(error.to_string().contains("is not an archive file"), "{error}");
    }

    #[test]
    fn each_shape_of_line_is_recognised() {
        let segment = r#"{"type":"track","userId":"u","event":"E","receivedAt":"2025-01-01T00:00:01Z"}"#;
        let record = record(segment).unwrap();
        assert_eq!((record.shape, record.batch.events.len(), record.received_at), (Shape::Event, 1, None));

        let rudder = r#"{"userId":"<<>>u<<>>","payload":{"batch":[{"type":"track","userId":"u","event":"E"}],"receivedAt":"2025-01-02T03:04:05.678Z","writeKey":"k","requestIP":"1.2.3.4"},"createdAt":"2025-01-02T03:04:06Z","messageId":"m"}"#;
        let record = super::record(rudder).unwrap();
        assert_eq!((record.shape, record.batch.events.len()), (Shape::RudderStack, 1));
        assert_eq!(record.received_at, intercom_relay_lambda::event::parse_timestamp("2025-01-02T03:04:05.678Z"));

        let old = r#"{"JobID":7,"UserID":"u","EventPayload":{"batch":[{"type":"page","userId":"u"},{"type":"identify","userId":"u"}]},"CreatedAt":"2021-05-01T00:00:00Z"}"#;
        let record = super::record(old).unwrap();
        assert_eq!((record.shape, record.batch.events.len()), (Shape::RudderStack, 2));
        assert_eq!(record.received_at, intercom_relay_lambda::event::parse_timestamp("2021-05-01T00:00:00Z"));

        let batch = r#"{"batch":[{"type":"track","userId":"u","event":"E"}],"sentAt":"2025-01-01T00:00:00Z"}"#;
        assert_eq!(super::record(batch).unwrap().shape, Shape::Batch);
    }

    #[test]
    fn what_is_wrong_with_a_line_is_said_with_its_path() {
        let cases = [
            ("[1, 2]", "", "holds a JSON array, not an object"),
            ("{\"type\": \"track\"", "", "is not JSON: EOF while parsing"),
            ("{\"userId\": \"u\"}", "", "is a JSON object of no shape a backfill knows"),
            ("{\"payload\": \"text\"}", "payload", "must be an object"),
            ("{\"payload\": {\"batch\": []}}", "payload.batch", "must hold at least one event"),
            ("{\"payload\": {\"batch\": [{}], \"receivedAt\": 5}}", "payload.receivedAt", "must be an RFC 3339"),
            ("{\"payload\": {\"batch\": [{}]}, \"createdAt\": \"yesterday\"}", "createdAt", "must be an RFC 3339"),
        ];
        for (line, path, message) in cases {
            let error = record(line).unwrap_err();
            assert_eq!(error.path, path, "{line}: {error}");
            assert!(error.message.contains(message), "{line}: {error}");
        }
    }
}
