//! Errors of the schema layer.

/// What went wrong while converting, writing or reading span table data.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("column {column}: expected {expected}")]
    Column {
        column: &'static str,
        expected: &'static str,
    },
    #[error("{0}")]
    BadStore(String),
    #[error("tenant {0:?} is not 1-64 characters of [A-Za-z0-9_-]")]
    BadTenant(String),
}
