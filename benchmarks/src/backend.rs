//! `comb-bench backend`: closed-loop clients invoking functions in-process against the
//! backend, every write durable through the shared log.
//!
//! Workloads over `counters (id, n)` with `--rows` rows:
//! - `counter`: read a uniformly random row and increment it (one commit per transaction);
//! - `read`: read a uniformly random row (read-only: no commit);
//! - `counter-recorded`: `counter` with an invocation id and recording on, so the output is
//!   written in the same commit (the cost of recording).


use clap::{Args, ValueEnum};
use comb_backend::{Engine, EngineOptions, Function, Invocation};
use serde::Serialize;
use serde_json::json;

use crate::disk::commit_fsync_us_p50;
use crate::driver::{Failure, Window, closed_loop, cores, spread};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Workload {
    Counter,
    Read,
    CounterRecorded,
}

#[derive(Debug, Args)]
pub(crate) struct BackendArgs {
    /// What each transaction does.
    #[arg(long, value_enum, default_value_t = Workload::Counter)]
    workload: Workload,
    /// Partitions (executor threads).
    #[arg(long, default_value_t = 2)]
    partitions: u16,
    /// Concurrent clients, each waiting for its transaction before the next.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Rows of the counters table.
    #[arg(long, default_value_t = 100_000)]
    rows: i64,
    /// The log's `writer-spin-us` (default: the log's default).
    #[arg(long)]
    writer_spin_us: Option<u64>,
    /// The log's `overlap-syncs`: whether its writer writes the next group while the last
    /// one syncs (`true` or `false`; default: the log's default).
    #[arg(long)]
    overlap_syncs: Option<bool>,
    /// The engine's `writeback-bytes` per partition (default: the engine's default).
    #[arg(long)]
    writeback_bytes: Option<usize>,
    /// The engine's `writeback-interval-ms` (default: the engine's default).
    #[arg(long)]
    writeback_interval_ms: Option<u64>,
    #[command(flatten)]
    window: Window,
}

#[derive(Debug, Serialize)]
pub(crate) struct BackendReport {
    bench: &'static str,
    workload: Workload,
    partitions: u16,
    clients: usize,
    rows: i64,
    seconds: f64,
    txns: u64,
    errors: u64,
    txn_per_sec: f64,
    latency_us_p50: f64,
    latency_us_p99: f64,
    latency_us_max: f64,
    records_per_fsync: f64,
    /// CPU time of the whole process (clients and engine) per transaction in the window.
    cpu_us_per_txn: f64,
    /// A bare write+fdatasync of a commit record's size on the same disk, in the same run.
    fsync_us_p50: f64,
    cores: usize,
}

/// Rows inserted by one loading transaction.
const LOAD_ROWS_PER_TXN: i64 = 5_000;

fn functions() -> Vec<Function> {
    let id = |input: &serde_json::Value| input["id"].as_i64().unwrap_or_default();
    vec![
        Function::new("load").statement("put", "INSERT INTO counters (id, n) VALUES ($1, 0)").run(|tx, input| {
            let (from, to) = (input["from"].as_i64().unwrap_or_default(), input["to"].as_i64().unwrap_or_default());
            for i in from..to {
                tx.execute("put", (i,))?;
            }
            Ok(serde_json::Value::Null)
        }),
        Function::new("bump")
            .statement("get", "SELECT n FROM counters WHERE id = $1")
            .statement("set", "UPDATE counters SET n = $2 WHERE id = $1")
            .partition_by("id")
            .run(move |tx, input| {
                let id = id(&input);
                let n: i64 = tx.query_one("get", (id,))?;
                tx.execute("set", (id, n + 1))?;
                Ok(json!(n + 1))
            }),
        Function::new("read").statement("get", "SELECT n FROM counters WHERE id = $1").partition_by("id").run(move |tx, input| {
            Ok(json!(tx.query_one::<i64>("get", (id(&input),))?))
        }),
    ]
}

pub(crate) fn run(args: &BackendArgs) -> anyhow::Result<BackendReport> {
    anyhow::ensure!(args.clients >= 1 && args.rows >= 1, "--clients and --rows must be at least 1");
    let dir = args.window.data_dir("comb-bench-backend-")?;
    let fsync_us_p50 = commit_fsync_us_p50(dir.path())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut options = EngineOptions { partitions: args.partitions, ..EngineOptions::default() };
        if let Some(spin) = args.writer_spin_us {
            options.log.writer_spin_us = spin;
        }
        if let Some(overlap) = args.overlap_syncs {
            options.log.overlap_syncs = overlap;
        }
        options.writeback_bytes = args.writeback_bytes.unwrap_or(options.writeback_bytes);
        options.writeback_interval_ms = args.writeback_interval_ms.unwrap_or(options.writeback_interval_ms);
        let engine = Engine::open(dir.path(), options).await?;
        engine.execute_ddl("CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)").await?;
        for f in functions() {
            engine.register(f)?;
        }
        let mut from = 0;
        while from < args.rows {
            let to = (from + LOAD_ROWS_PER_TXN).min(args.rows);
            engine.invoke(Invocation::new("load", json!({ "from": from, "to": to }))).await?;
            from = to;
        }
        engine.checkpoint().await?;

        let (workload, rows) = (args.workload, args.rows as u64);
        let invoke = {
            let engine = engine.clone();
            move |client: usize, seq: u64| {
                let engine = engine.clone();
                async move {
                    let input = json!({ "id": spread(client, seq) % rows });
                    let invocation = match workload {
                        Workload::Counter => Invocation::new("bump", input),
                        Workload::Read => Invocation::new("read", input),
                        Workload::CounterRecorded => Invocation::new("bump", input).id(format!("client-{client}"), seq.to_string()).record(),
                    };
                    Failure::of(engine.invoke(invocation).await, comb_backend::Error::is_retryable).map(|()| "transaction")
                }
            }
        };
        let log = engine.log().clone();
        let m = closed_loop("backend", args.clients, args.window.warmup(), args.window.measure(), || log.stats(), invoke).await?;
        engine.close().await?;
        Ok(BackendReport {
            bench: "backend",
            workload: args.workload,
            partitions: args.partitions,
            clients: args.clients,
            rows: args.rows,
            seconds: m.seconds_rounded(),
            txns: m.latencies.len(),
            errors: m.errors,
            txn_per_sec: m.per_sec(),
            latency_us_p50: m.us(0.50),
            latency_us_p99: m.us(0.99),
            latency_us_max: m.us_max(),
            records_per_fsync: m.records_per_fsync(),
            cpu_us_per_txn: m.cpu_us_per_op(),
            fsync_us_p50,
            cores: cores(),
        })
    })
}
