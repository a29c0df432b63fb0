//! The `comb` command.

mod cli;
mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "comb", version, about = "Comb: transactional functions and exactly-once workflows inside a log-backed store", after_help = cli::EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show Comb at work in about a minute, with nothing to install: hotel bookings as
    /// exactly-once workflows from concurrent clients, the server killed with SIGKILL
    /// mid-burst and restarted, its unfinished runs resumed, the exactly-once check, and SQL
    /// over the traces.
    Demo(demo::DemoArgs),
    /// Run the server: the gRPC API over one data directory, with the example
    /// applications' functions compiled in. Resumes every unfinished workflow run first.
    Serve(cli::ServeArgs),
    /// Apply DDL (CREATE TABLE, CREATE INDEX) on the server, durably.
    Sql(cli::SqlArgs),
    /// Register SQL-only functions.
    #[command(subcommand)]
    Function(cli::FunctionCommand),
    /// Register workflows.
    #[command(subcommand)]
    Workflow(cli::WorkflowCommand),
    /// Run a workflow and print its output (exactly once per --id).
    #[command(after_help = cli::EXIT_CODES)]
    Invoke(cli::InvokeArgs),
    /// Print a workflow run: status, output or error.
    #[command(after_help = cli::EXIT_CODES)]
    Status(cli::StatusArgs),
    /// List workflow runs, one JSON object a line, in id order.
    Workflows(cli::WorkflowsArgs),
    /// Query the traces with SQL: function_invocations, change_data, workflows, read_events.
    #[command(after_help = cli::EXIT_CODES)]
    Trace(cli::TraceArgs),
    /// Print what the server says of itself, as one JSON object: its version, partitions,
    /// log tail, runs in flight, and the traces' progress, files and merges.
    #[command(after_help = cli::EXIT_CODES)]
    Health(cli::Connection),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("COMB_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        // Colours only for a person: a script or a test reading the messages gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo(args) => demo::run(&args).map(|()| ExitCode::SUCCESS),
        command => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(async {
                match command {
                    Command::Serve(args) => cli::serve(args).await.map(|()| ExitCode::SUCCESS),
                    Command::Sql(args) => cli::sql(args).await.map(|()| ExitCode::SUCCESS),
                    Command::Function(command) => cli::function(command).await.map(|()| ExitCode::SUCCESS),
                    Command::Workflow(command) => cli::workflow(command).await.map(|()| ExitCode::SUCCESS),
                    Command::Invoke(args) => cli::invoke(args).await,
                    Command::Status(args) => cli::status(args).await,
                    Command::Workflows(args) => cli::workflows(args).await.map(|()| ExitCode::SUCCESS),
                    Command::Trace(args) => cli::trace(args).await.map(|()| ExitCode::SUCCESS),
                    Command::Health(connection) => cli::health(connection).await.map(|()| ExitCode::SUCCESS),
                    Command::Demo(_) => unreachable!("handled above"),
                }
            }),
            Err(err) => Err(anyhow::Error::new(err).context("starting the async runtime")),
        },
    };
    match outcome {
        Ok(code) => code,
        Err(err) if cli::stdout_closed(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
