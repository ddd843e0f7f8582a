//! template.yaml: what the functions, queues, roles and alarms are given, read as CloudFormation reads it (SAM CLI's
//! reader, from the aws-sam-cli that scripts/test installs) and as SAM's transform hands it to CloudFormation; the
//! `Settings` parameter surviving `--parameter-overrides`; docs/deploy.md's secrets commands, validated by `sam validate
//! --lint`.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use intercom_relay::sandbox::{Outage, SandboxOptions, SandboxServer};
use intercom_relay_lambda::forward::{BreakerPolicy, ForwardOptions, Outcome, QUEUE_RETENTION};
use intercom_relay_lambda::queue::{
    APPROXIMATE_RECEIVE_COUNT, MAX_DEAD_LETTER_BYTES, MESSAGE_GROUP_ID, MemoryDeadLetter, SqsRecord, sqs_event_of,
    sqs_record,
};
use intercom_relay_lambda::retry::parse_duration;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::forward_batch::quick;
use crate::helpers::{Captured, forwarder, memory_app, post, request, send};

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
        intercom_relay_lambda::settings::Settings::parse(&received.to_string()).unwrap();
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

/// Parameter values given at deploy (`--parameter-overrides`); the others take their defaults.
type Given<'a> = HashMap<&'a str, &'a str>;

/// A parameter's value: the one given, else its default (a number's as text).
fn parameter(name: &str, given: &Given) -> String {
    if let Some(value) = given.get(name) {
        return (*value).to_owned();
    }
    match &template()["Parameters"][name]["Default"] {
        Value::String(default) => default.clone(),
        Value::Number(default) => default.to_string(),
        other => panic!("parameter {name} has no default ({other}) and was not given"),
    }
}

/// Whether a condition (`Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, a named condition), or a rule's assertion, holds.
fn holds(expression: &Value, given: &Given) -> bool {
    let (function, arguments) = expression.as_object().and_then(|o| o.iter().next()).expect("a function");
    let each = || arguments.as_array().expect("a list of arguments").iter();
    match function.as_str() {
        "Fn::Equals" => {
            let values: Vec<String> = each().map(|v| resolve(v, given)).collect();
            values[0] == values[1]
        }
        "Fn::Not" => !holds(&arguments[0], given),
        "Fn::And" => each().all(|v| holds(v, given)),
        "Fn::Or" => each().any(|v| holds(v, given)),
        "Condition" => holds(&template()["Conditions"][arguments.as_str().unwrap()], given),
        other => panic!("a condition the test cannot evaluate: {other}"),
    }
}

/// A value as CloudFormation resolves it with `given`: a string; a `Ref` to a parameter or a queue (its URL);
/// `Fn::If`; `Fn::Sub` of parameters. A dynamic reference stays as written, as CloudFormation hands it to the resource.
fn resolve(value: &Value, given: &Given) -> String {
    let object = match value {
        Value::String(text) => return text.clone(),
        Value::Number(number) => return number.to_string(),
        Value::Object(object) => object,
        other => panic!("a value the test cannot resolve: {other}"),
    };
    if let Some(name) = object.get("Ref").and_then(Value::as_str) {
        if template()["Resources"][name]["Type"] == "AWS::SQS::Queue" {
            return format!("https://sqs.us-east-1.amazonaws.com/123456789012/{name}.fifo");
        }
        if template()["Resources"][name]["Type"] == "AWS::DynamoDB::Table" {
            // The name CloudFormation gives a table it names: stack, logical id, a suffix.
            return format!("intercom-relay-{name}-1A2B3C4D5E6F");
        }
        if name == "AWS::NoValue" {
            return NO_VALUE.to_owned();
        }
        return parameter(name, given);
    }
    if let Some([condition, then, otherwise]) = object.get("Fn::If").and_then(Value::as_array).map(Vec::as_slice) {
        let condition = &template()["Conditions"][condition.as_str().unwrap()];
        return resolve(if holds(condition, given) { then } else { otherwise }, given);
    }
    if let Some(text) = object.get("Fn::Sub").and_then(Value::as_str) {
        let mut resolved = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            let end = start + rest[start..].find('}').expect("a closed ${}");
            resolved.push_str(&rest[..start]);
            resolved.push_str(&parameter(&rest[start + 2..end], given));
            rest = &rest[end + 1..];
        }
        return resolved + rest;
    }
    panic!("a value the test cannot resolve: {value}")
}

/// What `Ref: AWS::NoValue` resolves to here: CloudFormation leaves out the property (or variable) holding it.
const NO_VALUE: &str = "\u{0}AWS::NoValue";

/// The variables `function` gets, as CloudFormation resolves them with `given`.
fn environment(function: &str, given: &Given) -> HashMap<String, String> {
    let variables = properties(function)["Environment"]["Variables"].as_object().unwrap();
    let resolved = variables.iter().map(|(name, value)| (name.clone(), resolve(value, given)));
    resolved.filter(|(_, value)| value != NO_VALUE).collect()
}

/// The variables the forward function gets with every parameter at its default but the token, given as a value.
fn forward_environment() -> HashMap<String, String> {
    environment("ForwardFunction", &HashMap::from([("IntercomAccessToken", "tok-from-the-parameter")]))
}

#[test]
fn the_forward_function_starts_with_the_template_defaults_and_tries_events_for_the_retry_horizon() {
    let variables = &properties("ForwardFunction")["Environment"]["Variables"];
    assert_eq!(variables["RETRY_HORIZON"], json!({"Ref": "RetryHorizon"}));
    assert_eq!(variables["QUEUE_URL"], json!({"Ref": "EventsQueue"}), "where the waits of records handed back are set");
    assert!(variables.get("MAX_RECEIVES").is_none(), "the forwarder refuses to start with MAX_RECEIVES");
    let environment = forward_environment();
    let config =
        intercom_relay_lambda::config::ForwardFunctionConfig::from_lookup(|name| environment.get(name).cloned());
    let config = config.unwrap_or_else(|e| panic!("the deployed forwarder would not start: {e}")).forward;
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

/// (action, resource) for every action a role's inline policies allow: an action is a string or a list of them.
fn granted(role: &Value) -> Vec<(String, &Value)> {
    let mut granted = Vec::new();
    for policy in role["Properties"]["Policies"].as_array().expect("inline policies") {
        for statement in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
            assert_eq!(statement["Effect"], "Allow", "{statement}");
            let actions = match &statement["Action"] {
                Value::String(action) => vec![action.clone()],
                actions => serde_json::from_value(actions.clone()).unwrap(),
            };
            granted.extend(actions.into_iter().map(|action| (action, &statement["Resource"])));
        }
    }
    granted
}

#[test]
fn the_forward_role_may_set_the_wait_of_events_queue_messages_and_only_there() {
    let granted = granted(&template()["Resources"]["ForwardFunctionRole"]);
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

/// Whether a CloudWatch Logs JSON filter of the forms the template uses matches `line`: `{ TERM && TERM }`, each
/// term `$.a.b = "text"`, `$.a.b = 200` or `$.a.b > 0`.
fn json_filter_matches(pattern: &str, line: &Value) -> bool {
    let inner = pattern.trim().strip_prefix('{').and_then(|p| p.strip_suffix('}')).expect("a JSON filter").trim();
    inner.split("&&").all(|term| {
        let (selector, operator, literal) = [" = ", " > "]
            .iter()
            .find_map(|op| term.trim().split_once(op).map(|(s, l)| (s, op.trim(), l.trim())))
            .unwrap_or_else(|| panic!("not a comparison: {term}"));
        let path = selector.strip_prefix("$.").expect("a selector from the root");
        let Some(value) = path.split('.').try_fold(line, |value, key| value.get(key)) else { return false };
        match (operator, literal.strip_prefix('"').and_then(|t| t.strip_suffix('"'))) {
            ("=", Some(text)) => value.as_str() == Some(text),
            (_, Some(_)) => panic!("a string compared with {operator}: {term}"),
            (_, None) => {
                let number: f64 = literal.parse().unwrap_or_else(|_| panic!("not a number: {literal}"));
                value.as_f64().is_some_and(|v| if operator == "=" { v == number } else { v > number })
            }
        }
    })
}

/// What a metric filter's MetricValue (a number, or a selector such as `$.fields.rejected`) makes of a matching line.
fn metric_value(metric_value: &str, line: &Value) -> f64 {
    match metric_value.strip_prefix("$.") {
        Some(path) => path.split('.').try_fold(line, |value, key| value.get(key)).and_then(Value::as_f64).unwrap(),
        None => metric_value.parse().unwrap(),
    }
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
    let records = app.queue().messages().into_iter().map(|message| {
        let mut record = sqs_record(&message.message_id, Some(message.body));
        record.attributes = std::collections::HashMap::from([
            (APPROXIMATE_RECEIVE_COUNT.to_owned(), "1".to_owned()),
            (MESSAGE_GROUP_ID.to_owned(), message.ordering_key),
            ("MessageDeduplicationId".to_owned(), message.message_id),
        ]);
        record
    });
    let records: Vec<SqsRecord> = records.collect();
    let batch = sqs_event_of(records);
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

/// The template as SAM's transform hands it to CloudFormation (scripts/sam-translate.py), as JSON.
fn transformed() -> &'static Value {
    static TRANSFORMED: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    TRANSFORMED.get_or_init(|| {
        let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sam-translate.py")).unwrap();
        serde_json::from_str(&python(&script, &["template.yaml"])).unwrap()
    })
}

/// Every resource of `kind` in `resources`, by logical id.
fn of_type<'a>(resources: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    resources.as_object().unwrap().iter().filter(|(_, resource)| resource["Type"] == kind).collect()
}

#[tokio::test]
async fn the_rejected_events_metric_sums_what_ingest_refused_inside_requests_answered_200_and_nothing_else() {
    // The capture is tracing-subscriber's JSON, as in Lambda (`logging::init`): its fields under "fields".
    let (logs, _guard) = Captured::start(tracing::Level::INFO, true);
    let app = memory_app();
    let good = json!({"type": "track", "userId": "u-1", "event": "Signed Up"});
    let no_user = json!({"type": "track", "event": "Signed Up"});
    let no_name = json!({"type": "track", "userId": "u-2"});
    let requests = [
        (json!({"batch": [good, no_user, good, no_name]}), 200),
        (json!({"batch": [good, good]}), 200),
        (json!({"batch": [no_user, no_name]}), 400),
    ];
    for (body, status) in &requests {
        let answer = send(&app, post("/v1/batch", &body.to_string())).await;
        assert_eq!(answer.status.as_u16(), *status, "{}", answer.body);
    }
    // `Basic base64("wrong-key:")`: a key the stack does not hold.
    let headers = [("authorization", "Basic d3Jvbmcta2V5Og=="), ("content-type", "application/json")];
    let wrong_key = request("POST", "/v1/batch", &headers, Some(json!({"batch": [no_user]}).to_string().as_bytes()));
    assert_eq!(send(&app, wrong_key).await.status.as_u16(), 401);

    let filter = properties("IngestRejectedEventsMetricFilter");
    assert_eq!(filter["LogGroupName"], json!({"Ref": "IngestLogGroup"}));
    let pattern = filter["FilterPattern"].as_str().unwrap();
    let metric = &filter["MetricTransformations"][0];
    let lines: Vec<Value> = logs.text().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let handled: Vec<&Value> = lines.iter().filter(|l| l["fields"]["message"] == "Ingest request handled.").collect();
    assert_eq!(handled.len(), 4, "one line per request: {lines:#?}");
    let counted: Vec<&&Value> = handled.iter().filter(|line| json_filter_matches(pattern, line)).collect();
    assert_eq!(counted.len(), 1, "only the 200 that refused events: {handled:#?}");
    let value = metric_value(metric["MetricValue"].as_str().unwrap(), counted[0]);
    assert_eq!(value, 2.0, "the events refused in it: {:#}", counted[0]);
    assert_eq!(counted[0]["fields"]["accepted"], 2);

    let alarm = properties("IngestRejectedEventsAlarm");
    assert_eq!((&alarm["Namespace"], &alarm["MetricName"]), (&metric["MetricNamespace"], &metric["MetricName"]));
    assert_eq!(alarm["Namespace"], json!({"Fn::Sub": "intercom-relay/${AWS::StackName}"}));
    let rule = [&alarm["Statistic"], &alarm["Period"], &alarm["ComparisonOperator"], &alarm["Threshold"]];
    assert_eq!(rule, [&json!("Sum"), &json!(300), &json!("GreaterThanThreshold"), &json!(0)], "any refused event");
    let others = properties("DeadLetterAlarm");
    assert_eq!((&alarm["AlarmActions"], &alarm["OKActions"]), (&others["AlarmActions"], &others["OKActions"]));
    let outputs = &template()["Outputs"];
    assert_eq!(outputs["IngestRejectedEventsAlarmName"]["Value"], json!({"Ref": "IngestRejectedEventsAlarm"}));
}

#[test]
fn the_4xx_alarm_fires_when_most_of_the_ingest_urls_requests_are_refused_for_ten_minutes() {
    let alarm = properties("IngestRefusalsAlarm");
    let metrics = alarm["Metrics"].as_array().unwrap();
    let by_id = |id: &str| metrics.iter().find(|m| m["Id"] == id).unwrap_or_else(|| panic!("no metric {id}"));
    for (id, name) in [("requests", "UrlRequestCount"), ("refused", "Url4xxCount")] {
        let stat = &by_id(id)["MetricStat"];
        assert_eq!(stat["Metric"]["Namespace"], "AWS/Lambda");
        assert_eq!(stat["Metric"]["MetricName"], name);
        assert_eq!(stat["Metric"]["Dimensions"], json!([{"Name": "FunctionName", "Value": {"Ref": "IngestFunction"}}]));
        assert_eq!((&stat["Period"], &stat["Stat"]), (&json!(300), &json!("Sum")));
        assert_eq!(by_id(id)["ReturnData"], false);
    }
    let share = by_id("share");
    assert_eq!(share["Expression"], "IF(FILL(requests, 0) >= 10, 100 * FILL(refused, 0) / requests, 0)");
    assert_eq!(share["ReturnData"], true);
    let rule =
        [&alarm["Threshold"], &alarm["ComparisonOperator"], &alarm["EvaluationPeriods"], &alarm["DatapointsToAlarm"]];
    assert_eq!(rule, [&json!(50), &json!("GreaterThanThreshold"), &json!(2), &json!(2)]);
    assert_eq!(alarm["TreatMissingData"], "notBreaching");
    let others = properties("DeadLetterAlarm");
    assert_eq!((&alarm["AlarmActions"], &alarm["OKActions"]), (&others["AlarmActions"], &others["OKActions"]));
    let description = alarm["AlarmDescription"]["Fn::Sub"].as_str().unwrap();
    for said in ["do not retry a 4xx", "401", "WriteKeys", "403", "CorsAllowedOrigins"] {
        assert!(description.contains(said), "{description}");
    }
    assert_eq!(template()["Outputs"]["IngestRefusalsAlarmName"]["Value"], json!({"Ref": "IngestRefusalsAlarm"}));
}

#[test]
fn without_an_alarm_topic_the_template_says_nobody_hears_an_alarm_and_every_alarm_notifies_the_topic() {
    let parameter = &template()["Parameters"]["AlarmTopicArn"];
    assert_eq!(parameter["Default"], "");
    assert!(parameter["Description"].as_str().unwrap().contains("nobody hears any alarm"), "{parameter}");
    let notify = json!({"Fn::If": ["NotifyAlarms", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]});
    let alarms = of_type(&template()["Resources"], "AWS::CloudWatch::Alarm");
    assert_eq!(alarms.len(), 8, "{:?}", alarms.iter().map(|(id, _)| id).collect::<Vec<_>>());
    for (id, alarm) in alarms {
        let alarm = &alarm["Properties"];
        assert_eq!((&alarm["AlarmActions"], &alarm["OKActions"]), (&notify, &notify), "{id}");
    }
}

#[test]
fn the_ingest_function_is_capped_by_default_and_the_forward_function_reserves_what_its_event_source_may_run() {
    let cap = &template()["Parameters"]["IngestReservedConcurrency"];
    assert_eq!((&cap["Default"], &cap["MinValue"]), (&json!(100), &json!(0)), "capped by default; 0 lifts the cap");
    let description = cap["Description"].as_str().unwrap();
    for said in ["1,000 requests a second", "0 sets no cap", "keep 100 unreserved"] {
        assert!(description.contains(said), "{description}");
    }
    let ingest = &properties("IngestFunction")["ReservedConcurrentExecutions"];
    assert_eq!(
        *ingest,
        json!({"Fn::If": ["CapIngest", {"Ref": "IngestReservedConcurrency"}, {"Ref": "AWS::NoValue"}]})
    );
    assert!(holds(&template()["Conditions"]["CapIngest"], &HashMap::new()), "the default caps");
    assert!(!holds(&template()["Conditions"]["CapIngest"], &HashMap::from([("IngestReservedConcurrency", "0")])));

    // AWS: a function's reserved concurrency at least its SQS event sources' MaximumConcurrency, else Lambda throttles.
    let forward = properties("ForwardFunction");
    let maximum = &forward["Events"]["Queue"]["Properties"]["ScalingConfig"]["MaximumConcurrency"];
    assert_eq!((&forward["ReservedConcurrentExecutions"], maximum), (&json!({"Ref": "ForwardConcurrency"}), maximum));
    assert_eq!(*maximum, json!({"Ref": "ForwardConcurrency"}));
    // And so CloudFormation gets them from SAM's transform.
    let resources = &transformed()["Resources"];
    let mapping = &resources["ForwardFunctionQueue"]["Properties"];
    assert_eq!(mapping["ScalingConfig"]["MaximumConcurrency"], json!({"Ref": "ForwardConcurrency"}));
    let function = &resources["ForwardFunction"]["Properties"];
    assert_eq!(function["ReservedConcurrentExecutions"], json!({"Ref": "ForwardConcurrency"}));
    assert_eq!(resources["IngestFunction"]["Properties"]["ReservedConcurrentExecutions"], *ingest);
}

#[test]
fn each_function_has_a_role_of_its_own_writing_only_its_own_log_group_and_no_managed_policy() {
    let resources = &transformed()["Resources"];
    assert!(!transformed().to_string().contains("AWSLambdaBasicExecutionRole"), "no basic execution role anywhere");
    let roles = of_type(resources, "AWS::IAM::Role");
    let names: Vec<&str> = roles.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(names, ["ForwardFunctionRole", "IngestFunctionRole"], "SAM makes no role of its own");
    for (id, role) in &roles {
        assert!(role["Properties"].get("ManagedPolicyArns").is_none(), "{id}: {role}");
        for (action, resource) in granted(role) {
            assert_ne!(*resource, json!("*"), "{id}: {action} on every resource");
        }
    }
    for (function, group, name) in [
        ("IngestFunction", "IngestLogGroup", "/aws/lambda/${AWS::StackName}/ingest"),
        ("ForwardFunction", "ForwardLogGroup", "/aws/lambda/${AWS::StackName}/forward"),
    ] {
        let properties = &resources[function]["Properties"];
        assert_eq!(properties["LoggingConfig"]["LogGroup"], json!({"Ref": group}), "{function}");
        assert_eq!(resources[group]["Properties"]["LogGroupName"], json!({"Fn::Sub": name}));
        let role = properties["Role"]["Fn::GetAtt"][0].as_str().unwrap();
        let granted = granted(&resources[role]);
        let logs: Vec<&(String, &Value)> = granted.iter().filter(|(action, _)| action.starts_with("logs:")).collect();
        let actions: Vec<&str> = logs.iter().map(|(action, _)| action.as_str()).collect();
        assert_eq!(actions, ["logs:CreateLogStream", "logs:PutLogEvents"], "{function}");
        // A log group's Arn ends in :* (its streams): the group's own, no other.
        for (action, resource) in logs {
            assert_eq!(**resource, json!({"Fn::GetAtt": [group, "Arn"]}), "{function}: {action}");
        }
    }
    let ingest = granted(&resources["IngestFunctionRole"]);
    let sqs: Vec<_> = ingest.iter().filter(|(action, _)| action.starts_with("sqs:")).collect();
    assert_eq!(sqs, [&("sqs:SendMessage".to_owned(), &json!({"Fn::GetAtt": ["EventsQueue", "Arn"]}))]);
}

#[test]
fn both_queues_refuse_requests_without_tls_and_only_the_events_queue_may_dead_letter_to_the_dlq() {
    let policies = of_type(&template()["Resources"], "AWS::SQS::QueuePolicy");
    for queue in ["EventsQueue", "EventsDeadLetterQueue"] {
        let mine: Vec<_> =
            policies.iter().filter(|(_, p)| p["Properties"]["Queues"] == json!([{"Ref": queue}])).collect();
        assert_eq!(mine.len(), 1, "{queue}: one policy");
        let statements = mine[0].1["Properties"]["PolicyDocument"]["Statement"].as_array().unwrap();
        let deny = json!({
            "Sid": "DenyWithoutTls",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": {"Fn::GetAtt": [queue, "Arn"]},
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}
        });
        assert_eq!(statements, &[deny], "{queue}");
    }
    let allow = &properties("EventsDeadLetterQueue")["RedriveAllowPolicy"];
    assert_eq!(allow["redrivePermission"], "byQueue");
    let sources = allow["sourceQueueArns"].as_array().unwrap();
    let [source] = sources.as_slice() else { panic!("one source queue: {allow}") };
    // Named by ARN, as GetAtt would make a cycle with the events queue's RedrivePolicy: it must be that queue's name.
    let arn = source["Fn::Sub"].as_str().unwrap();
    let name = properties("EventsQueue")["QueueName"]["Fn::Sub"].as_str().unwrap();
    assert_eq!(arn, format!("arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{name}"));
    assert_eq!(name, "${AWS::StackName}-events.fifo");
}

#[test]
fn the_token_and_the_write_keys_reach_the_functions_as_values_or_as_secrets_manager_references_given_once() {
    let plain = HashMap::from([("IntercomAccessToken", "tok-value"), ("WriteKeys", "k1,k2")]);
    assert_eq!(environment("ForwardFunction", &plain)["INTERCOM_ACCESS_TOKEN"], "tok-value");
    assert_eq!(environment("IngestFunction", &plain)["WRITE_KEYS"], "k1,k2");
    let secrets = HashMap::from([
        ("IntercomAccessTokenSecret", "intercom-relay/intercom-token"),
        ("WriteKeysSecret", "intercom-relay/relay:SecretString:write_keys"),
    ]);
    let token = &environment("ForwardFunction", &secrets)["INTERCOM_ACCESS_TOKEN"];
    assert_eq!(token, "{{resolve:secretsmanager:intercom-relay/intercom-token}}");
    let keys = &environment("IngestFunction", &secrets)["WRITE_KEYS"];
    assert_eq!(keys, "{{resolve:secretsmanager:intercom-relay/relay:SecretString:write_keys}}");
    for name in ["WriteKeys", "IntercomAccessToken"] {
        assert_eq!(template()["Parameters"][name]["NoEcho"], true, "{name}");
    }
    // The template's Rules: each secret exactly one way, so that no function starts without it.
    let rules = template()["Rules"].as_object().unwrap();
    let passes = |given: &Given| {
        rules.values().all(|rule| rule["Assertions"].as_array().unwrap().iter().all(|a| holds(&a["Assert"], given)))
    };
    assert!(passes(&plain) && passes(&secrets));
    let mixed = HashMap::from([("IntercomAccessToken", "tok"), ("WriteKeysSecret", "intercom-relay/write-keys")]);
    assert!(passes(&mixed));
    assert!(!passes(&HashMap::from([("WriteKeys", "k1")])), "no token at all");
    let both = HashMap::from([("IntercomAccessToken", "tok"), ("IntercomAccessTokenSecret", "t"), ("WriteKeys", "k")]);
    assert!(!passes(&both), "the token two ways");
}

/// Reads docs/deploy.md's secrets commands as a shell and SAM CLI would: the secrets `aws secretsmanager create-secret`
/// makes, and each `sam deploy`'s `--parameter-overrides`, checked against the parameters' AllowedPattern. `$VERSION`
/// stands for a version id as put-secret-value prints it.
const SECRETS_COMMANDS: &str = r#"
import json, os, re, shlex, sys
from samcli.cli.types import CfnParameterOverridesType
from samcli.yamlhelper import yaml_parse
parameters = yaml_parse(open("template.yaml").read())["Parameters"]
os.environ["VERSION"] = "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"
created, deploys = [], []
for command in sys.argv[1].replace("\\\n", " ").splitlines():
    words = [os.path.expandvars(word) for word in shlex.split(command, comments=True)]
    if words[:3] == ["aws", "secretsmanager", "create-secret"]:
        created.append(words[words.index("--name") + 1])
    if words[:2] == ["sam", "deploy"]:
        start = words.index("--parameter-overrides") + 1
        end = next((i for i in range(start, len(words)) if words[i].startswith("--")), len(words))
        overrides = CfnParameterOverridesType().convert(tuple(words[start:end]), None, None)
        for key, value in overrides.items():
            assert key in parameters, f"{key} is no parameter of the template"
            pattern = parameters[key].get("AllowedPattern")
            assert pattern is None or re.fullmatch(pattern, value), f"{key}={value}: AllowedPattern refuses it"
        deploys.append(overrides)
sys.stdout.write(json.dumps({"created": created, "deploys": deploys}))
"#;

/// `sam validate --lint` (aws-sam-cli's cfn-lint) on a template file; its output when it fails.
fn sam_validate(path: &std::path::Path) -> Result<(), String> {
    let python =
        std::env::var("ANALYTICS_PYTHON").expect("ANALYTICS_PYTHON is not set: run the tests with scripts/test");
    let sam = std::path::Path::new(&python).with_file_name("sam");
    let run =
        Command::new(sam).args(["validate", "--lint", "--template"]).arg(path).env("SAM_CLI_TELEMETRY", "0").output();
    let run = run.unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    if run.status.success() { Ok(()) } else { Err(said) }
}

/// `base` (the template, or SAM's transform of it) with the token's and the write keys' variables as CloudFormation
/// hands them to Lambda with `given` (a secret as its dynamic reference, which CloudFormation then resolves), written
/// where `sam validate` can read it.
fn resolved_template(base: &Value, given: &Given, file: &str) -> std::path::PathBuf {
    let mut variant = base.clone();
    for (function, name) in [("IngestFunction", "WRITE_KEYS"), ("ForwardFunction", "INTERCOM_ACCESS_TOKEN")] {
        let value = environment(function, given).remove(name).unwrap();
        variant["Resources"][function]["Properties"]["Environment"]["Variables"][name] = json!(value);
    }
    // What only those variables used is used no more (cfn-lint's W8001 and W2001 would say so).
    for section in ["Conditions", "Parameters"] {
        let mut entries = variant[section].as_object().unwrap().clone();
        variant.as_object_mut().unwrap().remove(section);
        let rest = variant.to_string();
        entries.retain(|name, _| rest.contains(&format!("\"{name}\"")) || rest.contains(&format!("${{{name}}}")));
        variant[section] = Value::Object(entries);
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("template-variants");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_string_pretty(&variant).unwrap()).unwrap();
    path
}

#[test]
fn the_readmes_secrets_commands_name_the_secrets_they_create_and_sam_validate_lint_passes_the_template_they_deploy() {
    let section = crate::helpers::doc_section("## Secrets in Secrets Manager");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a sh block");
    let read: Value = serde_json::from_str(&python(SECRETS_COMMANDS, &[block])).unwrap();
    let created: Vec<&str> = read["created"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(created, ["intercom-relay/intercom-token", "intercom-relay/write-keys"]);
    let deploys = read["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 2, "the first deploy, and the one after a rotation: {deploys:?}");
    // A later `sam deploy` keeps the stack's values of the parameters it does not give (UsePreviousValue).
    let mut stack: Given = HashMap::new();
    for (index, overrides) in deploys.iter().enumerate() {
        stack.extend(overrides.as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())));
        let given = stack.clone();
        for (parameter, variable, function) in [
            ("IntercomAccessTokenSecret", "INTERCOM_ACCESS_TOKEN", "ForwardFunction"),
            ("WriteKeysSecret", "WRITE_KEYS", "IngestFunction"),
        ] {
            let Some(secret) = given.get(parameter) else { continue };
            let name = secret.split(":SecretString").next().unwrap();
            assert!(created.contains(&name), "deploy {index}: {parameter}={secret} names no secret the page creates");
            let value = &environment(function, &given)[variable];
            assert_eq!(*value, format!("{{{{resolve:secretsmanager:{secret}}}}}"), "deploy {index}");
        }
        let rules = template()["Rules"].as_object().unwrap();
        for (name, rule) in rules {
            let assertion = &rule["Assertions"][0]["Assert"];
            assert!(holds(assertion, &given), "deploy {index} breaks the template's rule {name}: {given:?}");
        }
        // As written, and as SAM's transform hands it to CloudFormation: cfn-lint checks a dynamic reference's form
        // in a Lambda function's variables, not in a SAM function's.
        for (base, form) in [(template(), "sam"), (transformed(), "transformed")] {
            let variant = resolved_template(base, &given, &format!("readme-deploy-{index}-{form}.json"));
            sam_validate(&variant).unwrap_or_else(|said| panic!("deploy {index}, {form}: {said}"));
        }
    }
    assert!(deploys[0].get("IntercomAccessTokenSecret").is_some() && deploys[0].get("WriteKeysSecret").is_some());
    // The check has teeth: a reference cfn-lint finds malformed (too many parts) fails it.
    let broken = HashMap::from([("IntercomAccessTokenSecret", "a:SecretString:b:c:d:e"), ("WriteKeys", "k")]);
    let variant = resolved_template(transformed(), &broken, "malformed.json");
    let said = sam_validate(&variant).expect_err("a malformed reference");
    assert!(said.contains("E1050"), "{said}");
}

#[test]
fn browser_write_keys_reach_the_ingest_function_from_their_own_parameter() {
    let template = include_str!("../../template.yaml");
    let ingest = &template[template.find("\n  IngestFunction:\n").expect("the ingest function")..];
    let ingest = &ingest[..ingest[1..].find("\n  ForwardFunction").map_or(ingest.len(), |end| end + 1)];
    assert!(ingest.contains("BROWSER_WRITE_KEYS: !Ref BrowserWriteKeys"), "{ingest}");
    assert!(template.contains("\n  BrowserWriteKeys:\n    Type: String\n    Default: \"\"\n"));
}

#[test]
fn the_people_erased_are_kept_by_default_in_a_table_the_forward_role_may_only_read_and_add_to() {
    let table = &template()["Resources"]["SuppressionTable"];
    assert_eq!((&table["DeletionPolicy"], &table["UpdateReplacePolicy"]), (&json!("Retain"), &json!("Retain")));
    let properties = &table["Properties"];
    // The key the forwarder reads and writes (src/aws/suppression.rs), and tests/it/suppression.rs's table in moto.
    assert_eq!(properties["KeySchema"], json!([{"AttributeName": "key", "KeyType": "HASH"}]));
    assert_eq!(properties["AttributeDefinitions"], json!([{"AttributeName": "key", "AttributeType": "S"}]));
    assert_eq!(properties["BillingMode"], json!("PAY_PER_REQUEST"));
    assert_eq!(properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], json!(true));
    assert_eq!(properties["DeletionProtectionEnabled"], json!(true));

    // On by default: the forwarder starts with the table; off, with none.
    let on = forward_environment();
    let config = intercom_relay_lambda::config::ForwardFunctionConfig::from_lookup(|name| on.get(name).cloned())
        .unwrap()
        .forward;
    assert_eq!(config.suppression_table.as_deref(), Some("intercom-relay-SuppressionTable-1A2B3C4D5E6F"));
    let off =
        environment("ForwardFunction", &HashMap::from([("IntercomAccessToken", "tok"), ("SuppressErased", "false")]));
    assert!(!off.contains_key("SUPPRESSION_TABLE"), "{off:?}");
    let config = intercom_relay_lambda::config::ForwardFunctionConfig::from_lookup(|name| off.get(name).cloned())
        .unwrap()
        .forward;
    assert_eq!(config.suppression_table, None);
    let refused = intercom_relay_lambda::config::ForwardFunctionConfig::from_lookup(|name| match name {
        "SUPPRESSION_TABLE" => Some("no spaces allowed".into()),
        _ => on.get(name).cloned(),
    });
    assert!(refused.unwrap_err().to_string().contains("SUPPRESSION_TABLE"));

    let table_arn = json!({"Fn::GetAtt": ["SuppressionTable", "Arn"]});
    let forward = granted(&template()["Resources"]["ForwardFunctionRole"]);
    let dynamodb: Vec<(&str, &Value)> = forward
        .iter()
        .filter(|(a, r)| a.starts_with("dynamodb:") && **r == table_arn)
        .map(|(a, r)| (a.as_str(), *r))
        .collect();
    // Read and add: no DeleteItem, and no BatchWriteItem, which deletes as well as puts.
    assert_eq!(dynamodb, [("dynamodb:BatchGetItem", &table_arn), ("dynamodb:PutItem", &table_arn)]);
    let ingest = granted(&template()["Resources"]["IngestFunctionRole"]);
    assert!(ingest.iter().all(|(a, _)| !a.starts_with("dynamodb:")), "{ingest:?}");
    assert_eq!(template()["Outputs"]["SuppressionTableName"]["Value"], json!({"Ref": "SuppressionTable"}));
}

#[test]
fn the_function_url_answers_preflights_with_the_headers_the_sdks_send_and_the_function_writes_none() {
    use intercom_relay_lambda::config::IngestConfig;
    use intercom_relay_lambda::ingest::{
        ALLOWED_HEADERS, AllowedOrigins, CorsHeaders, EXPOSED_HEADERS, PREFLIGHT_MAX_AGE_SECONDS,
    };
    let cors = &properties("IngestFunctionUrl")["Cors"];
    assert_eq!(cors["AllowOrigins"], json!({"Fn::Split": [",", {"Ref": "CorsAllowedOrigins"}]}));
    assert_eq!(cors["AllowHeaders"], json!(ALLOWED_HEADERS), "the same list as crates/lambda/src/ingest/cors.rs");
    assert_eq!(cors["ExposeHeaders"], json!([EXPOSED_HEADERS]));
    assert_eq!(cors["MaxAge"], json!(PREFLIGHT_MAX_AGE_SECONDS));
    assert_eq!(cors["AllowMethods"], json!(["GET", "POST"]));
    let given = HashMap::from([("WriteKeys", "k")]);
    let variables = environment("IngestFunction", &given);
    let config = IngestConfig::from_lookup(|name| variables.get(name).cloned()).unwrap();
    assert_eq!(config.cors_headers, CorsHeaders::FunctionUrl);
    // What the parameter lets through, the function reads as the same origins the URL is given (split on commas).
    let pattern = template()["Parameters"]["CorsAllowedOrigins"]["AllowedPattern"].as_str().unwrap();
    let check = "import re, sys\nsys.stdout.write(' '.join('1' if re.fullmatch(sys.argv[1], v) else '0' for v in sys.argv[2:]))";
    let values =
        ["*", "https://www.example.com,http://localhost:3000", "https://a.com, https://b.com", "https://a.com/x", ""];
    let verdicts = python(check, &[&[pattern][..], &values[..]].concat());
    assert_eq!(verdicts, "1 1 0 0 0");
    let listed = AllowedOrigins::parse(values[1]).unwrap();
    assert_eq!(listed, AllowedOrigins::List(values[1].split(',').map(str::to_owned).collect()));
}

#[test]
fn the_identity_table_expires_its_entries_and_the_forwarder_may_only_read_claim_write_add_and_delete_keys_in_it() {
    let properties = properties("IdentityTable");
    assert_eq!(properties["KeySchema"], json!([{"AttributeName": "key", "KeyType": "HASH"}]));
    assert_eq!(properties["BillingMode"], json!("PAY_PER_REQUEST"));
    assert_eq!(properties["TimeToLiveSpecification"], json!({"AttributeName": "expires_at", "Enabled": true}));
    assert_eq!(properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], json!(true));

    let table_arn = json!({"Fn::GetAtt": ["IdentityTable", "Arn"]});
    let forward = granted(&template()["Resources"]["ForwardFunctionRole"]);
    let on_table: Vec<&str> = forward.iter().filter(|(_, r)| **r == table_arn).map(|(a, _)| a.as_str()).collect();
    let calls = ["GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem"].map(|a| format!("dynamodb:{a}"));
    assert_eq!(on_table, calls, "what crates/lambda/src/aws/identity.rs calls: no Scan, no Query, no batch writes");

    let on = forward_environment();
    let config =
        intercom_relay_lambda::config::ForwardFunctionConfig::from_lookup(|name| on.get(name).cloned()).unwrap();
    assert_eq!(config.forward.identity_table.as_deref(), Some("intercom-relay-IdentityTable-1A2B3C4D5E6F"));
    let off = environment(
        "ForwardFunction",
        &HashMap::from([("IntercomAccessToken", "tok"), ("RememberIdentities", "false")]),
    );
    assert!(!off.contains_key("IDENTITY_TABLE"), "{off:?}");
}
