//! `comb-bench compare`: every workload on Comb and on the PostgreSQL baseline, at several
//! client counts, each system loaded once per workload. Writes the JSON lines, a chart
//! (throughput and p99 latency against clients, one line per system) and a Markdown table
//! to a results folder, as `compare-<date>.*` and `latest.*`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use plotters::prelude::*;

use crate::apps::{Sizes, Workload};
use crate::disk::commit_fsync_us_p50;
use crate::driver::{Window, cores};
use crate::workload::{Baseline, TargetArgs, WorkloadReport, measure, report};

#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// Client counts, each measured on the same loaded data (hotel's on data loaded afresh
    /// for each: its bookings use the rooms up).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    clients: Vec<usize>,
    /// Workloads; default: all four.
    #[arg(long, value_delimiter = ',', value_enum)]
    workloads: Vec<Workload>,
    /// Measure Comb only.
    #[arg(long)]
    no_baseline: bool,
    #[command(flatten)]
    target: TargetArgs,
    /// Folder for the results.
    #[arg(long, default_value = "benchmarks/results")]
    out: PathBuf,
    #[command(flatten)]
    window: Window,
}

/// The summary printed at the end.
#[derive(Debug, serde::Serialize)]
pub(crate) struct CompareReport {
    bench: &'static str,
    runs: usize,
    checks_failed: usize,
    results: String,
    chart: String,
    fsync_us_p50: f64,
    cores: usize,
}

pub(crate) fn run(args: &CompareArgs) -> anyhow::Result<CompareReport> {
    anyhow::ensure!(!args.clients.is_empty() && args.clients.iter().all(|&c| c >= 1), "--clients must list counts of at least 1");
    anyhow::ensure!(args.target.server.is_none() && args.target.baseline.is_none(), "compare starts its own Comb server and measures the baseline itself: --server and --baseline do not apply");
    let workloads = if args.workloads.is_empty() { Workload::ALL.to_vec() } else { args.workloads.clone() };
    let sizes = Sizes::new(args.target.scale)?;
    std::fs::create_dir_all(&args.out)?;
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stem = format!("compare-{}", &date[..10]);
    let lines_path = args.out.join(format!("{stem}.jsonl"));
    let mut lines = std::fs::File::create(&lines_path)?;
    let dir = args.window.data_dir("comb-bench-compare-")?;
    let fsync = commit_fsync_us_p50(dir.path())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut reports = Vec::new();
    let systems: &[Option<Baseline>] = if args.no_baseline { &[None] } else { &[None, Some(Baseline::Postgres)] };
    for &workload in &workloads {
        for &baseline in systems {
            let target_args = TargetArgs { baseline, server: None, postgres: args.target.postgres.clone(), ..args.target };
            let system = if baseline.is_some() { "baseline" } else { "comb" };
            // The client counts measured on one load of the data: all of them, or one each
            // when the operations use the data up.
            let loads: Vec<&[usize]> = if workload.uses_up_its_data() { args.clients.chunks(1).collect() } else { vec![&args.clients[..]] };
            for counts in loads {
                let data = dir.path().join(format!("{}-{system}-{}", workload.name(), counts[0]));
                let max_clients = *counts.iter().max().expect("a load measures at least one client count");
                runtime.block_on(async {
                    let target = Arc::new(target_args.open(workload, &sizes, &data, max_clients).await?);
                    for &clients in counts {
                        let measured = measure(&target, workload, &sizes, clients, &args.window).await?;
                        let report = report(&target, workload, &sizes, clients, measured, fsync);
                        let line = serde_json::to_string(&report)?;
                        println!("{line}");
                        writeln!(lines, "{line}")?;
                        reports.push(report);
                    }
                    Arc::into_inner(target).expect("the clients are done").close().await
                })?;
                if data.exists() {
                    std::fs::remove_dir_all(&data)?;
                }
            }
        }
    }
    let chart_path = args.out.join(format!("{stem}.svg"));
    chart(&chart_path, &workloads, &reports)?;
    let table = table(&reports, &date, fsync);
    std::fs::write(args.out.join(format!("{stem}.md")), &table)?;
    for extension in ["jsonl", "svg", "md"] {
        std::fs::copy(args.out.join(format!("{stem}.{extension}")), args.out.join(format!("latest.{extension}")))?;
    }
    eprintln!("{table}");
    Ok(CompareReport {
        bench: "compare",
        runs: reports.len(),
        checks_failed: reports.iter().filter(|r| !r.check.starts_with("ok")).count(),
        results: lines_path.display().to_string(),
        chart: chart_path.display().to_string(),
        fsync_us_p50: fsync,
        cores: cores(),
    })
}

/// The Markdown table: one row per workload and client count, both systems side by side.
fn table(reports: &[WorkloadReport], date: &str, fsync_us_p50: f64) -> String {
    let mut out = format!(
        "Measured {date} on {} cores; a bare write+fdatasync of 256 bytes takes {fsync_us_p50} us (p50) on this disk.\n\n\
         | workload | clients | Comb ops/s | Comb p99 ms | PostgreSQL ops/s | PostgreSQL p99 ms | Comb / PostgreSQL | CPU us/op, Comb | CPU us/op, PostgreSQL |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        cores()
    );
    let find = |r: &WorkloadReport, system: &str| reports.iter().find(|o| o.workload == r.workload && o.clients == r.clients && o.system == system);
    for comb in reports.iter().filter(|r| r.system == "comb") {
        let base = find(comb, "postgres");
        let cell = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v}"));
        let ratio = base.map(|b| format!("{:.1}x", comb.ops_per_sec / b.ops_per_sec.max(1.0))).unwrap_or_else(|| "-".to_owned());
        _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {ratio} | {:.1} | {} |",
            comb.workload.name(),
            comb.clients,
            comb.ops_per_sec,
            comb.latency_ms_p99,
            cell(base.map(|b| b.ops_per_sec)),
            cell(base.map(|b| b.latency_ms_p99)),
            comb.machine_cpu_us_per_op,
            base.map_or("-".to_owned(), |b| format!("{:.1}", b.machine_cpu_us_per_op))
        );
    }
    out.push_str(
        "\nCPU us/op: the whole machine's busy CPU time in the window over the operations completed (clients, server, \
         kernel; PostgreSQL's server processes for the baseline).\n",
    );
    let failed: Vec<String> = reports.iter().filter(|r| !r.check.starts_with("ok")).map(|r| format!("{} {} at {} clients: {}", r.system, r.workload.name(), r.clients, r.check)).collect();
    if failed.is_empty() {
        out.push_str("\nEvery run's correctness check passed.\n");
    } else {
        _ = writeln!(out, "\nChecks that FAILED:\n\n- {}", failed.join("\n- "));
    }
    out
}

/// Throughput and p99 latency against clients, a row per workload, a line per system, on
/// logarithmic axes.
fn chart(path: &Path, workloads: &[Workload], reports: &[WorkloadReport]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 280 * workloads.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((workloads.len(), 2));
    let max_clients = reports.iter().map(|r| r.clients).max().unwrap_or(1) as f64;
    let metrics: [(&str, &str, fn(&WorkloadReport) -> f64); 2] = [("throughput", "ops/s", |r| r.ops_per_sec), ("p99 latency", "ms", |r| r.latency_ms_p99)];
    for (row, workload) in workloads.iter().enumerate() {
        for (column, (metric, unit, value)) in metrics.iter().enumerate() {
            let points: Vec<&WorkloadReport> = reports.iter().filter(|r| r.workload == *workload && value(r) > 0.0).collect();
            let low = points.iter().map(|r| value(r)).fold(f64::INFINITY, f64::min);
            let low = if low.is_finite() { low } else { 1.0 };
            let high = points.iter().map(|r| value(r)).fold(1.0, f64::max);
            let mut chart = ChartBuilder::on(&areas[row * 2 + column])
                .caption(format!("{}: {metric}", workload.name()), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(35)
                .y_label_area_size(60)
                .build_cartesian_2d((0.8f64..max_clients * 1.25).log_scale(), (low / 1.5..high * 1.5).log_scale())?;
            chart.configure_mesh().x_desc("clients").y_desc(*unit).x_label_formatter(&|x| format!("{x:.0}")).y_label_formatter(&|y| format!("{y:.1}")).draw()?;
            for (system, color) in [("comb", BLUE), ("postgres", RED)] {
                let series: Vec<(f64, f64)> = points.iter().filter(|r| r.system == system).map(|r| (r.clients as f64, value(r))).collect();
                if series.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                    .label(system)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
                chart.draw_series(series.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        }
    }
    root.present()?;
    Ok(())
}
