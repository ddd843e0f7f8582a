//! The Intercom API versions the relay's requests are written to, parsed once from `INTERCOM_API_VERSION`.

use std::fmt;

/// The API versions Intercom's OpenAPI spec lists for `Intercom-Version` (2.16 spec, `intercom_version` enum).
pub const API_VERSIONS: [&str; 22] = [
    "1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.8", "2.9", "2.10",
    "2.11", "2.12", "2.13", "2.14", "2.15", "2.16",
];

/// A version whose spec the request builders are written to: 1.x is another API, and our requests were never checked
/// against the specs of 2.0–2.14.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiVersion {
    V2_15,
    /// The version this build is written and tested against.
    #[default]
    V2_16,
}

/// `INTERCOM_API_VERSION` names a version the requests are not written for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a version intercom-relay's requests are written for; use one of {supported}", supported = ApiVersion::SUPPORTED.map(ApiVersion::as_str).join(", "))]
pub struct UnsupportedVersion(pub String);

impl ApiVersion {
    /// Every version the requests are written for, oldest first.
    pub(crate) const SUPPORTED: [ApiVersion; 2] = [ApiVersion::V2_15, ApiVersion::V2_16];

    /// Reads `2.15` or `2.16` (spaces around it ignored); any other is refused, never read as another.
    pub fn parse(text: &str) -> Result<ApiVersion, UnsupportedVersion> {
        match text.trim() {
            "2.15" => Ok(ApiVersion::V2_15),
            "2.16" => Ok(ApiVersion::V2_16),
            other => Err(UnsupportedVersion(other.to_owned())),
        }
    }

    /// As `Intercom-Version` carries it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V2_15 => "2.15",
            ApiVersion::V2_16 => "2.16",
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supported_versions_read_back_and_are_listed_by_intercom() {
        for version in ApiVersion::SUPPORTED {
            assert_eq!(ApiVersion::parse(version.as_str()), Ok(version));
            assert!(API_VERSIONS.contains(&version.as_str()));
        }
        assert_eq!(ApiVersion::parse(" 2.16 "), Ok(ApiVersion::V2_16));
        assert_eq!(ApiVersion::default(), ApiVersion::V2_16);
    }

    #[test]
    fn any_other_version_is_refused_with_the_supported_ones_named() {
        for text in ["2.14", "2.17", "1.4", "", "latest"] {
            let error = ApiVersion::parse(text).unwrap_err().to_string();
            assert!(error.ends_with("use one of 2.15, 2.16"), "{error}");
        }
    }
}
