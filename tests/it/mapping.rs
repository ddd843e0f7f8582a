//! Every raw Segment event in events/segment, read as ingest reads it, and the exact Intercom operations it plans.

use intercom_relay_lambda::event::{BatchDefaults, RawEvent, parse_event};
use intercom_relay_lambda::mapping::{NO_CONTACT_IDENTIFIER, Unmapped, map_event};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::{events_dir, memory_app, post, send};

/// The `timestamp` most files carry, 2024-05-01T12:00:00Z, in Unix seconds.
const NOON: i64 = 1714564800;

/// The whole plan (operations and dropped values) as JSON, or why the event plans nothing.
type Outcome = Result<Value, Unmapped>;

fn skipped() -> Outcome {
    Err(Unmapped::Skipped(NO_CONTACT_IDENTIFIER))
}

/// Each file of events/segment and its exact outcome; objects are written in the order the plan holds their keys.
fn cases() -> Vec<(&'static str, Outcome)> {
    vec![
        (
            "alias.json",
            Ok(json!({
                "operations": [
                    {"op": "merge", "from": {"external_id": "legacy-1001"}, "into": {"external_id": "user-1001"}}
                ],
                "dropped": []
            })),
        ),
        (
            "group-size-as-string.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_company", "company_id": "4242",
                     "attributes": {"name": "Numbers Inc", "size": 37, "monthly_spend": 100,
                                    "remote_created_at": 1667407500},
                     "custom_attributes": {"employees_on_leave": 2}},
                    {"op": "attach_company", "contact": {"external_id": "user-1002"}, "company_id": "4242"}
                ],
                "dropped": []
            })),
        ),
        (
            "group.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_company", "company_id": "org-77",
                     "attributes": {"name": "Analytical Engines Ltd", "plan": "enterprise",
                                    "website": "https://engines.example", "industry": "Manufacturing", "size": 250,
                                    "monthly_spend": 2000, "remote_created_at": 1577836800},
                     "custom_attributes": {"region_name": "EMEA", "region_code": "eu", "tier": "gold"}},
                    {"op": "attach_company", "contact": {"external_id": "user-1001"}, "company_id": "org-77"}
                ],
                "dropped": [{"path": "traits.offices", "reason": "Intercom attributes cannot hold lists"}]
            })),
        ),
        ("identify-anonymous-only.json", skipped()),
        (
            "identify-context-traits.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"email": "rudder@example.com"}, "role": "lead",
                     "attributes": {"email": "rudder@example.com", "name": "Rudy Stack", "last_seen_at": NOON},
                     "custom_attributes": {"plan": "pro", "seats": 5, "anonymous_id": "anon-3001"}}
                ],
                "dropped": []
            })),
        ),
        (
            "identify-created-at-millis.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"external_id": "user-1003"}, "role": "user",
                     "attributes": {"email": "millis@example.com", "signed_up_at": 1673775000, "last_seen_at": NOON},
                     "custom_attributes": {}}
                ],
                "dropped": []
            })),
        ),
        (
            "identify-dates-and-nulls.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"external_id": "user-1009"}, "role": "user",
                     "attributes": {"email": "trial@example.com", "last_seen_at": NOON},
                     "custom_attributes": {"trial_ends_at": 1717243200, "last_payment": 1714464900,
                                           "renewal_date": "soon", "churned_at": null, "seats": 3},
                     "dates": ["trial_ends_at", "last_payment"]},
                    {"op": "upsert_company", "company_id": "org-90",
                     "attributes": {"name": "Trial Co", "monthly_spend": 0},
                     "custom_attributes": {"contract_ends_at": 1735689600}, "dates": ["contract_ends_at"]},
                    {"op": "attach_company", "contact": {"external_id": "user-1009"}, "company_id": "org-90"}
                ],
                "dropped": [
                    {"path": "traits.company.monthly_spend",
                     "reason": "Intercom holds no negative number here: 0 was sent"}
                ]
            })),
        ),
        (
            "identify-first-and-last-name.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"external_id": "1002"}, "role": "user",
                     "attributes": {"email": "grace@example.com", "name": "Grace Hopper", "last_seen_at": NOON},
                     "custom_attributes": {"title": "Rear Admiral"}}
                ],
                "dropped": []
            })),
        ),
        (
            "identify-inactive.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"external_id": "user-1004"}, "role": "user",
                     "attributes": {"email": "batch@example.com"},
                     "custom_attributes": {"plan": "enterprise"}}
                ],
                "dropped": []
            })),
        ),
        (
            "identify-lead-by-email.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"email": "lead@example.com"}, "role": "lead",
                     "attributes": {"email": "lead@example.com", "name": "Lin Lead", "last_seen_at": NOON},
                     "custom_attributes": {"source": "webinar", "anonymous_id": "anon-2001"}}
                ],
                "dropped": []
            })),
        ),
        (
            "identify-unreadable-values.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"external_id": "user-1006"}, "role": "user",
                     "attributes": {"email": "odd@example.com", "last_seen_at": NOON},
                     "custom_attributes": {"nickname": null, "preferences_theme": "dark"}}
                ],
                "dropped": [
                    {"path": "traits.createdAt", "reason": "not a time Intercom can read"},
                    {"path": "traits.utm.source",
                     "reason": "Intercom attribute names hold only letters, digits, currency symbols but '$', '_', '-' and inner spaces"},
                    {"path": "traits.bio", "reason": "Intercom attribute strings hold at most 255 characters"},
                    {"path": "traits.preferences.languages", "reason": "Intercom attributes cannot hold lists"}
                ]
            })),
        ),
        (
            "identify-unsubscribed-and-owner.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"external_id": "user-1005"}, "role": "user",
                     "attributes": {"email": "quiet@example.com", "last_seen_at": NOON,
                                    "unsubscribed_from_emails": true, "owner_id": "7"},
                     "custom_attributes": {}}
                ],
                "dropped": []
            })),
        ),
        (
            "identify-user.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"external_id": "user-1001"}, "role": "user",
                     "attributes": {"email": "ada@example.com", "phone": "+44 20 7946 0958",
                                    "avatar": "https://example.com/avatars/ada.png", "name": "Augusta Ada King",
                                    "signed_up_at": 1673775000, "last_seen_at": NOON},
                     "custom_attributes": {"plan": "pro", "address_city": "London", "address_country": "GB",
                                           "address_geo_lat": 51.5, "address_geo_lng": -0.12, "logins": 42,
                                           "verified": true}},
                    {"op": "merge_visitor", "anonymous_id": "anon-1001", "into": {"external_id": "user-1001"}},
                    {"op": "tag_contact", "contact": {"external_id": "user-1001"}, "tags": ["mathematics", "engines"],
                     "remove_missing": false}
                ],
                "dropped": []
            })),
        ),
        (
            "identify-with-companies-and-remove.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"external_id": "user-1008"}, "role": "user",
                     "attributes": {"email": "consultant@example.com", "last_seen_at": NOON},
                     "custom_attributes": {}},
                    {"op": "upsert_company", "company_id": "7", "attributes": {"name": "Seven Seas", "size": 12},
                     "custom_attributes": {}},
                    {"op": "attach_company", "contact": {"external_id": "user-1008"}, "company_id": "7"},
                    {"op": "upsert_company", "company_id": "org-88", "attributes": {"name": "Eighty Eight"},
                     "custom_attributes": {}},
                    {"op": "attach_company", "contact": {"external_id": "user-1008"}, "company_id": "org-88"},
                    {"op": "detach_company", "contact": {"external_id": "user-1008"}, "company_id": "org-old"}
                ],
                "dropped": [
                    {"path": "traits.companies[3]", "reason": "a company needs an id (its company_id in Intercom)"},
                    {"path": "traits.companies[4]", "reason": "a company must be an object with an id"}
                ]
            })),
        ),
        (
            "identify-with-company.json",
            Ok(json!({
                "operations": [
                    {"op": "upsert_contact", "key": {"external_id": "user-1007"}, "role": "user",
                     "attributes": {"email": "founder@engines.example", "name": "Charles Babbage",
                                    "last_seen_at": NOON},
                     "custom_attributes": {}},
                    {"op": "upsert_company", "company_id": "org-77",
                     "attributes": {"name": "Analytical Engines Ltd", "plan": "growth",
                                    "website": "https://engines.example", "industry": "Manufacturing", "size": 120,
                                    "monthly_spend": 500, "remote_created_at": 1561881600},
                     "custom_attributes": {"tier": "gold"}},
                    {"op": "attach_company", "contact": {"external_id": "user-1007"}, "company_id": "org-77"}
                ],
                "dropped": [{"path": "traits.company.tags", "reason": "Intercom attributes cannot hold lists"}]
            })),
        ),
        (
            "page-lead-by-context-email.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"email": "rudder@example.com"}, "event_name": "page_viewed",
                     "created_at": NOON, "metadata": {"path": "/signup", "name": "Signup"}}
                ],
                "dropped": []
            })),
        ),
        (
            "page-with-context-page.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"external_id": "user-1001"}, "event_name": "page_viewed",
                     "created_at": NOON,
                     "metadata": {"url": "https://docs.example.com/start", "path": "/start",
                                  "title": "Docs: Getting started", "referrer": "https://www.example.com/"}}
                ],
                "dropped": []
            })),
        ),
        (
            "page.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"external_id": "user-1001"}, "event_name": "page_viewed",
                     "created_at": NOON,
                     "metadata": {"url": "https://www.example.com/pricing?plan=pro", "path": "/pricing",
                                  "title": "Pricing - Example", "referrer": "https://www.google.com/",
                                  "name": "Pricing", "category": "Marketing"}}
                ],
                "dropped": []
            })),
        ),
        (
            "screen.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"external_id": "user-1001"}, "event_name": "screen_viewed",
                     "created_at": NOON, "metadata": {"name": "Settings"}}
                ],
                "dropped": []
            })),
        ),
        ("track-anonymous-only.json", skipped()),
        (
            "track-dates-and-nulls.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"external_id": "user-1001"}, "event_name": "Trial Extended",
                     "created_at": NOON,
                     "metadata": {"renewal_date": 1735689600, "extended_date": 1714468500, "days": 14}}
                ],
                "dropped": [
                    {"path": "properties.trial_end_date", "reason": "a _date key needs a time Intercom can read"},
                    {"path": "properties.reminder_date", "reason": "a _date key needs a time Intercom can read"},
                    {"path": "properties.reason", "reason": "Intercom metadata cannot hold null"}
                ]
            })),
        ),
        (
            "track-event-name-with-dots.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"external_id": "user-1001"},
                     "event_name": "checkout-step-completed", "created_at": NOON, "metadata": {"step": 2}}
                ],
                "dropped": []
            })),
        ),
        (
            "track-lead-by-properties-email.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"email": "lead@example.com"},
                     "event_name": "Newsletter Subscribed", "created_at": NOON,
                     "metadata": {"email": " lead@example.com ", "list": "monthly-digest"}}
                ],
                "dropped": []
            })),
        ),
        (
            "track-more-than-ten-properties.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"external_id": "user-1001"},
                     "event_name": "Subscription Renewed", "created_at": NOON,
                     "metadata": {"price": {"amount": 4900, "currency": "usd"}, "plan": "pro", "interval": "monthly",
                                  "seats": 5, "trial": "false", "coupon": "LOYAL", "region": "eu-west-1",
                                  "source": "dashboard", "renewal_count": 12, "utm_source": "newsletter"}}
                ],
                "dropped": [
                    {"path": "properties.utm.medium", "reason": "Intercom keeps at most 10 metadata keys"},
                    {"path": "properties.utm.campaign", "reason": "Intercom keeps at most 10 metadata keys"},
                    {"path": "properties.channel", "reason": "Intercom keeps at most 10 metadata keys"}
                ]
            })),
        ),
        (
            "track-order-completed.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"external_id": "user-1001"}, "event_name": "Order Completed",
                     "created_at": NOON,
                     "metadata": {"price": {"amount": 2000, "currency": "eur"}, "id": "ord-5001",
                                  "delivery_date": 1714694400,
                                  "invoice": {"url": "https://example.com/invoices/ord-5001",
                                              "value": "Invoice ord-5001"},
                                  "shipping_method": "express", "shipping_cost": 4.5, "coupon": "SPRING"}}
                ],
                "dropped": [{"path": "properties.products", "reason": "Intercom metadata cannot hold lists"}]
            })),
        ),
        (
            "track-refund-negative-revenue.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"external_id": "user-1001"}, "event_name": "Order Refunded",
                     "created_at": NOON,
                     "metadata": {"order_id": "ord-5001", "revenue": -38.0, "currency": "EUR", "full_refund": "true"}}
                ],
                "dropped": []
            })),
        ),
        (
            "track-total-as-money.json",
            Ok(json!({
                "operations": [
                    {"op": "submit_event", "contact": {"external_id": "user-1001"}, "event_name": "Checkout Started",
                     "created_at": NOON,
                     "metadata": {"price": {"amount": 3051, "currency": "gbp"}, "order_id": "ord-5002",
                                  "revenue": "n/a", "value": 12}}
                ],
                "dropped": []
            })),
        ),
    ]
}

fn segment_dir() -> std::path::PathBuf {
    events_dir().join("segment")
}

/// The file's event, read as ingest reads a body sent to `/v1/<type>`, received now: its fixed `timestamp` makes the
/// plan the same whenever it is replayed.
fn outcome(name: &str) -> Outcome {
    let path = segment_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let raw = RawEvent::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let event = parse_event(&raw, None, &BatchDefaults::default(), OffsetDateTime::now_utc())
        .unwrap_or_else(|rejected| panic!("{name} is refused: {rejected:?}"));
    let stem = name.trim_end_matches(".json");
    assert_eq!(event.message_id, format!("seg-{stem}"), "{name}: a fixed messageId named after the file");
    assert!(event.sent_at.is_none() && event.original_timestamp.is_none(), "{name}: only a fixed timestamp");
    map_event(&event).map(|plan| serde_json::to_value(&plan).expect("a plan serialises"))
}

#[test]
fn every_segment_file_is_in_the_table() {
    // One event per .json file; the NDJSON of destination-rules events is replayed under settings in tests/it/settings.rs.
    let mut files: Vec<String> = std::fs::read_dir(segment_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    let listed: Vec<&str> = cases().iter().map(|(name, _)| *name).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "keep the table sorted by file name");
    assert_eq!(files, listed, "add new files in events/segment to the table");
}

#[test]
fn every_segment_event_plans_exactly_what_its_row_says() {
    let mut wrong = Vec::new();
    for (name, expected) in cases() {
        let actual = outcome(name);
        // Equal values may still differ in key order, which the metadata cap and the logs depend on: compare the text.
        let text = |outcome: &Outcome| match outcome {
            Ok(plan) => plan.to_string(),
            Err(unmapped) => format!("{unmapped:?}"),
        };
        if text(&actual) != text(&expected) {
            wrong.push(format!("{name}\n  expected {}\n  actual   {}", text(&expected), text(&actual)));
        }
    }
    assert!(wrong.is_empty(), "{} of {} files plan otherwise:\n{}", wrong.len(), cases().len(), wrong.join("\n"));
}

#[tokio::test]
async fn every_segment_file_is_accepted_at_its_endpoint() {
    for (name, _) in cases() {
        let text = std::fs::read_to_string(segment_dir().join(name)).unwrap();
        let kind = serde_json::from_str::<Value>(&text).unwrap()["type"].as_str().unwrap().to_owned();
        let app = memory_app();
        let answer = send(&app, post(&format!("/v1/{kind}"), &text)).await;
        assert_eq!(answer.status.as_u16(), 200, "{name}: {}", answer.body);
        assert_eq!(app.queue().len(), 1, "{name}");
    }
}
