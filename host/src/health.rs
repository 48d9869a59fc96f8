//! Reading `api_events` back: filtered listings and the auth health summary.

use crate::events::utc_timestamp;
use crate::store::{Database, StoreError};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

/// The nine `event_type` names the application stores (SPEC §5).
pub const EVENT_TYPES: [&str; 9] = [
    "TOKEN_ACQUIRED",
    "TOKEN_REFRESHED",
    "TOKEN_FAILED",
    "NEWS_FETCH",
    "NEWS_FALLBACK",
    "EQUITY_FETCH",
    "EQUITY_FALLBACK",
    "EMAIL_SENT",
    "EMAIL_FALLBACK",
];

/// Which rows `events` lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// At most this many, newest first.
    pub limit: u32,
    /// Only rows at or after this timestamp (`YYYY-MM-DD HH:MM:SS.ffffff`).
    pub since: Option<String>,
    /// Only this event type (upper-case name).
    pub event_type: Option<String>,
    /// Only failures.
    pub failed: bool,
    /// Only rows with a larger id (what a run added).
    pub after_id: Option<i64>,
}

/// Parse an `--type` value: any case, `-` or `_`.
pub fn parse_event_type(s: &str) -> Result<String, String> {
    let name = s.trim().to_ascii_uppercase().replace('-', "_");
    if EVENT_TYPES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(format!(
            "unknown event type `{s}`; expected one of {}",
            EVENT_TYPES.join(", ")
        ))
    }
}

/// Parse a `--since` value: `30m`, `12h`, `7d` (ago), `YYYY-MM-DD`, or
/// `YYYY-MM-DD HH:MM[:SS]` (UTC). Returns the timestamp to compare with.
pub fn parse_since(s: &str, now: SystemTime) -> Result<String, String> {
    let s = s.trim();
    let err = || {
        format!(
            "cannot read `--since {s}`; use 30m, 12h, 7d, 2026-12-01 or \"2026-12-01 08:00\" (UTC)"
        )
    };
    if let Some(unit) = s.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        let n: u64 = s[..s.len() - 1].parse().map_err(|_| err())?;
        let secs = match unit {
            's' => n,
            'm' => n * 60,
            'h' => n * 3600,
            'd' => n * 86_400,
            _ => return Err(err()),
        };
        let at = now.checked_sub(Duration::from_secs(secs)).ok_or_else(err)?;
        return Ok(utc_timestamp(at));
    }
    let b = s.as_bytes();
    let shape_ok = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shape_ok {
        return Err(err());
    }
    // Fixed-width timestamps compare as strings: pad what was left out.
    let full = "0000-00-00 00:00:00.000000";
    if s.len() > full.len()
        || !s
            .bytes()
            .skip(10)
            .all(|c| c.is_ascii_digit() || matches!(c, b' ' | b':' | b'.' | b'T'))
    {
        return Err(err());
    }
    Ok(format!("{}{}", s.replace('T', " "), &full[s.len()..]))
}

/// The auth health summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// The latest successful acquisition or refresh: timestamp and its lifetime.
    pub last_success: Option<(String, Option<i64>)>,
    /// `TOKEN_FAILED` rows in the last hour.
    pub failures_last_hour: i64,
    /// `TOKEN_FAILED` rows in the last 24 hours.
    pub failures_last_day: i64,
    /// The most frequent failure detail in the last 24 hours, and its count.
    pub top_failure: Option<(String, i64)>,
}

/// Summarise the token events as of `now`.
pub fn health(db: &mut Database, now: SystemTime) -> Result<Health, StoreError> {
    let hour_ago = utc_timestamp(now - Duration::from_secs(3600));
    let day_ago = utc_timestamp(now - Duration::from_secs(86_400));
    let last_success = db.last_success()?.map(|(ts, detail)| {
        let lifetime = detail
            .and_then(|d| serde_json::from_str::<Value>(&d).ok())
            .and_then(|d| d["expires_in_seconds"].as_i64());
        (ts, lifetime)
    });
    Ok(Health {
        last_success,
        failures_last_hour: db.failures_since(&hour_ago)?,
        failures_last_day: db.failures_since(&day_ago)?,
        top_failure: db.top_failure(&day_ago)?,
    })
}

impl Health {
    /// For `--json`; `live` adds what a live manager reported.
    pub fn to_json(&self, live: Option<Value>) -> Value {
        json!({
            "last_success": self.last_success.as_ref().map(|(ts, lifetime)| json!({"timestamp": ts, "expires_in_seconds": lifetime})),
            "failures_last_hour": self.failures_last_hour,
            "failures_last_day": self.failures_last_day,
            "top_failure_last_day": self.top_failure.as_ref().map(|(detail, n)| json!({
                "detail": serde_json::from_str::<Value>(detail).unwrap_or(Value::String(detail.clone())),
                "count": n,
            })),
            "live": live,
        })
    }

    /// The human table; `live` lines come from a live manager.
    pub fn to_text(&self, live: &[(String, String)]) -> String {
        let mut lines: Vec<(String, String)> = vec![
            (
                "last success".into(),
                match &self.last_success {
                    Some((ts, Some(lifetime))) => format!("{ts} UTC (token lifetime {lifetime} s)"),
                    Some((ts, None)) => format!("{ts} UTC"),
                    None => "never".into(),
                },
            ),
            ("failures, 1 h".into(), self.failures_last_hour.to_string()),
            ("failures, 24 h".into(), self.failures_last_day.to_string()),
            (
                "top failure".into(),
                match &self.top_failure {
                    Some((detail, n)) => format!("{detail} ({n}x in 24 h)"),
                    None => "none in 24 h".into(),
                },
            ),
        ];
        lines.extend(live.iter().cloned());
        let mut out = String::from("Auth health (api_events)\n");
        for (k, v) in lines {
            out.push_str(&format!("  {:<16} {v}\n", format!("{k}:")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn since_values() {
        let now = UNIX_EPOCH + Duration::from_secs(1_764_720_000); // 2025-12-03 00:00:00
        assert_eq!(
            parse_since("2h", now).unwrap(),
            "2025-12-02 22:00:00.000000"
        );
        assert_eq!(
            parse_since("1d", now).unwrap(),
            "2025-12-02 00:00:00.000000"
        );
        assert_eq!(
            parse_since("2025-12-01", now).unwrap(),
            "2025-12-01 00:00:00.000000"
        );
        assert_eq!(
            parse_since("2025-12-01 08:30", now).unwrap(),
            "2025-12-01 08:30:00.000000"
        );
        assert_eq!(
            parse_since("2025-12-01T08:30:15", now).unwrap(),
            "2025-12-01 08:30:15.000000"
        );
        for bad in [
            "yesterday",
            "5w",
            "2025-1-01",
            "h",
            "2025-12-01; DROP TABLE api_events",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_types() {
        assert_eq!(parse_event_type("token-failed").unwrap(), "TOKEN_FAILED");
        assert_eq!(parse_event_type("NEWS_FETCH").unwrap(), "NEWS_FETCH");
        assert!(
            parse_event_type("TOKEN_LOST")
                .unwrap_err()
                .contains("TOKEN_ACQUIRED")
        );
    }
}
