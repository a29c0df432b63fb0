//! The multi-partition coordinator: one thread, so that barriers never interleave (no
//! deadlock by construction).
//!
//! It takes the multi-partition invocations waiting (at most `BARRIER_INVOCATIONS_MAX`),
//! asks every executor to pause after its invocation in flight and lend it its state (moved
//! through a channel: one owner at a time), and runs the transactions one after another over
//! all of them. Each appends ONE record tagged with every partition it wrote (so it is
//! atomic across them by construction) and stages each partition's writes in that
//! partition's overlay, where the next one sees them. Then it hands the states back. The
//! executors resume at once; the log answers each caller when its record is durable. One barrier
//! for all the invocations waiting: its cost (the hand-offs, the wait for the slowest
//! executor's invocation in flight) is paid once, not per transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use comb_log::Entry;
use comb_planner::Value;

use crate::engine::Answer;
use crate::error::{Error, Result};
use crate::executor::{Scope, WriteSet};
use crate::keycodec::partition_of;
use crate::trace::{Progress, TraceBuffer};
use crate::partition::{Command, CommitReply, Job, Output, PartitionState, Ran, Reply, Several, Shared, SharedRelease, Waiter, run_job, split_by_partition};

/// Most multi-partition invocations run under one barrier: bounds how long the executors
/// stay paused for them.
pub(crate) const BARRIER_INVOCATIONS_MAX: usize = 64;

/// Commands to the coordinator.
pub(crate) enum CoordinatorCommand {
    Invoke(Job),
    Stop,
}

pub(crate) struct Coordinator {
    pub(crate) commands: Receiver<CoordinatorCommand>,
    pub(crate) partitions: Vec<Sender<Command>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) queued: Arc<AtomicUsize>,
    /// Barriers begun: counted once every executor has been asked to lend its state.
    pub(crate) barriers: Arc<AtomicU64>,
    /// Traces of the multi-partition invocations that committed nothing.
    pub(crate) traces: TraceBuffer,
}

impl Coordinator {
    pub(crate) fn run(mut self) {
        let mut jobs = Vec::with_capacity(BARRIER_INVOCATIONS_MAX);
        while let Ok(command) = self.commands.recv() {
            let mut stop = false;
            let mut next = Some(command);
            while let Some(command) = next.take() {
                match command {
                    CoordinatorCommand::Invoke(job) => {
                        self.queued.fetch_sub(1, Ordering::AcqRel);
                        jobs.push(job);
                    }
                    CoordinatorCommand::Stop => {
                        stop = true;
                        break;
                    }
                }
                if jobs.len() < BARRIER_INVOCATIONS_MAX {
                    next = self.commands.try_recv().ok();
                }
            }
            if !jobs.is_empty() {
                self.barrier(&mut jobs);
                self.traces.flush(&self.shared.log);
            }
            if stop {
                return;
            }
        }
    }

    /// Runs `jobs` (emptied) under one barrier.
    fn barrier(&mut self, jobs: &mut Vec<Job>) {
        // The barrier: every executor lends its state after its command in flight.
        let mut backs = Vec::with_capacity(self.partitions.len());
        let mut gives = Vec::with_capacity(self.partitions.len());
        for sender in &self.partitions {
            let (give, given) = channel();
            let (back, returned) = channel();
            if sender.send(Command::Lend { give, back: returned }).is_err() {
                break;
            }
            backs.push(back);
            gives.push(given);
        }
        self.barriers.fetch_add(1, Ordering::Release);
        let mut states: Vec<Box<PartitionState>> = gives.into_iter().filter_map(|g| g.recv().ok()).collect();
        if states.len() != self.partitions.len() {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(Error::Closed));
            }
            hand_back(states, &backs);
            return;
        }
        for job in jobs.drain(..) {
            self.invoke(job, &mut states);
        }
        hand_back(states, &backs);
    }

    /// Runs one multi-partition transaction over the lent `states`.
    // The states travel boxed through the executors' channels, so they are lent as boxes.
    #[allow(clippy::vec_box)]
    fn invoke(&mut self, mut job: Job, states: &mut [Box<PartitionState>]) {
        let record_partition = job.record_partition.unwrap_or_else(|| job.first_id().map_or(0, |id| partition_of(&Value::Text(id.workflow.clone()), self.shared.partitions)));
        let mut progress = Progress::default();
        for state in states.iter() {
            state.begin_reads();
        }
        let ran: Result<Ran> = states
            .iter()
            .try_for_each(|s| match &s.failed {
                Some(cause) => Err(Error::PartitionFailed { partition: s.id, cause: cause.clone() }),
                None => Ok(()),
            })
            .and_then(|()| {
                let first = job.members.first().map(|m| Arc::clone(&m.function));
                self.shared.steps.coordinated(first, || run_job(&mut job, &Several(states), Scope::All, record_partition, &self.shared, &mut progress))
            });
        // A transaction that wrote nothing, or failed, may have seen commits still pending
        // in any partition: it is answered once those are durable.
        let answer = match ran {
            Err(err) => {
                if let Some(trace) = job.failure_trace(progress, None, &err) {
                    self.traces.push(trace);
                }
                Err(err)
            }
            Ok(Ran::Read { output, traces }) => {
                self.traces.push_read(traces, output.ended.as_ref());
                Ok(output)
            }
            Ok(Ran::Commit { output, writes, payload, tags }) => {
                return self.commit(job.reply, job.answer, output, writes, payload, tags, states);
            }
        };
        let waiting: Vec<usize> = (0..states.len()).filter(|i| states[*i].saw_pending()).collect();
        if waiting.is_empty() || job.answer == Answer::Logged {
            let _ = job.reply.send(answer);
        } else {
            let shared = SharedRelease::new(waiting.len(), job.reply, answer);
            for i in waiting {
                states[i].release_after_seen(Waiter::Shared(Arc::clone(&shared)));
            }
        }
    }

    /// Appends a multi-partition commit and stages its writes in each partition's overlay.
    // The states travel boxed through the executors' channels, so they are lent as boxes.
    #[allow(clippy::vec_box)]
    #[allow(clippy::too_many_arguments)]
    fn commit(&mut self, reply: Reply, answer: Answer, output: Output, writes: WriteSet, payload: Vec<u8>, tags: Vec<u64>, states: &mut [Box<PartitionState>]) {
        let split = split_by_partition(writes);
        // The seqs the writes get when staged below: the log may report the record
        // durable before they are staged, but the executors read that report only
        // once they have their states back.
        let durable: Vec<(Sender<Command>, u64)> = split.keys().map(|p| (self.partitions[usize::from(*p)].clone(), states[usize::from(*p)].next_seq())).collect();
        let caller = CommitReply::new(reply, answer, output);
        let on_durable = move |result: comb_log::Result<comb_log::Lsn>| {
            for (sender, seq) in durable {
                let _ = sender.send(Command::Durable { seq, result: result.clone() });
            }
        };
        match caller.append(&self.shared.log, Entry::new(tags, payload), on_durable) {
            Err(err) => caller.refused(err),
            Ok(()) => {
                for (p, writes) in split {
                    states[usize::from(p)].stage(writes);
                }
                caller.staged();
            }
        }
    }
}

// The states travel boxed through the executors' channels, so they are lent as boxes.
#[allow(clippy::vec_box)]
fn hand_back(states: Vec<Box<PartitionState>>, backs: &[Sender<Box<PartitionState>>]) {
    for state in states {
        if let Some(back) = backs.get(usize::from(state.id)) {
            let _ = back.send(state);
        }
    }
}
