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

/// Bytes of runs held that call for a flush at once, without waiting for the queue to be
/// idle: a run's trace carries its input and output.
pub(crate) const TRACE_FLUSH_RUN_BYTES: usize = 4 << 20;

/// Most bytes of runs held while the log refuses appends; beyond it the oldest are dropped
/// and counted, as beyond [`TRACE_HELD_MAX`].
pub(crate) const TRACE_HELD_RUN_BYTES_MAX: usize = 64 << 20;

/// Longest error message kept in a trace, in bytes; longer ones are cut (at a character
/// boundary) and marked.
pub(crate) const TRACE_ERROR_BYTES_MAX: usize = 1_024;

/// The traces one executor (or the coordinator) gathered and has not appended yet.
#[derive(Debug, Default)]
pub(crate) struct TraceBuffer {
    invocations: Vec<InvocationRecord>,
    runs: Vec<RunRecord>,
    /// The encoded bytes of `runs`, kept rather than summed: `is_full` is asked after every
    /// job.
    run_bytes: usize,
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

    /// Adds the traces of a transaction that wrote nothing: its invocations, and the run it
    /// ended, if it ended one (the executors' and the coordinator's one path).
    pub(crate) fn push_read(&mut self, invocations: Vec<InvocationRecord>, ended: Option<&RunRecord>) {
        self.invocations.extend(invocations);
        if let Some(run) = ended {
            self.push_run(run.clone());
        }
    }

    /// Adds the trace of a run that ended without a row.
    pub(crate) fn push_run(&mut self, run: RunRecord) {
        self.run_bytes += run.encoded_len();
        self.runs.push(run);
    }

    /// Whether a full batch is waiting (by count, or by the bytes of the runs).
    pub(crate) fn is_full(&self) -> bool {
        self.invocations.len() >= TRACE_BATCH_MAX || self.runs.len() >= TRACE_BATCH_MAX || self.run_bytes >= TRACE_FLUSH_RUN_BYTES
    }

    /// Forgets the first `count` runs.
    fn drop_runs(&mut self, count: usize) {
        self.run_bytes -= self.runs[..count].iter().map(Message::encoded_len).sum::<usize>();
        self.runs.drain(..count);
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
                    self.drop_runs(1);
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
                    self.drop_runs(runs);
                }
                Err(comb_log::Error::QueueFull { .. }) => {
                    let mut excess = (self.invocations.len().saturating_sub(TRACE_HELD_MAX), self.runs.len().saturating_sub(TRACE_HELD_MAX));
                    let mut kept_bytes = self.run_bytes - self.runs[..excess.1].iter().map(Message::encoded_len).sum::<usize>();
                    while kept_bytes > TRACE_HELD_RUN_BYTES_MAX {
                        kept_bytes -= self.runs[excess.1].encoded_len();
                        excess.1 += 1;
                    }
                    if excess != (0, 0) {
                        self.invocations.drain(..excess.0);
                        self.drop_runs(excess.1);
                        self.dropped += (excess.0 + excess.1) as u64;
                        tracing::warn!(dropped = self.dropped, "the log refuses appends: traces dropped");
                    }
                    return;
                }
                Err(err) => {
                    self.dropped += (self.invocations.len() + self.runs.len()) as u64;
                    self.invocations.clear();
                    self.drop_runs(self.runs.len());
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
    use std::time::Duration;

    use comb_log::{ANY_TAG, LogOptions};
    use futures::StreamExt;

    use super::*;
    use crate::commit::{LogRecord, decode_payload};

    fn run(id: usize, output_bytes: usize) -> RunRecord {
        RunRecord { id: format!("r{id}"), output: "x".repeat(output_bytes), ..RunRecord::default() }
    }

    fn invocation(function: &str, error_bytes: usize) -> InvocationRecord {
        InvocationRecord { function: function.to_owned(), error: (error_bytes > 0).then(|| "e".repeat(error_bytes)), ..InvocationRecord::default() }
    }

    /// The trace records appended to `log`, as (invocations' functions, runs' ids) per
    /// record, once `runs` runs have come (each durable record is waited for as the log
    /// publishes it); each record checked against `bytes_max`.
    async fn records(log: &LogBook, runs: usize, bytes_max: usize) -> Vec<(Vec<String>, Vec<String>)> {
        let (mut records, mut seen) = (Vec::new(), 0);
        let mut durable = log.subscribe(1, ANY_TAG);
        while seen < runs {
            let next = tokio::time::timeout(Duration::from_secs(10), durable.next()).await;
            let record = next.unwrap_or_else(|_| panic!("traced: {records:?}")).expect("the log is open").unwrap();
            assert!(record.payload.len() <= bytes_max, "a record of {} bytes", record.payload.len());
            let LogRecord::Trace(trace) = decode_payload(&record.payload).unwrap() else { panic!("not a trace record") };
            seen += trace.runs.len();
            records.push((trace.invocations.into_iter().map(|i| i.function).collect(), trace.runs.into_iter().map(|r| r.id).collect()));
        }
        records
    }

    #[tokio::test]
    async fn a_flush_fills_records_up_to_the_logs_bound_and_drops_only_a_trace_too_large_for_any() {
        const RECORD_BYTES_MAX: usize = 400;
        let log = LogBook::in_memory(LogOptions { record_bytes_max: RECORD_BYTES_MAX, ..LogOptions::default() }).unwrap();
        let mut buffer = TraceBuffer::default();
        for (function, error_bytes) in [("f0", 0), ("f1", 0), ("big", 450), ("f2", 0)] {
            buffer.push(invocation(function, error_bytes));
        }
        for (id, bytes) in [(0, 100), (1, 500), (2, 100), (3, 300)] {
            buffer.push_run(run(id, bytes));
        }
        buffer.flush(&log);
        assert_eq!(buffer.dropped, 2, "the invocation and the run larger than a record, each alone");
        let records = records(&log, 3, RECORD_BYTES_MAX).await;
        let functions: Vec<String> = records.iter().flat_map(|(f, _)| f.clone()).collect();
        let runs: Vec<String> = records.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(functions, ["f0", "f1", "f2"]);
        assert_eq!(runs, ["r0", "r2", "r3"], "every run but the one too large, in order");
        assert_eq!(records.last().map(|(f, r)| (f.len(), r.clone())), Some((0, vec!["r3".to_owned()])), "the 300-byte run did not fit beside r2: {records:?}");
        assert_eq!(buffer.run_bytes, 0, "nothing held");
    }

    /// While the log refuses appends (its queue is full), a flush keeps what it could not
    /// append for the next one: at most `TRACE_HELD_MAX` invocations and as many runs, and
    /// runs of at most `TRACE_HELD_RUN_BYTES_MAX` bytes; the oldest beyond are dropped and
    /// counted. Once the log takes appends again, what was kept reaches it, in order.
    #[tokio::test]
    async fn traces_the_log_refuses_are_held_within_their_bounds_the_oldest_dropped() {
        use std::sync::Arc;

        use comb_log::testkit::ControlledLoglet;
        use comb_log::{Loglet, MemoryLoglet};

        let loglet = Arc::new(ControlledLoglet::new(Arc::new(MemoryLoglet::new())));
        let log = LogBook::open_shared(Arc::clone(&loglet) as Arc<dyn Loglet>, LogOptions { queue_appends_max: 1, ..LogOptions::default() }).unwrap();
        // One append held inside the loglet, one more in the queue: the next is refused.
        loglet.hold();
        let filler = || vec![Entry::new(vec![TRACE_TAG], encode_trace(&TraceRecord::default()))];
        log.append_batch_then(filler(), drop).unwrap();
        let held = Arc::clone(&loglet);
        tokio::task::spawn_blocking(move || held.wait_until_held(1)).await.unwrap();
        log.append_batch_then(filler(), drop).unwrap();
        assert!(matches!(log.append_batch_then(filler(), drop), Err(comb_log::Error::QueueFull { .. })), "the queue is full");

        // By count.
        let mut counted = TraceBuffer::default();
        for i in 0..TRACE_HELD_MAX + 10 {
            counted.push(invocation(&format!("f{i}"), 0));
            counted.push_run(run(i, 1));
        }
        counted.flush(&log);
        assert_eq!(counted.dropped, 20, "the ten oldest invocations and runs");
        assert_eq!((counted.invocations.len(), counted.runs.len()), (TRACE_HELD_MAX, TRACE_HELD_MAX));
        assert_eq!((counted.invocations[0].function.as_str(), counted.runs[0].id.as_str()), ("f10", "r10"));
        counted.flush(&log);
        assert_eq!(counted.dropped, 20, "nothing more is dropped while within the bounds");

        // By the runs' bytes: 70 runs of a little over 1 MiB each, 63 of which fit in 64 MiB.
        let mut sized = TraceBuffer::default();
        for i in 0..70 {
            sized.push_run(run(i, 1 << 20));
        }
        sized.flush(&log);
        assert_eq!((sized.dropped, sized.runs.len(), sized.runs[0].id.as_str()), (7, 63, "r7"));
        assert!(sized.run_bytes <= TRACE_HELD_RUN_BYTES_MAX && sized.run_bytes == sized.runs.iter().map(Message::encoded_len).sum::<usize>());

        // The log takes appends again: every trace kept reaches it, in order.
        loglet.release();
        let mut appended = Vec::new();
        for buffer in [&mut counted, &mut sized] {
            while !buffer.invocations.is_empty() || !buffer.runs.is_empty() {
                buffer.flush(&log);
                tokio::task::yield_now().await;
            }
        }
        let mut durable = log.subscribe(1, TRACE_TAG);
        while appended.len() < TRACE_HELD_MAX + 63 {
            let record = tokio::time::timeout(Duration::from_secs(10), durable.next()).await.expect("the kept traces were appended").expect("the log is open").unwrap();
            let LogRecord::Trace(trace) = decode_payload(&record.payload).unwrap() else { panic!("not a trace record") };
            appended.extend(trace.runs.into_iter().map(|r| r.id));
        }
        let expected: Vec<String> = (10..TRACE_HELD_MAX + 10).chain(7..70).map(|i| format!("r{i}")).collect();
        assert_eq!(appended, expected);
        assert_eq!((counted.dropped, sized.dropped), (20, 7));
    }

    #[tokio::test]
    async fn a_record_holds_at_most_its_count_of_runs_and_held_run_bytes_call_for_a_flush() {
        let log = LogBook::in_memory(LogOptions::default()).unwrap();
        let mut buffer = TraceBuffer::default();
        for id in 0..TRACE_BATCH_MAX + 44 {
            buffer.push_run(run(id, 1));
        }
        assert!(buffer.is_full(), "a batch of runs by count");
        buffer.flush(&log);
        let counts: Vec<usize> = records(&log, TRACE_BATCH_MAX + 44, LogOptions::default().record_bytes_max).await.iter().map(|(_, r)| r.len()).collect();
        assert_eq!(counts, [TRACE_BATCH_MAX, 44]);
        buffer.push_run(run(0, TRACE_FLUSH_RUN_BYTES / 2));
        assert!(!buffer.is_full(), "one run, half the bytes that call for a flush");
        buffer.push_run(run(1, TRACE_FLUSH_RUN_BYTES / 2));
        assert!(buffer.is_full(), "two runs of as many bytes as call for a flush");
    }
}
