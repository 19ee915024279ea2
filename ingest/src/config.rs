//! Configuration of the `ingest` binary: flags, `INGEST_*` environment variables and an
//! optional TOML file, in that order of precedence, then the defaults below.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::error::IngestError;

pub const DEFAULT_STORE: &str = "./data";
pub const DEFAULT_WAL_DIR: &str = "./wal";
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:4317";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4318";

/// OTLP receiver: accepts spans over OTLP/gRPC and OTLP/HTTP (protobuf and JSON, gzip), makes
/// them durable in a local write-ahead log before answering, and flushes them as
/// Hive-partitioned Parquet into a store (a local directory or S3).
#[derive(Parser, Debug, Default)]
#[command(name = "ingest", version, about, long_about = None)]
pub struct Args {
    /// TOML file with any of the options below (keys as the long flag names with `_`
    /// instead of `-`, e.g. `grpc_addr = "0.0.0.0:4317"`); unknown keys are an error.
    #[arg(long, env = "INGEST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where Parquet files go: a directory path, file:///abs/dir, or s3://bucket/prefix
    /// (credentials, region and endpoint from the AWS_* variables). [default: ./data]
    #[arg(long, env = "INGEST_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// OTLP/gRPC listen address. [default: 127.0.0.1:4317]
    #[arg(long, env = "INGEST_GRPC_ADDR", value_name = "HOST:PORT")]
    pub grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address; also serves /healthz, /readyz and /metrics.
    /// [default: 127.0.0.1:4318]
    #[arg(long, env = "INGEST_HTTP_ADDR", value_name = "HOST:PORT")]
    pub http_addr: Option<SocketAddr>,
    /// Local directory of the write-ahead log. Must be on a local disk that survives a
    /// restart; one per replica. [default: ./wal]
    #[arg(long, env = "INGEST_WAL_DIR", value_name = "DIR")]
    pub wal_dir: Option<PathBuf>,
    /// Tenant (partition `tenant=`) of the spans received. [default: default]
    #[arg(long, env = "INGEST_TENANT")]
    pub tenant: Option<String>,
    /// Largest request body accepted, both as received and after gzip decompression, on both
    /// protocols (e.g. 64MiB). Larger requests get 413 / RESOURCE_EXHAUSTED. [default: 64MiB]
    #[arg(long, env = "INGEST_MAX_REQUEST_BYTES", value_name = "SIZE")]
    pub max_request_bytes: Option<String>,
    /// WAL data that triggers a flush into Parquet (e.g. 128MiB). [default: 128MiB]
    #[arg(long, env = "INGEST_FLUSH_MAX_BYTES", value_name = "SIZE")]
    pub flush_max_bytes: Option<String>,
    /// Age of the oldest unflushed span that triggers a flush (e.g. 30s, 5m). [default: 30s]
    #[arg(long, env = "INGEST_FLUSH_MAX_AGE", value_name = "DURATION")]
    pub flush_max_age: Option<String>,
    /// Unflushed WAL data above which requests are refused with 429 / RESOURCE_EXHAUSTED and
    /// a retry delay (e.g. when the store is unreachable). [default: 1GiB]
    #[arg(long, env = "INGEST_WAL_MAX_BACKLOG", value_name = "SIZE")]
    pub wal_max_backlog: Option<String>,
    /// Retry delay advertised when refusing under backpressure. [default: 5s]
    #[arg(long, env = "INGEST_RETRY_AFTER", value_name = "DURATION")]
    pub retry_after: Option<String>,
    /// On SIGTERM/SIGINT, how long to keep trying to flush the WAL into the store before
    /// exiting non-zero (the WAL is replayed at the next start). [default: 60s]
    #[arg(long, env = "INGEST_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// Log format: text or json. [default: text]
    #[arg(long, env = "INGEST_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// The same options as [`Args`], read from the TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    store: Option<String>,
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    wal_dir: Option<PathBuf>,
    tenant: Option<String>,
    max_request_bytes: Option<String>,
    flush_max_bytes: Option<String>,
    flush_max_age: Option<String>,
    wal_max_backlog: Option<String>,
    retry_after: Option<String>,
    shutdown_timeout: Option<String>,
    log_format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub wal_dir: PathBuf,
    pub tenant: String,
    pub max_request_bytes: usize,
    pub flush_max_bytes: u64,
    pub flush_max_age: Duration,
    pub wal_max_backlog: u64,
    pub retry_after: Duration,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
}

impl Config {
    /// Defaults plus `store` and `wal_dir`, listening on ephemeral loopback ports: for tests
    /// and embedding.
    pub fn local(store: impl Into<String>, wal_dir: impl Into<PathBuf>) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut c = Self::resolve(Args::default()).unwrap_or_else(|_| unreachable!());
        c.store = store.into();
        c.wal_dir = wal_dir.into();
        c.grpc_addr = any;
        c.http_addr = any;
        c
    }

    /// Applies the file named by `--config` under flags and environment, then the defaults.
    pub fn resolve(args: Args) -> Result<Self, IngestError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let text = |a: Option<String>, f: Option<String>, d: &str| a.or(f).unwrap_or(d.into());
        let addr = |a: Option<SocketAddr>, f: Option<SocketAddr>, d: &str| {
            a.or(f)
                .map_or_else(|| d.parse().map_err(|_| cfg_err("bad default address")), Ok)
        };
        let tenant = text(args.tenant, file.tenant, schemas::layout::DEFAULT_TENANT);
        schemas::layout::validate_tenant(&tenant).map_err(|e| cfg_err(&e.to_string()))?;
        let log_format = match text(args.log_format, file.log_format, "text").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(cfg_err(&format!(
                    "log format {other:?}: expected text or json"
                )));
            }
        };
        let max_request_bytes = parse_size(
            "max_request_bytes",
            &text(args.max_request_bytes, file.max_request_bytes, "64MiB"),
        )?;
        Ok(Self {
            store: text(args.store, file.store, DEFAULT_STORE),
            grpc_addr: addr(args.grpc_addr, file.grpc_addr, DEFAULT_GRPC_ADDR)?,
            http_addr: addr(args.http_addr, file.http_addr, DEFAULT_HTTP_ADDR)?,
            wal_dir: args
                .wal_dir
                .or(file.wal_dir)
                .unwrap_or_else(|| DEFAULT_WAL_DIR.into()),
            tenant,
            max_request_bytes: usize::try_from(max_request_bytes)
                .map_err(|_| cfg_err("max_request_bytes is too large"))?,
            flush_max_bytes: parse_size(
                "flush_max_bytes",
                &text(args.flush_max_bytes, file.flush_max_bytes, "128MiB"),
            )?,
            flush_max_age: parse_duration(
                "flush_max_age",
                &text(args.flush_max_age, file.flush_max_age, "30s"),
            )?,
            wal_max_backlog: parse_size(
                "wal_max_backlog",
                &text(args.wal_max_backlog, file.wal_max_backlog, "1GiB"),
            )?,
            retry_after: parse_duration(
                "retry_after",
                &text(args.retry_after, file.retry_after, "5s"),
            )?,
            shutdown_timeout: parse_duration(
                "shutdown_timeout",
                &text(args.shutdown_timeout, file.shutdown_timeout, "60s"),
            )?,
            log_format,
        })
    }
}

fn cfg_err(msg: &str) -> IngestError {
    IngestError::Config(msg.to_string())
}

fn read_file(path: &Path) -> Result<FileConfig, IngestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| IngestError::io(format!("reading config file {}", path.display()), e))?;
    toml::from_str(&text).map_err(|e| cfg_err(&format!("{}: {e}", path.display())))
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `10MB`, `1000` (bytes).
pub fn parse_size(name: &str, s: &str) -> Result<u64, IngestError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        _ => return Err(cfg_err(&format!("{name}: {s:?} is not a size like 64MiB"))),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| cfg_err(&format!("{name}: {s:?} is not a positive size like 64MiB")))
}

/// Parses `30s`, `500ms`, `5m`, `2h`.
pub fn parse_duration(name: &str, s: &str) -> Result<Duration, IngestError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| cfg_err(&format!("{name}: {s:?} is not a duration like 30s")))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(cfg_err(&format!(
                "{name}: {s:?} needs a unit: ms, s, m or h"
            )));
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() -> Result<(), IngestError> {
        assert_eq!(parse_size("x", "64MiB")?, 64 << 20);
        assert_eq!(parse_size("x", "1000")?, 1000);
        assert_eq!(parse_size("x", "2 GiB")?, 2 << 30);
        assert!(parse_size("x", "lots").is_err());
        assert!(parse_size("x", "0").is_err());
        assert_eq!(parse_duration("x", "30s")?, Duration::from_secs(30));
        assert_eq!(parse_duration("x", "250ms")?, Duration::from_millis(250));
        assert!(parse_duration("x", "30").is_err());
        Ok(())
    }

    #[test]
    fn flag_beats_file_beats_default_and_unknown_keys_fail() -> Result<(), IngestError> {
        let dir = std::env::temp_dir().join(format!("ingest-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| IngestError::io("mkdir", e))?;
        let file = dir.join("ingest.toml");
        std::fs::write(
            &file,
            "store = \"s3://b/p\"\ntenant = \"acme\"\nflush_max_age = \"5s\"\n",
        )
        .map_err(|e| IngestError::io("write", e))?;
        let args = Args {
            config: Some(file.clone()),
            tenant: Some("cli".into()),
            ..Args::default()
        };
        let c = Config::resolve(args)?;
        assert_eq!(c.store, "s3://b/p");
        assert_eq!(c.tenant, "cli");
        assert_eq!(c.flush_max_age, Duration::from_secs(5));
        assert_eq!(c.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);

        std::fs::write(&file, "stroe = \"typo\"\n").map_err(|e| IngestError::io("write", e))?;
        let err = Config::resolve(Args {
            config: Some(file),
            ..Args::default()
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("unknown field `stroe`"), "{err}");
        Ok(())
    }
}
