//! Data event submissions: the event's name as Intercom holds it, and its metadata (a track's properties, a view's page)
//! within Intercom's limits.

use serde_json::map::Entry;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::values::{Location, NAME_TAKEN, cents, unix_seconds};
use super::{ContactKey, Dropped, EventSubmission, MAX_METADATA_KEYS, Operation, Unmapped, unreadable};
use crate::event::{Event, EventType, TopLevel};

pub(super) fn submit(contact: ContactKey, name: &str, event: &Event, metadata: Map<String, Value>) -> Operation {
    // Intercom turns '.' and '$' in event names into '-'; doing it here keeps what we log equal to what Intercom holds.
    let event_name = name.trim().replace(['.', '$'], "-");
    Operation::SubmitEvent(EventSubmission {
        contact,
        event_name,
        created_at: event.timestamp.unix_timestamp(),
        metadata,
    })
}

/// Keys whose amount becomes the event's `price`, in order of preference.
const MONEY_KEYS: [&str; 3] = ["revenue", "total", "value"];

/// Why Intercom's limit leaves a metadata key out.
const OVER_CAP: &str = "Intercom keeps at most 10 metadata keys";

/// Track metadata: money first as `price` (a `price` property then gives way to it), then the properties in the order
/// sent, the first value of each flattened name, at most [`MAX_METADATA_KEYS`].
///
/// The money is the first of [`MONEY_KEYS`] with a positive amount: Intercom's `price.amount` is a positive integer, so a
/// refund's negative revenue or a zero total is sent as the plain number it is, under its own key, as is `currency`.
///
/// Read from the raw members: a list is dropped without being parsed, and values are moved, not copied.
pub(super) fn metadata(properties: &TopLevel<'_>, dropped: &mut Vec<Dropped>) -> Result<Map<String, Value>, Unmapped> {
    let parse = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).map_err(unreadable);
    // Sized by what was sent: most events send fewer properties than the cap, and a smaller block is cheaper to get.
    let mut flat = Map::with_capacity(properties.0.len().min(MAX_METADATA_KEYS));
    let mut money = None;
    for key in MONEY_KEYS {
        if let Some(amount) = properties.get(key).map(parse).transpose()?.as_ref().and_then(cents).filter(|c| *c > 0) {
            money = Some((key, amount));
            break;
        }
    }
    if let Some((_, amount)) = money {
        let sent = properties.get("currency").map(parse).transpose()?;
        let code = sent.as_ref().and_then(Value::as_str).map(str::trim);
        let code = code.filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()));
        if sent.is_some() && code.is_none() {
            dropped.push(Dropped {
                path: "properties.currency".into(),
                reason: "not a 3-letter currency code: USD was used",
            });
        }
        let currency = code.unwrap_or("USD").to_ascii_lowercase();
        flat.insert("price".into(), json!({"amount": amount, "currency": currency}));
    }
    let root = Location::root("properties");
    for (key, raw) in &properties.0 {
        if let Some((money_key, _)) = money {
            if key == money_key || key == "currency" {
                continue;
            }
            // Segment's "Product Viewed" sends the amount again as `price`: the money, with its currency, is kept.
            if key == "price" {
                dropped.push(Dropped {
                    path: "properties.price".into(),
                    reason: "price holds the amount of revenue, total or value",
                });
                continue;
            }
        }
        if raw.get().starts_with('[') && !key.ends_with("_date") {
            dropped.push(Dropped { path: format!("properties.{key}"), reason: "Intercom metadata cannot hold lists" });
            continue;
        }
        metadata_value(key, parse(raw)?, root.child(key), &mut flat, dropped);
    }
    Ok(flat)
}

/// Adds `value` (sent at `at`) to the metadata as `key`, flattening objects into `parent_child` keys.
fn metadata_value(key: &str, value: Value, at: Location<'_>, out: &mut Map<String, Value>, dropped: &mut Vec<Dropped>) {
    match value {
        // A rich link: Intercom shows `value` linked to `url`.
        Value::Object(link)
            if link.len() == 2 && link.get("url").is_some_and(Value::is_string) && link.contains_key("value") =>
        {
            keep(key, Value::Object(link), at, out, dropped);
        }
        Value::Object(fields) => {
            for (child, value) in fields {
                metadata_value(&format!("{key}_{child}"), value, at.child(&child), out, dropped);
            }
        }
        _ if key.ends_with("_date") => match unix_seconds(&value) {
            Some(seconds) => keep(key, Value::from(seconds), at, out, dropped),
            None => {
                dropped.push(Dropped { path: at.to_string(), reason: "a _date key needs a time Intercom can read" })
            }
        },
        Value::Array(_) => {
            dropped.push(Dropped { path: at.to_string(), reason: "Intercom metadata cannot hold lists" })
        }
        Value::Null => dropped.push(Dropped { path: at.to_string(), reason: "Intercom metadata cannot hold null" }),
        // Booleans are not among Intercom's metadata types (strings, numbers, `_date` times, links, rich links, money):
        // their text is a string Intercom holds whether or not it would take a boolean.
        Value::Bool(flag) => keep(key, Value::from(if flag { "true" } else { "false" }), at, out, dropped),
        scalar => keep(key, scalar, at, out, dropped),
    }
}

/// Inserts `key` unless an earlier value holds it (the first sent wins) or Intercom's cap is reached; capping here,
/// where the value's location is known, names what is left out as it was sent.
fn keep(key: &str, value: Value, at: Location<'_>, out: &mut Map<String, Value>, dropped: &mut Vec<Dropped>) {
    let full = out.len() >= MAX_METADATA_KEYS;
    // One lookup, and the key copied once, as a plain insert would: the check costs nothing when names differ.
    let reason = match out.entry(key) {
        Entry::Occupied(_) => NAME_TAKEN,
        Entry::Vacant(_) if full => OVER_CAP,
        Entry::Vacant(slot) => {
            slot.insert(value);
            return;
        }
    };
    dropped.push(Dropped { path: at.to_string(), reason });
}

/// Page and screen views: what the view says about itself.
pub(super) fn view_metadata(
    event: &Event,
    properties: &Map<String, Value>,
    page: &Map<String, Value>,
) -> Map<String, Value> {
    let mut metadata = Map::new();
    let from =
        |key: &str| properties.get(key).or_else(|| page.get(key)).and_then(Value::as_str).filter(|v| !v.is_empty());
    let keys: &[&str] = match event.kind {
        EventType::Page => &["url", "path", "title", "referrer"],
        _ => &[],
    };
    for key in keys {
        if let Some(value) = from(key) {
            metadata.insert((*key).to_owned(), value.into());
        }
    }
    if let Some(view) = event.name.as_deref().filter(|n| !n.is_empty()) {
        metadata.insert("name".into(), view.into());
    }
    if let Some(category) = event.category.as_deref().filter(|c| !c.is_empty() && event.kind == EventType::Page) {
        metadata.insert("category".into(), category.into());
    }
    metadata
}
