//! The trace2eval contract, shared by every stage: span table v1 (`columns`, `span_table`),
//! the store layout (`layout`), OTLP -> Arrow conversion (`convert`), writing span files
//! (`parquet_file`) and reading rows back (`read`).
//!
//! Inputs are OTLP protobuf structs (`opentelemetry-proto`); outputs are Arrow record batches
//! and Parquet bytes laid out as `layout` says. Nothing here does I/O besides in-memory
//! buffers, so every stage (ingest, curate, eval-runner) can use it.

pub mod columns;
pub mod convert;
pub mod error;
pub mod layout;
pub mod parquet_file;
pub mod read;
pub mod span_table;

pub use error::SchemaError;
pub use opentelemetry_proto;
#[cfg(test)]
mod tests;
