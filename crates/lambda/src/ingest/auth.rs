//! Write keys: kept only as SHA-256 digests, compared in constant time, read from HTTP Basic or the body.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::envelope::KeyKind;

/// The write keys this deployment accepts.
#[derive(Clone)]
pub struct WriteKeys {
    digests: Vec<([u8; 32], KeyKind)>,
}

impl std::fmt::Debug for WriteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteKeys([redacted; {}])", self.digests.len())
    }
}

impl WriteKeys {
    /// Keeps the digests of `keys`, all server keys; `None` when there is none.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a SecretString>) -> Option<WriteKeys> {
        WriteKeys::with_browser_keys(keys, [])
    }

    /// Server keys (secrets, trusted) and browser keys (public: they ship in every page); `None` when there is none.
    pub fn with_browser_keys<'a>(
        server: impl IntoIterator<Item = &'a SecretString>,
        browser: impl IntoIterator<Item = &'a SecretString>,
    ) -> Option<WriteKeys> {
        let server = server.into_iter().map(|key| (digest(key.expose_secret()), KeyKind::Server));
        let browser = browser.into_iter().map(|key| (digest(key.expose_secret()), KeyKind::Browser));
        let digests: Vec<([u8; 32], KeyKind)> = server.chain(browser).collect();
        (!digests.is_empty()).then_some(WriteKeys { digests })
    }

    #[cfg(test)]
    /// Whether `presented` is one of the keys.
    pub(crate) fn verify(&self, presented: &str) -> bool {
        self.kind_of(presented).is_some()
    }

    /// The kind of `presented`, if it is one of the keys. Hashing first makes every comparison the same length, and
    /// every key is compared, so the time taken says nothing about the keys.
    pub(crate) fn kind_of(&self, presented: &str) -> Option<KeyKind> {
        let presented = digest(presented);
        let (mut server, mut browser) = (Choice::from(0), Choice::from(0));
        for (key, kind) in &self.digests {
            let same = key.ct_eq(&presented);
            match kind {
                KeyKind::Server => server |= same,
                KeyKind::Browser => browser |= same,
            }
        }
        // A key listed as both counts as a server's (the configuration refuses that).
        if bool::from(server) {
            Some(KeyKind::Server)
        } else if bool::from(browser) {
            Some(KeyKind::Browser)
        } else {
            None
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Why an `Authorization` header is not a usable write key.
#[derive(Debug, PartialEq, Eq)]
pub enum BasicError {
    NotBasic,
    BadEncoding,
    EmptyUsername,
}

/// The username of an HTTP Basic `Authorization` header: where Segment's SDKs put the write key (password empty).
pub fn basic_username(header: &[u8]) -> Result<String, BasicError> {
    let header = std::str::from_utf8(header).map_err(|_| BasicError::BadEncoding)?.trim();
    let (scheme, credentials) = header.split_once(' ').ok_or(BasicError::NotBasic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicError::NotBasic);
    }
    let credentials = credentials.trim();
    let decoded = STANDARD
        .decode(credentials)
        .or_else(|_| STANDARD_NO_PAD.decode(credentials))
        .map_err(|_| BasicError::BadEncoding)?;
    let decoded = String::from_utf8(decoded).map_err(|_| BasicError::BadEncoding)?;
    let username = decoded.split_once(':').map_or(decoded.as_str(), |(user, _)| user);
    if username.is_empty() {
        return Err(BasicError::EmptyUsername);
    }
    Ok(username.to_owned())
}

/// The `writeKey` parameter of a query string, percent-decoded (`+` read as a space, as forms write it); `None` when
/// absent. Where RudderStack's JS SDK puts the key of a beacon, which can carry no header.
pub(crate) fn query_key(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("writeKey=")?.replace('+', " ");
        Some(percent_encoding::percent_decode_str(&value).decode_utf8_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> WriteKeys {
        let keys = [SecretString::from("key-one"), SecretString::from("key-two")];
        WriteKeys::new(&keys).unwrap()
    }

    #[test]
    fn any_configured_key_verifies_and_nothing_else_does() {
        assert!(keys().verify("key-one"));
        assert!(keys().verify("key-two"));
        for wrong in ["", "key-on", "key-one ", "KEY-ONE", "key-three"] {
            assert!(!keys().verify(wrong), "{wrong:?} verified");
        }
    }

    #[test]
    fn each_key_is_of_its_kind() {
        let keys = WriteKeys::with_browser_keys(&[SecretString::from("srv")], &[SecretString::from("pub")]).unwrap();
        assert_eq!(
            (keys.kind_of("srv"), keys.kind_of("pub"), keys.kind_of("other")),
            (Some(KeyKind::Server), Some(KeyKind::Browser), None)
        );
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let printed = format!("{:?}", keys());
        assert_eq!(printed, "WriteKeys([redacted; 2])");
    }

    #[test]
    fn no_keys_means_no_write_keys() {
        assert!(WriteKeys::new(&[]).is_none());
    }

    #[test]
    fn the_query_key_is_the_write_key_parameter_decoded() {
        assert_eq!(query_key("writeKey=abc").as_deref(), Some("abc"));
        assert_eq!(query_key("x=1&writeKey=a%2Bb%3D&y=2").as_deref(), Some("a+b="));
        assert_eq!(query_key("writeKey=").as_deref(), Some(""));
        assert_eq!(query_key("writekey=abc&key=abc"), None);
    }

    #[test]
    fn basic_username_reads_what_sdks_send() {
        // analytics-python and RudderStack: base64("KEY:"); some clients omit the colon or the padding.
        assert_eq!(basic_username(b"Basic a2V5LW9uZTo=").unwrap(), "key-one");
        assert_eq!(basic_username(b"basic a2V5LW9uZQ==").unwrap(), "key-one");
        assert_eq!(basic_username(b"Basic a2V5LW9uZTo").unwrap(), "key-one");
        assert_eq!(basic_username(b"Basic a2V5LW9uZTpwdw==").unwrap(), "key-one");
        assert_eq!(basic_username(b"Bearer a2V5LW9uZTo="), Err(BasicError::NotBasic));
        assert_eq!(basic_username(b"Basic !!!"), Err(BasicError::BadEncoding));
        assert_eq!(basic_username(b"Basic OnB3"), Err(BasicError::EmptyUsername));
    }
}
