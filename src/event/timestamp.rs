//! Timestamps: RFC 3339 in, RFC 3339 UTC with milliseconds out (Segment's form).

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Parses an RFC 3339 timestamp such as `2024-05-01T12:00:00.000Z` or `2024-05-01T14:00:00+02:00`.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Writes `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`; years are kept within 0000–9999 by the parser and skew correction.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    Millis(at).as_str_with(str::to_owned)
}

/// A timestamp that serialises as `YYYY-MM-DDTHH:MM:SS.mmmZ` without allocating.
#[derive(Clone, Copy, Debug)]
pub struct Millis(pub OffsetDateTime);

impl serde::Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_str_with(|text| serializer.serialize_str(text))
    }
}

impl Millis {
    fn as_str_with<T>(self, f: impl FnOnce(&str) -> T) -> T {
        let out = digits(self.0);
        f(std::str::from_utf8(&out).expect("ASCII digits and separators"))
    }
}

fn digits(at: OffsetDateTime) -> [u8; 24] {
    let at = at.to_offset(UtcOffset::UTC);
    let mut out = [0u8; 24];
    let fields: [(usize, u32, usize); 7] = [
        (0, at.year().clamp(0, 9999) as u32, 4),
        (5, u8::from(at.month()).into(), 2),
        (8, at.day().into(), 2),
        (11, at.hour().into(), 2),
        (14, at.minute().into(), 2),
        (17, at.second().into(), 2),
        (20, at.millisecond().into(), 3),
    ];
    for (start, mut value, width) in fields {
        for i in (0..width).rev() {
            out[start + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    for (i, b) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (23, b'Z')] {
        out[i] = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_utc_with_milliseconds() {
        let at = parse_timestamp("2024-05-01T14:03:09.5+02:00").unwrap();
        assert_eq!(format_timestamp(at), "2024-05-01T12:03:09.500Z");
        let at = parse_timestamp("0999-01-02T03:04:05.006789Z").unwrap();
        assert_eq!(format_timestamp(at), "0999-01-02T03:04:05.006Z");
    }

    #[test]
    fn rejects_what_is_not_rfc_3339() {
        for text in ["2024-05-01", "2024-05-01T12:00:00", "1714564800", "yesterday", ""] {
            assert!(parse_timestamp(text).is_none(), "{text} was accepted");
        }
    }
}
