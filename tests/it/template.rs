//! template.yaml: what the functions, queues, role and alarms are given, read as CloudFormation reads it (SAM CLI's
//! reader, from the aws-sam-cli that scripts/test installs), and the `Settings` parameter surviving
//! `--parameter-overrides`.

use std::process::Command;
use std::time::Duration;

use intercom_relay::forward::{BreakerPolicy, ForwardOptions, Outcome, QUEUE_RETENTION};
use intercom_relay::queue::{MAX_DEAD_LETTER_BYTES, MemoryDeadLetter, RecordAttributes, SqsEvent, SqsRecord};
use intercom_relay::retry::parse_duration;
use intercom_relay::sandbox::{Outage, SandboxOptions, SandboxServer};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::forward_batch::quick;
use crate::helpers::{Captured, forwarder, memory_app, post, send};

/// Reads `Settings=…` as `sam deploy --parameter-overrides` does, and checks the value against the template's
/// AllowedPattern and MaxLength; prints the value SAM would pass to CloudFormation.
const SAM_READS: &str = r#"
import re, sys
from samcli.cli.types import CfnParameterOverridesType
from samcli.yamlhelper import yaml_parse
parameter = yaml_parse(open("template.yaml").read())["Parameters"]["Settings"]
value = CfnParameterOverridesType().convert((sys.argv[1],), None, None)["Settings"]
assert re.fullmatch(parameter["AllowedPattern"], value), "AllowedPattern refuses it"
assert len(value) <= parameter["MaxLength"], "over MaxLength"
sys.stdout.write(value)
"#;

#[test]
fn the_settings_parameter_reaches_the_function_as_the_document_it_was_made_from() {
    let python = std::env::var("ANALYTICS_PYTHON")
        .expect("ANALYTICS_PYTHON is not set: run the tests with scripts/test, which installs aws-sam-cli");
    for file in ["events/settings/shop.json", "events/settings/anonymous-visitors.json"] {
        let printed = Command::new(env!("CARGO_BIN_EXE_intercom-relay"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["settings", "parameter", file])
            .output()
            .unwrap();
        assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
        let override_text = String::from_utf8(printed.stdout).unwrap();
        let read = Command::new(&python)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["-c", SAM_READS, override_text.trim_end()])
            .output()
            .unwrap();
        assert!(read.status.success(), "{file}: {}", String::from_utf8_lossy(&read.stderr));
        let received: Value = serde_json::from_slice(&read.stdout).unwrap();
        let mut written: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap())
                .unwrap();
        written.as_object_mut().unwrap().remove("$schema");
        assert_eq!(received, written, "{file}");
        intercom_relay::settings::Settings::parse(&received.to_string()).unwrap();
    }
}

#[test]
fn a_document_too_big_for_the_parameter_is_refused_with_its_size() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("settings-parameter");
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.json");
    let names: Vec<String> = (0..400).map(|i| format!("Event number {i}")).collect();
    std::fs::write(&big, serde_json::json!({"events": {"deny": names}}).to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_intercom-relay")).args(["settings", "parameter"]).arg(&big).output();
    let output = output.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bytes as one line; the Settings parameter takes at most 3072"), "{stderr}");
}

/// The template as CloudFormation reads it (SAM CLI's YAML reader, intrinsics as `{"Ref": …}`), as JSON.
fn template() -> &'static Value {
    static TEMPLATE: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let script = "import json, sys\nfrom samcli.yamlhelper import yaml_parse\n\
                      sys.stdout.write(json.dumps(yaml_parse(open('template.yaml').read())))";
        serde_json::from_str(&python(script, &[])).unwrap()
    })
}

/// What `script` prints, run from the crate's root by the Python that has aws-sam-cli.
fn python(script: &str, args: &[&str]) -> String {
    let python = std::env::var("ANALYTICS_PYTHON")
        .expect("ANALYTICS_PYTHON is not set: run the tests with scripts/test, which installs aws-sam-cli");
    let run = Command::new(python).current_dir(env!("CARGO_MANIFEST_DIR")).arg("-c").arg(script).args(args).output();
    let run = run.unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8(run.stdout).unwrap()
}

fn properties(resource: &str) -> &'static Value {
    let properties = &template()["Resources"][resource]["Properties"];
    assert!(properties.is_object(), "the template has no resource {resource}");
    properties
}

/// The variables the forward function gets with every parameter at its default, as CloudFormation would resolve them
/// (the token, which has none, given one; a queue's `Ref`, its URL).
fn forward_environment() -> std::collections::HashMap<String, String> {
    let variables = properties("ForwardFunction")["Environment"]["Variables"].as_object().unwrap();
    let resolve = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Object(reference) if reference.contains_key("Ref") => {
            let name = reference["Ref"].as_str().unwrap();
            match (&template()["Parameters"][name]["Default"], name) {
                (Value::String(default), _) => default.clone(),
                (Value::Null, "IntercomAccessToken") => "tok-from-the-parameter".into(),
                (Value::Null, _) if template()["Resources"][name]["Type"] == "AWS::SQS::Queue" => {
                    format!("https://sqs.us-east-1.amazonaws.com/123456789012/{name}.fifo")
                }
                (other, _) => panic!("{name}: cannot resolve {other}"),
            }
        }
        other => panic!("an environment value the test cannot resolve: {other}"),
    };
    variables.iter().map(|(name, value)| (name.clone(), resolve(value))).collect()
}

#[test]
fn the_forward_function_starts_with_the_template_defaults_and_tries_events_for_the_retry_horizon() {
    let variables = &properties("ForwardFunction")["Environment"]["Variables"];
    assert_eq!(variables["RETRY_HORIZON"], json!({"Ref": "RetryHorizon"}));
    assert_eq!(variables["QUEUE_URL"], json!({"Ref": "EventsQueue"}), "where the waits of records handed back are set");
    assert!(variables.get("MAX_RECEIVES").is_none(), "the forwarder refuses to start with MAX_RECEIVES");
    let environment = forward_environment();
    let config = intercom_relay::config::ForwardConfig::from_lookup(|name| environment.get(name).cloned());
    let config = config.unwrap_or_else(|e| panic!("the deployed forwarder would not start: {e}"));
    assert_eq!(config.options().horizon, Duration::from_secs(86_400));
    assert_eq!(config.queue_url.as_deref(), Some("https://sqs.us-east-1.amazonaws.com/123456789012/EventsQueue.fifo"));
}

#[test]
fn the_retry_horizon_parameter_takes_the_durations_the_forwarder_reads_and_refuses_others() {
    let parameter = &template()["Parameters"]["RetryHorizon"];
    assert_eq!((&parameter["Type"], &parameter["Default"]), (&json!("String"), &json!("24h")));
    assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
    let description = parameter["Description"].as_str().unwrap();
    assert!(description.contains("At most 14d"), "{description}");
    assert_eq!(parse_duration("14d"), Ok(QUEUE_RETENTION), "14d is the queues' retention");
    // CloudFormation matches the whole value against AllowedPattern (Java's String.matches), as fullmatch does.
    let candidates = ["24h", "7d", "90m", "3600s", "14d", "1w", "24 h", "24", "0h", "", "24h ", "1.5h"];
    let script = "import re, sys, json\n\
                  pattern = json.loads(sys.argv[1])\n\
                  sys.stdout.write(json.dumps([bool(re.fullmatch(pattern, c)) for c in sys.argv[2:]]))";
    let pattern = parameter["AllowedPattern"].to_string();
    let args: Vec<&str> = std::iter::once(pattern.as_str()).chain(candidates).collect();
    let accepted: Vec<bool> = serde_json::from_str(&python(script, &args)).unwrap();
    let accepted: Vec<&str> = candidates.iter().zip(accepted).filter(|(_, ok)| *ok).map(|(c, _)| *c).collect();
    assert_eq!(accepted, ["24h", "7d", "90m", "3600s", "14d"], "{pattern}");
    for value in accepted {
        let read = parse_duration(value).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert!(read > Duration::ZERO, "{value}");
    }
}

#[test]
fn the_forward_role_may_set_the_wait_of_events_queue_messages_and_only_there() {
    let statements = properties("ForwardFunctionRole")["Policies"][0]["PolicyDocument"]["Statement"].as_array();
    // (action, resource) for every action granted: a string or a list of them.
    let mut granted: Vec<(String, &Value)> = Vec::new();
    for statement in statements.unwrap() {
        let actions = match &statement["Action"] {
            Value::String(action) => vec![action.clone()],
            actions => serde_json::from_value(actions.clone()).unwrap(),
        };
        granted.extend(actions.into_iter().map(|action| (action, &statement["Resource"])));
    }
    let events_queue = json!({"Fn::GetAtt": ["EventsQueue", "Arn"]});
    let on = |action: &str| granted.iter().filter(|(a, _)| a == action).map(|(_, r)| *r).collect::<Vec<_>>();
    assert_eq!(on("sqs:ChangeMessageVisibility"), [&events_queue], "{granted:?}");
    for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"] {
        assert_eq!(on(action), [&events_queue], "{action}");
    }
    assert_eq!(on("sqs:SendMessage"), [&json!({"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]})]);
}

#[test]
fn a_dead_letter_of_any_size_fits_and_only_a_crash_loop_meets_the_queues_own_redrive() {
    let events = properties("EventsQueue");
    let redrive = &events["RedrivePolicy"];
    assert_eq!(redrive["maxReceiveCount"], json!(1000), "SQS's maximum: above the 800 tries a horizon may take");
    assert_eq!(redrive["deadLetterTargetArn"], json!({"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}));
    let dead_letters = properties("EventsDeadLetterQueue");
    assert_eq!(dead_letters["MaximumMessageSize"], json!(MAX_DEAD_LETTER_BYTES));
    assert_eq!(MAX_DEAD_LETTER_BYTES, 1_048_576);
    for queue in [events, dead_letters] {
        assert_eq!(queue["MessageRetentionPeriod"], json!(QUEUE_RETENTION.as_secs()));
        assert_eq!(queue["FifoQueue"], json!(true));
    }
    assert_eq!(QUEUE_RETENTION.as_secs(), 1_209_600, "14 days, SQS's longest");
}

#[test]
fn the_intercom_failing_alarm_counts_the_metric_filters_lines_and_notifies_as_the_other_alarms_do() {
    let filter = properties("IntercomFailingMetricFilter");
    assert_eq!(filter["LogGroupName"], json!({"Ref": "ForwardLogGroup"}));
    assert_eq!(filter["FilterPattern"], json!(r#"{ $.fields.circuit = "open" }"#));
    let metric = &filter["MetricTransformations"][0];
    assert_eq!((&metric["MetricValue"], metric.get("DefaultValue")), (&json!("1"), None));
    let alarm = properties("IntercomFailingAlarm");
    assert_eq!((&alarm["Namespace"], &alarm["MetricName"]), (&metric["MetricNamespace"], &metric["MetricName"]));
    assert_eq!(alarm["Namespace"], json!({"Fn::Sub": "intercom-relay/${AWS::StackName}"}), "one metric per stack");
    assert!(alarm.get("Dimensions").is_none(), "the filter writes none");
    assert_eq!(alarm["AlarmName"], json!({"Fn::Sub": "${AWS::StackName}-intercom-failing"}));
    let rule = [&alarm["Statistic"], &alarm["Period"], &alarm["ComparisonOperator"], &alarm["Threshold"]];
    assert_eq!(rule, [&json!("Sum"), &json!(300), &json!("GreaterThanThreshold"), &json!(0)]);
    assert_eq!((&alarm["DatapointsToAlarm"], &alarm["TreatMissingData"]), (&json!(1), &json!("notBreaching")));
    let others = properties("DeadLetterAlarm");
    assert_eq!((&alarm["AlarmActions"], &alarm["OKActions"]), (&others["AlarmActions"], &others["OKActions"]));
    let description = alarm["AlarmDescription"]["Fn::Sub"].as_str().unwrap();
    for said in ["nothing is dead-lettered", "no redrive is needed", r#""circuit":"open""#] {
        assert!(description.contains(said), "{description}");
    }
    assert_eq!(template()["Outputs"]["IntercomFailingAlarmName"]["Value"], json!({"Ref": "IntercomFailingAlarm"}));
}

/// Whether a CloudWatch Logs JSON filter of the one form the template uses, `{ $.a.b = "text" }`, matches `line`.
fn json_filter_matches(pattern: &str, line: &Value) -> bool {
    let inner = pattern.trim().strip_prefix('{').and_then(|p| p.strip_suffix('}')).expect("a JSON filter").trim();
    let (selector, text) = inner.split_once(" = ").expect("an equality");
    let path = selector.strip_prefix("$.").expect("a selector from the root");
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).expect("a quoted string");
    path.split('.').try_fold(line, |value, key| value.get(key)).and_then(Value::as_str) == Some(text)
}

#[tokio::test]
async fn the_metric_filter_counts_the_lines_the_forwarder_logs_while_intercom_refuses_every_call_and_no_others() {
    // The capture is tracing-subscriber's JSON, as in Lambda (`logging::init`): its fields under "fields".
    let (logs, _guard) = Captured::start(tracing::Level::INFO, true);
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let breaker =
        BreakerPolicy { threshold: 5, open_min: Duration::from_millis(200), open_max: Duration::from_millis(400) };
    let forwarder = forwarder(&sandbox, MemoryDeadLetter::new(), ForwardOptions { breaker, ..quick() });
    // Ten people's events, as ingest queues them: ten calls at once, more than the five failures that open it.
    let app = memory_app();
    let events: Vec<Value> = (0..10)
        .map(|user| json!({"type": "identify", "userId": format!("u-{user}"), "traits": {"name": "Ada"}}))
        .collect();
    let answer = send(&app, post("/v1/batch", &json!({ "batch": events }).to_string())).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    let records = app.queue().messages().into_iter().map(|message| SqsRecord {
        body: Some(message.body),
        attributes: RecordAttributes {
            approximate_receive_count: Some("1".into()),
            message_group_id: Some(message.ordering_key),
            message_deduplication_id: Some(message.message_id.clone()),
            ..RecordAttributes::default()
        },
        message_id: message.message_id,
        ..SqsRecord::default()
    });
    let records: Vec<SqsRecord> = records.collect();
    let batch = SqsEvent { records };
    let deadline = || Instant::now() + Duration::from_secs(30);
    sandbox.set_outage(Some(Outage::Unauthorized));
    // Opens (ERROR), then a probe that fails (WARN); then Intercom takes the token again and the probe closes it.
    for _ in 0..2 {
        let report = forwarder.handle(&batch, deadline()).await;
        assert!(report.records.iter().all(|r| matches!(r.outcome, Outcome::Retry { .. })), "{report:?}");
        tokio::time::sleep(Duration::from_millis(450)).await;
    }
    sandbox.set_outage(None);
    let report = forwarder.handle(&batch, deadline()).await;
    // The probe goes through and closes the breaker; the calls withheld while it was out wait for their next receive.
    assert!(report.records.iter().any(|r| matches!(r.outcome, Outcome::Delivered { .. })), "{report:?}");
    let pattern = properties("IntercomFailingMetricFilter")["FilterPattern"].as_str().unwrap();
    let lines: Vec<Value> = logs.text().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let counted: Vec<&Value> = lines.iter().filter(|line| json_filter_matches(pattern, line)).collect();
    let levels: Vec<&str> = counted.iter().map(|line| line["level"].as_str().unwrap()).collect();
    // One ERROR as it opens, then a WARN per failed probe (one here; more only if a run is slow).
    assert!(levels.len() >= 2 && levels[0] == "ERROR", "{levels:?} {counted:#?}");
    assert!(levels[1..].iter().all(|l| *l == "WARN"), "{levels:?} {counted:#?}");
    let opened = counted[0]["fields"]["message"].as_str().unwrap();
    assert!(opened.contains("INTERCOM_ACCESS_TOKEN") && opened.contains("Nothing is dead-lettered"), "{opened}");
    let closed = lines.iter().filter(|line| line["fields"]["circuit"] == "closed").count();
    assert_eq!(closed, 1, "the breaker closed, and that line is not counted");
    assert!(lines.len() > counted.len() + closed, "the other lines (handed back, delivered) are not counted either");
}
