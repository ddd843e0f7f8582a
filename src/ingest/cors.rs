//! CORS: which browser origins may send events, and the headers that tell the browser so.

use http::HeaderValue;

/// The origins allowed to call the API from a browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`*`): what Segment's API allows.
    Any,
    /// Exactly these origins, such as `https://app.example.com`.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Reads a comma-separated list; `*` allows any origin.
    pub fn parse(text: &str) -> Result<AllowedOrigins, String> {
        let origins: Vec<&str> = text.split(',').map(str::trim).filter(|o| !o.is_empty()).collect();
        if origins.is_empty() {
            return Err("must hold `*` or at least one origin such as https://app.example.com".into());
        }
        if origins.contains(&"*") {
            return Ok(AllowedOrigins::Any);
        }
        for origin in &origins {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            let valid = rest.is_some_and(|host| !host.is_empty() && !host.contains(['/', ' ', '?', '#']));
            if !valid {
                return Err(format!("`{origin}` is not an origin: write scheme://host[:port], without a path"));
            }
        }
        Ok(AllowedOrigins::List(origins.into_iter().map(|o| o.to_ascii_lowercase()).collect()))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, or `None` when it is not allowed.
    pub fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowedOrigins::List(list) => {
                let origin_text = origin.to_str().ok()?.to_ascii_lowercase();
                list.contains(&origin_text).then(|| origin.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_allows_only_its_origins() {
        let allowed = AllowedOrigins::parse("https://app.example.com, http://localhost:3000").unwrap();
        let origin = HeaderValue::from_static("https://App.example.com");
        assert_eq!(allowed.allow(&origin), Some(origin.clone()));
        assert_eq!(allowed.allow(&HeaderValue::from_static("https://evil.example.com")), None);
        assert_eq!(AllowedOrigins::parse("https://a.com,*").unwrap(), AllowedOrigins::Any);
    }

    #[test]
    fn what_is_not_an_origin_is_refused() {
        assert!(AllowedOrigins::parse("").is_err());
        assert!(AllowedOrigins::parse("app.example.com").unwrap_err().contains("`app.example.com` is not an origin"));
        assert!(AllowedOrigins::parse("https://app.example.com/").is_err());
    }
}
