//! The store layout, a public interface: where span files live and how they are named.
//!
//! `spans/tenant=<tenant>/date=YYYY-MM-DD/hour=HH/<ulid>.parquet`, partitioned by the span's
//! start time in UTC. File names are ULIDs (26 Crockford base32 characters): the first 48 bits
//! are a millisecond timestamp, so names sort by creation time; the other 80 bits are given by
//! the writer (random, or derived from a writer id so that a replay rewrites the same name).

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::error::SchemaError;

/// Top-level folder of the span table inside a store.
pub const SPANS_DIR: &str = "spans";
/// Tenant of spans that arrive without one.
pub const DEFAULT_TENANT: &str = "default";
/// File extension of span files.
pub const PARQUET_EXT: &str = "parquet";

/// Where a store lives, parsed from its URL: `s3://bucket[/prefix]`, `file:///abs/dir`, or a
/// plain directory path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    S3 { bucket: String, prefix: String },
    Local(std::path::PathBuf),
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<Self, SchemaError> {
        let bad = |why: &str| SchemaError::BadStore(format!("store {url:?}: {why}"));
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        match url.strip_prefix("file://") {
            Some(p) => Ok(Self::Local(p.into())),
            None if url.contains("://") => Err(bad(
                "only s3:// and file:// URLs or plain paths are supported",
            )),
            None => Ok(Self::Local(url.into())),
        }
    }

    /// Path of the span table inside an S3 store's bucket (`<prefix>/spans`).
    pub fn s3_spans_path(prefix: &str) -> String {
        if prefix.is_empty() {
            SPANS_DIR.to_string()
        } else {
            format!("{prefix}/{SPANS_DIR}")
        }
    }
}

/// One Hive partition of the span table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub tenant: String,
    /// `YYYY-MM-DD` in UTC.
    pub date: String,
    /// 0..=23 in UTC.
    pub hour: u32,
}

/// Nanoseconds in a partition's hour.
const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

impl Partition {
    /// The hour since the epoch (UTC) that a span starting at `start_ns` is partitioned by:
    /// spans of one tenant with the same hour have the same [`Partition::of_span`].
    pub fn hour_of(start_ns: i64) -> i64 {
        start_ns.div_euclid(NANOS_PER_HOUR)
    }

    /// The partition of a span of `tenant` starting at `start_ns` (Unix nanoseconds).
    pub fn of_span(tenant: &str, start_ns: i64) -> Self {
        let t = DateTime::<Utc>::from_timestamp_nanos(start_ns);
        Self {
            tenant: tenant.to_string(),
            date: format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
            hour: t.hour(),
        }
    }

    /// `spans/tenant=<t>/date=<d>/hour=<HH>`, without a trailing slash.
    pub fn dir(&self) -> String {
        format!(
            "{SPANS_DIR}/tenant={}/date={}/hour={:02}",
            self.tenant, self.date, self.hour
        )
    }

    /// Path of a span file in this partition.
    pub fn file_path(&self, file_name: &str) -> String {
        format!("{}/{file_name}.{PARQUET_EXT}", self.dir())
    }

    /// The partition of a store path holding `tenant=T/date=YYYY-MM-DD/hour=HH` segments.
    pub fn of_path(path: &str) -> Option<Self> {
        let part = |k: &str| path.split('/').find_map(|s| s.strip_prefix(k));
        let hour: u32 = part("hour=")?.parse().ok().filter(|h| *h < 24)?;
        let date = part("date=")?;
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        Some(Self {
            tenant: part("tenant=")?.to_string(),
            date: date.to_string(),
            hour,
        })
    }

    /// When the partition's hour ends (UTC): no span starting later belongs to it.
    pub fn end(&self) -> DateTime<Utc> {
        chrono::NaiveDate::parse_from_str(&self.date, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(self.hour, 0, 0))
            .map_or(DateTime::<Utc>::MIN_UTC, |t| t.and_utc())
            + chrono::Duration::hours(1)
    }
}

/// Checks a tenant name: 1 to 64 of `[A-Za-z0-9_-]`, so it is safe in paths and URLs.
pub fn validate_tenant(tenant: &str) -> Result<(), SchemaError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SchemaError::BadTenant(tenant.to_string()))
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID string from a millisecond timestamp and 80 bits of entropy (the low 80 bits of
/// `entropy` are used).
pub fn ulid(unix_ms: u64, entropy: u128) -> String {
    let value: u128 =
        (u128::from(unix_ms & 0xFFFF_FFFF_FFFF) << 80) | (entropy & ((1u128 << 80) - 1));
    (0..26)
        .map(|i| {
            let shift = 125 - 5 * i;
            char::from(CROCKFORD[((value >> shift) & 0x1F) as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Around hour, day and year ends, two starts share an `hour_of` exactly when they share
    /// a partition.
    #[test]
    fn the_hour_of_a_start_decides_its_partition() {
        let ends = [
            1_772_449_200_000_000_000i64,
            1_772_496_000_000_000_000,
            1_767_225_600_000_000_000,
        ];
        let starts: Vec<i64> = ends
            .iter()
            .flat_map(|&e| {
                [
                    e - 3_600_000_000_000,
                    e - 1,
                    e,
                    e + 1,
                    e + 3_599_999_999_999,
                ]
            })
            .collect();
        for &a in &starts {
            for &b in &starts {
                assert_eq!(
                    Partition::hour_of(a) == Partition::hour_of(b),
                    Partition::of_span("t", a) == Partition::of_span("t", b),
                    "{a} {b}"
                );
            }
        }
    }

    #[test]
    fn partitions_read_back_from_paths_with_the_end_of_their_hour() {
        let p = Partition::of_path("spans/tenant=acme/date=2026-03-02/hour=23/01ABC.parquet");
        assert_eq!(
            p.as_ref().map(Partition::dir).as_deref(),
            Some("spans/tenant=acme/date=2026-03-02/hour=23")
        );
        assert_eq!(
            p.map(|p| p.end().to_rfc3339()).as_deref(),
            Some("2026-03-03T00:00:00+00:00")
        );
        assert!(Partition::of_path("spans/tenant=a/date=2026-13-02/hour=01/x.parquet").is_none());
        assert!(Partition::of_path("spans/tenant=a/date=2026-03-02/hour=24/x.parquet").is_none());
        assert!(Partition::of_path("spans/readme.txt").is_none());
    }

    #[test]
    fn partition_is_utc_start_hour() {
        // 2026-03-02T23:59:59.999999999Z
        let p = Partition::of_span("acme", 1_772_495_999_999_999_999);
        assert_eq!(p.dir(), "spans/tenant=acme/date=2026-03-02/hour=23");
        let next = Partition::of_span("acme", 1_772_496_000_000_000_000);
        assert_eq!(next.dir(), "spans/tenant=acme/date=2026-03-03/hour=00");
        assert_eq!(
            Partition::of_span("default", 0).file_path("X"),
            "spans/tenant=default/date=1970-01-01/hour=00/X.parquet"
        );
    }

    #[test]
    fn ulids_sort_by_time_and_are_26_chars() {
        let a = ulid(1_700_000_000_000, u128::MAX);
        let b = ulid(1_700_000_000_001, 0);
        assert_eq!(a.len(), 26);
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(ulid(0, 0), "00000000000000000000000000");
        // Known value from the ULID spec's reference implementation: time 1469918176385.
        assert!(ulid(1_469_918_176_385, 0).starts_with("01ARYZ6S41"));
    }

    #[test]
    fn store_urls_parse_and_bad_ones_say_why() {
        assert_eq!(
            StoreUrl::parse("s3://b/p/q/").ok(),
            Some(StoreUrl::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            })
        );
        assert_eq!(
            StoreUrl::parse("./data").ok(),
            Some(StoreUrl::Local("./data".into()))
        );
        assert_eq!(
            StoreUrl::parse("file:///x").ok(),
            Some(StoreUrl::Local("/x".into()))
        );
        for bad in ["s3://", "gs://b/p"] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenants_are_path_safe() {
        assert!(validate_tenant("team-a_1").is_ok());
        for bad in ["", "a/b", "..", "t=x", &"x".repeat(65)] {
            assert!(validate_tenant(bad).is_err(), "{bad:?} accepted");
        }
    }
}
