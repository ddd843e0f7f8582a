//! Turning free-form JSON into what Intercom holds: flattened attributes, Unix seconds, whole cents.

use std::fmt;

use serde_json::map::Entry;
use serde_json::{Map, Value};

use crate::event::parse_timestamp;

/// A value left out of what Intercom receives, and why; the forwarder logs these.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Dropped {
    /// Where it was, e.g. `traits.tags` or `properties.items`.
    pub path: String,
    pub reason: &'static str,
}

/// Why a value whose flattened name an earlier value already holds is left out: the first one sent wins, as nothing
/// says which of the two Intercom should hold.
pub(crate) const NAME_TAKEN: &str = "another property already has this name once flattened";

/// Where a value was sent (`properties.utm.medium`), as a chain of borrowed names on the stack: it is written out only
/// when something there is dropped, so walking nested objects costs no allocation for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Location<'a> {
    parent: Option<&'a Location<'a>>,
    name: &'a str,
}

impl<'a> Location<'a> {
    /// The object the walk starts from, e.g. `traits` or `traits.companies[0]`.
    pub(crate) fn root(name: &'a str) -> Location<'a> {
        Location { parent: None, name }
    }

    /// The member `name` of the object here.
    pub(crate) fn child(&'a self, name: &'a str) -> Location<'a> {
        Location { parent: Some(self), name }
    }
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}.")?;
        }
        f.write_str(self.name)
    }
}

/// Intercom refuses longer custom attribute strings.
const MAX_STRING: usize = 255;

/// Flattens `value` (the member `key` of the object at `path`) into `out` as Intercom custom attributes: nested objects
/// become `parent_child` keys; arrays, over-long strings, names Intercom refuses and names already taken are dropped
/// with a reason.
pub(crate) fn flatten_attribute(
    key: &str,
    value: &Value,
    path: &str,
    out: &mut Map<String, Value>,
    dropped: &mut Vec<Dropped>,
) {
    let root = Location::root(path);
    flatten(key, value, root.child(key), out, dropped);
}

/// [`flatten_attribute`] for the value at `at`, whose flattened name is `key`.
fn flatten(key: &str, value: &Value, at: Location<'_>, out: &mut Map<String, Value>, dropped: &mut Vec<Dropped>) {
    let mut leave_out = |reason| dropped.push(Dropped { path: at.to_string(), reason });
    if key.is_empty() || key.contains(['.', '$', '[', ']']) || key.trim() != key {
        leave_out("Intercom refuses attribute names with '.', '$', '[', ']' or edge spaces");
        return;
    }
    match value {
        Value::Object(fields) => {
            for (child, value) in fields {
                flatten(&format!("{key}_{child}"), value, at.child(child), out, dropped);
            }
        }
        Value::Array(_) => leave_out("Intercom attributes cannot hold lists"),
        Value::String(text) if text.chars().count() > MAX_STRING => {
            leave_out("Intercom attribute strings hold at most 255 characters")
        }
        // One lookup, and the key copied once, as a plain insert would: the check costs nothing when names differ.
        other => match out.entry(key) {
            Entry::Vacant(slot) => _ = slot.insert(other.clone()),
            Entry::Occupied(_) => leave_out(NAME_TAKEN),
        },
    }
}

/// Unix seconds from an RFC 3339 string, or a number (or digits) of seconds or milliseconds.
pub(crate) fn unix_seconds(value: &Value) -> Option<i64> {
    let number = match value {
        Value::String(text) => match parse_timestamp(text) {
            Some(at) => return Some(at.unix_timestamp()),
            None => text.trim().parse::<f64>().ok()?,
        },
        Value::Number(number) => number.as_f64()?,
        _ => return None,
    };
    // Seconds since 1970 pass 10^11 only in the year 5138; a larger number is milliseconds.
    let seconds = if number.abs() >= 1e11 { number / 1000.0 } else { number };
    (seconds.is_finite() && seconds.abs() < 253_402_300_800.0).then(|| seconds.trunc() as i64)
}

/// A whole number from a number or numeric string (Intercom's integer fields: size, monthly_spend, owner_id).
pub(crate) fn integer(value: &Value) -> Option<i64> {
    let number = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (number.is_finite() && number.abs() < 9.0e15).then(|| number.round() as i64)
}

/// Whole cents of an amount, rounded half away from zero (9.995 → 1000): Intercom's monetary amounts are integers.
pub(crate) fn cents(value: &Value) -> Option<i64> {
    match value {
        // The number's shortest decimal text: 9.995 is "9.995" there, though 9.995 × 100 is 999.4999… in binary.
        Value::Number(number) => decimal_cents(&number.to_string()).or_else(|| float_cents(number.as_f64()?)),
        Value::String(text) => decimal_cents(text).or_else(|| float_cents(text.trim().parse().ok()?)),
        _ => None,
    }
}

/// Cents from plain decimal text (`-12.345`); `None` for anything else, such as exponent notation.
fn decimal_cents(text: &str) -> Option<i64> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let digit = |i: usize| fraction.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    let cents = whole.checked_mul(100)?.checked_add(digit(0) * 10 + digit(1))? + i64::from(digit(2) >= 5);
    Some(if negative { -cents } else { cents })
}

fn float_cents(amount: f64) -> Option<i64> {
    let text = format!("{amount:.6}");
    amount.is_finite().then(|| decimal_cents(&text)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_objects_flatten_and_lists_are_dropped_with_a_reason() {
        let (mut out, mut dropped) = (Map::new(), Vec::new());
        let traits = json!({"address": {"city": "Paris", "geo": {"lat": 48.8}}, "tags": ["a"], "a.b": 1, "n": null});
        for (key, value) in traits.as_object().unwrap() {
            flatten_attribute(key, value, "traits", &mut out, &mut dropped);
        }
        assert_eq!(Value::Object(out), json!({"address_city": "Paris", "address_geo_lat": 48.8, "n": null}));
        let paths: Vec<&str> = dropped.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["traits.tags", "traits.a.b"]);
    }

    #[test]
    fn a_flattened_name_keeps_its_first_value_and_nested_drops_name_their_real_path() {
        let (mut out, mut dropped) = (Map::new(), Vec::new());
        let traits = json!({"shipping_method": "a", "shipping": {"method": "b", "tags": ["x"], "days": 3}});
        for (key, value) in traits.as_object().unwrap() {
            flatten_attribute(key, value, "traits", &mut out, &mut dropped);
        }
        assert_eq!(Value::Object(out).to_string(), json!({"shipping_method": "a", "shipping_days": 3}).to_string());
        assert_eq!(
            dropped,
            [
                Dropped {
                    path: "traits.shipping.method".into(),
                    reason: "another property already has this name once flattened"
                },
                Dropped { path: "traits.shipping.tags".into(), reason: "Intercom attributes cannot hold lists" },
            ]
        );
    }

    #[test]
    fn times_become_unix_seconds_from_any_common_form() {
        assert_eq!(unix_seconds(&json!("2024-05-01T12:00:00Z")), Some(1714564800));
        assert_eq!(unix_seconds(&json!(1714564800)), Some(1714564800));
        assert_eq!(unix_seconds(&json!(1714564800123u64)), Some(1714564800));
        assert_eq!(unix_seconds(&json!("1714564800")), Some(1714564800));
        assert_eq!(unix_seconds(&json!("last tuesday")), None);
        assert_eq!(unix_seconds(&json!(true)), None);
    }

    #[test]
    fn money_rounds_to_whole_cents_as_a_person_would() {
        for (amount, expected) in [
            (json!(9.995), 1000),
            (json!(42.5), 4250),
            (json!(0.1), 10),
            (json!(19.99), 1999),
            (json!(-3.005), -301),
            (json!("12.345"), 1235),
            (json!(7), 700),
        ] {
            assert_eq!(cents(&amount), Some(expected), "{amount}");
        }
        assert_eq!(cents(&json!("free")), None);
        assert_eq!(cents(&json!(1.5e3)), Some(150_000), "exponent notation");
        assert_eq!(cents(&json!("2.5E1")), Some(2500));
        assert_eq!(cents(&json!(".5")), Some(50));
        assert_eq!(cents(&json!("-")), None);
    }
}
