//! Mapping cost per event, per type: one normalised event → its planned Intercom operations. Target: ≤ 1 µs per track event on
//! one core (RudderStack's transformer does about 23,000 track and 9,400 identify events per second per core).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use intercom_relay_lambda::event::{BatchDefaults, EventType, RawEvent, parse_event};
use intercom_relay_lambda::mapping::{map_event, map_with};
use intercom_relay_lambda::settings::Settings;
use time::OffsetDateTime;

const TRACK: &str = include_str!("data/track.json");
const IDENTIFY: &str = include_str!("data/identify.json");
/// One sample of each other type, as the SDKs send them.
const OTHERS: [(&str, &str, EventType); 4] = [
    ("page", include_str!("../events/segment/page-with-context-page.json"), EventType::Page),
    ("screen", include_str!("../events/segment/screen.json"), EventType::Screen),
    ("group", include_str!("../events/segment/group.json"), EventType::Group),
    ("alias", include_str!("../events/segment/alias.json"), EventType::Alias),
];
/// Settings that use every rule: the track is forwarded after the integrations object, consent, a trigger path, the
/// deny and allow lists and a rename were all evaluated.
const SHOP_SETTINGS: &str = include_str!("../events/settings/shop.json");

fn mapping(c: &mut Criterion) {
    let mut group = c.benchmark_group("mapping/one event");
    group.throughput(Throughput::Elements(1));
    for (name, body, kind) in
        [("track 1 KB", TRACK, EventType::Track), ("identify 1 KB", IDENTIFY, EventType::Identify)]
    {
        let raw = RawEvent::parse(body).expect("a valid event");
        let event = parse_event(&raw, Some(kind), &BatchDefaults::default(), OffsetDateTime::now_utc()).expect("valid");
        group.bench_function(name, |b| b.iter(|| black_box(map_event(black_box(&event)).expect("planned"))));
        let shop = Settings::parse(SHOP_SETTINGS).expect("valid settings");
        group.bench_function(format!("{name} under events/settings/shop.json"), |b| {
            b.iter(|| black_box(map_with(black_box(&event), &shop).expect("planned")))
        });
    }
    for (name, body, kind) in OTHERS {
        let raw = RawEvent::parse(body).expect("a valid event");
        let event = parse_event(&raw, Some(kind), &BatchDefaults::default(), OffsetDateTime::now_utc()).expect("valid");
        group.bench_function(format!("{name} (events/segment)"), |b| {
            b.iter(|| black_box(map_event(black_box(&event)).expect("planned")))
        });
    }
    group.finish();
}

criterion_group!(benches, mapping);
criterion_main!(benches);
