//! Both Lambda binaries refuse to start on bad configuration, naming the variable and never printing a secret.

use std::process::Command;

fn start(vars: &[(&str, &str)]) -> (i32, String) {
    run(&crate::runtime_api::lambda_binary("ingest"), vars)
}

fn start_forward(vars: &[(&str, &str)]) -> (i32, String) {
    run(&crate::runtime_api::lambda_binary("forward"), vars)
}

/// Runs a binary with only `vars` set; its exit code and everything it printed.
fn run(binary: &str, vars: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(binary).env_clear().envs(vars.iter().copied()).output().expect("the binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn the_ingest_function_refuses_to_start_without_a_write_key() {
    let (code, output) = start(&[("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/events.fifo")]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("WRITE_KEYS is not set"), "{output}");
}

#[test]
fn a_bad_setting_is_named_and_the_keys_are_not_printed() {
    let (code, output) = start(&[
        ("WRITE_KEYS", "very-secret-key"),
        ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/events.fifo"),
        ("CORS_ALLOWED_ORIGINS", "app.example.com"),
    ]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("CORS_ALLOWED_ORIGINS is invalid"), "{output}");
    assert!(!output.contains("very-secret-key"), "{output}");
}

#[test]
fn the_forward_function_refuses_to_start_without_a_token_and_never_prints_one() {
    let dlq = ("DLQ_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/events-dlq.fifo");
    let (code, output) = start_forward(&[dlq]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("INTERCOM_ACCESS_TOKEN is not set"), "{output}");
    let (code, output) =
        start_forward(&[dlq, ("INTERCOM_ACCESS_TOKEN", "tok-very-secret"), ("INTERCOM_REGION", "mars")]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("INTERCOM_REGION is invalid: must be us, eu or au, not `mars`"), "{output}");
    assert!(!output.contains("tok-very-secret"), "{output}");
}

#[test]
fn the_forward_function_refuses_to_start_on_bad_settings_and_lists_every_problem() {
    let base = [
        ("DLQ_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/events-dlq.fifo"),
        ("INTERCOM_ACCESS_TOKEN", "tok-very-secret"),
    ];
    let settings = r#"{"types": ["purchase"], "events": {"deny": ["[oops"]}, "page": 7}"#;
    let (code, output) = start_forward(&[base[0], base[1], ("RELAY_SETTINGS", settings)]);
    assert_eq!(code, 1, "{output}");
    for expected in [
        "RELAY_SETTINGS is invalid: 3 problems:",
        r#"types[0]: must be one of "identify""#,
        "events.deny[0]: `[oops` is not a glob pattern",
        "page: must be a string or null, not the number 7",
    ] {
        assert!(output.contains(expected), "{expected} in {output}");
    }
    assert!(!output.contains("tok-very-secret"), "{output}");

    let (code, output) = start_forward(&[base[0], base[1], ("RELAY_SETTINGS_FILE", "/nonexistent/settings.json")]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("RELAY_SETTINGS_FILE is invalid: cannot read /nonexistent/settings.json"), "{output}");
}
