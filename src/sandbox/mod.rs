//! A stateful, local stand-in for Intercom's API that follows its documented behaviour (the contract in shared/intercom).

mod server;
mod state;

pub use server::{RecordedRequest, SandboxServer, serve_http};
pub use state::{
    Company, Contact, DataEvent, Faults, MAX_EVENT_NAMES, SandboxOptions, SandboxRequest, SandboxResponse, SandboxState,
};

#[cfg(test)]
mod tests;
