//! The suppression list in the stack's DynamoDB table (`SUPPRESSION_TABLE`): key `key` (a string, the hash), with
//! `erased_at` (seconds since the epoch) and `request_id`. Read with `BatchGetItem` (strongly consistent, the key
//! alone), written with one conditional `PutItem` a key.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use futures_util::future::BoxFuture;

use super::dynamo;
use crate::retry::RetryPolicy;
use crate::suppression::{SuppressionError, SuppressionList, now_s};

/// Keys per `BatchGetItem` (DynamoDB's most).
const GET_MAX: usize = 100;

/// Without one (`SUPPRESSION_TABLE` unset) none is kept, and events after an erasure make the contact again.
pub struct DynamoSuppression {
    table: String,
    client: aws_sdk_dynamodb::Client,
    /// The waits before asking again for keys DynamoDB left unprocessed (the SDK retries failed calls itself).
    unprocessed: RetryPolicy,
}

impl DynamoSuppression {
    /// The table named `table`, reached with `aws`'s credentials, region and endpoint; each try of a call takes at
    /// most `timeout`.
    pub fn new(aws: &aws_config::SdkConfig, table: &str, timeout: Duration) -> Result<Self, SuppressionError> {
        if aws.region().is_none() {
            let reason = "no AWS region".to_owned();
            let list = format!("DynamoDB table {table}");
            return Err(SuppressionError { list, doing: "cannot be reached", reason, retryable: false, source: None });
        }
        let unprocessed =
            RetryPolicy { attempts: 3, min_delay: Duration::from_millis(50), max_delay: Duration::from_millis(400) };
        Ok(DynamoSuppression { table: table.to_owned(), client: dynamo::client(aws, timeout), unprocessed })
    }

    /// Those of `keys` the table holds: a `BatchGetItem` per 100, keys left unprocessed asked for again.
    async fn read(&self, keys: &[String]) -> Result<HashSet<String>, SuppressionError> {
        let mut held = HashSet::new();
        let unique: Vec<&String> = keys.iter().collect::<HashSet<_>>().into_iter().collect();
        for chunk in unique.chunks(GET_MAX) {
            let mut pending: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|key| HashMap::from([("key".to_owned(), AttributeValue::S((*key).clone()))]))
                .collect();
            let mut delays = self.unprocessed.delays();
            while !pending.is_empty() {
                let (found, left) = self.get(pending).await?;
                held.extend(found);
                // Keys DynamoDB did not get to (throttled, or the answer's 16 MB): asked again after a wait.
                pending = left;
                if !pending.is_empty() {
                    let Some(wait) = delays.next() else {
                        let reason = "DynamoDB left keys unprocessed after every try";
                        return Err(self.error("cannot be read", reason.into(), true, None));
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Ok(held)
    }

    /// One `BatchGetItem`: the keys held, and those left unprocessed.
    async fn get(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<(Vec<String>, Vec<HashMap<String, AttributeValue>>), SuppressionError> {
        let wanted = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .projection_expression("#k")
            .expression_attribute_names("#k", "key")
            .consistent_read(true)
            .build()
            .map_err(|e| self.error("cannot be read", e.to_string(), false, Some(e.into())))?;
        let call = self.client.batch_get_item().request_items(&self.table, wanted).send().await;
        let answer = call.map_err(|e| self.failed("BatchGetItem", "cannot be read", e))?;
        let items = answer.responses().and_then(|r| r.get(&self.table)).into_iter().flatten();
        let found = items.filter_map(|item| item.get("key")?.as_s().ok().cloned()).collect();
        let left = answer.unprocessed_keys().and_then(|u| u.get(&self.table)).map(|k| k.keys().to_vec());
        Ok((found, left.unwrap_or_default()))
    }

    /// One `PutItem` a key (an erasure names one to a few): the role may add entries and never delete one, which
    /// `BatchWriteItem` would allow. An entry already there is left as it was (its first erasure's time).
    async fn write(&self, keys: &[String], request_id: &str) -> Result<(), SuppressionError> {
        let erased_at = now_s().to_string();
        let unique: Vec<&String> = keys.iter().collect::<HashSet<_>>().into_iter().collect();
        for key in unique {
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("key", AttributeValue::S(key.clone()))
                .item("erased_at", AttributeValue::N(erased_at.clone()))
                .item("request_id", AttributeValue::S(request_id.to_owned()))
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", "key");
            match put.send().await {
                Ok(_) => {}
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(self.failed("PutItem", "cannot be written", e)),
            }
        }
        Ok(())
    }

    /// A call that failed after the SDK's tries, with a hint where the operator has something to fix.
    fn failed<E>(
        &self,
        operation: &str,
        doing: &'static str,
        error: SdkError<E, dynamo::HttpResponse>,
    ) -> SuppressionError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let failure = dynamo::failure(operation, &error);
        let reason = failure.explained("SUPPRESSION_TABLE", "dynamodb:BatchGetItem and dynamodb:PutItem");
        self.error(doing, reason, failure.retryable, Some(error.into()))
    }

    fn error(
        &self,
        doing: &'static str,
        reason: String,
        retryable: bool,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> SuppressionError {
        SuppressionError { list: self.name(), doing, reason, retryable, source }
    }
}

impl SuppressionList for DynamoSuppression {
    fn name(&self) -> String {
        format!("DynamoDB table {}", self.table)
    }

    fn held<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<HashSet<String>, SuppressionError>> {
        Box::pin(self.read(keys))
    }

    fn add<'a>(&'a self, keys: &'a [String], request_id: &'a str) -> BoxFuture<'a, Result<(), SuppressionError>> {
        Box::pin(self.write(keys, request_id))
    }
}
