//! `comb-bench backend`: closed-loop clients invoking functions in-process against the
//! backend, every write durable through the shared log.
//!
//! Workloads over `counters (id, n)` with `--rows` rows:
//! - `counter`: read a uniformly random row and increment it (one commit per transaction);
//! - `read`: read a uniformly random row (read-only: no commit);
//! - `counter-recorded`: `counter` with an invocation id and recording on, so the output is
//!   written in the same commit (the cost of recording).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use comb_backend::{Engine, EngineOptions, Function, Invocation};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

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
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// Directory in which to create the engine (a fresh subdirectory, removed afterwards);
    /// default: the system's temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
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
    cores: usize,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Rows inserted by one loading transaction.
const LOAD_ROWS_PER_TXN: i64 = 5_000;

fn us(nanos: u64) -> f64 {
    (nanos as f64 / 1_000.0 * 10.0).round() / 10.0
}

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
    anyhow::ensure!(args.clients >= 1 && args.seconds >= 1 && args.rows >= 1, "--clients, --seconds and --rows must be at least 1");
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new().prefix("comb-bench-backend-").tempdir_in(&parent)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let options = EngineOptions { partitions: args.partitions, ..EngineOptions::default() };
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

        let phase = Arc::new(AtomicU8::new(WARMUP));
        let clients: Vec<_> = (0..args.clients)
            .map(|client| {
                let (engine, phase) = (engine.clone(), Arc::clone(&phase));
                let (workload, rows) = (args.workload, args.rows as u64);
                tokio::spawn(async move {
                    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
                    let mut errors = 0u64;
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (client as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    let mut seq = 0u64;
                    loop {
                        let now = phase.load(Ordering::Relaxed);
                        if now == STOP {
                            break;
                        }
                        // xorshift64: uniform enough for choosing rows, and free of locks.
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let input = json!({ "id": rng % rows });
                        let invocation = match workload {
                            Workload::Counter => Invocation::new("bump", input),
                            Workload::Read => Invocation::new("read", input),
                            Workload::CounterRecorded => {
                                seq += 1;
                                Invocation::new("bump", input).id(format!("client-{client}"), seq.to_string()).record()
                            }
                        };
                        let start = Instant::now();
                        match engine.invoke(invocation).await {
                            Ok(_) if now == MEASURE => latencies.record(start.elapsed().as_nanos() as u64).expect("latency in bounds"),
                            Ok(_) => {}
                            Err(err) if err.is_retryable() => errors += 1,
                            Err(err) => return Err(err),
                        }
                    }
                    Ok::<_, comb_backend::Error>((latencies, errors))
                })
            })
            .collect();

        tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;
        let before = engine.log().stats();
        let started = Instant::now();
        phase.store(MEASURE, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        phase.store(STOP, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let after = engine.log().stats();

        let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut errors = 0;
        for client in clients {
            let (histogram, failed) = client.await??;
            latencies.add(&histogram)?;
            errors += failed;
        }
        engine.close().await?;
        let txns = latencies.len();
        let commits = (after.group_commits - before.group_commits).max(1);
        Ok(BackendReport {
            bench: "backend",
            workload: args.workload,
            partitions: args.partitions,
            clients: args.clients,
            rows: args.rows,
            seconds: (elapsed * 100.0).round() / 100.0,
            txns,
            errors,
            txn_per_sec: (txns as f64 / elapsed).round(),
            latency_us_p50: us(latencies.value_at_quantile(0.50)),
            latency_us_p99: us(latencies.value_at_quantile(0.99)),
            latency_us_max: us(latencies.max()),
            records_per_fsync: ((after.records - before.records) as f64 / commits as f64 * 10.0).round() / 10.0,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    })
}
