//! Errors that end a run, and the exit codes a scheduler sees.

/// What ends a run early. Per-item failures are not errors: they are result lines.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Bad flags, config, metrics file or dataset: exit 2.
    #[error("{0}")]
    BadArgs(String),
    /// Reading or writing local files: exit 2 for inputs, 1 otherwise.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The judge refused the credentials: exit 3.
    #[error("judge refused the request: {0}")]
    JudgeAuth(String),
    /// Score spans could not be delivered: exit 3.
    #[error("score spans not delivered: {0}")]
    Emit(String),
}

impl EvalError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Self::BadArgs(_) => 2,
            Self::Io { .. } => 1,
            Self::JudgeAuth(_) | Self::Emit(_) => 3,
        }
    }
}
