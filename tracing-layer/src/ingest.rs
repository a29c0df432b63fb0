//! From log records to trace rows: [`Ingest`] turns a record into rows against the catalog.

use comb_backend::keycodec::decode_key_in;
use comb_backend::{CommitView, InvocationView, RecordView, ValueRef, WriteView, decode_row_ref, view_payload};
use comb_log::Record;
use comb_planner::{Catalog, Table, TableId};

use crate::images::Json;
use crate::tables::{ChangeRow, InvocationRow, ReadRow, Rows, WorkflowRow};

/// Names of the server's own tables and functions start with it; they are left out of
/// `function_invocations` and `change_data` (workflow runs show in `workflows`).
pub const SYSTEM_PREFIX: &str = "comb_";

/// The system table whose rows are the workflow runs.
const WORKFLOWS_TABLE: &str = "comb_workflows";

/// The kind of a write that is a table row (not an index entry or a recorded output).
const WRITE_ROW: u32 = 0;

/// Turns log records into trace rows against one catalog, with what the rows need of it
/// looked up once (the feed makes one for each run of records it reads). The catalog may be
/// newer than a record: a table dropped since is found among the catalog's dropped tables.
#[derive(Debug)]
pub struct Ingest<'c> {
    catalog: &'c Catalog,
    /// Where `comb_workflows`' columns are, when the catalog has that table.
    workflows: Option<WorkflowColumns>,
    /// The JSON of the read key being turned into a trace row, in one buffer kept from row to
    /// row (grown afresh for each record, it was reallocated several times per record).
    json: Json,
}

/// The table id and column places of `comb_workflows`, whose rows are the workflow runs (a
/// column the table lacks reads as NULL).
#[derive(Debug, Clone, Copy)]
struct WorkflowColumns {
    table: TableId,
    id: Option<usize>,
    name: Option<usize>,
    version: Option<usize>,
    status: Option<usize>,
    input: Option<usize>,
    output: Option<usize>,
    error: Option<usize>,
    started_us: Option<usize>,
    ended_us: Option<usize>,
}

impl WorkflowColumns {
    fn of(table: &Table) -> WorkflowColumns {
        let at = |name: &str| table.column_index(name);
        WorkflowColumns {
            table: table.id,
            id: at("id"),
            name: at("name"),
            version: at("version"),
            status: at("status"),
            input: at("input"),
            output: at("output"),
            error: at("error"),
            started_us: at("started_us"),
            ended_us: at("ended_us"),
        }
    }
}

impl<'c> Ingest<'c> {
    pub fn new(catalog: &'c Catalog) -> Self {
        Ingest { catalog, workflows: catalog.table(WORKFLOWS_TABLE).map(WorkflowColumns::of), json: Json::default() }
    }

    /// Adds the rows one log record yields. A record that is not the backend's, or that does
    /// not decode, yields nothing and is reported: the trace must never stop the feed.
    pub fn record(&mut self, record: &Record, rows: &mut Rows) {
        match view_payload(&record.payload) {
            Ok(RecordView::Commit(commit)) => self.commit(record.lsn as i64, &commit, rows),
            Ok(RecordView::Trace(trace)) => {
                for invocation in trace.invocations.iter().filter(|i| !is_system(i.function)) {
                    rows.push_invocation(invocation_row(None, invocation));
                    read_rows(None, invocation, self.catalog, &mut self.json, rows);
                }
                // Runs that ended without a row: the trace record is where they ended.
                for run in &trace.runs {
                    rows.push_workflow(WorkflowRow {
                        id: run.id,
                        name: run.name,
                        version: run.version,
                        status: "succeeded",
                        input: run.input,
                        output: Some(run.output),
                        error: None,
                        start_us: run.start_us,
                        end_us: Some(run.end_us),
                        lsn: record.lsn as i64,
                    });
                }
            }
            Ok(RecordView::Catalog) => {}
            Err(err) => tracing::warn!(lsn = record.lsn, error = %err, "a log record the tracing layer cannot read; skipped"),
        }
    }

    fn commit(&mut self, lsn: i64, commit: &CommitView<'_>, rows: &mut Rows) {
        for invocation in commit.invocations.iter().filter(|i| !is_system(i.function)) {
            rows.push_invocation(invocation_row(Some(lsn), invocation));
            read_rows(Some(lsn), invocation, self.catalog, &mut self.json, rows);
        }
        // Writes are attributed to the transaction's first application function: a
        // multi-function transaction's members commit together.
        let author = commit.invocations.iter().find(|i| !is_system(i.function)).or(commit.invocations.first());
        // Records made before they held their time: their last invocation's end.
        let commit_us = commit.commit_us.or_else(|| commit.invocations.iter().map(|i| i.end_us).max()).unwrap_or_default() as i64;
        for write in commit.writes.iter().filter(|w| w.kind == WRITE_ROW) {
            match self.workflows {
                Some(columns) if columns.table.0 == write.object => {
                    if let Err(err) = ended_run(lsn, write, &columns, rows) {
                        tracing::warn!(lsn, error = %err, "a workflow run's row the tracing layer cannot read; skipped");
                    }
                }
                _ => match self.catalog.table_by_id_or_dropped(TableId(write.object)) {
                    Some(table) if is_system(&table.name) => {}
                    Some(table) => rows.push_change(change(lsn, commit_us, write, table, author)),
                    None => tracing::warn!(lsn, table = write.object, "a write to a table the catalog does not know; skipped"),
                },
            }
        }
    }
}

fn is_system(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX)
}

fn invocation_row<'a>(lsn: Option<i64>, invocation: &InvocationView<'a>) -> InvocationRow<'a> {
    InvocationRow {
        lsn,
        workflow_id: invocation.workflow_id,
        step: invocation.step_id,
        function: invocation.function,
        partition: invocation.partition.map(i64::from),
        start_us: invocation.start_us as i64,
        end_us: invocation.end_us.max(invocation.start_us) as i64,
        error: invocation.error,
        recorded: invocation.recorded,
        replayed: invocation.replayed,
        read_only: invocation.read_only,
    }
}

/// The rows of application tables an invocation read (its keys of index entries and of
/// system tables are left out).
fn read_rows(lsn: Option<i64>, invocation: &InvocationView<'_>, catalog: &Catalog, json: &mut Json, rows: &mut Rows) {
    for key in &invocation.reads {
        let Some(object) = key.get(2..6).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { continue };
        let Some(table) = catalog.table_by_id_or_dropped(TableId(object)).filter(|t| !is_system(&t.name)) else { continue };
        let Ok(values) = decode_key_in(&key[6..], &table.key_descending) else {
            tracing::warn!(?lsn, table = %table.name, "a key read the tracing layer cannot decode; skipped");
            continue;
        };
        json.clear();
        let key = json.object(table.primary_key.iter().zip(&values).filter_map(|(&c, v)| Some((table.columns.get(c)?.name.as_str(), ValueRef::from(v)))));
        rows.push_read(ReadRow {
            lsn,
            workflow_id: invocation.workflow_id,
            step: invocation.step_id,
            function: invocation.function,
            table: &table.name,
            key: json.text(key),
        });
    }
}

/// The row of `change_data` a write to an application table yields: its images stay in the
/// row encoding, made into JSON by the queries that read them ([`crate::images`]).
fn change<'a>(lsn: i64, commit_us: i64, write: &WriteView<'a>, table: &'a Table, author: Option<&InvocationView<'a>>) -> ChangeRow<'a> {
    ChangeRow {
        lsn,
        commit_us,
        table_id: table.id.0,
        table: &table.name,
        partition: i64::from(write.partition),
        before: write.before,
        after: write.after,
        workflow_id: author.and_then(|a| a.workflow_id),
        step: author.and_then(|a| a.step_id),
        function: author.map(|a| a.function),
    }
}

/// The run a write to `comb_workflows` ended, if it ended one.
fn ended_run(lsn: i64, write: &WriteView<'_>, columns: &WorkflowColumns, rows: &mut Rows) -> comb_backend::Result<()> {
    let Some(after) = write.after else { return Ok(()) };
    let values = decode_row_ref(after)?;
    let text = |at: Option<usize>| match at.and_then(|at| values.get(at)) {
        Some(ValueRef::Text(t)) => Some(*t),
        _ => None,
    };
    let int = |at: Option<usize>| match at.and_then(|at| values.get(at)) {
        Some(ValueRef::Int(v)) => Some(*v),
        _ => None,
    };
    let Some(status) = text(columns.status).filter(|&s| s != "running") else { return Ok(()) };
    let (Some(id), Some(name), Some(version), Some(start_us)) = (text(columns.id), text(columns.name), int(columns.version), int(columns.started_us)) else {
        return Ok(());
    };
    rows.push_workflow(WorkflowRow {
        id,
        name,
        version,
        status,
        input: text(columns.input).unwrap_or_default(),
        output: text(columns.output),
        error: text(columns.error),
        start_us,
        end_us: int(columns.ended_us),
        lsn,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use comb_backend::{CommitRecord, InvocationRecord, RunRecord, TRACE_TAG, TraceRecord, Value, WriteRecord, encode_commit, encode_row, encode_trace};

    use super::*;
    use crate::TracingOptions;
    use crate::store::TableSnapshot;
    use crate::tables::TABLES;

    /// The rows of each table as a query with `catalog` reads them, each row as the values
    /// of `columns` joined by ` | ` (NULL for a null), in the order they were added.
    fn printed(rows: Rows, catalog: &Catalog, columns: [&[&str]; 4]) -> [Vec<String>; 4] {
        let snapshot = rows.into_batches().unwrap().map(|batch| TableSnapshot { files: Vec::new(), tail: batch.into_iter().collect() });
        // One thread, so that rows come back in the order they were added.
        let options = TracingOptions { query_threads: 1, ..TracingOptions::default() };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        std::array::from_fn(|t| {
            if columns[t].is_empty() {
                return Vec::new();
            }
            let sql = format!("SELECT {} FROM {}", columns[t].join(", "), TABLES[t]);
            let result = runtime.block_on(crate::query::run(snapshot.clone(), Arc::new(catalog.clone()), &sql, &options)).unwrap();
            let print = |value: &serde_json::Value| match value {
                serde_json::Value::Null => "NULL".to_owned(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            result.rows.iter().map(|row| row.iter().map(print).collect::<Vec<_>>().join(" | ")).collect()
        })
    }

    const INVOCATION: &[&str] = &["lsn", "workflow_id", "step", "function", "partition", "start_time", "duration_us", "status", "error", "recorded", "replayed", "read_only"];
    const CHANGE: &[&str] = &["lsn", "commit_time", "table_name", "operation", "partition", "key", "before", "after", "workflow_id", "step", "function"];
    const WORKFLOW: &[&str] = &["id", "name", "version", "status", "input", "output", "error", "start_time", "end_time", "duration_us", "lsn"];
    const READ: &[&str] = &["lsn", "workflow_id", "step", "function", "table_name", "key"];
    const ALL: [&[&str]; 4] = [INVOCATION, CHANGE, WORKFLOW, READ];

    fn catalog() -> Catalog {
        Catalog::new()
            .apply(
                "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT NOT NULL);
                 CREATE TABLE comb_workflows (home BIGINT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, version BIGINT NOT NULL,
                    status TEXT NOT NULL, input TEXT NOT NULL, output TEXT, error TEXT, started_us BIGINT NOT NULL, ended_us BIGINT,
                    PRIMARY KEY (home, id)) WITH (partition_by = 'home');
                 CREATE TABLE feed (user_id BIGINT, at BIGINT, PRIMARY KEY (user_id, at DESC))",
            )
            .unwrap()
    }

    fn row_write(table: &Table, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> WriteRecord {
        let image = |v: Vec<Value>| encode_row(&v).into();
        WriteRecord { partition: 1, kind: WRITE_ROW, object: table.id.0, key: Default::default(), before: before.map(image), after: after.map(image) }
    }

    fn invocation(function: &str, step: &str) -> InvocationRecord {
        InvocationRecord { function: function.into(), workflow_id: Some("w1".into()), step_id: Some(step.into()), start_us: 10, end_us: 25, partition: Some(1), ..Default::default() }
    }

    #[test]
    fn a_commit_yields_its_invocations_changes_and_ended_run() {
        let catalog = catalog();
        let accounts = catalog.table("accounts").unwrap();
        let workflows = catalog.table("comb_workflows").unwrap();
        let text = |s: &str| Value::Text(s.into());
        let commit = CommitRecord {
            invocations: vec![invocation("deposit", "pay"), invocation("comb_workflow_insert_ended", "$end")],
            writes: vec![
                row_write(accounts, Some(vec![Value::Int(7), text("ann"), Value::Int(5)]), Some(vec![Value::Int(7), text("ann"), Value::Int(9)])),
                row_write(accounts, None, Some(vec![Value::Int(8), text("bob"), Value::Int(1)])),
                row_write(accounts, Some(vec![Value::Int(9), text("cy"), Value::Int(0)]), None),
                row_write(
                    workflows,
                    None,
                    Some(vec![Value::Int(3), text("w1"), text("pay"), Value::Int(2), text("succeeded"), text("{}"), text("4"), Value::Null, Value::Int(10), Value::Int(30)]),
                ),
                WriteRecord { kind: 1, ..row_write(accounts, None, None) },
            ],
            ..Default::default()
        };
        let mut rows = Rows::default();
        Ingest::new(&catalog).record(&Record { lsn: 42, tags: vec![2], payload: encode_commit(&commit).into() }, &mut rows);
        assert_eq!(rows.counts(), [1, 3, 1, 0]);
        let [invocations, changes, workflows, reads] = printed(rows, &catalog, ALL);
        assert_eq!(invocations, ["42 | w1 | pay | deposit | 1 | 1970-01-01T00:00:00.000010Z | 15 | succeeded | NULL | false | false | false"]);
        let (at, by) = ("42 | 1970-01-01T00:00:00.000025Z | accounts", "w1 | pay | deposit");
        assert_eq!(changes, [
            format!(r#"{at} | update | 1 | {{"id":7}} | {{"id":7,"owner":"ann","balance":5}} | {{"id":7,"owner":"ann","balance":9}} | {by}"#),
            format!(r#"{at} | insert | 1 | {{"id":8}} | NULL | {{"id":8,"owner":"bob","balance":1}} | {by}"#),
            format!(r#"{at} | delete | 1 | {{"id":9}} | {{"id":9,"owner":"cy","balance":0}} | NULL | {by}"#),
        ]);
        assert_eq!(workflows, ["w1 | pay | 2 | succeeded | {} | 4 | NULL | 1970-01-01T00:00:00.000010Z | 1970-01-01T00:00:00.000030Z | 20 | 42"]);
        assert!(reads.is_empty());
    }

    #[test]
    fn a_commit_keeps_its_own_time_with_or_without_invocations() {
        let catalog = catalog();
        let accounts = catalog.table("accounts").unwrap();
        let write = || row_write(accounts, None, Some(vec![Value::Int(5), Value::Text("eve".into()), Value::Int(3)]));
        // An untraced function's commit: its writes, no invocation; and a traced one's, whose
        // record time is later than its invocation's end.
        let alone = CommitRecord { writes: vec![write()], commit_us: Some(70), ..Default::default() };
        let traced = CommitRecord { invocations: vec![invocation("open", "o")], writes: vec![write()], commit_us: Some(90), ..Default::default() };
        let mut rows = Rows::default();
        let mut ingest = Ingest::new(&catalog);
        ingest.record(&Record { lsn: 3, tags: vec![1], payload: encode_commit(&alone).into() }, &mut rows);
        ingest.record(&Record { lsn: 4, tags: vec![1], payload: encode_commit(&traced).into() }, &mut rows);
        assert_eq!(rows.counts(), [1, 2, 0, 0]);
        let [_, changes, _, _] = printed(rows, &catalog, [&[], &["lsn", "commit_time", "operation", "workflow_id", "function"], &[], &[]]);
        assert_eq!(changes, ["3 | 1970-01-01T00:00:00.000070Z | insert | NULL | NULL", "4 | 1970-01-01T00:00:00.000090Z | insert | w1 | open"]);
    }

    #[test]
    fn writes_to_a_table_dropped_since_read_as_that_table() {
        let before = catalog();
        let accounts = before.table("accounts").unwrap();
        let commit = CommitRecord {
            invocations: vec![invocation("open", "o")],
            writes: vec![row_write(accounts, None, Some(vec![Value::Int(4), Value::Text("dee".into()), Value::Int(2)]))],
            ..Default::default()
        };
        let record = Record { lsn: 8, tags: vec![1], payload: encode_commit(&commit).into() };
        // The feed reads the record after the table was dropped and one of its name made anew.
        let after = before.apply("DROP TABLE accounts; CREATE TABLE accounts (code TEXT PRIMARY KEY)").unwrap();
        let mut rows = Rows::default();
        Ingest::new(&after).record(&record, &mut rows);
        let [_, changes, _, _] = printed(rows, &after, [&[], &["lsn", "table_name", "operation", "key", "after"], &[], &[]]);
        assert_eq!(changes, [r#"8 | accounts | insert | {"id":4} | {"id":4,"owner":"dee","balance":2}"#], "named by the dropped table's columns");
    }

    #[test]
    fn images_of_every_type_are_json() {
        let catalog = Catalog::new()
            .apply("CREATE TABLE mixed (id BIGINT PRIMARY KEY, d DOUBLE, t TIMESTAMP, b BOOLEAN, x BYTEA, s TEXT, n TEXT)")
            .unwrap();
        let mixed = catalog.table("mixed").unwrap();
        let row = vec![
            Value::Int(-3),
            Value::Double(1.5),
            Value::Timestamp(86_400_000_001),
            Value::Bool(false),
            Value::Bytes(vec![0, 255]),
            Value::Text("a \"quoted\"\n\u{e9}".into()),
            Value::Null,
        ];
        let commit = CommitRecord { invocations: vec![invocation("put", "p")], writes: vec![row_write(mixed, None, Some(row))], ..Default::default() };
        let mut rows = Rows::default();
        Ingest::new(&catalog).record(&Record { lsn: 3, tags: vec![1], payload: encode_commit(&commit).into() }, &mut rows);
        let [_, changes, _, _] = printed(rows, &catalog, [&[], &["key", "after"], &[], &[]]);
        assert_eq!(changes, [r#"{"id":-3} | {"id":-3,"d":1.5,"t":"1970-01-02 00:00:00.000001","b":false,"x":[0,255],"s":"a \"quoted\"\né","n":null}"#]);
    }

    #[test]
    fn read_keys_yield_read_events_for_application_rows_only() {
        let catalog = catalog();
        let accounts = catalog.table("accounts").unwrap();
        let workflows = catalog.table("comb_workflows").unwrap();
        let feed = catalog.table("feed").unwrap();
        let key = |object: u32, values: &[Value], descending: &[bool]| [&[0u8, 1][..], &object.to_be_bytes(), &comb_backend::keycodec::encode_key_in(values, descending)].concat();
        let read = InvocationRecord {
            read_only: true,
            reads: vec![
                key(accounts.id.0, &[Value::Int(7)], &[false]),
                key(workflows.id.0, &[Value::Int(1), Value::Text("w".into())], &[false, false]),
                key(999, &[Value::Int(1)], &[false]),
                key(feed.id.0, &[Value::Int(3), Value::Int(-40)], &feed.key_descending),
            ],
            ..invocation("balance", "look")
        };
        let mut rows = Rows::default();
        Ingest::new(&catalog).record(&Record { lsn: 9, tags: vec![TRACE_TAG], payload: encode_trace(&TraceRecord { invocations: vec![read], runs: Vec::new() }).into() }, &mut rows);
        let [invocations, _, _, reads] = printed(rows, &catalog, [&["function", "read_only"], &[], &[], READ]);
        assert_eq!(invocations, ["balance | true"]);
        assert_eq!(
            reads,
            [r#"NULL | w1 | look | balance | accounts | {"id":7}"#, r#"NULL | w1 | look | balance | feed | {"user_id":3,"at":-40}"#],
            "the read of a system table's row and of an unknown table are left out; a descending key column is read in its direction"
        );
    }

    #[test]
    fn trace_records_yield_failures_and_reads_and_garbage_yields_nothing() {
        let catalog = catalog();
        let failed = InvocationRecord { error: Some("no funds".into()), ..invocation("withdraw", "take") };
        let read = InvocationRecord { read_only: true, ..invocation("balance", "look") };
        let system = InvocationRecord { read_only: true, ..invocation("comb_workflow_get", "x") };
        let trace = TraceRecord { invocations: vec![failed, read, system], runs: Vec::new() };
        let mut rows = Rows::default();
        Ingest::new(&catalog).record(&Record { lsn: 5, tags: vec![TRACE_TAG], payload: encode_trace(&trace).into() }, &mut rows);
        Ingest::new(&catalog).record(&Record { lsn: 6, tags: vec![1], payload: vec![77, 1, 2].into() }, &mut rows);
        assert_eq!(rows.counts(), [2, 0, 0, 0]);
        let [invocations, ..] = printed(rows, &catalog, [&["function", "lsn", "status", "error", "read_only"], &[], &[], &[]]);
        assert_eq!(invocations, ["withdraw | NULL | failed | no funds | false", "balance | NULL | succeeded | NULL | true"]);
    }

    #[test]
    fn runs_that_ended_without_a_row_are_workflows_at_their_trace_record() {
        let catalog = catalog();
        let run = RunRecord {
            id: "r-7".into(),
            name: "search".into(),
            version: 3,
            input: r#"{"q":1}"#.into(),
            output: "[2,3]".into(),
            start_us: 1_764_000_000_000_000,
            end_us: 1_764_000_000_000_250,
        };
        let read = InvocationRecord { read_only: true, ..invocation("balance", "look") };
        let trace = TraceRecord { invocations: vec![read], runs: vec![run] };
        let mut rows = Rows::default();
        Ingest::new(&catalog).record(&Record { lsn: 12, tags: vec![TRACE_TAG], payload: encode_trace(&trace).into() }, &mut rows);
        assert_eq!(rows.counts(), [1, 0, 1, 0]);
        let [_, _, workflows, _] = printed(rows, &catalog, [&[], &[], WORKFLOW, &[]]);
        assert_eq!(workflows, [r#"r-7 | search | 3 | succeeded | {"q":1} | [2,3] | NULL | 2025-11-24T16:00:00Z | 2025-11-24T16:00:00.000250Z | 250 | 12"#]);
    }
}
