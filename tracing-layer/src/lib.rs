//! Comb's tracing layer: the shared log turned into tables that users query with SQL.
//!
//! ```text
//!  shared log ──subscribe(checkpoint + 1)──> feed ──> rows ──> in-memory tail ──flush──> Parquet
//!   (commit, trace and catalog records)       │       (by size or by age)                │
//!                                              └─ trim hold at checkpoint + 1             │
//!  QueryTraces(sql) ──> DataFusion, on the tracing runtime, over files + tail <───────────┘
//! ```
//!
//! Tables (schemas as stored in [`tables`]; queries see `change_data`'s images as JSON, and
//! the columns that follow from others, durations, statuses and operations, made for them):
//! - `function_invocations`: every invocation of an application function: the ones that
//!   committed (from their commit record, with its `lsn`), and the ones that committed
//!   nothing (reads, replays of a recorded output, failures with their `error`; `lsn` is
//!   NULL), from the backend's trace records.
//! - `change_data`: every row written, with its before and after images as JSON objects,
//!   the commit's LSN and the function that wrote it. The images are kept as the log holds
//!   them and made into JSON by the queries that read them.
//! - `workflows`: every workflow run that ended, with its input, output or error.
//! - `read_events`: the rows each invocation read, when the engine traces reads
//!   (`EngineOptions::trace_reads`; off by default).
//!
//! The server's own tables and functions (`comb_` names) are left out of the first two.
//!
//! # Guarantees
//!
//! - **Nothing lost, nothing twice.** The feed resumes after the checkpoint, the last LSN
//!   whose rows are in files; a flush writes its files before it moves the checkpoint, and
//!   opening removes files the checkpoint does not confirm. The log's trim point is held at
//!   the checkpoint, so the records the feed still needs are never trimmed.
//! - **Fresh.** Rows are queryable once their record is consumed (the tail is in memory),
//!   about `feed-interval` (100 ms) after the commit is durable; a query may also wait until
//!   the traces reach the log's tail.
//! - **Isolated.** Queries run on the tracing layer's query runtime, the feed and its file
//!   I/O on a runtime of its own, never on the server's. The feed's threads run at a lower
//!   CPU priority (`feed-nice`): under load the transactions come first, and the feed lags
//!   (holding the log's trim point back) and catches up when the CPUs have time.
//! - **Bounded.** Tail size and age, rows and memory per query, queries in flight and the
//!   age of the files kept are options ([`TracingOptions`]).

mod error;
mod images;
mod ingest;
mod options;
mod query;
mod store;
pub mod tables;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comb_log::{ANY_TAG, LogBook, Lsn};
use comb_planner::Catalog;
use futures::StreamExt;
use tokio::sync::{Semaphore, watch};

pub use error::{Error, Result};
pub use ingest::{Ingest, SYSTEM_PREFIX};
pub use options::TracingOptions;
pub use query::{ANSWER_BYTES_MAX, QueryResult};
pub use tables::TABLES;

use crate::store::{MergeOutcome, MergePolicy, TraceStore};
use crate::tables::Rows;

/// Gives the feed and the queries the catalog as it is now (table ids never change meaning).
pub type CatalogSource = Arc<dyn Fn() -> Arc<Catalog> + Send + Sync>;

/// How often the feed looks at the tail's age, at most.
const TICK_MAX: Duration = Duration::from_secs(1);

/// How often the feed removes the files older than the retention.
const EXPIRY_EVERY: Duration = Duration::from_secs(60);

/// How long the feed waits after a merge failed before it plans the next: a disk that is
/// full or failing is not written to again and again.
const MERGE_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The tracing layer of one server: its feed, its store and its query runtime.
pub struct Tracer {
    store: Arc<TraceStore>,
    log: LogBook,
    /// The catalog the queries make `change_data`'s JSON with.
    catalog: CatalogSource,
    options: TracingOptions,
    /// The last LSN consumed (its rows queryable).
    consumed: watch::Receiver<Lsn>,
    /// The checkpoint: the feed needs the log from one past it.
    checkpoints: watch::Receiver<Lsn>,
    /// Why the feed stopped, if it stopped on an error.
    failure: Arc<Mutex<Option<String>>>,
    /// Flushes that failed since the tracer started (each is tried again).
    flush_failures: watch::Receiver<u64>,
    stop: watch::Sender<bool>,
    queries: Arc<Semaphore>,
    feed: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Runs the queries, at the server's CPU priority.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// Runs the feed and its file I/O, at `feed-nice`.
    feed_runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

/// The feed's runtime: one worker and at most three blocking threads (a flush, an expiry, a
/// merge), every one of them at CPU niceness `nice`, so that under load the transactions'
/// threads run first and the feed catches up when the CPUs have time for it.
fn feed_runtime(nice: i32) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(3)
        .thread_name("comb-trace-feed")
        .on_thread_start(move || {
            // On Linux a thread has its own niceness, and the calling thread is the one set.
            if let Err(err) = rustix::process::setpriority_process(None, nice) {
                tracing::warn!(nice, error = %err, "cannot lower the trace feed's CPU priority; it runs at the server's");
            }
        })
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the trace feed's runtime: {e}")))
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("consumed", &*self.consumed.borrow()).field("checkpoint", &*self.checkpoints.borrow()).finish_non_exhaustive()
    }
}

impl Tracer {
    /// Opens the trace store in `dir` and starts the feed from its checkpoint. The caller
    /// holds the log's trim point at [`Tracer::checkpoint`] `+ 1` from now on.
    pub async fn start(dir: &Path, log: LogBook, catalog: CatalogSource, options: TracingOptions) -> Result<Tracer> {
        options.validate()?;
        // Opened before the runtimes are built: a runtime dropped in an async context panics,
        // so a store that does not open (damaged, or of another format) must not find any.
        let dir = dir.to_owned();
        let store = Arc::new(tokio::task::spawn_blocking(move || TraceStore::open(&dir)).await.map_err(|e| Error::Internal(e.to_string()))??);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.query_threads)
            .thread_name("comb-trace-query")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the trace query runtime: {e}")))?;
        let feed_runtime = match feed_runtime(options.feed_nice) {
            Ok(feed_runtime) => feed_runtime,
            Err(err) => {
                runtime.shutdown_background();
                return Err(err);
            }
        };
        let checkpoint = store.checkpoint();
        let (consumed_tx, consumed) = watch::channel(checkpoint);
        let (checkpoint_tx, checkpoints) = watch::channel(checkpoint);
        let (stop, stopped) = watch::channel(false);
        let failure = Arc::new(Mutex::new(None));
        let (flush_failures_tx, flush_failures) = watch::channel(0);
        let feed = Feed {
            store: Arc::clone(&store),
            log: log.clone(),
            catalog: Arc::clone(&catalog),
            options: options.clone(),
            consumed: consumed_tx,
            checkpoints: checkpoint_tx,
            flush_failures: flush_failures_tx,
        };
        let task = feed_runtime.spawn(feed.run(stopped, Arc::clone(&failure)));
        Ok(Tracer {
            store,
            log,
            catalog,
            queries: Arc::new(Semaphore::new(options.queries_in_flight_max)),
            options,
            consumed,
            checkpoints,
            failure,
            flush_failures,
            stop,
            feed: Mutex::new(Some(task)),
            runtime: Mutex::new(Some(runtime)),
            feed_runtime: Mutex::new(Some(feed_runtime)),
        })
    }

    /// The last LSN whose rows are in files: the log is needed from one past it.
    pub fn checkpoint(&self) -> Lsn {
        *self.checkpoints.borrow()
    }

    /// The checkpoint as it moves.
    pub fn checkpoints(&self) -> watch::Receiver<Lsn> {
        self.checkpoints.clone()
    }

    /// How many Parquet files each table has (in [`TABLES`]' order), merged ones counted
    /// once, as it changes.
    pub fn file_counts(&self) -> watch::Receiver<[usize; 4]> {
        self.store.watch_file_counts()
    }

    /// The files the tables list now, all together, and how many merges replaced their
    /// inputs with one file since the tracer started: both as of one instant.
    pub fn files_and_merges(&self) -> (usize, u64) {
        self.store.files_and_merges()
    }

    /// The last LSN whose rows are queryable.
    pub fn consumed(&self) -> Lsn {
        *self.consumed.borrow()
    }

    /// How many flushes failed since the tracer started. A failed flush (a full disk, say)
    /// is tried again within a second; meanwhile the checkpoint, and with it the log's trim
    /// point, stays where the last flush left it, and the feed stops reading once the tail
    /// holds `flush-bytes`.
    pub fn flush_failures(&self) -> u64 {
        *self.flush_failures.borrow()
    }

    /// The failed flushes' count as it moves.
    pub fn flush_failure_counts(&self) -> watch::Receiver<u64> {
        self.flush_failures.clone()
    }

    /// Why the feed stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Waits until every record up to `lsn` is queryable, for at most `catch-up-max`.
    pub async fn wait_for(&self, lsn: Lsn) -> Result<()> {
        let mut consumed = self.consumed.clone();
        let reached = tokio::time::timeout(self.options.catch_up_max, consumed.wait_for(|c| *c >= lsn)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(self.failure().map_or(Error::Closed, Error::Stopped)),
            Err(_) => Err(Error::Behind { consumed: self.consumed(), target: lsn, waited_ms: self.options.catch_up_max.as_millis() as u64 }),
        }
    }

    /// Runs a read-only SQL query over the traces, on the tracing runtime. With
    /// `catch_up`, first waits until the traces hold everything the log held when called.
    ///
    /// A caller that goes away (its deadline, its connection) stops its query, and the query
    /// holds its place among `queries-in-flight-max` until it has stopped.
    pub async fn query(&self, sql: &str, catch_up: bool) -> Result<QueryResult> {
        let permit = Arc::clone(&self.queries).try_acquire_owned().map_err(|_| Error::Busy { running: self.options.queries_in_flight_max })?;
        if catch_up {
            self.wait_for(self.log.tail()).await?;
        }
        let (snapshot, pin) = self.store.snapshot();
        // Taken after the snapshot: it knows every table the snapshot's records wrote to.
        let catalog = (self.catalog)();
        let sql = sql.to_owned();
        let options = self.options.clone();
        let handle = self.runtime.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().ok_or(Error::Closed)?.handle().clone();
        let task = handle.spawn(async move {
            let (_permit, _pin) = (permit, pin);
            query::run(snapshot, catalog, &sql, &options).await
        });
        let running = AbortOnDrop(task.abort_handle());
        let answer = task.await.map_err(|e| if e.is_cancelled() { Error::Closed } else { Error::Internal(format!("a trace query panicked: {e}")) })?;
        drop(running);
        answer
    }

    /// Stops the feed after a last flush (so a restart reads nothing again) and the runtime.
    pub async fn close(&self) -> Result<()> {
        let _ = self.stop.send(true);
        self.store.cancel_merges();
        let task = self.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(task) = task {
            task.await.map_err(|e| Error::Internal(format!("the trace feed panicked: {e}")))?;
        }
        // Their threads are gone once this returns (or after `RUNTIMES_CLOSE_MAX`). A runtime
        // may not be dropped in an async context: a blocking thread waits for them.
        let runtimes: Vec<tokio::runtime::Runtime> = [&self.runtime, &self.feed_runtime].into_iter().filter_map(|r| r.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()).collect();
        tokio::task::spawn_blocking(move || runtimes.into_iter().for_each(|r| r.shutdown_timeout(RUNTIMES_CLOSE_MAX)))
            .await
            .map_err(|e| Error::Internal(format!("stopping the tracing layer's runtimes: {e}")))?;
        match self.failure() {
            Some(cause) => Err(Error::Stopped(cause)),
            None => Ok(()),
        }
    }

    fn shut_down_runtimes(&self) {
        // A runtime may not be dropped inside another's worker: let it go in the background.
        for runtime in [&self.runtime, &self.feed_runtime] {
            if let Some(runtime) = runtime.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                runtime.shutdown_background();
            }
        }
    }
}

/// Aborts a task when dropped: a query whose caller went away stops at its next await.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.store.cancel_merges();
        self.shut_down_runtimes();
    }
}

/// Longest [`Tracer::close`] waits for the tracing layer's threads to end.
const RUNTIMES_CLOSE_MAX: Duration = Duration::from_secs(10);

/// Most rows one step of the feed gathers before it publishes them.
const STEP_ROWS_MAX: usize = 65_536;

/// Most bytes of records whose rows the next step's builders are sized for: a step larger
/// than this (a catch-up, large rows) does not make the next one reserve as much again.
const STEP_ROOM_BYTES_MAX: usize = 8 << 20;

/// The rows of the records read since the last publication, the last record's LSN, the
/// records' bytes (what the rows hold, near enough: images are kept as the records carry
/// them), and when its first record was read.
#[derive(Default)]
struct Step {
    rows: Rows,
    last: Option<Lsn>,
    bytes: usize,
    since: Option<Instant>,
}

/// The feed: the one owner of the store's tail and checkpoint.
struct Feed {
    store: Arc<TraceStore>,
    log: LogBook,
    catalog: CatalogSource,
    options: TracingOptions,
    consumed: watch::Sender<Lsn>,
    checkpoints: watch::Sender<Lsn>,
    flush_failures: watch::Sender<u64>,
}

impl Feed {
    /// Runs the feed until stopped; a failure is recorded in `failure` before the feed's
    /// channels close, so that a caller waiting on them is told why, not just `Closed`.
    async fn run(self, stop: watch::Receiver<bool>, failure: Arc<Mutex<Option<String>>>) {
        if let Err(err) = self.steps(stop).await {
            tracing::error!(error = %err, "the trace feed stopped; traces resume from the checkpoint at the next start");
            *failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err.to_string());
        }
    }

    async fn steps(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let mut from = self.store.checkpoint() + 1;
        // Records below the log's trim point are gone: trimmed while no trace store held
        // them (a server run without tracing, or a new trace store). Their rows cannot be
        // made; the traces go on from what the log holds.
        let trim_point = self.log.trim_point();
        if from < trim_point {
            tracing::warn!(from, trim_point, "the log no longer holds the records from the trace checkpoint on; their rows are missing from the traces");
            from = trim_point;
            // The gap counts as consumed (and the next flush's checkpoint passes it): a query
            // that catches up with the log must not wait for a record after it.
            self.store.append(Rows::default(), trim_point - 1)?;
            let _ = self.consumed.send(trim_point - 1);
        }
        let mut records = self.log.subscribe(from, ANY_TAG).ready_chunks(self.options.feed_batch_records);
        let mut tick = tokio::time::interval(self.options.flush_age.min(TICK_MAX));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.expire().await?;
        let mut expired_at = Instant::now();
        let mut step = Step::default();
        let (mut merging, mut merge_failed_at) = (None, None);
        // Since when flushes fail: each tick tries again, and the feed reads no further once
        // the tail holds `flush-bytes`.
        let mut flush_failing: Option<Instant> = None;
        loop {
            let reading = flush_failing.is_none() || self.store.tail_bytes() < self.options.flush_bytes;
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    if flush_failing.is_some() || self.store.is_older_than(self.options.flush_age) {
                        self.publish(&mut step)?;
                        self.flush_or_retry(&mut flush_failing).await;
                    }
                    if expired_at.elapsed() >= EXPIRY_EVERY {
                        self.expire().await?;
                        expired_at = Instant::now();
                    }
                    self.start_merge(&mut merging, merge_failed_at);
                }
                outcome = Merging::end(&mut merging) => {
                    if merging.take().is_some_and(|merge| merge.report(outcome)) {
                        merge_failed_at = Some(Instant::now());
                    }
                    self.start_merge(&mut merging, merge_failed_at);
                }
                chunk = records.next(), if reading => {
                    let Some(chunk) = chunk else { break };
                    let full = chunk.len() == self.options.feed_batch_records;
                    let catalog = (self.catalog)();
                    let mut ingest = Ingest::new(&catalog);
                    let mut ended = None;
                    for item in chunk {
                        match item {
                            Ok(record) => {
                                ingest.record(&record, &mut step.rows);
                                step.last = Some(record.lsn);
                                step.bytes += record.payload.len();
                                step.since.get_or_insert_with(Instant::now);
                            }
                            Err(err) => ended = Some(err),
                        }
                    }
                    // More records are waiting: read on, so that a step makes few large batches.
                    // A full chunk says so unless it was the log's last; a chunk may also come
                    // short when the records come from the log's files, in smaller reads.
                    let lag = step.last.map_or(0, |last| self.log.tail().saturating_sub(last));
                    let more = lag > 0 && (full || lag >= self.options.feed_batch_records as u64);
                    // A step ends by rows, by bytes, or after `feed-interval`: a feed that stays
                    // behind still makes what it read queryable that often.
                    let young = step.since.is_some_and(|since| since.elapsed() < self.options.feed_interval);
                    if more && young && ended.is_none() && step.rows.count() < STEP_ROWS_MAX && step.bytes < self.options.flush_bytes {
                        continue;
                    }
                    self.publish(&mut step)?;
                    match ended {
                        // The log closed (the server is stopping): keep what was read.
                        Some(comb_log::Error::Closed) => break,
                        Some(err) => {
                            let cause = format!("reading the log: {err}");
                            return Err(Error::Stopped(match self.flush().await {
                                Ok(()) => cause,
                                Err(flush) => format!("{cause}; then the flush of what was read: {flush}"),
                            }));
                        }
                        None => {}
                    }
                    if flush_failing.is_none() && self.store.tail_bytes() >= self.options.flush_bytes {
                        self.flush_or_retry(&mut flush_failing).await;
                    }
                    if !more {
                        // Caught up with the log: let records gather before the next step.
                        tokio::select! {
                            _ = stop.changed() => break,
                            _ = tokio::time::sleep(self.options.feed_interval) => {}
                        }
                    }
                }
            }
        }
        // A merge under way ends first: its thread holds the store's files.
        if merging.is_some() {
            let outcome = Merging::end(&mut merging).await;
            if let Some(merge) = merging.take() {
                merge.report(outcome);
            }
        }
        self.publish(&mut step)?;
        self.flush().await
    }

    /// Moves a step's rows to the store's tail, where queries see them.
    fn publish(&self, step: &mut Step) -> Result<()> {
        if let Some(last) = step.last.take() {
            step.since = None;
            let next = if std::mem::take(&mut step.bytes) <= STEP_ROOM_BYTES_MAX { Rows::with_room_of(&step.rows) } else { Rows::default() };
            self.store.append(std::mem::replace(&mut step.rows, next), last)?;
            let _ = self.consumed.send(last);
        }
        Ok(())
    }

    /// Flushes; a failure is logged (the first of a run of them as an error) and counted,
    /// and `failing` says since when, for the next try.
    async fn flush_or_retry(&self, failing: &mut Option<Instant>) {
        match self.flush().await {
            Ok(()) => {
                if let Some(since) = failing.take() {
                    tracing::info!(seconds = since.elapsed().as_secs(), "trace flushes succeed again");
                }
            }
            Err(err) => {
                self.flush_failures.send_modify(|n| *n += 1);
                if failing.is_none() {
                    tracing::error!(error = %err, "a trace flush failed; it is tried again within a second, and meanwhile the log keeps the records the traces still need");
                    *failing = Some(Instant::now());
                } else {
                    tracing::debug!(error = %err, "a trace flush failed again");
                }
            }
        }
    }

    async fn flush(&self) -> Result<()> {
        let store = Arc::clone(&self.store);
        let checkpoint = tokio::task::spawn_blocking(move || store.flush()).await.map_err(|e| Error::Internal(e.to_string()))??;
        let _ = self.checkpoints.send(checkpoint);
        Ok(())
    }

    async fn expire(&self) -> Result<()> {
        let (store, retention) = (Arc::clone(&self.store), self.options.retention);
        let removed = tokio::task::spawn_blocking(move || store.expire(retention)).await.map_err(|e| Error::Internal(e.to_string()))?;
        if removed > 0 {
            tracing::info!(removed, "removed trace files expired or merged");
        }
        Ok(())
    }

    /// Starts the oldest merge the files call for, if there is one, none is under way and
    /// none failed within `MERGE_RETRY_AFTER`.
    fn start_merge(&self, merging: &mut Option<Merging>, failed_at: Option<Instant>) {
        if merging.is_some() || failed_at.is_some_and(|at| at.elapsed() < MERGE_RETRY_AFTER) {
            return;
        }
        let policy = MergePolicy { files: self.options.merge_files, bytes_max: self.options.merge_bytes_max, span: self.options.merge_span };
        if let Some(plan) = self.store.merge_plan(&policy) {
            let (table, files, store) = (plan.table, plan.inputs.len(), Arc::clone(&self.store));
            *merging = Some(Merging { table, files, task: tokio::task::spawn_blocking(move || store.merge(&plan)) });
        }
    }
}

/// A merge under way, on a blocking thread of the feed's runtime.
struct Merging {
    table: usize,
    files: usize,
    task: tokio::task::JoinHandle<Result<MergeOutcome>>,
}

impl Merging {
    /// The end of the merge under way, if any; never, if none is.
    async fn end(merging: &mut Option<Merging>) -> std::result::Result<Result<MergeOutcome>, tokio::task::JoinError> {
        match merging {
            Some(merging) => (&mut merging.task).await,
            None => std::future::pending().await,
        }
    }

    /// Reports the merge's end, and whether it failed. A merge that failed leaves its files
    /// as they were: the traces go on, and merges resume after `MERGE_RETRY_AFTER`.
    fn report(self, outcome: std::result::Result<Result<MergeOutcome>, tokio::task::JoinError>) -> bool {
        let (table, files) = (TABLES[self.table], self.files);
        let retry = MERGE_RETRY_AFTER.as_secs();
        match outcome {
            Ok(Ok(MergeOutcome::Merged { rows, bytes })) => tracing::debug!(table, files, rows, bytes, "merged trace files"),
            Ok(Ok(MergeOutcome::Cancelled)) => tracing::debug!(table, files, "a trace merge stopped: the traces are closing"),
            Ok(Ok(MergeOutcome::Skipped { paths, reason })) => tracing::warn!(table, ?paths, reason, "trace files are left out of merges until the next start"),
            Ok(Err(err)) => {
                tracing::warn!(table, files, error = %err, "merging trace files failed; they stay as they are, and merges resume in {retry} s");
                return true;
            }
            Err(err) => {
                tracing::error!(table, files, error = %err, "a trace merge panicked; its files stay as they are, and merges resume in {retry} s");
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use comb_log::LogOptions;

    use super::*;

    /// Held by each test that starts a tracer, until its threads are gone: the niceness test
    /// counts the tracer threads of the whole process.
    static TRACERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// The catalog of a server without tables.
    fn no_tables() -> CatalogSource {
        Arc::new(|| Arc::new(Catalog::new()))
    }

    /// Closes `tracer`, whose threads are gone then, for the next test that counts them.
    async fn close_and_wait_for_its_threads(tracer: Tracer) {
        tracer.close().await.unwrap();
        assert_eq!(niceness_of_threads("comb-trace"), Vec::<i32>::new(), "the tracer's threads outlived its close");
    }

    /// The niceness of every thread of this process whose name starts with `prefix`.
    fn niceness_of_threads(prefix: &str) -> Vec<i32> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let Ok(name) = std::fs::read_to_string(task.join("comm")) else { continue };
            if !name.starts_with(prefix) {
                continue;
            }
            found.push(niceness(&task.join("stat")));
        }
        found
    }

    /// [`niceness_of_threads`] once at least `count` threads have the name, all at `nice`
    /// (or after 10 s). A thread has its name from its start, and its niceness once its
    /// start hook has run.
    async fn niceness_of_threads_once_at(prefix: &str, count: usize, nice: i32) -> Vec<i32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut found = niceness_of_threads(prefix);
        while (found.len() < count || found.iter().any(|n| *n != nice)) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            found = niceness_of_threads(prefix);
        }
        found
    }

    /// The niceness in a thread's `stat` file.
    fn niceness(stat: &Path) -> i32 {
        let stat = std::fs::read_to_string(stat).unwrap();
        // After the name in parentheses: state is field 3, niceness field 19.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[16].parse().unwrap()
    }

    #[tokio::test]
    async fn the_feed_runs_at_its_niceness_and_queries_at_the_servers() {
        let _alone = TRACERS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let log = LogBook::in_memory(LogOptions::default()).unwrap();
        let catalog = no_tables();
        let own = niceness(Path::new("/proc/thread-self/stat"));
        let options = TracingOptions { feed_nice: (own + 7).min(19), ..TracingOptions::default() };
        let tracer = Tracer::start(dir.path(), log, catalog, options.clone()).await.unwrap();
        // A new thread names itself once it runs: on a busy machine a runtime's workers may
        // not have yet when it is built.
        let feed = niceness_of_threads_once_at("comb-trace-feed", 1, options.feed_nice).await;
        assert!(!feed.is_empty() && feed.iter().all(|&n| n == options.feed_nice), "feed threads at {feed:?}, not {}", options.feed_nice);
        let queries = niceness_of_threads_once_at("comb-trace-quer", options.query_threads, own).await;
        assert_eq!(queries, vec![own; options.query_threads], "the query runtime keeps the server's priority");
        assert_eq!(tracer.query("SELECT count(*) AS n FROM workflows", true).await.unwrap().rows, vec![vec![serde_json::json!(0)]]);
        tracer.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_query_whose_caller_goes_away_stops_and_keeps_its_place_until_it_has() {
        let _alone = TRACERS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let log = LogBook::in_memory(LogOptions::default()).unwrap();
        let catalog = no_tables();
        let options = TracingOptions { queries_in_flight_max: 1, ..TracingOptions::default() };
        let tracer = Tracer::start(dir.path(), log, catalog, options).await.unwrap();
        let runtime = tracer.runtime.lock().unwrap().as_ref().unwrap().handle().clone();
        // Minutes of work, were it left to run.
        let long = tracer.query("SELECT count(*) FROM generate_series(1, 100000000000)", false);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(300), long).await.is_err(), "the long query ended");
        // It keeps its place until it has stopped: its place comes back once it has.
        let wait = std::time::Duration::from_secs(10);
        let place = tokio::time::timeout(wait, tracer.queries.acquire()).await.expect("the abandoned query kept its place");
        drop(place.unwrap());
        assert_eq!(tracer.query("SELECT 1 AS one", false).await.unwrap().rows, vec![vec![serde_json::json!(1)]]);
        // And it stopped, rather than running on beside the next query: its tasks end.
        let deadline = std::time::Instant::now() + wait;
        while runtime.metrics().num_alive_tasks() > 0 {
            assert!(std::time::Instant::now() < deadline, "the abandoned query still runs");
            tokio::task::yield_now().await;
        }
        close_and_wait_for_its_threads(tracer).await;
    }

    /// A burst that ends on a chunk's boundary is published: a full chunk that was the log's
    /// last does not leave the feed waiting for records that never come.
    #[tokio::test]
    async fn records_ending_on_a_chunk_boundary_become_queryable() {
        let _alone = TRACERS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let log = LogBook::in_memory(LogOptions::default()).unwrap();
        let options = TracingOptions { catch_up_max: std::time::Duration::from_secs(5), ..TracingOptions::default() };
        // Records the feed reads and skips (not commits): only the count matters here.
        for _ in 0..2 {
            let entries = (0..options.feed_batch_records).map(|_| comb_log::Entry::new(vec![1], bytes::Bytes::from_static(b"x"))).collect();
            log.append_batch(entries).await.unwrap();
        }
        let catalog = no_tables();
        let tracer = Tracer::start(dir.path(), log.clone(), catalog, options.clone()).await.unwrap();
        tracer.wait_for(log.tail()).await.expect("the records' step is published");
        assert_eq!(tracer.consumed(), 2 * options.feed_batch_records as u64);
        close_and_wait_for_its_threads(tracer).await;
    }

    #[tokio::test]
    async fn a_store_that_does_not_open_is_an_error_and_no_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("format"), "2\n").unwrap();
        let log = LogBook::in_memory(LogOptions::default()).unwrap();
        let catalog = no_tables();
        let refused = Tracer::start(dir.path(), log, catalog, TracingOptions::default()).await.unwrap_err();
        assert!(matches!(refused, Error::UnsupportedFormat { found: 2, .. }), "{refused}");
    }
}
