//! The identity store: the DynamoDB table against moto's server (claims, their leases, what a claim that lost is told),
//! and two forwarders sharing one store against a sandbox whose search lags: nobody made twice.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use intercom_relay::sandbox::{SandboxOptions, SandboxServer};
use intercom_relay_lambda::aws::DynamoIdentities;
use intercom_relay_lambda::event::{BatchDefaults, RawEvent, parse_event};
use intercom_relay_lambda::forward::Executor;
use intercom_relay_lambda::identity::{
    Claim, IdentityStore, Known, MemoryIdentities, Stored, Written, contact_key, visitor_key,
};
use intercom_relay_lambda::intercom::{ContactId, IntercomClient};
use intercom_relay_lambda::mapping::{ContactKey, map_event};
use intercom_relay_lambda::retry::RetryPolicy;
use serde_json::{Value, json};
use time::OffsetDateTime;

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
        fields: [("a:name".to_owned(), "5f1d8c2e0b9a4c7d8e6f5a4b3c2d1e0f".to_owned())].into(),
        last_seen_at: Some(1_800_000_000),
        companies: [Written::company_digest("org-1")].into(),
    };
    let stored = Stored { written: written.clone(), ..Stored::new(user.clone()) };
    assert!(first.write_down(&by_id, &stored, Some(&Written::default())).await.unwrap());
    // Another forwarder wrote since what it read: its write is refused, the first one's stays.
    let stale = Stored { written: Written { refreshed_at: 1, ..Written::default() }, ..stored.clone() };
    assert!(!second.write_down(&by_id, &stale, Some(&Written::default())).await.unwrap());
    assert!(
        second.write_down(&by_id, &stored, Some(&written)).await.unwrap(),
        "what it holds, as JSON, compares equal"
    );

    let unknown = contact_key(&ContactKey::ExternalId("nobody".into()));
    let keys = [by_id.clone(), old_address.clone(), new_address.clone(), visitor.clone(), unknown];
    let read = second.find_many(&keys).await.unwrap();
    assert_eq!(read.len(), 5, "every key read: {read:?}");
    let held: std::collections::HashMap<String, Stored> =
        read.into_iter().filter_map(|(key, held)| Some((key, held?))).collect();
    assert_eq!(held.len(), 4, "every key but the unknown one: {held:?}");
    assert_eq!(held[&by_id].written, written, "what was written, as digests");
    assert_eq!(held[&old_address].primary.as_deref(), Some(by_id.as_str()), "the user's address names their own key");
    assert!(held.values().all(|stored| stored.known == user));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(held.values().all(|stored| stored.made_at.abs_diff(now) < 60), "when each was made: {held:?}");
    let text = dynamodb("Scan", json!({"TableName": table})).await.to_string();
    assert!(!text.contains("Ada") && !text.contains("ada@") && !text.contains("org-1"), "{text}");

    second.forget_contact(&user.id).await.unwrap();
    let left = first.find_many(&keys).await.unwrap();
    assert!(left.len() == 5 && left.values().all(Option::is_none), "every key that ever named the contact: {left:?}");
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
pub(crate) async fn lagging() -> SandboxServer {
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

/// The DynamoDB store on a port nobody listens on (one just freed): every call fails to connect.
pub(crate) fn unreachable_store() -> DynamoIdentities {
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = aws_config::SdkConfig::builder()
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "tests")))
        .behavior_version(BehaviorVersion::latest())
        .build();
    DynamoIdentities::new(&unreachable, "identities", Duration::from_millis(500)).unwrap()
}

#[tokio::test]
async fn with_dynamodb_unreachable_everything_is_still_delivered() {
    let store = unreachable_store();
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
    use intercom_relay_lambda::erasure::ErasureRequest;

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
