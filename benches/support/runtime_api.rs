//! A stand-in for Lambda's Runtime API on 127.0.0.1: it hands a Lambda binary the events it is given, one per
//! `GET /2018-06-01/runtime/invocation/next`, and keeps what the binary answered and when, so the benches can time
//! start-up and invocations and the tests can run the real binaries under the real `lambda_runtime` loop.

// Each user (the figures bench, the integration tests) uses part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use intercom_relay::sandbox::serve_http;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

const PREFIX: &str = "/2018-06-01";

/// The path of one of the Lambda binaries (`ingest`, `forward`), built first. They belong to the workspace's
/// `intercom-relay-lambda` package, and Cargo names only a package's own binaries to its tests and benches
/// (`CARGO_BIN_EXE_*`), so they are built here once per process, with the profile (`target/<profile>`) and target
/// directory this executable was built in: a no-op when they are fresh.
pub(crate) fn lambda_binary(name: &str) -> String {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("the running executable's path");
        // target/<profile>/deps/<this executable>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_owned();
        build_lambda_binaries(&profile_dir);
        profile_dir
    });
    dir.join(name).display().to_string()
}

fn build_lambda_binaries(profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("target/<profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", "intercom-relay-lambda", "--bins", "--target-dir"]).arg(target_dir);
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "building the Lambda binaries failed: {command:?}");
}

/// What a binary said of one invocation.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub request_id: String,
    /// `response`, or `error` when the handler failed.
    pub kind: String,
    pub body: Value,
    /// From the moment the event was handed out to the moment the answer arrived.
    pub took: Duration,
    /// When the answer arrived.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    pending: VecDeque<(String, Bytes)>,
    /// Request ids handed out and when.
    handed: Vec<(String, Instant)>,
    first_poll: Option<Instant>,
    polls: usize,
    answers: Vec<Answer>,
    init_error: Option<Value>,
    next_id: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken when an event is queued (for a waiting poll) or anything is recorded (for a waiting caller).
    queued: Notify,
    recorded: Notify,
}

/// A running Runtime API; it stops when dropped.
pub(crate) struct RuntimeApi {
    /// `127.0.0.1:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RuntimeApi {
    /// Serves on a free port of 127.0.0.1.
    pub(crate) async fn start() -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        let task = serve_http(listener, move |request| answer(serving.clone(), request));
        Ok(RuntimeApi { address, shared, task })
    }

    /// The variables Lambda sets for a function of 128 MB, pointing it at this Runtime API.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.address.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", "bench".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench".into()),
            // What template.yaml's LoggingConfig (JSON, the LogLevel parameter's default) makes Lambda set.
            ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Queues `payload` for the next poll; its request id.
    pub(crate) fn invoke(&self, payload: &Value) -> String {
        let id = {
            let mut state = self.lock();
            state.next_id += 1;
            let id = format!("req-{:06}", state.next_id);
            state.pending.push_back((id.clone(), Bytes::from(payload.to_string())));
            id
        };
        self.shared.queued.notify_one();
        id
    }

    /// When the first poll came, waiting up to `timeout` for it.
    pub(crate) async fn first_poll(&self, timeout: Duration) -> Option<Instant> {
        self.wait(timeout, |state| state.first_poll).await
    }

    /// The answer to `request_id`, waiting up to `timeout` for it.
    pub(crate) async fn answer_to(&self, request_id: &str, timeout: Duration) -> Option<Answer> {
        self.wait(timeout, |state| state.answers.iter().find(|a| a.request_id == request_id).cloned()).await
    }

    /// What the binary reported through `/runtime/init/error`, if it did.
    pub(crate) fn init_error(&self) -> Option<Value> {
        self.lock().init_error.clone()
    }

    /// How many polls came.
    pub(crate) fn polls(&self) -> usize {
        self.lock().polls
    }

    async fn wait<T>(&self, timeout: Duration, mut found: impl FnMut(&State) -> Option<T>) -> Option<T> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let recorded = self.shared.recorded.notified();
            if let Some(value) = found(&self.lock()) {
                return Some(value);
            }
            if tokio::time::timeout_at(until, recorded).await.is_err() {
                return found(&self.lock());
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn answer(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default().to_owned();
    if parts.method == hyper::Method::GET && path == "/runtime/invocation/next" {
        {
            let mut state = lock(&shared);
            state.polls += 1;
            state.first_poll.get_or_insert(arrived);
        }
        shared.recorded.notify_waiters();
        return Ok(next(&shared).await);
    }
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let status = match (parts.method.as_str(), segments.as_slice()) {
        ("POST", ["runtime", "invocation", id, kind @ ("response" | "error")]) => {
            let mut state = lock(&shared);
            let handed = state.handed.iter().find(|(handed, _)| handed == id).map(|(_, at)| *at);
            match handed {
                Some(handed) => {
                    let (request_id, kind, at) = ((*id).to_owned(), (*kind).to_owned(), Instant::now());
                    let answer = Answer { request_id, kind, body, took: at - handed, at };
                    state.answers.push(answer);
                    202
                }
                None => 404,
            }
        }
        ("POST", ["runtime", "init", "error"]) => {
            lock(&shared).init_error = Some(body);
            202
        }
        _ => 404,
    };
    shared.recorded.notify_waiters();
    Ok(Response::builder().status(status).body(Full::new(Bytes::from_static(b"{}"))).expect("a valid response"))
}

/// The next queued event, waiting (as Lambda's long poll does) until there is one.
async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    loop {
        let queued = shared.queued.notified();
        if let Some((id, payload)) = {
            let mut state = lock(shared);
            let next = state.pending.pop_front();
            if let Some((id, _)) = &next {
                state.handed.push((id.clone(), Instant::now()));
            }
            next
        } {
            let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(60);
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("lambda-runtime-aws-request-id", id)
                .header("lambda-runtime-deadline-ms", deadline.as_millis().to_string())
                .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
                .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0")
                .body(Full::new(payload))
                .expect("a valid response");
        }
        queued.await;
    }
}

/// A Lambda binary started against a [`RuntimeApi`]; killed when dropped.
pub(crate) struct Running {
    pub child: std::process::Child,
    /// Just before the process was spawned.
    pub started: Instant,
    /// Where its stdout and stderr go (both, as Lambda sends both to CloudWatch Logs); removed when dropped.
    pub log: std::path::PathBuf,
}

impl Running {
    /// Starts `binary` with only `env` set (as Lambda does), its output written to [`Running::log`].
    pub(crate) fn spawn<'a>(
        binary: &str,
        env: impl IntoIterator<Item = (&'a str, String)>,
    ) -> std::io::Result<Running> {
        use std::process::{Command, Stdio};
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("runtime-api-{}-{n}.log", std::process::id()));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(binary);
        command.env_clear().envs(env).stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
        let started = Instant::now();
        Ok(Running { child: command.spawn()?, started, log })
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// What the process has written so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
