//! The server under SIGKILL: concurrent clients run two-step writing workflows (shop
//! checkout: take stock on the item's partition, record the order on the order's) against
//! a real `comb serve` process, which is killed at random moments over several rounds.
//! After each restart: every started run ends, each run's effects appear exactly once, and
//! every output a client received is the one re-invocation returns. And a server that
//! cannot start exits with its error, not an abort.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comb_client::{Client, ListFilter, RunStatus, SqlFunction, SqlStatement};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

const ITEMS: i64 = 4;
const STOCK: i64 = 1_000_000;
const CLIENTS: usize = 16;
const ROUNDS: usize = 4;

/// Longest wait for a server's start or for a round's load.
const WAIT: Duration = Duration::from_secs(60);

struct ServerProcess {
    child: Child,
    addr: String,
    /// Runs the server resumed by itself at its start.
    resumed: usize,
    /// The lines the server writes to standard error after its start-up line.
    messages: mpsc::UnboundedReceiver<String>,
}

/// Starts `comb serve` on the data in `dir/data` on a free port and waits for its start-up line,
/// printed once it listens: `comb serving on ADDR (..., N runs resumed)`. The traces are
/// flushed to Parquet every 100 ms and their files merged two at a time, so that kills land
/// before, during and after flushes and merges.
async fn spawn_server(dir: &std::path::Path) -> ServerProcess {
    spawn_server_with(dir, r#"{"tracing": {"flush-age": 100, "merge-files": 2}}"#, "warn").await
}

/// [`spawn_server`] with the server options `options` (JSON), logging what `log` (its
/// `COMB_LOG`) lets through.
async fn spawn_server_with(dir: &std::path::Path, options_json: &str, log: &str) -> ServerProcess {
    let options = dir.join("options.json");
    std::fs::write(&options, options_json).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_comb"))
        .env("COMB_LOG", log)
        .args(["serve", "--apps", "shop", "--partitions", "2", "--addr", "127.0.0.1:0", "--options"])
        .arg(&options)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    // A thread reads the server's messages to their end, so that the pipe never fills.
    let (lines, mut received) = mpsc::unbounded_channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    let line = tokio::time::timeout(WAIT, async {
        while let Some(line) = received.recv().await {
            if line.starts_with("comb serving on ") {
                return Some(line);
            }
            seen.push(line);
        }
        None
    })
    .await
    .expect("the server did not start within 60 s")
    .unwrap_or_else(|| panic!("the server exited during start: {seen:?}"));
    let addr = line["comb serving on ".len()..].split(' ').next().unwrap().to_owned();
    let resumed = line.rsplit(", ").next().and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok());
    ServerProcess { child, addr: format!("http://{addr}"), resumed: resumed.unwrap_or_else(|| panic!("cannot read the resumed runs in {line:?}")), messages: received }
}

async fn connect(server: &ServerProcess) -> Client {
    Client::builder(server.addr.clone()).timeout(Duration::from_secs(20)).connect().await.expect("the server listens")
}

fn order_input(id: &str, seq: u64) -> Value {
    json!({ "order": id, "item": (seq % ITEMS as u64) as i64 + 1, "qty": (seq % 3) as i64 + 1 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_resumes_every_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(dir.path()).await;
    let client = connect(&server).await;
    for item in 1..=ITEMS {
        let run = client.invoke::<Value>("shop_stock", &json!({ "item": item, "price": 3, "stock": STOCK })).id(format!("stock-{item}")).run().await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    // Every id a client tried, with its input; and the outputs clients received.
    let tried: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let acked: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let mut rng = rand::rng();
    let mut resumed_in_all = 0;
    for round in 0..ROUNDS {
        let client = connect(&server).await;
        let stop = Arc::new(AtomicBool::new(false));
        // Acknowledgements of this round: the kill comes after a random number of them.
        let (acks, mut acks_seen) = watch::channel(0usize);
        let acks = Arc::new(acks);
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, stop, tried, acked, acks) = (client.clone(), Arc::clone(&stop), Arc::clone(&tried), Arc::clone(&acked), Arc::clone(&acks));
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let id = format!("r{round}-c{c}-{seq}");
                    let input = order_input(&id, seq);
                    tried.lock().unwrap().insert(id.clone(), input.clone());
                    match client.invoke::<Value>("checkout", &input).id(id.clone()).run().await {
                        Ok(run) => {
                            assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
                            acked.lock().unwrap().insert(id, run.output.unwrap());
                            acks.send_modify(|n| *n += 1);
                        }
                        Err(_) => break, // the server died under us
                    }
                    seq += 1;
                }
            }));
        }
        let kill_after = rng.random_range(100..1500);
        tokio::time::timeout(WAIT, acks_seen.wait_for(|n| *n >= kill_after)).await.expect("the load stalled").unwrap();
        server.child.kill().expect("SIGKILL");
        server.child.wait().unwrap();
        stop.store(true, Ordering::Release);
        for task in tasks {
            task.await.unwrap();
        }
        server = spawn_server(dir.path()).await;
        resumed_in_all += server.resumed;
        eprintln!(
            "round {round}: killed after {kill_after} acknowledgements; {} runs tried, {} acknowledged so far; the restarted server resumed {}",
            tried.lock().unwrap().len(),
            acked.lock().unwrap().len(),
            server.resumed
        );
    }
    let client = connect(&server).await;

    // Every started run ends without any client: wait for each the server lists as running.
    let most = tried.lock().unwrap().len();
    let running = client.list_workflows_up_to(&ListFilter { status: Some(RunStatus::Running), ..ListFilter::default() }, most).await.unwrap();
    for run in running {
        let ended = client.get_workflow(&run.id, true).await.unwrap();
        assert_eq!(ended.status, RunStatus::Succeeded, "a resumed run failed: {ended:?}");
    }
    // Re-invoking every id: the acknowledged ones return what the client received, and
    // the rest run now if they never started.
    let tried = tried.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "the load ran: only {} runs acknowledged", acked.len());
    let mut expected_qty: BTreeMap<i64, i64> = BTreeMap::new();
    for (id, input) in &tried {
        let run = client.invoke::<Value>("checkout", input).id(id.clone()).run().await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        if let Some(output) = acked.get(id) {
            assert!(run.deduplicated, "{id} ran again");
            assert_eq!(run.output.as_ref(), Some(output), "{id}: re-invocation returned another output");
        }
        *expected_qty.entry(input["item"].as_i64().unwrap()).or_default() += input["qty"].as_i64().unwrap();
    }
    // Effects exactly once: one order a run, and stock taken once per run.
    let summary = SqlFunction {
        name: "crash_summary".into(),
        statements: vec![SqlStatement { name: "orders".into(), sql: "SELECT item_id, count(*) AS orders, sum(qty) AS qty FROM shop_orders GROUP BY item_id ORDER BY item_id".into(), params: vec![] }],
        partition_by: None,
    };
    client.register_function(&summary).await.unwrap();
    let stock = SqlFunction {
        name: "crash_stock".into(),
        statements: vec![SqlStatement { name: "stock".into(), sql: "SELECT item_id, stock FROM shop_items ORDER BY item_id".into(), params: vec![] }],
        partition_by: None,
    };
    client.register_function(&stock).await.unwrap();
    client.register_workflow(r#"{"name": "crash_check", "steps": [{"id": "o", "function": "crash_summary"}, {"id": "s", "function": "crash_stock"}], "output": {"orders": "$o", "stock": "$s"}}"#).await.unwrap();
    let check: Value = client.invoke("crash_check", &json!(null)).await.unwrap();
    let orders: usize = check["orders"].as_array().unwrap().iter().map(|r| r["orders"].as_i64().unwrap() as usize).sum();
    assert_eq!(orders, tried.len(), "one order per run");
    for row in check["orders"].as_array().unwrap() {
        let item = row["item_id"].as_i64().unwrap();
        assert_eq!(row["qty"].as_i64().unwrap(), expected_qty[&item], "orders of item {item}");
    }
    for row in check["stock"].as_array().unwrap() {
        let item = row["item_id"].as_i64().unwrap();
        assert_eq!(STOCK - row["stock"].as_i64().unwrap(), expected_qty[&item], "stock of item {item} taken exactly once per run");
    }
    // The traces survived the kills too: each run ended once in `workflows`, each of its two
    // writing steps committed once in `function_invocations`, each order inserted once in
    // `change_data`; none lost, none twice, though every kill dropped the feed's tail.
    let count = |sql: &'static str| {
        let client = client.clone();
        async move {
            let answer = client.query_traces(sql, true).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
            answer.rows[0].iter().map(|v| v.as_u64().unwrap() as usize).collect::<Vec<_>>()
        }
    };
    let runs = tried.len();
    assert_eq!(count("SELECT count(*), count(DISTINCT id) FROM workflows WHERE name = 'checkout'").await, [runs, runs], "runs in the traces");
    assert_eq!(
        count("SELECT count(*), count(DISTINCT workflow_id || '/' || step) FROM function_invocations WHERE lsn IS NOT NULL AND workflow_id LIKE 'r%'").await,
        [2 * runs, 2 * runs],
        "committed steps in the traces"
    );
    assert_eq!(
        count("SELECT count(*), count(DISTINCT key) FROM change_data WHERE table_name = 'shop_orders' AND operation = 'insert'").await,
        [runs, runs],
        "orders in the traces"
    );
    // The same through the CLI, as CSV.
    let output = Command::new(env!("CARGO_BIN_EXE_comb"))
        .args(["trace", "--addr", &server.addr, "--format", "csv", "SELECT count(*) AS runs FROM workflows WHERE name = 'checkout'"])
        .output()
        .unwrap();
    assert!(output.status.success(), "comb trace failed: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("runs\n{runs}\n"));
    // `comb health`: one JSON object, with the traces' progress and files.
    let output = Command::new(env!("CARGO_BIN_EXE_comb")).args(["health", "--addr", &server.addr]).output().unwrap();
    assert!(output.status.success(), "comb health failed: {}", String::from_utf8_lossy(&output.stderr));
    let health: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(health["partitions"], 2, "{health}");
    assert!(health["traced_lsn"].as_u64().unwrap() > 0 && health["trace_files"].as_u64().unwrap() > 0, "{health}");
    // The log has written and synced since this start (the runs above), and its longest
    // storage call is at least the slow ones' bound when any was slow.
    let (slow, longest) = (health["log_io_over_10ms"].as_u64().unwrap(), health["log_io_us_max"].as_u64().unwrap());
    assert!(longest > 0 && (slow == 0 || longest >= 10_000), "{health}");
    // Flushed under load, then merged two at a time: as few as one file may be left, so the
    // count shows only that rows reached Parquet, not how many flushes wrote them.
    let files = std::fs::read_dir(dir.path().join("data/traces/change_data"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension().is_some_and(|ext| ext == "parquet"))
        .count();
    assert!(files >= 1, "the traces were flushed to Parquet under load ({files} files)");
    eprintln!(
        "{} runs tried, {} acknowledged, {resumed_in_all} resumed by the server itself, all exactly once, in the store and in the traces ({files} Parquet files of changes)",
        tried.len(),
        acked.len()
    );
    cli_at_its_edges(&server.addr);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// The expiry of ended runs under SIGKILL: runs forgotten 300 ms after their end, the server
/// killed at random moments while its passes forget them. Afterwards every run is forgotten
/// whole: invoked again with its id it runs anew (a recorded output left behind its row
/// would answer instead, and its cart line would not grow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_expiry_forgets_each_run_whole() {
    const OPTIONS: &str = r#"{"run-retention": 300}"#;
    // Each pass of the expiry says so (`expiry pass forgotten=N before_us=T complete=B`).
    const LOG: &str = "warn,comb_frontend=debug";
    const RUNS_PER_ROUND: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server_with(dir.path(), OPTIONS, LOG).await;
    let mut rng = rand::rng();
    let input = |user: u64| json!({ "user": 800_000 + user, "item": 1, "qty": 1 });
    let mut users = 0;
    for _ in 0..ROUNDS {
        let client = connect(&server).await;
        let calls = (users..users + RUNS_PER_ROUND).map(|user| {
            let client = client.clone();
            async move { client.invoke::<Value>("cart_add", &input(user)).id(format!("cart-{user}")).run().await.unwrap() }
        });
        for run in futures::future::join_all(calls).await {
            assert_eq!(run.output.as_ref().and_then(|o| o.get("qty")), Some(&json!(1)), "{run:?}");
        }
        users += RUNS_PER_ROUND;
        // Killed after a random number of passes (one every 30 ms; the round's runs are due
        // 300 ms after their end): before, while, or after they forget the round's runs.
        let passes = rng.random_range(3..25);
        for _ in 0..passes {
            expiry_pass(&mut server).await;
        }
        server.child.kill().expect("SIGKILL");
        server.child.wait().unwrap();
        server = spawn_server_with(dir.path(), OPTIONS, LOG).await;
    }
    // Every run ended before now: a whole pass past now has forgotten them all.
    let now_us = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()).unwrap();
    while expiry_pass(&mut server).await.is_none_or(|before_us| before_us <= now_us) {}
    let client = connect(&server).await;
    for user in 0..users {
        assert_eq!(client.get_workflow(&format!("cart-{user}"), false).await.unwrap_err().code(), Some(comb_client::Code::NotFound), "run cart-{user} was not forgotten");
    }
    for user in 0..users {
        let run = client.invoke::<Value>("cart_add", &input(user)).id(format!("cart-{user}")).run().await.unwrap();
        assert!(!run.deduplicated, "{run:?}");
        assert_eq!(run.output.as_ref().and_then(|o| o.get("qty")), Some(&json!(2)), "cart-{user} ran anew, once: {run:?}");
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Waits for the server's next message of a pass of its expiry: the pass's cut-off when it
/// went through every partition.
async fn expiry_pass(server: &mut ServerProcess) -> Option<i64> {
    loop {
        let line = tokio::time::timeout(WAIT, server.messages.recv()).await.expect("no pass of the expiry within 60 s").expect("the server exited");
        let Some((_, fields)) = line.split_once("expiry pass ") else { continue };
        let field = |name: &str| fields.split(' ').find_map(|f| f.strip_prefix(name)).unwrap_or_else(|| panic!("no {name} in {line:?}"));
        return (field("complete=") == "true").then(|| field("before_us=").parse().unwrap());
    }
}

/// Runs `comb` with `args`: its exit code, standard output and standard error.
fn comb(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_comb")).args(args).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The CLI where a script meets it: an invoke cut by its time-out names the id it made,
/// which retries it at most once; bad arguments and unreadable files are exit code 2, never
/// a panic; an https address is refused; output into a closed pipe ends quietly.
fn cli_at_its_edges(addr: &str) {
    let input = r#"{"user": 900001, "item": 1, "qty": 1}"#;
    let (code, _, stderr) = comb(&["invoke", "--addr", addr, "--timeout", "0.000001", "cart_add", input]);
    assert_eq!(code, Some(5), "{stderr}");
    let id = stderr.split("--id ").nth(1).and_then(|rest| rest.split('`').next()).unwrap_or_else(|| panic!("no id in {stderr:?}")).to_owned();
    assert!(id.len() == 36 && !stderr.contains("panicked"), "{stderr}");
    // Whether or not the cut call reached the server, the run happens once.
    for _ in 0..2 {
        let (code, stdout, stderr) = comb(&["invoke", "--addr", addr, "--id", &id, "cart_add", input]);
        assert_eq!((code, stdout.trim()), (Some(0), r#"{"item":1,"qty":1,"user":900001}"#), "{stderr}");
    }
    let (code, stdout, _) = comb(&["invoke", "--addr", addr, "cart_add", input]);
    assert_eq!((code, stdout.trim()), (Some(0), r#"{"item":1,"qty":2,"user":900001}"#), "another run, with an id of its own");

    for args in [
        &["health", "--addr", addr, "--timeout", "0"][..],
        &["health", "--addr", addr, "--timeout", "inf"],
        &["health", "--addr", addr, "--timeout", "-1"],
        &["workflows", "--addr", addr, "--status", "done"],
        &["function", "register", "--addr", addr, "/nonexistent/function.json"],
        &["serve", "--apps", "nonexistent", "--data-dir", "/nonexistent/data"],
    ] {
        let (code, _, stderr) = comb(args);
        assert!(code == Some(2) && !stderr.contains("panicked"), "{args:?}: {code:?} {stderr}");
    }
    let https = addr.replace("http://", "https://");
    let (code, _, stderr) = comb(&["health", "--addr", &https]);
    assert!(code == Some(2) && stderr.contains("does not speak TLS") && stderr.contains("http://"), "{code:?} {stderr}");

    // Standard output closed before the command writes: it ends quietly, with 0.
    for args in [&["workflows", "--addr", addr, "--limit", "1000"][..], &["trace", "--addr", addr, "--format", "csv", "SELECT id FROM workflows LIMIT 1000"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_comb")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && stderr.is_empty(), "{args:?}: {:?} {stderr}", output.status);
    }
}

/// Runs `comb serve` on `data` at `addr` until it exits: its exit code (none if a signal
/// ended it) and what it wrote to standard error.
fn serve_until_exit(addr: &str, data: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_comb")).args(["serve", "--addr", addr, "--data-dir"]).arg(data).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A server that cannot start (here: its traces are of a later format) says why and exits
/// with its error's code, having closed what it had opened: exiting while the engine's
/// threads still ran aborted the process.
#[test]
fn a_server_that_cannot_start_says_why_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("data").join("traces");
    std::fs::create_dir_all(&traces).unwrap();
    std::fs::write(traces.join("format"), "2\n").unwrap();
    let (code, stderr) = serve_until_exit("127.0.0.1:0", &dir.path().join("data"));
    assert!(stderr.contains(&format!("error: the trace store {} has format version 2; this build reads version 1", traces.display())), "{stderr}");
    assert_eq!(code, Some(2), "the code of an input this build cannot use (a retry cannot help), not a signal's: {stderr}");
    assert_eq!(std::fs::read_to_string(traces.join("format")).unwrap(), "2\n");
}

/// The same when the address is taken: the server opened its data, could not listen, and
/// closes before it exits.
#[test]
fn a_server_that_cannot_listen_says_why_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = serve_until_exit(&addr, &dir.path().join("data"));
    assert!(stderr.contains("error: ") && stderr.contains(&addr), "{stderr}");
    assert_eq!(code, Some(2), "the code of an address it cannot use, not a signal's: {stderr}");
}
