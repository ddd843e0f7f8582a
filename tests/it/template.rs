//! template.yaml's `Settings` parameter: what `intercom-relay settings parameter` prints survives SAM CLI's own reading of
//! `--parameter-overrides` (run with the aws-sam-cli that scripts/test installs) and fits the parameter's constraints.

use std::process::Command;

use serde_json::Value;

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
