//! Data attributes as Intercom defines them: the two models, the data types, the limit, the listed shape and what a
//! refused create means. The forwarder's checks and the sandbox's rules both read them from here.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

/// At most this many custom data attributes per workspace, archived ones not counted (Intercom help, article 179).
pub const MAX_CUSTOM_ATTRIBUTES: usize = 250;

/// What a data attribute belongs to (`model` in `GET /data_attributes` and `POST /data_attributes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    Contact,
    Company,
}

impl Model {
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Contact => "contact",
            Model::Company => "company",
        }
    }

    pub fn parse(text: &str) -> Option<Model> {
        match text {
            "contact" => Some(Model::Contact),
            "company" => Some(Model::Company),
            _ => None,
        }
    }

    /// The model a name also cannot take once this one holds it ("You already have 'X' in your company data").
    pub fn other(self) -> Model {
        match self {
            Model::Contact => Model::Company,
            Model::Company => Model::Contact,
        }
    }

    /// How Intercom's refusals name the model's data ("people data", "company data").
    fn data_name(self) -> &'static str {
        match self {
            Model::Contact => "people data",
            Model::Company => "company data",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A data attribute's type (spec schema `data_attribute.data_type`); a list attribute is a `String` with options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    String,
    Integer,
    Float,
    Boolean,
    /// Unix seconds.
    Date,
    /// A type a later version may list: values are sent to it as they are.
    Other,
}

impl DataType {
    /// The types `POST /data_attributes` creates.
    pub(crate) const CREATABLE: [DataType; 5] =
        [DataType::String, DataType::Integer, DataType::Float, DataType::Boolean, DataType::Date];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::Integer => "integer",
            DataType::Float => "float",
            DataType::Boolean => "boolean",
            DataType::Date => "date",
            DataType::Other => "other",
        }
    }

    /// One of the creatable types by name; `None` for any other.
    pub fn parse(text: &str) -> Option<DataType> {
        DataType::CREATABLE.into_iter().find(|t| t.as_str() == text)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A data attribute as `GET /data_attributes` lists it (spec schema `data_attribute`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataAttribute {
    pub name: String,
    pub data_type: DataType,
    /// `false` for Intercom's standard attributes: they are not custom attributes, and their names cannot be created.
    pub custom: bool,
    pub archived: bool,
    /// The values a list attribute takes; empty for any other.
    pub options: Vec<String>,
}

impl DataAttribute {
    /// A custom attribute just created, of `data_type`.
    pub fn created(name: &str, data_type: DataType) -> DataAttribute {
        DataAttribute { name: name.to_owned(), data_type, custom: true, archived: false, options: Vec::new() }
    }
}

/// The data attributes of a list answer, by name.
pub fn read_data_attributes(answer: &Value) -> HashMap<String, DataAttribute> {
    let items = answer["data"].as_array().into_iter().flatten();
    items
        .filter_map(|item| {
            let name = item["name"].as_str()?.to_owned();
            let options = item["options"].as_array().into_iter().flatten();
            let options = options.filter_map(|o| o.as_str().or_else(|| o["value"].as_str()).map(str::to_owned));
            let data_type = item["data_type"].as_str().map_or(Some(DataType::String), DataType::parse);
            let attribute = DataAttribute {
                name: name.clone(),
                data_type: data_type.unwrap_or(DataType::Other),
                custom: item["custom"].as_bool().unwrap_or(true),
                archived: item["archived"].as_bool().unwrap_or(false),
                options: options.collect(),
            };
            Some((name, attribute))
        })
        .collect()
}

/// What a refused `POST /data_attributes` means for the attribute the relay wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeRefusal {
    /// It exists in this model (another forwarder created it first): use it.
    Exists,
    /// Intercom will not hold it under this name (the other model has it, a standard attribute, bad characters, the
    /// workspace's limit): leave it out.
    Refused,
}

/// Reads a 400 of `POST /data_attributes` for `model`. "You already have 'X' in your company data. To save this as new
/// people data, use a different name." holds the word "already" both when the name exists in this model and when the
/// other model has it (spec lines 14985-15010): only the model it names tells them apart.
pub fn attribute_refusal(message: &str, model: Model) -> AttributeRefusal {
    let lower = message.to_ascii_lowercase();
    match lower.split_once("in your ") {
        Some((_, rest)) if lower.contains("already have") && rest.starts_with(model.data_name()) => {
            AttributeRefusal::Exists
        }
        _ => AttributeRefusal::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_attribute_the_other_model_holds_is_a_refusal_not_an_existing_one() {
        let other =
            "You already have 'plan' in your company data. To save this as new people data, use a different name.";
        assert_eq!(attribute_refusal(other, Model::Contact), AttributeRefusal::Refused);
        assert_eq!(attribute_refusal(other, Model::Company), AttributeRefusal::Exists);
        let same =
            "You already have 'plan' in your people data. To save this as new people data, use a different name.";
        assert_eq!(attribute_refusal(same, Model::Contact), AttributeRefusal::Exists);
        let invalid =
            "Your name for this attribute must only contain alphanumeric characters, currency symbols, and hyphens";
        assert_eq!(attribute_refusal(invalid, Model::Contact), AttributeRefusal::Refused);
    }

    #[test]
    fn data_attributes_are_read_with_their_kind_state_and_options() {
        let answer = json!({"type": "list", "data": [
            {"name": "name", "data_type": "string", "custom": false, "archived": false},
            {"name": "tier", "data_type": "string", "custom": true, "archived": false, "options": [{"value": "gold"}, {"value": "silver"}]},
            {"name": "old", "data_type": "integer", "custom": true, "archived": true},
            {"name": "when", "data_type": "datetime", "custom": true},
        ]});
        let read = read_data_attributes(&answer);
        assert!(!read["name"].custom);
        assert_eq!(read["tier"].options, ["gold", "silver"]);
        assert_eq!(read["old"].data_type, DataType::Integer);
        assert!(read["old"].archived);
        assert_eq!(read["when"].data_type, DataType::Other);
    }

    #[test]
    fn models_and_types_read_back_from_their_names() {
        for model in [Model::Contact, Model::Company] {
            assert_eq!(Model::parse(model.as_str()), Some(model));
            assert_eq!(model.other().other(), model);
        }
        for data_type in DataType::CREATABLE {
            assert_eq!(DataType::parse(data_type.as_str()), Some(data_type));
        }
        assert_eq!(DataType::parse("list"), None);
    }
}
