//! A whole forward batch of 10 (five people: a new user's identify then tracks, pages, groups, from
//! `intercom-relay generate`): decode, settings, mapping, execution in per-person order, against an in-process Intercom
//! that answers at once, so the figure is the forwarder's own CPU cost. The executor stays warm across iterations, as a
//! warm Lambda's does.

#[path = "support/payloads.rs"]
mod payloads;

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use intercom_relay_lambda::forward::{Executor, ForwardOptions, Forwarder};
use intercom_relay_lambda::intercom::{ApiVersion, IntercomApi, IntercomError};
use intercom_relay_lambda::queue::MemoryDeadLetter;
use reqwest::Method;
use serde_json::{Value, json};

use payloads::{generated, sqs_event};

/// Answers every call as Intercom would succeed, with ids the executor reads.
#[derive(Default)]
struct Instant {
    ids: AtomicU64,
}

impl IntercomApi for Instant {
    async fn call(&self, method: Method, path: &str, _body: Option<&Value>) -> Result<Value, IntercomError> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        Ok(match (method.as_str(), path) {
            ("GET", p) if p.starts_with("/data_attributes") => json!({"type": "list", "data": []}),
            ("POST", "/data_attributes") => json!({"type": "data_attribute"}),
            ("POST", "/companies") => json!({"type": "company", "id": format!("co-{id}")}),
            ("POST", "/events") => Value::Null,
            (_, p) if p.starts_with("/contacts") && !p.ends_with("/companies") => {
                json!({"type": "contact", "id": format!("c-{id}"), "role": "user"})
            }
            _ => json!({}),
        })
    }

    fn version(&self) -> ApiVersion {
        ApiVersion::V2_16
    }
}

fn forward(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let executor = Executor::new(Instant::default(), true, NonZeroUsize::new(10_000).expect("not zero"));
    let forwarder = Forwarder::new(executor, MemoryDeadLetter::new(), ForwardOptions::default());
    let event = sqs_event(&generated(10, 5, 7), "bench");
    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Elements(event.records.len() as u64));
    group.bench_function("batch of 10, 5 people", |b| {
        b.iter(|| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let report = runtime.block_on(forwarder.handle(black_box(&event), deadline));
            assert!(report.response().batch_item_failures.is_empty());
            black_box(report)
        })
    });
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
