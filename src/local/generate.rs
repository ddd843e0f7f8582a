//! `intercom-relay generate`: seeded, realistic days of events from a population of users, as NDJSON or as the archive
//! Segment's S3 destination writes, for measuring calls per event, throughput, cost and backfills on a mix like
//! production's.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use serde_json::{Value, json};
use time::OffsetDateTime;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub events: usize,
    pub users: usize,
    pub seed: u64,
    /// The first day's start (the events spread over the `days` × 24 hours after it).
    pub start: OffsetDateTime,
    /// Days the events spread over (at least 1).
    pub days: u32,
}

/// Shares of the mix, in per mille of the events that are not a new user's first identify; the rest are tracks.
const MIX: [(&str, u64); 5] = [("identify", 80), ("page", 250), ("screen", 40), ("group", 40), ("alias", 10)];
/// Of the page views, those from visitors who never identify (no contact to hold them: skipped).
const ANONYMOUS_PAGE: u64 = 100;

const TRACKS: [&str; 8] = [
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Signed In",
    "Report Exported",
    "Feature Used",
    "Invite Sent",
];
const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
const PAGES: [&str; 6] = ["/", "/pricing", "/docs/start", "/blog/launch", "/checkout/cart", "/account/settings"];

/// Writes `options.events` events as NDJSON to `out`, the same bytes for the same options. Each user's first event is
/// an identify with their traits (a new user); later events are a mix of tracks, pages, returning identifies, groups,
/// screens and aliases, spread over the day in time order.
pub fn generate(options: &GenerateOptions, out: &mut impl Write) -> std::io::Result<()> {
    events(options, |event, _| {
        serde_json::to_writer(&mut *out, &event)?;
        out.write_all(b"\n")
    })
}

/// Calls `each` with every event of [`generate`] and its time, in time order.
fn events(
    options: &GenerateOptions,
    mut each: impl FnMut(Value, OffsetDateTime) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let users = options.users.max(1);
    let mut seen = vec![false; users];
    let step = 86_400_000 * i64::from(options.days.max(1)) / options.events.max(1) as i64;
    for index in 0..options.events {
        let at = options.start + time::Duration::milliseconds(index as i64 * step + rng.i64(0..step.max(1)));
        let timestamp = crate::event::format_timestamp(at);
        // Activity is skewed: a third of the users send most events.
        let user = if rng.u8(0..3) == 0 { rng.usize(0..users) } else { rng.usize(0..users.div_ceil(3)) };
        let user_id = format!("gen-user-{user:05}");
        let message_id = format!("gen-{:016x}-{index:07}", options.seed);
        let event = if !seen[user] {
            seen[user] = true;
            identify(&mut rng, &user_id, user, true)
        } else {
            match pick(&mut rng) {
                Some("identify") => identify(&mut rng, &user_id, user, false),
                Some("page") => page(&mut rng, &user_id),
                Some("screen") => json!({"type": "screen", "userId": user_id, "name": "Dashboard",
                    "properties": {"tab": "overview"},
                    "context": {"app": {"name": "Example", "version": "3.2.1"}, "os": {"name": "iOS"}}}),
                Some("group") => json!({"type": "group", "userId": user_id, "groupId": company(user),
                    "traits": {"name": format!("Company {}", user % 97), "plan": PLANS[user % 3], "employees": 10 + user % 500}}),
                Some(_) => json!({"type": "alias", "userId": user_id, "previousId": format!("anon-{user:05}")}),
                None => track(&mut rng, &user_id),
            }
        };
        let mut event = event;
        event["messageId"] = Value::String(message_id);
        event["timestamp"] = Value::String(timestamp);
        each(event, at)?;
    }
    Ok(())
}

/// What [`generate_archive`] wrote.
#[derive(Debug)]
pub struct ArchiveWritten {
    /// `DIR/segment-logs/<source-id>`.
    pub root: PathBuf,
    pub files: usize,
    pub events: usize,
    /// Compressed bytes.
    pub bytes: u64,
}

/// The source id in the archive's paths and every event's `projectId`.
pub const ARCHIVE_SOURCE_ID: &str = "gen-source";

/// Writes [`generate`]'s events as Segment's S3 destination archives them: gzipped NDJSON under
/// `dir/segment-logs/<source-id>/<received-day>/<file>.gz` (the day as the Unix time of its UTC midnight in
/// milliseconds), one file per hour of receipt, each line the whole event as Segment stored it: `originalTimestamp`
/// and `sentAt` by the client's clock (a few clients' run minutes off), `receivedAt` by Segment's, and `timestamp`
/// corrected for the skew, with `projectId`, `channel`, `version` and `integrations`.
pub fn generate_archive(options: &GenerateOptions, dir: &Path) -> std::io::Result<ArchiveWritten> {
    let root = dir.join("segment-logs").join(ARCHIVE_SOURCE_ID);
    // Its own stream of draws, so the events are those of `generate` whatever the archive adds.
    let mut rng = fastrand::Rng::with_seed(options.seed ^ 0x5e9_3e47);
    let mut written = ArchiveWritten { root: root.clone(), files: 0, events: 0, bytes: 0 };
    let mut current: Option<(i64, PathBuf, GzEncoder<std::io::BufWriter<std::fs::File>>)> = None;
    let mut line = Vec::with_capacity(2048);
    events(options, |mut event, at| {
        let skew_ms = if rng.u8(0..20) == 0 { rng.i64(-600_000..600_000) } else { 0 };
        let (batched, latency) = (rng.i64(0..5_000), rng.i64(20..400));
        let client = |ms: i64| crate::event::format_timestamp(at + time::Duration::milliseconds(ms + skew_ms));
        let received = at + time::Duration::milliseconds(batched + latency);
        event["originalTimestamp"] = Value::String(client(0));
        event["sentAt"] = Value::String(client(batched));
        event["receivedAt"] = Value::String(crate::event::format_timestamp(received));
        event["timestamp"] = Value::String(crate::event::format_timestamp(at + time::Duration::milliseconds(latency)));
        event["projectId"] = Value::String(ARCHIVE_SOURCE_ID.into());
        event["channel"] = Value::String("server".into());
        event["version"] = Value::from(2);
        event["integrations"] = json!({});
        let received_ms = (received.unix_timestamp_nanos() / 1_000_000) as i64;
        // Hours only go forward: an event received a moment late stays in the hour's file.
        let hour = (received_ms / 3_600_000).max(current.as_ref().map_or(0, |(hour, _, _)| *hour));
        if current.as_ref().is_none_or(|(open, _, _)| *open != hour) {
            if let Some((_, path, file)) = current.take() {
                file.finish()?.into_inner().map_err(|e| e.into_error())?;
                written.bytes += std::fs::metadata(&path)?.len();
            }
            let day = root.join((hour / 24 * 86_400_000).to_string());
            std::fs::create_dir_all(&day)?;
            let path = day.join(format!("{received_ms}.{:012x}.gz", rng.u64(..) >> 16));
            let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            current = Some((hour, path, GzEncoder::new(file, Compression::default())));
            written.files += 1;
        }
        let (_, _, file) = current.as_mut().expect("opened above");
        line.clear();
        serde_json::to_writer(&mut line, &event)?;
        line.push(b'\n');
        written.events += 1;
        file.write_all(&line)
    })?;
    if let Some((_, path, file)) = current {
        file.finish()?.into_inner().map_err(|e| e.into_error())?;
        written.bytes += std::fs::metadata(&path)?.len();
    }
    Ok(written)
}

/// A type from [`MIX`] by its share, or `None` for a track.
fn pick(rng: &mut fastrand::Rng) -> Option<&'static str> {
    let mut roll = rng.u64(0..1000);
    for (kind, share) in MIX {
        if roll < share {
            return Some(kind);
        }
        roll -= share;
    }
    None
}

fn company(user: usize) -> String {
    format!("gen-org-{:03}", user % 97)
}

fn identify(rng: &mut fastrand::Rng, user_id: &str, user: usize, new: bool) -> Value {
    let mut traits =
        json!({"email": format!("user{user}@example.com"), "plan": PLANS[user % 3], "logins": rng.u32(1..500)});
    if new {
        traits["name"] = json!(format!("User {user}"));
        traits["createdAt"] = json!("2025-06-01T00:00:00Z");
        if user.is_multiple_of(4) {
            traits["company"] = json!({"id": company(user), "name": format!("Company {}", user % 97)});
        }
    }
    json!({"type": "identify", "userId": user_id, "anonymousId": format!("anon-{user:05}"), "traits": traits,
           "context": {"library": {"name": "analytics.js", "version": "5.2.0"}, "locale": "en-GB"}})
}

fn page(rng: &mut fastrand::Rng, user_id: &str) -> Value {
    let path = PAGES[rng.usize(0..PAGES.len())];
    let context = json!({"page": {"path": path, "url": format!("https://www.example.com{path}"), "title": "Example"}});
    if rng.u64(0..1000) < ANONYMOUS_PAGE {
        return json!({"type": "page", "anonymousId": format!("visitor-{:08x}", rng.u32(..)), "context": context});
    }
    json!({"type": "page", "userId": user_id, "name": path, "context": context})
}

fn track(rng: &mut fastrand::Rng, user_id: &str) -> Value {
    let name = TRACKS[rng.usize(0..TRACKS.len())];
    let properties = match name {
        "Order Completed" => {
            json!({"order_id": format!("ord-{}", rng.u32(..)), "revenue": rng.u32(500..20000) as f64 / 100.0, "currency": "EUR"})
        }
        "Product Viewed" | "Product Added" => {
            json!({"product_id": format!("sku-{}", rng.u16(0..500)), "price": 19.99, "category": "tools"})
        }
        _ => json!({"source": "web"}),
    };
    json!({"type": "track", "userId": user_id, "event": name, "properties": properties,
           "context": {"library": {"name": "analytics-node", "version": "2.3.0"}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(seed: u64, events: usize, users: usize) -> String {
        let start = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        let mut out = Vec::new();
        generate(&GenerateOptions { events, users, seed, start, days: 1 }, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
        assert_eq!(generated(7, 500, 50), generated(7, 500, 50));
        assert_ne!(generated(7, 500, 50), generated(8, 500, 50));
    }

    #[test]
    fn a_day_of_events_holds_every_type_in_time_order_and_each_user_starts_with_an_identify() {
        let text = generated(42, 10_000, 1_000);
        let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(events.len(), 10_000);
        let mut counts = std::collections::BTreeMap::new();
        for event in &events {
            *counts.entry(event["type"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        }
        for kind in ["identify", "track", "page", "screen", "group", "alias"] {
            assert!(counts.get(kind).copied().unwrap_or(0) > 20, "{kind}: {counts:?}");
        }
        assert!(counts["track"] > counts["page"] && counts["page"] > counts["group"], "{counts:?}");
        let times: Vec<&str> = events.iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
        let mut first = std::collections::HashMap::new();
        for event in events.iter().filter(|e| e["userId"].is_string()) {
            first.entry(event["userId"].as_str().unwrap()).or_insert(event["type"].as_str().unwrap());
        }
        assert!(first.values().all(|kind| *kind == "identify"), "a new user is identified first");
        let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["messageId"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), events.len(), "messageIds are unique");
    }
}
