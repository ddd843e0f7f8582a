//! The Intercom client: regions, API versions, error decoding, retry classes, rate-limit pacing, and the HTTP client.

mod client;
mod error;
mod rate_limit;
pub mod requests;

pub use client::{Exchange, IntercomApi, IntercomClient, IntercomError, Observer};
pub use error::{
    ConflictingContact, ErrorKind, ErrorList, IntercomErrorItem, RetryAction, classify, conflicting_contact, redact,
    request_keys,
};
pub use rate_limit::RateLimit;

/// The API versions Intercom's OpenAPI spec lists for `Intercom-Version` (2.16 spec, `intercom_version` enum).
pub const API_VERSIONS: [&str; 22] = [
    "1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.8", "2.9", "2.10",
    "2.11", "2.12", "2.13", "2.14", "2.15", "2.16",
];

/// The versions whose specs the request builders are written to, the only ones `INTERCOM_API_VERSION` may name: 1.x is
/// another API, and our requests were never checked against the specs of 2.0–2.14.
pub const SUPPORTED_API_VERSIONS: [&str; 2] = ["2.15", "2.16"];

/// The version this build is written and tested against.
pub const DEFAULT_API_VERSION: &str = "2.16";

/// Where a workspace's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    Us,
    Eu,
    Au,
}

impl Region {
    /// Reads `us`, `eu` or `au` (any case).
    pub fn parse(text: &str) -> Option<Region> {
        match text.trim().to_ascii_lowercase().as_str() {
            "us" => Some(Region::Us),
            "eu" => Some(Region::Eu),
            "au" => Some(Region::Au),
            _ => None,
        }
    }

    /// The region's API root.
    pub fn base_url(self) -> &'static str {
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

    #[test]
    fn the_default_version_is_a_supported_one_and_every_supported_one_is_listed() {
        assert!(SUPPORTED_API_VERSIONS.contains(&DEFAULT_API_VERSION));
        assert!(SUPPORTED_API_VERSIONS.iter().all(|v| API_VERSIONS.contains(v)));
    }
}
