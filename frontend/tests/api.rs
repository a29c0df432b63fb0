//! End to end over gRPC on loopback: a server in this process, the Rust client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use comb_backend::{Answer, EngineOptions, Function, Invocation, InvocationId, NextInput, NextInputFn, TRACE_TAG, Transaction, TransactionStep};
use comb_client::{Client, Code, ListFilter, RunStatus, SqlFunction, SqlStatement};
use comb_frontend::{CHECKPOINT_INTERVAL_MAX, Listening, RUN_RETENTION_MAX, Server, ServerOptions};
use futures::StreamExt;
use serde_json::{Value, json};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL);";

/// Counts the runs of the test's functions' bodies, to check that nothing ran twice.
#[derive(Default)]
struct Runs {
    add: AtomicUsize,
    meet: AtomicUsize,
}

fn functions(runs: &Arc<Runs>) -> Vec<Function> {
    let add_runs = Arc::clone(runs);
    let meet_runs = Arc::clone(runs);
    vec![
        Function::new("add")
            .statement("add", "INSERT INTO counters (id, n) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = counters.n + excluded.n RETURNING n")
            .partition_by("id")
            .run(move |tx, input| {
                add_runs.add.fetch_add(1, Ordering::SeqCst);
                let id = input["id"].as_i64().ok_or("id must be an integer")?;
                let n: i64 = tx.query_one("add", (id, input["by"].as_i64().unwrap_or(1)))?;
                Ok(json!({ "id": id, "n": n }))
            }),
        Function::new("get")
            .statement("get", "SELECT n FROM counters WHERE id = $1")
            .partition_by("id")
            .run(|tx, input| {
                let n: Option<i64> = tx.query_opt("get", (input["id"].as_i64(),))?;
                Ok(json!({ "n": n }))
            }),
        // Reads counter 0 and points at counter `base + n`: a read-only step whose output
        // changes once counter 0 does.
        Function::new("pick")
            .statement("get", "SELECT n FROM counters WHERE id = 0")
            .partition_by("id")
            .run(|tx, input| {
                let n: Option<i64> = tx.query_opt("get", ())?;
                Ok(json!({ "id": input["base"].as_i64().ok_or("base must be an integer")? + n.unwrap_or(0) }))
            }),
        // As `pick`, but fails once counter 0 is above 0.
        Function::new("pick_strict")
            .statement("get", "SELECT n FROM counters WHERE id = 0")
            .partition_by("id")
            .run(|tx, input| {
                let n: Option<i64> = tx.query_opt("get", ())?;
                if n.unwrap_or(0) > 0 {
                    return Err(format!("counter 0 is taken ({n:?})").into());
                }
                Ok(json!({ "id": input["base"].as_i64().ok_or("base must be an integer")? }))
            }),
        Function::new("note")
            .statement("put", "INSERT INTO notes (id, body) VALUES ($1, $2)")
            .partition_by("id")
            .run(|tx, input| {
                tx.execute("put", (input["id"].as_i64(), input["body"].as_str().map(str::to_owned)))?;
                Ok(json!({ "noted": input["id"] }))
            }),
        // An output of `bytes` bytes of padding.
        Function::new("pad").partition_by("id").run(|_, input| {
            let bytes = input["bytes"].as_u64().ok_or("bytes must be a count")?.min(1 << 20);
            Ok(json!({ "id": input["id"], "pad": "x".repeat(bytes as usize) }))
        }),
        Function::new("fail").partition_by("id").run(|_, input| Err(format!("refused {}", input["id"]).into())),
        // Waits, up to 5 s (within transaction-time-max-ms), until another branch has
        // arrived too: parallel branches meet, serial ones would not.
        Function::new("meet").partition_by("id").run(move |_, input| {
            meet_runs.meet.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(5);
            while meet_runs.meet.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                std::thread::yield_now();
            }
            Ok(json!({ "id": input["id"], "met": meet_runs.meet.load(Ordering::SeqCst) >= 2 }))
        }),
    ]
}

const COUNT: &str = r#"{"name": "count", "steps": [{"id": "add", "function": "add", "input": "$input"}], "output": "$add"}"#;

/// A read, then a write where the read points: the read is not recorded (the write is its
/// only consumer), the write is.
const PICK_ADD: &str = r#"{"name": "pick_add", "steps": [{"id": "pick", "function": "pick", "input": "$input"}, {"id": "add", "function": "add", "input": "$pick"}], "output": "$add"}"#;

/// `pick_strict`, then `add` where it points: as `pick_add`, but the read fails once counter
/// 0 is taken.
const PICK_STRICT_ADD: &str = r#"{"name": "pick_strict_add", "steps": [{"id": "pick", "function": "pick_strict", "input": "$input"}, {"id": "add", "function": "add", "input": "$pick"}], "output": "$add"}"#;

/// `pick`, then a group of `add` and `note` where `pick` points, recorded together.
const PICK_PAIR: &str = r#"{"name": "pick_pair", "steps": [
    {"id": "pick", "function": "pick", "input": "$input"},
    {"id": "add", "function": "add", "input": "$pick"},
    {"id": "note", "function": "note", "input": {"id": "$add.id", "body": "picked"}}],
    "transactions": [["add", "note"]], "output": {"n": "$add.n", "noted": "$note.noted"}}"#;

/// One `meet` step: it holds its partition's executor until a second `meet` runs, or 10 s.
const MEETING: &str = r#"{"name": "meeting", "steps": [{"id": "m", "function": "meet", "input": "$input"}], "output": "$m"}"#;

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    runs: Arc<Runs>,
    server: Option<(Server, Listening)>,
    client: Client,
    options: ServerOptions,
}

/// The fixture's server options.
fn options(token: Option<String>) -> ServerOptions {
    ServerOptions { engine: EngineOptions { partitions: 2, ..EngineOptions::default() }, token, request_bytes_max: 64 << 10, ..ServerOptions::default() }
}

async fn start(dir: &std::path::Path, runs: &Arc<Runs>, options: ServerOptions) -> (Server, Listening, Client) {
    start_over(dir, runs, options, None).await
}

/// [`start`], on `log` when given instead of the one in `dir/log`.
async fn start_over(dir: &std::path::Path, runs: &Arc<Runs>, options: ServerOptions, log: Option<comb_log::LogBook>) -> (Server, Listening, Client) {
    let token = options.token.clone();
    let mut builder = Server::builder().data_dir(dir).options(options).schema(SCHEMA).workflow(COUNT);
    if let Some(log) = log {
        builder = builder.log(log);
    }
    for f in functions(runs) {
        builder = builder.function(f);
    }
    let server = builder.build().await.expect("the server starts");
    let listening = server.listen("127.0.0.1:0".parse().unwrap()).await.expect("it listens");
    let mut client = Client::builder(format!("http://{}", listening.local_addr())).timeout(Duration::from_secs(30));
    if let Some(token) = token {
        client = client.token(token);
    }
    (server, listening, client.connect().await.expect("the client connects"))
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_options(options(None)).await
    }

    async fn with_token(token: Option<String>) -> Fixture {
        Fixture::with_options(options(token)).await
    }

    async fn with_options(options: ServerOptions) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let runs = Arc::new(Runs::default());
        let (server, listening, client) = start(&path, &runs, options.clone()).await;
        Fixture { _dir: dir, dir: path, runs, server: Some((server, listening)), client, options }
    }

    async fn restart(&mut self) {
        self.stop().await;
        let (server, listening, client) = start(&self.dir, &self.runs, self.options.clone()).await;
        self.server = Some((server, listening));
        self.client = client;
    }

    /// Stops the server and closes its engine, so that no log is left closing on its own
    /// thread when the test process exits (RocksDB's background threads then crash the exit).
    async fn close(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let (server, listening) = self.server.take().unwrap();
        listening.shutdown().await.unwrap();
        server.close().await.unwrap();
    }

    /// Starts a `pick_add` run through the engine, as a crash or a failed log leaves one:
    /// started, and run by no task.
    async fn strand_pick_add(&self, id: &str, input: &Value) {
        self.strand_pick_adds(std::iter::once((id.to_owned(), input.clone()))).await;
    }

    /// Starts `pick_add` runs (id, input) as [`Fixture::strand_pick_add`] does, some at a time.
    async fn strand_pick_adds(&self, runs: impl Iterator<Item = (String, Value)>) {
        let registered = self.client.register_workflow(PICK_ADD).await.unwrap();
        let engine = self.server.as_ref().unwrap().0.engine().clone();
        let homes: Vec<i64> = (0..engine.partitions()).map(|p| (0..).find(|h| engine.partition_of(&comb_planner::Value::Int(*h)) == p).unwrap()).collect();
        let starts = runs.map(|(id, input)| {
            let engine = engine.clone();
            let home = homes[usize::from(engine.partition_of(&comb_planner::Value::Text(id.clone())))];
            let row = json!({
                "home": home, "id": id, "name": "pick_add", "version": registered.version, "status": "running", "input": input.to_string(),
                "output": null, "error": null, "started_us": 1, "ended_us": null,
            });
            async move { engine.invoke(Invocation::new("comb_workflow_start", row)).await.unwrap() }
        });
        futures::stream::iter(starts).buffer_unordered(64).collect::<Vec<_>>().await;
    }

    /// Waits for the end of each run of `ids`, in turn, through GetWorkflow's wait: a run
    /// the server has not resumed yet answers `Unavailable`, a read its full queues refuse
    /// `ResourceExhausted`, and is asked again, until `within` has passed. Returns the ended
    /// runs, and the most runs in flight seen meanwhile.
    async fn await_resumed(&self, ids: impl Iterator<Item = String>, within: Duration) -> (Vec<comb_client::Run>, u64) {
        let deadline = Instant::now() + within;
        let (mut ended, mut most) = (Vec::new(), 0);
        for id in ids {
            let run = loop {
                most = most.max(self.client.health().await.unwrap().workflows_in_flight);
                match self.client.get_workflow(&id, true).await {
                    Ok(run) => break run,
                    Err(err) => assert!(matches!(code(&err), Code::Unavailable | Code::ResourceExhausted), "{err}"),
                }
                assert!(Instant::now() < deadline, "run {id} was not resumed");
                tokio::task::yield_now().await;
            };
            ended.push(run);
        }
        (ended, most)
    }

    /// The partition whose rows an integer key falls in.
    fn partition_of(&self, id: i64) -> u16 {
        self.server.as_ref().unwrap().0.engine().partition_of(&comb_planner::Value::Int(id))
    }

    /// The `home` whose rows fall in the partition of counter `id`: the least such integer,
    /// as the server chooses it.
    fn home_of(&self, id: i64) -> i64 {
        (0..).find(|h| self.partition_of(*h) == self.partition_of(id)).unwrap()
    }

    /// A run's row in `home`, read through the server's system function (`null` if none).
    async fn row_at(&self, home: i64, id: &str) -> Value {
        let get = Invocation::new("comb_workflow_get", json!({ "home": home, "id": id }));
        self.server.as_ref().unwrap().0.engine().invoke(get).await.unwrap().value
    }

    fn log_tail(&self) -> u64 {
        self.server.as_ref().unwrap().0.engine().log().tail()
    }

    /// The server's address, as a client connects to it.
    fn url(&self) -> String {
        format!("http://{}", self.server.as_ref().unwrap().1.local_addr())
    }

    /// Holds the executor of key 1's partition with a `meet` (which waits for a second one,
    /// or 10 s) and returns once it runs: the partition, and the meet's call. Once per
    /// fixture: the count of meets is never reset.
    async fn hold_partition(&self) -> (u16, tokio::task::JoinHandle<comb_client::Result<Value>>) {
        self.client.register_workflow(MEETING).await.unwrap();
        let first = {
            let c = self.client.clone();
            tokio::spawn(async move { c.invoke::<Value>("meeting", &json!({ "id": 1 })).await })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.runs.meet.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the first meet did not start");
            tokio::task::yield_now().await;
        }
        (self.partition_of(1), first)
    }

    /// Lets the partition held by [`Fixture::hold_partition`] go, with a second `meet` on
    /// another partition.
    async fn let_go(&self, held: u16, first: tokio::task::JoinHandle<comb_client::Result<Value>>) {
        let other = (2..).find(|id| self.partition_of(*id) != held).unwrap();
        self.client.invoke::<Value>("meeting", &json!({ "id": other })).await.unwrap();
        let first = first.await.unwrap().expect("the first meet ends");
        assert_eq!(first["met"], true, "the partition was held until let go, not for the meet's 10 s");
    }

    /// Runs ended after `lsn`: by a commit, or traced having written nothing.
    async fn ends_after(&self, lsn: u64) -> usize {
        let log = self.server.as_ref().unwrap().0.engine().log();
        let mut ends = 0;
        let mut next = lsn + 1;
        while let Some(record) = log.read_next(0, next).await.unwrap() {
            ends += match comb_backend::decode_payload(&record.payload).unwrap() {
                comb_backend::LogRecord::Trace(trace) => trace.runs.len(),
                _ => 1,
            };
            next = record.lsn + 1;
        }
        ends
    }

    /// Commit records after `lsn`. Trace records of reads and failures are appended after
    /// their replies, without waiting, so the raw tail is not a count of commits.
    /// Registers `spec` and invokes its workflow `name` without an id on `{"id": key}`; its
    /// step `fail` refuses `key`, so the run fails. The run, and the commits it made.
    async fn failing_run(&self, spec: &str, name: &str, key: i64) -> (comb_client::Run, usize) {
        self.client.register_workflow(spec).await.unwrap();
        let before = self.log_tail();
        let run = self.client.invoke::<Value>(name, &json!({ "id": key })).run().await.unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert!(run.error.as_deref().is_some_and(|e| e.contains(&format!("refused {key}"))), "{run:?}");
        (run, self.commits_after(before).await)
    }

    async fn commits_after(&self, lsn: u64) -> usize {
        let log = self.server.as_ref().unwrap().0.engine().log();
        let mut commits = 0;
        let mut next = lsn + 1;
        while let Some(record) = log.read_next(0, next).await.unwrap() {
            if !record.tags.contains(&TRACE_TAG) {
                commits += 1;
            }
            next = record.lsn + 1;
        }
        commits
    }
}

fn code(err: &comb_client::Error) -> Code {
    err.code().unwrap_or_else(|| panic!("expected an error status, got {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_invocation_and_listing() {
    let mut f = Fixture::new().await;
    let c = f.client.clone();
    let health = c.health().await.unwrap();
    assert_eq!(health.partitions, 2);

    // A one-transaction workflow is ONE commit: the step and the run's row together, the
    // row where the step ran (on either partition, whichever holds the id's home), as
    // answered.
    let other = (2..).find(|k| f.partition_of(*k) != f.partition_of(1)).unwrap();
    for key in [1, other] {
        let before = f.log_tail();
        let run = c.invoke::<Value>("count", &json!({ "id": key, "by": 5 })).run().await.unwrap();
        assert_eq!(run.output, Some(json!({ "id": key, "n": 5 })));
        assert_eq!(f.commits_after(before).await, 1, "one commit for a one-transaction workflow");
        let row = c.get_workflow(&run.id, false).await.unwrap();
        assert_eq!((row.status, &row.output, row.started_us, row.ended_us), (RunStatus::Succeeded, &run.output, run.started_us, run.ended_us));
        assert!(row.ended_us.is_some_and(|ended| ended >= row.started_us), "{row:?}");
    }

    // A SQL-only function, registered at run time, in a two-step workflow.
    let sql_fn = SqlFunction {
        name: "note_read".into(),
        statements: vec![SqlStatement { name: "read".into(), sql: "SELECT id, body FROM notes WHERE id = $1".into(), params: vec!["id".into()] }],
        partition_by: Some("id".into()),
    };
    assert!(c.register_function(&sql_fn).await.unwrap(), "a SELECT-only function is read-only");
    assert!(c.register_function(&sql_fn).await.unwrap(), "registering the same definition again is a no-op");
    let spec = r#"{"name": "jot", "steps": [
        {"id": "put", "function": "note", "input": {"id": "$input.id", "body": "$input.body"}},
        {"id": "back", "function": "note_read", "input": {"id": "$put.noted"}}],
        "output": {"rows": "$back"}}"#;
    let registered = c.register_workflow(spec).await.unwrap();
    assert_eq!((registered.name.as_str(), registered.version), ("jot", 1));
    assert_eq!(registered.recorded_steps, vec!["put".to_owned()]);
    assert_eq!(c.register_workflow(spec).await.unwrap().version, 2, "a name that exists gets a new version");
    let run = c.invoke::<Value>("jot", &json!({ "id": 7, "body": "hello" })).id("jot-1").run().await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.version, 2);
    assert_eq!(run.output, Some(json!({ "rows": [{ "id": 7, "body": "hello" }] })));
    assert!(!run.deduplicated);

    // Asynchronous: returns at once with the id; GetWorkflow waits for the end.
    let started = c.start("jot", &json!({ "id": 8, "body": "later" }), Some("jot-2")).await.unwrap();
    assert_eq!(started.id, "jot-2");
    let ended = c.get_workflow("jot-2", true).await.unwrap();
    assert_eq!(ended.status, RunStatus::Succeeded);
    assert_eq!(ended.output, Some(json!({ "rows": [{ "id": 8, "body": "later" }] })));

    // A failing workflow: its failure is its recorded outcome.
    c.register_workflow(r#"{"name": "doomed", "steps": [{"id": "x", "function": "fail", "input": "$input"}]}"#).await.unwrap();
    let failed = c.invoke::<Value>("doomed", &json!({ "id": 3 })).id("doomed-1").run().await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.error.as_deref().unwrap().contains("refused 3"), "{failed:?}");
    let err = c.invoke::<Value>("doomed", &json!({ "id": 3 })).id("doomed-1").await.unwrap_err();
    assert!(matches!(&err, comb_client::Error::WorkflowFailed { id, .. } if id == "doomed-1"), "{err}");

    // Listing: by name, by status, in pages.
    let jots = c.list_workflows(&ListFilter { name: Some("jot".into()), ..ListFilter::default() }).await.unwrap();
    assert_eq!(jots.runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["jot-1", "jot-2"]);
    let failures = c.list_workflows(&ListFilter { status: Some(RunStatus::Failed), ..ListFilter::default() }).await.unwrap();
    assert_eq!(failures.runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["doomed-1"]);
    let mut seen = Vec::new();
    let mut filter = ListFilter { page_size: 2, ..ListFilter::default() };
    loop {
        let page = c.list_workflows(&filter).await.unwrap();
        assert!(page.runs.len() <= 2);
        seen.extend(page.runs.into_iter().map(|r| r.id));
        match page.next_page_token {
            Some(token) => filter.page_token = Some(token),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "every run once across pages: {seen:?}");

    // A restart keeps the registrations and the outcomes.
    f.restart().await;
    let c = f.client.clone();
    let again = c.invoke::<Value>("jot", &json!({ "id": 7, "body": "hello" })).id("jot-1").run().await.unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.output, run.output);
    let fresh = c.invoke::<Value>("jot", &json!({ "id": 9, "body": "after" })).run().await.unwrap();
    assert_eq!(fresh.version, 2);
    assert!(c.register_function(&sql_fn).await.unwrap(), "the SQL function survived the restart");
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_reinvocation_and_concurrent_duplicates() {
    let f = Fixture::new().await;
    let c = f.client.clone();
    let first: Value = c.invoke("count", &json!({ "id": 40 })).id("once").await.unwrap();
    let second = c.invoke::<Value>("count", &json!({ "id": 40 })).id("once").run().await.unwrap();
    assert!(second.deduplicated);
    assert_eq!(second.output, Some(first.clone()));
    assert_eq!(f.runs.add.load(Ordering::SeqCst), 1, "the second invocation ran nothing");

    // 32 concurrent invocations with one id, of a two-step workflow: one run.
    c.register_workflow(
        r#"{"name": "twice", "steps": [
            {"id": "a", "function": "add", "input": {"id": "$input.id"}},
            {"id": "b", "function": "add", "input": {"id": "$input.other", "by": "$a.n"}}],
            "output": {"a": "$a.n", "b": "$b.n"}}"#,
    )
    .await
    .unwrap();
    let before = f.runs.add.load(Ordering::SeqCst);
    let calls = (0..32).map(|_| {
        let c = c.clone();
        tokio::spawn(async move { c.invoke::<Value>("twice", &json!({ "id": 41, "other": 42 })).id("dup").run().await })
    });
    let outputs: Vec<_> = futures_join(calls).await;
    let first = outputs[0].output.clone();
    assert_eq!(first, Some(json!({ "a": 1, "b": 1 })));
    assert!(outputs.iter().all(|r| r.output == first && r.status == RunStatus::Succeeded));
    assert_eq!(outputs.iter().filter(|r| !r.deduplicated).count(), 1, "one call ran it, the others joined or found it");
    assert_eq!(f.runs.add.load(Ordering::SeqCst) - before, 2, "each step ran once");
    let count: Value = c.invoke("count", &json!({ "id": 42, "by": 0 })).await.unwrap();
    assert_eq!(count["n"], 1, "the second step's effect is there once");
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_on_one_stream_are_answered_each_to_its_caller() {
    let f = Fixture::new().await;
    let c = f.client.clone();
    c.register_workflow(r#"{"name": "doomed", "steps": [{"id": "x", "function": "fail", "input": "$input"}]}"#).await.unwrap();
    // 300 calls at once on the client's one stream, of three kinds: each caller must get
    // its own answer, and a failure must not touch the calls beside it.
    let calls: Vec<_> = (0..300i64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                match i % 3 {
                    0 => c.invoke::<Value>("count", &json!({ "id": 1000 + i, "by": i })).await.map(|out| out["n"].clone()),
                    1 => c.invoke::<Value>("doomed", &json!({ "id": i })).await,
                    _ => c.invoke::<Value>("no_such_workflow", &json!({ "id": i })).await,
                }
            })
        })
        .collect();
    for (i, call) in (0..300i64).zip(calls) {
        match (i % 3, call.await.unwrap()) {
            (0, Ok(n)) => assert_eq!(n, json!(i), "call {i} got another call's answer"),
            (1, Err(comb_client::Error::WorkflowFailed { error, .. })) => assert!(error.contains(&format!("refused {i}")), "call {i}: {error}"),
            (2, Err(err)) => assert_eq!(code(&err), Code::NotFound, "call {i}: {err}"),
            (kind, other) => panic!("call {i} (kind {kind}) got {other:?}"),
        }
    }
    assert_eq!(f.runs.add.load(Ordering::SeqCst), 100);

    // A call larger than the stream's bound for one call (sent as an Invoke of its own) is
    // answered like the others.
    let pad = "x".repeat(comb_client::STREAM_CALL_BYTES_MAX + 1);
    let out: Value = c.invoke("count", &json!({ "id": 7, "pad": pad })).await.unwrap();
    assert_eq!(out["n"], 1);
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ended_by_the_server_is_reopened_by_the_next_call() {
    let mut f = Fixture::new().await;
    let c = f.client.clone();
    let out: Value = c.invoke("count", &json!({ "id": 1 })).await.unwrap();
    assert_eq!(out["n"], 1);
    // Shutting down ends the open stream (the graceful shutdown would otherwise wait on it
    // for ever); a call then fails retryably.
    let (server, listening) = f.server.take().unwrap();
    let addr = listening.local_addr();
    tokio::time::timeout(Duration::from_secs(10), listening.shutdown()).await.expect("the shutdown does not wait on the idle stream").unwrap();
    let err = c.invoke::<Value>("count", &json!({ "id": 1 })).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // Listening again on the same address: the same client opens a new stream.
    let listening = server.listen(addr).await.unwrap();
    f.server = Some((server, listening));
    // The listener is bound: the first call may still meet the connection that failed (the
    // channel reconnects on the call after it), never more than that.
    let mut answers = Vec::new();
    for _ in 0..3 {
        let answer = c.invoke::<Value>("count", &json!({ "id": 1 })).await;
        let done = answer.is_ok();
        answers.push(answer);
        if done {
            break;
        }
    }
    assert!(answers[..answers.len() - 1].iter().all(|a| a.as_ref().is_err_and(comb_client::Error::is_retryable)), "{answers:?}");
    assert_eq!(answers.pop().unwrap().expect("a call succeeds once the server listens again")["n"], 2);
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_times_out_leaves_its_stream_working() {
    let f = Fixture::new().await;
    f.client.register_workflow(MEETING).await.unwrap();
    let partition = |id: i64| f.partition_of(id);
    let other = (2..100).find(|id| partition(*id) != partition(1)).expect("two partitions");
    let c = Client::builder(f.url()).timeout(Duration::from_secs(2)).connect().await.unwrap();
    // `meet` waits 10 s for a second caller that never comes: the call times out.
    let err = c.invoke::<Value>("meeting", &json!({ "id": 1 })).await.unwrap_err();
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    // The same stream goes on serving calls (on the other partition: `meet` holds its own).
    let out: Value = c.invoke("count", &json!({ "id": other })).await.unwrap();
    assert_eq!(out["n"], 1);
    // A call too large for the stream goes as a unary Invoke: its time-out is reported the
    // same way (it waits behind the first `meet`, on the same partition).
    let pad = "x".repeat(comb_client::STREAM_CALL_BYTES_MAX + 1);
    let err = c.invoke::<Value>("meeting", &json!({ "id": 1, "pad": pad })).await.unwrap_err();
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_runs_at_most_its_bound_of_calls_at_once() {
    let f = Fixture::new().await;
    let partition = |id: i64| f.partition_of(id);
    let (held, first) = f.hold_partition().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    // More calls than a stream runs at once, on a client of their own, all behind the held
    // partition: the stream starts STREAM_CALLS_IN_FLIGHT_MAX of them and holds the rest.
    let over = comb_frontend::STREAM_CALLS_IN_FLIGHT_MAX + 76;
    let ids: Vec<i64> = (100..).filter(|id| partition(*id) == held).take(over).collect();
    let c = Client::builder(f.url()).timeout(Duration::from_secs(30)).connect().await.unwrap();
    let calls: Vec<_> = ids
        .iter()
        .map(|&id| {
            let c = c.clone();
            tokio::spawn(async move { c.invoke::<Value>("count", &json!({ "id": id })).await })
        })
        .collect();
    let bound = 1 + comb_frontend::STREAM_CALLS_IN_FLIGHT_MAX as u64;
    let mut seen = Vec::new();
    while seen.last() != Some(&bound) {
        assert!(Instant::now() < deadline + Duration::from_secs(3), "in flight: {seen:?}");
        seen.push(f.client.health().await.unwrap().workflows_in_flight);
    }
    for _ in 0..20 {
        seen.push(f.client.health().await.unwrap().workflows_in_flight);
    }
    assert!(seen.iter().all(|n| *n <= bound), "the meet and at most the stream's bound in flight: {seen:?}");
    // The held partition's executor shows its long step.
    while f.client.health().await.unwrap().executor_step_ms_now_max == 0 {
        assert!(Instant::now() < deadline + Duration::from_secs(3), "the held step never showed in Health");
    }
    // A second meet, on the other partition, lets the first go: every call then ends.
    f.let_go(held, first).await;
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap()["n"], 1);
    }
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_writes_nothing_leaves_no_row_and_is_traced() {
    let f = Fixture::new().await;
    let c = f.client.clone();
    c.register_workflow(r#"{"name": "padded", "steps": [{"id": "p", "function": "pad", "input": "$input"}], "output": {"got": "$p.id"}}"#).await.unwrap();
    // Its id not given: nothing to deduplicate, so no commit and no row; its end is traced.
    let before = f.log_tail();
    let run = c.invoke::<Value>("padded", &json!({ "id": 3, "bytes": 2 })).run().await.unwrap();
    assert_eq!((run.status, run.output.clone()), (RunStatus::Succeeded, Some(json!({ "got": 3 }))));
    assert!(run.ended_us.is_some_and(|end| end >= run.started_us), "{run:?}");
    assert_eq!(f.commits_after(before).await, 0, "a run that writes nothing commits nothing");
    assert_eq!(code(&c.get_workflow(&run.id, false).await.unwrap_err()), Code::NotFound, "and leaves no row");
    // Its trace is appended just after its answer: once the log holds it, a query that
    // catches up with the log's tail sees it.
    let mut durable = f.server.as_ref().unwrap().0.engine().log().subscribe(before + 1, TRACE_TAG);
    loop {
        let record = tokio::time::timeout(Duration::from_secs(10), durable.next()).await.expect("the run is traced").expect("the log is open").unwrap();
        if let comb_backend::LogRecord::Trace(trace) = comb_backend::decode_payload(&record.payload).unwrap()
            && trace.runs.iter().any(|r| r.id == run.id)
        {
            break;
        }
    }
    let sql = format!("SELECT name, status, input, output, duration_us >= 0 FROM workflows WHERE id = '{}'", run.id);
    let traced = c.query_traces(&sql, true).await.unwrap().rows;
    assert_eq!(traced, [[json!("padded"), json!("succeeded"), json!(r#"{"bytes":2,"id":3}"#), json!(r#"{"got":3}"#), json!(true)]]);
    // Its id given: a second invoke of the id must find it, so its row is written.
    let before = f.log_tail();
    let named = c.invoke::<Value>("padded", &json!({ "id": 4, "bytes": 2 })).id("padded-4").run().await.unwrap();
    assert_eq!(f.commits_after(before).await, 1, "the run's row");
    assert_eq!(c.get_workflow("padded-4", false).await.unwrap().output, named.output);
    // A run of it that fails is recorded, as any failed run is.
    c.register_workflow(r#"{"name": "refuse", "steps": [{"id": "f", "function": "fail", "input": "$input"}]}"#).await.unwrap();
    let comb_client::Error::WorkflowFailed { id, error } = c.invoke::<Value>("refuse", &json!({ "id": 5 })).await.unwrap_err() else { panic!("not a failed run") };
    assert!(error.contains("refused 5"), "{error}");
    assert_eq!(c.get_workflow(&id, false).await.unwrap().status, RunStatus::Failed);
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_message_carries_at_most_its_bound_of_results() {
    use comb_client::proto::invoke_result::Outcome;
    use prost::Message;
    // Calls whose results are about 6 KiB each: 48 of them are four to five times the bound of
    // one message of results.
    const CALLS: u64 = 48;
    const PAD_BYTES: usize = 6 << 10;
    let f = Fixture::new().await;
    f.client.register_workflow(r#"{"name": "padded", "steps": [{"id": "p", "function": "pad", "input": "$input"}], "output": "$p"}"#).await.unwrap();
    let from = f.log_tail();
    let calls = stream_calls("padded", (0..CALLS).map(|tag| (tag, json!({ "id": tag, "bytes": PAD_BYTES }))));
    // A client that takes in at most 64 KiB of a stream before it has read them.
    let channel = tonic::transport::Endpoint::from_shared(f.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut raw = comb_client::proto::comb_client::CombClient::new(channel);
    let mut results = raw.invoke_stream(futures::stream::iter([calls])).await.unwrap().into_inner();
    // Nothing is read until every call has ended: HTTP/2's flow control stops the server
    // after its first results, and the rest end meanwhile. Read now, they are ready at once,
    // as many as the server puts in one message.
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.ends_after(from).await < CALLS as usize {
        assert!(Instant::now() < deadline, "{} of {CALLS} calls ended", f.ends_after(from).await);
        tokio::task::yield_now().await;
    }
    let (mut answered, mut full) = (Vec::new(), 0);
    while let Some(message) = results.message().await.unwrap() {
        let lens: Vec<usize> = message.results.iter().map(|r| r.encoded_len()).collect();
        // The server stops adding results once a message holds the bound: only the last one
        // added may cross it.
        let before_last: usize = lens[..lens.len() - 1].iter().sum();
        assert!(before_last < comb_client::STREAM_BATCH_BYTES_MAX, "a message of {} results, {lens:?} bytes", lens.len());
        full += usize::from(lens.iter().sum::<usize>() >= comb_client::STREAM_BATCH_BYTES_MAX);
        for result in message.results {
            let Some(Outcome::Response(response)) = result.outcome else { panic!("call {} failed: {:?}", result.tag, result.outcome) };
            let output: Value = serde_json::from_str(&response.workflow.unwrap().output_json).unwrap();
            assert_eq!((output["id"].as_u64(), output["pad"].as_str().map(str::len)), (Some(result.tag), Some(PAD_BYTES)));
            answered.push(result.tag);
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, (0..CALLS).collect::<Vec<_>>(), "every call answered once");
    // Results did fill a message: otherwise the bound was never put to the test.
    assert!(full > 0, "no message reached the bound");
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_is_gone_leaves_no_call_in_flight() {
    const CALLS: u64 = 20;
    let f = Fixture::new().await;
    let partition = |id: i64| f.partition_of(id);
    let (held, first) = f.hold_partition().await;
    // Every wait below ends well within the meet's own 10 s.
    let deadline = Instant::now() + Duration::from_secs(7);
    // A stream whose calls all wait behind the held partition, its client side still open.
    let ids: Vec<i64> = (100..).filter(|id| partition(*id) == held).take(CALLS as usize).collect();
    let calls = stream_calls("count", ids.iter().map(|&id| (id as u64, json!({ "id": id }))));
    let (send, requests) = futures::channel::mpsc::unbounded();
    send.unbounded_send(calls).unwrap();
    let mut raw = comb_client::proto::comb_client::CombClient::connect(f.url()).await.unwrap();
    let results = raw.invoke_stream(requests).await.unwrap().into_inner();
    let in_flight = || async { f.client.health().await.unwrap().workflows_in_flight };
    while in_flight().await < 1 + CALLS {
        assert!(Instant::now() < deadline, "the stream's calls did not all start");
        tokio::task::yield_now().await;
    }
    // The client goes away: it drops both sides of the stream before any answer (HTTP/2
    // resets the stream) and its connection. The server drops the stream's calls with it, and
    // only the meet is left in flight.
    drop((results, send, raw));
    while in_flight().await != 1 {
        assert!(Instant::now() < deadline, "calls of a stream whose client is gone still in flight: {}", in_flight().await);
        tokio::task::yield_now().await;
    }
    f.let_go(held, first).await;
    // The server goes on. Each dropped call was already in its partition's queue (a call is
    // queued in the same poll that counts it in flight), so it ran once, with nobody waiting
    // for it; a new call on the same key makes it two.
    for &id in &ids {
        let n = f.client.invoke::<Value>("count", &json!({ "id": id })).await.unwrap()["n"].as_i64().unwrap();
        assert_eq!(n, 2, "counter {id} after one dropped call and one answered");
    }
    assert_eq!(in_flight().await, 0);
    f.close().await;
}

/// One message of an InvokeStream: a call of `workflow` for each (tag, input).
fn stream_calls(workflow: &str, inputs: impl Iterator<Item = (u64, Value)>) -> comb_client::proto::InvokeCalls {
    use comb_client::proto::{InvokeCall, InvokeCalls, InvokeRequest};
    InvokeCalls {
        calls: inputs
            .map(|(tag, input)| InvokeCall { tag, request: Some(InvokeRequest { workflow: workflow.into(), input_json: input.to_string(), ..Default::default() }), timeout_ms: 0 })
            .collect(),
    }
}

async fn futures_join(calls: impl Iterator<Item = tokio::task::JoinHandle<comb_client::Result<comb_client::Run>>>) -> Vec<comb_client::Run> {
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_branches_and_multi_function_transactions() {
    let f = Fixture::new().await;
    let c = f.client.clone();
    // Two branches on different partitions meet only if they run at the same time.
    let server = &f.server.as_ref().unwrap().0;
    let (a, b) = (0..100i64)
        .flat_map(|a| (a + 1..100).map(move |b| (a, b)))
        .find(|(a, b)| server.engine().partition_of(&comb_planner::Value::Int(*a)) != server.engine().partition_of(&comb_planner::Value::Int(*b)))
        .unwrap();
    c.register_workflow(
        r#"{"name": "fork", "steps": [
            {"id": "left", "function": "meet", "input": {"id": "$input.a"}},
            {"id": "right", "function": "meet", "input": {"id": "$input.b"}},
            {"id": "join", "function": "add", "input": {"id": "$input.a", "by": 1}, "after": []}],
            "output": {"left": "$left.met", "right": "$right.met"}}"#,
    )
    .await
    .expect_err("unknown fields are refused");
    let registered = c
        .register_workflow(
            r#"{"name": "fork", "steps": [
                {"id": "left", "function": "meet", "input": {"id": "$input.a"}},
                {"id": "right", "function": "meet", "input": {"id": "$input.b"}}],
                "output": {"left": "$left.met", "right": "$right.met"}}"#,
        )
        .await
        .unwrap();
    assert_eq!(registered.units.len(), 2);
    let out: Value = c.invoke("fork", &json!({ "a": a, "b": b })).id("fork-1").await.unwrap();
    assert_eq!(out, json!({ "left": true, "right": true }), "the branches ran concurrently");

    // A multi-function transaction: one commit, and all or nothing.
    c.register_workflow(
        r#"{"name": "pair", "steps": [
            {"id": "first", "function": "add", "input": {"id": "$input.id", "by": 10}},
            {"id": "second", "function": "note", "input": {"id": "$first.id", "body": "$input.body"}}],
            "transactions": [["first", "second"]],
            "output": {"n": "$first.n", "noted": "$second.noted"}}"#,
    )
    .await
    .unwrap();
    let before = f.log_tail();
    let out: Value = c.invoke("pair", &json!({ "id": 60, "body": "x" })).await.unwrap();
    assert_eq!(out, json!({ "n": 10, "noted": 60 }));
    assert_eq!(f.commits_after(before).await, 1, "both steps and the run's row in one commit");
    // The second step fails (the note exists): the first step's write is rolled back.
    let failed = c.invoke::<Value>("pair", &json!({ "id": 60, "body": "y" })).run().await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.error.as_deref().unwrap().contains("notes"), "{failed:?}");
    let n: Value = c.invoke("count", &json!({ "id": 60, "by": 0 })).await.unwrap();
    assert_eq!(n["n"], 10, "the failed transaction's first step left nothing");
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_precise_status() {
    let f = Fixture::new().await;
    let c = f.client.clone();

    let raw = comb_client::proto::comb_client::CombClient::connect(f.url()).await.unwrap();
    let status = raw
        .clone()
        .invoke(comb_client::proto::InvokeRequest { workflow: "count".into(), input_json: "{\"id\": ".into(), workflow_id: String::new(), r#async: false })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("input_json") && status.message().contains("malformed JSON"), "{}", status.message());

    let err = c.invoke::<Value>("nope", &json!({})).await.unwrap_err();
    assert_eq!(code(&err), Code::NotFound);
    assert!(err.to_string().contains("no workflow named nope"), "{err}");

    let err = c.get_workflow("never-ran", false).await.unwrap_err();
    assert_eq!(code(&err), Code::NotFound);

    // A workflow spec's every problem, at once.
    let err = c
        .register_workflow(r#"{"name": "bad", "steps": [{"id": "a", "function": "missing"}, {"id": "b", "function": "add", "input": "$zzz.x"}]}"#)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    let text = err.to_string();
    assert!(text.contains("unknown function missing") && text.contains("zzz"), "{text}");
    let err = c.register_workflow("{not json").await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(err.to_string().contains("spec_json"), "{err}");
    let err = c.register_workflow(r#"{"name": "comb_x", "steps": [{"id": "a", "function": "add"}]}"#).await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");

    // Invalid SQL, with the planner's position.
    let err = c.execute_sql("CREATE TABLE t (a BIGINT PRIMARY KEY, b FANCYTYPE)").await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(err.to_string().contains("FANCYTYPE") && err.to_string().contains("1:"), "{err}");
    let err = c.execute_sql("CREATE TABLE comb_mine (a BIGINT PRIMARY KEY)").await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    let bad_fn = SqlFunction {
        name: "broken".into(),
        statements: vec![SqlStatement { name: "s".into(), sql: "SELECT nope FROM counters WHERE id = $1".into(), params: vec!["id".into()] }],
        partition_by: Some("id".into()),
    };
    let err = c.register_function(&bad_fn).await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(err.to_string().contains("nope"), "{err}");
    let miscounted = SqlFunction {
        name: "miscounted".into(),
        statements: vec![SqlStatement { name: "s".into(), sql: "SELECT n FROM counters WHERE id = $1".into(), params: vec![] }],
        partition_by: Some("id".into()),
    };
    let err = c.register_function(&miscounted).await.unwrap_err();
    assert!(err.to_string().contains("has 1 parameters but names 0 input fields"), "{err}");
    let err = c.register_function(&SqlFunction { name: "add".into(), ..miscounted.clone() }).await.unwrap_err();
    assert_eq!(code(&err), Code::AlreadyExists, "a compiled-in function's name is taken: {err}");

    // Oversized payloads: over the request bound (64 KiB in this fixture).
    let big = "x".repeat(100 << 10);
    let err = c.invoke::<Value>("count", &json!({ "id": 1, "pad": big })).await.unwrap_err();
    assert!(matches!(code(&err), Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument), "{err}");
    assert!(err.to_string().to_lowercase().contains("message") || err.to_string().contains("bytes"), "{err}");

    // A bad workflow id.
    let err = c.invoke::<Value>("count", &json!({ "id": 1 })).id("x".repeat(300)).await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(err.to_string().contains("workflow_id"), "{err}");

    // An input the function cannot use fails the run (not the call), with the function's message.
    let run = c.invoke::<Value>("count", &json!({ "id": "seven" })).run().await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("id must be an integer"));
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured() {
    let f = Fixture::with_token(Some("s3cret".into())).await;
    assert!(f.client.health().await.is_ok(), "the right token passes");
    let addr = f.url();
    let anonymous = Client::connect(addr.clone()).await.unwrap();
    let err = anonymous.health().await.unwrap_err();
    assert_eq!(code(&err), Code::Unauthenticated);
    assert!(err.to_string().contains("bearer token"), "{err}");
    let wrong = Client::builder(addr).token("guess").connect().await.unwrap();
    assert_eq!(code(&wrong.health().await.unwrap_err()), Code::Unauthenticated);

    // Beyond loopback, no token: refused at start.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder().data_dir(dir.path()).build().await.unwrap();
    let err = server.listen("0.0.0.0:0".parse().unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");
    server.close().await.unwrap();
    // ... unless told so explicitly.
    let options = ServerOptions { insecure_no_token: true, ..ServerOptions::default() };
    let server = Server::builder().data_dir(dir.path()).options(options).build().await.unwrap();
    let listening = server.listen("0.0.0.0:0".parse().unwrap()).await.expect("listening without a token, as asked");
    let open = Client::connect(format!("http://127.0.0.1:{}", listening.local_addr().port())).await.unwrap();
    assert!(open.health().await.is_ok());
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
    f.close().await;
}

/// A server given a certificate and its key speaks only TLS: a client that trusts the CA
/// that signed it invokes as over plain HTTP/2; one that trusts another CA is refused the
/// connection, and a plain HTTP/2 client gets no answer. A certificate or key that cannot be
/// read, or is not one, stops the server as it starts, named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_certificate_speaks_only_tls() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let ca = std::fs::read(fixtures.join("ca.pem")).unwrap();
    let tls = |cert: &str, key: &str| ServerOptions { tls_cert: Some(fixtures.join(cert)), tls_key: Some(fixtures.join(key)), ..options(Some("s3cret".into())) };
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(Runs::default());
    let mut builder = Server::builder().data_dir(dir.path()).options(tls("server.pem", "server.key")).schema(SCHEMA).workflow(COUNT);
    for f in functions(&runs) {
        builder = builder.function(f);
    }
    let server = builder.build().await.unwrap();
    assert!(server.tls());
    let listening = server.listen("127.0.0.1:0".parse().unwrap()).await.expect("it listens");
    let port = listening.local_addr().port();
    for host in ["localhost", "127.0.0.1"] {
        let client = Client::builder(format!("https://{host}:{port}")).token("s3cret").ca_certificate(ca.clone()).connect().await.expect("a client that trusts the CA connects");
        let n: Value = client.invoke("count", &json!({ "id": 1 })).await.unwrap();
        assert_eq!(n["id"], 1, "{host}: {n}");
    }
    assert_eq!(runs.add.load(Ordering::SeqCst), 2);

    // Trusting the server's certificate as a CA is trusting the wrong one: it did not sign itself.
    let server_pem = std::fs::read(fixtures.join("server.pem")).unwrap();
    let err = Client::builder(format!("https://localhost:{port}")).ca_certificate(server_pem).connect().await.expect_err("an unknown issuer is refused");
    assert!(code(&err) == Code::InvalidArgument && !err.is_retryable() && err.to_string().contains("invalid peer certificate: UnknownIssuer"), "{err}");
    assert_eq!(err.to_string().matches("UnknownIssuer").count(), 1, "the cause is said once: {err}");
    // Plain HTTP/2 to a TLS port: no answer, whether the connection or the call fails.
    let plain = match Client::builder(format!("http://127.0.0.1:{port}")).token("s3cret").connect().await {
        Ok(plain) => plain.health().await.map(|_| ()),
        Err(err) => Err(err),
    };
    assert!(plain.is_err(), "a plain client got an answer from a TLS port");
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();

    // A key that is not the certificate's, a file that holds no key, a file that is no
    // certificate, a missing file.
    for (cert, key, says) in [("server.pem", "other.key", "not a PEM certificate and its private key"), ("server.pem", "ca.pem", "not a PEM certificate and its private key"), ("README.md", "server.key", "not a PEM certificate"), ("server.pem", "missing.key", "cannot read")] {
        let dir = tempfile::tempdir().unwrap();
        let err = Server::builder().data_dir(dir.path()).options(tls(cert, key)).build().await.expect_err("a bad identity stops the server at start");
        assert!(err.to_string().contains(says) && err.to_string().contains(if key == "missing.key" { key } else { cert }), "{cert}, {key}: {err}");
        assert!(!dir.path().join("state").exists(), "checked before the data directory is opened");
    }
    // Half an identity is refused with the options.
    let half = ServerOptions { tls_key: None, ..tls("server.pem", "server.key") };
    let err = half.validate().unwrap_err();
    assert!(err.contains("tls-cert and tls-key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_and_types_a_function_cannot_take_get_clear_errors() {
    let f = Fixture::new().await;
    let raw = comb_client::proto::comb_client::CombClient::connect(f.url()).await.unwrap();
    // Not JSON numbers at all, or beyond a double: refused before anything runs.
    for (input, says) in [(r#"{"id": NaN}"#, "expected value"), (r#"{"id": Infinity}"#, "expected value"), (r#"{"id": 1e400}"#, "out of range")] {
        let status = raw
            .clone()
            .invoke(comb_client::proto::InvokeRequest { workflow: "count".into(), input_json: input.into(), workflow_id: String::new(), r#async: false })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{input}: {status:?}");
        assert!(status.message().contains("input_json") && status.message().contains(says), "{input}: {}", status.message());
    }
    // A SQL-only function binds input fields to typed parameters: a value of another type, or
    // an integer beyond BIGINT, fails the run with a message naming the parameter and its type.
    let put = SqlFunction {
        name: "put_n".into(),
        statements: vec![SqlStatement { name: "s".into(), sql: "INSERT INTO counters (id, n) VALUES ($1, $2)".into(), params: vec!["id".into(), "n".into()] }],
        partition_by: Some("id".into()),
    };
    f.client.register_function(&put).await.unwrap();
    f.client.register_workflow(r#"{"name": "put_n", "steps": [{"id": "s", "function": "put_n", "input": "$input"}], "output": "$s"}"#).await.unwrap();
    for input in [json!({ "id": 1, "n": "seven" }), json!({ "id": 1, "n": 18_446_744_073_709_551_615u64 }), json!({ "id": 1, "n": 1.5 })] {
        let outcome = f.client.invoke::<Value>("put_n", &input).run().await;
        let message = match outcome {
            Ok(run) => {
                assert_eq!(run.status, RunStatus::Failed, "{input} was taken: {run:?}");
                run.error.unwrap()
            }
            Err(err) => {
                assert_eq!(code(&err), Code::InvalidArgument, "{input}: {err}");
                err.to_string()
            }
        };
        assert!(message.contains("parameter $2 is BIGINT, not"), "{input}: {message}");
    }
    let sum: Option<i64> = f.client.invoke::<Value>("count", &json!({ "id": 1, "by": 0 })).await.unwrap()["n"].as_i64();
    assert_eq!(sum, Some(0), "nothing was written by the refused inputs");
    f.close().await;
}

/// A run resumed after its write committed (and before its end) finds the write's recorded
/// output in the partition where the write ran, though the unrecorded read before it now
/// points at a row of another partition: the write does not run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_finds_its_recorded_step_where_the_step_first_ran() {
    resumed_after_its_write("pick_add").await;
}

/// The same with the write a group of two steps, recorded together in the partition of the
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_finds_its_recorded_group_where_the_group_first_ran() {
    resumed_after_its_write("pick_pair").await;
}

/// The same where the read, run again, would fail now that the write it led to committed:
/// a read whose output only a recorded unit takes does not run again once that unit's output
/// is recorded, and the run ends as it would have without the failure between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_does_not_rerun_a_read_its_recorded_write_needed_alone() {
    resumed_after_its_write("pick_strict_add").await;
}

async fn resumed_after_its_write(workflow: &str) {
    let mut f = Fixture::new().await;
    let first = 100;
    let grouped = workflow == "pick_pair";
    let (spec, recorded, output): (_, &[&str], _) = match workflow {
        "pick_pair" => (PICK_PAIR, &["add", "note"], json!({ "n": 1, "noted": first })),
        "pick_add" => (PICK_ADD, &["add"], json!({ "id": first, "n": 1 })),
        _ => (PICK_STRICT_ADD, &["add"], json!({ "id": first, "n": 1 })),
    };
    let registered = f.client.register_workflow(spec).await.unwrap();
    assert_eq!(registered.recorded_steps, recorded, "the read is not recorded: the case at stake");
    let bump = (1..).find(|k| f.partition_of(first + k) != f.partition_of(first)).unwrap();
    let second = first + bump;
    let engine = f.server.as_ref().unwrap().0.engine().clone();
    // What a crash leaves between the write's commit and the run's end: the run's row and
    // its entry among the running, at the home the scheduler gives its id (the first
    // non-negative integer in the id's partition), and the write committed with its output
    // recorded in the partition of counter `first`.
    let id = format!("resumed-after-its-write-{workflow}");
    let partition = engine.partition_of(&comb_planner::Value::Text(id.clone()));
    let home = (0..).find(|h| engine.partition_of(&comb_planner::Value::Int(*h)) == partition).unwrap();
    let input = json!({ "id": 0, "base": first });
    let row = json!({
        "home": home, "id": id, "name": workflow, "version": registered.version, "status": "running", "input": input.to_string(),
        "output": null, "error": null, "started_us": 1, "ended_us": null,
    });
    engine.invoke(Invocation::new("comb_workflow_start", row)).await.unwrap();
    if grouped {
        let step = |function: &str| TransactionStep { function: function.to_owned(), id: Some(InvocationId { workflow: id.clone(), step: function.to_owned() }), record: true };
        let next: Arc<NextInputFn> = Arc::new(|next: &NextInput<'_>| Ok(json!({ "id": next.outputs[0]["id"], "body": "picked" })));
        let transaction = Transaction { steps: vec![step("add"), step("note")], input: json!({ "id": first }), next_input: next, answer: Answer::Durable, end: None };
        engine.invoke_transaction(transaction).await.unwrap();
    } else {
        let added = engine.invoke(Invocation::new("add", json!({ "id": first })).id(id.clone(), "add").record()).await.unwrap();
        assert_eq!(added.value, json!({ "id": first, "n": 1 }));
    }
    // Then counter 0 changes, and `pick` points at `second`, in the other partition.
    engine.invoke(Invocation::new("add", json!({ "id": 0, "by": bump }))).await.unwrap();
    let adds = f.runs.add.load(Ordering::SeqCst);
    drop(engine);

    f.restart().await;
    assert_eq!(f.server.as_ref().unwrap().0.resumed(), 1);
    let run = f.client.get_workflow(&id, true).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.output, Some(output), "the recorded output, not a second write's");
    assert_eq!(f.runs.add.load(Ordering::SeqCst), adds, "the recorded write did not run again");
    let sql = format!("SELECT function FROM function_invocations WHERE workflow_id = '{id}' AND replayed ORDER BY function");
    let replayed: Vec<Value> = f.client.query_traces(&sql, true).await.unwrap().rows.into_iter().flatten().collect();
    assert_eq!(replayed, recorded.iter().map(|s| json!(s)).collect::<Vec<_>>(), "the traces show the recorded steps replayed");
    let engine = f.server.as_ref().unwrap().0.engine().clone();
    let counter = |id: i64| {
        let engine = engine.clone();
        async move { engine.invoke(Invocation::new("get", json!({ "id": id }))).await.unwrap().value["n"].clone() }
    };
    assert_eq!(counter(first).await, json!(1));
    assert_eq!(counter(second).await, Value::Null, "nothing was added where the read now points");
    drop(engine);
    f.close().await;
}

/// A started run whose task stopped (here: started through the engine, as a failed log or a
/// crash leaves it) is not reported `running` to a caller waiting for its end: the caller
/// is told what happened and what resumes it, and an invoke of its id does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_on_a_run_nothing_runs_says_so_and_its_invoke_resumes_it() {
    let f = Fixture::new().await;
    let (id, input) = ("stopped-run".to_owned(), json!({ "id": 0, "base": 10 }));
    f.strand_pick_add(&id, &input).await;

    assert_eq!(f.client.get_workflow(&id, false).await.unwrap().status, RunStatus::Running);
    let err = f.client.get_workflow(&id, true).await.unwrap_err();
    assert_eq!(code(&err), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("invoking it again with its id resumes it"), "{err}");
    let run = f.client.invoke::<Value>("pick_add", &input).id(id.clone()).run().await.unwrap();
    assert!(run.deduplicated, "the invoke resumed the run it found started");
    assert_eq!(run.output, Some(json!({ "id": 10, "n": 1 })));
    assert_eq!(f.client.get_workflow(&id, true).await.unwrap().status, RunStatus::Succeeded);
    f.close().await;
}

/// The server resumes a stranded run by itself, while it serves, within `resume-interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_resumes_a_stranded_run_by_itself() {
    let f = Fixture::with_options(ServerOptions { resume_interval: Duration::from_millis(100), ..options(None) }).await;
    let (id, input) = ("stranded-run".to_owned(), json!({ "id": 0, "base": 20 }));
    f.strand_pick_add(&id, &input).await;
    // Until the server's pass takes it, a wait is told nothing runs it; then the wait is
    // for its end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let run = loop {
        match f.client.get_workflow(&id, true).await {
            Ok(run) => break run,
            Err(err) => assert_eq!(code(&err), Code::Unavailable, "{err}"),
        }
        assert!(Instant::now() < deadline, "the stranded run was not resumed");
        tokio::task::yield_now().await;
    };
    assert_eq!((run.status, run.output), (RunStatus::Succeeded, Some(json!({ "id": 20, "n": 1 }))));
    assert_eq!(f.runs.add.load(Ordering::SeqCst), 1, "its write ran once");
    f.close().await;
}

/// Waits for a pass of the server's expiry through every partition whose cut-off is past
/// now: every run that ended before this call is then forgotten (or kept, warned of).
async fn expiry_passed_now(f: &Fixture) {
    let now_us = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()).unwrap();
    let mut progress = f.server.as_ref().unwrap().0.expiry_progress();
    tokio::time::timeout(Duration::from_secs(20), progress.wait_for(|p| p.complete_before_us > now_us))
        .await
        .expect("no pass of the expiry went past now within 20 s")
        .unwrap();
}

/// A run is remembered for `run-retention` after its end, then forgotten, durably: its row
/// and its recorded outputs go, and an invoke of its id runs it anew. A run that has not
/// ended is kept however old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_runs_are_forgotten_after_run_retention() {
    let mut f = Fixture::with_options(ServerOptions { run_retention: Duration::from_millis(400), ..options(None) }).await;
    f.strand_pick_add("kept-running", &json!({ "id": 0, "base": 20 })).await;
    let adds = |f: &Fixture| f.runs.add.load(Ordering::SeqCst);
    let count = |f: &Fixture, id: &'static str| {
        let c = f.client.clone();
        async move { c.invoke::<Value>("count", &json!({ "id": 50 })).id(id).run().await.unwrap() }
    };
    // One transaction (its step and its end recorded), and a longer run (its write recorded).
    let first = count(&f, "c-1").await;
    assert_eq!((first.output.clone(), first.deduplicated), (Some(json!({ "id": 50, "n": 1 })), false));
    let again = count(&f, "c-1").await;
    assert_eq!((again.output, again.deduplicated), (first.output, true), "remembered within run-retention");
    let picked = f.client.invoke::<Value>("pick_add", &json!({ "id": 0, "base": 60 })).id("p-1").run().await;
    // `pick_add` is registered by `strand_pick_add`.
    assert_eq!(picked.unwrap().output, Some(json!({ "id": 60, "n": 1 })));
    // And one without an id: nothing recorded, its end written by its one transaction.
    let anonymous = f.client.invoke::<Value>("count", &json!({ "id": 51 })).run().await.unwrap();
    assert_eq!(adds(&f), 3);

    // Forgotten once run-retention has passed.
    expiry_passed_now(&f).await;
    for id in ["c-1", "p-1", anonymous.id.as_str()] {
        assert_eq!(code(&f.client.get_workflow(id, false).await.unwrap_err()), Code::NotFound, "run {id} was not forgotten");
    }
    assert_eq!(f.client.get_workflow("kept-running", false).await.unwrap().status, RunStatus::Running, "a run going is kept");

    // Durably: after a restart (remembering runs for a day now), still gone; the run that
    // had not ended resumes.
    f.options.run_retention = Duration::from_secs(24 * 3600);
    f.restart().await;
    for id in ["c-1", "p-1"] {
        assert_eq!(code(&f.client.get_workflow(id, false).await.unwrap_err()), Code::NotFound, "{id}");
    }
    assert_eq!(f.client.get_workflow("kept-running", true).await.unwrap().status, RunStatus::Succeeded);
    assert_eq!(adds(&f), 4);
    // Invoked again, each runs anew: its recorded outputs went with its row.
    let anew = count(&f, "c-1").await;
    assert_eq!((anew.output, anew.deduplicated), (Some(json!({ "id": 50, "n": 2 })), false));
    let picked = f.client.invoke::<Value>("pick_add", &json!({ "id": 0, "base": 60 })).id("p-1").run().await.unwrap();
    assert_eq!((picked.output, picked.deduplicated), (Some(json!({ "id": 60, "n": 2 })), false));
    assert_eq!(adds(&f), 6);
    assert!(count(&f, "c-1").await.deduplicated, "and is remembered again");
    assert_eq!(adds(&f), 6);
    f.close().await;
}

/// Runs too large to forget a page at a time (their deletes past `record-bytes-max` in one
/// commit) are forgotten one at a time: a page that cannot commit does not stop the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_too_large_to_forget_a_page_at_a_time_are_forgotten_one_at_a_time() {
    let mut options = ServerOptions { run_retention: Duration::from_millis(300), ..options(None) };
    options.engine.log.record_bytes_max = 256 << 10;
    options.engine.log.batch_bytes_max = 256 << 10;
    let f = Fixture::with_options(options).await;
    f.client.register_workflow(r#"{"name": "big", "steps": [{"id": "p", "function": "pad", "input": "$input"}], "output": "$p"}"#).await.unwrap();
    // Five runs on one partition, each 60 KB of output three times over (its step's recorded
    // output, its end's, its row): a page of them is over 256 KiB.
    let ids: Vec<String> = (0..5).map(|i| format!("big-{i}")).collect();
    for id in &ids {
        let run = f.client.invoke::<Value>("big", &json!({ "id": 5, "bytes": 60_000 })).id(id.as_str()).run().await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
    }
    expiry_passed_now(&f).await;
    for id in &ids {
        assert_eq!(code(&f.client.get_workflow(id, false).await.unwrap_err()), Code::NotFound, "run {id} was not forgotten");
    }
    // Its recorded outputs went too: invoked again, it runs anew.
    let again = f.client.invoke::<Value>("big", &json!({ "id": 5, "bytes": 60_000 })).id("big-0").run().await.unwrap();
    assert!(!again.deduplicated);
    f.close().await;
}

/// `run-retention` is bounded.
#[test]
fn run_retention_is_bounded() {
    for (retention, valid) in [(Duration::ZERO, false), (Duration::from_millis(1), true), (RUN_RETENTION_MAX, true), (RUN_RETENTION_MAX + Duration::from_millis(1), false)] {
        let options = ServerOptions { run_retention: retention, ..ServerOptions::default() };
        match options.validate() {
            Ok(()) => assert!(valid, "{retention:?} accepted"),
            Err(message) => assert!(!valid && message.contains("run-retention"), "{retention:?}: {message}"),
        }
    }
}

/// At start the server resumes at most `workflows-in-flight-max` runs; those left over resume
/// as the runs in flight fall to half the limit, without waiting for the periodic pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_left_over_at_start_resume_within_the_limit() {
    let limit = 4;
    let mut f = Fixture::with_options(ServerOptions { workflows_in_flight_max: limit, resume_interval: CHECKPOINT_INTERVAL_MAX, ..options(None) }).await;
    const RUNS: i64 = 12;
    for i in 0..RUNS {
        f.strand_pick_add(&format!("left-over-{i}"), &json!({ "id": 0, "base": 100 + i })).await;
    }
    f.restart().await;
    assert_eq!(f.server.as_ref().unwrap().0.resumed(), limit, "as many as the limit, at start");
    let (ended, most) = f.await_resumed((0..RUNS).map(|i| format!("left-over-{i}")), Duration::from_secs(20)).await;
    for (i, run) in (0..RUNS).zip(ended) {
        assert_eq!((run.status, run.output), (RunStatus::Succeeded, Some(json!({ "id": 100 + i, "n": 1 }))), "left-over-{i}");
    }
    assert!(most <= limit as u64, "{most} runs in flight, over the limit of {limit}");
    assert_eq!(f.runs.add.load(Ordering::SeqCst), RUNS as usize, "each write ran once");
    f.close().await;
}

/// Recovery reads the started runs a page at a time, partition by partition, and the runs
/// left over at start resume from where the start stopped: a backlog over several pages of
/// every partition all resumes, each run once, within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_several_pages_resumes_whole_and_once() {
    let limit = 300;
    let mut f = Fixture::with_options(ServerOptions { workflows_in_flight_max: limit, resume_interval: CHECKPOINT_INTERVAL_MAX, ..options(None) }).await;
    // More than two pages (of 1,024) on each of the two partitions, nearly always.
    const RUNS: usize = 2_600;
    f.strand_pick_adds((0..RUNS).map(|i| (format!("backlog-{i:05}"), json!({ "id": 0, "base": 1_000 + i as i64 })))).await;
    f.restart().await;
    assert_eq!(f.server.as_ref().unwrap().0.resumed(), limit, "as many as the limit, at start");
    let (_, most) = f.await_resumed((0..RUNS).map(|i| format!("backlog-{i:05}")), Duration::from_secs(120)).await;
    assert!(most <= limit as u64, "{most} runs in flight, over the limit of {limit}");
    assert_eq!(f.runs.add.load(Ordering::SeqCst), RUNS, "each write ran once");
    let succeeded = ListFilter { name: Some("pick_add".to_owned()), status: Some(RunStatus::Succeeded), page_size: 1_000, page_token: None };
    let (mut ended, mut page) = (0, f.client.list_workflows(&succeeded).await.unwrap());
    loop {
        ended += page.runs.len();
        let Some(token) = page.next_page_token else { break };
        page = f.client.list_workflows(&ListFilter { page_token: Some(token), ..succeeded.clone() }).await.unwrap();
    }
    assert_eq!(ended, RUNS, "every run ended, and succeeded");
    f.close().await;
}

/// The runs resumed at start fill the partitions' queues (`queue-invocations-max` of 2), so
/// that recovery's own reads are refused for overload (in every one of seven tries, where
/// the server then refused to start): the server still starts, resumes the rest in the
/// background, and every run ends with its write done once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_resumed_runs_overload_the_queues_still_starts_and_resumes_all() {
    let mut f = Fixture::with_options(ServerOptions { resume_interval: Duration::from_secs(1), ..options(None) }).await;
    const RUNS: usize = 200;
    f.strand_pick_adds((0..RUNS).map(|i| (format!("busy-{i:03}"), json!({ "id": 0, "base": 5_000 + i as i64 })))).await;
    f.options.engine.queue_invocations_max = 2;
    f.restart().await;
    let (ended, _) = f.await_resumed((0..RUNS).map(|i| format!("busy-{i:03}")), Duration::from_secs(120)).await;
    for run in ended {
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    assert_eq!(f.runs.add.load(Ordering::SeqCst), RUNS, "each write ran once");
    f.close().await;
}

/// A page of ListWorkflows, and each partition's step of it, ends at about `json-bytes-max`
/// of runs (at least one a page): runs whose inputs are large come a few a page, every one
/// once and in order, where one step holding them all would pass the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_of_large_runs_pages_within_json_bytes_max() {
    let engine = EngineOptions { partitions: 2, json_bytes_max: 4 << 10, ..EngineOptions::default() };
    let f = Fixture::with_options(ServerOptions { engine, ..options(None) }).await;
    let c = f.client.clone();
    let pad = "x".repeat(1_000);
    let ids: Vec<String> = (0..6).map(|k| format!("large-{k}")).collect();
    for (k, id) in ids.iter().enumerate() {
        c.invoke::<Value>("count", &json!({ "id": k, "by": 1, "pad": pad })).id(id.clone()).run().await.unwrap();
    }
    let mut filter = ListFilter { name: Some("count".into()), page_size: 10, ..ListFilter::default() };
    let (mut seen, mut pages) = (Vec::new(), 0);
    loop {
        let page = c.list_workflows(&filter).await.unwrap();
        assert!(page.runs.len() < ids.len(), "one page held {} runs of about 2 KiB each, over 4 KiB", page.runs.len());
        seen.extend(page.runs.into_iter().map(|run| run.id));
        pages += 1;
        let Some(token) = page.next_page_token else { break };
        filter.page_token = Some(token);
    }
    assert_eq!(seen, ids, "every run once, in id order");
    assert!(pages >= 3, "{pages} pages");
    f.close().await;
}

/// Recovery reads the started runs a page at a time, each page within `scan-rows-max`: a
/// backlog larger than one statement may read all resumes, each run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_scan_rows_max_resumes_whole() {
    let engine = EngineOptions { partitions: 2, scan_rows_max: 4, ..EngineOptions::default() };
    let mut f = Fixture::with_options(ServerOptions { engine, resume_interval: CHECKPOINT_INTERVAL_MAX, ..options(None) }).await;
    const RUNS: usize = 30;
    f.strand_pick_adds((0..RUNS).map(|i| (format!("small-{i:02}"), json!({ "id": 0, "base": 2_000 + i as i64 })))).await;
    f.restart().await;
    assert_eq!(f.server.as_ref().unwrap().0.resumed(), RUNS, "every stranded run, at start");
    f.await_resumed((0..RUNS).map(|i| format!("small-{i:02}")), Duration::from_secs(60)).await;
    assert_eq!(f.runs.add.load(Ordering::SeqCst), RUNS, "each write ran once");
    f.close().await;
}

/// The SQL-only functions and the workflow versions load at start a page at a time, so that
/// more of them than one statement may read (`scan-rows-max`) come back whole; past
/// `definitions-max` a registration is refused, and what is stored past a bound lowered
/// later still loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_past_scan_rows_max_load_whole_and_past_definitions_max_are_refused() {
    let engine = EngineOptions { partitions: 2, scan_rows_max: 4, ..EngineOptions::default() };
    let mut f = Fixture::with_options(ServerOptions { engine, definitions_max: 12, ..options(None) }).await;
    let sql = |name: String, sql: &str| SqlFunction {
        name,
        statements: vec![SqlStatement { name: "read".into(), sql: sql.into(), params: vec!["id".into()] }],
        partition_by: Some("id".into()),
    };
    let read = |k: usize| sql(format!("read_{k:02}"), "SELECT body FROM notes WHERE id = $1");
    let spec = |name: &str| format!(r#"{{"name": "{name}", "steps": [{{"id": "s", "function": "add", "input": "$input"}}], "output": "$s"}}"#);
    // 12 functions; `count` (the server's own) and 11 versions of three names: 12 versions.
    let versions = [("wa", 4), ("wb", 5), ("wc", 2)];
    for k in 0..12 {
        f.client.register_function(&read(k)).await.unwrap();
    }
    for (name, n) in versions {
        for v in 1..=n {
            assert_eq!(f.client.register_workflow(&spec(name)).await.unwrap().version, v);
        }
    }
    let refused = |err: comb_client::Error| {
        assert_eq!(code(&err), Code::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("definitions-max"), "{err}");
    };
    for definitions_max in [12, 5] {
        f.options.definitions_max = definitions_max;
        f.restart().await;
        let c = f.client.clone();
        // Every function is back: another definition under its name is refused as taken,
        // and a new name is past the bound.
        for k in 0..12 {
            let other = sql(format!("read_{k:02}"), "SELECT id FROM notes WHERE id = $1");
            assert_eq!(code(&c.register_function(&other).await.unwrap_err()), Code::AlreadyExists, "read_{k:02}");
        }
        refused(c.register_function(&read(12)).await.unwrap_err());
        // Every version is back: each name runs its latest, and one more version is refused.
        for (name, n) in versions {
            let run = c.invoke::<Value>(name, &json!({ "id": 1, "by": 1 })).run().await.unwrap();
            assert_eq!(run.version, n, "{name}");
        }
        refused(c.register_workflow(&spec("wd")).await.unwrap_err());
    }
    f.close().await;
}

/// ListWorkflows reads each partition a bounded step at a time and merges the steps in id
/// order: every run a filter selects comes once, in order, across pages and across the
/// several steps of one call, though each partition holds more runs than one statement may
/// read (`scan-rows-max`); a filter that no run matches leaves a page empty, with a token
/// to go on from, until the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_every_run_examining_a_bounded_number_each_call() {
    // Steps of at most 4 runs a partition, 20 runs a call: three steps a call.
    let engine = EngineOptions { partitions: 2, scan_rows_max: 4, ..EngineOptions::default() };
    let f = Fixture::with_options(ServerOptions { engine, list_examine_max: 20, ..options(None) }).await;
    let c = f.client.clone();
    c.register_workflow(r#"{"name": "doomed", "steps": [{"id": "x", "function": "fail", "input": "$input"}]}"#).await.unwrap();
    // 28 runs, their kinds interleaved in id order, their rows spread over both partitions
    // in runs of a few ids (a partition's step then ends far from the other's).
    let mut expected: Vec<(String, &str, RunStatus)> = Vec::new();
    let mut stranded = Vec::new();
    for k in 0..28 {
        let id = format!("r-{k:02}");
        if k % 7 == 3 {
            c.invoke::<Value>("doomed", &json!({ "id": k / 3 })).id(id.clone()).run().await.unwrap();
            expected.push((id, "doomed", RunStatus::Failed));
        } else if k % 5 == 1 {
            stranded.push((id.clone(), json!({ "id": k, "base": 100 + k })));
            expected.push((id, "pick_add", RunStatus::Running));
        } else {
            c.invoke::<Value>("count", &json!({ "id": k / 3, "by": 1 })).id(id.clone()).run().await.unwrap();
            expected.push((id, "count", RunStatus::Succeeded));
        }
    }
    f.strand_pick_adds(stranded.into_iter()).await;

    let filters = [
        (None, None),
        (Some("count"), None),
        (None, Some(RunStatus::Failed)),
        (None, Some(RunStatus::Running)),
        (Some("pick_add"), Some(RunStatus::Running)),
        (Some("doomed"), Some(RunStatus::Succeeded)),
    ];
    for (name, status) in filters {
        let want: Vec<&str> = expected.iter().filter(|(_, n, s)| name.is_none_or(|name| name == *n) && status.is_none_or(|status| status == *s)).map(|(id, ..)| id.as_str()).collect();
        let mut filter = ListFilter { name: name.map(str::to_owned), status, page_size: 3, page_token: None };
        let (mut seen, mut short_pages) = (Vec::new(), 0);
        loop {
            let page = c.list_workflows(&filter).await.unwrap_or_else(|err| panic!("{name:?} {status:?}: {err}"));
            assert!(page.runs.len() <= 3, "{name:?} {status:?}: a page of {}", page.runs.len());
            for run in &page.runs {
                assert!(name.is_none_or(|name| name == run.name) && status.is_none_or(|status| status == run.status), "{name:?} {status:?}: {run:?}");
            }
            seen.extend(page.runs.iter().map(|run| run.id.clone()));
            let Some(token) = page.next_page_token else { break };
            short_pages += usize::from(page.runs.len() < 3);
            filter.page_token = Some(token);
        }
        assert_eq!(seen, want, "{name:?} {status:?}: every selected run once, in id order");
        if want.is_empty() {
            assert!(short_pages > 0, "{name:?} {status:?}: 28 runs, 20 examined a call: a page comes empty before the end");
        }
        let first = c.list_workflows_up_to(&ListFilter { name: name.map(str::to_owned), status, ..ListFilter::default() }, 2).await.unwrap();
        assert_eq!(first.iter().map(|run| run.id.as_str()).collect::<Vec<_>>(), want[..want.len().min(2)], "{name:?} {status:?}");
    }
    f.close().await;
}

/// A run whose branch fails ends only once its other branches have answered: their work is
/// queued in the engine and commits, so the run's end must come after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_ends_after_its_other_branches() {
    let f = Fixture::new().await;
    f.client.register_workflow(MEETING).await.unwrap();
    f.client
        .register_workflow(
            r#"{"name": "meet_or_fail", "steps": [
                 {"id": "m", "function": "meet", "input": {"id": "$input.meet"}},
                 {"id": "f", "function": "fail", "input": {"id": "$input.fail"}}
               ], "output": {"m": "$m", "f": "$f"}}"#,
        )
        .await
        .unwrap();
    let held = f.partition_of(1);
    let other = (2..).find(|k| f.partition_of(*k) != held).unwrap();
    // The run's row on the other partition: its end does not queue behind the meet.
    let engine = f.server.as_ref().unwrap().0.engine();
    let id = (0..).map(|i| format!("meet-or-fail-{i}")).find(|id| engine.partition_of(&comb_planner::Value::Text(id.clone())) != held).unwrap();
    let run = {
        let (c, id) = (f.client.clone(), id.clone());
        tokio::spawn(async move { c.invoke::<Value>("meet_or_fail", &json!({ "meet": 1, "fail": other })).id(id).run().await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.runs.meet.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the meet did not start");
        tokio::task::yield_now().await;
    }
    // The failing branch fails at once, on the other partition; the run stays running while
    // the meet holds its own.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let running = f.client.get_workflow(&id, false).await.unwrap();
        assert_eq!(running.status, RunStatus::Running, "the run ended while a branch was under way: {running:?}");
        tokio::task::yield_now().await;
    }
    f.client.invoke::<Value>("meeting", &json!({ "id": other })).await.unwrap();
    let ended = run.await.unwrap().expect("the run is answered");
    assert_eq!(ended.status, RunStatus::Failed);
    let error = ended.error.unwrap_or_default();
    assert!(error.contains(&format!("refused {other}")), "{error}");
    assert_eq!(f.runs.meet.load(Ordering::SeqCst), 2, "each meet ran once");
    f.close().await;
}

/// A call that times out while its run waits for a busy partition leaves the run going: the
/// run keeps its id, and a retry with the same id joins it (answered as a duplicate) rather
/// than running the workflow beside the work the first call queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_time_out_joins_the_run_it_left_going() {
    let f = Fixture::new().await;
    let (held, first) = f.hold_partition().await;
    let key = (2..).find(|k| f.partition_of(*k) == held).unwrap();
    let adds = f.runs.add.load(Ordering::SeqCst);
    let impatient = Client::builder(f.url()).timeout(Duration::from_millis(300)).connect().await.unwrap();
    let err = impatient.invoke::<Value>("count", &json!({ "id": key })).id("retried").run().await.unwrap_err();
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    // Two runs in flight, the meet and the timed-out call's: the call's run holds its id
    // still, so the retry, sent only now, cannot arrive before it.
    assert_eq!(f.client.health().await.unwrap().workflows_in_flight, 2, "the timed-out call's run is still in flight");
    let retry = {
        let c = f.client.clone();
        tokio::spawn(async move { c.invoke::<Value>("count", &json!({ "id": key })).id("retried").run().await })
    };
    f.let_go(held, first).await;
    let run = retry.await.unwrap().expect("the retry is answered");
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(run.deduplicated, "the retry joined the run the first call started");
    assert_eq!(run.output, Some(json!({ "id": key, "n": 1 })));
    assert_eq!(f.runs.add.load(Ordering::SeqCst), adds + 1, "the step ran once");
    // Each run's task gives its slot back as it ends, just after it answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.client.health().await.unwrap().workflows_in_flight != 0 {
        assert!(Instant::now() < deadline, "every run's slot is given back");
        tokio::task::yield_now().await;
    }
    f.close().await;
}

/// Waits until the held log holds a write.
async fn until_held(faulty: &Arc<comb_log::testkit::ControlledLoglet>) {
    let faulty = Arc::clone(faulty);
    tokio::task::spawn_blocking(move || faulty.wait_until_held(1)).await.unwrap();
}

/// An asynchronous invoke of `workflow` with `id`, on a task of its own.
fn start_in_task(client: &Client, workflow: &'static str, input: Value, id: &str) -> tokio::task::JoinHandle<comb_client::Result<comb_client::Run>> {
    let (client, id) = (client.clone(), id.to_owned());
    tokio::spawn(async move { client.start(workflow, &input, Some(&id)).await })
}

/// [`start`] over a log in `dir/log` whose appends the test holds, releases and fails.
async fn start_on_controlled_log(dir: &std::path::Path, runs: &Arc<Runs>) -> (Arc<comb_log::testkit::ControlledLoglet>, Server, Listening, Client) {
    start_on_controlled_log_with(dir, runs, options(None)).await
}

/// [`start_on_controlled_log`] with `options`.
async fn start_on_controlled_log_with(dir: &std::path::Path, runs: &Arc<Runs>, options: ServerOptions) -> (Arc<comb_log::testkit::ControlledLoglet>, Server, Listening, Client) {
    let segment_bytes = comb_log::LogOptions::default().segment_bytes;
    let disk: Arc<dyn comb_log::Loglet> = Arc::new(comb_log::RocksLoglet::open_with_segments(&dir.join("log"), segment_bytes).unwrap());
    let faulty = Arc::new(comb_log::testkit::ControlledLoglet::new(disk));
    let log = comb_log::LogBook::open_shared(Arc::clone(&faulty) as Arc<dyn comb_log::Loglet>, comb_log::LogOptions::default()).unwrap();
    let (server, listening, client) = start_over(dir, runs, options, Some(log)).await;
    (faulty, server, listening, client)
}

/// Counter `id`'s value as its partition holds it now, staged writes included (a logged read,
/// answered at once): what the steps of a run have done before any of it is durable.
async fn staged_counter(server: &Server, id: i64) -> Option<i64> {
    let read = Invocation::new("get", json!({ "id": id })).answer_logged();
    server.engine().invoke(read).await.unwrap().value["n"].as_i64()
}

/// Polls [`staged_counter`] until it is `n` (or fails after 20 s).
async fn until_staged(server: &Server, id: i64, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while staged_counter(server, id).await != Some(n) {
        assert!(Instant::now() < deadline, "counter {id} never reached {n} (its step did not run)");
        tokio::task::yield_now().await;
    }
}

/// Every Invoke waits at most `wait-max` for its answer, however its run goes: one
/// transaction with an id or without, several transactions, or asynchronous (its start not
/// durable); so does a GetWorkflow that waits. Each run goes on past its caller's time-out,
/// and once the log writes again it ends, having run once, where its id finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invoke_and_wait_is_bounded_by_wait_max_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(Runs::default());
    let wait_max = Duration::from_millis(500);
    let (faulty, server, listening, client) = start_on_controlled_log_with(dir.path(), &runs, ServerOptions { wait_max, ..options(None) }).await;
    client.register_workflow(PICK_ADD).await.unwrap();
    faulty.hold();
    // Each call is answered, or the test fails here rather than hang.
    async fn answered<T>(call: impl std::future::Future<Output = comb_client::Result<T>>) -> comb_client::Error {
        match tokio::time::timeout(Duration::from_secs(20), call).await.expect("answered within wait-max") {
            Ok(_) => panic!("answered as done while the log writes nothing"),
            Err(err) => err,
        }
    }
    let mut ids = Vec::new();
    for (workflow, input, id) in [("count", json!({ "id": 31, "by": 1 }), None), ("count", json!({ "id": 32, "by": 1 }), Some("one-commit")), ("pick_add", json!({ "id": 0, "base": 33 }), Some("two-commits"))] {
        let mut call = client.invoke::<Value>(workflow, &input);
        if let Some(id) = id {
            call = call.id(id);
        }
        let err = answered(call.run()).await;
        assert_eq!(code(&err), Code::DeadlineExceeded, "{workflow} {id:?}: {err}");
        let message = err.to_string();
        // "workflow run <id> did not end within ...": the id the run goes on under.
        let named = message.split_whitespace().nth(2).expect("the error names the run").to_owned();
        assert!(message.contains("did not end within 500ms"), "{message}");
        assert!(id.is_none_or(|id| id == named), "{workflow}: {message}");
        ids.push(named);
    }
    let err = answered(client.start("pick_add", &json!({ "id": 0, "base": 34 }), Some("started"))).await;
    assert_eq!(code(&err), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("the start of workflow run started was not durable within 500ms (wait-max)"), "{err}");
    ids.push("started".to_owned());
    assert_eq!(staged_counter(&server, 34).await, None, "an asynchronous run's steps wait for its start");
    // A GetWorkflow that waits is bounded as well, its durable reads with it: the run with no
    // id is held by no task here, and its row waits in the log.
    let err = answered(client.get_workflow(&ids[0], true)).await;
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    assert!(err.to_string().contains(&format!("workflow run {} did not end within 500ms", ids[0])), "{err}");

    faulty.release();
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        let run = loop {
            match client.get_workflow(id, true).await {
                Err(err) if code(&err) == Code::DeadlineExceeded && Instant::now() < deadline => continue,
                found => break found.unwrap_or_else(|err| panic!("run {id} went on: {err}")),
            }
        };
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    for counter in [31, 32, 33, 34] {
        assert_eq!(staged_counter(&server, counter).await, Some(1), "counter {counter} added to once");
    }
    assert_eq!(runs.add.load(Ordering::SeqCst), 4, "each run's step ran once");
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}

/// A synchronous run's start is answered once queued in the log, not once durable: the run's
/// steps go on while the start's write waits, and the caller is answered once the run's end,
/// which carries the start with it, is durable. When the log then fails under the start, the
/// caller is told the run may not have started (not that the server resumes it), GetWorkflow
/// never showed it, nothing of it survives a restart, and an invoke of its id runs it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_run_does_not_wait_for_its_start_and_a_lost_start_is_told_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(Runs::default());
    let (faulty, server, listening, client) = start_on_controlled_log(dir.path(), &runs).await;
    client.register_workflow(PICK_ADD).await.unwrap();

    // The log writes nothing: the start waits in its queue, and the steps run all the same.
    faulty.hold();
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.invoke::<Value>("pick_add", &json!({ "id": 0, "base": 10 })).run().await })
    };
    until_staged(&server, 10, 1).await;
    assert!(!call.is_finished(), "the caller is not answered before the run's end is durable");
    faulty.release();
    let run = call.await.unwrap().expect("the run ends once the log writes");
    assert_eq!(run.output, Some(json!({ "id": 10, "n": 1 })));

    // Again, and this time the write that holds the start fails: the log refuses every
    // write after it, the run's end among them.
    faulty.hold();
    let id = "lost-start".to_owned();
    let call = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move { client.invoke::<Value>("pick_add", &json!({ "id": 0, "base": 20 })).id(id).run().await })
    };
    until_held(&faulty).await;
    until_staged(&server, 20, 1).await;
    // An asynchronous invoke of the same id is acknowledged on the run's start: not while
    // the start is only queued.
    let mut joined = start_in_task(&client, "pick_add", json!({ "id": 0, "base": 20 }), &id);
    let early = tokio::time::timeout(Duration::from_millis(300), &mut joined).await;
    assert!(early.is_err(), "acknowledged while the start was only queued: {early:?}");
    // Nor is the run shown: GetWorkflow reads durably, and the start is not durable.
    let mut shown = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move { client.get_workflow(&id, false).await })
    };
    let early = tokio::time::timeout(Duration::from_millis(300), &mut shown).await;
    assert!(early.is_err(), "shown while its start was only queued: {early:?}");
    faulty.fail_next_append();
    faulty.release();
    let err = shown.await.unwrap().expect_err("a run whose start was lost is not shown");
    assert_eq!(code(&err), Code::Unavailable, "the read fails with the log under it: {err}");
    let err = joined.await.unwrap().expect_err("an asynchronous invoke is not acknowledged on a start that was lost");
    assert_eq!(code(&err), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("may not have started"), "{err}");
    let err = call.await.unwrap().expect_err("a run whose start was lost is not answered as ended");
    assert_eq!(code(&err), Code::Unavailable, "{err}");
    let message = err.to_string();
    assert!(message.contains("may not have started") && message.contains("invoke it again with id lost-start"), "{message}");
    assert!(!message.contains("resumes it by itself"), "nothing resumes a run whose start is lost: {message}");
    listening.shutdown().await.unwrap();
    let _ = server.close().await; // the failed log reports its failure again
    assert_eq!(runs.add.load(Ordering::SeqCst), 2, "each run's step ran once");

    // After a restart nothing of the lost run is there; its id runs it, once.
    let (server, listening, client) = start(dir.path(), &runs, options(None)).await;
    let err = client.get_workflow(&id, false).await.unwrap_err();
    assert_eq!(code(&err), Code::NotFound, "the lost run left no row: {err}");
    assert_eq!(staged_counter(&server, 10).await, Some(1), "the first run's step is durable");
    assert_eq!(staged_counter(&server, 20).await, None, "the lost run's step is gone with it");
    let run = client.invoke::<Value>("pick_add", &json!({ "id": 0, "base": 20 })).id(id.clone()).run().await.unwrap();
    assert!(!run.deduplicated, "nothing of the lost run was found");
    assert_eq!(run.output, Some(json!({ "id": 20, "n": 1 })));
    assert_eq!(runs.add.load(Ordering::SeqCst), 3);
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}

/// An asynchronous invoke of an id whose synchronous one-transaction run is in flight gets
/// that run's end: such a run writes no start (its row is its end), so there is no start
/// to acknowledge, and its end comes with its one commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asynchronous_duplicate_of_a_one_transaction_run_in_flight_gets_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(Runs::default());
    let (faulty, server, listening, client) = start_on_controlled_log(dir.path(), &runs).await;
    faulty.hold();
    let id = "one-commit".to_owned();
    let call = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move { client.invoke::<Value>("count", &json!({ "id": 5, "by": 2 })).id(id).run().await })
    };
    until_held(&faulty).await;
    let mut joined = start_in_task(&client, "count", json!({ "id": 5, "by": 2 }), &id);
    let early = tokio::time::timeout(Duration::from_millis(300), &mut joined).await;
    assert!(early.is_err(), "answered before the run's commit is durable: {early:?}");
    faulty.release();
    let run = call.await.unwrap().unwrap();
    let joined = joined.await.unwrap().expect("the duplicate gets the run's end");
    assert_eq!((joined.status, joined.deduplicated, &joined.output), (RunStatus::Succeeded, true, &run.output), "{joined:?}");
    assert_eq!(runs.add.load(Ordering::SeqCst), 1, "the step ran once");
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}

/// A synchronous run that no client named commits its start with its first unit when every
/// other unit waits on that one: one commit fewer. A first unit that fails leaves only the
/// failed run's row. A run with two first units queues its start on its own, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_an_id_starts_with_its_first_unit() {
    let f = Fixture::new().await;
    let c = f.client.clone();
    c.register_workflow(
        r#"{"name": "add_note", "steps": [
            {"id": "add", "function": "add", "input": {"id": "$input.id"}},
            {"id": "note", "function": "note", "input": {"id": "$add.id", "body": "$input.body"}}],
            "output": {"n": "$add.n", "noted": "$note.noted"}}"#,
    )
    .await
    .unwrap();
    let before = f.log_tail();
    let run = c.invoke::<Value>("add_note", &json!({ "id": 70, "body": "x" })).run().await.unwrap();
    assert_eq!(run.output, Some(json!({ "n": 1, "noted": 70 })));
    assert_eq!(f.commits_after(before).await, 2, "the start with the first unit, the end with the second (both on key 70's partition)");
    let row = c.get_workflow(&run.id, false).await.unwrap();
    assert_eq!((row.status, &row.output), (RunStatus::Succeeded, &run.output), "the row is found wherever the start put it");
    assert_eq!(c.invoke::<Value>("count", &json!({ "id": 70, "by": 0 })).await.unwrap()["n"], 1, "the first unit ran once");
    // The row is where the first unit ran, not where the id's partition would put it: some
    // of these ids fall in the other partition.
    for key in 90..98 {
        let run = c.invoke::<Value>("add_note", &json!({ "id": key, "body": "y" })).run().await.unwrap();
        let row = f.row_at(f.home_of(key), &run.id).await;
        assert_eq!(row["status"], "succeeded", "run {} of key {key}: its row is in its first unit's partition", run.id);
    }

    // The first unit fails: nothing of the run committed but its failed row.
    let fail_add = r#"{"name": "fail_add", "steps": [
        {"id": "fail", "function": "fail", "input": {"id": "$input.id"}},
        {"id": "add", "function": "add", "input": {"id": "$fail.id"}}],
        "output": "$add"}"#;
    let (failed, commits) = f.failing_run(fail_add, "fail_add", 71).await;
    assert_eq!(commits, 1, "only the failed run's row");
    let row = c.get_workflow(&failed.id, false).await.unwrap();
    assert_eq!((row.status, row.error), (RunStatus::Failed, failed.error));
    let page = c.list_workflows(&ListFilter { name: Some("fail_add".into()), page_size: 10, ..ListFilter::default() }).await.unwrap();
    assert_eq!(page.runs.len(), 1, "one row for the failed run: {:?}", page.runs);

    // Two first units, neither waiting on the other: the start goes first, on its own.
    c.register_workflow(
        r#"{"name": "two_adds", "steps": [
            {"id": "a", "function": "add", "input": {"id": "$input.a"}},
            {"id": "b", "function": "add", "input": {"id": "$input.b"}}],
            "output": {"a": "$a.n", "b": "$b.n"}}"#,
    )
    .await
    .unwrap();
    let before = f.log_tail();
    let run = c.invoke::<Value>("two_adds", &json!({ "a": 72, "b": 73 })).run().await.unwrap();
    assert_eq!(run.output, Some(json!({ "a": 1, "b": 1 })));
    assert_eq!(f.commits_after(before).await, 4, "the start, each unit, the end");
    f.close().await;
}

/// A run ends in its last unit's commit when that unit runs where the run's row is, or may
/// touch every partition; elsewhere, or when that unit fails, in a commit of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_ends_with_its_last_unit_where_its_row_is() {
    let f = Fixture::new().await;
    let c = f.client.clone();
    let other = |k: i64| (k + 1..).find(|o| f.partition_of(*o) != f.partition_of(k)).unwrap();
    c.register_workflow(
        r#"{"name": "add_note_at", "steps": [
            {"id": "add", "function": "add", "input": {"id": "$input.id"}},
            {"id": "note", "function": "note", "input": {"id": "$input.at", "body": "at", "after": "$add.n"}}],
            "output": {"n": "$add.n", "noted": "$note.noted"}}"#,
    )
    .await
    .unwrap();
    // Same partition: two commits; the row, read where it is, holds what the caller got.
    let before = f.log_tail();
    let run = c.invoke::<Value>("add_note_at", &json!({ "id": 100, "at": 100 })).run().await.unwrap();
    assert_eq!((run.status, &run.output), (RunStatus::Succeeded, &Some(json!({ "n": 1, "noted": 100 }))));
    assert_eq!(f.commits_after(before).await, 2, "the start with the first unit, the end with the last");
    let row = f.row_at(f.home_of(100), &run.id).await;
    assert_eq!((row["status"].as_str(), row["ended_us"].as_u64()), (Some("succeeded"), run.ended_us), "{row}");
    assert_eq!(serde_json::from_str::<Value>(row["output"].as_str().unwrap()).unwrap(), run.output.clone().unwrap());
    let running = c.list_workflows_up_to(&ListFilter { name: Some("add_note_at".into()), status: Some(RunStatus::Running), ..ListFilter::default() }, 1).await.unwrap();
    assert!(running.is_empty(), "an ended run is not left running: {running:?}");

    // The last unit on the other partition: its end goes on its own.
    let before = f.log_tail();
    let run = c.invoke::<Value>("add_note_at", &json!({ "id": 101, "at": other(1_000) })).run().await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(f.commits_after(before).await, 3, "the start with the first unit, the last unit, the end");
    assert_eq!(c.get_workflow(&run.id, false).await.unwrap().output, run.output);

    // A last unit with no partition key may touch every partition: the end goes with it.
    let anywhere = SqlFunction {
        name: "note_anywhere".into(),
        statements: vec![SqlStatement { name: "put".into(), sql: "INSERT INTO notes (id, body) VALUES ($1, $2)".into(), params: vec!["id".into(), "body".into()] }],
        partition_by: None,
    };
    c.register_function(&anywhere).await.unwrap();
    let read = SqlFunction {
        name: "note_body".into(),
        statements: vec![SqlStatement { name: "get".into(), sql: "SELECT body FROM notes WHERE id = $1".into(), params: vec!["id".into()] }],
        partition_by: Some("id".into()),
    };
    c.register_function(&read).await.unwrap();
    c.register_workflow(r#"{"name": "note_body", "steps": [{"id": "get", "function": "note_body", "input": "$input"}], "output": "$get"}"#).await.unwrap();
    let body = |id: i64| {
        let c = c.clone();
        async move { c.invoke::<Value>("note_body", &json!({ "id": id })).await.unwrap() }
    };
    c.register_workflow(
        r#"{"name": "add_note_anywhere", "steps": [
            {"id": "add", "function": "add", "input": {"id": "$input.id"}},
            {"id": "note", "function": "note_anywhere", "input": {"id": "$input.at", "body": "anywhere", "after": "$add.n"}}],
            "output": "$add.n"}"#,
    )
    .await
    .unwrap();
    let before = f.log_tail();
    let run = c.invoke::<Value>("add_note_anywhere", &json!({ "id": 102, "at": other(2_000) })).run().await.unwrap();
    assert_eq!((run.status, &run.output), (RunStatus::Succeeded, &Some(json!(1))));
    assert_eq!(f.commits_after(before).await, 2, "the end with the multi-partition last unit");
    assert_eq!(body(other(2_000)).await, json!([{ "body": "anywhere" }]));

    // An output that cannot be built from the steps' outputs fails the run, in the same
    // commit as the last unit, whose write stays.
    c.register_workflow(
        r#"{"name": "add_note_bad_output", "steps": [
            {"id": "add", "function": "add", "input": {"id": "$input.id"}},
            {"id": "note", "function": "note", "input": {"id": "$add.id", "body": "b"}}],
            "output": "$note.missing"}"#,
    )
    .await
    .unwrap();
    let before = f.log_tail();
    let run = c.invoke::<Value>("add_note_bad_output", &json!({ "id": 120 })).run().await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.as_deref().is_some_and(|e| e.contains("the workflow's output")), "{run:?}");
    assert_eq!(f.commits_after(before).await, 2);
    assert_eq!(c.get_workflow(&run.id, false).await.unwrap().error, run.error);
    assert_eq!(body(120).await, json!([{ "body": "b" }]), "the last unit's write stays");

    // The last unit fails: nothing of it committed; the run's failure is a commit of its own.
    let add_fail = r#"{"name": "add_fail", "steps": [
        {"id": "add", "function": "add", "input": {"id": "$input.id"}},
        {"id": "fail", "function": "fail", "input": {"id": "$add.id"}}],
        "output": "$fail"}"#;
    let (run, commits) = f.failing_run(add_fail, "add_fail", 121).await;
    assert_eq!(commits, 2, "the start with the first unit, the failed end");
    assert_eq!(c.get_workflow(&run.id, false).await.unwrap().status, RunStatus::Failed);

    // An asynchronous run of one unit: its start answered durable in the id's partition, its
    // end with the unit when the unit's key falls there too.
    let engine = f.server.as_ref().unwrap().0.engine().clone();
    let id_at = engine.partition_of(&comb_planner::Value::Text("async-122".to_owned()));
    let key = (122..).find(|k| f.partition_of(*k) == id_at).unwrap();
    let before = f.log_tail();
    let started = c.start("count", &json!({ "id": key }), Some("async-122")).await.unwrap();
    let ended = c.get_workflow(&started.id, true).await.unwrap();
    assert_eq!((ended.status, ended.output), (RunStatus::Succeeded, Some(json!({ "id": key, "n": 1 }))));
    assert_eq!(f.commits_after(before).await, 2, "the start, then the unit with the end");
    f.close().await;
}

/// A workflow's output built from steps' outputs each within `json-bytes-max`, but together
/// above it, fails the run with an error that says so, whether the end goes with the last
/// unit or on its own; the steps' writes stay, and the run is not left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_above_the_bound_fails_the_run_it_would_end() {
    let f = Fixture::with_options(ServerOptions { engine: EngineOptions { partitions: 2, json_bytes_max: 16 << 10, ..EngineOptions::default() }, ..options(None) }).await;
    let c = f.client.clone();
    c.register_workflow(
        r#"{"name": "two_pads", "steps": [
            {"id": "a", "function": "pad", "input": {"id": "$input.id", "bytes": 10000}},
            {"id": "b", "function": "pad", "input": {"id": "$input.at", "bytes": 10000, "after": "$a.id"}},
            {"id": "add", "function": "add", "input": {"id": "$input.at", "after": "$b.id"}}],
            "output": {"a": "$a.pad", "b": "$b.pad"}}"#,
    )
    .await
    .unwrap();
    let other = (1..).find(|k| f.partition_of(*k) != f.partition_of(0)).unwrap();
    // `a` and `b` are recorded (each output goes to a step and to the run's output).
    for (at, commits) in [(0, 3), (other, 4)] {
        let before = f.log_tail();
        let run = c.invoke::<Value>("two_pads", &json!({ "id": 0, "at": at })).run().await.unwrap();
        assert_eq!(run.status, RunStatus::Failed, "{run:?}");
        let error = run.error.clone().unwrap_or_default();
        assert!(error.contains("the workflow's output") && error.contains("json-bytes-max"), "{error}");
        assert_eq!(f.commits_after(before).await, commits, "last unit at key {at}: the start with `a`, `b`, `add` with the failed end or then it");
        assert_eq!(c.get_workflow(&run.id, false).await.unwrap().error, run.error);
        assert_eq!(c.invoke::<Value>("count", &json!({ "id": at, "by": 0 })).await.unwrap()["n"], 1, "the last unit's write stays");
    }
    let running = c.list_workflows_up_to(&ListFilter { name: Some("two_pads".into()), status: Some(RunStatus::Running), ..ListFilter::default() }, 1).await.unwrap();
    assert!(running.is_empty(), "no run left running: {running:?}");
    f.close().await;
}

/// A run that no client named, whose start went with its first unit, is resumed by the
/// server after a failure between its units, and ends once: the first unit's write is not
/// repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_an_id_cut_after_its_first_unit_resumes_once() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(Runs::default());
    let (faulty, server, listening, client) = start_on_controlled_log(dir.path(), &runs).await;
    // `meet` on the partition the write does not use, so that it holds no executor the
    // run's other work needs; it waits on the write's output.
    let id = 80i64;
    let engine = server.engine().clone();
    let at = |k: i64| engine.partition_of(&comb_planner::Value::Int(k));
    let other = (id + 1..).find(|k| at(*k) != at(id)).unwrap();
    let third = (other + 1..).find(|k| at(*k) == at(id)).unwrap();
    let home = (0..).find(|h| at(*h) == at(id)).unwrap();
    client
        .register_workflow(
            r#"{"name": "add_meet", "steps": [
                {"id": "add", "function": "add", "input": {"id": "$input.id"}},
                {"id": "meet", "function": "meet", "input": {"id": "$input.other", "after": "$add.n"}}],
                "output": {"n": "$add.n", "met": "$meet.met"}}"#,
        )
        .await
        .unwrap();
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.invoke::<Value>("add_meet", &json!({ "id": id, "other": other })).run().await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs.meet.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the second unit did not start");
        tokio::task::yield_now().await;
    }
    // A durable read of the counter waits for the first unit's commit, the start with it.
    let n = engine.invoke(Invocation::new("get", json!({ "id": id }))).await.unwrap().value["n"].clone();
    assert_eq!(n, json!(1));
    // The log then fails under the run's end: the second `meet` lets the first one go.
    faulty.hold();
    engine.invoke(Invocation::new("meet", json!({ "id": third }))).await.unwrap();
    until_held(&faulty).await;
    faulty.fail_next_append();
    faulty.release();
    let err = call.await.unwrap().expect_err("a run whose end was lost is not answered as ended");
    assert_eq!(code(&err), Code::Unavailable, "{err}");
    drop(engine);
    listening.shutdown().await.unwrap();
    let _ = server.close().await; // the failed log reports its failure again
    assert_eq!(runs.add.load(Ordering::SeqCst), 1);

    // After a restart the server finds the run started and ends it, without a second write.
    let (server, listening, client) = start(dir.path(), &runs, options(None)).await;
    assert_eq!(server.resumed(), 1, "the start committed with the first unit");
    let page = client.list_workflows(&ListFilter { name: Some("add_meet".into()), page_size: 10, ..ListFilter::default() }).await.unwrap();
    assert_eq!(page.runs.len(), 1, "{:?}", page.runs);
    let run = client.get_workflow(&page.runs[0].id, true).await.unwrap();
    assert_eq!((run.status, run.output), (RunStatus::Succeeded, Some(json!({ "n": 1, "met": true }))));
    assert_eq!(runs.add.load(Ordering::SeqCst), 1, "the recorded write did not run again");
    assert_eq!(staged_counter(&server, id).await, Some(1));
    let get = Invocation::new("comb_workflow_get", json!({ "home": home, "id": run.id }));
    assert_eq!(server.engine().invoke(get).await.unwrap().value["status"], "succeeded", "the row is in the first unit's partition");
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}
