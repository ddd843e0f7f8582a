//! Intercom's meaning, in one place: regions, API versions, ids, data attributes, request shapes, error kinds, retry
//! classes, rate-limit pacing, and the HTTP client. A new API version touches this folder and the sandbox, nothing else.

mod attributes;
mod client;
mod error;
mod ids;
mod rate_limit;
pub(crate) mod requests;
mod version;

pub use attributes::{
    AttributeRefusal, DataAttribute, DataType, MAX_CUSTOM_ATTRIBUTES, Model, attribute_refusal, read_data_attributes,
};
pub use client::{Exchange, IntercomApi, IntercomClient, IntercomError, Observer};
pub use error::{
    ConflictingContact, ErrorKind, ErrorList, IntercomErrorItem, RetryAction, classify, conflicting_contact, redact,
    request_keys,
};
pub use ids::{CompanyId, ContactId, TagId};
pub(crate) use rate_limit::RateLimit;
pub use version::{API_VERSIONS, ApiVersion, UnsupportedVersion};

/// Where a workspace's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    Us,
    Eu,
    Au,
}

impl Region {
    /// Reads `us`, `eu` or `au` (any case).
    pub(crate) fn parse(text: &str) -> Option<Region> {
        match text.trim().to_ascii_lowercase().as_str() {
            "us" => Some(Region::Us),
            "eu" => Some(Region::Eu),
            "au" => Some(Region::Au),
            _ => None,
        }
    }

    /// The region's API root.
    pub(crate) fn base_url(self) -> &'static str {
        match self {
            Region::Us => "https://api.intercom.io",
            Region::Eu => "https://api.eu.intercom.io",
            Region::Au => "https://api.au.intercom.io",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_map_to_their_hosts() {
        assert_eq!(Region::parse("EU").map(Region::base_url), Some("https://api.eu.intercom.io"));
        assert_eq!(Region::parse(" au ").map(Region::base_url), Some("https://api.au.intercom.io"));
        assert_eq!(Region::parse("us").map(Region::base_url), Some("https://api.intercom.io"));
        assert_eq!(Region::parse("ca"), None);
    }
}
