//! Intercom's error answers (`error.list`) and what each outcome means for a retry.

use serde::Deserialize;

/// One entry of an `error.list`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct IntercomErrorItem {
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) field: Option<String>,
}

/// Intercom's error body: `{"type": "error.list", "request_id": …, "errors": [{code, message, field}]}`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ErrorList {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) errors: Vec<IntercomErrorItem>,
}

impl ErrorList {
    /// Reads an error body; anything else (an HTML page from a proxy, an empty body) gives an empty list.
    pub(crate) fn decode(body: &[u8]) -> ErrorList {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The first error's code, e.g. `conflict`, `not_found`, `rate_limit_exceeded`.
    pub(crate) fn code(&self) -> Option<&str> {
        self.errors.first().map(|e| e.code.as_str())
    }

    /// The first error's message.
    pub(crate) fn message(&self) -> Option<&str> {
        self.errors.first().and_then(|e| e.message.as_deref())
    }
}

/// What a failed call means, decided here once from Intercom's answer, so that callers match meanings, never status
/// numbers or text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request refused as it is (a value, a field, a query the workspace cannot run).
    Refused,
    /// 401: the token refused (wrong, revoked, or of another region): every call fails alike.
    Unauthorized,
    /// 403: what the token may do: every such call fails alike.
    Forbidden,
    /// 404: no such contact, company or tag.
    NotFound,
    /// 409: it exists already (Intercom's message names it).
    Conflict,
    /// 410: a contact merged into another (`IntercomError::merged_into` names it).
    Merged,
    /// 429: the workspace's rate limit is spent.
    RateLimited,
    /// 408, 5xx but 501, a timeout, no connection: worth trying again.
    Transient,
    /// Not sent: the circuit breaker holds calls back while the workspace keeps failing.
    Withheld,
    /// Any other answer, or one that cannot be read.
    Other,
}

impl ErrorKind {
    /// The kind of an error answer's status.
    pub(crate) fn of_status(status: u16) -> ErrorKind {
        match status {
            400 => ErrorKind::Refused,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            410 => ErrorKind::Merged,
            429 => ErrorKind::RateLimited,
            408 => ErrorKind::Transient,
            500..=599 if status != 501 => ErrorKind::Transient,
            _ => ErrorKind::Other,
        }
    }

    /// A failure of the workspace rather than of the event: no event can cause it, so it is never a reason to
    /// dead-letter one.
    pub(crate) fn is_workspace_failure(self) -> bool {
        self.is_token_refused() || matches!(self, ErrorKind::RateLimited | ErrorKind::Transient | ErrorKind::Withheld)
    }

    /// A refusal of the token itself (401, 403), which says so whatever event the call was for.
    pub(crate) fn is_token_refused(self) -> bool {
        matches!(self, ErrorKind::Unauthorized | ErrorKind::Forbidden)
    }

    /// A contact id that no longer works: deleted, archived, or merged into another.
    pub(crate) fn is_gone(self) -> bool {
        matches!(self, ErrorKind::NotFound | ErrorKind::Merged)
    }
}

/// What to do after one outcome of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryAction {
    Successful,
    /// Worth trying again (later in this invocation, or by handing the event back to SQS).
    Retry(&'static str),
    /// Trying again cannot help: the event goes to the DLQ with the reason, unless a mapping rule resolves it (409, 404).
    DontRetry(&'static str),
}

/// The retry class of an HTTP status (ARCHITECTURE.md): 408, 429 and 5xx except 501 are retryable; other 4xx are not.
/// Timeouts and connection errors never reach a status and are retryable too.
pub fn classify(status: u16) -> RetryAction {
    match status {
        200..=299 => RetryAction::Successful,
        408 => RetryAction::Retry("request timeout"),
        429 => RetryAction::Retry("rate limited"),
        501 => RetryAction::DontRetry("not implemented"),
        500..=599 => RetryAction::Retry("server error"),
        400 => RetryAction::DontRetry("bad request"),
        401 => RetryAction::DontRetry("unauthorized: check INTERCOM_ACCESS_TOKEN"),
        403 => RetryAction::DontRetry("forbidden"),
        404 => RetryAction::DontRetry("not found"),
        409 => RetryAction::DontRetry("conflict"),
        422 => RetryAction::DontRetry("unprocessable"),
        _ => RetryAction::DontRetry("client error"),
    }
}

/// Intercom's `message` as it may be logged or kept in a dead letter: Intercom quotes values it refuses ("Email
/// 'ada@example.com' is invalid"), which can be an event's personal data. Quoted text is kept only when it is a name the
/// request used as a key (an attribute's, a field's: names, not values); other quoted text becomes `…`, and so do email
/// addresses and runs of seven digits or more (phone numbers) outside quotes.
pub fn redact(message: &str, request_keys: &std::collections::HashSet<String>) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    // A quote opens where no word goes on before it (the apostrophe of "can't" opens nothing), and closes at the next
    // same quote no word goes on after.
    let in_word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    while let Some(start) = rest
        .char_indices()
        .find(|&(i, c)| "'\"`".contains(c) && !in_word(rest[..i].chars().next_back()))
        .map(|(i, _)| i)
    {
        let quote = rest[start..].chars().next().expect("found above");
        let after = &rest[start + 1..];
        let Some(length) = after
            .char_indices()
            .find(|&(i, c)| c == quote && !in_word(after[i + c.len_utf8()..].chars().next()))
            .map(|(i, _)| i)
        else {
            break;
        };
        let inner = &after[..length];
        out.push_str(&redact_bare(&rest[..start]));
        out.push(quote);
        out.push_str(if request_keys.contains(inner) { inner } else { "…" });
        out.push(quote);
        rest = &after[length + 1..];
    }
    out.push_str(&redact_bare(rest));
    out
}

/// Email addresses and phone-like runs (seven digits or more, with `+-().` and spaces between them) of unquoted text,
/// replaced.
fn redact_bare(text: &str) -> String {
    let words = text.split_inclusive(char::is_whitespace).map(|word| {
        let core = word.trim_end();
        if core.contains('@') { format!("…{}", &word[core.len()..]) } else { word.to_owned() }
    });
    let text: String = words.collect();
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let kept = run.trim_end();
        if kept.chars().filter(char::is_ascii_digit).count() >= 7 {
            out.push('…');
            out.push_str(&run[kept.len()..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        let starts = c.is_ascii_digit() || c == '+' || c == '(';
        if (run.is_empty() && starts) || (!run.is_empty() && (c.is_ascii_digit() || "+-(). ".contains(c))) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The keys of every object in `body`, at any depth: the names a request used.
pub fn request_keys(body: Option<&serde_json::Value>) -> std::collections::HashSet<String> {
    fn walk(value: &serde_json::Value, keys: &mut std::collections::HashSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    keys.insert(key.clone());
                    walk(value, keys);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| walk(item, keys)),
            _ => {}
        }
    }
    let mut keys = std::collections::HashSet::new();
    if let Some(body) = body {
        walk(body, &mut keys);
    }
    keys
}

/// The contact a 409 on `POST /contacts` names: "A contact matching those details already exists with id=<id>".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictingContact {
    pub id: super::ContactId,
    /// "An archived contact matching…": it must be unarchived before it can be updated.
    pub(crate) archived: bool,
}

/// Reads the contact id out of a 409's message.
pub fn conflicting_contact(message: &str) -> Option<ConflictingContact> {
    let (_, rest) = message.split_once("id=")?;
    let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    let archived = message.trim_start().to_ascii_lowercase().starts_with("an archived contact");
    (!id.is_empty()).then_some(ConflictingContact { id: super::ContactId::new(id), archived })
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_status_has_one_meaning() {
        let table = [
            (400, ErrorKind::Refused),
            (401, ErrorKind::Unauthorized),
            (403, ErrorKind::Forbidden),
            (404, ErrorKind::NotFound),
            (409, ErrorKind::Conflict),
            (410, ErrorKind::Merged),
            (429, ErrorKind::RateLimited),
            (408, ErrorKind::Transient),
            (500, ErrorKind::Transient),
            (503, ErrorKind::Transient),
            (501, ErrorKind::Other),
            (422, ErrorKind::Other),
        ];
        for (status, kind) in table {
            assert_eq!(ErrorKind::of_status(status), kind, "{status}");
        }
        let workspace: Vec<u16> = [400, 401, 403, 404, 408, 409, 410, 422, 429, 500, 501, 504]
            .into_iter()
            .filter(|s| ErrorKind::of_status(*s).is_workspace_failure())
            .collect();
        assert_eq!(workspace, [401, 403, 408, 429, 500, 504]);
    }

    use super::*;

    #[test]
    fn success_is_successful() {
        for status in [200, 201, 202, 204] {
            assert_eq!(classify(status), RetryAction::Successful, "{status}");
        }
    }

    #[test]
    fn a_request_timeout_is_retried() {
        assert!(matches!(classify(408), RetryAction::Retry(_)));
    }

    #[test]
    fn a_rate_limit_is_retried() {
        assert_eq!(classify(429), RetryAction::Retry("rate limited"));
    }

    #[test]
    fn server_errors_are_retried() {
        for status in [500, 502, 503, 504, 599] {
            assert!(matches!(classify(status), RetryAction::Retry(_)), "{status}");
        }
    }

    #[test]
    fn not_implemented_is_not_retried() {
        assert!(matches!(classify(501), RetryAction::DontRetry(_)));
    }

    #[test]
    fn client_errors_are_not_retried() {
        for status in [400, 401, 403, 404, 409, 410, 413, 422] {
            assert!(matches!(classify(status), RetryAction::DontRetry(_)), "{status}");
        }
    }

    #[test]
    fn an_unauthorized_answer_names_the_token_variable() {
        assert_eq!(classify(401), RetryAction::DontRetry("unauthorized: check INTERCOM_ACCESS_TOKEN"));
    }

    #[test]
    fn error_lists_are_decoded_and_anything_else_is_empty() {
        let body = br#"{"type":"error.list","request_id":"f93ecfa8-d08a-4325-8694-89aeb89c8f85","errors":[{"code":"conflict","message":"A contact matching those details already exists with id=6657a1b2c3d4e5f6a7b8c9d0"}]}"#;
        let list = ErrorList::decode(body);
        assert_eq!(list.code(), Some("conflict"));
        assert_eq!(list.request_id.as_deref(), Some("f93ecfa8-d08a-4325-8694-89aeb89c8f85"));
        assert_eq!(ErrorList::decode(b"<html>Bad gateway</html>"), ErrorList::default());
    }

    #[test]
    fn a_message_keeps_the_names_the_request_used_and_loses_the_values_it_quotes() {
        let body = serde_json::json!({"email": "ada@example.com", "custom_attributes": {"plan": "x"}});
        let keys = request_keys(Some(&body));
        assert_eq!(
            redact("Email 'ada@example.com' is not valid for \"email\"", &keys),
            "Email '…' is not valid for \"email\""
        );
        assert_eq!(
            redact(
                "You already have 'plan' in your company data. To save this as new people data, use a different name.",
                &keys
            ),
            "You already have 'plan' in your company data. To save this as new people data, use a different name."
        );
        assert_eq!(
            redact("Phone number +442079460958 is invalid; write to bob@example.com", &keys),
            "Phone number … is invalid; write to …"
        );
        assert_eq!(
            redact("A contact matching those details already exists with id=6657a1b2c3d4e5f6a7b8c9d0", &keys),
            "A contact matching those details already exists with id=6657a1b2c3d4e5f6a7b8c9d0"
        );
        assert_eq!(redact("unbalanced 'quote", &keys), "unbalanced 'quote");
        // An apostrophe opens no quote; a phone number written with spaces is one number.
        assert_eq!(redact("We can't find 'Ada Lovelace'", &keys), "We can't find '…'");
        assert_eq!(redact("Phone +44 20 7946 0958 is invalid", &keys), "Phone … is invalid");
        assert_eq!(redact("Take 3 (or 4) of them", &keys), "Take 3 (or 4) of them");
    }

    #[test]
    fn a_conflict_names_the_existing_contact_and_whether_it_is_archived() {
        let live =
            conflicting_contact("A contact matching those details already exists with id=6657a1b2c3d4e5f6a7b8c9d0");
        assert_eq!(live, Some(ConflictingContact { id: "6657a1b2c3d4e5f6a7b8c9d0".into(), archived: false }));
        let archived = conflicting_contact("An archived contact matching those details already exists with id=abc123.");
        assert_eq!(archived, Some(ConflictingContact { id: "abc123".into(), archived: true }));
        assert_eq!(conflicting_contact("A contact matching those details already exists"), None);
    }
}
