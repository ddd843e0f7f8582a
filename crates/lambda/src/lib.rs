//! intercom-relay's Lambda package: Segment's HTTP Tracking API in, Intercom REST API calls out, nothing lost in between.
//! What the two functions need and nothing else (no CLI, no sandbox): `sam build` compiles only this package.
//!
//! Pure modules ([`event`], [`envelope`]) know nothing of I/O; [`ingest`] handles HTTP generically over
//! [`queue::Enqueue`]; the binaries in `src/bin/` only wire clients to handlers.

pub mod aws;
pub mod config;
pub(crate) mod deadline;
pub mod envelope;
pub mod erasure;
pub mod event;
pub mod forward;
pub mod identity;
pub mod ingest;
pub mod intercom;
pub mod logging;
pub mod mapping;
pub mod queue;
pub mod retry;
pub mod settings;
pub mod suppression;

/// Bytes in lower-case hex: digests in ids, keys and checkpoints.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
