//! What need not be written again: the fields of an identify or group that hold what the relay last wrote and
//! Intercom confirmed (as the identity store's digests say) are left out, and a write of nothing is not sent. Pure:
//! the store is read and written by `identities.rs`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::identity::Written;

/// Intercom's field a page-load identify moves every time (from its timestamp, `identify.update_last_seen`).
const LAST_SEEN: &str = "last_seen_at";

/// How long what was written goes by, and how far `last_seen_at` may move before it is a change.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WriteMemory {
    /// `IDENTITY_REFRESH`: after this, everything is written again (0: always).
    pub refresh: Duration,
    /// `LAST_SEEN_RESOLUTION`: `last_seen_at` alone is no change until it moved this far from what was written (0:
    /// every move is one).
    pub last_seen_resolution: Duration,
    /// The secret values are hashed with (from the access token): a trait's digest cannot be matched against a guess
    /// (a birth date, a phone number) by whoever reads the table without it.
    pub key: [u8; 32],
}

impl std::fmt::Debug for WriteMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (refresh, resolution) = (self.refresh, self.last_seen_resolution);
        f.debug_struct("WriteMemory").field("refresh", &refresh).field("last_seen_resolution", &resolution).finish()
    }
}

impl Default for WriteMemory {
    fn default() -> WriteMemory {
        // Intercom's "last seen" segments work in days; a day's refresh heals what someone changed in Intercom.
        let (refresh, last_seen_resolution) = (Duration::from_secs(86_400), Duration::from_secs(3600));
        WriteMemory { refresh, last_seen_resolution, key: [0; 32] }
    }
}

fn attribute_field(name: &str) -> String {
    format!("a:{name}")
}

fn custom_field(name: &str) -> String {
    format!("c:{name}")
}

impl WriteMemory {
    /// Leaves out of `attributes` and `custom` what `written` says Intercom holds, when it is fresh at `now`: `true`
    /// when it was, `false` when everything is to be written. Nothing is left when nothing changed; when something did,
    /// only the changes are left with `only_changes`, else everything. Only changes go where one lane writes (a user,
    /// whose events come in order): where several people's lanes write at once (a lead two devices share, a company),
    /// changes computed from what another lane is rewriting could leave Intercom holding a mix no event sent.
    pub(super) fn leave_out_unchanged(
        &self,
        written: &Written,
        attributes: &mut Map<String, Value>,
        custom: &mut Map<String, Value>,
        now: u64,
        only_changes: bool,
    ) -> bool {
        if !written.is_fresh(self.refresh, now) {
            return false;
        }
        let whole = (!only_changes).then(|| (attributes.clone(), custom.clone()));
        let held = |field: String, value: &Value| written.fields.get(&field) == Some(&self.digest(value));
        attributes.retain(|name, value| name == LAST_SEEN || !held(attribute_field(name), value));
        custom.retain(|name, value| !held(custom_field(name), value));
        let seen = attributes.get(LAST_SEEN).and_then(Value::as_i64);
        // Alone, a move of last_seen_at within the resolution is no change; with another change it is written too.
        if let (Some(seen), Some(last), true) = (seen, written.last_seen_at, attributes.len() == 1 && custom.is_empty())
        {
            let resolution = self.last_seen_resolution.as_secs() as i64;
            if resolution > 0 && seen < last.saturating_add(resolution) {
                attributes.remove(LAST_SEEN);
            }
        }
        if let Some(whole) = whole.filter(|_| !attributes.is_empty() || !custom.is_empty()) {
            (*attributes, *custom) = whole;
        }
        true
    }

    /// The digest a value is held as: keyed, and short (a match by chance costs a skipped write until the refresh).
    fn digest(&self, value: &Value) -> String {
        use sha2::{Digest, Sha256};
        crate::hex(&Sha256::new().chain_update(self.key).chain_update(value.to_string()).finalize())[..32].to_owned()
    }

    /// What is written once Intercom took `attributes` and `custom`: added to `before` when it was fresh, else from
    /// scratch at `now` (a refresh).
    pub(super) fn after_write(
        &self,
        before: Option<&Written>,
        attributes: &Map<String, Value>,
        custom: &Map<String, Value>,
        now: u64,
    ) -> Written {
        let mut written = before.cloned().unwrap_or(Written { refreshed_at: now, ..Written::default() });
        for (name, value) in attributes {
            if name == LAST_SEEN {
                written.last_seen_at = value.as_i64();
            } else {
                written.fields.insert(attribute_field(name), self.digest(value));
            }
        }
        for (name, value) in custom {
            written.fields.insert(custom_field(name), self.digest(value));
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn written(attributes: Value, custom: Value) -> Written {
        WriteMemory::default().after_write(None, &map(attributes), &map(custom), NOW - 60)
    }

    /// `(attributes, custom, fresh)` left to write by the defaults at `NOW`.
    fn left(before: &Written, attributes: Value, custom: Value) -> (Value, Value, bool) {
        let (mut attributes, mut custom) = (map(attributes), map(custom));
        let fresh = WriteMemory::default().leave_out_unchanged(before, &mut attributes, &mut custom, NOW, true);
        (Value::Object(attributes), Value::Object(custom), fresh)
    }

    #[test]
    fn what_was_written_is_left_out_and_a_change_is_written_alone() {
        let before = written(json!({"name": "Ada", "email": "a@x.io"}), json!({"plan": "pro", "seats": 3}));
        let (attributes, custom, fresh) =
            left(&before, json!({"name": "Ada", "email": "a@x.io"}), json!({"plan": "pro", "seats": 3}));
        assert_eq!((attributes, custom, fresh), (json!({}), json!({}), true), "the same again: nothing to write");
        let (attributes, custom, _) =
            left(&before, json!({"name": "Ada L", "email": "a@x.io"}), json!({"plan": "pro", "seats": 4}));
        assert_eq!((attributes, custom), (json!({"name": "Ada L"}), json!({"seats": 4})));
        let (_, custom, _) = left(&before, json!({}), json!({"plan": null, "new": 1}));
        assert_eq!(custom, json!({"plan": null, "new": 1}), "a cleared value and a new attribute are changes");
    }

    #[test]
    fn last_seen_alone_is_no_change_within_the_resolution_and_goes_along_with_another_change() {
        let before = written(json!({"name": "Ada", "last_seen_at": 10_000}), json!({}));
        assert_eq!(before.last_seen_at, Some(10_000));
        let (attributes, ..) = left(&before, json!({"name": "Ada", "last_seen_at": 10_000 + 3599}), json!({}));
        assert_eq!(attributes, json!({}), "within the hour: nothing to write");
        let (attributes, ..) = left(&before, json!({"name": "Ada", "last_seen_at": 10_000 + 3600}), json!({}));
        assert_eq!(attributes, json!({"last_seen_at": 13_600}), "an hour on: written");
        let (attributes, ..) = left(&before, json!({"name": "Bea", "last_seen_at": 10_001}), json!({}));
        assert_eq!(attributes, json!({"name": "Bea", "last_seen_at": 10_001}), "along with a change");
        let every_time = WriteMemory { last_seen_resolution: Duration::ZERO, ..WriteMemory::default() };
        let mut attributes = map(json!({"last_seen_at": 10_001}));
        every_time.leave_out_unchanged(&before, &mut attributes, &mut Map::new(), NOW, true);
        assert_eq!(Value::Object(attributes), json!({"last_seen_at": 10_001}), "a resolution of 0: every move");
    }

    #[test]
    fn where_several_lanes_write_a_change_sends_everything_and_no_change_sends_nothing() {
        let before = written(json!({"name": "Org", "plan": "pro"}), json!({"seats": 3}));
        let memory = WriteMemory::default();
        let (mut attributes, mut custom) = (map(json!({"name": "Org", "plan": "team"})), map(json!({"seats": 3})));
        assert!(memory.leave_out_unchanged(&before, &mut attributes, &mut custom, NOW, false));
        assert_eq!(
            (Value::Object(attributes), Value::Object(custom)),
            (json!({"name": "Org", "plan": "team"}), json!({"seats": 3}))
        );
        let (mut attributes, mut custom) = (map(json!({"name": "Org", "plan": "pro"})), map(json!({"seats": 3})));
        memory.leave_out_unchanged(&before, &mut attributes, &mut custom, NOW, false);
        assert!(attributes.is_empty() && custom.is_empty(), "nothing changed: nothing to write");
    }

    #[test]
    fn after_the_refresh_or_with_nothing_written_everything_is_written() {
        let before = written(json!({"name": "Ada"}), json!({}));
        let stale = WriteMemory { refresh: Duration::from_secs(30), ..WriteMemory::default() };
        let mut attributes = map(json!({"name": "Ada"}));
        assert!(!stale.leave_out_unchanged(&before, &mut attributes, &mut Map::new(), NOW, true));
        assert_eq!(Value::Object(attributes), json!({"name": "Ada"}));
        let (attributes, _, fresh) = left(&Written::default(), json!({"name": "Ada"}), json!({}));
        assert_eq!((attributes, fresh), (json!({"name": "Ada"}), false));
    }

    #[test]
    fn values_are_held_as_keyed_digests() {
        let one = WriteMemory { key: [1; 32], ..WriteMemory::default() };
        let digest = one.digest(&json!("Ada Lovelace"));
        assert!(digest.len() == 32 && !digest.contains("Ada"));
        assert_ne!(digest, one.digest(&json!("Ada Lovelace ")));
        assert_ne!(digest, WriteMemory::default().digest(&json!("Ada Lovelace")), "another key, another digest");
    }

    #[test]
    fn a_write_adds_to_what_was_written_when_fresh_and_starts_again_on_a_refresh() {
        let before =
            Written { companies: ["c".into()].into(), ..written(json!({"name": "Ada"}), json!({"plan": "pro"})) };
        let added = WriteMemory::default().after_write(Some(&before), &map(json!({"phone": "1"})), &Map::new(), NOW);
        assert_eq!(added.fields.len(), 3);
        assert_eq!((added.refreshed_at, added.companies.len()), (before.refreshed_at, 1), "the refresh clock is kept");
        let again = WriteMemory::default().after_write(None, &map(json!({"phone": "1"})), &Map::new(), NOW);
        assert_eq!((again.fields.len(), again.refreshed_at, again.companies.len()), (1, NOW, 0));
    }
}
