//! Custom attributes checked against what the workspace holds (the rules in `attribute_rules`), and the missing ones
//! created when allowed: once per name, however many people bring it at once, with no lock held across the call.

use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::warn;

use super::attribute_rules::{ModelAttributes, Verdict, judge};
use super::learned::{Fact, lock};
use crate::intercom::requests;
use crate::intercom::{
    AttributeRefusal, DataAttribute, DataType, ErrorKind, IntercomApi, IntercomError, Model, attribute_refusal,
    read_data_attributes,
};
use crate::mapping::Dropped;

use super::executor::Run;

impl<A: IntercomApi> Run<'_, A> {
    /// A model's data attributes, learned once per cold start.
    async fn attributes(&self, model: Model) -> Result<Fact<Mutex<ModelAttributes>>, IntercomError> {
        let learn = || async move {
            let list = self.call(requests::list_data_attributes(model)).await?;
            Ok(Mutex::new(ModelAttributes::from_list(read_data_attributes(&list))))
        };
        self.executor.workspace.attributes(model).get_or_learn(learn).await
    }

    /// Whether the model has the live custom attribute `name`.
    pub(super) async fn has_attribute(&self, model: Model, name: &str) -> Result<bool, IntercomError> {
        let held = self.attributes(model).await?;
        Ok(lock(&held).holds_live(name))
    }

    /// Keeps only the custom attributes the workspace can hold, in the types it holds them, creating missing ones when
    /// allowed; each value left out is in the run's dropped values with its reason.
    pub(super) async fn known_attributes(
        &mut self,
        model: Model,
        attributes: &mut Map<String, Value>,
        dates: &[String],
    ) -> Result<(), IntercomError> {
        if attributes.is_empty() {
            return Ok(());
        }
        let held = self.attributes(model).await?;
        let names: Vec<String> = attributes.keys().cloned().collect();
        for name in names {
            let is_date = dates.contains(&name);
            let verdict = judge(&name, &attributes[&name], is_date, &lock(&held), self.executor.create_attributes);
            let verdict = match verdict {
                Verdict::Create(data_type) => self.creatable(model, &name, data_type).await?,
                other => other,
            };
            let reason = match verdict {
                Verdict::Send(value) => {
                    attributes.insert(name, value);
                    continue;
                }
                Verdict::Drop(reason) => reason,
                Verdict::Create(data_type) => match self.create(model, &name, data_type, &held).await? {
                    true => continue,
                    false => "Intercom refused to create this attribute",
                },
            };
            attributes.remove(&name);
            self.dropped.push(Dropped { path: format!("custom_attributes.{name}"), reason });
        }
        Ok(())
    }

    /// Whether the attribute may be created: this plan may create it, and the other model does not hold the name (it
    /// is refused: "You already have 'X' in your company data").
    async fn creatable(&self, model: Model, name: &str, data_type: DataType) -> Result<Verdict, IntercomError> {
        if self.may_create.as_ref().is_some_and(|names| !names.contains(name)) {
            return Ok(Verdict::Drop("a browser key creates no attribute (settings: attributes.browser_create)"));
        }
        let other = self.attributes(model.other()).await?;
        if lock(&other).custom.contains_key(name) {
            return Ok(Verdict::Drop("Intercom holds this name as an attribute of the other model"));
        }
        Ok(Verdict::Create(data_type))
    }

    /// Creates the attribute, once however many ask at once; `false` when Intercom refused the name (remembered for the
    /// cold start).
    async fn create(
        &self,
        model: Model,
        name: &str,
        data_type: DataType,
        held: &Mutex<ModelAttributes>,
    ) -> Result<bool, IntercomError> {
        let make = || async {
            match self.call(requests::create_data_attribute(name, model, data_type)).await {
                Ok(_) => Ok(false),
                Err(e) if e.kind() == ErrorKind::Refused => {
                    let refused =
                        attribute_refusal(e.message().unwrap_or_default(), model) == AttributeRefusal::Refused;
                    if refused {
                        let shown = e.shown_message().unwrap_or_default();
                        warn!(%model, attribute = %name, intercom_message = shown, "Intercom refused to create the attribute; its values are left out.");
                    }
                    Ok(refused)
                }
                Err(e) => Err(e),
            }
        };
        let key = (model, name.to_owned());
        let refused = self.executor.workspace.creations.get_or_make(key, make).await?;
        let mut held = lock(held);
        if refused {
            held.refused.insert(name.to_owned());
        } else {
            held.custom.entry(name.to_owned()).or_insert_with(|| DataAttribute::created(name, data_type));
        }
        Ok(!refused)
    }
}
