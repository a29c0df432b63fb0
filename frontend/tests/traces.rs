//! The tracing layer end to end: workflows run through the API (one writing, one reading,
//! one failing, and a recorded step replayed), then every trace table is checked row by row
//! with SQL over QueryTraces, before and after a restart. (The crash test, tests/crash.rs
//! at the root, checks the traces after SIGKILLs.)

use std::time::Duration;

use comb_backend::{EngineOptions, Function, Invocation};
use comb_client::{Client, Code, RunStatus, Traces};
use comb_frontend::{Listening, Server, ServerOptions, TracingOptions};
use serde_json::{Value, json};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL);";

fn functions() -> Vec<Function> {
    vec![
        Function::new("add")
            .statement("add", "INSERT INTO counters (id, n) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = counters.n + excluded.n RETURNING n")
            .partition_by("id")
            .run(|tx, input| {
                let n: i64 = tx.query_one("add", (input["id"].as_i64(), input["by"].as_i64()))?;
                Ok(json!({ "n": n }))
            }),
        Function::new("get").statement("get", "SELECT n FROM counters WHERE id = $1").partition_by("id").run(|tx, input| {
            let n: Option<i64> = tx.query_opt("get", (input["id"].as_i64(),))?;
            Ok(json!({ "n": n }))
        }),
        Function::new("fail").partition_by("id").run(|_, input| Err(format!("refused {}", input["id"]).into())),
    ]
}

const WORKFLOWS: [&str; 3] = [
    r#"{"name": "count", "steps": [{"id": "add", "function": "add", "input": "$input"}], "output": "$add"}"#,
    r#"{"name": "peek", "steps": [{"id": "get", "function": "get", "input": "$input"}], "output": "$get"}"#,
    r#"{"name": "bad", "steps": [{"id": "fail", "function": "fail", "input": "$input"}], "output": "$fail"}"#,
];

async fn start(dir: &std::path::Path) -> (Server, Listening, Client) {
    let options = ServerOptions {
        engine: EngineOptions { partitions: 2, trace_reads: true, ..EngineOptions::default() },
        // Rows stay in the in-memory tail until the server closes: the test sees both.
        tracing: TracingOptions { flush_age: Duration::from_secs(3600), ..TracingOptions::default() },
        ..ServerOptions::default()
    };
    start_with(dir, options).await
}

async fn start_with(dir: &std::path::Path, options: ServerOptions) -> (Server, Listening, Client) {
    let mut builder = Server::builder().data_dir(dir).options(options).schema(SCHEMA);
    for f in functions() {
        builder = builder.function(f);
    }
    for w in WORKFLOWS {
        builder = builder.workflow(w);
    }
    let server = builder.build().await.expect("the server starts");
    let listening = server.listen("127.0.0.1:0".parse().unwrap()).await.expect("it listens");
    let client = Client::builder(format!("http://{}", listening.local_addr())).timeout(Duration::from_secs(30)).connect().await.expect("the client connects");
    (server, listening, client)
}

async fn query(client: &Client, sql: &str) -> Traces {
    client.query_traces(sql, true).await.unwrap_or_else(|err| panic!("{sql}: {err}"))
}

/// Queries until the answer has `rows` rows: traces of invocations that commit nothing are
/// appended just after their reply, so they may trail it by one group commit.
async fn query_rows(client: &Client, sql: &str, rows: usize) -> Vec<Vec<Value>> {
    for _ in 0..1_000 {
        let answer = query(client, sql).await;
        if answer.rows.len() >= rows {
            return answer.rows;
        }
        tokio::task::yield_now().await;
    }
    panic!("{sql}: never reached {rows} rows");
}

const INVOCATIONS: &str = "SELECT workflow_id, step, function, status, error, recorded, replayed, read_only, lsn IS NULL AS uncommitted, \
     duration_us >= 0 AND end_time >= start_time AS timed FROM function_invocations ORDER BY start_time, workflow_id";
const CHANGES: &str = "SELECT table_name, operation, key, before, after, workflow_id, step, function FROM change_data ORDER BY lsn";
const RUNS: &str = "SELECT id, name, version, status, input, output, error, end_time >= start_time AS timed FROM workflows ORDER BY id";

fn expected_invocations() -> Vec<Vec<Value>> {
    let row = |w: &str, s: &str, f: &str, status: &str, error: Value, recorded: bool, replayed: bool, read_only: bool, uncommitted: bool| {
        vec![json!(w), json!(s), json!(f), json!(status), error, json!(recorded), json!(replayed), json!(read_only), json!(uncommitted), json!(true)]
    };
    vec![
        row("c1", "add", "add", "succeeded", Value::Null, false, false, false, false),
        row("c2", "add", "add", "succeeded", Value::Null, false, false, false, false),
        row("p1", "get", "get", "succeeded", Value::Null, false, false, true, false),
        row("b1", "fail", "fail", "failed", json!("function fail failed and was rolled back: refused 2"), false, false, false, true),
        row("direct", "s", "add", "succeeded", Value::Null, true, false, false, false),
        row("direct", "s", "add", "succeeded", Value::Null, true, true, true, true),
    ]
}

fn expected_changes() -> Vec<Vec<Value>> {
    vec![
        vec![json!("counters"), json!("insert"), json!(r#"{"id":1}"#), Value::Null, json!(r#"{"id":1,"n":5}"#), json!("c1"), json!("add"), json!("add")],
        vec![json!("counters"), json!("update"), json!(r#"{"id":1}"#), json!(r#"{"id":1,"n":5}"#), json!(r#"{"id":1,"n":7}"#), json!("c2"), json!("add"), json!("add")],
        vec![json!("counters"), json!("insert"), json!(r#"{"id":3}"#), Value::Null, json!(r#"{"id":3,"n":1}"#), json!("direct"), json!("s"), json!("add")],
    ]
}

fn expected_runs() -> Vec<Vec<Value>> {
    let run = |id: &str, name: &str, status: &str, input: &str, output: Value, error: Value| vec![json!(id), json!(name), json!(1), json!(status), json!(input), output, error, json!(true)];
    vec![
        run("b1", "bad", "failed", r#"{"id":2}"#, Value::Null, json!("function fail failed and was rolled back: refused 2")),
        run("c1", "count", "succeeded", r#"{"by":5,"id":1}"#, json!(r#"{"n":5}"#), Value::Null),
        run("c2", "count", "succeeded", r#"{"by":2,"id":1}"#, json!(r#"{"n":7}"#), Value::Null),
        run("p1", "peek", "succeeded", r#"{"id":1}"#, json!(r#"{"n":7}"#), Value::Null),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_holds_exactly_what_ran_before_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, listening, client) = start(dir.path()).await;

    assert_eq!(client.invoke::<Value>("count", &json!({ "id": 1, "by": 5 })).id("c1").await.unwrap(), json!({ "n": 5 }));
    assert_eq!(client.invoke::<Value>("count", &json!({ "id": 1, "by": 2 })).id("c2").await.unwrap(), json!({ "n": 7 }));
    assert_eq!(client.invoke::<Value>("peek", &json!({ "id": 1 })).id("p1").await.unwrap(), json!({ "n": 7 }));
    let failed = client.invoke::<Value>("bad", &json!({ "id": 2 })).id("b1").run().await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    // A recorded invocation, then the same invocation again: its output is replayed.
    let engine = server.engine();
    let recorded = || Invocation::new("add", json!({ "id": 3, "by": 1 })).id("direct", "s").record();
    let first = engine.invoke(recorded()).await.unwrap();
    let again = engine.invoke(recorded()).await.unwrap();
    assert!(!first.replayed && again.replayed && again.value == first.value);

    // The rows are in the in-memory tail: queryable at once.
    assert_eq!(query_rows(&client, INVOCATIONS, 6).await, expected_invocations());
    assert_eq!(query(&client, CHANGES).await.rows, expected_changes());
    let runs = query(&client, RUNS).await;
    assert_eq!(runs.columns, ["id", "name", "version", "status", "input", "output", "error", "timed"]);
    assert_eq!(runs.rows, expected_runs());
    // A join: each committed invocation with the changes it made.
    let joined = query(
        &client,
        "SELECT i.workflow_id, c.operation, c.key FROM function_invocations i JOIN change_data c ON i.lsn = c.lsn ORDER BY c.lsn",
    )
    .await;
    assert_eq!(joined.rows, vec![vec![json!("c1"), json!("insert"), json!(r#"{"id":1}"#)], vec![json!("c2"), json!("update"), json!(r#"{"id":1}"#)], vec![
        json!("direct"),
        json!("insert"),
        json!(r#"{"id":3}"#)
    ]]);
    // The rows each invocation read: the counter that c2's upsert found, and p1's read.
    let reads = query(&client, "SELECT workflow_id, step, function, table_name, key, lsn IS NULL AS uncommitted FROM read_events ORDER BY workflow_id").await;
    assert_eq!(reads.rows, vec![
        vec![json!("c2"), json!("add"), json!("add"), json!("counters"), json!(r#"{"id":1}"#), json!(false)],
        vec![json!("p1"), json!("get"), json!("get"), json!("counters"), json!(r#"{"id":1}"#), json!(false)],
    ]);
    // Aggregates and time functions work.
    let per_function = query(&client, "SELECT function, count(*) AS n FROM function_invocations WHERE start_time > now() - INTERVAL '1 hour' GROUP BY function ORDER BY function").await;
    assert_eq!(per_function.rows, vec![vec![json!("add"), json!(4)], vec![json!("fail"), json!(1)], vec![json!("get"), json!(1)]]);

    // DataFusion's errors reach the user with their message; nothing but queries runs.
    let err = client.query_traces("SELECT nope FROM workflows", false).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().contains("nope"), "{err}");
    for refused in ["CREATE TABLE t (a INT)", "INSERT INTO workflows (id) VALUES ('x')", "SET datafusion.execution.batch_size = 1"] {
        let err = client.query_traces(refused, false).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{refused}: {err}");
    }
    let err = client.query_traces(" ", false).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));

    // A restart: closing flushes the tail to Parquet; the restarted feed reads nothing again.
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
    let files = std::fs::read_dir(dir.path().join("traces/function_invocations")).unwrap().count();
    assert_eq!(files, 1, "one Parquet file after the flush at close");
    let (server, listening, client) = start(dir.path()).await;
    assert_eq!(query(&client, INVOCATIONS).await.rows, expected_invocations());
    assert_eq!(query(&client, CHANGES).await.rows, expected_changes());
    assert_eq!(query(&client, RUNS).await.rows, expected_runs());
    // New work after the restart lands beside the files.
    client.invoke::<Value>("count", &json!({ "id": 1, "by": 1 })).id("c3").await.unwrap();
    let count = query(&client, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM workflows").await;
    assert_eq!(count.rows, vec![vec![json!(5), json!(5)]]);
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}

/// Each flush writes a file per table; merges keep them few, and every row stays once, across
/// a restart too (which removes the merged files' inputs that are still on the disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traces_files_are_merged_and_each_row_stays_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = || ServerOptions { tracing: TracingOptions { flush_age: Duration::from_millis(20), merge_files: 2, ..TracingOptions::default() }, ..ServerOptions::default() };
    let hour = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 3600;
    let started = hour();
    let (server, listening, client) = start_with(dir.path(), options()).await;
    let log = server.engine().log().clone();
    let tracer = server.tracer().unwrap();
    let mut checkpoints = tracer.checkpoints();
    const RUNS: i64 = 12;
    for id in 0..RUNS {
        client.invoke::<Value>("count", &json!({ "id": id, "by": 1 })).await.unwrap();
        // A flush of its own: a file per table for each run.
        let tail = log.tail();
        tokio::time::timeout(Duration::from_secs(10), checkpoints.wait_for(|c| *c >= tail)).await.expect("the run's rows were flushed").unwrap();
    }
    // Small files of one hour, merged two at a time until one is left (two, had an hour
    // begun meanwhile, until that one has passed).
    let merged = |counts: &[usize; 4]| counts.iter().take(3).all(|n| *n == 1 || (*n == 2 && hour() != started));
    let mut counts = tracer.file_counts();
    // An hour that turns with no change after is judged once the wait is over.
    let _ = tokio::time::timeout(Duration::from_secs(10), counts.wait_for(merged)).await;
    assert!(merged(&counts.borrow()), "files of function_invocations, change_data, workflows: {:?}", *counts.borrow());
    // Health reports them: the files listed now (fewer after, should a merge of an hour
    // that has turned land meanwhile), and the merges (each of the three tables merged a
    // dozen files).
    let listed = || counts.borrow().iter().sum::<usize>() as u64;
    let before = listed();
    let health = client.health().await.unwrap();
    assert!((listed()..=before).contains(&health.trace_files), "{health:?}");
    assert!(health.trace_merges >= 3, "{health:?}");
    let sql = "SELECT (SELECT count(*) FROM workflows) AS runs, (SELECT count(DISTINCT id) FROM workflows) AS ids, \
               (SELECT count(*) FROM function_invocations) AS steps, (SELECT count(*) FROM change_data) AS changes";
    let each_once = vec![vec![json!(RUNS), json!(RUNS), json!(RUNS), json!(RUNS)]];
    assert_eq!(query(&client, sql).await.rows, each_once);
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();

    let (server, listening, client) = start_with(dir.path(), options()).await;
    assert_eq!(query(&client, sql).await.rows, each_once, "no row lost or read twice after the restart");
    let on_disk = std::fs::read_dir(dir.path().join("traces").join("workflows")).unwrap().count();
    assert_eq!(on_disk, server.tracer().unwrap().file_counts().borrow()[2], "the merged files' inputs are gone from the disk");
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}

/// The server checkpoints as it serves: its log is trimmed, never below what the trace feed
/// has put in files, and a restart over the trimmed log loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_trims_its_log_as_it_serves_and_never_past_the_traces() {
    let dir = tempfile::tempdir().unwrap();
    let options = || ServerOptions {
        engine: EngineOptions { partitions: 2, ..EngineOptions::default() },
        tracing: TracingOptions { flush_age: Duration::from_millis(100), ..TracingOptions::default() },
        checkpoint_interval: Duration::from_millis(50),
        ..ServerOptions::default()
    };
    let (server, listening, client) = start_with(dir.path(), options()).await;
    let log = server.engine().log().clone();
    let untrimmed = log.trim_point();
    const RUNS: i64 = 20;
    for id in 0..RUNS {
        client.invoke::<Value>("count", &json!({ "id": id, "by": 1 })).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), log.trimmed_past(untrimmed + RUNS as u64 / 2))
        .await
        .unwrap_or_else(|_| panic!("the log was not trimmed: trim point {}", log.trim_point()))
        .unwrap();
    let sql = "SELECT count(*) AS runs FROM workflows WHERE name = 'count'";
    assert_eq!(query(&client, sql).await.rows, vec![vec![json!(RUNS)]], "every run traced, none lost to the trim");
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();

    let (server, listening, client) = start_with(dir.path(), options()).await;
    for id in 0..RUNS {
        assert_eq!(client.invoke::<Value>("peek", &json!({ "id": id })).await.unwrap(), json!({ "n": 1 }), "counter {id}");
    }
    assert_eq!(query(&client, sql).await.rows, vec![vec![json!(RUNS)]], "the traces neither lost nor repeated a run");
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();

    // Without tracing, nothing holds the log: it is trimmed past what the traces hold.
    let untraced = ServerOptions { tracing: TracingOptions { enabled: false, ..TracingOptions::default() }, ..options() };
    let (server, listening, client) = start_with(dir.path(), untraced).await;
    for id in 0..5 {
        client.invoke::<Value>("count", &json!({ "id": id, "by": 1 })).await.unwrap();
    }
    let log = server.engine().log().clone();
    tokio::time::timeout(Duration::from_secs(10), log.trimmed_past(log.tail())).await.expect("the log was not trimmed to its tail").unwrap();
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();

    // Tracing again: the feed goes on from what the log holds, rather than stopping, and a
    // query that catches up with the log is answered though no record follows the gap.
    let (server, listening, client) = start_with(dir.path(), options()).await;
    assert_eq!(query(&client, sql).await.rows, vec![vec![json!(RUNS)]], "caught up over the gap");
    client.invoke::<Value>("count", &json!({ "id": 0, "by": 1 })).await.unwrap();
    assert_eq!(query(&client, sql).await.rows, vec![vec![json!(RUNS + 1)]], "the runs the log still held are traced; the trimmed ones are missing");
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}

/// A flush that fails (here, the folder of the `workflows` table replaced by a file, as a
/// full or failing disk would refuse it) is tried again until it succeeds: the log is not
/// trimmed past what the traces hold meanwhile, and then every run is traced once, also
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_is_tried_again_and_the_traces_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = || ServerOptions {
        engine: EngineOptions { partitions: 2, ..EngineOptions::default() },
        // No merges: every file in a folder is one the listing holds.
        tracing: TracingOptions { flush_age: Duration::from_millis(50), merge_files: 0, ..TracingOptions::default() },
        checkpoint_interval: Duration::from_millis(50),
        ..ServerOptions::default()
    };
    let (server, listening, client) = start_with(dir.path(), options()).await;
    let (log, tracer) = (server.engine().log().clone(), server.tracer().expect("tracing is on"));
    let files_on_disk = |table: &str| std::fs::read_dir(dir.path().join("traces").join(table)).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet")).count();
    let folder = dir.path().join("traces").join("workflows");
    let aside = dir.path().join("workflows-aside");
    std::fs::rename(&folder, &aside).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    const RUNS: i64 = 10;
    for id in 0..RUNS {
        client.invoke::<Value>("count", &json!({ "id": id, "by": 1 })).await.unwrap();
    }
    let ran = log.tail();
    // Tried and failed, again and again: the checkpoint stays, so the log keeps the runs.
    tokio::time::timeout(Duration::from_secs(10), tracer.flush_failure_counts().wait_for(|n| *n >= 3)).await.expect("the flush was not tried again").unwrap();
    assert!(client.health().await.unwrap().trace_flush_failures >= 3, "Health counts the failures");
    assert!(tracer.checkpoint() < ran, "the checkpoint passed records whose rows are in no file");
    assert!(log.trim_point() <= tracer.checkpoint() + 1, "the log was trimmed past the traces: trim point {}, checkpoint {}", log.trim_point(), tracer.checkpoint());
    assert_eq!(tracer.failure(), None, "the feed goes on");

    std::fs::remove_file(&folder).unwrap();
    std::fs::rename(&aside, &folder).unwrap();
    tokio::time::timeout(Duration::from_secs(10), log.trimmed_past(ran))
        .await
        .unwrap_or_else(|_| panic!("the log was never trimmed past the runs: the flush was not tried again (checkpoint {})", tracer.checkpoint()))
        .unwrap();
    let sql = "SELECT count(*) AS runs, count(DISTINCT id) AS ids FROM workflows WHERE name = 'count'";
    assert_eq!(query(&client, sql).await.rows, vec![vec![json!(RUNS), json!(RUNS)]], "every run traced once");
    // The failed flushes wrote the other tables' files before failing on this one's: they
    // removed them, and only the listed files are left.
    let listed = *tracer.file_counts().borrow();
    for (table, listed) in comb_tracing::TABLES.iter().zip(listed) {
        assert_eq!(files_on_disk(table), listed, "{table}: a failed flush left its files");
    }
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();

    let (server, listening, client) = start_with(dir.path(), options()).await;
    assert_eq!(query(&client, sql).await.rows, vec![vec![json!(RUNS), json!(RUNS)]], "the failed flushes left no file that counts a run again");
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tracing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions { tracing: TracingOptions { enabled: false, ..TracingOptions::default() }, ..ServerOptions::default() };
    let server = Server::builder().data_dir(dir.path()).options(options).build().await.unwrap();
    let listening = server.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = Client::connect(format!("http://{}", listening.local_addr())).await.unwrap();
    let err = client.query_traces("SELECT 1", false).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    assert!(err.to_string().contains("no traces"), "{err}");
    let health = client.health().await.unwrap();
    assert_eq!((health.traced_lsn, health.trace_files, health.trace_merges), (0, 0, 0));
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
    assert!(!dir.path().join("traces").exists());
}
