//! The workflow scheduler: runs each workflow's DAG exactly once per workflow id, and
//! resumes, on start, every run that began and did not end.
//!
//! ```text
//! invoke(name, input, id?)
//!   no id, synchronous, one transaction ──> run it with its row's INSERT as ONE transaction
//!   otherwise: claim the id in memory (a second invoke joins the first run)
//!     given id? look the row up: ended -> return it; running -> resume it here
//!     one transaction, synchronous ──> as above, the row's write recorded under (id, $end)
//!     else: start (row + comb_running; answered durable when asynchronous, else once
//!           queued in the log; with no id, synchronous, and one first unit: a last
//!           member of that unit's transaction) ─> units as their inputs are ready,
//!           parallel branches concurrently, recorded steps as the planner chose
//!           ─> durable end (row updated, comb_running row deleted; a last member
//!           of the last unit's transaction when that unit runs on the row's partition
//!           or has no partition key)
//! start: for each comb_running row (read a page at a time, partition by partition), claim
//!        and resume, up to workflows-in-flight-max; the rest as runs in flight fall to
//!        half of it; recorded steps return their first output, the others run again
//! ```
//!
//! A run ends `failed` when a step's function fails (a deterministic failure of the
//! workflow, recorded like an output). A failure of the server ends nothing: the run stays
//! started (unless its start, answered once logged, was lost with the log: its callers are
//! told it may not have started). A passing one (a queue full beyond a step's retries)
//! pauses the run, which then resumes on its task; any other (a failed log, shutdown) stops
//! its task, and the run resumes when the server next resumes stranded runs (every
//! `resume-interval`), when it restarts, or when its id is invoked again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comb_backend::{Answer, Engine, Function, Invocation, NextInput, RunEnd, RunRecord, SqlFunction, Transaction, TransactionStep};
use comb_planner::{StepOutputs, WorkflowPlan, WorkflowSpec, ZippedOutputs};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use crate::error::{Error, Result, is_workflow_failure};
use crate::options::{LIST_PAGE_DEFAULT, LIST_PAGE_MAX, ServerOptions};
use crate::system::{self, DefinitionPage, Definition, EXPIRE_PAGE_ROWS, Ending, ExpiredPage, Expiring, LIST_STEP_ROWS, ListStep, ListStepFound, RUNNING_PAGE_ROWS, RowKey, RunningPage, WorkflowRow};

/// A run's status as stored.
pub(crate) const RUNNING: &str = "running";
pub(crate) const SUCCEEDED: &str = "succeeded";
pub(crate) const FAILED: &str = "failed";

/// How a run ended, as its waiters see it: the ended row, or why it was interrupted.
type Outcome = Option<std::result::Result<WorkflowRow, Stopped>>;

/// Why a run stopped before its end, as its waiters are told.
#[derive(Debug, Clone)]
enum Stopped {
    /// Its start is durable: the server resumes it by itself.
    Resumes(String),
    /// Nothing shows its start durable (a synchronous run's start, answered once logged,
    /// whose log then failed; a one-transaction run, which has no start of its own): it may
    /// never have started. If it did, the server resumes it; an invoke of its id runs it
    /// once either way.
    MaybeNotStarted(String),
    /// Refused for overload before its start was queued (a start that goes with the first
    /// unit): nothing of it ran, and the caller may retry.
    Refused(String),
}

/// Registered workflows: every version of every name.
type Workflows = BTreeMap<String, BTreeMap<i64, Arc<WorkflowPlan>>>;

/// A run that this server is executing; a second invoke with its id waits on it.
struct Claimed {
    outcome: watch::Receiver<Outcome>,
    row: Arc<WorkflowRow>,
}

/// The scheduler; one per server.
pub(crate) struct Scheduler {
    pub(crate) engine: Engine,
    pub(crate) options: ServerOptions,
    /// `homes[p]`: a `home` value whose rows fall in partition `p`.
    homes: Arc<[i64]>,
    workflows: RwLock<Arc<Workflows>>,
    /// SQL-only functions registered at run time, by name.
    sql_functions: RwLock<Arc<BTreeMap<String, SqlFunction>>>,
    /// Serializes registrations (versions are assigned one at a time).
    registering: tokio::sync::Mutex<()>,
    claims: Mutex<HashMap<String, Claimed>>,
    in_flight: AtomicUsize,
    /// Told when the runs in flight fall to half of `workflows-in-flight-max`: the runs
    /// left over at start resume then.
    half_free: tokio::sync::Notify,
    /// `expired_to[p]`: the end time of the last run the expiry forgot in partition `p`.
    /// Its next read starts there, not at the partition's first `comb_ended` key: the
    /// deletes before it are tombstones until compacted, and reading past them again on
    /// every page made a pass quadratic in the runs it forgot.
    expired_to: Mutex<Vec<i64>>,
    /// The expiry's progress, told after each pass.
    expiry: watch::Sender<ExpiryProgress>,
}

/// The expiry of ended runs (`run-retention`) since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryProgress {
    /// Passes done.
    pub passes: u64,
    /// Runs forgotten.
    pub forgotten: u64,
    /// Every run that ended before this time (microseconds since the Unix epoch) is
    /// forgotten, but those the expiry had to keep (each warned of): the cut-off of the last
    /// pass that went through every partition; 0 before the first.
    pub complete_before_us: i64,
}

/// The claim on a run's id: completing it tells every waiter; dropping it uncompleted
/// tells them the run was interrupted.
struct Claim {
    scheduler: Arc<Scheduler>,
    id: String,
    outcome: Option<watch::Sender<Outcome>>,
    /// Whether the run's start is known durable: what an interruption tells the waiters.
    start_durable: bool,
}

impl Claim {
    fn complete(mut self, outcome: std::result::Result<WorkflowRow, String>) {
        self.release(outcome);
    }

    /// Tells the waiters that the run was refused before anything of it was queued.
    fn refuse(mut self, cause: String) {
        self.settle(Err(Stopped::Refused(cause)));
    }

    fn release(&mut self, outcome: std::result::Result<WorkflowRow, String>) {
        let start_durable = self.start_durable;
        self.settle(outcome.map_err(|cause| if start_durable { Stopped::Resumes(cause) } else { Stopped::MaybeNotStarted(cause) }));
    }

    fn settle(&mut self, outcome: std::result::Result<WorkflowRow, Stopped>) {
        if let Some(sender) = self.outcome.take() {
            self.scheduler.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
            sender.send_replace(Some(outcome));
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.release(Err("its task stopped before the run ended".to_owned()));
    }
}

/// One admitted run, counted against `workflows-in-flight-max` until dropped.
struct Slot(Arc<Scheduler>);

impl Drop for Slot {
    fn drop(&mut self) {
        let left = self.0.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == self.0.options.workflows_in_flight_max / 2 {
            self.0.half_free.notify_one();
        }
    }
}

/// How far a pass over the started runs (`comb_running`) has gone: the partitions before
/// `partition` are done, and in `partition` the runs with ids up to `after`.
#[derive(Debug, Default)]
pub(crate) struct RunningCursor {
    partition: usize,
    after: String,
}

/// When a run given to [`Scheduler::spawn_run`] started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Begun {
    /// Just now: its start was queued in the log.
    Now,
    /// Not yet: a synchronous run whose id only this invocation knows. Its start commits
    /// with its first unit, when every other unit waits on that one (see
    /// [`Scheduler::run_steps`]); else on its own, before the units.
    Unstarted,
    /// Earlier: the server's recovery resumes it.
    Recovered,
    /// Earlier, by an invocation with the same id whose task was interrupted: the caller's
    /// invocation resumes it, and is answered as a duplicate.
    ByAnother,
}

/// The first pause of a run interrupted by a passing failure of the server, before it
/// resumes on its own task; each next one is twice as long, up to [`RESUME_PAUSE_MAX`].
const RESUME_PAUSE_MIN: Duration = Duration::from_millis(100);
/// The longest pause between resumptions of a run that overload keeps interrupting.
const RESUME_PAUSE_MAX: Duration = Duration::from_secs(5);
/// Most resumptions of a run that overload keeps interrupting (about 80 s of pauses): then
/// its task stops and gives its slot back, and the run waits for the server's next pass over
/// stranded runs (`resume-interval`), a restart, or a re-invoke of its id. A partition that stays full (a function that never returns)
/// would otherwise hold every run that needs it, and their slots, for good.
const OVERLOAD_RESUMES_MAX: u32 = 20;

/// Why a step did not produce an output.
enum StepError {
    /// The workflow failed (the function's failure, a reference that does not resolve).
    Failed(String),
    /// The server failed; the run must resume later.
    Interrupted(Error),
}

/// Whether the expiry's transaction failed for what it holds (too many keys, too large a
/// record), which taking less at once may mend; not for overload or a closed engine.
fn cannot_commit(err: &comb_backend::Error) -> bool {
    !err.is_retryable() && !matches!(err, comb_backend::Error::Closed)
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn parse_json(field: &'static str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|err| Error::InvalidArgument { field, message: format!("malformed JSON: {err}") })
}

fn decode<T: DeserializeOwned>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|err| Error::Internal(format!("{what} has an unexpected shape: {err}")))
}

fn encode<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Tells whether a name is free for users: not empty, not the system's.
pub(crate) fn check_user_name(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument { field, message: "it is empty".to_owned() });
    }
    if name.to_ascii_lowercase().starts_with(system::PREFIX) {
        return Err(Error::InvalidArgument { field, message: format!("{name:?} starts with {:?}, which is reserved for the system", system::PREFIX) });
    }
    Ok(())
}

impl Scheduler {
    /// Creates the scheduler over an engine whose system tables and functions exist.
    /// `homes` as [`system::homes`] gives them, the same the system functions were given.
    pub(crate) fn new(engine: Engine, options: ServerOptions, homes: Arc<[i64]>) -> Scheduler {
        let homes_len = homes.len();
        Scheduler {
            homes,
            engine,
            options,
            workflows: RwLock::new(Arc::new(BTreeMap::new())),
            sql_functions: RwLock::new(Arc::new(BTreeMap::new())),
            registering: tokio::sync::Mutex::new(()),
            claims: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            half_free: tokio::sync::Notify::new(),
            expired_to: Mutex::new(vec![i64::MIN; homes_len]),
            expiry: watch::Sender::new(ExpiryProgress::default()),
        }
    }

    /// Runs in progress on this server.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn home_of_id(&self, id: &str) -> i64 {
        self.homes[usize::from(self.engine.partition_of(&comb_planner::Value::Text(id.to_owned())))]
    }

    async fn system<T: DeserializeOwned>(&self, function: &str, input: Value) -> Result<T> {
        let output = self.engine.invoke(Invocation::new(function, input)).await?;
        decode(output.value, function)
    }

    // ---- registration ------------------------------------------------------------------

    /// Every row of a definitions table, read a page at a time (in key order) by the system
    /// function `function`, which goes on after the key `key_of` gives of the last row read.
    async fn definitions<T: DeserializeOwned, K: Serialize + Default>(&self, function: &str, key_of: impl Fn(&T) -> K) -> Result<Vec<T>> {
        let rows = self.statement_rows(system::DEFINITIONS_PAGE_ROWS);
        let mut all: Vec<T> = Vec::new();
        loop {
            let page: Vec<T> = self.system(function, encode(&DefinitionPage { after: all.last().map(&key_of).unwrap_or_default(), rows })).await?;
            let last = page.len() < rows;
            all.extend(page);
            if last {
                return Ok(all);
            }
        }
    }

    /// Loads the SQL-only functions and workflow specifications from the system tables.
    pub(crate) async fn load_definitions(&self) -> Result<()> {
        let functions: Vec<(String, String)> = self.definitions(system::FUNCTIONS, |(name, _): &(String, String)| name.clone()).await?;
        let mut sql = BTreeMap::new();
        for (name, text) in functions {
            let definition: SqlFunction = serde_json::from_str(&text).map_err(|err| Error::Internal(format!("stored function {name} is unreadable: {err}")))?;
            match self.engine.register(Function::sql(&definition)) {
                Ok(()) => {
                    sql.insert(name, definition);
                }
                Err(err) => tracing::warn!(function = %name, error = %err, "a stored SQL function no longer prepares; it is not registered"),
            }
        }
        *self.sql_functions.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(sql);
        let specs: Vec<(String, i64, String)> = self.definitions(system::SPECS, |(name, version, _): &(String, i64, String)| (name.clone(), *version)).await?;
        let mut workflows = Workflows::new();
        for (name, version, text) in specs {
            match self.plan(&text) {
                Ok(plan) => {
                    workflows.entry(name).or_default().insert(version, Arc::new(plan));
                }
                Err(err) => tracing::warn!(workflow = %name, version, error = %err, "a stored workflow no longer validates; its runs cannot resume"),
            }
        }
        *self.workflows.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(workflows);
        Ok(())
    }

    fn plan(&self, spec_json: &str) -> Result<WorkflowPlan> {
        let spec = WorkflowSpec::from_json(spec_json).map_err(|err| Error::InvalidArgument { field: "spec_json", message: format!("not a workflow specification: {err}") })?;
        check_user_name("workflow name", &spec.name)?;
        let engine = &self.engine;
        let lookup = |function: &str| if function.starts_with(system::PREFIX) { None } else { engine.is_read_only(function) };
        spec.validate(&lookup).map_err(|problems| Error::InvalidWorkflow { name: spec.name.clone(), problems: problems.iter().map(ToString::to_string).collect() })
    }

    /// Registers a workflow; a name that exists gets the next version. Past
    /// `definitions-max` versions, refused.
    pub(crate) async fn register_workflow(&self, spec_json: &str) -> Result<(i64, Arc<WorkflowPlan>)> {
        self.add_version(spec_json, true).await
    }

    /// Registers a workflow the server was built with, unless its latest version is the same
    /// specification; not bounded by `definitions-max`, so that a server at the bound still
    /// starts with a changed specification of its own.
    pub(crate) async fn register_workflow_if_changed(&self, spec_json: &str) -> Result<()> {
        let plan = self.plan(spec_json)?;
        if let Ok((_, latest)) = self.latest(&plan.spec.name)
            && latest.spec == plan.spec
        {
            return Ok(());
        }
        self.add_version(spec_json, false).await.map(|_| ())
    }

    async fn add_version(&self, spec_json: &str, bounded: bool) -> Result<(i64, Arc<WorkflowPlan>)> {
        let plan = Arc::new(self.plan(spec_json)?);
        let name = plan.spec.name.clone();
        let _serial = self.registering.lock().await;
        let current = Arc::clone(&self.workflows.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        if bounded && current.values().map(BTreeMap::len).sum::<usize>() >= self.options.definitions_max {
            return Err(Error::TooManyDefinitions { what: "workflow versions", limit: self.options.definitions_max });
        }
        let version = current.get(&name).and_then(|v| v.keys().next_back()).map_or(1, |v| v + 1);
        let text = serde_json::to_string(&plan.spec).map_err(|err| Error::Internal(err.to_string()))?;
        let () = self.system(system::PUT_SPEC, encode(&Definition { name: name.clone(), version, text })).await?;
        let mut next = (*current).clone();
        next.entry(name).or_default().insert(version, Arc::clone(&plan));
        *self.workflows.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        Ok((version, plan))
    }

    /// Registers a SQL-only function; registering the same definition again is a no-op.
    pub(crate) async fn register_function(&self, definition: SqlFunction) -> Result<bool> {
        check_user_name("name", &definition.name)?;
        let _serial = self.registering.lock().await;
        let current = Arc::clone(&self.sql_functions.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        if let Some(existing) = current.get(&definition.name) {
            if *existing == definition {
                return Ok(self.engine.is_read_only(&definition.name).unwrap_or(false));
            }
            return Err(Error::AlreadyExists { what: "function", name: definition.name });
        }
        if current.len() >= self.options.definitions_max {
            return Err(Error::TooManyDefinitions { what: "SQL-only functions", limit: self.options.definitions_max });
        }
        self.engine.register(Function::sql(&definition))?;
        let text = serde_json::to_string(&definition).map_err(|err| Error::Internal(err.to_string()))?;
        let () = self.system(system::PUT_FUNCTION, encode(&Definition { name: definition.name.clone(), version: 1, text })).await?;
        let read_only = self.engine.is_read_only(&definition.name).unwrap_or(false);
        let mut next = (*current).clone();
        next.insert(definition.name.clone(), definition);
        *self.sql_functions.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        Ok(read_only)
    }

    fn latest(&self, name: &str) -> Result<(i64, Arc<WorkflowPlan>)> {
        let workflows = Arc::clone(&self.workflows.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        workflows
            .get(name)
            .and_then(|v| v.iter().next_back())
            .map(|(v, p)| (*v, Arc::clone(p)))
            .ok_or_else(|| Error::UnknownWorkflow { name: name.to_owned() })
    }

    fn version(&self, name: &str, version: i64) -> Result<Arc<WorkflowPlan>> {
        let workflows = Arc::clone(&self.workflows.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        workflows
            .get(name)
            .and_then(|v| v.get(&version))
            .map(Arc::clone)
            .ok_or_else(|| Error::Internal(format!("workflow {name} version {version} has runs but is not registered")))
    }

    // ---- invocation --------------------------------------------------------------------

    fn admit(self: &Arc<Self>) -> Result<Slot> {
        let limit = self.options.workflows_in_flight_max;
        // A refused call takes no slot, not even for a moment: the count (which Health
        // reports) never passes the limit on account of calls refused.
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .map_err(|in_flight| Error::Overloaded { in_flight, limit })?;
        Ok(Slot(Arc::clone(self)))
    }

    fn check_id(&self, id: &str) -> Result<()> {
        let limit = self.options.workflow_id_bytes_max;
        if id.len() > limit {
            return Err(Error::InvalidArgument { field: "workflow_id", message: format!("{} bytes, more than the limit of {limit} (workflow-id-bytes-max)", id.len()) });
        }
        if id.chars().any(char::is_control) {
            return Err(Error::InvalidArgument { field: "workflow_id", message: "it contains control characters".to_owned() });
        }
        Ok(())
    }

    /// Claims a run's id, or returns the run that holds it.
    fn claim(self: &Arc<Self>, row: &WorkflowRow) -> std::result::Result<Claim, (watch::Receiver<Outcome>, Arc<WorkflowRow>)> {
        let mut claims = self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(claimed) = claims.get(&row.id) {
            return Err((claimed.outcome.clone(), Arc::clone(&claimed.row)));
        }
        let (sender, outcome) = watch::channel(None);
        claims.insert(row.id.clone(), Claimed { outcome, row: Arc::new(row.clone()) });
        // The callers that find the run started durably say so.
        Ok(Claim { scheduler: Arc::clone(self), id: row.id.clone(), outcome: Some(sender), start_durable: false })
    }

    async fn wait(&self, id: &str, mut outcome: watch::Receiver<Outcome>) -> Result<WorkflowRow> {
        // Its callers are bounded by wait-max already; this bound ends the claim's task too,
        // whose caller's time-out left it waiting.
        let wait_max = self.options.wait_max;
        match tokio::time::timeout(wait_max, outcome.wait_for(Option::is_some)).await {
            Err(_) => Err(Error::Timeout { id: id.to_owned(), after: wait_max }),
            Ok(Err(_)) => Err(Error::Interrupted { id: id.to_owned(), cause: "the server is stopping".to_owned() }),
            Ok(Ok(outcome)) => match outcome.as_ref() {
                Some(Ok(row)) => Ok(row.clone()),
                Some(Err(Stopped::Resumes(cause))) => Err(Error::Interrupted { id: id.to_owned(), cause: cause.clone() }),
                Some(Err(Stopped::MaybeNotStarted(cause))) => Err(Error::MaybeNotStarted { id: id.to_owned(), cause: cause.clone() }),
                Some(Err(Stopped::Refused(cause))) => Err(Error::Refused { id: id.to_owned(), cause: cause.clone() }),
                None => Err(Error::Internal("a run's outcome vanished".to_owned())),
            },
        }
    }

    /// Runs (or finds) a workflow run. Returns the run as it stands (ended, unless
    /// `asynchronous`) and whether an earlier invocation with the same id did the work.
    ///
    /// Waits at most `wait-max` for the answer (a synchronous run's end, an asynchronous
    /// one's durable start), however the run goes (one transaction or several, a
    /// duplicate's wait); past it the run goes on, and the error names its id.
    pub(crate) async fn invoke(self: &Arc<Self>, name: &str, input_json: &str, id: Option<String>, asynchronous: bool) -> Result<(WorkflowRow, bool)> {
        let given = id.is_some();
        let id = match id {
            Some(id) => {
                self.check_id(&id)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let after = self.options.wait_max;
        match tokio::time::timeout(after, self.run_or_find(name, input_json, id.clone(), given, asynchronous)).await {
            Ok(answer) => answer,
            Err(_) if asynchronous => Err(Error::StartNotDurable { id, after }),
            Err(_) => Err(Error::Timeout { id, after }),
        }
    }

    /// [`invoke`](Self::invoke) with its id chosen (`given` by the caller or not), unbounded
    /// in time. Dropped at any await (past `wait-max`, or its caller gone), it leaves the run
    /// to go on: a claimed run on the claim's task, a transaction in the engine's queue. Only
    /// the failure of a one-transaction run whose id nobody else knew goes unrecorded then:
    /// nothing of it committed, and an invoke of its id runs it anew.
    async fn run_or_find(self: &Arc<Self>, name: &str, input_json: &str, id: String, given: bool, asynchronous: bool) -> Result<(WorkflowRow, bool)> {
        let input = parse_json("input_json", input_json)?;
        let (version, plan) = self.latest(name)?;
        let slot = self.admit()?;
        let one_transaction = plan.units.len() == 1 && !asynchronous;
        let row = WorkflowRow {
            home: self.home_of_id(&id),
            id,
            name: name.to_owned(),
            version,
            status: RUNNING.to_owned(),
            input: input.to_string(),
            output: None,
            error: None,
            started_us: now_us(),
            ended_us: None,
        };
        if one_transaction && !given {
            // A new id nobody else knows: nothing to deduplicate, nothing to claim.
            return Ok((self.run_one_transaction(&plan, row, input, false).await?, false));
        }
        let claim = match self.claim(&row) {
            Ok(claim) => claim,
            Err((outcome, running)) => {
                drop(slot);
                if asynchronous {
                    // A run that is one transaction ends in its one commit, and run
                    // synchronously it writes no start (its row is its end, on its members'
                    // partition): its end is the answer.
                    if self.version(&running.name, running.version).is_ok_and(|plan| plan.units.len() == 1) {
                        return Ok((self.wait(&row.id, outcome).await?, true));
                    }
                    // Acknowledged on the run's start, which a synchronous run queued
                    // without waiting for it: a durable read of its row first.
                    if !self.is_started(&running).await {
                        return Err(Error::MaybeNotStarted { id: row.id, cause: "another invocation of its id is starting it, and its start is not durable yet".to_owned() });
                    }
                    return Ok(((*running).clone(), true));
                }
                return Ok((self.wait(&row.id, outcome).await?, true));
            }
        };
        // The claim must outlive the work it guards. A caller that goes away (its deadline,
        // its connection) leaves its transaction or start queued in the engine, where it still
        // commits; released with the caller, the claim would let a second invocation of the
        // id take that run for an interrupted one, or run the workflow beside it. So the rest
        // runs on a task that owns the claim, and the caller only awaits its answer.
        let (scheduler, run) = (Arc::clone(self), row.id.clone());
        let claimed = tokio::spawn(async move {
            if given && let Some(found) = scheduler.lookup(&row.id).await? {
                if found.status != RUNNING {
                    claim.complete(Ok(found.clone()));
                    return Ok((found, true));
                }
                // Started, not ended, and no task here runs it (its task was interrupted):
                // resume it here.
                let plan = scheduler.version(&found.name, found.version)?;
                return scheduler.spawn_run(plan, found, claim, slot, asynchronous, Begun::ByAnother).await;
            }
            if one_transaction {
                let result = scheduler.run_one_transaction(&plan, row, input, true).await;
                match &result {
                    Ok(ended) => claim.complete(Ok(ended.clone())),
                    Err(err) => claim.complete(Err(err.to_string())),
                }
                return Ok((result?, false));
            }
            if !asynchronous && !given {
                // Nobody else knows the id: the start may wait for the first unit's commit.
                return scheduler.spawn_run(plan, row, claim, slot, false, Begun::Unstarted).await;
            }
            // An asynchronous invoke is acknowledged on the start: answered durable. A
            // synchronous one is answered on the run's end, a later commit answered durable
            // that carries the start with it (the log is durable in order): the start is
            // answered once queued in the log, and its sync is not waited for. Until the end,
            // the start is not known durable, and an interruption says so.
            let start = Invocation::new(system::START, encode(&row));
            scheduler.engine.invoke(if asynchronous { start } else { start.answer_logged() }).await?;
            scheduler.spawn_run(plan, row, claim, slot, asynchronous, Begun::Now).await
        });
        claimed.await.map_err(|err| {
            if err.is_cancelled() {
                // Cancelled anywhere, before its start perhaps.
                Error::MaybeNotStarted { id: run, cause: "the server is stopping".to_owned() }
            } else {
                Error::Internal(format!("the task of run {run} panicked (a bug): {err}"))
            }
        })?
    }

    /// Runs a run's steps on a task of its own (its start already queued, or going with its
    /// first unit: `Begun::Unstarted`); waits for its end unless asked not to.
    async fn spawn_run(self: &Arc<Self>, plan: Arc<WorkflowPlan>, mut row: WorkflowRow, mut claim: Claim, slot: Slot, asynchronous: bool, begun: Begun) -> Result<(WorkflowRow, bool)> {
        let deduplicated = begun == Begun::ByAnother;
        let resumed = matches!(begun, Begun::Recovered | Begun::ByAnother);
        let outcome = claim.outcome.as_ref().map(watch::Sender::subscribe);
        let scheduler = Arc::clone(self);
        let started = row.clone();
        // Found started (by recovery's read of `comb_running`, or an invoke's lookup), or
        // started just now and answered durable (asynchronous); a synchronous start was only
        // queued in the log, or is still to come.
        claim.start_durable = resumed || asynchronous;
        tokio::spawn(async move {
            let _slot = slot;
            let (mut resumed, mut pause, mut resumes) = (resumed, RESUME_PAUSE_MIN, 0);
            let mut unstarted = begun == Begun::Unstarted;
            loop {
                match scheduler.run_steps(&plan, &mut row, resumed, &mut unstarted).await {
                    Ok(ended) => return claim.complete(Ok(ended)),
                    // Refused before its start was queued: nothing of the run exists, and the
                    // caller is told to retry, as when a start of its own is refused.
                    Err(Error::Backend(err)) if err.is_retryable() && unstarted => return claim.refuse(err.to_string()),
                    // A queue was full beyond the step's retries: the run pauses and resumes
                    // here, keeping its claim and its slot. Its waiters get its end, and
                    // nothing is left started with no task to finish it.
                    Err(Error::Backend(err)) if err.is_retryable() && resumes < OVERLOAD_RESUMES_MAX => {
                        resumes += 1;
                        tracing::warn!(workflow_id = %claim.id, error = %err, pause_ms = pause.as_millis() as u64, "a workflow run was interrupted by overload; it resumes after a pause");
                        tokio::time::sleep(pause).await;
                        (resumed, pause) = (true, (pause * 2).min(RESUME_PAUSE_MAX));
                    }
                    Err(err) => {
                        if !claim.start_durable {
                            // A start that went with the first unit, whose answer was lost,
                            // may be on any partition.
                            claim.start_durable = if unstarted { matches!(scheduler.lookup(&row.id).await, Ok(Some(_))) } else { scheduler.is_started(&row).await };
                        }
                        if claim.start_durable {
                            tracing::warn!(workflow_id = %claim.id, error = %err, "a workflow run was interrupted; the server resumes it later (resume-interval), or when its id is invoked again");
                        } else {
                            tracing::warn!(workflow_id = %claim.id, error = %err, "a workflow run was interrupted, and its start is not known durable; if it started, the server resumes it, and an invoke of its id runs it once either way");
                        }
                        return claim.complete(Err(err.to_string()));
                    }
                }
            }
        });
        if asynchronous {
            return Ok((started, deduplicated));
        }
        let outcome = outcome.ok_or_else(|| Error::Internal("a fresh claim has no outcome".to_owned()))?;
        Ok((self.wait(&started.id, outcome).await?, deduplicated))
    }

    /// Whether a run's start is known durable: a durable read of its row, which waits for
    /// the commit that wrote the row (the start's, if still in the log's queue) to be
    /// durable. False when that read fails (the log failed under the start or under a later
    /// commit there, the partition refuses work, overload) or finds no row: then the start
    /// may or may not be durable, and only an invoke of the id can tell.
    async fn is_started(&self, row: &WorkflowRow) -> bool {
        matches!(self.row_at(row.home, &row.id).await, Ok(Some(_)))
    }

    /// `most`, or fewer: the rows one statement may read and return (`scan-rows-max`,
    /// `result-rows-max`), for reads of system tables a page at a time.
    fn statement_rows(&self, most: usize) -> usize {
        most.min(self.options.engine.scan_rows_max).min(self.options.engine.result_rows_max)
    }

    /// A run's row in the partition of `home`, read durably.
    async fn row_at(&self, home: i64, id: &str) -> Result<Option<WorkflowRow>> {
        self.system(system::GET, encode(&RowKey { home, id: id.to_owned() })).await
    }

    /// Runs a workflow that is one transaction, together with the write of its ended row:
    /// one commit.
    ///
    /// - With `record` (its id was given), the row is written by a last member, step `$end`
    ///   (the system function `comb_workflow_insert_ended`), whose output is recorded: a
    ///   second run of the same id finds it wherever the transaction ran.
    /// - Without (`!record`: no one else knows the id), the run's end builds its record
    ///   after the members, on their thread, and the system function's run-end body writes
    ///   the row from it: no JSON between them, nothing recorded.
    /// - A run that writes nothing (no step of it writes) and whose id nobody else knows
    ///   leaves no row: as selective recording records no read-only step, for a second run
    ///   could only read again, and no invoke can name the id to deduplicate. Its record is
    ///   traced (the `workflows` trace table) and answered.
    ///
    /// A run of it that fails is recorded as any failed run is.
    async fn run_one_transaction(&self, plan: &Arc<WorkflowPlan>, row: WorkflowRow, input: Value, record: bool) -> Result<WorkflowRow> {
        let unit = &plan.units[0];
        let first = match plan.step_input(&unit[0], &input, &HashMap::new()) {
            Some(Ok(first)) => first,
            Some(Err(err)) => return self.record_failure(row, format!("step {}: {err}", unit[0])).await,
            None => return Err(Error::Internal(format!("step {} is not in its plan", unit[0]))),
        };
        let mut steps: Vec<TransactionStep> = unit
            .iter()
            .map(|step| TransactionStep { function: function_of(plan, step), id: Some(invocation_id(&row.id, step)), record: false })
            .collect();
        if record {
            steps.push(TransactionStep { function: system::INSERT_ENDED.to_owned(), id: Some(invocation_id(&row.id, system::END_STEP)), record });
        }
        // What both closures read, shared.
        let run = Arc::new(OneRun { plan: Arc::clone(plan), row: row.clone(), input });
        let next_input = {
            let (run, homes) = (Arc::clone(&run), Arc::clone(&self.homes));
            move |next: &NextInput<'_>| -> std::result::Result<Value, comb_backend::BoxError> {
                let unit = &run.plan.units[0];
                if let Some(step) = unit.get(next.index) {
                    let outputs = ZippedOutputs { steps: unit, outputs: next.outputs };
                    let resolved = run.plan.step_input(step, &run.input, &outputs).ok_or("a step is not in its plan")?;
                    return resolved.map_err(|err| format!("step {step}: {err}").into());
                }
                let output = transaction_output(&run.plan, unit, &run.input, next.outputs)?;
                let ended = succeeded(run.row.clone(), homes[usize::from(next.partition)], output.to_string(), now_us());
                Ok(serde_json::to_value(ended)?)
            }
        };
        let end = (!record).then(|| {
            let writer = (!plan.recorded.is_empty()).then(|| system::INSERT_ENDED.to_owned());
            let build = move |outputs: &[Value]| -> std::result::Result<RunRecord, comb_backend::BoxError> {
                let (row, output) = (&run.row, transaction_output(&run.plan, &run.plan.units[0], &run.input, outputs)?);
                let (id, name, input) = (row.id.clone(), row.name.clone(), row.input.clone());
                Ok(RunRecord { id, name, version: row.version, input, output: output.to_string(), start_us: row.started_us, end_us: now_us() })
            };
            RunEnd { build: Arc::new(build), writer }
        });
        // Answered once durable: the caller's answer is the run's end (for a run that writes
        // nothing, once every write it read is durable).
        let transaction = Transaction { steps, input: first, next_input: Arc::new(next_input), answer: Answer::Durable, end };
        match self.engine.invoke_transaction(transaction).await {
            // The answer's `home` is the id's; the row, if written, is on the members' partition.
            Ok(output) if !record => match output.ended {
                Some(run) => {
                    let home = row.home;
                    Ok(succeeded(row, home, run.output, run.end_us))
                }
                None => Err(Error::Internal(format!("run {} ended with no record", row.id))),
            },
            Ok(output) => match output.value {
                Value::Array(mut values) => decode(values.pop().unwrap_or_default(), "an ended workflow row"),
                other => decode(other, "an ended workflow row"),
            },
            Err(err) if is_workflow_failure(&err) => self.record_failure(row, err.to_string()).await,
            Err(err) => Err(err.into()),
        }
    }

    /// Records that a run which never started durably failed.
    async fn record_failure(&self, row: WorkflowRow, error: String) -> Result<WorkflowRow> {
        let ended = WorkflowRow { status: FAILED.to_owned(), error: Some(error), ended_us: Some(now_us()), ..row };
        let id = ended.id.clone();
        match self.system::<WorkflowRow>(system::INSERT_ENDED, encode(&ended)).await {
            Ok(row) => Ok(row),
            // An earlier run of this id ended first (its row exists): that is the outcome.
            // A running row instead would be a run this task's claim should have kept out.
            Err(Error::Backend(comb_backend::Error::UniqueViolation { .. })) => match self.lookup(&id).await? {
                Some(row) if row.status != RUNNING => Ok(row),
                Some(_) => Err(Error::Internal(format!("run {id} failed before its start was durable, but a running row of its id exists"))),
                None => Err(Error::UnknownRun { id }),
            },
            Err(err) => Err(err),
        }
    }

    /// Runs a run's units, each once its inputs are ready, then records its end.
    ///
    /// With `unstarted`, the run's start is not written yet. When one unit comes before
    /// all the others (each of them waits on it, directly or not), the start is a last member
    /// of that unit's transaction, on its partition: one commit fewer, and nothing of the run
    /// can be durable without its start, since the other units are queued in the log after
    /// it. `row.home` becomes that partition's. If that unit fails, nothing of the run
    /// committed, and its failure is recorded as a one-transaction run's is. With several
    /// first units, the start is queued on its own first, as for an id a client gave.
    /// `unstarted` is cleared once the start is queued in the log.
    async fn run_steps(self: &Arc<Self>, plan: &Arc<WorkflowPlan>, row: &mut WorkflowRow, resumed: bool, unstarted: &mut bool) -> Result<WorkflowRow> {
        let input: Arc<Value> = Arc::new(serde_json::from_str(&row.input).map_err(|err| Error::Internal(format!("run {} has unreadable input: {err}", row.id)))?);
        let unit_of: HashMap<&str, usize> = plan.units.iter().enumerate().flat_map(|(u, steps)| steps.iter().map(move |s| (s.as_str(), u))).collect();
        let mut waiting = vec![0usize; plan.units.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); plan.units.len()];
        for (u, steps) in plan.units.iter().enumerate() {
            let mut before: Vec<usize> = steps
                .iter()
                .flat_map(|s| plan.dependencies.get(s).into_iter().flatten())
                .filter_map(|d| unit_of.get(d.as_str()).copied())
                .filter(|d| *d != u)
                .collect();
            before.sort_unstable();
            before.dedup();
            waiting[u] = before.len();
            for d in before {
                dependents[d].push(u);
            }
        }
        let fused = *unstarted && waiting.iter().filter(|w| **w == 0).count() == 1;
        if *unstarted && !fused {
            let start = Invocation::new(system::START, encode(&*row)).answer_logged();
            self.engine.invoke(start).await?;
            *unstarted = false;
        }
        let mut outputs: HashMap<String, Value> = HashMap::new();
        // Units done before: none, or for a resumed run those whose outputs are recorded,
        // and the units they alone needed.
        let mut committed = 0;
        if resumed {
            for u in self.done_before(plan, &row.id, &dependents, &mut outputs).await? {
                committed += 1;
                for &d in &dependents[u] {
                    waiting[d] -= 1;
                }
                waiting[u] = usize::MAX;
            }
        }
        // The run's end goes with the unit that runs last: the one started once every other
        // has committed.
        let end_with = |committed: usize, row: &WorkflowRow, outputs: &HashMap<String, Value>| {
            if committed + 1 < plan.units.len() {
                return RunWrite::None;
            }
            RunWrite::End(Box::new(RunEnding { home: row.home, id: row.id.clone(), input: Arc::clone(&input), outputs: Arc::new(outputs.clone()) }))
        };
        let mut running = FuturesUnordered::new();
        for u in (0..plan.units.len()).filter(|u| waiting[*u] == 0) {
            let with = if fused { RunWrite::Start(Arc::new(row.clone())) } else { end_with(committed, row, &outputs) };
            running.push(self.run_unit(plan, &row.id, u, &input, &outputs, with));
        }
        // The first unit that fails or is interrupted stops the run, once every unit already
        // under way has answered: a unit's work queued in the engine commits even if its
        // future is dropped, and the run's end, or its resumption, must come after it.
        let (mut stopped, mut ended) = (None, None);
        while let Some((u, result)) = running.next().await {
            if let Ok(UnitDone { started_in: Some(home), .. }) = &result {
                row.home = *home;
                *unstarted = false;
            }
            match result {
                Ok(done) if stopped.is_none() => {
                    committed += 1;
                    outputs.extend(done.outputs);
                    ended = ended.or(done.ended);
                    for &d in &dependents[u] {
                        waiting[d] -= 1;
                        if waiting[d] == 0 {
                            running.push(self.run_unit(plan, &row.id, d, &input, &outputs, end_with(committed, row, &outputs)));
                        }
                    }
                }
                Ok(_) => {}
                Err(err) => _ = stopped.get_or_insert(err),
            }
        }
        let failure = match stopped {
            None => None,
            // The first unit failed, its start with it: the run never started.
            Some(StepError::Failed(message)) if *unstarted => return self.record_failure(row.clone(), message).await,
            Some(StepError::Failed(message)) => Some(message),
            Some(StepError::Interrupted(err)) => return Err(err),
        };
        if let Some(ending) = ended {
            return Ok(ended_row(row, ending));
        }
        let (ending, value) = run_ending(plan, &input, &outputs, row.home, &row.id, failure, self.options.engine.json_bytes_max);
        // The answer repeats the ending, which is already here.
        let _: serde::de::IgnoredAny = self.system(system::FINISH, value).await?;
        Ok(ended_row(row, ending))
    }

    /// The units of a resumed run that must not run again: those whose outputs are recorded
    /// (the outputs go into `outputs`), and the unrecorded ones whose every dependent is such
    /// a unit, or one of them. Selective recording leaves a read-only unit unrecorded when
    /// its output goes to one recorded unit only: once that unit has committed, the read
    /// run again could see its writes, and fail or read otherwise, though its first run led
    /// to them. A unit no other waits on (its output is the run's) always runs.
    async fn done_before(&self, plan: &WorkflowPlan, id: &str, dependents: &[Vec<usize>], outputs: &mut HashMap<String, Value>) -> Result<Vec<usize>> {
        let units = plan.units.len();
        let recorded: Vec<usize> = (0..units).filter(|u| plan.is_recorded(&plan.units[*u][0])).collect();
        let lookups = recorded.iter().map(|&u| async move { (u, self.recorded(plan, id, &plan.units[u]).await) });
        let mut done = vec![false; units];
        for (u, found) in futures::future::join_all(lookups).await {
            if let Some(found) = found? {
                outputs.extend(found);
                done[u] = true;
            }
        }
        // Dependents come after: a unit is skipped once all of its dependents are done or
        // skipped, which a pass from the last unit back settles for each in a DAG's order.
        let mut skipped = vec![false; units];
        for u in topological_order(dependents).into_iter().rev() {
            skipped[u] = !done[u] && !plan.is_recorded(&plan.units[u][0]) && !dependents[u].is_empty() && dependents[u].iter().all(|d| done[*d] || skipped[*d]);
        }
        Ok((0..units).filter(|u| done[*u] || skipped[*u]).collect())
    }

    /// One unit: a step alone, or a multi-function transaction; retried while the backend
    /// refuses it for overload. With a [`RunWrite`], the run's start or end is a last member
    /// of the unit's transaction: the start's row in the partition the unit runs on; the end
    /// only when the unit runs where the run's row is (or may touch every partition), else
    /// the run ends in a commit of its own. A unit of a resumed run whose output is recorded
    /// does not come here (see [`Scheduler::done_before`]).
    fn run_unit(
        self: &Arc<Self>,
        plan: &Arc<WorkflowPlan>,
        id: &str,
        unit: usize,
        input: &Arc<Value>,
        outputs: &HashMap<String, Value>,
        with: RunWrite,
    ) -> impl Future<Output = (usize, std::result::Result<UnitDone, StepError>)> + use<> {
        let scheduler = Arc::clone(self);
        let plan = Arc::clone(plan);
        let input = Arc::clone(input);
        let id = id.to_owned();
        let steps = plan.units[unit].clone();
        let outputs: Arc<HashMap<String, Value>> = Arc::new(
            steps
                .iter()
                .flat_map(|s| plan.dependencies.get(s).into_iter().flatten())
                .filter_map(|d| outputs.get(d).map(|v| (d.clone(), v.clone())))
                .collect(),
        );
        async move {
            let first = match plan.step_input(&steps[0], &input, outputs.as_ref()) {
                Some(Ok(first)) => first,
                Some(Err(err)) => return (unit, Err(StepError::Failed(format!("step {}: {err}", steps[0])))),
                None => return (unit, Err(StepError::Interrupted(Error::Internal(format!("step {} is not in its plan", steps[0]))))),
            };
            let with = match with {
                RunWrite::End(end) => match scheduler.engine.partition_of_call(&function_of(&plan, &steps[0]), &first) {
                    Ok(None) => RunWrite::End(end),
                    Ok(Some(partition)) if scheduler.homes.get(usize::from(partition)) == Some(&end.home) => RunWrite::End(end),
                    // Elsewhere: the end goes on its own (a key the call lacks fails the call).
                    _ => RunWrite::None,
                },
                other => other,
            };
            // Each unit is answered once its commit is queued in the log, not durable
            // (`Answer::Logged`): its output goes only to the units after it and to the
            // run's end, a later commit answered durable, which carries this one with it.
            // A unit that carries the end is that commit.
            let answer = if matches!(with, RunWrite::End(_)) { Answer::Durable } else { Answer::Logged };
            let mut attempt = 0;
            loop {
                let result = if steps.len() == 1 && matches!(with, RunWrite::None) {
                    let step = &steps[0];
                    let mut invocation = Invocation::new(function_of(&plan, step), first.clone()).id(id.clone(), step.clone()).answer_logged();
                    if plan.is_recorded(step) {
                        invocation = invocation.record();
                    }
                    scheduler.engine.invoke(invocation).await
                } else {
                    let mut members: Vec<TransactionStep> = steps
                        .iter()
                        .map(|s| TransactionStep { function: function_of(&plan, s), id: Some(invocation_id(&id, s)), record: plan.is_recorded(s) })
                        .collect();
                    let mut next_input = unit_inputs(&plan, &steps, &input, &outputs);
                    match &with {
                        RunWrite::None => {}
                        RunWrite::Start(row) => {
                            members.push(TransactionStep { function: system::START.to_owned(), id: None, record: false });
                            next_input = with_start(next_input, steps.len(), Arc::clone(row), Arc::clone(&scheduler.homes));
                        }
                        RunWrite::End(end) => {
                            members.push(TransactionStep { function: system::FINISH.to_owned(), id: None, record: false });
                            next_input = with_end(next_input, &plan, &steps, end, scheduler.options.engine.json_bytes_max);
                        }
                    }
                    let transaction = Transaction { steps: members, input: first.clone(), next_input, answer, end: None };
                    scheduler.engine.invoke_transaction(transaction).await
                };
                match result {
                    Ok(output) => {
                        let value = output.value;
                        let done = match &with {
                            RunWrite::None => Some(UnitDone { outputs: unit_outputs(&steps, value), started_in: None, ended: None }),
                            RunWrite::Start(_) => without_last(&steps, value)
                                .and_then(|(value, home)| Some(UnitDone { outputs: unit_outputs(&steps, value), started_in: Some(home.as_i64()?), ended: None })),
                            RunWrite::End(_) => without_last(&steps, value)
                                .and_then(|(value, ending)| Some(UnitDone { outputs: unit_outputs(&steps, value), started_in: None, ended: Some(serde_json::from_value(ending).ok()?) })),
                        };
                        return match done {
                            Some(done) => (unit, Ok(done)),
                            None => {
                                let member = if matches!(with, RunWrite::Start(_)) { "start (the row's home)" } else { "end (an Ending)" };
                                (unit, Err(StepError::Interrupted(Error::Internal(format!("the unit of step {} answered without its run's {member} as its last member (a bug)", steps[0])))))
                            }
                        };
                    }
                    Err(err) if err.is_retryable() && attempt < scheduler.options.step_retries_max => {
                        attempt += 1;
                        back_off(attempt).await;
                    }
                    Err(err) if is_workflow_failure(&err) => {
                        return (unit, Err(StepError::Failed(format!("step {} ({}): {err}", steps.join("+"), steps.iter().map(|s| function_of(&plan, s)).collect::<Vec<_>>().join("+")))));
                    }
                    Err(err) => return (unit, Err(StepError::Interrupted(err.into()))),
                }
            }
        }
    }

    /// The recorded outputs of a unit's steps, when the unit committed in an earlier
    /// attempt of the run, wherever that was ([`Engine::find_recorded`]).
    ///
    /// A unit's recorded outputs live in one partition, which its input chose (the one it
    /// ran in, or its first step's; see `docs/workflows.md`). On resumption the input may
    /// differ: a read-only step before it is not recorded when the unit is its only consumer
    /// (selective recording), and runs again, seeing the unit's own writes among others.
    /// Looked up only where the new input leads, the outputs would be missed and the unit
    /// would run twice.
    async fn recorded(&self, plan: &WorkflowPlan, id: &str, steps: &[String]) -> Result<Option<Vec<(String, Value)>>> {
        let recorded: Vec<TransactionStep> = steps.iter().map(|s| TransactionStep { function: function_of(plan, s), id: Some(invocation_id(id, s)), record: true }).collect();
        // Retried while the engine refuses it for overload, as a step is: recovery resumes
        // as many runs as the limit admits at once.
        let mut attempt = 0;
        loop {
            match self.engine.find_recorded(&recorded).await {
                Ok(found) => return Ok(found.map(|output| unit_outputs(steps, output.value))),
                Err(err) if err.is_retryable() && attempt < self.options.step_retries_max => {
                    attempt += 1;
                    back_off(attempt).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Resumes every run that started and did not end: the server's own recovery, at start.
    /// At most `workflows-in-flight-max` of them now. Returns how many resumed, and where
    /// the runs left over begin, if some are (see [`Scheduler::resume_left_over`]).
    pub(crate) async fn resume_all(self: &Arc<Self>) -> Result<(usize, Option<RunningCursor>)> {
        let (mut cursor, mut resumed) = (RunningCursor::default(), 0);
        match self.resume_unclaimed(self.options.workflows_in_flight_max, &mut cursor, &mut resumed).await {
            Ok(left_over) => Ok((resumed, left_over.then_some(cursor))),
            // The partitions' queues are full (of the runs just resumed, say): the rest is
            // resumed from where this stopped, in the background, as the runs past the limit
            // are. The server starts.
            Err(Error::Backend(err)) if err.is_retryable() => {
                tracing::info!(resumed, error = %err, "resuming the started runs met overload; the rest resume in the background");
                Ok((resumed, Some(cursor)))
            }
            Err(err) => Err(err),
        }
    }

    /// Resumes the runs left over at start, from `cursor` on: a pass whenever the runs in
    /// flight are at half the limit or fewer (at once, then each time they fall to half),
    /// each pass going on where the last one stopped, until one reaches the end. So a run
    /// is taken up once (again only after a pass failed on it for overload); one whose task
    /// fails again, or that a task here held when its turn came, is left to the periodic
    /// pass (`resume-interval`), as is the rest if a pass fails for good. A pass refused for
    /// overload is tried again after a pause. Ends when `stop` turns true (the server
    /// closes), after the pass under way.
    pub(crate) async fn resume_left_over(self: Arc<Self>, mut cursor: RunningCursor, mut stop: watch::Receiver<bool>) {
        let half = self.options.workflows_in_flight_max / 2;
        let mut pause = RESUME_PAUSE_MIN;
        while !*stop.borrow() {
            if self.in_flight() > half {
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    () = self.half_free.notified() => continue,
                }
            }
            let mut resumed = 0;
            let outcome = self.resume_unclaimed(usize::MAX, &mut cursor, &mut resumed).await;
            if resumed > 0 {
                tracing::info!(resumed, "resumed workflow runs left over at start");
            }
            match outcome {
                Ok(left_over) => {
                    pause = RESUME_PAUSE_MIN;
                    if !left_over {
                        return;
                    }
                }
                Err(Error::Backend(comb_backend::Error::Closed)) => return,
                Err(Error::Backend(err)) if err.is_retryable() => {
                    tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RESUME_PAUSE_MAX);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "resuming the runs left over at start failed; the periodic pass (resume-interval) resumes them");
                    return;
                }
            }
        }
    }

    /// Forgets the runs that ended more than `run-retention` ago: their recorded outputs on
    /// every partition, then their rows, a page of each partition's oldest at a time. An
    /// invoke of such a run's id then runs it anew. Returns how many runs it forgot. Stops
    /// between pages once `stop` turns true. A partition whose pass fails (overload, a failed
    /// log) is warned of and left to the next pass; the others go on. Fails only when the
    /// engine has closed.
    pub(crate) async fn expire_ended(&self, stop: &watch::Receiver<bool>) -> Result<usize> {
        let retention = i64::try_from(self.options.run_retention.as_micros()).unwrap_or(i64::MAX);
        let before_us = now_us().saturating_sub(retention);
        // A run's end time is taken before its commit, which may come later than a pass that
        // read past that time: each pass starts a margin before where the last one ended.
        let margin = self.options.expiry_interval() + Duration::from_millis(self.options.engine.transaction_time_max_ms);
        let margin_us = i64::try_from(margin.as_micros()).unwrap_or(i64::MAX);
        let (mut expired, mut complete) = (0, true);
        for (partition, &home) in self.homes.iter().enumerate() {
            let cursor = |to: Option<i64>| {
                let mut expired_to = self.expired_to.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(to) = to {
                    expired_to[partition] = to;
                }
                expired_to[partition]
            };
            let mut from_us = cursor(None).saturating_sub(margin_us);
            let outcome = self.expire_partition(home, &mut from_us, before_us, &mut expired, stop).await;
            cursor(Some(from_us));
            match outcome {
                Ok(()) => {}
                Err(Error::Backend(comb_backend::Error::Closed)) => return Err(Error::Backend(comb_backend::Error::Closed)),
                Err(err) => {
                    complete = false;
                    tracing::warn!(partition, error = %err, "forgetting a partition's ended runs failed; the next pass goes on from there");
                }
            }
        }
        // A pass the server's stop cut short went through no partition whole.
        complete &= !*stop.borrow();
        tracing::debug!(forgotten = expired, before_us, complete, "expiry pass");
        self.expiry.send_modify(|progress| {
            progress.passes += 1;
            progress.forgotten += expired as u64;
            if complete {
                progress.complete_before_us = before_us;
            }
        });
        Ok(expired)
    }

    /// The expiry's progress, as it changes.
    pub(crate) fn expiry_progress(&self) -> watch::Receiver<ExpiryProgress> {
        self.expiry.subscribe()
    }

    /// One partition's part of [`Scheduler::expire_ended`], from `from_us` on, which it
    /// moves past each page forgotten; counts the runs forgotten in `expired`.
    async fn expire_partition(&self, home: i64, from_us: &mut i64, before_us: i64, expired: &mut usize, stop: &watch::Receiver<bool>) -> Result<()> {
        let rows = self.statement_rows(EXPIRE_PAGE_ROWS);
        while !*stop.borrow() {
            let page: Vec<(i64, String, bool)> = self.system(system::EXPIRED, encode(&ExpiredPage { home, from_us: *from_us, before_us, rows })).await?;
            let Some((last_us, _, _)) = page.last() else { return Ok(()) };
            let (last_us, last_page) = (*last_us, page.len() < rows);
            // The recorded outputs first: a pass cut between the two leaves rows whose
            // outputs are gone, which the next pass expires; never outputs without a row. A
            // run whose outputs cannot be deleted keeps its row too.
            let mut runs: Vec<(i64, String)> = page.iter().map(|(ended_us, id, _)| (*ended_us, id.clone())).collect();
            let recorded: Vec<(i64, String)> = page.into_iter().filter(|(_, _, recorded)| *recorded).map(|(ended_us, id, _)| (ended_us, id)).collect();
            if !recorded.is_empty() {
                for &at in self.homes.iter() {
                    let kept = self.whole_or_each(system::FORGET, at, &recorded).await?;
                    runs.retain(|run| !kept.contains(run));
                }
            }
            let kept = self.whole_or_each(system::EXPIRE, home, &runs).await?;
            *expired += runs.len() - kept.len();
            *from_us = last_us;
            if last_page {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Calls the expiry's system function `function` (FORGET or EXPIRE) for `runs` on the
    /// partition of `home`: all in one transaction or, when that one cannot commit (more
    /// keys than `write-set-max`, a record past `record-bytes-max`), one run at a time.
    /// Returns the runs it could do nothing for (warned of, and kept: their row stays until
    /// a later pass, or a restart, takes them again); fails on an error a retry may mend.
    async fn whole_or_each(&self, function: &str, home: i64, runs: &[(i64, String)]) -> Result<Vec<(i64, String)>> {
        let call = |runs: Vec<(i64, String)>| self.system::<u64>(function, encode(&Expiring { home, runs }));
        let err = match call(runs.to_vec()).await {
            Ok(_) => return Ok(Vec::new()),
            Err(Error::Backend(err)) if cannot_commit(&err) => err,
            Err(err) => return Err(err),
        };
        if runs.len() == 1 {
            tracing::warn!(run = %runs[0].1, function, error = %err, "an ended run could not be forgotten; it is kept");
            return Ok(runs.to_vec());
        }
        let mut kept = Vec::new();
        for run in runs {
            match call(vec![run.clone()]).await {
                Ok(_) => {}
                Err(Error::Backend(err)) if cannot_commit(&err) => {
                    tracing::warn!(run = %run.1, function, error = %err, "an ended run could not be forgotten; it is kept");
                    kept.push(run.clone());
                }
                Err(err) => return Err(err),
            }
        }
        Ok(kept)
    }

    /// Resumes the runs that started, did not end, and that no task here runs (a failure of
    /// the server stopped theirs): recovery's work, while serving. Returns how many it
    /// resumed.
    pub(crate) async fn resume_stranded(self: &Arc<Self>) -> Result<usize> {
        let mut resumed = 0;
        self.resume_unclaimed(usize::MAX, &mut RunningCursor::default(), &mut resumed).await?;
        Ok(resumed)
    }

    /// Resumes up to `most` of the started runs that no task here holds, from `cursor` on,
    /// each with a slot as an invoke takes: at `workflows-in-flight-max` the pass stops.
    /// Reads `comb_running` a page at a time, one partition after the other, and moves
    /// `cursor` past each run it has dealt with, and counts each run it resumes in `resumed`
    /// (also those before an error). Returns whether it stopped early (runs may be left
    /// over, from `cursor` on).
    async fn resume_unclaimed(self: &Arc<Self>, most: usize, cursor: &mut RunningCursor, resumed: &mut usize) -> Result<bool> {
        let rows = self.statement_rows(RUNNING_PAGE_ROWS);
        while let Some(&home) = self.homes.get(cursor.partition) {
            let page: Vec<String> = self.system(system::RUNNING_IDS, encode(&RunningPage { home, after: cursor.after.clone(), rows })).await?;
            let last_page = page.len() < rows;
            for id in page {
                if self.claimed(&id).is_none() {
                    if *resumed == most {
                        return Ok(true);
                    }
                    let Ok(slot) = self.admit() else { return Ok(true) };
                    if self.resume_one(home, &id, slot).await? {
                        *resumed += 1;
                    }
                }
                cursor.after = id;
            }
            if last_page {
                cursor.partition += 1;
                cursor.after.clear();
            }
        }
        Ok(false)
    }

    /// Resumes one started run in `slot`, unless it has ended or a task here holds it.
    /// Returns whether it resumed.
    async fn resume_one(self: &Arc<Self>, home: i64, id: &str, slot: Slot) -> Result<bool> {
        let get = || async {
            self.row_at(home, id).await?.ok_or_else(|| Error::Internal(format!("run {id} is running but has no row")))
        };
        let row = get().await?;
        if row.status != RUNNING {
            return Ok(false);
        }
        let Ok(claim) = self.claim(&row) else { return Ok(false) };
        // Once more under the claim: its task may have ended it, and let its claim go,
        // since the row was read.
        let row = get().await?;
        if row.status != RUNNING {
            claim.complete(Ok(row));
            return Ok(false);
        }
        let plan = match self.version(&row.name, row.version) {
            Ok(plan) => plan,
            Err(err) => {
                tracing::error!(workflow_id = %id, error = %err, "a started run cannot resume");
                return Ok(false);
            }
        };
        self.spawn_run(plan, row, claim, slot, true, Begun::Recovered).await?;
        Ok(true)
    }

    // ---- reading runs ------------------------------------------------------------------

    /// Finds a run's row on whichever partition holds it.
    pub(crate) async fn lookup(&self, id: &str) -> Result<Option<WorkflowRow>> {
        // An id has one row: the first partition that finds it answers, without waiting for
        // the others (one may be busy with a long function).
        let mut gets: FuturesUnordered<_> = self.homes.iter().map(|home| self.row_at(*home, id)).collect();
        let mut failed = None;
        while let Some(found) = gets.next().await {
            match found {
                Ok(Some(row)) => return Ok(Some(row)),
                Ok(None) => {}
                Err(err) => failed = Some(err),
            }
        }
        failed.map_or(Ok(None), Err)
    }

    /// A run's row; with `wait`, once it has ended (bounded by `wait-max`, its reads with it).
    pub(crate) async fn get(&self, id: &str, wait: bool) -> Result<WorkflowRow> {
        self.check_id(id)?;
        if !wait {
            // Read durably, even while a task here holds the run: its claim is taken before
            // its start is durable, and a run shown from it could vanish in a failure.
            return self.lookup(id).await?.ok_or_else(|| Error::UnknownRun { id: id.to_owned() });
        }
        let after = self.options.wait_max;
        tokio::time::timeout(after, self.ended(id)).await.unwrap_or_else(|_| Err(Error::Timeout { id: id.to_owned(), after }))
    }

    /// The row of run `id` once it has ended, unbounded in time.
    async fn ended(&self, id: &str) -> Result<WorkflowRow> {
        if let Some(outcome) = self.claimed(id) {
            return self.wait(id, outcome).await;
        }
        // Ended: its row. Started and held by no task: a failure of the server stopped its
        // task, unless an invoke of its id takes it (and perhaps ends it) while this looks,
        // so it is looked for twice before it is called stranded.
        for _ in 0..2 {
            let row = self.lookup(id).await?.ok_or_else(|| Error::UnknownRun { id: id.to_owned() })?;
            if row.status != RUNNING {
                return Ok(row);
            }
            if let Some(outcome) = self.claimed(id) {
                return self.wait(id, outcome).await;
            }
        }
        Err(Error::Interrupted {
            id: id.to_owned(),
            cause: "a failure of the server stopped its task, or the server has not resumed it yet, and nothing runs it now (invoking it again with its id resumes it at once)".to_owned(),
        })
    }

    /// The run holding a claim on `id`, if one does.
    fn claimed(&self, id: &str) -> Option<watch::Receiver<Outcome>> {
        let claims = self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        claims.get(id).map(|c| c.outcome.clone())
    }

    /// A page of runs, in id order (for generated ids: start order), and the id to list on
    /// from when more may follow.
    ///
    /// Each partition reads its runs in id order a step at a time (single-partition reads:
    /// no barrier), and the steps are merged up to the least id every partition has
    /// examined. A call examines at most `list-examine-max` runs (at least one a partition):
    /// past it the page is returned as it stands, shorter than asked or empty, with the id to
    /// go on from. A page also ends at about `json-bytes-max` of runs.
    pub(crate) async fn list(&self, name: &str, status: &str, page_size: usize, after: &str) -> Result<(Vec<WorkflowRow>, Option<String>)> {
        let page_size = if page_size == 0 { LIST_PAGE_DEFAULT } else { page_size.min(LIST_PAGE_MAX) };
        let engine = &self.options.engine;
        let step_max = self.statement_rows(LIST_STEP_ROWS);
        let partitions = self.homes.len();
        let (mut page, mut after, mut left) = (Vec::new(), after.to_owned(), self.options.list_examine_max);
        loop {
            let (want, examine) = (page_size + 1 - page.len(), (left / partitions).clamp(1, step_max));
            let steps = self.homes.iter().map(|&home| {
                let bytes = engine.json_bytes_max;
                let step = ListStep { home, after: after.clone(), name: name.to_owned(), status: status.to_owned(), want, bytes, examine };
                self.system::<ListStepFound>(system::LIST, encode(&step))
            });
            // Every partition has examined its runs up to `upto` (`None`: all of them).
            let (mut found, mut upto): (Vec<WorkflowRow>, Option<String>) = (Vec::new(), None);
            for step in futures::future::join_all(steps).await {
                let step = step?;
                found.extend(step.rows);
                if let Some(to) = step.examined_to {
                    upto = Some(upto.map_or(to.clone(), |least| least.min(to)));
                }
            }
            // A partition may have found runs past `upto`; the next step finds them again.
            found.retain(|row| upto.as_ref().is_none_or(|upto| row.id <= *upto));
            found.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            page.extend(found);
            if let Some(full) = page_end(&page, page_size, engine.json_bytes_max) {
                page.truncate(full);
                let next = page.last().map(|row| row.id.clone());
                return Ok((page, next));
            }
            let Some(upto) = upto else { return Ok((page, None)) };
            left = left.saturating_sub(examine * partitions);
            if left < partitions {
                return Ok((page, Some(upto)));
            }
            after = upto;
        }
    }
}

/// A one-transaction run as its closures see it: its plan, its row as started, its input.
struct OneRun {
    plan: Arc<WorkflowPlan>,
    row: WorkflowRow,
    input: Value,
}

/// Where a page of runs must end, if before its last run: after `page_size` runs, or before
/// the run that takes it past `bytes_max` (a page holds at least one run).
fn page_end(page: &[WorkflowRow], page_size: usize, bytes_max: usize) -> Option<usize> {
    let mut bytes = 0;
    for (i, row) in page.iter().enumerate() {
        bytes += row.bytes();
        if i == page_size || (bytes > bytes_max && i > 0) {
            return Some(i);
        }
    }
    None
}

/// The units in an order where each comes before its dependents (Kahn's algorithm).
fn topological_order(dependents: &[Vec<usize>]) -> Vec<usize> {
    let mut before = vec![0usize; dependents.len()];
    for d in dependents.iter().flatten() {
        before[*d] += 1;
    }
    let mut order: Vec<usize> = (0..dependents.len()).filter(|u| before[*u] == 0).collect();
    let mut next = 0;
    while let Some(&u) = order.get(next) {
        next += 1;
        for &d in &dependents[u] {
            before[d] -= 1;
            if before[d] == 0 {
                order.push(d);
            }
        }
    }
    order
}

/// A started run's row as it succeeded: with `output`, ended at `ended_us`, in `home`.
fn succeeded(row: WorkflowRow, home: i64, output: String, ended_us: i64) -> WorkflowRow {
    WorkflowRow { home, status: SUCCEEDED.to_owned(), output: Some(output), ended_us: Some(ended_us), ..row }
}

/// The output of a run that is one transaction, from its steps' outputs in order.
fn transaction_output(plan: &WorkflowPlan, steps: &[String], input: &Value, outputs: &[Value]) -> std::result::Result<Value, String> {
    plan.output(input, &ZippedOutputs { steps, outputs }).map_err(|err| format!("the workflow's output: {err}"))
}

/// A unit's output as its steps' outputs: one step's own, or each step's, from the array of a
/// multi-function transaction.
fn unit_outputs(steps: &[String], value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Array(values) if steps.len() > 1 => steps.iter().cloned().zip(values).collect(),
        other => vec![(steps[0].clone(), other)],
    }
}

/// The pause before retry number `attempt` (from 1) of a call the engine refused for
/// overload: a millisecond more each time, at most 100.
async fn back_off(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(100)))).await;
}

fn invocation_id(workflow: &str, step: &str) -> comb_backend::InvocationId {
    comb_backend::InvocationId { workflow: workflow.to_owned(), step: step.to_owned() }
}

fn function_of(plan: &WorkflowPlan, step: &str) -> String {
    plan.spec.steps.iter().find(|s| s.id == step).map(|s| s.function.clone()).unwrap_or_default()
}

/// What a unit answered: its steps' outputs, and the run's start or end that went with it.
struct UnitDone {
    outputs: Vec<(String, Value)>,
    /// The `home` of the run's row, when the run's start was a member of the unit.
    started_in: Option<i64>,
    /// How the run ended, when its end was a member of the unit.
    ended: Option<Ending>,
}

/// A write of the run's own that goes with a unit, as the last member of its transaction:
/// one commit fewer per run.
enum RunWrite {
    None,
    /// The run's start: its row, whose `home` becomes the unit's partition's.
    Start(Arc<WorkflowRow>),
    /// The run's end, for the unit that runs last.
    End(Box<RunEnding>),
}

/// What the unit that runs last needs to end the run in its own commit: where the run's
/// row is, and what the run's output is built from besides the unit's own outputs.
struct RunEnding {
    home: i64,
    id: String,
    input: Arc<Value>,
    /// The outputs of every unit before it.
    outputs: Arc<HashMap<String, Value>>,
}

/// How a run whose units all ran ends (`failure`: the step that failed), and the input of
/// the end's system function: with its output, or failed when a step failed, or the output
/// cannot be built from the steps' outputs, or with it the end would pass `json-bytes-max`
/// (`limit`; each step's output is bounded, their sum is not).
fn run_ending(plan: &WorkflowPlan, input: &Value, outputs: &impl StepOutputs, home: i64, id: &str, failure: Option<String>, limit: usize) -> (Ending, Value) {
    let (status, output, error) = match failure {
        Some(message) => (FAILED, None, Some(message)),
        None => match plan.output(input, outputs) {
            Ok(output) => (SUCCEEDED, Some(output.to_string()), None),
            Err(err) => (FAILED, None, Some(format!("the workflow's output: {err}"))),
        },
    };
    let ending = Ending { home, id: id.to_owned(), status: status.to_owned(), output, error, ended_us: now_us() };
    let value = encode(&ending);
    match comb_backend::check_json_bytes(&value, "the workflow's output, with the run's end, in bytes", limit) {
        Ok(()) => (ending, value),
        Err(err) => {
            let ending = Ending { status: FAILED.to_owned(), output: None, error: Some(format!("the workflow's output: {err}")), ..ending };
            let value = encode(&ending);
            (ending, value)
        }
    }
}

/// A started run's row as it ended.
fn ended_row(row: &WorkflowRow, ending: Ending) -> WorkflowRow {
    WorkflowRow { status: ending.status, output: ending.output, error: ending.error, ended_us: Some(ending.ended_us), ..row.clone() }
}

/// A unit's input function with the run's start as its member after the unit's `steps`:
/// the started row, its `home` that of the partition that holds the transaction's recorded
/// outputs (the one it runs on, or on the multi-partition path its first step's).
fn with_start(inner: Arc<comb_backend::NextInputFn>, steps: usize, row: Arc<WorkflowRow>, homes: Arc<[i64]>) -> Arc<comb_backend::NextInputFn> {
    Arc::new(move |next: &NextInput<'_>| -> std::result::Result<Value, comb_backend::BoxError> {
        if next.index < steps {
            return inner(next);
        }
        let home = *homes.get(usize::from(next.partition)).ok_or_else(|| format!("partition {} has no home", next.partition))?;
        Ok(encode(&WorkflowRow { home, ..(*row).clone() }))
    })
}

/// A unit's input function with the run's end as its member after the unit's `steps`: the
/// run's output built from the steps' outputs, those of the units before, and its input.
fn with_end(inner: Arc<comb_backend::NextInputFn>, plan: &Arc<WorkflowPlan>, steps: &[String], end: &RunEnding, limit: usize) -> Arc<comb_backend::NextInputFn> {
    let (plan, steps) = (Arc::clone(plan), steps.to_vec());
    let (home, id, input, outputs) = (end.home, end.id.clone(), Arc::clone(&end.input), Arc::clone(&end.outputs));
    Arc::new(move |next: &NextInput<'_>| -> std::result::Result<Value, comb_backend::BoxError> {
        if next.index < steps.len() {
            return inner(next);
        }
        let all = (ZippedOutputs { steps: &steps, outputs: next.outputs }, outputs.as_ref());
        Ok(run_ending(&plan, &input, &all, home, &id, None, limit).1)
    })
}

/// A unit's answer split from the output of its last member, the run's start (the row's
/// `home`) or end (the `Ending`): the steps' outputs as a unit of `steps` answers them.
/// `None` if it is not there.
fn without_last(steps: &[String], value: Value) -> Option<(Value, Value)> {
    let Value::Array(mut values) = value else { return None };
    let last = values.pop()?;
    if values.len() != steps.len() {
        return None;
    }
    let value = if steps.len() == 1 { values.pop()? } else { Value::Array(values) };
    Some((value, last))
}

/// The input function of a multi-function unit: each later step's input from the outputs
/// of the steps before it in the unit and of the units before it.
fn unit_inputs(plan: &Arc<WorkflowPlan>, steps: &[String], input: &Arc<Value>, outputs: &Arc<HashMap<String, Value>>) -> Arc<comb_backend::NextInputFn> {
    let plan = Arc::clone(plan);
    let steps = steps.to_vec();
    let input = Arc::clone(input);
    let outputs = Arc::clone(outputs);
    Arc::new(move |next: &NextInput<'_>| -> std::result::Result<Value, comb_backend::BoxError> {
        let all = (ZippedOutputs { steps: &steps, outputs: next.outputs }, outputs.as_ref());
        let step = steps.get(next.index).ok_or("a unit has fewer steps than its transaction")?;
        let resolved = plan.step_input(step, &input, &all).ok_or("a step is not in its plan")?;
        resolved.map_err(|err| format!("step {step}: {err}").into())
    })
}
