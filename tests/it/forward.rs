//! The executor against the sandbox over HTTP: what Intercom ends up holding, and what it cost in calls.

use std::num::NonZeroUsize;
use std::time::Duration;

use intercom_relay::sandbox::{SandboxOptions, SandboxServer, SandboxState};
use intercom_relay_lambda::event::{BatchDefaults, RawEvent, parse_event};
use intercom_relay_lambda::forward::{ALIAS_PREVIOUS_UNKNOWN, Delivery, Executor};
use intercom_relay_lambda::intercom::{IntercomApi, IntercomClient};
use intercom_relay_lambda::mapping::map_event;
use intercom_relay_lambda::retry::RetryPolicy;
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::sandbox_client;

async fn sandbox() -> SandboxServer {
    SandboxServer::start(SandboxOptions::default(), 0).await.unwrap()
}

/// A sandbox whose search index has caught up with everything it holds: for contacts older than the index's lag.
async fn indexed_sandbox() -> SandboxServer {
    SandboxServer::start(SandboxOptions { search_lag: 0, ..SandboxOptions::default() }, 0).await.unwrap()
}

fn executor(sandbox: &SandboxServer, create_attributes: bool) -> Executor<IntercomClient> {
    let client = sandbox_client(sandbox, &sandbox.token(), Duration::from_secs(5));
    Executor::new(client, create_attributes, NonZeroUsize::new(1000).unwrap())
}

fn executor_for(sandbox: &SandboxServer, version: &str) -> Executor<IntercomClient> {
    let token = secrecy::SecretString::from(sandbox.token());
    let version = intercom_relay_lambda::intercom::ApiVersion::parse(version).unwrap();
    let client = IntercomClient::new(&sandbox.url, token, version, Duration::from_secs(5)).unwrap();
    Executor::new(client, true, NonZeroUsize::new(1000).unwrap())
}

fn dropped_paths(delivery: &Delivery) -> Vec<&str> {
    delivery.dropped.iter().map(|d| d.path.as_str()).collect()
}

async fn deliver(executor: &Executor<IntercomClient>, event: Value) -> Delivery {
    let text = event.to_string();
    let raw = RawEvent::parse(&text).unwrap();
    let event = parse_event(&raw, None, &BatchDefaults::default(), OffsetDateTime::now_utc()).unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(3600);
    executor.execute(&map_event(&event).unwrap(), RetryPolicy::ONCE, until).await.unwrap()
}

fn only_contact(state: &SandboxState) -> &intercom_relay::sandbox::Contact {
    assert_eq!(state.contacts.len(), 1, "{:?}", state.contacts);
    state.contacts.values().next().unwrap()
}

#[tokio::test]
async fn identify_creates_the_contact_and_its_custom_attributes_then_updates_it_from_the_cache() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    let identify =
        json!({"type": "identify", "userId": "u-1", "traits": {"email": "a@example.com", "plan": "pro", "logins": 3}});
    let first = deliver(&executor, identify.clone()).await;
    assert_eq!(first.calls, 5, "both models' attributes listed once, plan and logins created, the contact created");
    let second = deliver(&executor, identify).await;
    assert_eq!(second.calls, 1, "a warm cache updates in one call");
    let state = sandbox.state();
    let contact = only_contact(&state);
    assert_eq!((contact.external_id.as_deref(), contact.role.as_str()), (Some("u-1"), "user"));
    assert_eq!(Value::Object(contact.custom_attributes.clone()), json!({"plan": "pro", "logins": 3}));
    assert_eq!(state.data_attributes["contact"]["logins"], "integer");
}

#[tokio::test]
async fn two_forwarders_racing_on_a_new_user_leave_one_contact() {
    let sandbox = sandbox().await;
    let (one, two) = (executor(&sandbox, true), executor(&sandbox, true));
    let identify = json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada"}});
    deliver(&one, identify.clone()).await;
    let second = deliver(&two, json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada L."}})).await;
    assert_eq!(second.calls, 2, "a 409 names the contact, which is then updated");
    assert_eq!(only_contact(&sandbox.state()).fields["name"], "Ada L.");
}

#[tokio::test]
async fn a_track_before_its_identify_creates_the_contact_and_is_not_lost() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    let delivery = deliver(
        &executor,
        json!({"type": "track", "userId": "u-9", "event": "Signed Up", "properties": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(delivery.calls, 3, "404, create the contact, send again");
    let state = sandbox.state();
    assert_eq!(only_contact(&state).external_id.as_deref(), Some("u-9"));
    assert_eq!((state.events.len(), state.events[0].event_name.as_str()), (1, "signed up"));
}

#[tokio::test]
async fn a_group_before_identify_creates_the_contact_so_the_company_shows() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    deliver(
        &executor,
        json!({"type": "group", "userId": "u-1", "groupId": "org-1", "traits": {"name": "One", "employees": 12}}),
    )
    .await;
    let state = sandbox.state();
    let company = state.companies.values().next().unwrap();
    assert_eq!((company.company_id.as_str(), &company.fields["size"]), ("org-1", &json!(12)));
    assert_eq!(only_contact(&state).companies, std::slice::from_ref(&company.id));
}

#[tokio::test]
async fn a_group_for_a_known_user_not_in_the_cache_finds_them_without_a_write_that_changes_nothing() {
    let sandbox = sandbox().await;
    deliver(&executor(&sandbox, true), json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada"}})).await;
    let cold = executor(&sandbox, true);
    let before = sandbox.requests().len();
    let delivery = deliver(&cold, json!({"type": "group", "userId": "u-1", "groupId": "org-1", "traits": {}})).await;
    assert_eq!(delivery.calls, 3, "upsert the company, find the user by external id, attach");
    let calls: Vec<String> = sandbox.requests()[before..].iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(calls[1], "GET /contacts/find_by_external_id/u-1", "{calls:?}");
    assert!(sandbox.requests()[before..].iter().all(|r| r.changed || r.is_read()), "{calls:?}");
    assert_eq!(only_contact(&sandbox.state()).companies.len(), 1);
}

#[tokio::test]
async fn detaching_from_a_company_intercom_never_held_creates_nothing() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    deliver(&executor, json!({"type": "identify", "userId": "u-1", "traits": {}})).await;
    let remove = json!({"type": "identify", "userId": "u-1", "traits": {"company": {"id": "org-9", "remove": true}}});
    let delivery = deliver(&executor, remove).await;
    assert_eq!(delivery.calls, 2, "the update, then a lookup of the company that finds none");
    assert!(sandbox.state().companies.is_empty(), "{:?}", sandbox.state().companies);
    let calls: Vec<String> = sandbox.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(calls.iter().all(|c| !c.contains("companies") || c.starts_with("GET")), "{calls:?}");
}

#[tokio::test]
async fn attributes_intercom_lacks_are_dropped_when_creating_them_is_off() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, false);
    let delivery = deliver(&executor, json!({"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}})).await;
    assert_eq!(delivery.dropped.len(), 1, "{delivery:?}");
    let state = sandbox.state();
    assert!(only_contact(&state).custom_attributes.is_empty());
    assert!(state.data_attributes.values().all(|model| model.is_empty()));
}

#[tokio::test]
async fn one_trait_intercom_cannot_hold_is_left_out_and_the_rest_of_the_identify_lands() {
    use intercom_relay::sandbox::SeedAttribute;
    let sandbox = sandbox().await;
    sandbox.seed_attribute(&SeedAttribute::new("contact", "tier", "string").with_options(&["gold", "silver"]));
    sandbox.seed_attribute(&SeedAttribute::new("contact", "legacy", "string").archived());
    sandbox.seed_attribute(&SeedAttribute::new("company", "industry_code", "string"));
    sandbox.seed_attribute(&SeedAttribute::new("contact", "seats", "integer"));
    let executor = executor(&sandbox, true);
    let traits = json!({
        "name": "Ada",
        "tier": "bronze",            // not among the list's options
        "legacy": "x",               // archived
        "industry_code": "A1",       // a company attribute's name
        "seats": "many",             // an integer attribute
        "browser": "Firefox",        // one of Intercom's standard attributes
        "plan": "pro",
    });
    let delivery = deliver(&executor, json!({"type": "identify", "userId": "u-1", "traits": traits})).await;
    let mut paths = dropped_paths(&delivery);
    paths.sort();
    assert_eq!(
        paths,
        [
            "custom_attributes.browser",
            "custom_attributes.industry_code",
            "custom_attributes.legacy",
            "custom_attributes.seats",
            "custom_attributes.tier"
        ],
        "{delivery:?}"
    );
    let state = sandbox.state();
    let contact = only_contact(&state);
    assert_eq!((contact.fields["name"].as_str(), &contact.custom_attributes["plan"]), (Some("Ada"), &json!("pro")));
    assert_eq!(contact.custom_attributes.len(), 1, "{:?}", contact.custom_attributes);
}

#[tokio::test]
async fn time_like_traits_become_date_attributes_in_unix_seconds_and_nulls_create_nothing() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    let traits = json!({"trial_ends_at": 1714564800123u64, "renewal": "2024-05-01T12:00:00Z", "nickname": null});
    deliver(&executor, json!({"type": "identify", "userId": "u-1", "traits": traits})).await;
    let state = sandbox.state();
    let contact = only_contact(&state);
    assert_eq!(contact.custom_attributes["trial_ends_at"], json!(1714564800));
    assert_eq!(contact.custom_attributes["renewal"], json!(1714564800));
    let attributes = &state.data_attributes["contact"];
    assert_eq!(attributes["trial_ends_at"], "date");
    assert_eq!(attributes["renewal"], "date");
    assert!(!attributes.contains_key("nickname"), "{attributes:?}");
}

#[tokio::test]
async fn an_owner_who_is_no_admin_is_left_out_and_an_admin_is_sent_in_the_versions_type() {
    for version in ["2.16", "2.15"] {
        let sandbox = sandbox().await;
        let executor = executor_for(&sandbox, version);
        let stranger = json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada", "owner_id": 12345}});
        let delivery = deliver(&executor, stranger).await;
        assert_eq!(dropped_paths(&delivery), ["traits.owner_id"], "{version}");
        assert_eq!(only_contact(&sandbox.state()).fields["name"], "Ada", "{version}");
        let admin = json!({"type": "identify", "userId": "u-1", "traits": {"ownerId": "991266252"}});
        deliver(&executor, admin).await;
        let expected = if version == "2.16" { json!("991266252") } else { json!(991266252) };
        assert_eq!(only_contact(&sandbox.state()).fields["owner_id"], expected, "{version}");
    }
}

#[tokio::test]
async fn a_warm_identify_by_email_never_demotes_the_user_holding_that_address() {
    let sandbox = indexed_sandbox().await;
    let executor = executor(&sandbox, true);
    deliver(&executor, json!({"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}})).await;
    let by_email =
        json!({"type": "identify", "anonymousId": "a-1", "traits": {"email": "ada@example.com", "name": "Ada"}});
    deliver(&executor, by_email.clone()).await;
    let warm = deliver(&executor, by_email).await;
    assert_eq!(warm.calls, 1, "from the cache");
    let state = sandbox.state();
    let contact = only_contact(&state);
    assert_eq!((contact.role.as_str(), contact.fields["name"].as_str()), ("user", Some("Ada")));
}

/// The search index's lag in the visitor tests: short, so they wait it out.
const LAG: Duration = Duration::from_secs(2);

/// A visitor who left an email (a lead, on one forwarder), then signed up as a user sharing nothing with the lead (on
/// another: the two travel in different FIFO groups), the alias arriving before or after the lead. The alias cannot see
/// the other forwarder's new lead until the index catches up, so it is handed back (as the batch does) and tried again.
async fn visitor_then_user(alias_first: bool) -> (SandboxServer, Vec<Delivery>) {
    let sandbox = SandboxServer::start(SandboxOptions { search_lag: LAG.as_secs(), ..SandboxOptions::default() }, 0)
        .await
        .unwrap();
    let (visitor_lane, user_lane) = (executor(&sandbox, true), executor(&sandbox, true));
    let lead = json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "visitor@example.com"}});
    let viewed = json!({"type": "track", "anonymousId": "anon-1", "event": "Pricing Viewed",
        "context": {"traits": {"email": "visitor@example.com"}}});
    let signup = json!({"type": "identify", "userId": "u-1", "traits": {"email": "ada@work.example"}});
    let alias = json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"});
    let mut deliveries = Vec::new();
    deliveries.push(deliver(&user_lane, signup).await);
    if alias_first {
        deliveries.push(deliver(&user_lane, alias.clone()).await);
    }
    deliveries.push(deliver(&visitor_lane, lead).await);
    deliveries.push(deliver(&visitor_lane, viewed).await);
    if !alias_first {
        deliveries.push(deliver(&user_lane, alias.clone()).await);
    }
    let first_alias = if alias_first { &deliveries[1] } else { deliveries.last().unwrap() };
    assert_eq!(first_alias.skipped, Some(ALIAS_PREVIOUS_UNKNOWN), "{deliveries:?}");
    tokio::time::sleep(LAG + Duration::from_millis(1100)).await;
    deliveries.push(deliver(&user_lane, alias).await);
    (sandbox, deliveries)
}

async fn assert_merged_into_the_user(alias_first: bool) {
    let (sandbox, deliveries) = visitor_then_user(alias_first).await;
    assert_eq!(deliveries.last().unwrap().skipped, None, "{deliveries:?}");
    let state = sandbox.state();
    let contact = only_contact(&state);
    assert_eq!((contact.role.as_str(), contact.external_id.as_deref()), ("user", Some("u-1")));
    assert_eq!(state.events.len(), 1);
    assert_eq!(state.events[0].contact_id, contact.id, "the lead's event moved to the user");
}

#[tokio::test]
async fn an_alias_merges_the_visitors_lead_and_its_events_into_the_user_they_became() {
    assert_merged_into_the_user(false).await;
}

#[tokio::test]
async fn an_alias_arriving_before_the_visitors_lead_waits_for_it_then_merges() {
    assert_merged_into_the_user(true).await;
}

#[tokio::test]
async fn an_identify_naming_the_user_and_the_visitor_merges_the_visitors_lead_and_a_later_alias_is_done() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    let lead = json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "visitor@example.com"}});
    deliver(&executor, lead).await;
    let signup = json!({"type": "identify", "userId": "u-1", "anonymousId": "anon-1", "traits": {"name": "Ada"}});
    deliver(&executor, signup).await;
    // analytics.js sends each call in its own request: the identify can overtake the alias made before it.
    let alias = deliver(&executor, json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"})).await;
    assert_eq!(alias.skipped, None, "{alias:?}");
    let other = deliver(&executor, json!({"type": "alias", "userId": "u-2", "previousId": "anon-1"})).await;
    assert_eq!(other.skipped, Some(ALIAS_PREVIOUS_UNKNOWN), "merged into another user: still unknown for u-2");
    let state = sandbox.state();
    assert_eq!(only_contact(&state).external_id.as_deref(), Some("u-1"));
}

#[tokio::test]
async fn an_alias_for_a_visitor_who_became_no_user_yet_makes_the_lead_that_user() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    deliver(&executor, json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "v@example.com"}}))
        .await;
    let delivery = deliver(&executor, json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"})).await;
    assert_eq!(delivery.skipped, None);
    let state = sandbox.state();
    let contact = only_contact(&state);
    assert_eq!((contact.role.as_str(), contact.external_id.as_deref()), ("user", Some("u-1")));
}

#[tokio::test]
async fn a_forwarder_holding_a_merged_leads_id_follows_it_to_the_user() {
    let sandbox = indexed_sandbox().await;
    let (warm, other) = (executor(&sandbox, true), executor(&sandbox, true));
    let lead = json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "v@example.com"}});
    deliver(&warm, lead.clone()).await;
    deliver(&other, lead).await; // the other forwarder learns the lead too, then merges it away
    deliver(&other, json!({"type": "identify", "userId": "u-1", "traits": {}})).await;
    deliver(&other, json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"})).await;
    let track = json!({"type": "track", "anonymousId": "anon-1", "event": "Came Back",
        "context": {"traits": {"email": "v@example.com"}}});
    deliver(&warm, track).await;
    let state = sandbox.state();
    let contact = only_contact(&state);
    assert_eq!(state.events.iter().map(|e| &e.contact_id).collect::<Vec<_>>(), [&contact.id]);
    assert_eq!(contact.external_id.as_deref(), Some("u-1"));
}

#[tokio::test]
async fn an_alias_for_contacts_intercom_never_saw_is_skipped_with_the_reason() {
    let sandbox = sandbox().await;
    let delivery =
        deliver(&executor(&sandbox, true), json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"})).await;
    assert_eq!(delivery.skipped, Some(ALIAS_PREVIOUS_UNKNOWN));
    assert!(sandbox.state().contacts.is_empty());
}

#[tokio::test]
async fn a_lead_is_found_by_email_and_several_matches_never_make_another() {
    let sandbox = indexed_sandbox().await;
    let executor = executor(&sandbox, true);
    let lead = json!({"role": "lead", "email": "l@example.com"});
    let older = executor.api().call(Method::POST, "/contacts", Some(&lead)).await.unwrap();
    let newer = executor.api().call(Method::POST, "/contacts", Some(&lead)).await.unwrap();
    let path = format!("/contacts/{}", older["id"].as_str().unwrap());
    executor.api().call(Method::PUT, &path, Some(&json!({"phone": "+1 555 0100"}))).await.unwrap();
    let identify =
        json!({"type": "identify", "traits": {"email": "l@example.com", "name": "Lea"}, "anonymousId": "a-1"});
    let delivery = deliver(&executor, identify.clone()).await;
    assert_eq!(delivery.calls, 5, "two attribute lists, anonymous_id created, search by email, update");
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 2, "no third lead");
    assert_eq!(state.contacts[older["id"].as_str().unwrap()].fields["name"], "Lea");
    assert!(!state.contacts[newer["id"].as_str().unwrap()].fields.contains_key("name"));
    assert_eq!(deliver(&executor, identify).await.calls, 1, "then from the cache");
}

#[tokio::test]
async fn a_new_lead_is_searched_for_then_created_without_an_external_id() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    let identify = json!({"type": "identify", "anonymousId": "a-1", "traits": {"email": "new@example.com"}});
    assert_eq!(deliver(&executor, identify).await.calls, 5, "attributes listed and anonymous_id created once");
    let second = json!({"type": "identify", "anonymousId": "a-2", "traits": {"email": "other@example.com"}});
    assert_eq!(deliver(&executor, second).await.calls, 2, "search, create");
    let state = sandbox.state();
    let lead = state.contacts.values().find(|c| c.email.as_deref() == Some("new@example.com")).unwrap();
    assert_eq!((lead.role.as_str(), lead.external_id.as_deref()), ("lead", None));
    assert_eq!(lead.custom_attributes["anonymous_id"], "a-1");
}

#[tokio::test]
async fn a_value_intercom_still_refuses_is_left_out_and_the_write_sent_again_without_it() {
    use intercom_relay::sandbox::SeedAttribute;
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    deliver(&executor, json!({"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}})).await;
    // Made after this warm function read the workspace's attributes: it cannot know the list's options.
    sandbox.seed_attribute(&SeedAttribute::new("contact", "tier", "string").with_options(&["gold", "silver"]));
    let identify = json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada", "tier": "bronze-7f3a"}});
    let (logs, guard) = crate::helpers::Captured::start(tracing::Level::WARN, true);
    let delivery = deliver(&executor, identify).await;
    drop(guard);
    assert_eq!(dropped_paths(&delivery), ["custom_attributes.tier"], "{delivery:?}");
    // Intercom's message quotes the value it refused ("Custom attribute 'tier' has no option '…'"): the log keeps the
    // attribute's name, which the request used as a key, and not the event's value.
    let text = logs.text();
    assert!(text.contains("Custom attribute 'tier' has no option '…'"), "{text}");
    assert!(!text.contains("bronze-7f3a"), "{text}");
    let last: Vec<(String, u16)> =
        sandbox.requests().iter().rev().take(2).rev().map(|r| (r.method.clone(), r.status)).collect();
    assert_eq!(last, [("PUT".to_owned(), 400), ("PUT".to_owned(), 200)], "refused whole, then sent without it");
    let state = sandbox.state();
    let contact = only_contact(&state);
    assert_eq!(contact.fields["name"], "Ada");
    assert!(!contact.custom_attributes.contains_key("tier"));
}

/// One person's backoff holds nobody else back: while one identify waits to try again to create its new attribute
/// (Intercom answering 5xx), another person's identify is written. The executor once held the workspace's lock across
/// that creation and its retry sleeps, so the second write came only after the first person's last try.
#[tokio::test]
async fn one_persons_backoff_does_not_delay_another_persons_write() {
    use intercom_relay::sandbox::{Faults, SeedAttribute};
    let faults = Faults { seed: 3, server_errors: 1.0, only_matching: Some("flaky_attr".into()), ..Faults::default() };
    let sandbox = SandboxServer::start(SandboxOptions { faults, ..SandboxOptions::default() }, 0).await.unwrap();
    sandbox.seed_attribute(&SeedAttribute::new("contact", "tier", "string"));
    let executor = executor(&sandbox, true);
    let plan = |event: Value| {
        let text = event.to_string();
        let raw = RawEvent::parse(&text).unwrap();
        let event = parse_event(&raw, None, &BatchDefaults::default(), OffsetDateTime::now_utc()).unwrap();
        map_event(&event).unwrap()
    };
    let backing_off = plan(json!({"type": "identify", "userId": "u-a", "traits": {"flaky_attr": "x"}}));
    let other = plan(json!({"type": "identify", "userId": "u-b", "traits": {"tier": "gold"}}));
    let retry = RetryPolicy { attempts: 3, min_delay: Duration::from_millis(700), max_delay: Duration::from_secs(1) };
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let creates = |sandbox: &SandboxServer| {
        let requests = sandbox.requests();
        requests.iter().filter(|r| r.method == "POST" && r.path == "/data_attributes").count()
    };
    let first = executor.execute(&backing_off, retry, until);
    let second = async {
        // Once the first person's create has failed once, they are in their backoff.
        while creates(&sandbox) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delivered = executor.execute(&other, retry, until).await;
        (delivered, creates(&sandbox))
    };
    let (first, (second, creates_before_second_was_done)) = tokio::join!(first, second);
    assert!(first.is_err(), "the first person's attribute never gets created");
    assert_eq!(second.unwrap().calls, 1, "the second person's write, its attributes known already");
    assert_eq!(creates(&sandbox), 3, "the first person tried three times");
    assert!(creates_before_second_was_done < 3, "the second write waited for the first person's last try");
    let state = sandbox.state();
    let written = state.contacts.values().find(|c| c.external_id.as_deref() == Some("u-b")).expect("u-b written");
    assert_eq!(Value::Object(written.custom_attributes.clone()), json!({"tier": "gold"}));
}
