//! Table tests: raw Segment events, read as ingest reads them, and the exact operations they plan.

use serde_json::{Value, json};

use super::*;
use crate::event::{BatchDefaults, RawEvent, parse_event, parse_timestamp};

fn event(json: Value) -> Event {
    let text = json.to_string();
    let received = parse_timestamp("2024-05-01T12:00:00Z").unwrap();
    parse_event(&RawEvent::parse(&text).unwrap(), None, &BatchDefaults::default(), received).unwrap()
}

fn plan(json: Value) -> Plan {
    map_event(&event(json)).unwrap()
}

fn ops(json: Value) -> Value {
    serde_json::to_value(plan(json).operations).unwrap()
}

const NOON: i64 = 1714564800;

#[test]
fn identify_maps_standard_traits_custom_attributes_and_companies() {
    let planned = plan(json!({
        "type": "identify", "userId": "u-1", "timestamp": "2024-05-01T12:00:00Z",
        "traits": {
            "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "phone": "+44 20 7946 0958",
            "createdAt": 1700000000123u64, "plan": "pro", "address": {"city": "London"}, "tags": ["a", "b"],
            "ownerId": "42", "unsubscribedFromEmails": true, "id": "u-1",
            "company": {"id": "org-7", "name": "Engines Ltd", "employees": "120", "tier": "gold"}
        }
    }));
    assert_eq!(
        serde_json::to_value(&planned.operations).unwrap(),
        json!([
            {"op": "upsert_contact", "key": {"external_id": "u-1"}, "role": "user",
             "attributes": {"email": "ada@example.com", "phone": "+44 20 7946 0958", "name": "Ada Lovelace",
                            "signed_up_at": 1700000000, "last_seen_at": NOON, "unsubscribed_from_emails": true, "owner_id": "42"},
             "custom_attributes": {"plan": "pro", "address_city": "London"}},
            {"op": "upsert_company", "company_id": "org-7", "attributes": {"name": "Engines Ltd", "size": 120},
             "custom_attributes": {"tier": "gold"}},
            {"op": "attach_company", "contact": {"external_id": "u-1"}, "company_id": "org-7"},
            {"op": "tag_contact", "contact": {"external_id": "u-1"}, "tags": ["a", "b"], "remove_missing": false}
        ])
    );
    assert_eq!(planned.dropped, []);
}

#[test]
fn tags_are_trimmed_names_each_once_and_what_is_no_name_is_left_out_with_the_reason() {
    let planned = plan(json!({"type": "identify", "userId": "u-1",
        "traits": {"tags": [" VIP ", "vip", "", 7, "Beta"]}}));
    let tag = serde_json::to_value(planned.operations.last().unwrap()).unwrap();
    assert_eq!(tag["tags"], json!(["VIP", "Beta"]));
    let dropped: Vec<(&str, &str)> = planned.dropped.iter().map(|d| (d.path.as_str(), d.reason)).collect();
    assert_eq!(
        dropped,
        [
            ("traits.tags[1]", "the same tag as an earlier one (Intercom's tag names ignore case)"),
            ("traits.tags[2]", "an empty tag name"),
            ("traits.tags[3]", "a tag name is text"),
        ]
    );
    // Where analytics.js keeps traits it remembers; a list that is not one; an empty list adds nothing.
    let remembered = ops(json!({"type": "identify", "userId": "u-1", "context": {"traits": {"tags": ["a"]}}}));
    assert_eq!(remembered.as_array().unwrap().last().unwrap()["tags"], json!(["a"]));
    let planned = plan(json!({"type": "identify", "userId": "u-1", "traits": {"tags": "a,b"}}));
    assert_eq!(planned.operations.len(), 1, "no tag operation");
    assert_eq!(planned.dropped[0].reason, "tags must be a list of tag names");
    assert_eq!(plan(json!({"type": "identify", "userId": "u-1", "traits": {"tags": []}})).operations.len(), 1);
}

#[test]
fn with_remove_missing_the_list_is_the_whole_set_even_an_empty_one_and_a_group_tags_its_company() {
    let settings = Settings::parse(r#"{"tags": {"remove_missing": true}}"#).unwrap();
    let empty = map_with(&event(json!({"type": "identify", "userId": "u-1", "traits": {"tags": []}})), &settings);
    let tag = serde_json::to_value(empty.unwrap().operations.pop().unwrap()).unwrap();
    assert_eq!(
        tag,
        json!({"op": "tag_contact", "contact": {"external_id": "u-1"}, "tags": [], "remove_missing": true})
    );
    // A list whose every name is refused is no list: it clears nothing.
    let refused =
        map_with(&event(json!({"type": "identify", "userId": "u-1", "traits": {"tags": ["", 7]}})), &settings);
    let refused = refused.unwrap();
    assert!(
        !refused.operations.iter().any(|op| matches!(op, Operation::TagContact { .. })),
        "{:?}",
        refused.operations
    );
    assert_eq!(refused.dropped.len(), 2);
    let group = event(json!({"type": "group", "userId": "u-1", "groupId": "org-1",
        "traits": {"name": "Org", "tags": ["enterprise"]}}));
    let planned = map_with(&group, &settings).unwrap();
    let ops = serde_json::to_value(&planned.operations).unwrap();
    assert_eq!(ops[0]["custom_attributes"], json!({}), "tags are not an attribute");
    assert_eq!(
        ops[2],
        json!({"op": "tag_company", "company_id": "org-1", "tags": ["enterprise"], "remove_missing": true})
    );
}

#[test]
fn identify_without_a_user_id_makes_a_lead_keyed_by_email() {
    let planned = ops(json!({"type": "identify", "anonymousId": "a-1", "traits": {"email": " lead@example.com "}}));
    assert_eq!(planned[0]["key"], json!({"email": "lead@example.com"}));
    assert_eq!(planned[0]["role"], "lead");
}

#[test]
fn an_event_naming_no_contact_is_skipped_with_the_reason() {
    for json in [
        json!({"type": "identify", "anonymousId": "a-1", "traits": {"plan": "pro"}}),
        json!({"type": "track", "anonymousId": "a-1", "event": "Clicked"}),
        json!({"type": "page", "anonymousId": "a-1"}),
        json!({"type": "group", "anonymousId": "a-1", "groupId": "org-1"}),
    ] {
        assert_eq!(map_event(&event(json.clone())), Err(Unmapped::Skipped(NO_CONTACT_IDENTIFIER)), "{json}");
    }
}

#[test]
fn an_inactive_context_leaves_last_seen_alone() {
    let planned = ops(json!({"type": "identify", "userId": "u", "context": {"active": false}, "traits": {}}));
    assert!(planned[0]["attributes"].get("last_seen_at").is_none(), "{planned}");
}

#[test]
fn companies_marked_remove_are_detached() {
    let planned = ops(json!({"type": "identify", "userId": "u", "traits": {"companies": [
        {"id": 7, "name": "Seven"}, {"id": "old", "remove": true}, {"name": "no id"}
    ]}}));
    let kinds: Vec<&str> = planned.as_array().unwrap().iter().map(|op| op["op"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["upsert_contact", "upsert_company", "attach_company", "detach_company"]);
    assert_eq!(planned[1]["company_id"], "7");
    assert_eq!(planned[3], json!({"op": "detach_company", "contact": {"external_id": "u"}, "company_id": "old"}));
}

#[test]
fn track_puts_money_first_in_whole_cents_and_keeps_ten_keys_in_order() {
    let planned = plan(json!({
        "type": "track", "userId": "u", "event": "Order Completed", "timestamp": "2024-05-01T12:00:00Z",
        "properties": {
            "id": "ord-1", "total": 12.0, "revenue": 9.995, "currency": "EUR",
            "shipped_date": "2024-05-02T00:00:00Z", "invoice": {"url": "https://example.com/i/1", "value": "Invoice 1"},
            "shipping": {"method": "post", "days": 3}, "items": [1, 2], "note": null,
            "k1": 1, "k2": 2, "k3": 3, "k4": 4, "k5": 5
        }
    }));
    let submission = &serde_json::to_value(&planned.operations).unwrap()[0];
    assert_eq!(submission["contact"], json!({"external_id": "u"}), "properties.id never names the contact");
    assert_eq!(submission["created_at"], NOON);
    let keys: Vec<&String> = submission["metadata"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["price", "id", "total", "shipped_date", "invoice", "shipping_method", "shipping_days", "k1", "k2", "k3"]
    );
    assert_eq!(submission["metadata"]["price"], json!({"amount": 1000, "currency": "eur"}));
    assert_eq!(submission["metadata"]["shipped_date"], 1714608000);
    assert_eq!(submission["metadata"]["invoice"], json!({"url": "https://example.com/i/1", "value": "Invoice 1"}));
    let dropped: Vec<&str> = planned.dropped.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(dropped, ["properties.items", "properties.note", "properties.k4", "properties.k5"]);
}

#[test]
fn track_money_defaults_to_usd_and_falls_back_to_total_then_value() {
    let planned = ops(json!({"type": "track", "userId": "u", "event": "Paid", "properties": {"value": "19.99"}}));
    assert_eq!(planned[0]["metadata"], json!({"price": {"amount": 1999, "currency": "usd"}}));
}

#[test]
fn track_without_a_user_id_names_the_contact_by_email() {
    let planned = ops(
        json!({"type": "track", "anonymousId": "a", "event": "Signed.Up$", "properties": {"email": "x@example.com"}}),
    );
    assert_eq!(planned[0]["contact"], json!({"email": "x@example.com"}));
    assert_eq!(planned[0]["event_name"], "Signed-Up-");
}

#[test]
fn a_page_view_becomes_page_viewed_with_what_the_page_says() {
    let planned = ops(json!({
        "type": "page", "userId": "u", "name": "Pricing", "category": "Marketing",
        "properties": {"title": "Pricing - Example", "referrer": "https://google.com/"},
        "context": {"page": {"url": "https://example.com/pricing", "path": "/pricing"}}
    }));
    assert_eq!(planned[0]["event_name"], "page_viewed");
    assert_eq!(
        planned[0]["metadata"],
        json!({"url": "https://example.com/pricing", "path": "/pricing", "title": "Pricing - Example",
               "referrer": "https://google.com/", "name": "Pricing", "category": "Marketing"})
    );
}

#[test]
fn a_screen_view_becomes_screen_viewed_with_its_name() {
    let planned = ops(json!({"type": "screen", "userId": "u", "name": "Settings", "properties": {"section": "x"}}));
    assert_eq!(planned[0]["event_name"], "screen_viewed");
    assert_eq!(planned[0]["metadata"], json!({"name": "Settings"}));
}

#[test]
fn group_upserts_the_company_from_its_own_traits_then_attaches_the_contact() {
    let planned = ops(json!({
        "type": "group", "userId": "u", "groupId": "org-9",
        "traits": {"name": "Nine", "plan": "enterprise", "employees": 250.4, "monthly_spend": "99.6",
                   "createdAt": "2020-01-01T00:00:00Z", "website": "https://nine.example", "industry": "Retail",
                   "region": {"name": "EMEA"}}
    }));
    assert_eq!(
        planned,
        json!([
            {"op": "upsert_company", "company_id": "org-9",
             "attributes": {"name": "Nine", "plan": "enterprise", "website": "https://nine.example", "industry": "Retail",
                            "size": 250, "monthly_spend": 100, "remote_created_at": 1577836800},
             "custom_attributes": {"region_name": "EMEA"}},
            {"op": "attach_company", "contact": {"external_id": "u"}, "company_id": "org-9"}
        ])
    );
}

#[test]
fn alias_merges_the_previous_contact_into_the_user() {
    let planned = ops(json!({"type": "alias", "userId": "u-2", "previousId": "anon-1"}));
    assert_eq!(planned, json!([{"op": "merge", "from": {"external_id": "anon-1"}, "into": {"external_id": "u-2"}}]));
}

#[test]
fn a_price_property_never_overwrites_the_money() {
    // Segment's "Product Viewed" sends the amount twice, as `value` and as `price`.
    let planned = plan(json!({
        "type": "track", "userId": "u", "event": "Product Viewed",
        "properties": {"value": 18.99, "currency": "EUR", "price": 18.99, "sku": "s-1"}
    }));
    let metadata = &serde_json::to_value(&planned.operations).unwrap()[0]["metadata"];
    assert_eq!(metadata, &json!({"price": {"amount": 1899, "currency": "eur"}, "sku": "s-1"}));
    assert_eq!(
        planned.dropped,
        [Dropped { path: "properties.price".into(), reason: "price holds the amount of revenue, total or value" }]
    );

    let planned = plan(json!({"type": "track", "userId": "u", "event": "Viewed", "properties": {"price": 18.99}}));
    assert_eq!(serde_json::to_value(&planned.operations).unwrap()[0]["metadata"], json!({"price": 18.99}));
    assert_eq!(planned.dropped, [], "without money, price is an ordinary property");
}

#[test]
fn a_flattened_name_keeps_its_first_value_and_drops_the_later_one() {
    let taken = "another property already has this name once flattened";
    let planned = plan(json!({
        "type": "track", "userId": "u", "event": "Shipped",
        "properties": {"shipping_method": "a", "shipping": {"method": "b", "days": 3}}
    }));
    let metadata = &serde_json::to_value(&planned.operations).unwrap()[0]["metadata"];
    assert_eq!(metadata.to_string(), json!({"shipping_method": "a", "shipping_days": 3}).to_string());
    assert_eq!(planned.dropped, [Dropped { path: "properties.shipping.method".into(), reason: taken }]);

    let planned = plan(json!({
        "type": "track", "userId": "u", "event": "Shipped",
        "properties": {"shipping": {"method": "b"}, "shipping_method": "a"}
    }));
    assert_eq!(serde_json::to_value(&planned.operations).unwrap()[0]["metadata"], json!({"shipping_method": "b"}));
    assert_eq!(planned.dropped, [Dropped { path: "properties.shipping_method".into(), reason: taken }]);

    let planned = plan(json!({
        "type": "identify", "userId": "u", "traits": {"address_city": "Paris", "address": {"city": "Lyon"}}
    }));
    assert_eq!(
        serde_json::to_value(&planned.operations).unwrap()[0]["custom_attributes"],
        json!({"address_city": "Paris"})
    );
    assert_eq!(planned.dropped, [Dropped { path: "traits.address.city".into(), reason: taken }]);
}

#[test]
fn identify_plans_the_company_and_the_companies_once_each() {
    let planned = plan(json!({"type": "identify", "userId": "u", "timestamp": "2024-05-01T12:00:00Z", "traits": {
        "company": {"id": "org-1", "name": "One"},
        "companies": [{"id": "org-2", "name": "Two"}, {"id": "org-1", "name": "One again"}, {"id": "org-3", "remove": true}]
    }}));
    assert_eq!(
        serde_json::to_value(&planned.operations).unwrap(),
        json!([
            {"op": "upsert_contact", "key": {"external_id": "u"}, "role": "user", "attributes": {"last_seen_at": NOON},
             "custom_attributes": {}},
            {"op": "upsert_company", "company_id": "org-1", "attributes": {"name": "One"}, "custom_attributes": {}},
            {"op": "attach_company", "contact": {"external_id": "u"}, "company_id": "org-1"},
            {"op": "upsert_company", "company_id": "org-2", "attributes": {"name": "Two"}, "custom_attributes": {}},
            {"op": "attach_company", "contact": {"external_id": "u"}, "company_id": "org-2"},
            {"op": "detach_company", "contact": {"external_id": "u"}, "company_id": "org-3"}
        ])
    );
    assert_eq!(
        planned.dropped,
        [Dropped { path: "traits.companies[1]".into(), reason: "an earlier company has the same id" }]
    );
}

#[test]
fn companies_that_is_not_a_list_is_dropped_and_the_company_still_planned() {
    let planned = plan(json!({"type": "identify", "userId": "u", "traits": {
        "company": {"id": "org-1"}, "companies": {"id": "org-2"}
    }}));
    let kinds: Vec<_> = planned.operations.iter().map(|op| serde_json::to_value(op).unwrap()["op"].clone()).collect();
    assert_eq!(kinds, ["upsert_contact", "upsert_company", "attach_company"]);
    assert_eq!(
        planned.dropped,
        [Dropped { path: "traits.companies".into(), reason: "companies must be a list of companies" }]
    );
}

#[test]
fn a_malformed_currency_is_dropped_and_usd_used() {
    for currency in [json!("euro"), json!("€"), json!(""), json!(978), json!(null)] {
        let planned = plan(json!({
            "type": "track", "userId": "u", "event": "Paid", "properties": {"revenue": 10, "currency": currency}
        }));
        let metadata = &serde_json::to_value(&planned.operations).unwrap()[0]["metadata"];
        assert_eq!(metadata, &json!({"price": {"amount": 1000, "currency": "usd"}}), "{currency}");
        assert_eq!(
            planned.dropped,
            [Dropped { path: "properties.currency".into(), reason: "not a 3-letter currency code: USD was used" }],
            "{currency}"
        );
    }
}

#[test]
fn dropped_nested_values_name_where_they_were_sent() {
    let planned = plan(json!({
        "type": "track", "userId": "u", "event": "Opened",
        "properties": {"k1": 1, "k2": 2, "k3": 3, "k4": 4, "k5": 5, "k6": 6, "k7": 7, "k8": 8,
                       "utm": {"source": "a", "medium": null, "campaign": "c", "term": "d"}}
    }));
    let dropped: Vec<(&str, &str)> = planned.dropped.iter().map(|d| (d.path.as_str(), d.reason)).collect();
    assert_eq!(
        dropped,
        [
            ("properties.utm.medium", "Intercom metadata cannot hold null"),
            ("properties.utm.term", "Intercom keeps at most 10 metadata keys"),
        ]
    );
}

#[test]
fn identify_sends_time_like_traits_as_unix_seconds_and_lists_them_as_dates() {
    let planned = plan(json!({"type": "identify", "userId": "u", "traits": {
        "trial_ends_at": 1714564800123u64, "last_order": "2024-05-01T12:00:00Z", "renewal_date": "soon",
        "churned_at": null, "plan": "pro",
        "company": {"id": "org-1", "createdAt": 1714564800, "contract_ends_at": "1714564800", "tier": "gold"}
    }}));
    let operations = serde_json::to_value(&planned.operations).unwrap();
    assert_eq!(
        operations[0]["custom_attributes"].to_string(),
        json!({"trial_ends_at": NOON, "last_order": NOON, "renewal_date": "soon", "churned_at": null, "plan": "pro"})
            .to_string()
    );
    assert_eq!(operations[0]["dates"], json!(["trial_ends_at", "last_order"]), "a null or a non-time is no date");
    assert_eq!(operations[1]["attributes"], json!({"remote_created_at": NOON}));
    assert_eq!(operations[1]["custom_attributes"], json!({"contract_ends_at": NOON, "tier": "gold"}));
    assert_eq!(operations[1]["dates"], json!(["contract_ends_at"]));
    assert_eq!(planned.dropped, []);
}

#[test]
fn an_upsert_without_times_lists_no_dates_and_serialises_none() {
    let planned = plan(json!({"type": "identify", "userId": "u", "traits": {"plan": "pro"}}));
    let Operation::UpsertContact(upsert) = &planned.operations[0] else { panic!("{planned:?}") };
    assert!(upsert.dates.is_empty());
    assert!(serde_json::to_value(upsert).unwrap().get("dates").is_none());
}

#[test]
fn attribute_names_intercom_refuses_are_dropped_naming_the_rule() {
    let planned = plan(json!({"type": "identify", "userId": "u", "traits": {
        "Mithril Shirt": 1, "€_spent": 2, "!nv@l!d n@me": 3, "price$": 4, "utm": {"source?": "x", "medium": "y"}
    }}));
    let operations = serde_json::to_value(&planned.operations).unwrap();
    assert_eq!(operations[0]["custom_attributes"], json!({"Mithril Shirt": 1, "€_spent": 2, "utm_medium": "y"}));
    let rule =
        "Intercom attribute names hold only letters, digits, currency symbols but '$', '_', '-' and inner spaces";
    let dropped: Vec<(&str, &str)> = planned.dropped.iter().map(|d| (d.path.as_str(), d.reason)).collect();
    assert_eq!(dropped, [("traits.!nv@l!d n@me", rule), ("traits.price$", rule), ("traits.utm.source?", rule)]);
}

#[test]
fn an_owner_id_is_sent_as_the_admin_ids_text_and_anything_else_is_dropped() {
    for (owner, sent) in [(json!(991266252), json!("991266252")), (json!(" 991266252 "), json!("991266252"))] {
        let planned = ops(json!({"type": "identify", "userId": "u", "traits": {"ownerId": owner}}));
        assert_eq!(planned[0]["attributes"]["owner_id"], sent, "{owner}");
    }
    for owner in [json!("ada@example.com"), json!(-3), json!(1.5), json!(null), json!({"id": 1})] {
        let planned = plan(json!({"type": "identify", "userId": "u", "traits": {"owner_id": owner}}));
        let operations = serde_json::to_value(&planned.operations).unwrap();
        assert!(operations[0]["attributes"].get("owner_id").is_none(), "{owner}");
        assert_eq!(
            planned.dropped,
            [Dropped {
                path: "traits.owner_id".into(),
                reason: "an owner_id is an admin's id: a whole number or its digits"
            }],
            "{owner}"
        );
    }
}

#[test]
fn monthly_spend_and_size_beyond_intercoms_integer_are_capped_with_a_reason() {
    let planned = plan(json!({"type": "group", "userId": "u", "groupId": "org-1", "traits": {
        "employees": -4, "monthlySpend": "99999999999.5"
    }}));
    let operations = serde_json::to_value(&planned.operations).unwrap();
    assert_eq!(operations[0]["attributes"], json!({"size": 0, "monthly_spend": 2147483647}));
    assert_eq!(
        planned.dropped,
        [
            Dropped { path: "traits.employees".into(), reason: "Intercom holds no negative number here: 0 was sent" },
            Dropped {
                path: "traits.monthlySpend".into(),
                reason: "Intercom holds at most 2147483647 here: 2147483647 was sent"
            },
        ]
    );
    let planned = plan(json!({"type": "group", "userId": "u", "groupId": "org-1", "traits": {"size": "lots"}}));
    assert_eq!(planned.dropped, [Dropped { path: "traits.size".into(), reason: "not a number Intercom can read" }]);
}

#[test]
fn a_refund_sends_its_negative_revenue_and_currency_as_plain_metadata_never_as_price() {
    let planned = plan(json!({"type": "track", "userId": "u", "event": "Order Refunded", "properties": {
        "order_id": "o-1", "revenue": -25.5, "currency": "EUR", "price": 25.5
    }}));
    assert_eq!(
        serde_json::to_value(&planned.operations).unwrap()[0]["metadata"],
        json!({"order_id": "o-1", "revenue": -25.5, "currency": "EUR", "price": 25.5})
    );
    assert_eq!(planned.dropped, []);
    for zero in [json!(0), json!("0.00"), json!(0.004)] {
        let planned = ops(json!({"type": "track", "userId": "u", "event": "Paid", "properties": {"total": zero}}));
        assert_eq!(planned[0]["metadata"], json!({"total": zero}), "{zero}");
    }
}

#[test]
fn a_zero_revenue_gives_the_price_to_the_next_positive_amount() {
    let planned = ops(json!({"type": "track", "userId": "u", "event": "Order Completed", "properties": {
        "revenue": 0, "total": "4.99", "currency": "gbp"
    }}));
    assert_eq!(planned[0]["metadata"], json!({"price": {"amount": 499, "currency": "gbp"}, "revenue": 0}));
}

#[test]
fn an_amount_too_large_for_cents_is_plain_metadata_and_never_panics() {
    let planned = ops(json!({"type": "track", "userId": "u", "event": "Paid", "properties": {
        "revenue": "99999999999999999.995", "value": "92233720368547758.075"
    }}));
    assert_eq!(planned[0]["metadata"], json!({"revenue": "99999999999999999.995", "value": "92233720368547758.075"}));
}

#[test]
fn booleans_in_event_metadata_are_sent_as_their_text() {
    let planned = ops(json!({"type": "track", "userId": "u", "event": "Upgraded", "properties": {
        "trial": false, "annual": true, "options": {"gift": true}
    }}));
    assert_eq!(planned[0]["metadata"], json!({"trial": "false", "annual": "true", "options_gift": "true"}));
}
