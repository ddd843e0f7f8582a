//! docs/local.md's "The real Lambdas on your machine", its commands run as written (on free ports) under the cargo-lambda and
//! AWS CLI that scripts/test installs: the sandbox, two queues in moto's SQS, `cargo lambda watch`, both invokes. The
//! answers are the page's, SQS holds what ingest accepted, and the sandbox what forward delivered.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::scratch;
use crate::helpers::{doc_section, envelope_events, events_dir, sh_blocks};
use crate::sdks::installed;
use crate::sqs::{client, drain, endpoint};

const SECTION: &str = "## The real Lambdas on your machine";
/// Building the binaries without the dev-dependencies' features (what `cargo run` builds) can take minutes on a cold
/// target directory; an invocation whose function died waits for ever, so a dead function is spotted in the log.
const PATIENCE: Duration = Duration::from_secs(15 * 60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What the script's commands printed, by the words that pick a command out.
struct Run {
    dir: PathBuf,
    commands: Vec<String>,
}

impl Run {
    fn output(&self, words: &str) -> String {
        let index = self.commands.iter().position(|c| c.contains(words)).unwrap_or_else(|| panic!("no `{words}`"));
        std::fs::read_to_string(self.dir.join(format!("{index}.out"))).unwrap_or_default()
    }

    fn json(&self, words: &str) -> Value {
        let text = self.output(words);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`{words}` printed no JSON ({e}): {text}\n{}", self.logs()))
    }

    /// The script's trace and every background command's output.
    fn logs(&self) -> String {
        let mut logs = String::new();
        for (index, command) in self.commands.iter().enumerate() {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(format!("{index}.log"))) {
                logs.push_str(&format!("--- {command}\n{text}\n"));
            }
        }
        let trace = std::fs::read_to_string(self.dir.join("script.log")).unwrap_or_default();
        format!("{logs}--- the script\n{trace}")
    }
}

/// Runs `commands` in one bash, in order: a command ending in `&` in the background, its output in `N.log`, and the
/// next one once `port` listens; the others' output in `N.out`. The background commands are stopped at the end.
fn run_script(dir: &Path, commands: Vec<String>, wait_for: &[(&str, u16)], path: &str) -> Run {
    let mut script = String::from(
        "set -eu\n\
         trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n\
         listening() { for _ in $(seq 1 1200); do (exec 3<>\"/dev/tcp/127.0.0.1/$1\") 2>/dev/null && return; sleep 0.5; done; \
         echo \"nothing listens on $1\" >&2; exit 1; }\n",
    );
    let file = |index: usize, extension: &str| dir.join(format!("{index}.{extension}")).display().to_string();
    for (index, command) in commands.iter().enumerate() {
        script.push_str(&format!("printf '%s\\n' '$ {}' >&2\n", command.replace('\'', r"'\''")));
        let code = command.split(" # ").next().unwrap().trim_end();
        // A newline before the closing brace ends the command's comment.
        if code.ends_with('&') {
            let (_, port) = wait_for.iter().find(|(words, _)| command.contains(words)).unwrap_or_else(|| {
                panic!("a background command the test knows no port of: {command}");
            });
            script.push_str(&format!("{{ {command}\n}} >'{}' 2>&1\nlistening {port}\n", file(index, "log")));
        } else {
            script.push_str(&format!("{{ {command}\n}} >'{}'\n", file(index, "out")));
        }
    }
    std::fs::write(dir.join("script.sh"), &script).unwrap();
    let run = Run { dir: dir.to_owned(), commands };
    let mut child = Command::new("bash")
        .arg(dir.join("script.sh"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("script.log")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let failure = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (!status.success()).then(|| format!("the script failed ({status})"));
        }
        let died = (0..run.commands.len())
            .filter_map(|index| std::fs::read_to_string(dir.join(format!("{index}.log"))).ok())
            .any(|log| log.contains("ERROR command exited"));
        if died {
            break Some("a function exited under `cargo lambda watch`".to_owned());
        }
        if started.elapsed() > PATIENCE {
            break Some(format!("the commands took more than {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(failure) = failure {
        // cargo lambda watch stops its functions (each in a process group of its own) on TERM.
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        for _ in 0..50 {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
        panic!("{failure}:\n{}", run.logs());
    }
    run
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    let output = sqs.get_queue_url().queue_name(name).send().await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
    output.queue_url().expect("a queue URL").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_commands_run_both_lambdas_under_cargo_lambda_watch() {
    let cargo_lambda = PathBuf::from(installed("CARGO_LAMBDA"));
    assert!(cargo_lambda.is_file(), "CARGO_LAMBDA={} is not a file", cargo_lambda.display());
    let sqs_url = endpoint();
    let (sandbox_port, lambda_port) = (free_port(), free_port());
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let queue = format!("events-{run_id}");
    let replacements = [
        ("http://127.0.0.1:5000", sqs_url.clone()),
        ("127.0.0.1:4010", format!("127.0.0.1:{sandbox_port}")),
        ("--port 4010", format!("--port {sandbox_port}")),
        ("--invoke-port 9000", format!("--invoke-port {lambda_port}")),
        ("--queue-name events", format!("--queue-name {queue}")),
    ];
    let commands: Vec<String> = sh_blocks(&doc_section(SECTION))
        .remove(0)
        .into_iter()
        .map(|command| replacements.iter().fold(command, |command, (from, to)| command.replace(from, to)))
        .collect();
    // A page drifting from these would run on ports other tests (or the developer's own servers) may hold, or on
    // queues a rerun would share.
    let whole = commands.join("\n");
    for (from, to) in &replacements {
        assert!(whole.contains(to.as_str()), "docs/local.md's commands no longer contain `{from}`:\n{whole}");
    }

    // cargo-lambda and the AWS CLI from the virtualenv, cargo from the toolchain running this test.
    let mut path = vec![cargo_lambda.parent().unwrap().to_owned()];
    path.extend(std::env::var_os("CARGO").map(|cargo| Path::new(&cargo).parent().unwrap().to_owned()));
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let path = std::env::join_paths(path).unwrap().into_string().unwrap();
    let dir = scratch("cargo-lambda-readme");
    let run = tokio::task::spawn_blocking(move || {
        run_script(
            &dir,
            commands,
            &[("cargo run -- sandbox", sandbox_port), ("cargo lambda watch", lambda_port)],
            &path,
        )
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    // The page's answers.
    let ingest = run.json("invoke ingest");
    assert_eq!(ingest["statusCode"], 200, "{ingest}\n{}", run.logs());
    let body: Value = serde_json::from_str(ingest["body"].as_str().expect("a body")).unwrap();
    assert_eq!(body, serde_json::json!({"success": true}));
    let forward = run.json("invoke forward");
    assert_eq!(forward, serde_json::json!({"batchItemFailures": []}), "{}", run.logs());

    // SQS holds the request's events; the DLQ the one record of the SQS event that is not an envelope.
    let sqs = client(&sqs_url);
    let queued = drain(&sqs, &queue_url(&sqs, &format!("{queue}.fifo")).await).await;
    let queued = envelope_events(queued.into_iter().map(|message| message.body));
    let request: Value =
        serde_json::from_str(&std::fs::read_to_string(events_dir().join("requests/batch.json")).unwrap()).unwrap();
    let request: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
    let sent = request["batch"].as_array().unwrap();
    // FIFO keeps each person's order; people's events interleave as they like.
    let ids = |events: &[Value]| -> BTreeSet<String> {
        events.iter().map(|e| e["messageId"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&queued), ids(sent), "the queue holds the request's events");
    let in_order = |events: &[Value]| -> Vec<String> {
        let theirs = events.iter().filter(|e| e["userId"] == sent[0]["userId"]);
        theirs.map(|e| e["messageId"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(in_order(&queued), in_order(sent), "{} in the order sent", sent[0]["userId"]);
    let dead = drain(&sqs, &queue_url(&sqs, &format!("{queue}-dlq.fifo")).await).await;
    assert_eq!(dead.len(), 1, "{dead:?}");

    // What the sandbox holds, as `curl` printed it.
    let state = run.json("_sandbox/state");
    let contacts = state["contacts"].as_object().unwrap();
    let people: BTreeSet<&str> = contacts.values().filter_map(|c| c["external_id"].as_str()).collect();
    assert_eq!(people, ["u-1", "u-2"].into(), "{state}");
    let ada = contacts.values().find(|c| c["external_id"] == "u-1").unwrap();
    assert_eq!(ada["email"], "ada@example.com", "{state}");
    let org = state["companies"].as_object().unwrap().values().find(|c| c["company_id"] == "org-1");
    let org = org.unwrap_or_else(|| panic!("no company org-1: {state}"));
    assert_eq!(ada["companies"], serde_json::json!([org["id"]]), "{state}");
    let events: BTreeSet<(&str, &str)> = state["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["contact_id"].as_str().unwrap(), e["event_name"].as_str().unwrap()))
        .collect();
    let visitor = contacts.values().find(|c| c["external_id"] == "u-2").unwrap();
    let expected = [(visitor["id"].as_str().unwrap(), "page_viewed"), (ada["id"].as_str().unwrap(), "order completed")];
    assert_eq!(events, expected.into(), "{state}");

    // Each function noticed once that cargo lambda watch's deadline is not one.
    let logs = run.logs();
    assert_eq!(logs.matches("is not a deadline").count(), 2, "{logs}");
}
