//! A partition's executor: one thread that owns the partition's state and runs its
//! transactions serially, without locks.
//!
//! ```text
//!  invoke ──(bounded by a counter)──┐
//!  Durable(seq) from a log thread ──┼──> channel ──> executor thread
//!  Lend / Checkpoint / Stop ────────┘                  │ run body over write set ▸ overlay ▸ row cache ▸
//!                                                      │   dirty ▸ flushing ▸ RocksDB
//!                                                      │ ok + writes: encode record, enqueue append (the log
//!                                                      │   sends Durable, then answers the caller),
//!                                                      │   stage writes in the overlay (next txn sees them)
//!                                                      │ Durable: mark; drain the durable prefix: its writes
//!                                                      │   move to `dirty`, the reads waiting on it are released
//!                                                      ▼ write-back (by bytes or age): `dirty` becomes `flushing`,
//!                                                          written to RocksDB in key order a chunk at a time,
//!                                                          the last chunk with the applied LSN
//! ```
//!
//! Invariants: a commit is answered only once its record (hence every record before it) is
//! durable, by the log, as it wakes its own tasks (not through this queue, where the report
//! would wait behind the invocation running); a read-only transaction is released once
//! every commit whose staged writes it read is durable; nothing of a failed transaction is
//! staged or appended; after a failed append the partition refuses all work (fail-stop)
//! until the engine is reopened. A caller that asked for the logged answer
//! ([`Answer::Logged`]: a workflow's step) is answered once its commit is staged, or at once
//! when it wrote nothing: it hands the output only to work whose own commit comes later in
//! the log, and is durable with it.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque, btree_map};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use comb_log::{Entry, LogBook, Lsn, SlowCalls};
use prost::Message;
use tokio::sync::oneshot;

use crate::commit::{COMMIT_VERSION, CommitRecord, InvocationRecord, RunRecord, WriteRecord, encode_commit, partition_tag};
use crate::engine::Answer;
use crate::error::{Error, Result};
use crate::executor::{Limits, Scope, Snapshot, Write, WriteKind, WriteSet, first_in_order};
use crate::function::{Registered, RunEndBody};
use crate::keycodec::partition_of;
use crate::keys::{meta_applied, object_of_key, partition_of_key, recorded_key};
use crate::rowcache::{RowCache, footprint};
use crate::store::{Batch, Store};
use crate::trace::{Progress, TraceBuffer, bounded_error, member_trace};
use crate::txn::{Deadline, Txn};

/// An invocation's identity: the workflow and the step within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct InvocationId {
    /// The workflow id.
    pub workflow: String,
    /// The step id.
    pub step: String,
}

/// What an invocation returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The function's output.
    pub value: serde_json::Value,
    /// The LSN of its commit record; `None` when it wrote nothing (read-only, or a
    /// recorded output returned again).
    pub lsn: Option<Lsn>,
    /// Whether the output is the recorded one of an earlier invocation with the same id:
    /// nothing ran.
    pub replayed: bool,
    /// The run a transaction with a [`RunEnd`] ended: traced, or written by its writer.
    pub ended: Option<RunRecord>,
}

pub(crate) type Reply = oneshot::Sender<Result<Output>>;

/// What the input function of a multi-function transaction is told.
#[derive(Debug)]
pub struct NextInput<'a> {
    /// The member whose input is wanted (1 for the second).
    pub index: usize,
    /// The outputs of the members before it, in order.
    pub outputs: &'a [serde_json::Value],
    /// The partition that holds the transaction's recorded outputs.
    pub partition: u16,
}

/// Computes the input of a later member of a multi-function transaction.
pub type NextInputFn = dyn Fn(&NextInput<'_>) -> std::result::Result<serde_json::Value, crate::function::BoxError> + Send + Sync;

/// Ends a workflow run that is one transaction: given the members' outputs, the run's
/// record. Called on the thread that ran them, after the last.
pub type EndFn = dyn Fn(&[serde_json::Value]) -> std::result::Result<RunRecord, crate::function::BoxError> + Send + Sync;

/// How a transaction that is a whole workflow run ends it.
#[derive(Clone)]
pub struct RunEnd {
    /// Builds the run's record from the members' outputs.
    pub build: Arc<EndFn>,
    /// The registered function whose run-end body ([`crate::Function::writes_run_ends`])
    /// writes the record in the transaction, after the members: their commit carries it.
    /// `None`: the run writes nothing and its record is traced; a transaction that writes
    /// fails instead (its run needs a row).
    pub writer: Option<String>,
}

impl std::fmt::Debug for RunEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunEnd").field("writer", &self.writer).finish_non_exhaustive()
    }
}

/// A job's [`RunEnd`], its writer resolved: the function and its run-end body.
pub(crate) struct JobEnd {
    pub(crate) build: Arc<EndFn>,
    pub(crate) writer: Option<(Arc<Registered>, Arc<RunEndBody>)>,
}

/// A reply released by several partitions together (a multi-partition read).
pub(crate) struct SharedRelease {
    remaining: AtomicUsize,
    reply: Mutex<Option<(Reply, Result<Output>)>>,
}

impl SharedRelease {
    pub(crate) fn new(count: usize, reply: Reply, answer: Result<Output>) -> Arc<SharedRelease> {
        Arc::new(SharedRelease { remaining: AtomicUsize::new(count), reply: Mutex::new(Some((reply, answer))) })
    }

    fn release(&self, result: Result<()>) {
        let last = self.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if last || result.is_err() {
            let taken = self.reply.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if let Some((reply, answer)) = taken {
                let _ = reply.send(result.and(answer));
            }
        }
    }
}

/// A commit's caller, answered once: with the record's outcome, by the log the moment the
/// record is durable (not through an executor's queue, where the report waits behind the
/// invocation running; and off the log's writer when many wait, as its tasks are); with the
/// log's refusal of the append; or, asked for the logged answer, once the commit's writes are
/// staged.
pub(crate) struct CommitReply {
    slot: Arc<Mutex<Option<(Reply, Output)>>>,
    answer: Answer,
}

impl CommitReply {
    pub(crate) fn new(reply: Reply, answer: Answer, output: Output) -> CommitReply {
        CommitReply { slot: Arc::new(Mutex::new(Some((reply, output)))), answer }
    }

    /// Appends the commit's record. `on_durable` (quick: the executors' reports) is called
    /// once it is durable or has failed; then the caller, if it asked for the durable answer,
    /// is answered with the record's outcome.
    pub(crate) fn append(&self, log: &LogBook, entry: Entry, on_durable: impl FnOnce(comb_log::Result<Lsn>) + Send + 'static) -> comb_log::Result<()> {
        match self.answer {
            Answer::Logged => log.append_batch_then(vec![entry], on_durable),
            Answer::Durable => {
                let slot = Arc::clone(&self.slot);
                let answer = move |result: comb_log::Result<Lsn>| {
                    if let Some((reply, output)) = take_reply(&slot) {
                        let _ = reply.send(result.map(|lsn| Output { lsn: Some(lsn), ..output }).map_err(Error::Log));
                    }
                };
                log.append_batch_then_wake(vec![entry], on_durable, answer)
            }
        }
    }

    /// The log refused the append: its callback is never called.
    pub(crate) fn refused(self, err: comb_log::Error) {
        if let Some((reply, _)) = take_reply(&self.slot) {
            let _ = reply.send(Err(Error::Log(err)));
        }
    }

    /// The commit's writes are staged: a caller asked for the logged answer gets it now, and
    /// its next work on these partitions sees the writes.
    pub(crate) fn staged(self) {
        if self.answer == Answer::Logged
            && let Some((reply, output)) = take_reply(&self.slot)
        {
            let _ = reply.send(Ok(output));
        }
    }
}

fn take_reply(slot: &Mutex<Option<(Reply, Output)>>) -> Option<(Reply, Output)> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
}

/// Who waits for the pending commits to become durable: transactions that committed
/// nothing themselves (a commit's own caller is a [`CommitReply`]).
pub(crate) enum Waiter {
    /// A transaction that saw the commit and wrote nothing: its output, or its failure (a
    /// duplicate key, a function's error), may rest on the commit's writes, so it is
    /// answered only once they are durable.
    Read(Reply, Result<Output>),
    /// One partition's share of a multi-partition read.
    Shared(Arc<SharedRelease>),
}

impl Waiter {
    /// Releases the waiter: the commits it waited on are durable (`Ok`), or never will be.
    fn release(self, result: Result<()>) {
        match self {
            Waiter::Read(reply, answer) => {
                let _ = reply.send(result.and(answer));
            }
            Waiter::Shared(shared) => shared.release(result),
        }
    }
}

/// A commit staged in the overlay, waiting to be durable and applied.
pub(crate) struct Pending {
    seq: u64,
    lsn: Option<Lsn>,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    waiters: Vec<Waiter>,
}

/// A partition's state: owned by its executor thread, or lent to the multi-partition
/// coordinator while the executor waits at the barrier. One owner at a time.
pub(crate) struct PartitionState {
    pub(crate) id: u16,
    pub(crate) store: Arc<Store>,
    /// Staged writes not yet applied to the store, with the seq of the commit that wrote them.
    overlay: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    /// The newest commit whose staged writes the reads since [`PartitionState::begin_reads`]
    /// saw (0: none): a transaction that commits nothing waits for that commit alone.
    seen: Cell<u64>,
    pending: VecDeque<Pending>,
    /// Durable writes not yet written to the store, the newest per key.
    dirty: Unstored,
    /// When the oldest entry of `dirty` arrived.
    dirty_since: Option<Instant>,
    /// The write-back under way: rows taken from `dirty`, written to the store a chunk at a
    /// time; the last chunk also stores `flushing_lsn`, the applied LSN they make true.
    flushing: Unstored,
    flushing_lsn: Lsn,
    /// The applied LSN the store holds: every write of this partition up to it is in the
    /// store (some rows may be newer). Set by the last chunk of each write-back.
    stored_lsn: Lsn,
    /// Write-backs finished since the partition opened: a checkpoint waits for a number.
    write_backs: u64,
    writeback: WriteBack,
    /// The newest durable value of keys read or written lately.
    cache: RowCache,
    next_seq: u64,
    /// Every commit up to here is applied: in the store, or in `dirty` and `flushing`.
    pub(crate) applied_lsn: Lsn,
    pub(crate) failed: Option<String>,
}

/// When a partition writes its durable writes back to the state store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteBack {
    /// Bytes of `dirty` that start a write-back.
    pub(crate) bytes: usize,
    /// Age of the oldest entry of `dirty` that starts a write-back.
    pub(crate) interval: Duration,
}

/// Rows written back to the store per chunk, so that a write-back never holds the executor
/// for long: about a millisecond of RocksDB inserts.
const WRITEBACK_CHUNK_ROWS: usize = 1_024;

/// Durable writes waiting for the store, in key order: a row updated many times between
/// write-backs costs the store one write, and the store's memtable takes them sorted
/// (each insert starts its search where the last one ended).
#[derive(Debug, Default)]
struct Unstored {
    rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
}

impl Unstored {
    /// One search of the map whether the key is new or not: its comparisons are the largest
    /// item of an executor's own work.
    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        match self.rows.entry(key) {
            btree_map::Entry::Occupied(mut entry) => {
                self.bytes = self.bytes - footprint(entry.key(), entry.get()) + footprint(entry.key(), &value);
                entry.insert(value);
            }
            btree_map::Entry::Vacant(entry) => {
                self.bytes += footprint(entry.key(), &value);
                entry.insert(value);
            }
        }
    }

    fn pop_first(&mut self) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        let (key, value) = self.rows.pop_first()?;
        self.bytes -= footprint(&key, &value);
        Some((key, value))
    }
}

impl Snapshot for PartitionState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some((seq, value)) = self.overlay.get(key) {
            self.saw(*seq);
            return Ok(value.clone());
        }
        // The cache first: it holds the newest value of every key it holds (each drained
        // write updates it), and a hash lookup is cheaper than one in `dirty`.
        if let Some(row) = self.cache.get(key) {
            return Ok(Some(row));
        }
        if let Some(value) = self.dirty.rows.get(key).or_else(|| self.flushing.rows.get(key)) {
            return Ok(value.clone());
        }
        let value = self.store.get(key)?;
        if let Some(row) = &value {
            self.cache.fill(key, row);
        }
        Ok(value)
    }

    fn scan(&self, start: &[u8], end: &[u8], count: usize, descending: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let range = start.to_vec()..end.to_vec();
        // Oldest layer first, so that a newer value of a key replaces an older one.
        let flushing = self.flushing.rows.range(range.clone());
        let dirty = self.dirty.rows.range(range.clone());
        let staged = self.overlay.range(range).map(|(key, (seq, value))| {
            self.saw(*seq);
            (key, value)
        });
        let layers = flushing.chain(dirty).chain(staged);
        if layers.clone().next().is_none() {
            return self.store.scan(start, Some(end), count, descending);
        }
        // Each delete above may hide one row the store returns: read that many more.
        let deletes = layers.clone().filter(|(_, v)| v.is_none()).count();
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.store.scan(start, Some(end), count.saturating_add(deletes), descending)?.into_iter().collect();
        for (key, value) in layers {
            match value {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(first_in_order(merged, count, descending))
    }
}

/// Several partitions' states, lent to the coordinator: keys route by their partition.
pub(crate) struct Several<'a>(pub(crate) &'a [Box<PartitionState>]);

impl Snapshot for Several<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0[usize::from(partition_of_key(key))].get(key)
    }

    fn scan(&self, start: &[u8], end: &[u8], count: usize, descending: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.0[usize::from(partition_of_key(start))].scan(start, end, count, descending)
    }
}

impl PartitionState {
    pub(crate) fn new(id: u16, store: Arc<Store>, applied_lsn: Lsn, cache_bytes: usize, writeback: WriteBack) -> PartitionState {
        PartitionState {
            id,
            store,
            overlay: BTreeMap::new(),
            seen: Cell::new(0),
            pending: VecDeque::new(),
            dirty: Unstored::default(),
            dirty_since: None,
            flushing: Unstored::default(),
            flushing_lsn: applied_lsn,
            stored_lsn: applied_lsn,
            write_backs: 0,
            writeback,
            cache: RowCache::new(cache_bytes),
            next_seq: 1,
            applied_lsn,
            failed: None,
        }
    }

    /// The seq the next staged commit gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Stages a commit's writes (those of this partition) in the overlay: later
    /// transactions see them at once. Returns the commit's seq.
    pub(crate) fn stage(&mut self, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        for (key, value) in &writes {
            self.overlay.insert(key.clone(), (seq, value.clone()));
        }
        self.pending.push_back(Pending { seq, lsn: None, writes, waiters: Vec::new() });
        seq
    }

    /// Starts a transaction's reads of this partition: the commits that earlier reads saw
    /// are forgotten.
    pub(crate) fn begin_reads(&self) {
        self.seen.set(0);
    }

    /// A read saw a staged write of commit `seq`.
    fn saw(&self, seq: u64) {
        self.seen.set(self.seen.get().max(seq));
    }

    /// The commit the reads since [`PartitionState::begin_reads`] wait for: the newest whose
    /// staged writes they saw, while it is not yet durable.
    fn awaited(&mut self) -> Option<&mut Pending> {
        self.pending_at(self.seen.get()).filter(|p| p.lsn.is_none())
    }

    /// Whether the reads since [`PartitionState::begin_reads`] saw a write not yet durable.
    pub(crate) fn saw_pending(&mut self) -> bool {
        self.awaited().is_some()
    }

    /// Answers a transaction that committed nothing (or failed): at once when its caller
    /// asked for the logged answer, else once every commit whose writes it read is durable.
    pub(crate) fn answer_read(&mut self, reply: Reply, answer: Answer, result: Result<Output>) {
        match answer {
            Answer::Logged => drop(reply.send(result)),
            Answer::Durable => self.release_after_seen(Waiter::Read(reply, result)),
        }
    }

    /// Releases a transaction that committed nothing once the commits whose staged writes
    /// its reads saw (since [`PartitionState::begin_reads`]) are durable: at once when they
    /// saw none. Its output, or its failure (a duplicate key, a function's error), rests on
    /// what it read; what it did not read cannot change it. Had it read only durable rows,
    /// it returns the same whether or not the commits still pending survive a crash.
    pub(crate) fn release_after_seen(&mut self, waiter: Waiter) {
        match self.awaited() {
            Some(commit) => commit.waiters.push(waiter),
            None => waiter.release(Ok(())),
        }
    }

    /// Whether commits are staged and not yet applied.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The pending commit `seq`, if it is still pending. Seqs are dense in `pending` (staged
    /// in order, applied from the front): it is found by its distance from the front,
    /// however long the queue.
    fn pending_at(&mut self, seq: u64) -> Option<&mut Pending> {
        let index = usize::try_from(seq.checked_sub(self.pending.front()?.seq)?).ok()?;
        self.pending.get_mut(index).filter(|p| p.seq == seq)
    }

    fn mark_durable(&mut self, seq: u64, lsn: Lsn) {
        // After a failure the queue is emptied, and a late Durable(seq) finds nothing to mark.
        if let Some(p) = self.pending_at(seq) {
            p.lsn = Some(lsn);
        }
    }

    /// Applies the durable prefix of the pending commits: their writes move from the overlay
    /// to `dirty` (the store gets them at the next write-back) and their waiters are released.
    pub(crate) fn drain(&mut self) {
        if self.failed.is_some() {
            return;
        }
        while let Some(front) = self.pending.front() {
            let Some(lsn) = front.lsn else { break };
            let pending = self.pending.pop_front().expect("front exists");
            for (key, value) in pending.writes {
                if self.overlay.get(&key).is_some_and(|(seq, _)| *seq == pending.seq) {
                    self.overlay.remove(&key);
                }
                self.cache.update(&key, &value);
                self.dirty.insert(key, value);
            }
            self.applied_lsn = self.applied_lsn.max(lsn);
            for waiter in pending.waiters {
                waiter.release(Ok(()));
            }
        }
        // The age of `dirty` exists only while it holds something: a clock left running over
        // an empty map would keep the executor waking for a write-back with nothing to write.
        if !self.dirty.rows.is_empty() {
            self.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    /// How long until a write-back is due: `None` when nothing waits for the store, or when
    /// the partition has failed (it writes nothing back any more: a due write-back would wake
    /// its executor at once, forever).
    pub(crate) fn write_back_due_in(&self) -> Option<Duration> {
        if self.failed.is_some() {
            return None;
        }
        if !self.flushing.rows.is_empty() {
            return Some(Duration::ZERO);
        }
        let since = self.dirty_since?;
        Some(self.writeback.interval.saturating_sub(since.elapsed()))
    }

    /// Moves the write-back along: starts one when `dirty` is due (by bytes or by age) and
    /// writes a chunk of the one under way; more while `dirty` is due again before the last
    /// write-back is done (the bound on both), and everything when `all` (a checkpoint, a
    /// stop).
    ///
    /// The store may hold a chunk's rows before the applied LSN that covers them: after a
    /// crash, replay from the stored applied LSN writes each of those keys again, ending at
    /// its newest after-image, so the rows and the LSN agree once more.
    pub(crate) fn write_back(&mut self, all: bool) {
        while self.failed.is_none() {
            if self.flushing.rows.is_empty() {
                let due = all || self.dirty.bytes >= self.writeback.bytes || self.dirty_since.is_some_and(|t| t.elapsed() >= self.writeback.interval);
                if self.dirty.rows.is_empty() || !due {
                    return;
                }
                self.begin_write_back();
            }
            self.write_chunk();
            // `dirty` is due again before this write-back is done: finish it now.
            let backlog = !self.flushing.rows.is_empty() && !self.dirty.rows.is_empty() && self.dirty.bytes >= self.writeback.bytes;
            if !all && !backlog {
                return;
            }
        }
    }

    /// Moves `dirty` to `flushing`: a write-back of everything applied so far begins.
    fn begin_write_back(&mut self) {
        self.flushing = std::mem::take(&mut self.dirty);
        self.flushing_lsn = self.applied_lsn;
        self.dirty_since = None;
    }

    /// For a checkpoint: begins a write-back of `dirty` unless one is under way, without
    /// writing anything (the executor writes it a chunk at a time, as any other). Returns
    /// the number [`PartitionState::write_backs_done`] reaches once it is stored, or `None`
    /// when nothing waits for the store.
    pub(crate) fn write_back_for_checkpoint(&mut self) -> Option<u64> {
        if self.flushing.rows.is_empty() {
            if self.dirty.rows.is_empty() {
                return None;
            }
            self.begin_write_back();
        }
        Some(self.write_backs + 1)
    }

    /// Write-backs finished since the partition opened.
    pub(crate) fn write_backs_done(&self) -> u64 {
        self.write_backs
    }

    /// The lowest LSN of the log this partition still needs, while it needs one: the one
    /// after what the store holds, while commits are in flight or applied writes wait for
    /// the store. `None` when the store holds everything applied and nothing is in flight.
    pub(crate) fn needed_from(&self) -> Option<Lsn> {
        let all_stored = self.pending.is_empty() && self.dirty.rows.is_empty() && self.flushing.rows.is_empty();
        (!all_stored).then_some(self.stored_lsn + 1)
    }

    /// Writes the next chunk of `flushing` to the store; the last one with the applied LSN.
    fn write_chunk(&mut self) {
        let mut batch = Batch::default();
        for _ in 0..WRITEBACK_CHUNK_ROWS {
            let Some((key, value)) = self.flushing.pop_first() else { break };
            match &value {
                Some(v) => batch.put(&key, v),
                None => batch.delete(&key),
            }
        }
        if self.flushing.rows.is_empty() {
            batch.put(&meta_applied(self.id), &self.flushing_lsn.to_be_bytes());
        }
        match self.store.write(batch) {
            Ok(()) if self.flushing.rows.is_empty() => {
                self.stored_lsn = self.flushing_lsn;
                self.write_backs += 1;
            }
            Ok(()) => {}
            // The rows are durable in the log; only writing them back failed. Stop:
            // reopening replays them.
            Err(err) => self.fail(err.to_string()),
        }
    }

    /// Stops the partition: every waiter gets the error, and so does all later work.
    pub(crate) fn fail(&mut self, cause: String) {
        tracing::error!(partition = self.id, %cause, "partition stopped");
        for pending in self.pending.drain(..) {
            for waiter in pending.waiters {
                waiter.release(Err(Error::PartitionFailed { partition: self.id, cause: cause.clone() }));
            }
        }
        self.failed.get_or_insert(cause);
    }

    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(cause) => Err(Error::PartitionFailed { partition: self.id, cause: cause.clone() }),
            None => Ok(()),
        }
    }
}

/// Commands to a partition's executor.
pub(crate) enum Command {
    /// Run an invocation.
    Invoke(Job),
    /// A commit's append completed.
    Durable { seq: u64, result: comb_log::Result<Lsn> },
    /// Pause at the barrier: lend the state to the coordinator and wait for it back.
    Lend { give: Sender<Box<PartitionState>>, back: Receiver<Box<PartitionState>> },
    /// Apply what is durable, write it back, and report the lowest LSN this partition still
    /// needs (once the write-back is stored: it goes a chunk at a time, at idle moments,
    /// drains, and after each invocation).
    Checkpoint { reply: Sender<Result<Lsn>> },
    /// Finish the commits in flight, then exit.
    Stop,
}

/// One function of a queued transaction.
pub(crate) struct Member {
    pub(crate) function: Arc<Registered>,
    pub(crate) id: Option<InvocationId>,
    pub(crate) record: bool,
}

/// One transaction, as queued: one function, or several run in order (a multi-function
/// transaction) whose later inputs are computed from the earlier outputs.
pub(crate) struct Job {
    pub(crate) members: Vec<Member>,
    /// The first member's input.
    pub(crate) input: serde_json::Value,
    /// The later members' inputs.
    pub(crate) next_input: Option<Arc<NextInputFn>>,
    /// The end of the run this job is, when it is a whole run.
    pub(crate) end: Option<JobEnd>,
    /// The partition that holds the recorded outputs; `None`: the executing partition, or
    /// for a multi-partition run the partition of the workflow id.
    pub(crate) record_partition: Option<u16>,
    /// Only the recorded-output lookup: when the members' outputs are not recorded here,
    /// nothing runs, and the output is `null`, not replayed.
    pub(crate) lookup_only: bool,
    /// When the caller is answered.
    pub(crate) answer: Answer,
    pub(crate) reply: Reply,
}

impl Job {
    /// The members whose invocations are traced.
    pub(crate) fn traced_members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.function.traced)
    }

    /// The trace of a failed run: the member that failed, with the error.
    pub(crate) fn failure_trace(&self, progress: Progress, partition: Option<u16>, err: &Error) -> Option<InvocationRecord> {
        let member = self.members.get(progress.member).filter(|m| m.function.traced)?;
        Some(InvocationRecord { error: Some(bounded_error(err.to_string())), ..member_trace(member, partition, progress.start_us) })
    }

    /// The first member's identity, if it has one.
    pub(crate) fn first_id(&self) -> Option<&InvocationId> {
        self.members.first().and_then(|m| m.id.as_ref())
    }
}

/// What every executor shares.
pub(crate) struct Shared {
    pub(crate) log: LogBook,
    pub(crate) partitions: u16,
    pub(crate) limits: Limits,
    pub(crate) json_bytes_max: usize,
    /// Longest one transaction may run (`transaction-time-max-ms`).
    pub(crate) transaction_time_max: Duration,
    /// Whether invocations' traces list the keys they read.
    pub(crate) trace_reads: bool,
    /// The executors' slow steps.
    pub(crate) steps: StepTimes,
}

/// The durations (ms) from which one step of an executor counts as slow: an invocation, or
/// one command handled (a durability report's drain, a barrier, a checkpoint), or the work
/// of an idle moment. Its queue waited behind all of it.
pub(crate) const SLOW_STEP_MS: [u64; 2] = [10, 100];

/// Counts the executors' slow steps, over every partition, and shows the step each of them
/// (and the coordinator) runs now.
#[derive(Debug)]
pub(crate) struct StepTimes {
    slow: SlowCalls<{ SLOW_STEP_MS.len() }>,
    /// One for each partition's executor, then the coordinator's.
    busy: Box<[Busy]>,
    /// What the steps' starts count from (a monotonic clock).
    epoch: Instant,
}

/// A thread's step in progress. Each on cache lines of its own: every step of its thread
/// writes it, and the threads run on different cores.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Busy {
    /// When it began, in microseconds after the epoch, plus one; 0 between steps.
    since_us: AtomicU64,
    /// What it is.
    kind: Mutex<StepKind>,
}

/// A step that has run for a while, as [`crate::Engine::steps_in_progress`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInProgress {
    /// The partition whose executor runs it; `None`: the coordinator (a multi-partition
    /// transaction, while every executor waits at its barrier).
    pub partition: Option<u16>,
    /// When it began, in microseconds since the Unix epoch.
    pub started_us: u64,
    /// How long it has run.
    pub running: Duration,
    /// What it is: an invocation and its first function, or the command.
    pub step: String,
    /// Whether it runs functions (an invocation, a multi-partition transaction), rather
    /// than the engine's own work (a command, a barrier's wait, an idle moment's).
    pub runs_functions: bool,
}

impl StepTimes {
    pub(crate) fn new(partitions: u16) -> StepTimes {
        StepTimes { slow: SlowCalls::new(SLOW_STEP_MS), busy: (0..=partitions).map(|_| Busy::default()).collect(), epoch: Instant::now() }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// Runs `step`, a step of `kind` on `partition`'s executor, and counts how long it took.
    /// A step past the last bound is also logged with its kind: at most ten a second per
    /// partition, by its own length.
    fn timed<T>(&self, partition: u16, kind: StepKind, step: impl FnOnce() -> T) -> T {
        let (outcome, us) = self.slow.time(|| self.watched(usize::from(partition), kind, step));
        if self.slow.past_last(us) {
            let kind = self.busy[usize::from(partition)].kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner).name();
            tracing::warn!(partition, ms = us / 1_000, step = %kind, "an executor step held its partition's queue");
        }
        outcome
    }

    /// Runs `step` on the thread watched in slot `slot` (a partition, or the coordinator's
    /// after them), showing it in progress meanwhile.
    fn watched<T>(&self, slot: usize, kind: StepKind, step: impl FnOnce() -> T) -> T {
        /// Ends the step shown, also when it unwinds.
        struct Ended<'a>(&'a AtomicU64);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::Release);
            }
        }
        let busy = &self.busy[slot];
        *busy.kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = kind;
        busy.since_us.store(self.now_us(), Ordering::Release);
        let _ended = Ended(&busy.since_us);
        step()
    }

    /// Runs a multi-partition transaction's `step` on the coordinator, shown in progress.
    pub(crate) fn coordinated<T>(&self, first: Option<Arc<Registered>>, step: impl FnOnce() -> T) -> T {
        self.watched(self.busy.len() - 1, StepKind::MultiPartition(first), step)
    }

    /// The steps in progress that have run longer than `longer_than`.
    pub(crate) fn in_progress(&self, longer_than: Duration) -> Vec<StepInProgress> {
        let (now, wall_now) = (self.now_us(), now_us());
        let last = self.busy.len() - 1;
        let mut found = Vec::new();
        for (slot, busy) in self.busy.iter().enumerate() {
            let since = busy.since_us.load(Ordering::Acquire);
            let running = Duration::from_micros(now.saturating_sub(since));
            if since == 0 || running <= longer_than {
                continue;
            }
            let (step, runs_functions) = {
                let kind = busy.kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                (kind.name(), matches!(*kind, StepKind::Invocation(_) | StepKind::MultiPartition(_)))
            };
            // Read again: the step may have ended meanwhile, and the kind be the next one's.
            if busy.since_us.load(Ordering::Acquire) != since {
                continue;
            }
            let started_us = wall_now.saturating_sub(running.as_micros() as u64);
            found.push(StepInProgress { partition: (slot < last).then_some(slot as u16), started_us, running, step, runs_functions });
        }
        found
    }

    pub(crate) fn slow_steps(&self) -> SlowSteps {
        let [over_10ms, over_100ms] = self.slow.counts();
        SlowSteps { over_10ms, over_100ms, us_max: self.slow.us_max() }
    }
}

/// What an executor's step is, as a slow step's warning and the steps in progress name it.
#[derive(Debug, Clone, Default)]
enum StepKind {
    /// An invocation, and its first function.
    Invocation(Option<Arc<Registered>>),
    Command(&'static str),
    #[default]
    Idle,
    /// A multi-partition transaction on the coordinator, and its first function.
    MultiPartition(Option<Arc<Registered>>),
}

impl StepKind {
    fn of(command: &Command) -> StepKind {
        StepKind::Command(match command {
            Command::Invoke(_) => "an invocation queued",
            Command::Durable { .. } => "a durability report (its drain and write-back)",
            Command::Lend { .. } => "a barrier (multi-partition transactions)",
            Command::Checkpoint { .. } => "a checkpoint",
            Command::Stop => "a stop",
        })
    }

    fn name(&self) -> String {
        let function = |f: &Option<Arc<Registered>>| f.as_ref().map_or_else(String::new, |f| format!(" of function {}", f.name));
        match self {
            StepKind::Invocation(first) => format!("an invocation{}", function(first)),
            StepKind::Command(name) => (*name).to_owned(),
            StepKind::Idle => "an idle moment's write-back and traces".to_owned(),
            StepKind::MultiPartition(first) => format!("a multi-partition transaction{}", function(first)),
        }
    }
}

/// The partitions' executors' steps that took 10 ms or more, and 100 ms or more, since the
/// engine opened, and the longest: an invocation, a command handled (a durability report's
/// drain and write-back, a barrier, counted from the executor's pause to its state's return,
/// a checkpoint), or an idle moment's write-back. The executor's queue waits behind each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowSteps {
    pub over_10ms: u64,
    pub over_100ms: u64,
    /// The longest step, in microseconds.
    pub us_max: u64,
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Runs `body` (a function's own, or its run's end writer's) in a transaction of `function`
/// (its statements) over a snapshot: a backend error passes through, another fails the
/// transaction as aborted, a panic as panicked; either leaves `writes` to be discarded by
/// the caller. Past `deadline` it fails, however the body
/// ended (short of a panic): a body may catch a statement's time-limit error and return,
/// or run past the limit without a statement.
fn in_txn<T>(
    function: &Registered,
    snapshot: &dyn Snapshot,
    writes: &mut WriteSet,
    scope: Scope,
    shared: &Shared,
    deadline: Deadline,
    body: impl FnOnce(&mut Txn<'_>) -> std::result::Result<T, crate::function::BoxError>,
) -> Result<T> {
    let mut txn = Txn { function, snapshot, writes, scope, partitions: shared.partitions, limits: shared.limits, deadline, timed_out: None };
    let ended = catch_unwind(AssertUnwindSafe(|| body(&mut txn)));
    // First: a body that panics on the time limit's error (an `unwrap`) failed for the limit.
    if let Some(err) = txn.timed_out.take() {
        return Err(err);
    }
    let ended = match ended {
        Ok(ended) => ended,
        Err(panic) => return Err(Error::Panicked { function: function.name.clone(), message: panic_message(panic.as_ref()) }),
    };
    deadline.check(&function.name, || "when its body returned".to_owned())?;
    ended.map_err(|err| match err.downcast::<Error>() {
        Ok(err) => *err,
        Err(err) => Error::Aborted { function: function.name.clone(), message: err.to_string() },
    })
}

/// A caught panic's message.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The bytes of a JSON value, bounded by `json-bytes-max`.
pub(crate) fn json_bytes(value: &serde_json::Value, what: &'static str, limit: usize) -> Result<Vec<u8>> {
    let bytes = serde_json::to_vec(value)?;
    if bytes.len() > limit {
        return Err(Error::LimitExceeded { what, size: bytes.len(), limit, option: "json-bytes-max" });
    }
    Ok(bytes)
}

/// Most bytes serde_json writes for a number: 20 for an integer (`-9223372036854775808`),
/// 23 for a float (`-1.7976931348623157e308`).
const JSON_NUMBER_BYTES_MAX: usize = 24;

/// An upper bound on the bytes serde_json writes for `value`, found without writing it: a
/// string's escaped form is at most six bytes per byte (`\u001f`) and its quotes, a number
/// at most [`JSON_NUMBER_BYTES_MAX`]. Stops adding once past `limit` (the bound returned is
/// then merely above it).
fn json_bytes_bound(value: &serde_json::Value, limit: usize) -> usize {
    use serde_json::Value;
    let string = |s: &str| s.len().saturating_mul(6).saturating_add(2);
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => JSON_NUMBER_BYTES_MAX,
        Value::String(s) => string(s),
        Value::Array(items) => {
            // Brackets, and a comma after each item (one more than written).
            let mut bound = 2 + items.len();
            for item in items {
                bound = bound.saturating_add(json_bytes_bound(item, limit));
                if bound > limit {
                    break;
                }
            }
            bound
        }
        Value::Object(fields) => {
            // Braces, and a colon and a comma for each field.
            let mut bound = 2 + 2 * fields.len();
            for (key, item) in fields {
                bound = bound.saturating_add(string(key)).saturating_add(json_bytes_bound(item, limit));
                if bound > limit {
                    break;
                }
            }
            bound
        }
    }
}

/// Checks a JSON value against `json-bytes-max` without keeping its bytes. A value whose
/// upper bound ([`json_bytes_bound`]) is within the limit passes without being written:
/// every function's output is checked, and writing a kilobyte of output only to count it
/// was 9% of the executors' samples under retwis's timeline reads alone. Otherwise its bytes
/// are counted as written, nothing is allocated, and the writing stops once past the limit.
pub fn check_json_bytes(value: &serde_json::Value, what: &'static str, limit: usize) -> Result<()> {
    if json_bytes_bound(value, limit) <= limit {
        return Ok(());
    }
    struct Counter {
        bytes: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.limit {
                return Err(std::io::Error::other("past json-bytes-max"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { bytes: 0, limit };
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => Ok(()),
        // The size named is how far the writing got: at least that much.
        Err(_) if counter.bytes > limit => Err(Error::LimitExceeded { what, size: counter.bytes, limit, option: "json-bytes-max" }),
        Err(err) => Err(err.into()),
    }
}

/// Builds a commit record from a write set and the invocations that made it.
pub(crate) fn commit_record(writes: &WriteSet, invocations: Vec<InvocationRecord>) -> CommitRecord {
    let mut partitions: Vec<u32> = Vec::new();
    let records = writes
        .entries
        .iter()
        .map(|(key, Write { kind, before, after })| {
            let p = u32::from(partition_of_key(key));
            if partitions.last() != Some(&p) && !partitions.contains(&p) {
                partitions.push(p);
            }
            WriteRecord {
                partition: p,
                kind: *kind as u32,
                object: object_of_key(key),
                key: key.clone().into(),
                before: before.clone().map(Into::into),
                after: after.clone().map(Into::into),
            }
        })
        .collect();
    partitions.sort_unstable();
    CommitRecord { version: COMMIT_VERSION, partitions, writes: records, invocations, commit_us: Some(now_us()) }
}

/// The outcome of running a job over some snapshot: either a read to release, or a commit
/// to append.
pub(crate) enum Ran {
    /// Nothing written: release once what it saw is durable. Its members' traces go to a
    /// trace record.
    Read { output: Output, traces: Vec<InvocationRecord> },
    /// Writes to commit, with the record's payload (which carries the traces).
    Commit { output: Output, writes: WriteSet, payload: Vec<u8>, tags: Vec<u64> },
}

fn decode_recorded(bytes: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt { location: "a recorded output".to_owned(), detail: e.to_string() })
}

/// The outputs of a transaction that already committed with recording: `Some` when its
/// first recorded member's output exists (the members committed together, so every
/// recorded member's output does); members that do not record get `null`.
fn recorded_outputs(job: &Job, snapshot: &dyn Snapshot, record_partition: u16) -> Result<Option<Vec<serde_json::Value>>> {
    let key = |m: &Member| m.id.as_ref().filter(|_| m.record).map(|id| recorded_key(record_partition, &id.workflow, &id.step));
    let Some(first) = job.members.iter().find_map(key) else {
        return Ok(None);
    };
    let Some(bytes) = snapshot.get(&first)? else {
        return Ok(None);
    };
    let mut values = Vec::with_capacity(job.members.len());
    let mut first_bytes = Some(bytes);
    for member in &job.members {
        let value = match key(member) {
            None => serde_json::Value::Null,
            Some(k) => match first_bytes.take() {
                Some(bytes) if k == first => decode_recorded(&bytes)?,
                other => {
                    first_bytes = other;
                    match snapshot.get(&k)? {
                        Some(bytes) => decode_recorded(&bytes)?,
                        None => return Err(Error::Internal(format!("a transaction's recorded output for {k:?} is missing while another of it exists"))),
                    }
                }
            },
        };
        values.push(value);
    }
    Ok(Some(values))
}

/// One output for one member, an array of outputs for several.
fn job_value(mut values: Vec<serde_json::Value>) -> serde_json::Value {
    if values.len() == 1 { values.pop().unwrap_or_default() } else { serde_json::Value::Array(values) }
}

/// Runs a job: the recorded-output lookup, each member's body in order over one write set,
/// and the commit record. Pure: it touches only the snapshot and its own write set.
/// `progress` tells, after an error, which member failed and when it started.
pub(crate) fn run_job(job: &mut Job, snapshot: &dyn Snapshot, scope: Scope, record_partition: u16, shared: &Shared, progress: &mut Progress) -> Result<Ran> {
    let partition = match scope {
        Scope::Single(p) => Some(p),
        Scope::All => None,
    };
    *progress = Progress { member: 0, start_us: now_us() };
    if let Some(values) = recorded_outputs(job, snapshot, record_partition)? {
        let traces = job.traced_members().map(|m| InvocationRecord { replayed: true, read_only: true, ..member_trace(m, partition, progress.start_us) }).collect();
        return Ok(Ran::Read { output: Output { value: job_value(values), lsn: None, replayed: true, ended: None }, traces });
    }
    if job.lookup_only {
        return Ok(Ran::Read { output: Output { value: serde_json::Value::Null, lsn: None, replayed: false, ended: None }, traces: Vec::new() });
    }
    let deadline = Deadline::start(shared.transaction_time_max);
    let mut writes = WriteSet::default();
    if shared.trace_reads {
        writes.trace_reads();
    }
    let mut values: Vec<serde_json::Value> = Vec::with_capacity(job.members.len());
    let mut invocations = Vec::with_capacity(job.members.len());
    for (index, member) in job.members.iter().enumerate() {
        let start_us = now_us();
        *progress = Progress { member: index, start_us };
        let input = if index == 0 {
            std::mem::take(&mut job.input)
        } else {
            let next = job.next_input.as_ref().ok_or_else(|| Error::Internal("a multi-function transaction has no input function".to_owned()))?;
            // The caller's code, on this thread (an executor's, or the coordinator's holding
            // every partition): a panic in it fails this transaction only, as a body's does.
            let built = catch_unwind(AssertUnwindSafe(|| next(&NextInput { index, outputs: &values, partition: record_partition })));
            let input = match built {
                Ok(built) => built.map_err(|err| Error::Aborted { function: member.function.name.clone(), message: format!("its input could not be built: {err}") })?,
                Err(panic) => return Err(Error::Panicked { function: member.function.name.clone(), message: format!("building its input: {}", panic_message(panic.as_ref())) }),
            };
            check_json_bytes(&input, "the function's input in bytes", shared.json_bytes_max)?;
            if let Scope::Single(own) = scope {
                let found = partition_of(&member.function.partition_key(&input)?, shared.partitions);
                if found != own {
                    return Err(Error::WrongPartition { function: member.function.name.clone(), statement: "(its partition key)".to_owned(), expected: own, found });
                }
            }
            input
        };
        let keys_before = writes.entries.len();
        let value = in_txn(&member.function, snapshot, &mut writes, scope, shared, deadline, |txn| (member.function.body)(txn, input))?;
        let read_only = writes.entries.len() == keys_before;
        const OUTPUT: &str = "the function's output in bytes";
        match &member.id {
            Some(id) if member.record => {
                let bytes = json_bytes(&value, OUTPUT, shared.json_bytes_max)?;
                let key = recorded_key(record_partition, &id.workflow, &id.step);
                writes.entries.insert(key, Write { kind: WriteKind::Recorded, before: None, after: Some(bytes) });
            }
            // Not recorded: only its size is checked.
            _ => check_json_bytes(&value, OUTPUT, shared.json_bytes_max)?,
        }
        let (reads, reads_truncated) = writes.take_traced_reads();
        // An untraced member (the server's bookkeeping) leaves no invocation, not even in the
        // commit record: its writes are the record's, and the trace feed would drop it.
        if member.function.traced {
            invocations.push(InvocationRecord { read_only, reads, reads_truncated, ..member_trace(member, partition, start_us) });
        }
        values.push(value);
    }
    let mut ended = None;
    if let Some(end) = &job.end {
        let last = job.members.last().map(|m| m.function.name.clone()).unwrap_or_default();
        // Past the members: a failure from here on is the run's end's, and traces none of
        // them as failed (each succeeded).
        *progress = Progress { member: job.members.len(), start_us: now_us() };
        if end.writer.is_none() && !writes.entries.is_empty() {
            return Err(Error::Internal(format!("a run planned as writing nothing wrote (its last function: {last})")));
        }
        // The caller's code, on this thread: a panic in it fails this run only.
        let record = match catch_unwind(AssertUnwindSafe(|| (end.build)(&values))) {
            Ok(ended) => ended.map_err(|err| Error::Aborted { function: last, message: format!("its run's end could not be built: {err}") })?,
            Err(panic) => return Err(Error::Panicked { function: last, message: format!("building its run's end: {}", panic_message(panic.as_ref())) }),
        };
        // A run's record, written or traced, is held to the bound on a JSON value, by its
        // encoded size (a little under its row's as JSON).
        let size = record.encoded_len();
        if size > shared.json_bytes_max {
            return Err(Error::LimitExceeded { what: "the run's end (its input and output) in bytes", size, limit: shared.json_bytes_max, option: "json-bytes-max" });
        }
        match &end.writer {
            Some((writer, body)) => {
                in_txn(writer, snapshot, &mut writes, scope, shared, deadline, |txn| body(txn, &record, record_partition))?;
                // Else the run would be answered with no row, and traced as one that
                // writes nothing.
                if writes.entries.is_empty() {
                    return Err(Error::Internal(format!("function {} wrote no run end", writer.name)));
                }
            }
            None => {
                let output = Output { value: job_value(values), lsn: None, replayed: false, ended: Some(record) };
                return Ok(Ran::Read { output, traces: invocations });
            }
        }
        ended = Some(record);
    }
    let output = Output { value: job_value(values), lsn: None, replayed: false, ended };
    if writes.entries.is_empty() {
        return Ok(Ran::Read { output, traces: invocations });
    }
    let record = commit_record(&writes, invocations);
    let tags = record.partitions.iter().map(|p| partition_tag(*p as u16)).collect();
    Ok(Ran::Commit { output, writes, payload: encode_commit(&record), tags })
}

/// Writes as staged in a partition's overlay: each key with its value after (`None`: deleted).
pub(crate) type Staged = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Splits a write set by partition, as staged writes.
pub(crate) fn split_by_partition(writes: WriteSet) -> BTreeMap<u16, Staged> {
    let mut out: BTreeMap<u16, Vec<_>> = BTreeMap::new();
    for (key, write) in writes.entries {
        out.entry(partition_of_key(&key)).or_default().push((key, write.after));
    }
    out
}

/// The executor thread of one partition.
pub(crate) struct Executor {
    pub(crate) state: Box<PartitionState>,
    pub(crate) commands: Receiver<Command>,
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) shared: Arc<Shared>,
    /// This executor's own queue, where the log reports each of its records durable.
    pub(crate) durable: Sender<Command>,
    /// Traces of the invocations that committed nothing, appended when the queue is idle.
    pub(crate) traces: TraceBuffer,
    /// Checkpoints waiting for a write-back, by the number it has once stored.
    pub(crate) checkpoints: Vec<(u64, Sender<Result<Lsn>>)>,
}

impl Executor {
    pub(crate) fn run(mut self) {
        self.serve();
        // Leave the store current, so that the next open replays nothing of this partition.
        self.state.write_back(true);
        self.answer_checkpoints();
    }

    /// Serves the commands. Control commands (a durability report, a barrier, a checkpoint)
    /// go ahead of the invocations queued before them: every command waiting is taken off
    /// the channel before each invocation (up to a barrier, after which one invocation runs
    /// first), the invocations kept in arrival order. So a multi-partition transaction waits
    /// at the barrier for the invocation in flight only, not for the whole queue, and the
    /// reads waiting on a durable commit are released at once. The invocations taken off the
    /// channel are still counted in `queued` until they run: the queue's bound covers them.
    fn serve(&mut self) {
        let mut ready: VecDeque<Job> = VecDeque::new();
        let mut stopping = false;
        let shared = Arc::clone(&self.shared);
        let (steps, id) = (&shared.steps, self.state.id);
        loop {
            self.answer_checkpoints();
            let mut disconnected = false;
            loop {
                match self.commands.try_recv() {
                    Ok(command) => {
                        let barrier = matches!(command, Command::Lend { .. });
                        steps.timed(id, StepKind::of(&command), || self.accept(command, &mut ready, &mut stopping));
                        // At least one invocation runs between two barriers: the coordinator's
                        // next request may already be waiting, and taking it at once, time
                        // after time, would starve the queue.
                        if barrier && !ready.is_empty() {
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            if let Some(job) = ready.pop_front() {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                steps.timed(id, StepKind::Invocation(job.members.first().map(|m| Arc::clone(&m.function))), || {
                    self.invoke(job);
                    // A checkpoint waits: a chunk per invocation, so that a partition busy
                    // with work that commits nothing (reads: no drains, no idle moment)
                    // finishes it.
                    if !self.checkpoints.is_empty() {
                        self.state.write_back(false);
                    }
                });
                continue;
            }
            // Idle: nothing queued.
            steps.timed(id, StepKind::Idle, || {
                self.state.write_back(false);
                self.answer_checkpoints();
                self.traces.flush(&self.shared.log);
            });
            if disconnected || (stopping && !self.state.has_pending()) {
                return;
            }
            let next = match self.state.write_back_due_in() {
                None => self.commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(wait) => self.commands.recv_timeout(wait),
            };
            match next {
                Ok(command) => steps.timed(id, StepKind::of(&command), || self.accept(command, &mut ready, &mut stopping)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Takes a command off the channel: an invocation joins `ready` (or is refused once the
    /// executor is stopping: those that arrived before `Stop` still run); any other command
    /// is acted on at once.
    fn accept(&mut self, command: Command, ready: &mut VecDeque<Job>, stopping: &mut bool) {
        match command {
            Command::Invoke(job) if *stopping => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                let _ = job.reply.send(Err(Error::Closed));
            }
            Command::Invoke(job) => ready.push_back(job),
            Command::Durable { seq, result } => match result {
                Ok(lsn) => {
                    self.state.mark_durable(seq, lsn);
                    self.state.drain();
                    self.state.write_back(false);
                }
                Err(err) => self.state.fail(err.to_string()),
            },
            Command::Lend { give, back } => {
                self.state.drain();
                let id = self.state.id;
                let store = Arc::clone(&self.state.store);
                let placeholder = PartitionState::new(id, store, 0, 0, self.state.writeback);
                let lent = std::mem::replace(&mut self.state, Box::new(placeholder));
                if give.send(lent).is_err() {
                    self.state.fail("the multi-partition coordinator stopped while holding this partition".to_owned());
                    return;
                }
                match back.recv() {
                    Ok(state) => self.state = state,
                    Err(_) => self.state.fail("the multi-partition coordinator stopped while holding this partition".to_owned()),
                }
            }
            Command::Checkpoint { reply } => {
                self.state.drain();
                match self.state.write_back_for_checkpoint() {
                    // Written back a chunk at a time (at idle moments, drains, and after each
                    // invocation while it waits): a checkpoint holds no invocation up for
                    // all of it.
                    Some(stored) => self.checkpoints.push((stored, reply)),
                    None => {
                        let _ = reply.send(self.checkpoint());
                    }
                }
            }
            Command::Stop => *stopping = true,
        }
    }

    /// Answers the checkpoints whose write-back is stored (all of them, with the error, once
    /// the partition has failed).
    fn answer_checkpoints(&mut self) {
        if self.checkpoints.is_empty() {
            return;
        }
        let (done, failed) = (self.state.write_backs_done(), self.state.failed.is_some());
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.checkpoints).into_iter().partition(|(stored, _)| failed || *stored <= done);
        self.checkpoints = waiting;
        for (_, reply) in ready {
            let _ = reply.send(self.checkpoint());
        }
    }

    /// Records how far this partition is applied and returns the lowest LSN it still needs:
    /// the one after what the store holds.
    fn checkpoint(&mut self) -> Result<Lsn> {
        self.state.check()?;
        if let Some(needed) = self.state.needed_from() {
            return Ok(needed);
        }
        // Nothing in flight and everything stored: every record of this partition up to
        // the tail is applied.
        let tail = self.shared.log.tail().max(self.state.applied_lsn);
        if tail > self.state.applied_lsn {
            self.state.applied_lsn = tail;
            let mut batch = Batch::default();
            batch.put(&meta_applied(self.state.id), &tail.to_be_bytes());
            self.state.store.write(batch)?;
        }
        self.state.stored_lsn = self.state.applied_lsn;
        Ok(tail + 1)
    }

    fn invoke(&mut self, mut job: Job) {
        if self.traces.is_full() {
            self.traces.flush(&self.shared.log);
        }
        if let Err(err) = self.state.check() {
            let _ = job.reply.send(Err(err));
            return;
        }
        let id = self.state.id;
        let record_partition = job.record_partition.unwrap_or(id);
        let mut progress = Progress::default();
        self.state.begin_reads();
        let ran = run_job(&mut job, &*self.state, Scope::Single(id), record_partition, &self.shared, &mut progress);
        match ran {
            Err(err) => {
                // A wrong partition is not the function's failure: the caller retries it
                // as a multi-partition transaction.
                if matches!(err, Error::WrongPartition { .. }) {
                    let _ = job.reply.send(Err(err));
                    return;
                }
                if let Some(trace) = job.failure_trace(progress, Some(id), &err) {
                    self.traces.push(trace);
                }
                self.state.answer_read(job.reply, job.answer, Err(err));
            }
            Ok(Ran::Read { output, traces }) => {
                self.traces.push_read(traces, output.ended.as_ref());
                self.state.answer_read(job.reply, job.answer, Ok(output));
            }
            Ok(Ran::Commit { output, writes, payload, tags }) => {
                // The log hears of the record now and may report it durable before it is
                // staged below: its caller may then be answered first (its next work here
                // queues behind this step), and this thread reads the report only after.
                let seq = self.state.next_seq();
                let durable = self.durable.clone();
                let caller = CommitReply::new(job.reply, job.answer, output);
                let on_durable = move |result| drop(durable.send(Command::Durable { seq, result }));
                match caller.append(&self.shared.log, Entry::new(tags, payload), on_durable) {
                    Err(err) => caller.refused(err),
                    Ok(()) => {
                        let staged = writes.entries.into_iter().map(|(k, w)| (k, w.after)).collect();
                        let staged_seq = self.state.stage(staged);
                        debug_assert_eq!(staged_seq, seq, "the seq told to the log is the one staged");
                        caller.staged();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Oracle = BTreeMap<Vec<u8>, Vec<u8>>;

    /// Any JSON value: strings with control characters, quotes, backslashes and non-ASCII
    /// text, the extreme numbers, nested arrays and objects.
    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::{Value, json};
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            Just(json!(i64::MIN)),
            Just(json!(-f64::MAX)),
            "[\\x00-\\x1f\"\\\\a-zé€😀]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[\\x00-\\x1f\"a-z€]{0,6}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The bound is never below the bytes written, so a value it lets pass is within
        /// the limit; and the check decides exactly as counting the written bytes does.
        #[test]
        fn a_json_values_bound_is_never_below_its_bytes(value in any_json(), slack in 0usize..40) {
            let written = serde_json::to_vec(&value).unwrap().len();
            proptest::prop_assert!(json_bytes_bound(&value, usize::MAX) >= written, "bound below {written} bytes: {value}");
            for limit in [written.saturating_sub(1 + slack), written, written + slack] {
                let passed = check_json_bytes(&value, "a value", limit).is_ok();
                proptest::prop_assert_eq!(passed, written <= limit, "limit {} for {} bytes: {}", limit, written, value);
            }
        }
    }

    #[test]
    fn a_json_value_over_its_limit_names_the_bytes_written_so_far() {
        // Control characters: each is written as six bytes, so the bound is exact here and
        // the check must count.
        let value = serde_json::Value::String("\u{1}".repeat(10));
        assert_eq!(serde_json::to_vec(&value).unwrap().len(), 62);
        check_json_bytes(&value, "a value", 62).unwrap();
        let err = check_json_bytes(&value, "a value", 61).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded { size, limit: 61, option: "json-bytes-max", .. } if size > 61), "{err}");
    }

    fn key(i: usize) -> Vec<u8> {
        format!("k{i:05}").into_bytes()
    }

    fn stored_applied_lsn(store: &Store) -> Option<Lsn> {
        store.get(&meta_applied(0)).unwrap().map(|v| Lsn::from_be_bytes(v.as_slice().try_into().unwrap()))
    }

    /// A partition over a fresh store whose write-backs are never due by bytes or age.
    fn never_due() -> (tempfile::TempDir, Arc<Store>, PartitionState) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let never = WriteBack { bytes: usize::MAX, interval: Duration::from_secs(3_600) };
        let state = PartitionState::new(0, Arc::clone(&store), 0, 1 << 20, never);
        (dir, store, state)
    }

    /// Every key's read and every scan shape agree with the oracle.
    fn reads_match(state: &PartitionState, oracle: &Oracle, rows: usize, when: &str) {
        for i in 0..rows + 3 {
            assert_eq!(state.get(&key(i)).unwrap().as_ref(), oracle.get(&key(i)), "{when}: get {i}");
        }
        let (start, end) = (key(0), key(rows));
        for count in [0, 1, 7, 1_000, rows, usize::MAX] {
            for descending in [false, true] {
                let range = oracle.range(start.clone()..end.clone()).map(|(k, v)| (k.clone(), v.clone()));
                let expected: Vec<_> = if descending { range.rev().take(count).collect() } else { range.take(count).collect() };
                assert_eq!(state.scan(&start, &end, count, descending).unwrap(), expected, "{when}: scan, count {count}, descending {descending}");
            }
        }
    }

    #[test]
    fn a_write_back_goes_a_chunk_at_a_time_and_reads_see_every_layer() {
        let (_dir, store, mut state) = never_due();
        let rows = 2 * WRITEBACK_CHUNK_ROWS + 10;
        let mut oracle = Oracle::new();

        // Durable: every row (LSN 7), then every third one deleted (LSN 9).
        let seq = state.stage((0..rows).map(|i| (key(i), Some(vec![1]))).collect());
        state.mark_durable(seq, 7);
        let seq = state.stage((0..rows).step_by(3).map(|i| (key(i), None)).collect());
        state.mark_durable(seq, 9);
        state.drain();
        oracle.extend((0..rows).filter(|i| i % 3 != 0).map(|i| (key(i), vec![1])));
        // Not durable yet: every fifth row rewritten.
        let pending = state.stage((0..rows).step_by(5).map(|i| (key(i), Some(vec![2]))).collect());
        oracle.extend((0..rows).step_by(5).map(|i| (key(i), vec![2])));
        state.write_back(false);
        assert!(store.scan(&key(0), Some(&key(rows)), usize::MAX, false).unwrap().is_empty(), "not due: the store has nothing yet");
        assert_eq!(state.applied_lsn, 9);
        reads_match(&state, &oracle, rows, "all in memory");

        // Due by bytes: one chunk per call, the applied LSN with the last one.
        state.writeback.bytes = 0;
        for chunk in 1..=3 {
            state.write_back(false);
            let stored = store.scan(&key(0), Some(&key(rows)), usize::MAX, false).unwrap();
            let written = (WRITEBACK_CHUNK_ROWS * chunk).min(rows);
            assert_eq!(stored.len(), (0..written).filter(|i| i % 3 != 0).count(), "chunk {chunk}: the rows of the chunks so far");
            assert_eq!(stored_applied_lsn(&store), (written == rows).then_some(9), "chunk {chunk}: the LSN only with the last chunk");
            reads_match(&state, &oracle, rows, &format!("after chunk {chunk}"));
        }

        // The pending commit turns durable; a write-back of everything leaves memory empty.
        state.mark_durable(pending, 11);
        state.drain();
        state.write_back(true);
        assert!(state.dirty.rows.is_empty() && state.flushing.rows.is_empty() && state.overlay.is_empty());
        assert_eq!((state.dirty.bytes, state.flushing.bytes), (0, 0), "the byte counts follow the rows");
        assert_eq!(stored_applied_lsn(&store), Some(11));
        let stored: Oracle = store.scan(&key(0), Some(&key(rows)), usize::MAX, false).unwrap().into_iter().collect();
        assert_eq!(stored, oracle, "the store holds exactly the durable state");
        reads_match(&state, &oracle, rows, "all in the store");

        // Deletes staged over stored rows at both ends: each hides a row the store returns,
        // so a scan reads that many more from the store to return its count.
        let stored_keys: Vec<Vec<u8>> = oracle.keys().cloned().collect();
        let hidden: Vec<Vec<u8>> = stored_keys[..5].iter().chain(&stored_keys[stored_keys.len() - 5..]).cloned().collect();
        state.stage(hidden.iter().map(|k| (k.clone(), None)).collect());
        for k in &hidden {
            oracle.remove(k);
        }
        reads_match(&state, &oracle, rows, "deletes staged over stored rows");
    }

    /// A checkpoint's write-back is counted once its last chunk is stored, and the LSN the
    /// store is said to hold moves only with stored writes, not with those applied since.
    #[test]
    fn a_checkpoints_write_back_is_counted_once_stored_and_the_stored_lsn_lags_newer_writes() {
        let (_dir, store, mut state) = never_due();
        assert_eq!(state.write_back_for_checkpoint(), None, "nothing waits for the store");
        assert_eq!(state.needed_from(), None);
        let rows = 2 * WRITEBACK_CHUNK_ROWS + 10;
        let seq = state.stage((0..rows).map(|i| (key(i), Some(vec![1]))).collect());
        assert_eq!(state.needed_from(), Some(1), "a commit in flight");
        state.mark_durable(seq, 7);
        state.drain();
        assert_eq!(state.write_back_for_checkpoint(), Some(1), "begins the first write-back");
        assert!(state.dirty.rows.is_empty() && !state.flushing.rows.is_empty());
        // Written under way: LSN 9 stays in `dirty`, and a second checkpoint waits for the
        // write-back already begun.
        let seq = state.stage(vec![(key(0), Some(vec![2]))]);
        state.mark_durable(seq, 9);
        state.drain();
        assert_eq!(state.write_back_for_checkpoint(), Some(1), "the write-back under way");
        for chunk in 1..=3 {
            assert_eq!((state.write_backs_done(), state.stored_lsn), (0, 0), "before chunk {chunk}: not stored yet");
            state.write_back(false);
        }
        assert_eq!((state.write_backs_done(), state.stored_lsn, stored_applied_lsn(&store)), (1, 7, Some(7)), "stored through 7, not 9");
        assert_eq!(state.needed_from(), Some(8), "nothing in flight, but LSN 9's row is only in memory");
        assert_eq!(state.write_back_for_checkpoint(), Some(2));
        state.write_back(false);
        assert_eq!((state.write_backs_done(), state.stored_lsn, stored_applied_lsn(&store)), (2, 9, Some(9)));
        assert_eq!(state.needed_from(), None, "all stored");
        assert_eq!(state.write_back_for_checkpoint(), None);
    }

    #[test]
    fn a_write_back_is_due_by_age_and_the_executor_is_told_when() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut state = PartitionState::new(0, Arc::clone(&store), 0, 0, WriteBack { bytes: usize::MAX, interval: Duration::from_millis(50) });
        assert_eq!(state.write_back_due_in(), None, "nothing waits");
        let seq = state.stage(vec![(key(1), Some(vec![5]))]);
        assert_eq!(state.write_back_due_in(), None, "a pending commit is not the store's yet");
        state.mark_durable(seq, 3);
        state.drain();
        assert!(state.write_back_due_in().is_some_and(|wait| wait <= Duration::from_millis(50)));
        state.write_back(false);
        assert_eq!(stored_applied_lsn(&store), None, "not due before the interval");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(state.write_back_due_in(), Some(Duration::ZERO));
        state.write_back(false);
        assert_eq!(stored_applied_lsn(&store), Some(3));
        assert_eq!(store.get(&key(1)).unwrap(), Some(vec![5]));
        assert_eq!(state.write_back_due_in(), None, "written back: nothing waits");

        // A failed partition writes nothing back: nothing is due, however old its writes.
        let seq = state.stage(vec![(key(2), Some(vec![6]))]);
        state.mark_durable(seq, 4);
        state.drain();
        assert!(state.write_back_due_in().is_some());
        state.fail("a failed append".to_owned());
        assert_eq!(state.write_back_due_in(), None, "a failed partition has nothing due");
    }
}
