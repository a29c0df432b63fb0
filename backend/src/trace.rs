//! Traces of the invocations that commit nothing (reads, replays of a recorded output,
//! failures), and of the workflow runs that end without a row ([`RunRecord`]): gathered by
//! the thread that ran them and appended to the log in batches, after their replies, as
//! [`TraceRecord`]s. Invocations that commit are traced by their commit record itself.
//!
//! A trace batch is enqueued on the log's writer like any append but nobody waits for it:
//! a crash can lose the traces of the last group commit's worth of reads and failures, never
//! a commit's (it is in the commit).

use comb_log::{Entry, LogBook};
use prost::Message;

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

    /// Enqueues what is waiting, a batch per record, without waiting for durability: at most
    /// [`TRACE_BATCH_MAX`] invocations and as many runs a record, and no more bytes than the
    /// log takes in one (`record-bytes-max`). A trace too large for a record alone is dropped
    /// and counted. What the log refuses for backpressure stays for the next call, up to
    /// [`TRACE_HELD_MAX`].
    pub(crate) fn flush(&mut self, log: &LogBook) {
        // The record's kind byte comes before its fields.
        let bytes_max = log.options().record_bytes_max.saturating_sub(1);
        while !self.invocations.is_empty() || !self.runs.is_empty() {
            let mut bytes = 0;
            let invocations = fitting(&self.invocations, &mut bytes, bytes_max, true);
            let runs = fitting(&self.runs, &mut bytes, bytes_max, invocations == 0);
            if bytes > bytes_max {
                // One trace alone, larger than any record.
                if invocations == 1 {
                    self.invocations.remove(0);
                } else {
                    self.runs.remove(0);
                }
                self.dropped += 1;
                tracing::warn!(bytes, record_bytes_max = bytes_max + 1, dropped = self.dropped, "a trace larger than a log record was dropped");
                continue;
            }
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

/// How many of `traces`, from the first, go in the record being built, which holds `bytes`
/// so far: at most [`TRACE_BATCH_MAX`], within `bytes_max`, but the first even beyond it
/// when `alone` (the record holds nothing else), so that the caller can drop it.
fn fitting<T: Message>(traces: &[T], bytes: &mut usize, bytes_max: usize, alone: bool) -> usize {
    let mut count = 0;
    for trace in traces.iter().take(TRACE_BATCH_MAX) {
        // The field's key (one byte: tags 1 and 2), its length, then the message.
        let len = trace.encoded_len();
        let field = 1 + prost::length_delimiter_len(len) + len;
        if *bytes + field > bytes_max && !(alone && count == 0) {
            break;
        }
        *bytes += field;
        count += 1;
        if *bytes > bytes_max {
            break;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use comb_log::{ANY_TAG, LogOptions};

    use super::*;
    use crate::commit::{LogRecord, decode_payload};

    #[tokio::test]
    async fn a_flush_splits_records_by_bytes_and_drops_only_a_trace_too_large_for_any() {
        const RECORD_BYTES_MAX: usize = 400;
        let log = LogBook::in_memory(LogOptions { record_bytes_max: RECORD_BYTES_MAX, ..LogOptions::default() }).unwrap();
        let run = |id: usize, output_bytes: usize| RunRecord { id: format!("r{id}"), output: "x".repeat(output_bytes), ..RunRecord::default() };
        let mut buffer = TraceBuffer::default();
        for i in 0..5 {
            buffer.push(InvocationRecord { function: format!("f{i}"), ..InvocationRecord::default() });
        }
        for (id, bytes) in [(0, 100), (1, 500), (2, 100), (3, 250)] {
            buffer.push_run(run(id, bytes));
        }
        buffer.flush(&log);
        assert_eq!(buffer.dropped, 1, "the run larger than a record, alone");
        assert!(!buffer.is_full());
        let (mut functions, mut runs, mut records) = (Vec::new(), Vec::new(), 0);
        let (mut next, deadline) = (1, Instant::now() + Duration::from_secs(10));
        while functions.len() < 5 || runs.len() < 3 {
            assert!(Instant::now() < deadline, "traced: {functions:?} {runs:?}");
            let Some(record) = log.read_next(ANY_TAG, next).await.unwrap() else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            assert!(record.payload.len() <= RECORD_BYTES_MAX, "a record of {} bytes", record.payload.len());
            let LogRecord::Trace(trace) = decode_payload(&record.payload).unwrap() else { panic!("not a trace record") };
            functions.extend(trace.invocations.into_iter().map(|i| i.function));
            runs.extend(trace.runs.into_iter().map(|r| r.id));
            (next, records) = (record.lsn + 1, records + 1);
        }
        assert_eq!(functions, ["f0", "f1", "f2", "f3", "f4"]);
        assert_eq!(runs, ["r0", "r2", "r3"], "every run but the one too large, in order");
        assert!(records >= 2, "the 250-byte run does not fit beside the rest");
    }
}
