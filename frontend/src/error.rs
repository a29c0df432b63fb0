//! The frontend's errors, and their one mapping to gRPC status codes.

use std::time::Duration;

use tonic::{Code, Status};

/// What went wrong serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed; the message names the field.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The field (`input_json`, `workflow_id`, ...).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A workflow specification has problems; every one is listed.
    #[error("workflow {name} is invalid: {}", problems.join("; "))]
    InvalidWorkflow {
        /// The workflow's name.
        name: String,
        /// Every problem found.
        problems: Vec<String>,
    },
    /// No workflow is registered under the name.
    #[error("no workflow named {name} is registered; register it first (comb workflow register)")]
    UnknownWorkflow {
        /// The name.
        name: String,
    },
    /// No run has the id (a read-only one-transaction run invoked synchronously without an
    /// id has no row: only the traces know it).
    #[error("no workflow run has id {id} (a read-only one-transaction run invoked synchronously without an id leaves no row: look for it in the workflows trace table)")]
    UnknownRun {
        /// The id.
        id: String,
    },
    /// A registration past the most definitions of its kind a server keeps.
    #[error("this server holds {limit} {what}, the most it keeps (definitions-max); no more can be registered")]
    TooManyDefinitions {
        /// What: "SQL-only functions", "workflow versions".
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// A name is taken by the system (`comb_`) or by a function that exists.
    #[error("{what} {name} already exists")]
    AlreadyExists {
        /// `function` or `table`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Too many runs in progress.
    #[error("{in_flight} workflow runs are in progress, the limit (workflows-in-flight-max) is {limit}; retry later")]
    Overloaded {
        /// Runs in progress.
        in_flight: usize,
        /// The limit.
        limit: usize,
    },
    /// The run did not end in time; it goes on, and its id finds it (unless the server fails
    /// before a synchronous run's start is durable, or the run is one transaction that never
    /// committed or only read: then invoking the id runs it).
    #[error("workflow run {id} did not end within {after:?}; it goes on: ask for it with GetWorkflow (if that finds no run, it never started durably, or it was one transaction that only read: invoke it again with its id, which runs it at most once more)")]
    Timeout {
        /// The run's id.
        id: String,
        /// How long the call waited.
        after: Duration,
    },
    /// A streamed call passed the time-out its caller gave; a run it started may go on.
    #[error("the call passed its caller's time-out of {timeout:?}; a run it started goes on, and its id finds it")]
    CallTimedOut {
        /// The caller's time-out.
        timeout: Duration,
    },
    /// The run was interrupted by a failure of the server (not of the workflow); it resumes
    /// by itself (within `resume-interval`, or when it restarts).
    #[error("workflow run {id} was interrupted: {cause}; the server resumes it by itself (within its resume-interval, or when it restarts)")]
    Interrupted {
        /// The run's id.
        id: String,
        /// What interrupted it.
        cause: String,
    },
    /// The run was interrupted by a failure of the server, and nothing showed its start
    /// durable (a synchronous run's start is not waited for: its end carries it; a
    /// one-transaction run has none of its own); it may never have started. If it did, the
    /// server resumes it. Invoking its id again runs it once, or finds it.
    #[error("workflow run {id} was interrupted ({cause}) and its start is not known to be durable: it may not have started; invoke it again with id {id}, which runs it once or returns its outcome")]
    MaybeNotStarted {
        /// The run's id.
        id: String,
        /// What interrupted it.
        cause: String,
    },
    /// An asynchronous invoke whose run's start was not durable within `wait-max`: the start
    /// goes on, and may or may not become durable.
    #[error("the start of workflow run {id} was not durable within {after:?} (wait-max); it may yet be: invoke it again with id {id}, which runs it once or returns its outcome")]
    StartNotDurable {
        /// The run's id.
        id: String,
        /// How long the call waited.
        after: Duration,
    },
    /// A run refused for overload before its start was queued: nothing of it ran.
    #[error("workflow run {id} was refused before it started ({cause}); nothing of it ran: retry later")]
    Refused {
        /// The run's id.
        id: String,
        /// What refused it.
        cause: String,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// An error of the backend.
    #[error(transparent)]
    Backend(#[from] comb_backend::Error),
    /// An error of the tracing layer (a trace query's message is DataFusion's).
    #[error(transparent)]
    Tracing(#[from] comb_tracing::Error),
    /// The server keeps no traces.
    #[error("this server keeps no traces: start it with tracing enabled (the default; see --options)")]
    TracingDisabled,
    /// A broken invariant: a bug.
    #[error("internal error (a bug): {0}")]
    Internal(String),
}

/// The result type of the frontend.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code of the error: the one place where errors meet codes.
    pub fn code(&self) -> Code {
        use comb_backend::Error as B;
        match self {
            Error::InvalidArgument { .. } | Error::InvalidWorkflow { .. } => Code::InvalidArgument,
            Error::UnknownWorkflow { .. } | Error::UnknownRun { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::Overloaded { .. } | Error::Refused { .. } => Code::ResourceExhausted,
            Error::Timeout { .. } | Error::CallTimedOut { .. } => Code::DeadlineExceeded,
            Error::Interrupted { .. } | Error::MaybeNotStarted { .. } | Error::StartNotDurable { .. } | Error::ShuttingDown => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
            Error::TracingDisabled | Error::TooManyDefinitions { .. } => Code::FailedPrecondition,
            Error::Tracing(err) => {
                use comb_tracing::Error as T;
                match err {
                    T::Query(_) | T::InvalidOptions { .. } => Code::InvalidArgument,
                    T::Busy { .. } => Code::ResourceExhausted,
                    T::Behind { .. } => Code::DeadlineExceeded,
                    T::Stopped(_) | T::Closed | T::Io { .. } => Code::Unavailable,
                    T::Corrupt { .. } => Code::DataLoss,
                    T::UnsupportedFormat { .. } => Code::FailedPrecondition,
                    T::Internal(_) => Code::Internal,
                }
            }
            Error::Backend(err) => match err {
                B::Ddl(_) | B::IndexOnExistingTable { .. } | B::UniqueWithoutPartitionColumn { .. } | B::Function(_) | B::InvalidFunction { .. } | B::BadInput { .. } | B::BadParameters { .. } => {
                    Code::InvalidArgument
                }
                B::LimitExceeded { .. } => Code::InvalidArgument,
                B::UnknownFunction { .. } => Code::NotFound,
                B::DuplicateFunction { .. } => Code::AlreadyExists,
                B::Overloaded { .. } => Code::ResourceExhausted,
                B::Closed | B::PartitionFailed { .. } | B::Log(_) | B::Storage { .. } => Code::Unavailable,
                B::Corrupt { .. } => Code::DataLoss,
                B::Internal(_) => Code::Internal,
                _ => Code::FailedPrecondition,
            },
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        Status::new(err.code(), err.to_string())
    }
}

/// Tells whether a backend error is the workflow's own doing (its function failed, its
/// input was wrong: deterministic, so the run fails and the failure is recorded) rather
/// than the server's (overload, shutdown, a failed disk: the run is retried or resumed).
pub(crate) fn is_workflow_failure(err: &comb_backend::Error) -> bool {
    use comb_backend::Error as B;
    !matches!(err, B::Overloaded { .. } | B::Closed | B::PartitionFailed { .. } | B::Log(_) | B::Storage { .. } | B::Corrupt { .. } | B::Internal(_))
}
