//! The AWS edge, other than SQS's queues (`crate::queue`): the one SDK configuration every AWS client is built from
//! ([`config`]: timeouts, retries, one HTTPS client), the DynamoDB client ([`dynamo`]) and the suppression list kept in
//! it ([`suppression`]).
//!
//! The rule: AWS's meaning lives only here. What an AWS error code, an attribute value or a stack output means is read
//! in this folder and handed on in the project's own terms (a [`crate::suppression::SuppressionError`] that says
//! whether trying again may help, a queue URL); the rest of the crate holds traits and plain values, never an SDK type
//! it would have to interpret.
//!
//! Every client takes its endpoint as the SDK resolves it: `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL` (or a
//! profile's `endpoint_url`), unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`, else the region's.

pub(crate) mod config;
pub(crate) mod dynamo;
pub(crate) mod identity;

pub(crate) mod suppression;

pub use config::{Caller, load};
pub use identity::DynamoIdentities;
pub use suppression::DynamoSuppression;

/// The endpoint of `service` (its endpoint id, `cloudformation`, `dynamodb`) in `region` as the SDK picks it, unless
/// the environment or the SDK's configuration (`global`) names another: for messages that say where a call went.
pub fn endpoint(env: &dyn Fn(&str) -> Option<String>, global: Option<&str>, service: &str, region: &str) -> String {
    let ignore = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let variable = format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase());
    let own = env(&variable).filter(|value| !value.trim().is_empty());
    if !ignore && let Some(url) = own.or_else(|| global.map(str::to_owned)) {
        return url;
    }
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("https://{service}.{region}.{suffix}")
}

/// An SDK error on one line, with its causes (the SDK's own display says only "dispatch failure" or "service error").
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(error).to_string().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_environments_or_the_regions() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        let cfn = "cloudformation";
        assert_eq!(endpoint(&env(&[]), None, cfn, "eu-west-1"), "https://cloudformation.eu-west-1.amazonaws.com");
        assert_eq!(endpoint(&env(&[]), None, cfn, "cn-north-1"), "https://cloudformation.cn-north-1.amazonaws.com.cn");
        assert_eq!(
            endpoint(&env(&[]), None, "dynamodb", "ap-southeast-2"),
            "https://dynamodb.ap-southeast-2.amazonaws.com"
        );
        assert_eq!(endpoint(&env(&[]), Some("http://127.0.0.1:5000"), cfn, "us-east-1"), "http://127.0.0.1:5000");
        let own = env(&[("AWS_ENDPOINT_URL_CLOUDFORMATION", "http://b"), ("AWS_ENDPOINT_URL_DYNAMODB", "http://d")]);
        assert_eq!(endpoint(&own, Some("http://a"), cfn, "us-east-1"), "http://b");
        assert_eq!(endpoint(&own, Some("http://a"), "dynamodb", "us-east-1"), "http://d");
        let ignored =
            env(&[("AWS_ENDPOINT_URL_CLOUDFORMATION", "http://b"), ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")]);
        assert_eq!(
            endpoint(&ignored, None, cfn, "ap-southeast-2"),
            "https://cloudformation.ap-southeast-2.amazonaws.com"
        );
    }
}
