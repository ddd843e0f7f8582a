//! Checking a settings document: JSON syntax and duplicate keys, then the generated JSON Schema (so the checker and the
//! schema agree by construction), then what a schema cannot say (patterns that compile, types listed once); every problem
//! is listed with its path.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Document, Settings};

/// One problem in a settings document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: `events.deny[2]`, `consent.when_missing`; empty for the document as a whole.
    pub(crate) path: String,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every problem found in a settings document, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} problems:", all.len())?;
                for problem in all {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Problems {}

fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem { path: path.to_owned(), message: message.into() }
}

pub(super) fn parse(text: &str) -> Result<Settings, Problems> {
    let mut problems = Vec::new();
    let value = match Checked::read(text) {
        Ok(Checked { value, duplicates }) => {
            problems.extend(duplicates.into_iter().map(|path| problem(&path, "is given twice (only one may be)")));
            value
        }
        Err(error) => return Err(Problems(vec![problem("", format!("is not JSON: {error}"))])),
    };
    validate(&SCHEMA, &value, "", &mut problems);
    beyond_the_schema(&value, &mut problems);
    if !problems.is_empty() {
        problems.sort_by_key(|p| position(&value, &p.path));
        return Err(Problems(problems));
    }
    let document: Document = serde_json::from_value(value)
        .map_err(|e| Problems(vec![problem("", format!("does not fit the settings' types: {e}"))]))?;
    build(document)
}

/// Checks a document made in code as a written one is checked.
pub(super) fn compile(document: Document) -> Result<Settings, Problems> {
    let mut problems = Vec::new();
    let value = serde_json::to_value(&document).expect("a document serialises");
    validate(&SCHEMA, &value, "", &mut problems);
    beyond_the_schema(&value, &mut problems);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    build(document)
}

/// What a JSON Schema cannot say: patterns that compile, names that are not blank, types listed once. Read from the
/// value, so these problems are found alongside the schema's.
fn beyond_the_schema(value: &Value, problems: &mut Vec<Problem>) {
    let at = |pointer: &str| value.pointer(pointer);
    if let Some(Value::Array(types)) = at("/types") {
        for (index, kind) in types.iter().enumerate().filter(|(_, kind)| kind.is_string()) {
            if types[..index].contains(kind) {
                problems.push(problem(
                    &format!("types[{index}]"),
                    format!("lists {} again", kind.as_str().unwrap_or_default()),
                ));
            }
        }
    }
    let mut patterns: Vec<(String, &Value)> = Vec::new();
    for (pointer, path) in [
        ("/events/allow", "events.allow"),
        ("/events/deny", "events.deny"),
        ("/attributes/allow", "attributes.allow"),
        ("/attributes/browser_create", "attributes.browser_create"),
    ] {
        if let Some(Value::Array(list)) = at(pointer) {
            patterns.extend(list.iter().enumerate().map(|(i, p)| (format!("{path}[{i}]"), p)));
        }
    }
    let (rules, prefix) = match at("/trigger_paths") {
        Some(Value::Array(rules)) => (Some(rules), "trigger_paths"),
        Some(object) => (object.get("rules").and_then(Value::as_array), "trigger_paths.rules"),
        None => (None, ""),
    };
    for (index, rule) in rules.into_iter().flatten().enumerate() {
        if let Some(pattern) = rule.get("match") {
            patterns.push((format!("{prefix}[{index}].match"), pattern));
        }
    }
    for (path, pattern) in patterns {
        if let Some(Err(error)) = pattern.as_str().map(glob) {
            let pattern = pattern.as_str().unwrap_or_default();
            problems.push(problem(&path, format!("`{pattern}` is not a glob pattern: {}", error.kind())));
        }
    }
    let blank = |value: &Value| value.as_str().is_some_and(|text| !text.is_empty() && text.trim().is_empty());
    if let Some(Value::Object(renames)) = at("/events/rename") {
        for (from, _) in renames.iter().filter(|(_, to)| blank(to)) {
            problems.push(problem(&member_path("events.rename", from), "must name an event"));
        }
    }
    for name in ["page", "screen"] {
        if value.get(name).is_some_and(blank) {
            problems.push(problem(name, "must name an event, or be null to skip these calls"));
        }
    }
    if at("/consent/category").is_some_and(blank) {
        problems.push(problem("consent.category", "must name a consent category"));
    }
}

/// The place among the document's members of the one `path` is in, for listing problems in document order.
fn position(value: &Value, path: &str) -> usize {
    let top = path.split(['.', '[']).next().unwrap_or_default();
    value.as_object().and_then(|members| members.keys().position(|key| key == top)).unwrap_or(0)
}

fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(false).build()
}

/// The settings with their patterns compiled (every one already checked). A list whose patterns compile one by one
/// may still be too large to compile together: that is a problem at the list, never a list silently emptied.
fn build(document: Document) -> Result<Settings, Problems> {
    let mut problems = Vec::new();
    let mut set = |path: &str, list: &[String]| {
        let mut set = GlobSetBuilder::new();
        for glob in list.iter().filter_map(|pattern| glob(pattern).ok()) {
            set.add(glob);
        }
        set.build().unwrap_or_else(|error| {
            problems.push(problem(path, format!("its {} patterns cannot be compiled together: {error}", list.len())));
            GlobSet::empty()
        })
    };
    let events = &document.events;
    let trigger: Vec<String> = document.trigger_paths.rules().iter().map(|rule| rule.pattern.clone()).collect();
    let settings = Settings {
        plain: Document { schema: None, ..document.clone() } == Document::default(),
        allow: events.allow.as_deref().map(|list| set("events.allow", list)),
        deny: set("events.deny", &events.deny),
        trigger: set("trigger_paths", &trigger),
        attributes: document.attributes.allow.as_deref().map(|list| set("attributes.allow", list)),
        browser_create: Some(set("attributes.browser_create", &document.attributes.browser_create)),
        document,
    };
    if problems.is_empty() { Ok(settings) } else { Err(Problems(problems)) }
}

/// The schema, read once (the committed copy, which a test keeps equal to the generated one: the functions need not
/// carry the generator).
static SCHEMA: LazyLock<Schema> = LazyLock::new(|| Schema { root: super::committed_schema() });

struct Schema {
    root: Value,
}

impl std::ops::Deref for Schema {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.root
    }
}

/// Validates `value` (at `path`) against `schema`, the subset of JSON Schema schemars generates: `$ref` into `$defs`,
/// `type`, `enum`, `const`, `anyOf`/`oneOf`, `properties`, `additionalProperties`, `required`, `items`, `minItems`,
/// `minLength`.
fn validate(schema: &Value, value: &Value, path: &str, problems: &mut Vec<Problem>) {
    let schema = resolve(schema);
    if schema == &Value::Bool(true) {
        return;
    }
    if let Some(branches) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        return one_of(branches, value, path, problems);
    }
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.iter().any(|t| is_type(value, t)) {
            let expected = allowed.iter().map(|t| type_words(t)).collect::<Vec<_>>();
            problems.push(problem(path, format!("must be {}, not {}", or_list(&expected), describe(value))));
            return;
        }
    }
    if let Some(constant) = schema.get("const").filter(|c| *c != value) {
        problems.push(problem(path, format!("must be {constant}, not {}", describe(value))));
        return;
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array).filter(|choices| !choices.contains(value)) {
        let names: Vec<String> = choices.iter().map(Value::to_string).collect();
        problems.push(problem(path, format!("must be one of {}, not {}", names.join(", "), describe(value))));
        return;
    }
    match value {
        Value::Object(members) => object(schema, members, path, problems),
        Value::Array(items) => {
            // `types` and `events.allow`: an empty list would skip everything without a word, almost always a slip.
            if schema.get("minItems").and_then(Value::as_u64).is_some_and(|min| (items.len() as u64) < min) {
                problems.push(problem(
                    path,
                    "is empty, which would skip every event it covers: list what to forward, or leave it out for the default",
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{index}]"), problems);
                }
            }
        }
        Value::String(text)
            if schema
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|min| (text.chars().count() as u64) < min) =>
        {
            problems.push(problem(path, "must not be empty"));
        }
        _ => {}
    }
}

fn object(schema: &Value, members: &Map<String, Value>, path: &str, problems: &mut Vec<Problem>) {
    let properties = schema.get("properties").and_then(Value::as_object);
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !members.contains_key(name) {
            problems.push(problem(path, format!("needs `{name}`")));
        }
    }
    for (name, member) in members {
        let at = member_path(path, name);
        match (properties.and_then(|p| p.get(name)), schema.get("additionalProperties")) {
            (Some(member_schema), _) => validate(member_schema, member, &at, problems),
            (None, Some(Value::Bool(false))) => {
                let known: Vec<&str> = properties.into_iter().flat_map(|p| p.keys()).map(String::as_str).collect();
                let near = known
                    .iter()
                    .copied()
                    .filter(|k| strsim::jaro_winkler(k, name) >= 0.8)
                    .max_by(|a, b| strsim::jaro_winkler(a, name).total_cmp(&strsim::jaro_winkler(b, name)));
                let hint = match near {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!("known here: {}", known.join(", ")),
                };
                problems.push(problem(&at, format!("is not a setting ({hint})")));
            }
            (None, Some(extra)) => validate(extra, member, &at, problems),
            (None, None) => {}
        }
    }
}

/// A value against alternatives: quiet when one fits; otherwise the problems of the alternative of the value's own JSON
/// type (the most telling), or one line naming what would fit.
fn one_of(branches: &[Value], value: &Value, path: &str, problems: &mut Vec<Problem>) {
    let mut of_its_type = Vec::new();
    for branch in branches {
        let mut found = Vec::new();
        validate(branch, value, path, &mut found);
        if found.is_empty() {
            return;
        }
        let fits_type = match resolve(branch).get("type") {
            Some(Value::String(t)) => is_type(value, t),
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(|t| is_type(value, t)),
            _ => false,
        };
        if fits_type {
            of_its_type.push(found);
        }
    }
    if let [found] = of_its_type.as_mut_slice() {
        problems.append(found);
        return;
    }
    let expected: Vec<String> = branches.iter().map(|b| expectation(resolve(b))).collect();
    problems.push(problem(path, format!("must be {}, not {}", or_list(&expected), describe(value))));
}

/// What a schema branch accepts, in words.
fn expectation(schema: &Value) -> String {
    if let Some(constant) = schema.get("const") {
        return constant.to_string();
    }
    match schema.get("type") {
        Some(Value::String(t)) => type_words(t),
        Some(Value::Array(ts)) => or_list(&ts.iter().filter_map(Value::as_str).map(type_words).collect::<Vec<_>>()),
        _ => "a value of another shape".into(),
    }
}

fn resolve(schema: &Value) -> &Value {
    let mut schema = schema;
    while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/$defs/");
        match SCHEMA.get("$defs").and_then(|defs| defs.get(name)) {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => false,
    }
}

fn type_words(name: &str) -> String {
    match name {
        "object" => "an object",
        "array" => "a list",
        "string" => "a string",
        "boolean" => "true or false",
        "null" => "null",
        "integer" => "a whole number",
        "number" => "a number",
        other => other,
    }
    .to_owned()
}

fn or_list(words: &[String]) -> String {
    match words {
        [] => "something else".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The value in a few words: its JSON type, with a short value.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {value}"),
        Value::String(_) => "a long string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The path of member `key` of the object at `path`: `path.key`, or `path["a key"]` for a key that is not a plain word.
fn member_path(path: &str, key: &str) -> String {
    match () {
        _ if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') => {
            format!("{path}[{}]", Value::from(key))
        }
        _ if path.is_empty() => key.to_owned(),
        _ => format!("{path}.{key}"),
    }
}

/// A JSON document read with every duplicated key noted by its path (serde_json would keep the last one silently).
struct Checked {
    value: Value,
    duplicates: Vec<String>,
}

impl Checked {
    fn read(text: &str) -> Result<Checked, serde_json::Error> {
        let mut duplicates = Vec::new();
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Seed { path: String::new(), duplicates: &mut duplicates }.deserialize(&mut deserializer)?;
        deserializer.end()?;
        let mut seen = HashSet::new();
        duplicates.retain(|path| seen.insert(path.clone()));
        Ok(Checked { value, duplicates })
    }
}

struct Seed<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let path = format!("{}[{}]", self.path, items.len());
            match seq.next_element_seed(Seed { path, duplicates: &mut *self.duplicates })? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = member_path(&self.path, &key);
            let value = map.next_value_seed(Seed { path: path.clone(), duplicates: &mut *self.duplicates })?;
            if members.insert(key, value).is_some() {
                self.duplicates.push(path);
            }
        }
        Ok(Value::Object(members))
    }
}
