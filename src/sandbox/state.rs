//! The sandbox's Intercom, as pure state: one request in, one answer out, following the contract in shared/intercom
//! (each rule and its source: RULES.md beside this file).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::attributes::{HeldAttribute, SeedAttribute};
use intercom_relay_lambda::intercom::API_VERSIONS;

/// How the sandbox behaves beyond the contract's defaults.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// The access token it accepts as `Authorization: Bearer …`.
    pub token: String,
    /// Calls allowed per 10-second window before it answers 429.
    pub rate_limit: u64,
    /// Seconds a new contact stays invisible to search (Intercom's search index lags by minutes; 5 by default, so a
    /// test that relies on search to find what was just written fails).
    pub search_lag: u64,
    /// Failures injected into API calls, for tests of what the forwarder does when Intercom misbehaves.
    pub faults: Faults,
    /// The ids of the workspace's admins (`GET /admins`); a contact's `owner_id` must be one of them.
    pub admins: Vec<String>,
    /// Custom data attributes held from the start (archived ones, list ones), without the checks a create makes.
    pub seed_attributes: Vec<SeedAttribute>,
}

impl Default for SandboxOptions {
    fn default() -> SandboxOptions {
        SandboxOptions {
            token: "sandbox-token".into(),
            rate_limit: 1666,
            search_lag: 5,
            faults: Faults::default(),
            // The admin ids of the spec's own examples (2.16, lines 901 and 5321).
            admins: vec!["991266252".into(), "991267466".into()],
            seed_attributes: Vec::new(),
        }
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
    /// A workspace-wide failure answering every API call alike, whatever the shares above and `only_matching` say;
    /// none by default. Counted in `SandboxState::faults_injected` under the status it answers.
    pub outage: Option<Outage>,
}

/// Intercom failing every call for a stretch (issue 15), the state untouched; `SandboxServer::set_outage` starts and
/// ends one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// Intercom is down: 503 `service_unavailable`, without rate-limit headers.
    Down,
    /// The token was revoked: 401 `unauthorized` "Access Token Invalid", the answer to a wrong token.
    Unauthorized,
    /// A 429 storm: 429 `rate_limit_exceeded` with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` `reset_in` ahead
    /// (whole seconds), so a client that waits for the reset waits that long.
    RateLimited { reset_in: Duration },
}

/// One request, as the HTTP adapter read it.
#[derive(Clone, Debug)]
pub struct SandboxRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) authorization: Option<String>,
    /// The `Intercom-Version` header; none means the default, 2.16.
    pub(crate) version: Option<String>,
    pub(crate) body: Option<Value>,
    /// The body was sent but is not JSON.
    pub(crate) malformed: bool,
}

impl SandboxRequest {
    /// Whether 2.16's rules apply (the default version) rather than 2.15's and older.
    pub(super) fn is_2_16(&self) -> bool {
        self.version.as_deref().is_none_or(|v| v == "2.16")
    }
}

/// One answer.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Value>,
    /// How long the HTTP adapter waits before answering (an injected slow answer).
    pub(crate) delay: Duration,
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
    /// The tags it carries: tag id → when it was applied (Unix seconds); `SandboxState::contact_tag_names` names them.
    pub tags: BTreeMap<String, u64>,
    pub(crate) archived: bool,
    pub(crate) created_at: u64,
    pub(crate) updated_at: u64,
    /// Orders updates within one second, so "most recently updated" is exact.
    #[serde(skip)]
    pub(super) updated_seq: u64,
}

/// A company as Intercom holds it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Company {
    pub id: String,
    pub company_id: String,
    pub fields: Map<String, Value>,
    pub custom_attributes: Map<String, Value>,
    /// The ids of the tags it carries; `SandboxState::company_tag_names` names them.
    pub(crate) tags: BTreeSet<String>,
}

/// A tag of the workspace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tag {
    pub id: String,
    /// As first written: Intercom matches names case-insensitively (2.16, line 28705).
    pub name: String,
}

/// What the sandbox remembers of a contact `DELETE /contacts/{id}` removed, so a test can tell it was erased. Intercom
/// keeps none of it: the contact, its events and its tags are gone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeletedContact {
    pub(crate) role: String,
    pub(crate) external_id: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) deleted_at: u64,
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
    /// Custom data attributes per model (`contact`, `company`), by name.
    pub data_attributes: BTreeMap<String, BTreeMap<String, HeldAttribute>>,
    /// Contacts merged away (always leads), each with the contact it was merged into.
    pub merged_into: BTreeMap<String, String>,
    /// The workspace's tags, by id.
    pub tags: BTreeMap<String, Tag>,
    /// Contacts deleted (`DELETE /contacts/{id}`), by the id they had.
    pub(crate) deleted_contacts: BTreeMap<String, DeletedContact>,
    /// Events Intercom dropped as duplicates of (contact, name, created_at).
    pub duplicate_events: u64,
    /// Injected failures answered so far: (status or "slow", count).
    pub faults_injected: BTreeMap<String, u64>,
    /// Changes to what it holds so far: a call that leaves this as it was changed nothing.
    pub(crate) changes: u64,
    /// The names and (contact, name, created_at) keys of `events`, and the events of each contact, so a submission
    /// costs the same at the millionth event as at the first (a soak sends 100,000).
    #[serde(skip)]
    pub(super) event_names: BTreeSet<String>,
    #[serde(skip)]
    pub(super) event_keys: HashSet<(String, String, i64)>,
    #[serde(skip)]
    pub(super) events_by_contact: HashMap<String, Vec<usize>>,
    /// external_id → contact id, users' email → their ids, company_id → Intercom's id, and the external_id of a
    /// contact merged away → its id: lookups without a scan.
    #[serde(skip)]
    pub(super) by_external_id: HashMap<String, String>,
    #[serde(skip)]
    pub(super) users_by_email: HashMap<String, BTreeSet<String>>,
    #[serde(skip)]
    pub(super) by_company_id: HashMap<String, String>,
    #[serde(skip)]
    pub(super) merged_external_ids: HashMap<String, String>,
    /// Tag names lower-cased → tag id: Intercom's names are case-insensitive.
    #[serde(skip)]
    pub(super) tags_by_name: HashMap<String, String>,
    #[serde(skip)]
    next_id: u64,
    #[serde(skip)]
    next_tag_id: u64,
    /// Counts contact writes, ordering updates made within one second.
    #[serde(skip)]
    writes: u64,
    #[serde(skip)]
    window: (u64, u64),
    #[serde(skip)]
    rng: u64,
}

enum Fault {
    ServerError(u16),
    RateLimited,
    Slow,
}

pub(super) fn error(status: u16, code: &str, message: &str) -> SandboxResponse {
    let body = json!({"type": "error.list", "request_id": format!("sandbox-{status}"), "errors": [{"code": code, "message": message}]});
    SandboxResponse { status, headers: Vec::new(), body: Some(body), delay: Duration::ZERO }
}

/// Intercom's answer to a missing, wrong or revoked token (2.16, every endpoint's 401), without rate-limit headers:
/// Intercom sends none to a call without valid credentials.
fn unauthorized() -> SandboxResponse {
    error(401, "unauthorized", "Access Token Invalid")
}

pub(super) fn ok(status: u16, body: Value) -> SandboxResponse {
    SandboxResponse { status, headers: Vec::new(), body: Some(body), delay: Duration::ZERO }
}

/// A path segment or query value as sent, percent-decoded (the relay percent-encodes external ids).
pub(super) fn decode(text: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy()
}

/// The value of `key` in a query string, decoded (`+` is a space there, as form encoding writes it).
pub(super) fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(name) == key).then(|| decode(&value.replace('+', " ")).into_owned())
    })
}

impl SandboxState {
    /// An empty workspace holding `options.seed_attributes`.
    pub(crate) fn new(options: &SandboxOptions) -> SandboxState {
        let mut state = SandboxState::default();
        for seed in &options.seed_attributes {
            state.seed_attribute(seed);
        }
        state
    }

    /// What it holds, counted: `14 contacts (3 leads), 3 companies, 30 events, 12 custom attributes, 2 tags`, and
    /// `, 1 contact deleted` after deletions.
    pub fn summary(&self) -> String {
        let leads = self.contacts.values().filter(|c| c.role == "lead").count();
        let deleted = match self.deleted_contacts.len() {
            0 => String::new(),
            1 => ", 1 contact deleted".into(),
            n => format!(", {n} contacts deleted"),
        };
        format!(
            "{} contacts ({leads} leads), {} companies, {} events, {} custom attributes, {} tags{deleted}",
            self.contacts.len(),
            self.companies.len(),
            self.events.len(),
            self.data_attributes.values().map(BTreeMap::len).sum::<usize>(),
            self.tags.len()
        )
    }
}

impl SandboxState {
    /// Answers `request` at `now` (Unix seconds).
    pub(crate) fn handle(&mut self, options: &SandboxOptions, request: &SandboxRequest, now: u64) -> SandboxResponse {
        if let Some(refused) = self.refuse(options, request, now) {
            return refused;
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
            let (response, rate_limited) = self.answer_or_fault(options, request, now);
            if rate_limited {
                (remaining, reset) = (0, now + 1);
            }
            response
        };
        response.headers.push(("x-ratelimit-limit", options.rate_limit.to_string()));
        response.headers.push(("x-ratelimit-remaining", remaining.to_string()));
        response.headers.push(("x-ratelimit-reset", reset.to_string()));
        response
    }

    /// The answers given before a call counts against the rate limit: an outage, a wrong token, an unknown version or a
    /// body that is not JSON.
    fn refuse(&mut self, options: &SandboxOptions, request: &SandboxRequest, now: u64) -> Option<SandboxResponse> {
        match options.faults.outage {
            Some(Outage::Down) => {
                self.count_fault("503");
                return Some(error(503, "service_unavailable", "Outage: the sandbox is down"));
            }
            Some(Outage::Unauthorized) => {
                self.count_fault("401");
                return Some(unauthorized());
            }
            _ => {}
        }
        let bearer = request.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer "));
        if bearer != Some(options.token.as_str()) {
            return Some(unauthorized());
        }
        if let Some(Outage::RateLimited { reset_in }) = options.faults.outage {
            self.count_fault("429");
            let mut limited = error(429, "rate_limit_exceeded", "Exceeded rate limit");
            limited.headers.push(("x-ratelimit-limit", options.rate_limit.to_string()));
            limited.headers.push(("x-ratelimit-remaining", "0".into()));
            limited.headers.push(("x-ratelimit-reset", (now + reset_in.as_secs()).to_string()));
            return Some(limited);
        }
        if let Some(version) = request.version.as_deref().filter(|v| !API_VERSIONS.contains(v)) {
            return Some(error(400, "intercom_version_invalid", &format!("Requested version {version} is not valid")));
        }
        if request.malformed {
            return Some(error(400, "parameter_invalid", "Invalid JSON in the request body"));
        }
        None
    }

    /// The call carried out, or the failure drawn for it; `true` for an injected 429 (its window resets a second later).
    fn answer_or_fault(
        &mut self,
        options: &SandboxOptions,
        request: &SandboxRequest,
        now: u64,
    ) -> (SandboxResponse, bool) {
        let faults = &options.faults;
        let eligible = faults.only_matching.as_deref().is_none_or(|text| {
            request.path.contains(text) || request.body.as_ref().is_some_and(|b| b.to_string().contains(text))
        });
        match self.fault(faults).filter(|_| eligible) {
            Some(Fault::ServerError(status)) => {
                self.count_fault(&status.to_string());
                (error(status, "service_unavailable", "Injected failure: the sandbox pretends to be down"), false)
            }
            Some(Fault::RateLimited) => {
                self.count_fault("429");
                (error(429, "rate_limit_exceeded", "Injected failure: rate limit exceeded"), true)
            }
            Some(Fault::Slow) => {
                self.count_fault("slow");
                (SandboxResponse { delay: options.faults.slow_by, ..self.route(options, request, now) }, false)
            }
            None => (self.route(options, request, now), false),
        }
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
    pub(crate) fn reseed(&mut self) {
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
            ("POST", ["contacts"]) => self.create_contact(options, request, body, now),
            ("POST", ["contacts", "search"]) => self.search_contacts(options, body, now),
            ("POST", ["contacts", "merge"]) => self.merge(request, body, now),
            ("GET", ["contacts", "find_by_external_id", external_id]) => {
                self.find_by_external_id(request, &decode(external_id))
            }
            ("GET", ["contacts", id]) => self.show_contact(request, id),
            ("PUT", ["contacts", id]) => self.update_contact(options, request, id, body, now),
            ("DELETE", ["contacts", id]) => self.delete_contact(id, now),
            ("POST", ["contacts", id, "archive"]) => self.set_archived(id, true),
            ("POST", ["contacts", id, "unarchive"]) => self.set_archived(id, false),
            ("POST", ["contacts", id, "companies"]) => self.attach(id, body),
            ("DELETE", ["contacts", id, "companies", company]) => self.detach(id, company),
            ("GET", ["contacts", id, "tags"]) => self.contact_tags(options, id),
            ("POST", ["contacts", id, "tags"]) => self.tag_contact(options, id, body, now),
            ("DELETE", ["contacts", id, "tags", tag]) => self.untag_contact(options, id, tag),
            ("GET", ["tags"]) => self.list_tags(),
            ("POST", ["tags"]) => self.post_tags(request, body, now),
            ("GET", ["tags", id]) => self.show_tag(id),
            ("DELETE", ["tags", id]) => self.delete_tag(id),
            ("POST", ["events"]) => self.submit_event(body),
            ("POST", ["companies"]) => self.upsert_company(body),
            ("GET", ["companies"]) => self.find_company(query),
            ("GET", ["admins"]) => list_admins(options),
            ("GET", ["data_attributes"]) => self.list_attributes(query),
            ("POST", ["data_attributes"]) => self.create_attribute(body, now),
            ("PUT", ["data_attributes", id]) => self.update_attribute(id, body),
            _ => error(404, "not_found", &format!("No route for {} {path}", request.method)),
        }
    }

    pub(super) fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:024x}", 0x6650_0000_0000_0000_0000_0000u128 + u128::from(self.next_id))
    }

    /// A tag id: digits, as Intercom's are (2.16, line 18178), of one width so `tags` holds them in creation order.
    pub(super) fn new_tag_id(&mut self) -> String {
        self.next_tag_id += 1;
        (1_000_000 + self.next_tag_id).to_string()
    }

    /// Marks `id` as written at `now`, ordering writes within one second.
    pub(super) fn touch(&mut self, id: &str, now: u64) {
        self.writes += 1;
        let seq = self.writes;
        if let Some(contact) = self.contacts.get_mut(id) {
            (contact.updated_at, contact.updated_seq) = (now, seq);
        }
    }
}

/// `GET /admins` (2.16, lines 870-908): the workspace's admins, in the spec's `admin.list` shape.
fn list_admins(options: &SandboxOptions) -> SandboxResponse {
    let admins: Vec<Value> = options
        .admins
        .iter()
        .enumerate()
        .map(|(n, id)| {
            json!({"type": "admin", "id": id, "name": format!("Sandbox Admin {}", n + 1),
                "email": format!("admin{}@sandbox.invalid", n + 1), "away_mode_enabled": false,
                "away_mode_reassign": false, "has_inbox_seat": true, "team_ids": []})
        })
        .collect();
    ok(200, json!({"type": "admin.list", "admins": admins}))
}
