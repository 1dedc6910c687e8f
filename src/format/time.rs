//! Times as people and programs read them: RFC 3339 in UTC.

/// `ns` nanoseconds since the epoch as RFC 3339 UTC, with nanoseconds when
/// there are any (`2026-12-05T06:01:57Z`, `2026-12-05T06:01:57.000000001Z`).
pub fn rfc3339_ns(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nsec = ns.rem_euclid(1_000_000_000) as u32;
    rfc3339(
        i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX }),
        nsec,
    )
}

/// `secs` (+ `nsec`) since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: i64, nsec: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    if nsec == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{nsec:09}Z")
    }
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days end each 400-year era.
    let z = z.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day number (days since 1970-01-01) of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of a UTC time written `YYYY-MM-DDTHH:MM:SS`
/// (RFC 3339, fractions ignored, `Z` or `+00:00`) or compactly
/// `YYYYMMDDTHHMMSSZ` (as SigV4's `X-Amz-Date`). `None` for anything else,
/// other offsets included.
pub fn parse_utc(s: &str) -> Option<i64> {
    let digits: String = s.chars().filter(char::is_ascii_digit).take(14).collect();
    let b = s.as_bytes();
    let compact = b.len() == 16 && b[8] == b'T' && b[15] == b'Z';
    let extended = b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && (b[10] == b'T' || b[10] == b't') && b[13] == b':';
    if digits.len() != 14 || !(compact || extended) {
        return None;
    }
    if extended {
        let zone = s[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
        if !matches!(zone, "Z" | "z" | "+00:00" | "-00:00") {
            return None;
        }
    }
    let n = |r: std::ops::Range<usize>| digits[r].parse::<u32>().ok();
    let (y, mo, d, h, mi, sec) = (n(0..4)?, n(4..6)?, n(6..8)?, n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(i64::from(y), mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_184_148, 0), "2026-12-02T04:02:28Z");
        assert_eq!(rfc3339(-1, 999_999_999), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339_ns(1_700_000_000_000_000_001), "2023-11-14T22:13:20.000000001Z");
        // Every day of four centuries round-trips through the calendar.
        let mut prev = civil_from_days(-1);
        for day in 0..146_097 {
            let (y, m, d) = civil_from_days(day);
            let next_day = (y, m, d) == (prev.0, prev.1, prev.2 + 1);
            let next_month = d == 1 && ((y, m) == (prev.0, prev.1 + 1) || (m == 1 && y == prev.0 + 1 && prev.1 == 12));
            assert!(next_day || next_month, "{prev:?} -> {:?}", (y, m, d));
            prev = (y, m, d);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn parses_what_it_writes_and_sigv4_dates() {
        for secs in [0, 951_782_400, 1_796_184_148, 4_102_444_799] {
            assert_eq!(parse_utc(&rfc3339(secs, 0)), Some(secs));
            assert_eq!(parse_utc(&rfc3339(secs, 5)), Some(secs));
        }
        assert_eq!(parse_utc("20261202T040228Z"), Some(1_796_184_148));
        assert_eq!(parse_utc("2026-12-02T04:02:28+00:00"), Some(1_796_184_148));
        for bad in [
            "",
            "2026-12-02",
            "2026-12-02T04:02:28+01:00",
            "2026-13-02T04:02:28Z",
            "20261202T040228",
            "x026-12-02T04:02:28Z",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad:?}");
        }
    }
}
