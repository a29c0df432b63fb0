//! The tracing layer's errors.

/// A `Result` with the tracing layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the tracing layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The query failed to parse, plan or run, or was not a query (DDL, DML, SET):
    /// DataFusion's own message.
    #[error("{0}")]
    Query(String),
    /// Too many queries are running.
    #[error("{running} trace queries are running already (trace option queries-in-flight-max); retry later")]
    Busy { running: usize },
    /// The feed did not reach the log's tail in time.
    #[error("the traces did not catch up with the log within {waited_ms} ms (at LSN {consumed}, the log at {target}); query without catching up (comb trace --no-catch-up) to see what is there")]
    Behind { consumed: u64, target: u64, waited_ms: u64 },
    /// A file operation failed.
    #[error("cannot {operation} {path}: {message}")]
    Io { operation: &'static str, path: String, message: String },
    /// A file of the trace store is damaged.
    #[error("{path} is damaged: {detail}")]
    Corrupt { path: String, detail: String },
    /// The trace store was written by a build of another format.
    #[error("the trace store {path} has format version {found}; this build reads version {expected} (the store was written by another version of Comb: run that one, or move the folder aside to start the traces afresh)")]
    UnsupportedFormat { path: String, found: u64, expected: u64 },
    /// The options are unusable.
    #[error("invalid trace option {option}: {reason}")]
    InvalidOptions { option: &'static str, reason: String },
    /// The feed stopped after an error; the traces stop at its checkpoint until a restart.
    #[error("the trace feed stopped: {0}")]
    Stopped(String),
    /// The tracing layer is closed.
    #[error("the tracing layer is closed")]
    Closed,
    /// A bug.
    #[error("internal error in the tracing layer: {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(err: datafusion::error::DataFusionError) -> Error {
        Error::Query(err.to_string())
    }
}
