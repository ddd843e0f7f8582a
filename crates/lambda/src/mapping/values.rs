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
    pub(crate) reason: &'static str,
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

/// Custom attributes as they are sent to Intercom, and which of them hold a time.
#[derive(Debug, Default)]
pub(crate) struct Attributes {
    pub(crate) values: Map<String, Value>,
    /// Names of the attributes in `values` that hold a time in Unix seconds, in their order there.
    pub(crate) dates: Vec<String>,
}

/// Flattens `value` (the member `key` of the object at `path`) into `out` as Intercom custom attributes: nested objects
/// become `parent_child` keys; time-like values become Unix seconds (see [`attribute_time`]); arrays, over-long
/// strings, names Intercom refuses and names already taken are dropped with a reason.
pub(crate) fn flatten_attribute(
    key: &str,
    value: &Value,
    path: &str,
    out: &mut Attributes,
    dropped: &mut Vec<Dropped>,
) {
    let root = Location::root(path);
    flatten(key, value, root.child(key), out, dropped);
}

/// [`flatten_attribute`] for the value at `at`, whose flattened name is `key`.
fn flatten(key: &str, value: &Value, at: Location<'_>, out: &mut Attributes, dropped: &mut Vec<Dropped>) {
    let mut leave_out = |reason| dropped.push(Dropped { path: at.to_string(), reason });
    // Checked at every level: a refused name drops its whole object once, and names joined with '_' stay legal.
    if let Some(reason) = attribute_name_problem(key) {
        leave_out(reason);
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
        other => match out.values.entry(key) {
            Entry::Vacant(slot) => match attribute_time(key, other) {
                Some(seconds) => {
                    out.dates.push(key.to_owned());
                    slot.insert(Value::from(seconds));
                }
                None => _ = slot.insert(other.clone()),
            },
            Entry::Occupied(_) => leave_out(NAME_TAKEN),
        },
    }
}

/// The time a custom attribute holds, in Unix seconds: any value [`unix_seconds`] reads under a name ending `_at` or
/// `_date`, and an RFC 3339 string under any name.
///
/// A `_at`/`_date` value that is no time (`"soon"`, `true`, `null`) is kept as sent, not dropped: the workspace may hold
/// that attribute as a string or boolean already, and a null clears it. Intercom refuses it only where the attribute is
/// a date, and then the executor's check of known attributes says so.
fn attribute_time(name: &str, value: &Value) -> Option<i64> {
    if name.ends_with("_at") || name.ends_with("_date") {
        return unix_seconds(value);
    }
    match value {
        Value::String(text) => rfc3339_seconds(text),
        _ => None,
    }
}

/// Unix seconds of an RFC 3339 string; most strings are not one, and are told apart by their first bytes.
fn rfc3339_seconds(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() >= 20 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-';
    shaped.then(|| parse_timestamp(text)).flatten().map(|at| at.unix_timestamp())
}

/// Why Intercom refuses `name` as a custom attribute name, if it does.
///
/// Intercom's rule (POST /data_attributes): "must only contain alphanumeric characters, currency symbols, and hyphens";
/// its own examples hold inner spaces ("Mithril Shirt") and its own attribute names underscores, so both are allowed
/// too. Alphanumeric is Unicode's (`char::is_alphanumeric`); currency symbols are [`CURRENCY_SYMBOLS`].
pub fn attribute_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("Intercom refuses an empty attribute name");
    }
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | ' ') || is_currency_symbol(c);
    if name.starts_with(' ') || name.ends_with(' ') || !name.chars().all(allowed) {
        return Some(
            "Intercom attribute names hold only letters, digits, currency symbols but '$', '_', '-' and inner spaces",
        );
    }
    None
}

/// Unicode's currency symbols (general category Sc, Unicode 15), as inclusive ranges, but the dollar signs.
///
/// '$' (and its fullwidth and small forms, which NFKC folds to it) stays refused, as it was before this rule: Intercom
/// rewrites '$' in event names, so it is special to Intercom, and a name it stored otherwise than sent would never match
/// the attribute the executor created. A table of 18 ranges, written out rather than a Unicode crate for one category.
const CURRENCY_SYMBOLS: [(char, char); 18] = [
    ('\u{A2}', '\u{A5}'),       // ¢ £ ¤ ¥
    ('\u{58F}', '\u{58F}'),     // ֏ Armenian dram
    ('\u{60B}', '\u{60B}'),     // ؋ Afghani
    ('\u{7FE}', '\u{7FF}'),     // N'Ko dorome, taman
    ('\u{9F2}', '\u{9F3}'),     // ৲ ৳ Bengali rupee
    ('\u{9FB}', '\u{9FB}'),     // ৻ Bengali ganda
    ('\u{AF1}', '\u{AF1}'),     // ૱ Gujarati rupee
    ('\u{BF9}', '\u{BF9}'),     // ௹ Tamil rupee
    ('\u{E3F}', '\u{E3F}'),     // ฿ Thai baht
    ('\u{17DB}', '\u{17DB}'),   // ៛ Khmer riel
    ('\u{20A0}', '\u{20C0}'),   // ₠ … ₿ ⃀
    ('\u{A838}', '\u{A838}'),   // North Indic rupee mark
    ('\u{FDFC}', '\u{FDFC}'),   // ﷼ Rial
    ('\u{FFE0}', '\u{FFE1}'),   // ￠ ￡ fullwidth
    ('\u{FFE5}', '\u{FFE6}'),   // ￥ ￦ fullwidth
    ('\u{11FDD}', '\u{11FE0}'), // Tamil kaacu … varaakan
    ('\u{1E2FF}', '\u{1E2FF}'), // Wancho ngun
    ('\u{1ECB0}', '\u{1ECB0}'), // Indic Siyaq rupee mark
];

fn is_currency_symbol(c: char) -> bool {
    !c.is_ascii() && CURRENCY_SYMBOLS.iter().any(|&(first, last)| (first..=last).contains(&c))
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z in Unix seconds: the years an RFC 3339 date can spell (Intercom shows
/// its Unix times as dates).
const EARLIEST: i64 = -62_135_596_800;
const LATEST: i64 = 253_402_300_799;

/// Seconds since 1970 reach 10^11 only in the year 5138: a number of that size or more is milliseconds. Milliseconds
/// before 1973-03-03 (or after 1966-10-31, for negative ones) are below it, and read as seconds: ambiguous either way.
const MILLIS_FROM: u64 = 100_000_000_000;

/// Unix seconds from an RFC 3339 string, or a number (or digits) of seconds or milliseconds (see [`MILLIS_FROM`]),
/// rounded down; `None` outside the years 0001–9999.
pub(crate) fn unix_seconds(value: &Value) -> Option<i64> {
    let seconds = match value {
        Value::String(text) => match parse_timestamp(text) {
            Some(at) => return Some(at.unix_timestamp()),
            None => {
                let text = text.trim();
                // Whole numbers are read as integers: an f64 of 19 digits has lost its last ones.
                match text.parse::<i64>() {
                    Ok(whole) => whole_seconds(whole),
                    Err(_) => fraction_seconds(text.parse::<f64>().ok()?)?,
                }
            }
        },
        Value::Number(number) => match number.as_i64() {
            Some(whole) => whole_seconds(whole),
            None => fraction_seconds(number.as_f64()?)?,
        },
        _ => return None,
    };
    (EARLIEST..=LATEST).contains(&seconds).then_some(seconds)
}

fn whole_seconds(number: i64) -> i64 {
    if number.unsigned_abs() >= MILLIS_FROM { number.div_euclid(1000) } else { number }
}

fn fraction_seconds(number: f64) -> Option<i64> {
    let seconds = if number.abs() >= MILLIS_FROM as f64 { number / 1000.0 } else { number };
    // Out of i64's range the cast would saturate; such a number is far outside the years allowed anyway.
    (seconds.is_finite() && seconds.abs() < 1e18).then(|| seconds.floor() as i64)
}

/// A finite number from a number or numeric string.
fn number(value: &Value) -> Option<f64> {
    let number = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    number.is_finite().then_some(number)
}

/// The largest number Intercom's integer company fields hold (`monthly_spend` says so; `size` is an integer too).
pub(crate) const MAX_INTEGER: i64 = i32::MAX as i64;

/// A whole number for Intercom's company `size` and `monthly_spend`, from a number or numeric string, rounded and kept
/// within 0..=[`MAX_INTEGER`]; the reason is set when it was capped. `Err` says why there is no number.
pub(crate) fn company_integer(value: &Value) -> Result<(i64, Option<&'static str>), &'static str> {
    let rounded = number(value).ok_or("not a number Intercom can read")?.round();
    if rounded < 0.0 {
        Ok((0, Some("Intercom holds no negative number here: 0 was sent")))
    } else if rounded > MAX_INTEGER as f64 {
        Ok((MAX_INTEGER, Some("Intercom holds at most 2147483647 here: 2147483647 was sent")))
    } else {
        Ok((rounded as i64, None))
    }
}

/// An Intercom admin id as text, from a whole number or a string of digits (trimmed): the request builder writes it as
/// the API version wants (a string in 2.16, an integer in 2.15).
pub(crate) fn admin_id(value: &Value) -> Option<String> {
    match value {
        Value::Number(number) => match number.as_u64() {
            Some(id) => Some(id.to_string()),
            // 7.0 is a whole number too; beyond 2^53 a float has lost digits of the id.
            None => {
                number.as_f64().filter(|n| n.fract() == 0.0 && (0.0..9.0e15).contains(n)).map(|n| format!("{n:.0}"))
            }
        },
        Value::String(text) => {
            let text = text.trim();
            (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.to_owned())
        }
        _ => None,
    }
}

/// Whole cents of an amount, rounded half away from zero (9.995 → 1000): Intercom's monetary amounts are integers.
/// `None` for what is not an amount or does not fit an i64 of cents.
pub(crate) fn cents(value: &Value) -> Option<i64> {
    match value {
        // The number's shortest decimal text: 9.995 is "9.995" there, though 9.995 × 100 is 999.4999… in binary.
        Value::Number(number) => decimal_cents(&number.to_string()).or_else(|| float_cents(number.as_f64()?)),
        Value::String(text) => decimal_cents(text).or_else(|| float_cents(text.trim().parse().ok()?)),
        _ => None,
    }
}

/// Cents from plain decimal text (`-12.345`); `None` for anything else, such as exponent notation, and for amounts
/// beyond i64 (checked at every step: a long amount must not panic, nor wrap into a wrong one).
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
    let cents = whole.checked_mul(100)?.checked_add(digit(0) * 10 + digit(1))?.checked_add(i64::from(digit(2) >= 5))?;
    // Never overflows: `cents` is not negative, and every such i64 has a negative.
    Some(if negative { -cents } else { cents })
}

fn float_cents(amount: f64) -> Option<i64> {
    // Beyond 10^17 no amount fits an i64 of cents: spare writing out its hundreds of digits.
    (amount.is_finite() && amount.abs() < 1e17).then(|| decimal_cents(&format!("{amount:.6}"))).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flattened(traits: Value) -> (Attributes, Vec<Dropped>) {
        let (mut out, mut dropped) = (Attributes::default(), Vec::new());
        for (key, value) in traits.as_object().unwrap() {
            flatten_attribute(key, value, "traits", &mut out, &mut dropped);
        }
        (out, dropped)
    }

    #[test]
    fn nested_objects_flatten_and_lists_are_dropped_with_a_reason() {
        let (out, dropped) =
            flattened(json!({"address": {"city": "Paris", "geo": {"lat": 48.8}}, "tags": ["a"], "a.b": 1, "n": null}));
        assert_eq!(Value::Object(out.values), json!({"address_city": "Paris", "address_geo_lat": 48.8, "n": null}));
        let paths: Vec<&str> = dropped.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["traits.tags", "traits.a.b"]);
    }

    #[test]
    fn a_flattened_name_keeps_its_first_value_and_nested_drops_name_their_real_path() {
        let (out, dropped) =
            flattened(json!({"shipping_method": "a", "shipping": {"method": "b", "tags": ["x"], "days": 3}}));
        assert_eq!(
            Value::Object(out.values).to_string(),
            json!({"shipping_method": "a", "shipping_days": 3}).to_string()
        );
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
        assert_eq!(unix_seconds(&json!(" 1714564800123 ")), Some(1714564800));
        assert_eq!(unix_seconds(&json!(1714564800.75)), Some(1714564800));
        assert_eq!(unix_seconds(&json!("last tuesday")), None);
        assert_eq!(unix_seconds(&json!(true)), None);
        assert_eq!(unix_seconds(&json!(null)), None);
    }

    #[test]
    fn the_millisecond_rule_holds_at_its_edges_and_every_time_is_within_the_years_1_to_9999() {
        for (sent, seconds) in [
            // 10^11 − 1 seconds is in the year 5138; 10^11 is read as milliseconds (1973-03-03).
            (json!(99_999_999_999i64), Some(99_999_999_999)),
            (json!(100_000_000_000i64), Some(100_000_000)),
            (json!(1e11), Some(100_000_000)),
            (json!("100000000000"), Some(100_000_000)),
            (json!(-100_000_000_000i64), Some(-100_000_000)),
            // Negative seconds before the year 1 are no time; as milliseconds they are 1966.
            (json!(-99_999_999_999i64), None),
            (json!(EARLIEST), Some(EARLIEST)),
            (json!(EARLIEST - 1), None),
            // The last millisecond of 9999, and the first of 10000.
            (json!(LATEST * 1000 + 999), Some(LATEST)),
            (json!((LATEST + 1) * 1000), None),
            (json!(EARLIEST * 1000), Some(EARLIEST)),
            (json!(EARLIEST * 1000 - 1), None),
            // Milliseconds round down, before 1970 too.
            (json!(-100_000_000_001i64), Some(-100_000_001)),
            (json!(1714564800999u64), Some(1714564800)),
            (json!(-0.5), Some(-1)),
            (json!(i64::MIN), None),
            (json!(u64::MAX), None),
            (json!(1e300), None),
            (json!("NaN"), None),
            (json!("inf"), None),
        ] {
            assert_eq!(unix_seconds(&sent), seconds, "{sent}");
        }
    }

    #[test]
    fn time_like_attributes_become_unix_seconds_and_are_listed_as_dates() {
        let (out, dropped) = flattened(json!({
            "trial_ends_at": 1714564800123u64, "renewal_date": "1714564800", "last_order": "2024-05-01T12:00:00Z",
            "plan": {"started_at": "2024-05-01T14:00:00+02:00", "name": "pro"}, "seen_at": "soon", "paid_at": true,
            "cleared_at": null, "note": "2024-05-01", "count": 1714564800
        }));
        assert_eq!(
            Value::Object(out.values).to_string(),
            json!({"trial_ends_at": 1714564800, "renewal_date": 1714564800, "last_order": 1714564800,
                   "plan_started_at": 1714564800, "plan_name": "pro", "seen_at": "soon", "paid_at": true,
                   "cleared_at": null, "note": "2024-05-01", "count": 1714564800})
            .to_string()
        );
        assert_eq!(out.dates, ["trial_ends_at", "renewal_date", "last_order", "plan_started_at"]);
        assert_eq!(dropped, []);
    }

    #[test]
    fn attribute_names_hold_letters_digits_currency_symbols_underscores_hyphens_and_inner_spaces() {
        for name in
            ["plan", "Mithril Shirt", "trial_ends_at", "lifetime-value", "Größe", "価格", "€ spent", "£", "৳", "₿"]
        {
            assert_eq!(attribute_name_problem(name), None, "{name}");
        }
        let refused =
            "Intercom attribute names hold only letters, digits, currency symbols but '$', '_', '-' and inner spaces";
        for name in ["!nv@l!d n@me", "a.b", "$price", "cost＄", "a[0]", " plan", "plan ", "tab\there", "e-mail?", "😀"]
        {
            assert_eq!(attribute_name_problem(name), Some(refused), "{name}");
        }
        assert_eq!(attribute_name_problem(""), Some("Intercom refuses an empty attribute name"));
        let (out, dropped) = flattened(json!({"shop": {"€": 1, "a+b": 2}}));
        assert_eq!(Value::Object(out.values), json!({"shop_€": 1}));
        assert_eq!(dropped, [Dropped { path: "traits.shop.a+b".into(), reason: refused }]);
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

    #[test]
    fn an_amount_beyond_an_i64_of_cents_is_no_amount_and_never_panics() {
        assert_eq!(cents(&json!("92233720368547758.07")), Some(i64::MAX));
        assert_eq!(cents(&json!("-92233720368547758.07")), Some(-i64::MAX));
        for amount in [
            json!("92233720368547758.075"),
            json!("92233720368547758.08"),
            json!("99999999999999999.995"),
            json!("123456789012345678901234567890"),
            json!("-123456789012345678901234567890.99"),
            json!(1e300),
            json!(9.3e16),
        ] {
            assert_eq!(cents(&amount), None, "{amount}");
        }
    }

    #[test]
    fn company_integers_are_rounded_and_capped_to_what_intercom_holds() {
        assert_eq!(company_integer(&json!("99.6")), Ok((100, None)));
        assert_eq!(company_integer(&json!(2147483647)), Ok((2147483647, None)));
        let high = Some("Intercom holds at most 2147483647 here: 2147483647 was sent");
        assert_eq!(company_integer(&json!(2147483648u64)), Ok((2147483647, high)));
        assert_eq!(company_integer(&json!(1e300)), Ok((2147483647, high)));
        assert_eq!(company_integer(&json!(-1)), Ok((0, Some("Intercom holds no negative number here: 0 was sent"))));
        assert_eq!(company_integer(&json!(-0.4)), Ok((0, None)));
        assert_eq!(company_integer(&json!("lots")), Err("not a number Intercom can read"));
        assert_eq!(company_integer(&json!(null)), Err("not a number Intercom can read"));
    }

    #[test]
    fn an_admin_id_is_its_digits_as_text() {
        for (sent, id) in [
            (json!(991266252), Some("991266252")),
            (json!(" 991266252 "), Some("991266252")),
            (json!(7.0), Some("7")),
            (json!(7.5), None),
            (json!(-7), None),
            (json!("7a"), None),
            (json!(""), None),
            (json!(null), None),
            (json!(true), None),
        ] {
            assert_eq!(admin_id(&sent).as_deref(), id, "{sent}");
        }
    }
}
