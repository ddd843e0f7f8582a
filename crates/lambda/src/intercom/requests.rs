//! Intercom's request shapes and answer readers, pure: what each endpoint takes under the pinned version, and what its
//! answers say. The executor only orchestrates; a new API version touches this file.

use std::collections::HashSet;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{ApiVersion, CompanyId, ContactId, DataType, IntercomError, Model, TagId};

/// One call: method, path (with its query) and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) body: Option<Value>,
}

impl Request {
    fn new(method: Method, path: String, body: Option<Value>) -> Request {
        Request { method, path, body }
    }
}

/// What differs between the API versions the request builders are written for (2.15 and 2.16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dialect {
    /// `owner_id` is a string in 2.16 (contact schema, spec line 28087) and an integer in 2.15.
    owner_id_is_string: bool,
    /// 2.16 refuses to merge contacts that share no email or phone unless told to (spec lines 8650-8663, 32430).
    merge_needs_skip_validation: bool,
}

impl Dialect {
    /// The dialect of `version`.
    pub(crate) fn of(version: ApiVersion) -> Dialect {
        let v2_16 = version >= ApiVersion::V2_16;
        Dialect { owner_id_is_string: v2_16, merge_needs_skip_validation: v2_16 }
    }

    /// `owner_id` in this version's type; `None` for an id that is not a whole number (Intercom's admin ids are).
    pub(crate) fn owner_id(self, owner: &str) -> Option<Value> {
        let owner = owner.trim();
        let digits = !owner.is_empty() && owner.bytes().all(|b| b.is_ascii_digit());
        match (digits, self.owner_id_is_string) {
            (false, _) => None,
            (true, true) => Some(Value::from(owner)),
            (true, false) => owner.parse::<u64>().ok().map(Value::from),
        }
    }
}

/// Path segments are percent-encoded: an external id may hold `/`, `?`, `#` or spaces.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// A request's path as a log line may show it: a user's external_id (their userId, personal data) left out.
pub(crate) fn path_for_logs(path: &str) -> std::borrow::Cow<'_, str> {
    const BY_EXTERNAL_ID: &str = "/contacts/find_by_external_id/";
    match path.find(BY_EXTERNAL_ID) {
        Some(at) => format!("{}{{external_id}}", &path[..at + BY_EXTERNAL_ID.len()]).into(),
        None => path.into(),
    }
}

/// The fields of a contact or company write, as the mapping planned them and the checks left them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields<'a> {
    /// Intercom's own fields (`email`, `name`, `owner_id` as text…).
    pub(crate) attributes: &'a Map<String, Value>,
    pub(crate) custom_attributes: &'a Map<String, Value>,
}

impl Dialect {
    fn contact_body(self, mut body: Map<String, Value>, fields: &Fields<'_>) -> Map<String, Value> {
        for (name, value) in fields.attributes {
            if name == "owner_id" {
                // The mapping keeps the id as text; the version decides its type.
                if let Some(owner) = value.as_str().and_then(|owner| self.owner_id(owner)) {
                    body.insert(name.clone(), owner);
                }
                continue;
            }
            body.insert(name.clone(), value.clone());
        }
        if !fields.custom_attributes.is_empty() {
            body.insert("custom_attributes".into(), Value::Object(fields.custom_attributes.clone()));
        }
        body
    }

    /// `POST /contacts` for a user with `external_id`.
    pub(crate) fn create_user(self, external_id: &str, fields: &Fields<'_>) -> Request {
        let mut body = Map::new();
        body.insert("role".into(), json!("user"));
        body.insert("external_id".into(), json!(external_id));
        Request::new(Method::POST, "/contacts".into(), Some(Value::Object(self.contact_body(body, fields))))
    }

    /// `POST /contacts` for a lead: by email, never with an external_id (leads carry none: spec line 9127; Segment's
    /// Intercom destination: "When creating a lead, Intercom doesn't accept an external_id").
    pub(crate) fn create_lead(self, email: &str, fields: &Fields<'_>) -> Request {
        let mut body = Map::new();
        body.insert("role".into(), json!("lead"));
        body.insert("email".into(), json!(email));
        Request::new(Method::POST, "/contacts".into(), Some(Value::Object(self.contact_body(body, fields))))
    }

    /// `PUT /contacts/{id}`: never a role, so an update cannot demote a user ("Contact with user role can't be
    /// converted to a lead"); converting a lead to a user is [`Dialect::convert_to_user`].
    pub(crate) fn update_contact(self, id: &ContactId, fields: &Fields<'_>) -> Request {
        let body = self.contact_body(Map::new(), fields);
        Request::new(Method::PUT, format!("/contacts/{}", segment(id.as_str())), Some(Value::Object(body)))
    }

    /// `PUT /contacts/{id}` making a lead the user `external_id`, or giving a user a new external_id (an alias).
    pub(crate) fn convert_to_user(self, id: &ContactId, external_id: &str) -> Request {
        let body = json!({"role": "user", "external_id": external_id});
        Request::new(Method::PUT, format!("/contacts/{}", segment(id.as_str())), Some(body))
    }

    /// `POST /contacts/merge`: the lead `from` into the user `into`. Under 2.16 the two need not share an email or phone:
    /// an anonymous visitor and the user it becomes rarely do.
    pub(crate) fn merge(self, from: &ContactId, into: &ContactId) -> Request {
        let mut body = json!({"from": from.as_str(), "into": into.as_str()});
        if self.merge_needs_skip_validation {
            body["skip_duplicate_validation"] = json!(true);
        }
        Request::new(Method::POST, "/contacts/merge".into(), Some(body))
    }
}

/// `GET /contacts/{id}`.
pub(crate) fn get_contact(id: &ContactId) -> Request {
    Request::new(Method::GET, format!("/contacts/{}", segment(id.as_str())), None)
}

/// `GET /contacts/find_by_external_id/{external_id}`: users only, and no search index (no lag behind new contacts).
pub(crate) fn find_by_external_id(external_id: &str) -> Request {
    Request::new(Method::GET, format!("/contacts/find_by_external_id/{}", segment(external_id)), None)
}

/// `POST /contacts/unarchive` for an archived contact a 409 named.
pub(crate) fn unarchive(id: &ContactId) -> Request {
    Request::new(Method::POST, format!("/contacts/{}/unarchive", segment(id.as_str())), None)
}

/// `POST /contacts/search` for contacts holding `email`, the most recently updated first. The index lags minutes behind
/// new contacts (spec line 8734): a miss proves nothing about the last few minutes.
pub(crate) fn search_email(email: &str) -> Request {
    let query = json!({
        "query": {"field": "email", "operator": "=", "value": email},
        "sort": {"field": "updated_at", "order": "descending"},
        "pagination": {"per_page": 5},
    });
    Request::new(Method::POST, "/contacts/search".into(), Some(query))
}

/// `POST /contacts/search` for leads whose custom attribute `name` is `value` (the relay's `anonymous_id`).
pub(crate) fn search_leads_by(name: &str, value: &str) -> Request {
    let query = json!({
        "query": {"operator": "AND", "value": [
            {"field": "role", "operator": "=", "value": "lead"},
            {"field": format!("custom_attributes.{name}"), "operator": "=", "value": value},
        ]},
        "sort": {"field": "updated_at", "order": "descending"},
        "pagination": {"per_page": 5},
    });
    Request::new(Method::POST, "/contacts/search".into(), Some(query))
}

/// `POST /events`, naming the contact by Intercom's id or by the user's external id.
pub(crate) fn submit_event(
    contact: EventContact<'_>,
    event_name: &str,
    created_at: i64,
    metadata: &Map<String, Value>,
) -> Request {
    let mut body = json!({"event_name": event_name, "created_at": created_at});
    match contact {
        EventContact::UserId(user_id) => body["user_id"] = json!(user_id),
        // Events for leads must name them by Intercom's id (SOURCE.txt).
        EventContact::Id(id) => body["id"] = json!(id.as_str()),
    }
    if !metadata.is_empty() {
        body["metadata"] = Value::Object(metadata.clone());
    }
    Request::new(Method::POST, "/events".into(), Some(body))
}

/// Who an event is about, as `POST /events` takes it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EventContact<'a> {
    UserId(&'a str),
    Id(&'a ContactId),
}

/// `POST /companies`: creates or updates by `company_id`.
pub(crate) fn upsert_company(
    company_id: &str,
    attributes: &Map<String, Value>,
    custom: &Map<String, Value>,
) -> Request {
    let mut body = Map::new();
    body.insert("company_id".into(), json!(company_id));
    body.extend(attributes.clone());
    if !custom.is_empty() {
        body.insert("custom_attributes".into(), Value::Object(custom.clone()));
    }
    Request::new(Method::POST, "/companies".into(), Some(Value::Object(body)))
}

/// `GET /companies?company_id=…`: a company by the id the app gave it; 404 when Intercom has none.
pub(crate) fn find_company(company_id: &str) -> Request {
    Request::new(Method::GET, format!("/companies?company_id={}", segment(company_id)), None)
}

/// `POST /contacts/{id}/companies` with Intercom's id of the company (not its company_id).
pub(crate) fn attach_company(contact_id: &ContactId, company: &CompanyId) -> Request {
    Request::new(
        Method::POST,
        format!("/contacts/{}/companies", segment(contact_id.as_str())),
        Some(json!({"id": company.as_str()})),
    )
}

/// `DELETE /contacts/{id}/companies/{company}`.
pub(crate) fn detach_company(contact_id: &ContactId, company: &CompanyId) -> Request {
    Request::new(
        Method::DELETE,
        format!("/contacts/{}/companies/{}", segment(contact_id.as_str()), segment(company.as_str())),
        None,
    )
}

/// `GET /data_attributes` of one model, archived ones included (they are listed only when asked for, and a name that is
/// archived cannot be created again).
pub(crate) fn list_data_attributes(model: Model) -> Request {
    Request::new(Method::GET, format!("/data_attributes?model={model}&include_archived=true"), None)
}

/// `POST /data_attributes`.
pub(crate) fn create_data_attribute(name: &str, model: Model, data_type: DataType) -> Request {
    let body = json!({"name": name, "model": model.as_str(), "data_type": data_type.as_str()});
    Request::new(Method::POST, "/data_attributes".into(), Some(body))
}

/// `GET /tags`: the workspace's tags (2.16 spec, `/tags`).
pub(crate) fn list_tags() -> Request {
    Request::new(Method::GET, "/tags".into(), None)
}

/// `POST /tags` with a name: the tag, made if the workspace lacks it ("Names are case insensitive").
pub(crate) fn create_tag(name: &str) -> Request {
    Request::new(Method::POST, "/tags".into(), Some(json!({"name": name})))
}

/// `POST /contacts/{id}/tags`: the contact carries the tag.
pub(crate) fn tag_contact(contact_id: &ContactId, tag_id: &TagId) -> Request {
    Request::new(
        Method::POST,
        format!("/contacts/{}/tags", segment(contact_id.as_str())),
        Some(json!({"id": tag_id.as_str()})),
    )
}

/// `DELETE /contacts/{id}/tags/{tag_id}`: the contact no longer carries the tag.
pub(crate) fn untag_contact(contact_id: &ContactId, tag_id: &TagId) -> Request {
    Request::new(
        Method::DELETE,
        format!("/contacts/{}/tags/{}", segment(contact_id.as_str()), segment(tag_id.as_str())),
        None,
    )
}

/// `GET /contacts/{id}/tags`: every tag the contact carries (its object shows ten at most).
pub(crate) fn list_contact_tags(contact_id: &ContactId) -> Request {
    Request::new(Method::GET, format!("/contacts/{}/tags", segment(contact_id.as_str())), None)
}

/// `POST /tags` with `companies`: the company (by its company_id) carries the tag named, made if need be; with
/// `untag`, no longer carries it (tag_company_request, untag_company_request).
pub(crate) fn tag_company(name: &str, company_id: &str, untag: bool) -> Request {
    let company =
        if untag { json!({"company_id": company_id, "untag": true}) } else { json!({"company_id": company_id}) };
    Request::new(Method::POST, "/tags".into(), Some(json!({"name": name, "companies": [company]})))
}

/// `DELETE /contacts/{id}`: the contact and what Intercom holds of it are erased.
pub(crate) fn delete_contact(id: &ContactId) -> Request {
    Request::new(Method::DELETE, format!("/contacts/{}", segment(id.as_str())), None)
}

/// The tags of a `tag_list` (`{"type": "list", "data": [tag…]}`) or a contact's tag list: `(id, name)`.
pub(crate) fn read_tags(answer: &Value) -> Vec<(TagId, String)> {
    let tags = answer["data"].as_array().into_iter().flatten();
    let read =
        |tag: &Value| Some((TagId::new(tag["id"].as_str()?), tag["name"].as_str().unwrap_or_default().to_owned()));
    tags.filter_map(read).collect()
}

/// The ids of the tags a contact object carries, when it shows them all (`tags.has_more` false; it shows ten at most).
pub(crate) fn contact_tag_ids(contact: &Value) -> Option<HashSet<TagId>> {
    let tags = contact.get("tags")?;
    if tags["has_more"].as_bool().unwrap_or(false) {
        return None;
    }
    let ids = tags["data"].as_array()?.iter().filter_map(|tag| tag["id"].as_str().map(TagId::new));
    Some(ids.collect())
}

/// The names of the tags a company object carries (`tags.tags`, a `tag.list`), lower-cased.
pub(crate) fn company_tag_names(company: &Value) -> Option<HashSet<String>> {
    let tags = company.get("tags")?.get("tags")?.as_array()?;
    Some(tags.iter().filter_map(|tag| tag["name"].as_str().map(str::to_lowercase)).collect())
}

/// `GET /admins`: the workspace's admins, who alone may own contacts.
pub(crate) fn list_admins() -> Request {
    Request::new(Method::GET, "/admins".into(), None)
}

// Readers.

/// The `id` of a contact, company or tag answer, as the id type the caller expects.
pub(crate) fn read_id<I: From<String>>(answer: &Value) -> Result<I, IntercomError> {
    let id = answer["id"].as_str().ok_or_else(|| IntercomError::Unexpected("an answer without an id".into()))?;
    Ok(I::from(id.to_owned()))
}

/// A contact as a lookup or search found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FoundContact {
    pub(crate) id: ContactId,
    pub(crate) is_lead: bool,
}

/// A contact answer's id and role.
pub(crate) fn read_contact(answer: &Value) -> Result<FoundContact, IntercomError> {
    Ok(FoundContact { id: read_id(answer)?, is_lead: answer["role"].as_str() == Some("lead") })
}

/// A contact as an erasure needs to see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Person {
    pub(crate) id: ContactId,
    pub(crate) is_lead: bool,
    pub(crate) external_id: Option<String>,
    pub(crate) email: Option<String>,
    /// Its custom attributes (what else names it: the relay's `anonymous_id` on a visitor's lead).
    pub(crate) custom_attributes: Map<String, Value>,
}

/// A contact answer as a [`Person`].
pub(crate) fn read_person(contact: &Value) -> Option<Person> {
    let text = |name: &str| contact[name].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
    Some(Person {
        id: ContactId::new(text("id")?),
        is_lead: contact["role"].as_str() == Some("lead"),
        external_id: text("external_id"),
        email: text("email"),
        custom_attributes: contact["custom_attributes"].as_object().cloned().unwrap_or_default(),
    })
}

/// A search's total and the people on its first page.
pub(crate) fn read_people(answer: &Value) -> (u64, Vec<Person>) {
    let people: Vec<Person> = answer["data"].as_array().into_iter().flatten().filter_map(read_person).collect();
    (answer["total_count"].as_u64().unwrap_or(people.len() as u64), people)
}

/// A search's total and its first page.
pub(crate) fn read_search(answer: &Value) -> (u64, Vec<FoundContact>) {
    let found: Vec<FoundContact> =
        answer["data"].as_array().into_iter().flatten().filter_map(|c| read_contact(c).ok()).collect();
    (answer["total_count"].as_u64().unwrap_or(found.len() as u64), found)
}

/// The admins' ids of a `GET /admins` answer.
pub(crate) fn read_admins(answer: &Value) -> Vec<String> {
    let admins = answer["admins"].as_array().or_else(|| answer["data"].as_array()).into_iter().flatten();
    admins
        .filter_map(|admin| match &admin["id"] {
            Value::String(id) => Some(id.clone()),
            Value::Number(id) => Some(id.to_string()),
            _ => None,
        })
        .collect()
}

/// The contact a merged contact's 410 points to: `Link: </contacts/{id}>; rel="canonical"` (spec lines 8322-8336).
pub(crate) fn canonical_contact(link: &str) -> Option<ContactId> {
    let target = link.split(',').find(|part| part.contains("canonical")).unwrap_or(link);
    let (_, rest) = target.split_once("/contacts/")?;
    let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).collect();
    (!id.is_empty()).then_some(ContactId::new(id))
}

/// The custom attribute a refused write names in single quotes ("Custom attribute 'plan' does not exist"), when it is
/// one of `sent`.
pub(crate) fn refused_attribute<'a>(message: &str, sent: impl IntoIterator<Item = &'a String>) -> Option<String> {
    let quoted: Vec<&str> = message.split('\'').skip(1).step_by(2).collect();
    sent.into_iter().find(|name| quoted.contains(&name.as_str())).cloned()
}

/// Whether a refused contact write was about its owner ("The owner specified is not a member of the workspace").
pub(crate) fn refused_owner(message: &str) -> bool {
    message.to_ascii_lowercase().contains("owner")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_in_a_log_line_names_no_user() {
        let path = find_by_external_id("ada@example.com").path;
        assert_eq!(path, "/contacts/find_by_external_id/ada%40example.com");
        assert_eq!(path_for_logs(&path), "/contacts/find_by_external_id/{external_id}");
        assert_eq!(path_for_logs("/contacts/123/tags"), "/contacts/123/tags");
    }

    fn body(request: &Request) -> &Value {
        request.body.as_ref().expect("a body")
    }

    #[test]
    fn owner_ids_are_strings_in_2_16_and_integers_in_2_15() {
        let attributes: Map<String, Value> =
            json!({"owner_id": "991266252", "name": "Ada"}).as_object().unwrap().clone();
        let fields = Fields { attributes: &attributes, custom_attributes: &Map::new() };
        assert_eq!(
            body(&Dialect::of(ApiVersion::V2_16).update_contact(&"c1".into(), &fields))["owner_id"],
            json!("991266252")
        );
        assert_eq!(
            body(&Dialect::of(ApiVersion::V2_15).update_contact(&"c1".into(), &fields))["owner_id"],
            json!(991266252)
        );
        assert_eq!(Dialect::of(ApiVersion::V2_16).owner_id("admin-7"), None);
    }

    #[test]
    fn an_update_never_carries_a_role_and_a_lead_never_an_external_id() {
        let empty = Map::new();
        let fields = Fields { attributes: &empty, custom_attributes: &empty };
        let update = Dialect::of(ApiVersion::V2_16).update_contact(&"c1".into(), &fields);
        assert_eq!((update.method.clone(), update.path.as_str()), (Method::PUT, "/contacts/c1"));
        assert_eq!(body(&update), &json!({}));
        let lead = Dialect::of(ApiVersion::V2_16).create_lead("a@example.com", &fields);
        assert_eq!(body(&lead), &json!({"role": "lead", "email": "a@example.com"}));
        let user = Dialect::of(ApiVersion::V2_16).create_user("u-1", &fields);
        assert_eq!(body(&user), &json!({"role": "user", "external_id": "u-1"}));
    }

    #[test]
    fn merges_skip_the_duplicate_check_only_where_2_16_makes_one() {
        assert_eq!(
            body(&Dialect::of(ApiVersion::V2_16).merge(&"l".into(), &"u".into()))["skip_duplicate_validation"],
            json!(true)
        );
        assert_eq!(
            body(&Dialect::of(ApiVersion::V2_15).merge(&"l".into(), &"u".into())),
            &json!({"from": "l", "into": "u"})
        );
    }

    #[test]
    fn external_ids_are_percent_encoded_in_paths() {
        assert_eq!(find_by_external_id("a/b c?#é").path, "/contacts/find_by_external_id/a%2Fb%20c%3F%23%C3%A9");
        assert_eq!(find_by_external_id("user-1_a.b~").path, "/contacts/find_by_external_id/user-1_a.b~");
    }

    #[test]
    fn a_merged_contacts_link_names_the_canonical_contact() {
        let link = r#"</contacts/6762f0df1bb69f9f2193bb84>; rel="canonical""#;
        assert_eq!(canonical_contact(link), Some("6762f0df1bb69f9f2193bb84".into()));
        assert_eq!(canonical_contact("<https://example.com/x>; rel=\"next\""), None);
    }

    #[test]
    fn a_refused_write_names_the_attribute_it_refused_when_it_was_sent() {
        let sent = ["plan".to_owned(), "tier".to_owned()];
        assert_eq!(refused_attribute("'tier' is not one of the options of 'Tier'", &sent).as_deref(), Some("tier"));
        assert_eq!(refused_attribute("Custom attribute 'nope' does not exist", &sent), None);
    }

    #[test]
    fn admins_are_read_by_id_whatever_its_json_type() {
        assert_eq!(read_admins(&json!({"type": "admin.list", "admins": [{"id": "7"}, {"id": 8}]})), ["7", "8"]);
    }
}
