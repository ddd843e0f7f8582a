//! The forwarder: a plan's operations carried out against Intercom with as few calls as the facts allow.
//! (The SQS batch driver and the DLQ come next; see the README's status.)

mod execute;

pub use execute::{Delivery, Executor};
