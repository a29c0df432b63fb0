//! From log records to trace rows: pure functions over a record and the catalog.

use comb_backend::keycodec::decode_key;
use comb_backend::{CommitRecord, InvocationRecord, LogRecord, Value, WriteRecord, decode_payload, decode_row, value_to_json};
use comb_log::Record;
use comb_planner::{Catalog, Table, TableId};

use crate::tables::{ChangeRow, InvocationRow, ReadRow, Rows, WorkflowRow};

/// Names of the server's own tables and functions start with it; they are left out of
/// `function_invocations` and `change_data` (workflow runs show in `workflows`).
pub const SYSTEM_PREFIX: &str = "comb_";

/// The system table whose rows are the workflow runs.
const WORKFLOWS_TABLE: &str = "comb_workflows";

/// The kind of a write that is a table row (not an index entry or a recorded output).
const WRITE_ROW: u32 = 0;

/// Adds the rows one log record yields. A record that is not the backend's, or that does
/// not decode, yields nothing and is reported: the trace must never stop the feed.
pub fn ingest(record: &Record, catalog: &Catalog, rows: &mut Rows) {
    match decode_payload(&record.payload) {
        Ok(LogRecord::Commit(commit)) => ingest_commit(record.lsn as i64, &commit, catalog, rows),
        Ok(LogRecord::Trace(trace)) => {
            for invocation in trace.invocations.iter().filter(|i| !is_system(&i.function)) {
                rows.invocations.push(invocation_row(None, invocation));
                read_rows(None, invocation, catalog, rows);
            }
        }
        Ok(LogRecord::Catalog(_)) => {}
        Err(err) => tracing::warn!(lsn = record.lsn, error = %err, "a log record the tracing layer cannot read; skipped"),
    }
}

fn is_system(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX)
}

fn invocation_row(lsn: Option<i64>, invocation: &InvocationRecord) -> InvocationRow {
    InvocationRow {
        lsn,
        workflow_id: invocation.workflow_id.clone(),
        step: invocation.step_id.clone(),
        function: invocation.function.clone(),
        partition: invocation.partition.map(i64::from),
        start_us: invocation.start_us as i64,
        end_us: invocation.end_us.max(invocation.start_us) as i64,
        error: invocation.error.clone(),
        recorded: invocation.recorded,
        replayed: invocation.replayed,
        read_only: invocation.read_only,
    }
}

fn ingest_commit(lsn: i64, commit: &CommitRecord, catalog: &Catalog, rows: &mut Rows) {
    for invocation in commit.invocations.iter().filter(|i| !is_system(&i.function)) {
        rows.invocations.push(invocation_row(Some(lsn), invocation));
        read_rows(Some(lsn), invocation, catalog, rows);
    }
    // Writes are attributed to the transaction's first application function: a
    // multi-function transaction's members commit together.
    let author = commit.invocations.iter().find(|i| !is_system(&i.function)).or(commit.invocations.first());
    let commit_us = commit.invocations.iter().map(|i| i.end_us).max().unwrap_or_default() as i64;
    for write in commit.writes.iter().filter(|w| w.kind == WRITE_ROW) {
        let Some(table) = catalog.table_by_id(TableId(write.object)) else {
            tracing::warn!(lsn, table = write.object, "a write to a table the catalog does not know; skipped");
            continue;
        };
        if table.name == WORKFLOWS_TABLE {
            rows.workflows.extend(ended_run(lsn, write, table));
        } else if !is_system(&table.name) {
            match change(lsn, commit_us, write, table, author) {
                Ok(change) => rows.changes.push(change),
                Err(err) => tracing::warn!(lsn, table = %table.name, error = %err, "a row image the tracing layer cannot read; skipped"),
            }
        }
    }
}

/// The rows of application tables an invocation read (its keys of index entries and of
/// system tables are left out).
fn read_rows(lsn: Option<i64>, invocation: &InvocationRecord, catalog: &Catalog, rows: &mut Rows) {
    for key in &invocation.reads {
        let Some(object) = key.get(2..6).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { continue };
        let Some(table) = catalog.table_by_id(TableId(object)).filter(|t| !is_system(&t.name)) else { continue };
        let Ok(values) = decode_key(&key[6..]) else {
            tracing::warn!(?lsn, table = %table.name, "a key read the tracing layer cannot decode; skipped");
            continue;
        };
        let key = json_object(table.primary_key.iter().zip(&values).filter_map(|(&c, v)| Some((table.columns.get(c)?.name.as_str(), v))));
        rows.reads.push(ReadRow {
            lsn,
            workflow_id: invocation.workflow_id.clone(),
            step: invocation.step_id.clone(),
            function: invocation.function.clone(),
            table: table.name.clone(),
            key,
        });
    }
}

/// Columns and their values as a JSON object, in the table's column order, written straight
/// into one buffer (the feed writes one or two of these for every row changed).
fn json_object<'a>(pairs: impl Iterator<Item = (&'a str, &'a Value)>) -> String {
    let mut out = Vec::with_capacity(96);
    out.push(b'{');
    for (i, (name, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(&mut out, name);
        out.push(b':');
        match value {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Int(v) => out.extend_from_slice(v.to_string().as_bytes()),
            Value::Bool(v) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
            Value::Text(v) => write_json(&mut out, v.as_str()),
            other => write_json(&mut out, &value_to_json(other)),
        }
    }
    out.push(b'}');
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

fn write_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("a string or a JSON value always serializes");
}

fn change(lsn: i64, commit_us: i64, write: &WriteRecord, table: &Table, author: Option<&InvocationRecord>) -> comb_backend::Result<ChangeRow> {
    let before = write.before.as_deref().map(decode_row).transpose()?;
    let after = write.after.as_deref().map(decode_row).transpose()?;
    let operation = match (&before, &after) {
        (None, _) => "insert",
        (Some(_), Some(_)) => "update",
        (Some(_), None) => "delete",
    };
    let image = after.as_ref().or(before.as_ref()).map(Vec::as_slice).unwrap_or_default();
    let key = json_object(table.primary_key.iter().filter_map(|&c| Some((table.columns.get(c)?.name.as_str(), image.get(c)?))));
    let json = |values: &Vec<Value>| json_object(table.columns.iter().map(|c| c.name.as_str()).zip(values));
    Ok(ChangeRow {
        lsn,
        commit_us,
        table: table.name.clone(),
        operation,
        partition: i64::from(write.partition),
        key,
        before: before.as_ref().map(json),
        after: after.as_ref().map(json),
        workflow_id: author.and_then(|a| a.workflow_id.clone()),
        step: author.and_then(|a| a.step_id.clone()),
        function: author.map(|a| a.function.clone()),
    })
}

/// The run a write to `comb_workflows` ended, if it ended one.
fn ended_run(lsn: i64, write: &WriteRecord, table: &Table) -> Option<WorkflowRow> {
    let values = decode_row(write.after.as_deref()?).ok()?;
    let column = |name: &str| table.column_index(name).and_then(|i| values.get(i));
    let text = |name: &str| match column(name) {
        Some(Value::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let int = |name: &str| match column(name) {
        Some(Value::Int(v)) => Some(*v),
        _ => None,
    };
    let status = text("status")?;
    if status == "running" {
        return None;
    }
    Some(WorkflowRow {
        id: text("id")?,
        name: text("name")?,
        version: int("version")?,
        status,
        input: text("input").unwrap_or_default(),
        output: text("output"),
        error: text("error"),
        start_us: int("started_us")?,
        end_us: int("ended_us"),
        lsn,
    })
}

#[cfg(test)]
mod tests {
    use comb_backend::{TRACE_TAG, TraceRecord, encode_commit, encode_row, encode_trace};

    use super::*;

    fn catalog() -> Catalog {
        Catalog::new()
            .apply(
                "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT NOT NULL);
                 CREATE TABLE comb_workflows (home BIGINT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, version BIGINT NOT NULL,
                    status TEXT NOT NULL, input TEXT NOT NULL, output TEXT, error TEXT, started_us BIGINT NOT NULL, ended_us BIGINT,
                    PRIMARY KEY (home, id)) WITH (partition_by = 'home')",
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
        ingest(&Record { lsn: 42, tags: vec![2], payload: encode_commit(&commit).into() }, &catalog, &mut rows);
        assert_eq!(rows.invocations, vec![InvocationRow {
            lsn: Some(42),
            workflow_id: Some("w1".into()),
            step: Some("pay".into()),
            function: "deposit".into(),
            partition: Some(1),
            start_us: 10,
            end_us: 25,
            error: None,
            recorded: false,
            replayed: false,
            read_only: false,
        }]);
        let ops: Vec<_> = rows.changes.iter().map(|c| (c.operation, c.key.as_str(), c.before.as_deref(), c.after.as_deref())).collect();
        assert_eq!(ops, vec![
            ("update", r#"{"id":7}"#, Some(r#"{"id":7,"owner":"ann","balance":5}"#), Some(r#"{"id":7,"owner":"ann","balance":9}"#)),
            ("insert", r#"{"id":8}"#, None, Some(r#"{"id":8,"owner":"bob","balance":1}"#)),
            ("delete", r#"{"id":9}"#, Some(r#"{"id":9,"owner":"cy","balance":0}"#), None),
        ]);
        assert!(rows.changes.iter().all(|c| c.lsn == 42 && c.commit_us == 25 && c.table == "accounts" && c.function.as_deref() == Some("deposit")));
        assert_eq!(rows.workflows, vec![WorkflowRow {
            id: "w1".into(),
            name: "pay".into(),
            version: 2,
            status: "succeeded".into(),
            input: "{}".into(),
            output: Some("4".into()),
            error: None,
            start_us: 10,
            end_us: Some(30),
            lsn: 42,
        }]);
    }

    #[test]
    fn read_keys_yield_read_events_for_application_rows_only() {
        let catalog = catalog();
        let accounts = catalog.table("accounts").unwrap();
        let workflows = catalog.table("comb_workflows").unwrap();
        let key = |object: u32, values: &[Value]| [&[0u8, 1][..], &object.to_be_bytes(), &comb_backend::keycodec::encode_key(values)].concat();
        let read = InvocationRecord {
            read_only: true,
            reads: vec![key(accounts.id.0, &[Value::Int(7)]), key(workflows.id.0, &[Value::Int(1), Value::Text("w".into())]), key(999, &[Value::Int(1)])],
            ..invocation("balance", "look")
        };
        let mut rows = Rows::default();
        ingest(&Record { lsn: 9, tags: vec![TRACE_TAG], payload: encode_trace(&TraceRecord { invocations: vec![read] }).into() }, &catalog, &mut rows);
        assert_eq!(rows.reads, vec![ReadRow {
            lsn: None,
            workflow_id: Some("w1".into()),
            step: Some("look".into()),
            function: "balance".into(),
            table: "accounts".into(),
            key: r#"{"id":7}"#.into(),
        }]);
    }

    #[test]
    fn trace_records_yield_failures_and_reads_and_garbage_yields_nothing() {
        let catalog = catalog();
        let failed = InvocationRecord { error: Some("no funds".into()), ..invocation("withdraw", "take") };
        let read = InvocationRecord { read_only: true, ..invocation("balance", "look") };
        let system = InvocationRecord { read_only: true, ..invocation("comb_workflow_get", "x") };
        let trace = TraceRecord { invocations: vec![failed, read, system] };
        let mut rows = Rows::default();
        ingest(&Record { lsn: 5, tags: vec![TRACE_TAG], payload: encode_trace(&trace).into() }, &catalog, &mut rows);
        ingest(&Record { lsn: 6, tags: vec![1], payload: vec![77, 1, 2].into() }, &catalog, &mut rows);
        let seen: Vec<_> = rows.invocations.iter().map(|r| (r.function.as_str(), r.lsn, r.error.as_deref(), r.read_only)).collect();
        assert_eq!(seen, vec![("withdraw", None, Some("no funds"), false), ("balance", None, None, true)]);
        assert!(rows.changes.is_empty() && rows.workflows.is_empty());
    }
}
