//! What Intercom's contract allows in one planned request, shared by the property tests and the fuzz targets
//! (`fuzz/fuzz_targets/*.rs` include this file by path).

use intercom_relay_lambda::mapping::{Plan, attribute_name_problem};
use serde_json::Value;

/// The earliest and latest Unix seconds a planned time may hold: 0001-01-01 and 9999-12-31T23:59:59, the years an
/// RFC 3339 date can spell (Intercom shows its Unix times as dates).
pub(crate) const EARLIEST: i64 = -62_135_596_800;
pub(crate) const LATEST: i64 = 253_402_300_799;

/// Intercom refuses longer custom attribute strings.
const MAX_ATTRIBUTE_CHARS: usize = 255;

/// Intercom's integer company fields hold at most 2^31 − 1 (`monthly_spend` says so).
const MAX_COMPANY_INTEGER: i64 = 2_147_483_647;

/// `Err` names the first thing in `plan` that Intercom's contract forbids.
pub(crate) fn plan_keeps_the_contract(plan: &Plan) -> Result<(), String> {
    let plan = serde_json::to_value(plan).map_err(|e| e.to_string())?;
    let key_ok = |key: &Value| {
        key.as_object()
            .is_some_and(|k| !k.is_empty() && k.values().all(|v| v.as_str().is_some_and(|s| !s.trim().is_empty())))
    };
    let time_ok = |value: &Value| value.as_i64().is_some_and(|t| (EARLIEST..=LATEST).contains(&t));
    for op in plan["operations"].as_array().into_iter().flatten() {
        match op["op"].as_str() {
            Some("submit_event") => {
                let name = op["event_name"].as_str().unwrap_or_default();
                if name.trim().is_empty() || name.contains(['.', '$']) {
                    return Err(format!("event name {name:?}"));
                }
                if !time_ok(&op["created_at"]) {
                    return Err(format!("created_at {}", op["created_at"]));
                }
                let metadata = op["metadata"].as_object().ok_or("metadata is not an object")?;
                if metadata.len() > 10 {
                    return Err(format!("{} metadata keys", metadata.len()));
                }
                for (name, value) in metadata {
                    let allowed = match value {
                        // Intercom's amount is a positive integer of cents.
                        Value::Object(o) if name == "price" => {
                            o.len() == 2
                                && o["amount"].as_i64().is_some_and(|amount| amount > 0)
                                && o["currency"]
                                    .as_str()
                                    .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_lowercase()))
                        }
                        Value::Object(o) => o.len() == 2 && o["url"].is_string() && o.contains_key("value"),
                        // Booleans are not among Intercom's metadata types: they are sent as text.
                        Value::Array(_) | Value::Null | Value::Bool(_) => false,
                        _ => true,
                    };
                    if !allowed {
                        return Err(format!("metadata {name}: {value}"));
                    }
                }
                if !key_ok(&op["contact"]) {
                    return Err(format!("contact {}", op["contact"]));
                }
            }
            Some(kind @ ("upsert_contact" | "upsert_company")) => {
                let custom = op["custom_attributes"].as_object().ok_or("no custom attributes")?;
                for (name, value) in custom {
                    if attribute_name_problem(name).is_some() {
                        return Err(format!("attribute name {name:?}"));
                    }
                    let too_long = value.as_str().is_some_and(|s| s.chars().count() > MAX_ATTRIBUTE_CHARS);
                    if value.is_object() || value.is_array() || too_long {
                        return Err(format!("attribute {name}: {value}"));
                    }
                }
                // The dates name attributes sent, in their order, each holding a time.
                let dates: Vec<&str> = op["dates"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let in_order = custom.iter().filter(|(name, _)| dates.contains(&name.as_str())).map(|(name, _)| name);
                if !in_order.eq(dates.iter()) || dates.iter().any(|name| !time_ok(&custom[*name])) {
                    return Err(format!("dates {} of {}", op["dates"], op["custom_attributes"]));
                }
                let attributes = op["attributes"].as_object().ok_or("no attributes")?;
                for integer in ["size", "monthly_spend"] {
                    let held = |v: &Value| v.as_i64().is_some_and(|n| (0..=MAX_COMPANY_INTEGER).contains(&n));
                    if let Some(value) = attributes.get(integer).filter(|v| !held(v)) {
                        return Err(format!("{integer} {value}"));
                    }
                }
                // The admin id's text: the request builder writes it as the API version wants.
                let digits =
                    |v: &Value| v.as_str().is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
                if let Some(owner) = attributes.get("owner_id").filter(|v| !digits(v)) {
                    return Err(format!("owner_id {owner}"));
                }
                for time in ["signed_up_at", "last_seen_at", "remote_created_at"] {
                    if let Some(value) = attributes.get(time).filter(|v| !time_ok(v)) {
                        return Err(format!("{time} {value}"));
                    }
                }
                if let Some((name, value)) = attributes.iter().find(|(_, v)| v.is_object() || v.is_array()) {
                    return Err(format!("{name}: {value}"));
                }
                if kind == "upsert_contact" && !key_ok(&op["key"]) {
                    return Err(format!("key {}", op["key"]));
                }
                if kind == "upsert_company" && op["company_id"].as_str().is_none_or(|id| id.trim().is_empty()) {
                    return Err(format!("company id {}", op["company_id"]));
                }
            }
            Some("attach_company" | "detach_company") => {
                if !key_ok(&op["contact"]) || op["company_id"].as_str().is_none_or(|id| id.trim().is_empty()) {
                    return Err(format!("{op}"));
                }
            }
            Some("merge") => {
                if !key_ok(&op["from"]) || !key_ok(&op["into"]) {
                    return Err(format!("{op}"));
                }
            }
            // Only a user takes in a visitor's lead, and never the visitor's own id.
            Some("merge_visitor") => {
                let visitor = op["anonymous_id"].as_str().filter(|id| !id.is_empty());
                if visitor.is_none()
                    || op["into"].get("external_id").and_then(Value::as_str).is_none_or(|u| Some(u) == visitor)
                {
                    return Err(format!("{op}"));
                }
            }
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    Ok(())
}
