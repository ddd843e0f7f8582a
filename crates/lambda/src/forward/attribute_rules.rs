//! What becomes of a custom attribute's value, judged against what the workspace holds: pure, so every rule is a row
//! of the table below.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::intercom::{DataAttribute, DataType, MAX_CUSTOM_ATTRIBUTES};

/// One model's data attributes, as the workspace listed them and this cold start changed them.
#[derive(Default)]
pub(super) struct ModelAttributes {
    /// Custom attributes by name, archived ones included.
    pub(super) custom: HashMap<String, DataAttribute>,
    /// Standard attributes' names, lower-cased: Intercom refuses them as custom names ("'Name' is one of our standard
    /// attributes").
    standard: HashSet<String>,
    /// Names Intercom refused to create during this cold start.
    pub(super) refused: HashSet<String>,
}

impl ModelAttributes {
    pub(super) fn from_list(list: HashMap<String, DataAttribute>) -> ModelAttributes {
        let mut model = ModelAttributes::default();
        for (name, attribute) in list {
            if attribute.custom {
                model.custom.insert(name, attribute);
            } else {
                model.standard.insert(name.to_lowercase());
            }
        }
        model
    }

    fn live_custom(&self) -> usize {
        self.custom.values().filter(|a| !a.archived).count()
    }

    /// Whether values can be sent to the custom attribute `name` as it stands.
    pub(super) fn holds_live(&self, name: &str) -> bool {
        self.custom.get(name).is_some_and(|a| !a.archived)
    }
}

/// What becomes of one custom attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Verdict {
    /// Send it, in the type the attribute holds.
    Send(Value),
    /// The workspace has no such attribute: create it with this data type first.
    Create(DataType),
    /// Leave it out, for this reason.
    Drop(&'static str),
}

/// Judges `value` for the custom attribute `name` of a model that holds `model`; `is_date` when the mapping found a time;
/// `create` whether a missing attribute may be created.
pub(super) fn judge(name: &str, value: &Value, is_date: bool, model: &ModelAttributes, create: bool) -> Verdict {
    if model.standard.contains(&name.to_lowercase()) {
        return Verdict::Drop("the name of one of Intercom's standard attributes");
    }
    if let Some(attribute) = model.custom.get(name) {
        if attribute.archived {
            return Verdict::Drop("the attribute is archived in Intercom (unarchive it to receive values)");
        }
        return match fit(attribute, value) {
            Ok(value) => Verdict::Send(value),
            Err(reason) => Verdict::Drop(reason),
        };
    }
    if model.refused.contains(name) {
        return Verdict::Drop("Intercom refused to create this attribute");
    }
    if value.is_null() {
        return Verdict::Drop("a null creates no attribute");
    }
    if !create {
        return Verdict::Drop("Intercom has no such custom attribute (INTERCOM_CREATE_ATTRIBUTES=false)");
    }
    if model.live_custom() >= MAX_CUSTOM_ATTRIBUTES {
        return Verdict::Drop("the workspace holds Intercom's maximum of 250 custom attributes");
    }
    Verdict::Create(new_type(name, value, is_date))
}

/// The data type of a new attribute, from the value that creates it: a time is a `date` in Unix seconds.
fn new_type(name: &str, value: &Value, is_date: bool) -> DataType {
    match value {
        Value::Number(n) if is_date || ((name.ends_with("_at") || name.ends_with("_date")) && n.is_i64()) => {
            DataType::Date
        }
        Value::Bool(_) => DataType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => DataType::Integer,
        Value::Number(_) => DataType::Float,
        _ => DataType::String,
    }
}

/// `value` in the type `attribute` holds, or why it cannot be: a write carrying a value of the wrong type, or one
/// outside a list attribute's options, is refused whole (intercom/Intercom-OpenAPI PR #457).
fn fit(attribute: &DataAttribute, value: &Value) -> Result<Value, &'static str> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    let fitted = match attribute.data_type {
        DataType::String => as_string(value)?,
        DataType::Integer => as_whole(value, true)?,
        DataType::Date => match value {
            Value::String(text) => match crate::event::parse_timestamp(text) {
                Some(at) => Value::from(at.unix_timestamp()),
                None => return Err("Intercom's attribute holds dates"),
            },
            _ => as_whole(value, false)?,
        },
        DataType::Float => as_number(value)?,
        DataType::Boolean => as_boolean(value)?,
        DataType::Other => value.clone(),
    };
    if !attribute.options.is_empty() {
        let text = fitted.as_str().map(str::to_owned).unwrap_or_else(|| fitted.to_string());
        if !attribute.options.contains(&text) {
            return Err("not one of the list attribute's options in Intercom");
        }
    }
    Ok(fitted)
}

const WRONG_TYPE: &str = "the value's type is not the one Intercom's attribute holds";

fn as_string(value: &Value) -> Result<Value, &'static str> {
    match value {
        Value::String(_) => Ok(value.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(Value::from(value.to_string())),
        _ => Err(WRONG_TYPE),
    }
}

/// A whole number; `from_text` when a string holding one is read as one (an integer's, not a date's).
fn as_whole(value: &Value, from_text: bool) -> Result<Value, &'static str> {
    const WHOLE: &str = "Intercom's attribute holds whole numbers";
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
            _ => Err(WHOLE),
        },
        Value::String(text) if from_text => text.trim().parse::<i64>().map(Value::from).map_err(|_| WHOLE),
        _ => Err(WRONG_TYPE),
    }
}

fn as_number(value: &Value) -> Result<Value, &'static str> {
    match value {
        Value::Number(_) => Ok(value.clone()),
        Value::String(text) => match text.trim().parse::<f64>().ok().filter(|f| f.is_finite()) {
            Some(f) => Ok(Value::from(f)),
            None => Err("Intercom's attribute holds numbers"),
        },
        _ => Err(WRONG_TYPE),
    }
}

fn as_boolean(value: &Value) -> Result<Value, &'static str> {
    match value {
        Value::Bool(_) => Ok(value.clone()),
        Value::String(text) => match text.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("Intercom's attribute holds true or false"),
        },
        _ => Err(WRONG_TYPE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercom::read_data_attributes;
    use serde_json::json;

    fn model(attributes: Value) -> ModelAttributes {
        ModelAttributes::from_list(read_data_attributes(&json!({"data": attributes})))
    }

    fn workspace() -> ModelAttributes {
        model(json!([
            {"name": "Name", "data_type": "string", "custom": false},
            {"name": "old", "data_type": "string", "custom": true, "archived": true},
            {"name": "tier", "data_type": "string", "custom": true, "options": [{"value": "gold"}]},
            {"name": "seats", "data_type": "integer", "custom": true},
            {"name": "label", "data_type": "string", "custom": true},
            {"name": "trial_at", "data_type": "date", "custom": true},
            {"name": "vip", "data_type": "boolean", "custom": true},
            {"name": "ratio", "data_type": "float", "custom": true},
        ]))
    }

    /// Where a verdict is a `Drop`, the table holds `Drop("")`: the reason's wording is not the rule.
    fn same(verdict: &Verdict, expected: &Verdict) -> bool {
        match (verdict, expected) {
            (Verdict::Drop(_), Verdict::Drop("")) => true,
            _ => verdict == expected,
        }
    }

    #[test]
    fn each_value_is_sent_in_the_attributes_type_created_or_left_out() {
        let (held, empty) = (workspace(), ModelAttributes::default());
        let drop = Verdict::Drop("");
        let send = |v: Value| Verdict::Send(v);
        #[rustfmt::skip]
        let table: Vec<(&str, Value, bool, &ModelAttributes, bool, Verdict)> = vec![
            // A standard attribute's name, any case, or an archived attribute: left out.
            ("name", json!("x"), false, &held, true, drop.clone()),
            ("old", json!("x"), false, &held, true, drop.clone()),
            // A list attribute takes its options only.
            ("tier", json!("gold"), false, &held, true, send(json!("gold"))),
            ("tier", json!("bronze"), false, &held, true, drop.clone()),
            // Values are sent in the type the attribute holds, or left out.
            ("seats", json!("12"), false, &held, true, send(json!(12))),
            ("seats", json!(12.0), false, &held, true, send(json!(12))),
            ("seats", json!("many"), false, &held, true, drop.clone()),
            ("seats", json!(true), false, &held, true, drop.clone()),
            ("label", json!(7), false, &held, true, send(json!("7"))),
            ("label", json!({"a": 1}), false, &held, true, drop.clone()),
            ("trial_at", json!("2024-05-01T12:00:00Z"), false, &held, true, send(json!(1714564800))),
            ("trial_at", json!("soon"), false, &held, true, drop.clone()),
            ("vip", json!("true"), false, &held, true, send(json!(true))),
            ("vip", json!("yes"), false, &held, true, drop.clone()),
            ("ratio", json!("0.25"), false, &held, true, send(json!(0.25))),
            // A null clears a held attribute and creates none.
            ("vip", Value::Null, false, &held, true, send(Value::Null)),
            ("plan", Value::Null, false, &empty, true, drop.clone()),
            // A new attribute takes its type from the value (a time, or a whole number named *_at, is a date).
            ("trial_ends", json!(1714564800), true, &empty, true, Verdict::Create(DataType::Date)),
            ("renewed_at", json!(1714564800), false, &empty, true, Verdict::Create(DataType::Date)),
            ("seats", json!(3), false, &empty, true, Verdict::Create(DataType::Integer)),
            ("ratio", json!(0.5), false, &empty, true, Verdict::Create(DataType::Float)),
            ("vip", json!(true), false, &empty, true, Verdict::Create(DataType::Boolean)),
            ("plan", json!("pro"), false, &empty, true, Verdict::Create(DataType::String)),
            // Not created when creating is off.
            ("plan", json!("pro"), false, &empty, false, drop.clone()),
        ];
        for (name, value, is_date, model, create, expected) in table {
            let verdict = judge(name, &value, is_date, model, create);
            assert!(same(&verdict, &expected), "{name} = {value}: {verdict:?}, expected {expected:?}");
        }
    }

    #[test]
    fn the_workspaces_250th_custom_attribute_is_its_last() {
        let attributes: Vec<Value> =
            (0..250).map(|i| json!({"name": format!("a{i}"), "data_type": "string", "custom": true})).collect();
        let full = model(Value::Array(attributes));
        assert!(matches!(judge("one_more", &json!("x"), false, &full, true), Verdict::Drop(_)));
        assert_eq!(judge("a7", &json!("x"), false, &full, true), Verdict::Send(json!("x")));
    }

    #[test]
    fn a_name_refused_once_is_not_asked_for_again() {
        let mut model = ModelAttributes::default();
        model.refused.insert("bad name".into());
        assert!(matches!(judge("bad name", &json!("x"), false, &model, true), Verdict::Drop(_)));
    }
}
