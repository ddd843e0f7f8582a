//! intercom-relay's tooling: the local pipeline (`replay`, `serve`, backfill), the Intercom sandbox and the CLI's AWS
//! lookups. The Lambda functions live in `crates/lambda` (the `intercom_relay_lambda` library), which never depends on
//! this package.

pub mod aws;
pub mod local;
pub mod sandbox;
