//! A fault-injecting proxy in front of moto: SendMessageBatch entries it is told to fail (those of some calls, or a
//! seeded share of all) never reach moto and come back as `Failed` (as SQS reports a partial failure); everything else
//! passes through untouched, SendMessageBatch calls held back by a delay when asked.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to SendMessageBatch calls, and what it saw.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// How many SendMessageBatch calls get entries failed (from the first on that holds such entries).
    pub failing_calls: usize,
    /// The message group whose entries fail (as when SQS throttles one group); `None`: every entry fails.
    pub group: Option<String>,
    /// Only the first of those entries in a failing call fails, and the call's later ones of the group land: what SQS
    /// would do if it refused one entry on its own (its documentation does not say it cannot).
    pub first_only: bool,
    /// A share (0.0 to 1.0) of every call's entries that fail, drawn from `seed`, besides the `failing_calls`.
    pub share: f64,
    pub seed: u64,
    /// How long each SendMessageBatch call is held before it goes on (a slow network).
    pub delay: std::time::Duration,
    /// Made from `seed` at the first call.
    pub rng: Option<fastrand::Rng>,
    pub batch_calls: usize,
    pub failed_entries: usize,
}

pub(crate) struct FaultProxy {
    pub url: String,
    pub faults: Arc<Mutex<Faults>>,
}

impl FaultProxy {
    /// Starts the proxy on 127.0.0.1 in front of `upstream`.
    pub(crate) async fn start(upstream: String, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(Mutex::new(faults));
        let shared = faults.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, client.clone(), upstream.clone(), shared.clone()));
            }
        });
        FaultProxy { url, faults }
    }
}

async fn serve(stream: TcpStream, client: reqwest::Client, upstream: String, faults: Arc<Mutex<Faults>>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let headers: Vec<(String, String)> = head[1..]
            .iter()
            .filter_map(|h| h.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
            .collect();
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.expect("request body");

        let mut dropped = Vec::new();
        let mut nothing_left = false;
        if header("x-amz-target") == Some("AmazonSQS.SendMessageBatch") {
            let delay = faults.lock().unwrap().delay;
            tokio::time::sleep(delay).await;
            let mut faults = faults.lock().unwrap();
            faults.batch_calls += 1;
            let mut request: Value = serde_json::from_slice(&body).expect("a JSON request");
            let entries = request["Entries"].as_array().cloned().unwrap_or_default();
            let (mut failed, mut kept): (Vec<Value>, Vec<Value>) = (Vec::new(), entries);
            let group = faults.group.clone();
            let in_group = |e: &Value| group.as_ref().is_none_or(|group| e["MessageGroupId"] == group.as_str());
            if faults.failing_calls > 0 && kept.iter().any(in_group) {
                faults.failing_calls -= 1;
                (failed, kept) = kept.into_iter().partition(in_group);
                if faults.first_only {
                    kept.extend(failed.drain(1..));
                }
            }
            let (share, seed) = (faults.share, faults.seed);
            if share > 0.0 {
                let rng = faults.rng.get_or_insert_with(|| fastrand::Rng::with_seed(seed));
                let unlucky: Vec<bool> = kept.iter().map(|_| rng.f64() < share).collect();
                let mut draws = unlucky.into_iter();
                let (more, lucky): (Vec<Value>, Vec<Value>) =
                    kept.into_iter().partition(|_| draws.next() == Some(true));
                failed.extend(more);
                kept = lucky;
            }
            if !failed.is_empty() {
                dropped = failed.iter().map(|e| e["Id"].clone()).collect();
                faults.failed_entries += dropped.len();
                nothing_left = kept.is_empty();
                request["Entries"] = kept.into();
                body = serde_json::to_vec(&request).unwrap();
            }
        }

        // SQS refuses an empty batch, so when every entry failed moto is not asked.
        let (status, mut answer) = if !nothing_left {
            let mut forward = client.post(format!("{upstream}{}", head[0].split(' ').nth(1).unwrap_or("/")));
            for (name, value) in &headers {
                if !matches!(name.as_str(), "host" | "content-length" | "connection") {
                    forward = forward.header(name, value);
                }
            }
            let response = forward.body(body).send().await.expect("moto answers");
            let status = response.status().as_u16();
            (status, response.bytes().await.expect("moto's answer").to_vec())
        } else {
            (200, br#"{"Successful":[]}"#.to_vec())
        };
        if !dropped.is_empty() {
            let mut output: Value = serde_json::from_slice(&answer).expect("a JSON answer");
            let failed: Vec<Value> = dropped
                .iter()
                .map(|id| json!({"Id": id, "SenderFault": false, "Code": "InternalError", "Message": "injected fault"}))
                .collect();
            output["Failed"] = failed.into();
            answer = serde_json::to_vec(&output).unwrap();
        }
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        let stream = stream.get_mut();
        if stream.write_all(response.as_bytes()).await.is_err() || stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}
