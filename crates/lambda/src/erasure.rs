//! A request to erase a person from Intercom (GDPR, CCPA): a queue message an operator sends with AWS credentials,
//! never something the ingest API accepts, that travels in the person's FIFO lane behind the events already queued
//! for them.

use serde::{Deserialize, Serialize};

/// The body a request is sent as: `{"version": 1, "erasure": {…}}`; envelopes carry `event` instead, and nothing else
/// is read as a request (an envelope never parses as one: no unknown field is allowed).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    version: u32,
    erasure: ErasureRequest,
}

/// Who to erase, by the ids the events used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// Ours, to follow the request in the logs.
    pub request_id: String,
    /// The person's userId: the user whose `external_id` it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Their email: with no userId, every contact holding it; with one, the user's own address too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Also the leads holding the address (visitors who left it before they signed up).
    #[serde(default)]
    pub leads: bool,
}

/// Why a request cannot be made.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    #[error("name the person: a userId, an email, or both")]
    NobodyNamed,
    #[error("`{0}` is not an email address")]
    NotAnEmail(String),
}

impl ErasureRequest {
    /// A request, checked: someone is named, an email looks like one.
    pub fn new(user_id: Option<String>, email: Option<String>, leads: bool) -> Result<ErasureRequest, ErasureError> {
        let user_id = user_id.map(|id| id.trim().to_owned()).filter(|id| !id.is_empty());
        let email = email.map(|email| email.trim().to_owned()).filter(|email| !email.is_empty());
        if let Some(email) = email.as_ref().filter(|email| !email.contains('@')) {
            return Err(ErasureError::NotAnEmail(email.clone()));
        }
        match (&user_id, &email) {
            (None, None) => Err(ErasureError::NobodyNamed),
            _ => Ok(ErasureRequest { request_id: uuid::Uuid::new_v4().to_string(), user_id, email, leads }),
        }
    }

    /// The FIFO lane: the person's userId, as their events' (`Event::ordering_key`), else the email.
    pub fn ordering_key(&self) -> &str {
        self.user_id.as_deref().or(self.email.as_deref()).unwrap_or_default()
    }

    pub fn to_body(&self) -> String {
        serde_json::to_string(&Body { version: 1, erasure: self.clone() }).expect("a request serialises")
    }

    /// The request a body holds, if it is one (an envelope is not).
    pub(crate) fn from_body(body: &str) -> Option<ErasureRequest> {
        if !body.contains("\"erasure\"") {
            return None;
        }
        let body: Body = serde_json::from_str(body).ok()?;
        (body.version == 1).then_some(body.erasure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_someone_and_travels_in_their_lane() {
        assert_eq!(ErasureRequest::new(None, Some(" ".into()), true), Err(ErasureError::NobodyNamed));
        assert_eq!(ErasureRequest::new(None, Some("ada".into()), false), Err(ErasureError::NotAnEmail("ada".into())));
        let request = ErasureRequest::new(Some(" u-1 ".into()), Some("ada@example.com".into()), true).unwrap();
        assert_eq!((request.ordering_key(), request.user_id.as_deref()), ("u-1", Some("u-1")));
        let by_email = ErasureRequest::new(None, Some("ada@example.com".into()), false).unwrap();
        assert_eq!(by_email.ordering_key(), "ada@example.com");
        assert_eq!(ErasureRequest::from_body(&request.to_body()), Some(request));
        assert_eq!(ErasureRequest::from_body(r#"{"version":1,"message_id":"m","event":{"type":"track"}}"#), None);
        let both = r#"{"version":1,"erasure":{"request_id":"r","user_id":"u"},"event":{"type":"track"}}"#;
        assert_eq!(ErasureRequest::from_body(both), None, "an envelope is never read as a request");
    }
}
