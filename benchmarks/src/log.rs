//! `comb-bench log`: closed-loop appenders against the durable log.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use comb_log::{Error, LogBook, LogOptions};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::disk::fdatasync_latencies;

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Concurrent appenders, each waiting for its append to be durable before the next.
    #[arg(long, default_value_t = 1)]
    appenders: usize,
    /// Payload bytes of each record.
    #[arg(long, default_value_t = 128)]
    record_bytes: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// Write+fdatasync samples taken to measure the disk.
    #[arg(long, default_value_t = 2_000)]
    fsync_samples: usize,
    /// Directory in which to create the log (a fresh subdirectory, removed afterwards);
    /// default: the system's temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LogReport {
    bench: &'static str,
    appenders: usize,
    record_bytes: usize,
    seconds: f64,
    appends: u64,
    errors: u64,
    appends_per_sec: f64,
    latency_us_p50: f64,
    latency_us_p99: f64,
    latency_us_max: f64,
    records_per_fsync: f64,
    fsync_us_p50: f64,
    fsync_us_p99: f64,
    cores: usize,
}

/// Phases of a run, shared with the appenders.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

fn us(nanos: u64) -> f64 {
    (nanos as f64 / 1_000.0 * 10.0).round() / 10.0
}

pub(crate) fn run(args: &LogArgs) -> anyhow::Result<LogReport> {
    anyhow::ensure!(args.appenders >= 1, "--appenders must be at least 1");
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new().prefix("comb-bench-log-").tempdir_in(&parent)?;
    let fsync = fdatasync_latencies(dir.path(), args.record_bytes, args.fsync_samples)?;

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let log = LogBook::open_dir(dir.path().join("log"), LogOptions::default()).await?;
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let payload = Bytes::from(vec![0x5Au8; args.record_bytes]);
        let appenders: Vec<_> = (0..args.appenders)
            .map(|i| {
                let (log, phase, payload) = (log.clone(), Arc::clone(&phase), payload.clone());
                let tag = i as u64 % 64 + 1;
                tokio::spawn(async move {
                    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
                    let mut errors = 0u64;
                    loop {
                        let now = phase.load(Ordering::Relaxed);
                        if now == STOP {
                            break;
                        }
                        let start = Instant::now();
                        match log.append(&[tag], payload.clone()).await {
                            Ok(_) if now == MEASURE => latencies.record(start.elapsed().as_nanos() as u64).expect("latency in bounds"),
                            Ok(_) => {}
                            Err(Error::QueueFull { .. }) => errors += 1,
                            Err(err) => return Err(err),
                        }
                    }
                    Ok::<_, Error>((latencies, errors))
                })
            })
            .collect();

        tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;
        let before = log.stats();
        let started = Instant::now();
        phase.store(MEASURE, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        phase.store(STOP, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let after = log.stats();

        let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut errors = 0;
        for appender in appenders {
            let (histogram, failed) = appender.await??;
            latencies.add(&histogram)?;
            errors += failed;
        }
        log.close().await?;
        let appends = latencies.len();
        let commits = (after.group_commits - before.group_commits).max(1);
        Ok(LogReport {
            bench: "log",
            appenders: args.appenders,
            record_bytes: args.record_bytes,
            seconds: (elapsed * 100.0).round() / 100.0,
            appends,
            errors,
            appends_per_sec: (appends as f64 / elapsed).round(),
            latency_us_p50: us(latencies.value_at_quantile(0.50)),
            latency_us_p99: us(latencies.value_at_quantile(0.99)),
            latency_us_max: us(latencies.max()),
            records_per_fsync: ((after.records - before.records) as f64 / commits as f64 * 10.0).round() / 10.0,
            fsync_us_p50: us(fsync.value_at_quantile(0.50)),
            fsync_us_p99: us(fsync.value_at_quantile(0.99)),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    })
}
