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
        let timestamp = intercom_relay_lambda::event::format_timestamp(at);
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
                // The company's traits, the same whoever of its users sends them.
                Some("group") => json!({"type": "group", "userId": user_id, "groupId": company(user),
                    "traits": {"name": format!("Company {}", user % 97), "plan": PLANS[user % 97 % 3], "employees": 10 + user % 97 * 5}}),
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

/// Of the users of a page-load day, those whose every load also sends a group: one in [`PAGE_LOAD_GROUPS`].
const PAGE_LOAD_GROUPS: usize = 2;
/// Users per company on a page-load day (among those who send groups).
const PAGE_LOAD_COMPANY_USERS: usize = 5;

/// Writes a day of page loads as NDJSON to `out`, the same bytes for the same options: each load is what analytics.js
/// sends on a page where the app calls `identify` with the signed-in user's traits (the same on every load) and
/// `page`, and for every other user also `group` with their company's traits (the same on every load). Loads are
/// drawn until the next would pass `options.events` (so the day may hold one or two events fewer), spread over the
/// days in time order; activity is skewed as in [`generate`].
pub fn generate_page_loads(options: &GenerateOptions, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let users = options.users.max(1);
    let mut loads = Vec::new();
    let mut total = 0;
    loop {
        let user = if rng.u8(0..3) == 0 { rng.usize(0..users) } else { rng.usize(0..users.div_ceil(3)) };
        let size = if groups_on_load(user) { 3 } else { 2 };
        if total + size > options.events {
            break;
        }
        total += size;
        loads.push(user);
    }
    let step = 86_400_000 * i64::from(options.days.max(1)) / loads.len().max(1) as i64;
    let mut index = 0;
    for (load, user) in loads.into_iter().enumerate() {
        // Within its own slot, with room for the load's events a millisecond apart: time order holds across loads.
        let at = options.start + time::Duration::milliseconds(load as i64 * step + rng.i64(0..(step - 3).max(1)));
        let path = PAGES[rng.usize(0..PAGES.len())];
        let mut sent = vec![load_identify(user)];
        if groups_on_load(user) {
            sent.push(load_group(user));
        }
        sent.push(json!({"type": "page", "userId": format!("gen-user-{user:05}"), "name": path,
            "properties": {"path": path, "url": format!("https://app.example.com{path}"), "title": "Example",
                "referrer": "", "search": ""}}));
        for (offset, mut event) in sent.into_iter().enumerate() {
            event["anonymousId"] = json!(format!("anon-{user:05}"));
            event["context"] = load_context(path);
            event["messageId"] = Value::String(format!("gen-load-{:016x}-{index:07}", options.seed));
            let timestamp = at + time::Duration::milliseconds(offset as i64);
            event["timestamp"] = Value::String(intercom_relay_lambda::event::format_timestamp(timestamp));
            serde_json::to_writer(&mut *out, &event)?;
            out.write_all(b"\n")?;
            index += 1;
        }
    }
    Ok(())
}

fn groups_on_load(user: usize) -> bool {
    user.is_multiple_of(PAGE_LOAD_GROUPS)
}

/// The identify of a load: the signed-in user's traits, the same on every load.
fn load_identify(user: usize) -> Value {
    json!({"type": "identify", "userId": format!("gen-user-{user:05}"), "traits": {
        "email": format!("user{user}@example.com"), "name": format!("User {user}"), "plan": PLANS[user % 3],
        "createdAt": "2025-06-01T00:00:00Z"}})
}

/// The group of a load: the user's company and its traits, the same for every user of it on every load.
fn load_group(user: usize) -> Value {
    let company = user / PAGE_LOAD_GROUPS / PAGE_LOAD_COMPANY_USERS;
    json!({"type": "group", "userId": format!("gen-user-{user:05}"), "groupId": format!("gen-load-org-{company:03}"),
        "traits": {"name": format!("Company {company}"), "plan": PLANS[company % 3], "employees": 10 + company % 500}})
}

/// What analytics.js puts in the context of every call on a page.
fn load_context(path: &str) -> Value {
    json!({"library": {"name": "analytics.js", "version": "5.2.0"}, "locale": "en-GB",
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        "page": {"path": path, "url": format!("https://app.example.com{path}"), "title": "Example", "referrer": "",
            "search": ""}})
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
        let client =
            |ms: i64| intercom_relay_lambda::event::format_timestamp(at + time::Duration::milliseconds(ms + skew_ms));
        let received = at + time::Duration::milliseconds(batched + latency);
        event["originalTimestamp"] = Value::String(client(0));
        event["sentAt"] = Value::String(client(batched));
        event["receivedAt"] = Value::String(intercom_relay_lambda::event::format_timestamp(received));
        event["timestamp"] =
            Value::String(intercom_relay_lambda::event::format_timestamp(at + time::Duration::milliseconds(latency)));
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

    fn page_loads(seed: u64, events: usize, users: usize) -> String {
        let start = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        let mut out = Vec::new();
        generate_page_loads(&GenerateOptions { events, users, seed, start, days: 1 }, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_page_load_day_is_the_same_for_the_same_seed_and_another_for_another() {
        assert_eq!(page_loads(7, 500, 50), page_loads(7, 500, 50));
        assert_ne!(page_loads(7, 500, 50), page_loads(8, 500, 50));
    }

    #[test]
    fn every_load_is_an_identify_and_a_page_and_half_the_users_group_with_the_same_traits_each_time() {
        use std::collections::{BTreeMap, BTreeSet};
        let text = page_loads(42, 2_000, 200);
        let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!((1_998..=2_000).contains(&events.len()), "{}", events.len());
        let times: Vec<&str> = events.iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "in time order");
        assert!(times[0] < "2026-01-01T01" && times[times.len() - 1] > "2026-01-01T23", "over the day");
        let ids: BTreeSet<&str> = events.iter().map(|e| e["messageId"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), events.len(), "messageIds are unique");
        // Per user, the sizes of their loads (2: identify and page; 3: with a group); per user or company, its traits.
        let mut sizes: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        let mut traits: BTreeMap<String, Value> = BTreeMap::new();
        let mut rest = events.as_slice();
        while let [identify, more @ ..] = rest {
            assert_eq!(identify["type"], "identify");
            assert_eq!(identify["context"]["library"]["name"], "analytics.js");
            let user_id = identify["userId"].as_str().unwrap();
            let user: usize = user_id["gen-user-".len()..].parse().unwrap();
            let size = if more[0]["type"] == "group" { 3 } else { 2 };
            let load = &rest[..size];
            assert_eq!(load[size - 1]["type"], "page", "{load:?}");
            for event in load {
                assert_eq!(event["userId"], user_id, "{load:?}");
                assert_eq!(event["anonymousId"], format!("anon-{user:05}"), "{load:?}");
            }
            for event in &load[..size - 1] {
                let key = event["groupId"].as_str().unwrap_or(user_id).to_owned();
                let first = traits.entry(key).or_insert_with(|| event["traits"].clone());
                assert_eq!(*first, event["traits"], "the same traits on every load");
            }
            sizes.entry(user).or_default().insert(size);
            rest = &rest[size..];
        }
        let loads = events.iter().filter(|e| e["type"] == "identify").count();
        assert!(loads > 700, "{loads} loads");
        assert!(sizes.len() > 150, "{} users load pages", sizes.len());
        for (user, sizes) in &sizes {
            let expected = if user.is_multiple_of(2) { 3 } else { 2 };
            assert_eq!(*sizes, BTreeSet::from([expected]), "user {user} groups on every load or on none");
        }
        let grouping = sizes.keys().filter(|user| user.is_multiple_of(2)).count();
        assert!(grouping.abs_diff(sizes.len() - grouping) <= sizes.len() / 10, "half: {grouping} of {}", sizes.len());
    }
}
