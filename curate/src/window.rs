//! Time: the `--since/--until` window, the settle cutoff, and their SQL predicates. The
//! window prunes Hive partitions (`date`, `hour`) before any file is opened.

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Timelike, Utc};

use crate::error::CurateError;

/// Parses a duration: `500ms`, `30s`, `10m`, `24h`, `7d`, `2w`.
pub fn parse_duration(s: &str) -> Result<Duration, CurateError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || CurateError::BadArgs(format!("{s:?} is not a duration like 30s, 10m, 24h or 7d"));
    let n: i64 = num.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::milliseconds(n)),
        "s" => Ok(Duration::seconds(n)),
        "m" => Ok(Duration::minutes(n)),
        "h" => Ok(Duration::hours(n)),
        "d" => Ok(Duration::days(n)),
        "w" => Ok(Duration::weeks(n)),
        _ => Err(bad()),
    }
}

/// Parses a TIME: RFC 3339 (`2026-03-02T00:00:00Z`), a date (`2026-03-02`, midnight UTC), or
/// a duration back from `now` (`24h`, `7d`).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, CurateError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    parse_duration(s).map(|d| now - d).map_err(|_| {
        CurateError::BadArgs(format!(
            "{s:?} is not a time: use RFC 3339 (2026-03-02T00:00:00Z), a date (2026-03-02) or a duration back from now (24h, 7d)"
        ))
    })
}

/// Text of a timestamp as DataFusion compares it with `timestamp(ns, UTC)` columns.
pub fn sql_time(t: DateTime<Utc>) -> String {
    format!("'{}'", t.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// The span start times a run looks at: `since <= start_time < until`, either side open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Window {
    pub const ALL: Window = Window {
        since: None,
        until: None,
    };

    /// A SQL predicate over the span table: partition columns first (so whole directories
    /// are skipped), then the exact start-time bounds.
    pub fn predicate(&self) -> String {
        let mut parts = Vec::new();
        if let Some(since) = self.since {
            let (d, h) = (since.format("%Y-%m-%d"), since.hour());
            parts.push(format!(
                "(date > '{d}' OR (date = '{d}' AND hour >= '{h:02}'))"
            ));
            parts.push(format!("start_time >= {}", sql_time(since)));
        }
        if let Some(until) = self.until {
            let (d, h) = (until.format("%Y-%m-%d"), until.hour());
            parts.push(format!(
                "(date < '{d}' OR (date = '{d}' AND hour <= '{h:02}'))"
            ));
            parts.push(format!("start_time < {}", sql_time(until)));
        }
        if parts.is_empty() {
            "TRUE".into()
        } else {
            parts.join(" AND ")
        }
    }

    /// Whether a partition directory (`date`, `hour`) can hold spans of the window.
    pub fn holds_partition(&self, date: &str, hour: &str) -> bool {
        let key = format!("{date}T{hour}");
        let hour_key = |t: DateTime<Utc>| format!("{}T{:02}", t.format("%Y-%m-%d"), t.hour());
        self.since.is_none_or(|s| key >= hour_key(s))
            && self.until.is_none_or(|u| key <= hour_key(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map_or(DateTime::UNIX_EPOCH, |t| t.with_timezone(&Utc))
    }

    #[test]
    fn times_parse_in_all_three_forms() -> Result<(), CurateError> {
        let now = t("2026-03-02T12:00:00Z");
        assert_eq!(
            parse_time("2026-03-01T06:30:00Z", now)?,
            t("2026-03-01T06:30:00Z")
        );
        assert_eq!(parse_time("2026-03-01", now)?, t("2026-03-01T00:00:00Z"));
        assert_eq!(parse_time("24h", now)?, t("2026-03-01T12:00:00Z"));
        assert_eq!(parse_time("7d", now)?, t("2026-02-23T12:00:00Z"));
        let err = parse_time("yesterday", now)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("RFC 3339"), "{err}");
        Ok(())
    }

    #[test]
    fn window_keeps_only_partitions_it_can_hold() {
        let w = Window {
            since: Some(t("2026-03-01T22:15:00Z")),
            until: Some(t("2026-03-02T01:00:00Z")),
        };
        assert!(!w.holds_partition("2026-03-01", "21"));
        assert!(w.holds_partition("2026-03-01", "22"));
        assert!(w.holds_partition("2026-03-02", "00"));
        assert!(w.holds_partition("2026-03-02", "01"));
        assert!(!w.holds_partition("2026-03-02", "02"));
        assert!(Window::ALL.holds_partition("1999-01-01", "00"));
        assert!(w.predicate().contains("hour >= '22'"), "{}", w.predicate());
    }
}
