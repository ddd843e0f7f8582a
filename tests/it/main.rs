//! Integration tests: the real ingest handler, fed function-URL requests, against an in-memory queue and moto's SQS server.

mod backfill;
mod bad_inputs;
mod browser;
mod cargo_lambda;
mod cli;
mod contract;
mod docs;
mod events;
mod fault_proxy;
#[path = "../../benches/support/floor.rs"]
mod floor;
mod forward;
mod forward_batch;
mod helpers;
mod identities;
mod ingest;
mod intercom;
mod mapping;
mod mobile;
mod outage;
#[path = "../../benches/support/payloads.rs"]
mod payloads;
mod properties;
mod redrive;
mod remembered;
#[path = "../../benches/support/runtime_api.rs"]
mod runtime_api;
mod runtime_loop;
mod sdk_paths;
mod sdks;
mod settings;
mod soak;
mod sqs;
mod stack;
mod startup;
mod suppression;
mod tags_erasure;
mod template;
mod two_forwarders;
