//! `comb-bench workload NAME`: one of Apiary's workloads end to end, closed-loop clients
//! against Comb (through the client library over gRPC, against a server this process starts
//! or one given with `--server`) or against the PostgreSQL baseline (`--baseline postgres`).
//! The data is loaded first, then a warm-up and a measured window run the workload's mix,
//! then its correctness check (see `apps.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use comb_frontend::ServerOptions;
use comb_backend::SlowSteps;
use comb_log::LogStats;
use serde::Serialize;

use crate::apps::{Mix, Outcome, Sizes, Tally, Workload, check};
use crate::comb::Comb;
use crate::disk::commit_fsync_us_p50;
use crate::driver::{Failure, Measured, Window, closed_loop, cores, peak_rss_mib, records_per_fsync, us};
use crate::postgres::{self, Postgres};

/// The systems measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Baseline {
    /// Functions calling PostgreSQL, recording their workflows in it.
    Postgres,
}

#[derive(Debug, Args)]
pub(crate) struct WorkloadArgs {
    /// The workload.
    #[arg(value_enum)]
    workload: Workload,
    /// Concurrent clients, each waiting for its operation before the next.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    window: Window,
}

/// What a workload runs against, and its data's size.
#[derive(Debug, Args)]
pub(crate) struct TargetArgs {
    /// HTTP/2 connections the clients share, round robin (Comb).
    #[arg(long, default_value_t = 4)]
    pub(crate) connections: usize,
    /// Partitions of the Comb server this process starts.
    #[arg(long, default_value_t = 2)]
    pub(crate) partitions: u16,
    /// Most runs the Comb server this process starts admits at once (its
    /// workflows-in-flight-max); calls beyond it are refused as retryable and counted in
    /// `errors`. Default: the server's.
    #[arg(long)]
    pub(crate) workflows_in_flight_max: Option<usize>,
    /// How often the Comb server this process starts checkpoints, in milliseconds (its
    /// checkpoint-interval). Default: the server's.
    #[arg(long)]
    pub(crate) checkpoint_interval_ms: Option<u64>,
    /// The time slice, in microseconds, that the log's threads of the Comb server this process
    /// starts ask for (its log's writer-slice-us; 0: the kernel's default). Default: the
    /// server's (0).
    #[arg(long)]
    pub(crate) writer_slice_us: Option<u64>,
    /// How long, in microseconds, the log's writer of the Comb server this process starts
    /// spins for the next append after a group of one or two (its log's writer-spin-us; 0:
    /// it sleeps at once). Default: the server's.
    #[arg(long)]
    pub(crate) writer_spin_us: Option<u64>,
    /// The data's size: 1.0 is Apiary's (100,000 counters; 100 hotels x 10 rooms x 30
    /// dates; 100,000 items; 10,000 users x 50 followees, 100,000 posts).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) scale: f64,
    /// A running Comb server (`host:port`, or `http://host:port`) that serves the workload's
    /// example application (`comb serve --apps NAME`); default: start one in this process.
    #[arg(long, conflicts_with = "baseline")]
    pub(crate) server: Option<String>,
    /// Measure a baseline instead of Comb.
    #[arg(long, value_enum)]
    pub(crate) baseline: Option<Baseline>,
    /// The baseline's PostgreSQL server (its tables are dropped and created afresh).
    #[arg(long, env = "COMB_BENCH_POSTGRES", default_value = postgres::DEFAULT_URL)]
    pub(crate) postgres: String,
}

impl TargetArgs {
    /// The options of a Comb server started here.
    pub(crate) fn options(&self) -> ServerOptions {
        let mut options = ServerOptions::default();
        options.engine.partitions = self.partitions;
        if let Some(limit) = self.workflows_in_flight_max {
            options.workflows_in_flight_max = limit;
        }
        if let Some(ms) = self.checkpoint_interval_ms {
            options.checkpoint_interval = Duration::from_millis(ms);
        }
        if let Some(us) = self.writer_slice_us {
            options.engine.log.writer_slice_us = us;
        }
        if let Some(us) = self.writer_spin_us {
            options.engine.log.writer_spin_us = us;
        }
        options
    }

    /// Opens the system measured, for up to `clients` clients, with the workload's data
    /// loaded; a Comb server started here keeps its data under `dir`.
    pub(crate) async fn open(&self, workload: Workload, sizes: &Sizes, dir: &Path, clients: usize) -> anyhow::Result<Target> {
        Ok(match (self.baseline, &self.server) {
            (Some(Baseline::Postgres), _) => Target::Postgres(Postgres::setup(&self.postgres, clients, workload, sizes).await?),
            (None, Some(addr)) => {
                let comb = Comb::connect(addr, self.connections).await?;
                comb.load(workload, sizes).await?;
                Target::Comb(comb)
            }
            (None, None) => {
                let comb = Comb::start(dir, self.options(), workload, self.connections).await?;
                comb.load(workload, sizes).await?;
                comb.settle().await?;
                Target::Comb(comb)
            }
        })
    }
}

/// A system under load.
pub(crate) enum Target {
    Comb(Comb),
    Postgres(Postgres),
}

impl Target {
    /// Its name in reports.
    pub(crate) fn system(&self) -> &'static str {
        match self {
            Target::Comb(_) => "comb",
            Target::Postgres(_) => "postgres",
        }
    }

    async fn run(&self, client: usize, op: &crate::apps::Op) -> Result<Outcome, Failure> {
        match self {
            Target::Comb(comb) => comb.run(client, op).await,
            Target::Postgres(pg) => pg.run(client, op).await,
        }
    }

    async fn answers(&self, workload: Workload, sizes: &Sizes) -> anyhow::Result<crate::apps::Answers> {
        match self {
            Target::Comb(comb) => comb.answers(workload, sizes).await,
            Target::Postgres(pg) => pg.answers(workload, sizes).await,
        }
    }

    fn server_stats(&self) -> Option<(LogStats, SlowSteps)> {
        match self {
            Target::Comb(comb) => comb.server_stats(),
            Target::Postgres(_) => None,
        }
    }

    /// Closes it (a Comb server started here is shut down).
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        match self {
            Target::Comb(comb) => comb.close().await,
            Target::Postgres(_) => Ok(()),
        }
    }
}

/// One measured run, as printed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkloadReport {
    pub(crate) bench: &'static str,
    pub(crate) workload: Workload,
    pub(crate) system: &'static str,
    pub(crate) clients: usize,
    pub(crate) scale: f64,
    pub(crate) seconds: f64,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) ops_per_sec: f64,
    pub(crate) latency_ms_p50: f64,
    pub(crate) latency_ms_p99: f64,
    pub(crate) latency_ms_max: f64,
    /// Count and latencies of each operation of a mix (workloads of more than one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) by_operation: Option<BTreeMap<&'static str, OperationReport>>,
    /// Log records per group commit, when the Comb server runs in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) records_per_fsync: Option<f64>,
    /// The storage calls of the log's write path during the window (a group's write or
    /// sync, a trim) that took at least 1, 10 and 100 ms, when the Comb server runs in this
    /// process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log_slow_io: Option<SlowIo>,
    /// The partitions' executors' steps during the window that held their queue 10 and 100
    /// ms or more (an invocation, a durability report, a barrier, a checkpoint's chunk), when
    /// the Comb server runs in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) executor_slow_steps: Option<SlowStepsReport>,
    /// The most a task ticking every 5 ms on the runtime of the clients (and of a server in
    /// this process) woke late during the window: a stall of the whole runtime.
    pub(crate) runtime_late_ms_max: f64,
    /// `ok: ...` or `FAILED: ...`.
    pub(crate) check: String,
    pub(crate) fsync_us_p50: f64,
    pub(crate) cores: usize,
    /// The process's peak resident memory (clients, and the server when it runs here).
    pub(crate) peak_rss_mib: Option<f64>,
    /// CPU time per operation of this process (clients, and the server when it runs here),
    /// in microseconds.
    pub(crate) cpu_us_per_op: f64,
    /// CPU time per operation of the whole machine (every process: a separate server's, the
    /// baseline's PostgreSQL's), in microseconds: what an operation costs, to compare systems.
    pub(crate) machine_cpu_us_per_op: f64,
    /// The share of all the cores' time that was busy during the window: near 1, the rate is
    /// bound by CPU; well below, by waits.
    pub(crate) machine_busy: f64,
    /// Which of `compare --rounds` measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) round: Option<usize>,
}

/// The log's slow storage calls in a window: see [`WorkloadReport::log_slow_io`].
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct SlowIo {
    pub(crate) over_1ms: u64,
    pub(crate) over_10ms: u64,
    pub(crate) over_100ms: u64,
}

impl SlowIo {
    /// Counters of one log, sampled twice.
    fn between(before: &LogStats, after: &LogStats) -> SlowIo {
        SlowIo {
            over_1ms: after.io_over_1ms.saturating_sub(before.io_over_1ms),
            over_10ms: after.io_over_10ms.saturating_sub(before.io_over_10ms),
            over_100ms: after.io_over_100ms.saturating_sub(before.io_over_100ms),
        }
    }
}

/// The executors' slow steps in a window: see [`WorkloadReport::executor_slow_steps`].
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct SlowStepsReport {
    pub(crate) over_10ms: u64,
    pub(crate) over_100ms: u64,
}

impl SlowStepsReport {
    /// Counters of one engine, sampled twice.
    fn between(before: &SlowSteps, after: &SlowSteps) -> SlowStepsReport {
        SlowStepsReport { over_10ms: after.over_10ms.saturating_sub(before.over_10ms), over_100ms: after.over_100ms.saturating_sub(before.over_100ms) }
    }
}

/// One operation of a mix in a run's report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OperationReport {
    pub(crate) ops: u64,
    pub(crate) latency_ms_p50: f64,
    pub(crate) latency_ms_p99: f64,
}

pub(crate) fn ms(us: f64) -> f64 {
    (us / 10.0).round() / 100.0
}

/// What a measured run saw and what its check found.
pub(crate) struct Measurement {
    /// Sampled at the window's start and end: the server's counters (when it runs in this
    /// process), and the most the [`Watchdog`]'s ticks came late since the last sample.
    pub(crate) measured: Measured<(Option<(LogStats, SlowSteps)>, u64)>,
    /// `ok: ...` or `FAILED: ...`.
    pub(crate) check: String,
    /// The outcomes of the run's operations, warm-up included.
    pub(crate) tally: Arc<Tally>,
    /// This process's peak resident memory after the run, in MiB.
    pub(crate) peak_rss_mib: Option<f64>,
}

/// Runs the workload's mix with `clients` clients against `target` (loaded), then checks
/// the data against what the operations reported.
pub(crate) async fn measure(target: &Arc<Target>, workload: Workload, sizes: &Sizes, clients: usize, window: &Window) -> anyhow::Result<Measurement> {
    let before = target.answers(workload, sizes).await?;
    let tally = Arc::new(Tally::default());
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
    let mix = Mix { workload, sizes: *sizes, nonce };
    let operation = {
        let (target, tally) = (Arc::clone(target), Arc::clone(&tally));
        move |client: usize, seq: u64| {
            let (target, tally) = (Arc::clone(&target), Arc::clone(&tally));
            async move {
                let op = mix.op(client, seq);
                let outcome = target.run(client, &op).await?;
                tally.record(outcome);
                Ok(op.name())
            }
        }
    };
    let label = format!("{} {}", target.system(), workload.name());
    let watchdog = Watchdog::start();
    let sample = || (target.server_stats(), watchdog.take_late_us_max());
    let measured = closed_loop(&label, clients, window.warmup(), window.measure(), sample, operation).await;
    watchdog.stop().await?;
    let measured = measured?;
    let after = target.answers(workload, sizes).await?;
    let check = check(workload, sizes, &before, &after, &tally);
    let peak_rss_mib = tokio::task::spawn_blocking(peak_rss_mib).await?;
    Ok(Measurement { measured, check, tally, peak_rss_mib })
}

/// How often the [`Watchdog`] ticks.
const WATCHDOG_TICK: Duration = Duration::from_millis(5);

/// A task that ticks every [`WATCHDOG_TICK`] on the runtime the clients (and a server in
/// this process) share, and keeps the most any tick came late: a stall of the whole runtime
/// (every worker held by a blocking call, or waiting for a CPU) shows there, where a long
/// latency of one operation alone does not say whose it was.
struct Watchdog {
    stop: Arc<AtomicBool>,
    late_us_max: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let (stop, late_us_max) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (stopped, late) = (Arc::clone(&stop), Arc::clone(&late_us_max));
        let task = tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                let start = Instant::now();
                tokio::time::sleep(WATCHDOG_TICK).await;
                let us = start.elapsed().saturating_sub(WATCHDOG_TICK).as_micros();
                late.fetch_max(u64::try_from(us).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
        });
        Watchdog { stop, late_us_max, task }
    }

    /// The most a tick came late since the last call, in microseconds.
    fn take_late_us_max(&self) -> u64 {
        self.late_us_max.swap(0, Ordering::Relaxed)
    }

    /// Stops the ticks (within one tick).
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// The report of a measured run.
pub(crate) fn report(target: &Target, workload: Workload, sizes: &Sizes, clients: usize, Measurement { measured: m, check, peak_rss_mib, .. }: Measurement, fsync_us_p50: f64) -> WorkloadReport {
    let ((before, _), (after, runtime_late_us_max)) = &m.samples;
    let (records_per_fsync, log_slow_io, executor_slow_steps) = match (before, after) {
        (Some((log_before, steps_before)), Some((log_after, steps_after))) => (
            Some(records_per_fsync(log_before, log_after)),
            Some(SlowIo::between(log_before, log_after)),
            Some(SlowStepsReport::between(steps_before, steps_after)),
        ),
        _ => (None, None, None),
    };
    let cores = cores();
    WorkloadReport {
        bench: "workload",
        workload,
        system: target.system(),
        clients,
        scale: sizes.scale,
        seconds: m.seconds_rounded(),
        ops: m.latencies.len(),
        errors: m.errors,
        ops_per_sec: m.per_sec(),
        latency_ms_p50: ms(m.us(0.50)),
        latency_ms_p99: ms(m.us(0.99)),
        latency_ms_max: ms(m.us_max()),
        by_operation: (m.by_kind.len() > 1).then(|| {
            let report = |h: &hdrhistogram::Histogram<u64>| OperationReport { ops: h.len(), latency_ms_p50: ms(us(h.value_at_quantile(0.50))), latency_ms_p99: ms(us(h.value_at_quantile(0.99))) };
            m.by_kind.iter().map(|(kind, h)| (*kind, report(h))).collect()
        }),
        records_per_fsync,
        log_slow_io,
        executor_slow_steps,
        runtime_late_ms_max: ms(*runtime_late_us_max as f64),
        check,
        fsync_us_p50,
        cores,
        peak_rss_mib,
        cpu_us_per_op: m.cpu_us_per_op(),
        machine_cpu_us_per_op: m.machine_cpu_us_per_op(),
        machine_busy: m.machine_busy(cores),
        round: None,
    }
}

pub(crate) fn run(args: &WorkloadArgs) -> anyhow::Result<WorkloadReport> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    let sizes = Sizes::new(args.target.scale)?;
    let dir = args.window.data_dir("comb-bench-workload-")?;
    let fsync = commit_fsync_us_p50(dir.path())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let target = Arc::new(args.target.open(args.workload, &sizes, &dir.path().join("data"), args.clients).await?);
        let measured = measure(&target, args.workload, &sizes, args.clients, &args.window).await?;
        let report = report(&target, args.workload, &sizes, args.clients, measured, fsync);
        Arc::into_inner(target).expect("the clients are done").close().await?;
        Ok(report)
    })
}
