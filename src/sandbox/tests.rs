//! The sandbox's behaviour, one contract rule at a time.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const NOW: u64 = 1_714_564_800;

struct Sandbox {
    state: SandboxState,
    options: SandboxOptions,
}

impl Sandbox {
    fn new(options: SandboxOptions) -> Sandbox {
        Sandbox { state: SandboxState::default(), options }
    }

    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> SandboxResponse {
        self.call_at(method, path, body, NOW)
    }

    fn call_at(&mut self, method: &str, path: &str, body: Option<Value>, now: u64) -> SandboxResponse {
        let request = SandboxRequest {
            method: method.into(),
            path: path.into(),
            authorization: Some(format!("Bearer {}", self.options.token)),
            version: Some("2.16".into()),
            body,
            malformed: false,
        };
        self.state.handle(&self.options, &request, now)
    }
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxOptions::default())
}

fn message(response: &SandboxResponse) -> &str {
    response.body.as_ref().and_then(|b| b["errors"][0]["message"].as_str()).unwrap_or_default()
}

#[test]
fn a_wrong_token_is_refused_and_an_unknown_version_too() {
    let mut sandbox = sandbox();
    let request = |authorization: &str, version: &str| SandboxRequest {
        method: "GET".into(),
        path: "/data_attributes".into(),
        authorization: Some(authorization.into()),
        version: Some(version.into()),
        body: None,
        malformed: false,
    };
    let answer = sandbox.state.handle(&sandbox.options, &request("Bearer nope", "2.16"), NOW);
    assert_eq!((answer.status, message(&answer)), (401, "Access Token Invalid"));
    let answer = sandbox.state.handle(&sandbox.options, &request("Bearer sandbox-token", "9.9"), NOW);
    assert_eq!(answer.status, 400);
    assert_eq!(sandbox.call("GET", "/data_attributes?model=contact", None).status, 200);
}

#[test]
fn a_second_contact_with_the_same_external_id_is_a_conflict_naming_the_first() {
    let mut sandbox = sandbox();
    let first =
        sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1", "email": "a@x.com"})));
    assert_eq!(first.status, 200);
    let id = first.body.unwrap()["id"].as_str().unwrap().to_owned();
    let second = sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1"})));
    assert_eq!(second.status, 409);
    assert_eq!(message(&second), format!("A contact matching those details already exists with id={id}"));
    sandbox.call("POST", &format!("/contacts/{id}/archive"), None);
    let archived = sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1"})));
    assert!(message(&archived).starts_with("An archived contact"), "{archived:?}");
}

#[test]
fn custom_attributes_must_exist_before_a_contact_carries_them() {
    let mut sandbox = sandbox();
    let body = json!({"role": "user", "external_id": "u-1", "custom_attributes": {"plan": "pro"}});
    let refused = sandbox.call("POST", "/contacts", Some(body.clone()));
    assert_eq!((refused.status, message(&refused)), (400, "Custom attribute 'plan' does not exist"));
    let created = sandbox.call(
        "POST",
        "/data_attributes",
        Some(json!({"name": "plan", "model": "contact", "data_type": "string"})),
    );
    assert_eq!(created.status, 200);
    assert_eq!(sandbox.call("POST", "/contacts", Some(body)).status, 200);
}

#[test]
fn search_does_not_see_a_new_contact_until_the_index_catches_up() {
    let mut sandbox = Sandbox::new(SandboxOptions { search_lag: 5, ..SandboxOptions::default() });
    sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1"})));
    let query = json!({"query": {"field": "external_id", "operator": "=", "value": "u-1"}});
    let found = |answer: SandboxResponse| answer.body.unwrap()["total_count"].as_u64().unwrap();
    assert_eq!(found(sandbox.call_at("POST", "/contacts/search", Some(query.clone()), NOW + 1)), 0);
    assert_eq!(found(sandbox.call_at("POST", "/contacts/search", Some(query), NOW + 5)), 1);
}

#[test]
fn events_need_a_known_contact_keep_ten_metadata_keys_and_drop_duplicates() {
    let mut sandbox = sandbox();
    let event = json!({"event_name": "Order.Completed", "created_at": 1714564800, "user_id": "u-1",
        "metadata": {"k0": 0, "k1": 1, "k2": 2, "k3": 3, "k4": 4, "k5": 5, "k6": 6, "k7": 7, "k8": 8, "k9": 9, "k10": 10}});
    assert_eq!(sandbox.call("POST", "/events", Some(event.clone())).status, 404);
    sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1"})));
    let accepted = sandbox.call("POST", "/events", Some(event.clone()));
    assert_eq!((accepted.status, accepted.body), (202, None));
    assert_eq!(sandbox.call("POST", "/events", Some(event)).status, 202);
    assert_eq!(sandbox.state.events.len(), 1);
    assert_eq!(sandbox.state.duplicate_events, 1);
    assert_eq!(sandbox.state.events[0].event_name, "order-completed");
    assert_eq!(sandbox.state.events[0].metadata.len(), 10);
}

#[test]
fn companies_upsert_by_company_id_and_attach_by_intercom_id() {
    let mut sandbox = sandbox();
    let contact = sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1"}))).body.unwrap();
    let contact_id = contact["id"].as_str().unwrap();
    let first = sandbox.call("POST", "/companies", Some(json!({"company_id": "org-1", "name": "One"}))).body.unwrap();
    let again = sandbox.call("POST", "/companies", Some(json!({"company_id": "org-1", "plan": "pro"}))).body.unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_eq!((&again["name"], &again["plan"]), (&json!("One"), &json!("pro")));
    let by_company_id =
        sandbox.call("POST", &format!("/contacts/{contact_id}/companies"), Some(json!({"id": "org-1"})));
    assert_eq!(by_company_id.status, 404, "attaching takes Intercom's id, not company_id");
    let attached = sandbox.call("POST", &format!("/contacts/{contact_id}/companies"), Some(json!({"id": first["id"]})));
    assert_eq!(attached.status, 200);
    assert_eq!(sandbox.state.contacts[contact_id].companies, [first["id"].as_str().unwrap()]);
    let detached =
        sandbox.call("DELETE", &format!("/contacts/{contact_id}/companies/{}", first["id"].as_str().unwrap()), None);
    assert_eq!(detached.status, 200);
    assert!(sandbox.state.contacts[contact_id].companies.is_empty());
}

#[test]
fn a_lead_merges_into_a_user_with_its_events() {
    let mut sandbox = sandbox();
    let lead = sandbox.call("POST", "/contacts", Some(json!({"role": "lead", "email": "l@x.com"}))).body.unwrap();
    let user = sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1"}))).body.unwrap();
    sandbox.call("POST", "/events", Some(json!({"event_name": "viewed", "created_at": 1, "id": lead["id"]})));
    let merged = sandbox.call("POST", "/contacts/merge", Some(json!({"from": lead["id"], "into": user["id"]})));
    assert_eq!(merged.status, 200);
    assert_eq!(sandbox.state.contacts.len(), 1);
    assert_eq!(sandbox.state.events[0].contact_id, user["id"].as_str().unwrap());
}

#[test]
fn calls_over_the_window_limit_get_429_and_every_answer_carries_the_headers() {
    let mut sandbox = Sandbox::new(SandboxOptions { rate_limit: 2, ..SandboxOptions::default() });
    let statuses: Vec<u16> = (0..3).map(|_| sandbox.call("GET", "/data_attributes", None).status).collect();
    assert_eq!(statuses, [200, 200, 429]);
    let limited = sandbox.call("GET", "/data_attributes", None);
    let header = |name: &str| limited.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    assert_eq!(header("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header("x-ratelimit-reset"), Some((NOW + 10).to_string()));
    assert_eq!(sandbox.call_at("GET", "/data_attributes", None, NOW + 10).status, 200, "a new window");
}

#[test]
fn leads_may_share_an_email_and_search_finds_the_most_recently_updated_first() {
    let mut sandbox = sandbox();
    let lead = json!({"role": "lead", "email": "l@x.com"});
    let first = sandbox.call("POST", "/contacts", Some(lead.clone())).body.unwrap();
    let second = sandbox.call("POST", "/contacts", Some(lead)).body.unwrap();
    assert_ne!(first["id"], second["id"], "Intercom lets several leads hold one address");
    let user = json!({"role": "user", "email": "u@x.com"});
    sandbox.call("POST", "/contacts", Some(user.clone()));
    assert_eq!(sandbox.call("POST", "/contacts", Some(user)).status, 409, "users may not");
    sandbox.call("PUT", &format!("/contacts/{}", first["id"].as_str().unwrap()), Some(json!({"name": "L"})));
    let query = json!({"query": {"field": "email", "operator": "=", "value": "l@x.com"},
        "sort": {"field": "updated_at", "order": "descending"}});
    let found = sandbox.call("POST", "/contacts/search", Some(query)).body.unwrap();
    assert_eq!(found["total_count"], 2);
    assert_eq!(found["data"][0]["id"], first["id"], "updated last, so listed first");
}

#[test]
fn a_workspace_holds_at_most_120_active_event_names() {
    let mut sandbox = sandbox();
    sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1"})));
    let event = |name: String| json!({"event_name": name, "created_at": 1, "user_id": "u-1"});
    for n in 0..MAX_EVENT_NAMES {
        assert_eq!(sandbox.call("POST", "/events", Some(event(format!("event {n}")))).status, 202);
    }
    let refused = sandbox.call("POST", "/events", Some(event("one too many".into())));
    assert_eq!(refused.status, 400);
    assert!(message(&refused).contains("120 active event names"), "{refused:?}");
    assert_eq!(sandbox.call("POST", "/events", Some(event("EVENT 7".into()))).status, 202, "a known name still works");
}

#[test]
fn injected_faults_follow_their_shares_repeat_with_the_seed_and_leave_the_state_alone() {
    let faults = Faults {
        seed: 7,
        server_errors: 0.2,
        rate_limited: 0.1,
        slow: 0.1,
        slow_by: Duration::from_secs(9),
        only_matching: None,
    };
    let run = || {
        let mut sandbox = Sandbox::new(SandboxOptions { faults: faults.clone(), ..SandboxOptions::default() });
        let answers: Vec<SandboxResponse> = (0..1000)
            .map(|n| sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": format!("u-{n}")}))))
            .collect();
        (answers, sandbox.state)
    };
    let (answers, state) = run();
    let count = |f: &dyn Fn(&SandboxResponse) -> bool| answers.iter().filter(|a| f(a)).count();
    let (errors, limited, slow) = (
        count(&|a| a.status >= 500),
        count(&|a| a.status == 429),
        count(&|a| a.delay == Duration::from_secs(9) && a.status == 200),
    );
    assert!((150..250).contains(&errors), "{errors} server errors of 1000 at 20%");
    assert!((60..140).contains(&limited), "{limited} 429s of 1000 at 10%");
    assert!((60..140).contains(&slow), "{slow} slow answers of 1000 at 10%");
    assert!(count(&|a| a.status == 500) > 0 && count(&|a| a.status == 503) > 0, "both kinds of server error");
    assert_eq!(state.contacts.len(), 1000 - errors - limited, "a refused call changes nothing; a slow one does");
    assert_eq!(state.faults_injected["slow"], slow as u64);
    let (again, _) = run();
    let statuses = |answers: &[SandboxResponse]| answers.iter().map(|a| a.status).collect::<Vec<_>>();
    assert_eq!(statuses(&answers), statuses(&again), "the same seed, the same faults");
}
