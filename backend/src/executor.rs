//! Execution of plans: pure functions over (a snapshot, the transaction's write set), apart
//! from the code that drives them (TiKV's split). Nothing here touches a thread, a channel
//! or the log; the snapshot is whatever the caller lends: one partition's committed state
//! and pending writes, or several partitions' at a barrier.
//!
//! Semantics are SQL's: three-valued logic (a filter keeps a row only when its predicate is
//! TRUE), a key that evaluates to NULL matches nothing, integer overflow and division by
//! zero are errors, NOT NULL and unique keys are checked on every write, and the write set
//! of a failed statement is discarded with the whole transaction by the caller.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};

use comb_planner::{Access, Accumulator, Catalog, DataType, Expr, Index, OnConflict, Plan, RangeBound, SortKey, Table, Value};
use foldhash::HashMap;

use crate::error::{Error, Result};
use crate::keycodec::{TAG_NULL, decode_value, encode_key, encode_key_in, encode_key_value, encode_value, partition_of, prefix_end};
use crate::keys::{object_prefix, recorded_prefix};
use crate::row::{decode_row, encode_row};

/// Committed (and pending) state as a transaction sees it before its own writes.
pub(crate) trait Snapshot {
    /// The value of a key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// The first `count` entries with keys in `start..end`, in key order (descending: from
    /// the end).
    fn scan(&self, start: &[u8], end: &[u8], count: usize, descending: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// The first `n` entries of a merged scan in the scan's order.
pub(crate) fn first_in_order(merged: BTreeMap<Vec<u8>, Vec<u8>>, n: usize, descending: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    if descending { merged.into_iter().rev().take(n).collect() } else { merged.into_iter().take(n).collect() }
}

/// Recorded outputs one read of [`Exec::forget_recorded`] takes: a run's steps, and its end.
const RECORDED_SCAN_ROWS: usize = comb_planner::STEPS_MAX + 1;

/// Rows of the first chunk a filtered, limited key range reads (the chunks then double).
const FILTERED_CHUNK_ROWS_MIN: usize = 16;

/// What kind of entry a write is, for the commit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    Row = 0,
    Index = 1,
    Recorded = 2,
}

/// One key written by a transaction: its value before the transaction and after it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Write {
    pub(crate) kind: WriteKind,
    pub(crate) before: Option<Vec<u8>>,
    pub(crate) after: Option<Vec<u8>>,
}

/// A transaction's writes, by key. Reads through the transaction see them first.
#[derive(Debug, Default)]
pub(crate) struct WriteSet {
    pub(crate) entries: BTreeMap<Vec<u8>, Write>,
    /// Point reads of the snapshot, kept for the transaction's life: the snapshot does not
    /// change while it runs (its executor runs nothing else), so a statement that reads a
    /// row another one read, and the before image of a row about to be written, cost one
    /// store read in all. Bounded by [`READ_CACHE_MAX`].
    reads: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>>>,
    /// The keys read since the last [`WriteSet::take_traced_reads`], when traced: every key
    /// a statement found (rows and index entries alike; the tracing layer keeps the rows).
    traced_reads: Option<RefCell<TracedReads>>,
    /// What the statement running changed, in order: each key with its write before the
    /// change (none if it had none), to put back if the statement fails. A function that
    /// catches a statement's error goes on as if the statement had not run.
    undo: Vec<(Vec<u8>, Option<Write>)>,
}

/// The keys one invocation read, for its trace.
#[derive(Debug, Default)]
struct TracedReads {
    keys: Vec<Vec<u8>>,
    truncated: bool,
}

/// Most keys read that one invocation's trace lists; beyond, the trace says it was cut.
pub const TRACED_READS_MAX: usize = 1_024;

/// Most point reads one transaction keeps; later ones go to the snapshot each time.
const READ_CACHE_MAX: usize = 4_096;

impl WriteSet {
    /// Starts listing the keys read, for the invocations' traces.
    pub(crate) fn trace_reads(&mut self) {
        self.traced_reads = Some(RefCell::default());
    }

    /// Notes a key a statement found.
    fn note_read(&self, key: &[u8]) {
        if let Some(traced) = &self.traced_reads {
            let mut traced = traced.borrow_mut();
            if traced.keys.len() < TRACED_READS_MAX {
                traced.keys.push(key.to_vec());
            } else {
                traced.truncated = true;
            }
        }
    }

    /// Puts back what the failed statement changed, last change first.
    fn undo_statement(&mut self) {
        while let Some((key, write)) = self.undo.pop() {
            match write {
                Some(write) => self.entries.insert(key, write),
                None => self.entries.remove(&key),
            };
        }
    }

    /// The distinct keys read since the last call, and whether some were left out.
    pub(crate) fn take_traced_reads(&mut self) -> (Vec<Vec<u8>>, bool) {
        let Some(traced) = &self.traced_reads else { return (Vec::new(), false) };
        let TracedReads { mut keys, truncated } = std::mem::take(&mut *traced.borrow_mut());
        keys.sort_unstable();
        keys.dedup();
        (keys, truncated)
    }

    /// A point read of the snapshot, through the transaction's read cache.
    fn snapshot_get(&self, snapshot: &dyn Snapshot, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.reads.borrow().get(key) {
            return Ok(value.clone());
        }
        let value = snapshot.get(key)?;
        let mut reads = self.reads.borrow_mut();
        if reads.len() < READ_CACHE_MAX {
            reads.insert(key.to_vec(), value.clone());
        }
        Ok(value)
    }
}

/// Bounds on one statement and one transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) scan_rows_max: usize,
    pub(crate) result_rows_max: usize,
    pub(crate) write_set_max: usize,
}

/// The bound on the rows a step of a query plan holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The statement's result, row for row: `result-rows-max`. So a query whose result is
    /// too large fails before it builds more than that bound of rows at any step.
    Result,
    /// Rows on their way to a step that passes fewer on (a filter, an aggregate, a limit,
    /// distinct, a join's outer side, the rows an UPDATE or DELETE changes): `scan-rows-max`,
    /// as many as one access may read. A `count(*)` returns one row however many it counts.
    Step,
}

/// The partitions a transaction may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// One partition: a single-partition transaction.
    Single(u16),
    /// All of them: a multi-partition transaction, every executor paused.
    All,
}

/// What a statement returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Outcome {
    /// Result rows (SELECT, or RETURNING).
    pub(crate) rows: Vec<Vec<Value>>,
    /// Rows returned by a SELECT, or written by INSERT, UPDATE or DELETE.
    pub(crate) affected: u64,
}

/// One statement's execution context.
pub(crate) struct Exec<'a> {
    pub(crate) catalog: &'a Catalog,
    pub(crate) snapshot: &'a dyn Snapshot,
    pub(crate) writes: &'a mut WriteSet,
    pub(crate) scope: Scope,
    pub(crate) partitions: u16,
    pub(crate) limits: Limits,
    pub(crate) function: &'a str,
    pub(crate) statement: &'a str,
}

/// Prints key values as a SQL tuple: `(1, 'a')`.
fn show_key(values: &[Value]) -> String {
    let inner: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("({})", inner.join(", "))
}

/// Makes a value of a numeric column's type out of an integer, as SQL's implicit cast does.
fn coerce(value: Value, ty: DataType) -> Value {
    match (value, ty) {
        (Value::Int(i), DataType::Double) => Value::Double(i as f64),
        (value, _) => value,
    }
}

fn end_of(prefix: &[u8]) -> Vec<u8> {
    prefix_end(prefix).unwrap_or_else(|| vec![0xFF; prefix.len() + 1])
}

/// The key range of `base` (an object prefix plus encoded equal values) narrowed by bounds
/// on the next column, which is `descending` when declared `DESC`: its bytes are inverted,
/// so the upper bound starts the range and the lower one ends it. NULLs, which sort last
/// (first when inverted), are never in a range.
fn key_range(base: &[u8], lower: Option<(Value, bool)>, upper: Option<(Value, bool)>, descending: bool) -> (Vec<u8>, Vec<u8>) {
    let with = |v: &Value| {
        let mut k = base.to_vec();
        encode_key_value(&mut k, v, descending);
        k
    };
    let ranged = lower.is_some() || upper.is_some();
    let (first, last) = if descending { (upper, lower) } else { (lower, upper) };
    let start = match first {
        // Past the inverted NULL (`!TAG_NULL`, 0x00) and whatever follows it.
        None if ranged && descending => [base, &[!TAG_NULL + 1]].concat(),
        None => base.to_vec(),
        Some((v, true)) => with(&v),
        Some((v, false)) => end_of(&with(&v)),
    };
    let end = match last {
        None if ranged && !descending => [base, &[TAG_NULL]].concat(),
        None => end_of(base),
        Some((v, true)) => end_of(&with(&v)),
        Some((v, false)) => with(&v),
    };
    (start, end)
}

impl<'a> Exec<'a> {
    fn eval(&self, expr: &Expr, row: &[Value], params: &[Value]) -> Result<Value> {
        expr.eval(row, params).map_err(|e| Error::eval(self.statement, e))
    }

    fn table(&self, id: comb_planner::TableId) -> Result<&'a Table> {
        let catalog: &'a Catalog = self.catalog;
        catalog.table_by_id(id).ok_or_else(|| Error::Internal(format!("table #{} of a prepared statement is not in the catalog", id.0)))
    }

    /// Reads a key through the write set.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let value = match self.writes.entries.get(key) {
            Some(write) => write.after.clone(),
            None => self.writes.snapshot_get(self.snapshot, key)?,
        };
        if value.is_some() {
            self.writes.note_read(key);
        }
        Ok(value)
    }

    /// Scans `start..end` through the write set, in key order or `descending`. With a `cap`
    /// (at most `scan-rows-max`) only the first `cap` entries are read and returned;
    /// without one, reading more than `scan-rows-max` entries is an error.
    fn scan(&self, start: &[u8], end: &[u8], descending: bool, cap: Option<usize>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = self.limits.scan_rows_max;
        if start >= end {
            return Ok(Vec::new());
        }
        debug_assert!(cap.is_none_or(|c| c <= limit), "a scan's cap lies within scan-rows-max");
        let want = cap.unwrap_or(limit);
        let mine = self.writes.entries.range(start.to_vec()..end.to_vec());
        let deletes = mine.clone().filter(|(_, w)| w.after.is_none()).count();
        // The snapshot's first `want + deletes` entries in scan order: whatever the write set
        // deletes or adds, the first `want` of the merge are exact. Without a cap, one more
        // entry shows whether the range holds more than `scan-rows-max`; with one, it would
        // be read for nothing (a `LIMIT 1` would read two rows).
        let count = want.saturating_add(deletes).saturating_add(usize::from(cap.is_none()));
        let base = self.snapshot.scan(start, end, count, descending)?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base.into_iter().collect();
        for (key, write) in mine {
            match &write.after {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        if cap.is_none() && merged.len() > limit {
            return Err(Error::LimitExceeded { what: "rows scanned by one access", size: merged.len(), limit, option: "scan-rows-max" });
        }
        let entries = first_in_order(merged, want, descending);
        entries.iter().for_each(|(key, _)| self.writes.note_read(key));
        Ok(entries)
    }

    /// Deletes every recorded output of run `workflow` in `partition`; returns how many it
    /// deleted. All of them or, when it fails, none.
    pub(crate) fn forget_recorded(&mut self, partition: u16, workflow: &str) -> Result<u64> {
        let outcome = self.forget_recorded_in(partition, workflow);
        if outcome.is_err() {
            self.writes.undo_statement();
        }
        self.writes.undo.clear();
        outcome
    }

    fn forget_recorded_in(&mut self, partition: u16, workflow: &str) -> Result<u64> {
        self.check_partition(partition)?;
        let start = recorded_prefix(partition, workflow);
        let end = prefix_end(&start).ok_or_else(|| Error::Internal("a recorded output's prefix has no end".to_owned()))?;
        let cap = self.limits.scan_rows_max.min(RECORDED_SCAN_ROWS);
        let mut forgotten = 0;
        // Each pass reads past the deletes of the last one (the write set hides them).
        loop {
            let found = self.scan(&start, &end, false, Some(cap))?;
            if found.is_empty() {
                return Ok(forgotten);
            }
            for (key, _) in found {
                self.put(key, None, WriteKind::Recorded)?;
                forgotten += 1;
            }
        }
    }

    /// Records a write, remembering the value before the transaction.
    pub(crate) fn put(&mut self, key: Vec<u8>, after: Option<Vec<u8>>, kind: WriteKind) -> Result<()> {
        if let Some(write) = self.writes.entries.get_mut(&key) {
            self.writes.undo.push((key.clone(), Some(write.clone())));
            write.after = after;
            if write.after == write.before {
                self.writes.entries.remove(&key);
            }
            return Ok(());
        }
        let before = self.writes.snapshot_get(self.snapshot, &key)?;
        if before == after {
            return Ok(());
        }
        self.writes.undo.push((key.clone(), None));
        self.writes.entries.insert(key, Write { kind, before, after });
        let size = self.writes.entries.len();
        if size > self.limits.write_set_max {
            return Err(Error::LimitExceeded { what: "keys written by one transaction", size, limit: self.limits.write_set_max, option: "write-set-max" });
        }
        Ok(())
    }

    fn check_partition(&self, partition: u16) -> Result<()> {
        match self.scope {
            Scope::Single(own) if own != partition => Err(Error::WrongPartition {
                function: self.function.to_owned(),
                statement: self.statement.to_owned(),
                expected: own,
                found: partition,
            }),
            _ => Ok(()),
        }
    }

    fn scope_partitions(&self) -> Vec<u16> {
        match self.scope {
            Scope::Single(own) => vec![own],
            Scope::All => (0..self.partitions).collect(),
        }
    }

    /// The partitions holding rows whose leading `columns` equal `bound`.
    fn partitions_for(&self, table: &Table, columns: &[usize], bound: &[Value]) -> Result<Vec<u16>> {
        match columns[..bound.len()].iter().position(|c| *c == table.partition_column) {
            Some(i) => {
                let p = partition_of(&bound[i], self.partitions);
                self.check_partition(p)?;
                Ok(vec![p])
            }
            None => Ok(self.scope_partitions()),
        }
    }

    fn check_rows(&self, n: usize) -> Result<()> {
        if n > self.limits.result_rows_max {
            return Err(Error::LimitExceeded { what: "rows of one statement's result", size: n, limit: self.limits.result_rows_max, option: "result-rows-max" });
        }
        Ok(())
    }

    /// Holds a plan step's `n` rows to their bound (see [`Held`]).
    fn check_held(&self, n: usize, held: Held) -> Result<()> {
        match held {
            Held::Result => self.check_rows(n),
            Held::Step if n > self.limits.scan_rows_max => {
                Err(Error::LimitExceeded { what: "rows held by one step of a statement's plan", size: n, limit: self.limits.scan_rows_max, option: "scan-rows-max" })
            }
            Held::Step => Ok(()),
        }
    }

    /// Evaluates key expressions; `None` when one is NULL (it matches no row).
    fn key_values(&self, exprs: &[Expr], columns: &[usize], table: &Table, row: &[Value], params: &[Value]) -> Result<Option<Vec<Value>>> {
        let mut out = Vec::with_capacity(exprs.len());
        for (expr, &c) in exprs.iter().zip(columns) {
            let v = self.eval(expr, row, params)?;
            if v.is_null() {
                return Ok(None);
            }
            out.push(coerce(v, table.columns[c].data_type));
        }
        Ok(Some(out))
    }

    fn bound(&self, b: &Option<RangeBound>, ty: DataType, row: &[Value], params: &[Value]) -> Result<Option<Option<(Value, bool)>>> {
        match b {
            None => Ok(Some(None)),
            Some(b) => {
                let v = self.eval(&b.value, row, params)?;
                if v.is_null() { Ok(None) } else { Ok(Some(Some((coerce(v, ty), b.inclusive)))) }
            }
        }
    }

    /// The rows of `table` that `access` reaches, in its order; key expressions are
    /// evaluated over `outer` (the outer row of a join, or nothing). With a `cap` (a LIMIT
    /// above a key range), only the first `cap` of them that pass `filter` (every row
    /// without one), and reading stops there.
    fn access_rows(&self, table: &Table, access: &Access, outer: &[Value], params: &[Value], cap: Option<usize>, filter: Option<&Expr>) -> Result<Vec<Vec<Value>>> {
        let pk = &table.primary_key;
        match access {
            Access::PointGet { key, .. } => {
                let Some(values) = self.key_values(key, pk, table, outer, params)? else { return Ok(Vec::new()) };
                let parts = self.partitions_for(table, pk, &values)?;
                let mut rows = Vec::new();
                for p in parts {
                    let mut k = object_prefix(p, table.id.0);
                    k.extend_from_slice(&encode_key_in(&values, &table.key_descending));
                    if let Some(bytes) = self.get(&k)? {
                        rows.push(decode_row(&bytes)?);
                    }
                }
                Ok(rows)
            }
            Access::KeyRange { prefix, lower, upper, descending, .. } => {
                let Some(values) = self.key_values(prefix, pk, table, outer, params)? else { return Ok(Vec::new()) };
                let next_ty = pk.get(values.len()).map_or(DataType::BigInt, |c| table.columns[*c].data_type);
                let next_descending = table.key_column_descending(values.len());
                let (Some(lo), Some(hi)) = (self.bound(lower, next_ty, outer, params)?, self.bound(upper, next_ty, outer, params)?) else {
                    return Ok(Vec::new());
                };
                let parts = self.partitions_for(table, pk, &values)?;
                let mut found = Vec::new();
                for p in &parts {
                    let mut base = object_prefix(*p, table.id.0);
                    base.extend_from_slice(&encode_key_in(&values, &table.key_descending));
                    let (start, end) = key_range(&base, lo.clone(), hi.clone(), next_descending);
                    match cap {
                        Some(cap) => found.extend(self.first_rows(start, end, *descending, cap, filter, params)?),
                        None => {
                            for (k, v) in self.scan(&start, &end, *descending, None)? {
                                found.push((k[2..].to_vec(), decode_row(&v)?));
                            }
                        }
                    }
                }
                let mut rows = in_key_order(found, parts.len(), *descending);
                rows.truncate(cap.unwrap_or(usize::MAX));
                Ok(rows)
            }
            Access::IndexRange { index, prefix, lower, upper, .. } => {
                let index = table
                    .indexes
                    .iter()
                    .find(|i| i.id == *index)
                    .ok_or_else(|| Error::Internal(format!("index #{} of a prepared statement is not in table {}", index.0, table.name)))?;
                let Some(values) = self.key_values(prefix, &index.columns, table, outer, params)? else { return Ok(Vec::new()) };
                let next_ty = index.columns.get(values.len()).map_or(DataType::BigInt, |c| table.columns[*c].data_type);
                let (Some(lo), Some(hi)) = (self.bound(lower, next_ty, outer, params)?, self.bound(upper, next_ty, outer, params)?) else {
                    return Ok(Vec::new());
                };
                let parts = self.partitions_for(table, &index.columns, &values)?;
                let mut found = Vec::new();
                for p in &parts {
                    let mut base = object_prefix(*p, index.id.0);
                    base.extend_from_slice(&encode_key(&values));
                    let (start, end) = key_range(&base, lo.clone(), hi.clone(), false);
                    for (k, _) in self.scan(&start, &end, false, None)? {
                        let pk_bytes = index_entry_primary_key(&k, index.columns.len())?;
                        let mut row_key = object_prefix(*p, table.id.0);
                        row_key.extend_from_slice(pk_bytes);
                        let bytes = self.get(&row_key)?.ok_or_else(|| Error::Corrupt {
                            location: format!("index {} of table {}", index.name, table.name),
                            detail: "an index entry points to a missing row".to_owned(),
                        })?;
                        found.push((k[2..].to_vec(), decode_row(&bytes)?));
                    }
                }
                Ok(in_key_order(found, parts.len(), false))
            }
            Access::FullScan => {
                let parts = self.scope_partitions();
                let mut found = Vec::new();
                for p in &parts {
                    let base = object_prefix(*p, table.id.0);
                    for (k, v) in self.scan(&base, &end_of(&base), false, None)? {
                        found.push((k[2..].to_vec(), decode_row(&v)?));
                    }
                }
                Ok(in_key_order(found, parts.len(), false))
            }
        }
    }

    /// The first `cap` rows of the key range `start..end` (in key order, or descending) that
    /// pass `filter`, with their keys. Without a filter exactly `cap` rows are read; with
    /// one, the range is read in chunks that double, until enough rows passed. Reading more
    /// than `scan-rows-max` rows is an error, as for an unlimited range.
    fn first_rows(&self, mut start: Vec<u8>, mut end: Vec<u8>, descending: bool, cap: usize, filter: Option<&Expr>, params: &[Value]) -> Result<Vec<(Vec<u8>, Vec<Value>)>> {
        let bound = self.limits.scan_rows_max;
        let mut out = Vec::new();
        let mut read = 0;
        let mut chunk = if filter.is_some() { cap.max(FILTERED_CHUNK_ROWS_MIN) } else { cap };
        while out.len() < cap {
            let want = chunk.min(bound - read);
            if want == 0 {
                // The bound is spent: fine if nothing is left to read.
                if self.scan(&start, &end, descending, Some(1))?.is_empty() {
                    break;
                }
                return Err(Error::LimitExceeded { what: "rows scanned by one access", size: bound + 1, limit: bound, option: "scan-rows-max" });
            }
            let entries = self.scan(&start, &end, descending, Some(want))?;
            read += entries.len();
            let exhausted = entries.len() < want;
            let Some(last) = entries.last().map(|(k, _)| k.clone()) else { break };
            for (k, v) in entries {
                // Rows past the cap are not evaluated: a filter that fails on one (a division
                // by zero) does not fail a statement whose LIMIT stopped before it.
                if out.len() == cap {
                    break;
                }
                let row = decode_row(&v)?;
                let keep = match filter {
                    Some(predicate) => self.eval(predicate, &row, params)? == Value::Bool(true),
                    None => true,
                };
                if keep {
                    out.push((k[2..].to_vec(), row));
                }
            }
            if exhausted {
                break;
            }
            // Go on past the last key read.
            if descending {
                end = last;
            } else {
                start = last;
                start.push(0);
            }
            chunk = chunk.saturating_mul(2);
        }
        Ok(out)
    }

    /// Runs a statement: all of it or, when it fails, nothing of it (what it wrote before
    /// the failure is taken back).
    pub(crate) fn run(&mut self, plan: &Plan, params: &[Value]) -> Result<Outcome> {
        let outcome = self.run_plan(plan, params);
        if outcome.is_err() {
            self.writes.undo_statement();
        }
        // Empty for the next statement (taking back drained it).
        self.writes.undo.clear();
        outcome
    }

    fn run_plan(&mut self, plan: &Plan, params: &[Value]) -> Result<Outcome> {
        let outcome = match plan {
            Plan::Insert { table, rows, on_conflict, returning, .. } => self.insert(*table, rows, on_conflict, returning.as_deref(), params)?,
            Plan::Update { input, table, assignments, returning, .. } => {
                let table = self.table(*table)?;
                let old_rows = self.rows(input, params, Held::Step)?;
                let mut out = Outcome::default();
                for old in old_rows {
                    let mut new = old.clone();
                    for (i, e) in assignments {
                        new[*i] = self.eval(e, &old, params)?;
                    }
                    let new = self.check_row(table, new)?;
                    self.write_row(table, Some(&old[..]), Some(&new[..]))?;
                    out.affected += 1;
                    self.returning(&mut out, returning.as_deref(), &new, params)?;
                }
                out
            }
            Plan::Delete { input, table, returning, .. } => {
                let table = self.table(*table)?;
                let old_rows = self.rows(input, params, Held::Step)?;
                let mut out = Outcome::default();
                for old in old_rows {
                    self.write_row(table, Some(&old[..]), None)?;
                    out.affected += 1;
                    self.returning(&mut out, returning.as_deref(), &old, params)?;
                }
                out
            }
            query => {
                let rows = self.rows(query, params, Held::Result)?;
                Outcome { affected: rows.len() as u64, rows }
            }
        };
        self.check_rows(outcome.rows.len())?;
        Ok(outcome)
    }

    fn returning(&self, out: &mut Outcome, returning: Option<&[Expr]>, row: &[Value], params: &[Value]) -> Result<()> {
        if let Some(exprs) = returning {
            let values = exprs.iter().map(|e| self.eval(e, row, params)).collect::<Result<Vec<_>>>()?;
            out.rows.push(values);
            self.check_rows(out.rows.len())?;
        }
        Ok(())
    }

    fn insert(&mut self, table: comb_planner::TableId, rows: &[Vec<Expr>], on_conflict: &OnConflict, returning: Option<&[Expr]>, params: &[Value]) -> Result<Outcome> {
        let table = self.table(table)?;
        let mut out = Outcome::default();
        // The rows this statement inserted or updated: DO UPDATE may not change one again.
        let mut touched: HashSet<Vec<u8>> = HashSet::new();
        for exprs in rows {
            let values = exprs.iter().map(|e| self.eval(e, &[], params)).collect::<Result<Vec<_>>>()?;
            let values = self.check_row(table, values)?;
            let key = self.row_key(table, &values)?;
            let Some(existing) = self.get(&key)? else {
                if matches!(on_conflict, OnConflict::DoNothing { any_constraint: true }) && self.unique_conflict(table, &values, &key)? {
                    continue;
                }
                self.write_row(table, None, Some(&values[..]))?;
                if matches!(on_conflict, OnConflict::DoUpdate { .. }) {
                    touched.insert(key);
                }
                out.affected += 1;
                self.returning(&mut out, returning, &values, params)?;
                continue;
            };
            match on_conflict {
                OnConflict::Error => {
                    let pk: Vec<Value> = table.primary_key.iter().map(|c| values[*c].clone()).collect();
                    return Err(Error::UniqueViolation { table: table.name.clone(), constraint: "primary key".to_owned(), key: show_key(&pk) });
                }
                OnConflict::DoNothing { .. } => {}
                OnConflict::DoUpdate { assignments, filter } => {
                    if touched.contains(&key) {
                        let pk: Vec<Value> = table.primary_key.iter().map(|c| values[*c].clone()).collect();
                        return Err(Error::RowAffectedTwice { table: table.name.clone(), key: show_key(&pk) });
                    }
                    let existing = decode_row(&existing)?;
                    let combined: Vec<Value> = existing.iter().chain(&values).cloned().collect();
                    if let Some(filter) = filter
                        && self.eval(filter, &combined, params)? != Value::Bool(true)
                    {
                        continue;
                    }
                    let mut new = existing.clone();
                    for (i, e) in assignments {
                        new[*i] = self.eval(e, &combined, params)?;
                    }
                    let new = self.check_row(table, new)?;
                    if self.row_key(table, &new)? == key {
                        self.write_row(table, Some(&existing[..]), Some(&new[..]))?;
                        touched.insert(key);
                    } else {
                        // An assignment moved the row to another key: delete, then insert.
                        self.write_row(table, Some(&existing[..]), None)?;
                        let moved = self.row_key(table, &new)?;
                        if self.get(&moved)?.is_some() {
                            let pk: Vec<Value> = table.primary_key.iter().map(|c| new[*c].clone()).collect();
                            return Err(Error::UniqueViolation { table: table.name.clone(), constraint: "primary key".to_owned(), key: show_key(&pk) });
                        }
                        self.write_row(table, None, Some(&new[..]))?;
                        touched.insert(moved);
                    }
                    out.affected += 1;
                    self.returning(&mut out, returning, &new, params)?;
                }
            }
        }
        Ok(out)
    }

    /// Checks a row against the table's columns: arity, types, NOT NULL.
    fn check_row(&self, table: &Table, values: Vec<Value>) -> Result<Vec<Value>> {
        if values.len() != table.columns.len() {
            return Err(Error::Internal(format!("a row of {} values for table {} of {} columns", values.len(), table.name, table.columns.len())));
        }
        values
            .into_iter()
            .zip(&table.columns)
            .map(|(v, column)| {
                let v = coerce(v, column.data_type);
                if v.is_null() && !column.nullable {
                    return Err(Error::NotNull { table: table.name.clone(), column: column.name.clone() });
                }
                if !v.fits(column.data_type) {
                    return Err(Error::ColumnType { table: table.name.clone(), column: column.name.clone(), expected: column.data_type, value: v.to_string() });
                }
                Ok(v)
            })
            .collect()
    }

    fn row_partition(&self, table: &Table, row: &[Value]) -> Result<u16> {
        let p = partition_of(&row[table.partition_column], self.partitions);
        self.check_partition(p)?;
        Ok(p)
    }

    fn row_key(&self, table: &Table, row: &[Value]) -> Result<Vec<u8>> {
        let p = self.row_partition(table, row)?;
        let mut key = object_prefix(p, table.id.0);
        for (i, c) in table.primary_key.iter().enumerate() {
            encode_key_value(&mut key, &row[*c], table.key_column_descending(i));
        }
        Ok(key)
    }

    fn index_key(p: u16, index: &Index, row: &[Value], pk_bytes: &[u8]) -> Vec<u8> {
        let mut key = object_prefix(p, index.id.0);
        for c in &index.columns {
            encode_value(&mut key, &row[*c]);
        }
        key.extend_from_slice(pk_bytes);
        key
    }

    /// Writes a row change (insert: no old; delete: no new) with its index entries.
    fn write_row(&mut self, table: &Table, old: Option<&[Value]>, new: Option<&[Value]>) -> Result<()> {
        let any = new.or(old).ok_or_else(|| Error::Internal("a row write with neither old nor new row".to_owned()))?;
        let row_key = self.row_key(table, any)?;
        let p = crate::keys::partition_of_key(&row_key);
        let pk_bytes = row_key[6..].to_vec();
        for index in &table.indexes {
            let old_key = old.map(|r| Self::index_key(p, index, r, &pk_bytes));
            let new_key = new.map(|r| Self::index_key(p, index, r, &pk_bytes));
            if old_key == new_key {
                continue;
            }
            if let Some(k) = old_key {
                self.put(k, None, WriteKind::Index)?;
            }
            if let (Some(k), Some(row)) = (new_key, new) {
                if index.unique {
                    self.check_unique(table, index, row, &row_key)?;
                }
                self.put(k, Some(Vec::new()), WriteKind::Index)?;
            }
        }
        self.put(row_key, new.map(encode_row), WriteKind::Row)
    }

    /// Fails if another row has the same values in a unique index. Rows with a NULL among
    /// them never conflict. Checked in every partition the transaction may touch.
    fn check_unique(&self, table: &Table, index: &Index, row: &[Value], row_key: &[u8]) -> Result<()> {
        match self.index_conflict(index, row, row_key)? {
            Some(values) => Err(Error::UniqueViolation { table: table.name.clone(), constraint: index.name.clone(), key: show_key(&values) }),
            None => Ok(()),
        }
    }

    /// Whether another row than the one at `row_key` has the values of `row` in a unique
    /// index of `table`.
    fn unique_conflict(&self, table: &Table, row: &[Value], row_key: &[u8]) -> Result<bool> {
        for index in table.indexes.iter().filter(|i| i.unique) {
            if self.index_conflict(index, row, row_key)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The values of `row` in the unique `index` when another row than the one at `row_key`
    /// has them too.
    fn index_conflict(&self, index: &Index, row: &[Value], row_key: &[u8]) -> Result<Option<Vec<Value>>> {
        let values: Vec<Value> = index.columns.iter().map(|c| row[*c].clone()).collect();
        if values.iter().any(Value::is_null) {
            return Ok(None);
        }
        let encoded = encode_key(&values);
        for p in self.scope_partitions() {
            let mut prefix = object_prefix(p, index.id.0);
            prefix.extend_from_slice(&encoded);
            for (k, _) in self.scan(&prefix, &end_of(&prefix), false, None)? {
                let pk_bytes = &k[prefix.len()..];
                if p != crate::keys::partition_of_key(row_key) || pk_bytes != &row_key[6..] {
                    return Ok(Some(values));
                }
            }
        }
        Ok(None)
    }

    /// Rows of a query plan (not a write), held to `held`: the result's bound passes down
    /// through the steps whose rows are the result's row for row (a projection, a sort), the
    /// step bound to the inputs of those that pass fewer on.
    fn rows(&mut self, plan: &Plan, params: &[Value], held: Held) -> Result<Vec<Vec<Value>>> {
        let rows = match plan {
            Plan::Scan { table, access, .. } => {
                let table = self.table(*table)?;
                self.access_rows(table, access, &[], params, None, None)?
            }
            Plan::Join { outer, table, access, .. } => {
                let outer_rows = self.rows(outer, params, Held::Step)?;
                let table = self.table(*table)?;
                let mut out = Vec::new();
                for o in outer_rows {
                    let inner = self.access_rows(table, access, &o, params, None, None)?;
                    self.check_held(out.len() + inner.len(), held)?;
                    out.extend(inner.into_iter().map(|inner| o.iter().cloned().chain(inner).collect()));
                }
                out
            }
            Plan::Filter { input, predicate } => {
                let mut out = Vec::new();
                for row in self.rows(input, params, Held::Step)? {
                    if self.eval(predicate, &row, params)? == Value::Bool(true) {
                        out.push(row);
                    }
                }
                out
            }
            Plan::Aggregate { input, group_by, aggregates } => {
                let input = self.rows(input, params, Held::Step)?;
                let mut groups: Vec<(Vec<Value>, Vec<Accumulator>)> = Vec::new();
                let mut by_key: HashMap<Vec<u8>, usize> = HashMap::default();
                for row in &input {
                    let keys = group_by.iter().map(|e| self.eval(e, row, params)).collect::<Result<Vec<_>>>()?;
                    let i = *by_key.entry(encode_key(&keys)).or_insert_with(|| {
                        groups.push((keys, aggregates.iter().map(|a| Accumulator::new(a.func)).collect()));
                        groups.len() - 1
                    });
                    for (acc, call) in groups[i].1.iter_mut().zip(aggregates) {
                        let v = match &call.arg {
                            Some(e) => e.eval(row, params).map_err(|e| Error::eval(self.statement, e))?,
                            None => Value::Null,
                        };
                        acc.update(&v).map_err(|e| Error::eval(self.statement, e))?;
                    }
                }
                if group_by.is_empty() && groups.is_empty() {
                    groups.push((Vec::new(), aggregates.iter().map(|a| Accumulator::new(a.func)).collect()));
                }
                groups.into_iter().map(|(keys, accs)| keys.into_iter().chain(accs.iter().map(Accumulator::finish)).collect()).collect()
            }
            Plan::Sort { input, keys } => {
                let input = self.rows(input, params, held)?;
                let mut keyed = Vec::with_capacity(input.len());
                for row in input {
                    let k = keys.iter().map(|s| self.eval(&s.expr, &row, params)).collect::<Result<Vec<_>>>()?;
                    keyed.push((k, row));
                }
                keyed.sort_by(|(a, _), (b, _)| compare_sort_keys(keys, a, b));
                keyed.into_iter().map(|(_, row)| row).collect()
            }
            Plan::Limit { input, limit, offset } => {
                let count = |e: &Option<Expr>, what: &str| -> Result<Option<usize>> {
                    let Some(e) = e else { return Ok(None) };
                    match self.eval(e, &[], params)? {
                        Value::Null => Ok(None),
                        Value::Int(n) if n >= 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
                        other => Err(Error::BadParameters { statement: self.statement.to_owned(), message: format!("{what} must be a non-negative integer, not {other}") }),
                    }
                };
                let (limit, offset) = (count(limit, "LIMIT")?, count(offset, "OFFSET")?);
                let cap = limit.map(|l| l.saturating_add(offset.unwrap_or(0)));
                let input = match (key_range_under_limit(input), cap) {
                    // A limit over a key range, filtered or not, reads only as far as the rows
                    // it passes on.
                    (Some((table, access, filter)), Some(_)) => {
                        let table = self.table(table)?;
                        self.access_rows(table, access, &[], params, cap, filter)?
                    }
                    _ => self.rows(input, params, Held::Step)?,
                };
                input.into_iter().skip(offset.unwrap_or(0)).take(limit.unwrap_or(usize::MAX)).collect()
            }
            Plan::Distinct { input } => {
                let mut seen = HashSet::new();
                self.rows(input, params, Held::Step)?.into_iter().filter(|row| seen.insert(encode_key(row))).collect()
            }
            Plan::Project { input, exprs } => {
                let input = self.rows(input, params, held)?;
                let mut out = Vec::with_capacity(input.len());
                for row in input {
                    out.push(exprs.iter().map(|e| self.eval(e, &row, params)).collect::<Result<Vec<_>>>()?);
                }
                out
            }
            Plan::Insert { .. } | Plan::Update { .. } | Plan::Delete { .. } => {
                return Err(Error::Internal("a write plan nested inside a query plan".to_owned()));
            }
        };
        self.check_held(rows.len(), held)?;
        Ok(rows)
    }
}

/// The key range right under a LIMIT, and the filter between them if there is one.
fn key_range_under_limit(plan: &Plan) -> Option<(comb_planner::TableId, &Access, Option<&Expr>)> {
    match plan {
        Plan::Scan { table, access: access @ Access::KeyRange { .. }, .. } => Some((*table, access, None)),
        Plan::Filter { input, predicate } => match &**input {
            Plan::Scan { table, access: access @ Access::KeyRange { .. }, .. } => Some((*table, access, Some(predicate))),
            _ => None,
        },
        _ => None,
    }
}

/// The primary key bytes at the end of an index entry (after partition, index id and the
/// index's values).
fn index_entry_primary_key(key: &[u8], index_columns: usize) -> Result<&[u8]> {
    let mut rest = &key[6..];
    for _ in 0..index_columns {
        decode_value(&mut rest)?;
    }
    Ok(rest)
}

/// Rows gathered from several partitions, put in key order, or descending (one partition's
/// already are).
fn in_key_order(mut found: Vec<(Vec<u8>, Vec<Value>)>, partitions: usize, descending: bool) -> Vec<Vec<Value>> {
    if partitions > 1 {
        found.sort_by(|a, b| if descending { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
    }
    found.into_iter().map(|(_, row)| row).collect()
}

fn compare_sort_keys(keys: &[SortKey], a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for ((key, x), y) in keys.iter().zip(a).zip(b) {
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if key.nulls_first { Ordering::Less } else { Ordering::Greater }
            }
            (false, true) => {
                if key.nulls_first { Ordering::Greater } else { Ordering::Less }
            }
            (false, false) => {
                let o = x.sort_cmp(y);
                if key.descending { o.reverse() } else { o }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
