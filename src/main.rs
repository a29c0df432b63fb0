//! The `comb` command.

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "comb", version, about = "Comb: transactional functions and exactly-once workflows inside a log-backed store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show Comb at work in under a minute, with nothing to install: durable appends from
    /// concurrent clients, the writing process killed with SIGKILL mid-burst, and recovery
    /// checking that every acknowledged record survived.
    Demo(demo::DemoArgs),
    /// The writing process of the demo (started and killed by `comb demo`).
    #[command(hide = true)]
    DemoWriter(demo::WriterArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("COMB_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::DemoWriter(args) => demo::writer(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
