//! The SQS event Lambda hands the forwarder, and the partial-batch answer it expects back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `{"Records": [...]}` as Lambda's SQS event source sends it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct SqsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SqsRecord>,
}

/// One SQS message.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    /// SQS's id of the message: what `batchItemFailures` names.
    pub message_id: String,
    #[serde(default)]
    pub receipt_handle: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub attributes: RecordAttributes,
    #[serde(default)]
    pub message_attributes: BTreeMap<String, MessageAttribute>,
    #[serde(default, rename = "eventSourceARN")]
    pub event_source_arn: Option<String>,
}

/// The system attributes the forwarder reads (SQS sends them all as strings).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RecordAttributes {
    #[serde(default)]
    pub approximate_receive_count: Option<String>,
    #[serde(default)]
    pub message_group_id: Option<String>,
    #[serde(default)]
    pub message_deduplication_id: Option<String>,
    /// When the message entered this queue, in Unix milliseconds (a redriven message is a new one: its own time).
    #[serde(default)]
    pub sent_timestamp: Option<String>,
    /// When it was first received, in Unix milliseconds: when trying it began.
    #[serde(default)]
    pub approximate_first_receive_timestamp: Option<String>,
}

/// A message attribute, as Lambda presents it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MessageAttribute {
    #[serde(default)]
    pub string_value: Option<String>,
    #[serde(default)]
    pub data_type: String,
}

impl SqsRecord {
    /// How many times SQS has handed this message out, this time included (1 when unknown).
    pub fn receive_count(&self) -> u32 {
        self.attributes.approximate_receive_count.as_deref().and_then(|n| n.parse().ok()).unwrap_or(1)
    }

    /// When the message entered the queue, in Unix milliseconds.
    pub fn sent_at_ms(&self) -> Option<u64> {
        self.attributes.sent_timestamp.as_deref()?.parse().ok()
    }

    /// When it was first received, in Unix milliseconds.
    pub fn first_received_at_ms(&self) -> Option<u64> {
        self.attributes.approximate_first_receive_timestamp.as_deref()?.parse().ok()
    }

    /// A string message attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.message_attributes.get(name)?.string_value.as_deref()
    }
}

/// The answer for `ReportBatchItemFailures`: the messages SQS must hand out again.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SqsBatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    pub item_identifier: String,
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
        assert_eq!(record.attributes.message_group_id.as_deref(), Some("u-1"));
        assert_eq!((record.sent_at_ms(), record.first_received_at_ms()), (Some(1545082649183), Some(1545082649185)));
        let answer = SqsBatchResponse { batch_item_failures: vec![BatchItemFailure { item_identifier: "a".into() }] };
        assert_eq!(serde_json::to_string(&answer).unwrap(), r#"{"batchItemFailures":[{"itemIdentifier":"a"}]}"#);
    }
}
