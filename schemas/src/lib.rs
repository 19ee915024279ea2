//! The trace2eval contract, shared by every stage: span table v1 (`columns`, `span_table`),
//! the store layout (`layout`), OTLP protobuf validated and read in place (`wire`), OTLP ->
//! Arrow conversion (`convert`), writing span files (`parquet_file`) and reading rows back
//! (`read`); plus the two pieces of plumbing more than one stage needs: opening a store and
//! writing into it atomically (`store`), and the model price table (`prices`).
//!
//! Inputs are OTLP protobuf bytes (or `opentelemetry-proto` structs, encoded first); outputs
//! are Arrow record batches and Parquet bytes laid out as `layout` says. Only `store` (object
//! storage and fsync; `put` runs on tokio) and `prices::Prices::load` (one file) do I/O beyond
//! in-memory buffers.

pub mod columns;
pub mod convert;
pub mod error;
pub mod json_wire;
pub mod layout;
pub mod parquet_file;
pub mod prices;
pub mod read;
pub mod span_table;
pub mod store;
#[cfg(test)]
mod test_rng;
pub mod wire;

pub use error::SchemaError;
pub use opentelemetry_proto;
#[cfg(test)]
mod tests;
