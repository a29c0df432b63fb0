//! Overload: ten times more clients than the server admits runs. The calls beyond the limit
//! are refused at once with a retryable `RESOURCE_EXHAUSTED` that names the limit; runs in
//! progress never exceed it; nothing refused takes effect; and once the load drops every
//! call succeeds, a refused run's id included.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use comb_backend::{EngineOptions, Function};
use comb_client::{Client, Code};
use comb_frontend::{Server, ServerOptions};
use serde_json::{Value, json};

/// The runs the server has said overload interrupted (its warning, one entry each time),
/// gathered by a layer on the process's tracing: what a test waits on to know a run was
/// interrupted and paused.
fn interruptions() -> tokio::sync::watch::Receiver<Vec<String>> {
    static RUNS: OnceLock<tokio::sync::watch::Sender<Vec<String>>> = OnceLock::new();
    RUNS.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        let (runs, _) = tokio::sync::watch::channel(Vec::new());
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Interruptions(runs.clone()))).expect("no other subscriber in this test binary");
        runs
    })
    .subscribe()
}

struct Interruptions(tokio::sync::watch::Sender<Vec<String>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Interruptions {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            overload: bool,
            run: Option<String>,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.overload = format!("{value:?}").contains("interrupted by overload"),
                    "workflow_id" => self.run = Some(format!("{value:?}")),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let (true, Some(run)) = (fields.overload, fields.run) {
            self.0.send_modify(|runs| runs.push(run));
        }
    }
}

/// Runs admitted at once.
const LIMIT: usize = 8;
/// Ten times the limit.
const CLIENTS: usize = 10 * LIMIT;
/// Calls each client makes under overload.
const CALLS: usize = 20;
/// Counters the calls spread over.
const KEYS: i64 = 4;

/// Longest a run's body waits at the gate; past it, the runs go on (and the test finds that
/// nothing was refused).
const GATE_WAIT_MAX: Duration = Duration::from_secs(10);

/// Closed until the first refusal; bodies wait at it on their executor threads.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let closed = self.open.lock().unwrap();
        drop(self.opened.wait_timeout_while(closed, GATE_WAIT_MAX, |open| !*open).unwrap());
    }
}

const COUNTERS: &str = "CREATE TABLE IF NOT EXISTS counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)";

/// A function that adds one to counter `id`, calling `first` before it does.
fn add_one(name: &str, first: impl Fn() + Send + Sync + 'static) -> Function {
    Function::new(name)
        .statement("add", "INSERT INTO counters (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = counters.n + 1 RETURNING n")
        .partition_by("id")
        .run(move |tx, input| {
            first();
            let n: i64 = tx.query_one("add", (input["id"].as_i64(),))?;
            Ok(json!({ "n": n }))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_admitted_load_is_refused_retryably_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions { engine: EngineOptions { partitions: 2, ..EngineOptions::default() }, workflows_in_flight_max: LIMIT, ..ServerOptions::default() };
    // The runs admitted first hold their partitions until a call has been refused: runs pile
    // up to the limit, whatever the machine's speed.
    let gate = Arc::new(Gate::default());
    let held = Arc::clone(&gate);
    let slow = add_one("slow_add", move || held.pass());
    let server = Server::builder()
        .data_dir(dir.path())
        .options(options)
        .schema(COUNTERS)
        .function(slow)
        .function(Function::new("sum").statement("sum", "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM counters").run(|tx, _| Ok(json!(tx.query_one::<i64>("sum", ())?))))
        .workflow(r#"{"name": "add", "steps": [{"id": "add", "function": "slow_add", "input": "$input"}], "output": "$add"}"#)
        .workflow(r#"{"name": "sum", "steps": [{"id": "sum", "function": "sum", "input": "$input"}], "output": "$sum"}"#)
        .build()
        .await
        .unwrap();
    let listening = server.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = Client::connect(format!("http://{}", listening.local_addr())).await.unwrap();

    // Runs in progress, sampled through Health while the load lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut most = 0;
            while !stop.load(Ordering::Acquire) {
                most = most.max(client.health().await.unwrap().workflows_in_flight);
            }
            most
        })
    };
    let (succeeded, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (client, succeeded, refused, gate) = (client.clone(), Arc::clone(&succeeded), Arc::clone(&refused), Arc::clone(&gate));
        clients.push(tokio::spawn(async move {
            let mut refused_ids = Vec::new();
            for i in 0..CALLS {
                let id = format!("load-{c}-{i}");
                match client.invoke::<Value>("add", &json!({ "id": (c as i64) % KEYS })).id(id.clone()).await {
                    Ok(_) => _ = succeeded.fetch_add(1, Ordering::Relaxed),
                    Err(err) => {
                        assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}");
                        assert!(err.is_retryable(), "{err}");
                        assert!(err.to_string().contains("workflows-in-flight-max"), "{err}");
                        refused.fetch_add(1, Ordering::Relaxed);
                        gate.open();
                        refused_ids.push(id);
                    }
                }
            }
            refused_ids
        }));
    }
    let mut refused_ids = Vec::new();
    for c in clients {
        refused_ids.extend(c.await.unwrap());
    }
    stop.store(true, Ordering::Release);
    let most_in_flight = sampler.await.unwrap();
    let (succeeded, refused) = (succeeded.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    assert_eq!(succeeded + refused, (CLIENTS * CALLS) as u64);
    assert!(refused > 0, "{CLIENTS} clients against a limit of {LIMIT}: none refused");
    assert!(succeeded > 0, "nothing admitted");
    assert!(most_in_flight <= LIMIT as u64, "{most_in_flight} runs in progress, over the limit of {LIMIT}");
    // Nothing refused took effect.
    let sum: i64 = client.invoke("sum", &json!({})).await.unwrap();
    assert_eq!(sum, succeeded as i64, "{succeeded} runs admitted");

    // The load drops: every call succeeds, the refused runs' ids included, each once.
    let retried = &refused_ids[..refused_ids.len().min(50)];
    for id in retried {
        let run = client.invoke::<Value>("add", &json!({ "id": 0 })).id(id.clone()).run().await.unwrap();
        assert!(!run.deduplicated, "refused run {id} had been started");
    }
    for id in retried {
        let run = client.invoke::<Value>("add", &json!({ "id": 0 })).id(id.clone()).run().await.unwrap();
        assert!(run.deduplicated, "run {id} ran a second time");
    }
    let sum: i64 = client.invoke("sum", &json!({})).await.unwrap();
    assert_eq!(sum, succeeded as i64 + retried.len() as i64);
    assert_eq!(client.health().await.unwrap().workflows_in_flight, 0);
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}

/// A run whose step is refused for overload beyond `step-retries-max` is not left started
/// with nothing to finish it: it pauses and resumes on its own task, and its waiters get its
/// end. Its step that writes runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interrupted_by_overload_resumes_on_its_own() {
    let mut interrupted = interruptions();
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineOptions { partitions: 2, queue_invocations_max: 1, ..EngineOptions::default() };
    let options = ServerOptions { engine, step_retries_max: 0, ..ServerOptions::default() };
    let gate = Arc::new(Gate::default());
    let (entered, passes, adds) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let hold = {
        let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
        Function::new("hold").partition_by("id").run(move |_, _| {
            entered.fetch_add(1, Ordering::SeqCst);
            gate.pass();
            Ok(json!(null))
        })
    };
    // Read-only, and read only by `add`: not recorded, so it runs again at each resumption
    // that finds no recorded output of `add`.
    let pass = {
        let passes = Arc::clone(&passes);
        Function::new("pass").statement("get", "SELECT n FROM counters WHERE id = $1").partition_by("id").run(move |tx, input| {
            passes.fetch_add(1, Ordering::SeqCst);
            let _: Option<i64> = tx.query_opt("get", (input["id"].as_i64(),))?;
            Ok(json!({ "id": input["to"] }))
        })
    };
    let add = {
        let adds = Arc::clone(&adds);
        add_one("add", move || _ = adds.fetch_add(1, Ordering::SeqCst))
    };
    let server = Server::builder()
        .data_dir(dir.path())
        .options(options)
        .schema(COUNTERS)
        .function(hold)
        .function(pass)
        .function(add)
        .function(Function::new("noop").partition_by("id").run(|_, _| Ok(json!(null))))
        .workflow(r#"{"name": "hold", "steps": [{"id": "hold", "function": "hold", "input": "$input"}], "output": "$hold"}"#)
        .workflow(r#"{"name": "noop", "steps": [{"id": "noop", "function": "noop", "input": "$input"}], "output": "$noop"}"#)
        .workflow(
            r#"{"name": "pass_add", "steps": [
                 {"id": "pass", "function": "pass", "input": "$input"},
                 {"id": "add", "function": "add", "input": "$pass"}
               ], "output": "$add"}"#,
        )
        .build()
        .await
        .unwrap();
    let key_in = |p: u16| (1..).find(|k| server.engine().partition_of(&comb_planner::Value::Int(*k)) == p).unwrap();
    let (free, held) = (key_in(0), key_in(1));
    let listening = server.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", listening.local_addr());
    let client = Client::connect(url.clone()).await.unwrap();

    // Partition 1's executor waits at the gate, and its queue fills: a call is refused, or
    // passes its time-out waiting there (and so fills it).
    let holding = {
        let client = client.clone();
        tokio::spawn(async move { client.invoke::<Value>("hold", &json!({ "id": held })).await })
    };
    while entered.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let impatient = Client::builder(url).timeout(Duration::from_millis(300)).connect().await.unwrap();
    loop {
        match impatient.invoke::<Value>("noop", &json!({ "id": held })).await {
            Err(err) if err.code() == Some(Code::ResourceExhausted) => break,
            Err(err) => assert_eq!(err.code(), Some(Code::DeadlineExceeded), "{err}"),
            Ok(_) => panic!("a call reached partition 1 while its executor was held"),
        }
    }

    // The run starts on its id's partition; a start whose id falls in the full partition is
    // refused, and another id is tried.
    let run = loop {
        match client.start("pass_add", &json!({ "id": free, "to": held }), None).await {
            Ok(run) => break run,
            Err(err) => assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}"),
        }
    };
    // Its step `add` is refused (no retries): the run is interrupted. Its resumptions look
    // up `add`'s recorded output in every partition first, which partition 1 refuses while
    // held: they are interrupted in turn, pause and try again, running nothing.
    let twice = |runs: &Vec<String>| runs.iter().filter(|id| **id == run.id).count() >= 2;
    tokio::time::timeout(Duration::from_secs(10), interrupted.wait_for(twice)).await.expect("the run was not interrupted twice").unwrap();
    assert_eq!((passes.load(Ordering::SeqCst), adds.load(Ordering::SeqCst)), (1, 0), "a step ran while partition 1 refused the run's calls");
    gate.open();
    holding.await.unwrap().unwrap();

    // Free again: a resumption finds no output of `add`, runs `pass` again, then `add`.
    let ended = client.get_workflow(&run.id, true).await.unwrap();
    assert_eq!(ended.status, comb_client::RunStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({ "n": 1 })));
    assert!(passes.load(Ordering::SeqCst) >= 2, "the run resumed on its own, its read again");
    assert_eq!(adds.load(Ordering::SeqCst), 1, "the step that writes ran once");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.health().await.unwrap().workflows_in_flight != 0 {
        assert!(std::time::Instant::now() < deadline, "the run's slot is given back");
        tokio::task::yield_now().await;
    }
    listening.shutdown().await.unwrap();
    server.close().await.unwrap();
}
