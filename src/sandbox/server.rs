//! The sandbox over HTTP on 127.0.0.1, so the real client code is exercised; `/_sandbox/state` and `/_sandbox/requests`
//! show what it holds and what it was asked.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::attributes::SeedAttribute;
use super::state::{Faults, Outage, SandboxOptions, SandboxRequest, SandboxState};

/// One call the sandbox answered.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Option<Value>,
    /// When it was answered, in Unix milliseconds (for rate-limit figures; not shown over HTTP).
    #[serde(skip)]
    pub at_ms: u64,
    /// Whether it changed what the sandbox holds (a write of values it held already did not; not shown over HTTP).
    #[serde(skip)]
    pub changed: bool,
}

impl RecordedRequest {
    /// A read: a `GET`, or a search (a `POST` that changes nothing by design).
    pub fn is_read(&self) -> bool {
        self.method == "GET" || (self.method == "POST" && self.path.starts_with("/contacts/search"))
    }
}

/// Calls that changed nothing the sandbox holds, for reports ("N calls changed nothing").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnchangedCalls {
    /// Writes that changed nothing: refused or failed ones, and those whose values equal what was held.
    pub writes: usize,
    /// Reads (which never change anything).
    pub reads: usize,
}

impl UnchangedCalls {
    pub fn total(&self) -> usize {
        self.writes + self.reads
    }
}

struct Shared {
    options: SandboxOptions,
    state: SandboxState,
    requests: Vec<RecordedRequest>,
}

/// A running sandbox; it stops when dropped.
pub struct SandboxServer {
    /// Where it listens, e.g. `http://127.0.0.1:4010`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SandboxServer {
    /// Serves on 127.0.0.1:`port` (0: any free port).
    pub async fn start(options: SandboxOptions, port: u16) -> std::io::Result<SandboxServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = SandboxState::new(&options);
        let shared = Arc::new(Mutex::new(Shared { options, state, requests: Vec::new() }));
        let serving = shared.clone();
        let task = serve_http(listener, move |request| answer(serving.clone(), request));
        Ok(SandboxServer { url, shared, task })
    }

    /// The token it accepts.
    pub fn token(&self) -> String {
        lock(&self.shared).options.token.clone()
    }

    /// Changes the failures it injects from now on.
    pub fn set_faults(&self, faults: Faults) {
        let mut shared = lock(&self.shared);
        shared.options.faults = faults;
        shared.state.reseed();
    }

    /// Starts (`Some`) or ends (`None`) a workspace-wide outage; the other faults carry on, not reseeded.
    pub fn set_outage(&self, outage: Option<Outage>) {
        lock(&self.shared).options.faults.outage = outage;
    }

    /// A copy of what it holds.
    pub fn state(&self) -> SandboxState {
        lock(&self.shared).state.clone()
    }

    /// Every call it answered, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared).requests.clone()
    }

    /// The calls so far that changed nothing it holds.
    pub fn unchanged_calls(&self) -> UnchangedCalls {
        let shared = lock(&self.shared);
        let count = |f: &dyn Fn(&RecordedRequest) -> bool| shared.requests.iter().filter(|r| f(r)).count();
        UnchangedCalls { writes: count(&|r| !r.is_read() && !r.changed), reads: count(&|r| r.is_read()) }
    }

    /// Adds a custom data attribute as it stands (an archived one, a list one), without the checks a create makes.
    pub fn seed_attribute(&self, seed: &SeedAttribute) {
        lock(&self.shared).state.seed_attribute(seed);
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panicked handler poisons the lock but the state is still the best account of what happened: keep serving it.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves HTTP/1 on `listener`, each request answered by `answer`, until the task is aborted. Also the loop of the
/// benches' local Lambda Runtime API.
pub fn serve_http<F, A>(listener: TcpListener, answer: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> A + Clone + Send + Sync + 'static,
    A: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                // A client that hangs up mid-request (or a binary killed mid-poll) is its own problem.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .await;
            });
        }
    })
}

async fn answer(shared: Arc<Mutex<Shared>>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = {
        let mut shared = lock(&shared);
        match path.as_str() {
            "/_sandbox/state" => return Ok(json_response(200, &[], Some(json!(shared.state)))),
            "/_sandbox/requests" => return Ok(json_response(200, &[], Some(json!(shared.requests)))),
            _ => {}
        }
        let parsed = if bytes.is_empty() { Ok(None) } else { serde_json::from_slice::<Value>(&bytes).map(Some) };
        let malformed = parsed.is_err();
        let body = parsed.unwrap_or_default();
        let request = SandboxRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            authorization: header("authorization"),
            version: header("intercom-version"),
            body: body.clone(),
            malformed,
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let Shared { options, state, requests } = &mut *shared;
        let changes = state.changes;
        let response = state.handle(options, &request, now.as_secs());
        let (at_ms, changed) = (now.as_millis() as u64, state.changes != changes);
        requests.push(RecordedRequest { method: request.method, path, status: response.status, body, at_ms, changed });
        response
    };
    if !response.delay.is_zero() {
        tokio::time::sleep(response.delay).await;
    }
    Ok(json_response(response.status, &response.headers, response.body))
}

fn json_response(status: u16, headers: &[(&'static str, String)], body: Option<Value>) -> Response<Full<Bytes>> {
    let mut builder =
        Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let bytes = match body {
        Some(body) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    builder.body(Full::new(bytes)).expect("valid headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sandbox_answers_over_http_and_shows_what_it_holds() {
        let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
        let client = reqwest::Client::new();
        let created = client
            .post(format!("{}/contacts", sandbox.url))
            .bearer_auth(sandbox.token())
            .header("Intercom-Version", "2.16")
            .json(&json!({"role": "user", "external_id": "u-1", "email": "a@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 200);
        assert!(created.headers().contains_key("x-ratelimit-remaining"));
        let refused = client.post(format!("{}/contacts", sandbox.url)).body("{").send().await.unwrap();
        assert_eq!(refused.status(), 401, "authentication comes first");
        let refused = client.post(format!("{}/contacts", sandbox.url)).bearer_auth(sandbox.token()).body("{");
        assert_eq!(refused.send().await.unwrap().status(), 400);
        let state: Value =
            client.get(format!("{}/_sandbox/state", sandbox.url)).send().await.unwrap().json().await.unwrap();
        let contacts: Vec<&Value> = state["contacts"].as_object().unwrap().values().collect();
        assert_eq!((contacts.len(), &contacts[0]["external_id"]), (1, &json!("u-1")));
        let requests = sandbox.requests();
        assert_eq!(requests.len(), 3, "only API calls are recorded");
        assert_eq!(
            (requests[0].method.as_str(), requests[0].path.as_str(), requests[0].status),
            ("POST", "/contacts", 200)
        );
    }
}
