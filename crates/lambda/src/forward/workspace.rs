//! What the workspace holds, learned once per cold start and updated as this function changes it: each fact behind
//! its own [`Learned`] cell, read and updated under a lock held for no call.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::attribute_rules::ModelAttributes;
use super::learned::{Learned, OncePerKey};
use crate::intercom::{Model, TagId};

/// The workspace's data attributes, admins and tags.
#[derive(Default)]
pub(super) struct Workspace {
    pub(super) contact_attributes: Learned<Mutex<ModelAttributes>>,
    pub(super) company_attributes: Learned<Mutex<ModelAttributes>>,
    /// Attributes being created, by model and name: created once, however many people bring the name at once.
    /// `true` when Intercom refused the name.
    pub(super) creations: OncePerKey<(Model, String), bool>,
    /// The admins' ids; `None` when the token may not list them (the write's refusal is the check then).
    pub(super) admins: Learned<Option<HashSet<String>>>,
    /// Tag ids by lower-cased name (Intercom's tag names ignore case).
    pub(super) tags: Learned<Mutex<HashMap<String, TagId>>>,
    /// Tags being made, by lower-cased name.
    pub(super) new_tags: OncePerKey<String, TagId>,
}

impl Workspace {
    pub(super) fn attributes(&self, model: Model) -> &Learned<Mutex<ModelAttributes>> {
        match model {
            Model::Contact => &self.contact_attributes,
            Model::Company => &self.company_attributes,
        }
    }
}
