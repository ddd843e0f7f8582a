//! The Intercom client against the sandbox served over HTTP: what each outcome looks like to the forwarder.

use std::time::{Duration, Instant};

use intercom_relay::sandbox::{Outage, SandboxOptions, SandboxServer};
use intercom_relay_lambda::intercom::{ApiVersion, IntercomApi, IntercomClient, IntercomError, conflicting_contact};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::json;

fn client(url: &str, token: &str, version: &str) -> IntercomClient {
    let version = ApiVersion::parse(version).unwrap();
    IntercomClient::new(url, SecretString::from(token), version, Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn a_created_contact_comes_back_and_a_second_one_is_a_conflict_naming_it() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let intercom = client(&sandbox.url, &sandbox.token(), "2.16");
    let body = json!({"role": "user", "external_id": "u-1", "email": "a@example.com"});
    let created = intercom.call(Method::POST, "/contacts", Some(&body)).await.unwrap();
    let id = created["id"].as_str().unwrap();
    let conflict = intercom.call(Method::POST, "/contacts", Some(&body)).await.unwrap_err();
    assert_eq!((conflict.status(), conflict.code(), conflict.is_retryable()), (Some(409), Some("conflict"), false));
    assert_eq!(conflicting_contact(conflict.message().unwrap()).unwrap().id, id);
    let state = sandbox.state();
    assert_eq!(state.contacts[id].email.as_deref(), Some("a@example.com"));
}

#[tokio::test]
async fn an_event_is_accepted_with_an_empty_answer() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let intercom = client(&sandbox.url, &sandbox.token(), "2.16");
    intercom.call(Method::POST, "/contacts", Some(&json!({"role": "user", "external_id": "u-1"}))).await.unwrap();
    let event = json!({"event_name": "signed-up", "created_at": 1714564800, "user_id": "u-1"});
    assert_eq!(intercom.call(Method::POST, "/events", Some(&event)).await.unwrap(), serde_json::Value::Null);
    assert_eq!(sandbox.state().events.len(), 1);
}

#[tokio::test]
async fn a_wrong_token_is_permanent_and_the_version_header_is_sent() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let error = client(&sandbox.url, "wrong", "2.16").call(Method::GET, "/data_attributes", None).await.unwrap_err();
    assert_eq!((error.status(), error.is_retryable()), (Some(401), false));
    // The client sends only the versions its requests are written for (`ApiVersion`); another is sent by hand.
    let answer = reqwest::Client::new()
        .get(format!("{}/data_attributes", sandbox.url))
        .bearer_auth(sandbox.token())
        .header("Intercom-Version", "1.9")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = answer.json().await.unwrap();
    let code = body["errors"][0]["code"].as_str();
    assert_eq!(code, Some("intercom_version_invalid"), "the sandbox read the Intercom-Version header");
}

#[tokio::test]
async fn a_spent_window_is_retryable_when_the_call_cannot_wait_for_it() {
    let sandbox = SandboxServer::start(SandboxOptions { rate_limit: 1, ..SandboxOptions::default() }, 0).await.unwrap();
    let intercom = client(&sandbox.url, &sandbox.token(), "2.16").with_max_wait(Duration::ZERO);
    intercom.call(Method::GET, "/data_attributes", None).await.unwrap();
    let error = intercom.call(Method::GET, "/data_attributes", None).await.unwrap_err();
    assert_eq!((error.status(), error.is_retryable()), (Some(429), true));
    assert_eq!(sandbox.requests().len(), 1, "the client paused instead of spending a call on a 429");
}

#[tokio::test]
async fn in_a_429_storm_with_the_reset_an_hour_away_a_call_gives_up_at_once_and_retryably() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    sandbox.set_outage(Some(Outage::RateLimited { reset_in: Duration::from_secs(3600) }));
    let intercom = client(&sandbox.url, &sandbox.token(), "2.16");
    let body = json!({"role": "user", "external_id": "u-1"});
    let started = Instant::now();
    let error = intercom.call(Method::POST, "/contacts", Some(&body)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "it did not wait for the reset: {:?}", started.elapsed());
    assert!(matches!(error, IntercomError::Api { status: 429, .. }) && error.is_retryable(), "{error}");
    assert_eq!(error.code(), Some("rate_limit_exceeded"));
    intercom.call(Method::GET, "/data_attributes", None).await.unwrap_err();
    let statuses: Vec<u16> = sandbox.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429], "the second call trusted the reset and spent no call on another 429");
    assert_eq!(sandbox.state().faults_injected["429"], 1);
    assert!(sandbox.state().contacts.is_empty());
}

#[tokio::test]
async fn a_revoked_token_is_a_permanent_401_until_it_is_restored() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let intercom = client(&sandbox.url, &sandbox.token(), "2.16");
    sandbox.set_outage(Some(Outage::Unauthorized));
    let error = intercom.call(Method::GET, "/data_attributes", None).await.unwrap_err();
    assert_eq!((error.status(), error.code(), error.is_retryable()), (Some(401), Some("unauthorized"), false));
    assert_eq!(error.message(), Some("Access Token Invalid"));
    sandbox.set_outage(None);
    intercom.call(Method::GET, "/data_attributes", None).await.unwrap();
    let statuses: Vec<u16> = sandbox.requests().iter().map(|r| r.status).collect();
    assert_eq!((statuses, sandbox.state().faults_injected["401"]), (vec![401, 200], 1));
}

#[tokio::test]
async fn while_intercom_is_down_a_call_is_a_retryable_503_and_then_goes_through() {
    let sandbox = SandboxServer::start(SandboxOptions::default(), 0).await.unwrap();
    let intercom = client(&sandbox.url, &sandbox.token(), "2.16");
    sandbox.set_outage(Some(Outage::Down));
    let body = json!({"role": "user", "external_id": "u-1"});
    let error = intercom.call(Method::POST, "/contacts", Some(&body)).await.unwrap_err();
    assert_eq!((error.status(), error.code(), error.is_retryable()), (Some(503), Some("service_unavailable"), true));
    assert!(sandbox.state().contacts.is_empty());
    sandbox.set_outage(None);
    intercom.call(Method::POST, "/contacts", Some(&body)).await.unwrap();
    assert_eq!(sandbox.state().contacts.len(), 1);
}

#[tokio::test]
async fn no_answer_is_a_retryable_transport_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let error =
        client(&format!("http://{closed}"), "t", "2.16").call(Method::GET, "/contacts/1", None).await.unwrap_err();
    assert!(matches!(error, IntercomError::Transport(_)) && error.is_retryable(), "{error}");
}
