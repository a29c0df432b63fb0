//! `comb-bench log`: closed-loop appenders against the durable log, with the disk's own
//! write+fdatasync cost measured between slices of the same run.
//!
//! The disk's latency drifts by half from one minute to the next on a shared machine; a probe
//! taken once, before the log runs, can land on a fast minute while the log runs on a slow
//! one (or the reverse). The measured window is therefore cut into `--slices` slices, and a
//! share of the probe's samples is taken before each, so that both figures cover the same
//! stretch of time.

use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use comb_log::{Error, LogBook, LogOptions, LogStats};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::disk::fdatasync_latencies;
use crate::driver::{Failure, Measured, Window, closed_loop, cores, us};

/// The most slices a run may be cut into: each is at least a fifth of a second at the
/// shortest window (one second).
const SLICES_MAX: u32 = 5;

/// The warm-up before every slice but the first (which takes the full `--warmup-seconds`):
/// enough for the writer to be spinning again after the probe.
const SLICE_WARMUP: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Concurrent appenders, each waiting for its append to be durable before the next.
    #[arg(long, default_value_t = 1)]
    appenders: usize,
    /// Payload bytes of each record.
    #[arg(long, default_value_t = 128)]
    record_bytes: usize,
    /// Write+fdatasync samples taken to measure the disk, spread over the slices.
    #[arg(long, default_value_t = 2_000)]
    fsync_samples: usize,
    /// Slices of the measured window, 1 to 5; the disk is probed before each.
    #[arg(long, default_value_t = 5)]
    slices: u32,
    /// The log's `writer-spin-us`: how long its writer spins for the next append before it
    /// sleeps (default: the log's default).
    #[arg(long)]
    writer_spin_us: Option<u64>,
    /// The log's `overlap-syncs`: whether its writer writes the next group while the last
    /// one syncs (`true` or `false`; default: the log's default).
    #[arg(long)]
    overlap_syncs: Option<bool>,
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
    overlap_syncs: bool,
    fsync_us_p50: f64,
    fsync_us_p99: f64,
    cores: usize,
}

pub(crate) fn run(args: &LogArgs) -> anyhow::Result<LogReport> {
    anyhow::ensure!(args.appenders >= 1, "--appenders must be at least 1");
    anyhow::ensure!((1..=SLICES_MAX).contains(&args.slices), "--slices must be between 1 and {SLICES_MAX}");
    let dir = args.window.data_dir("comb-bench-log-")?;

    let mut options = LogOptions::default();
    if let Some(spin) = args.writer_spin_us {
        options.writer_spin_us = spin;
    }
    if let Some(overlap) = args.overlap_syncs {
        options.overlap_syncs = overlap;
    }
    let overlap_syncs = options.overlap_syncs;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let log = LogBook::open_dir(dir.path().join("log"), options).await?;
        let payload = Bytes::from(vec![0x5Au8; args.record_bytes]);
        let append = {
            let log = log.clone();
            move |appender: usize, _seq: u64| {
                let (log, payload) = (log.clone(), payload.clone());
                async move {
                    Failure::of(log.append(&[appender as u64 % 64 + 1], payload).await, |err| matches!(err, Error::QueueFull { .. })).map(|()| "append")
                }
            }
        };
        let slice = args.window.measure() / args.slices;
        let probe_samples = args.fsync_samples.div_ceil(args.slices as usize).max(1);
        let mut fsync: Option<Histogram<u64>> = None;
        let mut m: Option<Measured<LogStats>> = None;
        for index in 0..args.slices {
            let (probe_dir, bytes) = (dir.path().to_owned(), args.record_bytes);
            let probed = tokio::task::spawn_blocking(move || fdatasync_latencies(&probe_dir, bytes, probe_samples)).await??;
            match fsync.as_mut() {
                Some(all) => all.add(&probed)?,
                None => fsync = Some(probed),
            }
            let warmup = if index == 0 { args.window.warmup() } else { SLICE_WARMUP };
            let label = format!("log, slice {} of {}", index + 1, args.slices);
            let measured = closed_loop(&label, args.appenders, warmup, slice, || log.stats(), append.clone()).await?;
            m = Some(match m {
                Some(all) => all.followed_by(measured)?,
                None => measured,
            });
        }
        log.close().await?;
        let (m, fsync) = (m.expect("at least one slice"), fsync.expect("at least one probe"));
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
            overlap_syncs,
            fsync_us_p50: us(fsync.value_at_quantile(0.50)),
            fsync_us_p99: us(fsync.value_at_quantile(0.99)),
            cores: cores(),
        })
    })
}
