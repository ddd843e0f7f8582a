//! Carrying out one event's plan: contacts resolved through a warm cache and lag-free lookups, custom attributes checked
//! against what the workspace holds, merged contacts followed, and a value Intercom cannot take left out, not the event.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::breaker::{Breaker, BreakerPolicy, Health, Permit, Transition, advice};
use crate::retry::RetryPolicy;

use crate::erasure::ErasureRequest;
use crate::intercom::requests::{
    self, AttributeRefusal, DataAttribute, Dialect, EventContact, Fields, FoundContact, Person, Request,
};
use crate::intercom::{ErrorKind, IntercomApi, IntercomError, conflicting_contact};
use crate::mapping::{
    ANONYMOUS_ID_ATTRIBUTE, CompanyUpsert, ContactKey, ContactUpsert, Dropped, EventSubmission, Operation, Plan,
};

/// The skip of an alias whose previous contact Intercom does not hold (yet: it may travel in another FIFO group, so the
/// forwarder hands the alias back for a while first).
pub const ALIAS_PREVIOUS_UNKNOWN: &str = "alias_previous_contact_unknown";

/// Intercom keeps at most this many custom data attributes per workspace (Intercom help, article 179).
const MAX_CUSTOM_ATTRIBUTES: usize = 250;

/// A write that Intercom refuses for one named value is sent again without it, at most this many times.
const MAX_REFUSALS: usize = 3;

/// What carrying out a plan took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Intercom calls made, the failed ones included.
    pub calls: usize,
    /// Values left out, the plan's own and those dropped here (values the workspace cannot hold).
    pub dropped: Vec<Dropped>,
    /// Set when the plan turned out to have nothing Intercom can act on (e.g. an alias for contacts that do not exist).
    pub skipped: Option<&'static str>,
}

/// Carries out plans against one Intercom workspace; one per cold start, shared by every invocation.
pub struct Executor<A> {
    api: A,
    dialect: Dialect,
    create_attributes: bool,
    contacts: Ids<ContactKey>,
    /// Visitors' leads by anonymousId: leads carry no external_id, so this (and the lead's `anonymous_id` attribute,
    /// behind the search index's lag) is how an alias or an identify finds them.
    visitors: Ids<String>,
    /// Visitors whose lead this forwarder merged into a user, by anonymousId: the user's id. Browser SDKs send each
    /// event in its own request, so an identify naming the user and the visitor can land before the alias of the same
    /// two, which then finds the lead gone: the alias is done, not skipped.
    merged_visitors: Ids<String>,
    /// Intercom's company ids by company_id.
    companies: Ids<String>,
    /// What the workspace holds, learned once per cold start.
    workspace: tokio::sync::Mutex<Workspace>,
    /// Holds calls back while every call fails for a reason of the workspace.
    breaker: Breaker,
}

/// Intercom's ids by a key of ours, in an LRU shared by every invocation of a warm function. A poisoned lock (a panic
/// elsewhere) only costs lookups: the cache is an optimisation.
struct Ids<K: Hash + Eq>(Mutex<LruCache<K, String>>);

impl<K: Hash + Eq> Ids<K> {
    fn new(size: NonZeroUsize) -> Ids<K> {
        Ids(Mutex::new(LruCache::new(size)))
    }

    fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<String>
    where
        K: Borrow<Q>,
    {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: K, id: &str) {
        if let Ok(mut cache) = self.0.lock() {
            cache.put(key, id.to_owned());
        }
    }

    fn forget<Q: Hash + Eq + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        if let Ok(mut cache) = self.0.lock() {
            cache.pop(key);
        }
    }
}

/// What an erasure found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Intercom's ids of the contacts deleted.
    pub contacts: Vec<String>,
    /// Of the contacts found: users and leads.
    pub users: usize,
    pub leads: usize,
    /// What else there is to know: nobody found, a user left who shares the address, several users erased.
    pub notes: Vec<String>,
    pub calls: usize,
}

/// Whom an erasure request names, found and not yet deleted (no `Debug`: it holds their addresses).
pub struct ErasureTargets {
    targets: Vec<Person>,
    notes: Vec<String>,
    /// Intercom calls spent finding them.
    calls: usize,
}

impl ErasureTargets {
    /// The addresses the contacts found hold (for the suppression list; never logged).
    pub fn emails(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().filter_map(|t| t.email.as_deref())
    }

    /// Intercom calls spent finding them.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The users' external_ids among the contacts found (an erasure by email names them by nothing else).
    pub fn external_ids(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().filter_map(|t| t.external_id.as_deref())
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

/// Counts the calls of one plan and retries them as its policy allows.
struct Calls {
    made: usize,
    attempts: u32,
    retry: RetryPolicy,
    /// No try starts after this instant (the invocation's stop, less one call's timeout).
    until: Instant,
    /// The only custom attributes the plan may create, when it may not create any it likes (a browser key's event).
    may_create: Option<std::collections::BTreeSet<String>>,
}

/// The workspace's data attributes and admins.
#[derive(Default)]
struct Workspace {
    models: HashMap<&'static str, Model>,
    /// `None` until asked; `Some(None)` when the token may not list them (the write's refusal is the check then).
    admins: Option<Option<HashSet<String>>>,
    /// Tag ids by lower-cased name (Intercom's tag names ignore case); `None` until asked.
    tags: Option<HashMap<String, String>>,
}

/// One model's data attributes.
#[derive(Default)]
struct Model {
    /// Custom attributes by name, archived ones included.
    custom: HashMap<String, DataAttribute>,
    /// Standard attributes' names, lower-cased: Intercom refuses them as custom names ("'Name' is one of our standard
    /// attributes").
    standard: HashSet<String>,
    /// Names Intercom refused to create during this cold start.
    refused: HashSet<String>,
}

impl Model {
    fn from_list(list: HashMap<String, DataAttribute>) -> Model {
        let mut model = Model::default();
        for (name, attribute) in list {
            if attribute.custom {
                model.custom.insert(name, attribute);
            } else {
                model.standard.insert(name.to_lowercase());
            }
        }
        model
    }

    fn live_custom(&self) -> usize {
        self.custom.values().filter(|a| !a.archived).count()
    }
}

/// What becomes of one custom attribute's value.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    /// Send it, in the type the attribute holds.
    Send(Value),
    /// The workspace has no such attribute: create it with this data type first.
    Create(&'static str),
    /// Leave it out, for this reason.
    Drop(&'static str),
}

/// Judges `value` for the custom attribute `name` of a model that holds `model`; `is_date` when the mapping found a time.
fn judge(name: &str, value: &Value, is_date: bool, model: &Model, create: bool) -> Verdict {
    if model.standard.contains(&name.to_lowercase()) {
        return Verdict::Drop("the name of one of Intercom's standard attributes");
    }
    if let Some(attribute) = model.custom.get(name) {
        if attribute.archived {
            return Verdict::Drop("the attribute is archived in Intercom (unarchive it to receive values)");
        }
        return match fit(attribute, value) {
            Ok(value) => Verdict::Send(value),
            Err(reason) => Verdict::Drop(reason),
        };
    }
    if model.refused.contains(name) {
        return Verdict::Drop("Intercom refused to create this attribute");
    }
    if value.is_null() {
        return Verdict::Drop("a null creates no attribute");
    }
    if !create {
        return Verdict::Drop("Intercom has no such custom attribute (INTERCOM_CREATE_ATTRIBUTES=false)");
    }
    if model.live_custom() >= MAX_CUSTOM_ATTRIBUTES {
        return Verdict::Drop("the workspace holds Intercom's maximum of 250 custom attributes");
    }
    Verdict::Create(new_type(name, value, is_date))
}

/// The data type of a new attribute, from the value that creates it: a time is a `date` in Unix seconds.
fn new_type(name: &str, value: &Value, is_date: bool) -> &'static str {
    match value {
        Value::Number(n) if is_date || ((name.ends_with("_at") || name.ends_with("_date")) && n.is_i64()) => "date",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        _ => "string",
    }
}

/// `value` in the type `attribute` holds, or why it cannot be: a write carrying a value of the wrong type, or one
/// outside a list attribute's options, is refused whole (intercom/Intercom-OpenAPI PR #457).
fn fit(attribute: &DataAttribute, value: &Value) -> Result<Value, &'static str> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    let fitted = match (attribute.data_type.as_str(), value) {
        ("string", Value::String(_)) => value.clone(),
        ("string", Value::Number(_) | Value::Bool(_)) => Value::from(value.to_string()),
        ("integer" | "date", Value::Number(n)) if n.is_i64() || n.is_u64() => value.clone(),
        ("integer" | "date", Value::Number(n)) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => return Err("Intercom's attribute holds whole numbers"),
        },
        ("integer", Value::String(text)) => {
            text.trim().parse::<i64>().map(Value::from).map_err(|_| "Intercom's attribute holds whole numbers")?
        }
        ("float", Value::Number(_)) => value.clone(),
        ("float", Value::String(text)) => match text.trim().parse::<f64>().ok().filter(|f| f.is_finite()) {
            Some(f) => Value::from(f),
            None => return Err("Intercom's attribute holds numbers"),
        },
        ("boolean", Value::Bool(_)) => value.clone(),
        ("boolean", Value::String(text)) => match text.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err("Intercom's attribute holds true or false"),
        },
        ("date", Value::String(text)) => match crate::event::parse_timestamp(text) {
            Some(at) => Value::from(at.unix_timestamp()),
            None => return Err("Intercom's attribute holds dates"),
        },
        ("integer" | "float" | "boolean" | "date" | "string", _) => {
            return Err("the value's type is not the one Intercom's attribute holds");
        }
        _ => value.clone(),
    };
    if !attribute.options.is_empty() {
        let text = fitted.as_str().map(str::to_owned).unwrap_or_else(|| fitted.to_string());
        if !attribute.options.contains(&text) {
            return Err("not one of the list attribute's options in Intercom");
        }
    }
    Ok(fitted)
}

fn other_model(model: &'static str) -> &'static str {
    if model == "company" { "contact" } else { "company" }
}

impl<A: IntercomApi> Executor<A> {
    /// An executor remembering up to `cache_size` contacts and companies.
    pub fn new(api: A, create_attributes: bool, cache_size: NonZeroUsize) -> Executor<A> {
        Executor {
            dialect: Dialect::of(api.version()),
            api,
            create_attributes,
            contacts: Ids::new(cache_size),
            visitors: Ids::new(cache_size),
            merged_visitors: Ids::new(cache_size),
            companies: Ids::new(cache_size),
            workspace: tokio::sync::Mutex::new(Workspace::default()),
            breaker: Breaker::new(BreakerPolicy::default()),
        }
    }

    /// The same executor with its circuit breaker following `policy`.
    pub fn with_breaker(self, policy: BreakerPolicy) -> Executor<A> {
        Executor { breaker: Breaker::new(policy), ..self }
    }

    /// The circuit breaker in front of its calls.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The API this executor calls.
    pub fn api(&self) -> &A {
        &self.api
    }

    /// Carries out `plan` in order, trying a call that failed for a retryable reason again as `retry` allows, no try
    /// starting after `until`; the first failure that remains stops it (the caller hands the event back to SQS or
    /// dead-letters it). While the breaker is open, calls are withheld and fail at once.
    pub async fn execute(&self, plan: &Plan, retry: RetryPolicy, until: Instant) -> Result<Delivery, Failed> {
        let mut calls = Calls { made: 0, attempts: 0, retry, until, may_create: plan.may_create.clone() };
        let mut delivery = Delivery { dropped: plan.dropped.clone(), ..Delivery::default() };
        match self.run(plan, &mut calls, &mut delivery).await {
            Ok(()) => Ok(Delivery { calls: calls.made, ..delivery }),
            Err(error) => Err(Failed { error, attempts: calls.attempts, calls: calls.made }),
        }
    }

    async fn run(&self, plan: &Plan, calls: &mut Calls, delivery: &mut Delivery) -> Result<(), IntercomError> {
        // Whether this plan created its user: only a new user can have a visitor's lead still to take in.
        let mut created = false;
        // The tags the contact and companies upserted showed.
        let mut contact_tags = None;
        let mut company_tags: HashMap<&str, Option<HashSet<String>>> = HashMap::new();
        for operation in &plan.operations {
            match operation {
                Operation::UpsertContact(upsert) => {
                    let (_, made, tags) = self.upsert_contact(upsert, calls, &mut delivery.dropped).await?;
                    (created, contact_tags) = (made, tags);
                }
                Operation::SubmitEvent(event) => self.submit_event(event, calls).await?,
                Operation::UpsertCompany(company) => {
                    let (_, tags) = self.upsert_company(company, calls, &mut delivery.dropped).await?;
                    company_tags.insert(&company.company_id, tags);
                }
                Operation::TagContact { contact, tags, remove_missing } => {
                    self.tag_contact(contact, tags, *remove_missing, contact_tags.take(), calls).await?;
                }
                Operation::TagCompany { company_id, tags, remove_missing } => {
                    let held = company_tags.remove(company_id.as_str()).flatten();
                    self.tag_company(company_id, tags, *remove_missing, held, calls).await?;
                }
                Operation::AttachCompany { contact, company_id } => {
                    self.attach(contact, company_id, calls).await?;
                }
                Operation::DetachCompany { contact, company_id } => {
                    self.detach(contact, company_id, calls).await?;
                }
                Operation::Merge { from, into } => {
                    if let Some(reason) = self.alias(from, into, calls).await? {
                        delivery.skipped = Some(reason);
                    }
                }
                Operation::MergeVisitor { anonymous_id, into } => {
                    self.merge_visitor(anonymous_id, into, created, calls).await?;
                }
            }
        }
        Ok(())
    }

    async fn call(&self, request: Request, calls: &mut Calls) -> Result<Value, IntercomError> {
        let mut delays = calls.retry.delays();
        calls.attempts = 0;
        let Request { method, path, body } = request;
        loop {
            let permit = self.breaker.permit(Instant::now());
            if let Permit::Withheld { failure, .. } = &permit {
                return Err(IntercomError::Withheld(failure.clone()));
            }
            calls.made += 1;
            calls.attempts += 1;
            let outcome = self.api.call(method.clone(), &path, body.as_ref()).await;
            let event = super::current_record();
            if let Some(transition) =
                self.breaker.record(&permit, Health::of(&outcome), event.as_deref(), Instant::now())
            {
                log_transition(&transition, self.breaker.policy());
            }
            let error = match outcome {
                Err(error) if error.is_retryable() && permit == Permit::Call => error,
                outcome => return outcome,
            };
            let Some(delay) = delays.next() else { return Err(error) };
            if Instant::now() + delay > calls.until {
                return Err(error);
            }
            let path = requests::path_for_logs(&path);
            warn!(%method, %path, attempt = calls.attempts, delay_ms = delay.as_millis() as u64, %error, "Trying again.");
            tokio::time::sleep(delay).await;
        }
    }

    /// The contact an id that stopped working became: the merge target a 410 names, or `None` when it is gone (or
    /// archived: creating it again then meets the 409 that unarchives it). A write to a merged id may answer 404 or
    /// 410 (the spec documents 410 for reads only), so a 404 asks the read, which says.
    async fn moved(&self, id: &str, error: &IntercomError, calls: &mut Calls) -> Result<Option<String>, IntercomError> {
        if let Some(target) = error.merged_into() {
            return Ok(Some(target));
        }
        match self.call(requests::get_contact(id), calls).await {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::Merged => Ok(e.merged_into()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a write built by `build` from the fields left; when Intercom refuses one named value (an owner who is no
    /// admin, an attribute it will not hold), it is left out with the reason and the write sent again, a few times.
    async fn write(
        &self,
        build: impl Fn(&Fields<'_>) -> Request,
        attributes: &mut Map<String, Value>,
        custom: &mut Map<String, Value>,
        calls: &mut Calls,
        dropped: &mut Vec<Dropped>,
    ) -> Result<Value, IntercomError> {
        let mut refusals = 0;
        loop {
            let fields = Fields { attributes, custom_attributes: custom };
            let error = match self.call(build(&fields), calls).await {
                Err(error) if error.kind() == ErrorKind::Refused && refusals < MAX_REFUSALS => error,
                outcome => return outcome,
            };
            let message = error.message().unwrap_or_default();
            let (path, reason) = if let Some(name) = requests::refused_attribute(message, custom.keys()) {
                custom.remove(&name);
                (format!("custom_attributes.{name}"), "Intercom refused this value")
            } else if requests::refused_owner(message) && attributes.remove("owner_id").is_some() {
                ("traits.owner_id".to_owned(), "Intercom refused this owner")
            } else {
                return Err(error);
            };
            let shown = error.shown_message().unwrap_or_default();
            warn!(path, intercom_message = shown, "Intercom refused one value; sending the rest again without it.");
            dropped.push(Dropped { path, reason });
            refusals += 1;
        }
    }

    /// Creates or updates the contact; `(id, created)`.
    async fn upsert_contact(
        &self,
        upsert: &ContactUpsert,
        calls: &mut Calls,
        dropped: &mut Vec<Dropped>,
    ) -> Result<(String, bool, Option<HashSet<String>>), IntercomError> {
        let mut attributes = upsert.attributes.clone();
        let mut custom = upsert.custom_attributes.clone();
        self.known_attributes("contact", &mut custom, &upsert.dates, calls, dropped).await?;
        self.known_owner(&mut attributes, calls, dropped).await?;
        let key = &upsert.key;
        let dialect = self.dialect;
        let (id, created, answer) = 'resolved: {
            if let Some(id) = self.contacts.get(key) {
                let update = |f: &Fields<'_>| dialect.update_contact(&id, f);
                match self.write(update, &mut attributes, &mut custom, calls, dropped).await {
                    Ok(answer) => break 'resolved (id, false, answer),
                    Err(error) if error.kind().is_gone() => {
                        self.contacts.forget(key);
                        if let Some(target) = self.moved(&id, &error, calls).await? {
                            let update = |f: &Fields<'_>| dialect.update_contact(&target, f);
                            let answer = self.write(update, &mut attributes, &mut custom, calls, dropped).await?;
                            break 'resolved (target, false, answer);
                        }
                    }
                    Err(error) => return Err(error),
                }
            }
            if let ContactKey::Email(email) = key {
                // Several leads may share an address, so creating blindly could add one more: find the existing one
                // first (behind the index's lag: see the README on duplicate leads).
                if let Some(found) = self.find_by_email(email, calls).await? {
                    let update = |f: &Fields<'_>| dialect.update_contact(&found.id, f);
                    let answer = self.write(update, &mut attributes, &mut custom, calls, dropped).await?;
                    break 'resolved (found.id, false, answer);
                }
            }
            let create = |f: &Fields<'_>| match key {
                ContactKey::ExternalId(external_id) => dialect.create_user(external_id, f),
                ContactKey::Email(email) => dialect.create_lead(email, f),
            };
            match self.write(create, &mut attributes, &mut custom, calls, dropped).await {
                Ok(created) => (requests::read_id(&created)?, true, created),
                Err(error) if error.kind() == ErrorKind::Conflict => {
                    let existing = error.message().and_then(conflicting_contact).ok_or(error)?;
                    if existing.archived {
                        self.call(requests::unarchive(&existing.id), calls).await?;
                    }
                    let update = |f: &Fields<'_>| dialect.update_contact(&existing.id, f);
                    let answer = self.write(update, &mut attributes, &mut custom, calls, dropped).await?;
                    (existing.id, false, answer)
                }
                Err(error) => return Err(error),
            }
        };
        self.contacts.put(key.clone(), &id);
        if let (ContactKey::Email(_), Some(Value::String(anonymous_id))) = (key, custom.get(ANONYMOUS_ID_ATTRIBUTE)) {
            self.visitors.put(anonymous_id.to_owned(), &id);
        }
        Ok((id, created, requests::contact_tag_ids(&answer)))
    }

    /// Leaves out an owner who is not an admin of the workspace (Intercom refuses the whole write for one).
    async fn known_owner(
        &self,
        attributes: &mut Map<String, Value>,
        calls: &mut Calls,
        dropped: &mut Vec<Dropped>,
    ) -> Result<(), IntercomError> {
        let Some(owner) = attributes.get("owner_id").map(|o| o.as_str().map(str::to_owned)) else { return Ok(()) };
        let mut workspace = self.workspace.lock().await;
        if workspace.admins.is_none() {
            workspace.admins = Some(match self.call(requests::list_admins(), calls).await {
                Ok(answer) => Some(requests::read_admins(&answer).into_iter().collect()),
                Err(error) if error.is_retryable() => return Err(error),
                Err(error) => {
                    warn!(%error, "The workspace's admins cannot be listed; an owner is checked by Intercom's answer.");
                    None
                }
            });
        }
        let unknown = match (&owner, workspace.admins.as_ref().and_then(Option::as_ref)) {
            (None, _) => true,
            (Some(owner), Some(admins)) => !admins.contains(owner),
            (Some(_), None) => false,
        };
        if unknown {
            attributes.remove("owner_id");
            warn!("An owner_id that is not an admin of the workspace was left out.");
            dropped.push(Dropped { path: "traits.owner_id".into(), reason: "not an admin of the Intercom workspace" });
        }
        Ok(())
    }

    /// The most recently updated contact holding `email`; several matches are logged, and none is created.
    async fn find_by_email(&self, email: &str, calls: &mut Calls) -> Result<Option<FoundContact>, IntercomError> {
        let found = self.call(requests::search_email(email), calls).await?;
        let (total, mut contacts) = requests::read_search(&found);
        if total > 1
            && let Some(first) = contacts.first()
        {
            warn!(matches = total, chosen = %first.id, "Several contacts hold this email; using the most recently updated.");
        }
        Ok((!contacts.is_empty()).then(|| contacts.swap_remove(0)))
    }

    /// Finds whom `request` names: their user (by `find_by_external_id`, no index lag), the contacts holding their
    /// email (by search, behind its lag: the users when no userId is given, the leads when asked). Nothing is deleted
    /// until [`Executor::erase`] is given the answer, so that what names them can be kept first.
    pub async fn erasure_targets(
        &self,
        request: &ErasureRequest,
        retry: RetryPolicy,
        until: Instant,
    ) -> Result<ErasureTargets, Failed> {
        let mut calls = Calls { made: 0, attempts: 0, retry, until, may_create: None };
        match self.find_targets(request, &mut calls).await {
            Ok((targets, notes)) => Ok(ErasureTargets { targets, notes, calls: calls.made }),
            Err(error) => Err(Failed { error, attempts: calls.attempts, calls: calls.made }),
        }
    }

    /// Erases what [`Executor::erasure_targets`] found: one `DELETE /contacts/{id}` each (one gone already is passed
    /// over). What was found and done is in the answer.
    pub async fn erase(&self, found: ErasureTargets, retry: RetryPolicy, until: Instant) -> Result<Erased, Failed> {
        let mut calls = Calls { made: found.calls, attempts: 0, retry, until, may_create: None };
        match self.delete_targets(found, &mut calls).await {
            Ok(mut erased) => {
                erased.calls = calls.made;
                Ok(erased)
            }
            Err(error) => Err(Failed { error, attempts: calls.attempts, calls: calls.made }),
        }
    }

    async fn find_targets(
        &self,
        request: &ErasureRequest,
        calls: &mut Calls,
    ) -> Result<(Vec<Person>, Vec<String>), IntercomError> {
        let mut targets: Vec<Person> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        if let Some(user_id) = &request.user_id {
            match self.call(requests::find_by_external_id(user_id), calls).await {
                Ok(contact) => targets.extend(requests::read_person(&contact)),
                Err(error) if error.kind().is_gone() => notes.push("no user has this userId".into()),
                Err(error) => return Err(error),
            }
        }
        let email = request.email.clone().or_else(|| targets.first().and_then(|user| user.email.clone()));
        let by_email = request.user_id.is_none() || request.leads;
        if let (Some(email), true) = (&email, by_email) {
            let (total, people) = requests::read_people(&self.call(requests::search_email(email), calls).await?);
            let read = people.len();
            for person in people {
                if targets.iter().any(|t| t.id == person.id) {
                    continue;
                }
                let wanted =
                    if person.is_lead { request.leads || request.user_id.is_none() } else { request.user_id.is_none() };
                if wanted {
                    targets.push(person);
                } else if !person.is_lead {
                    notes.push("another user holds the same email and was left (name them by their userId)".into());
                }
            }
            if total as usize > read {
                notes.push(format!("{total} contacts hold the email; only the first page was read: ask again"));
            }
        }
        let users = targets.iter().filter(|t| !t.is_lead).count();
        if request.user_id.is_none() && users > 1 {
            notes.push(format!("{users} users held the email; all were erased"));
        }
        if targets.is_empty() && notes.is_empty() {
            notes.push("no contact holds this email".into());
        }
        Ok((targets, notes))
    }

    async fn delete_targets(&self, found: ErasureTargets, calls: &mut Calls) -> Result<Erased, IntercomError> {
        let ErasureTargets { targets, notes, .. } = found;
        let users = targets.iter().filter(|t| !t.is_lead).count();
        let mut erased = Vec::with_capacity(targets.len());
        for person in &targets {
            match self.call(requests::delete_contact(&person.id), calls).await {
                Ok(_) => erased.push(person.id.clone()),
                // Gone already (merged, or erased by an earlier request).
                Err(error) if error.kind().is_gone() => {}
                Err(error) => return Err(error),
            }
            if let Some(external_id) = &person.external_id {
                self.contacts.forget(&ContactKey::ExternalId(external_id.clone()));
            }
            if let Some(email) = &person.email {
                self.contacts.forget(&ContactKey::Email(email.clone()));
            }
        }
        let leads = targets.iter().filter(|t| t.is_lead).count();
        Ok(Erased { contacts: erased, users, leads, notes, calls: 0 })
    }

    /// The user with `external_id`, read without the search index; a merged one gives the contact it became.
    async fn find_user(&self, external_id: &str, calls: &mut Calls) -> Result<Option<String>, IntercomError> {
        match self.call(requests::find_by_external_id(external_id), calls).await {
            Ok(contact) => Ok(Some(requests::read_id(&contact)?)),
            Err(error) if error.kind() == ErrorKind::Merged => Ok(error.merged_into()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates the contact `key` names with nothing but its key; a 409 names the one that exists.
    async fn create_contact(&self, key: &ContactKey, calls: &mut Calls) -> Result<String, IntercomError> {
        let empty = Map::new();
        let fields = Fields { attributes: &empty, custom_attributes: &empty };
        let request = match key {
            ContactKey::ExternalId(external_id) => self.dialect.create_user(external_id, &fields),
            ContactKey::Email(email) => self.dialect.create_lead(email, &fields),
        };
        let id = match self.call(request, calls).await {
            Ok(created) => requests::read_id(&created)?,
            Err(error) if error.kind() == ErrorKind::Conflict => {
                let existing = error.message().and_then(conflicting_contact).ok_or(error)?;
                if existing.archived {
                    self.call(requests::unarchive(&existing.id), calls).await?;
                }
                existing.id
            }
            Err(error) => return Err(error),
        };
        self.contacts.put(key.clone(), &id);
        Ok(id)
    }

    /// The contact's id: cached, else found (a user by external id, a lead by email), else created when `create`.
    async fn contact_id(
        &self,
        key: &ContactKey,
        create: bool,
        calls: &mut Calls,
    ) -> Result<Option<String>, IntercomError> {
        if let Some(id) = self.contacts.get(key) {
            return Ok(Some(id));
        }
        let found = match key {
            ContactKey::ExternalId(external_id) => self.find_user(external_id, calls).await?,
            ContactKey::Email(email) => self.find_by_email(email, calls).await?.map(|c| c.id),
        };
        match found {
            Some(id) => {
                self.contacts.put(key.clone(), &id);
                Ok(Some(id))
            }
            None if create => self.create_contact(key, calls).await.map(Some),
            None => Ok(None),
        }
    }

    async fn submit_event(&self, event: &EventSubmission, calls: &mut Calls) -> Result<(), IntercomError> {
        let send = |contact: EventContact<'_>| {
            requests::submit_event(contact, &event.event_name, event.created_at, &event.metadata)
        };
        let id = match &event.contact {
            ContactKey::ExternalId(user_id) => match self.call(send(EventContact::UserId(user_id)), calls).await {
                // A track that arrives before its identify: create the user, then send again.
                Err(error) if error.kind() == ErrorKind::NotFound => {
                    self.contacts.forget(&event.contact);
                    self.create_contact(&event.contact, calls).await?
                }
                other => return other.map(drop),
            },
            lead @ ContactKey::Email(_) => {
                let id = self.contact_id(lead, true, calls).await?.expect("created when missing");
                match self.call(send(EventContact::Id(&id)), calls).await {
                    Err(error) if error.kind().is_gone() => {
                        self.contacts.forget(lead);
                        match self.moved(&id, &error, calls).await? {
                            Some(target) => target,
                            None => self.create_contact(lead, calls).await?,
                        }
                    }
                    other => return other.map(drop),
                }
            }
        };
        self.contacts.put(event.contact.clone(), &id);
        self.call(send(EventContact::Id(&id)), calls).await.map(drop)
    }

    async fn upsert_company(
        &self,
        company: &CompanyUpsert,
        calls: &mut Calls,
        dropped: &mut Vec<Dropped>,
    ) -> Result<(String, Option<HashSet<String>>), IntercomError> {
        let mut attributes = company.attributes.clone();
        let mut custom = company.custom_attributes.clone();
        self.known_attributes("company", &mut custom, &company.dates, calls, dropped).await?;
        let build = |f: &Fields<'_>| requests::upsert_company(&company.company_id, f.attributes, f.custom_attributes);
        let answer = self.write(build, &mut attributes, &mut custom, calls, dropped).await?;
        let id = requests::read_id(&answer)?;
        self.companies.put(company.company_id.clone(), &id);
        Ok((id, requests::company_tag_names(&answer)))
    }

    /// Intercom's ids of the tags named, learned once per cold start (`GET /tags`) and made when missing.
    async fn tag_ids(&self, names: &[String], calls: &mut Calls) -> Result<Vec<String>, IntercomError> {
        let mut workspace = self.workspace.lock().await;
        if workspace.tags.is_none() {
            let listed = requests::read_tags(&self.call(requests::list_tags(), calls).await?);
            workspace.tags = Some(listed.into_iter().map(|(id, name)| (name.to_lowercase(), id)).collect());
        }
        let tags = workspace.tags.get_or_insert_with(HashMap::new);
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            let id = match tags.get(&name.to_lowercase()) {
                Some(id) => id.clone(),
                None => {
                    let id = requests::read_id(&self.call(requests::create_tag(name), calls).await?)?;
                    tags.insert(name.to_lowercase(), id.clone());
                    id
                }
            };
            ids.push(id);
        }
        Ok(ids)
    }

    /// The contact carries `names` (and, with `remove_missing`, no other tag); `held`: the tag ids its object showed, when
    /// it showed them all. A tag it carries costs no call.
    async fn tag_contact(
        &self,
        contact: &ContactKey,
        names: &[String],
        remove_missing: bool,
        held: Option<HashSet<String>>,
        calls: &mut Calls,
    ) -> Result<(), IntercomError> {
        // Upserted just before, so known unless the cache let it go meanwhile: then read again, never left untagged.
        let Some(id) = self.contact_id(contact, false, calls).await? else { return Ok(()) };
        let wanted = self.tag_ids(names, calls).await?;
        let held = match held {
            Some(held) => held,
            None => {
                let listed = self.call(requests::list_contact_tags(&id), calls).await?;
                requests::read_tags(&listed).into_iter().map(|(tag, _)| tag).collect()
            }
        };
        for tag in wanted.iter().filter(|tag| !held.contains(*tag)) {
            match self.call(requests::tag_contact(&id, tag), calls).await {
                Ok(_) => {}
                // The tag was deleted in Intercom since it was learned: learn the tags again, once.
                Err(error) if error.is_unknown_tag() => {
                    self.workspace.lock().await.tags = None;
                    let again = self.tag_ids(names, calls).await?;
                    for tag in again.iter().filter(|tag| !held.contains(*tag)) {
                        self.call(requests::tag_contact(&id, tag), calls).await?;
                    }
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        if remove_missing {
            for tag in held.iter().filter(|tag| !wanted.contains(tag)) {
                match self.call(requests::untag_contact(&id, tag), calls).await {
                    Ok(_) => {}
                    Err(error) if error.kind() == ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// The company carries `names` (and, with `remove_missing`, no other tag); `held`: the names its object showed.
    async fn tag_company(
        &self,
        company_id: &str,
        names: &[String],
        remove_missing: bool,
        held: Option<HashSet<String>>,
        calls: &mut Calls,
    ) -> Result<(), IntercomError> {
        let held = match held {
            Some(held) => held,
            None => {
                let found = self.call(requests::find_company(company_id), calls).await?;
                requests::company_tag_names(&found).unwrap_or_default()
            }
        };
        for name in names.iter().filter(|name| !held.contains(&name.to_lowercase())) {
            self.call(requests::tag_company(name, company_id, false), calls).await?;
        }
        if remove_missing {
            let wanted: HashSet<String> = names.iter().map(|name| name.to_lowercase()).collect();
            for name in held.iter().filter(|name| !wanted.contains(*name)) {
                self.call(requests::tag_company(name, company_id, true), calls).await?;
            }
        }
        Ok(())
    }

    /// Intercom's id of the company with `company_id`: cached, looked up, or (when Intercom has none and `create`) created.
    async fn company_id(
        &self,
        company_id: &str,
        create: bool,
        calls: &mut Calls,
    ) -> Result<Option<String>, IntercomError> {
        if let Some(id) = self.companies.get(company_id) {
            return Ok(Some(id));
        }
        let empty = Map::new();
        let request = match create {
            true => requests::upsert_company(company_id, &empty, &empty),
            false => requests::find_company(company_id),
        };
        let id = match self.call(request, calls).await {
            Ok(answer) => requests::read_id(&answer)?,
            Err(error) if !create && error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        self.companies.put(company_id.to_owned(), &id);
        Ok(Some(id))
    }

    async fn attach(&self, contact: &ContactKey, company_id: &str, calls: &mut Calls) -> Result<(), IntercomError> {
        let mut id = self.contact_id(contact, true, calls).await?.expect("created when missing");
        let company = self.company_id(company_id, true, calls).await?.expect("created when missing");
        for retry in [false, true] {
            match self.call(requests::attach_company(&id, &company), calls).await {
                Err(error) if error.kind().is_gone() && !retry && error.code() != Some("company_not_found") => {
                    self.contacts.forget(contact);
                    id = match self.moved(&id, &error, calls).await? {
                        Some(target) => target,
                        None => self.create_contact(contact, calls).await?,
                    };
                    self.contacts.put(contact.clone(), &id);
                }
                other => return other.map(drop),
            }
        }
        Ok(())
    }

    /// Detaching what Intercom does not hold (an unknown contact or company, or one not attached) changes nothing and
    /// creates nothing.
    async fn detach(&self, contact: &ContactKey, company_id: &str, calls: &mut Calls) -> Result<(), IntercomError> {
        let Some(id) = self.contact_id(contact, false, calls).await? else {
            info!("Detach: Intercom holds no such contact.");
            return Ok(());
        };
        let Some(company) = self.company_id(company_id, false, calls).await? else {
            info!("Detach: Intercom holds no such company.");
            return Ok(());
        };
        match self.call(requests::detach_company(&id, &company), calls).await {
            Err(e) if e.kind().is_gone() => info!("Detach: the contact was not attached."),
            other => _ = other?,
        }
        Ok(())
    }

    /// The contact an alias's previous id names: a visitor's lead (by its anonymousId) or a user (by external id).
    async fn previous_contact(&self, previous: &str, calls: &mut Calls) -> Result<Option<FoundContact>, IntercomError> {
        if let Some(id) = self.visitors.get(previous) {
            return Ok(Some(FoundContact { id, is_lead: true }));
        }
        let key = ContactKey::ExternalId(previous.to_owned());
        if let Some(id) = self.contacts.get(&key) {
            return Ok(Some(FoundContact { id, is_lead: false }));
        }
        if let Some(id) = self.find_user(previous, calls).await? {
            return Ok(Some(FoundContact { id, is_lead: false }));
        }
        self.find_visitor(previous, calls).await.map(|id| id.map(|id| FoundContact { id, is_lead: true }))
    }

    /// A visitor's lead by the `anonymous_id` the relay gave it, through search (it lags behind new leads). A workspace
    /// without that attribute may refuse the query: then there is no such lead.
    async fn find_visitor(&self, anonymous_id: &str, calls: &mut Calls) -> Result<Option<String>, IntercomError> {
        match self.call(requests::search_leads_by(ANONYMOUS_ID_ATTRIBUTE, anonymous_id), calls).await {
            Ok(found) => Ok(requests::read_search(&found).1.into_iter().find(|c| c.is_lead).map(|c| c.id)),
            Err(error) if error.kind() == ErrorKind::Refused => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Alias: the previous contact (a visitor's lead) merged into the user, or (when the user does not exist yet) made
    /// that user; `Some(reason)` when there is nothing to do.
    async fn alias(
        &self,
        from: &ContactKey,
        into: &ContactKey,
        calls: &mut Calls,
    ) -> Result<Option<&'static str>, IntercomError> {
        let (ContactKey::ExternalId(previous), ContactKey::ExternalId(user_id)) = (from, into) else {
            return Ok(Some("alias_without_user_id"));
        };
        let merged_into = self.merged_visitors.get(previous);
        if merged_into.is_some() && merged_into == self.contacts.get(into) {
            info!("Alias: the visitor's lead was merged into the user already.");
            return Ok(None);
        }
        let Some(previous_contact) = self.previous_contact(previous, calls).await? else {
            return Ok(Some(ALIAS_PREVIOUS_UNKNOWN));
        };
        let user = match self.contacts.get(into) {
            Some(id) => Some(id),
            None => self.find_user(user_id, calls).await?,
        };
        match (previous_contact, user) {
            (previous, Some(user)) if previous.id == user => {
                self.contacts.put(into.clone(), &user);
                Ok(None)
            }
            (FoundContact { id: lead, is_lead: true }, Some(user)) => {
                self.merge(&lead, &user, calls).await?;
                self.visitors.forget(previous);
                self.merged_visitors.put(previous.clone(), &user);
                self.contacts.put(into.clone(), &user);
                Ok(None)
            }
            (FoundContact { is_lead: false, .. }, Some(_)) => Ok(Some("alias_both_users")),
            (FoundContact { id, is_lead }, None) => {
                match self.call(self.dialect.convert_to_user(&id, user_id), calls).await {
                    Ok(_) => {}
                    // Another contact took the external id meanwhile: merge the lead into it.
                    Err(error) if error.kind() == ErrorKind::Conflict && is_lead => {
                        let user = error.message().and_then(conflicting_contact).ok_or(error)?;
                        self.merge(&id, &user.id, calls).await?;
                        self.visitors.forget(previous);
                        self.contacts.put(into.clone(), &user.id);
                        return Ok(None);
                    }
                    Err(error) => return Err(error),
                }
                if is_lead {
                    self.visitors.forget(previous);
                } else {
                    self.contacts.forget(from);
                }
                self.contacts.put(into.clone(), &id);
                Ok(None)
            }
        }
    }

    /// Merges the lead into the user; a lead already merged (a retry, another forwarder) is done.
    async fn merge(&self, lead: &str, user: &str, calls: &mut Calls) -> Result<(), IntercomError> {
        match self.call(self.dialect.merge(lead, user), calls).await {
            Err(error) if error.kind().is_gone() => {
                info!("Merge: the lead was merged already.");
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// An identify naming the user and the visitor they were: the visitor's lead, when the relay knows one, is merged
    /// into the user. A user met before is asked about only from the warm cache: searching on every identify would
    /// double their cost.
    async fn merge_visitor(
        &self,
        anonymous_id: &str,
        into: &ContactKey,
        created: bool,
        calls: &mut Calls,
    ) -> Result<(), IntercomError> {
        let lead = match self.visitors.get(anonymous_id) {
            Some(lead) => lead,
            // Asked only where a lead can carry the attribute: a search for every new user would cost a call each.
            None if created && self.has_attribute("contact", ANONYMOUS_ID_ATTRIBUTE, calls).await? => {
                match self.find_visitor(anonymous_id, calls).await? {
                    Some(lead) => lead,
                    None => return Ok(()),
                }
            }
            None => return Ok(()),
        };
        let Some(user) = self.contacts.get(into) else { return Ok(()) };
        self.merge(&lead, &user, calls).await?;
        self.visitors.forget(anonymous_id);
        self.merged_visitors.put(anonymous_id.to_owned(), &user);
        Ok(())
    }

    /// Learns a model's data attributes, once per cold start.
    async fn load_model<'w>(
        &self,
        workspace: &'w mut Workspace,
        model: &'static str,
        calls: &mut Calls,
    ) -> Result<&'w mut Model, IntercomError> {
        if !workspace.models.contains_key(model) {
            let list = self.call(requests::list_data_attributes(model), calls).await?;
            workspace.models.insert(model, Model::from_list(requests::read_data_attributes(&list)));
        }
        Ok(workspace.models.get_mut(model).expect("inserted above"))
    }

    async fn has_attribute(&self, model: &'static str, name: &str, calls: &mut Calls) -> Result<bool, IntercomError> {
        let mut workspace = self.workspace.lock().await;
        let model = self.load_model(&mut workspace, model, calls).await?;
        Ok(model.custom.get(name).is_some_and(|a| !a.archived))
    }

    /// Keeps only the custom attributes the workspace can hold, in the types it holds them, creating missing ones when
    /// allowed; each value left out is in `dropped` with its reason.
    async fn known_attributes(
        &self,
        model: &'static str,
        attributes: &mut Map<String, Value>,
        dates: &[String],
        calls: &mut Calls,
        dropped: &mut Vec<Dropped>,
    ) -> Result<(), IntercomError> {
        if attributes.is_empty() {
            return Ok(());
        }
        let mut workspace = self.workspace.lock().await;
        self.load_model(&mut workspace, model, calls).await?;
        let names: Vec<String> = attributes.keys().cloned().collect();
        for name in names {
            let is_date = dates.contains(&name);
            let this = workspace.models.get(model).expect("loaded above");
            let mut verdict = judge(&name, &attributes[&name], is_date, this, self.create_attributes);
            if matches!(verdict, Verdict::Create(_))
                && calls.may_create.as_ref().is_some_and(|names| !names.contains(&name))
            {
                verdict = Verdict::Drop("a browser key creates no attribute (settings: attributes.browser_create)");
            }
            if let Verdict::Create(_) = verdict {
                // A name the other model uses is refused ("You already have 'X' in your company data").
                let other = self.load_model(&mut workspace, other_model(model), calls).await?;
                if other.custom.contains_key(&name) {
                    verdict = Verdict::Drop("Intercom holds this name as an attribute of the other model");
                }
            }
            match verdict {
                Verdict::Send(value) => _ = attributes.insert(name, value),
                Verdict::Drop(reason) => {
                    attributes.remove(&name);
                    dropped.push(Dropped { path: format!("custom_attributes.{name}"), reason });
                }
                Verdict::Create(data_type) => {
                    let created = self.call(requests::create_data_attribute(&name, model, data_type), calls).await;
                    let this = workspace.models.get_mut(model).expect("loaded above");
                    let refused = match created {
                        Ok(_) => false,
                        Err(e) if e.kind() == ErrorKind::Refused => {
                            let message = e.message().unwrap_or_default();
                            let refused = requests::attribute_refusal(message, model) == AttributeRefusal::Refused;
                            if refused {
                                let shown = e.shown_message().unwrap_or_default();
                                warn!(model, attribute = %name, intercom_message = shown, "Intercom refused to create the attribute; its values are left out.");
                            }
                            refused
                        }
                        Err(e) => return Err(e),
                    };
                    if refused {
                        this.refused.insert(name.clone());
                        attributes.remove(&name);
                        dropped.push(Dropped {
                            path: format!("custom_attributes.{name}"),
                            reason: "Intercom refused to create this attribute",
                        });
                    } else {
                        let attribute = DataAttribute {
                            name: name.clone(),
                            data_type: data_type.to_owned(),
                            custom: true,
                            archived: false,
                            options: Vec::new(),
                        };
                        this.custom.insert(name, attribute);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The one line an operator reads when the breaker changes state: what is wrong, what to do, and that nothing is lost.
fn log_transition(transition: &Transition, policy: BreakerPolicy) {
    match transition {
        Transition::Opened { failure, kind, open_for } => error!(
            circuit = "open",
            failure,
            probe_every_s = open_for.as_secs(),
            probe_at_most_every_s = policy.open_max.as_secs(),
            "Intercom is failing every call, so calls are held back: {}. Nothing is dead-lettered for this: events wait \
             in the queue and go on by themselves once a probe call succeeds.",
            advice(*kind)
        ),
        Transition::StillFailing { failure, kind, open_for } => warn!(
            circuit = "open",
            failure,
            next_probe_s = open_for.as_secs(),
            "Intercom still fails: {}. Events keep waiting in the queue.",
            advice(*kind)
        ),
        Transition::Closed { was_open_for } => info!(
            circuit = "closed",
            was_open_s = was_open_for.as_secs(),
            "Intercom answers again; the events that waited go on."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(attributes: Value) -> Model {
        Model::from_list(requests::read_data_attributes(&json!({"data": attributes})))
    }

    #[test]
    fn a_standard_attributes_name_or_an_archived_attribute_is_left_out() {
        let model = model(json!([
            {"name": "Name", "data_type": "string", "custom": false},
            {"name": "old", "data_type": "string", "custom": true, "archived": true},
        ]));
        assert!(matches!(judge("name", &json!("x"), false, &model, true), Verdict::Drop(_)));
        assert!(matches!(judge("old", &json!("x"), false, &model, true), Verdict::Drop(_)));
    }

    #[test]
    fn a_value_outside_a_list_attributes_options_is_left_out_and_one_inside_is_sent() {
        let model = model(json!([
            {"name": "tier", "data_type": "string", "custom": true, "options": [{"value": "gold"}]},
        ]));
        assert_eq!(judge("tier", &json!("gold"), false, &model, true), Verdict::Send(json!("gold")));
        assert!(matches!(judge("tier", &json!("bronze"), false, &model, true), Verdict::Drop(_)));
    }

    #[test]
    fn values_are_sent_in_the_type_the_attribute_holds_or_left_out() {
        let model = model(json!([
            {"name": "seats", "data_type": "integer", "custom": true},
            {"name": "label", "data_type": "string", "custom": true},
            {"name": "trial_at", "data_type": "date", "custom": true},
            {"name": "vip", "data_type": "boolean", "custom": true},
        ]));
        assert_eq!(judge("seats", &json!("12"), false, &model, true), Verdict::Send(json!(12)));
        assert_eq!(judge("seats", &json!(12.0), false, &model, true), Verdict::Send(json!(12)));
        assert!(matches!(judge("seats", &json!("many"), false, &model, true), Verdict::Drop(_)));
        assert_eq!(judge("label", &json!(7), false, &model, true), Verdict::Send(json!("7")));
        assert_eq!(
            judge("trial_at", &json!("2024-05-01T12:00:00Z"), false, &model, true),
            Verdict::Send(json!(1714564800))
        );
        assert_eq!(judge("vip", &json!("true"), false, &model, true), Verdict::Send(json!(true)));
        assert_eq!(judge("vip", &Value::Null, false, &model, true), Verdict::Send(Value::Null), "null clears");
    }

    #[test]
    fn new_attributes_take_their_type_from_the_value_and_nulls_create_nothing() {
        let empty = Model::default();
        assert_eq!(judge("trial_ends", &json!(1714564800), true, &empty, true), Verdict::Create("date"));
        assert_eq!(judge("renewed_at", &json!(1714564800), false, &empty, true), Verdict::Create("date"));
        assert_eq!(judge("seats", &json!(3), false, &empty, true), Verdict::Create("integer"));
        assert_eq!(judge("ratio", &json!(0.5), false, &empty, true), Verdict::Create("float"));
        assert_eq!(judge("vip", &json!(true), false, &empty, true), Verdict::Create("boolean"));
        assert_eq!(judge("plan", &json!("pro"), false, &empty, true), Verdict::Create("string"));
        assert!(matches!(judge("plan", &Value::Null, false, &empty, true), Verdict::Drop(_)));
        assert!(matches!(judge("plan", &json!("pro"), false, &empty, false), Verdict::Drop(_)));
    }

    #[test]
    fn the_workspaces_250th_custom_attribute_is_its_last() {
        let attributes: Vec<Value> =
            (0..250).map(|i| json!({"name": format!("a{i}"), "data_type": "string", "custom": true})).collect();
        let full = model(Value::Array(attributes));
        assert!(matches!(judge("one_more", &json!("x"), false, &full, true), Verdict::Drop(_)));
        assert_eq!(judge("a7", &json!("x"), false, &full, true), Verdict::Send(json!("x")));
    }
}
