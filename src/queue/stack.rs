//! The deployed stack's events queue, read from the stack's outputs: `replay --stack` and `erase --stack`.
//!
//! One CloudFormation call, `DescribeStacks` (the Query protocol, API version 2010-05-15:
//! <https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStacks.html>), signed as
//! `crate::aws` signs (its endpoint: `AWS_ENDPOINT_URL_CLOUDFORMATION`, else the SDK's, else the region's).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};

/// The template's output that names the events queue.
pub const EVENTS_QUEUE_OUTPUT: &str = "EventsQueueUrl";

/// How long the one call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why the stack's events queue could not be found.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("no AWS region to find the stack in: set AWS_REGION (or the profile's region) to the stack's region")]
    NoRegion,
    #[error("no AWS credentials to read the stack with: {0}")]
    Credentials(String),
    #[error(
        "no stack named {stack} in {region}: CloudFormation answered \"{message}\" (is AWS_REGION the stack's region?)"
    )]
    NotFound { stack: String, region: String, message: String },
    #[error(
        "the stack {stack} in {region} has no {EVENTS_QUEUE_OUTPUT} output (its status: {status}; its outputs: {outputs}): \
         is it an intercom-relay stack, and is its deployment done?"
    )]
    NoOutput { stack: String, region: String, status: String, outputs: String },
    #[error("CloudFormation refused DescribeStacks for {stack} in {region}: HTTP {status} {code}: {message}{hint}")]
    Refused { stack: String, region: String, status: u16, code: String, message: String, hint: &'static str },
    #[error(
        "the stack {stack} is in {theirs}, and AWS_REGION is {ours}: set AWS_REGION={theirs}, where its queue is too"
    )]
    OtherRegion { stack: String, theirs: String, ours: String },
    #[error("cannot reach CloudFormation at {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("CloudFormation's answer from {endpoint} could not be read: {message}")]
    Malformed { endpoint: String, message: String },
}

/// What `DescribeStacks` says of the one stack it was asked for.
#[derive(Debug, PartialEq, Eq)]
struct Described {
    status: String,
    outputs: Vec<(String, String)>,
}

/// The `EventsQueueUrl` output of the stack named `stack` (or its ARN), with the credentials and region of `aws`.
pub async fn events_queue_url(aws: &aws_config::SdkConfig, stack: &str) -> Result<String, StackError> {
    let region = aws.region().map(|r| r.as_ref().to_owned()).ok_or(StackError::NoRegion)?;
    // A stack's ARN names its region (arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/ID); the queue is there too,
    // and the SQS client sends to AWS_REGION's endpoint.
    if let Some(theirs) = stack.strip_prefix("arn:").and_then(|arn| arn.split(':').nth(2))
        && !theirs.is_empty()
        && theirs != region
    {
        return Err(StackError::OtherRegion { stack: stack.to_owned(), theirs: theirs.to_owned(), ours: region });
    }
    let endpoint =
        crate::aws::endpoint(&|name| std::env::var(name).ok(), aws.endpoint_url(), "cloudformation", &region);
    let identity = crate::aws::identity(aws).await.map_err(StackError::Credentials)?;
    let request = signed_request(&identity, &region, &endpoint, stack, SystemTime::now())
        .map_err(|e| StackError::Credentials(format!("cannot sign the request: {e}")))?;
    let unreachable = |e: reqwest::Error| StackError::Unreachable {
        endpoint: endpoint.clone(),
        message: crate::aws::transport_message(&e),
    };
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(unreachable)?;
    let mut builder = client.post(&request.url).body(request.body);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(unreachable)?;
    let malformed = |message: String| StackError::Malformed { endpoint: endpoint.clone(), message };
    if !(200..300).contains(&status) {
        let (code, message) = parse_error(&text).unwrap_or_else(|| (String::new(), snippet(&text)));
        if code == "ValidationError" && message.contains("does not exist") {
            return Err(StackError::NotFound { stack: stack.to_owned(), region, message });
        }
        let hint = match (status, code.as_str()) {
            (403, "AccessDenied" | "AccessDeniedException") => {
                " (the credentials need cloudformation:DescribeStacks on the stack; or pass --queue-url)"
            }
            (403, _) => " (are the credentials valid, and the clock right?)",
            _ => "",
        };
        return Err(StackError::Refused { stack: stack.to_owned(), region, status, code, message, hint });
    }
    let described = parse_stacks(&text).map_err(malformed)?;
    match described.outputs.iter().find(|(key, _)| key == EVENTS_QUEUE_OUTPUT) {
        Some((_, url)) if !url.is_empty() => Ok(url.clone()),
        _ => {
            let keys: Vec<&str> = described.outputs.iter().map(|(key, _)| key.as_str()).collect();
            let outputs = if keys.is_empty() { "none".to_owned() } else { keys.join(", ") };
            Err(StackError::NoOutput { stack: stack.to_owned(), region, status: described.status, outputs })
        }
    }
}

/// A request, signed.
#[derive(Debug)]
struct Signed {
    url: String,
    /// Every header to send, the signature's among them.
    headers: Vec<(String, String)>,
    body: String,
}

/// `DescribeStacks` of `stack` at `endpoint`, signed for CloudFormation in `region` at `time`.
fn signed_request(
    identity: &Identity,
    region: &str,
    endpoint: &str,
    stack: &str,
    time: SystemTime,
) -> Result<Signed, String> {
    let body = format!(
        "Action=DescribeStacks&StackName={}&Version=2010-05-15",
        percent_encoding::utf8_percent_encode(stack, percent_encoding::NON_ALPHANUMERIC)
    );
    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let content_type = [("content-type", "application/x-www-form-urlencoded; charset=utf-8")];
    let headers = crate::aws::sign_post(identity, region, "cloudformation", &url, &content_type, &body, time)?;
    Ok(Signed { url, headers, body })
}

/// The status and outputs of the first stack of a `DescribeStacksResponse`.
fn parse_stacks(xml: &str) -> Result<Described, String> {
    let mut document = Document::new(xml);
    let mut root = document.root_element().map_err(|e| e.to_string())?;
    if !root.start_el().matches("DescribeStacksResponse") {
        return Err(format!("expected DescribeStacksResponse, found {}", root.start_el().local()));
    }
    while let Some(mut result) = root.next_tag() {
        if !result.start_el().matches("DescribeStacksResult") {
            continue;
        }
        while let Some(mut stacks) = result.next_tag() {
            if !stacks.start_el().matches("Stacks") {
                continue;
            }
            if let Some(mut member) = stacks.next_tag() {
                return parse_stack(&mut member);
            }
        }
    }
    Err("the answer lists no stack".into())
}

fn parse_stack(stack: &mut ScopedDecoder) -> Result<Described, String> {
    let mut described = Described { status: "unknown".into(), outputs: Vec::new() };
    while let Some(mut field) = stack.next_tag() {
        if field.start_el().matches("StackStatus") {
            described.status = text(&mut field)?.into_owned();
        } else if field.start_el().matches("Outputs") {
            while let Some(mut member) = field.next_tag() {
                let (mut key, mut value) = (String::new(), String::new());
                while let Some(mut part) = member.next_tag() {
                    if part.start_el().matches("OutputKey") {
                        key = text(&mut part)?.into_owned();
                    } else if part.start_el().matches("OutputValue") {
                        value = text(&mut part)?.into_owned();
                    }
                }
                described.outputs.push((key, value));
            }
        }
    }
    Ok(described)
}

/// The code and message of an `ErrorResponse`.
fn parse_error(xml: &str) -> Option<(String, String)> {
    let mut document = Document::new(xml);
    let mut root = document.root_element().ok()?;
    while let Some(mut error) = root.next_tag() {
        if !error.start_el().matches("Error") {
            continue;
        }
        let (mut code, mut message) = (String::new(), String::new());
        while let Some(mut part) = error.next_tag() {
            if part.start_el().matches("Code") {
                code = text(&mut part).ok()?.into_owned();
            } else if part.start_el().matches("Message") {
                message = text(&mut part).ok()?.into_owned();
            }
        }
        return Some((code, message));
    }
    None
}

fn text<'a>(element: &'a mut ScopedDecoder) -> Result<Cow<'a, str>, String> {
    try_data(element).map_err(|e| e.to_string())
}

/// The start of an answer that is not CloudFormation's XML, on one line.
fn snippet(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None if line.is_empty() => "(an empty answer)".into(),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_and_outputs_of_the_stack() {
        // DescribeStacks' answer as the API reference shows it, with an escaped value.
        let xml = r#"<DescribeStacksResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
          <DescribeStacksResult><Stacks><member>
            <StackName>relay</StackName>
            <StackId>arn:aws:cloudformation:eu-west-1:123456789012:stack/relay/abc</StackId>
            <Parameters><member><ParameterKey>Region</ParameterKey><ParameterValue>eu</ParameterValue></member></Parameters>
            <StackStatus>UPDATE_COMPLETE</StackStatus>
            <Outputs>
              <member><OutputKey>IngestUrl</OutputKey><OutputValue>https://x.lambda-url.eu-west-1.on.aws/</OutputValue></member>
              <member><Description>The events queue</Description><OutputKey>EventsQueueUrl</OutputKey>
                <OutputValue>https://sqs.eu-west-1.amazonaws.com/123456789012/relay-events.fifo?a=1&amp;b=2</OutputValue></member>
            </Outputs>
          </member></Stacks></DescribeStacksResult>
          <ResponseMetadata><RequestId>b9b4b068</RequestId></ResponseMetadata>
        </DescribeStacksResponse>"#;
        let described = parse_stacks(xml).unwrap();
        assert_eq!(described.status, "UPDATE_COMPLETE");
        assert_eq!(
            described.outputs,
            [
                ("IngestUrl".to_owned(), "https://x.lambda-url.eu-west-1.on.aws/".to_owned()),
                (
                    "EventsQueueUrl".to_owned(),
                    "https://sqs.eu-west-1.amazonaws.com/123456789012/relay-events.fifo?a=1&b=2".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_stack_without_outputs_and_an_answer_that_is_not_cloudformations() {
        let xml = "<DescribeStacksResponse><DescribeStacksResult><Stacks><member><StackStatus>CREATE_IN_PROGRESS\
                   </StackStatus></member></Stacks></DescribeStacksResult></DescribeStacksResponse>";
        assert_eq!(parse_stacks(xml).unwrap(), Described { status: "CREATE_IN_PROGRESS".into(), outputs: vec![] });
        assert!(parse_stacks("<html><body>proxy</body></html>").unwrap_err().contains("DescribeStacksResponse"));
        assert!(parse_stacks("not xml").is_err());
        let empty =
            "<DescribeStacksResponse><DescribeStacksResult><Stacks/></DescribeStacksResult></DescribeStacksResponse>";
        assert_eq!(parse_stacks(empty).unwrap_err(), "the answer lists no stack");
    }

    #[test]
    fn reads_an_error_response() {
        let xml = r#"<ErrorResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/"><Error><Type>Sender</Type>
            <Code>ValidationError</Code><Message>Stack with id nope does not exist</Message></Error>
            <RequestId>1</RequestId></ErrorResponse>"#;
        assert_eq!(parse_error(xml), Some(("ValidationError".into(), "Stack with id nope does not exist".into())));
        assert_eq!(parse_error("<html/>"), None);
        assert_eq!(snippet("  <html>\n  gateway\n timeout </html> "), "<html> gateway timeout </html>");
        assert_eq!(snippet(""), "(an empty answer)");
    }

    #[test]
    fn the_request_is_signed_as_botocore_signs_it() {
        // The reference: botocore 1.43's `SigV4Auth(credentials, "cloudformation", "eu-west-1").add_auth(request)` on
        // the same POST (URL, content-type, body), its clock at 2026-01-01T00:00:00Z; the AWS CLI signs with it.
        let (identity, time) = crate::aws::reference_signer();
        let endpoint = "https://cloudformation.eu-west-1.amazonaws.com";
        let signed = signed_request(&identity, "eu-west-1", endpoint, "intercom-relay", time).unwrap();
        assert_eq!(signed.url, "https://cloudformation.eu-west-1.amazonaws.com/");
        assert_eq!(signed.body, "Action=DescribeStacks&StackName=intercom%2Drelay&Version=2010-05-15");
        let header =
            |name: &str| signed.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        assert_eq!(header("content-type"), Some("application/x-www-form-urlencoded; charset=utf-8"));
        assert_eq!(header("x-amz-date"), Some("20260101T000000Z"));
        assert_eq!(header("x-amz-security-token"), Some("SESSIONTOKEN"));
        assert_eq!(
            header("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/eu-west-1/cloudformation/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
                 Signature=7610d096bcd1b29041c6cc71327fc225b17906f4012930d1bf25eaf24d23924d"
            )
        );
    }
}
