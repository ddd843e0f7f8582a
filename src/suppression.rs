//! The suppression list: the people an operator erased, so that events about them arriving later are not forwarded
//! (an identify would make the contact again). Kept in a DynamoDB table of the stack's (`SUPPRESSION_TABLE`), never in
//! the environment: a person's id is personal data.
//!
//! The table holds no id in the clear: each entry's key is the SHA-256 of what named the person (`user_id:<userId>`,
//! `email:<address, lowercased>`), in hex. Whoever holds a userId or an address can tell whether it was erased, which is
//! what the list is for; nobody can read one out of it. Each entry also holds when and by which request.
//!
//! The forwarder reads the list once per batch (`BatchGetItem` of the batch's people) and, for an erasure, writes the
//! request's ids and the ids and addresses of the contacts it found (`PutItem`) before deleting any. A batch whose list
//! cannot be read is not forwarded: its events wait and are tried again, as when Intercom fails.
//! DynamoDB's JSON protocol (`DynamoDB_20120810`): <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/>.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use aws_smithy_runtime_api::client::identity::Identity;

use crate::mapping::ContactKey;
use crate::retry::RetryPolicy;

/// Keys per `BatchGetItem` (DynamoDB's most).
const GET_MAX: usize = 100;

/// The key of a person named by their userId.
pub fn user_key(user_id: &str) -> String {
    digest("user_id:", user_id.trim())
}

/// The key of a person named by their email (compared as Intercom does, ignoring case).
pub fn email_key(email: &str) -> String {
    digest("email:", &email.trim().to_lowercase())
}

fn digest(kind: &str, value: &str) -> String {
    crate::hex(&Sha256::new().chain_update(kind).chain_update(value).finalize())
}

/// The key of a contact a plan names: a user by their userId (their external_id), a lead by their address. An event
/// is matched by the contacts it would write to, as the mapper names them: a user's events by their userId alone (not
/// by an address they carry, which another user may share), a lead's by the address.
pub fn key_of(contact: &ContactKey) -> String {
    match contact {
        ContactKey::ExternalId(id) => user_key(id),
        ContactKey::Email(email) => email_key(email),
    }
}

/// Why the list could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the suppression list (DynamoDB table {table}) {doing}: {message}")]
pub struct SuppressionError {
    pub table: String,
    pub doing: &'static str,
    pub message: String,
    /// Whether trying again may help (throttling, DynamoDB's own failures, no answer).
    pub retryable: bool,
}

/// The stack's table: key `key` (a string, the hash), with `erased_at` (seconds since the epoch) and `request_id`.
/// Without one (`SUPPRESSION_TABLE` unset) none is kept, and events after an erasure make the contact again.
pub struct DynamoTable {
    table: String,
    region: String,
    endpoint: String,
    aws: aws_config::SdkConfig,
    http: reqwest::Client,
    retry: RetryPolicy,
    /// The credentials last provided, until five minutes before they expire (the chain is not cached by itself).
    identity: tokio::sync::Mutex<Option<Identity>>,
}

impl DynamoTable {
    /// The table named `table`, reached with `aws`'s credentials and region; each call takes at most `timeout` a try.
    pub fn new(aws: &aws_config::SdkConfig, table: &str, timeout: Duration) -> Result<DynamoTable, SuppressionError> {
        let failure = |message: String| SuppressionError {
            table: table.to_owned(),
            doing: "cannot be reached",
            message,
            retryable: false,
        };
        let region = aws.region().map(|r| r.as_ref().to_owned()).ok_or_else(|| failure("no AWS region".into()))?;
        let endpoint = crate::aws::endpoint(&|name| std::env::var(name).ok(), aws.endpoint_url(), "dynamodb", &region);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(1)))
            .build()
            .map_err(|e| failure(crate::aws::transport_message(&e)))?;
        let retry =
            RetryPolicy { attempts: 3, min_delay: Duration::from_millis(50), max_delay: Duration::from_millis(400) };
        let identity = tokio::sync::Mutex::new(None);
        Ok(DynamoTable { table: table.to_owned(), region, endpoint, aws: aws.clone(), http, retry, identity })
    }

    /// The error of a call cut off by the invocation's time.
    pub fn too_slow(&self, doing: &'static str) -> SuppressionError {
        self.error(doing, "no answer in the time the invocation had left", true)
    }

    /// Those of `keys` the list holds.
    pub async fn held(&self, keys: &[String]) -> Result<HashSet<String>, SuppressionError> {
        let mut held = HashSet::new();
        let unique: Vec<&String> = keys.iter().collect::<HashSet<_>>().into_iter().collect();
        for chunk in unique.chunks(GET_MAX) {
            let mut pending: Vec<Value> = chunk.iter().map(|key| json!({"key": {"S": key}})).collect();
            let mut delays = self.retry.delays();
            while !pending.is_empty() {
                let request = json!({"RequestItems": {&self.table: {"Keys": pending, "ProjectionExpression": "#k",
                    "ExpressionAttributeNames": {"#k": "key"}, "ConsistentRead": true}}});
                let answer = self.call("BatchGetItem", "cannot be read", &request).await?;
                for item in answer["Responses"][&self.table].as_array().into_iter().flatten() {
                    if let Some(key) = item["key"]["S"].as_str() {
                        held.insert(key.to_owned());
                    }
                }
                // Keys DynamoDB did not get to (throttled, or the answer's 16 MB): asked again after a wait.
                pending = answer["UnprocessedKeys"][&self.table]["Keys"].as_array().cloned().unwrap_or_default();
                if !pending.is_empty() {
                    let Some(wait) = delays.next() else {
                        return Err(self.error(
                            "cannot be read",
                            "DynamoDB left keys unprocessed after every try",
                            true,
                        ));
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Ok(held)
    }

    /// One `PutItem` a key (an erasure names one to a few): the role may add entries and never delete one, which
    /// `BatchWriteItem` would allow. An entry already there is left as it was (its first erasure's time).
    pub async fn add(&self, keys: &[String], request_id: &str) -> Result<(), SuppressionError> {
        let erased_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).to_string();
        let unique: Vec<&String> = keys.iter().collect::<HashSet<_>>().into_iter().collect();
        for key in unique {
            let request = json!({"TableName": self.table,
                "Item": {"key": {"S": key}, "erased_at": {"N": erased_at}, "request_id": {"S": request_id}},
                "ConditionExpression": "attribute_not_exists(#k)", "ExpressionAttributeNames": {"#k": "key"}});
            match self.call("PutItem", "cannot be written", &request).await {
                Ok(_) => {}
                Err(error) if error.message.contains("ConditionalCheckFailedException") => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn identity(&self) -> Result<Identity, String> {
        let mut cached = self.identity.lock().await;
        let fresh = |identity: &Identity| {
            identity.expiration().is_none_or(|at| at > SystemTime::now() + Duration::from_secs(300))
        };
        if let Some(identity) = cached.as_ref().filter(|identity| fresh(identity)) {
            return Ok(identity.clone());
        }
        let identity = crate::aws::identity(&self.aws).await?;
        *cached = Some(identity.clone());
        Ok(identity)
    }

    fn error(&self, doing: &'static str, message: impl Into<String>, retryable: bool) -> SuppressionError {
        SuppressionError { table: self.table.clone(), doing, message: message.into(), retryable }
    }

    /// One operation, tried again (per the table's retry policy) while the failure is one that may pass.
    async fn call(&self, operation: &str, doing: &'static str, request: &Value) -> Result<Value, SuppressionError> {
        let mut delays = self.retry.delays();
        loop {
            let error = match self.call_once(operation, doing, request).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            match delays.next() {
                Some(wait) if error.retryable => tokio::time::sleep(wait).await,
                _ => return Err(error),
            }
        }
    }

    async fn call_once(
        &self,
        operation: &str,
        doing: &'static str,
        request: &Value,
    ) -> Result<Value, SuppressionError> {
        let body = request.to_string();
        let url = format!("{}/", self.endpoint.trim_end_matches('/'));
        let target = format!("DynamoDB_20120810.{operation}");
        let identity = self.identity().await.map_err(|e| self.error(doing, e, false))?;
        let headers = [("content-type", "application/x-amz-json-1.0"), ("x-amz-target", target.as_str())];
        let signed =
            crate::aws::sign_post(&identity, &self.region, "dynamodb", &url, &headers, &body, SystemTime::now())
                .map_err(|e| self.error(doing, format!("cannot sign the request: {e}"), false))?;
        let mut builder = self.http.post(&url).body(body);
        for (name, value) in &signed {
            builder = builder.header(name, value);
        }
        let transport = |e: reqwest::Error| self.error(doing, crate::aws::transport_message(&e), true);
        let response = builder.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(transport)?;
        answer_of(operation, status, &text).map_err(|(message, retryable)| self.error(doing, message, retryable))
    }
}

/// DynamoDB's answer to `operation`, or what went wrong and whether trying again may help. Its errors are
/// `{"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", "message": "…"}` (`Message` for some);
/// throttling and its own failures may pass, a request it refuses does not:
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html>.
fn answer_of(operation: &str, status: u16, text: &str) -> Result<Value, (String, bool)> {
    let answer: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return if answer.is_object() {
            Ok(answer)
        } else {
            Err((format!("DynamoDB's answer is not JSON: {}", text.chars().take(200).collect::<String>()), true))
        };
    }
    let code = answer["__type"].as_str().map(|t| t.rsplit('#').next().unwrap_or(t)).unwrap_or("").to_owned();
    let message = answer["message"].as_str().or(answer["Message"].as_str()).unwrap_or("").to_owned();
    let retryable = status >= 500
        || matches!(
            code.as_str(),
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "LimitExceededException"
        );
    let hint = match code.as_str() {
        "ResourceNotFoundException" => " (does SUPPRESSION_TABLE name the stack's table, in this region?)",
        "AccessDeniedException" => " (the function's role needs dynamodb:BatchGetItem and dynamodb:PutItem on it)",
        _ => "",
    };
    Err((format!("{operation}: HTTP {status} {code}: {message}{hint}"), retryable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contacts(value: Value) -> Vec<String> {
        use crate::event::{BatchDefaults, RawEvent, parse_event, parse_timestamp};
        let text = value.to_string();
        let received = parse_timestamp("2024-05-01T12:00:00Z").unwrap();
        let event = parse_event(&RawEvent::parse(&text).unwrap(), None, &BatchDefaults::default(), received).unwrap();
        let plan = crate::mapping::map_event(&event).unwrap();
        let mut keys: Vec<String> = plan.contacts().map(key_of).collect();
        keys.dedup();
        keys
    }

    #[test]
    fn dynamodbs_errors_are_read_and_only_those_that_may_pass_are_tried_again() {
        let throttled = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"Rate of requests exceeds"}"#;
        let (message, retryable) = answer_of("BatchGetItem", 400, throttled).unwrap_err();
        assert!(retryable);
        assert_eq!(message, "BatchGetItem: HTTP 400 ProvisionedThroughputExceededException: Rate of requests exceeds");
        let missing = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#;
        let (message, retryable) = answer_of("BatchGetItem", 400, missing).unwrap_err();
        assert!(!retryable);
        assert!(message.contains("ResourceNotFoundException: Requested resource not found (does SUPPRESSION_TABLE"));
        let denied =
            r#"{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"User is not authorized"}"#;
        let (message, retryable) = answer_of("PutItem", 400, denied).unwrap_err();
        assert!(!retryable && message.contains("User is not authorized (the function's role needs"), "{message}");
        let (_, retryable) = answer_of("PutItem", 503, "<html>Service Unavailable</html>").unwrap_err();
        assert!(retryable);
        assert!(answer_of("PutItem", 200, "").unwrap_err().1, "a cut answer may pass");
        let unprocessed = r#"{"Responses":{"t":[]},"UnprocessedKeys":{"t":{"Keys":[{"key":{"S":"k"}}]}}}"#;
        let answer = answer_of("BatchGetItem", 200, unprocessed).unwrap();
        assert_eq!(answer["UnprocessedKeys"]["t"]["Keys"][0]["key"]["S"], "k", "read back by `held`");
    }

    #[test]
    fn an_event_is_matched_by_the_contacts_its_plan_names() {
        // `printf 'user_id:u-1' | sha256sum`, `printf 'email:ada@example.com' | sha256sum`
        assert_eq!(user_key(" u-1"), "a8ae9346b4f3e606434b5bf77a2ba2ea81313df4283d69d85bcef9e93a78a4f8");
        assert_eq!(email_key("ADA@example.com"), "9b62a3a2bce7c868f30d60f0818e84d225bceb56f6c2dccaa4ac388af5fd8f7f");
        // A user by their userId, not by the address they carry.
        let identify = json!({"type": "identify", "userId": "u-1", "messageId": "m",
            "traits": {"email": "ada@example.com", "company": {"id": "c-1"}}});
        assert_eq!(contacts(identify), [user_key("u-1")]);
        // A lead by the address the mapper finds: a track's properties.email, or context.traits.email.
        let track = json!({"type": "track", "anonymousId": "a-1", "event": "E", "messageId": "m",
            "properties": {"email": "Ada@Example.com"}});
        assert_eq!(contacts(track), [email_key("ada@example.com")]);
        let page = json!({"type": "page", "anonymousId": "a-1", "messageId": "m",
            "context": {"traits": {"email": "lead@example.com"}}});
        assert_eq!(contacts(page), [email_key("lead@example.com")]);
        // A group names its contact, not the company's address.
        let group = json!({"type": "group", "userId": "u-2", "groupId": "c-1", "messageId": "m",
            "traits": {"email": "billing@example.com"}});
        assert_eq!(contacts(group), [user_key("u-2")]);
        // An alias names both people.
        let alias = json!({"type": "alias", "userId": "u-3", "previousId": "u-old", "messageId": "m"});
        assert_eq!(contacts(alias), [user_key("u-old"), user_key("u-3")]);
    }
}
