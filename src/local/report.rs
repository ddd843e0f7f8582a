//! What a local run did: every event's outcome and Intercom calls, gathered as the pipeline runs, printed as text or JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use intercom_relay_lambda::forward::{Outcome, RecordOutcome};
use intercom_relay_lambda::intercom::Exchange;
use intercom_relay_lambda::queue::Reason;

/// The report `replay --json` prints, and `serve` sums up at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Events that passed validation (and records of SQS events replayed as they are).
    pub accepted: usize,
    /// Events or whole requests refused, with the reasons.
    pub rejected: Vec<RejectedInput>,
    pub delivered: usize,
    /// Of those delivered, the ones that needed no call: an identify or group of what was last written.
    pub unchanged: usize,
    pub skipped: Vec<Finished>,
    pub dead_lettered: Vec<Finished>,
    /// Erasure requests carried out, each with what was erased (`reason`: the contacts' ids and notes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub erased: Vec<Finished>,
    /// Times an event was handed back to the queue to be tried again (each ends in one of the three outcomes).
    pub handed_back: usize,
    pub intercom_calls: CallCounts,
    /// Every accepted event's outcome and calls, in the order they were accepted (`replay` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventReport>,
    /// What the identity store was asked, when it was the one in memory (`replay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_store: Option<intercom_relay_lambda::identity::StoreUsage>,
    /// Every Intercom request with its body (`--show-requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<RequestReport>>,
}

/// Refused input: one event (with its index in its batch) or a whole request.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RejectedInput {
    pub(crate) source: String,
    /// Set when one event of a batch was refused; absent when the whole request or file was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message_id: Option<String>,
    /// The HTTP status the ingest API answered (for requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    /// What was wrong, as the ingest API says it: `{code, message, path?}` or a list of `{path, message}`.
    pub(crate) errors: Value,
}

impl RejectedInput {
    /// What an ingest API answer (`status`, `body`) says was refused: each refused event of a batch, or the request.
    pub(crate) fn from_answer(source: &str, status: u16, body: &[u8]) -> Vec<RejectedInput> {
        let success = (200..300).contains(&status);
        if success && memchr::memmem::find(body, b"\"rejected\"").is_none() {
            return Vec::new();
        }
        let answer: Value = serde_json::from_slice(body).unwrap_or_default();
        let refusal = |index: Option<usize>, message_id: Option<String>, errors: Value| RejectedInput {
            source: source.to_owned(),
            index,
            message_id,
            status: Some(status),
            errors,
        };
        match answer["rejected"].as_array() {
            Some(list) => list
                .iter()
                .map(|entry| {
                    let index = entry["index"].as_u64().map(|i| i as usize);
                    refusal(index, entry["messageId"].as_str().map(str::to_owned), entry["errors"].clone())
                })
                .collect(),
            None if !success => vec![refusal(None, None, answer["error"].clone())],
            None => Vec::new(),
        }
    }
}

/// An event that was skipped or dead-lettered, with the reason.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Finished {
    pub source: String,
    pub message_id: Option<String>,
    #[serde(rename = "type")]
    pub(crate) event_type: Option<String>,
    pub reason: Value,
    /// The destination-settings rule that skipped it (`events.deny[2]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) skipped_by: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CallCounts {
    pub(crate) total: usize,
    /// Calls per `METHOD /path`, ids replaced by `{id}` and queries left out.
    pub(crate) by_endpoint: BTreeMap<String, usize>,
}

/// One event's outcome and the calls it took.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EventReport {
    pub(crate) source: String,
    pub(crate) message_id: Option<String>,
    #[serde(rename = "type")]
    pub(crate) event_type: Option<String>,
    /// `delivered`, `skipped` or `dead_lettered`.
    pub(crate) outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<Value>,
    /// The destination-settings rule that skipped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) skipped_by: Option<String>,
    pub(crate) calls: Vec<CallReport>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CallReport {
    pub(crate) method: String,
    pub(crate) path: String,
    /// `null` when no answer came (a timeout, a refused connection).
    pub(crate) status: Option<u16>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RequestReport {
    /// The event the request served.
    pub(crate) message_id: Option<String>,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: Option<u16>,
    pub(crate) body: Option<Value>,
}

/// Where an event came from and what it is, known when it is queued.
#[derive(Clone, Debug)]
struct Origin {
    source: String,
    message_id: Option<String>,
    /// Its place among the events of the run.
    sequence: u64,
}

/// Gathers a [`Report`] while the pipeline runs: the Intercom client's observer and the forwarder's outcomes feed it.
#[derive(Debug)]
pub struct Tally {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    report: Report,
    /// Keep each event's report (a replay), or only the counts and the skipped and dead-lettered (a long `serve`).
    keep_events: bool,
    origins: HashMap<String, Origin>,
    /// Calls of events not finished yet, by queue message id.
    calls: HashMap<String, Vec<CallReport>>,
    /// Finished events by their place in the run.
    events: BTreeMap<u64, EventReport>,
    /// Events given an origin so far; events without one are placed after them, in the order they finish.
    sequence: u64,
}

impl Tally {
    pub fn new(keep_events: bool, show_requests: bool) -> Tally {
        let report = Report { requests: show_requests.then(Vec::new), ..Report::default() };
        Tally { inner: Mutex::new(Inner { report, keep_events, ..Inner::default() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Accepted events, about to be queued.
    pub(crate) fn accepted(&self, count: usize) {
        self.lock().report.accepted += count;
    }

    pub(crate) fn rejected(&self, rejected: RejectedInput) {
        self.lock().report.rejected.push(rejected);
    }

    /// Says where the queue message `record_id` came from, before it is forwarded; events are reported in this order.
    pub(crate) fn origin(&self, record_id: &str, source: &str, message_id: Option<&str>) {
        let mut inner = self.lock();
        let origin =
            Origin { source: source.to_owned(), message_id: message_id.map(str::to_owned), sequence: inner.sequence };
        inner.sequence += 1;
        inner.origins.insert(record_id.to_owned(), origin);
    }

    /// One HTTP exchange with Intercom, made for the queue message `record_id`.
    pub(crate) fn exchange(&self, record_id: Option<String>, exchange: Exchange) {
        let mut inner = self.lock();
        let Inner { report, origins, calls, keep_events, .. } = &mut *inner;
        report.intercom_calls.total += 1;
        *report.intercom_calls.by_endpoint.entry(endpoint(&exchange.method, &exchange.path)).or_default() += 1;
        if let Some(requests) = &mut report.requests {
            let message_id = record_id.as_ref().and_then(|id| origins.get(id)).and_then(|o| o.message_id.clone());
            requests.push(RequestReport {
                message_id,
                method: exchange.method.clone(),
                path: exchange.path.clone(),
                status: exchange.status,
                body: exchange.body,
            });
        }
        if let (Some(id), true) = (record_id, *keep_events) {
            let call = CallReport { method: exchange.method, path: exchange.path, status: exchange.status };
            calls.entry(id).or_default().push(call);
        }
    }

    /// The forwarder's outcome for a record.
    pub(crate) fn outcome(&self, record: &RecordOutcome) {
        let mut inner = self.lock();
        let Inner { report, origins, calls, events, keep_events, .. } = &mut *inner;
        if matches!(record.outcome, Outcome::Retry { .. }) {
            report.handed_back += 1;
            return;
        }
        let origin = origins.remove(&record.sqs_message_id);
        let place = origin.as_ref().map_or(u64::MAX / 2 + report.finished() as u64, |o| o.sequence);
        let source = origin.as_ref().map_or_else(|| "queue".to_owned(), |o| o.source.clone());
        let message_id = record.message_id.clone().or_else(|| origin.and_then(|o| o.message_id));
        let event_type = record.event_type.clone();
        let finished_as = |reason: Value, skipped_by: Option<String>| Finished {
            source: source.clone(),
            message_id: message_id.clone(),
            event_type: event_type.clone(),
            reason,
            skipped_by,
        };
        let (outcome, reason, skipped_by) = match &record.outcome {
            Outcome::Delivered { calls } => {
                report.delivered += 1;
                report.unchanged += usize::from(*calls == 0);
                ("delivered", None, None)
            }
            Outcome::Skipped { reason, skipped_by, .. } => {
                let reason = Value::String(reason.clone());
                report.skipped.push(finished_as(reason.clone(), skipped_by.clone()));
                ("skipped", Some(reason), skipped_by.clone())
            }
            Outcome::DeadLettered { reason, .. } => {
                let reason = reason_json(reason);
                report.dead_lettered.push(finished_as(reason.clone(), None));
                ("dead_lettered", Some(reason), None)
            }
            Outcome::Erased { contacts, notes, .. } => {
                let reason = serde_json::json!({"contacts": contacts, "notes": notes});
                report.erased.push(finished_as(reason.clone(), None));
                ("erased", Some(reason), None)
            }
            Outcome::Retry { .. } => unreachable!("returned above"),
        };
        let calls = calls.remove(&record.sqs_message_id).unwrap_or_default();
        if *keep_events {
            events.insert(place, EventReport { source, message_id, event_type, outcome, reason, skipped_by, calls });
        }
    }

    /// Events accepted and events finished so far (for a progress bar).
    pub fn progress(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.report.accepted, inner.report.finished())
    }

    /// The report so far.
    pub fn report(&self) -> Report {
        let inner = self.lock();
        Report { events: inner.events.values().cloned().collect(), ..inner.report.clone() }
    }
}

fn reason_json(reason: &Reason) -> Value {
    serde_json::to_value(reason).unwrap_or(Value::Null)
}

/// `METHOD /path` with the query left out and ids (path segments holding a digit) as `{id}`.
pub fn endpoint(method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let mut out = format!("{method} ");
    for segment in path.split('/').skip(1) {
        out.push('/');
        out.push_str(if segment.bytes().any(|b| b.is_ascii_digit()) { "{id}" } else { segment });
    }
    out
}

impl Report {
    /// Events that reached an outcome; equals `accepted` once a run has drained.
    pub fn finished(&self) -> usize {
        self.delivered + self.skipped.len() + self.dead_lettered.len() + self.erased.len()
    }

    /// One line per event with its calls, then the summary (`replay` without `--json`).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for event in &self.events {
            let reason = match (&event.reason, &event.skipped_by) {
                (None, _) if event.outcome == "delivered" && event.calls.is_empty() => {
                    ": Intercom holds it already (no call needed)".to_owned()
                }
                (Some(Value::String(reason)), Some(rule)) => format!(": {rule}: {reason}"),
                (Some(Value::String(reason)), None) => format!(": {reason}"),
                (Some(reason), _) => format!(": {}", reason["error_code"].as_str().unwrap_or_default()),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                out,
                "{:<13} {:<8} {}  ({}){reason}",
                event.outcome,
                event.event_type.as_deref().unwrap_or("-"),
                event.message_id.as_deref().unwrap_or("-"),
                event.source,
            );
            for call in &event.calls {
                let _ = writeln!(out, "    {} {} -> {}", call.method, call.path, status_text(call.status));
            }
        }
        for rejected in &self.rejected {
            let place = rejected.index.map(|i| format!(" event {i}")).unwrap_or_default();
            let _ =
                writeln!(out, "{:<13} {}{place}: {}", "rejected", rejected.source, describe_errors(&rejected.errors));
        }
        for request in self.requests.iter().flatten() {
            let body = request.body.as_ref().map(|b| format!(" {b}")).unwrap_or_default();
            let _ = writeln!(out, "{} {} -> {}{body}", request.method, request.path, status_text(request.status));
        }
        out.push_str(&self.summary());
        out
    }

    /// The counts in a sentence or two.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} accepted, {} rejected; {} delivered, {} skipped, {} dead-lettered",
            self.accepted,
            self.rejected.len(),
            self.delivered,
            self.skipped.len(),
            self.dead_lettered.len()
        );
        if self.unchanged > 0 {
            let _ = write!(out, " ({} delivered with no call: Intercom held them already)", self.unchanged);
        }
        if !self.erased.is_empty() {
            let _ = write!(out, ", {} erasures carried out", self.erased.len());
        }
        if self.handed_back > 0 {
            let _ = write!(out, " ({} hand-backs retried)", self.handed_back);
        }
        let unfinished = self.accepted.saturating_sub(self.finished());
        if unfinished > 0 {
            let _ = write!(out, "; {unfinished} not finished");
        }
        let _ = writeln!(out, "; {} Intercom calls.", self.intercom_calls.total);
        out
    }
}

fn status_text(status: Option<u16>) -> String {
    status.map_or_else(|| "no answer".to_owned(), |s| s.to_string())
}

fn describe_errors(errors: &Value) -> String {
    match errors {
        Value::Array(list) => list
            .iter()
            .map(|e| match e["path"].as_str() {
                Some(path) if !path.is_empty() => format!("{path}: {}", e["message"].as_str().unwrap_or_default()),
                _ => e["message"].as_str().unwrap_or_default().to_owned(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other["message"].as_str().map_or_else(|| other.to_string(), str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_group_ids_and_drop_queries() {
        assert_eq!(endpoint("GET", "/data_attributes?model=contact"), "GET /data_attributes");
        assert_eq!(endpoint("POST", "/contacts/665000000000000000000001/companies"), "POST /contacts/{id}/companies");
        assert_eq!(endpoint("POST", "/contacts/search"), "POST /contacts/search");
        assert_eq!(endpoint("DELETE", "/contacts/6650a/companies/6650b"), "DELETE /contacts/{id}/companies/{id}");
    }

    #[test]
    fn every_outcome_is_counted_once_and_calls_follow_their_event() {
        let tally = Tally::new(true, true);
        tally.accepted(3);
        tally.origin("q-1", "a.json", Some("m-1"));
        tally.origin("q-2", "b.json", Some("m-2"));
        let exchange = |path: &str, status| Exchange { method: "POST".into(), path: path.into(), status, body: None };
        tally.exchange(Some("q-1".into()), exchange("/contacts", Some(200)));
        tally.exchange(Some("q-2".into()), exchange("/events", None));
        let record = |id: &str, outcome| RecordOutcome {
            sqs_message_id: id.into(),
            message_id: None,
            event_type: Some("track".into()),
            outcome,
        };
        tally.outcome(&record(
            "q-2",
            Outcome::Retry { reason: "timeout".into(), calls: 1, retry_in: std::time::Duration::from_secs(1) },
        ));
        tally.exchange(Some("q-2".into()), exchange("/events", Some(202)));
        tally.outcome(&record("q-2", Outcome::Delivered { calls: 1 }));
        tally.outcome(&record("q-1", Outcome::Skipped { reason: "no identifier".into(), skipped_by: None, calls: 1 }));
        let report = tally.report();
        assert_eq!((report.accepted, report.delivered, report.skipped.len(), report.handed_back), (3, 1, 1, 1));
        assert_eq!(report.finished(), 2);
        assert_eq!(report.events.iter().map(|e| e.source.as_str()).collect::<Vec<_>>(), ["a.json", "b.json"]);
        assert_eq!(report.events[1].calls.iter().map(|c| c.status).collect::<Vec<_>>(), [None, Some(202)]);
        assert_eq!(report.events[1].message_id.as_deref(), Some("m-2"));
        assert_eq!(report.requests.as_ref().map(Vec::len), Some(3));
        assert_eq!(report.intercom_calls.by_endpoint["POST /events"], 2);
        let text = report.text();
        assert!(
            text.contains(
                "delivered     track    m-2  (b.json)\n    POST /events -> no answer\n    POST /events -> 202\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("POST /contacts -> 200\nPOST /events -> no answer\nPOST /events -> 202\n3 accepted"),
            "{text}"
        );
        assert!(report.summary().contains("3 accepted, 0 rejected; 1 delivered, 1 skipped, 0 dead-lettered (1 hand-backs retried); 1 not finished; 3 Intercom calls."), "{}", report.summary());
    }

    #[test]
    fn an_event_delivered_with_no_call_says_intercom_held_it_already() {
        let tally = Tally::new(true, false);
        tally.accepted(1);
        tally.origin("q-1", "a.json", Some("m-1"));
        let outcome = Outcome::Delivered { calls: 0 };
        tally.outcome(&RecordOutcome {
            sqs_message_id: "q-1".into(),
            message_id: None,
            event_type: Some("identify".into()),
            outcome,
        });
        let report = tally.report();
        assert_eq!((report.delivered, report.unchanged), (1, 1));
        let text = report.text();
        assert!(
            text.contains("delivered     identify m-1  (a.json): Intercom holds it already (no call needed)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "1 delivered, 0 skipped, 0 dead-lettered (1 delivered with no call: Intercom held them already)"
            ),
            "{text}"
        );
    }
}
