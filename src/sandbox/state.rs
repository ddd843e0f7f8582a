//! The sandbox's Intercom, as pure state: one request in, one answer out, following the contract in shared/intercom.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::intercom::API_VERSIONS;

/// How the sandbox behaves beyond the contract's defaults.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// The access token it accepts as `Authorization: Bearer …`.
    pub token: String,
    /// Calls allowed per 10-second window before it answers 429.
    pub rate_limit: u64,
    /// Seconds a new contact stays invisible to search (Intercom's search index lags).
    pub search_lag: u64,
    /// Failures injected into API calls, for tests of what the forwarder does when Intercom misbehaves.
    pub faults: Faults,
}

impl Default for SandboxOptions {
    fn default() -> SandboxOptions {
        SandboxOptions { token: "sandbox-token".into(), rate_limit: 1666, search_lag: 0, faults: Faults::default() }
    }
}

/// Shares (0.0 to 1.0) of API calls that fail, drawn from a seeded generator so a run can be repeated.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub seed: u64,
    /// Answered 500 or 503 (alternately) without touching the state.
    pub server_errors: f64,
    /// Answered 429 `rate_limit_exceeded` without touching the state, the window resetting a second later.
    pub rate_limited: f64,
    /// Carried out, but answered only after `slow_by`: beyond a client's timeout the caller cannot know it happened.
    pub slow: f64,
    pub slow_by: Duration,
    /// When set, only calls whose path or body holds this text can fail (e.g. one user's external_id).
    pub only_matching: Option<String>,
}

/// Intercom allows at most this many active event names per workspace.
pub const MAX_EVENT_NAMES: usize = 120;

/// One request, as the HTTP adapter read it.
#[derive(Clone, Debug)]
pub struct SandboxRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub version: Option<String>,
    pub body: Option<Value>,
    /// The body was sent but is not JSON.
    pub malformed: bool,
}

/// One answer.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
    /// How long the HTTP adapter waits before answering (an injected slow answer).
    pub delay: Duration,
}

/// A contact as Intercom holds it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Contact {
    pub id: String,
    pub role: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub fields: Map<String, Value>,
    pub custom_attributes: Map<String, Value>,
    pub companies: Vec<String>,
    pub archived: bool,
    pub created_at: u64,
    pub updated_at: u64,
    /// Orders updates within one second, so "most recently updated" is exact.
    #[serde(skip)]
    updated_seq: u64,
}

/// A company as Intercom holds it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Company {
    pub id: String,
    pub company_id: String,
    pub fields: Map<String, Value>,
    pub custom_attributes: Map<String, Value>,
}

/// A data event as Intercom holds it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DataEvent {
    pub contact_id: String,
    pub event_name: String,
    pub created_at: i64,
    pub metadata: Map<String, Value>,
}

/// Everything the sandbox holds; `GET /_sandbox/state` shows it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SandboxState {
    pub contacts: BTreeMap<String, Contact>,
    pub companies: BTreeMap<String, Company>,
    pub events: Vec<DataEvent>,
    /// Custom data attributes per model (`contact`, `company`): name → data type.
    pub data_attributes: BTreeMap<String, BTreeMap<String, String>>,
    /// Events Intercom dropped as duplicates of (contact, name, created_at).
    pub duplicate_events: u64,
    /// Injected failures answered so far: (status or "slow", count).
    pub faults_injected: BTreeMap<String, u64>,
    /// The names and (contact, name, created_at) keys of `events`, so a submission costs the same at the millionth
    /// event as at the first (a soak sends 100,000).
    #[serde(skip)]
    event_names: BTreeSet<String>,
    #[serde(skip)]
    event_keys: HashSet<(String, String, i64)>,
    #[serde(skip)]
    next_id: u64,
    /// Counts contact writes, ordering updates made within one second.
    #[serde(skip)]
    writes: u64,
    #[serde(skip)]
    window: (u64, u64),
    #[serde(skip)]
    rng: u64,
}

const CONTACT_FIELDS: [&str; 8] =
    ["phone", "name", "avatar", "signed_up_at", "last_seen_at", "owner_id", "unsubscribed_from_emails", "email"];
const COMPANY_FIELDS: [&str; 7] = ["name", "plan", "size", "website", "industry", "monthly_spend", "remote_created_at"];

enum Fault {
    ServerError(u16),
    RateLimited,
    Slow,
}

fn error(status: u16, code: &str, message: &str) -> SandboxResponse {
    let body = json!({"type": "error.list", "request_id": format!("sandbox-{status}"), "errors": [{"code": code, "message": message}]});
    SandboxResponse { status, headers: Vec::new(), body: Some(body), delay: Duration::ZERO }
}

fn ok(status: u16, body: Value) -> SandboxResponse {
    SandboxResponse { status, headers: Vec::new(), body: Some(body), delay: Duration::ZERO }
}

impl SandboxState {
    /// What it holds, counted: `14 contacts (3 leads), 3 companies, 30 events, 12 custom attributes`.
    pub fn summary(&self) -> String {
        let leads = self.contacts.values().filter(|c| c.role == "lead").count();
        format!(
            "{} contacts ({leads} leads), {} companies, {} events, {} custom attributes",
            self.contacts.len(),
            self.companies.len(),
            self.events.len(),
            self.data_attributes.values().map(BTreeMap::len).sum::<usize>()
        )
    }
}

impl SandboxState {
    /// Answers `request` at `now` (Unix seconds).
    pub fn handle(&mut self, options: &SandboxOptions, request: &SandboxRequest, now: u64) -> SandboxResponse {
        let bearer = request.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "));
        if bearer != Some(options.token.as_str()) {
            return error(401, "unauthorized", "Access Token Invalid");
        }
        if let Some(version) = request.version.as_deref().filter(|v| !API_VERSIONS.contains(v)) {
            return error(400, "intercom_version_invalid", &format!("Requested version {version} is not valid"));
        }
        if request.malformed {
            return error(400, "parameter_invalid", "Invalid JSON in the request body");
        }
        let window_start = now - now % 10;
        if self.window.0 != window_start {
            self.window = (window_start, 0);
        }
        self.window.1 += 1;
        let mut remaining = options.rate_limit.saturating_sub(self.window.1);
        let mut reset = window_start + 10;
        let mut response = if self.window.1 > options.rate_limit {
            error(429, "rate_limit_exceeded", "Exceeded rate limit")
        } else {
            let faults = &options.faults;
            let eligible = faults.only_matching.as_deref().is_none_or(|text| {
                request.path.contains(text) || request.body.as_ref().is_some_and(|b| b.to_string().contains(text))
            });
            match self.fault(faults).filter(|_| eligible) {
                Some(Fault::ServerError(status)) => {
                    self.count_fault(&status.to_string());
                    error(status, "service_unavailable", "Injected failure: the sandbox pretends to be down")
                }
                Some(Fault::RateLimited) => {
                    self.count_fault("429");
                    (remaining, reset) = (0, now + 1);
                    error(429, "rate_limit_exceeded", "Injected failure: rate limit exceeded")
                }
                Some(Fault::Slow) => {
                    self.count_fault("slow");
                    SandboxResponse { delay: options.faults.slow_by, ..self.route(options, request, now) }
                }
                None => self.route(options, request, now),
            }
        };
        response.headers.push(("x-ratelimit-limit", options.rate_limit.to_string()));
        response.headers.push(("x-ratelimit-remaining", remaining.to_string()));
        response.headers.push(("x-ratelimit-reset", reset.to_string()));
        response
    }

    /// Draws the next injected failure, if any (xorshift64*, seeded once from `faults.seed`).
    fn fault(&mut self, faults: &Faults) -> Option<Fault> {
        if faults.server_errors + faults.rate_limited + faults.slow <= 0.0 {
            return None;
        }
        if self.rng == 0 {
            self.rng = faults.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let draw = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        if draw < faults.server_errors {
            Some(Fault::ServerError(if self.rng & (1 << 20) == 0 { 500 } else { 503 }))
        } else if draw < faults.server_errors + faults.rate_limited {
            Some(Fault::RateLimited)
        } else if draw < faults.server_errors + faults.rate_limited + faults.slow {
            Some(Fault::Slow)
        } else {
            None
        }
    }

    /// Starts the fault generator again from its seed (after the faults changed).
    pub fn reseed(&mut self) {
        self.rng = 0;
    }

    fn count_fault(&mut self, kind: &str) {
        *self.faults_injected.entry(kind.to_owned()).or_default() += 1;
    }

    fn route(&mut self, options: &SandboxOptions, request: &SandboxRequest, now: u64) -> SandboxResponse {
        let empty = Value::Object(Map::new());
        let body = request.body.as_ref().unwrap_or(&empty);
        let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (request.method.as_str(), segments.as_slice()) {
            ("POST", ["contacts"]) => self.create_contact(body, now),
            ("POST", ["contacts", "search"]) => self.search_contacts(options, body, now),
            ("POST", ["contacts", "merge"]) => self.merge(body),
            ("GET", ["contacts", id]) => self.contact_answer(id),
            ("PUT", ["contacts", id]) => self.update_contact(id, body, now),
            ("POST", ["contacts", id, "archive"]) => self.set_archived(id, true),
            ("POST", ["contacts", id, "unarchive"]) => self.set_archived(id, false),
            ("POST", ["contacts", id, "companies"]) => self.attach(id, body),
            ("DELETE", ["contacts", id, "companies", company]) => self.detach(id, company),
            ("POST", ["events"]) => self.submit_event(body),
            ("POST", ["companies"]) => self.upsert_company(body),
            ("GET", ["companies"]) => self.find_company(query),
            ("GET", ["data_attributes"]) => self.list_attributes(query),
            ("POST", ["data_attributes"]) => self.create_attribute(body),
            _ => error(404, "not_found", &format!("No route for {} {path}", request.method)),
        }
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:024x}", 0x6650_0000_0000_0000_0000_0000u128 + u128::from(self.next_id))
    }

    fn unknown_attribute(&self, model: &str, attributes: Option<&Value>) -> Option<SandboxResponse> {
        let known = self.data_attributes.get(model);
        let attributes = attributes?.as_object()?;
        let unknown = attributes.keys().find(|name| known.is_none_or(|k| !k.contains_key(*name)))?;
        Some(error(400, "parameter_invalid", &format!("Custom attribute '{unknown}' does not exist")))
    }

    /// The contact a create would conflict with: the same external_id, or (for users) the same email among users.
    /// Leads may share an email, as in Intercom: several leads can hold one address.
    fn find(&self, external_id: Option<&str>, email: Option<&str>, role: &str) -> Option<&Contact> {
        self.contacts.values().find(|c| {
            external_id.is_some_and(|id| c.external_id.as_deref() == Some(id))
                || (external_id.is_none()
                    && role == "user"
                    && email.is_some()
                    && c.email.as_deref() == email
                    && c.role == role)
        })
    }

    fn touch(&mut self, id: &str, now: u64) {
        self.writes += 1;
        let seq = self.writes;
        if let Some(contact) = self.contacts.get_mut(id) {
            (contact.updated_at, contact.updated_seq) = (now, seq);
        }
    }

    fn create_contact(&mut self, body: &Value, now: u64) -> SandboxResponse {
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        let (role, external_id, email) =
            (text("role").unwrap_or_else(|| "user".into()), text("external_id"), text("email"));
        if external_id.is_none() && email.is_none() && role == "user" {
            return error(400, "parameter_not_found", "Either external_id or email must be provided for users");
        }
        if let Some(existing) = self.find(external_id.as_deref(), email.as_deref(), &role) {
            let prefix = if existing.archived { "An archived contact" } else { "A contact" };
            return error(
                409,
                "conflict",
                &format!("{prefix} matching those details already exists with id={}", existing.id),
            );
        }
        if let Some(refused) = self.unknown_attribute("contact", body.get("custom_attributes")) {
            return refused;
        }
        let id = self.new_id();
        let contact = Contact {
            id: id.clone(),
            role,
            external_id,
            email,
            fields: pick(body, &CONTACT_FIELDS),
            custom_attributes: body.get("custom_attributes").and_then(Value::as_object).cloned().unwrap_or_default(),
            companies: Vec::new(),
            archived: false,
            created_at: now,
            updated_at: now,
            updated_seq: 0,
        };
        self.contacts.insert(id.clone(), contact);
        self.touch(&id, now);
        self.contact_answer(&id)
    }

    fn update_contact(&mut self, id: &str, body: &Value, now: u64) -> SandboxResponse {
        if let Some(refused) = self.unknown_attribute("contact", body.get("custom_attributes")) {
            return refused;
        }
        let Some(contact) = self.contacts.get_mut(id).filter(|c| !c.archived) else {
            return error(404, "not_found", "User Not Found");
        };
        contact.fields.extend(pick(body, &CONTACT_FIELDS));
        if let Some(email) = body.get("email").and_then(Value::as_str) {
            contact.email = Some(email.to_owned());
        }
        if let Some(external_id) = body.get("external_id").and_then(Value::as_str) {
            contact.external_id = Some(external_id.to_owned());
        }
        if let Some(role) = body.get("role").and_then(Value::as_str) {
            contact.role = role.to_owned();
        }
        if let Some(custom) = body.get("custom_attributes").and_then(Value::as_object) {
            contact.custom_attributes.extend(custom.clone());
        }
        self.touch(id, now);
        self.contact_answer(id)
    }

    fn contact_answer(&self, id: &str) -> SandboxResponse {
        match self.contacts.get(id) {
            Some(c) => {
                let mut answer = json!({"type": "contact", "id": c.id, "role": c.role, "external_id": c.external_id,
                    "email": c.email, "custom_attributes": c.custom_attributes, "created_at": c.created_at,
                    "updated_at": c.updated_at});
                for (key, value) in &c.fields {
                    answer[key] = value.clone();
                }
                ok(200, answer)
            }
            None => error(404, "not_found", "User Not Found"),
        }
    }

    fn set_archived(&mut self, id: &str, archived: bool) -> SandboxResponse {
        match self.contacts.get_mut(id) {
            Some(contact) => {
                contact.archived = archived;
                ok(200, json!({"id": id, "object": "contact", "archived": archived}))
            }
            None => error(404, "not_found", "User Not Found"),
        }
    }

    fn search_contacts(&self, options: &SandboxOptions, body: &Value, now: u64) -> SandboxResponse {
        let query = &body["query"];
        let filters: Vec<&Value> = match query.get("value") {
            Some(Value::Array(list)) if query.get("field").is_none() => list.iter().collect(),
            _ => vec![query],
        };
        let matches = |contact: &Contact| {
            filters.iter().all(|filter| {
                let wanted = &filter["value"];
                match filter["field"].as_str() {
                    Some("external_id") => contact.external_id.as_deref() == wanted.as_str(),
                    Some("email") => contact.email.as_deref() == wanted.as_str(),
                    Some("role") => wanted.as_str() == Some(contact.role.as_str()),
                    Some("id") => wanted.as_str() == Some(contact.id.as_str()),
                    _ => false,
                }
            })
        };
        // The index lags: a contact created less than `search_lag` seconds ago is not found yet.
        let mut found: Vec<&Contact> = self
            .contacts
            .values()
            .filter(|c| !c.archived && now >= c.created_at + options.search_lag && matches(c))
            .collect();
        // Intercom sorts by the field asked for, descending unless told otherwise; by created_at by default here.
        // Contacts are held in the order they were created, so a stable sort breaks created_at ties correctly.
        let sort = &body["sort"];
        match sort["field"].as_str() {
            Some("updated_at") => found.sort_by_key(|c| (c.updated_at, c.updated_seq)),
            _ => found.sort_by_key(|c| c.created_at),
        }
        if sort["order"].as_str() != Some("ascending") {
            found.reverse();
        }
        let data: Vec<Value> = found.into_iter().filter_map(|c| self.contact_answer(&c.id).body).collect();
        ok(200, json!({"type": "list", "data": data, "total_count": data.len()}))
    }

    fn merge(&mut self, body: &Value) -> SandboxResponse {
        let (Some(from), Some(into)) = (body["from"].as_str(), body["into"].as_str()) else {
            return error(400, "parameter_not_found", "from and into are required");
        };
        let (Some(lead), Some(user)) = (self.contacts.get(from).cloned(), self.contacts.get(into)) else {
            return error(404, "not_found", "User Not Found");
        };
        if lead.role != "lead" || user.role != "user" {
            return error(400, "parameter_invalid", "Only a lead can be merged into a user");
        }
        self.contacts.remove(from);
        for event in self.events.iter_mut().filter(|e| e.contact_id == from) {
            event.contact_id = into.to_owned();
        }
        self.event_keys =
            self.events.iter().map(|e| (e.contact_id.clone(), e.event_name.clone(), e.created_at)).collect();
        let user = self.contacts.get_mut(into).expect("checked above");
        for (key, value) in lead.custom_attributes {
            user.custom_attributes.entry(key).or_insert(value);
        }
        self.contact_answer(into)
    }

    fn submit_event(&mut self, body: &Value) -> SandboxResponse {
        let Some(event_name) = body["event_name"].as_str().filter(|n| !n.is_empty()) else {
            return error(400, "parameter_not_found", "event_name is required");
        };
        let Some(created_at) = body["created_at"].as_i64() else {
            return error(400, "parameter_not_found", "created_at is required");
        };
        let contact = if let Some(id) = body["id"].as_str() {
            self.contacts.get(id)
        } else if let Some(user_id) = body["user_id"].as_str() {
            self.contacts.values().find(|c| c.external_id.as_deref() == Some(user_id))
        } else if let Some(email) = body["email"].as_str() {
            self.contacts.values().find(|c| c.email.as_deref() == Some(email) && c.role == "user")
        } else {
            None
        };
        let Some(contact_id) = contact.filter(|c| !c.archived).map(|c| c.id.clone()) else {
            return error(404, "not_found", "User Not Found");
        };
        // Intercom names events case-insensitively and keeps at most 10 metadata keys, ignoring the rest.
        let event_name = event_name.to_lowercase().replace(['.', '$'], "-");
        let metadata: Map<String, Value> = body["metadata"]
            .as_object()
            .map(|m| m.iter().take(10).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        if self.event_names.len() >= MAX_EVENT_NAMES && !self.event_names.contains(&event_name) {
            let message =
                format!("This workspace already has {MAX_EVENT_NAMES} active event names; archive some first");
            return error(400, "event_name_limit_reached", &message);
        }
        if self.event_keys.insert((contact_id.clone(), event_name.clone(), created_at)) {
            self.event_names.insert(event_name.clone());
            self.events.push(DataEvent { contact_id, event_name, created_at, metadata });
        } else {
            self.duplicate_events += 1;
        }
        SandboxResponse { status: 202, headers: Vec::new(), body: None, delay: Duration::ZERO }
    }

    fn upsert_company(&mut self, body: &Value) -> SandboxResponse {
        let Some(company_id) = body["company_id"].as_str().map(str::to_owned) else {
            return error(400, "parameter_not_found", "company_id is required");
        };
        if let Some(refused) = self.unknown_attribute("company", body.get("custom_attributes")) {
            return refused;
        }
        let existing = self.companies.values().find(|c| c.company_id == company_id).map(|c| c.id.clone());
        let id = existing.unwrap_or_else(|| self.new_id());
        let company = self.companies.entry(id.clone()).or_insert_with(|| Company {
            id: id.clone(),
            company_id: company_id.clone(),
            fields: Map::new(),
            custom_attributes: Map::new(),
        });
        company.fields.extend(pick(body, &COMPANY_FIELDS));
        if let Some(custom) = body.get("custom_attributes").and_then(Value::as_object) {
            company.custom_attributes.extend(custom.clone());
        }
        ok(200, company_answer(company))
    }

    fn find_company(&self, query: &str) -> SandboxResponse {
        let wanted = query.split('&').find_map(|pair| pair.strip_prefix("company_id="));
        match wanted.and_then(|id| self.companies.values().find(|c| c.company_id == id)) {
            Some(company) => ok(200, company_answer(company)),
            None => error(404, "company_not_found", "Company Not Found"),
        }
    }

    fn attach(&mut self, contact_id: &str, body: &Value) -> SandboxResponse {
        let Some(company) = body["id"].as_str().and_then(|id| self.companies.get(id)).cloned() else {
            return error(404, "company_not_found", "Company Not Found");
        };
        let Some(contact) = self.contacts.get_mut(contact_id) else {
            return error(404, "not_found", "User Not Found");
        };
        if !contact.companies.contains(&company.id) {
            contact.companies.push(company.id.clone());
        }
        ok(200, company_answer(&company))
    }

    fn detach(&mut self, contact_id: &str, company_id: &str) -> SandboxResponse {
        let Some(contact) = self.contacts.get_mut(contact_id) else {
            return error(404, "not_found", "User Not Found");
        };
        let before = contact.companies.len();
        contact.companies.retain(|c| c != company_id);
        match (before != contact.companies.len(), self.companies.get(company_id)) {
            (true, Some(company)) => ok(200, company_answer(company)),
            _ => error(404, "company_not_found", "Company Not Found"),
        }
    }

    fn list_attributes(&self, query: &str) -> SandboxResponse {
        let model = query.split('&').find_map(|pair| pair.strip_prefix("model=")).unwrap_or("contact");
        let data: Vec<Value> = self
            .data_attributes
            .get(model)
            .into_iter()
            .flatten()
            .map(|(name, data_type)| json!({"type": "data_attribute", "name": name, "model": model, "data_type": data_type, "custom": true}))
            .collect();
        ok(200, json!({"type": "list", "data": data}))
    }

    fn create_attribute(&mut self, body: &Value) -> SandboxResponse {
        let (Some(name), Some(model), Some(data_type)) =
            (body["name"].as_str(), body["model"].as_str(), body["data_type"].as_str())
        else {
            return error(400, "parameter_not_found", "name, model and data_type are required");
        };
        if !matches!(model, "contact" | "company")
            || !matches!(data_type, "string" | "integer" | "float" | "boolean" | "date")
        {
            return error(400, "parameter_invalid", "model or data_type is not valid");
        }
        let attributes = self.data_attributes.entry(model.to_owned()).or_default();
        if attributes.contains_key(name) {
            return error(400, "parameter_invalid", "You already have 'data attribute' with that name");
        }
        attributes.insert(name.to_owned(), data_type.to_owned());
        ok(200, json!({"type": "data_attribute", "name": name, "model": model, "data_type": data_type, "custom": true}))
    }
}

fn company_answer(company: &Company) -> Value {
    let mut answer = json!({"type": "company", "id": company.id, "company_id": company.company_id,
        "custom_attributes": company.custom_attributes});
    for (key, value) in &company.fields {
        answer[key] = value.clone();
    }
    answer
}

fn pick(body: &Value, fields: &[&str]) -> Map<String, Value> {
    fields.iter().filter_map(|f| body.get(*f).map(|v| ((*f).to_owned(), v.clone()))).collect()
}
