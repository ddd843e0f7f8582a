//! The SQS event Lambda hands the forwarder, and the partial-batch answer it expects back: `aws_lambda_events`' types.
//! Here, what it lacks: reading the attributes the forwarder uses (SQS sends them all as strings), and making an
//! event and an answer (its types are `#[non_exhaustive]`: no struct literals outside it).

pub use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
pub use aws_lambda_events::sqs::{SqsMessage as SqsRecord, SqsMessageAttribute as MessageAttribute};

/// The system attributes read here, as SQS names them.
pub const APPROXIMATE_RECEIVE_COUNT: &str = "ApproximateReceiveCount";
pub const MESSAGE_GROUP_ID: &str = "MessageGroupId";
/// When the message entered this queue, in Unix milliseconds (a redriven message is a new one: its own time).
pub const SENT_TIMESTAMP: &str = "SentTimestamp";
/// When it was first received, in Unix milliseconds: when trying it began.
pub const APPROXIMATE_FIRST_RECEIVE_TIMESTAMP: &str = "ApproximateFirstReceiveTimestamp";

/// What the forwarder reads of a record.
pub trait SqsRecordExt {
    /// SQS's id of the message: what `batchItemFailures` names (empty when Lambda gave none).
    fn id(&self) -> &str;
    /// Its FIFO message group.
    fn group(&self) -> Option<&str>;
    /// How many times SQS has handed this message out, this time included (1 when unknown).
    fn receive_count(&self) -> u32;
    /// When the message entered the queue, in Unix milliseconds.
    fn sent_at_ms(&self) -> Option<u64>;
    /// When it was first received, in Unix milliseconds.
    fn first_received_at_ms(&self) -> Option<u64>;
    /// A string message attribute.
    fn attribute(&self, name: &str) -> Option<&str>;
}

impl SqsRecordExt for SqsRecord {
    fn id(&self) -> &str {
        self.message_id.as_deref().unwrap_or_default()
    }

    fn group(&self) -> Option<&str> {
        self.attributes.get(MESSAGE_GROUP_ID).map(String::as_str)
    }

    fn receive_count(&self) -> u32 {
        self.attributes.get(APPROXIMATE_RECEIVE_COUNT).and_then(|n| n.parse().ok()).unwrap_or(1)
    }

    fn sent_at_ms(&self) -> Option<u64> {
        self.attributes.get(SENT_TIMESTAMP)?.parse().ok()
    }

    fn first_received_at_ms(&self) -> Option<u64> {
        self.attributes.get(APPROXIMATE_FIRST_RECEIVE_TIMESTAMP)?.parse().ok()
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        self.message_attributes.get(name)?.string_value.as_deref()
    }
}

/// An event of `records`.
pub fn sqs_event_of(records: Vec<SqsRecord>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// A record with SQS's message id `id` and `body`.
pub fn sqs_record(id: &str, body: Option<String>) -> SqsRecord {
    let mut record = SqsRecord::default();
    record.message_id = Some(id.to_owned());
    record.body = body;
    record
}

/// A string message attribute, as Lambda presents it.
pub fn string_attribute(value: &str) -> MessageAttribute {
    let mut attribute = MessageAttribute::default();
    attribute.string_value = Some(value.to_owned());
    attribute.data_type = Some("String".into());
    attribute
}

/// The answer for `ReportBatchItemFailures`: the messages (SQS message ids) SQS must hand out again.
pub fn batch_response(failed: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_event_lambda_sends_and_writes_the_answer_it_expects() {
        let event: SqsEvent = serde_json::from_str(
            r#"{"Records": [{"messageId": "059f36b4-87a3-44ab-83d2-661975830a7d", "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
              "body": "{}", "attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1545082649183",
              "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185",
              "MessageGroupId": "u-1", "MessageDeduplicationId": "m-1", "SequenceNumber": "1"},
              "messageAttributes": {"event_type": {"stringValue": "track", "stringListValues": [], "binaryListValues": [], "dataType": "String"}},
              "md5OfBody": "99914b932bd37a50b983c5e7c90ae93b", "eventSource": "aws:sqs",
              "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events.fifo", "awsRegion": "us-east-1"}]}"#,
        )
        .unwrap();
        let record = &event.records[0];
        assert_eq!((record.receive_count(), record.attribute("event_type")), (3, Some("track")));
        assert_eq!(record.group(), Some("u-1"));
        assert_eq!((record.sent_at_ms(), record.first_received_at_ms()), (Some(1545082649183), Some(1545082649185)));
        let answer = batch_response(["a".to_owned()]);
        assert_eq!(serde_json::to_string(&answer).unwrap(), r#"{"batchItemFailures":[{"itemIdentifier":"a"}]}"#);
    }
}
