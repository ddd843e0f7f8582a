//! Fast checks of the JSON text serde_json skims without reading: values its `Value` parser would refuse, and how
//! deep objects and arrays nest.

use super::json::TopLevel;
use super::parse::FieldError;

/// Whether `text` may hold a number beyond f64's range or a lone UTF-16 surrogate escape. serde_json lets both through
/// when it skims raw values, but its `Value` parser (which the forwarder uses) refuses them, so such events are read in
/// full at ingest and refused there with a reason. Exponents of three digits and surrogate escapes are rare, so this fast
/// filter keeps the full read off the common path: it tests 32 bytes at a time with element-wise operations the compiler
/// turns into vector instructions, and looks byte by byte only at blocks holding a digit then `e`, or a backslash.
pub(super) fn may_hold_unreadable_values(text: &[u8]) -> bool {
    // A block is read with the byte before it (an exponent's digit may end the block before), so blocks start at 1.
    if exact_hits(text, 0, text.len().min(1)) {
        return true;
    }
    let (mut at, mut digit_blocks) = (1, 0);
    while at + SCAN_BLOCK <= text.len() {
        let (hit, all_digits) = scan_block(&text[at - 1..at + SCAN_BLOCK]);
        if hit && exact_hits(text, at, at + SCAN_BLOCK) {
            return true;
        }
        digit_blocks = if all_digits { digit_blocks + 1 } else { 0 };
        // A run of 300 digits (an integer beyond f64's range) covers at least 7 whole blocks wherever it starts.
        if digit_blocks >= 7 {
            return true;
        }
        at += SCAN_BLOCK;
    }
    exact_hits(text, at.min(text.len()), text.len())
}

const SCAN_BLOCK: usize = 32;

/// For the block `window[1..]` (`window[0]` is the byte before it): whether it holds a digit then `e`/`E`, or a
/// backslash; and whether it is digits throughout.
#[inline(always)]
fn scan_block(window: &[u8]) -> (bool, bool) {
    let (before, here) = (&window[..SCAN_BLOCK], &window[1..=SCAN_BLOCK]);
    let (mut hit, mut all_digits) = (0u8, 1u8);
    for i in 0..SCAN_BLOCK {
        let exponent = u8::from(is_digit(before[i])) & u8::from(here[i] | 0x20 == b'e');
        hit |= exponent | u8::from(here[i] == b'\\');
        all_digits &= u8::from(is_digit(here[i]));
    }
    (hit != 0, all_digits != 0)
}

fn is_digit(byte: u8) -> bool {
    byte.wrapping_sub(b'0') < 10
}

/// Whether `text[from..to]` holds an exponent of three or more digits, or a `\u` escape of a surrogate (`\uD800` to
/// `\uDFFF`).
fn exact_hits(text: &[u8], from: usize, to: usize) -> bool {
    memchr::memchr3_iter(b'\\', b'e', b'E', &text[from..to]).map(|i| from + i).any(|i| match text[i] {
        b'\\' => {
            text.get(i + 1) == Some(&b'u')
                && matches!(text.get(i + 2), Some(b'd' | b'D'))
                && matches!(text.get(i + 3), Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
        }
        b'e' | b'E' if i > 0 && is_digit(text[i - 1]) => {
            let rest = &text[i + 1..];
            let digits = rest.strip_prefix(b"+").or_else(|| rest.strip_prefix(b"-")).unwrap_or(rest);
            digits.iter().take_while(|b| is_digit(**b)).count() >= 3
        }
        _ => false,
    })
}

/// The members whose values serde_json's `Value` parser refuses.
pub(super) fn unreadable_values(members: &TopLevel<'_>) -> Vec<FieldError> {
    members
        .0
        .iter()
        .filter_map(|(key, value)| {
            let error = serde_json::from_str::<serde_json::Value>(value.get()).err()?;
            Some(FieldError::new(
                key.as_ref(),
                format!(
                    "holds a value JSON tools cannot represent (a number beyond ±1.8e308 or a lone surrogate): {error}"
                ),
            ))
        })
        .collect()
}

/// The deepest nesting of objects and arrays in valid JSON text; strings are skipped with memchr.
pub(super) fn nesting_depth(json: &str) -> usize {
    let bytes = json.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => loop {
                match memchr::memchr2(b'"', b'\\', &bytes[i + 1..]) {
                    Some(j) if bytes[i + 1 + j] == b'\\' => i += j + 2,
                    Some(j) => {
                        i += j + 1;
                        break;
                    }
                    None => return deepest,
                }
            },
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter's reference: every exponent start, surrogate escape and digit run, byte by byte.
    fn naive_unreadable(text: &[u8]) -> (bool, usize) {
        let long_exponent = (1..text.len()).any(|i| {
            let rest = &text[i + 1..];
            let exponent = match rest.first() {
                Some(b'+' | b'-') => &rest[1..],
                _ => rest,
            };
            text[i - 1].is_ascii_digit()
                && matches!(text[i], b'e' | b'E')
                && exponent.iter().take_while(|b| b.is_ascii_digit()).count() >= 3
        });
        let surrogate = text.windows(4).any(|w| {
            w[0] == b'\\'
                && w[1] == b'u'
                && matches!(w[2], b'd' | b'D')
                && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
        });
        let longest_run = text.split(|b| !is_digit(*b)).map(<[u8]>::len).max().unwrap_or(0);
        (long_exponent || surrogate || longest_run >= 300, longest_run)
    }

    #[test]
    fn the_unreadable_value_filter_finds_what_the_byte_by_byte_scan_finds_wherever_it_falls() {
        // Bytes that differ from a digit, an 'e' or a backslash only in the high bit, or sit just outside their ranges.
        let alphabet = [
            b'0', b'9', b'/', b':', b'e', b'E', b'a', b'+', b'-', b'\\', b'u', b'd', b'8', b'f', 0xB0, 0xB9, 0xE5,
            0xC5, 0xDC, b' ',
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut found = 0;
        for round in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 140) as usize;
            let mut text: Vec<u8> =
                (0..len).map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()]).collect();
            if round % 50 == 0 {
                // A digit run of 200 to 400 somewhere: integers near f64's limit of 309 digits.
                let at = (seed >> 20) as usize % (len + 1);
                let run = 200 + (seed >> 30) as usize % 200;
                text.splice(at..at, std::iter::repeat_n(b'7', run));
            }
            let (expected, longest_run) = naive_unreadable(&text);
            let filtered = may_hold_unreadable_values(&text);
            found += usize::from(expected);
            if longest_run < 224 {
                assert_eq!(filtered, expected, "{:?}", String::from_utf8_lossy(&text));
            } else {
                // Runs of 224 to 299 digits may be flagged too (it is a filter): the full read settles them.
                assert!(filtered || !expected, "{:?}", String::from_utf8_lossy(&text));
            }
        }
        assert!(found > 500, "the generator should make unreadable texts often enough to test: {found}");
    }
}
