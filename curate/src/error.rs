//! Errors of curation, and the exit code each one means to a scheduler.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    /// The command line or a file it names is wrong (exit code 2).
    #[error("{0}")]
    BadArgs(String),
    /// `--rule` names no known rule (exit code 2).
    #[error("unknown rule {name:?}; known rules: {known}")]
    UnknownRule { name: String, known: String },
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("store: {0}")]
    Store(#[from] object_store::Error),
    #[error("encoding a dataset line: {0}")]
    Encode(#[from] serde_json::Error),
    /// A job run failed; its watermark did not move (exit code 1).
    #[error("{0}")]
    JobFailed(String),
    /// Another run holds the job, or the judge refused the credentials (exit code 3).
    #[error("{0}")]
    JobRefused(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl CurateError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// 2 for bad arguments or an unknown rule, 3 for a job that may not run now, 1 for any
    /// other failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::BadArgs(_) | Self::UnknownRule { .. } => 2,
            Self::JobRefused(_) => 3,
            _ => 1,
        }
    }
}
