//! Ingest cost per event: parse + validate + normalise + serialise to the SQS envelope, for a typical 1 KB track and
//! identify as analytics.js sends them. Target: ≤ 2 µs per event on one core.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use intercom_relay_lambda::envelope::KeyKind;
use intercom_relay_lambda::event::{EventType, parse_batch, parse_single};
use intercom_relay_lambda::ingest::accept_events;
use time::OffsetDateTime;

const TRACK: &str = include_str!("data/track.json");
const IDENTIFY: &str = include_str!("data/identify.json");

fn single(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest/one event");
    group.throughput(Throughput::Elements(1));
    for (name, body, kind) in
        [("track 1 KB", TRACK, EventType::Track), ("identify 1 KB", IDENTIFY, EventType::Identify)]
    {
        group.bench_function(name, |b| {
            b.iter(|| {
                let batch = parse_single(black_box(body)).expect("a valid body");
                let (messages, rejected) =
                    accept_events(&batch, Some(kind), OffsetDateTime::now_utc(), KeyKind::Server)
                        .expect("within limits");
                assert!(rejected.is_empty());
                black_box(messages)
            })
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let events: Vec<&str> = (0..100).map(|i| if i % 4 == 0 { IDENTIFY } else { TRACK }).collect();
    let body = format!(r#"{{"batch":[{}],"sentAt":"2024-05-01T12:00:01.000Z"}}"#, events.join(","));
    let mut group = c.benchmark_group("ingest/batch of 100");
    group.throughput(Throughput::Elements(100));
    group.bench_function("3 track : 1 identify", |b| {
        b.iter(|| {
            let batch = parse_batch(black_box(&body)).expect("a valid body");
            let (messages, rejected) =
                accept_events(&batch, None, OffsetDateTime::now_utc(), KeyKind::Server).expect("within limits");
            assert_eq!((messages.len(), rejected.len()), (100, 0));
            black_box(messages)
        })
    });
    group.finish();
}

criterion_group!(benches, single, batch);
criterion_main!(benches);
