//! Every plan kind executed against an in-memory snapshot, with exact expected rows, and
//! SQL's error cases.

use std::collections::BTreeMap;

use comb_planner::{Catalog, EvalError, Value};

use super::*;

/// A committed state in memory, as one partition's snapshot, counting the entries its scans
/// return.
#[derive(Default)]
struct Memory(BTreeMap<Vec<u8>, Vec<u8>>, std::cell::Cell<usize>);

impl Snapshot for Memory {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], count: usize, descending: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let range = self.0.range(start.to_vec()..end.to_vec()).map(|(k, v)| (k.clone(), v.clone()));
        let entries: Vec<_> = if descending { range.rev().take(count).collect() } else { range.take(count).collect() };
        self.1.set(self.1.get() + entries.len());
        Ok(entries)
    }
}

struct Db {
    catalog: Catalog,
    data: Memory,
    limits: Limits,
    /// Partitions the rows are spread over; with more than one, statements run as a
    /// multi-partition transaction's do.
    partitions: u16,
}

const SCHEMA: &str = "
CREATE TABLE t (k BIGINT PRIMARY KEY, s TEXT, n BIGINT, d DOUBLE);
CREATE TABLE kv (a TEXT, b BIGINT, v TEXT NOT NULL DEFAULT 'x', PRIMARY KEY (a, b));
CREATE UNIQUE INDEX t_by_s ON t (s);
CREATE INDEX t_by_n ON t (n);
CREATE TABLE tl (u BIGINT, at BIGINT, s TEXT, PRIMARY KEY (u, at DESC, s DESC));
CREATE TABLE rev (n TEXT, v BIGINT, PRIMARY KEY (n DESC));
CREATE UNIQUE INDEX rev_by_v ON rev (v);
";

fn int(i: i64) -> Value {
    Value::Int(i)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

impl Db {
    fn new() -> Db {
        Db {
            catalog: Catalog::new().apply(SCHEMA).expect("schema"),
            data: Memory::default(),
            limits: Limits { scan_rows_max: 1000, result_rows_max: 1000, write_set_max: 1000 },
            partitions: 1,
        }
    }

    /// Runs statements in one write set, in turn, up to the first that fails unless
    /// `go_on` (as a body that catches the error goes on).
    fn execute(&self, statements: &[(&str, Vec<Value>)], go_on: bool) -> (WriteSet, Vec<Result<Outcome>>) {
        let mut writes = WriteSet::default();
        let mut outcomes = Vec::new();
        for (sql, params) in statements {
            let prepared = self.catalog.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let mut exec = Exec {
                catalog: &self.catalog,
                snapshot: &self.data,
                writes: &mut writes,
                scope: if self.partitions > 1 { Scope::All } else { Scope::Single(0) },
                partitions: self.partitions,
                limits: self.limits,
                function: "test",
                statement: "s",
            };
            let outcome = exec.run(&prepared.plan, params);
            let failed = outcome.is_err();
            outcomes.push(outcome);
            if failed && !go_on {
                break;
            }
        }
        (writes, outcomes)
    }

    fn commit(&mut self, writes: WriteSet) {
        for (key, write) in writes.entries {
            match write.after {
                Some(v) => self.data.0.insert(key, v),
                None => self.data.0.remove(&key),
            };
        }
    }

    /// Runs statements as one transaction; commits when all succeed.
    fn txn(&mut self, statements: &[(&str, Vec<Value>)]) -> Result<Vec<Outcome>> {
        let (writes, outcomes) = self.execute(statements, false);
        let outcomes = outcomes.into_iter().collect::<Result<Vec<_>>>()?;
        self.commit(writes);
        Ok(outcomes)
    }

    /// Runs statements as one transaction whose body goes on past a statement's error, and
    /// commits; each statement's outcome.
    fn txn_through_errors(&mut self, statements: &[(&str, Vec<Value>)]) -> Vec<Result<Outcome>> {
        let (writes, outcomes) = self.execute(statements, true);
        self.commit(writes);
        outcomes
    }

    fn run(&mut self, sql: &str, params: Vec<Value>) -> Result<Outcome> {
        Ok(self.txn(&[(sql, params)])?.remove(0))
    }

    fn rows(&mut self, sql: &str, params: Vec<Value>) -> Vec<Vec<Value>> {
        self.run(sql, params).unwrap_or_else(|e| panic!("{sql}: {e}")).rows
    }

    fn seeded() -> Db {
        Db::seeded_on(1)
    }

    /// The seeded rows, spread over `partitions`.
    fn seeded_on(partitions: u16) -> Db {
        let mut db = Db { partitions, ..Db::new() };
        for (k, s, n) in [(-5, Some("e"), Some(50)), (3, Some("c"), None), (1, Some("a"), Some(10)), (2, None, Some(10)), (4, Some("d\0x"), Some(-7))] {
            let s = s.map_or(Value::Null, text);
            let n = n.map_or(Value::Null, int);
            db.run("INSERT INTO t (k, s, n) VALUES ($1, $2, $3)", vec![int(k), s, n]).unwrap();
        }
        db
    }
}

fn ints(rows: &[Vec<Value>]) -> Vec<i64> {
    rows.iter().map(|r| if let Value::Int(i) = r[0] { i } else { panic!("{r:?}") }).collect()
}

#[test]
fn point_get_key_range_and_full_scan_in_key_order() {
    let mut db = Db::seeded();
    assert_eq!(db.rows("SELECT s FROM t WHERE k = $1", vec![int(1)]), vec![vec![text("a")]]);
    assert_eq!(db.rows("SELECT s FROM t WHERE k = $1", vec![int(9)]), Vec::<Vec<Value>>::new());
    assert_eq!(db.rows("SELECT s FROM t WHERE k = $1", vec![Value::Null]), Vec::<Vec<Value>>::new(), "a NULL key matches nothing");
    assert_eq!(ints(&db.rows("SELECT k FROM t", vec![])), vec![-5, 1, 2, 3, 4], "a full scan comes in key order, negatives first");
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE k > $1 AND k <= $2", vec![int(1), int(3)])), vec![2, 3]);
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE k >= $1 AND k < $2", vec![int(-5), int(2)])), vec![-5, 1]);
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE k BETWEEN 2 AND 100", vec![])), vec![2, 3, 4]);
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE k < $1", vec![Value::Null])), Vec::<i64>::new());
    // Composite keys: a prefix, then a range on the next column.
    for (a, b) in [("x", 3), ("x", -1), ("x\0", 0), ("w", 9), ("x", 10)] {
        db.run("INSERT INTO kv (a, b) VALUES ($1, $2)", vec![text(a), int(b)]).unwrap();
    }
    assert_eq!(ints(&db.rows("SELECT b FROM kv WHERE a = $1", vec![text("x")])), vec![-1, 3, 10], "text with a zero byte is another prefix");
    assert_eq!(ints(&db.rows("SELECT b FROM kv WHERE a = $1 AND b > 0", vec![text("x")])), vec![3, 10]);
    assert_eq!(db.rows("SELECT v FROM kv WHERE a = 'w' AND b = 9", vec![]), vec![vec![text("x")]], "defaults fill missing columns");
}

#[test]
fn filters_follow_three_valued_logic() {
    let mut db = Db::seeded();
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n = NULL", vec![])), Vec::<i64>::new());
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n IS NULL", vec![])), vec![3]);
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE NOT (n > 5)", vec![])), vec![4], "NOT of UNKNOWN is UNKNOWN");
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n > 5 OR s = 'c'", vec![])), vec![-5, 1, 2, 3]);
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n IN (10, NULL)", vec![])), vec![1, 2]);
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n NOT IN (10, NULL)", vec![])), Vec::<i64>::new());
}

#[test]
fn index_scans_return_rows_in_index_order() {
    let mut db = Db::seeded();
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n = $1", vec![int(10)])), vec![1, 2]);
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n > $1", vec![int(-100)])), vec![4, 1, 2, -5], "NULLs are never in a range");
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE s = $1", vec![text("d\0x")])), vec![4]);
    db.run("UPDATE t SET n = 99 WHERE k = 1", vec![]).unwrap();
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n = $1", vec![int(10)])), vec![2], "updates move index entries");
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n = $1", vec![int(99)])), vec![1]);
    db.run("DELETE FROM t WHERE k = 2", vec![]).unwrap();
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n = $1", vec![int(10)])), Vec::<i64>::new(), "deletes remove index entries");
}

#[test]
fn unique_and_not_null_violations_name_the_key() {
    let mut db = Db::seeded();
    match db.run("INSERT INTO t (k, s) VALUES ($1, $2)", vec![int(1), text("zz")]) {
        Err(Error::UniqueViolation { table, constraint, key }) => assert_eq!((table.as_str(), constraint.as_str(), key.as_str()), ("t", "primary key", "(1)")),
        other => panic!("{other:?}"),
    }
    match db.run("INSERT INTO t (k, s) VALUES ($1, $2)", vec![int(7), text("a")]) {
        Err(Error::UniqueViolation { constraint, key, .. }) => assert_eq!((constraint.as_str(), key.as_str()), ("t_by_s", "('a')")),
        other => panic!("{other:?}"),
    }
    match db.run("UPDATE t SET s = 'c' WHERE k = 1", vec![]) {
        Err(Error::UniqueViolation { constraint, .. }) => assert_eq!(constraint, "t_by_s"),
        other => panic!("{other:?}"),
    }
    // NULLs never conflict in a unique index; a row may keep its own value.
    db.run("INSERT INTO t (k) VALUES (8)", vec![]).unwrap();
    db.run("UPDATE t SET s = 'a', n = 1 WHERE k = 1", vec![]).unwrap();
    match db.run("INSERT INTO kv (a, b, v) VALUES ('q', 1, $1)", vec![Value::Null]) {
        Err(Error::NotNull { table, column }) => assert_eq!((table.as_str(), column.as_str()), ("kv", "v")),
        other => panic!("{other:?}"),
    }
    // A failed statement leaves nothing behind: the whole transaction is discarded.
    let before = db.data.0.clone();
    assert!(db.txn(&[("INSERT INTO t (k, s) VALUES (20, 'new')", vec![]), ("INSERT INTO t (k) VALUES (1)", vec![])]).is_err());
    assert_eq!(db.data.0, before);
}

#[test]
fn overflow_and_division_by_zero_are_errors() {
    let mut db = Db::seeded();
    db.run("UPDATE t SET n = $1 WHERE k = 1", vec![int(i64::MAX)]).unwrap();
    match db.run("UPDATE t SET n = n + 1 WHERE k = 1", vec![]) {
        Err(Error::Eval { source: EvalError::Overflow { .. }, .. }) => {}
        other => panic!("{other:?}"),
    }
    match db.run("SELECT n / (n - n) FROM t WHERE k = 2", vec![]) {
        Err(Error::Eval { source: EvalError::DivisionByZero, .. }) => {}
        other => panic!("{other:?}"),
    }
    match db.run("SELECT sum(n) FROM t", vec![]) {
        Err(Error::Eval { source: EvalError::Overflow { .. }, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn upserts_and_returning() {
    let mut db = Db::seeded();
    let upsert = "INSERT INTO t (k, s, n) VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n RETURNING k, n";
    assert_eq!(db.rows(upsert, vec![int(1), text("a"), int(5)]), vec![vec![int(1), int(15)]]);
    assert_eq!(db.rows(upsert, vec![int(30), text("thirty"), int(5)]), vec![vec![int(30), int(5)]]);
    let nothing = db.run("INSERT INTO t (k) VALUES ($1) ON CONFLICT DO NOTHING", vec![int(1)]).unwrap();
    assert_eq!(nothing.affected, 0);
    let guarded = "INSERT INTO t (k, n) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET n = excluded.n WHERE t.n < excluded.n RETURNING n";
    assert_eq!(db.rows(guarded, vec![int(1), int(3)]), Vec::<Vec<Value>>::new(), "the guard fails: no update");
    assert_eq!(db.rows(guarded, vec![int(1), int(300)]), vec![vec![int(300)]]);
    assert_eq!(db.rows("UPDATE t SET n = n * 2 WHERE k >= 3 AND k <= 4 RETURNING k, n", vec![]), vec![vec![int(3), Value::Null], vec![int(4), int(-14)]]);
    assert_eq!(db.rows("DELETE FROM t WHERE k = -5 RETURNING s", vec![]), vec![vec![text("e")]]);
    assert_eq!(db.run("DELETE FROM t WHERE k = -5", vec![]).unwrap().affected, 0);
}

/// A LIMIT over a key range evaluates its filter on no row past the ones it returns: a row
/// further on that would fail it (a division by zero) does not fail the statement.
#[test]
fn a_limit_stops_evaluating_its_filter_at_its_rows() {
    let mut db = Db::seeded();
    db.run("INSERT INTO t (k, n) VALUES (5, 0)", vec![]).unwrap();
    let first = "SELECT k FROM t WHERE k > -100 AND 100 / n > 1 ORDER BY k LIMIT 1";
    assert_eq!(ints(&db.rows(first, vec![])), vec![-5]);
    assert!(matches!(db.run("SELECT k FROM t WHERE k > -100 AND 100 / n > 1 ORDER BY k", vec![]), Err(Error::Eval { .. })), "without the limit the row is reached");
}

/// As in PostgreSQL: ON CONFLICT DO NOTHING without a target skips a row that conflicts on
/// any unique index; with the primary key as its target, only on that key (a conflict on
/// another unique index fails). DO UPDATE may not change a row twice in one statement.
#[test]
fn on_conflict_targets_and_a_row_affected_twice() {
    let mut db = Db::seeded();
    // k = 1 holds s = 'a', under the unique index t_by_s.
    let any = "INSERT INTO t (k, s) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING";
    let inserted = db.run(any, vec![int(10), text("a"), int(11), text("k")]).unwrap();
    assert_eq!(inserted.affected, 1, "the row whose s conflicts is skipped, the other inserted");
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE k >= 10 ORDER BY k", vec![])), vec![11]);
    match db.run("INSERT INTO t (k, s) VALUES (12, 'a') ON CONFLICT (k) DO NOTHING", vec![]) {
        Err(Error::UniqueViolation { constraint, .. }) => assert_eq!(constraint, "t_by_s"),
        other => panic!("a conflict off the target fails: {other:?}"),
    }
    assert_eq!(db.run("INSERT INTO t (k, s) VALUES (1, 'zz') ON CONFLICT (k) DO NOTHING", vec![]).unwrap().affected, 0, "the target's conflict is skipped");

    let upsert = "INSERT INTO t (k, n) VALUES ($1, 1), ($2, 2) ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n RETURNING k, n";
    match db.run(upsert, vec![int(20), int(20)]) {
        Err(err @ Error::RowAffectedTwice { .. }) => assert!(err.to_string().contains("key (20)"), "{err}"),
        other => panic!("a row inserted, then updated by the same statement: {other:?}"),
    }
    match db.run(upsert, vec![int(1), int(1)]) {
        Err(Error::RowAffectedTwice { .. }) => {}
        other => panic!("a row updated twice by the same statement: {other:?}"),
    }
    assert!(db.rows("SELECT k FROM t WHERE k = 20", vec![]).is_empty(), "the failed statement left nothing");
    assert_eq!(db.rows(upsert, vec![int(1), int(21)]), vec![vec![int(1), int(11)], vec![int(21), int(2)]], "two keys, each once");
    // DO NOTHING over the same key twice inserts the first and skips the second.
    assert_eq!(db.run("INSERT INTO t (k, n) VALUES (30, 1), (30, 2) ON CONFLICT (k) DO NOTHING", vec![]).unwrap().affected, 1);
}

#[test]
fn aggregates_sort_limit_distinct_and_join() {
    let mut db = Db::seeded();
    assert_eq!(db.rows("SELECT count(*), count(n), sum(n), min(s), max(k) FROM t", vec![]), vec![vec![int(5), int(4), int(63), text("a"), int(4)]]);
    assert_eq!(db.rows("SELECT count(*), sum(n) FROM t WHERE k > 100", vec![]), vec![vec![int(0), Value::Null]], "no rows: one row out");
    assert_eq!(db.rows("SELECT n, count(*) FROM t GROUP BY n ORDER BY n", vec![]), vec![vec![int(-7), int(1)], vec![int(10), int(2)], vec![int(50), int(1)], vec![Value::Null, int(1)]]);
    assert_eq!(ints(&db.rows("SELECT k FROM t ORDER BY n DESC, k", vec![])), vec![3, -5, 1, 2, 4], "NULLs first for DESC");
    assert_eq!(ints(&db.rows("SELECT k FROM t ORDER BY n NULLS FIRST, k DESC LIMIT 3 OFFSET 1", vec![])), vec![4, 2, 1]);
    assert_eq!(ints(&db.rows("SELECT k FROM t ORDER BY k LIMIT $1", vec![int(2)])), vec![-5, 1]);
    assert_eq!(db.rows("SELECT DISTINCT n FROM t WHERE n IS NOT NULL ORDER BY n", vec![]), vec![vec![int(-7)], vec![int(10)], vec![int(50)]]);
    db.run("INSERT INTO kv (a, b, v) VALUES ('a', 1, 'one'), ('a', 2, 'two'), ('c', 1, 'three')", vec![]).unwrap();
    assert_eq!(
        db.rows("SELECT t.k, kv.v FROM t JOIN kv ON kv.a = t.s WHERE t.k = $1 ORDER BY kv.b", vec![int(1)]),
        vec![vec![int(1), text("one")], vec![int(1), text("two")]]
    );
    assert_eq!(db.rows("SELECT avg(n) FROM t WHERE n = 10", vec![]), vec![vec![Value::Double(10.0)]]);
}

/// A key range over several partitions comes out in key order (the executor merges the
/// partitions' ranges), so an ORDER BY of the key needs no Sort there either, and a LIMIT
/// reads at most its rows from each partition: a page of a table larger than
/// `scan-rows-max`, as the server's definitions are read at start. A full scan ordered by
/// the key is the same: the key range of the whole table.
#[test]
fn multi_partition_key_ranges_come_in_key_order_and_a_limit_reads_a_page() {
    let mut db = Db { partitions: 3, ..Db::new() };
    let keys: Vec<i64> = (0..40).map(|i| (i * 37) % 101 - 50).collect();
    for k in &keys {
        db.run("INSERT INTO t (k, n) VALUES ($1, $2)", vec![int(*k), int(k % 3)]).unwrap();
        db.run("INSERT INTO kv (a, b) VALUES ($1, $2), ($1, $3)", vec![text(&format!("n{:03}", k + 50)), int(*k), int(k + 1000)]).unwrap();
    }
    let mut ascending = keys.clone();
    ascending.sort_unstable();
    let descending: Vec<i64> = ascending.iter().rev().copied().collect();
    let partitions = |rows: &[Vec<u8>]| rows.iter().map(|k| k[..2].to_vec()).collect::<std::collections::HashSet<_>>().len();
    assert_eq!(partitions(&db.data.0.keys().cloned().collect::<Vec<_>>()), 3, "the rows lie on every partition");

    for (sql, want) in [
        ("SELECT k FROM t WHERE k >= -1000 ORDER BY k LIMIT $1", ascending.clone()),
        ("SELECT k FROM t WHERE k < 1000 ORDER BY k DESC LIMIT $1", descending.clone()),
        ("SELECT k FROM t WHERE k > -20 ORDER BY k LIMIT $1", ascending.iter().copied().filter(|k| *k > -20).collect()),
        ("SELECT k FROM t WHERE k > -1000 AND n > 0 ORDER BY k LIMIT $1", ascending.iter().copied().filter(|k| k % 3 > 0).collect()),
        ("SELECT k FROM t ORDER BY k LIMIT $1", ascending.clone()),
        ("SELECT k FROM t ORDER BY k DESC LIMIT $1", descending.clone()),
        ("SELECT k FROM t WHERE k % 3 <> 0 ORDER BY k DESC LIMIT $1", descending.iter().copied().filter(|k| k % 3 != 0).collect()),
    ] {
        let plan = db.catalog.prepare(sql).unwrap().plan.to_string();
        assert!(plan.contains("key ") && !plan.contains("Sort"), "{sql}: merged in key order, not sorted:\n{plan}");
        for limit in [1, 4, 100] {
            assert_eq!(ints(&db.rows(sql, vec![int(limit)])), want.iter().copied().take(limit as usize).collect::<Vec<_>>(), "{sql} LIMIT {limit}");
        }
    }
    // Key order is the key's columns' order: a page of (a, b) after a key, as the server
    // pages its workflow versions by (name, version).
    let after = "SELECT a, b FROM kv WHERE a > $1 ORDER BY a, b LIMIT $2";
    let page: Vec<(String, i64)> = db.rows(after, vec![text("n040"), int(5)]).into_iter().map(|r| match (&r[0], &r[1]) {
        (Value::Text(a), Value::Int(b)) => (a.clone(), *b),
        other => panic!("{other:?}"),
    }).collect();
    let mut all: Vec<(String, i64)> = keys.iter().flat_map(|k| [(format!("n{:03}", k + 50), *k), (format!("n{:03}", k + 50), k + 1000)]).filter(|(a, _)| a.as_str() > "n040").collect();
    all.sort();
    assert_eq!(page, all[..5].to_vec());

    // A page of a table larger than scan-rows-max: each partition reads at most the page.
    db.limits = Limits { scan_rows_max: 6, result_rows_max: 100, write_set_max: 100 };
    db.data.1.set(0);
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE k > -1000 ORDER BY k LIMIT 5", vec![])), ascending[..5].to_vec());
    assert!(db.data.1.get() <= 15, "{} rows read for a page of 5 over 3 partitions", db.data.1.get());
    assert!(matches!(db.run("SELECT k FROM t WHERE k > -1000 ORDER BY k", vec![]), Err(Error::LimitExceeded { option: "scan-rows-max", .. })), "without a limit the range is read whole");
    db.data.1.set(0);
    assert_eq!(ints(&db.rows("SELECT k FROM t ORDER BY k DESC LIMIT 5", vec![])), descending[..5].to_vec());
    assert!(db.data.1.get() <= 15, "{} rows read for a page of 5 of the whole table over 3 partitions", db.data.1.get());
    assert!(matches!(db.run("SELECT k FROM t ORDER BY k", vec![]), Err(Error::LimitExceeded { option: "scan-rows-max", .. })), "without a limit the table is read whole");
}

/// A statement that fails leaves none of its writes: a body that catches the error goes on,
/// and commits, as if the statement had not run (the rows and index entries it wrote before
/// failing are taken back); the statements before it keep theirs.
#[test]
fn a_failed_statement_leaves_none_of_its_writes() {
    // On one partition, and over three as a multi-partition transaction runs.
    for partitions in [1, 3] {
        a_failed_statement_leaves_none_of_its_writes_on(partitions);
    }
}

fn a_failed_statement_leaves_none_of_its_writes_on(partitions: u16) {
    let mut db = Db::seeded_on(partitions);
    let outcomes = db.txn_through_errors(&[
        ("INSERT INTO t (k, s, n) VALUES (10, 'q', 77)", vec![]),
        // Row 11 is written (and its index entries), then row 12's `s` is taken by row 1.
        ("INSERT INTO t (k, s, n) VALUES (11, 'r', 78), (12, 'a', 79)", vec![]),
        // Row 1 gets 'u' (its index entries move), then row 2 may not have it too.
        ("UPDATE t SET s = 'u', n = 5 WHERE k >= 1 AND k <= 2", vec![]),
        // Row 4's `n` changes (and its index entry), then row 10's overflows.
        ("UPDATE t SET n = 9223372036854775800 + n WHERE k >= 3", vec![]),
        ("DELETE FROM t WHERE k = 10", vec![]),
        // Row 10, deleted above, is written again, then row 3's key is taken.
        ("INSERT INTO t (k, s, n) VALUES (10, 'q2', 76), (3, 'dup', 1)", vec![]),
        ("SELECT k FROM t WHERE n = 78", vec![]),
    ]);
    let failed: Vec<bool> = outcomes.iter().map(Result::is_err).collect();
    assert_eq!(failed, [false, true, true, true, false, true, false], "{outcomes:?}");
    assert!(outcomes[6].as_ref().unwrap().rows.is_empty(), "the failed insert's row is not seen after it");
    // Committed: the seeded rows as they were, row 10 deleted; no index entry of a row
    // taken back (a lookup through one would find its row missing: Corrupt).
    assert_eq!(ints(&db.rows("SELECT k FROM t", vec![])), vec![-5, 1, 2, 3, 4]);
    for n in [78, 79, 5, 76] {
        assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n = $1", vec![int(n)])), Vec::<i64>::new(), "n = {n}");
    }
    for (s, k) in [("a", vec![1]), ("u", vec![]), ("r", vec![]), ("q", vec![]), ("q2", vec![]), ("e", vec![-5_i64])] {
        assert_eq!(ints(&db.rows("SELECT k FROM t WHERE s = $1", vec![text(s)])), k, "s = {s}");
    }
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n = 10 ORDER BY k", vec![])), vec![1, 2], "rows 1 and 2 keep their n, and its index entries");
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n = -7", vec![])), vec![4], "row 4 keeps its n");
    assert_eq!(ints(&db.rows("SELECT k FROM t WHERE n > 1000", vec![])), Vec::<i64>::new());
}

#[test]
fn descending_key_ranges_and_limits_read_only_what_they_return() {
    let mut db = Db::new();
    for (a, b) in [("x", -1), ("x", 3), ("x", 10), ("x", 20), ("x\0", 0), ("w", 99), ("y", -50)] {
        db.run("INSERT INTO kv (a, b) VALUES ($1, $2)", vec![text(a), int(b)]).unwrap();
    }
    let latest = "SELECT b FROM kv WHERE a = $1 ORDER BY b DESC LIMIT $2 OFFSET $3";
    let plan = db.catalog.prepare(latest).unwrap().plan.to_string();
    assert!(plan.contains("[key range, descending]") && !plan.contains("Sort"), "read backwards, not sorted:\n{plan}");
    let page = |db: &mut Db, limit: Value, offset: i64| ints(&db.rows(latest, vec![text("x"), limit, int(offset)]));
    assert_eq!(page(&mut db, Value::Null, 0), vec![20, 10, 3, -1], "no other prefix leaks in at either end");
    assert_eq!(page(&mut db, int(2), 0), vec![20, 10]);
    assert_eq!(page(&mut db, int(2), 1), vec![10, 3]);
    assert_eq!(page(&mut db, int(9), 3), vec![-1]);
    assert_eq!(page(&mut db, int(0), 0), Vec::<i64>::new());
    assert_eq!(ints(&db.rows("SELECT b FROM kv WHERE a = 'x' AND b < 10 ORDER BY b DESC LIMIT 1", vec![])), vec![3], "a bound, then backwards");
    assert_eq!(ints(&db.rows("SELECT b FROM kv WHERE a = 'x' AND b > 3 ORDER BY b DESC", vec![])), vec![20, 10]);

    // The transaction's own inserts and deletes, before and past the rows the limit reads.
    let out = db
        .txn(&[
            ("INSERT INTO kv (a, b) VALUES ('x', 15), ('x', -9)", vec![]),
            ("DELETE FROM kv WHERE a = 'x' AND b = 20", vec![]),
            ("DELETE FROM kv WHERE a = 'x' AND b = 10", vec![]),
            (latest, vec![text("x"), int(2), int(0)]),
            ("SELECT b FROM kv WHERE a = 'x' LIMIT 2", vec![]),
            (latest, vec![text("x"), int(10), int(0)]),
        ])
        .unwrap();
    assert_eq!(ints(&out[3].rows), vec![15, 3]);
    assert_eq!(ints(&out[4].rows), vec![-9, -1], "a limit over an ascending range");
    assert_eq!(ints(&out[5].rows), vec![15, 3, -1, -9]);

    // A limit reads no row past its last from the snapshot: not one more to see whether more
    // exist. Without one, the range is read whole.
    let scanned = |db: &mut Db, sql: &str, params: Vec<Value>| {
        db.data.1.set(0);
        let rows = ints(&db.rows(sql, params));
        (rows, db.data.1.get())
    };
    assert_eq!(scanned(&mut db, latest, vec![text("x"), int(2), int(0)]), (vec![15, 3], 2));
    assert_eq!(scanned(&mut db, latest, vec![text("x"), int(1), int(1)]), (vec![3], 2), "the offset's row and the limit's");
    assert_eq!(scanned(&mut db, "SELECT b FROM kv WHERE a = 'x' LIMIT 1", vec![]), (vec![-9], 1));
    assert_eq!(scanned(&mut db, "SELECT b FROM kv WHERE a = 'x'", vec![]), (vec![-9, -1, 3, 15], 4));

    // A limit within scan-rows-max reads only its rows; an unlimited range over it still fails.
    db.limits = Limits { scan_rows_max: 3, result_rows_max: 100, write_set_max: 100 };
    assert_eq!(page(&mut db, int(3), 0), vec![15, 3, -1]);
    assert_eq!(ints(&db.rows("SELECT b FROM kv WHERE a = 'x' LIMIT 2", vec![])), vec![-9, -1]);
    db.data.1.set(0);
    assert!(matches!(db.run(latest, vec![text("x"), Value::Null, int(0)]), Err(Error::LimitExceeded { option: "scan-rows-max", .. })));
    assert_eq!(db.data.1.get(), 4, "an unlimited range reads one row past scan-rows-max to know it is over");
    assert!(matches!(db.run(latest, vec![text("x"), int(2), int(2)]), Err(Error::LimitExceeded { option: "scan-rows-max", .. })), "the offset's rows are read too");
}

#[test]
fn a_transaction_sees_its_own_writes_and_bounds_hold() {
    let mut db = Db::seeded();
    let out = db
        .txn(&[
            ("INSERT INTO t (k, n) VALUES (10, 1), (11, 2)", vec![]),
            ("DELETE FROM t WHERE k = 1", vec![]),
            ("SELECT k FROM t WHERE k >= 0", vec![]),
            ("SELECT k FROM t WHERE n >= 1", vec![]),
        ])
        .unwrap();
    assert_eq!(ints(&out[2].rows), vec![2, 3, 4, 10, 11]);
    assert_eq!(ints(&out[3].rows), vec![10, 11, 2, -5]);
    db.limits.result_rows_max = 2;
    assert!(matches!(db.run("SELECT k FROM t", vec![]), Err(Error::LimitExceeded { option: "result-rows-max", .. })));
    db.limits = Limits { scan_rows_max: 3, result_rows_max: 100, write_set_max: 100 };
    assert!(matches!(db.run("SELECT count(*) FROM t", vec![]), Err(Error::LimitExceeded { option: "scan-rows-max", .. })));
    db.limits = Limits { scan_rows_max: 100, result_rows_max: 100, write_set_max: 3 };
    assert!(matches!(db.run("INSERT INTO t (k, s, n) VALUES (50, 'p', 1), (51, 'q', 2)", vec![]), Err(Error::LimitExceeded { option: "write-set-max", .. })));
}

/// `result-rows-max` holds a statement's result only: an aggregate over more rows returns
/// its one row. The rows a plan's step holds on the way (a join's output, an aggregate's
/// input) are held to `scan-rows-max`, as one access's are, and the error names that step.
#[test]
fn result_rows_max_holds_the_result_and_scan_rows_max_each_step() {
    let mut db = Db::seeded();
    for (a, b) in [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("c", 1), ("c", 2), ("c", 3), ("c", 4), ("e", 1), ("e", 2), ("e", 3), ("e", 4)] {
        db.run("INSERT INTO kv (a, b) VALUES ($1, $2)", vec![text(a), int(b)]).unwrap();
    }
    let joined = "SELECT count(*) FROM t JOIN kv ON kv.a = t.s";
    db.limits = Limits { scan_rows_max: 100, result_rows_max: 1, write_set_max: 100 };
    assert_eq!(ints(&db.rows("SELECT count(*) FROM t", vec![])), vec![5], "five rows counted, one returned");
    assert_eq!(ints(&db.rows(joined, vec![])), vec![12]);
    assert_eq!(ints(&db.rows("SELECT count(DISTINCT a) FROM kv", vec![])), vec![3]);
    match db.run("SELECT k FROM t WHERE k > 0", vec![]) {
        Err(Error::LimitExceeded { option: "result-rows-max", size: 4, limit: 1, .. }) => {}
        other => panic!("four rows returned past result-rows-max 1: {other:?}"),
    }
    // A sort (of a column that is not the key) under a LIMIT holds all five rows; the result
    // is two.
    db.limits.result_rows_max = 2;
    assert_eq!(ints(&db.rows("SELECT k FROM t ORDER BY n DESC LIMIT 2", vec![])), vec![3, -5], "NULL first, then 50");
    assert!(matches!(db.run("SELECT k FROM t ORDER BY n DESC", vec![]), Err(Error::LimitExceeded { option: "result-rows-max", size: 5, .. })), "a sort that is the result row for row");
    // Each access reads at most five rows (t's five, four of kv per name); the join holds twelve.
    db.limits = Limits { scan_rows_max: 5, result_rows_max: 100, write_set_max: 100 };
    assert_eq!(ints(&db.rows("SELECT count(*) FROM t", vec![])), vec![5]);
    match db.run(joined, vec![]) {
        Err(err @ Error::LimitExceeded { option: "scan-rows-max", limit: 5, .. }) => assert!(err.to_string().contains("one step of a statement's plan"), "{err}"),
        other => panic!("a join held more rows than scan-rows-max: {other:?}"),
    }
}

#[test]
fn doubles_and_text_keys_order_as_sql() {
    let mut db = Db::new();
    db.catalog = db.catalog.apply("CREATE TABLE f (x DOUBLE PRIMARY KEY); CREATE TABLE b (x BYTEA PRIMARY KEY)").unwrap();
    for x in [1.5, -0.0, -2.0, f64::INFINITY, f64::NAN, 0.25] {
        db.run("INSERT INTO f VALUES ($1)", vec![Value::Double(x)]).unwrap();
    }
    match db.run("INSERT INTO f VALUES ($1)", vec![Value::Double(0.0)]) {
        Err(Error::UniqueViolation { .. }) => {}
        other => panic!("0.0 and -0.0 are one key: {other:?}"),
    }
    let xs: Vec<String> = db.rows("SELECT x FROM f", vec![]).iter().map(|r| r[0].to_string()).collect();
    assert_eq!(xs, ["-2.0", "-0.0", "0.25", "1.5", "inf", "NaN"]);
    assert_eq!(db.rows("SELECT count(*) FROM f WHERE x > 0", vec![]), vec![vec![int(4)]], "NaN sorts above every number");
    for x in [vec![0u8, 1], vec![0], vec![], vec![0xFF]] {
        db.run("INSERT INTO b VALUES ($1)", vec![Value::Bytes(x)]).unwrap();
    }
    let bs: Vec<Value> = db.rows("SELECT x FROM b", vec![]).into_iter().map(|mut r| r.remove(0)).collect();
    assert_eq!(bs, vec![Value::Bytes(vec![]), Value::Bytes(vec![0]), Value::Bytes(vec![0, 1]), Value::Bytes(vec![0xFF])]);
}

#[test]
fn a_descending_key_column_stores_rows_in_its_order() {
    let mut db = Db::new();
    for (n, v) in [("b", 2), ("a", 1), ("a\0", 3), ("", 4), ("c", 5)] {
        db.run("INSERT INTO rev (n, v) VALUES ($1, $2)", vec![text(n), int(v)]).unwrap();
    }
    let names = |rows: Vec<Vec<Value>>| rows.into_iter().map(|mut r| r.remove(0)).collect::<Vec<_>>();
    let all = [text("c"), text("b"), text("a\0"), text("a"), text("")];
    assert_eq!(names(db.rows("SELECT n FROM rev", vec![])), all, "a full scan comes in the key's declared order");
    assert_eq!(db.rows("SELECT v FROM rev WHERE n = 'a'", vec![]), vec![vec![int(1)]], "a point get finds the inverted key");
    assert_eq!(names(db.rows("SELECT n FROM rev WHERE n >= 'a' AND n < 'c'", vec![])), all[1..4].to_vec(), "bounds on a descending column");
    assert_eq!(names(db.rows("SELECT n FROM rev WHERE n > 'a'", vec![])), all[..3].to_vec());
    assert_eq!(names(db.rows("SELECT n FROM rev WHERE n <= 'a'", vec![])), all[3..].to_vec());
    assert!(db.rows("SELECT n FROM rev WHERE n > $1", vec![Value::Null]).is_empty(), "a NULL bound matches nothing");
    // Writes through the key: an upsert finds the row, a delete removes it.
    db.run("INSERT INTO rev (n, v) VALUES ('b', 20) ON CONFLICT (n) DO UPDATE SET v = excluded.v", vec![]).unwrap();
    assert_eq!(db.rows("SELECT v FROM rev WHERE n = 'b'", vec![]), vec![vec![int(20)]]);
    assert!(matches!(db.run("INSERT INTO rev (n, v) VALUES ('c', 0)", vec![]), Err(Error::UniqueViolation { .. })));
    assert_eq!(db.run("DELETE FROM rev WHERE n = 'a\0'", vec![]).unwrap().affected, 1);
    assert_eq!(names(db.rows("SELECT n FROM rev ORDER BY n DESC", vec![])), [text("c"), text("b"), text("a"), text("")]);
    assert_eq!(names(db.rows("SELECT n FROM rev ORDER BY n LIMIT 2", vec![])), [text(""), text("a")], "the reverse order, sorted");
    // An index entry ends in the row's key bytes, inverted: a lookup through it finds the
    // row, and the unique index refuses a second row with its value.
    assert_eq!(names(db.rows("SELECT n FROM rev WHERE v = 4", vec![])), [text("")]);
    assert!(matches!(db.run("INSERT INTO rev (n, v) VALUES ('d', 4)", vec![]), Err(Error::UniqueViolation { .. })));
    db.run("UPDATE rev SET v = 40 WHERE n = ''", vec![]).unwrap();
    assert_eq!(names(db.rows("SELECT n FROM rev WHERE v = 40", vec![])), [text("")], "the entry moved with the value");
    assert!(db.rows("SELECT n FROM rev WHERE v = 4", vec![]).is_empty());
    // A descending column inside a key: point gets, and a range read backwards.
    for (u, at, s) in [(1, 5, "a"), (1, 5, "b"), (1, 7, "a"), (2, 5, "a")] {
        db.run("INSERT INTO tl (u, at, s) VALUES ($1, $2, $3)", vec![int(u), int(at), text(s)]).unwrap();
    }
    let get = "SELECT s FROM tl WHERE u = $1 AND at = $2 AND s = $3";
    assert_eq!(db.rows(get, vec![int(1), int(5), text("b")]), vec![vec![text("b")]]);
    assert!(db.rows(get, vec![int(1), int(6), text("b")]).is_empty());
    let oldest = "SELECT at, s FROM tl WHERE u = $1 ORDER BY at, s LIMIT 2";
    let plan = db.catalog.prepare(oldest).unwrap().plan.to_string();
    assert!(plan.contains("[key range, descending]") && !plan.contains("Sort"), "against the declared order, read backwards:\n{plan}");
    assert_eq!(db.rows(oldest, vec![int(1)]), vec![vec![int(5), text("a")], vec![int(5), text("b")]]);
}

#[test]
fn a_lone_min_or_max_of_the_next_key_column_reads_one_row() {
    let mut db = Db::new();
    for (a, b, v) in [("x", -1, "skip"), ("x", 3, "keep"), ("x", 10, "skip"), ("x", 20, "skip"), ("w", 99, "keep"), ("y", -50, "keep")] {
        db.run("INSERT INTO kv (a, b, v) VALUES ($1, $2, $3)", vec![text(a), int(b), text(v)]).unwrap();
    }
    for (u, at) in [(1, 5), (1, 9), (1, -2), (2, 40)] {
        db.run("INSERT INTO tl (u, at, s) VALUES ($1, $2, 'a')", vec![int(u), int(at)]).unwrap();
    }
    let one = |db: &mut Db, sql: &str| {
        db.data.1.set(0);
        let row = db.rows(sql, vec![]).remove(0);
        (row, db.data.1.get())
    };
    assert_eq!(one(&mut db, "SELECT max(b) FROM kv WHERE a = 'x'"), (vec![int(20)], 1));
    assert_eq!(one(&mut db, "SELECT min(b) FROM kv WHERE a = 'x'"), (vec![int(-1)], 1));
    assert_eq!(one(&mut db, "SELECT max(b) FROM kv WHERE a = 'x' AND b < 10"), (vec![int(3)], 1), "a bound, then the row below it");
    assert_eq!(one(&mut db, "SELECT max(b) FROM kv WHERE a = 'x' AND v = 'keep'").0, vec![int(3)], "the first row that passes the filter");
    assert_eq!(one(&mut db, "SELECT max(b), max(b) * 2 FROM kv WHERE a = 'x'").0, vec![int(20), int(40)]);
    assert_eq!(one(&mut db, "SELECT max(b) FROM kv WHERE a = 'nobody'"), (vec![Value::Null], 0), "NULL over no row");
    assert_eq!(one(&mut db, "SELECT max(at) FROM tl WHERE u = 1"), (vec![int(9)], 1), "a descending column, read forwards");
    assert_eq!(one(&mut db, "SELECT min(at) FROM tl WHERE u = 1"), (vec![int(-2)], 1));
    assert_eq!(one(&mut db, "SELECT min(b), max(b) FROM kv WHERE a = 'x'"), (vec![int(-1), int(20)], 4), "both ends: the whole range");
    // The transaction's own writes at the end the read starts from.
    let out = db
        .txn(&[
            ("INSERT INTO kv (a, b) VALUES ('x', 30)", vec![]),
            ("DELETE FROM kv WHERE a = 'x' AND b = -1", vec![]),
            ("SELECT max(b) FROM kv WHERE a = 'x'", vec![]),
            ("SELECT min(b) FROM kv WHERE a = 'x'", vec![]),
        ])
        .unwrap();
    assert_eq!((out[2].rows.clone(), out[3].rows.clone()), (vec![vec![int(30)]], vec![vec![int(3)]]));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(192))]

    /// A key with descending columns, any rows, any bounds on its descending column, either
    /// order of the whole key or a mixed one, any limit: a query returns what filtering and
    /// sorting the rows by SQL's rules would; the declared order reads forwards, its reverse
    /// backwards, neither sorts, and a limit reads only the rows it returns.
    #[test]
    fn descending_key_columns_keep_sql_order_and_bounds(
        rows in proptest::collection::btree_set((0i64..3, -6i64..6, "[ab\x00]{0,2}"), 0..30),
        lower in proptest::option::of((-7i64..7, proptest::bool::ANY)),
        upper in proptest::option::of((-7i64..7, proptest::bool::ANY)),
        order in 0usize..3,
        limit in proptest::option::of(0usize..6),
    ) {
        let mut db = Db::new();
        for (u, at, s) in &rows {
            db.run("INSERT INTO tl (u, at, s) VALUES ($1, $2, $3)", vec![int(*u), int(*at), text(s)]).unwrap();
        }
        let mut sql = "SELECT at, s FROM tl WHERE u = 1".to_owned();
        if let Some((v, inclusive)) = lower {
            sql += &format!(" AND at {} {v}", if inclusive { ">=" } else { ">" });
        }
        if let Some((v, inclusive)) = upper {
            sql += &format!(" AND at {} {v}", if inclusive { "<=" } else { "<" });
        }
        sql += [" ORDER BY at DESC, s DESC", " ORDER BY at, s", " ORDER BY at DESC, s"][order];
        if let Some(n) = limit {
            sql += &format!(" LIMIT {n}");
        }
        let plan = db.catalog.prepare(&sql).unwrap().plan.to_string();
        match order {
            0 => proptest::prop_assert!(plan.contains("[key range]") && !plan.contains("Sort"), "forwards:\n{}", plan),
            1 => proptest::prop_assert!(plan.contains("[key range, descending]") && !plan.contains("Sort"), "backwards:\n{}", plan),
            _ => proptest::prop_assert!(plan.contains("Sort"), "sorted:\n{}", plan),
        }
        let in_bounds = |at: i64| {
            lower.is_none_or(|(v, inclusive)| at > v || (inclusive && at == v)) && upper.is_none_or(|(v, inclusive)| at < v || (inclusive && at == v))
        };
        let mut expected: Vec<(i64, String)> = rows.iter().filter(|(u, at, _)| *u == 1 && in_bounds(*at)).map(|(_, at, s)| (*at, s.clone())).collect();
        match order {
            0 => expected.sort_by(|a, b| b.cmp(a)),
            1 => expected.sort(),
            _ => expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1))),
        }
        let matching = expected.len();
        expected.truncate(limit.unwrap_or(usize::MAX));
        db.data.1.set(0);
        let got: Vec<(i64, String)> = db
            .rows(&sql, vec![])
            .into_iter()
            .map(|r| match (&r[0], &r[1]) {
                (Value::Int(at), Value::Text(s)) => (*at, s.clone()),
                _ => panic!("{r:?}"),
            })
            .collect();
        proptest::prop_assert_eq!(&got, &expected);
        let read = db.data.1.get();
        match (order, limit) {
            (0 | 1, Some(n)) => proptest::prop_assert_eq!(read, n.min(matching), "a limit reads only what it returns"),
            _ => proptest::prop_assert_eq!(read, matching, "the range holds exactly the matching rows"),
        }
    }

    /// Any committed rows, any inserts and deletes by the transaction itself, either
    /// direction, with or without a filter, any limit, offset and scan bound: a limited key
    /// range returns what sorting and filtering the whole range and then limiting would, and
    /// fails exactly when the rows it needs lie past `scan-rows-max`.
    #[test]
    fn limited_key_ranges_equal_sorting_everything(
        committed in proptest::collection::btree_set(-40i64..40, 0..40),
        inserts in proptest::collection::btree_set(-40i64..40, 0..8),
        deletes in proptest::collection::btree_set(-40i64..40, 0..8),
        descending: bool,
        filtered: bool,
        limit in 0i64..12,
        offset in 0i64..6,
        scan_rows_max in 1usize..48,
    ) {
        // A row passes the filter when its b is a multiple of 3.
        let tag = |b: i64| text(if b.rem_euclid(3) == 0 { "keep" } else { "skip" });
        let mut db = Db::new();
        db.run("INSERT INTO kv (a, b, v) VALUES ('w', 99, 'keep'), ('x\0', -99, 'keep'), ('y', -99, 'keep')", vec![]).unwrap();
        for b in &committed {
            db.run("INSERT INTO kv (a, b, v) VALUES ('x', $1, $2)", vec![int(*b), tag(*b)]).unwrap();
        }
        db.limits.scan_rows_max = scan_rows_max;
        let mut model = committed;
        let mut statements = Vec::new();
        for b in &inserts {
            statements.push(("INSERT INTO kv (a, b, v) VALUES ('x', $1, $2) ON CONFLICT DO NOTHING", vec![int(*b), tag(*b)]));
            model.insert(*b);
        }
        for b in &deletes {
            statements.push(("DELETE FROM kv WHERE a = 'x' AND b = $1", vec![int(*b)]));
            model.remove(b);
        }
        let sql = match (descending, filtered) {
            (true, true) => "SELECT b FROM kv WHERE a = 'x' AND v = 'keep' ORDER BY b DESC LIMIT $1 OFFSET $2",
            (true, false) => "SELECT b FROM kv WHERE a = 'x' ORDER BY b DESC LIMIT $1 OFFSET $2",
            (false, true) => "SELECT b FROM kv WHERE a = 'x' AND v = 'keep' ORDER BY b LIMIT $1 OFFSET $2",
            (false, false) => "SELECT b FROM kv WHERE a = 'x' ORDER BY b LIMIT $1 OFFSET $2",
        };
        statements.push((sql, vec![int(limit), int(offset)]));
        let order: Vec<i64> = if descending { model.iter().rev().copied().collect() } else { model.iter().copied().collect() };
        let passes = |b: &i64| !filtered || b.rem_euclid(3) == 0;
        let expected: Vec<i64> = order.iter().copied().filter(passes).skip(offset as usize).take(limit as usize).collect();
        // The rows that must be read: up to the last one returned, or all when too few pass.
        let cap = (limit + offset) as usize;
        let needed = if cap == 0 { 0 } else { order.iter().enumerate().filter(|(_, b)| passes(b)).nth(cap - 1).map_or(order.len(), |(i, _)| i + 1) };
        match db.txn(&statements) {
            Ok(out) => {
                proptest::prop_assert!(needed <= scan_rows_max, "read {needed} rows past scan-rows-max {scan_rows_max}");
                proptest::prop_assert_eq!(ints(&out[statements.len() - 1].rows), expected);
            }
            Err(Error::LimitExceeded { option: "scan-rows-max", .. }) => proptest::prop_assert!(needed > scan_rows_max, "failed needing only {needed} rows"),
            Err(err) => proptest::prop_assert!(false, "{err}"),
        }
    }
}
