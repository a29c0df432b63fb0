//! Comb's benchmarks. Each run prints one JSON line, so that runs can be compared.

mod backend;
mod disk;
mod driver;
mod log;
mod overhead;
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
    /// Workflows end to end through the client library over gRPC, against a server started
    /// in this process.
    Workload(workload::WorkloadArgs),
    /// The counter workflow with the tracing layer off and on, alternating in one run:
    /// the throughput tracing costs.
    TracingOverhead(overhead::OverheadArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.bench {
        Bench::Log(args) => serde_json::to_value(log::run(&args)?)?,
        Bench::Backend(args) => serde_json::to_value(backend::run(&args)?)?,
        Bench::Workload(args) => serde_json::to_value(workload::run(&args)?)?,
        Bench::TracingOverhead(args) => serde_json::to_value(overhead::run(&args)?)?,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
