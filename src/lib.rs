//! intercom-relay: Segment's HTTP Tracking API in, Intercom REST API calls out.
pub mod event;
pub mod envelope;
