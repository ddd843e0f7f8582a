//! Table tests: each rule on its own and in precedence, the mapping options, and every message the checker gives.

use serde_json::{Value, json};

use super::*;
use crate::event::{BatchDefaults, Event, RawEvent, parse_event, parse_timestamp};
use crate::mapping::{Unmapped, map_with};

fn event(json: &Value) -> Event {
    let text = json.to_string();
    let received = parse_timestamp("2024-05-01T12:00:00Z").unwrap();
    parse_event(&RawEvent::parse(&text).unwrap(), None, &BatchDefaults::default(), received).unwrap()
}

fn settings(json: Value) -> Settings {
    Settings::parse(&json.to_string()).unwrap_or_else(|problems| panic!("{problems}"))
}

/// `Ok(name)` when forwarded (the Intercom event name, if any), `Err(rule)` when skipped.
fn verdict(settings: &Settings, json: &Value) -> Result<Option<String>, String> {
    match settings.evaluate(&event(json)) {
        Verdict::Forward { event_name } => Ok(event_name.map(str::to_owned)),
        Verdict::Skip(skip) => Err(skip.rule),
    }
}

fn shop() -> Settings {
    settings(json!({
        "types": ["identify", "track", "page", "screen", "group"],
        "events": {
            "allow": ["Order *", "Signed *", "Debug *"],
            "deny": ["Order Refunded", "* (test)", "Debug *"],
            "rename": {"Order Completed": "order-completed"}
        },
        "trigger_paths": [
            {"match": "/checkout/*", "action": "fire"},
            {"match": "*/internal/*", "action": "dont_fire"},
            {"match": "https://admin.example.com/*", "action": "dont_fire"}
        ],
        "consent": {"category": "functional"},
        "page": "Page Viewed",
        "screen": null
    }))
}

fn track(name: &str) -> Value {
    json!({"type": "track", "userId": "u-1", "event": name})
}

fn with(mut event: Value, key: &str, value: Value) -> Value {
    event[key] = value;
    event
}

fn on_page(event: Value, url: &str) -> Value {
    with(event, "context", json!({"page": {"url": url}}))
}

fn consent(event: Value, functional: bool) -> Value {
    let mut event = event;
    event["context"]["consent"] = json!({"categoryPreferences": {"Functional": functional, "Advertising": true}});
    event
}

#[test]
fn each_rule_skips_by_its_place_in_the_settings_or_forwards_under_its_name() {
    let shop = shop();
    let alias = json!({"type": "alias", "userId": "u-1", "previousId": "a-1"});
    let page = json!({"type": "page", "userId": "u-1", "name": "Home"});
    let screen = json!({"type": "screen", "userId": "u-1", "name": "Home"});
    type Expected = Result<Option<&'static str>, &'static str>;
    let cases: Vec<(&str, Value, Expected)> = vec![
        ("a plain track", track("Signed Up"), Ok(Some("Signed Up"))),
        (
            "integrations: Intercom off",
            with(track("Signed Up"), "integrations", json!({"Intercom": false})),
            Err("integrations.Intercom"),
        ),
        (
            "integrations: all off",
            with(track("Signed Up"), "integrations", json!({"All": false})),
            Err("integrations.All"),
        ),
        (
            "integrations: all off, Intercom on",
            with(track("Signed Up"), "integrations", json!({"All": false, "Intercom": true})),
            Ok(Some("Signed Up")),
        ),
        (
            "integrations: RudderStack's spelling, options count as on",
            with(track("Signed Up"), "integrations", json!({"all": false, "INTERCOM": {"appId": "x"}})),
            Ok(Some("Signed Up")),
        ),
        (
            "integrations: the key as sent names the rule",
            with(track("Signed Up"), "integrations", json!({"ALL": false})),
            Err("integrations.ALL"),
        ),
        (
            "integrations: a value neither boolean nor object has no say",
            with(track("Signed Up"), "integrations", json!({"All": false, "Intercom": null})),
            Err("integrations.All"),
        ),
        (
            "integrations: other destinations do not matter",
            with(track("Signed Up"), "integrations", json!({"Mixpanel": false})),
            Ok(Some("Signed Up")),
        ),
        ("types", alias.clone(), Err("types")),
        ("consent: granted (any case)", consent(track("Signed Up"), true), Ok(Some("Signed Up"))),
        ("consent: refused", consent(track("Signed Up"), false), Err("consent.category")),
        ("consent: missing, when_missing allow (the default)", track("Signed Up"), Ok(Some("Signed Up"))),
        (
            "trigger paths: the URL matches dont_fire",
            on_page(track("Signed Up"), "https://shop.example.com/internal/x"),
            Err("trigger_paths[1]"),
        ),
        (
            "trigger paths: the path, taken from the URL, matches fire first",
            on_page(track("Signed Up"), "https://shop.example.com/checkout/internal/pay?step=2"),
            Ok(Some("Signed Up")),
        ),
        (
            "trigger paths: a URL pattern",
            on_page(track("Signed Up"), "https://admin.example.com/users"),
            Err("trigger_paths[2]"),
        ),
        (
            "trigger paths: no rule matches, the default fires",
            on_page(track("Signed Up"), "https://shop.example.com/"),
            Ok(Some("Signed Up")),
        ),
        (
            "trigger paths: a page call's own properties",
            with(page.clone(), "properties", json!({"url": "https://shop.example.com/internal/status"})),
            Err("trigger_paths[1]"),
        ),
        ("deny", track("Order Refunded"), Err("events.deny[0]")),
        ("deny: a glob", track("Debug Ping"), Err("events.deny[2]")),
        ("deny: globs are case-sensitive", track("debug ping"), Err("events.allow")),
        ("allow: no pattern matches", track("Coupon Applied"), Err("events.allow")),
        ("rename", track("Order Completed"), Ok(Some("order-completed"))),
        ("page: its configured name", page.clone(), Ok(Some("Page Viewed"))),
        ("screen: null", screen, Err("screen")),
        ("identify: no event name", json!({"type": "identify", "userId": "u-1"}), Ok(None)),
        // Precedence: integrations, then types, consent, trigger paths, allow/deny, then names.
        (
            "integrations before types",
            with(alias.clone(), "integrations", json!({"Intercom": false})),
            Err("integrations.Intercom"),
        ),
        ("types before consent", consent(alias, false), Err("types")),
        (
            "consent before trigger paths",
            consent(on_page(track("Signed Up"), "https://a.example/internal/x"), false),
            Err("consent.category"),
        ),
        (
            "trigger paths before deny",
            on_page(track("Debug Ping"), "https://a.example/internal/x"),
            Err("trigger_paths[1]"),
        ),
        ("deny before allow", track("Order Refunded"), Err("events.deny[0]")),
        ("deny before rename", with(track("Order Completed (test)"), "integrations", json!({})), Err("events.deny[1]")),
    ];
    for (what, event, expected) in cases {
        let expected = expected.map(|name| name.map(str::to_owned)).map_err(str::to_owned);
        assert_eq!(verdict(&shop, &event), expected, "{what}");
    }
}

#[test]
fn without_settings_everything_is_forwarded_but_the_integrations_object_still_counts() {
    let defaults = Settings::defaults();
    assert!(defaults.is_default());
    assert_eq!(verdict(defaults, &track("Anything")), Ok(Some("Anything".into())));
    let page = json!({"type": "page", "userId": "u-1"});
    assert_eq!(verdict(defaults, &page), Ok(Some("page_viewed".into())));
    let screen = json!({"type": "screen", "userId": "u-1"});
    assert_eq!(verdict(defaults, &screen), Ok(Some("screen_viewed".into())));
    let off = with(track("Anything"), "integrations", json!({"intercom": false}));
    assert_eq!(verdict(defaults, &off), Err("integrations.intercom".into()));
    assert_eq!(Settings::parse("{}").unwrap(), Settings::default());
}

#[test]
fn consent_when_missing_deny_and_a_category_left_out_both_skip() {
    let strict = settings(json!({"consent": {"category": "functional", "when_missing": "deny"}}));
    assert_eq!(verdict(&strict, &track("A")), Err("consent.when_missing".into()));
    let no_preferences = with(track("A"), "context", json!({"consent": {}}));
    assert_eq!(verdict(&strict, &no_preferences), Err("consent.when_missing".into()));
    let other_only = with(track("A"), "context", json!({"consent": {"categoryPreferences": {"Advertising": true}}}));
    assert_eq!(verdict(&strict, &other_only), Err("consent.category".into()));
    assert_eq!(verdict(&strict, &consent(track("A"), true)), Ok(Some("A".into())));
}

#[test]
fn trigger_paths_with_a_default_apply_only_to_events_with_page_context() {
    let only_pricing = settings(json!({
        "trigger_paths": {"rules": [{"match": "/pricing*", "action": "fire"}], "default": "dont_fire"}
    }));
    let pricing = on_page(track("A"), "https://example.com/pricing?plan=pro");
    assert_eq!(verdict(&only_pricing, &pricing), Ok(Some("A".into())));
    let elsewhere = on_page(track("A"), "https://example.com/blog");
    assert_eq!(verdict(&only_pricing, &elsewhere), Err("trigger_paths.default".into()));
    let by_path = with(track("A"), "context", json!({"page": {"path": "/blog/2024"}}));
    assert_eq!(verdict(&only_pricing, &by_path), Err("trigger_paths.default".into()));
    assert_eq!(verdict(&only_pricing, &track("A")), Ok(Some("A".into())), "a server-side event has no page");
    let nothing_fires = settings(json!({"trigger_paths": {"rules": [], "default": "dont_fire"}}));
    assert_eq!(verdict(&nothing_fires, &pricing), Err("trigger_paths.default".into()));
    assert_eq!(verdict(&nothing_fires, &track("A")), Ok(Some("A".into())));
    // A '/' in the query or the fragment is not the path.
    let no_admin = settings(json!({"trigger_paths": [{"match": "/admin/*", "action": "dont_fire"}]}));
    for url in ["https://shop.example.com?next=/admin/users", "https://shop.example.com#/admin/users"] {
        assert_eq!(verdict(&no_admin, &on_page(track("A"), url)), Ok(Some("A".into())), "{url}");
    }
    assert_eq!(
        verdict(&no_admin, &on_page(track("A"), "https://shop.example.com/admin/users?x=1")),
        Err("trigger_paths[0]".into())
    );
    let listed = settings(json!({"trigger_paths": [{"match": "/pricing*", "action": "dont_fire"}]}));
    let Verdict::Skip(skip) = listed.evaluate(&event(&pricing)) else { panic!("skipped") };
    assert_eq!(
        skip,
        Skip { rule: "trigger_paths[0]".into(), reason: "the page matches `/pricing*` (dont_fire)".into() }
    );
}

fn plan(settings: &Settings, json: Value) -> Result<Value, Unmapped> {
    map_with(&event(&json), settings).map(|plan| serde_json::to_value(plan).unwrap())
}

#[test]
fn identity_options_choose_the_contact() {
    let anonymous = settings(json!({"identity": {"send_anonymous_id": true}}));
    let visitor = json!({"type": "track", "anonymousId": "a-1", "event": "Pricing Viewed"});
    assert_eq!(plan(&anonymous, visitor.clone()).unwrap()["operations"][0]["contact"], json!({"external_id": "a-1"}));
    assert_eq!(plan(Settings::defaults(), visitor), Err(Unmapped::Skipped(crate::mapping::NO_CONTACT_IDENTIFIER)));
    let identify = json!({"type": "identify", "anonymousId": "a-1", "traits": {"email": "a@example.com"}});
    let upsert = &plan(&anonymous, identify.clone()).unwrap()["operations"][0];
    assert_eq!((&upsert["key"], &upsert["role"]), (&json!({"external_id": "a-1"}), &json!("user")));
    assert_eq!(upsert["attributes"]["email"], "a@example.com");
    let user_first = json!({"type": "identify", "userId": "u-1", "anonymousId": "a-1"});
    assert_eq!(plan(&anonymous, user_first).unwrap()["operations"][0]["key"], json!({"external_id": "u-1"}));

    let no_leads = settings(json!({"identity": {"lead_from_email": false}}));
    let Err(Unmapped::SkippedBy(skip)) = plan(&no_leads, identify.clone()) else { panic!("skipped") };
    assert_eq!(skip.rule, "identity.lead_from_email");
    let tracked =
        json!({"type": "track", "anonymousId": "a-1", "event": "E", "properties": {"email": "a@example.com"}});
    assert!(matches!(plan(&no_leads, tracked), Err(Unmapped::SkippedBy(s)) if s.rule == "identity.lead_from_email"));
    assert_eq!(plan(Settings::defaults(), identify).unwrap()["operations"][0]["role"], "lead");
}

#[test]
fn identify_options_add_context_leave_last_seen_alone_and_allow_listed_traits_only() {
    let options = settings(json!({
        "identify": {"include_context": true, "update_last_seen": false},
        "attributes": {"allow": ["plan", "address"]}
    }));
    let identify = json!({
        "type": "identify", "userId": "u-1", "timestamp": "2024-05-01T12:00:00Z",
        "traits": {"email": "a@example.com", "plan": "pro", "address": {"city": "Leeds"}, "secret_score": 9, "context_locale": "fr"},
        "context": {
            "device": {"type": "mobile", "model": "Pixel 8", "advertisingId": "ad-1", "id": "device-1"},
            "os": {"name": "Android", "version": "14"}, "app": {"name": "Shop", "build": 321},
            "locale": "en-GB", "timezone": "Europe/London", "ip": "203.0.113.9"
        }
    });
    let planned = map_with(&event(&identify), &options).unwrap();
    let serde_json::Value::Object(upsert) = serde_json::to_value(&planned.operations[0]).unwrap() else { panic!() };
    assert_eq!(upsert["attributes"], json!({"email": "a@example.com"}), "no last_seen_at");
    assert_eq!(
        upsert["custom_attributes"],
        json!({
            "plan": "pro", "address_city": "Leeds",
            "context_device_type": "mobile", "context_device_model": "Pixel 8",
            "context_os_name": "Android", "context_os_version": "14",
            "context_app_name": "Shop", "context_app_build": 321,
            "context_locale": "en-GB", "context_timezone": "Europe/London"
        }),
        "device ids, the IP and traits not allowed are left out; context_* from context, not from a trait it does not allow"
    );
    let dropped: Vec<(&str, &str)> = planned.dropped.iter().map(|d| (d.path.as_str(), d.reason)).collect();
    assert_eq!(
        dropped,
        [
            ("traits.secret_score", "attributes.allow does not list it"),
            ("traits.context_locale", "attributes.allow does not list it")
        ]
    );
    let defaults = map_with(&event(&identify), Settings::defaults()).unwrap();
    let defaults = serde_json::to_value(&defaults.operations[0]).unwrap();
    assert_eq!(defaults["attributes"]["last_seen_at"], 1714564800);
    assert_eq!(defaults["custom_attributes"]["secret_score"], 9);
    assert!(defaults["custom_attributes"].get("context_device_type").is_none());
}

#[test]
fn create_missing_is_read_from_the_document() {
    assert_eq!(Settings::defaults().create_missing(), None);
    assert_eq!(settings(json!({"attributes": {"create_missing": false}})).create_missing(), Some(false));
}

/// Every problem of `document`, as `path: message` lines.
fn problems(document: &str) -> Vec<String> {
    match Settings::parse(document) {
        Ok(_) => panic!("{document} was accepted"),
        Err(Problems(found)) => found.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_check_error_names_its_path() {
    let cases: &[(&str, &[&str])] = &[
        ("{\"types\": [\"track\",]}", &["is not JSON: trailing comma at line 1 column 20"]),
        ("[]", &["must be an object, not a list"]),
        (r#"{"event": {}}"#, &["event: is not a setting (did you mean `events`?)"]),
        (
            r#"{"colour": "red"}"#,
            &[
                "colour: is not a setting (known here: $schema, types, events, trigger_paths, consent, identity, identify, page, screen, attributes, tags)",
            ],
        ),
        (
            r#"{"types": ["track", "purchase"]}"#,
            &[
                r#"types[1]: must be one of "identify", "track", "page", "screen", "group", "alias", not the string "purchase""#,
            ],
        ),
        (r#"{"types": "track"}"#, &["types: must be a list, not the string \"track\""]),
        (r#"{"types": ["track", "page", "track"]}"#, &["types[2]: lists track again"]),
        (r#"{"events": {"allow": "Order *"}}"#, &["events.allow: must be a list or null, not the string \"Order *\""]),
        (
            r#"{"events": {"deny": ["ok", "[abc"]}}"#,
            &["events.deny[1]: `[abc` is not a glob pattern: unclosed character class; missing ']'"],
        ),
        (
            r#"{"events": {"rename": {"Order Completed": ""}}}"#,
            &[r#"events.rename["Order Completed"]: must not be empty"#],
        ),
        (r#"{"events": {"rename": {"A": 1}}}"#, &["events.rename.A: must be a string, not the number 1"]),
        (r#"{"events": {"denied": []}}"#, &["events.denied: is not a setting (did you mean `deny`?)"]),
        (
            r#"{"trigger_paths": "/checkout"}"#,
            &["trigger_paths: must be a list or an object, not the string \"/checkout\""],
        ),
        (r#"{"trigger_paths": [{"match": "/a"}]}"#, &["trigger_paths[0]: needs `action`"]),
        (
            r#"{"trigger_paths": [{"match": "/a", "action": "skip"}]}"#,
            &[r#"trigger_paths[0].action: must be "fire" or "dont_fire", not the string "skip""#],
        ),
        (
            r#"{"trigger_paths": [{"match": "/a{b", "action": "fire"}]}"#,
            &[
                "trigger_paths[0].match: `/a{b` is not a glob pattern: unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)",
            ],
        ),
        (
            r#"{"trigger_paths": {"rules": [], "default": "never"}}"#,
            &[r#"trigger_paths.default: must be "fire" or "dont_fire", not the string "never""#],
        ),
        (r#"{"trigger_paths": [{"match": "", "action": "fire"}]}"#, &["trigger_paths[0].match: must not be empty"]),
        (r#"{"consent": {"when_missing": "deny"}}"#, &["consent: needs `category`"]),
        (
            r#"{"consent": {"category": "functional", "when_missing": "ask"}}"#,
            &[r#"consent.when_missing: must be "allow" or "deny", not the string "ask""#],
        ),
        (r#"{"consent": "functional"}"#, &["consent: must be an object or null, not the string \"functional\""]),
        (
            r#"{"identity": {"send_anonymous_id": "yes"}}"#,
            &["identity.send_anonymous_id: must be true or false, not the string \"yes\""],
        ),
        (
            r#"{"identify": {"include_context": 1}}"#,
            &["identify.include_context: must be true or false, not the number 1"],
        ),
        (r#"{"page": 42}"#, &["page: must be a string or null, not the number 42"]),
        (r#"{"screen": ""}"#, &["screen: must not be empty"]),
        (r#"{"page": "  "}"#, &["page: must name an event, or be null to skip these calls"]),
        (
            r#"{"attributes": {"allow": ["plan", "a[b"]}}"#,
            &["attributes.allow[1]: `a[b` is not a glob pattern: unclosed character class; missing ']'"],
        ),
        (
            r#"{"attributes": {"create_missing": "no"}}"#,
            &["attributes.create_missing: must be true or false or null, not the string \"no\""],
        ),
        (r#"{"page": "A", "page": null}"#, &["page: is given twice (only one may be)"]),
        // Every problem at once, in document order.
        (
            r#"{"types": ["tracks"], "events": {"deny": [1]}, "consent": {"category": "x", "extra": true}, "pages": null}"#,
            &[
                r#"types[0]: must be one of "identify", "track", "page", "screen", "group", "alias", not the string "tracks""#,
                "events.deny[0]: must be a string, not the number 1",
                "consent.extra: is not a setting (known here: category, when_missing)",
                "pages: is not a setting (did you mean `page`?)",
            ],
        ),
    ];
    for (document, expected) in cases {
        assert_eq!(problems(document), *expected, "{document}");
    }
}

#[test]
fn problems_read_as_one_line_or_a_list() {
    let one = Settings::parse(r#"{"page": 1}"#).unwrap_err().to_string();
    assert_eq!(one, "page: must be a string or null, not the number 1");
    let two = Settings::parse(r#"{"page": 1, "screen": 2}"#).unwrap_err().to_string();
    assert_eq!(
        two,
        "2 problems:\n  page: must be a string or null, not the number 1\n  screen: must be a string or null, not the number 2"
    );
}

#[test]
fn the_committed_schema_is_the_generated_one_and_the_samples_follow_it() {
    let committed: Value = serde_json::from_str(include_str!("settings.schema.json")).unwrap();
    assert!(
        committed == schema(),
        "src/settings/settings.schema.json is stale: run `cargo run -- settings schema > src/settings/settings.schema.json`"
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/settings");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = Settings::parse(&text).unwrap_or_else(|problems| panic!("{}: {problems}", path.display()));
        assert!(!parsed.is_default(), "{} changes nothing", path.display());
        checked += 1;
    }
    assert!(checked >= 2);
}

#[test]
fn a_list_too_large_to_compile_together_is_a_problem_not_an_empty_list() {
    // Each pattern compiles alone; 7,000 of them overflow the matcher's size limit together. The deny list used to be
    // left empty then, so every event it named was forwarded.
    let patterns: Vec<String> = (0..7000).map(|i| format!("[a-z]*{{x,y}}?[!0-9]*{i}*[A-Z]?**/?*e{i}")).collect();
    let problems = Settings::parse(&json!({"events": {"deny": patterns}}).to_string()).unwrap_err();
    assert_eq!(problems.0.len(), 1, "{problems}");
    assert_eq!(problems.0[0].path, "events.deny");
    assert!(problems.0[0].message.starts_with("its 7000 patterns cannot be compiled together: "), "{problems}");
}

#[test]
fn empty_type_and_name_lists_are_refused_as_they_would_skip_everything() {
    let problems = Settings::parse(r#"{"types": [], "events": {"allow": []}}"#).unwrap_err();
    let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["types", "events.allow"], "{problems}");
    for problem in &problems.0 {
        assert!(problem.message.starts_with("is empty, which would skip every event it covers"), "{problems}");
        assert!(problem.message.ends_with("or leave it out for the default"), "{problems}");
    }
    // The published schema says so too, for editors.
    let schema = schema();
    assert_eq!(schema["properties"]["types"]["minItems"], 1, "{schema:#}");
    // An empty attribute list is a choice (only Intercom's own fields), not a slip.
    assert!(Settings::parse(r#"{"attributes": {"allow": []}}"#).is_ok());
}

#[test]
fn a_document_made_in_code_is_checked_against_the_schema_too() {
    // An empty name is what only the schema's minLength refuses.
    let document = Document { page: Some(String::new()), ..Document::default() };
    let problems = Settings::from_document(document).unwrap_err();
    assert_eq!(problems.0.len(), 1, "{problems}");
    assert_eq!(problems.0[0].path, "page", "{problems}");
    assert!(Settings::from_document(Document::default()).is_ok());
}
