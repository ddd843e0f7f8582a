//! Whether an event goes to Intercom, and under what name: the rules in their order of precedence (the event's
//! `integrations`, then `types`, `consent`, `trigger_paths`, `events.deny`/`events.allow`, then the names).

use serde_json::Value;
use serde_json::value::RawValue;

use super::{Action, Consent, Document, Settings, WhenMissing};
use crate::event::{Event, EventType, RawObject};

/// What the settings say about one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict<'a> {
    /// Forward it. `event_name` is the Intercom event a track, page or screen call becomes (renamed, or as configured).
    Forward { event_name: Option<&'a str> },
    /// Acknowledge it without a call to Intercom.
    Skip(Skip),
}

/// Why an event is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The rule, as its place in the settings document (`events.deny[2]`, `consent.when_missing`) or in the event
    /// (`integrations.Intercom`).
    pub(crate) rule: String,
    /// What the rule says, in words; it quotes the settings, never the event (which may hold personal data).
    pub(crate) reason: String,
}

fn skip(rule: impl Into<String>, reason: impl Into<String>) -> Verdict<'static> {
    Verdict::Skip(Skip { rule: rule.into(), reason: reason.into() })
}

pub(super) fn evaluate<'a>(settings: &'a Settings, event: &'a Event) -> Verdict<'a> {
    if let Some(skipped) = integrations(event) {
        return skipped;
    }
    if settings.plain {
        return Verdict::Forward { event_name: default_name(&settings.document, event) };
    }
    if !settings.document.types.contains(&event.kind) {
        return skip("types", format!("{} is not one of the types forwarded", event.kind));
    }
    if let Some(skipped) = context_rules(settings, event) {
        return skipped;
    }
    named(settings, event)
}

/// The name under the default settings (the rest would find nothing to skip): the event's own, or the view's.
fn default_name<'a>(document: &'a Document, event: &'a Event) -> Option<&'a str> {
    match event.kind {
        EventType::Track => event.event.as_deref(),
        EventType::Page | EventType::Screen => {
            (if event.kind == EventType::Page { &document.page } else { &document.screen }).as_deref()
        }
        _ => None,
    }
}

/// The rules that read the event's `context`: `consent`, then `trigger_paths`.
fn context_rules(settings: &Settings, event: &Event) -> Option<Verdict<'static>> {
    let document = &settings.document;
    // `context` is large: its top level is read once, and only when a rule needs it.
    let trigger = &document.trigger_paths;
    // With no rules, only a `dont_fire` default has anything to say.
    let paths_apply = !trigger.rules().is_empty() || trigger.default_action() == Action::DontFire;
    let context = (document.consent.is_some() || paths_apply)
        .then(|| event.context.as_ref().map(RawObject::members))
        .flatten()
        .unwrap_or_default();
    let member = |key: &str| context.get(key).and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok());
    if let Some(consent) = &document.consent
        && let Some(skipped) = consent_rule(consent, member("consent"))
    {
        return Some(skipped);
    }
    if paths_apply && let Some((url, path)) = page_location(event, member("page")) {
        return trigger_rule(settings, [url.as_deref(), path.as_deref()]);
    }
    None
}

/// `consent`: the event's `context.consent` must grant the category, or (by `when_missing`) may lack preferences.
fn consent_rule(consent: &Consent, given: Option<Value>) -> Option<Verdict<'static>> {
    let preferences = given.and_then(|mut c| c.get_mut("categoryPreferences").map(Value::take));
    match preferences {
        Some(Value::Object(preferences)) => {
            let granted = preferences
                .iter()
                .any(|(name, value)| name.eq_ignore_ascii_case(&consent.category) && *value == Value::Bool(true));
            if !granted {
                let reason = format!("the event's consent does not grant `{}`", consent.category);
                return Some(skip("consent.category", reason));
            }
            None
        }
        _ if consent.when_missing == WhenMissing::Deny => {
            Some(skip("consent.when_missing", "the event carries no consent preferences (when_missing: deny)"))
        }
        _ => None,
    }
}

/// `trigger_paths`: the first rule matching the page's URL or path decides; with none, the default does.
fn trigger_rule(settings: &Settings, at: [Option<&str>; 2]) -> Option<Verdict<'static>> {
    let trigger = &settings.document.trigger_paths;
    let first = at.into_iter().flatten().filter_map(|at| settings.trigger.matches(at).first().copied()).min();
    match first {
        Some(index) if trigger.rules()[index].action == Action::DontFire => {
            let pattern = &trigger.rules()[index].pattern;
            Some(skip(trigger.rule_path(index), format!("the page matches `{pattern}` (dont_fire)")))
        }
        None if trigger.default_action() == Action::DontFire => {
            Some(skip("trigger_paths.default", "no trigger-path rule matches the page (default: dont_fire)"))
        }
        _ => None,
    }
}

/// The Intercom event a forwarded call becomes, after `events.deny`/`events.allow` (tracks), or its skip: a track's
/// name renamed, a view's configured name (`page`/`screen` set to null skip).
fn named<'a>(settings: &'a Settings, event: &'a Event) -> Verdict<'a> {
    let document = &settings.document;
    let event_name = match event.kind {
        EventType::Track => {
            let name = event.event.as_deref().unwrap_or_default();
            // A glob set makes a candidate (allocating) even when empty: the default settings skip it.
            let denied = if settings.deny.is_empty() { None } else { settings.deny.matches(name).first().copied() };
            if let Some(index) = denied {
                let pattern = &document.events.deny[index];
                return skip(format!("events.deny[{index}]"), format!("the event name matches `{pattern}`"));
            }
            if settings.allow.as_ref().is_some_and(|allow| !allow.is_match(name)) {
                return skip("events.allow", "the event name matches no pattern of events.allow");
            }
            Some(document.events.rename.get(name).map_or(name, String::as_str))
        }
        EventType::Page | EventType::Screen => {
            let (setting, configured) = match event.kind {
                EventType::Page => ("page", &document.page),
                _ => ("screen", &document.screen),
            };
            match configured {
                Some(name) => Some(name.as_str()),
                None => return skip(setting, format!("{setting} calls are set to null")),
            }
        }
        _ => None,
    };
    Verdict::Forward { event_name }
}

/// Segment's semantics: `"Intercom": false` skips; `"All": false` skips unless `"Intercom"` is on; names match
/// case-insensitively (RudderStack sends `INTERCOM`); an object (destination options) counts as on.
fn integrations(event: &Event) -> Option<Verdict<'static>> {
    let integrations = event.integrations.as_ref()?;
    // Nothing can be off without a `false`: most events (`{}`, `{"All": true}`) are settled without parsing.
    memchr::memmem::find(integrations.get().as_bytes(), b"false")?;
    let members = integrations.members();
    let flag = |name: &str| {
        let (key, raw) = members.0.iter().find(|(key, _)| key.eq_ignore_ascii_case(name))?;
        Some((key.to_string(), switch(raw)?))
    };
    match flag("Intercom") {
        Some((key, false)) => Some(skip(format!("integrations.{key}"), "the event's integrations turn Intercom off")),
        Some((_, true)) => None,
        None => match flag("All") {
            Some((key, false)) => Some(skip(
                format!("integrations.{key}"),
                "the event's integrations turn every destination off and Intercom not back on",
            )),
            _ => None,
        },
    }
}

/// On (`true`, an object of options), off (`false`), or no say (anything else).
fn switch(raw: &RawValue) -> Option<bool> {
    match raw.get().as_bytes().first() {
        Some(b't') | Some(b'{') => Some(true),
        Some(b'f') => Some(false),
        _ => None,
    }
}

/// The page an event was sent from: `context.page`'s url and path (a page call's own `properties` when it has no
/// page context); the path is taken from the URL when not sent.
fn page_location(event: &Event, page: Option<Value>) -> Option<(Option<String>, Option<String>)> {
    let text = |object: &Value, key: &str| {
        object.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
    };
    let mut found = page.map(|page| (text(&page, "url"), text(&page, "path")));
    if !matches!(found, Some((Some(_), _)) | Some((_, Some(_)))) && event.kind == EventType::Page {
        let properties = event.properties.as_ref().and_then(|p| p.to_map().ok()).map(Value::Object);
        found = properties.map(|p| (text(&p, "url"), text(&p, "path")));
    }
    let (url, path) = found?;
    let path = path.or_else(|| url.as_deref().and_then(url_path));
    (url.is_some() || path.is_some()).then_some((url, path))
}

/// The path of an absolute URL, without query or fragment: `https://a.example/b/c?d` → `/b/c`.
fn url_path(url: &str) -> Option<String> {
    let after_scheme = url.split_once("://")?.1;
    // The host ends at the first '/', '?' or '#': a '/' inside the query or fragment is not the path.
    let path = match after_scheme.find(['/', '?', '#']) {
        Some(at) if after_scheme[at..].starts_with('/') => &after_scheme[at..],
        _ => "/",
    };
    Some(path.split(['?', '#']).next().unwrap_or(path).to_owned())
}
