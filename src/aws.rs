//! Signed calls to AWS services the SDK's SQS client does not cover (CloudFormation's `DescribeStacks` for `--stack`,
//! DynamoDB for the suppression list), with the SDK's own SigV4 signer and the credentials and region the AWS CLI would
//! use. A generated client per service would cost every build minutes for one or three operations; the signer, the
//! credential chain and the XML reader are those the SQS client already brings.
//!
//! A service's endpoint is `AWS_ENDPOINT_URL_<SERVICE>`, else the SDK's global one (`AWS_ENDPOINT_URL`, a profile's
//! `endpoint_url`), unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`, else its regional endpoint.

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// The identity to sign with: the credentials `aws`'s chain provides now (callers cache it until near expiry).
pub(crate) async fn identity(aws: &aws_config::SdkConfig) -> Result<Identity, String> {
    let provider = aws.credentials_provider().ok_or_else(|| "no credential provider is configured".to_owned())?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string().replace('\n', " "))?;
    Ok(Identity::from(credentials))
}

/// The endpoint of `service` (its endpoint id, `cloudformation`, `dynamodb`) in `region`, unless the environment or
/// the SDK's configuration (`global`) names another.
pub(crate) fn endpoint(
    env: &dyn Fn(&str) -> Option<String>,
    global: Option<&str>,
    service: &str,
    region: &str,
) -> String {
    let ignore = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let variable = format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase());
    let own = env(&variable).filter(|value| !value.trim().is_empty());
    if !ignore && let Some(url) = own.or_else(|| global.map(str::to_owned)) {
        return url;
    }
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("https://{service}.{region}.{suffix}")
}

/// The headers of a POST of `body` to `url` with `headers`, signed for `service` in `region` at `time`: `headers`
/// and the signature's (`x-amz-date`, `authorization`, `x-amz-security-token` with temporary credentials).
pub(crate) fn sign_post(
    identity: &Identity,
    region: &str,
    service: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new("POST", url, headers.iter().copied(), SignableBody::Bytes(body.as_bytes()))
        .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
    let mut signed: Vec<(String, String)> = headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
    signed.extend(instructions.headers().map(|(name, value)| (name.to_owned(), value.to_owned())));
    Ok(signed)
}

/// The message of a reqwest error with its cause (reqwest's own says only "error sending request").
pub(crate) fn transport_message(e: &reqwest::Error) -> String {
    std::error::Error::source(e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}"))
}

/// The credentials and clock the signing tests sign with, those of botocore's reference signatures: AWS's example
/// key with a session token, at 2026-01-01T00:00:00Z.
#[cfg(test)]
pub(crate) fn reference_signer() -> (Identity, SystemTime) {
    let credentials = aws_credential_types::Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        Some("SESSIONTOKEN".into()),
        None,
        "test",
    );
    (Identity::from(credentials), SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamodb_call_is_signed_as_botocore_signs_it() {
        // The reference: botocore 1.43's `SigV4Auth(credentials, "dynamodb", "eu-west-1").add_auth(request)` on the
        // same POST (URL, content-type, x-amz-target, body), its clock at 2026-01-01T00:00:00Z.
        let (identity, time) = reference_signer();
        let headers =
            [("content-type", "application/x-amz-json-1.0"), ("x-amz-target", "DynamoDB_20120810.BatchGetItem")];
        let body = r#"{"RequestItems":{"t":{"Keys":[{"key":{"S":"k"}}]}}}"#;
        let url = "https://dynamodb.eu-west-1.amazonaws.com/";
        let signed = sign_post(&identity, "eu-west-1", "dynamodb", url, &headers, body, time).unwrap();
        let header = |name: &str| signed.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        assert_eq!(header("x-amz-target"), Some("DynamoDB_20120810.BatchGetItem"));
        assert_eq!(header("x-amz-date"), Some("20260101T000000Z"));
        assert_eq!(
            header("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/eu-west-1/dynamodb/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, \
                 Signature=716676387c5b14726d7d976fa15d061df1fa5e2c034752ec56cabfbe021a91ff"
            )
        );
    }

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
