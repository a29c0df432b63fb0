//! The engine through its public API: functions as transactions, commit through the log,
//! rollback, recording, recovery, checkpoints, bounds and multi-partition transactions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use comb_backend::{CATALOG_TAG, Engine, EngineOptions, Error, Function, Invocation, LogRecord, TRACE_TAG, Txn, decode_payload, partition_tag};
use comb_log::ANY_TAG;
use futures::StreamExt;
use serde_json::{Value as Json, json};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn options(partitions: u16) -> EngineOptions {
    EngineOptions { partitions, ..EngineOptions::default() }
}

const DDL: &str = "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)";

fn id(input: &Json, field: &str) -> i64 {
    input[field].as_i64().expect("an integer field")
}

/// Registers the functions the tests use; `runs` counts bodies that ran.
fn register(engine: &Engine, runs: &Arc<AtomicUsize>) {
    let r = Arc::clone(runs);
    engine
        .register(
            Function::new("deposit")
                .statement("add", "INSERT INTO accounts (id, balance) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + excluded.balance RETURNING balance")
                .partition_by("id")
                .run(move |tx: &mut Txn<'_>, input| {
                    r.fetch_add(1, Ordering::SeqCst);
                    let balance: i64 = tx.query_one("add", (id(&input, "id"), id(&input, "amount")))?;
                    Ok(json!({ "balance": balance }))
                }),
        )
        .unwrap();
    engine
        .register(
            Function::new("balance")
                .statement("get", "SELECT balance FROM accounts WHERE id = $1")
                .partition_by("id")
                .run(|tx, input| Ok(json!(tx.query_opt::<i64>("get", (id(&input, "id"),))?))),
        )
        .unwrap();
    engine
        .register(
            Function::new("deposit_then_fail")
                .statement("add", "INSERT INTO accounts (id, balance) VALUES ($1, 1)")
                .partition_by("id")
                .run(|tx, input| {
                    tx.execute("add", (id(&input, "id"),))?;
                    if input["panic"].as_bool() == Some(true) {
                        panic!("the body panicked on purpose");
                    }
                    Err("insufficient funds".into())
                }),
        )
        .unwrap();
    engine
        .register(
            // No partition key: a multi-partition transaction.
            Function::new("transfer")
                .statement("take", "UPDATE accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2")
                .statement("give", "UPDATE accounts SET balance = balance + $2 WHERE id = $1")
                .run(|tx, input| {
                    let amount = id(&input, "amount");
                    if tx.execute("take", (id(&input, "from"), amount))? == 0 {
                        return Err("insufficient funds".into());
                    }
                    if tx.execute("give", (id(&input, "to"), amount))? == 0 {
                        return Err("no such account".into());
                    }
                    Ok(json!("ok"))
                }),
        )
        .unwrap();
    engine
        .register(Function::new("total").statement("sum", "SELECT sum(balance), count(*) FROM accounts").run(|tx, _| {
            let (sum, count): (Option<i64>, i64) = tx.query_one("sum", ())?;
            Ok(json!({ "sum": sum, "count": count }))
        }))
        .unwrap();
}

async fn open(dir: &std::path::Path, partitions: u16, runs: &Arc<AtomicUsize>) -> Engine {
    let engine = Engine::open(dir, options(partitions)).await.unwrap();
    if engine.catalog().table("accounts").is_none() {
        engine.execute_ddl(DDL).await.unwrap();
    }
    register(&engine, runs);
    engine
}

/// Commit records after `lsn`. Trace records of reads and failures are appended after their
/// replies, without waiting, so the raw tail is not a count of commits.
async fn commits_after(engine: &Engine, lsn: u64) -> usize {
    let mut commits = 0;
    let mut next = lsn + 1;
    while let Some(record) = engine.log().read_next(ANY_TAG, next).await.unwrap() {
        if !record.tags.contains(&TRACE_TAG) {
            commits += 1;
        }
        next = record.lsn + 1;
    }
    commits
}

async fn balance(engine: &Engine, account: i64) -> Json {
    engine.invoke(Invocation::new("balance", json!({ "id": account }))).await.unwrap().value
}

#[test]
fn functions_commit_through_the_log_and_see_earlier_writes() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        let tail = engine.log().tail();
        let out = engine.invoke(Invocation::new("deposit", json!({ "id": 1, "amount": 10 }))).await.unwrap();
        assert_eq!(out.value, json!({ "balance": 10 }));
        assert_eq!(out.lsn, Some(tail + 1), "one commit is one record");
        let record = engine.log().read_next(ANY_TAG, tail + 1).await.unwrap().unwrap();
        let p = engine.partition_of(&comb_backend::Value::Int(1));
        assert_eq!(record.tags, vec![partition_tag(p)]);
        let LogRecord::Commit(commit) = decode_payload(&record.payload).unwrap() else { panic!("not a commit") };
        assert_eq!(commit.partitions, vec![u32::from(p)]);
        assert_eq!(commit.writes.len(), 1);
        assert_eq!(commit.writes[0].before, None);
        assert_eq!(commit.invocations[0].function, "deposit");

        // Many concurrent invocations, pipelined: each sees the ones before it.
        let mut handles = Vec::new();
        for i in 0..200 {
            let engine = engine.clone();
            handles.push(tokio::spawn(async move { engine.invoke(Invocation::new("deposit", json!({ "id": i % 4, "amount": 1 }))).await }));
        }
        for h in handles {
            h.await.unwrap().unwrap();
        }
        assert_eq!(balance(&engine, 1).await, json!(60));
        assert_eq!(balance(&engine, 2).await, json!(50));
        assert_eq!(balance(&engine, 99).await, json!(null));
        let out = engine.invoke(Invocation::new("balance", json!({ "id": 1 }))).await.unwrap();
        assert_eq!(out.lsn, None, "a read-only transaction appends nothing");
        assert_eq!(commits_after(&engine, tail).await, 201, "one record per committing invocation");
        engine.close().await.unwrap();
    });
}

/// A call keyed by a TIMESTAMP or DOUBLE column runs on the partition its rows hash to: the
/// key in its input (a JSON integer) is routed as the type its statements take it, not as
/// an integer (which hashes elsewhere, and the statement then refused the partition).
#[test]
fn a_timestamp_or_double_partition_key_routes_to_its_rows_partition() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = Engine::open(dir.path(), options(4)).await.unwrap();
        engine
            .execute_ddl("CREATE TABLE events (at TIMESTAMP PRIMARY KEY, n BIGINT NOT NULL); CREATE TABLE readings (x DOUBLE PRIMARY KEY, n BIGINT NOT NULL);")
            .await
            .unwrap();
        for (name, sql, field) in [("event", "INSERT INTO events (at, n) VALUES ($1, $2)", "at"), ("reading", "INSERT INTO readings (x, n) VALUES ($1, $2)", "x")] {
            let function = Function::new(name).statement("put", sql).partition_by(field).run(move |tx, input| {
                tx.execute("put", (id(&input, field), 1_i64))?;
                Ok(json!(null))
            });
            engine.register(function).unwrap();
        }
        let mut partitions = std::collections::BTreeSet::new();
        for k in 1..=24 {
            for (name, field) in [("event", "at"), ("reading", "x")] {
                let out = engine.invoke(Invocation::new(name, json!({ field: k }))).await.unwrap_or_else(|err| panic!("{name} {k}: {err}"));
                let record = engine.log().read_next(ANY_TAG, out.lsn.unwrap()).await.unwrap().unwrap();
                assert_eq!(record.tags.len(), 1, "{name} {k}: one partition's commit, not a barrier's");
                partitions.insert(record.tags[0]);
            }
        }
        assert!(partitions.len() > 1, "the keys spread over the partitions: {partitions:?}");
        // Statements that take the key as different types would each hash it elsewhere.
        let mixed = Function::new("mixed")
            .statement("event", "INSERT INTO events (at, n) VALUES ($1, 1)")
            .statement("account", "INSERT INTO accounts (id, balance) VALUES ($1, 1)")
            .partition_by("at")
            .run(|_, _| Ok(json!(null)));
        engine.execute_ddl(DDL).await.unwrap();
        match engine.register(mixed) {
            Err(Error::InvalidFunction { message, .. }) => assert!(message.contains("TIMESTAMP in event, BIGINT in account"), "{message}"),
            other => panic!("a function with two types of its partition key registered: {other:?}"),
        }
        engine.close().await.unwrap();
    });
}

/// An invocation that holds its executor (while a call queued behind it stays unanswered
/// for 110 ms) is counted as a slow step past both bounds (and logged), and the quick ones
/// before it are not all counted (they take microseconds).
#[test]
fn a_step_that_holds_its_executor_is_counted_slow() {
    const HOLD: std::time::Duration = std::time::Duration::from_millis(110);
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        // The function holds its executor until the test lets it go, and says it started.
        let (started, has_started) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, released) = (std::sync::Mutex::new(started), std::sync::Mutex::new(released));
        engine
            .register(Function::new("hold").partition_by("id").run(move |_tx, _input| {
                started.lock().unwrap().send(()).unwrap();
                released.lock().unwrap().recv().unwrap();
                Ok(json!(null))
            }))
            .unwrap();
        for i in 0..20 {
            engine.invoke(Invocation::new("deposit", json!({ "id": i, "amount": 1 }))).await.unwrap();
        }
        let before = engine.slow_steps();
        assert!(before.over_10ms < 20, "20 deposits are not 20 slow steps: {before:?}");
        let held = tokio::spawn({
            let engine = engine.clone();
            async move { engine.invoke(Invocation::new("hold", json!({ "id": 1 }))).await }
        });
        tokio::task::spawn_blocking(move || has_started.recv()).await.unwrap().unwrap();
        // The queue waits behind the held step: a read of the same partition stays
        // unanswered for as long as it is held.
        let mut behind = Box::pin(balance(&engine, 1));
        assert!(tokio::time::timeout(HOLD, &mut behind).await.is_err(), "a call queued behind the held step is not answered");
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        // Answered from inside its step, which is counted once it ends: the read queued
        // behind it on the same partition runs after that.
        behind.await;
        let after = engine.slow_steps();
        assert!(after.over_10ms > before.over_10ms, "the held invocation is a slow step: {after:?}");
        assert!(after.over_100ms > before.over_100ms, "past the second bound too: {after:?}");
        assert!(after.us_max >= HOLD.as_micros() as u64, "{after:?}");
        assert!(after.over_10ms >= after.over_100ms, "{after:?}");
        engine.close().await.unwrap();
    });
}

#[test]
fn errors_and_panics_roll_back_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        let tail = engine.log().tail();
        match engine.invoke(Invocation::new("deposit_then_fail", json!({ "id": 5 }))).await {
            Err(Error::Aborted { function, message }) => assert_eq!((function.as_str(), message.as_str()), ("deposit_then_fail", "insufficient funds")),
            other => panic!("{other:?}"),
        }
        match engine.invoke(Invocation::new("deposit_then_fail", json!({ "id": 5, "panic": true }))).await {
            Err(Error::Panicked { message, .. }) => assert_eq!(message, "the body panicked on purpose"),
            other => panic!("{other:?}"),
        }
        assert_eq!(balance(&engine, 5).await, json!(null));
        // Nothing of a failed transaction reaches the log: only the trace of its failure.
        let mut records = engine.log().subscribe(tail + 1, ANY_TAG);
        let mut failures = Vec::new();
        while failures.len() < 2 {
            let record = tokio::time::timeout(std::time::Duration::from_secs(10), records.next()).await.expect("the failures are traced").unwrap().unwrap();
            match decode_payload(&record.payload).unwrap() {
                // Reads are traced too (the balance check above); keep the failures.
                LogRecord::Trace(trace) => failures.extend(trace.invocations.into_iter().filter_map(|i| Some((i.function, i.error?, i.partition.is_some())))),
                other => panic!("a failed transaction appended {other:?}"),
            }
        }
        assert_eq!(failures, [
            ("deposit_then_fail".to_owned(), "function deposit_then_fail failed and was rolled back: insufficient funds".to_owned(), true),
            ("deposit_then_fail".to_owned(), "function deposit_then_fail panicked and was rolled back: the body panicked on purpose".to_owned(), true),
        ]);
        // A SQL error inside the body passes through as itself.
        engine.invoke(Invocation::new("deposit", json!({ "id": 6, "amount": i64::MAX }))).await.unwrap();
        match engine.invoke(Invocation::new("deposit", json!({ "id": 6, "amount": 1 }))).await {
            Err(Error::Eval { .. }) => {}
            other => panic!("{other:?}"),
        }
        match engine.invoke(Invocation::new("deposit", json!({ "amount": 1 }))).await {
            Err(Error::BadInput { message, .. }) => assert!(message.contains("\"id\""), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(engine.invoke(Invocation::new("nope", json!({}))).await, Err(Error::UnknownFunction { .. })));
        engine.close().await.unwrap();
    });
}

#[test]
fn recorded_invocations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        let call = || Invocation::new("deposit", json!({ "id": 1, "amount": 5 })).id("wf-1", "step-a").record();
        let first = engine.invoke(call()).await.unwrap();
        assert!(!first.replayed && first.lsn.is_some());
        let again = engine.invoke(call()).await.unwrap();
        assert_eq!((again.value.clone(), again.replayed, again.lsn), (first.value.clone(), true, None));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the second invocation ran nothing");
        // Another step of the same workflow runs.
        engine.invoke(Invocation::new("deposit", json!({ "id": 1, "amount": 5 })).id("wf-1", "step-b").record()).await.unwrap();
        assert_eq!(balance(&engine, 1).await, json!(10));
        // The record carries the output once: as the recorded-output write, in the same record as
        // the effects.
        let record = engine.log().read_prev(ANY_TAG, first.lsn.unwrap()).await.unwrap().unwrap();
        let LogRecord::Commit(commit) = decode_payload(&record.payload).unwrap() else { panic!() };
        let recorded: Vec<_> = commit.writes.iter().filter(|w| w.kind == 2).map(|w| w.after.as_deref()).collect();
        assert_eq!(recorded, [Some(&b"{\"balance\":5}"[..])]);
        let output = b"{\"balance\":5}";
        assert_eq!(record.payload.windows(output.len()).filter(|w| *w == &output[..]).count(), 1, "the output is in the record once");
        assert_eq!(commit.invocations[0].workflow_id.as_deref(), Some("wf-1"));
        engine.close().await.unwrap();

        // Also after a restart.
        let engine = open(dir.path(), 2, &runs).await;
        let after = engine.invoke(call()).await.unwrap();
        assert!(after.replayed);
        assert_eq!(after.value, first.value);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        engine.close().await.unwrap();
    });
}

/// `Txn::forget_recorded` deletes one run's recorded outputs, durably, on the partitions the
/// transaction may touch: those steps run again; other runs' outputs stay.
#[test]
fn forgotten_recorded_outputs_run_again() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let forget = |engine: &Engine| {
            // Everywhere (no partition key), and on the partition of `id`.
            engine.register(Function::new("forget").run(|tx, input| Ok(json!(tx.forget_recorded(input["workflow"].as_str().unwrap())?)))).unwrap();
            engine
                .register(
                    Function::new("forget_here")
                        .statement("get", "SELECT balance FROM accounts WHERE id = $1")
                        .partition_by("id")
                        .run(|tx, input| Ok(json!(tx.forget_recorded(input["workflow"].as_str().unwrap())?))),
                )
                .unwrap();
        };
        let engine = open(dir.path(), 2, &runs).await;
        forget(&engine);
        // Two accounts on different partitions.
        let (a, b) = (1, (2..100).find(|&b| engine.partition_of(&comb_backend::Value::Int(b)) != engine.partition_of(&comb_backend::Value::Int(1))).unwrap());
        let call = |account: i64, run: &str, step: &str| Invocation::new("deposit", json!({ "id": account, "amount": 5 })).id(run, step).record();
        for (account, run, step) in [(a, "wf-1", "x"), (b, "wf-1", "y"), (a, "wf-2", "x"), (a, "wf-10", "x")] {
            assert!(!engine.invoke(call(account, run, step)).await.unwrap().replayed);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        // On one partition only: wf-1's output there.
        let here = engine.invoke(Invocation::new("forget_here", json!({ "id": a, "workflow": "wf-1" }))).await.unwrap();
        assert_eq!(here.value, json!(1));
        assert!(here.lsn.is_some(), "the deletes commit");
        assert!(engine.invoke(call(b, "wf-1", "y")).await.unwrap().replayed, "the other partition's output stays");
        assert!(!engine.invoke(call(a, "wf-1", "x")).await.unwrap().replayed, "the forgotten step runs again");
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        // Everywhere: wf-1's two outputs (the one just recorded again, and the other partition's).
        assert_eq!(engine.invoke(Invocation::new("forget", json!({ "workflow": "wf-1" }))).await.unwrap().value, json!(2));
        assert_eq!(engine.invoke(Invocation::new("forget", json!({ "workflow": "wf-1" }))).await.unwrap().value, json!(0), "nothing left to forget");
        engine.close().await.unwrap();

        // After a restart the deletes hold, and the other runs (one whose id extends wf-1's)
        // still return their outputs.
        let engine = open(dir.path(), 2, &runs).await;
        forget(&engine);
        for (account, run, step) in [(a, "wf-2", "x"), (a, "wf-10", "x")] {
            assert!(engine.invoke(call(account, run, step)).await.unwrap().replayed, "{run} is remembered");
        }
        for (account, step) in [(a, "x"), (b, "y")] {
            assert!(!engine.invoke(call(account, "wf-1", step)).await.unwrap().replayed, "wf-1 {step} runs again");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 7);
        assert_eq!(balance(&engine, a).await, json!(25));
        engine.close().await.unwrap();
    });
}

/// A DDL whose caller goes away once it is under way still reaches the catalog: the next
/// DDL does not take its table's id, and a reopen finds each table's rows in their table.
#[test]
fn a_ddl_whose_caller_goes_away_still_reaches_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let register = |engine: &Engine| {
        engine.register(Function::new("put_b").statement("put", "INSERT INTO b (id, n) VALUES ($1, $2)").partition_by("id").run(|tx, input| {
            tx.execute("put", (id(&input, "id"), id(&input, "n")))?;
            Ok(json!(null))
        }))
        .unwrap();
        engine.register(Function::new("get_b").statement("get", "SELECT n FROM b WHERE id = $1").partition_by("id").run(|tx, input| {
            let n: Option<i64> = tx.query_opt("get", (id(&input, "id"),))?;
            Ok(json!(n))
        }))
        .unwrap();
    };
    runtime().block_on(async {
        let engine = Engine::open(dir.path(), options(1)).await.unwrap();
        // Polled once, then dropped, as a caller whose deadline passed. The DDL runs on a task
        // of its own, which another worker may finish before the first poll returns (a
        // thread held off its core): then the next table is tried.
        let mut abandoned = None;
        for n in 0..10 {
            let ddl = format!("CREATE TABLE a{n} (id BIGINT PRIMARY KEY, v TEXT NOT NULL)");
            if tokio::time::timeout(std::time::Duration::ZERO, engine.execute_ddl(&ddl)).await.is_err() {
                abandoned = Some(format!("a{n}"));
                break;
            }
        }
        let abandoned = abandoned.expect("every DDL of ten ended within its first poll");
        engine.execute_ddl("CREATE TABLE b (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)").await.unwrap();
        // The abandoned DDL's task may take the DDL lock after this one's: wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while engine.catalog().table(&abandoned).is_none() {
            assert!(std::time::Instant::now() < deadline, "the abandoned DDL's table never appeared");
            tokio::task::yield_now().await;
        }
        let catalog = engine.catalog();
        let a = catalog.table(&abandoned).expect("the abandoned DDL's table exists").id;
        let b = catalog.table("b").unwrap().id;
        assert_ne!(a, b, "two tables, two ids");
        register(&engine);
        engine.invoke(Invocation::new("put_b", json!({ "id": 1, "n": 7 }))).await.unwrap();
        engine.close().await.unwrap();

        let engine = Engine::open(dir.path(), options(1)).await.unwrap();
        let catalog = engine.catalog();
        assert_eq!((catalog.table(&abandoned).map(|t| t.id), catalog.table("b").map(|t| t.id)), (Some(a), Some(b)), "the tables keep their ids");
        register(&engine);
        assert_eq!(engine.invoke(Invocation::new("get_b", json!({ "id": 1 }))).await.unwrap().value, json!(7));
        engine.close().await.unwrap();
    });
}

#[test]
fn recovery_replays_the_log_and_checkpoints_trim_it() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 3, &runs).await;
        for i in 0..30 {
            engine.invoke(Invocation::new("deposit", json!({ "id": i % 6, "amount": i }))).await.unwrap();
        }
        engine.close().await.unwrap();

        let engine = open(dir.path(), 3, &runs).await;
        let expected: Vec<Json> = (0..6).map(|a| json!((0..30).filter(|i| i % 6 == a).sum::<i64>())).collect();
        for a in 0..6 {
            assert_eq!(balance(&engine, a).await, expected[a as usize]);
        }
        engine.hold_trim("tracing", 5);
        assert_eq!(engine.checkpoint().await.unwrap(), 5, "a consumer holds the trim point back");
        engine.release_trim("tracing");
        let tail = engine.log().tail();
        assert_eq!(engine.checkpoint().await.unwrap(), tail + 1, "everything is applied and flushed");
        engine.invoke(Invocation::new("deposit", json!({ "id": 0, "amount": 1000 }))).await.unwrap();
        // Settling checkpoints first, and an idle store has no compaction left to wait for.
        assert!(engine.settle(Duration::from_secs(60)).await.unwrap());
        assert_eq!(engine.log().trim_point(), engine.log().tail() + 1, "the deposit is flushed and its record trimmed");
        engine.close().await.unwrap();

        // The catalog record was trimmed; the catalog comes back from the state store.
        let engine = open(dir.path(), 3, &runs).await;
        assert_eq!(balance(&engine, 0).await, json!(expected[0].as_i64().unwrap() + 1000));
        assert_eq!(balance(&engine, 5).await, expected[5]);
        assert!(engine.log().read_next(CATALOG_TAG, engine.log().trim_point()).await.unwrap().is_none());
        engine.close().await.unwrap();

        match Engine::open(dir.path(), options(4)).await {
            Err(Error::PartitionCount { stored: 3, requested: 4 }) => {}
            other => panic!("{other:?}"),
        }

        // A state store that lacks records the log no longer holds is refused, not opened
        // without them.
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        match Engine::open(dir.path(), options(3)).await {
            Err(Error::Corrupt { location, detail }) => assert!(detail.contains("older than the log"), "{location}: {detail}"),
            other => panic!("a state store behind the trimmed log opened: {:?}", other.map(|_| "an engine")),
        }
    });
}

#[test]
fn an_untraced_functions_commits_carry_its_writes_but_not_its_invocation() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 1, &runs).await;
        engine
            .register(
                Function::new("bookkeeping")
                    .statement("add", "INSERT INTO accounts (id, balance) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1")
                    .partition_by("id")
                    .run(|tx, input| {
                        tx.execute("add", (id(&input, "id"),))?;
                        Ok(Json::Null)
                    })
                    .untraced(),
            )
            .unwrap();
        let commit_at = |lsn: Option<u64>| {
            let engine = engine.clone();
            async move {
                let record = engine.log().read_next(ANY_TAG, lsn.expect("a commit")).await.unwrap().unwrap();
                let LogRecord::Commit(commit) = decode_payload(&record.payload).unwrap() else { panic!("not a commit") };
                commit
            }
        };
        // With a traced function in one transaction: the record carries both writes, and the
        // traced function's invocation alone.
        let step = |function: &str| comb_backend::TransactionStep { function: function.to_owned(), id: None, record: false };
        let transaction = comb_backend::Transaction {
            steps: vec![step("deposit"), step("bookkeeping")],
            input: json!({ "id": 1, "amount": 5 }),
            next_input: Arc::new(|_: &comb_backend::NextInput<'_>| Ok(json!({ "id": 2 }))),
            answer: comb_backend::Answer::Durable,
            end: None,
        };
        let out = engine.invoke_transaction(transaction).await.unwrap();
        let commit = commit_at(out.lsn).await;
        assert_eq!(commit.writes.len(), 2, "both functions' writes");
        assert_eq!(commit.invocations.iter().map(|i| i.function.as_str()).collect::<Vec<_>>(), ["deposit"]);
        // Alone: its writes commit, with no invocation.
        let out = engine.invoke(Invocation::new("bookkeeping", json!({ "id": 2 }))).await.unwrap();
        let commit = commit_at(out.lsn).await;
        assert_eq!((commit.writes.len(), commit.invocations.len()), (1, 0));
        assert_eq!(balance(&engine, 2).await, json!(2));
        engine.close().await.unwrap();
    });
}

#[test]
fn multi_partition_transactions_are_atomic_and_one_record() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 4, &runs).await;
        let accounts: Vec<i64> = (0..8).collect();
        for a in &accounts {
            engine.invoke(Invocation::new("deposit", json!({ "id": a, "amount": 100 }))).await.unwrap();
        }
        // Two accounts in different partitions.
        let (a, b) = (0..8).flat_map(|a| (0..8).map(move |b| (a, b))).find(|(a, b)| engine.partition_of(&comb_backend::Value::Int(*a)) != engine.partition_of(&comb_backend::Value::Int(*b))).unwrap();
        let out = engine.invoke(Invocation::new("transfer", json!({ "from": a, "to": b, "amount": 30 }))).await.unwrap();
        let record = engine.log().read_next(ANY_TAG, out.lsn.unwrap()).await.unwrap().unwrap();
        let mut tags = vec![partition_tag(engine.partition_of(&comb_backend::Value::Int(a))), partition_tag(engine.partition_of(&comb_backend::Value::Int(b)))];
        tags.sort();
        assert_eq!(record.tags, tags, "one record carries both partitions' tags");
        assert_eq!(balance(&engine, a).await, json!(70));
        assert_eq!(balance(&engine, b).await, json!(130));
        // A failed multi-partition transaction leaves nothing.
        assert!(engine.invoke(Invocation::new("transfer", json!({ "from": a, "to": 999, "amount": 1 }))).await.is_err());
        assert_eq!(balance(&engine, a).await, json!(70));

        // Concurrent single- and multi-partition transactions conserve money.
        let mut handles = Vec::new();
        for i in 0..300i64 {
            let engine = engine.clone();
            handles.push(tokio::spawn(async move {
                if i % 3 == 0 {
                    let _ = engine.invoke(Invocation::new("transfer", json!({ "from": i % 8, "to": (i / 8) % 8, "amount": 7 }))).await;
                } else {
                    engine.invoke(Invocation::new("balance", json!({ "id": i % 8 }))).await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(engine.invoke(Invocation::new("total", json!({}))).await.unwrap().value, json!({ "sum": 800, "count": 8 }));
        engine.close().await.unwrap();
        let engine = open(dir.path(), 4, &runs).await;
        assert_eq!(engine.invoke(Invocation::new("total", json!({}))).await.unwrap().value, json!({ "sum": 800, "count": 8 }));
        engine.close().await.unwrap();
    });
}

/// A transaction whose code building a later function's input panics fails alone, on an
/// executor and on the coordinator alike: both go on serving.
#[test]
fn a_panic_building_a_later_input_fails_its_transaction_only() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        let panics: Arc<comb_backend::NextInputFn> = Arc::new(|_: &comb_backend::NextInput<'_>| panic!("no input today"));
        let step = |function: &str| comb_backend::TransactionStep { function: function.to_owned(), id: None, record: false };
        // Both single-partition: an executor builds the input. `total` first: the coordinator.
        for first in ["deposit", "total"] {
            let transaction = comb_backend::Transaction { steps: vec![step(first), step("deposit")], input: json!({ "id": 1, "amount": 5 }), next_input: Arc::clone(&panics), answer: comb_backend::Answer::Durable, end: None };
            match engine.invoke_transaction(transaction).await {
                Err(Error::Panicked { function, message }) => {
                    assert_eq!(function, "deposit");
                    assert!(message.contains("no input today"), "{message}");
                }
                other => panic!("after {first}: {other:?}"),
            }
        }
        assert_eq!(balance(&engine, 1).await, json!(null), "nothing of either committed");
        engine.invoke(Invocation::new("deposit", json!({ "id": 1, "amount": 5 }))).await.unwrap();
        assert_eq!(engine.invoke(Invocation::new("total", json!({}))).await.unwrap().value, json!({ "sum": 5, "count": 1 }));
        engine.close().await.unwrap();
    });
}

/// The trace records after `lsn`, waited for as the log makes them durable (they are
/// appended after their replies), until `enough` holds of them.
async fn traces_after(engine: &Engine, lsn: u64, enough: impl Fn(&[comb_backend::TraceRecord]) -> bool) -> Vec<comb_backend::TraceRecord> {
    let mut durable = engine.log().subscribe(lsn + 1, TRACE_TAG);
    let mut traces = Vec::new();
    while !enough(&traces) {
        let next = tokio::time::timeout(Duration::from_secs(10), durable.next()).await;
        let record = next.unwrap_or_else(|_| panic!("traced after {lsn}: {traces:?}")).expect("the log is open").unwrap();
        if let LogRecord::Trace(trace) = decode_payload(&record.payload).unwrap() {
            traces.push(trace);
        }
    }
    traces
}

/// The runs the trace records carry.
fn runs_of(traces: Vec<comb_backend::TraceRecord>) -> Vec<comb_backend::RunRecord> {
    traces.into_iter().flat_map(|t| t.runs).collect()
}

#[test]
fn a_run_that_writes_nothing_ends_in_a_trace_and_one_that_writes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        engine.invoke(Invocation::new("deposit", json!({ "id": 1, "amount": 5 }))).await.unwrap();
        let end: Arc<comb_backend::EndFn> = Arc::new(|outputs: &[Json]| {
            let output = outputs.first().ok_or("no output")?.to_string();
            Ok(comb_backend::RunRecord { id: "r".into(), name: "w".into(), output, ..Default::default() })
        });
        let unused: Arc<comb_backend::NextInputFn> = Arc::new(|_: &comb_backend::NextInput<'_>| Err("one member only".into()));
        let transaction = |function: &str, input: Json, end: &Arc<comb_backend::EndFn>| comb_backend::Transaction {
            steps: vec![comb_backend::TransactionStep { function: function.to_owned(), id: None, record: false }],
            input,
            next_input: Arc::clone(&unused),
            answer: comb_backend::Answer::Durable,
            end: Some(comb_backend::RunEnd { build: Arc::clone(end), writer: None }),
        };
        // On an executor (`balance`) and on the coordinator (`total`, no partition key).
        let tail = engine.log().tail();
        for (function, output) in [("balance", "5"), ("total", r#"{"count":1,"sum":5}"#)] {
            let out = engine.invoke_transaction(transaction(function, json!({ "id": 1 }), &end)).await.unwrap();
            let ended = out.ended.unwrap_or_else(|| panic!("{function}: no end"));
            assert_eq!((ended.id.as_str(), ended.output.as_str(), out.lsn), ("r", output, None), "{function}");
        }
        assert_eq!(commits_after(&engine, tail).await, 0, "nothing committed");
        let traced = |runs: Vec<comb_backend::RunRecord>| {
            let mut outputs: Vec<String> = runs.into_iter().map(|r| r.output).collect();
            outputs.sort();
            outputs
        };
        let both = ["5".to_owned(), r#"{"count":1,"sum":5}"#.to_owned()];
        let two_runs = |traces: &[comb_backend::TraceRecord]| traces.iter().map(|t| t.runs.len()).sum::<usize>() >= 2;
        assert_eq!(traced(runs_of(traces_after(&engine, tail, two_runs).await)), both);
        // An end that fails fails the run, under the function it ended.
        let fails: Arc<comb_backend::EndFn> = Arc::new(|_: &[Json]| Err("no template".into()));
        match engine.invoke_transaction(transaction("balance", json!({ "id": 1 }), &fails)).await {
            Err(Error::Aborted { function, message }) => assert!(function == "balance" && message.contains("no template"), "{function}: {message}"),
            other => panic!("{other:?}"),
        }
        // So does an end larger than a run's row may be.
        let large: Arc<comb_backend::EndFn> = Arc::new(|_: &[Json]| Ok(comb_backend::RunRecord { output: "x".repeat(1 << 20), ..Default::default() }));
        match engine.invoke_transaction(transaction("balance", json!({ "id": 1 }), &large)).await {
            Err(Error::LimitExceeded { option, size, .. }) => assert!(option == "json-bytes-max" && size > 1 << 20, "{option}: {size}"),
            other => panic!("{other:?}"),
        }
        // A transaction with an end that writes is refused whole: its run would have no row.
        let err = engine.invoke_transaction(transaction("deposit", json!({ "id": 1, "amount": 7 }), &end)).await.unwrap_err();
        assert!(matches!(&err, Error::Internal(message) if message.contains("wrote")), "{err}");
        assert_eq!(commits_after(&engine, tail).await, 0, "nothing committed");
        assert_eq!(balance(&engine, 1).await, json!(5));
        // The traces once everything above was answered: the two runs, once each, and no run
        // of the failed ends.
        assert_eq!(engine.invoke(Invocation::new("total", json!({}))).await.unwrap().value, json!({ "count": 1, "sum": 5 }));
        // The last read's trace (the coordinator's) is there, and the runs' (the executor's
        // and the coordinator's, appended before it).
        let last_read_too = |traces: &[comb_backend::TraceRecord]| {
            let totals = traces.iter().flat_map(|t| &t.invocations).filter(|i| i.function == "total").count();
            totals >= 2 && two_runs(traces)
        };
        let last = runs_of(traces_after(&engine, tail, last_read_too).await);
        assert_eq!(traced(last), both, "each run traced once, no failed end traced");
        engine.close().await.unwrap();
    });
}

/// A key other than `taken` that falls in partition `p`.
fn key_in(engine: &Engine, p: u16, taken: &[i64]) -> i64 {
    (2..).find(|k| !taken.contains(k) && engine.partition_of(&comb_backend::Value::Int(*k)) == p).unwrap()
}

#[test]
fn a_run_end_with_a_writer_is_written_in_the_members_commit() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        // The writer opens the account the run's record names (its `version`), with the
        // partition it ran on as the balance.
        let writer = Function::new("open_account")
            .statement("open", "INSERT INTO accounts (id, balance) VALUES ($1, $2)")
            .partition_by("id")
            .writes_run_ends(|tx, run, partition| {
                tx.execute("open", (run.version, i64::from(partition)))?;
                Ok(())
            })
            .untraced();
        engine.register(writer).unwrap();
        let end = |account: i64| {
            let build = move |outputs: &[Json]| {
                let output = outputs.first().ok_or("no output")?.to_string();
                Ok(comb_backend::RunRecord { id: format!("r{account}"), version: account, output, ..Default::default() })
            };
            Some(comb_backend::RunEnd { build: Arc::new(build), writer: Some("open_account".to_owned()) })
        };
        let unused: Arc<comb_backend::NextInputFn> = Arc::new(|_: &comb_backend::NextInput<'_>| Err("one member only".into()));
        let transaction = |function: &str, input: Json, end: Option<comb_backend::RunEnd>| comb_backend::Transaction {
            steps: vec![comb_backend::TransactionStep { function: function.to_owned(), id: None, record: false }],
            input,
            next_input: Arc::clone(&unused),
            answer: comb_backend::Answer::Durable,
            end,
        };
        let p = engine.partition_of(&comb_backend::Value::Int(1));
        let opened = key_in(&engine, p, &[1]);
        let tail = engine.log().tail();
        let out = engine.invoke_transaction(transaction("deposit", json!({ "id": 1, "amount": 5 }), end(opened))).await.unwrap();
        let ended = out.ended.expect("the run's record is answered");
        assert_eq!((ended.id.as_str(), ended.output.as_str()), (format!("r{opened}").as_str(), r#"{"balance":5}"#));
        // One commit: the member's write and the writer's, its invocation the member's alone.
        assert_eq!((out.lsn, commits_after(&engine, tail).await), (Some(tail + 1), 1));
        let record = engine.log().read_next(ANY_TAG, tail + 1).await.unwrap().unwrap();
        let LogRecord::Commit(commit) = decode_payload(&record.payload).unwrap() else { panic!("not a commit") };
        assert_eq!(commit.writes.len(), 2);
        assert_eq!(commit.invocations.iter().map(|i| i.function.as_str()).collect::<Vec<_>>(), ["deposit"]);
        assert_eq!((balance(&engine, 1).await, balance(&engine, opened).await), (json!(5), json!(p)));
        // The writer's failure (the account exists) refuses the whole transaction.
        let err = engine.invoke_transaction(transaction("deposit", json!({ "id": 1, "amount": 7 }), end(opened))).await.unwrap_err();
        assert!(matches!(&err, Error::UniqueViolation { table, .. } if table == "accounts"), "{err}");
        assert_eq!(balance(&engine, 1).await, json!(5), "the member's write is not committed");
        // On the coordinator (a transfer has no partition key), the writer may write anywhere.
        let other = key_in(&engine, 1 - p, &[1, opened]);
        let out = engine.invoke_transaction(transaction("transfer", json!({ "from": 1, "to": opened, "amount": 2 }), end(other))).await.unwrap();
        assert_eq!(out.ended.map(|r| r.output), Some(r#""ok""#.to_owned()));
        assert_eq!((balance(&engine, 1).await, balance(&engine, opened).await), (json!(3), json!(i64::from(p) + 2)));
        // Without ids, the coordinator's recorded outputs, hence its writer's partition, are 0.
        assert_eq!(balance(&engine, other).await, json!(0), "the coordinator's run opened its account");
        // A writer must have a body that writes run ends, and be untraced.
        engine.register(Function::new("traced_writer").writes_run_ends(|_, _, _| Ok(()))).unwrap();
        for (writer, says) in [("balance", "no body that writes run ends"), ("traced_writer", "untraced")] {
            let end = comb_backend::RunEnd { build: Arc::new(|_: &[Json]| Ok(comb_backend::RunRecord::default())), writer: Some(writer.to_owned()) };
            let err = engine.invoke_transaction(transaction("deposit", json!({ "id": 1, "amount": 1 }), Some(end))).await.unwrap_err();
            assert!(matches!(&err, Error::InvalidFunction { function, message } if function == writer && message.contains(says)), "{err}");
        }
        assert_eq!(balance(&engine, 1).await, json!(3), "nothing ran");
        // A writer that writes nothing after members that wrote nothing fails the run: it
        // would be answered with no row.
        engine.register(Function::new("idle_writer").writes_run_ends(|_, _, _| Ok(())).untraced()).unwrap();
        let idle = comb_backend::RunEnd { build: Arc::new(|_: &[Json]| Ok(comb_backend::RunRecord::default())), writer: Some("idle_writer".to_owned()) };
        let err = engine.invoke_transaction(transaction("balance", json!({ "id": 1 }), Some(idle))).await.unwrap_err();
        assert!(matches!(&err, Error::Internal(message) if message.contains("wrote no run end")), "{err}");
        // A later member's key on another partition: the transaction runs again on the
        // coordinator, its writer given the first member's partition, and commits once.
        let far = key_in(&engine, 1 - p, &[1, opened, other]);
        let spilled = key_in(&engine, p, &[1, opened, other, far]);
        let to_far: Arc<comb_backend::NextInputFn> = Arc::new(move |_: &comb_backend::NextInput<'_>| Ok(json!({ "id": far, "amount": 4 })));
        let steps = ["deposit", "deposit"].map(|function| comb_backend::TransactionStep { function: function.to_owned(), id: None, record: false }).to_vec();
        let before = engine.log().tail();
        let spill = comb_backend::Transaction { steps, input: json!({ "id": 1, "amount": 1 }), next_input: to_far, answer: comb_backend::Answer::Durable, end: end(spilled) };
        let out = engine.invoke_transaction(spill).await.unwrap();
        assert_eq!(out.ended.map(|r| r.output), Some(r#"{"balance":4}"#.to_owned()));
        assert_eq!(commits_after(&engine, before).await, 1);
        let balances = [balance(&engine, 1).await, balance(&engine, far).await, balance(&engine, spilled).await];
        assert_eq!(balances, [json!(4), json!(4), json!(p)], "the members once each, the row on the first's partition");
        // Written runs are not traced as runs. A read's trace follows the traces pushed
        // before it where it ran: the reads of `balance` on the executor after its run, of
        // `total` on the coordinator after its run.
        assert_eq!(engine.invoke(Invocation::new("total", json!({}))).await.unwrap().value["count"], json!(5));
        let read = |function: &str, traces: &[comb_backend::TraceRecord]| traces.iter().flat_map(|t| &t.invocations).any(|i| i.function == function);
        let traces = traces_after(&engine, tail, |traces| read("balance", traces) && read("total", traces)).await;
        assert!(runs_of(traces).is_empty());
        engine.close().await.unwrap();
    });
}

#[test]
fn options_out_of_bounds_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        for (options, named) in [
            (EngineOptions { queue_invocations_max: 0, ..options(1) }, "queue-invocations-max"),
            (EngineOptions { row_cache_bytes: comb_backend::ROW_CACHE_BYTES_MAX + 1, ..options(1) }, "row-cache-bytes"),
            (EngineOptions { writeback_bytes: comb_backend::WRITEBACK_BYTES_MAX + 1, ..options(1) }, "writeback-bytes"),
            (EngineOptions { writeback_interval_ms: comb_backend::WRITEBACK_INTERVAL_MS_MAX + 1, ..options(1) }, "writeback-interval-ms"),
            (EngineOptions { transaction_time_max_ms: 0, ..options(1) }, "transaction-time-max-ms"),
            (EngineOptions { transaction_time_max_ms: comb_backend::TRANSACTION_TIME_MS_MAX + 1, ..options(1) }, "transaction-time-max-ms"),
        ] {
            let err = Engine::open(dir.path(), options).await.expect_err("refused");
            assert!(matches!(err, Error::InvalidOptions { option, .. } if option == named), "{err}");
        }
        let engine = Engine::open(dir.path(), EngineOptions { row_cache_bytes: 0, ..options(1) }).await.expect("no row cache is allowed");
        engine.close().await.unwrap();
    });
}

/// An index is built only with its table: a DDL that adds one to a table that exists (and
/// may hold rows) is refused whole, naming both, and changes nothing; with its table, in
/// one script, or as a no-op `IF NOT EXISTS`, it is accepted. A unique index must include
/// the partition column, where its check is whole.
#[test]
fn an_index_on_a_table_that_exists_or_unique_across_partitions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        engine.invoke(Invocation::new("deposit", json!({ "id": 1, "amount": 5 }))).await.unwrap();
        let tail = engine.log().tail();
        let script = "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT); CREATE INDEX accounts_by_balance ON accounts (balance)";
        match engine.execute_ddl(script).await {
            Err(Error::IndexOnExistingTable { table, index }) => assert_eq!((table.as_str(), index.as_str()), ("accounts", "accounts_by_balance")),
            other => panic!("expected the index to be refused, got {other:?}"),
        }
        assert!(engine.catalog().table("notes").is_none(), "the script is refused whole");
        assert!(engine.catalog().table("accounts").unwrap().indexes.is_empty());
        assert_eq!(engine.log().tail(), tail, "nothing of it reached the log");

        engine.execute_ddl("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT); CREATE INDEX notes_by_body ON notes (body)").await.expect("an index with its table");
        engine.execute_ddl("CREATE TABLE IF NOT EXISTS notes (id BIGINT PRIMARY KEY, body TEXT); CREATE INDEX IF NOT EXISTS notes_by_body ON notes (body)").await.expect("no index added");
        engine.execute_ddl("DROP TABLE notes; CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT); CREATE INDEX notes_by_body ON notes (body)").await.expect("a new table of the same name");
        let err = engine.execute_ddl("CREATE INDEX notes_by_id ON notes (id, body)").await.expect_err("the table exists now");
        assert!(err.to_string().contains("create the table and its indexes in one script"), "the error says what to do: {err}");

        for unique in ["CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT UNIQUE)", "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT); CREATE UNIQUE INDEX users_by_email ON users (email)"] {
            match engine.execute_ddl(unique).await {
                Err(Error::UniqueWithoutPartitionColumn { table, column, .. }) => assert_eq!((table.as_str(), column.as_str()), ("users", "id")),
                other => panic!("{unique}: expected the unique index to be refused, got {other:?}"),
            }
        }
        engine
            .execute_ddl("CREATE TABLE members (org BIGINT, id BIGINT, email TEXT, PRIMARY KEY (org, id), UNIQUE (org, email))")
            .await
            .expect("a unique index with the partition column");
        engine.close().await.unwrap();
    });
}

/// A transaction that runs past `transaction-time-max-ms` is rolled back, on one partition
/// or on all: found at its next statement (even one whose error the body catches), or when
/// its body returns. Its partitions go on serving.
#[test]
fn a_transaction_past_transaction_time_max_is_rolled_back() {
    const LIMIT_MS: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = Engine::open(dir.path(), EngineOptions { transaction_time_max_ms: LIMIT_MS, ..options(2) }).await.unwrap();
        engine.execute_ddl(DDL).await.unwrap();
        register(&engine, &runs);
        let statements = |f: Function| {
            f.statement("add", "INSERT INTO accounts (id, balance) VALUES ($1, 1)").statement("get", "SELECT balance FROM accounts WHERE id = $1")
        };
        // Reads in a loop until a statement fails, then returns as if all were well.
        let spin = |tx: &mut Txn<'_>, input: Json| -> Result<Json, comb_backend::BoxError> {
            tx.execute("add", (id(&input, "id"),))?;
            let mut reads = 0u64;
            let caught = loop {
                match tx.query_opt::<i64>("get", (id(&input, "id"),)) {
                    Ok(_) => reads += 1,
                    Err(err) => break err,
                }
            };
            Ok(json!({ "reads": reads, "caught": caught.to_string() }))
        };
        // Reads in a loop, and panics on the first statement that fails.
        let spin_unwrap = |tx: &mut Txn<'_>, input: Json| -> Result<Json, comb_backend::BoxError> {
            tx.execute("add", (id(&input, "id"),))?;
            loop {
                tx.query_opt::<i64>("get", (id(&input, "id"),)).unwrap();
            }
        };
        // Runs no statement past its write, and returns once the limit has passed.
        let slow = |tx: &mut Txn<'_>, input: Json| -> Result<Json, comb_backend::BoxError> {
            let started = std::time::Instant::now();
            tx.execute("add", (id(&input, "id"),))?;
            while started.elapsed() <= Duration::from_millis(LIMIT_MS) {
                std::thread::yield_now();
            }
            Ok(json!("done"))
        };
        engine.register(statements(Function::new("spin").partition_by("id")).run(spin)).unwrap();
        engine.register(statements(Function::new("spin_unwrap").partition_by("id")).run(spin_unwrap)).unwrap();
        engine.register(statements(Function::new("slow").partition_by("id")).run(slow)).unwrap();
        engine.register(statements(Function::new("slow_everywhere")).run(slow)).unwrap();
        for (function, account, at) in [
            ("spin", 1, "at the start of its statement get"),
            ("spin_unwrap", 5, "at the start of its statement get"),
            ("slow", 2, "when its body returned"),
            ("slow_everywhere", 3, "when its body returned"),
        ] {
            let err = engine.invoke(Invocation::new(function, json!({ "id": account }))).await.expect_err("past the limit");
            match &err {
                Error::TimeLimit { function: named, elapsed_ms, limit_ms, at: found } => {
                    assert_eq!((named.as_str(), *limit_ms, found.as_str()), (function, LIMIT_MS, at), "{err}");
                    assert!(*elapsed_ms >= LIMIT_MS, "{err}");
                }
                other => panic!("{function}: expected a time limit error, got {other}"),
            }
            assert!(err.to_string().contains("transaction-time-max-ms"), "the error names its option: {err}");
            let balance = engine.invoke(Invocation::new("balance", json!({ "id": account }))).await.unwrap();
            assert_eq!(balance.value, Json::Null, "{function}: its write was rolled back");
        }
        // Within the limit, a transaction commits as ever.
        let deposited = engine.invoke(Invocation::new("deposit", json!({ "id": 4, "amount": 5 }))).await.unwrap();
        assert_eq!(deposited.value, json!({ "balance": 5 }));
        engine.close().await.unwrap();
    });
}

/// A function that does not return shows as a step in progress on its partition's executor,
/// or, as a multi-partition transaction, on the coordinator while every executor waits at
/// the barrier; once it returns, it no longer shows.
#[test]
fn a_function_that_does_not_return_shows_as_a_step_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        let (started, mut is_started) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let held = move |_: &mut Txn<'_>, _: Json| -> Result<Json, comb_backend::BoxError> {
            let _ = started.send(());
            released.lock().unwrap().recv()?;
            Ok(json!(null))
        };
        engine.register(Function::new("hold").partition_by("k").run(held.clone())).unwrap();
        engine.register(Function::new("hold_all").run(held)).unwrap();
        let partition = engine.partition_of_call("hold", &json!({ "k": 7 })).unwrap();
        // Each is followed by a call that runs after it on the same thread: a partition's
        // read of the same key, the coordinator's next multi-partition transaction.
        for (function, input, step, after) in [
            ("hold", json!({ "k": 7 }), "an invocation of function hold", Invocation::new("balance", json!({ "id": 7 }))),
            ("hold_all", json!({}), "a multi-partition transaction of function hold_all", Invocation::new("total", json!({}))),
        ] {
            let call = tokio::spawn({
                let engine = engine.clone();
                async move { engine.invoke(Invocation::new(function, input)).await }
            });
            // Its step (and for a multi-partition one, every executor's barrier) is shown
            // before its body runs.
            is_started.recv().await.unwrap();
            let steps = engine.steps_in_progress(Duration::ZERO);
            let found = steps.iter().find(|s| s.step.ends_with(step)).unwrap_or_else(|| panic!("{step} does not show: {steps:?}")).clone();
            assert!(found.runs_functions, "{found:?}");
            if function == "hold" {
                assert_eq!(found.partition, partition, "{found:?}");
            } else {
                assert_eq!(found.partition, None, "on the coordinator: {found:?}");
                let barriers = steps.iter().filter(|s| s.partition.is_some() && s.step.contains("barrier") && !s.runs_functions).count();
                assert_eq!(barriers, 2, "every executor waits at the barrier: {steps:?}");
            }
            assert!(engine.steps_in_progress(Duration::from_secs(3600)).is_empty(), "none has run an hour");
            release.send(()).unwrap();
            call.await.unwrap().unwrap();
            engine.invoke(after).await.unwrap();
            let steps = engine.steps_in_progress(Duration::ZERO);
            assert!(!steps.iter().any(|s| s.step.contains(function)), "{function} still shows after it returned: {steps:?}");
        }
        engine.close().await.unwrap();
    });
}

#[test]
fn a_multi_partition_transaction_waits_for_the_invocation_in_flight_not_the_queue() {
    const QUEUED: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        let (started, mut is_started) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Mutex::new(released);
        engine
            .register(Function::new("block").partition_by("k").run(move |_, _| {
                let _ = started.send(());
                released.lock().unwrap().recv().unwrap();
                Ok(json!(null))
            }))
            .unwrap();
        let block = || {
            let engine = engine.clone();
            async move { engine.invoke(Invocation::new("block", json!({ "k": 1 }))).await }
        };
        // One invocation holds its partition's executor; more queue behind it.
        let first = tokio::spawn(block());
        is_started.recv().await.unwrap();
        let mut queued: Vec<_> = (0..QUEUED).map(|_| Box::pin(block())).collect();
        for call in &mut queued {
            assert!(futures::poll!(call.as_mut()).is_pending(), "queued behind the first");
        }
        // A multi-partition transaction needs both executors at its barrier. Asked for, it
        // runs as soon as the invocation in flight ends: the executor would otherwise run the
        // whole queue first, one more each time it is released.
        // Polled here, not spawned: its answer is seen as soon as it comes, before any start
        // reported after it.
        let mut total = Box::pin(engine.invoke(Invocation::new("total", json!({}))));
        assert!(futures::poll!(total.as_mut()).is_pending(), "waits at the barrier");
        // Once the barrier is begun, its request waits in the executor's channel behind the
        // queued invocations.
        while engine.barriers() == 0 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        let mut ran_first = 0;
        let out = loop {
            tokio::select! {
                biased;
                out = &mut total => break out.unwrap(),
                Some(()) = is_started.recv() => {
                    ran_first += 1;
                    release.send(()).unwrap();
                }
            }
        };
        assert_eq!(out.value, json!({ "sum": null, "count": 0 }));
        assert!(ran_first < QUEUED / 2, "{ran_first} of the {QUEUED} invocations queued before the barrier ran before it");
        // The queued ones then run, each once.
        for _ in ran_first..QUEUED {
            is_started.recv().await.unwrap();
            release.send(()).unwrap();
        }
        for call in queued {
            call.await.unwrap();
        }
        engine.close().await.unwrap();
    });
}

#[test]
fn a_full_queue_is_overloaded_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = Engine::open(dir.path(), EngineOptions { partitions: 1, queue_invocations_max: 1, ..EngineOptions::default() }).await.unwrap();
        let (started, is_started) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let started = std::sync::Mutex::new(started);
        let released = std::sync::Mutex::new(released);
        engine
            .register(Function::new("block").partition_by("k").run(move |_, _| {
                let _ = started.lock().unwrap().send(());
                released.lock().unwrap().recv().unwrap();
                Ok(json!(null))
            }))
            .unwrap();
        let first = tokio::spawn({
            let engine = engine.clone();
            async move { engine.invoke(Invocation::new("block", json!({ "k": 1 }))).await }
        });
        tokio::task::spawn_blocking(move || is_started.recv().unwrap()).await.unwrap();
        // The second waits in the queue (bound 1): polling it once submits it.
        let mut second = Box::pin(engine.invoke(Invocation::new("block", json!({ "k": 1 }))));
        assert!(futures::poll!(&mut second).is_pending());
        let err = engine.invoke(Invocation::new("block", json!({ "k": 1 }))).await.unwrap_err();
        assert!(matches!(err, Error::Overloaded { partition: 0, limit: 1 }) && err.is_retryable(), "{err}");
        release.send(()).unwrap();
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap();
        let big = json!({ "k": 1, "pad": "x".repeat(2 << 20) });
        assert!(matches!(engine.invoke(Invocation::new("block", big)).await, Err(Error::LimitExceeded { option: "json-bytes-max", .. })));
        engine.close().await.unwrap();
    });
}

#[test]
fn registration_reports_every_bad_statement() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let engine = Engine::open(dir.path(), options(1)).await.unwrap();
        engine.execute_ddl(DDL).await.unwrap();
        let bad = Function::new("bad").statement("a", "SELECT nope FROM accounts").statement("b", "SELECT * FROM missing");
        match engine.register(bad) {
            Err(Error::Function(errors)) => assert_eq!(errors.errors.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(engine.execute_ddl("CREATE TABLE broken (x BIGINT)").await, Err(Error::Ddl(_))));
        engine.close().await.unwrap();
    });
}

#[test]
fn a_damaged_state_file_is_an_error_naming_it_never_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 2, &runs).await;
        let deposits = (0..500).map(|i| engine.invoke(Invocation::new("deposit", json!({ "id": i, "amount": i + 1 }))));
        for result in futures::future::join_all(deposits).await {
            result.unwrap();
        }
        // Everything in the state store's table files, and the log trimmed below it.
        engine.checkpoint().await.unwrap();
        engine.close().await.unwrap();

        // Damage the first data block of every table file.
        let mut damaged = Vec::new();
        for entry in std::fs::read_dir(dir.path().join("state")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sst") {
                let mut bytes = std::fs::read(&path).unwrap();
                for b in &mut bytes[32..96] {
                    *b ^= 0xFF;
                }
                std::fs::write(&path, bytes).unwrap();
                damaged.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        assert!(!damaged.is_empty(), "no table file to damage");
        let names_damage = |err: &Error| {
            let message = err.to_string();
            matches!(err, Error::Corrupt { .. }) && damaged.iter().any(|f| message.contains(f.as_str())) && message.contains("restore its data directory from a backup")
        };

        // The open reads the catalog from the store: it may be what finds the damage.
        let engine = match Engine::open(dir.path(), options(2)).await {
            Err(err) => {
                assert!(names_damage(&err), "{err}");
                return;
            }
            Ok(engine) => engine,
        };
        register(&engine, &runs);
        let mut refused = 0;
        for i in 0..500i64 {
            match engine.invoke(Invocation::new("balance", json!({ "id": i }))).await {
                Ok(output) => assert_eq!(output.value, json!(i + 1), "account {i} answered wrong data"),
                Err(err) => {
                    assert!(names_damage(&err), "{err}");
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "reads of damaged blocks succeeded");
        engine.close().await.unwrap();
    });
}

/// The disk log in `dir/log`, behind a wrapper that can hold or fail its writes.
fn controlled_log(dir: &std::path::Path) -> Arc<comb_log::testkit::ControlledLoglet> {
    let disk: Arc<dyn comb_log::Loglet> = Arc::new(comb_log::RocksLoglet::open(&dir.join("log")).unwrap());
    Arc::new(comb_log::testkit::ControlledLoglet::new(disk))
}

/// Long enough for an answer that needs no disk; what must not come in time waits less.
const ANSWERED_WITHIN: Duration = Duration::from_secs(20);
const NOT_BEFORE: Duration = Duration::from_millis(200);

/// An engine of two partitions over `faulty`, its state in `dir/state`, with [`DDL`] applied
/// and the tests' functions registered.
async fn open_two_over(dir: &std::path::Path, faulty: &Arc<comb_log::testkit::ControlledLoglet>, runs: &Arc<AtomicUsize>) -> Engine {
    let log = comb_log::LogBook::open_shared(Arc::clone(faulty) as Arc<dyn comb_log::Loglet>, comb_log::LogOptions::default()).unwrap();
    let engine = Engine::open_with_log(log, dir.join("state"), options(2)).await.unwrap();
    engine.execute_ddl(DDL).await.unwrap();
    register(&engine, runs);
    engine
}

/// An engine of one partition over `faulty`, its state in `dir/state`, with [`DDL`] applied.
async fn open_over(dir: &std::path::Path, faulty: &Arc<comb_log::testkit::ControlledLoglet>) -> Engine {
    let log = comb_log::LogBook::open_shared(Arc::clone(faulty) as Arc<dyn comb_log::Loglet>, comb_log::LogOptions::default()).unwrap();
    let engine = Engine::open_with_log(log, dir.join("state"), options(1)).await.unwrap();
    engine.execute_ddl(DDL).await.unwrap();
    engine
}

#[test]
fn a_commit_that_cannot_be_made_durable_is_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    // The log on disk, behind a wrapper that can fail an append as a full disk would.
    let faulty = controlled_log(dir.path());
    runtime().block_on(async {
        let engine = open_over(dir.path(), &faulty).await;
        register(&engine, &runs);
        engine.invoke(Invocation::new("deposit", json!({ "id": 1, "amount": 10 }))).await.unwrap();

        faulty.fail_next_append();
        let err = engine.invoke(Invocation::new("deposit", json!({ "id": 1, "amount": 5 }))).await.expect_err("acknowledged a commit the log refused");
        assert!(err.to_string().contains("injected failure"), "the error says why: {err}");
        // What the failed write left on disk is unknown until a reopen: nothing more is served.
        let err = engine.invoke(Invocation::new("deposit", json!({ "id": 2, "amount": 1 }))).await.expect_err("served after a failed commit");
        assert!(matches!(err, Error::PartitionFailed { .. }) && err.to_string().contains("reopen"), "{err}");
        let _ = engine.close().await;
    });
    comb_log::Loglet::close(&*faulty).unwrap();
    drop(faulty);

    runtime().block_on(async {
        let engine = open(dir.path(), 1, &runs).await;
        assert_eq!(balance(&engine, 1).await, json!(10), "only the acknowledged deposit");
        assert_eq!(balance(&engine, 2).await, json!(null));
        engine.invoke(Invocation::new("deposit", json!({ "id": 2, "amount": 1 }))).await.unwrap();
        engine.close().await.unwrap();
    });
}

/// A caller that asks for the logged answer (a workflow's step, whose output only feeds the
/// steps after it) gets it while the commit is still on its way to the disk, on a partition
/// and across partitions, reads and commits alike, and later work sees its writes; a caller
/// that waits for durability (a commit, or a read of those writes) is answered only after.
/// And when a logged commit never reaches the disk, no later commit is acknowledged, on any
/// partition: the log is durable in order, which is what makes the early answer safe.
#[test]
fn a_logged_answer_comes_before_its_commit_is_durable_and_nothing_after_a_lost_one_is_acknowledged() {
    use comb_backend::{Answer, Transaction, TransactionStep};
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let faulty = controlled_log(dir.path());
    runtime().block_on(async {
        let engine = open_two_over(dir.path(), &faulty, &runs).await;
        for account in [1, 2] {
            engine.invoke(Invocation::new("deposit", json!({ "id": account, "amount": 10 }))).await.unwrap();
        }
        let durable_deposit = |account: i64, amount: i64| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.invoke(Invocation::new("deposit", json!({ "id": account, "amount": amount }))).await })
        };

        // The log holds every write: nothing becomes durable.
        faulty.hold();
        let logged = |invocation: Invocation| tokio::time::timeout(ANSWERED_WITHIN, engine.invoke(invocation.answer_logged()));
        let deposited = logged(Invocation::new("deposit", json!({ "id": 1, "amount": 5 }))).await.expect("a logged answer waited for the disk").unwrap();
        assert_eq!((deposited.value, deposited.lsn), (json!({ "balance": 15 }), None));
        // No partition key: the coordinator runs it, over both partitions. It can take 13
        // only from the deposit not yet durable.
        let step = TransactionStep { function: "transfer".to_owned(), id: None, record: false };
        let transfer = Transaction { steps: vec![step], input: json!({ "from": 1, "to": 2, "amount": 13 }), next_input: Arc::new(|_: &comb_backend::NextInput<'_>| Ok(json!(null))), answer: Answer::Logged, end: None };
        let moved = tokio::time::timeout(ANSWERED_WITHIN, engine.invoke_transaction(transfer)).await.expect("a logged multi-partition answer waited for the disk").unwrap();
        assert_eq!((moved.value, moved.lsn), (json!("ok"), None));
        // Reads asked for the logged answer come at once, on a partition and over both.
        assert_eq!(logged(Invocation::new("balance", json!({ "id": 1 }))).await.expect("a logged read waited for the disk").unwrap().value, json!(2));
        assert_eq!(logged(Invocation::new("total", json!({}))).await.expect("a logged read waited for the disk").unwrap().value, json!({ "sum": 25, "count": 2 }));
        // Durable answers wait: a commit, and a read of writes not yet durable.
        let mut durable = durable_deposit(2, 1);
        let mut read = {
            let engine = engine.clone();
            tokio::spawn(async move { balance(&engine, 1).await })
        };
        assert!(tokio::time::timeout(NOT_BEFORE, &mut durable).await.is_err(), "a durable answer came while the log held every write");
        assert!(tokio::time::timeout(NOT_BEFORE, &mut read).await.is_err(), "a read of writes not yet durable was answered");
        faulty.release();
        let durable = durable.await.unwrap().unwrap();
        assert_eq!(durable.value, json!({ "balance": 24 }), "it saw the logged transfer");
        assert!(durable.lsn.is_some_and(|lsn| engine.log().tail() >= lsn));
        assert_eq!(read.await.unwrap(), json!(2));
        assert_eq!(commits_after(&engine, 0).await, 6, "the DDL, four deposits and the transfer");

        // A logged commit the disk refuses: a durable commit appended after it, on the other
        // partition, is refused too (the log refuses every write after a failed one).
        faulty.hold();
        let lost = logged(Invocation::new("deposit", json!({ "id": 1, "amount": 100 })));
        assert_eq!(lost.await.expect("a logged answer waited for the disk").unwrap().value, json!({ "balance": 102 }));
        let held = Arc::clone(&faulty);
        tokio::task::spawn_blocking(move || held.wait_until_held(1)).await.unwrap();
        let elsewhere = (3..).find(|a| engine.partition_of(&comb_backend::Value::Int(*a)) != engine.partition_of(&comb_backend::Value::Int(1))).unwrap();
        let ran = runs.load(Ordering::SeqCst);
        let behind = durable_deposit(elsewhere, 1000);
        // Its body has run: it is appended behind the held write, or about to be.
        while runs.load(Ordering::SeqCst) == ran {
            tokio::task::yield_now().await;
        }
        faulty.fail_next_append();
        faulty.release();
        assert!(behind.await.unwrap().is_err(), "a commit behind a lost one was acknowledged");
        let _ = engine.close().await;
    });
    comb_log::Loglet::close(&*faulty).unwrap();
    drop(faulty);

    runtime().block_on(async {
        let engine = open(dir.path(), 2, &runs).await;
        assert_eq!((balance(&engine, 1).await, balance(&engine, 2).await), (json!(2), json!(24)), "neither the lost commit nor the one behind it");
        engine.close().await.unwrap();
    });
}

/// A function registered while a DDL's record is being appended must fit the catalog that
/// DDL makes: refused at once if it does not, rather than accepted and then lost.
#[test]
fn a_function_registered_during_a_ddl_fits_the_new_catalog_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = controlled_log(dir.path());
    runtime().block_on(async {
        let engine = open_over(dir.path(), &faulty).await;
        engine.execute_ddl("CREATE TABLE extra (id BIGINT PRIMARY KEY)").await.unwrap();
        faulty.hold();
        let dropping = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.execute_ddl("DROP TABLE extra").await })
        };
        let held = Arc::clone(&faulty);
        tokio::task::spawn_blocking(move || held.wait_until_held(1)).await.unwrap();
        let uses = |table: &str| Function::new(format!("count_{table}")).statement("n", format!("SELECT count(*) FROM {table}")).run(|tx, _| Ok(json!(tx.query_one::<i64>("n", ())?)));
        match engine.register(uses("extra")) {
            Err(Error::InvalidFunction { message, .. }) => assert!(message.contains("DDL being applied"), "{message}"),
            other => panic!("a function that the DDL under way breaks was registered: {other:?}"),
        }
        engine.register(uses("accounts")).unwrap();
        faulty.release();
        dropping.await.unwrap().unwrap();
        assert_eq!(engine.invoke(Invocation::new("count_accounts", json!({}))).await.unwrap().value, json!(0));
        assert!(matches!(engine.invoke(Invocation::new("count_extra", json!({}))).await, Err(Error::UnknownFunction { .. })));
        engine.close().await.unwrap();
    });
    comb_log::Loglet::close(&*faulty).unwrap();
}

/// A commit is answered the moment the log reports it durable, not when its executor next
/// looks at its queue: an invocation running long on the same partition does not hold the
/// answer back.
#[test]
fn a_durable_commit_is_answered_while_its_executor_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = controlled_log(dir.path());
    runtime().block_on(async {
        let engine = open_over(dir.path(), &faulty).await;
        register(&engine, &Arc::new(AtomicUsize::new(0)));
        let (open_gate, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate);
        let entered = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&entered);
        engine
            .register(Function::new("slow_read").statement("get", "SELECT balance FROM accounts WHERE id = $1").partition_by("id").run(move |tx, input| {
                counted.fetch_add(1, Ordering::SeqCst);
                // Holds the partition's executor until the test opens the gate.
                gate.lock().unwrap().recv().unwrap();
                let balance: Option<i64> = tx.query_opt("get", (id(&input, "id"),))?;
                Ok(json!(balance))
            }))
            .unwrap();

        // The deposit's record waits inside the log; then the executor is held by a body.
        faulty.hold();
        let invoke = |name: &'static str| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.invoke(Invocation::new(name, json!({ "id": 3, "amount": 4 }))).await })
        };
        let deposit = invoke("deposit");
        let held = Arc::clone(&faulty);
        tokio::task::spawn_blocking(move || held.wait_until_held(1)).await.unwrap();
        let slow = invoke("slow_read");
        while entered.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        faulty.release();
        let answered = tokio::time::timeout(Duration::from_secs(5), deposit).await.expect("the durable commit waited for its busy executor");
        assert_eq!(answered.unwrap().unwrap().value, json!({ "balance": 4 }));
        assert!(!slow.is_finished(), "the executor was not held");
        open_gate.send(()).unwrap();
        assert_eq!(slow.await.unwrap().unwrap().value, json!(4), "the read sees the deposit");
        engine.close().await.unwrap();
    });
    comb_log::Loglet::close(&*faulty).unwrap();
}

/// A failure that rests on a commit not yet durable (a duplicate of a key that commit
/// inserted) is not answered before that commit: were the commit lost, the caller would have
/// been told of a row that never existed.
#[test]
fn a_failure_seen_through_a_pending_commit_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = controlled_log(dir.path());
    runtime().block_on(async {
        let engine = open_over(dir.path(), &faulty).await;
        let bodies = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&bodies);
        engine
            .register(Function::new("open_account").statement("open", "INSERT INTO accounts (id, balance) VALUES ($1, 0)").partition_by("id").run(move |tx, input| {
                counted.fetch_add(1, Ordering::SeqCst);
                tx.execute("open", (id(&input, "id"),))?;
                Ok(json!(null))
            }))
            .unwrap();

        // The first insert's record waits inside the log; the second sees its row.
        faulty.hold();
        let open = |engine: &Engine| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.invoke(Invocation::new("open_account", json!({ "id": 7 }))).await })
        };
        let first = open(&engine);
        let held = Arc::clone(&faulty);
        tokio::task::spawn_blocking(move || held.wait_until_held(1)).await.unwrap();
        let second = open(&engine);
        while bodies.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // The first insert is never made durable.
        faulty.fail_next_append();
        faulty.release();
        assert!(first.await.unwrap().is_err(), "a commit the log refused was acknowledged");
        match second.await.unwrap() {
            Err(Error::PartitionFailed { .. }) => {}
            other => panic!("the second insert was answered from a row never made durable: {other:?}"),
        }
        let _ = engine.close().await;
    });
    comb_log::Loglet::close(&*faulty).unwrap();
}

/// A transaction that commits nothing waits only for the pending commits whose writes it
/// read: a point read of another row of the partition, a range scan whose range holds no
/// pending write, and a scan across partitions that meets none are answered while the log
/// holds a commit; a read of its row, a scan over it (or over a pending delete), and a scan
/// across partitions that meets it wait for it. Were it lost, what the first saw would still be true.
#[test]
fn a_read_waits_only_for_the_pending_commits_whose_writes_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let faulty = controlled_log(dir.path());
    runtime().block_on(async {
        let engine = open_two_over(dir.path(), &faulty, &runs).await;
        engine.execute_ddl("CREATE TABLE entries (owner BIGINT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (owner, n))").await.unwrap();
        engine
            .register(Function::new("add_entry").statement("add", "INSERT INTO entries (owner, n) VALUES ($1, $2)").partition_by("owner").run(|tx, input| {
                tx.execute("add", (id(&input, "owner"), id(&input, "n")))?;
                Ok(json!(null))
            }))
            .unwrap();
        let removed = Arc::clone(&runs);
        engine
            .register(Function::new("remove_entry").statement("remove", "DELETE FROM entries WHERE owner = $1 AND n = $2").partition_by("owner").run(move |tx, input| {
                removed.fetch_add(1, Ordering::SeqCst);
                Ok(json!(tx.execute("remove", (id(&input, "owner"), id(&input, "n")))?))
            }))
            .unwrap();
        engine
            .register(Function::new("count_entries").statement("count", "SELECT count(*) FROM entries WHERE owner = $1 AND n BETWEEN $2 AND $3").partition_by("owner").run(|tx, input| {
                Ok(json!(tx.query_one::<i64>("count", (id(&input, "owner"), id(&input, "from"), id(&input, "to")))?))
            }))
            .unwrap();
        // Account `a`, account `b` and owner `a`'s entries all lie on one partition.
        let (a, part) = (1, engine.partition_of(&comb_backend::Value::Int(1)));
        let b = (2..).find(|x| engine.partition_of(&comb_backend::Value::Int(*x)) == part).unwrap();
        for (account, amount) in [(a, 10), (b, 20)] {
            engine.invoke(Invocation::new("deposit", json!({ "id": account, "amount": amount }))).await.unwrap();
        }
        for n in [1, 2, 5] {
            engine.invoke(Invocation::new("add_entry", json!({ "owner": a, "n": n }))).await.unwrap();
        }
        let call = |function: &str, input: Json| {
            let (engine, invocation) = (engine.clone(), Invocation::new(function, input));
            tokio::spawn(async move { engine.invoke(invocation).await.map(|output| output.value) })
        };

        // The log holds the write of entry 3.
        faulty.hold();
        let entry = call("add_entry", json!({ "owner": a, "n": 3 }));
        let held = Arc::clone(&faulty);
        tokio::task::spawn_blocking(move || held.wait_until_held(1)).await.unwrap();
        let at_once = |function: &'static str, input: Json| {
            let call = call(function, input);
            async move { tokio::time::timeout(ANSWERED_WITHIN, call).await.unwrap_or_else(|_| panic!("{function} waited for a commit it did not read")).unwrap().unwrap() }
        };
        assert_eq!(at_once("balance", json!({ "id": b })).await, json!(20), "a row of the partition beside the pending one");
        assert_eq!(at_once("count_entries", json!({ "owner": a, "from": 4, "to": 9 })).await, json!(1), "a range beside the pending row");
        assert_eq!(at_once("total", json!({})).await, json!({ "sum": 30, "count": 2 }), "a scan across partitions of another table");
        let mut over_entry = call("count_entries", json!({ "owner": a, "from": 1, "to": 3 }));
        assert!(tokio::time::timeout(NOT_BEFORE, &mut over_entry).await.is_err(), "a scan over a row not yet durable was answered");

        // And a deposit to `a`, behind it.
        let ran = runs.load(Ordering::SeqCst);
        let deposit = call("deposit", json!({ "id": a, "amount": 5 }));
        while runs.load(Ordering::SeqCst) == ran {
            tokio::task::yield_now().await;
        }
        let (mut read_a, mut total) = (call("balance", json!({ "id": a })), call("total", json!({})));
        assert!(tokio::time::timeout(NOT_BEFORE, &mut read_a).await.is_err(), "a read of a row not yet durable was answered");
        assert!(tokio::time::timeout(NOT_BEFORE, &mut total).await.is_err(), "a scan across partitions that met a row not yet durable was answered");
        assert_eq!(at_once("balance", json!({ "id": b })).await, json!(20), "still: a row no pending commit wrote");

        // And the delete of entry 5, behind them: a scan whose range holds the deleted key waits.
        assert_eq!(at_once("count_entries", json!({ "owner": a, "from": 4, "to": 9 })).await, json!(1), "before the delete");
        let ran = runs.load(Ordering::SeqCst);
        let remove = call("remove_entry", json!({ "owner": a, "n": 5 }));
        while runs.load(Ordering::SeqCst) == ran {
            tokio::task::yield_now().await;
        }
        let mut over_delete = call("count_entries", json!({ "owner": a, "from": 4, "to": 9 }));
        assert!(tokio::time::timeout(NOT_BEFORE, &mut over_delete).await.is_err(), "a scan over a delete not yet durable was answered");
        assert_eq!(at_once("count_entries", json!({ "owner": a, "from": 6, "to": 9 })).await, json!(0), "a range beside the delete");

        faulty.release();
        assert_eq!(entry.await.unwrap().unwrap(), json!(null));
        assert_eq!(deposit.await.unwrap().unwrap(), json!({ "balance": 15 }));
        assert_eq!(over_entry.await.unwrap().unwrap(), json!(3));
        assert_eq!(read_a.await.unwrap().unwrap(), json!(15));
        assert_eq!(total.await.unwrap().unwrap(), json!({ "sum": 35, "count": 2 }));
        assert_eq!(remove.await.unwrap().unwrap(), json!(1));
        assert_eq!(over_delete.await.unwrap().unwrap(), json!(0));
        engine.close().await.unwrap();
    });
    comb_log::Loglet::close(&*faulty).unwrap();
}

#[test]
fn a_function_cannot_run_a_statement_it_did_not_declare() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let engine = open(dir.path(), 1, &runs).await;
        // It declares a read, then asks for another function's write by name.
        engine
            .register(Function::new("sneaky").statement("get", "SELECT balance FROM accounts WHERE id = $1").partition_by("id").run(|tx, input| {
                tx.execute("add", (id(&input, "id"), 1_000_000i64))?;
                Ok(json!("done"))
            }))
            .unwrap();
        let tail = engine.log().tail();
        let err = engine.invoke(Invocation::new("sneaky", json!({ "id": 1 }))).await.unwrap_err();
        assert!(matches!(&err, Error::UnknownStatement { function, statement } if function == "sneaky" && statement == "add"), "{err}");
        assert_eq!(commits_after(&engine, tail).await, 0, "nothing committed");
        assert_eq!(balance(&engine, 1).await, json!(null));
        engine.close().await.unwrap();
    });
}

#[test]
fn latest_rows_by_key_read_backwards_from_store_and_pending_writes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let open = |dir: std::path::PathBuf| async move {
        let engine = Engine::open(&dir, options(2)).await.unwrap();
        if engine.catalog().table("feed").is_none() {
            engine.execute_ddl("CREATE TABLE feed (u BIGINT, at BIGINT, PRIMARY KEY (u, at))").await.unwrap();
        }
        engine
            .register(Function::new("add").statement("i", "INSERT INTO feed (u, at) VALUES ($1, $2)").partition_by("u").run(|tx, input| {
                tx.execute("i", (id(&input, "u"), id(&input, "at")))?;
                Ok(Json::Null)
            }))
            .unwrap();
        engine
            .register(Function::new("drop").statement("d", "DELETE FROM feed WHERE u = $1 AND at = $2").partition_by("u").run(|tx, input| {
                Ok(json!(tx.execute("d", (id(&input, "u"), id(&input, "at")))?))
            }))
            .unwrap();
        engine
            .register(
                Function::new("latest")
                    .statement("l", "SELECT at FROM feed WHERE u = $1 ORDER BY at DESC LIMIT $2")
                    .partition_by("u")
                    .run(|tx, input| Ok(json!(tx.query_as::<i64>("l", (id(&input, "u"), id(&input, "n")))?))),
            )
            .unwrap();
        engine
    };
    rt.block_on(async {
        let engine = open(dir.path().to_owned()).await;
        let add = |u: i64, at: i64| engine.invoke(Invocation::new("add", json!({ "u": u, "at": at })));
        // Neighbours on both sides of user 1's key range, in the store after a checkpoint.
        for at in [1, 5, 9] {
            add(0, at).await.unwrap();
            add(2, -at).await.unwrap();
        }
        for at in (10..=100).step_by(10) {
            add(1, at).await.unwrap();
        }
        engine.checkpoint().await.unwrap();
        let latest = |n: i64| engine.invoke(Invocation::new("latest", json!({ "u": 1, "n": n })));
        assert_eq!(latest(3).await.unwrap().value, json!([100, 90, 80]));
        // Writes on top of the flushed rows: a newer row, a deleted newest one, concurrently
        // with the reads (some still pending when read).
        let (a, b, c) = tokio::join!(add(1, 95), engine.invoke(Invocation::new("drop", json!({ "u": 1, "at": 100 }))), latest(4));
        a.unwrap();
        assert_eq!(b.unwrap().value, json!(1));
        let seen = c.unwrap().value;
        assert!(
            [json!([100, 90, 80, 70]), json!([100, 95, 90, 80]), json!([95, 90, 80, 70]), json!([90, 80, 70, 60])].contains(&seen),
            "a read sees each commit whole, before or after: {seen}"
        );
        assert_eq!(latest(4).await.unwrap().value, json!([95, 90, 80, 70]));
        assert_eq!(latest(100).await.unwrap().value, json!([95, 90, 80, 70, 60, 50, 40, 30, 20, 10]), "nothing of user 0 or 2");
        engine.close().await.unwrap();

        let engine = open(dir.path().to_owned()).await;
        let latest = engine.invoke(Invocation::new("latest", json!({ "u": 1, "n": 2 }))).await.unwrap();
        assert_eq!(latest.value, json!([95, 90]), "after a reopen, from the store");
        let user2 = engine.invoke(Invocation::new("latest", json!({ "u": 2, "n": 5 }))).await.unwrap();
        assert_eq!(user2.value, json!([-1, -5, -9]));
        engine.close().await.unwrap();
    });
}
