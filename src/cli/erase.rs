//! `erase`: a person erased from Intercom, through the deployed events queue (in their FIFO lane) or here.

use std::process::ExitCode;

use clap::Args;
use intercom_relay::local::LocalError;
use intercom_relay_lambda::aws::Caller;
use intercom_relay_lambda::erasure::ErasureRequest;
use intercom_relay_lambda::queue::{ENQUEUE_RETRY, ENQUEUE_TIMEOUT, SqsQueue};
use tracing_subscriber::filter::LevelFilter;

use super::args::IntercomArgs;
use super::output::{env, out};
use super::queue::queue_of;

#[derive(Args)]
pub(crate) struct EraseArgs {
    /// The person's userId: the user whose external_id it is.
    #[arg(long, value_name = "USER_ID")]
    user_id: Option<String>,
    /// Their email: with no --user-id, every contact holding it (users and leads).
    #[arg(long, value_name = "EMAIL")]
    email: Option<String>,
    /// Also erase the leads holding the email (the user's own, with --user-id and no --email).
    #[arg(long)]
    leads: bool,
    /// The deployed events queue (the stack's EventsQueueUrl output).
    #[arg(long, value_name = "URL", conflicts_with_all = ["live", "intercom_url", "stack"])]
    queue_url: Option<String>,
    /// The deployed stack (its name or ARN, in AWS_REGION): its events queue is read from its EventsQueueUrl output,
    /// which takes cloudformation:DescribeStacks.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["live", "intercom_url"])]
    stack: Option<String>,
    #[command(flatten)]
    intercom: IntercomArgs,
}

pub(crate) async fn run(args: EraseArgs) -> Result<ExitCode, LocalError> {
    intercom_relay_lambda::logging::init_local(LevelFilter::WARN);
    let request = ErasureRequest::new(args.user_id, args.email, args.leads)
        .map_err(|e| LocalError::Usage(format!("erase: {e}")))?;
    match queue_of(args.queue_url, args.stack.as_deref()).await? {
        Some(url) => queue(&request, &url).await,
        None => here(&request, &args.intercom).await,
    }
}

/// The request in the person's lane of the events queue, for the deployed forwarder.
async fn queue(request: &ErasureRequest, url: &str) -> Result<ExitCode, LocalError> {
    let aws = intercom_relay_lambda::aws::load(Caller::Cli).await;
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), url, ENQUEUE_RETRY, ENQUEUE_TIMEOUT);
    queue.send_erasure(request).await.map_err(|e| LocalError::Io(e.to_string()))?;
    out(&format!(
        "queued erasure {} in the person's lane of {url}: it runs after the events already queued for them; the \
         forward function's log line `Erased.` with this request_id says what was done.\n",
        request.request_id
    ));
    Ok(ExitCode::SUCCESS)
}

/// The erasure carried out in this process, its outcome printed.
async fn here(request: &ErasureRequest, intercom: &IntercomArgs) -> Result<ExitCode, LocalError> {
    let (report, local) = intercom_relay::local::erase_here(request, &intercom.destination(), env).await?;
    for erased in &report.erased {
        let contacts = erased.reason["contacts"].as_array().map_or(0, Vec::len);
        let notes: Vec<&str> =
            erased.reason["notes"].as_array().into_iter().flatten().filter_map(|n| n.as_str()).collect();
        let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
        out(&format!("erased {contacts} contacts in {}{notes}: {}\n", local.destination, erased.reason["contacts"]));
    }
    if let Some(failed) = report.dead_lettered.first() {
        out(&format!("not erased: {}\n", failed.reason));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
