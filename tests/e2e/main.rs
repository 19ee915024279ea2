//! End-to-end tests: the real `ingest` binary, real OTLP clients (ours and the OpenTelemetry
//! Python SDK), a real S3-compatible server, and the Parquet read back by DuckDB and pyarrow.
//! One test binary for all of them, to keep builds lean.

mod bad_input;
mod cli;
mod crash;
mod curate_rules;
mod eval_runner;
mod interop;
mod jobs;
mod judge_double;
mod protocols;
mod s3;
