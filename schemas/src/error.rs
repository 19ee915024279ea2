//! Errors of the schema layer.

/// What went wrong while converting, writing or reading span table data, opening or writing
/// the store, or loading the price table.
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
    /// The price table cannot be read or is not valid TOML of the expected shape.
    #[error("{0}")]
    BadPrices(String),
    /// The object store (S3 or the local file system) refused or failed an operation.
    #[error("store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A local file system operation failed; `what` says which.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl SchemaError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
