//! `intercom-relay serve`: the ingest API over HTTP on this machine, the forwarder draining the queue behind it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, warn};

use super::{Destination, Local, LocalDeadLetter, LocalError, RejectedInput, Tally};
use intercom_relay_lambda::ingest::{AllowedOrigins, CorsHeaders, Ingest, IngestError, IngestOptions, WriteKeys};
use intercom_relay_lambda::queue::{
    ENQUEUE_RETRY, ENQUEUE_TIMEOUT, Enqueue, EnqueueError, MemoryDeadLetter, MemoryQueue, QueuedMessage, SqsDeadLetter,
    SqsPoller, SqsQueue,
};

/// The most a request body may hold: what a Lambda function URL takes.
const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

/// How long open connections get to finish their requests once the server stops.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(10);

/// Where and how to serve.
pub struct ServeOptions {
    pub host: String,
    /// 0: any free port.
    pub port: u16,
    pub destination: Destination,
    pub write_keys: WriteKeys,
    pub allowed_origins: AllowedOrigins,
    /// An SQS queue between ingest and the forwarder instead of the in-memory one.
    pub queue_url: Option<String>,
    /// With `queue_url`: where dead letters go (else they are kept in memory and listed at the end).
    pub dlq_url: Option<String>,
}

/// The queue between the two halves, counting what it takes.
struct Queue {
    kind: QueueKind,
    tally: Arc<Tally>,
}

enum QueueKind {
    Memory(MemoryQueue),
    Sqs {
        queue: SqsQueue,
        poller: SqsPoller,
        /// The queue's visibility timeout: how long a received batch is ours.
        visibility: Duration,
    },
}

impl Enqueue for Queue {
    async fn enqueue(&self, messages: Vec<QueuedMessage>) -> Result<(), EnqueueError> {
        let count = messages.len();
        match &self.kind {
            QueueKind::Memory(queue) => queue.enqueue(messages).await?,
            QueueKind::Sqs { queue, .. } => queue.enqueue(messages).await?,
        }
        self.tally.accepted(count);
        Ok(())
    }
}

/// A bound server, not yet serving.
pub struct Server {
    /// Where it listens, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    listener: TcpListener,
    ingest: Arc<Ingest<Queue>>,
    local: Arc<Local>,
}

/// Binds `options.host:port` and starts the forwarding half (the sandbox by default).
pub async fn serve(
    options: ServeOptions,
    env: impl Fn(&str) -> Option<String>,
    tally: Arc<Tally>,
) -> Result<Server, LocalError> {
    let listener = TcpListener::bind((options.host.as_str(), options.port))
        .await
        .map_err(|e| LocalError::Io(format!("cannot listen on {}:{}: {e}", options.host, options.port)))?;
    let address = listener.local_addr().map_err(|e| LocalError::Io(e.to_string()))?;
    let (queue, dead_letter) = match &options.queue_url {
        None => (QueueKind::Memory(MemoryQueue::new()), LocalDeadLetter::Memory(MemoryDeadLetter::new())),
        Some(url) => {
            let aws = intercom_relay_lambda::aws::load(intercom_relay_lambda::aws::Caller::Cli).await;
            let client = aws_sdk_sqs::Client::new(&aws);
            let dead_letter = match &options.dlq_url {
                Some(dlq) => LocalDeadLetter::Sqs(SqsDeadLetter::new(client.clone(), dlq)),
                None => LocalDeadLetter::Memory(MemoryDeadLetter::new()),
            };
            let facts = crate::aws::queue::probe(&client, url).await.map_err(|e| LocalError::Io(e.to_string()))?;
            let visibility = facts.visibility_timeout;
            let queue = SqsQueue::new(client.clone(), url, ENQUEUE_RETRY, ENQUEUE_TIMEOUT);
            let poller = SqsPoller::new(client, url, Duration::from_secs(1));
            (QueueKind::Sqs { queue, poller, visibility }, dead_letter)
        }
    };
    let queue = Queue { kind: queue, tally: tally.clone() };
    let local = Local::start(&options.destination, env, tally, dead_letter).await?;
    let ingest_options = IngestOptions {
        write_keys: options.write_keys,
        allowed_origins: options.allowed_origins,
        cors_headers: CorsHeaders::Ours,
    };
    let ingest = Ingest::new(ingest_options, queue);
    Ok(Server { url: format!("http://{address}"), listener, ingest: Arc::new(ingest), local: Arc::new(local) })
}

impl Server {
    /// The forwarding half: its sandbox, destination and tally.
    pub fn local(&self) -> &Arc<Local> {
        &self.local
    }

    /// Serves until `shutdown` completes; then stops accepting, lets open requests finish, forwards what the queue
    /// holds (the in-memory one; SQS keeps its messages for next time) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, ingest, local, .. } = self;
        let closing = Arc::new(AtomicBool::new(false));
        let forwarding = tokio::spawn(forward(ingest.clone(), local.clone(), closing.clone()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            warn!(error = %e, "A connection could not be accepted.");
                            continue;
                        }
                    };
                    connections.spawn(connection(stream, ingest.clone(), stopped.clone()));
                }
            }
        }
        drop(listener);
        let _ = stop.send(true);
        let all_closed = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(CONNECTIONS_GRACE, all_closed).await.is_err() {
            warn!("Connections still open after the grace period were closed.");
            // Aborted and awaited before the queue is drained, so no request can still be enqueueing behind it.
            connections.shutdown().await;
        }
        closing.store(true, Ordering::Release);
        if let Err(e) = forwarding.await {
            error!(error = %e, "The forwarder stopped abnormally.");
        }
    }
}

async fn forward(ingest: Arc<Ingest<Queue>>, local: Arc<Local>, closing: Arc<AtomicBool>) {
    match &ingest.queue().kind {
        QueueKind::Memory(queue) => local.drain(queue, &closing).await,
        QueueKind::Sqs { poller, visibility, .. } => {
            while !closing.load(Ordering::Acquire) {
                let received = Instant::now();
                let event = match poller.receive(10).await {
                    Ok(event) if event.records.is_empty() => continue,
                    Ok(event) => event,
                    Err(problem) if problem.is_retryable() => {
                        warn!(%problem, "Receiving from SQS failed; trying again in a second.");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(problem) => {
                        // The same request fails the same way (a queue gone, a permission missing): say so loudly,
                        // and keep trying more slowly, so that a fix made meanwhile is picked up.
                        error!(%problem, "SQS refuses to hand out messages; check QUEUE_URL and the credentials' permissions.");
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        continue;
                    }
                };
                // Done within the visibility timeout, as a Lambda's timeout is shorter than it: a receipt handle used
                // after it would not delete, and the queue would hand the person's events to someone else meanwhile.
                let report = local.forward_until(&event, received + *visibility).await;
                if let Err(problem) = poller.acknowledge(&event, &report.handed_back()).await {
                    // Not deleted: SQS hands them out again after the visibility timeout.
                    warn!(%problem, "Deleting forwarded messages failed; they will come again.");
                }
            }
        }
    }
}

/// One HTTP/1 connection; once `stopped` turns true it finishes the request in hand and closes.
async fn connection(
    stream: tokio::net::TcpStream,
    ingest: Arc<Ingest<Queue>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request| answer(ingest.clone(), request));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stop = async move {
        // The guard wait_for returns is not Send: drop it before the next await.
        let _ = stopped.wait_for(|stopped| *stopped).await.map(drop);
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The ingest API's own answer to a hyper request, with the body read as a function URL would hand it over.
async fn answer(
    ingest: Arc<Ingest<Queue>>,
    request: http::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let error = IngestError::PayloadTooLarge { limit: MAX_REQUEST_BYTES }.to_json();
            let body = serde_json::json!({"success": false, "error": error});
            let mut response = Response::builder()
                .status(StatusCode::PAYLOAD_TOO_LARGE)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("static headers are valid");
            ingest.add_cors_headers(&parts.headers, response.headers_mut());
            return Ok(response);
        }
    };
    let body = if bytes.is_empty() { lambda_http::Body::Empty } else { lambda_http::Body::Binary(bytes.to_vec()) };
    let source = format!("{} {}", parts.method, intercom_relay_lambda::ingest::loggable_path(parts.uri.path()));
    let response = ingest.handle(http::Request::from_parts(parts, body)).await;
    let (parts, body) = response.into_parts();
    for refused in RejectedInput::from_answer(&source, parts.status.as_u16(), body.as_ref()) {
        ingest.queue().tally.rejected(refused);
    }
    Ok(Response::from_parts(parts, Full::new(Bytes::copy_from_slice(body.as_ref()))))
}
