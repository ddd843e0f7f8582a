//! Request bodies: content type and encoding, gzip with decompression stopped at the limit.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::MultiGzDecoder;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};

use super::IngestError;

/// The body as bytes, decompressed, at most `limit` bytes; anything past the limit is never decompressed.
pub(crate) fn read_body<'a>(headers: &HeaderMap, body: &'a [u8], limit: usize) -> Result<Cow<'a, [u8]>, IngestError> {
    check_content_type(headers)?;
    let encoding =
        headers.get(CONTENT_ENCODING).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_ascii_lowercase());
    let body: Cow<'a, [u8]> = match encoding.as_deref() {
        None | Some("" | "identity") => {
            if body.len() > limit {
                return Err(IngestError::PayloadTooLarge { limit });
            }
            Cow::Borrowed(body)
        }
        Some("gzip" | "x-gzip") => Cow::Owned(gunzip(body, limit)?),
        Some(other) => return Err(IngestError::UnsupportedEncoding(excerpt(other))),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::EmptyBody);
    }
    Ok(body)
}

fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(limit + 1));
    MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| IngestError::BadGzip(error.to_string()))?;
    if out.len() > limit {
        return Err(IngestError::PayloadTooLarge { limit });
    }
    Ok(out)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let Some(value) = headers.get(CONTENT_TYPE) else { return Ok(()) };
    let value = String::from_utf8_lossy(value.as_bytes());
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        // text/plain is what browsers send with sendBeacon; an empty type is what some HTTP clients send; RudderStack's
        // Node SDK sends its gzipped JSON as application/x-www-form-urlencoded (axios's default for a Buffer). The body
        // is read as JSON whatever the label, so a real form body is refused as malformed JSON.
        "application/json" | "text/plain" | "application/x-www-form-urlencoded" | "" => Ok(()),
        _ if essence.starts_with("application/") && essence.ends_with("+json") => Ok(()),
        _ => Err(IngestError::UnsupportedMediaType(excerpt(&essence))),
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(64).collect::<String>().escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect()
    }

    #[test]
    fn gzip_bodies_are_decompressed() {
        let body = gzip(br#"{"batch":[]}"#);
        let read = read_body(&headers(&[("content-encoding", "gzip")]), &body, 100).unwrap();
        assert_eq!(&*read, br#"{"batch":[]}"#);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let error = read_body(&headers(&[("content-encoding", "gzip")]), &bomb, 500 * 1024).unwrap_err();
        assert!(matches!(error, IngestError::PayloadTooLarge { limit: 512_000 }));
    }

    #[test]
    fn content_types_other_than_json_and_text_are_refused() {
        let ok = [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain;charset=UTF-8",
            "application/vnd.api+json",
            "application/x-www-form-urlencoded",
        ];
        for value in ok {
            let mut map = HeaderMap::new();
            map.insert(CONTENT_TYPE, value.parse().unwrap());
            assert!(read_body(&map, b"{}", 10).is_ok(), "{value}");
        }
        let refused = read_body(&headers(&[("content-type", "multipart/form-data; boundary=x")]), b"{}", 10);
        assert!(matches!(refused, Err(IngestError::UnsupportedMediaType(t)) if t == "multipart/form-data"));
    }
}
