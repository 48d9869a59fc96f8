//! `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an IMF-fixdate.

/// Seconds to wait, from a `Retry-After` value received at `now` (Unix
/// seconds). A date in the past means 0; anything unparsable, `None`.
pub fn parse(value: &str, now: i64) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.parse::<u64>().unwrap_or(u64::MAX));
    }
    let at = imf_fixdate(v)?;
    Some(at.saturating_sub(now).max(0) as u64)
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` to Unix seconds.
fn imf_fixdate(s: &str) -> Option<i64> {
    let mut parts = s.split_ascii_whitespace();
    let weekday = parts.next()?.strip_suffix(',')?;
    if !["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&weekday) {
        return None;
    }
    let day: u32 = digits(parts.next()?, 2)?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u32 + 1;
    let year: u32 = digits(parts.next()?, 4)?;
    let mut hms = parts.next()?.split(':');
    let (h, m, sec): (u32, u32, u32) = (
        digits(hms.next()?, 2)?,
        digits(hms.next()?, 2)?,
        digits(hms.next()?, 2)?,
    );
    if hms.next().is_some() || parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    Some(days * 86_400 + i64::from(h * 3600 + m * 60 + sec))
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_seconds() {
        assert_eq!(parse("120", 0), Some(120));
        assert_eq!(parse(" 0 ", 0), Some(0));
        assert_eq!(parse("99999999999999999999999", 0), Some(u64::MAX));
        assert_eq!(parse("-1", 0), None);
        assert_eq!(parse("1.5", 0), None);
        assert_eq!(parse("", 0), None);
    }

    #[test]
    fn http_dates() {
        // 1994-11-06 08:49:37 UTC = 784111777
        assert_eq!(
            imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770), Some(7));
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_999),
            Some(0),
            "past dates mean now"
        );
        assert_eq!(
            imf_fixdate("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(1_709_164_800)
        );
        for bad in [
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "garbage",
        ] {
            assert_eq!(parse(bad, 0), None, "{bad}");
        }
    }
}
