//! The system tables and the functions that read and write them. They live in the same
//! store as the application's tables and are written through the same log, so a restart
//! rebuilds them exactly (recovery needs nothing else).
//!
//! A workflow's row is placed by `home`, an integer chosen so that it falls in a given
//! partition: a workflow that is one transaction writes its row on the partition where its
//! step runs (one commit, no barrier); a longer one whose start is a member of its first
//! unit (`Scheduler::run_steps`) where that unit runs; any other on the partition of its id.

use std::sync::Arc;

use comb_backend::{Engine, Function, Txn};
use serde::{Deserialize, Serialize};

use crate::scheduler::{RUNNING, SUCCEEDED};

/// The prefix of every system table and function; users may not create or register names
/// with it.
pub(crate) const PREFIX: &str = "comb_";

/// The system tables.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS comb_workflows (
    home BIGINT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    started_us BIGINT NOT NULL,
    ended_us BIGINT,
    PRIMARY KEY (home, id)
) WITH (partition_by = 'home');
CREATE TABLE IF NOT EXISTS comb_running (
    home BIGINT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (home, id)
) WITH (partition_by = 'home');
CREATE TABLE IF NOT EXISTS comb_ended (
    home BIGINT NOT NULL,
    ended_us BIGINT NOT NULL,
    id TEXT NOT NULL,
    recorded BOOLEAN NOT NULL,
    PRIMARY KEY (home, ended_us, id)
) WITH (partition_by = 'home');
CREATE TABLE IF NOT EXISTS comb_functions (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS comb_workflow_specs (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
";

/// The system tables' names.
pub(crate) const TABLES: [&str; 5] = ["comb_workflows", "comb_running", "comb_ended", "comb_functions", "comb_workflow_specs"];

pub(crate) const START: &str = "comb_workflow_start";
pub(crate) const FINISH: &str = "comb_workflow_finish";
pub(crate) const INSERT_ENDED: &str = "comb_workflow_insert_ended";
pub(crate) const GET: &str = "comb_workflow_get";
pub(crate) const RUNNING_IDS: &str = "comb_workflows_running";
pub(crate) const LIST: &str = "comb_workflows_list";
pub(crate) const EXPIRED: &str = "comb_workflows_expired";
pub(crate) const FORGET: &str = "comb_workflows_forget";
pub(crate) const EXPIRE: &str = "comb_workflows_expire";
pub(crate) const PUT_FUNCTION: &str = "comb_function_put";
pub(crate) const FUNCTIONS: &str = "comb_functions_all";
pub(crate) const PUT_SPEC: &str = "comb_workflow_spec_put";
pub(crate) const SPECS: &str = "comb_workflow_specs_all";

/// The step id of the system function that ends a one-transaction workflow.
pub(crate) const END_STEP: &str = "$end";

/// Most rows (of `comb_workflows`, or of `comb_running` for the running runs) one partition
/// examines in one step of a ListWorkflows: a short read on its executor, never a barrier.
pub(crate) const LIST_STEP_ROWS: usize = 1000;

/// Most started runs one read of `comb_running` returns: recovery reads them a page at a
/// time, one partition at a time, so a backlog of any size costs bounded reads and no
/// barrier across the partitions.
pub(crate) const RUNNING_PAGE_ROWS: usize = 1024;

/// Most ended runs one pass of the expiry (`run-retention`) takes from a partition at a time:
/// their recorded outputs are deleted on every partition, then their rows, each a
/// single-partition transaction of at most this many runs (a run's recorded outputs, at most
/// one per step and its end, count against `write-set-max`; a page past it is taken a run
/// at a time).
pub(crate) const EXPIRE_PAGE_ROWS: usize = 128;

/// Most definitions (SQL-only functions, or workflow versions) one read of
/// `comb_functions` or `comb_workflow_specs` returns: the server loads them at start a page
/// at a time, in key order, so that their number is not bounded by `scan-rows-max`.
pub(crate) const DEFINITIONS_PAGE_ROWS: usize = 1000;

/// A page of definitions: those after the key `after` (from the first with the empty key:
/// names are never empty), at most `rows` of them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DefinitionPage<K> {
    pub(crate) after: K,
    pub(crate) rows: usize,
}

/// A workflow run's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkflowRow {
    pub(crate) home: i64,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) status: String,
    pub(crate) input: String,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) started_us: i64,
    pub(crate) ended_us: Option<i64>,
}

type RowTuple = (i64, String, String, i64, String, String, Option<String>, Option<String>, i64, Option<i64>);

const ROW_COLUMNS: &str = "home, id, name, version, status, input, output, error, started_us, ended_us";

/// Notes a run's end in `comb_ended`, by which the expiry finds the oldest ended runs.
/// `recorded`: whether the run may have recorded outputs to forget (a run invoked without
/// an id whose one transaction wrote its end has none).
const ENDED_INSERT: &str = "INSERT INTO comb_ended (home, ended_us, id, recorded) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// A run's row by its key, `(home, id)`.
fn row_by_key() -> String {
    format!("SELECT {ROW_COLUMNS} FROM comb_workflows WHERE home = $1 AND id = $2")
}

impl WorkflowRow {
    fn from_tuple(t: RowTuple) -> WorkflowRow {
        WorkflowRow { home: t.0, id: t.1, name: t.2, version: t.3, status: t.4, input: t.5, output: t.6, error: t.7, started_us: t.8, ended_us: t.9 }
    }

    /// About the bytes of the row in an answer: its text, twice for escapes, and its numbers.
    pub(crate) fn bytes(&self) -> usize {
        let text = self.id.len() + self.name.len() + self.status.len() + self.input.len();
        2 * (text + self.output.as_ref().map_or(0, String::len) + self.error.as_ref().map_or(0, String::len)) + 96
    }
}

/// The key of a row: its home and id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RowKey {
    pub(crate) home: i64,
    pub(crate) id: String,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ending {
    pub(crate) home: i64,
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) ended_us: i64,
}

/// Where a read of the started runs goes on: at most `rows` runs of `home` with ids after
/// `after`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunningPage {
    pub(crate) home: i64,
    pub(crate) after: String,
    pub(crate) rows: usize,
}

/// Ended runs of `home` that ended from `from_us` on and before `before_us`, oldest first,
/// at most `rows` of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExpiredPage {
    pub(crate) home: i64,
    pub(crate) from_us: i64,
    pub(crate) before_us: i64,
    pub(crate) rows: usize,
}

/// Ended runs, each `(ended_us, id)`, on the partition of `home`: the recorded outputs there
/// to delete ([`FORGET`]), or the rows ([`EXPIRE`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Expiring {
    pub(crate) home: i64,
    pub(crate) runs: Vec<(i64, String)>,
}

/// One partition's step of a ListWorkflows: the runs of `home` with ids after `after` that
/// match `name` and `status` (empty: any), at most `want` of them and about `bytes` of them
/// (at least one), examining at most `examine` rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ListStep {
    pub(crate) home: i64,
    pub(crate) after: String,
    pub(crate) name: String,
    pub(crate) status: String,
    pub(crate) want: usize,
    pub(crate) bytes: usize,
    pub(crate) examine: usize,
}

/// What one partition's step of a ListWorkflows found: the matching runs in id order, and
/// the last id it examined when runs after it may be left (`None`: the partition has no
/// run after the last one examined).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ListStepFound {
    pub(crate) rows: Vec<WorkflowRow>,
    pub(crate) examined_to: Option<String>,
}

/// A SQL-only function's or a workflow specification's stored definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Definition {
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) text: String,
}

fn rows(tx: &mut Txn<'_>, statement: &str, params: impl comb_backend::Params) -> comb_backend::Result<Vec<WorkflowRow>> {
    Ok(tx.query_as::<RowTuple>(statement, params)?.into_iter().map(WorkflowRow::from_tuple).collect())
}

/// One partition's step of a ListWorkflows. The running runs are read from `comb_running`,
/// which holds no other, each row by its key; the others from `comb_workflows`, whose rows
/// of one partition are in id order.
fn list_step(tx: &mut Txn<'_>, q: &ListStep) -> comb_backend::Result<ListStepFound> {
    let examine = q.examine.clamp(1, LIST_STEP_ROWS);
    let examined = if q.status == RUNNING {
        let ids: Vec<String> = tx.query_as("running", (q.home, q.after.as_str(), examine as i64))?;
        let mut examined = Vec::with_capacity(ids.len());
        for id in ids {
            let row = rows(tx, "get", (q.home, id.as_str()))?.pop();
            // Written and deleted together with the row's status, in one transaction.
            examined.push(row.ok_or_else(|| comb_backend::Error::Internal(format!("run {id} is running but has no row")))?);
        }
        examined
    } else {
        rows(tx, "page", (q.home, q.after.as_str(), examine as i64))?
    };
    let more = examined.len() == examine;
    let (mut found, mut bytes, mut last) = (Vec::new(), 0, None);
    for row in examined {
        if (q.name.is_empty() || row.name == q.name) && (q.status.is_empty() || row.status == q.status) {
            bytes += row.bytes();
            if bytes > q.bytes && !found.is_empty() {
                // Runs from this one on are left to the next step.
                return Ok(ListStepFound { rows: found, examined_to: last });
            }
            last = Some(row.id.clone());
            found.push(row);
            if found.len() >= q.want {
                return Ok(ListStepFound { rows: found, examined_to: last });
            }
        } else {
            last = Some(row.id.clone());
        }
    }
    Ok(ListStepFound { rows: found, examined_to: last.filter(|_| more) })
}

/// `homes[p]`: a `home` value whose rows fall in partition `p` (the least one).
pub(crate) fn homes(engine: &Engine) -> Arc<[i64]> {
    let mut homes = vec![None; usize::from(engine.partitions())];
    let mut found = 0;
    let mut candidate = 0i64;
    while found < homes.len() {
        let p = usize::from(engine.partition_of(&comb_backend::Value::Int(candidate)));
        if homes[p].is_none() {
            homes[p] = Some(candidate);
            found += 1;
        }
        candidate += 1;
    }
    homes.into_iter().map(Option::unwrap_or_default).collect()
}

/// The system functions, registered before any other, untraced: their invocations are in no
/// trace and no commit record (the runs they end show as `workflows` rows). `homes` as
/// [`homes`] gives them.
pub(crate) fn functions(homes: Arc<[i64]>) -> Vec<Function> {
    [
        Function::new(START)
            .statement("row", format!("INSERT INTO comb_workflows ({ROW_COLUMNS}) VALUES ($1, $2, $3, $4, 'running', $5, NULL, NULL, $6, NULL)"))
            .statement("running", "INSERT INTO comb_running (home, id) VALUES ($1, $2)")
            .partition_by("home")
            // Answers the row's `home`: where the start went when it was a member of a
            // run's first unit (see `Scheduler::run_steps`).
            .run_typed(|tx, row: WorkflowRow| -> comb_backend::Result<i64> {
                tx.execute("row", (row.home, row.id.clone(), row.name, row.version, row.input, row.started_us))?;
                tx.execute("running", (row.home, row.id))?;
                Ok(row.home)
            }),
        Function::new(FINISH)
            .statement("row", "UPDATE comb_workflows SET status = $3, output = $4, error = $5, ended_us = $6 WHERE home = $1 AND id = $2")
            .statement("running", "DELETE FROM comb_running WHERE home = $1 AND id = $2")
            .statement("ended", ENDED_INSERT)
            .partition_by("home")
            // Answers the ending it wrote: built in the transaction when it was a member of
            // a run's last unit (see `Scheduler::run_steps`).
            .run_typed(|tx, end: Ending| -> comb_backend::Result<Ending> {
                tx.execute("row", (end.home, end.id.as_str(), end.status.as_str(), end.output.as_deref(), end.error.as_deref(), end.ended_us))?;
                tx.execute("running", (end.home, end.id.as_str()))?;
                tx.execute("ended", (end.home, end.ended_us, end.id.as_str(), true))?;
                Ok(end)
            }),
        Function::new(INSERT_ENDED)
            .statement("row", format!("INSERT INTO comb_workflows ({ROW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
            .statement("ended", ENDED_INSERT)
            .partition_by("home")
            .run_typed(|tx, row: WorkflowRow| -> comb_backend::Result<WorkflowRow> {
                let r = row.clone();
                tx.execute("row", (r.home, r.id.as_str(), r.name, r.version, r.status, r.input, r.output, r.error, r.started_us, r.ended_us))?;
                if let Some(ended_us) = r.ended_us {
                    tx.execute("ended", (r.home, ended_us, r.id, true))?;
                }
                Ok(row)
            })
            // A one-transaction run that succeeded, its row written from its record in its
            // members' commit, on their partition (see `Scheduler::run_one_transaction`).
            .writes_run_ends(move |tx, run, partition| -> Result<(), comb_backend::BoxError> {
                let home = *homes.get(usize::from(partition)).ok_or_else(|| format!("partition {partition} has no home"))?;
                let (output, error, ended_us) = (Some(run.output.as_str()), None::<&str>, Some(run.end_us));
                tx.execute("row", (home, run.id.as_str(), run.name.as_str(), run.version, SUCCEEDED, run.input.as_str(), output, error, run.start_us, ended_us))?;
                tx.execute("ended", (home, run.end_us, run.id.as_str(), false))?;
                Ok(())
            }),
        Function::new(GET)
            .statement("get", row_by_key())
            .partition_by("home")
            .run_typed(|tx, key: RowKey| -> comb_backend::Result<Option<WorkflowRow>> { Ok(rows(tx, "get", (key.home, key.id))?.pop()) }),
        Function::new(RUNNING_IDS)
            .statement("page", "SELECT id FROM comb_running WHERE home = $1 AND id > $2 ORDER BY id LIMIT $3")
            .partition_by("home")
            .run_typed(|tx, page: RunningPage| -> comb_backend::Result<Vec<String>> {
                tx.query_as("page", (page.home, page.after, page.rows.clamp(1, RUNNING_PAGE_ROWS) as i64))
            }),
        // Filtered here, not in SQL, so that the rows examined are bounded however few match.
        Function::new(LIST)
            .statement("page", format!("SELECT {ROW_COLUMNS} FROM comb_workflows WHERE home = $1 AND id > $2 ORDER BY id LIMIT $3"))
            .statement("running", "SELECT id FROM comb_running WHERE home = $1 AND id > $2 ORDER BY id LIMIT $3")
            .statement("get", row_by_key())
            .partition_by("home")
            .run_typed(|tx, q: ListStep| list_step(tx, &q)),
        // The expiry of ended runs (`run-retention`): the oldest ended runs of a partition,
        // their recorded outputs on each partition, then their rows. A row is deleted only
        // as it was read (ended then), so a pass cut short is taken up again by the next.
        Function::new(EXPIRED)
            .statement("page", "SELECT ended_us, id, recorded FROM comb_ended WHERE home = $1 AND ended_us >= $2 AND ended_us < $3 ORDER BY ended_us, id LIMIT $4")
            .partition_by("home")
            .run_typed(|tx, page: ExpiredPage| -> comb_backend::Result<Vec<(i64, String, bool)>> {
                tx.query_as("page", (page.home, page.from_us, page.before_us, page.rows.clamp(1, EXPIRE_PAGE_ROWS) as i64))
            }),
        // On the partition of `home` (no statement: the field alone routes it).
        Function::new(FORGET)
            .partition_by("home")
            .run_typed(|tx, runs: Expiring| -> comb_backend::Result<u64> {
                let mut forgotten = 0;
                for (_, id) in &runs.runs {
                    forgotten += tx.forget_recorded(id)?;
                }
                Ok(forgotten)
            }),
        Function::new(EXPIRE)
            .statement("row", "DELETE FROM comb_workflows WHERE home = $1 AND id = $2 AND ended_us = $3 AND status <> 'running'")
            .statement("ended", "DELETE FROM comb_ended WHERE home = $1 AND ended_us = $2 AND id = $3")
            .partition_by("home")
            .run_typed(|tx, runs: Expiring| -> comb_backend::Result<u64> {
                let mut expired = 0;
                for (ended_us, id) in &runs.runs {
                    expired += tx.execute("row", (runs.home, id.as_str(), *ended_us))?;
                    tx.execute("ended", (runs.home, *ended_us, id.as_str()))?;
                }
                Ok(expired)
            }),
        Function::new(PUT_FUNCTION)
            .statement("put", "INSERT INTO comb_functions (name, definition) VALUES ($1, $2)")
            .partition_by("name")
            .run_typed(|tx, d: Definition| -> comb_backend::Result<()> {
                tx.execute("put", (d.name, d.text))?;
                Ok(())
            }),
        // A key range in key order: its LIMIT reads at most a page from each partition.
        Function::new(FUNCTIONS)
            .statement("after", "SELECT name, definition FROM comb_functions WHERE name > $1 ORDER BY name LIMIT $2")
            .run_typed(|tx, page: DefinitionPage<String>| -> comb_backend::Result<Vec<(String, String)>> {
                tx.query_as("after", (page.after, page.rows.clamp(1, DEFINITIONS_PAGE_ROWS) as i64))
            }),
        Function::new(PUT_SPEC)
            .statement("put", "INSERT INTO comb_workflow_specs (name, version, spec) VALUES ($1, $2, $3)")
            .partition_by("name")
            .run_typed(|tx, d: Definition| -> comb_backend::Result<()> {
                tx.execute("put", (d.name, d.version, d.text))?;
                Ok(())
            }),
        Function::new(SPECS)
            .statement("versions", "SELECT name, version, spec FROM comb_workflow_specs WHERE name = $1 AND version > $2 ORDER BY version LIMIT $3")
            .statement("names", "SELECT name, version, spec FROM comb_workflow_specs WHERE name > $1 ORDER BY name, version LIMIT $2")
            .run_typed(|tx, page: DefinitionPage<(String, i64)>| -> comb_backend::Result<Vec<(String, i64, String)>> {
                let rows = page.rows.clamp(1, DEFINITIONS_PAGE_ROWS);
                let (name, version) = page.after;
                // The later versions of the last name, then the next names' versions.
                let mut found: Vec<(String, i64, String)> = tx.query_as("versions", (name.as_str(), version, rows as i64))?;
                if found.len() < rows {
                    let more: Vec<(String, i64, String)> = tx.query_as("names", (name.as_str(), (rows - found.len()) as i64))?;
                    found.extend(more);
                }
                Ok(found)
            }),
    ]
    .into_iter()
    .map(Function::untraced)
    .collect()
}
