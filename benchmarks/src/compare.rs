//! `comb-bench compare`: every workload on Comb and on the PostgreSQL baseline, at several
//! client counts, each system loaded once per workload and round. Writes the JSON lines, a
//! chart (throughput and p99 latency against clients, one line per system) and a Markdown
//! table to a results folder, as `compare-<date>.*` and `latest.*`.
//!
//! With `--rounds N` every point is measured N times, the two systems taking turns round by
//! round and which goes first alternating (so that a slow phase of the machine, or an effect
//! of the order, falls on both), and the table and chart show each figure's median over the
//! rounds, the table with the range of the throughputs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use plotters::prelude::*;

use crate::apps::{Sizes, Workload};
use crate::disk::commit_fsync_us_p50;
use crate::driver::{Window, cores, median};
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
    /// Times every point is measured, the systems alternating round by round; the table
    /// and chart show medians. At most 20.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[command(flatten)]
    window: Window,
}

/// Most `--rounds`: 20 rounds of the four workloads take about two hours.
const ROUNDS_MAX: usize = 20;

/// The summary printed at the end.
#[derive(Debug, serde::Serialize)]
pub(crate) struct CompareReport {
    bench: &'static str,
    rounds: usize,
    runs: usize,
    checks_failed: usize,
    results: String,
    chart: String,
    fsync_us_p50: f64,
    cores: usize,
}

pub(crate) fn run(args: &CompareArgs) -> anyhow::Result<CompareReport> {
    anyhow::ensure!(!args.clients.is_empty() && args.clients.iter().all(|&c| c >= 1), "--clients must list counts of at least 1");
    anyhow::ensure!((1..=ROUNDS_MAX).contains(&args.rounds), "--rounds {} is not between 1 and {ROUNDS_MAX}", args.rounds);
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
        for round in 1..=args.rounds {
            // Which system goes first alternates too, so that an effect of the order falls
            // on both.
            let order: Vec<Option<Baseline>> = if round % 2 == 0 { systems.iter().rev().copied().collect() } else { systems.to_vec() };
            for baseline in order {
                let target_args = TargetArgs { baseline, server: None, postgres: args.target.postgres.clone(), ..args.target };
                let system = if baseline.is_some() { "baseline" } else { "comb" };
                // The client counts measured on one load of the data: all of them, or one
                // each when the operations use the data up.
                let loads: Vec<&[usize]> = if workload.uses_up_its_data() { args.clients.chunks(1).collect() } else { vec![&args.clients[..]] };
                for counts in loads {
                    let data = dir.path().join(format!("{}-{system}-{round}-{}", workload.name(), counts[0]));
                    let max_clients = *counts.iter().max().expect("a load measures at least one client count");
                    runtime.block_on(async {
                        let target = Arc::new(target_args.open(workload, &sizes, &data, max_clients).await?);
                        for &clients in counts {
                            let measured = measure(&target, workload, &sizes, clients, &args.window).await?;
                            let report = WorkloadReport { round: Some(round), ..report(&target, workload, &sizes, clients, measured, fsync) };
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
    }
    let points = points(&reports);
    let chart_path = args.out.join(format!("{stem}.svg"));
    chart(&chart_path, &workloads, &points)?;
    let table = table(&points, &reports, args.rounds, &date, fsync);
    std::fs::write(args.out.join(format!("{stem}.md")), &table)?;
    for extension in ["jsonl", "svg", "md"] {
        std::fs::copy(args.out.join(format!("{stem}.{extension}")), args.out.join(format!("latest.{extension}")))?;
    }
    eprintln!("{table}");
    Ok(CompareReport {
        bench: "compare",
        rounds: args.rounds,
        runs: reports.len(),
        checks_failed: reports.iter().filter(|r| !r.check.starts_with("ok")).count(),
        results: lines_path.display().to_string(),
        chart: chart_path.display().to_string(),
        fsync_us_p50: fsync,
        cores: cores(),
    })
}

/// One system's runs of one workload at one client count, over the rounds.
#[derive(Debug)]
struct Point<'a> {
    system: &'static str,
    workload: Workload,
    clients: usize,
    runs: Vec<&'a WorkloadReport>,
}

impl Point<'_> {
    /// A figure's median over the rounds.
    fn median(&self, figure: fn(&WorkloadReport) -> f64) -> f64 {
        median(self.runs.iter().map(|r| figure(r)).collect())
    }

    /// Throughput as the table shows it: the median, and the range when there were several
    /// rounds.
    fn throughput(&self) -> String {
        let median = self.median(|r| r.ops_per_sec);
        if self.runs.len() == 1 {
            return format!("{median}");
        }
        let (low, high) = self.runs.iter().map(|r| r.ops_per_sec).fold((f64::INFINITY, 0.0f64), |(low, high), v| (low.min(v), high.max(v)));
        format!("{median} ({low}-{high})")
    }
}

/// The reports grouped by system, workload and client count, in the order first measured.
fn points(reports: &[WorkloadReport]) -> Vec<Point<'_>> {
    let mut points: Vec<Point<'_>> = Vec::new();
    for report in reports {
        match points.iter_mut().find(|p| p.system == report.system && p.workload == report.workload && p.clients == report.clients) {
            Some(point) => point.runs.push(report),
            None => points.push(Point { system: report.system, workload: report.workload, clients: report.clients, runs: vec![report] }),
        }
    }
    points
}

/// The Markdown table: one row per workload and client count, both systems side by side,
/// each figure the median over the rounds.
fn table(points: &[Point<'_>], reports: &[WorkloadReport], rounds: usize, date: &str, fsync_us_p50: f64) -> String {
    let mut out = format!("Measured {date} on {} cores; a bare write+fdatasync of 256 bytes takes {fsync_us_p50} us (p50) on this disk.\n\n", cores());
    if rounds > 1 {
        _ = write!(out, "Each figure is the median of {rounds} rounds, the systems taking turns round by round; ops/s shows the range of the rounds in brackets.\n\n");
    }
    out.push_str(
        "| workload | clients | Comb ops/s | Comb p99 ms | PostgreSQL ops/s | PostgreSQL p99 ms | Comb / PostgreSQL | CPU us/op, Comb | CPU us/op, PostgreSQL |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for comb in points.iter().filter(|p| p.system == "comb") {
        let base = points.iter().find(|p| p.system == "postgres" && p.workload == comb.workload && p.clients == comb.clients);
        let cell = |figure: fn(&WorkloadReport) -> f64| base.map_or("-".to_owned(), |b| format!("{}", b.median(figure)));
        let ratio = base.map_or("-".to_owned(), |b| format!("{:.1}x", comb.median(|r| r.ops_per_sec) / b.median(|r| r.ops_per_sec).max(1.0)));
        _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {ratio} | {:.1} | {} |",
            comb.workload.name(),
            comb.clients,
            comb.throughput(),
            comb.median(|r| r.latency_ms_p99),
            base.map_or("-".to_owned(), Point::throughput),
            cell(|r| r.latency_ms_p99),
            comb.median(|r| r.machine_cpu_us_per_op),
            base.map_or("-".to_owned(), |b| format!("{:.1}", b.median(|r| r.machine_cpu_us_per_op)))
        );
    }
    out.push_str(
        "\nCPU us/op: the whole machine's busy CPU time in the window over the operations completed (clients, server, \
         kernel; PostgreSQL's server processes for the baseline).\n",
    );
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.check.starts_with("ok"))
        .map(|r| format!("{} {} at {} clients{}: {}", r.system, r.workload.name(), r.clients, r.round.map_or(String::new(), |n| format!(", round {n}")), r.check))
        .collect();
    if failed.is_empty() {
        out.push_str("\nEvery run's correctness check passed.\n");
    } else {
        _ = writeln!(out, "\nChecks that FAILED:\n\n- {}", failed.join("\n- "));
    }
    out
}

/// A chart's metric: its name, its unit, and how a run's report gives it.
type Metric = (&'static str, &'static str, fn(&WorkloadReport) -> f64);

/// Throughput and p99 latency against clients (medians over the rounds), a row per
/// workload, a line per system, on logarithmic axes.
fn chart(path: &Path, workloads: &[Workload], points: &[Point<'_>]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 280 * workloads.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((workloads.len(), 2));
    let max_clients = points.iter().map(|p| p.clients).max().unwrap_or(1) as f64;
    let metrics: [Metric; 2] = [("throughput", "ops/s", |r| r.ops_per_sec), ("p99 latency", "ms", |r| r.latency_ms_p99)];
    for (row, workload) in workloads.iter().enumerate() {
        for (column, (metric, unit, value)) in metrics.iter().enumerate() {
            let shown: Vec<(&Point<'_>, f64)> = points.iter().filter(|p| p.workload == *workload).map(|p| (p, p.median(*value))).filter(|&(_, v)| v > 0.0).collect();
            let low = shown.iter().map(|&(_, v)| v).fold(f64::INFINITY, f64::min);
            let low = if low.is_finite() { low } else { 1.0 };
            let high = shown.iter().map(|&(_, v)| v).fold(1.0, f64::max);
            let mut chart = ChartBuilder::on(&areas[row * 2 + column])
                .caption(format!("{}: {metric}", workload.name()), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(35)
                .y_label_area_size(60)
                .build_cartesian_2d((0.8f64..max_clients * 1.25).log_scale(), (low / 1.5..high * 1.5).log_scale())?;
            chart.configure_mesh().x_desc("clients").y_desc(*unit).x_label_formatter(&|x| format!("{x:.0}")).y_label_formatter(&|y| format!("{y:.1}")).draw()?;
            for (system, color) in [("comb", BLUE), ("postgres", RED)] {
                let series: Vec<(f64, f64)> = shown.iter().filter(|(p, _)| p.system == system).map(|&(p, v)| (p.clients as f64, v)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(system: &'static str, clients: usize, ops_per_sec: f64, latency_ms_p99: f64, check: &str) -> WorkloadReport {
        WorkloadReport {
            bench: "workload",
            workload: Workload::Counter,
            system,
            clients,
            scale: 1.0,
            seconds: 10.0,
            ops: ops_per_sec as u64 * 10,
            errors: 0,
            ops_per_sec,
            latency_ms_p50: latency_ms_p99 / 4.0,
            latency_ms_p99,
            latency_ms_max: latency_ms_p99 * 2.0,
            by_operation: None,
            records_per_fsync: None,
            log_slow_io: None,
            executor_slow_steps: None,
            runtime_late_ms_max: 1.0,
            check: check.to_owned(),
            fsync_us_p50: 50.0,
            cores: 2,
            peak_rss_mib: None,
            cpu_us_per_op: 2e6 / ops_per_sec,
            machine_cpu_us_per_op: 2e6 / ops_per_sec,
            machine_busy: 1.0,
            round: None,
        }
    }

    #[test]
    fn the_table_shows_each_points_median_over_the_rounds_and_the_range() {
        // Three rounds at 16 clients, the systems' rounds interleaved as measured; one
        // client count of one round only.
        let reports = vec![
            run("comb", 16, 10000.0, 2.5, "ok"),
            run("postgres", 16, 2000.0, 12.0, "ok"),
            run("postgres", 16, 3000.0, 9.0, "ok"),
            run("comb", 16, 9000.0, 3.0, "ok"),
            run("comb", 16, 12000.0, 2.0, "ok"),
            WorkloadReport { round: Some(3), ..run("postgres", 16, 1000.0, 30.0, "FAILED: 1 missing") },
            run("comb", 64, 20000.0, 8.0, "ok"),
        ];
        let points = points(&reports);
        assert_eq!(points.iter().map(|p| (p.system, p.clients, p.runs.len())).collect::<Vec<_>>(), [("comb", 16, 3), ("postgres", 16, 3), ("comb", 64, 1)]);
        let table = table(&points, &reports, 3, "2026-12-06T00:00:00Z", 50.0);
        assert!(table.contains("median of 3 rounds"), "{table}");
        // Medians, ranges, and the ratio of the medians (10,000 / 2,000), not of one round.
        assert!(table.contains("| counter | 16 | 10000 (9000-12000) | 2.5 | 2000 (1000-3000) | 12 | 5.0x | 200.0 | 1000.0 |"), "{table}");
        // A point without a baseline run shows dashes, and a single run no range.
        assert!(table.contains("| counter | 64 | 20000 | 8 | - | - | - | 100.0 | - |"), "{table}");
        assert!(table.contains("Checks that FAILED:\n\n- postgres counter at 16 clients, round 3: FAILED: 1 missing"), "{table}");
    }
}
