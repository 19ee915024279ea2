//! Errors of the ingest path, and the one place that maps them to transport codes.

use std::time::Duration;

/// Why a request or a background step failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not a valid OTLP ExportTraceServiceRequest in the declared encoding.
    #[error("{0}")]
    Decode(String),
    /// The body (on the wire or after decompression) is over the configured limit.
    #[error("{what} is larger than the limit of {limit} bytes (--max-request-bytes)")]
    TooLarge { what: &'static str, limit: usize },
    /// The Content-Type or Content-Encoding is not one OTLP allows.
    #[error("{0}")]
    Unsupported(String),
    /// The WAL holds more unflushed data than allowed; the client should retry later.
    #[error(
        "write-ahead log backlog of {backlog} bytes is over the limit of {limit} bytes (store slow or unreachable); retry later"
    )]
    Backpressure {
        backlog: u64,
        limit: u64,
        retry_after: Duration,
    },
    /// Writing or syncing the WAL failed; nothing of the request was acknowledged.
    #[error("write-ahead log: {0}")]
    Wal(#[source] std::io::Error),
    /// The service is shutting down.
    #[error("ingest is shutting down; retry against another replica or later")]
    ShuttingDown { retry_after: Duration },
    #[error("store: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Schema(#[from] schemas::SchemaError),
    #[error("config: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl IngestError {
    /// An error of the store (`schemas::store`) as ingest reports it: a bad store URL is a
    /// config error, an object store failure `Store`, a local file system failure `Io`.
    pub fn store(e: schemas::SchemaError) -> Self {
        use schemas::SchemaError as S;
        match e {
            S::BadStore(msg) => Self::Config(msg),
            S::ObjectStore(e) => Self::Store(e),
            S::Io { what, source } => Self::Io {
                context: what,
                source,
            },
            other => Self::Schema(other),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The retry delay to advertise, for retryable refusals.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Backpressure { retry_after, .. } | Self::ShuttingDown { retry_after } => {
                Some(*retry_after)
            }
            Self::Wal(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// OTLP/HTTP status code for this error.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::Decode(_) => S::BAD_REQUEST,
            Self::TooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            Self::Unsupported(_) => S::UNSUPPORTED_MEDIA_TYPE,
            Self::Backpressure { .. } => S::TOO_MANY_REQUESTS,
            Self::Wal(_) | Self::ShuttingDown { .. } => S::SERVICE_UNAVAILABLE,
            _ => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// gRPC status code for this error (OTLP: UNAVAILABLE and RESOURCE_EXHAUSTED with
    /// RetryInfo are the retryable ones).
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            Self::Decode(_) | Self::Unsupported(_) => C::InvalidArgument,
            Self::TooLarge { .. } | Self::Backpressure { .. } => C::ResourceExhausted,
            Self::Wal(_) | Self::ShuttingDown { .. } => C::Unavailable,
            _ => C::Internal,
        }
    }

    /// Short label for the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Decode(_) | Self::Unsupported(_) => "invalid",
            Self::TooLarge { .. } => "too_large",
            Self::Backpressure { .. } | Self::Wal(_) | Self::ShuttingDown { .. } => "unavailable",
            _ => "error",
        }
    }
}
