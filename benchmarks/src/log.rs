//! `comb-bench log`: closed-loop appenders against the durable log.


use bytes::Bytes;
use clap::Args;
use comb_log::{Error, LogBook, LogOptions};
use serde::Serialize;

use crate::disk::fdatasync_latencies;
use crate::driver::{Failure, Window, closed_loop, cores, us};

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Concurrent appenders, each waiting for its append to be durable before the next.
    #[arg(long, default_value_t = 1)]
    appenders: usize,
    /// Payload bytes of each record.
    #[arg(long, default_value_t = 128)]
    record_bytes: usize,
    /// Write+fdatasync samples taken to measure the disk.
    #[arg(long, default_value_t = 2_000)]
    fsync_samples: usize,
    /// The log's `writer-spin-us`: how long its writer spins for the next append before it
    /// sleeps (default: the log's default).
    #[arg(long)]
    writer_spin_us: Option<u64>,
    #[command(flatten)]
    window: Window,
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

pub(crate) fn run(args: &LogArgs) -> anyhow::Result<LogReport> {
    anyhow::ensure!(args.appenders >= 1, "--appenders must be at least 1");
    let dir = args.window.data_dir("comb-bench-log-")?;
    let fsync = fdatasync_latencies(dir.path(), args.record_bytes, args.fsync_samples)?;

    let mut options = LogOptions::default();
    if let Some(spin) = args.writer_spin_us {
        options.writer_spin_us = spin;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let log = LogBook::open_dir(dir.path().join("log"), options).await?;
        let payload = Bytes::from(vec![0x5Au8; args.record_bytes]);
        let append = {
            let log = log.clone();
            move |appender: usize, _seq: u64| {
                let (log, payload) = (log.clone(), payload.clone());
                async move {
                    Failure::of(log.append(&[appender as u64 % 64 + 1], payload).await, |err| matches!(err, Error::QueueFull { .. }))
                }
            }
        };
        let m = closed_loop("log", args.appenders, args.window.warmup(), args.window.measure(), || log.stats(), append).await?;
        log.close().await?;
        Ok(LogReport {
            bench: "log",
            appenders: args.appenders,
            record_bytes: args.record_bytes,
            seconds: m.seconds_rounded(),
            appends: m.latencies.len(),
            errors: m.errors,
            appends_per_sec: m.per_sec(),
            latency_us_p50: m.us(0.50),
            latency_us_p99: m.us(0.99),
            latency_us_max: m.us_max(),
            records_per_fsync: m.records_per_fsync(),
            fsync_us_p50: us(fsync.value_at_quantile(0.50)),
            fsync_us_p99: us(fsync.value_at_quantile(0.99)),
            cores: cores(),
        })
    })
}
