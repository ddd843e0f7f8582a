//! A contact or company write with the values Intercom refuses left out: an owner who is no admin is checked first;
//! a value Intercom refuses by name is dropped with the reason and the write sent again.

use std::collections::HashSet;

use serde_json::{Map, Value};
use tracing::warn;

use super::executor::Run;
use crate::intercom::requests::{self, Fields, Request};
use crate::intercom::{ErrorKind, IntercomApi, IntercomError};
use crate::mapping::Dropped;

/// A write that Intercom refuses for one named value is sent again without it, at most this many times.
const MAX_REFUSALS: usize = 3;

impl<A: IntercomApi> Run<'_, A> {
    /// Sends a write built by `build` from the fields left; when Intercom refuses one named value (an owner who is no
    /// admin, an attribute it will not hold), it is left out with the reason and the write sent again, a few times.
    pub(super) async fn write(
        &mut self,
        build: impl Fn(&Fields<'_>) -> Request,
        attributes: &mut Map<String, Value>,
        custom: &mut Map<String, Value>,
    ) -> Result<Value, IntercomError> {
        let mut refusals = 0;
        loop {
            let fields = Fields { attributes, custom_attributes: custom };
            let error = match self.call(build(&fields)).await {
                Err(error) if error.kind() == ErrorKind::Refused && refusals < MAX_REFUSALS => error,
                outcome => return outcome,
            };
            let message = error.message().unwrap_or_default();
            let (path, reason) = if let Some(name) = requests::refused_attribute(message, custom.keys()) {
                custom.remove(&name);
                (format!("custom_attributes.{name}"), "Intercom refused this value")
            } else if requests::refused_owner(message) && attributes.remove("owner_id").is_some() {
                ("traits.owner_id".to_owned(), "Intercom refused this owner")
            } else {
                return Err(error);
            };
            let shown = error.shown_message().unwrap_or_default();
            warn!(path, intercom_message = shown, "Intercom refused one value; sending the rest again without it.");
            self.dropped.push(Dropped { path, reason });
            refusals += 1;
        }
    }

    /// Leaves out an owner who is not an admin of the workspace (Intercom refuses the whole write for one).
    pub(super) async fn known_owner(&mut self, attributes: &mut Map<String, Value>) -> Result<(), IntercomError> {
        let Some(owner) = attributes.get("owner_id").map(|o| o.as_str().map(str::to_owned)) else { return Ok(()) };
        let admins = self.executor.workspace.admins.get_or_learn(|| self.list_admins()).await?;
        let unknown = match (&owner, admins.as_ref()) {
            (None, _) => true,
            (Some(owner), Some(admins)) => !admins.contains(owner),
            (Some(_), None) => false,
        };
        if unknown {
            attributes.remove("owner_id");
            warn!("An owner_id that is not an admin of the workspace was left out.");
            self.dropped
                .push(Dropped { path: "traits.owner_id".into(), reason: "not an admin of the Intercom workspace" });
        }
        Ok(())
    }

    /// The admins' ids, or `None` when the token may not list them.
    async fn list_admins(&self) -> Result<Option<HashSet<String>>, IntercomError> {
        match self.call(requests::list_admins()).await {
            Ok(answer) => Ok(Some(requests::read_admins(&answer).into_iter().collect())),
            Err(error) if error.is_retryable() => Err(error),
            Err(error) => {
                warn!(%error, "The workspace's admins cannot be listed; an owner is checked by Intercom's answer.");
                Ok(None)
            }
        }
    }
}
