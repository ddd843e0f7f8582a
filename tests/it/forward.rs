//! The executor against the sandbox over HTTP: what Intercom ends up holding, and what it cost in calls.

use std::num::NonZeroUsize;
use std::time::Duration;

use intercom_relay::event::{BatchDefaults, RawEvent, parse_event};
use intercom_relay::forward::{Delivery, Executor, Patience};
use intercom_relay::intercom::{IntercomApi, IntercomClient};
use intercom_relay::mapping::map_event;
use intercom_relay::sandbox::{SandboxOptions, SandboxServer, SandboxState};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::sandbox_client;

async fn sandbox() -> SandboxServer {
    SandboxServer::start(SandboxOptions::default(), 0).await.unwrap()
}

fn executor(sandbox: &SandboxServer, create_attributes: bool) -> Executor<IntercomClient> {
    let client = sandbox_client(sandbox, &sandbox.token(), Duration::from_secs(5));
    Executor::new(client, create_attributes, NonZeroUsize::new(1000).unwrap())
}

async fn deliver(executor: &Executor<IntercomClient>, event: Value) -> Delivery {
    let text = event.to_string();
    let raw = RawEvent::parse(&text).unwrap();
    let event = parse_event(&raw, None, &BatchDefaults::default(), OffsetDateTime::now_utc()).unwrap();
    executor.execute(&map_event(&event).unwrap(), Patience::once()).await.unwrap()
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
    assert_eq!(first.calls, 4, "list attributes, create plan, create logins, create the contact");
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
async fn attributes_intercom_lacks_are_dropped_when_creating_them_is_off() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, false);
    let delivery = deliver(&executor, json!({"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}})).await;
    assert_eq!(delivery.dropped.len(), 1, "{delivery:?}");
    let state = sandbox.state();
    assert!(only_contact(&state).custom_attributes.is_empty());
    assert!(state.data_attributes.is_empty());
}

#[tokio::test]
async fn an_alias_merges_the_previous_lead_into_the_user() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    let lead = json!({"role": "lead", "external_id": "anon-1", "email": "l@example.com"});
    executor.api().call(Method::POST, "/contacts", Some(&lead)).await.unwrap();
    deliver(&executor, json!({"type": "identify", "userId": "u-1", "traits": {}})).await;
    let delivery = deliver(&executor, json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"})).await;
    assert_eq!(delivery.skipped, None);
    assert_eq!(only_contact(&sandbox.state()).external_id.as_deref(), Some("u-1"));
}

#[tokio::test]
async fn an_alias_for_contacts_intercom_never_saw_is_skipped_with_the_reason() {
    let sandbox = sandbox().await;
    let delivery =
        deliver(&executor(&sandbox, true), json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"})).await;
    assert_eq!(delivery.skipped, Some("alias_previous_contact_unknown"));
    assert!(sandbox.state().contacts.is_empty());
}

#[tokio::test]
async fn a_lead_is_found_by_email_and_several_matches_never_make_another() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    let lead = json!({"role": "lead", "email": "l@example.com"});
    let older = executor.api().call(Method::POST, "/contacts", Some(&lead)).await.unwrap();
    let newer = executor.api().call(Method::POST, "/contacts", Some(&lead)).await.unwrap();
    let path = format!("/contacts/{}", older["id"].as_str().unwrap());
    executor.api().call(Method::PUT, &path, Some(&json!({"phone": "+1 555 0100"}))).await.unwrap();
    let identify =
        json!({"type": "identify", "anonymousId": "a-1", "traits": {"email": "l@example.com", "name": "Lea"}});
    let delivery = deliver(&executor, identify.clone()).await;
    assert_eq!(delivery.calls, 2, "search by email, update the most recently updated");
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 2, "no third lead");
    assert_eq!(state.contacts[older["id"].as_str().unwrap()].fields["name"], "Lea");
    assert!(!state.contacts[newer["id"].as_str().unwrap()].fields.contains_key("name"));
    assert_eq!(deliver(&executor, identify).await.calls, 1, "then from the cache");
}

#[tokio::test]
async fn a_new_lead_is_searched_for_then_created() {
    let sandbox = sandbox().await;
    let executor = executor(&sandbox, true);
    let identify = json!({"type": "identify", "anonymousId": "a-1", "traits": {"email": "new@example.com"}});
    assert_eq!(deliver(&executor, identify).await.calls, 2);
    let state = sandbox.state();
    let lead = only_contact(&state);
    assert_eq!((lead.role.as_str(), lead.email.as_deref()), ("lead", Some("new@example.com")));
}
