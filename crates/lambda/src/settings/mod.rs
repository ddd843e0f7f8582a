//! Destination settings: which events go to Intercom, under what names, with whose consent. Pure: read once at start,
//! evaluated per event by the forwarder, so a changed setting applies to events already queued.

mod check;
mod evaluate;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use globset::GlobSet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::EventType;
pub(crate) use check::Problems;
pub(crate) use evaluate::{Skip, Verdict};

/// The settings document as written. Its JSON Schema is generated from these types (`intercom-relay settings schema`),
/// and the checker validates a document against that schema, so the two cannot drift apart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(
    title = "intercom-relay destination settings",
    description = "Which events the forwarder sends to Intercom, under what names, with whose consent. Every member is \
    optional; an absent member keeps its default."
)]
pub(crate) struct Document {
    /// The JSON Schema this document follows, for editors; ignored.
    #[serde(rename = "$schema", skip_serializing_if = "Option::is_none")]
    pub(crate) schema: Option<String>,
    /// The event types forwarded; events of the others are skipped. Default: all six.
    #[schemars(length(min = 1))]
    pub(crate) types: Vec<EventType>,
    /// Which track events are forwarded, and under what names.
    pub(crate) events: EventRules,
    /// URL rules for every event that carries page context (`context.page.url` or `.path`).
    pub(crate) trigger_paths: TriggerPaths,
    /// Forward only events whose consent grants a category. Default: no consent check.
    pub(crate) consent: Option<Consent>,
    /// Who an event is about.
    pub(crate) identity: Identity,
    /// What an identify sends besides the traits.
    pub(crate) identify: Identify,
    /// The Intercom event a page call becomes, or null to skip page calls.
    #[serde(default = "page_viewed")]
    #[schemars(length(min = 1))]
    pub(crate) page: Option<String>,
    /// The Intercom event a screen call becomes, or null to skip screen calls.
    #[serde(default = "screen_viewed")]
    #[schemars(length(min = 1))]
    pub(crate) screen: Option<String>,
    /// Which traits become custom attributes, and whether missing ones are created.
    pub(crate) attributes: Attributes,
    /// What `traits.tags` does to a contact's (identify) or a company's (group) tags in Intercom.
    pub(crate) tags: Tags,
}

fn page_viewed() -> Option<String> {
    Some("page_viewed".into())
}

fn screen_viewed() -> Option<String> {
    Some("screen_viewed".into())
}

impl Default for Document {
    fn default() -> Document {
        Document {
            schema: None,
            types: EventType::ALL.to_vec(),
            events: EventRules::default(),
            trigger_paths: TriggerPaths::default(),
            consent: None,
            identity: Identity::default(),
            identify: Identify::default(),
            page: page_viewed(),
            screen: screen_viewed(),
            attributes: Attributes::default(),
            tags: Tags::default(),
        }
    }
}

/// Track events: allow and deny lists of glob patterns on the event name (`*` any run of characters, `?` one,
/// `[abc]`, `{a,b}`; case-sensitive), and renames.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EventRules {
    /// Only track events whose name matches one of these are forwarded. Default (absent): every name.
    #[schemars(length(min = 1))]
    pub(crate) allow: Option<Vec<String>>,
    /// Track events whose name matches one of these are skipped, even when `allow` lists them.
    pub(crate) deny: Vec<String>,
    /// Event names sent to Intercom under another name: `{"Order Completed": "order-completed"}` (exact names).
    #[schemars(with = "BTreeMap<String, NonEmpty>")]
    pub(crate) rename: BTreeMap<String, String>,
}

/// A string with at least one character (for the schema only).
#[derive(JsonSchema)]
#[allow(dead_code)]
#[schemars(transparent)]
struct NonEmpty(#[schemars(length(min = 1))] String);

/// Trigger paths: a list of rules (no match fires), or the rules with the action taken when none matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum TriggerPaths {
    /// Ordered rules; the first that matches decides; an event no rule matches fires.
    Rules(Vec<TriggerRule>),
    /// Ordered rules, and what happens when none matches.
    WithDefault(TriggerPathsWithDefault),
}

impl Default for TriggerPaths {
    fn default() -> TriggerPaths {
        TriggerPaths::Rules(Vec::new())
    }
}

impl TriggerPaths {
    fn rules(&self) -> &[TriggerRule] {
        match self {
            TriggerPaths::Rules(rules) => rules,
            TriggerPaths::WithDefault(with) => &with.rules,
        }
    }

    fn default_action(&self) -> Action {
        match self {
            TriggerPaths::Rules(_) => Action::Fire,
            TriggerPaths::WithDefault(with) => with.default,
        }
    }

    /// Where rule `index` sits in the document.
    fn rule_path(&self, index: usize) -> String {
        match self {
            TriggerPaths::Rules(_) => format!("trigger_paths[{index}]"),
            TriggerPaths::WithDefault(_) => format!("trigger_paths.rules[{index}]"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerPathsWithDefault {
    /// Ordered rules; the first that matches decides.
    pub(crate) rules: Vec<TriggerRule>,
    /// What happens to an event with page context that no rule matches. Default: fire.
    #[serde(default)]
    pub(crate) default: Action,
}

/// One trigger-path rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerRule {
    /// A glob pattern matched against the page URL (`https://shop.example.com/checkout*`) and against its path
    /// (`/checkout/*`); the rule matches when either does. `*` also crosses `/`.
    #[serde(rename = "match")]
    #[schemars(length(min = 1))]
    pub(crate) pattern: String,
    pub(crate) action: Action,
}

/// What a matching trigger-path rule does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    /// Forward the event.
    #[default]
    Fire,
    /// Skip the event.
    DontFire,
}

/// A consent gate, read from `context.consent.categoryPreferences` (Segment's Consent Management).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Consent {
    /// The category an event's consent must grant (`true`); matched case-insensitively.
    #[schemars(length(min = 1))]
    pub(crate) category: String,
    /// What happens to an event that carries no `categoryPreferences` at all. Default: allow.
    #[serde(default)]
    pub(crate) when_missing: WhenMissing,
}

/// What an event without consent preferences gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WhenMissing {
    /// Forward it (consent is managed only where a banner was shown).
    #[default]
    Allow,
    /// Skip it.
    Deny,
}

/// Who an event is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Identity {
    /// Use `anonymousId` as the contact's `external_id` when `userId` is absent (a user keyed by the device).
    /// Default: false.
    pub(crate) send_anonymous_id: bool,
    /// Make or find a lead by email when an event has no `userId` (traits, `context.traits` or `properties.email`).
    /// When false such events are skipped. Default: true.
    pub(crate) lead_from_email: bool,
}

impl Default for Identity {
    fn default() -> Identity {
        Identity { send_anonymous_id: false, lead_from_email: true }
    }
}

/// What an identify sends besides the traits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Identify {
    /// Add the device, OS, app, locale and timezone from `context` as `context_*` custom attributes. Default: false.
    pub(crate) include_context: bool,
    /// Set the contact's `last_seen_at` to the event's time (unless `context.active` is false). Default: true.
    pub(crate) update_last_seen: bool,
}

impl Default for Identify {
    fn default() -> Identify {
        Identify { include_context: false, update_last_seen: true }
    }
}

/// Which traits become custom attributes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Attributes {
    /// Create custom data attributes Intercom lacks, or leave such values out. Default: `INTERCOM_CREATE_ATTRIBUTES`
    /// (true).
    pub(crate) create_missing: Option<bool>,
    /// Glob patterns of the trait names (top level, before flattening) forwarded as contact custom attributes; the
    /// rest are left out. Intercom's own fields (email, name, phone…) are not affected. Default (absent): every trait.
    pub(crate) allow: Option<Vec<String>>,
    /// Glob patterns of the custom attributes (as sent, after flattening) an event sent with a browser key may create;
    /// such an event sets attributes the workspace has, and creates no other. Default: none.
    pub(crate) browser_create: Vec<String>,
}

/// What `traits.tags` (a list of tag names) does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Tags {
    /// The list is the whole set of the contact's (or company's) tags: a tag it holds that the list lacks is removed,
    /// whoever added it (an identify or group without `tags` changes none). Default: false, the list only adds tags.
    pub(crate) remove_missing: bool,
}

/// Settings ready to evaluate: the document with its patterns compiled.
#[derive(Clone, Debug)]
pub struct Settings {
    document: Document,
    /// The document is the defaults: only the event's `integrations` can skip anything.
    plain: bool,
    allow: Option<GlobSet>,
    deny: GlobSet,
    trigger: GlobSet,
    attributes: Option<GlobSet>,
    browser_create: Option<GlobSet>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::from_document(Document::default()).expect("the defaults are valid")
    }
}

impl PartialEq for Settings {
    fn eq(&self, other: &Settings) -> bool {
        self.document == other.document
    }
}

static DEFAULTS: LazyLock<Settings> = LazyLock::new(Settings::default);

impl Settings {
    /// Today's behaviour: everything forwarded, nothing renamed.
    pub fn defaults() -> &'static Settings {
        &DEFAULTS
    }

    /// Reads a settings document, listing every problem by its path.
    pub fn parse(text: &str) -> Result<Settings, Problems> {
        check::parse(text)
    }

    /// Compiles a document's patterns; every bad pattern is a problem at its path.
    pub(crate) fn from_document(document: Document) -> Result<Settings, Problems> {
        check::compile(document)
    }

    #[cfg(test)]
    /// The document, defaults filled in.
    pub(crate) fn document(&self) -> &Document {
        &self.document
    }

    #[cfg(test)]
    /// Whether the settings change anything from the defaults.
    pub(crate) fn is_default(&self) -> bool {
        self.plain
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.document.identity
    }

    pub(crate) fn identify(&self) -> &Identify {
        &self.document.identify
    }

    pub(crate) fn tags(&self) -> &Tags {
        &self.document.tags
    }

    /// Whether an event sent with a browser key may create the custom attribute `name`.
    pub(crate) fn browser_may_create(&self, name: &str) -> bool {
        self.browser_create.as_ref().is_some_and(|globs| globs.is_match(name))
    }

    /// Whether a trait named `name` may become a contact custom attribute.
    pub(crate) fn forwards_attribute(&self, name: &str) -> bool {
        self.attributes.as_ref().is_none_or(|allow| allow.is_match(name))
    }

    /// `attributes.create_missing`, when the document sets it.
    pub(crate) fn create_missing(&self) -> Option<bool> {
        self.document.attributes.create_missing
    }

    /// What the settings do, a line each, for `intercom-relay settings check`.
    pub fn describe(&self) -> String {
        let d = &self.document;
        let names = |list: &[EventType]| list.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
        let left_out: Vec<EventType> = EventType::ALL.into_iter().filter(|t| !d.types.contains(t)).collect();
        let mut lines = vec![match left_out.as_slice() {
            [] => "types: all six forwarded".to_owned(),
            _ => format!("types: {} forwarded; {} skipped", names(&d.types), names(&left_out)),
        }];
        let patterns = |n: usize| if n == 1 { "1 pattern".to_owned() } else { format!("{n} patterns") };
        let allow = d.events.allow.as_ref().map_or("every name".to_owned(), |a| format!("allow {}", patterns(a.len())));
        lines.push(format!(
            "events: {allow}, deny {}, {} renamed",
            patterns(d.events.deny.len()),
            d.events.rename.len()
        ));
        let default = match d.trigger_paths.default_action() {
            Action::Fire => "fire",
            Action::DontFire => "dont_fire",
        };
        let rules = match d.trigger_paths.rules().len() {
            1 => "1 rule".to_owned(),
            n => format!("{n} rules"),
        };
        lines.push(format!("trigger_paths: {rules}, default {default}"));
        lines.push(match &d.consent {
            None => "consent: not checked".to_owned(),
            Some(c) => {
                let missing = if c.when_missing == WhenMissing::Deny { "deny" } else { "allow" };
                format!("consent: `{}` required (when missing: {missing})", c.category)
            }
        });
        let i = &d.identity;
        lines.push(format!(
            "identity: send_anonymous_id {}, lead_from_email {}",
            i.send_anonymous_id, i.lead_from_email
        ));
        lines.push(format!(
            "identify: include_context {}, update_last_seen {}",
            d.identify.include_context, d.identify.update_last_seen
        ));
        for (name, value) in [("page", &d.page), ("screen", &d.screen)] {
            lines.push(match value {
                Some(event) => format!("{name}: sent as `{event}`"),
                None => format!("{name}: skipped (null)"),
            });
        }
        let create =
            d.attributes.create_missing.map_or("from INTERCOM_CREATE_ATTRIBUTES".to_owned(), |c| c.to_string());
        let allowed = d.attributes.allow.as_ref().map_or("every trait".to_owned(), |a| patterns(a.len()));
        lines.push(format!("attributes: create_missing {create}, allow {allowed}"));
        lines.iter().map(|line| format!("  {line}\n")).collect()
    }

    /// What to do with `event`; see [`Verdict`].
    pub(crate) fn evaluate<'a>(&'a self, event: &'a crate::event::Event) -> Verdict<'a> {
        evaluate::evaluate(self, event)
    }
}

/// The JSON Schema of the settings document, generated from the types.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(Document).to_value()
}

/// The schema as committed in `src/settings/settings.schema.json` (equal to [`schema`]; a test sees to it).
pub fn committed_schema() -> serde_json::Value {
    serde_json::from_str(include_str!("settings.schema.json")).expect("the committed schema is JSON")
}
