//! Traces of the invocations that commit nothing (reads, replays of a recorded output,
//! failures), and of the workflow runs that end without a row ([`RunRecord`]): gathered by
//! the thread that ran them and appended to the log in batches, after their replies, as
//! [`TraceRecord`]s. Invocations that commit are traced by their commit record itself.
//!
//! A trace batch is enqueued on the log's writer like any append but nobody waits for it:
//! a crash can lose the traces of the last group commit's worth of reads and failures, never
//! a commit's (it is in the commit).

use comb_log::{Entry, LogBook};

use crate::commit::{InvocationRecord, RunRecord, TRACE_TAG, TraceRecord, encode_trace};
use crate::partition::{Member, now_us};

/// Most invocations, and most runs, in one trace record.
pub(crate) const TRACE_BATCH_MAX: usize = 256;

/// Most invocations, and most runs, held while the log refuses appends (backpressure);
/// beyond it the oldest are dropped and counted.
pub(crate) const TRACE_HELD_MAX: usize = 8_192;

/// Longest error message kept in a trace, in bytes; longer ones are cut (at a character
/// boundary) and marked.
pub(crate) const TRACE_ERROR_BYTES_MAX: usize = 1_024;

/// The traces one executor (or the coordinator) gathered and has not appended yet.
#[derive(Debug, Default)]
pub(crate) struct TraceBuffer {
    invocations: Vec<InvocationRecord>,
    runs: Vec<RunRecord>,
    /// Traces (invocations and runs) dropped because the log kept refusing appends.
    pub(crate) dropped: u64,
}

/// How far a job got: the member running and when it started, so that a failure is traced
/// under the function that failed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Progress {
    pub(crate) member: usize,
    pub(crate) start_us: u64,
}

/// The trace of one member of a job.
pub(crate) fn member_trace(member: &Member, partition: Option<u16>, start_us: u64) -> InvocationRecord {
    InvocationRecord {
        function: member.function.name.clone(),
        workflow_id: member.id.as_ref().map(|id| id.workflow.clone()),
        step_id: member.id.as_ref().map(|id| id.step.clone()),
        start_us,
        end_us: now_us(),
        recorded: member.record && member.id.is_some(),
        partition: partition.map(u32::from),
        ..InvocationRecord::default()
    }
}

/// An error message cut to [`TRACE_ERROR_BYTES_MAX`].
pub(crate) fn bounded_error(message: String) -> String {
    if message.len() <= TRACE_ERROR_BYTES_MAX {
        return message;
    }
    let mut end = TRACE_ERROR_BYTES_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &message[..end], message.len())
}

impl TraceBuffer {
    /// Adds the traces of functions that are traced.
    pub(crate) fn push(&mut self, invocation: InvocationRecord) {
        self.invocations.push(invocation);
    }

    /// Adds the trace of a run that ended without a row.
    pub(crate) fn push_run(&mut self, run: RunRecord) {
        self.runs.push(run);
    }

    /// Whether a full batch is waiting.
    pub(crate) fn is_full(&self) -> bool {
        self.invocations.len() >= TRACE_BATCH_MAX || self.runs.len() >= TRACE_BATCH_MAX
    }

    /// Enqueues what is waiting, a batch per record, without waiting for durability. What
    /// the log refuses for backpressure stays for the next call, up to [`TRACE_HELD_MAX`].
    pub(crate) fn flush(&mut self, log: &LogBook) {
        while !self.invocations.is_empty() || !self.runs.is_empty() {
            let (invocations, runs) = (self.invocations.len().min(TRACE_BATCH_MAX), self.runs.len().min(TRACE_BATCH_MAX));
            let record = TraceRecord { invocations: self.invocations[..invocations].to_vec(), runs: self.runs[..runs].to_vec() };
            // The append is enqueued; its completion needs no one.
            match log.append_batch_then(vec![Entry::new(vec![TRACE_TAG], encode_trace(&record))], drop) {
                Ok(()) => {
                    self.invocations.drain(..invocations);
                    self.runs.drain(..runs);
                }
                Err(comb_log::Error::QueueFull { .. }) => {
                    let excess = (self.invocations.len().saturating_sub(TRACE_HELD_MAX), self.runs.len().saturating_sub(TRACE_HELD_MAX));
                    if excess != (0, 0) {
                        self.invocations.drain(..excess.0);
                        self.runs.drain(..excess.1);
                        self.dropped += (excess.0 + excess.1) as u64;
                        tracing::warn!(dropped = self.dropped, "the log refuses appends: traces dropped");
                    }
                    return;
                }
                Err(err) => {
                    self.dropped += (self.invocations.len() + self.runs.len()) as u64;
                    self.invocations.clear();
                    self.runs.clear();
                    tracing::warn!(error = %err, dropped = self.dropped, "traces could not be appended");
                    return;
                }
            }
        }
    }
}
