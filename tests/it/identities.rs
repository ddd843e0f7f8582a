//! The identity store: the DynamoDB table against moto's server (claims, their leases, what a claim that lost is told),
//! and two forwarders sharing one store against a sandbox whose search lags: nobody made twice.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use intercom_relay::aws::DynamoIdentities;
use intercom_relay::event::{BatchDefaults, RawEvent, parse_event};
use intercom_relay::forward::{Executor, ForwardOptions, Forwarder, Outcome, WriteMemory};
use intercom_relay::identity::{
    Claim, IdentityStore, Known, MemoryIdentities, Stored, Written, contact_key, visitor_key,
};
use intercom_relay::intercom::{ApiVersion, ContactId, IntercomApi, IntercomClient, IntercomError};
use intercom_relay::mapping::{ContactKey, map_event};
use intercom_relay::queue::{MemoryDeadLetter, sqs_event_of, sqs_record};
use intercom_relay::retry::RetryPolicy;
use intercom_relay::sandbox::{SandboxOptions, SandboxServer};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::forward_batch::{envelope, record};
use crate::helpers::sandbox_client;
use crate::suppression::{aws, dynamodb, table};

#[tokio::test]
async fn the_table_gives_a_claim_to_one_forwarder_and_the_others_the_contact_once_made() {
    let table = table().await;
    let (first, second) = (
        DynamoIdentities::new(&aws(), &table, Duration::from_secs(2)).unwrap(),
        DynamoIdentities::new(&aws(), &table, Duration::from_secs(2)).unwrap(),
    );
    let key = contact_key(&ContactKey::Email("ada@example.com".into()));
    let lease = Duration::from_secs(30);
    assert_eq!(first.claim(&key, lease).await.unwrap(), Claim::Won);
    assert_eq!(second.claim(&key, lease).await.unwrap(), Claim::Pending, "claimed, nothing made yet");
    assert_eq!(second.find(&key).await.unwrap(), None);
    let lead = Known { id: ContactId::new("6657a1b2c3d4e5f6a7b8c9d0"), is_lead: true };
    first.record(std::slice::from_ref(&key), &lead).await.unwrap();
    assert_eq!(second.claim(&key, lease).await.unwrap(), Claim::Held(lead.clone()), "the item that refused it");
    assert_eq!(second.find(&key).await.unwrap().map(|stored| stored.known), Some(lead.clone()));

    // What the table holds: the hash, never the address.
    let scanned = dynamodb("Scan", json!({"TableName": table})).await;
    let text = scanned.to_string();
    assert!(!text.contains("ada@example.com") && text.contains(&key), "{text}");

    first.forget(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(second.find(&key).await.unwrap(), None);
    let scanned = dynamodb("Scan", json!({"TableName": table})).await;
    assert_eq!(scanned["Count"], 1, "the contact's list of its own keys is left: {scanned}");
    first.forget_contact(&lead.id).await.unwrap();
    let scanned = dynamodb("Scan", json!({"TableName": table})).await;
    assert_eq!(scanned["Count"], 0, "an erasure leaves nothing of them: {scanned}");
}

#[tokio::test]
async fn the_table_reads_a_batch_at_once_holds_what_was_written_and_forgets_every_key_of_an_erased_contact() {
    let table = table().await;
    let (first, second) = (
        DynamoIdentities::new(&aws(), &table, Duration::from_secs(2)).unwrap(),
        DynamoIdentities::new(&aws(), &table, Duration::from_secs(2)).unwrap(),
    );
    let user = Known { id: ContactId::new("user-1"), is_lead: false };
    let (by_id, old_address, new_address, visitor) = (
        contact_key(&ContactKey::ExternalId("ada".into())),
        contact_key(&ContactKey::Email("ada@old.example".into())),
        contact_key(&ContactKey::Email("ada@new.example".into())),
        visitor_key("anon-1"),
    );
    first.record(&[by_id.clone(), old_address.clone()], &user).await.unwrap();
    first.record(std::slice::from_ref(&new_address), &user).await.unwrap();
    // Whoever comes first holds the visitor; the second learns whom it is held for.
    assert_eq!(second.record_if_absent(&visitor, &user).await.unwrap(), None);
    let lead = Known { id: ContactId::new("lead-1"), is_lead: true };
    assert_eq!(first.record_if_absent(&visitor, &lead).await.unwrap(), Some(user.clone()));
    let written = Written {
        refreshed_at: 1_800_000_000,
        fields: [("a:name".to_owned(), Written::digest_of(&json!("Ada")))].into(),
        last_seen_at: Some(1_800_000_000),
        companies: [Written::company_digest("org-1")].into(),
    };
    first.write_down(&by_id, &Stored { known: user.clone(), written: written.clone() }).await.unwrap();

    let unknown = contact_key(&ContactKey::ExternalId("nobody".into()));
    let keys = [by_id.clone(), old_address.clone(), new_address.clone(), visitor.clone(), unknown];
    let held = second.find_many(&keys).await.unwrap();
    assert_eq!(held.len(), 4, "every key but the unknown one: {held:?}");
    assert_eq!(held[&by_id].written, written, "what was written, as digests");
    assert!(held.values().all(|stored| stored.known == user));
    let text = dynamodb("Scan", json!({"TableName": table})).await.to_string();
    assert!(!text.contains("Ada") && !text.contains("ada@") && !text.contains("org-1"), "{text}");

    second.forget_contact(&user.id).await.unwrap();
    assert_eq!(first.find_many(&keys).await.unwrap().len(), 0, "every key that ever named the contact");
    let scanned = dynamodb("Scan", json!({"TableName": table})).await;
    assert_eq!(scanned["Count"], 0, "{scanned}");
}

#[tokio::test]
async fn a_claim_whose_lease_ran_out_is_taken_over_and_an_expired_contact_is_absent() {
    let table = table().await;
    let store = DynamoIdentities::new(&aws(), &table, Duration::from_secs(2)).unwrap();
    let (died, expired) = ("a".repeat(64), "b".repeat(64));
    let put = |item: Value| dynamodb("PutItem", json!({"TableName": table, "Item": item}));
    put(json!({"key": {"S": died}, "claimed_until": {"N": "1"}, "expires_at": {"N": "99999999999"}})).await;
    put(json!({"key": {"S": expired}, "id": {"S": "c-1"}, "lead": {"BOOL": true}, "expires_at": {"N": "1"}})).await;
    assert_eq!(store.claim(&died, Duration::from_secs(30)).await.unwrap(), Claim::Won, "its claimant died");
    assert_eq!(store.find(&expired).await.unwrap(), None, "TTL deletes late: expired is absent");
    assert_eq!(store.claim(&expired, Duration::from_secs(30)).await.unwrap(), Claim::Won);
}

#[tokio::test]
async fn a_missing_table_is_an_error_naming_it_and_what_to_check() {
    let store = DynamoIdentities::new(&aws(), "no-such-table", Duration::from_secs(2)).unwrap();
    let error = store.find(&"c".repeat(64)).await.unwrap_err().to_string();
    assert!(error.contains("DynamoDB table no-such-table") && error.contains("IDENTITY_TABLE"), "{error}");
}

fn forwarder(sandbox: &SandboxServer, store: &Arc<MemoryIdentities>) -> Executor<IntercomClient> {
    let client = sandbox_client(sandbox, &sandbox.token(), Duration::from_secs(5));
    let executor = Executor::new(client, true, NonZeroUsize::new(1000).unwrap());
    executor.with_identities(store.clone())
}

async fn deliver(executor: &Executor<IntercomClient>, event: Value) -> usize {
    let text = event.to_string();
    let raw = RawEvent::parse(&text).unwrap();
    let event = parse_event(&raw, None, &BatchDefaults::default(), OffsetDateTime::now_utc()).unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    executor.execute(&map_event(&event).unwrap(), RetryPolicy::ONCE, until).await.unwrap().calls
}

/// A sandbox whose search shows nothing younger than a minute: every contact these tests make is behind it.
async fn lagging() -> SandboxServer {
    SandboxServer::start(SandboxOptions { search_lag: 60, ..SandboxOptions::default() }, 0).await.unwrap()
}

#[tokio::test]
async fn two_devices_email_only_identifies_through_two_forwarders_make_one_lead() {
    let sandbox = lagging().await;
    let store = Arc::new(MemoryIdentities::new());
    let (phone, laptop) = (forwarder(&sandbox, &store), forwarder(&sandbox, &store));
    let identify = |anonymous_id: &str, name: &str| json!({"type": "identify", "anonymousId": anonymous_id, "traits": {"email": "ada@example.com", "name": name}});
    deliver(&phone, identify("anon-phone", "Ada")).await;
    deliver(&laptop, identify("anon-laptop", "Ada L.")).await;
    let state = sandbox.state();
    let leads: Vec<_> = state.contacts.values().filter(|c| c.role == "lead").collect();
    assert_eq!(leads.len(), 1, "{leads:?}");
    assert_eq!(leads[0].fields["name"], "Ada L.", "the second device's write went to the first device's lead");
}

#[tokio::test]
async fn an_email_only_identify_of_a_users_address_updates_the_user_and_makes_no_lead() {
    let sandbox = lagging().await;
    let store = Arc::new(MemoryIdentities::new());
    let (first, second) = (forwarder(&sandbox, &store), forwarder(&sandbox, &store));
    let user = json!({"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}});
    deliver(&first, user).await;
    let email_only =
        json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "ada@example.com", "plan": "pro"}});
    deliver(&second, email_only).await;
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 1, "no lead beside the user: {:?}", state.contacts);
    let contact = state.contacts.values().next().unwrap();
    assert_eq!((contact.role.as_str(), contact.external_id.as_deref()), ("user", Some("u-1")));
    assert_eq!(contact.custom_attributes["plan"], "pro");
    let searches = sandbox.requests().iter().filter(|r| r.path == "/contacts/search").count();
    assert_eq!(searches, 0, "the address was found in the store, not by a search");
}

#[tokio::test]
async fn a_visitors_lead_made_by_one_forwarder_is_merged_into_the_user_by_another_without_a_search() {
    let sandbox = lagging().await;
    let store = Arc::new(MemoryIdentities::new());
    let (first, second) = (forwarder(&sandbox, &store), forwarder(&sandbox, &store));
    let visitor = json!({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "ada@example.com"}});
    deliver(&first, visitor).await;
    let user = json!({"type": "identify", "userId": "u-1", "anonymousId": "anon-1", "traits": {"name": "Ada"}});
    deliver(&second, user).await;
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 1, "the lead was merged into the user: {:?}", state.contacts);
    let contact = state.contacts.values().next().unwrap();
    assert_eq!((contact.role.as_str(), contact.external_id.as_deref()), ("user", Some("u-1")));
    let searches = sandbox.requests().iter().filter(|r| r.path == "/contacts/search").count();
    assert_eq!(searches, 1, "the first forwarder's search for the address only; the lead came from the store");

    // An alias of the two, through a third forwarder: done, nothing handed back, no search.
    let third = forwarder(&sandbox, &store);
    let alias = json!({"type": "alias", "userId": "u-1", "previousId": "anon-1"});
    let text = alias.to_string();
    let raw = RawEvent::parse(&text).unwrap();
    let event = parse_event(&raw, None, &BatchDefaults::default(), OffsetDateTime::now_utc()).unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let delivery = third.execute(&map_event(&event).unwrap(), RetryPolicy::ONCE, until).await.unwrap();
    assert_eq!(delivery.skipped, None, "the store knows the visitor became the user");
    let searches = sandbox.requests().iter().filter(|r| r.path == "/contacts/search").count();
    assert_eq!(searches, 1);
}

#[tokio::test]
async fn with_dynamodb_unreachable_everything_is_still_delivered() {
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};

    // Nothing listens on a port just freed: every store call fails to connect.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = aws_config::SdkConfig::builder()
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "tests")))
        .behavior_version(BehaviorVersion::latest())
        .build();
    let store = DynamoIdentities::new(&unreachable, "identities", Duration::from_millis(500)).unwrap();
    assert!(store.find(&"d".repeat(64)).await.is_err(), "the store is down");
    let sandbox = lagging().await;
    let client = sandbox_client(&sandbox, &sandbox.token(), Duration::from_secs(5));
    let executor = Executor::new(client, true, NonZeroUsize::new(1000).unwrap()).with_identities(Arc::new(store));
    deliver(&executor, json!({"type": "identify", "userId": "u-1", "traits": {"email": "ada@example.com"}})).await;
    let lead = json!({"type": "identify", "anonymousId": "anon-2", "traits": {"email": "bob@example.com"}});
    deliver(&executor, lead).await;
    deliver(&executor, json!({"type": "track", "userId": "u-1", "event": "Signed In"})).await;
    let state = sandbox.state();
    let mut roles: Vec<&str> = state.contacts.values().map(|c| c.role.as_str()).collect();
    roles.sort();
    assert_eq!(roles, ["lead", "user"], "both made as without a store");
    assert_eq!(state.events.len(), 1);
}

#[tokio::test]
async fn an_erasure_leaves_the_store_nothing_of_the_person_their_visitor_included() {
    use intercom_relay::erasure::ErasureRequest;

    // Searchable at once: the erasure finds the lead by its address.
    let sandbox = SandboxServer::start(SandboxOptions { search_lag: 0, ..SandboxOptions::default() }, 0).await.unwrap();
    let store = Arc::new(MemoryIdentities::new());
    let executor = forwarder(&sandbox, &store);
    let visitor = json!({"type": "identify", "anonymousId": "anon-9", "traits": {"email": "eve@example.com"}});
    deliver(&executor, visitor).await;
    assert!(store.find(&visitor_key("anon-9")).await.unwrap().is_some(), "the visitor is known");
    let request = ErasureRequest {
        request_id: "erase-1".into(),
        user_id: None,
        email: Some("eve@example.com".into()),
        leads: true,
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let found = executor.erasure_targets(&request, RetryPolicy::ONCE, until).await.unwrap();
    let erased = executor.erase(found, RetryPolicy::ONCE, until).await.unwrap();
    assert_eq!(erased.contacts.len(), 1);
    assert!(sandbox.state().contacts.is_empty());
    assert!(store.is_empty(), "no entry left: neither the address nor the visitor");
}

#[tokio::test]
async fn a_forwarder_that_loses_a_claim_waits_for_the_winners_lead_and_makes_none() {
    let sandbox = lagging().await;
    let store = Arc::new(MemoryIdentities::new());
    let key = contact_key(&ContactKey::Email("zoe@example.com".into()));
    // The winner: claimed the address, makes the lead (here without a store), and records it a moment later.
    assert_eq!(store.claim(&key, Duration::from_secs(30)).await.unwrap(), Claim::Won);
    let winner =
        Executor::new(sandbox_client(&sandbox, &sandbox.token(), Duration::from_secs(5)), true, NonZeroUsize::MIN);
    deliver(&winner, json!({"type": "identify", "anonymousId": "anon-z1", "traits": {"email": "zoe@example.com"}}))
        .await;
    let made = ContactId::new(sandbox.state().contacts.keys().next().unwrap().as_str());
    let recorder = {
        let (store, key, made) = (store.clone(), key.clone(), made.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            store.record(&[key], &Known { id: made, is_lead: true }).await.unwrap();
        })
    };
    // The loser, behind the search index: waits for the winner's lead and writes to it.
    let loser = forwarder(&sandbox, &store);
    let second =
        json!({"type": "identify", "anonymousId": "anon-z2", "traits": {"email": "zoe@example.com", "name": "Zoe"}});
    deliver(&loser, second).await;
    recorder.await.unwrap();
    let state = sandbox.state();
    assert_eq!(state.contacts.len(), 1, "{:?}", state.contacts);
    assert_eq!(state.contacts[made.as_str()].fields["name"], "Zoe");
}

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
    let always = WriteMemory { refresh: Duration::ZERO, last_seen_resolution: Duration::ZERO };
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
    // Someone deletes the contact in Intercom's inbox.
    let id = sandbox.state().contacts.keys().next().unwrap().clone();
    let deleted = reqwest::Client::new()
        .delete(format!("{}/contacts/{id}", sandbox.url))
        .bearer_auth(sandbox.token())
        .header("Intercom-Version", "2.16")
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
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
