//! Destination settings end to end: `replay events/` under the documents in events/settings/ (what the sandbox holds,
//! each skipped event's rule, no call for a skipped event), `serve --settings`, and `intercom-relay settings`.

use std::collections::{BTreeMap, BTreeSet};

use intercom_relay::sandbox::{SandboxOptions, SandboxServer, SandboxState};
use serde_json::{Value, json};

use crate::cli::{by_external_id, post_batch, relay, report, run, scratch, start_serve_with, text};

/// Event names each contact (by external id) holds, in the sandbox.
fn events_of(state: &SandboxState) -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in &state.events {
        let contact = &state.contacts[&event.contact_id];
        let who = contact.external_id.clone().or_else(|| contact.email.clone()).unwrap_or_default();
        names.entry(who).or_default().insert(event.event_name.clone());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_under_the_shop_settings_skips_by_each_rule_and_intercom_holds_only_what_they_let_through() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let output = run(
        &["replay", "events/", "--settings", "events/settings/shop.json", "--intercom-url", &sandbox.url, "--json"],
        &[("INTERCOM_ACCESS_TOKEN", &sandbox.token())],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = report(&output);

    // Each skipped event, by the rule that skipped it (its place in the settings, or in the event's integrations).
    let skipped = report["skipped"].as_array().unwrap();
    let by_rule: BTreeMap<&str, &str> =
        skipped.iter().filter_map(|s| Some((s["message_id"].as_str()?, s.get("skipped_by")?.as_str()?))).collect();
    let expected: BTreeMap<&str, &str> = [
        ("rules-intercom-off", "integrations.Intercom"),
        ("rules-all-off", "integrations.All"),
        ("msg-alias-1", "types"),
        ("seg-alias", "types"),
        ("rules-no-consent", "consent.category"),
        ("rules-internal-page", "trigger_paths[1]"),
        ("rules-admin-page", "trigger_paths[2]"),
        ("rules-order-refunded", "events.deny[0]"),
        ("seg-track-refund-negative-revenue", "events.deny[0]"),
        ("rules-debug-ping", "events.deny[2]"),
        ("rules-coupon-applied", "events.allow"),
        ("seg-track-event-name-with-dots", "events.allow"),
        ("msg-rs-2", "events.allow"),
        ("msg-py-4", "events.allow"),
        ("msg-beacon-1", "events.allow"),
        ("m-5", "events.allow"),
        ("msg-screen-1", "screen"),
        ("seg-screen", "screen"),
        ("seg-identify-context-traits", "identity.lead_from_email"),
        ("seg-identify-lead-by-email", "identity.lead_from_email"),
        ("seg-page-lead-by-context-email", "identity.lead_from_email"),
        ("seg-track-lead-by-properties-email", "identity.lead_from_email"),
    ]
    .into();
    assert_eq!(by_rule, expected);
    let deny = skipped.iter().find(|s| s["message_id"] == "rules-debug-ping").unwrap();
    assert_eq!(deny["reason"], "the event name matches `Debug *`");
    // Skipped events cost no call; the counts add up.
    for event in report["events"].as_array().unwrap().iter().filter(|e| e.get("skipped_by").is_some()) {
        assert_eq!(event["calls"], json!([]), "{event}");
    }
    let (accepted, delivered) = (report["accepted"].as_u64().unwrap(), report["delivered"].as_u64().unwrap());
    let dead = report["dead_lettered"].as_array().unwrap().len() as u64;
    assert_eq!((accepted, delivered, skipped.len() as u64, dead), (60, 34, 25, 1));
    assert_eq!(report["intercom_calls"]["total"].as_u64().unwrap() as usize, sandbox.requests().len());

    let state = sandbox.state();
    let users = by_external_id(&state);
    assert!(state.contacts.values().all(|c| c.role == "user"), "lead_from_email: false makes no leads");
    // identify: allow-listed traits, the context as context_* attributes, no last_seen_at.
    let grace = users["user-5001"];
    assert_eq!(grace.email.as_deref(), Some("grace@example.com"));
    assert_eq!(
        Value::Object(grace.custom_attributes.clone()),
        json!({
            // `role`, a trait here, is the name of one of Intercom's standard attributes: left out.
            "plan": "trial",
            "context_device_type": "mobile", "context_device_manufacturer": "Apple", "context_device_model": "iPhone15,2",
            "context_os_name": "iOS", "context_os_version": "17.4",
            "context_app_name": "Example Shop", "context_app_version": "3.2.1", "context_app_build": "321",
            "context_locale": "en-GB", "context_timezone": "Europe/London"
        })
    );
    assert!(users.values().all(|c| !c.fields.contains_key("last_seen_at")), "update_last_seen: false");
    let ada = users["user-1001"];
    assert!(!ada.custom_attributes.contains_key("verified"), "attributes.allow leaves out traits it does not list");
    assert_eq!(ada.custom_attributes["logins"], 42);
    // Events: renamed, pages under their configured name, nothing denied, screens dropped.
    let events = events_of(&state);
    let names = |user: &str| events[user].iter().map(String::as_str).collect::<BTreeSet<_>>();
    assert_eq!(names("user-5001"), ["checkout step viewed", "signed-up"].into());
    assert_eq!(names("user-5002"), ["order-completed"].into());
    let order = state.events.iter().find(|e| e.event_name == "order-completed" && e.metadata["order_id"] == "ord-9004");
    assert!(order.is_some(), "RudderStack's INTERCOM object turned Intercom back on: {:?}", state.events);
    assert_eq!(state.events.iter().filter(|e| e.event_name == "order-completed").count(), 3);
    assert!(names("user-1001").contains("page viewed"));
    let all: BTreeSet<&str> = state.events.iter().map(|e| e.event_name.as_str()).collect();
    for absent in ["screen_viewed", "page_viewed", "order completed", "order refunded", "debug ping", "coupon applied"]
    {
        assert!(!all.contains(absent), "{absent} in {all:?}");
    }
    assert!(!users["user-5002"].fields.contains_key("email"), "the All-off identify was skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_send_anonymous_id_makes_visitors_users_and_a_default_dont_fire_keeps_only_the_pricing_page() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let output = run(
        &["replay", "events/", "--settings", "events/settings/anonymous-visitors.json", "--intercom-url", &sandbox.url],
        &[("INTERCOM_ACCESS_TOKEN", &sandbox.token())],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("rules-admin-page  (events/segment/destination-rules.ndjson:8): trigger_paths.default: no trigger-path rule matches the page (default: dont_fire)"), "{stdout}");
    let state = sandbox.state();
    let users = by_external_id(&state);
    assert_eq!(users["anon-4001"].custom_attributes["plan"], "free", "the anonymous identify");
    assert_eq!(users["anon-2001"].email.as_deref(), Some("lead@example.com"), "a user keyed by device, not a lead");
    assert!(state.contacts.values().all(|c| c.role == "user"));
    let events = events_of(&state);
    assert!(events["anon-4001"].contains("pricing viewed"), "{events:?}");
    let pages: Vec<&str> = state
        .events
        .iter()
        .filter(|e| e.event_name == "page_viewed")
        .map(|e| e.metadata["url"].as_str().unwrap())
        .collect();
    assert!(!pages.is_empty() && pages.iter().all(|url| url.starts_with("https://example.com/pricing")), "{pages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_settings_file_stops_replay_before_anything_is_sent_and_a_settings_document_is_not_events() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let dir = scratch("bad-settings");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"events": {"deny": ["[oops"]}, "consent": {"when_missing": "deny"}, "paeg": null}"#)
        .unwrap();
    let token = sandbox.token();
    let intercom = ["--intercom-url", &sandbox.url];
    let output = run(
        &[&["replay", "events/segment", "--settings", bad.to_str().unwrap()][..], &intercom].concat(),
        &[("INTERCOM_ACCESS_TOKEN", &token)],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("RELAY_SETTINGS_FILE is invalid: "), "{stderr}");
    for problem in [
        "3 problems:",
        "  events.deny[0]: `[oops` is not a glob pattern: unclosed character class; missing ']'",
        "  consent: needs `category`",
        "  paeg: is not a setting (did you mean `page`?)",
    ] {
        assert!(stderr.contains(problem), "{problem} in {stderr}");
    }
    let args = [&["replay", "events/settings/shop.json"][..], &intercom].concat();
    let named = run(&args, &[("INTERCOM_ACCESS_TOKEN", &token)]).await;
    assert_eq!(named.status.code(), Some(2));
    assert!(
        text(&named.stderr)
            .contains("events/settings/shop.json is a settings document, not events: pass it with --settings")
    );
    assert!(sandbox.requests().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_settings_from_relay_settings_to_what_it_forwards() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let settings = r#"{"events": {"deny": ["Internal *"], "rename": {"Order Completed": "order-completed"}}}"#;
    let served = tokio::task::spawn_blocking({
        let (url, token) = (sandbox.url.clone(), sandbox.token());
        move || start_serve_with(&url, &token, &[("RELAY_SETTINGS", settings)])
    });
    let served = served.await.unwrap();
    let batch = json!({"batch": [
        {"type": "track", "userId": "s-1", "event": "Internal Audit", "messageId": "s-m-1"},
        {"type": "track", "userId": "s-1", "event": "Order Completed", "messageId": "s-m-2", "properties": {"total": 5}},
    ]});
    assert_eq!(post_batch(&served.url, &batch).await, 200);
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || served.stop()).await.unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("2 accepted, 0 rejected; 1 delivered, 1 skipped"), "{stdout}");
    let skipped_line = stderr.lines().find(|l| l.contains("Skipped.")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(skipped_line.contains("skipped_by=\"events.deny[0]\"") && skipped_line.contains("s-m-1"), "{skipped_line}");
    let names: Vec<String> = sandbox.state().events.iter().map(|e| e.event_name.clone()).collect();
    assert_eq!(names, ["order-completed"]);
}

#[test]
fn settings_check_lists_problems_and_schema_prints_the_committed_schema() {
    let check = |file: &str| relay().args(["settings", "check", file]).output().unwrap();
    let valid = check("events/settings/shop.json");
    assert_eq!(valid.status.code(), Some(0), "{}", text(&valid.stderr));
    let stdout = text(&valid.stdout);
    assert!(stdout.starts_with("events/settings/shop.json: valid settings.\n"), "{stdout}");
    assert!(stdout.contains("  types: identify, track, page, screen, group forwarded; alias skipped\n"), "{stdout}");
    assert!(stdout.contains("  screen: skipped (null)\n"), "{stdout}");

    let dir = scratch("settings-check");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"types": ["track", "track"], "trigger_paths": [{"match": "/a", "action": "go"}]}"#)
        .unwrap();
    let invalid = check(bad.to_str().unwrap());
    assert_eq!(invalid.status.code(), Some(1));
    assert_eq!(
        text(&invalid.stderr),
        format!(
            "{}: 2 problems:\n  types[1]: lists track again\n  trigger_paths[0].action: must be \"fire\" or \"dont_fire\", not the string \"go\"\n",
            bad.display()
        )
    );
    let missing = check("no/such/settings.json");
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read no/such/settings.json"));

    let schema = relay().args(["settings", "schema"]).output().unwrap();
    assert!(schema.status.success());
    let printed: Value = serde_json::from_slice(&schema.stdout).unwrap();
    let committed: Value = serde_json::from_str(include_str!("../../crates/lambda/src/settings/settings.schema.json"))
        .expect("the committed schema");
    assert_eq!(printed, committed);
    assert_eq!(printed["title"], "intercom-relay destination settings");
}
