//! Carrying out one event's plan: contacts resolved through a warm cache, 409s turned into updates, custom attributes
//! created before use, a track for an unknown contact creating it and trying again.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lru::LruCache;
use reqwest::Method;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::intercom::{IntercomApi, IntercomError, conflicting_contact};
use crate::mapping::{CompanyUpsert, ContactKey, ContactUpsert, Dropped, EventSubmission, Operation, Plan, Role};

/// What carrying out a plan took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Intercom calls made, the failed ones included.
    pub calls: usize,
    /// Values left out, the plan's own and those dropped here (attributes Intercom lacks and may not be created).
    pub dropped: Vec<Dropped>,
    /// Set when the plan turned out to have nothing Intercom can act on (e.g. an alias for contacts that do not exist).
    pub skipped: Option<&'static str>,
}

/// Carries out plans against one Intercom workspace; one per cold start, shared by every invocation.
pub struct Executor<A> {
    api: A,
    create_attributes: bool,
    contacts: Mutex<LruCache<ContactKey, String>>,
    companies: Mutex<LruCache<String, String>>,
    /// Custom data attribute names per model, read once per cold start.
    attributes: tokio::sync::Mutex<HashMap<&'static str, HashSet<String>>>,
}

/// How a failed call is tried again within one invocation.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// Tries of one call, the first included.
    pub attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// No try starts unless it can finish (one call's timeout) before this instant.
    pub until: Instant,
    /// The most one call may take (the client's timeout).
    pub call_timeout: Duration,
}

impl Patience {
    /// One try per call: for callers that retry by other means.
    pub fn once() -> Patience {
        Patience {
            attempts: 1,
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            until: Instant::now() + Duration::from_secs(3600),
            call_timeout: Duration::ZERO,
        }
    }
}

/// Why a plan was not carried out, and how hard we tried.
#[derive(Debug)]
pub struct Failed {
    pub error: IntercomError,
    /// Tries of the call that failed.
    pub attempts: u32,
    /// Intercom calls made for the plan, the failed ones included.
    pub calls: usize,
}

/// Counts the calls of one plan and retries them with patience.
struct Calls {
    made: usize,
    attempts: u32,
    patience: Patience,
}

impl<A: IntercomApi> Executor<A> {
    /// An executor remembering up to `cache_size` contacts and companies.
    pub fn new(api: A, create_attributes: bool, cache_size: NonZeroUsize) -> Executor<A> {
        Executor {
            api,
            create_attributes,
            contacts: Mutex::new(LruCache::new(cache_size)),
            companies: Mutex::new(LruCache::new(cache_size)),
            attributes: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The API this executor calls.
    pub fn api(&self) -> &A {
        &self.api
    }

    /// Carries out `plan` in order, retrying a call that failed for a retryable reason as `patience` allows; the first
    /// failure that remains stops it (the caller hands the event back to SQS or dead-letters it).
    pub async fn execute(&self, plan: &Plan, patience: Patience) -> Result<Delivery, Failed> {
        let mut calls = Calls { made: 0, attempts: 0, patience };
        let mut delivery = Delivery { dropped: plan.dropped.clone(), ..Delivery::default() };
        match self.run(plan, &mut calls, &mut delivery).await {
            Ok(()) => Ok(Delivery { calls: calls.made, ..delivery }),
            Err(error) => Err(Failed { error, attempts: calls.attempts, calls: calls.made }),
        }
    }

    async fn run(&self, plan: &Plan, calls: &mut Calls, delivery: &mut Delivery) -> Result<(), IntercomError> {
        for operation in &plan.operations {
            match operation {
                Operation::UpsertContact(upsert) => {
                    let mut upsert = upsert.clone();
                    self.known_attributes("contact", &mut upsert.custom_attributes, calls, &mut delivery.dropped)
                        .await?;
                    self.upsert_contact(&upsert, calls).await?;
                }
                Operation::SubmitEvent(event) => self.submit_event(event, calls).await?,
                Operation::UpsertCompany(company) => {
                    let mut company = company.clone();
                    self.known_attributes("company", &mut company.custom_attributes, calls, &mut delivery.dropped)
                        .await?;
                    self.upsert_company(&company, calls).await?;
                }
                Operation::AttachCompany { contact, company_id } => {
                    let contact_id = self.contact_id_or_create(contact, calls).await?;
                    let company = self.company_id(company_id, calls).await?;
                    let path = format!("/contacts/{contact_id}/companies");
                    self.call(Method::POST, &path, Some(&json!({"id": company})), calls).await?;
                }
                Operation::DetachCompany { contact, company_id } => {
                    let contact_id = self.contact_id_or_create(contact, calls).await?;
                    let company = self.company_id(company_id, calls).await?;
                    let path = format!("/contacts/{contact_id}/companies/{company}");
                    match self.call(Method::DELETE, &path, None, calls).await {
                        Err(e) if e.status() == Some(404) => info!("Detach: the contact was not attached."),
                        other => _ = other?,
                    }
                }
                Operation::Merge { from, into } => {
                    if let Some(reason) = self.merge(from, into, calls).await? {
                        delivery.skipped = Some(reason);
                    }
                }
            }
        }
        Ok(())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        calls: &mut Calls,
    ) -> Result<Value, IntercomError> {
        let patience = calls.patience;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(patience.min_delay)
            .with_max_delay(patience.max_delay)
            .with_max_times(patience.attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build();
        calls.attempts = 0;
        loop {
            calls.made += 1;
            calls.attempts += 1;
            let error = match self.api.call(method.clone(), path, body).await {
                Err(error) if error.is_retryable() => error,
                outcome => return outcome,
            };
            let Some(delay) = delays.next() else { return Err(error) };
            if Instant::now() + delay + patience.call_timeout > patience.until {
                return Err(error);
            }
            warn!(%method, path, attempt = calls.attempts, delay_ms = delay.as_millis() as u64, %error, "Trying again.");
            tokio::time::sleep(delay).await;
        }
    }

    fn cached_contact(&self, key: &ContactKey) -> Option<String> {
        self.contacts.lock().ok()?.get(key).cloned()
    }

    fn remember_contact(&self, key: &ContactKey, id: &str) {
        if let Ok(mut cache) = self.contacts.lock() {
            cache.put(key.clone(), id.to_owned());
        }
    }

    fn forget_contact(&self, key: &ContactKey) {
        if let Ok(mut cache) = self.contacts.lock() {
            cache.pop(key);
        }
    }

    /// Create, or on a 409 update the contact Intercom names; a cached id is updated straight away.
    async fn upsert_contact(&self, upsert: &ContactUpsert, calls: &mut Calls) -> Result<String, IntercomError> {
        let mut body = Map::new();
        body.insert(
            "role".into(),
            json!(match upsert.role {
                Role::User => "user",
                Role::Lead => "lead",
            }),
        );
        match &upsert.key {
            ContactKey::ExternalId(id) => _ = body.insert("external_id".into(), json!(id)),
            ContactKey::Email(email) => _ = body.insert("email".into(), json!(email)),
        }
        body.extend(upsert.attributes.clone());
        if !upsert.custom_attributes.is_empty() {
            body.insert("custom_attributes".into(), Value::Object(upsert.custom_attributes.clone()));
        }
        let body = Value::Object(body);
        if let Some(id) = self.cached_contact(&upsert.key) {
            match self.call(Method::PUT, &format!("/contacts/{id}"), Some(&body), calls).await {
                Err(e) if e.status() == Some(404) => self.forget_contact(&upsert.key),
                other => return other.map(|_| id),
            }
        }
        if let ContactKey::Email(email) = &upsert.key {
            // Several leads may share an address, so creating blindly could add one more: find the existing one first.
            if let Some(id) = self.find_by_email(email, calls).await? {
                let mut update = body.clone();
                // Found by email, it may be a user: an update never demotes it.
                update.as_object_mut().expect("an object").remove("role");
                self.call(Method::PUT, &format!("/contacts/{id}"), Some(&update), calls).await?;
                self.remember_contact(&upsert.key, &id);
                return Ok(id);
            }
        }
        let id = match self.call(Method::POST, "/contacts", Some(&body), calls).await {
            Ok(created) => contact_id(&created)?,
            Err(error) if error.status() == Some(409) => {
                let existing = error.message().and_then(conflicting_contact).ok_or(error)?;
                if existing.archived {
                    self.call(Method::POST, &format!("/contacts/{}/unarchive", existing.id), None, calls).await?;
                }
                self.call(Method::PUT, &format!("/contacts/{}", existing.id), Some(&body), calls).await?;
                existing.id
            }
            Err(error) => return Err(error),
        };
        self.remember_contact(&upsert.key, &id);
        Ok(id)
    }

    /// The most recently updated contact holding `email`; several matches are logged, and none is created.
    async fn find_by_email(&self, email: &str, calls: &mut Calls) -> Result<Option<String>, IntercomError> {
        let query = json!({
            "query": {"field": "email", "operator": "=", "value": email},
            "sort": {"field": "updated_at", "order": "descending"},
            "pagination": {"per_page": 5},
        });
        let found = self.call(Method::POST, "/contacts/search", Some(&query), calls).await?;
        let total = found["total_count"].as_u64().unwrap_or_default();
        let first = found["data"].as_array().and_then(|data| data.first()).and_then(|c| c["id"].as_str());
        if total > 1
            && let Some(id) = first
        {
            warn!(
                matches = total,
                chosen = id,
                "Several contacts hold this email; updating the most recently updated."
            );
        }
        Ok(first.map(str::to_owned))
    }

    /// The contact's id: from the cache, else created (a 409 names an existing one).
    async fn contact_id_or_create(&self, key: &ContactKey, calls: &mut Calls) -> Result<String, IntercomError> {
        if let Some(id) = self.cached_contact(key) {
            return Ok(id);
        }
        let role = match key {
            ContactKey::ExternalId(_) => Role::User,
            ContactKey::Email(_) => Role::Lead,
        };
        let upsert = ContactUpsert {
            key: key.clone(),
            role,
            attributes: Map::new(),
            custom_attributes: Map::new(),
            dates: Vec::new(),
        };
        self.upsert_contact(&upsert, calls).await
    }

    async fn submit_event(&self, event: &EventSubmission, calls: &mut Calls) -> Result<(), IntercomError> {
        let mut body = json!({"event_name": event.event_name, "created_at": event.created_at});
        if !event.metadata.is_empty() {
            body["metadata"] = Value::Object(event.metadata.clone());
        }
        match &event.contact {
            ContactKey::ExternalId(user_id) => body["user_id"] = json!(user_id),
            // Events for leads must name them by Intercom's id.
            lead @ ContactKey::Email(_) => body["id"] = json!(self.contact_id_or_create(lead, calls).await?),
        }
        match self.call(Method::POST, "/events", Some(&body), calls).await {
            // A track that arrives before its identify: create the contact from what the event knows, then send again.
            Err(error) if error.status() == Some(404) => {
                self.forget_contact(&event.contact);
                let id = self.contact_id_or_create(&event.contact, calls).await?;
                if matches!(event.contact, ContactKey::Email(_)) {
                    body["id"] = json!(id);
                }
                self.call(Method::POST, "/events", Some(&body), calls).await.map(drop)
            }
            other => other.map(drop),
        }
    }

    async fn upsert_company(&self, company: &CompanyUpsert, calls: &mut Calls) -> Result<String, IntercomError> {
        let mut body = Map::new();
        body.insert("company_id".into(), json!(company.company_id));
        body.extend(company.attributes.clone());
        if !company.custom_attributes.is_empty() {
            body.insert("custom_attributes".into(), Value::Object(company.custom_attributes.clone()));
        }
        let answer = self.call(Method::POST, "/companies", Some(&Value::Object(body)), calls).await?;
        let id = answer["id"].as_str().ok_or_else(|| IntercomError::Unexpected("a company without an id".into()))?;
        if let Ok(mut cache) = self.companies.lock() {
            cache.put(company.company_id.clone(), id.to_owned());
        }
        Ok(id.to_owned())
    }

    /// Intercom's id of the company with `company_id`: cached, looked up, or (when Intercom has none) created.
    async fn company_id(&self, company_id: &str, calls: &mut Calls) -> Result<String, IntercomError> {
        if let Some(id) = self.companies.lock().ok().and_then(|mut cache| cache.get(company_id).cloned()) {
            return Ok(id);
        }
        let empty = CompanyUpsert {
            company_id: company_id.to_owned(),
            attributes: Map::new(),
            custom_attributes: Map::new(),
            dates: Vec::new(),
        };
        self.upsert_company(&empty, calls).await
    }

    /// A contact found by its external id, with its role: by the cached id (search lags behind new contacts), else by
    /// search; `None` when Intercom has none.
    async fn find_by_external_id(
        &self,
        key: &ContactKey,
        calls: &mut Calls,
    ) -> Result<Option<(String, String)>, IntercomError> {
        let ContactKey::ExternalId(external_id) = key else { return Ok(None) };
        if let Some(id) = self.cached_contact(key) {
            match self.call(Method::GET, &format!("/contacts/{id}"), None, calls).await {
                Ok(contact) => return Ok(contact["role"].as_str().map(|role| (id, role.to_owned()))),
                Err(e) if e.status() == Some(404) => self.forget_contact(key),
                Err(e) => return Err(e),
            }
        }
        let query = json!({"query": {"field": "external_id", "operator": "=", "value": external_id}});
        let found = self.call(Method::POST, "/contacts/search", Some(&query), calls).await?;
        let first = found["data"].as_array().and_then(|data| data.first());
        Ok(first.and_then(|c| Some((c["id"].as_str()?.to_owned(), c["role"].as_str()?.to_owned()))))
    }

    /// Alias: merge the previous contact (a lead) into the user, or give it the new id; `Some(reason)` when neither exists.
    async fn merge(
        &self,
        from: &ContactKey,
        into: &ContactKey,
        calls: &mut Calls,
    ) -> Result<Option<&'static str>, IntercomError> {
        let previous = self.find_by_external_id(from, calls).await?;
        let user = self.find_by_external_id(into, calls).await?;
        match (previous, user) {
            (Some((lead, role)), Some((user, _))) if role == "lead" => {
                self.call(Method::POST, "/contacts/merge", Some(&json!({"from": lead, "into": user})), calls).await?;
                self.forget_contact(from);
                self.remember_contact(into, &user);
                Ok(None)
            }
            (Some(_), Some(_)) => Ok(Some("alias_both_users")),
            (Some((id, _)), None) => {
                let ContactKey::ExternalId(new_id) = into else { return Ok(Some("alias_without_user_id")) };
                let body = json!({"external_id": new_id, "role": "user"});
                self.call(Method::PUT, &format!("/contacts/{id}"), Some(&body), calls).await?;
                self.forget_contact(from);
                self.remember_contact(into, &id);
                Ok(None)
            }
            (None, _) => Ok(Some("alias_previous_contact_unknown")),
        }
    }

    /// Keeps only custom attributes Intercom knows, creating the missing ones when allowed.
    async fn known_attributes(
        &self,
        model: &'static str,
        attributes: &mut Map<String, Value>,
        calls: &mut Calls,
        dropped: &mut Vec<Dropped>,
    ) -> Result<(), IntercomError> {
        if attributes.is_empty() {
            return Ok(());
        }
        let mut known = self.attributes.lock().await;
        if !known.contains_key(model) {
            let list = self.call(Method::GET, &format!("/data_attributes?model={model}"), None, calls).await?;
            let names =
                list["data"].as_array().into_iter().flatten().filter_map(|a| a["name"].as_str()).map(str::to_owned);
            known.insert(model, names.collect());
        }
        let names = known.get_mut(model).expect("inserted above");
        let missing: Vec<String> = attributes.keys().filter(|name| !names.contains(*name)).cloned().collect();
        for name in missing {
            if !self.create_attributes {
                warn!(model, attribute = %name, "Intercom has no such custom attribute and creating them is off; dropped.");
                attributes.remove(&name);
                dropped.push(Dropped {
                    path: name,
                    reason: "Intercom has no such custom attribute (INTERCOM_CREATE_ATTRIBUTES=false)",
                });
                continue;
            }
            let body = json!({"name": name, "model": model, "data_type": data_type(&name, &attributes[&name])});
            match self.call(Method::POST, "/data_attributes", Some(&body), calls).await {
                Ok(_) => {}
                // Another forwarder created it first.
                Err(e) if e.status() == Some(400) && e.message().is_some_and(|m| m.contains("already")) => {}
                Err(e) => return Err(e),
            }
            names.insert(name);
        }
        Ok(())
    }
}

/// The data type Intercom should give a new attribute, from its first value.
fn data_type(name: &str, value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "boolean",
        Value::Number(n) if (name.ends_with("_at") || name.ends_with("_date")) && n.is_i64() => "date",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        _ => "string",
    }
}

fn contact_id(answer: &Value) -> Result<String, IntercomError> {
    answer["id"].as_str().map(str::to_owned).ok_or_else(|| IntercomError::Unexpected("a contact without an id".into()))
}
