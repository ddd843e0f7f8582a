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
        Sandbox { state: SandboxState::new(&options), options }
    }

    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> SandboxResponse {
        self.call_at(method, path, body, NOW)
    }

    fn call_at(&mut self, method: &str, path: &str, body: Option<Value>, now: u64) -> SandboxResponse {
        self.call_as(Some("2.16"), method, path, body, now)
    }

    /// A call under `version` (None: no Intercom-Version header, the default 2.16).
    fn call_as(
        &mut self,
        version: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
        now: u64,
    ) -> SandboxResponse {
        let request = SandboxRequest {
            method: method.into(),
            path: path.into(),
            authorization: Some(format!("Bearer {}", self.options.token)),
            version: version.map(str::to_owned),
            body,
            malformed: false,
        };
        self.state.handle(&self.options, &request, now)
    }

    /// Creates a contact and gives its id.
    fn contact(&mut self, body: Value) -> String {
        let created = self.call("POST", "/contacts", Some(body));
        assert_eq!(created.status, 200, "{created:?}");
        created.body.unwrap()["id"].as_str().unwrap().to_owned()
    }

    fn attribute(&mut self, name: &str, model: &str, data_type: &str) -> SandboxResponse {
        self.call("POST", "/data_attributes", Some(json!({"name": name, "model": model, "data_type": data_type})))
    }
}

fn code(response: &SandboxResponse) -> &str {
    response.body.as_ref().and_then(|b| b["errors"][0]["code"].as_str()).unwrap_or_default()
}

fn header<'a>(response: &'a SandboxResponse, name: &str) -> Option<&'a str> {
    response.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
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
    let user = sandbox
        .call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1", "email": "l@x.com"})))
        .body
        .unwrap();
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
    let lag = SandboxOptions::default().search_lag;
    let found = sandbox.call_at("POST", "/contacts/search", Some(query), NOW + lag).body.unwrap();
    assert_eq!(found["total_count"], 2);
    assert_eq!(found["data"][0]["id"], first["id"], "updated last, so listed first");
}

#[test]
fn search_answers_one_page_and_counts_every_match() {
    let mut sandbox = sandbox();
    for _ in 0..7 {
        sandbox.call("POST", "/contacts", Some(json!({"role": "lead", "email": "many@x.com"})));
    }
    let lag = SandboxOptions::default().search_lag;
    let search = |per_page: Option<u64>| {
        let mut query = json!({"query": {"field": "email", "operator": "=", "value": "many@x.com"}});
        if let Some(n) = per_page {
            query["pagination"] = json!({"per_page": n});
        }
        query
    };
    let page = sandbox.call_at("POST", "/contacts/search", Some(search(Some(5))), NOW + lag).body.unwrap();
    assert_eq!((page["data"].as_array().unwrap().len(), &page["total_count"]), (5, &json!(7)));
    assert_eq!(page["pages"], json!({"type": "pages", "page": 1, "per_page": 5, "total_pages": 2}));
    let all = sandbox.call_at("POST", "/contacts/search", Some(search(None)), NOW + lag).body.unwrap();
    assert_eq!((all["data"].as_array().unwrap().len(), &all["pages"]["per_page"]), (7, &json!(50)));
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
        outage: None,
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

// Outages (RULES.md: every call): a soak switches them on and off.

/// Sends `calls` user creations and checks each answer with `check`; then the state must hold nothing and the faults
/// counted must be `calls` under `key`.
fn outage_refuses_everything(sandbox: &mut Sandbox, calls: usize, key: &str, check: impl Fn(&SandboxResponse)) {
    for n in 0..calls {
        check(&sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": format!("u-{n}")}))));
    }
    check(&sandbox.call("GET", "/data_attributes", None));
    let state = &sandbox.state;
    assert_eq!((state.contacts.len(), state.changes), (0, 0), "an outage creates nothing");
    assert_eq!(state.faults_injected.get(key), Some(&(calls as u64 + 1)), "{:?}", state.faults_injected);
}

fn recovers(sandbox: &mut Sandbox) {
    sandbox.options.faults.outage = None;
    sandbox.contact(json!({"role": "user", "external_id": "u-after"}));
    assert_eq!(sandbox.state.contacts.len(), 1, "once the outage ends, calls are carried out");
}

#[test]
fn while_intercom_is_down_every_call_is_a_503_and_nothing_is_created() {
    let faults = Faults { outage: Some(Outage::Down), ..Faults::default() };
    let mut sandbox = Sandbox::new(SandboxOptions { faults, ..SandboxOptions::default() });
    outage_refuses_everything(&mut sandbox, 20, "503", |answer| {
        assert_eq!((answer.status, code(answer)), (503, "service_unavailable"), "{answer:?}");
        assert!(answer.headers.is_empty(), "a service that is down counts no rate limit: {answer:?}");
    });
    recovers(&mut sandbox);
}

#[test]
fn a_revoked_token_gets_intercoms_401_for_a_bad_token_on_every_call() {
    let mut sandbox = sandbox();
    let wrong = SandboxRequest {
        method: "GET".into(),
        path: "/data_attributes".into(),
        authorization: Some("Bearer revoked".into()),
        version: Some("2.16".into()),
        body: None,
        malformed: false,
    };
    let bad_token = sandbox.state.handle(&sandbox.options, &wrong, NOW);
    sandbox.options.faults.outage = Some(Outage::Unauthorized);
    outage_refuses_everything(&mut sandbox, 20, "401", |answer| {
        assert_eq!(answer, &bad_token, "the very answer to a wrong token, without rate-limit headers");
    });
    let body = bad_token.body.unwrap();
    assert_eq!(body["type"], "error.list");
    assert_eq!(body["errors"], json!([{"code": "unauthorized", "message": "Access Token Invalid"}]));
    recovers(&mut sandbox);
}

#[test]
fn in_a_429_storm_every_call_is_refused_with_the_reset_far_ahead() {
    let storm = Outage::RateLimited { reset_in: Duration::from_secs(3600) };
    let mut sandbox = Sandbox::new(SandboxOptions {
        faults: Faults { outage: Some(storm), ..Faults::default() },
        ..SandboxOptions::default()
    });
    outage_refuses_everything(&mut sandbox, 20, "429", |answer| {
        assert_eq!((answer.status, code(answer)), (429, "rate_limit_exceeded"), "{answer:?}");
        assert_eq!(header(answer, "x-ratelimit-limit"), Some("1666"));
        assert_eq!(header(answer, "x-ratelimit-remaining"), Some("0"));
        assert_eq!(header(answer, "x-ratelimit-reset"), Some((NOW + 3600).to_string().as_str()));
    });
    let limited = sandbox.call_at("GET", "/admins", None, NOW + 600);
    assert_eq!(header(&limited, "x-ratelimit-reset"), Some((NOW + 4200).to_string().as_str()), "always an hour ahead");
    recovers(&mut sandbox);
}

// Merges (RULES.md: merge).

#[test]
fn under_2_16_a_merge_of_contacts_that_are_not_duplicates_is_refused_unless_told_to_skip_the_check() {
    let mut sandbox = sandbox();
    let lead = sandbox.contact(json!({"role": "lead", "email": "l@x.com"}));
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1", "email": "u@x.com"}));
    let merge = json!({"from": lead, "into": user});
    let refused = sandbox.call("POST", "/contacts/merge", Some(merge.clone()));
    assert_eq!((refused.status, code(&refused)), (400, "invalid_merge"));
    assert_eq!(
        message(&refused),
        "Contacts can only be merged when they are duplicates (matching email or phone). Pass skip_duplicate_validation=true to override this check."
    );
    assert_eq!(sandbox.state.contacts.len(), 2, "nothing merged");
    let no_header = sandbox.call_as(None, "POST", "/contacts/merge", Some(merge), NOW);
    assert_eq!(no_header.status, 400, "no Intercom-Version is 2.16");
    let skipped = json!({"from": lead, "into": user, "skip_duplicate_validation": true});
    assert_eq!(sandbox.call("POST", "/contacts/merge", Some(skipped)).status, 200);
    assert_eq!(sandbox.state.merged_into[&lead], user);
}

#[test]
fn a_lead_and_a_user_sharing_a_phone_are_duplicates() {
    let mut sandbox = sandbox();
    let lead = sandbox.contact(json!({"role": "lead", "phone": "+353871234567"}));
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1", "phone": "+353871234567"}));
    assert_eq!(sandbox.call("POST", "/contacts/merge", Some(json!({"from": lead, "into": user}))).status, 200);
}

#[test]
fn under_2_15_contacts_merge_without_the_duplicate_check() {
    let mut sandbox = sandbox();
    let lead = sandbox.contact(json!({"role": "lead", "email": "l@x.com"}));
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let merged =
        sandbox.call_as(Some("2.15"), "POST", "/contacts/merge", Some(json!({"from": lead, "into": user})), NOW);
    assert_eq!(merged.status, 200);
    assert_eq!(sandbox.state.merged_into[&lead], user);
}

#[test]
fn only_a_lead_merges_and_only_into_a_user() {
    let mut sandbox = sandbox();
    let first = sandbox.contact(json!({"role": "user", "external_id": "u-1", "email": "a@x.com"}));
    let second = sandbox.contact(json!({"role": "user", "external_id": "u-2", "email": "a@x.com"}));
    let refused = sandbox.call("POST", "/contacts/merge", Some(json!({"from": first, "into": second})));
    assert_eq!((refused.status, message(&refused)), (400, "Only a lead can be merged into a user"));
}

#[test]
fn a_merged_contact_answers_410_with_a_link_to_the_one_it_became_and_writes_to_it_404() {
    let mut sandbox = sandbox();
    let lead = sandbox.contact(json!({"role": "lead", "email": "l@x.com"}));
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1", "email": "l@x.com"}));
    sandbox.call("POST", "/contacts/merge", Some(json!({"from": lead, "into": user})));
    let gone = sandbox.call("GET", &format!("/contacts/{lead}"), None);
    assert_eq!((gone.status, code(&gone)), (410, "contact_merged"));
    assert_eq!(message(&gone), "This contact has been merged. See the 'Link' header for the canonical contact.");
    assert_eq!(header(&gone, "link"), Some(format!("</contacts/{user}>; rel=\"canonical\"").as_str()));
    let old = sandbox.call_as(Some("2.15"), "GET", &format!("/contacts/{lead}"), None, NOW);
    assert_eq!(old.status, 404, "2.15's spec has no 410");
    let company = sandbox.call("POST", "/companies", Some(json!({"company_id": "org-1"}))).body.unwrap();
    let writes = [
        sandbox.call("PUT", &format!("/contacts/{lead}"), Some(json!({"name": "L"}))),
        sandbox.call("POST", "/events", Some(json!({"event_name": "viewed", "created_at": 1, "id": lead}))),
        sandbox.call("POST", &format!("/contacts/{lead}/companies"), Some(json!({"id": company["id"]}))),
        sandbox.call("DELETE", &format!("/contacts/{lead}/companies/{}", company["id"].as_str().unwrap()), None),
    ];
    for write in writes {
        assert_eq!((write.status, code(&write)), (404, "not_found"), "{write:?}");
    }
    assert!(sandbox.state.events.is_empty() && sandbox.state.contacts[&user].companies.is_empty());
}

#[test]
fn a_merge_chain_is_followed_to_its_end() {
    let mut sandbox = sandbox();
    sandbox.state.merged_into.insert("a".into(), "b".into());
    sandbox.state.merged_into.insert("b".into(), "c".into());
    let gone = sandbox.call("GET", "/contacts/a", None);
    assert_eq!(header(&gone, "link"), Some("</contacts/c>; rel=\"canonical\""));
}

// Finding a user by external_id (RULES.md: find_by_external_id).

#[test]
fn find_by_external_id_finds_a_user_at_once_decoding_the_path() {
    let mut sandbox = sandbox();
    let id = sandbox.contact(json!({"role": "user", "external_id": "a/b c@d"}));
    let found = sandbox.call("GET", "/contacts/find_by_external_id/a%2Fb%20c%40d", None);
    assert_eq!(found.status, 200, "no search lag: {found:?}");
    assert_eq!(found.body.unwrap()["id"], json!(id));
    let missing = sandbox.call("GET", "/contacts/find_by_external_id/nobody", None);
    assert_eq!((missing.status, code(&missing)), (404, "not_found"));
}

#[test]
fn find_by_external_id_never_finds_a_lead_and_answers_410_for_an_external_id_merged_away() {
    let mut sandbox = sandbox();
    let lead = sandbox.contact(json!({"role": "lead", "email": "l@x.com"}));
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1", "email": "l@x.com"}));
    // No lead can hold an external_id through the API: plant one to see what a merge does with it.
    sandbox.state.contacts.get_mut(&lead).unwrap().external_id = Some("lead-1".into());
    sandbox.state.by_external_id.insert("lead-1".into(), lead.clone());
    assert_eq!(sandbox.call("GET", "/contacts/find_by_external_id/lead-1", None).status, 404, "leads are not found");
    sandbox.call("POST", "/contacts/merge", Some(json!({"from": lead, "into": user})));
    let gone = sandbox.call("GET", "/contacts/find_by_external_id/lead-1", None);
    assert_eq!((gone.status, code(&gone)), (410, "contact_merged"));
    assert_eq!(header(&gone, "link"), Some(format!("</contacts/{user}>; rel=\"canonical\"").as_str()));
}

// Leads and external ids, roles (RULES.md: contacts).

#[test]
fn a_lead_with_an_external_id_is_refused_on_create_and_update_unless_it_becomes_a_user() {
    let mut sandbox = sandbox();
    let refused = sandbox.call("POST", "/contacts", Some(json!({"role": "lead", "external_id": "u-1"})));
    assert_eq!((refused.status, code(&refused), message(&refused)), (400, "parameter_invalid", LEAD_EXTERNAL_ID));
    assert!(sandbox.state.contacts.is_empty());
    let lead = sandbox.contact(json!({"role": "lead", "email": "l@x.com"}));
    let refused = sandbox.call("PUT", &format!("/contacts/{lead}"), Some(json!({"external_id": "u-1"})));
    assert_eq!((refused.status, message(&refused)), (400, LEAD_EXTERNAL_ID));
    let converted =
        sandbox.call("PUT", &format!("/contacts/{lead}"), Some(json!({"external_id": "u-1", "role": "user"})));
    assert_eq!(converted.status, 200);
    assert_eq!(
        (sandbox.state.contacts[&lead].role.as_str(), converted.body.unwrap()["external_id"].as_str()),
        ("user", Some("u-1"))
    );
    assert_eq!(sandbox.call("GET", "/contacts/find_by_external_id/u-1", None).status, 200);
}

#[test]
fn a_user_cannot_become_a_lead() {
    let mut sandbox = sandbox();
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let refused = sandbox.call("PUT", &format!("/contacts/{user}"), Some(json!({"role": "lead"})));
    assert_eq!((refused.status, message(&refused)), (400, "Contact with user role can't be converted to a lead"));
    assert_eq!(sandbox.state.contacts[&user].role, "user");
}

#[test]
fn an_update_to_an_external_id_another_contact_holds_is_a_conflict_naming_it() {
    let mut sandbox = sandbox();
    let first = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let second = sandbox.contact(json!({"role": "user", "external_id": "u-2"}));
    let refused = sandbox.call("PUT", &format!("/contacts/{second}"), Some(json!({"external_id": "u-1"})));
    assert_eq!(refused.status, 409);
    assert_eq!(message(&refused), format!("A contact matching those details already exists with id={first}"));
    let own = sandbox.call("PUT", &format!("/contacts/{first}"), Some(json!({"external_id": "u-1"})));
    assert_eq!(own.status, 200, "its own external_id is no conflict");
}

#[test]
fn contact_fields_of_the_wrong_type_are_refused() {
    let mut sandbox = sandbox();
    for (body, field) in [
        (json!({"role": "user", "external_id": 7}), "external_id"),
        (json!({"role": "visitor", "email": "a@x.com"}), "role"),
        (json!({"role": "user", "email": "a@x.com", "signed_up_at": "2024-05-01"}), "signed_up_at"),
        (json!({"role": "user", "email": "a@x.com", "unsubscribed_from_emails": "yes"}), "unsubscribed_from_emails"),
        (json!({"role": "user", "email": "a@x.com", "custom_attributes": []}), "custom_attributes"),
    ] {
        let refused = sandbox.call("POST", "/contacts", Some(body));
        assert_eq!(refused.status, 400, "{field}");
        assert!(message(&refused).starts_with(&format!("'{field}' must be")), "{refused:?}");
    }
    let refused =
        sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u", "email_verified": true})));
    assert_eq!((refused.status, message(&refused)), (400, "email_verified must be supplied together with an email"));
    assert!(sandbox.state.contacts.is_empty());
    let id = sandbox.contact(json!({"role": "user", "email": "a@x.com", "name": "A", "signed_up_at": 1}));
    sandbox.call("PUT", &format!("/contacts/{id}"), Some(json!({"name": null})));
    assert!(!sandbox.state.contacts[&id].fields.contains_key("name"), "null clears a field");
}

// Owners and admins (RULES.md: owner_id).

#[test]
fn owner_id_is_a_string_under_2_16_an_integer_under_2_15_and_must_name_an_admin() {
    let mut sandbox = sandbox();
    let admins = sandbox.call("GET", "/admins", None).body.unwrap();
    assert_eq!(admins["type"], "admin.list");
    assert_eq!(admins["admins"][0]["type"], "admin");
    let admin = admins["admins"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(admin, SandboxOptions::default().admins[0]);
    let number: u64 = admin.parse().unwrap();
    let user = |owner: Value| json!({"role": "user", "email": "a@x.com", "owner_id": owner});
    let wrong_type = sandbox.call("POST", "/contacts", Some(user(json!(number))));
    assert_eq!((wrong_type.status, code(&wrong_type)), (400, "parameter_invalid"));
    let old = sandbox.call_as(Some("2.15"), "POST", "/contacts", Some(user(json!(admin))), NOW);
    assert_eq!(old.status, 400, "2.15 takes an integer");
    let stranger = sandbox.call("POST", "/contacts", Some(user(json!("123"))));
    assert_eq!((stranger.status, message(&stranger)), (400, "The owner specified is not a member of the workspace"));
    assert!(sandbox.state.contacts.is_empty());
    assert_eq!(sandbox.call("POST", "/contacts", Some(user(json!(admin)))).status, 200);
    let id = sandbox.state.contacts.keys().next().unwrap().clone();
    let by_number =
        sandbox.call_as(Some("2.15"), "PUT", &format!("/contacts/{id}"), Some(json!({"owner_id": number})), NOW);
    assert_eq!(by_number.status, 200);
    let stranger = sandbox.call("PUT", &format!("/contacts/{id}"), Some(json!({"owner_id": "123"})));
    assert_eq!(stranger.status, 400);
}

// Data attributes (RULES.md: data attributes).

#[test]
fn the_attribute_list_holds_standard_attributes_and_archived_ones_only_when_asked() {
    let options = SandboxOptions {
        seed_attributes: vec![
            SeedAttribute::new("contact", "old", "string").archived(),
            SeedAttribute::new("contact", "tier", "string").with_options(&["gold", "silver"]),
        ],
        ..SandboxOptions::default()
    };
    let mut sandbox = Sandbox::new(options);
    let names = |answer: SandboxResponse, custom: bool| -> Vec<String> {
        let data = answer.body.unwrap()["data"].as_array().unwrap().clone();
        data.iter().filter(|a| a["custom"] == json!(custom)).map(|a| a["name"].as_str().unwrap().to_owned()).collect()
    };
    let standard = names(sandbox.call("GET", "/data_attributes?model=contact", None), false);
    for name in ["name", "email", "phone", "external_id", "owner_id", "signed_up_at", "last_seen_at", "created_at"] {
        assert!(standard.contains(&name.to_owned()), "{name}");
    }
    let company = names(sandbox.call("GET", "/data_attributes?model=company", None), false);
    for name in ["name", "company_id", "monthly_spend", "size", "website", "industry", "remote_created_at"] {
        assert!(company.contains(&name.to_owned()), "{name}");
    }
    assert_eq!(names(sandbox.call("GET", "/data_attributes?model=contact", None), true), ["tier"]);
    let all = sandbox.call("GET", "/data_attributes?model=contact&include_archived=true", None);
    let data = all.body.unwrap()["data"].clone();
    let tier = data.as_array().unwrap().iter().find(|a| a["name"] == "tier").unwrap().clone();
    assert_eq!((&tier["options"], &tier["data_type"]), (&json!(["gold", "silver"]), &json!("string")));
    let old = data.as_array().unwrap().iter().find(|a| a["name"] == "old").unwrap().clone();
    assert_eq!((&old["archived"], &old["model"]), (&json!(true), &json!("contact")));
    let conversation = sandbox.call("GET", "/data_attributes?model=conversation", None);
    assert_eq!(conversation.status, 422);
}

#[test]
fn an_attribute_name_may_hold_letters_digits_currency_symbols_hyphens_spaces_and_underscores_only() {
    let mut sandbox = sandbox();
    for name in ["Mithril Shirt", "price-€", "plan_name", "Level 2"] {
        assert_eq!(sandbox.attribute(name, "company", "string").status, 200, "{name}");
    }
    for name in ["!nv@l!d n@me", "a.b", "", "quote'"] {
        let refused = sandbox.attribute(name, "company", "string");
        assert_eq!(refused.status, 400, "{name}");
        assert_eq!(
            message(&refused),
            "Your name for this attribute must only contain alphanumeric characters, currency symbols, and hyphens"
        );
    }
}

#[test]
fn a_standard_attribute_name_is_refused_whatever_its_case() {
    let mut sandbox = sandbox();
    let refused = sandbox.attribute("NAME", "contact", "string");
    assert_eq!(
        message(&refused),
        "'Name' is one of our standard attributes for your people data. To save this as new people data, use a different name."
    );
    let refused = sandbox.attribute("website", "company", "string");
    assert_eq!(
        message(&refused),
        "'Company website' is one of our standard attributes for your company data. To save this as new company data, use a different name."
    );
}

#[test]
fn a_name_either_model_already_has_is_refused_with_intercoms_wording() {
    let mut sandbox = sandbox();
    assert_eq!(sandbox.attribute("The One Ring", "company", "string").status, 200);
    let other = sandbox.attribute("The One Ring", "contact", "integer");
    assert_eq!((other.status, code(&other)), (400, "parameter_invalid"));
    assert_eq!(
        message(&other),
        "You already have 'The One Ring' in your company data. To save this as new people data, use a different name."
    );
    let same = sandbox.attribute("the one ring", "company", "string");
    assert_eq!(
        message(&same),
        "You already have 'The One Ring' in your company data. To save this as new company data, use a different name."
    );
    sandbox.attribute("tier", "contact", "string");
    let mirror = sandbox.attribute("tier", "company", "string");
    assert_eq!(
        message(&mirror),
        "You already have 'tier' in your people data. To save this as new company data, use a different name."
    );
}

#[test]
fn a_workspace_holds_at_most_250_custom_attributes_archived_ones_not_counted() {
    let mut sandbox = sandbox();
    sandbox.state.seed_attribute(&SeedAttribute::new("company", "archived", "string").archived());
    for n in 0..MAX_CUSTOM_ATTRIBUTES {
        let model = if n % 2 == 0 { "contact" } else { "company" };
        assert_eq!(sandbox.attribute(&format!("a{n}"), model, "string").status, 200, "{n}");
    }
    let refused = sandbox.attribute("one too many", "contact", "string");
    assert_eq!(refused.status, 400);
    assert!(message(&refused).contains("limit of 250"), "{refused:?}");
}

#[test]
fn a_list_attribute_is_created_with_two_options_or_more_and_its_type_must_be_one_intercom_knows() {
    let mut sandbox = sandbox();
    let list = |options: Value| json!({"name": "tier", "model": "contact", "data_type": "options", "options": options});
    let one = sandbox.call("POST", "/data_attributes", Some(list(json!([{"value": "gold"}]))));
    assert_eq!((one.status, message(&one)), (400, "You must have at least two options on a list type data attribute"));
    let not_array = sandbox.call("POST", "/data_attributes", Some(list(json!("gold"))));
    assert_eq!(message(&not_array), "Options isn't an array");
    let created = sandbox.call("POST", "/data_attributes", Some(list(json!([{"value": "gold"}, {"value": "silver"}]))));
    assert_eq!(created.status, 200);
    assert_eq!(created.body.unwrap()["options"], json!(["gold", "silver"]));
    assert_eq!(sandbox.state.data_attributes["contact"]["tier"], "string");
    let mithril = sandbox.attribute("The Second Ring", "company", "mithril");
    assert_eq!((mithril.status, message(&mithril)), (400, "Data Type isn't an option"));
    let model = sandbox.attribute("x", "conversation", "string");
    assert_eq!(message(&model), "The Data Attribute model field must be either contact or company");
}

#[test]
fn an_attribute_is_archived_by_its_id_and_then_refused_on_writes() {
    let mut sandbox = sandbox();
    let created = sandbox.attribute("plan", "contact", "string").body.unwrap();
    let body = json!({"role": "user", "external_id": "u-1", "custom_attributes": {"plan": "pro"}});
    let archived = sandbox.call("PUT", &format!("/data_attributes/{}", created["id"]), Some(json!({"archived": true})));
    assert_eq!((archived.status, &archived.body.unwrap()["archived"]), (200, &json!(true)));
    let refused = sandbox.call("POST", "/contacts", Some(body));
    assert_eq!((refused.status, message(&refused)), (400, "Custom attribute 'plan' does not exist"));
    let unknown = sandbox.call("PUT", "/data_attributes/999", Some(json!({"archived": true})));
    assert_eq!((unknown.status, code(&unknown)), (404, "field_not_found"));
}

#[test]
fn a_write_with_a_value_outside_a_list_attributes_options_or_of_the_wrong_type_is_refused_whole() {
    let options = SandboxOptions {
        seed_attributes: vec![
            SeedAttribute::new("contact", "tier", "string").with_options(&["gold", "silver"]),
            SeedAttribute::new("contact", "logins", "integer"),
            SeedAttribute::new("contact", "score", "float"),
            SeedAttribute::new("contact", "beta", "boolean"),
            SeedAttribute::new("contact", "renews_at", "date"),
            SeedAttribute::new("company", "region", "string").with_options(&["emea", "apac"]),
        ],
        ..SandboxOptions::default()
    };
    let mut sandbox = Sandbox::new(options);
    let user = |custom: Value| json!({"role": "user", "external_id": "u-1", "custom_attributes": custom});
    for (custom, expected) in [
        (json!({"tier": "bronze"}), "Custom attribute 'tier' has no option 'bronze'"),
        (json!({"logins": 1.5}), "Custom attribute 'logins' must be an integer"),
        (json!({"logins": "3"}), "Custom attribute 'logins' must be an integer"),
        (json!({"score": "high"}), "Custom attribute 'score' must be a number"),
        (json!({"beta": "true"}), "Custom attribute 'beta' must be a boolean"),
        (
            json!({"renews_at": "2026-01-01"}),
            "Custom attribute 'renews_at' must be a date in Unix seconds (an integer)",
        ),
        (json!({"logins": 3, "tier": "bronze"}), "Custom attribute 'tier' has no option 'bronze'"),
    ] {
        let refused = sandbox.call("POST", "/contacts", Some(user(custom)));
        assert_eq!((refused.status, message(&refused)), (400, expected));
    }
    assert!(sandbox.state.contacts.is_empty(), "nothing of a refused write is kept");
    let good = json!({"tier": "gold", "logins": 3, "score": 2, "beta": true, "renews_at": 1767225600});
    let id = sandbox.contact(user(good));
    let cleared = sandbox.call("PUT", &format!("/contacts/{id}"), Some(json!({"custom_attributes": {"tier": null}})));
    assert_eq!(cleared.status, 200, "null clears a value");
    assert!(!sandbox.state.contacts[&id].custom_attributes.contains_key("tier"));
    let company = json!({"company_id": "org-1", "custom_attributes": {"region": "mars"}});
    let refused = sandbox.call("POST", "/companies", Some(company));
    assert_eq!((refused.status, message(&refused)), (400, "Custom attribute 'region' has no option 'mars'"));
    assert!(sandbox.state.companies.is_empty());
}

// Event metadata (RULES.md: events).

#[test]
fn event_metadata_takes_strings_numbers_rich_links_and_money_only() {
    let mut sandbox = sandbox();
    sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let event = |n: i64, metadata: Value| json!({"event_name": "ordered", "created_at": n, "user_id": "u-1", "metadata": metadata});
    let good = json!({"source": "desktop", "load": 3.67, "contact_date": 1392036272,
        "article": {"url": "https://example.org/ab1de.html", "value": "the dude abides"},
        "price": {"amount": 34999, "currency": "eur"}});
    assert_eq!(sandbox.call("POST", "/events", Some(event(1, good))).status, 202);
    for (n, metadata, key) in [
        (2, json!({"gift": true}), "gift"),
        (3, json!({"note": null}), "note"),
        (4, json!({"items": [1, 2]}), "items"),
        (5, json!({"nested": {"a": 1}}), "nested"),
        (6, json!({"price": {"amount": 0, "currency": "eur"}}), "price"),
        (7, json!({"price": {"amount": 12.5, "currency": "eur"}}), "price"),
        (8, json!({"price": {"amount": -5, "currency": "eur"}}), "price"),
        (9, json!({"close_date": "2024-05-01"}), "close_date"),
    ] {
        let refused = sandbox.call("POST", "/events", Some(event(n, metadata)));
        assert_eq!((refused.status, code(&refused)), (400, "parameter_invalid"), "{key}");
        assert!(message(&refused).starts_with(&format!("Metadata '{key}' ")), "{refused:?}");
    }
    assert_eq!(sandbox.state.events.len(), 1);
}

// Companies (RULES.md: companies).

#[test]
fn company_sizes_are_integers_and_monthly_spend_is_truncated_to_one() {
    let mut sandbox = sandbox();
    let company = sandbox.call("POST", "/companies", Some(json!({"company_id": "org-1", "monthly_spend": 155.98})));
    assert_eq!(company.body.unwrap()["monthly_spend"], json!(155));
    for (body, field) in [
        (json!({"company_id": "org-1", "monthly_spend": "155"}), "monthly_spend"),
        (json!({"company_id": "org-1", "monthly_spend": 3_000_000_000u64}), "monthly_spend"),
        (json!({"company_id": "org-1", "size": "100"}), "size"),
        (json!({"company_id": "org-1", "size": 10.5}), "size"),
        (json!({"company_id": "org-1", "remote_created_at": "2024-05-01"}), "remote_created_at"),
        (json!({"company_id": "org-1", "name": 7}), "name"),
    ] {
        let refused = sandbox.call("POST", "/companies", Some(body));
        assert_eq!(refused.status, 400, "{field}");
        assert!(message(&refused).starts_with(&format!("'{field}' must be")), "{refused:?}");
    }
    assert_eq!(sandbox.state.companies.values().next().unwrap().fields["monthly_spend"], json!(155));
}

// Search lag and calls that changed nothing (RULES.md: search, changes).

#[test]
fn search_lags_five_seconds_by_default() {
    let mut sandbox = sandbox();
    sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let query = json!({"query": {"field": "external_id", "operator": "=", "value": "u-1"}});
    let found = |answer: SandboxResponse| answer.body.unwrap()["total_count"].as_u64().unwrap();
    assert_eq!(found(sandbox.call_at("POST", "/contacts/search", Some(query.clone()), NOW + 4)), 0);
    assert_eq!(found(sandbox.call_at("POST", "/contacts/search", Some(query), NOW + 5)), 1);
}

#[test]
fn only_calls_that_change_what_the_sandbox_holds_count_as_changes() {
    let mut sandbox = sandbox();
    let changed = |sandbox: &mut Sandbox, method: &str, path: &str, body: Value| {
        let before = sandbox.state.changes;
        sandbox.call(method, path, Some(body));
        sandbox.state.changes != before
    };
    let user = json!({"role": "user", "external_id": "u-1", "name": "Ada"});
    assert!(changed(&mut sandbox, "POST", "/contacts", user.clone()));
    assert!(!changed(&mut sandbox, "POST", "/contacts", user), "a 409");
    let id = sandbox.state.contacts.keys().next().unwrap().clone();
    assert!(!changed(&mut sandbox, "PUT", &format!("/contacts/{id}"), json!({"name": "Ada"})), "the same values");
    let updated_at = sandbox.state.contacts[&id].updated_seq;
    assert!(changed(&mut sandbox, "PUT", &format!("/contacts/{id}"), json!({"name": "Ada L."})));
    assert!(sandbox.state.contacts[&id].updated_seq > updated_at);
    let event = json!({"event_name": "viewed", "created_at": 1, "user_id": "u-1"});
    assert!(changed(&mut sandbox, "POST", "/events", event.clone()));
    assert!(!changed(&mut sandbox, "POST", "/events", event), "a duplicate");
    let company = json!({"company_id": "org-1", "name": "One"});
    assert!(changed(&mut sandbox, "POST", "/companies", company.clone()));
    assert!(!changed(&mut sandbox, "POST", "/companies", company));
    let company_id = sandbox.state.companies.keys().next().unwrap().clone();
    let attach = json!({"id": company_id});
    assert!(changed(&mut sandbox, "POST", &format!("/contacts/{id}/companies"), attach.clone()));
    assert!(!changed(&mut sandbox, "POST", &format!("/contacts/{id}/companies"), attach));
    let attribute = json!({"name": "plan", "model": "contact", "data_type": "string"});
    assert!(changed(&mut sandbox, "POST", "/data_attributes", attribute.clone()));
    assert!(!changed(&mut sandbox, "POST", "/data_attributes", attribute));
    assert!(!changed(&mut sandbox, "POST", &format!("/contacts/{id}/unarchive"), json!({})), "not archived");
    assert!(!changed(&mut sandbox, "POST", "/contacts/search", json!({"query": {}})), "a read");
}

fn tag(sandbox: &mut Sandbox, name: &str) -> String {
    let created = sandbox.call("POST", "/tags", Some(json!({"name": name})));
    assert_eq!(created.status, 200, "{created:?}");
    created.body.unwrap()["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_tag_is_created_once_whatever_the_case_of_its_name_and_the_workspace_lists_it() {
    let mut sandbox = sandbox();
    let created = sandbox.call("POST", "/tags", Some(json!({"name": "VIP"})));
    let id = created.body.as_ref().unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (created.status, created.body.unwrap()),
        (200, json!({"type": "tag", "id": id, "name": "VIP", "users": [], "companies": []}))
    );
    let again = sandbox.call("POST", "/tags", Some(json!({"name": "vip"})));
    assert_eq!(again.body.unwrap()["id"], json!(id), "names are case-insensitive");
    let under_2_15 = sandbox.call_as(Some("2.15"), "POST", "/tags", Some(json!({"name": "VIP"})), NOW);
    assert_eq!(under_2_15.body.unwrap(), json!({"type": "tag", "id": id, "name": "VIP"}), "2.15 answers tag_basic");
    tag(&mut sandbox, "Beta tester");
    let listed = sandbox.call("GET", "/tags", None).body.unwrap();
    assert_eq!(listed["type"], "list");
    let names: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["VIP", "Beta tester"]);
    assert_eq!(
        sandbox.call("GET", &format!("/tags/{id}"), None).body.unwrap(),
        json!({"type": "tag", "id": id, "name": "VIP"})
    );
    let unknown = sandbox.call("GET", "/tags/404", None);
    assert_eq!((unknown.status, code(&unknown), message(&unknown)), (404, "not_found", "Resource Not Found"));
    assert_eq!(sandbox.state.tags.len(), 2);
    assert!(sandbox.state.summary().ends_with(", 2 tags"), "{}", sandbox.state.summary());
}

#[test]
fn a_tag_needs_a_name_without_surrounding_spaces_and_one_kind_of_request() {
    let mut sandbox = sandbox();
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let refused = [
        json!({"test": "invalid"}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": " VIP"}),
        json!({"name": 7}),
        json!({"name": "VIP", "users": []}),
        json!({"name": "VIP", "users": [{"email": "a@x.com"}]}),
        json!({"name": "VIP", "users": [{"id": user, "untag": true}]}),
        json!({"name": "VIP", "companies": [{"name": "One"}]}),
        json!({"name": "VIP", "companies": [{"company_id": "org-1", "untag": false}]}),
        json!({"name": "VIP", "users": [{"id": user}], "companies": [{"company_id": "org-1"}]}),
        json!({"name": "VIP", "id": "1000001", "users": [{"id": user}]}),
    ];
    for body in refused {
        let answer = sandbox.call("POST", "/tags", Some(body.clone()));
        assert_eq!(
            (answer.status, code(&answer), message(&answer)),
            (400, "parameter_invalid", "invalid tag parameters"),
            "{body}"
        );
    }
    assert!(sandbox.state.tags.is_empty(), "a refused request creates no tag");
}

#[test]
fn a_tag_is_renamed_by_its_id() {
    let mut sandbox = sandbox();
    let id = tag(&mut sandbox, "VIP");
    tag(&mut sandbox, "Churned");
    let renamed = sandbox.call("POST", "/tags", Some(json!({"id": id, "name": "Very important"})));
    assert_eq!(renamed.body.unwrap()["name"], "Very important");
    assert_eq!(sandbox.state.tags[&id].name, "Very important");
    assert_eq!(tag(&mut sandbox, "very IMPORTANT"), id, "found by its new name");
    let taken = sandbox.call("POST", "/tags", Some(json!({"id": id, "name": "churned"})));
    assert_eq!((taken.status, message(&taken)), (400, "A tag named 'Churned' already exists"));
    let unknown = sandbox.call("POST", "/tags", Some(json!({"id": "999", "name": "Other"})));
    assert_eq!((unknown.status, message(&unknown)), (404, "Resource Not Found"));
    assert_eq!(sandbox.state.tags.len(), 2);
}

#[test]
fn a_contact_is_tagged_by_tag_id_once_and_its_object_lists_the_tags() {
    let mut sandbox = sandbox();
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let vip = tag(&mut sandbox, "VIP");
    let path = format!("/contacts/{user}/tags");
    let attached = sandbox.call_at("POST", &path, Some(json!({"id": vip})), NOW + 60);
    let expected = json!({"type": "tag", "id": vip, "name": "VIP", "applied_at": NOW + 60,
        "applied_by": {"type": "admin", "id": "991266252"}});
    assert_eq!((attached.status, attached.body.unwrap()), (200, expected.clone()));
    let changes = sandbox.state.changes;
    let again = sandbox.call_at("POST", &path, Some(json!({"id": vip})), NOW + 120);
    assert_eq!(again.body.unwrap(), expected, "already attached: the same answer, applied when it was");
    assert_eq!(sandbox.state.changes, changes, "and nothing changes");
    let beta = tag(&mut sandbox, "Beta");
    let by_number = sandbox.call("POST", &path, Some(json!({"id": beta.parse::<u64>().unwrap()})));
    assert_eq!(by_number.status, 400, "the schema's id is a string; the example's integer is unverified");
    assert_eq!(sandbox.state.contact_tag_names(&user), ["VIP".to_owned()].into(), "nothing attached");
    let by_text = sandbox.call("POST", &path, Some(json!({"id": beta})));
    assert_eq!(by_text.status, 200);
    assert_eq!(sandbox.state.contact_tag_names(&user), ["Beta".to_owned(), "VIP".to_owned()].into());
    let contact = sandbox.call("GET", &format!("/contacts/{user}"), None).body.unwrap();
    assert_eq!(
        contact["tags"],
        json!({"type": "list", "data": [{"type": "tag", "id": vip, "url": format!("/tags/{vip}")},
            {"type": "tag", "id": beta, "url": format!("/tags/{beta}")}],
            "url": path, "total_count": 2, "has_more": false})
    );
    let listed = sandbox.call("GET", &path, None).body.unwrap();
    assert_eq!(listed["type"], "list");
    assert_eq!(listed["data"][0], expected);
    let created = sandbox.call("POST", "/contacts", Some(json!({"role": "lead"}))).body.unwrap();
    assert_eq!(created["tags"]["data"], json!([]), "a new contact carries none");
}

#[test]
fn tagging_a_contact_needs_the_contact_the_tag_and_its_id() {
    let mut sandbox = sandbox();
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let vip = tag(&mut sandbox, "VIP");
    let unknown_contact = sandbox.call("POST", "/contacts/nope/tags", Some(json!({"id": vip})));
    assert_eq!(
        (unknown_contact.status, code(&unknown_contact), message(&unknown_contact)),
        (404, "not_found", "User Not Found")
    );
    let unknown_tag = sandbox.call("POST", &format!("/contacts/{user}/tags"), Some(json!({"id": "123"})));
    assert_eq!(
        (unknown_tag.status, code(&unknown_tag), message(&unknown_tag)),
        (404, "not_found", "Resource Not Found")
    );
    let no_id = sandbox.call("POST", &format!("/contacts/{user}/tags"), Some(json!({"name": "VIP"})));
    assert_eq!((no_id.status, code(&no_id)), (400, "parameter_not_found"));
    let listed = sandbox.call("GET", "/contacts/nope/tags", None);
    assert_eq!((listed.status, message(&listed)), (404, "User Not Found"));
    sandbox.call("POST", &format!("/contacts/{user}/archive"), None);
    let archived = sandbox.call("POST", &format!("/contacts/{user}/tags"), Some(json!({"id": vip})));
    assert_eq!((archived.status, message(&archived)), (404, "User Not Found"));
    assert!(sandbox.state.contacts[&user].tags.is_empty());
}

#[test]
fn a_tag_is_detached_from_a_contact_once_and_then_answers_404() {
    let mut sandbox = sandbox();
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let vip = tag(&mut sandbox, "VIP");
    sandbox.call("POST", &format!("/contacts/{user}/tags"), Some(json!({"id": vip})));
    let path = format!("/contacts/{user}/tags/{vip}");
    let detached = sandbox.call("DELETE", &path, None);
    assert_eq!(detached.status, 200);
    assert_eq!(detached.body.unwrap()["name"], "VIP", "the tag removed");
    assert!(sandbox.state.contacts[&user].tags.is_empty());
    let again = sandbox.call("DELETE", &path, None);
    assert_eq!((again.status, code(&again), message(&again)), (404, "not_found", "Resource Not Found"));
    let unknown = sandbox.call("DELETE", &format!("/contacts/nope/tags/{vip}"), None);
    assert_eq!((unknown.status, message(&unknown)), (404, "User Not Found"));
    assert_eq!(sandbox.state.tags.len(), 1, "the tag stays in the workspace");
}

#[test]
fn under_2_16_post_tags_tags_and_untags_companies_and_skips_those_not_found() {
    let mut sandbox = sandbox();
    let one = sandbox.call("POST", "/companies", Some(json!({"company_id": "org-1"}))).body.unwrap();
    let one = one["id"].as_str().unwrap().to_owned();
    sandbox.call("POST", "/companies", Some(json!({"company_id": "org-2"})));
    let body =
        json!({"name": "Enterprise", "companies": [{"id": one}, {"company_id": "org-2"}, {"company_id": "org-9"}]});
    let tagged = sandbox.call("POST", "/tags", Some(body)).body.unwrap();
    let two = sandbox.state.companies.values().find(|c| c.company_id == "org-2").unwrap().id.clone();
    assert_eq!(
        tagged,
        json!({"type": "tag", "id": tagged["id"], "name": "Enterprise", "users": [],
            "companies": [{"id": one, "tagged": true}, {"id": two, "tagged": true}]}),
        "the tag is created, org-9 skipped"
    );
    assert_eq!(sandbox.state.company_tag_names("org-2"), ["Enterprise".to_owned()].into());
    let shown = sandbox.call("GET", "/companies?company_id=org-1", None).body.unwrap();
    assert_eq!(
        shown["tags"],
        json!({"type": "tag.list", "tags": [{"type": "tag", "id": tagged["id"], "name": "Enterprise"}]})
    );
    let changes = sandbox.state.changes;
    sandbox.call("POST", "/tags", Some(json!({"name": "enterprise", "companies": [{"company_id": "org-1"}]})));
    assert_eq!(sandbox.state.changes, changes, "tagged already");
    let untagged = sandbox.call(
        "POST",
        "/tags",
        Some(json!({"name": "Enterprise", "companies": [{"company_id": "org-1", "untag": true}]})),
    );
    assert_eq!(untagged.body.unwrap()["companies"], json!([{"id": one, "tagged": false}]));
    assert!(sandbox.state.company_tag_names("org-1").is_empty());
    assert_eq!(sandbox.state.company_tag_names("org-2").len(), 1);
    let no_such_tag = sandbox.call(
        "POST",
        "/tags",
        Some(json!({"name": "Gone", "companies": [{"company_id": "org-1", "untag": true}]})),
    );
    assert_eq!((no_such_tag.status, message(&no_such_tag)), (404, "Resource Not Found"));
    assert_eq!(sandbox.state.tags.len(), 1, "untagging creates no tag");
    // One request tags or untags (two schemas), and names a company by one id.
    let changes = sandbox.state.changes;
    let mixed =
        json!({"name": "Enterprise", "companies": [{"company_id": "org-1"}, {"company_id": "org-2", "untag": true}]});
    let both = json!({"name": "Enterprise", "companies": [{"id": one, "company_id": "org-1"}]});
    for body in [mixed, both] {
        let refused = sandbox.call("POST", "/tags", Some(body.clone()));
        assert_eq!((refused.status, message(&refused)), (400, "invalid tag parameters"), "{body}");
    }
    assert_eq!(sandbox.state.changes, changes, "nothing changed");
}

#[test]
fn under_2_15_post_tags_refuses_a_company_or_contact_not_found_and_changes_nothing() {
    let mut sandbox = sandbox();
    sandbox.call("POST", "/companies", Some(json!({"company_id": "org-1"})));
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let call = |sandbox: &mut Sandbox, body: Value| sandbox.call_as(Some("2.15"), "POST", "/tags", Some(body), NOW);
    let changes = sandbox.state.changes;
    let company =
        call(&mut sandbox, json!({"name": "VIP", "companies": [{"company_id": "org-1"}, {"company_id": "org-9"}]}));
    assert_eq!((company.status, code(&company), message(&company)), (404, "company_not_found", "Company Not Found"));
    let contact = call(&mut sandbox, json!({"name": "VIP", "users": [{"id": user}, {"id": "nope"}]}));
    assert_eq!((contact.status, code(&contact), message(&contact)), (404, "not_found", "User Not Found"));
    assert_eq!(sandbox.state.changes, changes);
    assert!(sandbox.state.tags.is_empty() && sandbox.state.contacts[&user].tags.is_empty());
    let tagged = call(&mut sandbox, json!({"name": "VIP", "companies": [{"company_id": "org-1"}]}));
    assert_eq!(
        tagged.body.unwrap(),
        json!({"type": "tag", "id": sandbox.state.tags.keys().next().unwrap(), "name": "VIP"})
    );
}

#[test]
fn post_tags_with_users_tags_users_and_leads_by_id_and_skips_those_not_found() {
    let mut sandbox = sandbox();
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    let lead = sandbox.contact(json!({"role": "lead", "email": "l@x.com"}));
    let body = json!({"name": "Webinar", "users": [{"id": user}, {"id": lead}, {"id": "nope"}, {"id": user}]});
    let tagged = sandbox.call("POST", "/tags", Some(body)).body.unwrap();
    assert_eq!(tagged["users"], json!([{"id": user, "tagged": true}, {"id": lead, "tagged": true}]));
    assert_eq!(tagged["companies"], json!([]));
    assert_eq!(sandbox.state.contact_tag_names(&lead), ["Webinar".to_owned()].into());
    assert_eq!(sandbox.state.contact_tag_names(&user), ["Webinar".to_owned()].into());
}

#[test]
fn a_deleted_tag_leaves_every_contact_and_company() {
    let mut sandbox = sandbox();
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    sandbox.call("POST", "/companies", Some(json!({"company_id": "org-1"})));
    sandbox.call("POST", "/tags", Some(json!({"name": "VIP", "users": [{"id": user}]})));
    sandbox.call("POST", "/tags", Some(json!({"name": "VIP", "companies": [{"company_id": "org-1"}]})));
    let id = sandbox.state.tags.keys().next().unwrap().clone();
    let deleted = sandbox.call("DELETE", &format!("/tags/{id}"), None);
    assert_eq!((deleted.status, deleted.body), (200, None));
    assert!(sandbox.state.tags.is_empty());
    assert!(sandbox.state.contact_tag_names(&user).is_empty() && sandbox.state.company_tag_names("org-1").is_empty());
    assert!(sandbox.state.contacts[&user].tags.is_empty());
    assert_eq!(sandbox.call("DELETE", &format!("/tags/{id}"), None).status, 404);
    assert_ne!(tag(&mut sandbox, "VIP"), id, "the name is free again, under a new id");
}

#[test]
fn a_deleted_contact_is_gone_with_its_events_and_its_external_id_is_free_for_a_new_contact() {
    let mut sandbox = sandbox();
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1", "email": "a@x.com"}));
    let other = sandbox.contact(json!({"role": "user", "external_id": "u-2"}));
    for (user_id, created_at) in [("u-1", 1), ("u-2", 2), ("u-1", 3)] {
        let event = json!({"event_name": "viewed", "created_at": created_at, "user_id": user_id});
        assert_eq!(sandbox.call("POST", "/events", Some(event)).status, 202);
    }
    let vip = tag(&mut sandbox, "VIP");
    sandbox.call("POST", &format!("/contacts/{user}/tags"), Some(json!({"id": vip})));
    let deleted = sandbox.call_at("DELETE", &format!("/contacts/{user}"), None, NOW + 5);
    assert_eq!(
        (deleted.status, deleted.body.unwrap()),
        (200, json!({"type": "contact", "id": user, "external_id": "u-1", "deleted": true}))
    );
    let under_2_15 = sandbox.call_as(Some("2.15"), "DELETE", &format!("/contacts/{other}"), None, NOW);
    assert_eq!(
        under_2_15.body.unwrap(),
        json!({"type": "contact", "id": other, "external_id": "u-2", "deleted": true})
    );
    assert!(sandbox.state.contacts.is_empty());
    assert!(sandbox.state.events.is_empty(), "its events went with it");
    let held = &sandbox.state.deleted_contacts[&user];
    assert_eq!(
        (held.external_id.as_deref(), held.email.as_deref(), held.deleted_at),
        (Some("u-1"), Some("a@x.com"), NOW + 5)
    );
    assert!(sandbox.state.summary().ends_with(", 2 contacts deleted"), "{}", sandbox.state.summary());
    let gone = sandbox.call("GET", &format!("/contacts/{user}"), None);
    assert_eq!((gone.status, message(&gone)), (404, "User Not Found"));
    assert_eq!(sandbox.call("GET", "/contacts/find_by_external_id/u-1", None).status, 404);
    let query = json!({"query": {"field": "external_id", "operator": "=", "value": "u-1"}});
    let found = sandbox.call_at("POST", "/contacts/search", Some(query), NOW + 600).body.unwrap();
    assert_eq!(found["total_count"], 0);
    let event = json!({"event_name": "viewed", "created_at": 4, "user_id": "u-1"});
    assert_eq!(sandbox.call("POST", "/events", Some(event)).status, 404);
    assert_eq!(sandbox.call("PUT", &format!("/contacts/{user}"), Some(json!({"name": "Ada"}))).status, 404);
    let again = sandbox.call("DELETE", &format!("/contacts/{user}"), None);
    assert_eq!((again.status, code(&again), message(&again)), (404, "not_found", "Contact Not Found"));
    let recreated = sandbox.contact(json!({"role": "user", "external_id": "u-1", "email": "a@x.com"}));
    assert_ne!(recreated, user, "a new contact, with a new id");
    assert!(sandbox.state.contacts[&recreated].tags.is_empty(), "and none of the old one's tags");
    let event = json!({"event_name": "viewed", "created_at": 1, "user_id": "u-1"});
    assert_eq!(sandbox.call("POST", "/events", Some(event)).status, 202, "not a duplicate of the deleted one's");
    assert_eq!(sandbox.state.events.len(), 1);
}

#[test]
fn an_archived_contact_is_kept_and_found_again_but_a_deleted_one_is_not() {
    let mut sandbox = sandbox();
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    sandbox.call("POST", &format!("/contacts/{user}/archive"), None);
    let conflict = sandbox.call("POST", "/contacts", Some(json!({"role": "user", "external_id": "u-1"})));
    assert_eq!(conflict.status, 409, "archiving keeps the contact");
    assert_eq!(
        sandbox.call("DELETE", &format!("/contacts/{user}"), None).status,
        200,
        "an archived contact can be deleted"
    );
    assert_eq!(sandbox.call("POST", &format!("/contacts/{user}/unarchive"), None).status, 404);
    sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
}

#[test]
fn a_lead_merged_into_a_deleted_user_is_gone_too() {
    let mut sandbox = sandbox();
    let lead = sandbox.contact(json!({"role": "lead", "email": "l@x.com"}));
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1", "email": "l@x.com"}));
    sandbox.call("POST", "/contacts/merge", Some(json!({"from": lead, "into": user})));
    assert_eq!(sandbox.call("GET", &format!("/contacts/{lead}"), None).status, 410);
    sandbox.call("DELETE", &format!("/contacts/{user}"), None);
    assert_eq!(
        sandbox.call("GET", &format!("/contacts/{lead}"), None).status,
        404,
        "no 410 pointing at a deleted contact"
    );
    assert!(sandbox.state.merged_into.is_empty());
}

#[test]
fn tagging_and_deleting_count_as_changes_only_when_they_change_something() {
    let mut sandbox = sandbox();
    let changed = |sandbox: &mut Sandbox, method: &str, path: &str, body: Option<Value>| {
        let before = sandbox.state.changes;
        sandbox.call(method, path, body);
        sandbox.state.changes != before
    };
    let user = sandbox.contact(json!({"role": "user", "external_id": "u-1"}));
    assert!(changed(&mut sandbox, "POST", "/tags", Some(json!({"name": "VIP"}))));
    assert!(!changed(&mut sandbox, "POST", "/tags", Some(json!({"name": "vip"}))), "held already");
    let vip = sandbox.state.tags.keys().next().unwrap().clone();
    assert!(!changed(&mut sandbox, "POST", "/tags", Some(json!({"id": vip, "name": "VIP"}))), "the same name");
    let attach = format!("/contacts/{user}/tags");
    assert!(changed(&mut sandbox, "POST", &attach, Some(json!({"id": vip}))));
    assert!(!changed(&mut sandbox, "POST", &attach, Some(json!({"id": vip}))), "attached already");
    assert!(!changed(&mut sandbox, "POST", "/tags", Some(json!({"name": "VIP", "users": [{"id": user}]}))));
    assert!(!changed(&mut sandbox, "GET", &attach, None), "a read");
    assert!(changed(&mut sandbox, "DELETE", &format!("{attach}/{vip}"), None));
    assert!(!changed(&mut sandbox, "DELETE", &format!("{attach}/{vip}"), None), "a 404");
    assert!(changed(&mut sandbox, "DELETE", &format!("/contacts/{user}"), None));
    assert!(!changed(&mut sandbox, "DELETE", &format!("/contacts/{user}"), None), "a 404");
}
