//! Errors of the shared log.

use std::path::PathBuf;

use crate::record::{Lsn, Tag};

/// What went wrong in a log operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The payload is larger than [`LogOptions::record_bytes_max`](crate::LogOptions).
    #[error("record payload of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes (record-bytes-max)")]
    RecordTooLarge { size_bytes: usize, limit_bytes: usize },

    /// A record carries more tags than [`LogOptions::tags_per_record_max`](crate::LogOptions).
    #[error("record carries {count} tags, more than the limit of {limit} (tags-per-record-max)")]
    TooManyTags { count: usize, limit: usize },

    /// Tag 0 means "any tag" on reads and cannot be attached to a record.
    #[error("tag 0 is reserved for \"any tag\" on reads and cannot be attached to a record")]
    ReservedTag,

    /// `append_batch` was called with no entries.
    #[error("an append batch must hold at least one entry")]
    EmptyBatch,

    /// One `append_batch` call holds more than a group commit may.
    #[error("append batch of {records} records and {bytes} bytes exceeds the limits of {records_limit} records and {bytes_limit} bytes per group commit")]
    BatchTooLarge { records: usize, bytes: usize, records_limit: usize, bytes_limit: usize },

    /// Backpressure: the queue of appends waiting for the writer is full. Retry later.
    #[error("the log's append queue is full ({limit} appends waiting, queue-appends-max); retry after in-flight appends complete")]
    QueueFull { limit: usize },

    /// The log is sealed: it accepts no more appends. `tail` is its last record.
    #[error("the log is sealed at LSN {tail} and accepts no more appends")]
    Sealed { tail: Lsn },

    /// A read asked for records below the trim point, which are gone.
    #[error("LSN {lsn} is below the trim point {trim_point}: records before it have been trimmed")]
    Trimmed { lsn: Lsn, trim_point: Lsn },

    /// `trim(upto)` asked to trim past the end of the log.
    #[error("cannot trim up to LSN {upto}: the tail is {tail}, so the trim point can be at most {}", tail + 1)]
    TrimBeyondTail { upto: Lsn, tail: Lsn },

    /// The log was closed; reopen it to continue.
    #[error("the log is closed")]
    Closed,

    /// An earlier write failed, so the log stopped accepting writes: what that write left on
    /// disk is unknown until the log is reopened, which recovers exactly the durable prefix.
    #[error("the log stopped after a failed write ({cause}); reopen it to recover")]
    Failed { cause: String },

    /// The data directory is held by another open log (in this or another process).
    #[error("the log directory {path} is in use by another process (or another open log in this one); stop it first")]
    InUse { path: PathBuf },

    /// The data directory holds a log of a format this version does not read.
    #[error("the log directory {path} has format version {found}; this build reads version {expected}")]
    UnsupportedFormat { path: PathBuf, found: u64, expected: u64 },

    /// Stored bytes failed to decode or a checksum failed: the storage is damaged.
    #[error("the log is corrupted at {location}: {detail}; restore the data directory from a backup")]
    Corrupt { location: String, detail: String },

    /// An option is out of range.
    #[error("invalid log option {option}: {reason}")]
    InvalidOptions { option: &'static str, reason: String },

    /// The storage engine failed.
    #[error("log storage failed during {operation}: {message}")]
    Storage { operation: &'static str, message: String },

    /// A broken invariant of the log: a bug.
    #[error("internal error in the log (a bug): {0}")]
    Internal(String),
}

impl Error {
    /// Whether the same call may succeed if retried later without any other change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::QueueFull { .. })
    }

    /// Whether an append that failed with this error was refused before anything of it was
    /// written, so that it is certainly not in the log (a bound, backpressure, a sealed or
    /// closed log). After any other error the append's outcome is unknown until a reopen.
    pub fn wrote_nothing(&self) -> bool {
        matches!(
            self,
            Error::RecordTooLarge { .. }
                | Error::TooManyTags { .. }
                | Error::ReservedTag
                | Error::EmptyBatch
                | Error::BatchTooLarge { .. }
                | Error::QueueFull { .. }
                | Error::Sealed { .. }
                | Error::Closed
        )
    }
}

/// The result type of the shared log.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do when the disk holding `dir` is full, for the message of the failed write.
pub(crate) fn disk_full_advice(dir: &std::path::Path) -> String {
    format!("free space on the disk of {}, then restart: every acknowledged record is recovered", dir.display())
}

/// A tag that is valid on a record (not the reserved 0).
pub(crate) fn check_tag(tag: Tag) -> Result<()> {
    if tag == crate::ANY_TAG { Err(Error::ReservedTag) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_before_any_write_wrote_nothing() {
        assert!(Error::QueueFull { limit: 1 }.wrote_nothing());
        assert!(Error::Sealed { tail: 7 }.wrote_nothing());
        assert!(Error::RecordTooLarge { size_bytes: 2, limit_bytes: 1 }.wrote_nothing());
        assert!(!Error::Storage { operation: "append", message: "disk full".into() }.wrote_nothing(), "a failed write may have reached the disk");
        assert!(!Error::Failed { cause: "earlier write".into() }.wrote_nothing(), "a failed log must be reopened before anything is known");
        assert!(!Error::Internal("bug".into()).wrote_nothing());
    }
}
