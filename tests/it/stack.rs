//! `--stack NAME`: the events queue read from the deployed stack's `EventsQueueUrl` output, with moto's CloudFormation
//! holding a stack shaped as the template's (its FIFO events queue and that output), for `replay --stack` and
//! `erase --stack`: what the queue then holds; and the errors of a stack that is not there, not ours, or not reachable,
//! with nothing sent. Each test deploys in a region of its own, so that stacks of one name never meet.

use std::process::Output;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde_json::{Value, json};

use crate::cli::{relay, scratch, text};
use crate::helpers::{doc_section, sh_blocks, without_comment};
use crate::sqs::endpoint;

/// The docs' stack name.
const STACK: &str = "intercom-relay";

/// An SQS client of moto's, in `region`.
pub(crate) fn sqs_in(region: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint())
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

/// A CloudFormation Query call to moto (which routes by the service its signature names, and checks no signature).
async fn cloudformation(region: &str, params: &[(&str, &str)]) -> (u16, String) {
    let mut body = String::from("Version=2010-05-15");
    for (key, value) in params {
        body.push_str(&format!(
            "&{key}={}",
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
        ));
    }
    let credential = format!("test/20260101/{region}/cloudformation/aws4_request");
    let response = reqwest::Client::new()
        .post(format!("{}/", endpoint()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature=x"))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("moto at {}: {e}", endpoint()));
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Deploys `stack` in `region` afresh (one left by an earlier run is deleted first): the template's events queue,
/// `<stack>-events.fifo`, and `outputs` (name → `{"Ref": "EventsQueue"}` or a literal). Returns the queue's URL as SQS
/// gives it.
pub(crate) async fn deploy(stack: &str, region: &str, outputs: Value) -> String {
    let (status, answer) = cloudformation(region, &[("Action", "DeleteStack"), ("StackName", stack)]).await;
    assert_eq!(status, 200, "DeleteStack: {answer}");
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"EventsQueue": {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": format!("{stack}-events.fifo"), "FifoQueue": true, "ContentBasedDeduplication": false}}},
        "Outputs": outputs,
    });
    let (status, answer) = cloudformation(
        region,
        &[("Action", "CreateStack"), ("StackName", stack), ("TemplateBody", &template.to_string())],
    )
    .await;
    assert_eq!(status, 200, "CreateStack: {answer}");
    let queue = sqs_in(region).get_queue_url().queue_name(format!("{stack}-events.fifo")).send().await.unwrap();
    queue.queue_url().unwrap().to_owned()
}

/// The template's output, `EventsQueueUrl: !Ref EventsQueue` (template.yaml's Outputs).
pub(crate) fn events_queue_output() -> Value {
    json!({"EventsQueueUrl": {"Value": {"Ref": "EventsQueue"}}, "IngestUrl": {"Value": "https://x.lambda-url.on.aws/"}})
}

/// The environment of an operator whose AWS CLI (the one scripts/test installs, first on `PATH`) reaches moto
/// (`AWS_ENDPOINT_URL`, as for every service), in `region`, and no profile of the machine's.
pub(crate) fn operator(region: &str) -> Vec<(&'static str, String)> {
    let python = std::path::PathBuf::from(crate::sdks::installed("ANALYTICS_PYTHON"));
    let mut path = vec![python.parent().unwrap().to_owned()];
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let path = std::env::join_paths(path).unwrap().into_string().unwrap();
    vec![
        ("PATH", path),
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", region.into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

async fn run_in(dir: &std::path::Path, args: &[&str], env: &[(&'static str, String)], remove: &[&str]) -> Output {
    let mut command = relay();
    command.current_dir(dir).args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    for name in remove {
        command.env_remove(name);
    }
    tokio::task::spawn_blocking(move || command.output().expect("the binary runs")).await.unwrap()
}

/// Every message the queue holds: (message group, body as JSON).
pub(crate) async fn held(sqs: &Client, url: &str) -> Vec<(String, Value)> {
    let mut held = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .unwrap();
        let messages = received.messages();
        if messages.is_empty() {
            return held;
        }
        for message in messages {
            let group = message.attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId].clone();
            held.push((group, serde_json::from_str(message.body().unwrap()).unwrap()));
            sqs.delete_message().queue_url(url).receipt_handle(message.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_erase_send_to_the_events_queue_the_stack_names() {
    let region = "ca-central-1";
    let queue = deploy(STACK, region, events_queue_output()).await;
    let dir = scratch("stack-replay");
    let generated =
        run_in(&dir, &["generate", "--events", "40", "--users", "4", "--days", "1", "--archive", "archive"], &[], &[])
            .await;
    assert!(generated.status.success(), "{}", text(&generated.stderr));

    let env = operator(region);
    let output = run_in(&dir, &["replay", "archive", "--stack", STACK, "--json"], &env, &[]).await;
    assert!(output.status.success(), "{}{}", text(&output.stdout), text(&output.stderr));
    // moto's CloudFormation names the queue by SQS's public host; its GetQueueUrl by its own.
    let said = text(&output.stderr);
    assert!(
        said.contains("the stack intercom-relay's EventsQueueUrl: https://sqs.ca-central-1.amazonaws.com/"),
        "{said}"
    );
    assert!(queue.ends_with("/intercom-relay-events.fifo") && said.contains("/intercom-relay-events.fifo\n"), "{said}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["backfill"]["totals"]["sent"], json!(40), "{report}");
    assert!(dir.join("archive.checkpoint").exists(), "the default checkpoint, as with --to-queue");

    // docs/erasure.md's erase through the deployed forwarders, as written.
    let commands = sh_blocks(&doc_section("# Erasure (GDPR, CCPA)")).concat();
    let command = commands.iter().filter_map(|command| without_comment(command));
    let command = command.into_iter().find(|c| c.starts_with("intercom-relay erase ") && c.contains("--stack"));
    let command = command.expect("an erase --stack command");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    assert_eq!(args, ["erase", "--user-id", "user-1", "--leads", "--stack", STACK]);
    let erased = run_in(&dir, &args, &env, &[]).await;
    assert!(erased.status.success(), "{}", text(&erased.stderr));
    assert!(text(&erased.stdout).starts_with("queued erasure "), "{}", text(&erased.stdout));

    let held = held(&sqs_in(region), &queue).await;
    assert_eq!(held.len(), 41, "the archive's 40 events and the erasure");
    let events: Vec<&Value> = held.iter().filter(|(_, body)| body.get("erasure").is_none()).map(|(_, b)| b).collect();
    assert_eq!(events.len(), 40);
    let erasures: Vec<&(String, Value)> = held.iter().filter(|(_, body)| body.get("erasure").is_some()).collect();
    assert_eq!(erasures.len(), 1, "{held:?}");
    let (group, erasure) = erasures[0];
    assert_eq!(erasure["erasure"]["user_id"], json!("user-1"), "{erasure}");
    assert_eq!(erasure["erasure"]["leads"], json!(true), "{erasure}");
    assert_eq!(group, "user-1", "in the person's lane");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_that_is_missing_not_ours_or_unreachable_is_refused_and_nothing_is_sent() {
    let region = "sa-east-1";
    // A stack with a queue but without the template's output.
    let queue = deploy("not-relay", region, json!({"Other": {"Value": "x"}})).await;
    let dir = scratch("stack-refused");
    let generated =
        run_in(&dir, &["generate", "--events", "5", "--users", "1", "--archive", "archive"], &[], &[]).await;
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let env = operator(region);

    let missing = run_in(&dir, &["replay", "archive", "--stack", "gone"], &env, &[]).await;
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
    let said = text(&missing.stderr);
    assert!(said.contains("no stack named gone in sa-east-1: CloudFormation answered"), "{said}");
    assert!(said.contains("does not exist"), "{said}");

    let not_ours = run_in(&dir, &["erase", "--user-id", "u-1", "--stack", "not-relay"], &env, &[]).await;
    assert_eq!(not_ours.status.code(), Some(2), "{}", text(&not_ours.stderr));
    let said = text(&not_ours.stderr);
    assert!(
        said.contains("the stack not-relay in sa-east-1 has no EventsQueueUrl output (its status: CREATE_COMPLETE; its outputs: Other)"),
        "{said}"
    );

    let mut elsewhere = env.clone();
    elsewhere.push(("AWS_ENDPOINT_URL_CLOUDFORMATION", "http://127.0.0.1:9".into()));
    let unreachable = run_in(&dir, &["replay", "archive", "--stack", "not-relay"], &elsewhere, &[]).await;
    assert_eq!(unreachable.status.code(), Some(2), "{}", text(&unreachable.stderr));
    assert!(
        text(&unreachable.stderr).contains("cannot reach CloudFormation at http://127.0.0.1:9"),
        "{}",
        text(&unreachable.stderr)
    );

    let regionless =
        run_in(&dir, &["replay", "archive", "--stack", "not-relay"], &env, &["AWS_REGION", "AWS_DEFAULT_REGION"]).await;
    assert_eq!(regionless.status.code(), Some(2), "{}", text(&regionless.stderr));
    assert!(text(&regionless.stderr).contains("no AWS region to find the stack in"), "{}", text(&regionless.stderr));

    let arn = "arn:aws:cloudformation:eu-north-1:123456789012:stack/not-relay/0a1b2c3d";
    let other_region = run_in(&dir, &["replay", "archive", "--stack", arn], &env, &[]).await;
    assert_eq!(other_region.status.code(), Some(2), "{}", text(&other_region.stderr));
    assert!(
        text(&other_region.stderr).contains("is in eu-north-1, and AWS_REGION is sa-east-1: set AWS_REGION=eu-north-1"),
        "{}",
        text(&other_region.stderr)
    );

    let both = run_in(&dir, &["replay", "archive", "--stack", "not-relay", "--to-queue", &queue], &env, &[]).await;
    assert_eq!(both.status.code(), Some(2));
    assert!(text(&both.stderr).contains("cannot be used with"), "{}", text(&both.stderr));

    assert!(held(&sqs_in(region), &queue).await.is_empty(), "nothing was sent");
    assert!(!dir.join("archive.checkpoint").exists(), "no checkpoint was written");
}
