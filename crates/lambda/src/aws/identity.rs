//! The identity store in the stack's DynamoDB table (`IDENTITY_TABLE`): key `key` (a string, the hash), with `id` (the
//! Intercom contact or company), `lead` (a boolean), `written` (what was last written, as JSON of digests),
//! `claimed_until` (a claim's lease, seconds since the epoch) and `expires_at` (the table's TTL attribute); a contact's
//! own keys under the hash of its Intercom id, as the string set `keys`. Reads are strongly consistent; a batch's keys
//! are read with one `BatchGetItem`; a claim is one conditional `PutItem` whose refusal carries the item that refused
//! it.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use futures_util::future::BoxFuture;

use super::dynamo;
use crate::identity::{Claim, ENTRY_LIFETIME, IdentityError, IdentityStore, Known, Stored, Written, own_keys_key};
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

    async fn get(&self, key: &str) -> Result<Option<Stored>, IdentityError> {
        let call = self.client.get_item().table_name(&self.table).key("key", s(key)).consistent_read(true).send();
        let answer = call.await.map_err(|e| self.failed("GetItem", "cannot be read", e))?;
        Ok(answer.item().and_then(|item| made(item, now_s())))
    }

    /// Up to a hundred keys a call (`BatchGetItem`'s limit); keys DynamoDB leaves unprocessed (throttling) are asked
    /// again twice, then left out of the answer, to be read one by one if needed.
    async fn get_many(&self, keys: &[String]) -> Result<HashMap<String, Option<Stored>>, IdentityError> {
        let now = now_s();
        let mut found = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut wanted: Vec<Item> = chunk.iter().map(|key| [("key".to_owned(), s(key))].into()).collect();
            for pause in [0, 50, 200] {
                if wanted.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut wanted)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| self.error("cannot be read", e.to_string(), None))?;
                let call = self.client.batch_get_item().request_items(&self.table, request).send();
                let answer = call.await.map_err(|e| self.failed("BatchGetItem", "cannot be read", e))?;
                for item in answer.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                    if let Some(key) = item.get("key").and_then(|k| k.as_s().ok()) {
                        found.insert(key.clone(), made(item, now));
                    }
                }
                let unprocessed = answer.unprocessed_keys().and_then(|u| u.get(&self.table));
                wanted = unprocessed.map_or(Vec::new(), |k| k.keys().to_vec());
            }
            // Read and not found: nothing held. Still unprocessed: not in the answer.
            let left: Vec<&String> = wanted.iter().filter_map(|k| k.get("key")?.as_s().ok()).collect();
            for key in chunk.iter().filter(|key| !left.contains(key)) {
                found.entry(key.clone()).or_insert(None);
            }
        }
        Ok(found)
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
                            c.item().and_then(|item| made(item, now)).map(|stored| stored.known)
                        }
                        _ => None,
                    };
                    Ok(holder.map_or(Claim::Pending, Claim::Held))
                }
                _ => Err(self.failed("PutItem", "cannot be written", e)),
            },
        }
    }

    /// A contact's (or company's) item: `written` left out when nothing was written yet.
    fn item(&self, key: &str, stored: &Stored) -> Result<PutItemFluentBuilder, IdentityError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("key", s(key))
            .item("id", s(stored.known.id.as_str()))
            .item("lead", AttributeValue::Bool(stored.known.is_lead))
            .item("made_at", n(stored.made_at))
            .item("expires_at", n(now_s() + ENTRY_LIFETIME.as_secs()));
        if stored.written != Written::default() {
            put = put.item("written", s(&self.json(&stored.written)?));
        }
        if let Some(primary) = &stored.primary {
            put = put.item("primary", s(primary));
        }
        Ok(put)
    }

    fn json(&self, written: &Written) -> Result<String, IdentityError> {
        serde_json::to_string(written).map_err(|e| self.error("cannot be written", e.to_string(), None))
    }

    async fn put_made(&self, keys: &[String], known: &Known) -> Result<(), IdentityError> {
        for (n, key) in keys.iter().enumerate() {
            let stored = Stored { primary: (n > 0).then(|| keys[0].clone()), ..Stored::new(known.clone()) };
            self.item(key, &stored)?.send().await.map_err(|e| self.failed("PutItem", "cannot be written", e))?;
        }
        self.add_own_keys(&known.id, keys).await
    }

    /// Adds `keys` to the contact's own list (one `UpdateItem`: `ADD` to a string set is atomic).
    async fn add_own_keys(&self, id: &ContactId, keys: &[String]) -> Result<(), IdentityError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", s(&own_keys_key(id)))
            .update_expression("ADD #keys :keys SET #ex = :ex")
            .expression_attribute_names("#keys", "keys")
            .expression_attribute_names("#ex", "expires_at")
            .expression_attribute_values(":keys", AttributeValue::Ss(keys.to_vec()))
            .expression_attribute_values(":ex", n(now_s() + ENTRY_LIFETIME.as_secs()));
        update.send().await.map_err(|e| self.failed("UpdateItem", "cannot be written", e))?;
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, known: &Known) -> Result<Option<Known>, IdentityError> {
        let now = now_s();
        let put = self
            .item(key, &Stored::new(known.clone()))?
            .condition_expression("attribute_not_exists(#id) OR #ex <= :now")
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#ex", "expires_at")
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match put.send().await {
            Ok(_) => self.add_own_keys(&known.id, &[key.to_owned()]).await.map(|()| None),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c)) => {
                    Ok(c.item().and_then(|item| made(item, now)).map(|stored| stored.known))
                }
                _ => Err(self.failed("PutItem", "cannot be written", e)),
            },
        }
    }

    /// With `prior`: only while the item holds that as written (its JSON, which serde writes the same for the same
    /// value), or nothing when `prior` is nothing; without: only over the same contact's item. Never over another
    /// contact's item, never bringing back an item deleted meanwhile unless nothing was written to it before.
    async fn put_written(&self, key: &str, stored: &Stored, prior: Option<&Written>) -> Result<bool, IdentityError> {
        let put = self
            .item(key, stored)?
            .expression_attribute_names("#id", "id")
            .expression_attribute_values(":id", s(stored.known.id.as_str()));
        let put = match prior {
            None => put.condition_expression("#id = :id"),
            Some(prior) if *prior == Written::default() => put
                .condition_expression("attribute_not_exists(#w) AND (attribute_not_exists(#id) OR #id = :id)")
                .expression_attribute_names("#w", "written"),
            Some(prior) => put
                .condition_expression("#w = :prior AND #id = :id")
                .expression_attribute_names("#w", "written")
                .expression_attribute_values(":prior", s(&self.json(prior)?)),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(self.failed("PutItem", "cannot be written", e)),
        }
    }

    async fn delete(&self, keys: &[String]) -> Result<(), IdentityError> {
        for key in keys {
            let delete = self.client.delete_item().table_name(&self.table).key("key", s(key));
            delete.send().await.map_err(|e| self.failed("DeleteItem", "cannot be written", e))?;
        }
        Ok(())
    }

    /// Every key the contact's list names, then the list.
    async fn delete_contact(&self, id: &ContactId) -> Result<(), IdentityError> {
        let own = own_keys_key(id);
        let call = self.client.get_item().table_name(&self.table).key("key", s(&own)).consistent_read(true).send();
        let answer = call.await.map_err(|e| self.failed("GetItem", "cannot be read", e))?;
        let mut keys: Vec<String> =
            answer.item().and_then(|item| item.get("keys")?.as_ss().ok().cloned()).unwrap_or_default();
        keys.push(own);
        self.delete(&keys).await
    }

    fn failed<E>(&self, operation: &str, doing: &'static str, error: SdkError<E, dynamo::HttpResponse>) -> IdentityError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let actions = "dynamodb:GetItem, BatchGetItem, PutItem, UpdateItem and DeleteItem";
        let reason = dynamo::failure(operation, &error).explained("IDENTITY_TABLE", actions);
        self.error(doing, reason, Some(error.into()))
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

/// The contact an item holds and what was written to it, unless it is only a claim or has expired. A `written` that
/// cannot be read counts as nothing written (the next write sends everything).
fn made(item: &Item, now: u64) -> Option<Stored> {
    let expires_at = item.get("expires_at")?.as_n().ok()?.parse::<u64>().ok()?;
    let id = item.get("id")?.as_s().ok()?;
    let is_lead = item.get("lead").and_then(|l| l.as_bool().ok().copied()).unwrap_or(false);
    let written = item.get("written").and_then(|w| serde_json::from_str(w.as_s().ok()?).ok()).unwrap_or_default();
    let primary = item.get("primary").and_then(|p| p.as_s().ok()).cloned();
    let made_at = item.get("made_at").and_then(|m| m.as_n().ok()?.parse().ok()).unwrap_or(0);
    let known = Known { id: ContactId::new(id.as_str()), is_lead };
    (expires_at > now).then_some(Stored { known, written, primary, made_at })
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

    fn find<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Stored>, IdentityError>> {
        Box::pin(self.get(key))
    }

    fn find_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, Option<Stored>>, IdentityError>> {
        Box::pin(self.get_many(keys))
    }

    fn claim<'a>(&'a self, key: &'a str, lease: Duration) -> BoxFuture<'a, Result<Claim, IdentityError>> {
        Box::pin(self.put_claim(key, lease))
    }

    fn record<'a>(&'a self, keys: &'a [String], known: &'a Known) -> BoxFuture<'a, Result<(), IdentityError>> {
        Box::pin(self.put_made(keys, known))
    }

    fn record_if_absent<'a>(
        &'a self,
        key: &'a str,
        known: &'a Known,
    ) -> BoxFuture<'a, Result<Option<Known>, IdentityError>> {
        Box::pin(self.put_if_absent(key, known))
    }

    fn write_down<'a>(
        &'a self,
        key: &'a str,
        stored: &'a Stored,
        prior: Option<&'a Written>,
    ) -> BoxFuture<'a, Result<bool, IdentityError>> {
        Box::pin(self.put_written(key, stored, prior))
    }

    fn forget<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<(), IdentityError>> {
        Box::pin(self.delete(keys))
    }

    fn forget_contact<'a>(&'a self, id: &'a ContactId) -> BoxFuture<'a, Result<(), IdentityError>> {
        Box::pin(self.delete_contact(id))
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
        let made_one =
            item(&[("id", s("c-1")), ("lead", AttributeValue::Bool(true)), ("made_at", n(40)), ("expires_at", n(100))]);
        let known = Known { id: ContactId::new("c-1"), is_lead: true };
        assert_eq!(made(&made_one, 99), Some(Stored { made_at: 40, ..Stored::new(known.clone()) }));
        let mut with_written = made_one.clone();
        with_written.insert("written".into(), s(r#"{"at":7,"f":{"a:name":"d1"},"s":5,"c":["x"]}"#));
        let written = made(&with_written, 99).unwrap().written;
        assert_eq!((written.refreshed_at, written.last_seen_at, written.companies.len()), (7, Some(5), 1));
        with_written.insert("written".into(), s("not json"));
        assert_eq!(made(&with_written, 99).unwrap().written, Written::default(), "unreadable: nothing written");
        assert_eq!(made(&made_one, 100), None, "expired: DynamoDB's TTL deletes late");
        assert_eq!(made(&item(&[("claimed_until", n(150)), ("expires_at", n(200))]), 99), None, "a claim only");
    }
}
