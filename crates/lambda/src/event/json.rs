//! JSON helpers: objects kept as their original text, and a borrowed view of an object's top-level members.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON object kept as the text it arrived in.
#[derive(Clone, Debug)]
pub struct RawObject(Box<RawValue>);

impl RawObject {
    /// Wraps `raw` when it is a JSON object.
    pub(crate) fn new(raw: &RawValue) -> Option<RawObject> {
        raw.get().starts_with('{').then(|| RawObject(raw.to_owned()))
    }

    /// The object's JSON text.
    pub(crate) fn get(&self) -> &str {
        self.0.get()
    }

    /// Writes members as a JSON object: keys escaped again, values copied as their text (never re-parsed, so numbers
    /// of any size and every escape survive).
    pub(crate) fn from_members<'a>(members: impl IntoIterator<Item = (&'a str, &'a RawValue)>) -> RawObject {
        let mut text = String::from("{");
        for (key, value) in members {
            if text.len() > 1 {
                text.push(',');
            }
            push_json_string(&mut text, key);
            text.push(':');
            text.push_str(value.get());
        }
        text.push('}');
        RawObject(RawValue::from_string(text).expect("members of valid JSON make a valid object"))
    }

    /// The object parsed, keys in the order sent. Ingest refuses values `Value` cannot hold, so this fails only for an
    /// object that did not come through ingest.
    pub(crate) fn to_map(&self) -> Result<serde_json::Map<String, serde_json::Value>, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The object's top-level members, borrowed.
    pub(crate) fn members(&self) -> TopLevel<'_> {
        TopLevel::parse(self.0.get()).unwrap_or_default()
    }
}

impl Serialize for RawObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Appends `value` as a JSON string, escaped as serde_json escapes it.
pub(crate) fn push_json_string(out: &mut String, value: &str) {
    // A fold rather than `all`: without the early exit the compiler tests many bytes at once.
    let plain = value.bytes().fold(true, |plain, b| plain & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(value).expect("a string always serialises"));
    }
}

/// Writes a JSON object member by member into a `String`.
pub(crate) struct JsonObject<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    pub(crate) fn start(out: &'a mut String) -> JsonObject<'a> {
        out.push('{');
        JsonObject { out, empty: true }
    }

    /// Starts a member: the value is to be written to what this returns.
    pub(crate) fn member(&mut self, key: &str) -> &mut String {
        if !std::mem::take(&mut self.empty) {
            self.out.push(',');
        }
        push_json_string(self.out, key);
        self.out.push(':');
        self.out
    }

    pub(crate) fn string(&mut self, key: &str, value: &str) {
        push_json_string(self.member(key), value);
    }

    pub(crate) fn number(&mut self, key: &str, value: u64) {
        use std::fmt::Write;
        write!(self.member(key), "{value}").expect("writing to a String cannot fail");
    }

    /// A member whose value is JSON text already.
    pub(crate) fn raw(&mut self, key: &str, json: &str) {
        self.member(key).push_str(json);
    }

    pub(crate) fn time(&mut self, key: &str, at: time::OffsetDateTime) {
        let out = self.member(key);
        out.push('"');
        super::timestamp::push_timestamp(out, at);
        out.push('"');
    }

    pub(crate) fn end(self) {
        self.out.push('}');
    }
}

/// The members of a JSON object in the order sent, values left unparsed.
#[derive(Debug, Default)]
pub struct TopLevel<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> TopLevel<'a> {
    /// Reads the top level of the object in `text`; values are only checked for syntax.
    pub fn parse(text: &'a str) -> Result<TopLevel<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The first value under `key`.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The first key that appears more than once.
    pub(crate) fn duplicate(&self) -> Option<&str> {
        let keys = &self.0;
        if keys.len() <= 32 {
            keys.iter()
                .enumerate()
                .find(|(i, (k, _))| keys[..*i].iter().any(|(seen, _)| seen == k))
                .map(|(_, (k, _))| k.as_ref())
        } else {
            let mut seen = HashSet::with_capacity(keys.len());
            keys.iter().map(|(k, _)| k.as_ref()).find(|k| !seen.insert(*k))
        }
    }
}

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Self::Value, A::Error> {
                read_members(access, |_, _| Ok(false))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Reads an object's members, values left raw, except those `claim` reads itself (it returns `true` once it has read the
/// member's value).
pub(crate) fn read_members<'de, A: MapAccess<'de>>(
    mut access: A,
    mut claim: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<TopLevel<'de>, A::Error> {
    let mut members = Vec::with_capacity(16);
    while let Some(Key(key)) = access.next_key()? {
        if !claim(&key, &mut access)? {
            members.push((key, access.next_value()?));
        }
    }
    Ok(TopLevel(members))
}

/// A key borrowed from the input unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_keeps_members_in_order_and_values_raw() {
        let members = TopLevel::parse(r#"{"b": 1.50, "a": {"x": [1, 2]}, "c\n": "s"}"#).unwrap();
        let keys: Vec<&str> = members.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["b", "a", "c\n"]);
        assert_eq!(members.get("b").unwrap().get(), "1.50");
        assert_eq!(members.get("a").unwrap().get(), r#"{"x": [1, 2]}"#);
    }

    #[test]
    fn duplicate_keys_are_found_in_small_and_large_objects() {
        assert_eq!(TopLevel::parse(r#"{"a":1,"b":2,"a":3}"#).unwrap().duplicate(), Some("a"));
        assert_eq!(TopLevel::parse(r#"{"a":1,"b":2}"#).unwrap().duplicate(), None);
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let text = format!("{{{},\"k7\":0}}", many.join(","));
        assert_eq!(TopLevel::parse(&text).unwrap().duplicate(), Some("k7"));
    }

    #[test]
    fn raw_object_accepts_only_objects() {
        let object: Box<RawValue> = serde_json::from_str(r#"{"a":1}"#).unwrap();
        let array: Box<RawValue> = serde_json::from_str("[1]").unwrap();
        assert!(RawObject::new(&object).is_some());
        assert!(RawObject::new(&array).is_none());
    }
}
