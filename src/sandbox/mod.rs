//! A stateful, local stand-in for Intercom's API that follows its documented behaviour (each rule: RULES.md).

mod attributes;
mod companies;
mod contacts;
mod events;
mod server;
mod state;
mod tags;

pub use attributes::{HeldAttribute, SeedAttribute};
#[cfg(test)]
pub(crate) use contacts::LEAD_EXTERNAL_ID;
pub use events::MAX_EVENT_NAMES;
pub use intercom_relay_lambda::intercom::MAX_CUSTOM_ATTRIBUTES;
pub use server::{RecordedRequest, SandboxServer, UnchangedCalls, serve_http};
pub use state::{
    Company, Contact, DataEvent, DeletedContact, Faults, Outage, SandboxOptions, SandboxRequest, SandboxResponse,
    SandboxState, Tag,
};

#[cfg(test)]
mod tests;
