//! Fuzzes the mapping: any event ingest accepts, parsed and mapped under the defaults and under destination settings
//! picked by the input, never panics and never plans a request Intercom's contract forbids.
#![no_main]

use std::sync::LazyLock;

use intercom_relay_lambda::event::{parse_batch, parse_event, parse_single};
use intercom_relay_lambda::mapping::{Operation, map_with};
use intercom_relay_lambda::settings::Settings;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

#[path = "../../tests/it/contract.rs"]
mod contract;

/// Destination settings with some rules on, one document per bit pattern (as in the property tests).
static SETTINGS: LazyLock<Vec<Settings>> = LazyLock::new(|| (0..=u8::MAX).map(settings).collect());

fn settings(bits: u8) -> Settings {
    let on = |bit: u8| bits & (1 << bit) != 0;
    let pattern = ["Order *", "*", "?", "[x-z]*"][usize::from(bits >> 6)];
    let mut document = Map::new();
    if on(0) {
        document.insert("events".into(), json!({"deny": [pattern], "rename": {"Order Completed": "order.completed$"}}));
    }
    if on(1) {
        document.insert("trigger_paths".into(), json!([{"match": format!("*/{pattern}"), "action": "dont_fire"}]));
    }
    if on(2) {
        document.insert("consent".into(), json!({"category": "functional", "when_missing": "allow"}));
    }
    document.insert("identity".into(), json!({"send_anonymous_id": on(3), "lead_from_email": on(4)}));
    document.insert("identify".into(), json!({"include_context": on(5), "update_last_seen": on(3)}));
    if on(4) && on(5) {
        document.insert("attributes".into(), json!({"allow": [pattern]}));
        document.insert("page".into(), json!("Viewed a.page"));
    }
    Settings::parse(&Value::Object(document).to_string()).expect("valid settings")
}

fuzz_target!(|data: &[u8]| {
    let Some(&bits) = data.last() else { return };
    let Ok(text) = std::str::from_utf8(data) else { return };
    let received_at = OffsetDateTime::from_unix_timestamp(1_714_564_800).expect("a time");
    for batch in [parse_single(text), parse_batch(text)].into_iter().flatten() {
        for raw in &batch.events {
            // Only events ingest accepts reach the forwarder.
            let Ok(event) = parse_event(raw, None, &batch.defaults, received_at) else { continue };
            for settings in [Settings::defaults(), &SETTINGS[usize::from(bits)]] {
                let Ok(plan) = map_with(&event, settings) else { continue };
                if let Err(problem) = contract::plan_keeps_the_contract(&plan) {
                    panic!("{problem} in {text}");
                }
                for op in &plan.operations {
                    if let Operation::SubmitEvent(submission) = op {
                        assert_eq!(submission.created_at, event.timestamp.unix_timestamp(), "{text}");
                    }
                }
            }
        }
    }
});
