//! Tags from `traits.tags` and an operator's erasure of a person: what the sandbox (over HTTP) ends up holding, through
//! the real forwarder, the CLI and moto's queue.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use intercom_relay::sandbox::{SandboxOptions, SandboxServer, SandboxState};
use intercom_relay_lambda::erasure::ErasureRequest;
use intercom_relay_lambda::forward::{ForwardOptions, Forwarder, Outcome};
use intercom_relay_lambda::intercom::IntercomClient;
use intercom_relay_lambda::queue::{MESSAGE_GROUP_ID, MemoryDeadLetter, SqsPoller, SqsQueue, sqs_event_of};
use intercom_relay_lambda::settings::Settings;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cli::{run, text};
use crate::forward_batch::{envelope, fifo_queue, quick, record};
use crate::helpers::{forwarder, options, post, send};
use crate::sqs::{FAST_DEADLINE, client, endpoint, fast_retry};

/// A sandbox whose search sees new contacts at once (erasure finds leads by search).
async fn sandbox() -> SandboxServer {
    SandboxServer::start(SandboxOptions { search_lag: 0, ..SandboxOptions::default() }, 0).await.unwrap()
}

async fn handle(forwarder: &Forwarder<IntercomClient, MemoryDeadLetter>, events: &[Value]) -> Vec<Outcome> {
    let mut records = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let mut record = record(&format!("r-{n}"), envelope(event.clone()).await, 1);
        record.attributes.insert(MESSAGE_GROUP_ID.into(), "lane".into());
        records.push(record);
    }
    let report = forwarder.handle(&sqs_event_of(records), Instant::now() + Duration::from_secs(30)).await;
    report.records.into_iter().map(|r| r.outcome).collect()
}

/// The names of the tags the contact with this external_id carries.
fn contact_tags(state: &SandboxState, external_id: &str) -> BTreeSet<String> {
    let contact = state.contacts.values().find(|c| c.external_id.as_deref() == Some(external_id)).unwrap();
    state.contact_tag_names(&contact.id)
}

fn tag_calls(sandbox: &SandboxServer) -> usize {
    sandbox.requests().iter().filter(|r| r.path.starts_with("/tags") || r.path.contains("/tags")).count()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn an_identifys_tags_are_added_once_and_a_tag_the_contact_carries_costs_no_call() {
    let sandbox = sandbox().await;
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    let outcomes = handle(
        &forwarder,
        &[json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada", "tags": [" VIP ", "Beta", ""]}})],
    )
    .await;
    assert!(matches!(outcomes[0], Outcome::Delivered { .. }), "{outcomes:?}");
    let state = sandbox.state();
    assert_eq!(contact_tags(&state, "u-1"), names(&["VIP", "Beta"]));
    // GET /tags once, two tags made, two attached.
    assert_eq!(tag_calls(&sandbox), 5);
    // Warm, the same list, and one more: only the new tag costs calls; nothing is removed by default.
    let outcomes =
        handle(&forwarder, &[json!({"type": "identify", "userId": "u-1", "traits": {"tags": ["vip", "Beta"]}})]).await;
    assert!(matches!(outcomes[0], Outcome::Delivered { .. }), "{outcomes:?}");
    assert_eq!(tag_calls(&sandbox), 5, "tags the contact carries cost no call");
    let outcomes =
        handle(&forwarder, &[json!({"type": "identify", "userId": "u-1", "traits": {"tags": ["Gold"]}})]).await;
    assert!(matches!(outcomes[0], Outcome::Delivered { .. }), "{outcomes:?}");
    assert_eq!(contact_tags(&sandbox.state(), "u-1"), names(&["VIP", "Beta", "Gold"]));
    assert_eq!(tag_calls(&sandbox), 7);
}

#[tokio::test]
async fn a_tag_deleted_in_intercom_since_it_was_learned_is_made_again_and_attached() {
    let sandbox = sandbox().await;
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    let vip = |user: &str| json!({"type": "identify", "userId": user, "traits": {"tags": ["VIP"]}});
    assert!(matches!(handle(&forwarder, &[vip("u-1")]).await[0], Outcome::Delivered { .. }));
    // An agent deletes the tag in Intercom; the warm function still knows its id.
    let id = sandbox.state().tags.values().find(|t| t.name == "VIP").unwrap().id.clone();
    let deleted = reqwest::Client::new()
        .delete(format!("{}/tags/{id}", sandbox.url))
        .bearer_auth(sandbox.token())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let outcomes = handle(&forwarder, &[vip("u-2")]).await;
    assert!(matches!(outcomes[0], Outcome::Delivered { .. }), "{outcomes:?}");
    let state = sandbox.state();
    assert_eq!(contact_tags(&state, "u-2"), names(&["VIP"]));
    assert_ne!(state.tags.values().find(|t| t.name == "VIP").unwrap().id, id, "made again");
}

#[tokio::test]
async fn with_remove_missing_the_list_is_the_whole_set_for_contacts_and_companies() {
    let sandbox = sandbox().await;
    let settings = Arc::new(Settings::parse(r#"{"tags": {"remove_missing": true}}"#).unwrap());
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick()).with_settings(settings);
    handle(
        &forwarder,
        &[
            json!({"type": "identify", "userId": "u-1", "traits": {"tags": ["VIP", "Beta"]}}),
            json!({"type": "group", "userId": "u-1", "groupId": "org-1", "traits": {"name": "Org", "tags": ["enterprise", "eu"]}}),
        ],
    )
    .await;
    let state = sandbox.state();
    assert_eq!(
        (contact_tags(&state, "u-1"), state.company_tag_names("org-1")),
        (names(&["VIP", "Beta"]), names(&["enterprise", "eu"]))
    );
    let outcomes = handle(
        &forwarder,
        &[
            json!({"type": "identify", "userId": "u-1", "traits": {"tags": ["Beta"]}}),
            json!({"type": "group", "userId": "u-1", "groupId": "org-1", "traits": {"tags": ["eu"]}}),
            // Without `tags`, nothing changes.
            json!({"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}}),
        ],
    )
    .await;
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Delivered { .. })), "{outcomes:?}");
    let state = sandbox.state();
    assert_eq!((contact_tags(&state, "u-1"), state.company_tag_names("org-1")), (names(&["Beta"]), names(&["eu"])));
}

#[tokio::test]
async fn an_erasure_deletes_the_user_and_when_asked_the_leads_holding_their_address_and_says_so() {
    let sandbox = sandbox().await;
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    handle(
        &forwarder,
        &[
            json!({"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}}),
            json!({"type": "track", "userId": "u-1", "event": "Signed In"}),
            json!({"type": "identify", "userId": "u-2", "traits": {"email": "bob@example.com"}}),
        ],
    )
    .await;
    // A lead from before Ada signed up, holding her address.
    let http = reqwest::Client::new();
    let made = http
        .post(format!("{}/contacts", sandbox.url))
        .bearer_auth(sandbox.token())
        .json(&json!({"role": "lead", "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    let request = ErasureRequest::new(Some("u-1".into()), None, true).unwrap();
    let event = sqs_event_of(vec![erasure_record(&request)]);
    let report = forwarder.handle(&event, Instant::now() + Duration::from_secs(30)).await;
    match &report.records[0].outcome {
        Outcome::Erased { contacts, notes, .. } => assert_eq!((contacts.len(), notes.len()), (2, 0), "{notes:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.records[0].event_type.as_deref(), Some("erasure"));
    let state = sandbox.state();
    let left: Vec<Option<&str>> = state.contacts.values().map(|c| c.email.as_deref()).collect();
    assert_eq!(left, [Some("bob@example.com")], "Ada and her lead are gone, Bob stays");
    assert!(state.events.iter().all(|e| state.contacts.contains_key(&e.contact_id)), "her events went with her");
    // Nobody left to erase: said so, nothing deleted.
    let report = forwarder.handle(&event, Instant::now() + Duration::from_secs(30)).await;
    assert!(
        matches!(&report.records[0].outcome, Outcome::Erased { contacts, notes, .. }
            if contacts.is_empty() && notes == &["no user has this userId"]),
        "{report:?}"
    );
}

#[tokio::test]
async fn an_erasure_by_email_takes_every_contact_holding_it_and_names_what_it_did() {
    let sandbox = sandbox().await;
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    handle(
        &forwarder,
        &[
            json!({"type": "identify", "userId": "u-1", "traits": {"email": "shared@example.com"}}),
            json!({"type": "identify", "userId": "u-2", "traits": {"email": "shared@example.com"}}),
        ],
    )
    .await;
    let request = ErasureRequest::new(None, Some("shared@example.com".into()), false).unwrap();
    let report =
        forwarder.handle(&sqs_event_of(vec![erasure_record(&request)]), Instant::now() + Duration::from_secs(30)).await;
    assert!(
        matches!(&report.records[0].outcome, Outcome::Erased { contacts, notes, .. }
            if contacts.len() == 2 && notes == &["2 users held the email; all were erased"]),
        "{report:?}"
    );
    assert!(sandbox.state().contacts.is_empty());
}

#[tokio::test]
async fn an_erasure_by_an_unknown_user_id_with_more_leads_than_a_page_says_so_and_the_next_takes_the_rest() {
    let sandbox = sandbox().await;
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    let http = reqwest::Client::new();
    for _ in 0..6 {
        let made = http
            .post(format!("{}/contacts", sandbox.url))
            .bearer_auth(sandbox.token())
            .json(&json!({"role": "lead", "email": "visitor@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 200);
    }
    let request = ErasureRequest::new(Some("u-unknown".into()), Some("visitor@example.com".into()), true).unwrap();
    let event = sqs_event_of(vec![erasure_record(&request)]);
    let report = forwarder.handle(&event, Instant::now() + Duration::from_secs(30)).await;
    match &report.records[0].outcome {
        Outcome::Erased { contacts, notes, .. } => {
            assert_eq!(contacts.len(), 5, "one page of the search");
            assert!(notes.contains(&"6 contacts hold the email; only the first page was read: ask again".to_owned()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sandbox.state().contacts.len(), 1, "one lead left, and said so");
    let report = forwarder.handle(&event, Instant::now() + Duration::from_secs(30)).await;
    assert!(
        matches!(&report.records[0].outcome, Outcome::Erased { contacts, .. } if contacts.len() == 1),
        "{report:?}"
    );
    assert!(sandbox.state().contacts.is_empty());
}

fn erasure_record(request: &ErasureRequest) -> intercom_relay_lambda::queue::SqsRecord {
    let mut record = record(&format!("erasure-{}", request.request_id), request.to_body(), 1);
    record.attributes.insert(MESSAGE_GROUP_ID.into(), request.ordering_key().to_owned());
    record
}

#[tokio::test]
async fn the_cli_erases_here_and_names_what_it_did() {
    let sandbox = sandbox().await;
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    handle(&forwarder, &[json!({"type": "identify", "userId": "u-9", "traits": {"email": "nine@example.com"}})]).await;
    // As docs/erasure.md gives it (against the sandbox instead of --live).
    let output = run(
        &["erase", "--user-id", "u-9", "--leads", "--intercom-url", &sandbox.url],
        &[("INTERCOM_ACCESS_TOKEN", &sandbox.token())],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("erased 1 contacts in "), "{stdout}");
    assert!(sandbox.state().contacts.is_empty());
    let refused = run(&["erase", "--leads"], &[]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("erase: name the person: a userId, an email, or both"),
        "{}",
        text(&refused.stderr)
    );
}

#[tokio::test]
async fn an_erasure_sent_to_the_queue_runs_after_the_persons_queued_events_and_a_write_key_cannot_send_one() {
    let sqs = client(&endpoint());
    let queue_url = fifo_queue(&sqs, 5).await;
    let ingest = intercom_relay_lambda::ingest::Ingest::new(
        options(),
        SqsQueue::new(sqs.clone(), &queue_url, fast_retry(), FAST_DEADLINE),
    );
    let batch = json!({"batch": [
        {"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}},
        {"type": "track", "userId": "u-1", "event": "Signed In"}
    ]});
    assert_eq!(send(&ingest, post("/v1/batch", &batch.to_string())).await.status.as_u16(), 200);
    // Through the CLI, with AWS credentials (moto's), as an operator would.
    let output = run(
        &["erase", "--user-id", "u-1", "--queue-url", &queue_url],
        &[
            ("AWS_ENDPOINT_URL_SQS", &endpoint()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("queued erasure "), "{}", text(&output.stdout));
    // A write key cannot ask: the ingest API knows no such event, and an erasure body is no event.
    let refused =
        send(&ingest, post("/v1/batch", &json!({"batch": [{"type": "erasure", "userId": "u-2"}]}).to_string())).await;
    assert_ne!(refused.body["success"], json!(true), "{}", refused.body);
    assert!(refused.body.to_string().contains("must be one of"), "refused for its type: {}", refused.body);
    let body = ErasureRequest::new(Some("u-2".into()), None, false).unwrap().to_body();
    let refused = send(&ingest, post("/v1/track", &body)).await;
    assert_eq!(refused.status.as_u16(), 400, "{}", refused.body);

    let sandbox = sandbox().await;
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), ForwardOptions { ..quick() });
    let poller = SqsPoller::new(sqs.clone(), &queue_url, Duration::from_secs(1));
    let mut kinds = Vec::new();
    for _ in 0..6 {
        let event = poller.receive(10).await.unwrap();
        if event.records.is_empty() {
            continue;
        }
        let report = forwarder.handle(&event, Instant::now() + Duration::from_secs(30)).await;
        poller.acknowledge(&event, &report.handed_back()).await.unwrap();
        kinds.extend(report.records.iter().map(|r| r.event_type.clone().unwrap_or_default()));
        if kinds.len() == 3 {
            break;
        }
    }
    assert_eq!(kinds, ["identify", "track", "erasure"], "in the person's lane, in order");
    let rest = poller.receive(10).await.unwrap();
    assert!(rest.records.is_empty(), "nothing a write key sent is queued: {:?}", rest.records);
    assert!(sandbox.state().contacts.is_empty(), "erased after the events queued before it");
}

/// Ingest with a server key and a browser key, in front of an in-memory queue.
fn app_with_browser_key() -> intercom_relay_lambda::ingest::Ingest<intercom_relay_lambda::queue::MemoryQueue> {
    use secrecy::SecretString;
    let keys = intercom_relay_lambda::ingest::WriteKeys::with_browser_keys(
        &[SecretString::from("server-key")],
        &[SecretString::from("browser-key")],
    )
    .unwrap();
    let options = intercom_relay_lambda::ingest::IngestOptions { write_keys: keys, ..options() };
    intercom_relay_lambda::ingest::Ingest::new(options, intercom_relay_lambda::queue::MemoryQueue::new())
}

#[tokio::test]
async fn a_browser_key_cannot_create_an_attribute_set_an_owner_or_tag_and_a_server_key_can() {
    let app = app_with_browser_key();
    let identify = |key: &str, user: &str| {
        json!({"writeKey": key, "batch": [{"type": "identify", "userId": user,
            "traits": {"owner_id": "991266252", "unsubscribedFromEmails": true, "favourite_colour": "red",
                       "plan": "pro", "tags": ["VIP"]}}]})
        .to_string()
    };
    for (key, user) in [("browser-key", "u-browser"), ("server-key", "u-server")] {
        let body = identify(key, user);
        let headers = [("content-type", "application/json")];
        let answer = send(&app, crate::helpers::request("POST", "/v1/batch", &headers, Some(body.as_bytes()))).await;
        assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    }
    let messages = app.queue().messages();
    assert!(messages[0].body.contains(r#""key":"browser""#) && !messages[1].body.contains(r#""key""#));
    let sandbox = sandbox().await;
    // The workspace already has `plan`; settings let browsers create nothing else.
    sandbox.seed_attribute(&intercom_relay::sandbox::SeedAttribute::new("contact", "plan", "string"));
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    let records: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(n, m)| {
            let mut r = record(&format!("r-{n}"), m.body.clone(), 1);
            r.attributes.insert(MESSAGE_GROUP_ID.into(), m.ordering_key.clone());
            r
        })
        .collect();
    let report = forwarder.handle(&sqs_event_of(records), Instant::now() + Duration::from_secs(30)).await;
    assert!(report.records.iter().all(|r| matches!(r.outcome, Outcome::Delivered { .. })), "{report:?}");
    let state = sandbox.state();
    let contact = |user: &str| state.contacts.values().find(|c| c.external_id.as_deref() == Some(user)).unwrap();
    let (browser, server) = (contact("u-browser"), contact("u-server"));
    assert_eq!(browser.custom_attributes.get("plan"), Some(&json!("pro")), "an attribute the workspace has is set");
    assert_eq!(browser.custom_attributes.get("favourite_colour"), None, "none is created");
    assert_eq!((browser.fields.get("owner_id"), browser.fields.get("unsubscribed_from_emails")), (None, None));
    assert!(browser.tags.is_empty());
    assert_eq!(server.custom_attributes.get("favourite_colour"), Some(&json!("red")));
    assert!(server.fields.get("owner_id").is_some_and(|owner| owner.to_string().contains("991266252")), "{server:?}");
    assert_eq!(server.fields.get("unsubscribed_from_emails"), Some(&json!(true)));
    assert_eq!(server.tags.len(), 1);
}
