//! The identity store through whole forwarders: what was last written is not written again, an alias is not handed
//! back, a write through a user's address makes their own key's record unknown, and an event Intercom keeps answering
//! 5xx for is dead-lettered after its tries.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use intercom_relay::sandbox::{SandboxOptions, SandboxServer};
use intercom_relay_lambda::forward::{Executor, ForwardOptions, Forwarder, Outcome, WriteMemory};
use intercom_relay_lambda::identity::MemoryIdentities;
use intercom_relay_lambda::intercom::{ApiVersion, IntercomApi, IntercomClient, IntercomError};
use intercom_relay_lambda::queue::{MemoryDeadLetter, sqs_event_of, sqs_record};
use intercom_relay_lambda::retry::RetryPolicy;
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::forward_batch::{envelope, record};
use crate::helpers::sandbox_client;
use crate::identities::lagging;

/// A forwarder (one cold start) sharing `store`, its failures tried once.
fn batch_forwarder(
    sandbox: &SandboxServer,
    store: &Arc<MemoryIdentities>,
    options: ForwardOptions,
) -> Forwarder<IntercomClient, MemoryDeadLetter> {
    let client = sandbox_client(sandbox, &sandbox.token(), Duration::from_secs(5));
    let executor = Executor::new(client, true, NonZeroUsize::new(1000).unwrap()).with_identities(store.clone());
    Forwarder::new(executor, MemoryDeadLetter::new(), options)
}

/// Each event as the only record of its own SQS batch: what became of it.
async fn outcomes<A: IntercomApi>(forwarder: &Forwarder<A, MemoryDeadLetter>, events: &[Value]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let record = record(&format!("r-{n}"), envelope(event.clone()).await, 1);
        let report = forwarder.handle(&sqs_event_of(vec![record]), Instant::now() + Duration::from_secs(30)).await;
        outcomes.push(report.records[0].outcome.clone());
    }
    outcomes
}

fn calls(outcomes: &[Outcome]) -> Vec<usize> {
    outcomes
        .iter()
        .map(|outcome| match outcome {
            Outcome::Delivered { calls } => *calls,
            other => panic!("not delivered: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn an_identify_or_group_sending_what_was_written_again_makes_no_call_and_a_change_writes_only_itself() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let store = Arc::new(MemoryIdentities::new());
    let forwarder = batch_forwarder(&sandbox, &store, ForwardOptions::default());
    let identify = |plan: &str, at: &str| json!({"type": "identify", "userId": "u-1", "timestamp": at, "traits": {"name": "Ada", "plan": plan}});
    let group = json!({"type": "group", "userId": "u-1", "groupId": "org-1", "traits": {"name": "Org", "seats": 3}});
    let events = [
        identify("pro", "2026-12-07T10:00:00Z"),
        group.clone(),
        // The same again (a page load), and last_seen_at moved by less than LAST_SEEN_RESOLUTION: no call.
        identify("pro", "2026-12-07T10:20:00Z"),
        group.clone(),
        // One trait changed: one call, with that trait alone (and last_seen_at along with it).
        identify("team", "2026-12-07T10:40:00Z"),
        // last_seen_at alone, an hour and more after it was written: one call.
        identify("team", "2026-12-07T11:45:00Z"),
    ];
    let made = calls(&outcomes(&forwarder, &events).await);
    assert_eq!(made[2..], [0, 0, 1, 1], "{made:?}");

    let requests = sandbox.requests();
    let updates: Vec<&Value> = requests.iter().filter(|r| r.method == "PUT").filter_map(|r| r.body.as_ref()).collect();
    let last_seen = |at: &str| OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(
        updates,
        [
            &json!({"custom_attributes": {"plan": "team"}, "last_seen_at": last_seen("2026-12-07T10:40:00Z").unix_timestamp()}),
            &json!({"last_seen_at": last_seen("2026-12-07T11:45:00Z").unix_timestamp()}),
        ],
        "only what changed"
    );
    let state = sandbox.state();
    let user = state.contacts.values().find(|c| c.external_id.as_deref() == Some("u-1")).unwrap();
    assert_eq!((user.fields["name"].clone(), user.custom_attributes["plan"].clone()), (json!("Ada"), json!("team")));
    let company = state.companies.values().find(|c| c.company_id == "org-1").unwrap();
    assert_eq!(company.custom_attributes["seats"], 3);
    assert!(user.companies.contains(&company.id), "attached once, and it stays: {user:?}");
}

#[tokio::test]
async fn with_identity_refresh_0_every_identify_is_written_again() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let store = Arc::new(MemoryIdentities::new());
    let always =
        WriteMemory { refresh: Duration::ZERO, last_seen_resolution: Duration::ZERO, ..WriteMemory::default() };
    let forwarder = batch_forwarder(&sandbox, &store, ForwardOptions { memory: always, ..ForwardOptions::default() });
    let identify = json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada"}});
    let made = calls(&outcomes(&forwarder, &[identify.clone(), identify.clone(), identify]).await);
    assert_eq!(made[1..], [1, 1], "{made:?}");
}

#[tokio::test]
async fn a_contact_deleted_in_intercom_is_made_again_with_everything_not_only_what_changed() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let store = Arc::new(MemoryIdentities::new());
    let forwarder = batch_forwarder(&sandbox, &store, ForwardOptions::default());
    let identify = |plan: &str| json!({"type": "identify", "userId": "u-1", "traits": {"name": "Ada", "plan": plan}});
    calls(&outcomes(&forwarder, &[identify("pro")]).await);
    let id = sandbox.state().contacts.keys().next().unwrap().clone();
    delete_in_intercom(&sandbox, &id).await;
    calls(&outcomes(&forwarder, &[identify("team")]).await);
    let state = sandbox.state();
    let user = state.contacts.values().find(|c| c.external_id.as_deref() == Some("u-1")).unwrap();
    assert_eq!(user.fields.get("name"), Some(&json!("Ada")), "the unchanged name is written to the new contact too");
    assert_eq!(user.custom_attributes["plan"], "team");
}

#[tokio::test]
async fn an_alias_before_its_visitors_lead_is_not_handed_back_and_the_lead_made_later_is_merged_into_the_user() {
    let sandbox = lagging().await;
    let store = Arc::new(MemoryIdentities::new());
    // The deployed wait: without the store the alias would be handed back for five minutes.
    let options = ForwardOptions { alias_wait: Duration::from_secs(300), ..ForwardOptions::default() };
    let (user_lane, visitor_lane) =
        (batch_forwarder(&sandbox, &store, options), batch_forwarder(&sandbox, &store, options));
    let user = json!({"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com", "name": "Ada"}});
    let alias = json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"});
    let done = outcomes(&user_lane, &[user, alias]).await;
    match &done[1] {
        Outcome::Skipped { reason, .. } => assert_eq!(reason, "alias_previous_contact_unknown"),
        other => panic!("the alias was not skipped at once: {other:?}"),
    }
    // The visitor's email-only identify, in its own lane, after the alias: its lead is merged into the user as made.
    let visitor = json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "visitor@example.com"}});
    let track = json!({"type": "track", "anonymousId": "anon-1", "event": "Pricing Viewed", "properties": {"email": "visitor@example.com"}});
    calls(&outcomes(&visitor_lane, &[visitor, track]).await);
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 1, "the lead was merged into the user: {:?}", state.contacts);
    let contact = state.contacts.values().next().unwrap();
    assert_eq!((contact.role.as_str(), contact.external_id.as_deref()), ("user", Some("u-1")));
    let on_user: Vec<&str> =
        state.events.iter().filter(|e| e.contact_id == contact.id).map(|e| e.event_name.as_str()).collect();
    assert_eq!(on_user, ["pricing viewed"], "the visitor's later event reached the user");
}

/// Someone deletes the contact `id` in Intercom's inbox (here: `DELETE /contacts/{id}` through the relay's own client).
async fn delete_in_intercom(sandbox: &SandboxServer, id: &str) {
    let client = sandbox_client(sandbox, &sandbox.token(), Duration::from_secs(5));
    let deleted = client.call(Method::DELETE, &format!("/contacts/{id}"), None).await.unwrap();
    assert_eq!(deleted["deleted"], true, "{deleted}");
}

/// Intercom as the sandbox answers, but a 500 for every call whose body names `poisoned`.
struct FailingFor {
    client: IntercomClient,
    poisoned: &'static str,
}

impl IntercomApi for FailingFor {
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, IntercomError> {
        if body.is_some_and(|b| b.to_string().contains(self.poisoned)) {
            return Err(IntercomError::Api {
                status: 500,
                code: "server_error".into(),
                message: "Internal server error".into(),
                redacted: "Internal server error".into(),
                request_id: None,
                retryable: true,
                link: None,
            });
        }
        self.client.call(method, path, body).await
    }

    fn version(&self) -> ApiVersion {
        self.client.version()
    }
}

#[tokio::test]
async fn an_event_intercom_answers_5xx_for_while_it_answers_others_is_dead_lettered_after_its_tries() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let client =
        FailingFor { client: sandbox_client(&sandbox, &sandbox.token(), Duration::from_secs(5)), poisoned: "Poisoned" };
    let options = ForwardOptions { retry: RetryPolicy::ONCE, server_error_tries: 4, ..ForwardOptions::default() };
    let forwarder = Forwarder::new(Executor::new(client, true, NonZeroUsize::MIN), MemoryDeadLetter::new(), options);
    let poisoned = record(
        "poisoned",
        envelope(json!({"type": "identify", "userId": "u-1", "traits": {"name": "Poisoned"}})).await,
        1,
    );
    let mut seen = Vec::new();
    for n in 0..4 {
        let other =
            envelope(json!({"type": "identify", "userId": format!("u-{}", n + 2), "traits": {"name": "Fine"}})).await;
        let other = sqs_record(&format!("other-{n}"), Some(other));
        let report = forwarder
            .handle(&sqs_event_of(vec![poisoned.clone(), other]), Instant::now() + Duration::from_secs(30))
            .await;
        assert!(matches!(report.records[1].outcome, Outcome::Delivered { .. }), "{report:?}");
        seen.push(report.records[0].outcome.clone());
    }
    assert!(
        seen[..3].iter().all(|o| matches!(o, Outcome::Retry { .. })),
        "tried again while under its tries: {seen:?}"
    );
    let letters = forwarder.dead_letter().letters();
    assert_eq!(letters.len(), 1, "{seen:?}");
    assert_eq!(letters[0].reason.error_code, "intercom_server_error_repeated");
    assert!(letters[0].reason.error_message.contains("4 times"), "{}", letters[0].reason.error_message);
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 4, "the others were written meanwhile, the poisoned one never");
    assert!(!forwarder.executor().breaker().is_open(), "the breaker stayed closed");
}

#[tokio::test]
async fn a_write_through_a_users_address_makes_what_their_own_identify_wrote_unknown_so_it_is_written_again() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let store = Arc::new(MemoryIdentities::new());
    let forwarder = batch_forwarder(&sandbox, &store, ForwardOptions::default());
    let user = json!({"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com", "name": "Ada"}});
    // A newsletter form on another page: an email-only identify of the user's address, another name.
    let form =
        json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "ada@example.com", "name": "A. L."}});
    let made = calls(&outcomes(&forwarder, &[user.clone(), user.clone(), form, user]).await);
    assert_eq!(made[1], 0, "the same again: no call");
    assert_eq!(made[3], 1, "written again: what the form wrote in between is not what the user's identify wrote");
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 1, "{:?}", state.contacts);
    assert_eq!(state.contacts.values().next().unwrap().fields["name"], "Ada", "the last identify's name");
}

#[tokio::test]
async fn a_lead_deleted_in_intercom_is_made_again_for_its_next_event_not_dead_lettered() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let store = Arc::new(MemoryIdentities::new());
    let forwarder = batch_forwarder(&sandbox, &store, ForwardOptions::default());
    let visitor = json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "lee@example.com"}});
    calls(&outcomes(&forwarder, &[visitor]).await);
    let id = sandbox.state().contacts.keys().next().unwrap().clone();
    delete_in_intercom(&sandbox, &id).await;
    // A fresh forwarder (a cold start): only the store still names the deleted lead.
    let fresh = batch_forwarder(&sandbox, &store, ForwardOptions::default());
    let track = json!({"type": "track", "anonymousId": "anon-1", "event": "Pricing Viewed",
                       "context": {"traits": {"email": "lee@example.com"}}});
    calls(&outcomes(&fresh, &[track]).await);
    let state = sandbox.state();
    let lead = state.contacts.values().find(|c| c.email.as_deref() == Some("lee@example.com")).expect("made again");
    assert_ne!(lead.id, id);
    let names: Vec<&str> =
        state.events.iter().filter(|e| e.contact_id == lead.id).map(|e| e.event_name.as_str()).collect();
    assert_eq!(names, ["pricing viewed"]);
}

#[tokio::test]
async fn with_the_store_failing_an_alias_of_a_visitor_intercom_does_not_hold_waits_as_before_the_store() {
    let sandbox = lagging().await;
    let client = sandbox_client(&sandbox, &sandbox.token(), Duration::from_secs(5));
    let store = Arc::new(crate::identities::unreachable_store());
    let executor = Executor::new(client, true, NonZeroUsize::new(1000).unwrap()).with_identities(store);
    let options = ForwardOptions { alias_wait: Duration::from_secs(300), ..ForwardOptions::default() };
    let forwarder = Forwarder::new(executor, MemoryDeadLetter::new(), options);
    let user = json!({"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}});
    let alias = json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"});
    let done = outcomes(&forwarder, &[user, alias]).await;
    assert!(matches!(done[0], Outcome::Delivered { .. }), "{done:?}");
    // The alias could not hold the visitor for the user (the store is down): it is handed back, as without a store,
    // in case the visitor's lead is still on its way.
    match &done[1] {
        Outcome::Retry { reason, .. } => assert!(reason.starts_with("alias:"), "{reason}"),
        other => panic!("not handed back: {other:?}"),
    }
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 1, "the user, written without the store: {:?}", state.contacts);
}
