//! Real analytics SDKs (analytics-python, analytics-node, RudderStack's Node SDK), installed by scripts/test, pointed at
//! `intercom-relay serve` by changing only the host: every call they make ends up in the sandbox.

use std::path::PathBuf;
use std::process::Command;

use intercom_relay::sandbox::{SandboxOptions, SandboxServer};
use serde_json::json;

use crate::cli::{KEY, by_external_id, members, start_serve};

/// A variable scripts/test sets, pointing at an SDK it installed.
pub(crate) fn installed(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the tests with scripts/test, which installs the SDKs and tools")
    })
}

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_node_sdks_pointed_at_serve_deliver_every_call() {
    let (python, node) = (installed("ANALYTICS_PYTHON"), installed("SDK_NODE"));
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let (url, token) = (sandbox.url.clone(), sandbox.token());
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let served = start_serve(&url, &token);
        let runs = [
            (
                "analytics-python",
                Command::new(&python).arg(sdk_dir().join("send.py")).args([&served.url, KEY, "py-user"]).output(),
            ),
            (
                "analytics-node",
                Command::new(&node)
                    .arg(sdk_dir().join("send.mjs"))
                    .args(["segment", &served.url, KEY, "node-user"])
                    .output(),
            ),
            (
                "rudder-sdk-node",
                Command::new(&node)
                    .arg(sdk_dir().join("send.mjs"))
                    .args(["rudderstack", &served.url, KEY, "rudder-user"])
                    .output(),
            ),
        ];
        for (sdk, output) in runs {
            let output = output.unwrap_or_else(|e| panic!("{sdk}: {e}"));
            assert!(output.status.success(), "{sdk}: {}", String::from_utf8_lossy(&output.stderr));
        }
        served.stop()
    })
    .await
    .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("12 accepted, 0 rejected; 12 delivered"), "{stdout}");
    let state = sandbox.state();
    let users = by_external_id(&state);
    for user in ["py-user", "node-user", "rudder-user"] {
        let contact = users.get(user).unwrap_or_else(|| panic!("{user}: {:?}", users.keys()));
        assert_eq!(contact.email.as_deref(), Some(format!("{user}@example.com").as_str()));
        assert_eq!(contact.custom_attributes["plan"], json!("pro"), "{user}");
        assert_eq!(members(&state, &format!("org-{user}")), [user.to_owned()].into(), "{user}");
        let mut names: Vec<&str> =
            state.events.iter().filter(|e| e.contact_id == contact.id).map(|e| e.event_name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["page_viewed", "report exported"], "{user}");
        let rows = state.events.iter().find(|e| e.contact_id == contact.id && e.event_name == "report exported");
        assert_eq!(rows.unwrap().metadata["rows"], json!(3), "{user}");
    }
}
