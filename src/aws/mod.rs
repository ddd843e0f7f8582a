//! The tooling's AWS edge: CloudFormation's `DescribeStacks` for `--stack` ([`stack`]) and the look taken at an SQS
//! queue before using it ([`queue`]). The functions' AWS edge is `intercom_relay_lambda::aws`; the SDK configuration
//! both build their clients from lives there.

pub mod queue;
pub mod stack;
