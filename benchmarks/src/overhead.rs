//! `comb-bench tracing-overhead`: the counter workflow end to end with the tracing layer
//! off and on, alternating in the same run (off, on, off, on, ...), each on fresh data, so
//! that the machine's drift hits both alike. Reports the medians and their ratio, the
//! median of each round's own ratio with its 95% bounds, and each thread group's CPU and
//! wait for a CPU per run.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use crate::apps::{Sizes, Workload};
use crate::comb::Comb;
use crate::disk::commit_fsync_us_p50;
use crate::driver::{ThreadTimes, Window, cores, median, process_cpu_us, thread_times};
use crate::workload::{Measurement, Target, TargetArgs, measure, ms};

#[derive(Debug, Args)]
pub(crate) struct OverheadArgs {
    /// Concurrent clients, each waiting for its run before the next.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[command(flatten)]
    target: TargetArgs,
    /// Pairs of runs (one off, one on), at most 1,000; from 6, the report bounds the median of
    /// a round's ratio (`ratio_pairs_ci95`).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// CPU niceness of the trace feed's threads (the server's `tracing.feed-nice`); default:
    /// the server's.
    #[arg(long)]
    feed_nice: Option<i32>,
    /// Bytes of trace rows held in memory before they are written to Parquet files (the
    /// server's `tracing.flush-bytes`); default: the server's.
    #[arg(long)]
    flush_bytes: Option<usize>,
    /// Milliseconds the trace feed waits once it has caught up (the server's
    /// `tracing.feed-interval`, at most 60000; the traces' `catch-up-max` is raised by as
    /// much); default: the server's. Longer than the warm-up and the window, the feed does
    /// nearly no work while the runs are measured, and catches up after: the traced runs then
    /// pay for everything tracing changes but the feed's work.
    #[arg(long)]
    feed_interval_ms: Option<u64>,
    #[command(flatten)]
    window: Window,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    ops_per_sec: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    /// CPU time the process (server and clients) spent per run completed, from the start of
    /// the warm-up until the server closed (the traces caught up first), less the CPU time
    /// of the check's query: what a run costs the CPUs, steadier than the throughput on a
    /// shared machine.
    cpu_us_per_run: f64,
    /// `cpu_us_per_run` by thread name (`comb-trace-feed`: the trace feed), from the start of
    /// the warm-up until the traces caught up (the check's query and the server's close left
    /// out): where tracing's CPU goes.
    cpu_us_per_run_by_thread: BTreeMap<String, f64>,
    /// Over the same window, the time each group of threads spent runnable but waiting for a
    /// CPU, per run: how much the other threads (the feed's among them) held them back.
    wait_us_per_run_by_thread: BTreeMap<String, f64>,
    /// With tracing on: the CPU time of the check's query (left out of `cpu_us_per_run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    check_cpu_ms: Option<f64>,
    /// With tracing on: how long after the load the traces took to hold every run, i.e. how
    /// far the feed lagged behind the log when the load stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_lag_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct OverheadReport {
    bench: &'static str,
    workload: &'static str,
    clients: usize,
    partitions: u16,
    rounds: usize,
    seconds: u64,
    /// The traced runs' settings given on the command line (left out: the server's).
    #[serde(skip_serializing_if = "Option::is_none")]
    feed_nice: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flush_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feed_interval_ms: Option<u64>,
    /// Medians over the rounds.
    ops_per_sec_off: f64,
    ops_per_sec_on: f64,
    /// `on / off`: 1.0 is no loss.
    ratio: f64,
    /// The median of each round's own `on / off`: a round's two runs follow each other, so a
    /// swing of the machine's speed over the whole run, which the medians above still feel,
    /// cancels in it.
    ratio_pairs: f64,
    /// 95% bounds on the median of a round's `on / off` (the rounds taken as independent):
    /// the noise of the machine, in the ratio's own terms. Left out below 6 rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_pairs_ci95: Option<[f64; 2]>,
    latency_ms_p50_off: f64,
    latency_ms_p50_on: f64,
    latency_ms_p99_off: f64,
    latency_ms_p99_on: f64,
    /// Medians of the CPU time per run, and `off / on` (1.0: tracing costs no CPU).
    cpu_us_per_run_off: f64,
    cpu_us_per_run_on: f64,
    cpu_ratio: f64,
    /// Medians of `cpu_us_per_run_by_thread`, off and on.
    cpu_us_per_run_by_thread_off: BTreeMap<String, f64>,
    cpu_us_per_run_by_thread_on: BTreeMap<String, f64>,
    /// Medians of `wait_us_per_run_by_thread`, off and on.
    wait_us_per_run_by_thread_off: BTreeMap<String, f64>,
    wait_us_per_run_by_thread_on: BTreeMap<String, f64>,
    off: Vec<Sample>,
    on: Vec<Sample>,
    check: String,
    fsync_us_p50: f64,
    cores: usize,
}

/// The median over the rounds of each round's `on / off` throughput.
fn ratio_pairs(off: &[Sample], on: &[Sample]) -> f64 {
    median(round_ratios(off, on))
}

/// Each round's own `on / off` throughput, in the order run.
fn round_ratios(off: &[Sample], on: &[Sample]) -> Vec<f64> {
    off.iter().zip(on).map(|(off, on)| on.ops_per_sec / off.ops_per_sec).collect()
}

/// The k-th smallest and k-th largest of the rounds' own `on / off`: 95% bounds on the median
/// of a round's ratio, from the order of the ratios alone (nothing assumed of how they
/// spread, the rounds taken as independent), with `k` the largest for which
/// P(Binomial(n, 1/2) < k) <= 2.5%. None below 6 rounds, where no `k` is.
fn ratio_pairs_ci95(off: &[Sample], on: &[Sample]) -> Option<[f64; 2]> {
    let mut ratios = round_ratios(off, on);
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let (mut k, mut at_most, mut exactly) = (0, 0.0, 0.5f64.powi(n as i32));
    for heads in 0..n {
        // `exactly`: the chance of `heads` heads; `at_most`: of `heads` or fewer.
        at_most += exactly;
        if at_most > 0.025 {
            break;
        }
        k = heads + 1;
        exactly *= (n - heads) as f64 / (heads + 1) as f64;
    }
    (k >= 1).then(|| [thousandths(ratios[k - 1]), thousandths(ratios[n - k])])
}

/// The time (`time`: on a CPU, or waiting for one) each group of threads (by name) spent
/// between two readings of the threads, per run, to a tenth of a microsecond; a group that
/// spent none is left out. Threads are matched by id, so one that exits in between takes
/// nothing from its group but its own time.
fn per_run_by_thread(before: &BTreeMap<u32, ThreadTimes>, after: &BTreeMap<u32, ThreadTimes>, runs: u64, time: fn(&ThreadTimes) -> u64) -> BTreeMap<String, f64> {
    let mut groups = BTreeMap::<String, u64>::new();
    for (tid, thread) in after {
        let earlier = before.get(tid).filter(|t| t.name == thread.name).map_or(0, time);
        *groups.entry(thread.name.clone()).or_default() += time(thread).saturating_sub(earlier);
    }
    groups.into_iter().filter(|&(_, us)| us > 0).map(|(name, us)| (name, (us as f64 / runs as f64 * 10.0).round() / 10.0)).collect()
}

/// The median of each thread group's figure (`by_thread`) over samples (0 where a sample has
/// none).
fn median_by_thread(samples: &[Sample], by_thread: fn(&Sample) -> &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let names: std::collections::BTreeSet<&String> = samples.iter().flat_map(|s| by_thread(s).keys()).collect();
    names.into_iter().map(|name| (name.clone(), median(samples.iter().map(|s| by_thread(s).get(name).copied().unwrap_or(0.0)).collect()))).collect()
}

/// A ratio as printed: to three decimals.
fn thousandths(ratio: f64) -> f64 {
    (ratio * 1000.0).round() / 1000.0
}

/// Most rounds one run takes (the bounds start from 2^-rounds, which a float holds down to
/// about 2^-1074).
const ROUNDS_MAX: usize = 1_000;

/// Longest `--feed-interval-ms`: the check then waits up to this beyond its window for the
/// traces, within the client's 75 s time-out on a call.
const FEED_INTERVAL_MS_MAX: u64 = 60_000;

pub(crate) fn run(args: &OverheadArgs) -> anyhow::Result<OverheadReport> {
    anyhow::ensure!(args.rounds >= 1 && args.clients >= 1, "--rounds and --clients must be at least 1");
    anyhow::ensure!(args.rounds <= ROUNDS_MAX, "--rounds {} is above {ROUNDS_MAX}", args.rounds);
    if let Some(ms) = args.feed_interval_ms {
        anyhow::ensure!(ms <= FEED_INTERVAL_MS_MAX, "--feed-interval-ms {ms} is above {FEED_INTERVAL_MS_MAX}: the check's catch-up would outwait the client's call time-out");
    }
    anyhow::ensure!(args.target.server.is_none() && args.target.baseline.is_none(), "tracing-overhead starts its own Comb servers: --server and --baseline do not apply");
    let sizes = Sizes::new(args.target.scale)?;
    let dir = args.window.data_dir("comb-bench-tracing-")?;
    let fsync_us_p50 = commit_fsync_us_p50(dir.path())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut checks = Vec::new();
    for round in 0..args.rounds {
        for tracing in [false, true] {
            let mut options = args.target.options();
            options.tracing.enabled = tracing;
            if let Some(nice) = args.feed_nice {
                options.tracing.feed_nice = nice;
            }
            if let Some(ms) = args.feed_interval_ms {
                options.tracing.feed_interval = std::time::Duration::from_millis(ms);
                options.tracing.catch_up_max += options.tracing.feed_interval;
            }
            if let Some(bytes) = args.flush_bytes {
                options.tracing.flush_bytes = bytes;
            }
            let data = dir.path().join(format!("round-{round}-{}", if tracing { "on" } else { "off" }));
            let (m, check, trace_lag_ms, cpu_us_per_run, (cpu_us_per_run_by_thread, wait_us_per_run_by_thread), check_cpu_us) = runtime.block_on(async {
                let comb = Comb::start(&data, options, Workload::Counter, args.target.connections).await?;
                comb.load(Workload::Counter, &sizes).await?;
                let target = Arc::new(Target::Comb(comb));
                let cpu_before = process_cpu_us().await?;
                let threads_before = thread_times().await?;
                let Measurement { measured: m, mut check, tally, .. } = measure(&target, Workload::Counter, &sizes, args.clients, &args.window).await?;
                let Some(Target::Comb(comb)) = Arc::into_inner(target) else { unreachable!("the clients are done, and the target is Comb") };
                let mut trace_lag_ms = None;
                // The check's query is the bench's, not a cost of tracing the runs.
                let mut check_cpu_us = None;
                if tracing && check.starts_with("ok") {
                    // Every run of the window and the warm-up in the traces, once.
                    let asked = std::time::Instant::now();
                    comb.catch_up_traces().await?;
                    trace_lag_ms = Some(ms(asked.elapsed().as_micros() as f64));
                }
                // Before the check's query, and while the server's threads live.
                let threads_after = thread_times().await?;
                if trace_lag_ms.is_some() {
                    let cpu_asked = process_cpu_us().await?;
                    let (traced, counted) = (comb.traced_runs("counter").await?, tally.counted.load(std::sync::atomic::Ordering::Relaxed));
                    check_cpu_us = Some(process_cpu_us().await? - cpu_asked);
                    if traced != counted as u64 {
                        check = format!("FAILED: {counted} runs completed, {traced} traced");
                    }
                }
                comb.close().await?;
                let runs = tally.counted.load(std::sync::atomic::Ordering::Relaxed).max(1);
                let cpu_us_per_run = (process_cpu_us().await? - cpu_before - check_cpu_us.unwrap_or(0)) as f64 / runs as f64;
                let by_thread = (
                    per_run_by_thread(&threads_before, &threads_after, runs as u64, |t| t.us),
                    per_run_by_thread(&threads_before, &threads_after, runs as u64, |t| t.wait_us),
                );
                anyhow::Ok((m, check, trace_lag_ms, cpu_us_per_run, by_thread, check_cpu_us))
            })?;
            std::fs::remove_dir_all(&data)?;
            let sample = Sample {
                ops_per_sec: m.per_sec(),
                latency_ms_p50: ms(m.us(0.50)),
                latency_ms_p99: ms(m.us(0.99)),
                cpu_us_per_run: (cpu_us_per_run * 10.0).round() / 10.0,
                cpu_us_per_run_by_thread,
                wait_us_per_run_by_thread,
                check_cpu_ms: check_cpu_us.map(|us| ms(us as f64)),
                trace_lag_ms,
            };
            eprintln!(
                "round {round}, tracing {}: {} runs/s, p99 {} ms, {} us of CPU a run",
                if tracing { "on" } else { "off" },
                sample.ops_per_sec,
                sample.latency_ms_p99,
                sample.cpu_us_per_run
            );
            if tracing { on.push(sample) } else { off.push(sample) }
            checks.push(check);
        }
    }
    let med = |samples: &[Sample], f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let (ops_off, ops_on) = (med(&off, |s| s.ops_per_sec), med(&on, |s| s.ops_per_sec));
    let (cpu_off, cpu_on) = (med(&off, |s| s.cpu_us_per_run), med(&on, |s| s.cpu_us_per_run));
    Ok(OverheadReport {
        bench: "tracing-overhead",
        workload: "counter",
        clients: args.clients,
        partitions: args.target.partitions,
        rounds: args.rounds,
        seconds: args.window.seconds,
        feed_nice: args.feed_nice,
        flush_bytes: args.flush_bytes,
        feed_interval_ms: args.feed_interval_ms,
        ops_per_sec_off: ops_off,
        ops_per_sec_on: ops_on,
        ratio: thousandths(ops_on / ops_off),
        ratio_pairs: thousandths(ratio_pairs(&off, &on)),
        ratio_pairs_ci95: ratio_pairs_ci95(&off, &on),
        latency_ms_p50_off: med(&off, |s| s.latency_ms_p50),
        latency_ms_p50_on: med(&on, |s| s.latency_ms_p50),
        latency_ms_p99_off: med(&off, |s| s.latency_ms_p99),
        latency_ms_p99_on: med(&on, |s| s.latency_ms_p99),
        cpu_us_per_run_off: cpu_off,
        cpu_us_per_run_on: cpu_on,
        cpu_ratio: thousandths(cpu_off / cpu_on),
        cpu_us_per_run_by_thread_off: median_by_thread(&off, |s| &s.cpu_us_per_run_by_thread),
        cpu_us_per_run_by_thread_on: median_by_thread(&on, |s| &s.cpu_us_per_run_by_thread),
        wait_us_per_run_by_thread_off: median_by_thread(&off, |s| &s.wait_us_per_run_by_thread),
        wait_us_per_run_by_thread_on: median_by_thread(&on, |s| &s.wait_us_per_run_by_thread),
        off,
        on,
        check: if checks.iter().all(|c| c.starts_with("ok")) { format!("ok: {} runs checked, every traced run in the traces", checks.len()) } else { checks.join("; ") },
        fsync_us_p50,
        cores: cores(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ops: &[f64]) -> Vec<Sample> {
        ops.iter().map(|&ops_per_sec| Sample { ops_per_sec, latency_ms_p50: 1.0, latency_ms_p99: 2.0, cpu_us_per_run: 3.0, cpu_us_per_run_by_thread: BTreeMap::new(), wait_us_per_run_by_thread: BTreeMap::new(), check_cpu_ms: None, trace_lag_ms: None }).collect()
    }

    #[test]
    fn thread_groups_are_their_cpu_between_readings_per_run() {
        let reading = |threads: &[(u32, &str, u64)]| threads.iter().map(|&(tid, name, us)| (tid, ThreadTimes { name: name.to_owned(), us, wait_us: us / 10 })).collect::<BTreeMap<_, _>>();
        // Two executors, one of which exited (its 7 ms before the first reading must not be
        // taken off the other's); the feed started after the first reading; the writer did
        // nothing in between.
        let before = reading(&[(1, "comb-partition-", 1_000), (2, "comb-partition-", 7_000), (3, "comb-log-writer", 500)]);
        let after = reading(&[(1, "comb-partition-", 41_000), (3, "comb-log-writer", 500), (4, "comb-trace-feed", 3_000)]);
        let by_thread = per_run_by_thread(&before, &after, 1_000, |t| t.us);
        assert_eq!(by_thread, BTreeMap::from([("comb-partition-".to_owned(), 40.0), ("comb-trace-feed".to_owned(), 3.0)]));
        // Waits are counted the same way, from their own field (a tenth of the CPU time here).
        let waits = per_run_by_thread(&before, &after, 1_000, |t| t.wait_us);
        assert_eq!(waits, BTreeMap::from([("comb-partition-".to_owned(), 4.0), ("comb-trace-feed".to_owned(), 0.3)]));

        // Medians over samples count a group a sample lacks as 0.
        let mut samples = samples(&[1.0, 1.0, 1.0]);
        for (sample, feed) in samples.iter_mut().zip([Some(3.0), None, Some(5.0)]) {
            sample.cpu_us_per_run_by_thread = feed.map(|us| ("comb-trace-feed".to_owned(), us)).into_iter().collect();
        }
        assert_eq!(median_by_thread(&samples, |s| &s.cpu_us_per_run_by_thread), BTreeMap::from([("comb-trace-feed".to_owned(), 3.0)]));
        // Each figure's medians are its own.
        for (sample, wait) in samples.iter_mut().zip([1.0, 2.0, 9.0]) {
            sample.wait_us_per_run_by_thread = BTreeMap::from([("comb-log-writer".to_owned(), wait)]);
        }
        assert_eq!(median_by_thread(&samples, |s| &s.wait_us_per_run_by_thread), BTreeMap::from([("comb-log-writer".to_owned(), 2.0)]));
    }

    #[test]
    fn pairs_cancel_a_slow_round_that_the_medians_feel() {
        // The second round ran on a slow machine, both its runs: each round alone loses 2% to
        // 10%, the median round 2%, but the medians of each side are 100 and 90.
        let (off, on) = (samples(&[100.0, 50.0, 100.0]), samples(&[90.0, 49.0, 98.0]));
        assert!((ratio_pairs(&off, &on) - 0.98).abs() < 1e-9, "{}", ratio_pairs(&off, &on));
        let medians = median(on.iter().map(|s| s.ops_per_sec).collect()) / median(off.iter().map(|s| s.ops_per_sec).collect());
        assert!((medians - 0.90).abs() < 1e-9, "{medians}");
    }

    #[test]
    fn the_median_round_is_bounded_by_order_statistics_from_six_rounds() {
        // Round r's ratio is (100 - r) / 100: ratios 1.000, 0.990, ... in the order run.
        let bounds = |rounds: usize| {
            let off = samples(&vec![100.0; rounds]);
            let on = samples(&(0..rounds).map(|r| 100.0 - r as f64).collect::<Vec<_>>());
            ratio_pairs_ci95(&off, &on)
        };
        // Five rounds: the extremes hold the median with 1 - 2/32 < 95%.
        assert_eq!(bounds(5), None);
        // Six: the extremes, 1 - 2/64. Seven: still the extremes (the second smallest would
        // hold it with 1 - 2 * 8/128 < 95%).
        assert_eq!(bounds(6), Some([0.95, 1.0]));
        assert_eq!(bounds(7), Some([0.94, 1.0]));
        // Ten: the second smallest and largest (at most one head in ten: 11/1024 <= 2.5%).
        assert_eq!(bounds(10), Some([0.92, 0.99]));
        // Twenty: the sixth (five heads or fewer in twenty: 2.07%; six or fewer: 5.77%).
        assert_eq!(bounds(20), Some([0.86, 0.95]));
    }
}
