//! The identity store in the stack's DynamoDB table (`IDENTITY_TABLE`): key `key` (a string, the hash), with `id` (the
//! Intercom contact), `lead` (a boolean), `claimed_until` (a claim's lease, seconds since the epoch) and `expires_at`
//! (the table's TTL attribute). Reads are strongly consistent; a claim is one conditional `PutItem` whose refusal
//! carries the item that refused it.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use futures_util::future::BoxFuture;

use super::dynamo;
use crate::identity::{Claim, ENTRY_LIFETIME, IdentityError, IdentityStore, Known};
use crate::intercom::ContactId;
use crate::suppression::now_s;

type Item = HashMap<String, AttributeValue>;

/// The stack's identity table.
pub struct DynamoIdentities {
    table: String,
    client: aws_sdk_dynamodb::Client,
}

impl DynamoIdentities {
    /// The table named `table`, reached with `aws`'s credentials, region and endpoint; each try of a call takes at
    /// most `timeout`.
    pub fn new(aws: &aws_config::SdkConfig, table: &str, timeout: Duration) -> Result<Self, IdentityError> {
        let store = DynamoIdentities { table: table.to_owned(), client: dynamo::client(aws, timeout) };
        if aws.region().is_none() {
            return Err(store.error("cannot be reached", "no AWS region".into(), None));
        }
        Ok(store)
    }

    async fn get(&self, key: &str) -> Result<Option<Known>, IdentityError> {
        let call = self.client.get_item().table_name(&self.table).key("key", s(key)).consistent_read(true).send();
        let answer = call.await.map_err(|e| self.failed("GetItem", "cannot be read", e))?;
        Ok(answer.item().and_then(|item| made(item, now_s())))
    }

    async fn put_claim(&self, key: &str, lease: Duration) -> Result<Claim, IdentityError> {
        let now = now_s();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("key", s(key))
            .item("claimed_until", n(now + lease.as_secs().max(1)))
            .item("expires_at", n(now + ENTRY_LIFETIME.as_secs()))
            // Free: no entry, an expired one, or a claim whose lease ran out with no contact made (the same instants
            // as `MemoryIdentities`: an entry ends at its time).
            .condition_expression(
                "attribute_not_exists(#k) OR #ex <= :now OR (attribute_not_exists(#id) AND #cu <= :now)",
            )
            .expression_attribute_names("#k", "key")
            .expression_attribute_names("#ex", "expires_at")
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#cu", "claimed_until")
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match put.send().await {
            Ok(_) => Ok(Claim::Won),
            Err(e) => match e.as_service_error() {
                Some(refused) if refused.is_conditional_check_failed_exception() => {
                    let holder = match refused {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                            c.item().and_then(|item| made(item, now))
                        }
                        _ => None,
                    };
                    Ok(holder.map_or(Claim::Pending, Claim::Held))
                }
                _ => Err(self.failed("PutItem", "cannot be written", e)),
            },
        }
    }

    async fn put_made(&self, keys: &[String], known: &Known) -> Result<(), IdentityError> {
        let expires_at = now_s() + ENTRY_LIFETIME.as_secs();
        for key in keys {
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("key", s(key))
                .item("id", s(known.id.as_str()))
                .item("lead", AttributeValue::Bool(known.is_lead))
                .item("expires_at", n(expires_at));
            put.send().await.map_err(|e| self.failed("PutItem", "cannot be written", e))?;
        }
        Ok(())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), IdentityError> {
        for key in keys {
            let delete = self.client.delete_item().table_name(&self.table).key("key", s(key));
            delete.send().await.map_err(|e| self.failed("DeleteItem", "cannot be written", e))?;
        }
        Ok(())
    }

    fn failed<E>(&self, operation: &str, doing: &'static str, error: SdkError<E, dynamo::HttpResponse>) -> IdentityError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let failure = dynamo::failure(operation, &error);
        let hint = match failure.code.as_deref() {
            Some("ResourceNotFoundException") => " (does IDENTITY_TABLE name the stack's table, in this region?)",
            Some("AccessDeniedException") => {
                " (the function's role needs dynamodb:GetItem, dynamodb:PutItem and dynamodb:DeleteItem on it)"
            }
            _ => "",
        };
        self.error(doing, format!("{}{hint}", failure.message), Some(error.into()))
    }

    fn error(
        &self,
        doing: &'static str,
        reason: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> IdentityError {
        IdentityError { store: self.name(), doing, reason, source }
    }
}

/// The contact an item holds, unless it is only a claim or has expired.
fn made(item: &Item, now: u64) -> Option<Known> {
    let expires_at = item.get("expires_at")?.as_n().ok()?.parse::<u64>().ok()?;
    let id = item.get("id")?.as_s().ok()?;
    let is_lead = item.get("lead").and_then(|l| l.as_bool().ok().copied()).unwrap_or(false);
    (expires_at > now).then(|| Known { id: ContactId::new(id.as_str()), is_lead })
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(number: u64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

impl IdentityStore for DynamoIdentities {
    fn name(&self) -> String {
        format!("DynamoDB table {}", self.table)
    }

    fn find<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Known>, IdentityError>> {
        Box::pin(self.get(key))
    }

    fn claim<'a>(&'a self, key: &'a str, lease: Duration) -> BoxFuture<'a, Result<Claim, IdentityError>> {
        Box::pin(self.put_claim(key, lease))
    }

    fn record<'a>(&'a self, keys: &'a [String], known: &'a Known) -> BoxFuture<'a, Result<(), IdentityError>> {
        Box::pin(self.put_made(keys, known))
    }

    fn forget<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), IdentityError>> {
        Box::pin(self.delete(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_a_contact_only_with_an_id_and_before_it_expires() {
        let item = |pairs: &[(&str, AttributeValue)]| -> Item {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
        };
        let made_one = item(&[("id", s("c-1")), ("lead", AttributeValue::Bool(true)), ("expires_at", n(100))]);
        assert_eq!(made(&made_one, 99), Some(Known { id: ContactId::new("c-1"), is_lead: true }));
        assert_eq!(made(&made_one, 100), None, "expired: DynamoDB's TTL deletes late");
        assert_eq!(made(&item(&[("claimed_until", n(150)), ("expires_at", n(200))]), 99), None, "a claim only");
    }
}
