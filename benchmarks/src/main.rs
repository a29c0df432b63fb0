//! Comb's benchmarks. Each run prints one JSON line, so that runs can be compared.

mod apps;
mod backend;
mod chain;
mod chaos;
mod comb;
mod compare;
mod disk;
mod driver;
mod log;
mod overhead;
mod postgres;
mod workload;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "comb-bench", version, about = "Comb's benchmarks: each run prints one JSON line")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Durable appends to the shared log on RocksDB, beside the disk's own write+fdatasync cost.
    Log(log::LogArgs),
    /// Transactions (functions) against the backend, in-process, durable through the log.
    Backend(backend::BackendArgs),
    /// One of Apiary's workloads (counter, hotel, shop, retwis) end to end, through the
    /// client library against a Comb server (started here, or `--server`), or against the
    /// PostgreSQL baseline (`--baseline postgres`); then its correctness check.
    Workload(workload::WorkloadArgs),
    /// Every workload on Comb and on the PostgreSQL baseline at 1, 4, 16 and 64 clients:
    /// JSON lines, a chart and a table in a results folder.
    Compare(compare::CompareArgs),
    /// The counter workflow with the tracing layer off and on, alternating in one run:
    /// the throughput tracing costs.
    TracingOverhead(overhead::OverheadArgs),
    /// The crash campaign: the four applications' workloads mixed, against a server child
    /// killed with SIGKILL at a random moment of every round and restarted; then every
    /// invariant checked (runs, outputs, the applications' checks, the traces). Fails when
    /// one does not hold.
    Chaos(chaos::ChaosArgs),
    /// The chaos campaign's server child (started by `chaos`).
    #[command(hide = true)]
    ChaosServer(chaos::ChaosServerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.bench {
        Bench::Log(args) => serde_json::to_value(log::run(&args)?)?,
        Bench::Backend(args) => serde_json::to_value(backend::run(&args)?)?,
        Bench::Workload(args) => serde_json::to_value(workload::run(&args)?)?,
        Bench::TracingOverhead(args) => serde_json::to_value(overhead::run(&args)?)?,
        Bench::Compare(args) => serde_json::to_value(compare::run(&args)?)?,
        Bench::Chaos(args) => {
            let report = chaos::run(&args)?;
            println!("{}", serde_json::to_string(&report)?);
            anyhow::ensure!(report.violations == 0, "the crash campaign found {} violations", report.violations);
            return Ok(());
        }
        Bench::ChaosServer(args) => return chaos::serve(&args),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
