//! The public handle: open (with recovery), DDL, function registration, invocation,
//! checkpoint, close.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use comb_log::{Entry, LogBook, LogOptions, Lsn};
use comb_planner::Catalog;
use serde::{Deserialize, Serialize};

use crate::commit::{CATALOG_TAG, CatalogRecord, encode_catalog};
use crate::coordinator::{Coordinator, CoordinatorCommand};
use crate::error::{Error, Result};
use crate::executor::Limits;
use crate::function::{Function, Registered};
use crate::keycodec::partition_of;
use crate::keys::PARTITIONS_MAX;
use crate::partition::{Command, Executor, InvocationId, Job, JobEnd, Member, NextInputFn, Output, PartitionState, RunEnd, Shared, SlowSteps, StepInProgress, StepTimes, WriteBack, check_json_bytes};
use crate::recovery::{blocking, check_partitions, recover_catalog, replay_partition, store_catalog_through};
use crate::rowcache::ROW_CACHE_BYTES_MAX;
use crate::store::Store;
use crate::trace::TraceBuffer;

/// The most `writeback-bytes` may be, per partition.
pub const WRITEBACK_BYTES_MAX: usize = 1 << 30;

/// The most `writeback-interval-ms` may be: replay after a crash reads at least this much of
/// the log again.
pub const WRITEBACK_INTERVAL_MS_MAX: u64 = 60_000;

/// The most `transaction-time-max-ms` may be.
pub const TRANSACTION_TIME_MS_MAX: u64 = 3_600_000;

/// Options of the backend, each a named bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct EngineOptions {
    /// Partitions, each with its executor thread. Fixed when the state store is created.
    pub partitions: u16,
    /// Most invocations waiting for one partition (or for the multi-partition coordinator);
    /// one more is refused with `Overloaded` (retryable).
    pub queue_invocations_max: usize,
    /// Most rows one access of one statement may read, and one step of its plan may hold
    /// on its way to a step that passes fewer on (an aggregate's input, a join's outer side).
    pub scan_rows_max: usize,
    /// Most rows one statement may return, and the steps that are its result row for row
    /// (a projection, a sort) may hold.
    pub result_rows_max: usize,
    /// Most keys (rows and index entries) one transaction may write.
    pub write_set_max: usize,
    /// Largest JSON input or output of a function, in bytes.
    pub json_bytes_max: usize,
    /// Longest one transaction may run on its executor, in milliseconds, from its first
    /// function's start: a statement begun past it fails, and so does the transaction, which
    /// is rolled back. A body that runs no statement cannot be stopped before it returns.
    pub transaction_time_max_ms: u64,
    /// Whether each invocation's trace lists the rows it read (the tracing layer's
    /// `read_events`), up to `TRACED_READS_MAX` keys an invocation: a key copy per row read,
    /// and the keys' bytes in every commit and trace record.
    pub trace_reads: bool,
    /// Bytes of rows each partition keeps in memory as the state store holds them, so that
    /// hot rows are read without a RocksDB lookup (0: none; at most `ROW_CACHE_BYTES_MAX`).
    pub row_cache_bytes: usize,
    /// Bytes of durable writes a partition gathers before writing them back to the state
    /// store, at most `WRITEBACK_BYTES_MAX` (0: write back at once). Until then reads find
    /// them in memory and the log holds them; a row updated many times in between costs the
    /// store one write, and the store takes them in key order.
    pub writeback_bytes: usize,
    /// Longest a durable write waits in memory for its write-back, in milliseconds, at most
    /// `WRITEBACK_INTERVAL_MS_MAX`.
    pub writeback_interval_ms: u64,
    /// Options of the shared log, when the engine opens it.
    pub log: LogOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            partitions: std::thread::available_parallelism().map_or(1, |n| n.get()).min(usize::from(PARTITIONS_MAX)) as u16,
            queue_invocations_max: 16_384,
            scan_rows_max: 1_000_000,
            result_rows_max: 100_000,
            write_set_max: 100_000,
            json_bytes_max: 1 << 20,
            transaction_time_max_ms: 10_000,
            trace_reads: false,
            row_cache_bytes: 64 << 20,
            writeback_bytes: 16 << 20,
            writeback_interval_ms: 1_000,
            log: LogOptions::default(),
        }
    }
}

impl EngineOptions {
    /// Checks every bound; called once when the engine opens.
    pub fn validate(&self) -> Result<()> {
        let invalid = |option, reason: String| Err(Error::InvalidOptions { option, reason });
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return invalid("partitions", format!("must be between 1 and {PARTITIONS_MAX}"));
        }
        for (option, value) in [
            ("queue-invocations-max", self.queue_invocations_max),
            ("scan-rows-max", self.scan_rows_max),
            ("result-rows-max", self.result_rows_max),
            ("write-set-max", self.write_set_max),
            ("json-bytes-max", self.json_bytes_max),
        ] {
            if value == 0 {
                return invalid(option, "must be at least 1".to_owned());
            }
        }
        if !(1..=TRANSACTION_TIME_MS_MAX).contains(&self.transaction_time_max_ms) {
            return invalid("transaction-time-max-ms", format!("must be between 1 and {TRANSACTION_TIME_MS_MAX}"));
        }
        if self.row_cache_bytes > ROW_CACHE_BYTES_MAX {
            return invalid("row-cache-bytes", format!("must be at most {ROW_CACHE_BYTES_MAX}"));
        }
        if self.writeback_bytes > WRITEBACK_BYTES_MAX {
            return invalid("writeback-bytes", format!("must be at most {WRITEBACK_BYTES_MAX}"));
        }
        if self.writeback_interval_ms > WRITEBACK_INTERVAL_MS_MAX {
            return invalid("writeback-interval-ms", format!("must be at most {WRITEBACK_INTERVAL_MS_MAX}"));
        }
        Ok(())
    }
}

/// Refuses a DDL that adds an index to a table of `before` (one the script did not create):
/// nothing fills an index from the rows already written, nor from the writes of transactions
/// prepared against the catalog before it. Refuses a new unique index without the table's
/// partition column: a single-partition transaction checks it only in its own partition.
fn check_new_indexes(before: &Catalog, after: &Catalog) -> Result<()> {
    for table in after.tables() {
        // A table dropped and created again by the script has a new id: it is new.
        let old = before.table(&table.name).filter(|t| t.id == table.id);
        for index in table.indexes.iter().filter(|i| old.is_none_or(|old| old.indexes.iter().all(|o| o.id != i.id))) {
            if old.is_some() {
                return Err(Error::IndexOnExistingTable { table: table.name.clone(), index: index.name.clone() });
            }
            if index.unique && !index.columns.contains(&table.partition_column) {
                let column = table.columns[table.partition_column].name.clone();
                return Err(Error::UniqueWithoutPartitionColumn { table: table.name.clone(), index: index.name.clone(), column });
            }
        }
    }
    Ok(())
}

/// When an invocation's caller gets its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Answer {
    /// Once its commit is durable; when it wrote nothing (or failed), once every commit
    /// whose writes it read is durable. What may be told to anyone.
    #[default]
    Durable,
    /// As soon as it has run and its commit is queued in the log, before it is durable: for
    /// a caller that only hands the output to later work whose own commit comes after it in
    /// the log (a workflow's next step). The log makes its records durable in order, so
    /// such a later commit, once durable, carries this one with it, and a crash that loses
    /// this commit loses every commit after it too. The output's `lsn` is then `None`. The
    /// caller must tell no one of the output before a later commit of its own is durable.
    Logged,
}

/// One call of a function.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The function's name.
    pub function: String,
    /// Its input.
    pub input: serde_json::Value,
    /// The invocation's identity (workflow id, step id), for exactly-once and tracing.
    pub id: Option<InvocationId>,
    /// Record the output with the effects; an invocation with the same id then returns it
    /// and runs nothing.
    pub record: bool,
    /// When the caller is answered.
    pub answer: Answer,
}

impl Invocation {
    /// An invocation without identity or recording.
    pub fn new(function: impl Into<String>, input: serde_json::Value) -> Invocation {
        Invocation { function: function.into(), input, id: None, record: false, answer: Answer::Durable }
    }

    /// Gives the invocation an identity.
    pub fn id(mut self, workflow: impl Into<String>, step: impl Into<String>) -> Invocation {
        self.id = Some(InvocationId { workflow: workflow.into(), step: step.into() });
        self
    }

    /// Asks for the output to be recorded (needs an id).
    pub fn record(mut self) -> Invocation {
        self.record = true;
        self
    }

    /// Asks for the answer once the commit is queued in the log, not durable
    /// ([`Answer::Logged`]).
    pub fn answer_logged(mut self) -> Invocation {
        self.answer = Answer::Logged;
        self
    }
}

struct Registry {
    catalog: Arc<Catalog>,
    functions: BTreeMap<String, (Function, Arc<Registered>)>,
}

impl Registry {
    fn function(&self, name: &str) -> Result<&Arc<Registered>> {
        self.functions.get(name).map(|(_, f)| f).ok_or_else(|| Error::UnknownFunction { name: name.to_owned() })
    }
}

/// One function of a multi-function transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionStep {
    /// The function's name.
    pub function: String,
    /// The invocation's identity (workflow id, step id).
    pub id: Option<InvocationId>,
    /// Record the output with the effects (needs an id).
    pub record: bool,
}

/// Several functions run in order as one transaction.
pub struct Transaction {
    /// The functions, in the order they run.
    pub steps: Vec<TransactionStep>,
    /// The first function's input.
    pub input: serde_json::Value,
    /// Computes each later function's input from the outputs before it; an error aborts
    /// the transaction.
    pub next_input: Arc<NextInputFn>,
    /// When the caller is answered.
    pub answer: Answer,
    /// The run's end, when the transaction is a whole workflow run: its record, built after
    /// the members, written by the end's writer or, for a run that writes nothing, traced;
    /// either way answered as [`Output::ended`] (see [`RunEnd`]).
    pub end: Option<RunEnd>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("steps", &self.steps).field("input", &self.input).field("answer", &self.answer).finish_non_exhaustive()
    }
}

struct Queue<T> {
    sender: Sender<T>,
    queued: Arc<AtomicUsize>,
}

impl<T> Queue<T> {
    fn submit(&self, command: T, partition: u16, limit: usize) -> Result<()> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Overloaded { partition, limit });
        }
        self.sender.send(command).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            Error::Closed
        })
    }
}

struct Inner {
    shared: Arc<Shared>,
    options: EngineOptions,
    store: Mutex<Option<Arc<Store>>>,
    partitions: Vec<Queue<Command>>,
    coordinator: Queue<CoordinatorCommand>,
    /// Barriers the coordinator has begun.
    barriers: Arc<AtomicU64>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Stops the watch of the steps in progress: taken (dropped) at close, or with the engine.
    watch_stop: Mutex<Option<Sender<()>>>,
    registry: RwLock<Arc<Registry>>,
    /// Serializes catalog changes and checkpoints.
    ddl: tokio::sync::Mutex<()>,
    /// The catalog a DDL under way makes, from before its append until the registry has it:
    /// a function registered meanwhile must fit it too. Set and cleared under the registry's
    /// write lock.
    pending_catalog: Mutex<Option<Arc<Catalog>>>,
    /// Consumers' holds on the trim point: each still needs the records from its LSN on.
    holds: Mutex<BTreeMap<String, Lsn>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.coordinator.sender.send(CoordinatorCommand::Stop);
        for p in &self.partitions {
            let _ = p.sender.send(Command::Stop);
        }
    }
}

/// The backend: a partitioned store where functions run as transactions committed through
/// the shared log. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("partitions", &self.inner.options.partitions).finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (or creates) an engine in `dir`: the log in `dir/log`, the state in `dir/state`.
    /// Must be called within a tokio runtime (recovery reads on its blocking pool); commits
    /// complete on the log's own threads, with no task of the runtime.
    pub async fn open(dir: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        options.validate()?;
        let dir = dir.as_ref();
        let log = LogBook::open_dir(dir.join("log"), options.log.clone()).await?;
        match Self::open_with_log(log.clone(), dir.join("state"), options).await {
            Ok(engine) => Ok(engine),
            Err(err) => {
                // Released before the error returns: dropped, the log closes on its own
                // threads, and an open of the same directory right after found it in use.
                if let Err(close) = log.close().await {
                    tracing::warn!(error = %close, "closing the log after a failed open");
                }
                Err(err)
            }
        }
    }

    /// Opens the engine over an open log, with its state store in `state_dir`, replaying
    /// the log's records after what the store has applied.
    pub async fn open_with_log(log: LogBook, state_dir: impl Into<PathBuf>, options: EngineOptions) -> Result<Engine> {
        options.validate()?;
        let state_dir = state_dir.into();
        let n = options.partitions;
        let store = blocking(move || {
            let store = Store::open(&state_dir)?;
            check_partitions(&store, n)?;
            Ok(Arc::new(store))
        })
        .await?;
        let catalog = recover_catalog(&store, &log).await?;
        let mut applied = Vec::with_capacity(usize::from(n));
        for p in 0..n {
            applied.push(replay_partition(&store, &log, p).await?);
        }
        let shared = Arc::new(Shared {
            log,
            partitions: n,
            limits: Limits { scan_rows_max: options.scan_rows_max, result_rows_max: options.result_rows_max, write_set_max: options.write_set_max },
            transaction_time_max: Duration::from_millis(options.transaction_time_max_ms),
            json_bytes_max: options.json_bytes_max,
            trace_reads: options.trace_reads,
            steps: StepTimes::new(n),
        });
        let writeback = WriteBack { bytes: options.writeback_bytes, interval: Duration::from_millis(options.writeback_interval_ms) };
        let mut threads = Vec::new();
        let mut partitions = Vec::new();
        for (p, applied) in (0..n).zip(applied) {
            let (sender, commands) = channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let executor = Executor {
                state: Box::new(PartitionState::new(p, Arc::clone(&store), applied, options.row_cache_bytes, writeback)),
                commands,
                queued: Arc::clone(&queued),
                shared: Arc::clone(&shared),
                durable: sender.clone(),
                traces: TraceBuffer::default(),
                checkpoints: Vec::new(),
            };
            threads.push(spawn(format!("comb-partition-{p}"), move || executor.run())?);
            partitions.push(Queue { sender, queued });
        }
        let (sender, commands) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let barriers = Arc::new(AtomicU64::new(0));
        let coordinator = Coordinator {
            commands,
            partitions: partitions.iter().map(|q| q.sender.clone()).collect(),
            shared: Arc::clone(&shared),
            queued: Arc::clone(&queued),
            barriers: Arc::clone(&barriers),
            traces: TraceBuffer::default(),
        };
        threads.push(spawn("comb-coordinator".to_owned(), move || coordinator.run())?);
        let (watch_stop, stopped) = channel();
        let watched = Arc::clone(&shared);
        threads.push(spawn("comb-watch".to_owned(), move || watch_steps(&watched, &stopped))?);
        Ok(Engine {
            inner: Arc::new(Inner {
                shared,
                store: Mutex::new(Some(store)),
                partitions,
                coordinator: Queue { sender, queued },
                barriers,
                threads: Mutex::new(threads),
                watch_stop: Mutex::new(Some(watch_stop)),
                registry: RwLock::new(Arc::new(Registry { catalog: Arc::new(catalog), functions: BTreeMap::new() })),
                ddl: tokio::sync::Mutex::new(()),
                pending_catalog: Mutex::new(None),
                holds: Mutex::new(BTreeMap::new()),
                options,
            }),
        })
    }

    fn pending_catalog(&self) -> std::sync::MutexGuard<'_, Option<Arc<Catalog>>> {
        self.inner.pending_catalog.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.inner.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn store(&self) -> Result<Arc<Store>> {
        self.inner.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(Arc::clone).ok_or(Error::Closed)
    }

    /// How many barriers the multi-partition coordinator has begun since the engine opened:
    /// each pauses every executor (after its invocation in flight) for the multi-partition
    /// transactions waiting. Counted once every executor has been asked.
    pub fn barriers(&self) -> u64 {
        self.inner.barriers.load(Ordering::Acquire)
    }

    /// The executors' steps that held their queue 10 ms or more (see [`SlowSteps`]).
    pub fn slow_steps(&self) -> SlowSteps {
        self.inner.shared.steps.slow_steps()
    }

    /// The steps the executors (and the coordinator) run now that have run longer than
    /// `longer_than`: a function that does not return holds its partition's queue, and shows
    /// here (the server also logs it, past `transaction-time-max-ms`).
    pub fn steps_in_progress(&self, longer_than: Duration) -> Vec<StepInProgress> {
        self.inner.shared.steps.in_progress(longer_than)
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.registry().catalog)
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u16 {
        self.inner.options.partitions
    }

    /// The partition a partition-key value belongs to.
    pub fn partition_of(&self, key: &comb_planner::Value) -> u16 {
        partition_of(key, self.inner.options.partitions)
    }

    /// The partition a call of `function` with `input` runs on, before it runs: `None` for
    /// a function without a partition key, which may touch any. A multi-function transaction
    /// runs on its first function's, unless a later one's key falls elsewhere.
    pub fn partition_of_call(&self, function: &str, input: &serde_json::Value) -> Result<Option<u16>> {
        self.route(self.registry().function(function)?, input)
    }

    /// Where a call of `function` with `input` is submitted: its partition key's partition,
    /// or `None` (every partition) for a function without one.
    fn route(&self, function: &Registered, input: &serde_json::Value) -> Result<Option<u16>> {
        if !function.single_partition {
            return Ok(None);
        }
        Ok(Some(partition_of(&function.partition_key(input)?, self.inner.options.partitions)))
    }

    /// The shared log.
    pub fn log(&self) -> &LogBook {
        &self.inner.shared.log
    }

    /// Applies DDL (a whole script or nothing), durably: the script is a catalog record in
    /// the log. Every registered function is prepared again against the new catalog; DDL
    /// that would break one is refused. Returns the record's LSN.
    ///
    /// An index is built only with its table: `CREATE INDEX` on a table that exists before
    /// the script is refused (`IndexOnExistingTable`), since the index would miss the rows
    /// written before it, and the writes of transactions prepared before it.
    pub async fn execute_ddl(&self, sql: &str) -> Result<Lsn> {
        // Once its record is appended, a DDL must reach the catalog in memory whatever becomes
        // of the caller. Cut short there (a dropped future: a client gone, a deadline), it
        // would leave the log with a table the engine does not know, whose id the next DDL
        // takes again; recovery would then give one table's rows to the other. So it runs on
        // a task of its own, which the caller only awaits.
        let (engine, sql) = (self.clone(), sql.to_owned());
        tokio::spawn(async move { engine.apply_ddl(&sql).await })
            .await
            .map_err(|err| if err.is_cancelled() { Error::Closed } else { Error::Internal(format!("the task applying a DDL panicked: {err}")) })?
    }

    async fn apply_ddl(&self, sql: &str) -> Result<Lsn> {
        let _serial = self.inner.ddl.lock().await;
        let (catalog, functions) = {
            // Under the write lock: no function is registered between this snapshot and the
            // pending catalog being set.
            let guard = self.inner.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let catalog = Arc::new(guard.catalog.apply(sql).map_err(Error::Ddl)?);
            check_new_indexes(&guard.catalog, &catalog)?;
            let mut functions = BTreeMap::new();
            for (name, (function, _)) in &guard.functions {
                functions.insert(name.clone(), (function.clone(), Arc::new(Registered::prepare(function, &catalog)?)));
            }
            *self.pending_catalog() = Some(Arc::clone(&catalog));
            (catalog, functions)
        };
        let payload = encode_catalog(&CatalogRecord { ddl: sql.to_owned() });
        let appended = self.inner.shared.log.append_batch(vec![Entry::new(vec![CATALOG_TAG], payload)]).await;
        let lsn = self.adopt_catalog(appended.map_err(Error::from), catalog, functions)?;
        // Stored as a checkpoint stores it (with any catalog record an earlier failure left
        // unstored).
        store_catalog_through(&self.store()?, &self.inner.shared.log, lsn).await?;
        Ok(lsn)
    }

    /// After a DDL's append: clears the pending catalog and, when the record was appended,
    /// swaps in the new catalog and the functions prepared against it.
    fn adopt_catalog(&self, appended: Result<Lsn>, catalog: Arc<Catalog>, mut functions: BTreeMap<String, (Function, Arc<Registered>)>) -> Result<Lsn> {
        let mut guard = self.inner.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *self.pending_catalog() = None;
        let lsn = appended?;
        // The log holds the DDL: the catalog in memory follows it, whatever happens next. A
        // function registered while the record was appended was checked against the new
        // catalog too (`register`), and is prepared against it now.
        for (name, (function, _)) in &guard.functions {
            if functions.contains_key(name) {
                continue;
            }
            match Registered::prepare(function, &catalog) {
                Ok(registered) => _ = functions.insert(name.clone(), (function.clone(), Arc::new(registered))),
                Err(err) => tracing::error!(function = %name, error = %err, "a function registered during a DDL does not fit the new catalog, and is unregistered"),
            }
        }
        *guard = Arc::new(Registry { catalog, functions });
        Ok(lsn)
    }

    /// Registers a compiled-in function: its statements are prepared against the current
    /// catalog, and every finding is reported at once.
    pub fn register(&self, function: Function) -> Result<()> {
        let mut guard = self.inner.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.functions.contains_key(function.name()) {
            return Err(Error::DuplicateFunction { name: function.name().to_owned() });
        }
        let registered = Arc::new(Registered::prepare(&function, &guard.catalog)?);
        if let Some(pending) = self.pending_catalog().as_ref() {
            Registered::prepare(&function, pending).map_err(|err| Error::InvalidFunction {
                function: function.name().to_owned(),
                message: format!("it does not fit the catalog of the DDL being applied ({err}); register it again once the DDL is done"),
            })?;
        }
        let mut functions = guard.functions.clone();
        functions.insert(function.name().to_owned(), (function, registered));
        *guard = Arc::new(Registry { catalog: Arc::clone(&guard.catalog), functions });
        Ok(())
    }

    /// Runs a function as one transaction. Resolves once its commit is durable (or, when it
    /// wrote nothing, once every commit whose writes it read is durable), or sooner as
    /// `invocation.answer` asks.
    pub async fn invoke(&self, invocation: Invocation) -> Result<Output> {
        let registry = self.registry();
        let function = registry.function(&invocation.function)?;
        check_json_bytes(&invocation.input, "the function's input in bytes", self.inner.options.json_bytes_max)?;
        let member = Member { function: Arc::clone(function), id: invocation.id, record: invocation.record };
        let partition = self.route(function, &invocation.input)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job { members: vec![member], input: invocation.input, next_input: None, end: None, record_partition: None, lookup_only: false, answer: invocation.answer, reply };
        self.submit(job, partition)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Runs several functions in order as ONE transaction (one commit record, atomic): a
    /// multi-function transaction. Each later function's input is computed from the outputs
    /// before it. The output's value is the array of the functions' outputs.
    ///
    /// It runs on the partition of the first function's partition key when every function
    /// is single-partition and every later key falls in the same partition; otherwise (found
    /// out at run time, before anything commits) as a multi-partition transaction. Recorded
    /// outputs live in the first function's partition either way, so a second invocation
    /// finds them wherever the first ran.
    pub async fn invoke_transaction(&self, transaction: Transaction) -> Result<Output> {
        let registry = self.registry();
        if transaction.steps.is_empty() {
            return Err(Error::Internal("a transaction needs at least one function".to_owned()));
        }
        let members = || -> Result<Vec<Member>> {
            let member = |s: &TransactionStep| Ok(Member { function: Arc::clone(registry.function(&s.function)?), id: s.id.clone(), record: s.record });
            transaction.steps.iter().map(member).collect()
        };
        let end = || -> Result<Option<JobEnd>> {
            let Some(end) = &transaction.end else { return Ok(None) };
            let writer = match &end.writer {
                Some(name) => {
                    let writer = registry.function(name)?;
                    let refuse = |message: &str| Err(Error::InvalidFunction { function: name.clone(), message: message.to_owned() });
                    let Some(body) = &writer.run_end else { return refuse("it has no body that writes run ends (Function::writes_run_ends)") };
                    // Its write is the run's row, which the traces show as the run; an
                    // invocation of it would only repeat that.
                    if writer.traced {
                        return refuse("a function that writes run ends must be untraced (Function::untraced)");
                    }
                    Some((Arc::clone(writer), Arc::clone(body)))
                }
                None => None,
            };
            Ok(Some(JobEnd { build: Arc::clone(&end.build), writer }))
        };
        let first = Arc::clone(registry.function(&transaction.steps[0].function)?);
        check_json_bytes(&transaction.input, "the function's input in bytes", self.inner.options.json_bytes_max)?;
        let home = self.route(&first, &transaction.input)?;
        let single = transaction.steps.iter().all(|s| registry.function(&s.function).is_ok_and(|f| f.single_partition));
        if single {
            // A later function's key may fall elsewhere; then it runs again, multi-partition.
            let (reply, answer) = tokio::sync::oneshot::channel();
            let next_input = Some(Arc::clone(&transaction.next_input));
            let job = Job { members: members()?, input: transaction.input.clone(), next_input, end: end()?, record_partition: home, lookup_only: false, answer: transaction.answer, reply };
            self.submit(job, home)?;
            match answer.await.map_err(|_| Error::Closed)? {
                Err(Error::WrongPartition { .. }) => {}
                other => return other,
            }
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job { members: members()?, input: transaction.input, next_input: Some(transaction.next_input), end: end()?, record_partition: home, lookup_only: false, answer: transaction.answer, reply };
        self.submit(job, None)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// The recorded outputs of `steps` (one function, or several recorded together as one
    /// transaction), when they committed with recording, wherever that was: every partition
    /// is asked, since the one that holds them was chosen by the input of the run that
    /// recorded them, and a later run's input may lead elsewhere. Nothing runs. Found, the
    /// output is what invoking them again would answer (`replayed`, and traced so); `None`
    /// when no partition holds them.
    pub async fn find_recorded(&self, steps: &[TransactionStep]) -> Result<Option<Output>> {
        let registry = self.registry();
        let mut answers = Vec::with_capacity(self.inner.partitions.len());
        for partition in 0..self.inner.options.partitions {
            let members = steps
                .iter()
                .map(|s| Ok(Member { function: Arc::clone(registry.function(&s.function)?), id: s.id.clone(), record: s.record }))
                .collect::<Result<Vec<_>>>()?;
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.submit(Job { members, input: serde_json::Value::Null, next_input: None, end: None, record_partition: None, lookup_only: true, answer: Answer::Durable, reply }, Some(partition))?;
            answers.push(answer);
        }
        let mut found = None;
        for answer in answers {
            let output = answer.await.map_err(|_| Error::Closed)??;
            if !output.replayed {
                continue;
            }
            if found.is_some() {
                // They committed twice (a build without this lookup, or a multi-partition
                // unit of an interrupted run still queued when the lookup passed its
                // partition); the first found is the answer.
                tracing::error!(steps = ?steps.iter().map(|s| &s.id).collect::<Vec<_>>(), "outputs recorded in more than one partition: they ran more than once");
                continue;
            }
            found = Some(output);
        }
        Ok(found)
    }

    /// Queues a job on a partition's executor, or on the coordinator (`None`).
    fn submit(&self, job: Job, partition: Option<u16>) -> Result<()> {
        let limit = self.inner.options.queue_invocations_max;
        match partition {
            Some(p) => self.inner.partitions[usize::from(p)].submit(Command::Invoke(job), p, limit),
            None => self.inner.coordinator.submit(CoordinatorCommand::Invoke(job), u16::MAX, limit),
        }
    }

    /// Tells whether a registered function writes nothing.
    pub fn is_read_only(&self, function: &str) -> Option<bool> {
        self.registry().functions.get(function).map(|(_, f)| f.prepared.read_only)
    }

    /// Holds the log's trim point back for a consumer (the tracing layer, say) that still
    /// needs the records from `lsn` on. Replaces the consumer's earlier hold.
    pub fn hold_trim(&self, consumer: &str, lsn: Lsn) {
        self.inner.holds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(consumer.to_owned(), lsn);
    }

    /// Drops a consumer's hold on the trim point.
    pub fn release_trim(&self, consumer: &str) {
        self.inner.holds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(consumer);
    }

    /// Flushes the state store, then trims the log below what every partition, the catalog
    /// and every consumer's hold still need. Returns the log's new trim point.
    pub async fn checkpoint(&self) -> Result<Lsn> {
        let _serial = self.inner.ddl.lock().await;
        self.checkpoint_serial().await
    }

    /// A checkpoint, by a caller that holds the DDL lock.
    async fn checkpoint_serial(&self) -> Result<Lsn> {
        let store = self.store()?;
        // No catalog change is in flight: every catalog record up to the tail is applied in
        // memory, and its DDL is stored (again, if its own store write failed).
        let catalog_tail = self.inner.shared.log.tail();
        store_catalog_through(&store, &self.inner.shared.log, catalog_tail).await?;
        let mut needed = catalog_tail + 1;
        // Every partition writes back at once; each answers once its write-back is stored.
        let mut answers = Vec::with_capacity(self.inner.partitions.len());
        for queue in &self.inner.partitions {
            let (reply, answer) = channel();
            queue.sender.send(Command::Checkpoint { reply }).map_err(|_| Error::Closed)?;
            answers.push(answer);
        }
        for (p, answer) in answers.into_iter().enumerate() {
            let from = blocking(move || answer.recv().map_err(|_| Error::Closed)?).await;
            needed = needed.min(from.map_err(|err| match err {
                Error::Closed => Error::PartitionFailed { partition: p as u16, cause: "its executor stopped".to_owned() },
                other => other,
            })?);
        }
        blocking(move || store.flush()).await?;
        if let Some(hold) = self.inner.holds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().min() {
            needed = needed.min(*hold);
        }
        let log = &self.inner.shared.log;
        if needed > log.trim_point() {
            log.trim(needed).await?;
        }
        Ok(log.trim_point())
    }

    /// Checkpoints, then waits at most `bound` for the state store's compactions, those the
    /// checkpoint's flush started among them: what an operator does after a bulk load (as
    /// PostgreSQL's `CHECKPOINT` after one), so that the load's background work does not run
    /// beside what follows. Writes may go on meanwhile, and add compactions to wait for;
    /// DDL, checkpoints and `close` wait for the settle (the store must not outlive a close).
    /// Returns whether the store had none left to do within the bound.
    pub async fn settle(&self, bound: Duration) -> Result<bool> {
        let _serial = self.inner.ddl.lock().await;
        self.checkpoint_serial().await?;
        let store = self.store()?;
        blocking(move || store.wait_for_compactions(bound)).await
    }

    /// Finishes the commits in flight, stops every thread, closes the state store and the
    /// log. Later calls fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        // After a checkpoint (or DDL) under way: a checkpoint waits for the executors'
        // write-backs, then flushes the store and trims the log, which must not outlive the close.
        let _serial = self.inner.ddl.lock().await;
        let _ = self.inner.coordinator.sender.send(CoordinatorCommand::Stop);
        for p in &self.inner.partitions {
            let _ = p.sender.send(Command::Stop);
        }
        drop(self.inner.watch_stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        let threads = std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        blocking(move || {
            for t in threads {
                t.join().map_err(|_| Error::Internal("an executor thread panicked".to_owned()))?;
            }
            Ok(())
        })
        .await?;
        let store = self.inner.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(store) = store {
            blocking(move || {
                store.flush()?;
                drop(store);
                Ok(())
            })
            .await?;
        }
        self.inner.shared.log.close().await?;
        Ok(())
    }
}

/// How often the watch looks at the steps in progress.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Warns of every step running functions past `transaction-time-max-ms`, until `stop`
/// disconnects: once it passes the limit, then each time its running time has doubled.
/// Such a step is a function that runs no statement (a loop, or a blocking call), which the
/// limit cannot stop, or one long statement, and its partition's queue (every partition's,
/// for a multi-partition transaction, whose executors wait at its barrier) waits.
fn watch_steps(shared: &Shared, stop: &Receiver<()>) {
    // For each thread warned of: the step's start, and the running time of its next warning.
    let mut warned: BTreeMap<Option<u16>, (u64, Duration)> = BTreeMap::new();
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(WATCH_INTERVAL) {
        let limit = shared.transaction_time_max;
        let mut steps = shared.steps.in_progress(limit);
        steps.retain(|s| s.runs_functions);
        warned.retain(|partition, (started, _)| steps.iter().any(|s| s.partition == *partition && s.started_us == *started));
        for step in steps {
            let (_, next) = warned.entry(step.partition).or_insert((step.started_us, limit));
            if step.running >= *next {
                let partition = step.partition.map_or_else(|| "every partition (the coordinator)".to_owned(), |p| format!("partition {p}"));
                tracing::warn!(
                    %partition,
                    seconds = step.running.as_secs(),
                    step = %step.step,
                    "a step has run past transaction-time-max-ms and its queue waits: a function that runs no statement (a loop, or a blocking call), or one long statement, cannot be stopped"
                );
                *next = step.running * 2;
            }
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f).map_err(|err| Error::Storage { operation: "start a thread", message: err.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Barriers that keep coming must not starve a partition's queue: the coordinator's next
    /// request can be in the executor's channel each time the executor gets its state back
    /// (an open-loop flow of multi-partition transactions), and at least one invocation runs
    /// between two barriers all the same. The test plays the coordinator, queueing each next
    /// barrier before it gives the state back.
    #[test]
    fn an_invocation_runs_between_barriers_that_keep_coming() {
        const BARRIERS: usize = 20;
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let engine = Engine::open(dir.path(), EngineOptions { partitions: 1, ..EngineOptions::default() }).await.unwrap();
            engine.execute_ddl("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)").await.unwrap();
            engine
                .register(Function::new("get").statement("get", "SELECT v FROM t WHERE id = $1").partition_by("id").run(|tx, input| {
                    Ok(serde_json::json!(tx.query_opt::<i64>("get", (input["id"].as_i64().unwrap_or_default(),))?))
                }))
                .unwrap();
            let partition = &engine.inner.partitions[0];
            let lend = || {
                let ((give, given), (returned, back)) = (channel(), channel());
                partition.sender.send(Command::Lend { give, back }).unwrap();
                (given, returned)
            };
            // The first barrier: the executor lends its state and waits for it.
            let (given, mut returned) = lend();
            let mut state = given.recv().unwrap();
            // An invocation queued behind it (one poll puts it in the executor's channel).
            let mut call = Box::pin(engine.invoke(Invocation::new("get", serde_json::json!({ "id": 1 }))));
            assert!(futures::poll!(call.as_mut()).is_pending(), "queued behind the barrier");
            assert_eq!(partition.queued.load(Ordering::Acquire), 1);
            let mut ran_after = None;
            for barrier in 2..=BARRIERS {
                let (given, next) = lend();
                returned.send(state).unwrap();
                state = given.recv().unwrap();
                // The executor takes an invocation off `queued` just before it runs it.
                if ran_after.is_none() && partition.queued.load(Ordering::Acquire) == 0 {
                    ran_after = Some(barrier - 1);
                }
                returned = next;
            }
            returned.send(state).unwrap();
            assert_eq!(call.await.unwrap().value, serde_json::Value::Null);
            // Barrier 2 was taken with the invocation (both were waiting); the invocation
            // then ran before barrier 3.
            assert_eq!(ran_after, Some(2), "the invocation waited through {BARRIERS} barriers");
            engine.close().await.unwrap();
        });
    }
}
