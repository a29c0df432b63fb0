//! `comb-bench workload`: workflows end to end, through the client library over gRPC on
//! loopback, against a server this process starts (the stock example applications).
//!
//! `counter`: every run adds one to a uniformly chosen counter, as one transaction (one
//! commit, the run's row included). The check: the counters' sum equals the runs that
//! completed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Args, ValueEnum};
use comb_client::{Client, SqlFunction, SqlStatement};
use comb_frontend::{Server, ServerOptions};
use serde::Serialize;
use serde_json::{Value, json};

use crate::disk::fdatasync_latencies;
use comb_log::LogStats;

use crate::driver::{Failure, Measured, Window, closed_loop, cores, spread, us};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Workload {
    Counter,
}

#[derive(Debug, Args)]
pub(crate) struct WorkloadArgs {
    /// The workload.
    #[arg(value_enum)]
    workload: Workload,
    #[command(flatten)]
    counter: CounterArgs,
    #[command(flatten)]
    window: Window,
}

/// The load and the server of a counter run, as options.
#[derive(Debug, Args)]
pub(crate) struct CounterArgs {
    /// Concurrent clients, each waiting for its run before the next.
    #[arg(long, default_value_t = 64)]
    pub(crate) clients: usize,
    /// HTTP/2 connections the clients share (round robin).
    #[arg(long, default_value_t = 4)]
    pub(crate) connections: usize,
    /// Counters (keys) the runs spread over.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) keys: u64,
    /// Partitions of the server.
    #[arg(long, default_value_t = 2)]
    pub(crate) partitions: u16,
}

impl CounterArgs {
    /// The load, checked.
    pub(crate) fn load(&self, window: &Window) -> anyhow::Result<CounterLoad> {
        anyhow::ensure!(self.clients >= 1 && self.connections >= 1 && self.keys >= 1, "--clients, --connections and --keys must be at least 1");
        Ok(CounterLoad { clients: self.clients, connections: self.connections, keys: self.keys, warmup: window.warmup(), measure: window.measure() })
    }

    /// The server's options.
    pub(crate) fn options(&self) -> ServerOptions {
        let mut options = ServerOptions::default();
        options.engine.partitions = self.partitions;
        options
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct WorkloadReport {
    bench: &'static str,
    workload: Workload,
    clients: usize,
    connections: usize,
    partitions: u16,
    seconds: f64,
    ops: u64,
    errors: u64,
    ops_per_sec: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
    records_per_fsync: f64,
    check: String,
    fsync_us_p50: f64,
    cores: usize,
}

pub(crate) fn ms(us: f64) -> f64 {
    (us / 10.0).round() / 100.0
}

/// One counter run against a server started here: what it measured and its check.
pub(crate) struct CounterRun {
    pub(crate) measured: Measured<LogStats>,
    /// `ok: ...` or `FAILED: ...`.
    pub(crate) check: String,
}

/// The load of a counter run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CounterLoad {
    pub(crate) clients: usize,
    pub(crate) connections: usize,
    pub(crate) keys: u64,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// Starts a server with the counter application over `data_dir`, runs the load through the
/// client library, checks the counters' sum (and, with tracing on, that every run is in the
/// traces), and closes the server.
pub(crate) async fn counter(data_dir: &std::path::Path, options: ServerOptions, load: CounterLoad) -> anyhow::Result<CounterRun> {
    let tracing = options.tracing.enabled;
    let server = comb_examples::counter::APP.install(Server::builder().data_dir(data_dir).options(options)).build().await?;
    let listening = server.listen("127.0.0.1:0".parse()?).await?;
    let addr = format!("http://{}", listening.local_addr());
    let mut clients = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        clients.push(Client::builder(addr.clone()).timeout(Duration::from_secs(60)).connect().await?);
    }
    let clients = Arc::new(clients);
    let completed = Arc::new(AtomicU64::new(0));
    let keys = load.keys;
    let invoke = {
        let (clients, completed) = (Arc::clone(&clients), Arc::clone(&completed));
        move |client: usize, seq: u64| {
            let (clients, completed) = (Arc::clone(&clients), Arc::clone(&completed));
            async move {
                let id = spread(client, seq) % keys;
                let connection = &clients[client % clients.len()];
                let result = connection.invoke::<Value>("counter", &json!({ "id": id })).await;
                Failure::of(result.map(|_| completed.fetch_add(1, Ordering::Relaxed)), comb_client::Error::is_retryable)
            }
        }
    };
    let log = server.engine().log().clone();
    let measured = closed_loop(load.clients, load.warmup, load.measure, || log.stats(), invoke).await?;

    // The check: every completed run added exactly one.
    let sum = SqlFunction {
        name: "bench_counter_sum".into(),
        statements: vec![SqlStatement { name: "sum".into(), sql: "SELECT count(*) AS counters, sum(n) AS total FROM counters".into(), params: vec![] }],
        partition_by: None,
    };
    clients[0].register_function(&sum).await?;
    clients[0].register_workflow(r#"{"name": "bench_counter_sum", "steps": [{"id": "sum", "function": "bench_counter_sum"}], "output": "$sum.0"}"#).await?;
    let totals: Value = clients[0].invoke("bench_counter_sum", &Value::Null).await?;
    let total = totals["total"].as_u64().unwrap_or(0);
    let runs = completed.load(Ordering::Relaxed);
    let mut check = if total == runs { format!("ok: the counters sum to {total}, the runs completed") } else { format!("FAILED: the counters sum to {total}, but {runs} runs completed") };
    if tracing {
        let traced = clients[0].query_traces("SELECT count(*) FROM workflows WHERE name = 'counter'", true).await?;
        let rows = traced.rows.first().and_then(|r| r.first()).and_then(Value::as_u64).unwrap_or(0);
        check = if rows == runs { format!("{check}; every run traced") } else { format!("FAILED: {runs} runs completed, {rows} traced") };
    }
    listening.shutdown().await?;
    server.close().await?;
    anyhow::ensure!(check.starts_with("ok"), "{check}");
    Ok(CounterRun { measured, check })
}

pub(crate) fn run(args: &WorkloadArgs) -> anyhow::Result<WorkloadReport> {
    let load = args.counter.load(&args.window)?;
    let dir = args.window.data_dir("comb-bench-workload-")?;
    let fsync = fdatasync_latencies(dir.path(), 256, 500)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let CounterRun { measured: m, check } = runtime.block_on(counter(&dir.path().join("data"), args.counter.options(), load))?;
    Ok(WorkloadReport {
        bench: "workload",
        workload: args.workload,
        clients: args.counter.clients,
        connections: args.counter.connections,
        partitions: args.counter.partitions,
        seconds: m.seconds_rounded(),
        ops: m.latencies.len(),
        errors: m.errors,
        ops_per_sec: m.per_sec(),
        latency_ms_p50: ms(m.us(0.50)),
        latency_ms_p99: ms(m.us(0.99)),
        latency_ms_max: ms(m.us_max()),
        records_per_fsync: m.records_per_fsync(),
        check,
        fsync_us_p50: us(fsync.value_at_quantile(0.50)),
        cores: cores(),
    })
}
