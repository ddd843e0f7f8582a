//! The suppression list in moto's DynamoDB: an erasure carried out by the real forwarder adds the person (hashed), their
//! later events are skipped (by userId or address, in the same batch, and by another function's cold start), other
//! people's land; what the table and the sandbox (over HTTP) end up holding. A list that cannot be read holds the
//! batch back, and nothing reaches Intercom unchecked.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use intercom_relay::sandbox::{SandboxOptions, SandboxServer};
use intercom_relay_lambda::aws::DynamoSuppression;
use intercom_relay_lambda::erasure::ErasureRequest;
use intercom_relay_lambda::forward::{Forwarder, Outcome};
use intercom_relay_lambda::intercom::IntercomClient;
use intercom_relay_lambda::queue::{MESSAGE_GROUP_ID, MemoryDeadLetter, SqsRecord, sqs_event_of};
use intercom_relay_lambda::suppression::{MemorySuppression, email_key, user_key};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::forward_batch::{aged, envelope, quick, record};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
use crate::helpers::forwarder;
use crate::sqs::endpoint;

/// AWS as the forward function finds it, but reaching moto.
pub(crate) fn aws() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "tests")))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build()
}

/// A DynamoDB call to moto (which routes by `x-amz-target`, and checks no signature).
pub(crate) async fn dynamodb(operation: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/", endpoint()))
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("DynamoDB_20120810.{operation}"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x",
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{operation}: {answer}");
    answer
}

/// A table as the template makes it: key `key`, a string.
pub(crate) async fn table() -> String {
    let name = format!("suppression-{}", uuid::Uuid::new_v4().simple());
    dynamodb(
        "CreateTable",
        json!({"TableName": name, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}]}),
    )
    .await;
    name
}

/// Every item of the table, as (key, request_id), sorted.
async fn items(table: &str) -> Vec<(String, String)> {
    let answer = dynamodb("Scan", json!({"TableName": table})).await;
    let mut items: Vec<(String, String)> = answer["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            assert!(item["erased_at"]["N"].as_str().is_some_and(|n| n.parse::<u64>().is_ok()), "{item}");
            (item["key"]["S"].as_str().unwrap().to_owned(), item["request_id"]["S"].as_str().unwrap().to_owned())
        })
        .collect();
    items.sort();
    items
}

fn suppressing(sandbox: &SandboxServer, table: &str) -> Forwarder<IntercomClient, MemoryDeadLetter> {
    let store = DynamoSuppression::new(&aws(), table, Duration::from_secs(2)).unwrap();
    forwarder(sandbox, MemoryDeadLetter::new(), quick()).with_suppression(Arc::new(store))
}

/// Records of `events` (in one person's lane, in order) or erasure bodies.
async fn records(bodies: Vec<Result<Value, ErasureRequest>>) -> Vec<SqsRecord> {
    let mut records = Vec::new();
    for (n, body) in bodies.into_iter().enumerate() {
        let (body, group) = match body {
            Ok(event) => {
                let group = event["userId"].as_str().or(event["anonymousId"].as_str()).unwrap().to_owned();
                (envelope(event).await, group)
            }
            Err(request) => (request.to_body(), request.ordering_key().to_owned()),
        };
        let mut record = record(&format!("r-{n}"), body, 1);
        record.attributes.insert(MESSAGE_GROUP_ID.into(), group);
        records.push(record);
    }
    records
}

async fn handle(forwarder: &Forwarder<IntercomClient, MemoryDeadLetter>, records: Vec<SqsRecord>) -> Vec<Outcome> {
    let report = forwarder.handle(&sqs_event_of(records), Instant::now() + Duration::from_secs(30)).await;
    report.records.into_iter().map(|r| r.outcome).collect()
}

fn external_ids(sandbox: &SandboxServer) -> Vec<String> {
    let mut ids: Vec<String> = sandbox.state().contacts.values().filter_map(|c| c.external_id.clone()).collect();
    ids.sort();
    ids
}

fn skipped_as_erased(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Skipped { skipped_by: Some(rule), .. } if rule == "suppression")
}

async fn sandbox() -> SandboxServer {
    SandboxServer::start(SandboxOptions { search_lag: 0, ..SandboxOptions::default() }, 0).await.unwrap()
}

fn identify(user: &str, email: &str) -> Value {
    json!({"type": "identify", "userId": user, "traits": {"email": email}})
}

#[tokio::test]
async fn an_erased_persons_later_events_are_skipped_by_their_user_id_or_as_a_lead_by_address_and_others_land() {
    let sandbox = sandbox().await;
    let table = table().await;
    let first = suppressing(&sandbox, &table);
    let outcomes = handle(&first, records(vec![Ok(identify("user-1", "Ada@example.com"))]).await).await;
    assert!(matches!(outcomes[..], [Outcome::Delivered { .. }]), "{outcomes:?}");

    // Erased by userId and address. In the same batch, after the erasure in their lane, an identify that would make
    // them again; in another lane, a visitor's track with the address the request names.
    let request = ErasureRequest::new(Some("user-1".into()), Some("ada@example.com".into()), false).unwrap();
    let request_id = request.request_id.clone();
    let batch = records(vec![
        Err(request),
        Ok(identify("user-1", "ada@example.com")),
        Ok(json!({"type": "track", "anonymousId": "a-9", "event": "Viewed", "properties": {"email": "ADA@example.com"}})),
    ])
    .await;
    let outcomes = handle(&first, batch).await;
    assert!(
        matches!(&outcomes[0], Outcome::Erased { contacts, notes, .. }
        if contacts.len() == 1 && notes.iter().any(|n| n.contains("suppression list"))),
        "{outcomes:?}"
    );
    assert!(skipped_as_erased(&outcomes[1]) && skipped_as_erased(&outcomes[2]), "{outcomes:?}");
    assert!(sandbox.state().contacts.is_empty(), "{:?}", sandbox.state().contacts);
    let mut expected = vec![(user_key("user-1"), request_id.clone()), (email_key("ada@example.com"), request_id)];
    expected.sort();
    assert_eq!(items(&table).await, expected, "hashed, never in the clear");

    // An erasure by userId alone keeps the address Intercom held for them, for the batches after.
    let found = ErasureRequest::new(Some("u-8".into()), None, false).unwrap();
    let seeded = records(vec![Ok(identify("u-8", "eight@example.com"))]).await;
    assert!(matches!(handle(&first, seeded).await[..], [Outcome::Delivered { .. }]));
    let outcomes = handle(&first, records(vec![Err(found)]).await).await;
    assert!(matches!(&outcomes[..], [Outcome::Erased { contacts, .. }] if contacts.len() == 1), "{outcomes:?}");
    assert!(items(&table).await.iter().any(|(key, _)| *key == email_key("eight@example.com")));
    let lead =
        json!({"type": "track", "anonymousId": "a-8", "event": "Viewed", "properties": {"email": "eight@example.com"}});
    assert!(skipped_as_erased(&handle(&first, records(vec![Ok(lead)]).await).await[0]));

    // Another function, cold: it reads the table. Their userId, a lead by their address (context.traits.email), and
    // people never erased: another user, and a new userId signing up with the address (a user is matched by userId).
    let second = suppressing(&sandbox, &table);
    let later = records(vec![
        Ok(json!({"type": "track", "userId": "user-1", "event": "Signed In"})),
        Ok(json!({"type": "page", "anonymousId": "a-7", "name": "Home", "context": {"traits": {"email": "ada@example.com"}}})),
        Ok(identify("u-2", "grace@example.com")),
        Ok(identify("user-1-new", "ada@example.com")),
    ])
    .await;
    let outcomes = handle(&second, later).await;
    assert!(outcomes[..2].iter().all(skipped_as_erased), "{outcomes:?}");
    assert!(outcomes[2..].iter().all(|o| matches!(o, Outcome::Delivered { .. })), "{outcomes:?}");
    assert_eq!(external_ids(&sandbox), ["u-2", "user-1-new"]);

    // The operator lets them back (docs/erasure.md's delete-item): the same warm functions forward their events again.
    let section = crate::helpers::doc_section("# Erasure (GDPR, CCPA)");
    let line = section.lines().find(|l| l.contains("aws dynamodb delete-item")).expect("docs/erasure.md's delete-item");
    let command = line.split('`').find(|part| part.starts_with("aws dynamodb delete-item")).unwrap();
    let mut env = crate::stack::operator("us-east-1");
    env.push(("TABLE", table.clone()));
    let deleted = std::process::Command::new("sh")
        .args(["-c", command])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(deleted.status.success(), "{command}: {}", String::from_utf8_lossy(&deleted.stderr));
    assert!(!items(&table).await.iter().any(|(key, _)| *key == user_key("user-1")), "the page's command deleted it");
    let outcomes = handle(&first, records(vec![Ok(identify("user-1", "ada@example.com"))]).await).await;
    assert!(matches!(outcomes[..], [Outcome::Delivered { .. }]), "{outcomes:?}");
    assert_eq!(external_ids(&sandbox), ["u-2", "user-1", "user-1-new"]);
}

#[tokio::test]
async fn an_erasure_by_address_keeps_the_user_ids_it_found_and_the_user_left_alone_is_not_skipped() {
    let sandbox = sandbox().await;
    let table = table().await;
    let forwarder = suppressing(&sandbox, &table);
    let people = records(vec![Ok(identify("u-5", "five@example.com")), Ok(identify("u-6", "six@example.com"))]).await;
    assert!(handle(&forwarder, people).await.iter().all(|o| matches!(o, Outcome::Delivered { .. })));
    let request = ErasureRequest::new(None, Some("five@example.com".into()), false).unwrap();
    let first_request = request.request_id.clone();
    let outcomes = handle(&forwarder, records(vec![Err(request)]).await).await;
    assert!(matches!(&outcomes[0], Outcome::Erased { contacts, .. } if contacts.len() == 1), "{outcomes:?}");
    let mut expected = vec![(email_key("five@example.com"), first_request.clone()), (user_key("u-5"), first_request)];
    expected.sort();
    assert_eq!(items(&table).await, expected, "the address asked for and the userId of the user who held it");
    // Asked again: nobody left to delete, and the entries stay as the first request wrote them (a conditional put).
    let again = ErasureRequest::new(None, Some("five@example.com".into()), false).unwrap();
    let outcomes = handle(&forwarder, records(vec![Err(again)]).await).await;
    assert!(matches!(&outcomes[0], Outcome::Erased { contacts, .. } if contacts.is_empty()), "{outcomes:?}");
    assert_eq!(items(&table).await, expected);
    let later = records(vec![
        Ok(json!({"type": "track", "userId": "u-5", "event": "Signed In"})),
        Ok(json!({"type": "track", "userId": "u-6", "event": "Signed In"})),
    ])
    .await;
    let outcomes = handle(&forwarder, later).await;
    assert!(skipped_as_erased(&outcomes[0]), "{outcomes:?}");
    assert!(matches!(outcomes[1], Outcome::Delivered { .. }), "{outcomes:?}");
    assert_eq!(external_ids(&sandbox), ["u-6"]);
}

/// The forwarder holds a list, not a table: the same erasure and skip with the list in memory, no DynamoDB.
#[tokio::test]
async fn an_erased_persons_later_event_is_skipped_with_the_list_in_memory() {
    let sandbox = sandbox().await;
    let list = Arc::new(MemorySuppression::new());
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), quick()).with_suppression(list.clone());
    let outcomes = handle(&forwarder, records(vec![Ok(identify("u-1", "ada@example.com"))]).await).await;
    assert!(matches!(outcomes[..], [Outcome::Delivered { .. }]), "{outcomes:?}");
    let request = ErasureRequest::new(Some("u-1".into()), None, false).unwrap();
    let request_id = request.request_id.clone();
    let outcomes = handle(&forwarder, records(vec![Err(request)]).await).await;
    assert!(matches!(&outcomes[..], [Outcome::Erased { contacts, .. }] if contacts.len() == 1), "{outcomes:?}");
    let mut expected = vec![(user_key("u-1"), request_id.clone()), (email_key("ada@example.com"), request_id)];
    expected.sort();
    assert_eq!(list.entries(), expected);
    let later = records(vec![Ok(json!({"type": "track", "userId": "u-1", "event": "Signed In"}))]).await;
    assert!(skipped_as_erased(&handle(&forwarder, later).await[0]));
    assert!(external_ids(&sandbox).is_empty());
}

#[tokio::test]
async fn a_suppression_list_that_cannot_be_read_or_written_holds_events_and_erasures_back_and_nothing_is_lost() {
    let sandbox = sandbox().await;
    let seeded = forwarder(&sandbox, MemoryDeadLetter::new(), quick());
    let outcomes = handle(&seeded, records(vec![Ok(identify("u-1", "ada@example.com"))]).await).await;
    assert!(matches!(outcomes[..], [Outcome::Delivered { .. }]), "{outcomes:?}");

    let missing = suppressing(&sandbox, "no-such-table");
    let batch = records(vec![Ok(identify("u-2", "grace@example.com"))]).await;
    let outcomes = handle(&missing, batch).await;
    match &outcomes[..] {
        [Outcome::Retry { reason, calls: 0, retry_in }] => {
            assert!(reason.contains("the suppression list (DynamoDB table no-such-table) cannot be read"), "{reason}");
            assert!(reason.contains("ResourceNotFoundException"), "{reason}");
            assert!(*retry_in >= quick().redelivery.min_delay / 2, "{retry_in:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(external_ids(&sandbox), ["u-1"], "not forwarded unchecked");
    // An erasure whose entries cannot be written deletes nobody yet: tried again, it finds and keeps the same.
    let request = ErasureRequest::new(Some("u-1".into()), None, false).unwrap();
    let outcomes = handle(&missing, records(vec![Err(request.clone())]).await).await;
    assert!(
        matches!(&outcomes[..], [Outcome::Retry { reason, .. }] if reason.contains("cannot be written")),
        "{outcomes:?}"
    );
    assert_eq!(external_ids(&sandbox), ["u-1"], "not deleted before it is kept");
    // Past the horizon, an event the list could not be checked for is dead-lettered with the reason (kept for a
    // redrive), never forwarded.
    let old = aged(records(vec![Ok(identify("u-3", "old@example.com"))]).await.remove(0), DAY + HOUR, HOUR);
    let outcomes = handle(&missing, vec![old]).await;
    assert!(
        matches!(&outcomes[..], [Outcome::DeadLettered { reason, .. }] if reason.error_code == "suppression_list_failing"
        && reason.error_message.contains("still failing 25h 0m after the event entered the queue")),
        "{outcomes:?}"
    );
    let letters = missing.dead_letter().letters();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].body.contains("old@example.com"), "the original body, for a redrive");
    assert_eq!(external_ids(&sandbox), ["u-1"]);
    // Once the list answers (here: the function's table exists), the same request keeps the address and deletes.
    let table = table().await;
    let outcomes = handle(&suppressing(&sandbox, &table), records(vec![Err(request)]).await).await;
    assert!(matches!(&outcomes[..], [Outcome::Erased { contacts, .. }] if contacts.len() == 1), "{outcomes:?}");
    let keys: Vec<String> = items(&table).await.into_iter().map(|(key, _)| key).collect();
    let mut expected = vec![user_key("u-1"), email_key("ada@example.com")];
    expected.sort();
    assert_eq!(keys, expected);
}

#[test]
fn the_readmes_command_to_let_a_person_back_names_the_key_the_forwarder_wrote() {
    let section = crate::helpers::doc_section("# Erasure (GDPR, CCPA)");
    let line = section.lines().find(|l| l.contains("aws dynamodb delete-item")).expect("docs/erasure.md's delete-item");
    // The key as the shell computes it: the command substitution, run as written.
    let start = line.find("$(").unwrap() + 2;
    let end = start + line[start..].find(")\\\"").unwrap();
    let substitution = &line[start..end];
    assert!(substitution.starts_with("printf 'user_id:%s' user-1 | sha256sum"), "{substitution}");
    let output = std::process::Command::new("sh").args(["-c", substitution]).output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap().trim(), user_key("user-1"));
    let by_email = std::process::Command::new("sh")
        .args(["-c", &substitution.replace("user_id:%s' user-1", "email:%s' ada@example.com")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(by_email.stdout).unwrap().trim(), email_key("Ada@Example.com"));
    assert!(line.contains(r#"--key "{\"key\": {\"S\": \""#), "the table's key attribute: {line}");
}

/// The forward binary as the template deploys it (`SUPPRESSION_TABLE`, credentials and region from the environment as
/// Lambda gives them), under the real `lambda_runtime` loop: an erased person's events are skipped, the others land.
#[tokio::test(flavor = "multi_thread")]
async fn the_forward_binary_reads_the_suppression_list_the_template_names() {
    use crate::payloads::{generated, sqs_event};
    use crate::runtime_api::{Running, RuntimeApi};
    let sandbox = sandbox().await;
    let table = table().await;
    let lines = generated(12, 4, 21);
    let users: std::collections::BTreeSet<String> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).unwrap()["userId"].as_str().map(str::to_owned))
        .collect();
    let erased = users.iter().next().unwrap().clone();
    dynamodb(
        "PutItem",
        json!({"TableName": table, "Item": {"key": {"S": user_key(&erased)}, "erased_at": {"N": "1"}, "request_id": {"S": "r"}}}),
    )
    .await;
    let api = RuntimeApi::start().await.unwrap();
    let id = api.invoke(&serde_json::to_value(sqs_event(&lines, "it")).unwrap());
    let mut env = api.env();
    env.push(("INTERCOM_BASE_URL", sandbox.url.clone()));
    env.push(("INTERCOM_ACCESS_TOKEN", sandbox.token()));
    env.push(("DLQ_URL", "http://127.0.0.1:9/000000000000/unused-dlq.fifo".into()));
    env.push(("SUPPRESSION_TABLE", table.clone()));
    env.push(("AWS_ENDPOINT_URL_DYNAMODB", endpoint()));
    let running = Running::spawn(&crate::runtime_api::lambda_binary("forward"), env).unwrap();
    let answer = api.answer_to(&id, Duration::from_secs(30)).await.expect("the binary answers the invocation");
    assert_eq!(answer.body, json!({"batchItemFailures": []}), "{}", running.output());
    let output = running.output();
    let skipped = output.lines().filter(|line| line.contains("\"skipped_by\":\"suppression\"")).count();
    let theirs = lines.iter().filter(|line| line.contains(&format!("\"userId\":\"{erased}\""))).count();
    assert!(theirs > 0 && skipped == theirs, "{skipped} of {theirs} skipped:\n{output}");
    assert!(!output.contains(&erased), "no userId in the log:\n{output}");
    let held: std::collections::BTreeSet<String> =
        sandbox.state().contacts.values().filter_map(|c| c.external_id.clone()).collect();
    let mut others = users.clone();
    others.remove(&erased);
    assert_eq!(held, others, "everyone but the person erased");
}
