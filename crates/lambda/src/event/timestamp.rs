//! Timestamps: RFC 3339 in, RFC 3339 UTC with milliseconds out (Segment's form).

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Parses an RFC 3339 timestamp such as `2024-05-01T12:00:00.000Z` or `2024-05-01T14:00:00+02:00`, in UTC.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    read_timestamp(text).ok()
}

/// Why a timestamp was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampError {
    /// Not RFC 3339.
    Format,
    /// RFC 3339, but in UTC outside the years 0001–9999 (`0000-…`, or `9999-12-31T23:00:00-05:00`, which is in the
    /// year 10000): Intercom shows its Unix times as dates, and the envelope writes UTC years in four digits.
    Range,
}

/// [`parse_timestamp`], saying why not.
pub fn read_timestamp(text: &str) -> Result<OffsetDateTime, TimestampError> {
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TimestampError::Format)?;
    at.checked_to_offset(UtcOffset::UTC).filter(|utc| (1..=9999).contains(&utc.year())).ok_or(TimestampError::Range)
}

/// Writes `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`; years are kept within 0001–9999 (UTC) by the parser and skew correction.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    let mut out = String::with_capacity(24);
    push_timestamp(&mut out, at);
    out
}

/// Appends `at` as [`format_timestamp`] writes it, without allocating.
pub(crate) fn push_timestamp(out: &mut String, at: OffsetDateTime) {
    out.push_str(std::str::from_utf8(&digits(at)).expect("ASCII digits and separators"));
}

fn digits(at: OffsetDateTime) -> [u8; 24] {
    // Never panics: a time whose UTC year is beyond 9999 (which the parser refuses) is written as the latest one.
    let at = at.checked_to_offset(UtcOffset::UTC).unwrap_or(OffsetDateTime::new_utc(
        time::Date::from_calendar_date(9999, time::Month::December, 31).expect("a date"),
        time::Time::from_hms_milli(23, 59, 59, 999).expect("a time"),
    ));
    let mut out = [0u8; 24];
    let (year, month, day) = at.to_calendar_date();
    let (hour, minute, second, millisecond) = at.to_hms_milli();
    let fields: [(usize, u32, usize); 7] = [
        (0, year.clamp(0, 9999) as u32, 4),
        (5, u8::from(month).into(), 2),
        (8, day.into(), 2),
        (11, hour.into(), 2),
        (14, minute.into(), 2),
        (17, second.into(), 2),
        (20, millisecond.into(), 3),
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
    fn refuses_times_outside_the_years_0001_to_9999_in_utc() {
        for text in ["0000-05-01T12:00:00Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:00:00-05:00"] {
            assert_eq!(read_timestamp(text), Err(TimestampError::Range), "{text}");
        }
        let earliest = read_timestamp("0001-01-01T00:00:00Z").unwrap();
        assert_eq!(earliest.unix_timestamp(), -62_135_596_800);
        let latest = read_timestamp("9999-12-31T23:59:59.999+00:00").unwrap();
        assert_eq!(format_timestamp(latest), "9999-12-31T23:59:59.999Z");
        // Read in UTC: a local time late on 9999-12-31 west of Greenwich is the next year in UTC, refused above;
        // east of it, fine.
        assert_eq!(format_timestamp(read_timestamp("9999-12-31T23:00:00+05:00").unwrap()), "9999-12-31T18:00:00.000Z");
        assert_eq!(read_timestamp("2024-05-01"), Err(TimestampError::Format));
    }

    #[test]
    fn writing_a_time_beyond_9999_in_utc_never_panics() {
        let local = OffsetDateTime::parse("9999-12-31T23:00:00-05:00", &Rfc3339).unwrap();
        assert_eq!(format_timestamp(local), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn rejects_what_is_not_rfc_3339() {
        for text in ["2024-05-01", "2024-05-01T12:00:00", "1714564800", "yesterday", ""] {
            assert!(parse_timestamp(text).is_none(), "{text} was accepted");
        }
    }
}
