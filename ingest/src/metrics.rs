//! Counters of the ingest path, rendered as Prometheus text on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A sum/count pair, rendered as a Prometheus summary without quantiles.
#[derive(Default)]
pub struct Timing {
    micros: AtomicU64,
    count: AtomicU64,
}

impl Timing {
    pub fn observe(&self, d: Duration) {
        self.micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

const PROTOCOLS: [&str; 2] = ["grpc", "http"];
const OUTCOMES: [&str; 6] = [
    "ok",
    "partial",
    "invalid",
    "too_large",
    "unavailable",
    "error",
];

#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; OUTCOMES.len()]; PROTOCOLS.len()],
    pub spans_received: AtomicU64,
    pub spans_accepted: AtomicU64,
    pub spans_rejected: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub wal_sync_seconds: Timing,
    pub flush_seconds: Timing,
    pub flush_errors: AtomicU64,
    pub files_written: AtomicU64,
    pub file_bytes_written: AtomicU64,
    pub rows_written: AtomicU64,
}

impl Metrics {
    /// Counts one request by protocol (`grpc`/`http`) and outcome (see `IngestError::outcome`).
    pub fn request(&self, protocol: &str, outcome: &str) {
        let p = PROTOCOLS.iter().position(|x| *x == protocol);
        let o = OUTCOMES.iter().position(|x| *x == outcome);
        if let (Some(p), Some(o)) = (p, o) {
            self.requests[p][o].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text; `wal_backlog` is read from the WAL, which owns that count.
    pub fn render(&self, wal_backlog: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP ingest_wal_backlog_bytes WAL bytes not yet flushed into the store.\n# TYPE ingest_wal_backlog_bytes gauge\ningest_wal_backlog_bytes {wal_backlog}"
        );
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP ingest_requests_total OTLP export requests by protocol and outcome."
        );
        let _ = writeln!(out, "# TYPE ingest_requests_total counter");
        for (p, protocol) in PROTOCOLS.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ingest_requests_total{{protocol=\"{protocol}\",outcome=\"{outcome}\"}} {}",
                    get(&self.requests[p][o])
                );
            }
        }
        let counters: [(&str, &str, &AtomicU64); 9] = [
            (
                "ingest_spans_received_total",
                "Spans in decoded requests.",
                &self.spans_received,
            ),
            (
                "ingest_spans_accepted_total",
                "Spans acknowledged (fsynced to the WAL).",
                &self.spans_accepted,
            ),
            (
                "ingest_spans_rejected_total",
                "Spans refused through partial_success.",
                &self.spans_rejected,
            ),
            (
                "ingest_wal_bytes_total",
                "Bytes appended to the WAL.",
                &self.wal_bytes,
            ),
            (
                "ingest_wal_fsyncs_total",
                "WAL group commits (one fsync each).",
                &self.wal_fsyncs,
            ),
            (
                "ingest_flush_errors_total",
                "Failed attempts to flush a WAL segment into the store.",
                &self.flush_errors,
            ),
            (
                "ingest_files_written_total",
                "Parquet files written to the store.",
                &self.files_written,
            ),
            (
                "ingest_file_bytes_written_total",
                "Bytes of Parquet written to the store.",
                &self.file_bytes_written,
            ),
            (
                "ingest_rows_written_total",
                "Span rows written to the store.",
                &self.rows_written,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(value)
            );
        }
        for (name, help, t) in [
            (
                "ingest_wal_sync_seconds",
                "Time to write and fsync one WAL group.",
                &self.wal_sync_seconds,
            ),
            (
                "ingest_flush_seconds",
                "Time to flush one WAL segment into the store.",
                &self.flush_seconds,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {}\n{name}_count {}",
                get(&t.micros) as f64 / 1e6,
                get(&t.count)
            );
        }
        out
    }
}
